package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// componentKafka is the name Kafka's state is reported under on /healthz.
const componentKafka = "kafka"

type consumer struct {
	o      Options
	log    *slog.Logger
	m      *metrics
	health *ops.Health
	sink   Sink
	cl     *kgo.Client
	dedup  *dedup

	// mu guards everything below between the poll loop and the rebalance callbacks.
	// Batches in flight touch only their own batch, the sink, metrics and health.
	mu  sync.Mutex
	cur *batch // being filled by the poll loop
	// polled is the next offset per partition polled so far (only with ExitWhenCaughtUp).
	polled map[topicPartition]int64
	// inflight are the previous batches, oldest first, being stored while the loop
	// decodes the next.
	inflight []*flight
	budget   budget
	spares   []*batch      // stored batches, reused for the next ones
	dlq      []*kgo.Record // dead letters of the current poll, produced before any commit

	dlqMu   sync.Mutex
	dlqSeen map[string]bool // reasons logged once
	// fatal is an error a rebalance callback met that stops the service.
	fatal error
	// closed: the loop ended; what it did not commit is left to be re-read, and the
	// revoke of the client's close has nothing to hand over.
	closed bool
}

type topicPartition struct {
	topic     string
	partition int32
}

func (c *consumer) loop(ctx context.Context, target map[string]map[int32]int64) error {
	if target != nil {
		c.polled = map[topicPartition]int64{}
	}
	defer func() {
		c.mu.Lock()
		c.abandonFlights()
		c.closed = true
		c.mu.Unlock()
	}()
	for {
		// The poll wakes up at least every interval so a partial batch is flushed on time
		// and an idle consumer notices it has caught up.
		pollCtx, cancel := context.WithTimeout(ctx, c.o.BatchInterval)
		fetches := c.cl.PollRecords(pollCtx, c.pollSize())
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		stopping := ctx.Err() != nil
		c.reportFetch(fetches)
		c.mu.Lock()
		err := c.fatal
		if err == nil {
			err = c.process(ctx, fetches)
		}
		// With a target, an empty poll or a poll that reached the end offsets means
		// everything to consume has been polled: store it all and commit now.
		final := stopping || (target != nil && (fetches.NumRecords() == 0 || c.polledThrough(target)))
		if err == nil {
			switch {
			case final:
				err = c.drain(ctx, stopping)
			case c.cur.full(c.o) || c.cur.due(c.o.BatchInterval):
				err = c.launch(ctx)
			default:
				err = c.reap(ctx, false)
			}
		}
		c.mu.Unlock()
		c.cl.AllowRebalance()
		if err != nil {
			if isFatal(err) {
				return err
			}
			if stopping || ctx.Err() != nil {
				c.log.Warn("stopping with an unflushed batch; it was not committed and will be re-read", "err", err)
				return nil
			}
			return err
		}
		if stopping {
			return nil
		}
		if target != nil && final {
			done, err := caughtUp(ctx, c.cl, c.o.Group, target)
			if err != nil {
				return err
			}
			if done {
				c.log.Info("caught up with the end offsets seen at start")
				return nil
			}
		}
	}
}

// reportFetch logs fetch errors and tells health whether Kafka answers.
func (c *consumer) reportFetch(fetches kgo.Fetches) {
	var failed error
	fetches.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		c.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		failed = fmt.Errorf("fetch %s/%d: %w", topic, p, err)
	})
	c.health.Report(componentKafka, failed)
}

// pollSize is how many records to poll: what the batch still has room for, so a batch
// holds at most BatchSize records' events.
func (c *consumer) pollSize() int {
	c.mu.Lock()
	n := c.o.BatchSize - len(c.cur.evs)
	c.mu.Unlock()
	return max(n, 1)
}

// process decodes a poll's records into the batch, launching it whenever the next
// message would take it over its byte budget; bad messages go to the DLQ before any
// offset past them can be committed.
func (c *consumer) process(ctx context.Context, fetches kgo.Fetches) error {
	var err error
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		n := len(p.Records)
		if n == 0 || err != nil {
			return
		}
		last := p.Records[n-1]
		c.m.lag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - last.Offset - 1))
		c.m.records.Add(float64(n))
		tp := topicPartition{p.Topic, p.Partition}
		if c.polled != nil {
			c.polled[tp] = last.Offset + 1
		}
		for _, r := range p.Records {
			if err = c.add(ctx, tp, r); err != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return c.flushDLQ(ctx)
}

// add decodes one record into the current batch, or dead-letters it.
func (c *consumer) add(ctx context.Context, tp topicPartition, r *kgo.Record) error {
	b := c.cur
	if len(r.Value) > c.o.MaxMessageBytes {
		c.reject(b, tp, r, &event.Error{Reason: event.ReasonTooLarge,
			Detail: fmt.Sprintf("%d bytes > limit %d", len(r.Value), c.o.MaxMessageBytes)})
		return nil
	}
	n := len(b.evs)
	evs, err := event.AppendDecode(b.evs, r.Value, r.Timestamp)
	if err != nil {
		var e *event.Error
		if !errors.As(err, &e) {
			e = &event.Error{Reason: event.ReasonUnknownShape, Detail: err.Error()}
		}
		c.reject(b, tp, r, e)
		return nil
	}
	if e := c.tooOld(evs[n:]); e != nil {
		clear(evs[n:])
		b.evs = evs[:n]
		c.reject(b, tp, r, e)
		return nil
	}
	size := int64(len(r.Value)) + eventBytes(evs[n:])
	if n > 0 && b.bytes+size > int64(c.o.BatchBytes) {
		// The message does not fit: the batch goes without it, and its events open the
		// next one. (The batch in flight reads only its first n events.)
		tail := evs[n:]
		b.evs = evs[:n]
		if err := c.launch(ctx); err != nil {
			return err
		}
		if next := c.cur; next != b {
			next.evs = append(next.evs, tail...)
			clear(tail)
			b, evs, n = next, next.evs, 0
		}
	}
	b.evs = evs
	b.msgs = append(b.msgs, message{rec: r, part: tp, from: int32(n), to: int32(len(evs))})
	b.last[tp] = r
	b.begin()
	c.budget.grow(b, size, c.m)
	return nil
}

// tooOld returns a too_old error when one of evs is older than MaxEventAge.
func (c *consumer) tooOld(evs []event.Event) *event.Error {
	if c.o.MaxEventAge <= 0 {
		return nil
	}
	cutoff := c.o.Now().Add(-c.o.MaxEventAge).UnixMilli()
	for i := range evs {
		if evs[i].TsMs < cutoff {
			return &event.Error{Reason: ReasonTooOld, Detail: fmt.Sprintf("event time %s is more than %s (-max-event-age) ago",
				time.UnixMilli(evs[i].TsMs).UTC().Format(time.RFC3339), c.o.MaxEventAge)}
		}
	}
	return nil
}

// reject dead-letters r: its copy goes out with the poll's other dead letters, before
// the batch that commits its offset can be committed.
func (c *consumer) reject(b *batch, tp topicPartition, r *kgo.Record, e *event.Error) {
	c.dlq = append(c.dlq, c.deadLetter(r, e))
	b.last[tp] = r
	b.begin()
}

// polledThrough reports whether every partition of target has been polled up to its
// end offset.
func (c *consumer) polledThrough(target map[string]map[int32]int64) bool {
	for topic, parts := range target {
		for p, end := range parts {
			if end > 0 && c.polled[topicPartition{topic, p}] < end {
				return false
			}
		}
	}
	return true
}
