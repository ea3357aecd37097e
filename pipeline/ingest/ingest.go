// Package ingest consumes SDK events from Kafka, decodes them, and writes raw events and
// flag exposures to ClickHouse in batches with at-least-once delivery.
//
// The decision that shapes it: offsets are committed only after ClickHouse acknowledged
// every record polled so far (or the record went to the dead-letter topic), and the
// tables deduplicate on event uuid. So a crash, a ClickHouse outage or a rebalance can
// make ingest insert a record twice but never lose one, and twice collapses to once. The
// join of exposures with events happens in ClickHouse (see schemas/clickhouse/0030), so
// ingest holds no per-user state that a rebalance could lose.
//
// The poll loop uses franz-go's BlockRebalanceOnPoll: partitions cannot be revoked
// between a poll and the moment its records are buffered, and OnPartitionsRevoked flushes
// and commits before a partition moves to another replica.
//
// For throughput, decoding overlaps with storing: a full batch is inserted in the
// background (up to maxInFlight at once) while the loop polls and decodes the next, and
// each batch's offsets are committed after it, and every batch before it, is stored.
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
		// A fetch is buffered while the previous one is decoded; 8 MiB (a few times that
		// decompressed) keeps a 2-core box busy without holding hundreds of MB.
		kgo.FetchMaxBytes(8 << 20),
		kgo.FetchMaxPartitionBytes(2 << 20),
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

	// mu guards the fields from batch to dlqSeen between the poll loop and the rebalance
	// callbacks.
	mu         sync.Mutex
	batch      []event.Event
	batchStart time.Time
	// batchLast is the last record polled per partition since the previous batch was
	// launched: what the batch commits once it is stored (dead-lettered records included).
	batchLast map[topicPartition]*kgo.Record
	// polled is the next offset per partition polled so far (only with ExitWhenCaughtUp).
	polled map[topicPartition]int64
	// inflight are the previous batches, oldest first, being inserted while the loop
	// decodes the next.
	inflight []*flight
	spares   [][]event.Event // stored batches' buffers, reused for the next batches
	dlqSeen  map[string]bool

	healthMu  sync.Mutex
	insertErr error
}

type topicPartition struct {
	topic     string
	partition int32
}

// maxInFlight is how many batches may be inserted at once. ClickHouse stores one INSERT
// on one core, and a batch's client-side work (encoding blocks) and server-side work
// (sorting, compressing, writing the part, the assignment-state views) alternate; two in flight
// keep both sides busy. Offsets are still committed strictly in batch order.
const maxInFlight = 2

// flight is a batch inserted in the background while the loop polls and decodes the
// next ones. Its offsets are committed only after it and every batch before it is stored.
type flight struct {
	evs    []event.Event
	last   []*kgo.Record
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
}

