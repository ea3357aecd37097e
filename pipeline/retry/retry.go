// Package retry runs an operation again after failures that may pass, with capped,
// jittered exponential backoff (cenkalti/backoff's intervals), and logs every retry with
// its reason and the wait before the next attempt. The decision that shapes it: whether
// an error is worth retrying is decided by the caller, in one place per dependency
// (store.Classify for ClickHouse, the Slack and rollback transports for HTTP), and
// passed here as a predicate or by wrapping the error with Permanent or After; an error
// that can never succeed returns at once instead of being retried forever.
package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Policy says how long to wait between attempts and when to give up.
type Policy struct {
	// Initial is the first wait (default 100ms); each retry doubles it, with jitter.
	Initial time.Duration
	// Max caps the wait (default 10s; a Retry-After may be longer).
	Max time.Duration
	// Attempts stops after this many calls (0: no limit).
	Attempts int
	// Elapsed stops before a wait would end later than this long after the first call
	// (0: no limit; the context still ends it).
	Elapsed time.Duration
	// Retryable decides whether an error may pass (nil: every error not marked
	// Permanent is retried).
	Retryable func(error) bool
	// Exact waits exactly Initial, 2·Initial, … (no jitter), for callers that must
	// say or test exactly when they retry.
	Exact bool
	// Now and Sleep are the clock (tests inject them); the real ones when nil.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Permanent marks err as one that retrying cannot fix: Do returns it at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err}
}

type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanent
	return errors.As(err, &p)
}

// After marks err as retryable no sooner than d (an HTTP Retry-After): the next wait is
// at least d.
func After(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &after{err: err, d: d}
}

type after struct {
	err error
	d   time.Duration
}

func (a *after) Error() string { return a.err.Error() }
func (a *after) Unwrap() error { return a.err }

// Attempts is how many calls of op a Do error reports (1 when it was not retried).
func Attempts(err error) int {
	var g *gaveUp
	if errors.As(err, &g) {
		return g.attempts
	}
	return 1
}

// Stop is why Do stopped calling op.
type Stop int

const (
	// StopFinal: op's error was permanent, or not retryable.
	StopFinal Stop = iota
	// StopAttempts: the policy's attempts were used up.
	StopAttempts
	// StopElapsed: the next wait would have passed the policy's time limit.
	StopElapsed
	// StopContext: the context ended.
	StopContext
)

// Stopped reports why a Do error stopped the retries, and the detail ("waiting 1h more
// would pass the 1m limit", "context canceled").
func Stopped(err error) (Stop, string) {
	var g *gaveUp
	if errors.As(err, &g) {
		return g.stop, g.why
	}
	return StopFinal, ""
}

// gaveUp is Do's error: the last failure of op, and why Do stopped.
type gaveUp struct {
	what     string
	attempts int
	last     error
	stop     Stop
	why      string // "" for a permanent error
}

func (g *gaveUp) Error() string {
	switch {
	case g.why != "":
		return fmt.Sprintf("%s: %v (after %d attempts: %s)", g.what, g.last, g.attempts, g.why)
	case g.attempts > 1:
		return fmt.Sprintf("%s (after %d attempts): %v", g.what, g.attempts, g.last)
	}
	return fmt.Sprintf("%s: %v", g.what, g.last)
}

func (g *gaveUp) Unwrap() error { return g.last }

// Sleep waits d or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Do calls op until it succeeds, returns a permanent error, the policy gives up or ctx
// ends. Each failed attempt that will be retried is logged at WARN with what, the attempt
// number, the error and the wait. The error returned wraps the last failure of op (also
// when the context ended the wait) and says how many attempts were made.
func Do(ctx context.Context, log *slog.Logger, what string, p Policy, op func(context.Context) error) error {
	if log == nil {
		log = slog.Default()
	}
	now, wait := p.Now, p.Sleep
	if now == nil {
		now = time.Now
	}
	if wait == nil {
		wait = Sleep
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = p.Initial
	if b.InitialInterval <= 0 {
		b.InitialInterval = 100 * time.Millisecond
	}
	b.MaxInterval = p.Max
	if b.MaxInterval <= 0 {
		b.MaxInterval = 10 * time.Second
	}
	b.Multiplier = 2
	if p.Exact {
		b.RandomizationFactor = 0
	}
	b.Reset()
	start := now()
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		g := &gaveUp{what: what, attempts: attempt, last: err}
		if IsPermanent(err) || (p.Retryable != nil && !p.Retryable(err)) {
			return g
		}
		if p.Attempts > 0 && attempt >= p.Attempts {
			g.stop, g.why = StopAttempts, "no attempts left"
			return g
		}
		if ctx.Err() != nil {
			g.stop, g.why = StopContext, ctx.Err().Error()
			return g
		}
		next := b.NextBackOff()
		var a *after
		if errors.As(err, &a) && a.d > next {
			next = a.d
		}
		if p.Elapsed > 0 && now().Sub(start)+next > p.Elapsed {
			g.stop, g.why = StopElapsed, fmt.Sprintf("waiting %v more would exceed the %v budget", next.Round(time.Millisecond), p.Elapsed)
			return g
		}
		log.Warn("retrying "+what, "attempt", attempt, "err", err, "wait", next.Round(time.Millisecond).String())
		if err := wait(ctx, next); err != nil {
			g.stop, g.why = StopContext, err.Error()
			return g
		}
	}
}
