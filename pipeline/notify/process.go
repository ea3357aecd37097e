package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/ops"
	"github.com/flagwatch/flagwatch/pipeline/render"
	"github.com/flagwatch/flagwatch/pipeline/retry"
	"github.com/flagwatch/flagwatch/pipeline/slack"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

var (
	// errLostClaim: another notifier now holds the op; start over from the log.
	errLostClaim = errors.New("claim lost to another notifier")
	// errCrashed is returned by a test hook simulating a kill.
	errCrashed = errors.New("simulated crash")
)

// Health components.
const (
	healthClickHouse = "clickhouse"
	healthKafka      = "kafka"
	healthSlack      = "slack"
)

// Log is the notification log as the notifier uses it (nflog.Log in ClickHouse).
type Log interface {
	// Entries returns a flag's entries in the order they were written.
	Entries(ctx context.Context, flag string) ([]nflog.Entry, error)
	// Has reports whether an effect with this op is recorded.
	Has(ctx context.Context, op string) (bool, error)
	// Append records the entries of one effect at once.
	Append(ctx context.Context, es ...nflog.Entry) error
}

// Claimer arbitrates between notifiers that want to perform the same op (nflog.Claims).
type Claimer interface {
	Acquire(ctx context.Context, op, holder string, need time.Duration) (nflog.Claim, error)
}

// Poster sends messages to Slack (slack.Client, slack.Webhook, or the dry run).
type Poster interface {
	// Post sends m and returns the channel ID and the ts Slack assigned (both "" for an
	// incoming webhook, which can neither thread nor update).
	Post(ctx context.Context, m slack.Message) (channel, ts string, err error)
	// Update rewrites the message at (channel ID, ts); slack.ErrUnsupported when the
	// poster cannot.
	Update(ctx context.Context, channel, ts string, m slack.Message) error
}

// Uploader shares a file in a channel (the digest's chart).
type Uploader interface {
	Upload(ctx context.Context, f slack.File) error
}

// permanentError is a Slack failure retrying cannot fix.
type permanentError struct {
	failure slack.Failure
	reason  string
	err     error
}

func (e *permanentError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// processor turns alerts into Slack messages, exactly once per op.
type processor struct {
	o        Options
	log      Log
	claims   Claimer
	poster   Poster
	uploader Uploader // nil without a token
	limiter  *limiter
	m        *metrics
	health   *ops.Health
	logger   *slog.Logger
}

func (p *processor) now() time.Time { return p.o.Now() }

func (p *processor) renderOptions() render.Options {
	return render.Options{ReportBaseURL: p.o.ReportBaseURL, Now: p.now()}
}

func (p *processor) policy() retry.Policy {
	return retry.Policy{Initial: p.o.BackoffMin, Max: p.o.BackoffMax}
}

// handle brings Slack in line with one alert. It returns nil when the alert needs no
// further work (posted, suppressed, or recorded as failed for good) and the offset may be
// committed; otherwise the error that stopped it (shutdown) or errCrashed.
func (p *processor) handle(ctx context.Context, a *alert.Alert) error {
	if err := p.handleFindings(ctx, a); err != nil {
		return err
	}
	return p.watch(ctx, a)
}

// handleFindings brings the thread in line with the alert's findings.
func (p *processor) handleFindings(ctx context.Context, a *alert.Alert) error {
	holder := p.o.ReplicaID + "/" + randomID(4)
	fs := render.Findings(a)
	l := p.logger.With("flag", a.Flag, "dedup_key", fs[0].DedupKey, "findings", len(fs))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := p.state(ctx, a.Flag)
		if err != nil {
			return err
		}
		act, skip := decide(a.Flag, fs, len(a.Findings) > 0, st, p.now(), p.o.RepeatInterval)
		if act == nil {
			p.m.suppressed.WithLabelValues(skip).Inc()
			l.Debug("alert needs no message", "reason", skip)
			return nil
		}
		c, err := p.acquire(ctx, act.op, holder, p.o.ClaimLease)
		if err != nil {
			return err
		}
		if !c.Held {
			p.m.claimsLost.Inc()
			l.Info("another notifier is posting this; waiting for it", "op", act.op, "holder", c.Holder)
			if err := p.waitFor(ctx, act.op, c); err != nil {
				return err
			}
			continue
		}
		// The log may have changed between reading it and winning the claim (the op may
		// even be done already, by a notifier whose claim has since expired).
		if st, err = p.state(ctx, a.Flag); err != nil {
			return err
		}
		if again, _ := decide(a.Flag, fs, len(a.Findings) > 0, st, p.now(), p.o.RepeatInterval); again == nil || again.op != act.op {
			continue
		}
		err = p.execute(ctx, a, act, holder, l.With("op", act.op))
		if errors.Is(err, errLostClaim) {
			l.Warn("claim expired before posting; starting over", "op", act.op)
			continue
		}
		return err
	}
}

