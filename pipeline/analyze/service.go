package analyze

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/robfig/cron/v3"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/ops"
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
	// ConnectWait bounds how long `once` waits for ClickHouse and Kafka at start (run
	// waits as long as it takes, saying so on /healthz and in a log line per retry).
	ConnectWait time.Duration
	// UnhealthyAfter is how long passes (or their leases) may keep failing before
	// /healthz reports the analyzer unhealthy.
	UnhealthyAfter time.Duration
	// PublicURL is where the flag pages are reachable; alerts link there.
	PublicURL string
	// Mount, when set, adds handlers (the flag pages) to the HTTP server of run.
	Mount func(mux *http.ServeMux, conn store.Conn, mons *config.Monitors)
	// Health, when set, is the health the service reports to (tests read it).
	Health *ops.Health
	// OnListen is called with the HTTP server's address once it listens.
	OnListen func(addr string)
	// Observers see every pass (see Analyzer.Observers); NewObservers, when set, builds
	// more of them once ClickHouse and Kafka are connected.
	Observers    []PassObserver
	NewObservers func(conn store.Conn, claims claim.Store, emit Emitter, mons *config.Monitors) ([]PassObserver, error)
	// Sessions, when set, makes the Analyzer's Sessions hook once ClickHouse is connected.
	Sessions func(conn store.Conn, mons *config.Monitors) func(ctx context.Context, flag string, f alert.Finding) *alert.Watch
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
	fs.DurationVar(&o.ConnectWait, "connect-wait", 2*time.Minute, "once: give up if ClickHouse or Kafka do not answer within this long (run waits, reporting on /healthz)")
	fs.DurationVar(&o.UnhealthyAfter, "unhealthy-after", 30*time.Minute, "run: /healthz fails once passes have failed for this long")
	fs.StringVar(&o.PublicURL, "public-url", "", "where the flag pages are reachable (https://flagwatch.example.com); alerts link to them")
}

// Run loads the monitors (failing on a bad file), then runs passes on the schedule, or
// one pass with Once. With run, /metrics and /healthz answer from the start, while the
// analyzer still waits for ClickHouse and Kafka.
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
	if o.UnhealthyAfter <= 0 {
		o.UnhealthyAfter = 30 * time.Minute
	}
	mons, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	health := o.Health
	if health == nil {
		health = &ops.Health{}
	}
	var wait time.Duration
	var m *serviceMetrics
	var srv *ops.Server
	if o.Once {
		wait = o.ConnectWait
	} else {
		reg := prometheus.NewRegistry()
		m = newServiceMetrics(reg)
		health.Grace(passesComponent, o.UnhealthyAfter)
		if o.ListenAddr != "" {
			if srv, err = ops.Serve(ctx, o.ListenAddr, reg, health, o.Logger); err != nil {
				return err
			}
			defer srv.Close()
			if o.OnListen != nil {
				o.OnListen(srv.Addr.String())
			}
		}
	}
	conn, err := store.Open(ctx, o.ClickHouseDSN, store.WithLogger(o.Logger), store.WithHealth(health), store.WithMaxWait(wait))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := store.Migrate(ctx, conn); err != nil {
		return fmt.Errorf("migrate clickhouse: %w", err)
	}
	claims, closeClaims, err := claim.Open(conn, o.Logger)
	if err != nil {
		return err
	}
	defer closeClaims()
	cl, err := kgo.NewClient(kgo.SeedBrokers(o.Brokers...), kgo.DefaultProduceTopic(o.AlertsTopic),
		kgo.AllowAutoTopicCreation())
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	if err := broker.Wait(ctx, cl, broker.WaitOptions{Log: o.Logger, Health: health, Max: wait, Brokers: o.Brokers}); err != nil {
		return err
	}
	if err := broker.EnsureTopics(ctx, cl, 3, o.AlertsTopic); err != nil {
		o.Logger.Warn("could not ensure alerts topic", "topic", o.AlertsTopic, "err", err)
	}
	a := &Analyzer{Conn: conn, Monitors: mons, Emitter: kafkaEmitter{cl}, Logger: o.Logger, Now: o.Now,
		RepeatCritical: o.RepeatCritical, Lookup: o.Lookup, Replica: o.Replica,
		RecomputeAll: o.RecomputeAll, RebuildEvery: o.RebuildEvery, PublicURL: o.PublicURL, Observers: o.Observers,
		Claims: claims}
	if o.Sessions != nil {
		a.Sessions = o.Sessions(conn, mons)
	}
	if o.NewObservers != nil {
		obs, err := o.NewObservers(conn, claims, a.Emitter, mons)
		if err != nil {
			return err
		}
		a.Observers = append(a.Observers, obs...)
	}
	if o.Once {
		pass, err := a.Run(ctx)
		if err != nil {
			return err
		}
		return writeRows(o.Stdout, pass.Rows)
	}
	if srv != nil && o.Mount != nil {
		o.Mount(srv.Mux, conn, mons)
	}
	return schedule(ctx, o, a, m, health)
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

func newServiceMetrics(reg prometheus.Registerer) *serviceMetrics {
	m := &serviceMetrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_analyzer_passes_total",
			Help: "Analysis passes by outcome (ok, error, lease_error)."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flagwatch_analyzer_pass_seconds",
			Help: "Duration of one analysis pass.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_analyzer_alerts_total",
			Help: "Alerts emitted to flag_alerts."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_analyzer_passes_skipped_total",
			Help: "Scheduled passes another replica held the lease for."}),
	}
	reg.MustRegister(m.passes, m.duration, m.alerts, m.skipped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// passesComponent is the health component of scheduled passes and their leases.
const passesComponent = "passes"

func schedule(ctx context.Context, o Options, a *Analyzer, m *serviceMetrics, health *ops.Health) error {
	// Until the first pass has run, the passes are not known to work.
	health.Waiting(passesComponent, "the first pass")
	pass := func() {
		slot := a.now().UTC().Truncate(time.Minute).Format(time.RFC3339)
		ok, err := Lease(ctx, a.claims(), slot, a.Replica)
		if err != nil {
			m.passes.WithLabelValues("lease_error").Inc()
			health.Report(passesComponent, fmt.Errorf("pass lease: %w", err))
			o.Logger.Error("pass lease failed; no pass in this slot", "slot", slot, "err", err)
			return
		}
		if !ok {
			m.skipped.Inc()
			// Another replica runs this slot; the lease worked, so ClickHouse answers.
			health.Report(passesComponent, nil)
			return
		}
		start := time.Now()
		p, err := a.Run(ctx)
		m.duration.Observe(time.Since(start).Seconds())
		health.Report(passesComponent, err)
		if err != nil {
			m.passes.WithLabelValues("error").Inc()
			o.Logger.Error("analysis pass failed", "err", err)
			return
		}
		m.passes.WithLabelValues("ok").Inc()
		m.alerts.Add(float64(len(p.Alerts)))
		o.Logger.Info("analysis pass", "rows", len(p.Rows), "alerts", len(p.Alerts), "took", time.Since(start).Round(time.Millisecond).String())
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
