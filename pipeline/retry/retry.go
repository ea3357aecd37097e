// Package retry runs an operation again after failures that may pass, with capped,
// jittered exponential backoff (cenkalti/backoff), and logs every retry with its reason
// and the wait before the next attempt. The decision that shapes it: whether an error is
// worth retrying is decided by the caller, in one place per dependency (store.Classify
// for ClickHouse, the Slack and rollback transports for HTTP), and passed here as a
// predicate or by wrapping the error with Permanent; an error that can never succeed
// returns at once instead of being retried forever.
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
	// Max caps the wait (default 10s).
	Max time.Duration
	// Attempts stops after this many calls (0: no limit).
	Attempts int
	// Elapsed stops once this much time has passed since the first call (0: no limit;
	// the context still ends it).
	Elapsed time.Duration
	// Retryable decides whether an error may pass (nil: every error not marked
	// Permanent is retried).
	Retryable func(error) bool
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

// After marks err as retryable no sooner than d (an HTTP Retry-After): the next wait is d
// instead of the backoff's.
func After(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &after{err: err, ra: &backoff.RetryAfterError{Duration: d}}
}

type after struct {
	err error
	ra  *backoff.RetryAfterError
}

func (a *after) Error() string   { return a.err.Error() }
func (a *after) Unwrap() []error { return []error{a.err, a.ra} }

// Do calls op until it succeeds, returns a permanent error, the policy gives up or ctx
// ends. Each failed attempt that will be retried is logged at WARN with what, the attempt
// number, the error and the wait. The error returned wraps the last failure of op, also
// when the context ended the wait.
func Do(ctx context.Context, log *slog.Logger, what string, p Policy, op func(context.Context) error) error {
	if log == nil {
		log = slog.Default()
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
	opts := []backoff.RetryOption{backoff.WithBackOff(b), backoff.WithMaxElapsedTime(p.Elapsed)}
	if p.Attempts > 0 {
		opts = append(opts, backoff.WithMaxTries(uint(p.Attempts)))
	}
	attempt := 0
	var last error
	opts = append(opts, backoff.WithNotify(func(err error, wait time.Duration) {
		log.Warn("retrying "+what, "attempt", attempt, "err", err, "wait", wait.Round(time.Millisecond).String())
	}))
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		err := op(ctx)
		last = err
		if err != nil && p.Retryable != nil && !IsPermanent(err) && !p.Retryable(err) {
			return struct{}{}, backoff.Permanent(err)
		}
		if IsPermanent(err) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, opts...)
	if err == nil {
		return nil
	}
	if last != nil && !errors.Is(err, last) {
		// The context ended the wait: report what was failing, not only the cancellation.
		return fmt.Errorf("%s: %w (after %d attempts: %v)", what, last, attempt, err)
	}
	if attempt > 1 {
		return fmt.Errorf("%s (after %d attempts): %w", what, attempt, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