func (p *processor) state(ctx context.Context, flag string) (*flagState, error) {
	var entries []nflog.Entry
	err := p.retryStore(ctx, "read the notification log", func(ctx context.Context) error {
		var err error
		entries, err = p.log.Entries(ctx, flag)
		return err
	})
	return buildState(flag, entries), err
}

// retryStore runs a ClickHouse call until it succeeds, fails for good or ctx ends: while
// ClickHouse is away, alerts wait in Kafka. Every retry is logged; /healthz turns
// unhealthy once the calls have failed for longer than Options.UnhealthyAfter.
func (p *processor) retryStore(ctx context.Context, what string, fn func(context.Context) error) error {
	pol := p.policy()
	// An error that can never pass (a missing table, refused credentials) stops the
	// notifier with that error rather than holding every alert forever.
	pol.Retryable = func(err error) bool { return store.Classify(err) == store.Transient }
	return retry.Do(ctx, p.logger, what, pol, func(ctx context.Context) error {
		err := fn(ctx)
		if ctx.Err() == nil {
			p.health.Report(healthClickHouse, err)
		}
		return err
	})
}

func (p *processor) acquire(ctx context.Context, op, holder string, need time.Duration) (nflog.Claim, error) {
	var c nflog.Claim
	err := p.retryStore(ctx, "claim "+op, func(ctx context.Context) error {
		var err error
		c, err = p.claims.Acquire(ctx, op, holder, need)
		return err
	})
	return c, err
}

// ensure renews holder's claim on op so that it covers need, or reports errLostClaim.
func (p *processor) ensure(ctx context.Context, op, holder string, need time.Duration) error {
	c, err := p.acquire(ctx, op, holder, need)
	if err != nil {
		return err
	}
	if !c.Held {
		return errLostClaim
	}
	return nil
}

// waitFor waits until op is in the log or its holder's claim has expired.
func (p *processor) waitFor(ctx context.Context, op string, c nflog.Claim) error {
	for {
		if err := retry.Sleep(ctx, min(p.o.PollInterval, max(c.Expires.Sub(p.now()), 10*time.Millisecond))); err != nil {
			return err
		}
		var done bool
		if err := p.retryStore(ctx, "look up "+op, func(ctx context.Context) error {
			var err error
			done, err = p.log.Has(ctx, op)
			return err
		}); err != nil {
			return err
		}
		if done || !p.now().Before(c.Expires) {
			return nil
		}
	}
}

