// Package ingest consumes SDK events from Kafka, decodes them, and writes raw events and
// flag exposures to ClickHouse in batches with at-least-once delivery.
//
// The decision that shapes it: offsets are committed only after ClickHouse acknowledged
// every record polled so far (or the record went to the dead-letter topic), and the
// tables deduplicate on event uuid. So a crash, a ClickHouse outage or a rebalance can
// make ingest insert a record twice but never lose one, and twice collapses to once. The
// join of exposures with events happens in ClickHouse (schemas/clickhouse/0030), whose
// assignment state depends only on each (flag, user, variant)'s earliest exposure; so
// ingest writes an exposure row only when it can change that state (dedup.go), keeping
// per partition a bounded cache of what it wrote that starts empty whenever a partition
// is assigned — a cache miss writes a row more, never one less.
//
// The files follow the concerns: options and wiring here; the poll loop and decoding
// (consumer.go); batches stored in the background while the next is decoded, committed
// in order (flight.go); storing one batch — retries, the bisection of batches ClickHouse
// refuses, the dead-letter topic (store.go, dlq.go); the exposure cache (dedup.go); the
// byte budget (budget.go); rebalances (rebalance.go); start-up waits (connect.go);
// offsets (offsets.go).
package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/ops"
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
	// BatchBytes is the size of decoded events (and the messages they came from) that
	// triggers a flush; a batch never holds more, unless one message alone does.
	BatchBytes int
	// InFlightBytes bounds what the batches being stored hold together; the loop stops
	// decoding while they would exceed it. Memory is bounded by InFlightBytes +
	// BatchBytes, whatever the size of the events.
	InFlightBytes int
	// BatchInterval flushes a partial batch this long after its first event.
	BatchInterval time.Duration
	// MaxMessageBytes: larger messages are dead-lettered as too_large.
	MaxMessageBytes int
	// MaxEventAge dead-letters events older than this (by their placed time) as too_old.
	// 0 means DefaultMaxEventAge; a negative value, no limit.
	MaxEventAge time.Duration
	// ExposureCache is how many (flag, user, variant) first-exposure times the exposure
	// cache keeps over all partitions. 0 means DefaultExposureCache; a negative value
	// turns the cache off (every exposure is written).
	ExposureCache int
	// ExitWhenCaughtUp consumes up to the end offsets that existed at start, flushes,
	// commits and returns.
	ExitWhenCaughtUp bool
	// StartupWait, with ExitWhenCaughtUp, bounds the wait for Kafka and ClickHouse at
	// start (a service without it waits as long as it takes, reporting on /healthz).
	StartupWait time.Duration
	// UnhealthyAfter is how long inserts or fetches may keep failing (while retried)
	// before /healthz reports unhealthy.
	UnhealthyAfter time.Duration
	// ListenAddr serves /metrics and /healthz when set.
	ListenAddr string
	Logger     *slog.Logger
	// Registerer receives the metrics; nil means a private registry. /metrics serves
	// Gatherer when set, else the private registry, else Registerer if it is also a
	// Gatherer (a *prometheus.Registry), else the default gatherer.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Health receives the state of Kafka and ClickHouse (nil: a private one, served on
	// ListenAddr).
	Health *ops.Health
	// Now is the clock for MaxEventAge (time.Now when nil).
	Now func() time.Time
	// KafkaOpts are extra franz-go options (tests use them for short timeouts).
	KafkaOpts []kgo.Opt
	// Sink replaces the ClickHouse writer (nil: open ClickHouseDSN).
	Sink Sink

	// peak, when set (tests), records the most bytes held at once.
	peak *int64
}

// Sink stores a batch; it must be idempotent per event uuid.
type Sink interface {
	WriteBatch(ctx context.Context, b store.RawBatch) (events, exposures int, err error)
}