func (c *consumer) loop(ctx context.Context, target map[string]map[int32]int64) error {
	if target != nil {
		c.polled = map[topicPartition]int64{}
	}
	defer func() {
		c.mu.Lock()
		c.abandonFlight()
		c.mu.Unlock()
	}()
	for {
		// The poll wakes up at least every interval so a partial batch is flushed on time
		// and an idle consumer notices it has caught up.
		pollCtx, cancel := context.WithTimeout(ctx, c.o.BatchInterval)
		fetches := c.cl.PollRecords(pollCtx, c.pollSize())
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
		// With a target, an empty poll or a poll that reached the end offsets means
		// everything to consume has been polled: store it all and commit now.
		final := stopping || (target != nil && (fetches.NumRecords() == 0 || c.polledThrough(target)))
		if err == nil {
			switch {
			case final:
				err = c.drain(ctx, stopping)
			case len(c.batch) >= c.o.BatchSize || (len(c.batch) > 0 && time.Since(c.batchStart) >= c.o.BatchInterval):
				c.launch(ctx)
			default:
				c.reap(ctx, false)
			}
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
		if target != nil && final {
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

// pollSize is how many records to poll: what the batch still has room for, so a batch
// holds at most BatchSize records' events and memory stays bounded by the batch size.
func (c *consumer) pollSize() int {
	c.mu.Lock()
	n := c.o.BatchSize - len(c.batch)
	c.mu.Unlock()
	return max(n, 1)
}

// process decodes a poll's records into the batch; bad ones go to the DLQ before the
// batch's offsets can be committed.
func (c *consumer) process(ctx context.Context, fetches kgo.Fetches) error {
	var dlq []*kgo.Record
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		n := len(p.Records)
		if n == 0 {
			return
		}
		last := p.Records[n-1]
		lag := p.HighWatermark - last.Offset - 1
		c.m.lag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(lag))
		c.m.records.Add(float64(n))
		tp := topicPartition{p.Topic, p.Partition}
		if c.batchLast == nil {
			c.batchLast = map[topicPartition]*kgo.Record{}
		}
		c.batchLast[tp] = last
		if c.polled != nil {
			c.polled[tp] = last.Offset + 1
		}
		for _, r := range p.Records {
			if len(r.Value) > c.o.MaxMessageBytes {
				dlq = append(dlq, c.deadLetter(r, &event.Error{Reason: event.ReasonTooLarge,
					Detail: fmt.Sprintf("%d bytes > limit %d", len(r.Value), c.o.MaxMessageBytes)}))
				continue
			}
			before := len(c.batch)
			evs, err := event.AppendDecode(c.batch, r.Value, r.Timestamp)
			if err != nil {
				var e *event.Error
				if !errors.As(err, &e) {
					e = &event.Error{Reason: event.ReasonUnknownShape, Detail: err.Error()}
				}
				dlq = append(dlq, c.deadLetter(r, e))
				continue
			}
			if before == 0 && len(evs) > 0 {
				c.batchStart = time.Now()
			}
			c.batch = evs
		}
	})
	if len(dlq) == 0 {
		return nil
	}
	return c.produceDLQ(ctx, dlq)
}

// polledThrough reports whether every partition of target has been polled up to its
// end offset.
func (c *consumer) polledThrough(target map[string]map[int32]int64) bool {
	for topic, parts := range target {
		for p, end := range parts {
			if end > 0 && c.polled[topicPartition{topic, p}] < end {
				return false
			}
		}
	}
	return true
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

// stopGrace is how long a cancelled insert is given to return. The driver cannot
// interrupt a block being written to a server that stopped reading, and a shutdown or a
// revoke must not hang on it: after stopGrace the insert is abandoned, uncommitted.
const stopGrace = 5 * time.Second

// start inserts evs in the background (retrying until ctx ends or the flight is
// cancelled). A flight touches nothing of the consumer's but evs, metrics and health.
func (c *consumer) start(ctx context.Context, evs []event.Event, last []*kgo.Record) *flight {
	fctx, cancel := context.WithCancel(ctx)
	f := &flight{evs: evs, last: last, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer cancel()
		f.err = c.flush(fctx, f.evs)
	}()
	return f
}

// wait returns nil once the insert succeeded. When ctx ends first, the insert is
// cancelled and given stopGrace to return.
func (f *flight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
	}
	f.cancel()
	select {
	case <-f.done:
		if f.err == nil {
			return nil
		}
		return f.err
	case <-time.After(stopGrace):
		return fmt.Errorf("insert of %d events did not stop %s after cancellation: %w", len(f.evs), stopGrace, ctx.Err())
	}
}

func (f *flight) finished() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// launch hands the batch to a background insert, once fewer than maxInFlight are under
// way, so that decoding the next batch overlaps with ClickHouse storing this one.
func (c *consumer) launch(ctx context.Context) {
	if !c.reap(ctx, false) {
		// An earlier insert gave up (ctx ended); drain retries it when the loop stops.
		return
	}
	if len(c.inflight) >= maxInFlight && !c.reap(ctx, true) {
		return
	}
	last := make([]*kgo.Record, 0, len(c.batchLast))
	for _, r := range c.batchLast {
		last = append(last, r)
	}
	clear(c.batchLast)
	c.inflight = append(c.inflight, c.start(ctx, c.batch, last))
	c.batch = nil
	if n := len(c.spares); n > 0 {
		c.batch, c.spares = c.spares[n-1], c.spares[:n-1]
	}
}

// reap commits the offsets of the stored batches at the head of the queue, in order.
// With wait it first waits for the oldest one. It reports false when the oldest gave up:
// it and everything after it stay in flight, uncommitted.
func (c *consumer) reap(ctx context.Context, wait bool) bool {
	for len(c.inflight) > 0 {
		f := c.inflight[0]
		if !wait && !f.finished() {
			return true
		}
		wait = false
		if f.wait(ctx) != nil {
			return false
		}
		c.inflight = c.inflight[1:]
		if len(f.last) > 0 {
			if err := c.cl.CommitRecords(ctx, f.last...); err != nil {
				// The rows are stored; the next owner of the partition re-reads them and
				// the uuid dedup absorbs the repeat.
				c.log.Warn("commit failed after insert", "err", err)
			}
		}
		c.spares = append(c.spares, recycle(f.evs))
	}
	return true
}

// recycle empties a stored batch's buffer for reuse, dropping its references.
func recycle(evs []event.Event) []event.Event {
	clear(evs)
	return evs[:0]
}

// storeAll waits for the batches in flight (inserting again under ctx those that gave up)
// and inserts the current one; after it returns nil every record polled so far is stored.
func (c *consumer) storeAll(ctx context.Context) error {
	for len(c.inflight) > 0 {
		f := c.inflight[0]
		err := f.wait(ctx)
		if err != nil && f.finished() && ctx.Err() == nil {
			// It gave up because the loop's context ended; ctx is the final deadline.
			err = c.start(ctx, f.evs, nil).wait(ctx)
		}
		if err != nil {
			return err
		}
		c.inflight = c.inflight[1:]
		c.spares = append(c.spares, recycle(f.evs))
	}
	if len(c.batch) > 0 {
		g := c.start(ctx, c.batch, nil)
		if err := g.wait(ctx); err != nil {
			if !g.finished() {
				c.batch = nil // still being read by the abandoned insert
			}
			return err
		}
		c.batch = recycle(c.batch)
	}
	clear(c.batchLast)
	return nil
}

// drain stores everything polled, then commits every offset polled so far. When stopping,
// ctx is already cancelled, so the final inserts get their own deadline.
func (c *consumer) drain(ctx context.Context, stopping bool) error {
	if stopping {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	if err := c.storeAll(ctx); err != nil {
		return err
	}
	if err := c.cl.CommitUncommittedOffsets(ctx); err != nil {
		// The rows are stored; the next owner of the partition re-reads them and the
		// uuid dedup absorbs the repeat.
		c.log.Warn("commit failed after insert", "err", err)
	}
	return nil
}

// discard forgets everything polled and not committed (the in-flight insert is
// cancelled); whoever owns the partitions next re-reads it.
func (c *consumer) discard() {
	c.abandonFlight()
	c.batch = c.batch[:0]
	clear(c.batchLast)
}

func (c *consumer) abandonFlight() {
	for _, f := range c.inflight {
		f.cancel()
	}
	for _, f := range c.inflight {
		select {
		case <-f.done:
		case <-time.After(stopGrace):
		}
	}
	c.inflight = nil
}

// flush inserts evs, retrying with backoff while ClickHouse is down, until ctx ends.
func (c *consumer) flush(ctx context.Context, evs []event.Event) error {
	if len(evs) == 0 {
		return nil
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		nev, nexp, err := c.sink.Write(ctx, evs)
		c.setInsertErr(err)
		if err == nil {
			c.m.insertDur.Observe(time.Since(start).Seconds())
			c.m.rows.WithLabelValues("events").Add(float64(nev))
			c.m.rows.WithLabelValues("exposures").Add(float64(nexp))
			c.m.batches.Inc()
			return nil
		}
		c.m.retries.Inc()
		c.log.Warn("insert failed, retrying without committing", "attempt", attempt, "rows", len(evs), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush batch of %d events: %w", len(evs), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// onRevoked runs (with BlockRebalanceOnPoll) only between polls: everything polled is
// in the batch or in flight, so storing and committing here hands the partitions over
// cleanly.
func (c *consumer) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.storeAll(fctx); err != nil {
		c.log.Warn("flush on revoke failed; the new owner will re-read the records", "err", err)
		c.discard()
		return
	}
	if err := cl.CommitUncommittedOffsets(fctx); err != nil {
		c.log.Warn("commit on revoke failed", "err", err)
	}
	c.log.Info("partitions revoked", "partitions", fmt.Sprint(revoked))
}

// onLost: the group moved on without us, so we may not commit; the buffered and
// in-flight records will be re-read by the new owner.
func (c *consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.discard()
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
