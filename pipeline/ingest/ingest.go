// Package ingest consumes SDK events from Kafka, decodes them, and writes raw events and
// flag exposures to ClickHouse in batches with at-least-once delivery.
//
// The decision that shapes it: offsets are committed only after ClickHouse acknowledged
// every record polled so far (or the record went to the dead-letter topic), and the
// tables deduplicate on event uuid. So a crash, a ClickHouse outage or a rebalance can
// make ingest insert a record twice but never lose one, and twice collapses to once. The
// join of exposures with events happens in ClickHouse (see schemas/clickhouse/0002), so
// ingest holds no per-user state that a rebalance could lose.
//
// The poll loop uses franz-go's BlockRebalanceOnPoll: partitions cannot be revoked
// between a poll and the moment its records are buffered, and OnPartitionsRevoked flushes
// and commits before a partition moves to another replica.
package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Options configure Run.
type Options struct {
	Brokers       []string
	Topics        []string
	Group         string
	DLQTopic      string
	ClickHouseDSN string
	// BatchSize is the number of events that triggers a flush.
	BatchSize int
	// BatchInterval flushes a partial batch this long after its first event.
	BatchInterval time.Duration
	// MaxMessageBytes: larger messages are dead-lettered as too_large.
	MaxMessageBytes int
	// ExitWhenCaughtUp consumes up to the end offsets that existed at start, flushes,
	// commits and returns.
	ExitWhenCaughtUp bool
	// ListenAddr serves /metrics and /healthz when set.
	ListenAddr string
	Logger     *slog.Logger
	// Registerer receives the metrics; nil means a private registry served on ListenAddr.
	Registerer prometheus.Registerer
	// KafkaOpts are extra franz-go options (tests use them for short timeouts).
	KafkaOpts []kgo.Opt
	// Sink replaces the ClickHouse writer (nil: open ClickHouseDSN).
	Sink Sink
}

// Sink stores a batch; it must be idempotent per event uuid.
type Sink interface {
	Write(ctx context.Context, evs []event.Event) (events, exposures int, err error)
}