// Defaults.
const (
	// DefaultMaxEventAge is two years. Older events cannot belong to an experiment
	// anyone still reads (attribution windows are days to weeks, pre-periods a week,
	// lateness a day), while a legitimately late event — a phone offline for weeks, a
	// backfill of last year — is far younger. What is older is a wrong clock (devices
	// reset to 2015, a zero timestamp parsed as 1970): stored, every such month would be
	// a partition of its own in events and exposures, and one such first exposure would
	// move a user's assignment years back.
	DefaultMaxEventAge = 2 * 365 * 24 * time.Hour
	// DefaultExposureCache keeps 2M (flag, user, variant) entries, ~12 bytes each plus
	// ~100 bytes per user: with 20 active flags, the last ~100k users of each replica.
	DefaultExposureCache = 2_000_000
)

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
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 1 << 20
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 32 << 20
	}
	if o.InFlightBytes <= 0 {
		o.InFlightBytes = 2 * o.BatchBytes
	}
	if o.BatchInterval <= 0 {
		o.BatchInterval = time.Second
	}
	if o.MaxEventAge == 0 {
		o.MaxEventAge = DefaultMaxEventAge
	}
	if o.ExposureCache == 0 {
		o.ExposureCache = DefaultExposureCache
	}
	if o.StartupWait <= 0 {
		o.StartupWait = 2 * time.Minute
	}
	if o.UnhealthyAfter <= 0 {
		o.UnhealthyAfter = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Run consumes until ctx is cancelled (then flushes, commits and returns nil) or, with
// ExitWhenCaughtUp, until the group has committed the end offsets seen at start. It
// returns an error, without committing what it could not store, when ClickHouse refuses
// something that no retry can fix (credentials, a missing table).
func Run(ctx context.Context, o Options) error {
	o.Defaults()
	log := o.Logger
	reg, gatherer := o.Registerer, o.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg = r
		if gatherer == nil {
			gatherer = r
		}
	}
	if gatherer == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gatherer = g
		} else {
			gatherer = prometheus.DefaultGatherer
		}
	}
	m := newMetrics(reg)
	health := o.Health
	if health == nil {
		health = &ops.Health{}
	}
	health.Grace(componentKafka, o.UnhealthyAfter)
	health.Grace(store.HealthComponent, o.UnhealthyAfter)

	// Served before anything connects, so /healthz says from the first second what ingest
	// waits for.
	if o.ListenAddr != "" {
		srv, err := ops.Serve(ctx, o.ListenAddr, gatherer, health, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	var wait time.Duration
	if o.ExitWhenCaughtUp {
		wait = o.StartupWait
	}

	c := &consumer{o: o, log: log, m: m, health: health, dlqSeen: map[string]bool{},
		dedup: newDedup(o.ExposureCache, m)}
	c.cur = c.newBatch()
	c.budget.peak = o.peak
	cl, err := c.connectKafka(ctx, wait)
	if err != nil {
		return err
	}
	defer cl.Close()
	c.cl = cl

	sink := o.Sink
	if sink == nil {
		health.Waiting(store.HealthComponent, "connecting to "+store.Redact(o.ClickHouseDSN))
		conn, err := store.Open(ctx, o.ClickHouseDSN, store.WithLogger(log), store.WithHealth(health), store.WithMaxWait(wait))
		if err != nil {
			if wait > 0 && ctx.Err() == nil && store.Classify(err) == store.Transient {
				return fmt.Errorf("ClickHouse not reachable within %s (-startup-wait): %w", wait, err)
			}
			return fmt.Errorf("connect to ClickHouse: %w", err)
		}
		defer conn.Close()
		if err := store.Migrate(ctx, conn); err != nil {
			return fmt.Errorf("migrate clickhouse: %w", err)
		}
		sink = store.NewWriter(conn)
	} else {
		health.Report(store.HealthComponent, nil)
	}
	c.sink = sink

	var target map[string]map[int32]int64
	if o.ExitWhenCaughtUp {
		target, err = endOffsets(ctx, cl, o.Topics)
		if err != nil {
			return err
		}
	}
	err = c.loop(ctx, target)
	var fatal *fatalError
	if errors.As(err, &fatal) {
		health.Report(store.HealthComponent, err)
	}
	return err
}

// kafkaOpts are the consumer's franz-go options.
func (c *consumer) kafkaOpts() []kgo.Opt {
	o := c.o
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
		// A fetch is buffered while the previous one is decoded; 8 MiB (a few times that
		// decompressed) keeps a 2-core box busy without holding hundreds of MB.
		kgo.FetchMaxBytes(8 << 20),
		kgo.FetchMaxPartitionBytes(2 << 20),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		// A dead-lettered message can be as large as the largest message on the topic
		// (too_large ones included), plus its headers.
		kgo.ProducerBatchMaxBytes(dlqMaxBytes(o)),
	}
	return append(opts, o.KafkaOpts...)
}