// call runs one Slack call for op until it succeeds or fails for good. Before each
// attempt it waits for the channel's rate limit and renews the claim; the call itself
// runs on a context that shutdown does not cancel (a post cut off mid-flight may or may
// not have reached Slack), bounded by slack.Timeout. A 429 waits Retry-After; 5xx,
// network and credential errors back off exponentially; each retry is logged with its
// reason.
func (p *processor) call(ctx context.Context, op, holder, channel string, fn func(context.Context) error) error {
	what := "Slack call for " + op + " in " + channel
	return retry.Do(ctx, p.logger, what, p.policy(), func(ctx context.Context) error {
		waited, err := p.limiter.Wait(ctx, channel)
		if err != nil {
			return retry.Permanent(err)
		}
		if waited > 0 {
			p.m.rateWaits.Inc()
			p.logger.Debug("waited for the channel's rate limit", "channel", channel, "op", op, "waited", waited.String())
		}
		if err := p.ensure(ctx, op, holder, p.o.ClaimLease); err != nil {
			return retry.Permanent(err)
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slack.Timeout)
		err = fn(cctx)
		cancel()
		if err == nil {
			p.health.Report(healthSlack, nil)
			return nil
		}
		f, reason, retryAfter := slack.Classify(err)
		p.m.slackErrors.WithLabelValues(reason).Inc()
		switch f {
		case slack.Channel, slack.Permanent:
			// Slack answered: it is the channel or the message, not Slack, that fails.
			p.health.Report(healthSlack, nil)
			return retry.Permanent(&permanentError{failure: f, reason: reason, err: err})
		case slack.Auth:
			err = fmt.Errorf("Slack rejects the credentials (%s); alerts are kept until it accepts them: %w", reason, err)
		default:
			err = fmt.Errorf("%s: %w", reason, err)
		}
		p.health.Report(healthSlack, err)
		// Hold the claim through the wait, so no other notifier takes over a post we are
		// about to retry.
		hold := p.o.BackoffMax
		if retryAfter > 0 {
			hold = retryAfter
		}
		if err := p.ensure(ctx, op, holder, hold+p.o.ClaimLease); err != nil {
			return retry.Permanent(err)
		}
		if retryAfter > 0 {
			return retry.After(err, retryAfter)
		}
		return err
	})
}

// post sends m for op, returning the channel ID and ts.
func (p *processor) post(ctx context.Context, op, holder string, m slack.Message) (channel, ts string, err error) {
	err = p.call(ctx, op, holder, m.Channel, func(ctx context.Context) error {
		var err error
		channel, ts, err = p.poster.Post(ctx, m)
		return err
	})
	return channel, ts, err
}

// record writes the log entries of an effect that happened. It keeps trying after
// shutdown began, for a while: an effect missing from the log is posted again later.
func (p *processor) record(ctx context.Context, es ...nflog.Entry) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(30*time.Second, cancel)
		context.AfterFunc(rctx, func() { t.Stop() })
	})
	defer stop()
	if err := p.retryStore(rctx, "write the notification log", func(ctx context.Context) error {
		return p.log.Append(ctx, es...)
	}); err != nil {
		p.logger.Error("posted but could not record it; it will be posted again", "op", es[0].Op, "flag", es[0].Flag, "err", err)
		return fmt.Errorf("record %s: %w", es[0].Op, err)
	}
	if p.o.test.afterLog != nil && p.o.test.afterLog(es[0].Op) {
		return errCrashed
	}
	return nil
}

// entries are the log rows of one effect: one per finding it is about.
func (p *processor) entries(a *alert.Alert, act *action, holder string, kind string, fs []alert.Finding) []nflog.Entry {
	es := make([]nflog.Entry, len(fs))
	for i, f := range fs {
		es[i] = nflog.Entry{Op: act.op, Flag: a.Flag, Incident: act.incident.id, Kind: kind, DedupKey: f.DedupKey,
			Decision: f.Decision, Severity: f.Severity, Replica: holder, At: p.now()}
	}
	return es
}

func (p *processor) channelOf(a *alert.Alert) string {
	if a.SlackChannel != "" {
		return a.SlackChannel
	}
	return p.o.DefaultChannel
}

// execute performs a claimed action and records it.
func (p *processor) execute(ctx context.Context, a *alert.Alert, act *action, holder string, l *slog.Logger) error {
	if act.kind == nflog.KindOpen {
		return p.open(ctx, a, act, holder, l)
	}
	return p.reply(ctx, a, act, holder, l)
}