// Defaults fills unset options.
func (o *Options) Defaults() {
	if len(o.Brokers) == 0 {
		o.Brokers = broker.Seeds(config.DefaultKafkaBrokers)
	}
	if len(o.Topics) == 0 {
		o.Topics = []string{broker.EventsTopic}
	}
	if o.Group == "" {
		o.Group = "flagwatch-ingest"
	}
	if o.DLQTopic == "" {
		o.DLQTopic = broker.DLQTopic
	}
	if o.ClickHouseDSN == "" {
		o.ClickHouseDSN = store.DefaultDSN
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 50000
	}
	if o.BatchInterval <= 0 {
		o.BatchInterval = time.Second
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Run consumes until ctx is cancelled (then flushes, commits and returns nil) or, with
// ExitWhenCaughtUp, until the group has committed the end offsets seen at start.
func Run(ctx context.Context, o Options) error {
	o.Defaults()
	log := o.Logger
	reg := o.Registerer
	var gatherer prometheus.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gatherer = r, r
	}
	m := newMetrics(reg)

	sink := o.Sink
	if sink == nil {
		conn, err := store.Open(ctx, o.ClickHouseDSN)
		if err != nil {
			return err
		}
		defer conn.Close()
		if err := store.Migrate(ctx, conn); err != nil {
			return fmt.Errorf("migrate clickhouse: %w", err)
		}
		sink = store.NewWriter(conn)
	}

	c := &consumer{o: o, log: log, m: m, sink: sink, dlqSeen: map[string]bool{}}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
		kgo.FetchMaxBytes(64 << 20),
		kgo.FetchMaxPartitionBytes(8 << 20),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
	cl, err := kgo.NewClient(append(opts, o.KafkaOpts...)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	c.cl = cl
	if err := broker.WaitReachable(ctx, cl); err != nil {
		return err
	}
	if err := broker.EnsureTopics(ctx, cl, 1, o.DLQTopic); err != nil {
		log.Warn("could not ensure DLQ topic; relying on auto-creation", "topic", o.DLQTopic, "err", err)
	}

	if o.ListenAddr != "" {
		srv := serveHTTP(o.ListenAddr, gatherer, c, log)
		defer srv.Close()
	}

	var target map[string]map[int32]int64
	if o.ExitWhenCaughtUp {
		target, err = endOffsets(ctx, cl, o.Topics)
		if err != nil {
			return err
		}
	}
	return c.loop(ctx, target)
}

type consumer struct {
	o    Options
	log  *slog.Logger
	m    *metrics
	sink Sink
	cl   *kgo.Client

	mu         sync.Mutex // guards the batch between the poll loop and rebalance callbacks
	batch      []event.Event
	batchStart time.Time
	dlqSeen    map[string]bool

	healthMu  sync.Mutex
	insertErr error
}

func (c *consumer) loop(ctx context.Context, target map[string]map[int32]int64) error {
	for {
		// The poll wakes up at least every interval so a partial batch is flushed on time
		// and an idle consumer notices it has caught up.
		pollCtx, cancel := context.WithTimeout(ctx, c.o.BatchInterval)
		fetches := c.cl.PollRecords(pollCtx, c.o.BatchSize)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		stopping := ctx.Err() != nil
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				c.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		c.mu.Lock()
		err := c.process(ctx, fetches)
		due := len(c.batch) >= c.o.BatchSize ||
			(len(c.batch) > 0 && time.Since(c.batchStart) >= c.o.BatchInterval) ||
			(target != nil && fetches.NumRecords() == 0) || stopping
		if err == nil && due {
			err = c.flushAndCommit(ctx, stopping)
		}
		c.mu.Unlock()
		c.cl.AllowRebalance()
		if err != nil {
			if stopping || ctx.Err() != nil {
				c.log.Warn("stopping with an unflushed batch; it was not committed and will be re-read", "err", err)
				return nil
			}
			return err
		}
		if stopping {
			return nil
		}
		if target != nil {
			done, err := caughtUp(ctx, c.cl, c.o.Group, target)
			if err != nil {
				return err
			}
			if done {
				c.log.Info("caught up with the end offsets seen at start")
				return nil
			}
		}
	}
}

// process decodes a poll's records into the batch; bad ones go to the DLQ before the
// batch's offsets can be committed.
func (c *consumer) process(ctx context.Context, fetches kgo.Fetches) error {
	var dlq []*kgo.Record
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			lag := p.HighWatermark - p.Records[n-1].Offset - 1
			c.m.lag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(lag))
		}
		for _, r := range p.Records {
			c.m.records.Inc()
			if len(r.Value) > c.o.MaxMessageBytes {
				dlq = append(dlq, c.deadLetter(r, &event.Error{Reason: event.ReasonTooLarge,
					Detail: fmt.Sprintf("%d bytes > limit %d", len(r.Value), c.o.MaxMessageBytes)}))
				continue
			}
			evs, err := event.Decode(r.Value, r.Timestamp)
			if err != nil {
				var e *event.Error
				if !errors.As(err, &e) {
					e = &event.Error{Reason: event.ReasonUnknownShape, Detail: err.Error()}
				}
				dlq = append(dlq, c.deadLetter(r, e))
				continue
			}
			if len(c.batch) == 0 {
				c.batchStart = time.Now()
			}
			c.batch = append(c.batch, evs...)
		}
	})
	if len(dlq) == 0 {
		return nil
	}
	return c.produceDLQ(ctx, dlq)
}

