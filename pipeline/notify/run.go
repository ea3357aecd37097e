package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/ops"
	"github.com/flagwatch/flagwatch/pipeline/retry"
	"github.com/flagwatch/flagwatch/pipeline/slack"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// connectAttempt bounds one attempt to reach ClickHouse or Kafka at start-up, so that
// each failed attempt is reported (log and /healthz) instead of one silent wait.
const connectAttempt = 10 * time.Second

// service is everything Run and SendDigest share.
type service struct {
	o      Options
	conn   store.Conn
	proc   *processor
	m      *metrics
	health *ops.Health
	src    digest.Source
	close  func()
}

func start(ctx context.Context, opts Options, serve bool) (*service, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	h := &ops.Health{}
	for _, c := range []string{healthClickHouse, healthKafka, healthSlack} {
		h.Grace(c, o.UnhealthyAfter)
	}
	s := &service{o: o, m: m, health: h, close: func() {}}
	if serve && o.ListenAddr != "" {
		// Served before anything is connected, so /healthz says what the notifier waits for.
		srv, err := ops.Serve(ctx, o.ListenAddr, m.reg, h, o.Logger)
		if err != nil {
			return nil, err
		}
		s.close = func() { _ = srv.Close() }
		o.Logger.Info("serving /metrics and /healthz", "addr", srv.Addr.String())
		if o.test.listening != nil {
			o.test.listening(srv.Addr.String())
		}
	}
	fail := func(err error) (*service, error) {
		s.close()
		return nil, err
	}
	conn, err := connectClickHouse(ctx, o, h)
	if err != nil {
		return fail(err)
	}
	closeSrv := s.close
	s.conn, s.close = conn, func() { conn.Close(); closeSrv() }
	if err := retry.Do(ctx, o.Logger, "migrate ClickHouse", retry.Policy{Initial: o.BackoffMin, Max: o.BackoffMax,
		Retryable: func(err error) bool { return store.Classify(err) == store.Transient }}, func(ctx context.Context) error {
		err := store.Migrate(ctx, conn)
		h.Report(healthClickHouse, err)
		return err
	}); err != nil {
		return fail(fmt.Errorf("migrate clickhouse: %w", err))
	}
	claims, closeClaims, err := claim.Open(conn, o.Logger)
	if err != nil {
		return fail(err)
	}
	closeConn := s.close
	s.close = func() { closeClaims(); closeConn() }
	p := &processor{
		o:       o,
		log:     nflog.NewLog(conn),
		claims:  nflog.NewClaims(claims, o.ClaimLease, o.Now),
		limiter: newLimiter(o.RateLimit, o.RateWindow, o.Now),
		m:       m,
		health:  h,
		logger:  o.Logger,
	}
	switch {
	case o.DryRun:
		d := &dryRun{text: o.DryRunText, json: o.DryRunJSON, files: o.DryRunFiles, now: o.Now}
		p.poster, p.uploader = d, d
		o.Logger.Info("dry run: printing messages instead of posting")
	case o.SlackToken.IsSet():
		c := slack.NewClient(o.SlackToken, o.SlackAPIURL)
		who, err := c.AuthTest(ctx)
		if f, reason, _ := slack.Classify(err); err != nil && f == slack.Auth {
			return fail(fmt.Errorf("slack rejects the bot token (%s): %w", reason, err))
		} else if err != nil {
			o.Logger.Warn("could not check the Slack token; going on", "err", err)
		} else {
			o.Logger.Info("connected to Slack", "as", who, "api", o.SlackAPIURL)
		}
		p.poster, p.uploader = c, c
	default:
		p.poster = slack.NewWebhook(o.SlackWebhookURL)
		o.Logger.Info("posting through an incoming webhook: no threads, updates or files")
	}
	s.proc = p
	s.src = o.Results
	if s.src == nil {
		s.src = digest.ClickHouse{Conn: conn}
	}
	return s, nil
}

// connectClickHouse opens the store, reporting each failed attempt on /healthz as what the
// notifier waits for.
func connectClickHouse(ctx context.Context, o Options, h *ops.Health) (store.Conn, error) {
	where := config.RedactURL(o.ClickHouseDSN)
	h.Waiting(healthClickHouse, "connecting to "+where)
	var conn store.Conn
	err := retry.Do(ctx, o.Logger, "connect to ClickHouse at "+where, retry.Policy{Initial: o.BackoffMin, Max: o.BackoffMax,
		Retryable: func(err error) bool { return store.Classify(err) == store.Transient }},
		func(ctx context.Context) error {
			actx, cancel := context.WithTimeout(ctx, connectAttempt)
			defer cancel()
			c, err := store.Open(actx, o.ClickHouseDSN)
			if err != nil {
				h.Waiting(healthClickHouse, "connecting to "+where+": "+err.Error())
				return err
			}
			conn = c
			return nil
		})
	if err != nil {
		return nil, err
	}
	h.Report(healthClickHouse, nil)
	return conn, nil
}

// Run consumes alerts and posts them until ctx ends, running the weekly digest on its
// schedule. It returns nil after a clean shutdown: the alert in hand is finished or left
// uncommitted, finished ones are committed.
func Run(ctx context.Context, opts Options) error {
	s, err := start(ctx, opts, true)
	if err != nil {
		return err
	}
	defer s.close()
	o := s.o
	o.Logger.Info("notifier starting", "replica", o.ReplicaID, "brokers", o.Brokers, "topic", o.Topic, "group", o.Group,
		"default_channel", o.DefaultChannel, "repeat_interval", o.RepeatInterval.String(), "rate_limit", o.RateLimit,
		"rate_window", o.RateWindow.String())

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

	err = newConsumer(o, s.proc, s.m, s.health).run(ctx)
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
	s, err := start(ctx, opts, false)
	if err != nil {
		return err
	}
	defer s.close()
	loc, _ := time.LoadLocation(s.o.DigestTimeZone)
	at := s.o.Now().In(loc).Truncate(time.Second)
	op := "digest|" + s.o.DefaultChannel + "|now|" + at.Format(time.RFC3339)
	return s.proc.sendDigest(ctx, s.src, at, op)
}