// open posts an incident's first message; a channel Slack rejects falls back to the
// default channel with a note.
func (p *processor) open(ctx context.Context, a *alert.Alert, act *action, holder string, l *slog.Logger) error {
	m := render.Opening(a, p.renderOptions())
	render.SetOp(&m, act.op)
	m.Channel = p.channelOf(a)
	ch, ts, err := p.post(ctx, act.op, holder, m)
	var pe *permanentError
	if errors.As(err, &pe) && pe.failure == slack.Channel && m.Channel != p.o.DefaultChannel {
		l.Error("cannot post to the alert's channel; posting to the default channel", "channel", m.Channel,
			"reason", pe.reason, "err", err)
		m = render.FallbackNote(m, m.Channel, pe.reason)
		m.Channel = p.o.DefaultChannel
		ch, ts, err = p.post(ctx, act.op, holder, m)
	}
	es := p.entries(a, act, holder, nflog.KindOpen, act.open)
	switch {
	case errors.As(err, &pe):
		p.failed(es, m, pe, l)
	case err != nil:
		return err
	default:
		if ch == "" {
			ch = m.Channel
		}
		body := m.MarshalBody()
		for i := range es {
			es[i].Status, es[i].Channel, es[i].TS, es[i].Message = nflog.StatusPosted, ch, ts, body
		}
		p.m.sent.WithLabelValues(nflog.KindOpen).Inc()
		l.Info("opened the incident's thread", "channel", ch, "ts", ts, "findings", len(act.open))
	}
	return p.record(ctx, es...)
}

func (p *processor) failed(es []nflog.Entry, m slack.Message, pe *permanentError, l *slog.Logger) {
	for i := range es {
		es[i].Status, es[i].Error, es[i].Channel = nflog.StatusFailed, pe.reason, m.Channel
	}
	p.m.failed.WithLabelValues(pe.reason).Inc()
	l.Error("Slack rejected the message for good; recorded as failed, will try again on a detection after the repeat interval",
		"channel", m.Channel, "reason", pe.reason, "err", pe)
}

// reply posts what is new in an open incident as a thread reply. When the reply closes
// the incident, the first message is rewritten as resolved first (an idempotent update,
// harmless to repeat after a crash).
func (p *processor) reply(ctx context.Context, a *alert.Alert, act *action, holder string, l *slog.Logger) error {
	parent := act.incident.parent
	if act.update.Closes && parent.TS != "" {
		old, err := slack.UnmarshalBody(parent.Message)
		if err != nil {
			l.Warn("cannot read the incident's first message; not marking it resolved", "err", err)
		} else {
			upd := render.MarkResolved(old, a, p.now())
			err = p.call(ctx, act.op, holder, parent.Channel, func(ctx context.Context) error {
				return p.poster.Update(ctx, parent.Channel, parent.TS, upd)
			})
			var pe *permanentError
			switch {
			case errors.As(err, &pe):
				l.Warn("could not mark the incident's first message resolved", "channel", parent.Channel, "reason", pe.reason, "err", err)
			case err != nil:
				return err
			}
		}
	}
	m := render.Reply(a, act.update, p.renderOptions())
	render.SetOp(&m, act.op)
	m.Channel, m.ThreadTS = parent.Channel, parent.TS
	m.Broadcast = len(act.update.Repeat) > 0 && m.ThreadTS != ""
	if m.Channel == "" { // webhook: the incident has no channel ID and no thread
		m.Channel = p.channelOf(a)
	}
	ch, ts, err := p.post(ctx, act.op, holder, m)

	es := p.entries(a, act, holder, nflog.KindReply, act.update.New)
	es = append(es, p.entries(a, act, holder, nflog.KindRepeat, act.update.Repeat)...)
	for _, k := range act.resolveKeys {
		es = append(es, nflog.Entry{Op: act.op, Flag: a.Flag, Incident: act.incident.id, Kind: nflog.KindResolve,
			DedupKey: k, Decision: alert.Resolved, Severity: alert.Info, Replica: holder, At: p.now()})
	}
	var pe *permanentError
	switch {
	case errors.As(err, &pe):
		// Resolutions stand even when the message saying so could not be posted.
		p.failed(es, m, pe, l)
	case err != nil:
		return err
	default:
		if ch == "" {
			ch = m.Channel
		}
		for i := range es {
			es[i].Status, es[i].Channel, es[i].TS, es[i].ThreadTS = nflog.StatusPosted, ch, ts, m.ThreadTS
		}
		p.m.sent.WithLabelValues(nflog.KindReply).Inc()
		l.Info("replied in the incident's thread", "channel", ch, "ts", ts, "thread_ts", m.ThreadTS,
			"new", len(act.update.New), "repeated", len(act.update.Repeat), "resolved", len(act.resolveKeys),
			"headline_changed", act.update.HeadlineChanged, "closes", act.update.Closes)
	}
	return p.record(ctx, es...)
}

