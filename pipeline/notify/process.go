package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

var (
	// errLostClaim: another notifier now holds the op; start over from the log.
	errLostClaim = errors.New("claim lost to another notifier")
	// errCrashed is returned by a test hook simulating a kill.
	errCrashed = errors.New("simulated crash")
)

// permanentError is a Slack failure retrying cannot fix.
type permanentError struct {
	failure failure
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
	health   *health
	logger   *slog.Logger
}

func (p *processor) now() time.Time { return p.o.test.now() }

// handle brings Slack in line with one alert. It returns nil when the alert needs no
// further work (posted, suppressed, or recorded as failed for good) and the offset may be
// committed; otherwise ctx's error or errCrashed.
func (p *processor) handle(ctx context.Context, a *alert.Alert) error {
	holder := p.o.ReplicaID + "/" + randomID(4)
	l := p.logger.With("flag", a.Flag, "dedup_key", dedupKey(a))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := p.state(ctx, a.Flag)
		if err != nil {
			return err
		}
		act, skip := decide(a, st, p.now(), p.o.RepeatInterval)
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
		if again, _ := decide(a, st, p.now(), p.o.RepeatInterval); again == nil || again.op != act.op {
			continue
		}
		err = p.execute(ctx, a, act, holder, l)
		if errors.Is(err, errLostClaim) {
			l.Warn("claim expired before posting; starting over", "op", act.op)
			continue
		}
		return err
	}
}

func (p *processor) state(ctx context.Context, flag string) (*flagState, error) {
	var entries []Entry
	err := p.retryStore(ctx, "read notification log", func(ctx context.Context) error {
		var err error
		entries, err = p.log.Entries(ctx, flag)
		return err
	})
	return buildState(flag, entries), err
}

// retryStore runs a ClickHouse call until it succeeds or ctx ends: while ClickHouse is
// away, alerts wait in Kafka.
func (p *processor) retryStore(ctx context.Context, what string, fn func(context.Context) error) error {
	backoff := p.o.test.backoffMin
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.logger.Warn("ClickHouse call failed, will retry", "what", what, "backoff", backoff, "err", err)
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, p.o.test.backoffMax)
	}
}

