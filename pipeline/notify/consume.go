package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/ops"
	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// consumer reads the alerts topic in a consumer group, one goroutine per partition (the
// franz-go goroutine-per-partition pattern with manual commits). A partition's records
// are handled in order and each offset is committed right after its alert is done, so a
// crash replays at most the alert in hand, which the log then recognises.
type consumer struct {
	o      Options
	proc   *processor
	m      *metrics
	health *ops.Health
	logger *slog.Logger

	cl      *kgo.Client
	mu      sync.Mutex
	workers map[int32]*worker
	crashed chan struct{}
	crash   sync.Once
}

type worker struct {
	partition int32
	recs      chan []*kgo.Record
	cancel    context.CancelFunc
	stopped   <-chan struct{} // closed when cancel was called
	done      chan struct{}
}

func newConsumer(o Options, proc *processor, m *metrics, h *ops.Health) *consumer {
	return &consumer{o: o, proc: proc, m: m, health: h, logger: o.Logger, workers: map[int32]*worker{}, crashed: make(chan struct{})}
}

// waitReachable pings the brokers until one answers, reporting each failed attempt on
// /healthz as what the notifier waits for.
func (c *consumer) waitReachable(ctx context.Context, cl *kgo.Client) error {
	c.health.Waiting(healthKafka, "connecting to "+c.o.Brokers)
	err := retry.Do(ctx, c.logger, "reach Kafka at "+c.o.Brokers, retry.Policy{Initial: c.o.BackoffMin, Max: c.o.BackoffMax},
		func(ctx context.Context) error {
			actx, cancel := context.WithTimeout(ctx, connectAttempt)
			defer cancel()
			if err := cl.Ping(actx); err != nil {
				c.health.Waiting(healthKafka, "connecting to "+c.o.Brokers+": "+err.Error())
				return err
			}
			return nil
		})
	if err != nil {
		return err
	}
	c.health.Report(healthKafka, nil)
	return nil
}

// run consumes until ctx ends (nil) or a test hook simulates a crash (errCrashed).
func (c *consumer) run(ctx context.Context) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(broker.Seeds(c.o.Brokers)...),
		kgo.ConsumerGroup(c.o.Group),
		kgo.ConsumeTopics(c.o.Topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.revoked),
		kgo.FetchMaxWait(time.Second),
	)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	c.cl = cl
	defer cl.Close()
	if err := c.waitReachable(ctx, cl); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.crashed:
			cancel()
		case <-pctx.Done():
		}
	}()
	for {
		fetches := cl.PollRecords(pctx, 256)
		if fetches.IsClientClosed() || pctx.Err() != nil {
			break
		}
		var fetchErr error
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				fetchErr = err
				c.logger.Warn("fetch failed", "topic", topic, "partition", p, "err", err)
			}
		})
		c.health.Report(healthKafka, fetchErr)
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			last := ftp.Records[len(ftp.Records)-1]
			c.m.lag.WithLabelValues(strconv.Itoa(int(ftp.Partition))).Set(float64(max(ftp.HighWatermark-last.Offset-1, 0)))
			c.dispatch(pctx, ftp.Partition, ftp.Records)
		})
	}
	c.stopAll() // each worker finishes the alert in hand at a safe point; done ones are committed
	select {
	case <-c.crashed:
		return errCrashed
	default:
		return nil
	}
}

func (c *consumer) dispatch(ctx context.Context, p int32, recs []*kgo.Record) {
	c.mu.Lock()
	w := c.workers[p]
	c.mu.Unlock()
	if w == nil {
		return // revoked meanwhile: the new owner fetches these again from the committed offset
	}
	select {
	case w.recs <- recs:
	case <-w.stopped:
	case <-ctx.Done():
	}
}

func (c *consumer) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range assigned[c.o.Topic] {
		if c.workers[p] != nil {
			continue
		}
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w := &worker{partition: p, recs: make(chan []*kgo.Record, 64), cancel: cancel, stopped: wctx.Done(), done: make(chan struct{})}
		c.workers[p] = w
		c.logger.Info("partition assigned", "topic", c.o.Topic, "partition", p)
		go c.work(wctx, cl, w)
	}
}

// revoked stops the partitions' workers at their next safe point and waits for them:
// once it returns, franz-go may give the partitions to another notifier, which starts at
// the last committed offset.
func (c *consumer) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	c.mu.Lock()
	var ws []*worker
	for _, p := range revoked[c.o.Topic] {
		if w := c.workers[p]; w != nil {
			ws = append(ws, w)
			delete(c.workers, p)
		}
	}
	c.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
		c.logger.Info("partition released", "topic", c.o.Topic, "partition", w.partition)
	}
}

func (c *consumer) stopAll() {
	c.mu.Lock()
	ws := make(map[string][]int32)
	for p := range c.workers {
		ws[c.o.Topic] = append(ws[c.o.Topic], p)
	}
	c.mu.Unlock()
	c.revoked(context.Background(), c.cl, ws)
}

func (c *consumer) work(ctx context.Context, cl *kgo.Client, w *worker) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			return
		case recs := <-w.recs:
			for _, r := range recs {
				err := c.handle(ctx, r)
				if errors.Is(err, errCrashed) {
					c.crash.Do(func() { close(c.crashed) })
					return
				}
				if err != nil {
					return // stopped before the alert was done: leave it uncommitted
				}
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if err := cl.CommitRecords(cctx, r); err != nil {
					c.logger.Warn("commit failed; the alert may be handled again (the log makes that harmless)",
						"partition", r.Partition, "offset", r.Offset, "err", err)
				}
				cancel()
			}
		}
	}
}

func (c *consumer) handle(ctx context.Context, r *kgo.Record) error {
	c.m.received.Inc()
	var a alert.Alert
	if err := json.Unmarshal(r.Value, &a); err != nil || a.Flag == "" || a.Decision == "" {
		if err == nil {
			err = errors.New("alert without flag or decision")
		}
		c.m.decodeErrors.Inc()
		c.logger.Error("skipping undecodable alert", "partition", r.Partition, "offset", r.Offset, "err", err)
		return nil
	}
	return c.proc.handle(ctx, &a)
}