func (c *consumer) deadLetter(r *kgo.Record, e *event.Error) *kgo.Record {
	c.m.dlq.WithLabelValues(e.Reason).Inc()
	if !c.dlqSeen[e.Reason] {
		// Logged once per kind: a poison stream must not flood the logs.
		c.dlqSeen[e.Reason] = true
		c.log.Warn("dead-lettering message", "reason", e.Reason, "detail", e.Detail,
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
	}
	headers := append([]kgo.RecordHeader{}, r.Headers...)
	headers = append(headers,
		kgo.RecordHeader{Key: "flagwatch-dlq-reason", Value: []byte(e.Reason)},
		kgo.RecordHeader{Key: "flagwatch-dlq-detail", Value: []byte(e.Detail)},
		kgo.RecordHeader{Key: "flagwatch-source-topic", Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: "flagwatch-source-partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: "flagwatch-source-offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	return &kgo.Record{Topic: c.o.DLQTopic, Key: r.Key, Value: r.Value, Headers: headers, Timestamp: r.Timestamp}
}

// produceDLQ waits for the dead-letter acks: a record's offset may only be committed once
// its copy is safe in the DLQ.
func (c *consumer) produceDLQ(ctx context.Context, recs []*kgo.Record) error {
	backoff := 100 * time.Millisecond
	for {
		err := c.cl.ProduceSync(ctx, recs...).FirstErr()
		if err == nil {
			return nil
		}
		c.log.Warn("dead-letter produce failed, retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("produce to dead-letter topic: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// flushAndCommit inserts the batch, retrying with backoff while ClickHouse is down, then
// commits every offset polled so far. When stopping, ctx is already cancelled, so the
// final flush gets its own deadline.
func (c *consumer) flushAndCommit(ctx context.Context, stopping bool) error {
	if stopping {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	if err := c.flush(ctx); err != nil {
		return err
	}
	if err := c.cl.CommitUncommittedOffsets(ctx); err != nil {
		// The rows are stored; the next owner of the partition re-reads them and the
		// uuid dedup absorbs the repeat.
		c.log.Warn("commit failed after insert", "err", err)
	}
	return nil
}

func (c *consumer) flush(ctx context.Context) error {
	if len(c.batch) == 0 {
		return nil
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		nev, nexp, err := c.sink.Write(ctx, c.batch)
		c.setInsertErr(err)
		if err == nil {
			c.m.insertDur.Observe(time.Since(start).Seconds())
			c.m.rows.WithLabelValues("events").Add(float64(nev))
			c.m.rows.WithLabelValues("exposures").Add(float64(nexp))
			c.m.batches.Inc()
			c.batch = c.batch[:0]
			return nil
		}
		c.m.retries.Inc()
		c.log.Warn("insert failed, retrying without committing", "attempt", attempt, "rows", len(c.batch), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush batch of %d events: %w", len(c.batch), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// onRevoked runs (with BlockRebalanceOnPoll) only between polls: everything polled is
// in the batch, so flushing and committing here hands the partitions over cleanly.
func (c *consumer) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.flush(fctx); err != nil {
		c.log.Warn("flush on revoke failed; the new owner will re-read the records", "err", err)
		c.batch = c.batch[:0]
		return
	}
	if err := cl.CommitUncommittedOffsets(fctx); err != nil {
		c.log.Warn("commit on revoke failed", "err", err)
	}
	c.log.Info("partitions revoked", "partitions", fmt.Sprint(revoked))
}

// onLost: the group moved on without us, so we may not commit; the buffered records
// will be re-read by the new owner.
func (c *consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batch = c.batch[:0]
	c.log.Warn("partitions lost; dropping uncommitted buffer", "partitions", fmt.Sprint(lost))
}

func (c *consumer) setInsertErr(err error) {
	c.healthMu.Lock()
	c.insertErr = err
	c.healthMu.Unlock()
}

func (c *consumer) health() error {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if c.insertErr != nil {
		return fmt.Errorf("clickhouse insert failing: %w", c.insertErr)
	}
	return nil
}

func endOffsets(ctx context.Context, cl *kgo.Client, topics []string) (map[string]map[int32]int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	out := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out, nil
}

// caughtUp reports whether the group's committed offsets reached target everywhere.
func caughtUp(ctx context.Context, cl *kgo.Client, group string, target map[string]map[int32]int64) (bool, error) {
	committed, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return false, fmt.Errorf("fetch committed offsets: %w", err)
	}
	for topic, parts := range target {
		for p, end := range parts {
			if end == 0 {
				continue
			}
			o, ok := committed.Lookup(topic, p)
			if !ok || o.At < end {
				return false, nil
			}
		}
	}
	return true, nil
}

func serveHTTP(addr string, g prometheus.Gatherer, c *consumer, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	if g != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	} else {
		mux.Handle("/metrics", promhttp.Handler())
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := c.health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "addr", addr, "err", err)
		}
	}()
	return srv
}

// RegisterFlags binds the options to command-line flags (each also read from its
// FLAGWATCH_* environment variable by config.ParseFlags).
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	o.Defaults()
	fs.Var((*config.List)(&o.Brokers), "kafka-brokers", "Kafka bootstrap brokers, comma-separated")
	fs.Var((*config.List)(&o.Topics), "topics", "topics to consume, comma-separated")
	fs.StringVar(&o.Group, "group", o.Group, "consumer group (run more replicas with the same group to scale out)")
	fs.StringVar(&o.DLQTopic, "dlq-topic", o.DLQTopic, "dead-letter topic for messages that cannot be ingested")
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", o.ClickHouseDSN, "ClickHouse native-protocol DSN")
	fs.IntVar(&o.BatchSize, "batch-size", o.BatchSize, "events per ClickHouse insert")
	fs.DurationVar(&o.BatchInterval, "batch-interval", o.BatchInterval, "flush a partial batch after this long")
	fs.IntVar(&o.MaxMessageBytes, "max-message-bytes", o.MaxMessageBytes, "larger messages go to the dead-letter topic")
	fs.BoolVar(&o.ExitWhenCaughtUp, "exit-when-caught-up", false, "consume to the end offsets seen at start, flush, commit and exit 0")
	fs.StringVar(&o.ListenAddr, "listen", ":9101", "address for /metrics and /healthz (empty: off)")
}