// dlqMaxBytes is the largest dead letter: a message refused as too large is copied
// whole, and topics are often configured above Kafka's 1 MB default.
func dlqMaxBytes(o Options) int32 {
	return int32(max(o.MaxMessageBytes, 8<<20) + 64<<10)
}

// zeroOff is a flag whose 0 turns a feature off: it stores -1 (Options' "off") for 0.
type zeroOff[T int | time.Duration] struct{ p *T }

func (z zeroOff[T]) String() string {
	if z.p == nil {
		return ""
	}
	v := max(*z.p, 0)
	if d, ok := any(v).(time.Duration); ok {
		if day := 24 * time.Hour; d > 0 && d%day == 0 {
			return strconv.FormatInt(int64(d/day), 10) + "d"
		}
		return d.String()
	}
	return strconv.Itoa(int(v))
}

func (z zeroOff[T]) Set(s string) error {
	var v T
	switch p := any(&v).(type) {
	case *time.Duration:
		d, err := parseDays(s)
		if err != nil {
			return err
		}
		*p = d
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		*p = n
	}
	if v < 0 {
		return fmt.Errorf("must not be negative")
	}
	if v == 0 {
		v = -1
	}
	*z.p = v
	return nil
}

// parseDays is time.ParseDuration that also reads whole days ("730d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" {
		d, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("parse days %q: %w", s, err)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
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
	fs.IntVar(&o.BatchBytes, "batch-bytes", o.BatchBytes, "bytes of events per ClickHouse insert (whichever of -batch-size and this comes first)")
	fs.IntVar(&o.InFlightBytes, "in-flight-bytes", o.InFlightBytes, "bytes of batches being inserted at once; decoding waits beyond it (memory stays under this plus -batch-bytes)")
	fs.DurationVar(&o.BatchInterval, "batch-interval", o.BatchInterval, "flush a partial batch after this long")
	fs.IntVar(&o.MaxMessageBytes, "max-message-bytes", o.MaxMessageBytes, "larger messages go to the dead-letter topic")
	fs.Var(zeroOff[time.Duration]{&o.MaxEventAge}, "max-event-age",
		"events older than this `duration` go to the dead-letter topic as too_old (Go durations or days, 730d; 0: no limit)")
	fs.Var(zeroOff[int]{&o.ExposureCache}, "exposure-cache",
		"how many (flag, user, variant) `entries` to remember, to skip exposures that change nothing (0: off, every exposure is written)")
	fs.BoolVar(&o.ExitWhenCaughtUp, "exit-when-caught-up", false, "consume to the end offsets seen at start, flush, commit and exit 0")
	fs.DurationVar(&o.StartupWait, "startup-wait", o.StartupWait, "with -exit-when-caught-up: give up when Kafka or ClickHouse is still unreachable after this long")
	fs.DurationVar(&o.UnhealthyAfter, "unhealthy-after", o.UnhealthyAfter, "/healthz reports unhealthy once inserts or fetches have failed for this long")
	fs.StringVar(&o.ListenAddr, "listen", ":9101", "address for /metrics and /healthz (empty: off)")
}