func (p *processor) acquire(ctx context.Context, op, holder string, need time.Duration) (Claim, error) {
	var c Claim
	err := p.retryStore(ctx, "claim", func(ctx context.Context) error {
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
func (p *processor) waitFor(ctx context.Context, op string, c Claim) error {
	for {
		if err := sleep(ctx, min(p.o.test.pollInterval, max(time.Until(c.Expires), 10*time.Millisecond))); err != nil {
			return err
		}
		var done bool
		if err := p.retryStore(ctx, "look up op", func(ctx context.Context) error {
			var err error
			done, err = p.log.Has(ctx, op)
			return err
		}); err != nil {
			return err
		}
		if done || !time.Now().Before(c.Expires) {
			return nil
		}
	}
}

// call runs one Slack call for op until it succeeds or fails for good. Before each
// attempt it waits for the channel's rate limit and renews the claim; the call itself
// runs on a context that shutdown does not cancel (a post cut off mid-flight may or may
// not have reached Slack), bounded by httpTimeout. 429s wait Retry-After; 5xx, network
// and auth errors back off exponentially.
func (p *processor) call(ctx context.Context, op, holder, channel string, fn func(context.Context) error) error {
	backoff := p.o.test.backoffMin
	for attempt := 1; ; attempt++ {
		if err := p.limiter.Wait(ctx, channel); err != nil {
			return err
		}
		if err := p.ensure(ctx, op, holder, p.o.ClaimLease); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpTimeout)
		err := fn(cctx)
		cancel()
		if err == nil {
			p.health.ok()
			return nil
		}
		f, reason, wait := classify(err)
		p.m.slackErrors.WithLabelValues(reason).Inc()
		switch f {
		case failChannel, failPermanent:
			return &permanentError{failure: f, reason: reason, err: err}
		case failAuth:
			p.health.fail(reason)
			p.logger.Error("Slack rejects the credentials; alerts are kept until it accepts them",
				"channel", channel, "op", op, "attempt", attempt, "retry_in", backoff, "err", err)
		}
		if wait == 0 {
			wait = backoff + rand.N(backoff/5+1)
			limit := p.o.test.backoffMax
			if f == failAuth {
				limit *= 5
			}
			backoff = min(2*backoff, limit)
		}
		if f != failAuth {
			p.logger.Warn("Slack call failed, will retry", "channel", channel, "op", op, "attempt", attempt,
				"reason", reason, "wait", wait, "err", err)
		}
		// Hold the claim through the wait, so no other notifier takes over a post we are
		// about to retry.
		if err := p.ensure(ctx, op, holder, wait+p.o.ClaimLease); err != nil {
			return err
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// post sends m for op, returning the channel ID and ts.
func (p *processor) post(ctx context.Context, op, holder string, m Message) (channel, ts string, err error) {
	err = p.call(ctx, op, holder, m.Channel, func(ctx context.Context) error {
		var err error
		channel, ts, err = p.poster.Post(ctx, m)
		return err
	})
	return channel, ts, err
}

// record writes the log entries of an effect that happened. It keeps trying after
// shutdown began, for a while: an effect missing from the log is posted again later.
func (p *processor) record(ctx context.Context, es ...Entry) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(30*time.Second, cancel)
		context.AfterFunc(rctx, func() { t.Stop() })
	})
	defer stop()
	if err := p.retryStore(rctx, "write notification log", func(ctx context.Context) error {
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

func (p *processor) entry(a *alert.Alert, act *action, holder string) Entry {
	return Entry{Op: act.op, Flag: a.Flag, Incident: act.incident.id, Kind: act.kind, DedupKey: act.key,
		Decision: a.Decision, Severity: a.Severity, Replica: holder, At: p.now()}
}

// execute performs a claimed action and records it.
func (p *processor) execute(ctx context.Context, a *alert.Alert, act *action, holder string, l *slog.Logger) error {
	if act.kind == kindResolve {
		return p.resolve(ctx, a, act, holder, l)
	}
	kind := renderFirst
	switch act.kind {
	case kindReply:
		kind = renderUpdate
	case kindRepeat:
		kind = renderRepeat
	}
	m := renderAlert(a, kind, p.o.ReportBaseURL, p.now())
	m.Metadata.EventPayload["op"] = act.op
	wanted := a.SlackChannel
	if wanted == "" {
		wanted = p.o.DefaultChannel
	}
	m.Channel = wanted
	if parent := act.incident.parent; act.kind != kindOpen && parent != nil {
		m.Channel, m.ThreadTS = parent.Channel, parent.TS
		m.Broadcast = act.kind == kindRepeat
		if m.Channel == "" { // webhook: the incident has no channel ID and no thread
			m.Channel = wanted
		}
	}
	ch, ts, err := p.post(ctx, act.op, holder, m)
	var pe *permanentError
	if errors.As(err, &pe) && pe.failure == failChannel && act.kind == kindOpen && m.Channel != p.o.DefaultChannel {
		l.Error("cannot post to the alert's channel; posting to the default channel", "channel", m.Channel,
			"reason", pe.reason, "err", err)
		m = withFallbackNote(m, m.Channel, pe.reason)
		m.Channel = p.o.DefaultChannel
		ch, ts, err = p.post(ctx, act.op, holder, m)
	}
	e := p.entry(a, act, holder)
	e.Message = m.marshalBody()
	e.ThreadTS = m.ThreadTS
	switch {
	case errors.As(err, &pe):
		e.Status, e.Error, e.Channel = statusFailed, pe.reason, m.Channel
		p.m.failed.WithLabelValues(pe.reason).Inc()
		l.Error("Slack rejected the alert for good; recorded as failed, will retry on the next detection after the repeat interval",
			"channel", m.Channel, "reason", pe.reason, "err", err)
	case err != nil:
		return err
	default:
		if ch == "" {
			ch = m.Channel
		}
		e.Status, e.Channel, e.TS = statusPosted, ch, ts
		p.m.sent.WithLabelValues(act.kind).Inc()
		l.Info("posted alert", "channel", ch, "kind", act.kind, "ts", ts, "thread_ts", m.ThreadTS)
	}
	return p.record(ctx, e)
}

// resolve marks findings resolved: the incident's first message is rewritten first (an
// idempotent update, harmless to repeat after a crash), then the thread reply is posted
// and recorded.
func (p *processor) resolve(ctx context.Context, a *alert.Alert, act *action, holder string, l *slog.Logger) error {
	parent := act.incident.parent
	if act.closes && parent.TS != "" {
		old, err := unmarshalBody(parent.Message)
		if err != nil {
			l.Warn("cannot read the incident's first message; not marking it resolved", "err", err)
		} else {
			upd := markResolved(old, a, p.now())
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
	m := renderResolved(a, act.keys, act.closes, p.now())
	m.Metadata.EventPayload["op"] = act.op
	m.Channel, m.ThreadTS = parent.Channel, parent.TS
	if m.Channel == "" {
		m.Channel = p.o.DefaultChannel
	}
	ch, ts, err := p.post(ctx, act.op, holder, m)
	base := p.entry(a, act, holder)
	base.Message, base.ThreadTS = m.marshalBody(), m.ThreadTS
	var pe *permanentError
	switch {
	case errors.As(err, &pe):
		base.Status, base.Error, base.Channel = statusFailed, pe.reason, m.Channel
		p.m.failed.WithLabelValues(pe.reason).Inc()
		l.Error("could not post the resolution; recorded the findings as resolved anyway", "channel", m.Channel,
			"reason", pe.reason, "err", err)
	case err != nil:
		return err
	default:
		if ch == "" {
			ch = m.Channel
		}
		base.Status, base.Channel, base.TS = statusPosted, ch, ts
		p.m.sent.WithLabelValues(kindResolve).Inc()
		l.Info("posted resolution", "channel", ch, "ts", ts, "closes", act.closes, "findings", len(act.keys))
	}
	es := make([]Entry, len(act.keys))
	for i, k := range act.keys {
		es[i] = base
		es[i].DedupKey = k
	}
	return p.record(ctx, es...)
}
