package retry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock advances only when Do sleeps.
type fakeClock struct {
	t     time.Time
	slept []time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(_ context.Context, d time.Duration) error {
	c.slept = append(c.slept, d)
	c.t = c.t.Add(d)
	return nil
}

func policy(c *fakeClock) Policy {
	return Policy{Initial: time.Second, Max: 8 * time.Second, Now: c.now, Sleep: c.sleep}
}

func TestRetriesUntilSuccessAndLogsEachRetry(t *testing.T) {
	c := &fakeClock{t: time.Unix(0, 0)}
	var logs bytes.Buffer
	calls := 0
	err := Do(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)), "call the thing", policy(c), func(context.Context) error {
		calls++
		if calls < 4 {
			return errors.New("connection refused")
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 4, calls)
	require.Len(t, c.slept, 3)
	for i := 1; i < len(c.slept); i++ {
		require.LessOrEqual(t, c.slept[i], 8*time.Second)
	}
	require.Equal(t, 3, strings.Count(logs.String(), "retrying call the thing"), logs.String())
	require.Contains(t, logs.String(), "err=\"connection refused\"")
}

func TestPermanentAndUnretryableStopAtOnce(t *testing.T) {
	c := &fakeClock{t: time.Unix(0, 0)}
	base := errors.New("wrong password")
	err := Do(context.Background(), nil, "log in", policy(c), func(context.Context) error { return Permanent(base) })
	require.ErrorIs(t, err, base)
	require.Empty(t, c.slept)
	require.Equal(t, 1, Attempts(err))

	p := policy(c)
	p.Retryable = func(error) bool { return false }
	err = Do(context.Background(), nil, "log in", p, func(context.Context) error { return base })
	require.ErrorIs(t, err, base)
	require.Empty(t, c.slept)
}

func TestRetryAfterAttemptsAndElapsed(t *testing.T) {
	c := &fakeClock{t: time.Unix(0, 0)}
	p := policy(c)
	p.Attempts = 3
	err := Do(context.Background(), nil, "post", p, func(context.Context) error { return After(errors.New("429"), 30*time.Second) })
	require.Error(t, err)
	require.Equal(t, 3, Attempts(err))
	require.Equal(t, []time.Duration{30 * time.Second, 30 * time.Second}, c.slept, "Retry-After beats the backoff")
	require.Contains(t, err.Error(), "no attempts left")

	c = &fakeClock{t: time.Unix(0, 0)}
	p = policy(c)
	p.Elapsed = 10 * time.Second
	err = Do(context.Background(), nil, "post", p, func(context.Context) error { return errors.New("503") })
	require.Error(t, err)
	require.Contains(t, err.Error(), "budget")
	var total time.Duration
	for _, d := range c.slept {
		total += d
	}
	require.LessOrEqual(t, total, 10*time.Second)
}

func TestContextEndsTheWaitAndKeepsTheCause(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cause := errors.New("server starting")
	err := Do(ctx, nil, "connect", Policy{Sleep: func(context.Context, time.Duration) error { cancel(); return context.Canceled }},
		func(context.Context) error { return cause })
	require.ErrorIs(t, err, cause)
	require.Contains(t, err.Error(), "context canceled")
}
