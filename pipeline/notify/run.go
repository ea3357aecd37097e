package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// service is everything Run and SendDigest share.
type service struct {
	o     Options
	conn  store.Conn
	proc  *processor
	m     *metrics
	src   ResultsSource
	close func()
}

func start(ctx context.Context, opts Options) (*service, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	conn, err := store.Open(ctx, o.ClickHouseDSN)
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx, conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("migrate clickhouse: %w", err)
	}
	m := newMetrics()
	p := &processor{
		o:       o,
		log:     &chLog{conn: conn},
		claims:  &chClaims{conn: conn, now: time.Now, lease: o.ClaimLease},
		limiter: newLimiter(o.RateLimit, o.test.rateWindow),
		m:       m,
		health:  &health{},
		logger:  o.Logger,
	}
	switch {
	case o.DryRun:
		d := &dryRun{w: o.Stdout, now: o.test.now}
		p.poster, p.uploader = d, d
		o.Logger.Info("dry run: printing messages instead of posting")
	case o.SlackToken != "":
		sp := newSlackPoster(o.SlackToken, o.SlackAPIURL)
		who, err := sp.AuthTest(ctx)
		if f, reason, _ := classify(err); err != nil && f == failAuth {
			conn.Close()
			return nil, fmt.Errorf("slack rejects the bot token (%s): %w", reason, err)
		} else if err != nil {
			o.Logger.Warn("could not check the Slack token; going on", "err", err)
		} else {
			o.Logger.Info("connected to Slack", "as", who, "api", o.SlackAPIURL)
		}
		p.poster, p.uploader = sp, sp
	default:
		p.poster = &webhookPoster{url: o.SlackWebhookURL, client: &http.Client{Timeout: httpTimeout}}
		o.Logger.Info("posting through an incoming webhook: no threads, updates or files")
	}
	src := o.Results
	if src == nil {
		src = chResults{conn: conn}
	}
	return &service{o: o, conn: conn, proc: p, m: m, src: src, close: func() { conn.Close() }}, nil
}

// Run consumes alerts and posts them until ctx ends, running the weekly digest on its
// schedule. It returns nil after a clean shutdown: the alert in hand is finished or left
// uncommitted, finished ones are committed.
func Run(ctx context.Context, opts Options) error {
	s, err := start(ctx, opts)
	if err != nil {
		return err
	}
	defer s.close()
	o := s.o
	o.Logger.Info("notifier starting", "replica", o.ReplicaID, "brokers", o.Brokers, "topic", o.Topic, "group", o.Group,
		"default_channel", o.DefaultChannel, "repeat_interval", o.RepeatInterval, "rate_limit", o.RateLimit)

	if o.ListenAddr != "" {
		ln, err := net.Listen("tcp", o.ListenAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", o.ListenAddr, err)
		}
		srv := &http.Server{Handler: s.m.handler(s.proc.health), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Logger.Error("metrics server stopped", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		o.Logger.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
		if o.test.listening != nil {
			o.test.listening(ln.Addr().String())
		}
	}

	if o.DigestSchedule != "" {
		loc, _ := time.LoadLocation(o.DigestTimeZone) // validated in withDefaults
		sched, _ := cron.ParseStandard(o.DigestSchedule)
		c := cron.New(cron.WithLocation(loc))
		c.Schedule(sched, cron.FuncJob(func() {
			// The slot, not the clock, names the digest, so replicas firing a moment apart
			// agree on its op.
			at := sched.Next(time.Now().In(loc).Add(-time.Minute))
			op := "digest|" + o.DefaultChannel + "|" + at.Format(time.RFC3339)
			if err := s.proc.sendDigest(ctx, s.src, at, op); err != nil && ctx.Err() == nil {
				o.Logger.Error("weekly digest failed", "op", op, "err", err)
			}
		}))
		c.Start()
		defer func() { <-c.Stop().Done() }()
		o.Logger.Info("weekly digest scheduled", "schedule", o.DigestSchedule, "tz", o.DigestTimeZone,
			"next", sched.Next(time.Now().In(loc)))
	}

	err = newConsumer(o, s.proc, s.m).run(ctx)
	if err != nil && !errors.Is(err, errCrashed) && ctx.Err() == nil {
		return fmt.Errorf("consume %s: %w", o.Topic, err)
	}
	if errors.Is(err, errCrashed) {
		return err
	}
	o.Logger.Info("notifier stopped")
	return nil
}

// SendDigest sends the weekly digest now (`notifier digest --now`). It is logged like a
// scheduled one, under the current second, so running it twice sends it twice.
func SendDigest(ctx context.Context, opts Options) error {
	s, err := start(ctx, opts)
	if err != nil {
		return err
	}
	defer s.close()
	loc, _ := time.LoadLocation(s.o.DigestTimeZone)
	at := s.o.test.now().In(loc).Truncate(time.Second)
	op := "digest|" + s.o.DefaultChannel + "|now|" + at.Format(time.RFC3339)
	return s.proc.sendDigest(ctx, s.src, at, op)
}
