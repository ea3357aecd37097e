package analyze

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/robfig/cron/v3"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Options configure the analyzer service.
type Options struct {
	Brokers       []string
	AlertsTopic   string
	ClickHouseDSN string
	ConfigPath    string
	Schedule      string
	// Once runs a single pass, prints its rows as JSON lines to Stdout and returns.
	Once           bool
	RepeatCritical time.Duration
	ListenAddr     string
	Replica        string
	RecomputeAll   bool
	RebuildEvery   time.Duration
	Stdout         io.Writer
	Logger         *slog.Logger
	// Now overrides the clock (tests, replays of a synthetic week).
	Now func() time.Time
	// Lookup reads rollback secrets; os.LookupEnv when nil.
	Lookup config.Lookup
}

// RegisterFlags binds the options to flags (also read from FLAGWATCH_* variables).
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	o.Brokers = broker.Seeds(config.DefaultKafkaBrokers)
	fs.Var((*config.List)(&o.Brokers), "kafka-brokers", "Kafka bootstrap brokers, comma-separated")
	fs.StringVar(&o.AlertsTopic, "alerts-topic", broker.AlertsTopic, "topic alerts are written to")
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", config.DefaultClickHouseDSN, "ClickHouse native-protocol DSN")
	fs.StringVar(&o.ConfigPath, "config", config.DefaultPath, "monitors file; if the default is absent, every flag gets the core metrics")
	fs.StringVar(&o.Schedule, "schedule", "*/15 * * * *", "cron schedule of passes (run)")
	fs.DurationVar(&o.RepeatCritical, "repeat-critical", 4*time.Hour, "re-emit an unresolved critical finding after this long")
	fs.StringVar(&o.ListenAddr, "listen", ":9102", "address for /metrics and /healthz (run; empty: off)")
	host, _ := os.Hostname()
	fs.StringVar(&o.Replica, "replica-id", host+"-"+strconv.Itoa(os.Getpid()), "this replica's name in pass leases")
	fs.BoolVar(&o.RecomputeAll, "recompute-all", false, "every pass recomputes every (flag, user) instead of only the users with new data")
	fs.DurationVar(&o.RebuildEvery, "rebuild-every", 24*time.Hour, "rebuild the incremental state from all data once it is this old (0: only when the monitors change)")
}

// Run loads the monitors (failing on a bad file), then runs passes on the schedule, or
// one pass with Once.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.AlertsTopic == "" {
		o.AlertsTopic = broker.AlertsTopic
	}
	mons, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	conn, err := store.Open(ctx, o.ClickHouseDSN)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := store.Migrate(ctx, conn); err != nil {
		return fmt.Errorf("migrate clickhouse: %w", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(o.Brokers...), kgo.DefaultProduceTopic(o.AlertsTopic),
		kgo.AllowAutoTopicCreation())
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	if err := broker.WaitReachable(ctx, cl); err != nil {
		return err
	}
	if err := broker.EnsureTopics(ctx, cl, 3, o.AlertsTopic); err != nil {
		o.Logger.Warn("could not ensure alerts topic", "topic", o.AlertsTopic, "err", err)
	}
	a := &Analyzer{Conn: conn, Monitors: mons, Emitter: kafkaEmitter{cl}, Logger: o.Logger, Now: o.Now,
		RepeatCritical: o.RepeatCritical, Lookup: o.Lookup, Replica: o.Replica,
		RecomputeAll: o.RecomputeAll, RebuildEvery: o.RebuildEvery}
	if o.Once {
		pass, err := a.Run(ctx)
		if err != nil {
			return err
		}
		return writeRows(o.Stdout, pass.Rows)
	}
	return schedule(ctx, o, a)
}

func writeRows(w io.Writer, rows []Row) error {
	for _, r := range rows {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode row: %w", err)
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("write row: %w", err)
		}
	}
	return nil
}

type kafkaEmitter struct{ cl *kgo.Client }

// Emit writes alerts keyed by flag (one flag's alerts stay in order) and waits for acks.
func (k kafkaEmitter) Emit(ctx context.Context, alerts []alert.Alert) error {
	recs := make([]*kgo.Record, 0, len(alerts))
	for _, al := range alerts {
		b, err := json.Marshal(al)
		if err != nil {
			return fmt.Errorf("encode alert: %w", err)
		}
		recs = append(recs, &kgo.Record{Key: []byte(al.Flag), Value: b})
	}
	return k.cl.ProduceSync(ctx, recs...).FirstErr()
}

type serviceMetrics struct {
	passes   *prometheus.CounterVec
	duration prometheus.Histogram
	alerts   prometheus.Counter
	skipped  prometheus.Counter
}

func schedule(ctx context.Context, o Options, a *Analyzer) error {
	reg := prometheus.NewRegistry()
	m := serviceMetrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_analyzer_passes_total",
			Help: "Analysis passes by outcome."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flagwatch_analyzer_pass_seconds",
			Help: "Duration of one analysis pass.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_analyzer_alerts_total",
			Help: "Alerts emitted to flag_alerts."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_analyzer_passes_skipped_total",
			Help: "Scheduled passes another replica held the lease for."}),
	}
	reg.MustRegister(m.passes, m.duration, m.alerts, m.skipped)
	var healthMu sync.Mutex
	var lastErr error
	if o.ListenAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			healthMu.Lock()
			defer healthMu.Unlock()
			if lastErr != nil {
				http.Error(w, lastErr.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		srv := &http.Server{Addr: o.ListenAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Logger.Error("metrics server", "err", err)
			}
		}()
		defer srv.Close()
	}
	pass := func() {
		slot := a.now().UTC().Truncate(time.Minute).Format(time.RFC3339)
		ok, err := Lease(ctx, a.Conn, slot, a.Replica, a.now())
		if err != nil {
			o.Logger.Warn("pass lease failed", "err", err)
			return
		}
		if !ok {
			m.skipped.Inc()
			return
		}
		start := time.Now()
		p, err := a.Run(ctx)
		m.duration.Observe(time.Since(start).Seconds())
		healthMu.Lock()
		lastErr = err
		healthMu.Unlock()
		if err != nil {
			m.passes.WithLabelValues("error").Inc()
			o.Logger.Error("analysis pass failed", "err", err)
			return
		}
		m.passes.WithLabelValues("ok").Inc()
		m.alerts.Add(float64(len(p.Alerts)))
		o.Logger.Info("analysis pass", "rows", len(p.Rows), "alerts", len(p.Alerts), "seconds", time.Since(start).Seconds())
	}
	c := cron.New()
	if _, err := c.AddFunc(o.Schedule, pass); err != nil {
		return fmt.Errorf("schedule %q: %w", o.Schedule, err)
	}
	// Spread replicas' first pass a little so they do not all hit ClickHouse at once; the
	// lease decides who runs each slot anyway.
	h := fnv.New32a()
	_, _ = h.Write([]byte(o.Replica))
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(time.Duration(h.Sum32()%1000) * time.Millisecond):
	}
	pass()
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done()
	return nil
}
