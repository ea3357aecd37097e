package notify

import (
	"context"
	"sync"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// limiter allows at most n messages per channel in any window (a sliding window). A
// message over the limit waits for its turn: alerts are queued, never dropped. The limit
// is per process; replicas each apply it to what they post.
//
// Its decisions (Reserve) depend only on its clock, so they are tested on an injected
// one; Wait sleeps through sleep, which tests replace too.
type limiter struct {
	n      int
	window time.Duration
	now    func() time.Time
	sleep  func(context.Context, time.Duration) error
	mu     sync.Mutex
	sent   map[string][]time.Time
}

func newLimiter(n int, window time.Duration, now func() time.Time) *limiter {
	return &limiter{n: n, window: window, now: now, sleep: retry.Sleep, sent: map[string][]time.Time{}}
}

// Reserve decides for one message to channel now: 0 means it may go and is counted as
// sent; otherwise it must wait that long and ask again (nothing is counted).
func (l *limiter) Reserve(channel string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	ts := l.sent[channel]
	for len(ts) > 0 && now.Sub(ts[0]) >= l.window {
		ts = ts[1:]
	}
	if len(ts) < l.n {
		l.sent[channel] = append(ts, now)
		return 0
	}
	l.sent[channel] = ts
	return l.window - now.Sub(ts[0])
}

// Wait blocks until a message may be sent to channel, and counts it as sent. It returns
// how long it waited in all.
func (l *limiter) Wait(ctx context.Context, channel string) (time.Duration, error) {
	var waited time.Duration
	for {
		d := l.Reserve(channel)
		if d == 0 {
			return waited, nil
		}
		if err := l.sleep(ctx, d); err != nil {
			return waited, err
		}
		waited += d
	}
}