// watch posts the sessions to watch that an alert carries for one of its findings
// (SPEC §12) as a reply in the flag's open incident, once per incident: its op is
// "watch|<incident>|0", and once the log has it — posted, or rejected by Slack for good —
// later alerts of the incident post no other.
func (p *processor) watch(ctx context.Context, a *alert.Alert) error {
	var f *alert.Finding
	for i := range a.Findings {
		if w := a.Findings[i].Watch; w != nil && len(w.Sessions) > 0 {
			f = &a.Findings[i]
			break
		}
	}
	if f == nil {
		return nil
	}
	holder := p.o.ReplicaID + "/" + randomID(4)
	l := p.logger.With("flag", a.Flag, "dedup_key", f.DedupKey)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := p.state(ctx, a.Flag)
		if err != nil {
			return err
		}
		in := st.current()
		if in == nil || in.watched {
			return nil
		}
		op := st.op("watch|" + in.id)
		c, err := p.acquire(ctx, op, holder, p.o.ClaimLease)
		if err != nil {
			return err
		}
		if !c.Held {
			p.m.claimsLost.Inc()
			if err := p.waitFor(ctx, op, c); err != nil {
				return err
			}
			continue
		}
		if st, err = p.state(ctx, a.Flag); err != nil {
			return err
		}
		if again := st.current(); again == nil || again.id != in.id || again.watched {
			continue
		}
		err = p.postWatch(ctx, a, *f, in, op, holder, l.With("op", op))
		if errors.Is(err, errLostClaim) {
			l.Warn("claim expired before posting; starting over", "op", op)
			continue
		}
		return err
	}
}

func (p *processor) postWatch(ctx context.Context, a *alert.Alert, f alert.Finding, in *incident, op, holder string, l *slog.Logger) error {
	m := render.Watch(a, f, p.renderOptions())
	render.SetOp(&m, op)
	m.Channel, m.ThreadTS = in.parent.Channel, in.parent.TS
	if m.Channel == "" { // webhook: no channel ID and no thread
		m.Channel = p.channelOf(a)
	}
	ch, ts, err := p.post(ctx, op, holder, m)
	es := []nflog.Entry{{Op: op, Flag: a.Flag, Incident: in.id, Kind: nflog.KindWatch, DedupKey: f.DedupKey,
		Decision: f.Decision, Severity: f.Severity, Replica: holder, At: p.now()}}
	var pe *permanentError
	switch {
	case errors.As(err, &pe):
		es[0].Status, es[0].Error, es[0].Channel = nflog.StatusFailed, pe.reason, m.Channel
		p.m.failed.WithLabelValues(pe.reason).Inc()
		l.Error("Slack rejected the sessions to watch for good; the incident goes without them", "channel", m.Channel,
			"reason", pe.reason, "err", pe)
	case err != nil:
		return err
	default:
		if ch == "" {
			ch = m.Channel
		}
		es[0].Status, es[0].Channel, es[0].TS, es[0].ThreadTS = nflog.StatusPosted, ch, ts, m.ThreadTS
		p.m.sent.WithLabelValues(nflog.KindWatch).Inc()
		l.Info("posted the incident's sessions to watch", "channel", ch, "thread_ts", m.ThreadTS, "sessions", len(f.Watch.Sessions))
	}
	return p.record(ctx, es...)
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
