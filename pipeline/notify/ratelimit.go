package notify

import (
	"context"
	"sync"
	"time"
)

// limiter allows at most n messages per channel in any window (a sliding window). A
// message over the limit waits for its turn: alerts are queued, never dropped. The limit
// is per process; replicas each apply it to what they post.
type limiter struct {
	n      int
	window time.Duration
	mu     sync.Mutex
	sent   map[string][]time.Time
}

func newLimiter(n int, window time.Duration) *limiter {
	return &limiter{n: n, window: window, sent: map[string][]time.Time{}}
}

// Wait blocks until a message may be sent to channel, and counts it as sent.
func (l *limiter) Wait(ctx context.Context, channel string) error {
	for {
		l.mu.Lock()
		now := time.Now()
		ts := l.sent[channel]
		for len(ts) > 0 && now.Sub(ts[0]) >= l.window {
			ts = ts[1:]
		}
		if len(ts) < l.n {
			l.sent[channel] = append(ts, now)
			l.mu.Unlock()
			return nil
		}
		wait := l.window - now.Sub(ts[0])
		l.sent[channel] = ts
		l.mu.Unlock()
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
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
