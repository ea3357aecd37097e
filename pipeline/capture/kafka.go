package capture

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// kafkaComponent names Kafka in /healthz.
const kafkaComponent = "kafka"

// pingTimeout bounds one check of the brokers.
const pingTimeout = 2 * time.Second

// downCheckInterval is how often the brokers are pinged while they are down: each
// request meanwhile is answered 503 at once, so recovery should be noticed quickly.
const downCheckInterval = time.Second

// kafkaState is what capture knows about Kafka. It is down from the moment a produce is
// not acknowledged or a ping fails, until a ping succeeds; while it is down, requests
// are answered 503 with Retry-After at once instead of each waiting ProduceTimeout for
// acks that will not come (and holding its memory meanwhile).
type kafkaState struct {
	p      Producer
	health *ops.Health // nil: not reported
	now    func() time.Time
	log    *slog.Logger

	mu    sync.Mutex
	err   error // nil: up (or not known to be down)
	since time.Time
}

func newKafkaState(p Producer, health *ops.Health, now func() time.Time, log *slog.Logger) *kafkaState {
	return &kafkaState{p: p, health: health, now: now, log: log}
}

// down is nil unless Kafka is known to be down; then it says since when and why.
func (k *kafkaState) down() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err == nil {
		return nil
	}
	return fmt.Errorf("kafka down since %s: %w", k.since.UTC().Format(time.RFC3339), k.err)
}

func (k *kafkaState) failed(err error) {
	k.mu.Lock()
	was := k.err
	if was == nil {
		k.since = k.now()
	}
	k.err = err
	k.mu.Unlock()
	if was == nil {
		k.log.Warn("Kafka is down; "+k.effect(), "err", err)
	}
	k.report(err)
}

func (k *kafkaState) ok() {
	k.mu.Lock()
	was := k.err
	k.err = nil
	k.mu.Unlock()
	if was != nil {
		if k.health == nil {
			k.log.Info("Kafka answers again; keeping copies of events")
		} else {
			k.log.Info("Kafka answers again; accepting events")
		}
	}
	k.report(nil)
}

// effect says what Kafka down means for the requests.
func (k *kafkaState) effect() string {
	if k.health == nil {
		return "dropping the copies of events until a broker answers (PostHog still answers the SDKs); the webhook answers 503"
	}
	return "answering 503 with Retry-After until a broker answers"
}

// report tells /healthz, unless health is nil (proxy mode, where Kafka down only
// degrades capture: the proxy still answers).
func (k *kafkaState) report(err error) {
	if k.health != nil {
		k.health.Report(kafkaComponent, err)
	}
}

// watch pings until ctx ends: every interval while Kafka is up, every
// downCheckInterval while it is down.
func (k *kafkaState) watch(ctx context.Context, interval time.Duration) {
	for {
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := k.p.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wait := interval
		if err != nil {
			k.failed(fmt.Errorf("ping brokers: %w", err))
			wait = min(interval, downCheckInterval)
		} else {
			k.ok()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
