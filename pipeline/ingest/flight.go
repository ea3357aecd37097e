package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// maxInFlight is how many batches may be stored at once. ClickHouse stores one INSERT
// on one core, and a batch's client-side work (encoding blocks) and server-side work
// (sorting, compressing, writing the part, the assignment-state views) alternate; two in
// flight keep both sides busy. Offsets are still committed strictly in batch order.
const maxInFlight = 2

// stopGrace is how long a cancelled insert is given to return. The driver cannot
// interrupt a block being written to a server that stopped reading, and a shutdown or a
// revoke must not hang on it: after stopGrace the insert is abandoned, uncommitted.
const stopGrace = 5 * time.Second

// flight is a batch stored in the background while the loop polls and decodes the next
// ones. Its offsets are committed only after it and every batch before it is stored.
type flight struct {
	b      *batch
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
	dead   int   // messages ClickHouse refused, dead-lettered (set before done is closed)
	// tainted: an earlier batch dead-lettered messages after this one's exposures were
	// chosen against a cache that counted them as stored; before its commit, the batch
	// is stored again with every exposure.
	tainted bool
}

// start stores b in the background (retrying until ctx ends or the flight is
// cancelled). A flight touches nothing of the consumer's but its batch, the sink,
// metrics and health.
func (c *consumer) start(ctx context.Context, b *batch) *flight {
	fctx, cancel := context.WithCancel(ctx)
	f := &flight{b: b, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer cancel()
		f.dead, f.err = c.store(fctx, b)
	}()
	return f
}

// wait returns the flight's outcome once it finished. When ctx ends first, the insert
// is cancelled and given stopGrace to return.
func (f *flight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
	}
	f.cancel()
	select {
	case <-f.done:
		return f.err
	case <-time.After(stopGrace):
		return fmt.Errorf("insert of %d events did not stop %s after cancellation: %w", len(f.b.evs), stopGrace, ctx.Err())
	}
}

func (f *flight) finished() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// launch hands the current batch to a background insert, once the flights leave room
// for it (fewer than maxInFlight, and their bytes and its own within InFlightBytes), so
// that decoding the next batch overlaps with ClickHouse storing this one. The exposures
// to store are chosen here, in batch order, against the cache of what earlier batches
// stored.
func (c *consumer) launch(ctx context.Context) error {
	if len(c.cur.msgs) == 0 && len(c.cur.last) == 0 {
		return nil
	}
	// Dead letters first: this batch may commit their offsets.
	if err := c.flushDLQ(ctx); err != nil {
		return err
	}
	if err := c.reap(ctx, false); err != nil {
		return c.gaveUp(err)
	}
	for len(c.inflight) > 0 && (len(c.inflight) >= maxInFlight || c.budget.inflight+c.cur.bytes > int64(c.o.InFlightBytes)) {
		if err := c.reap(ctx, true); err != nil {
			return c.gaveUp(err)
		}
	}
	b := c.cur
	c.dedup.choose(b)
	c.inflight = append(c.inflight, c.start(ctx, b))
	c.budget.inflight += b.bytes
	c.cur = c.newBatch()
	c.budget.observe(c.cur, c.m)
	return nil
}

// errGaveUp: a flight stopped because the loop's context ended; it stays in flight,
// uncommitted, and drain stores it again under its own deadline.
var errGaveUp = errors.New("insert gave up: stopping")

// gaveUp turns errGaveUp into nil (the loop sees the context and drains), keeping
// anything else.
func (c *consumer) gaveUp(err error) error {
	if errors.Is(err, errGaveUp) {
		return nil
	}
	return err
}

// reap settles the finished batches at the head of the queue, in order: commits their
// offsets. With wait it first waits for the oldest one.
func (c *consumer) reap(ctx context.Context, wait bool) error {
	for len(c.inflight) > 0 {
		f := c.inflight[0]
		if !wait && !f.finished() {
			return nil
		}
		wait = false
		if err := c.settle(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// settle waits for the oldest flight f and, once it is stored, commits its offsets and
// recycles it. A flight that gave up because its context ended is started again while
// ctx lives; a tainted one is stored again with every exposure first.
func (c *consumer) settle(ctx context.Context, f *flight) error {
	for {
		err := f.wait(ctx)
		switch {
		case err == nil && f.tainted:
			f.tainted = false
			f.b.rows = allRows(f.b)
			f = c.restart(ctx, f)
			continue
		case err == nil:
		case isFatal(err):
			return err
		case f.finished() && ctx.Err() == nil:
			// Cancelled by an earlier deadline (a revoke's), not by ctx: try again.
			f = c.restart(ctx, f)
			continue
		default:
			return fmt.Errorf("%w: %w", errGaveUp, err)
		}
		break
	}
	if f.dead > 0 {
		// The messages ClickHouse refused are not stored, but the cache counted their
		// exposures: forget it all, and store the later batches, chosen against it,
		// again with every exposure before they commit.
		c.dedup.resetAll()
		for _, g := range c.inflight[1:] {
			g.tainted = true
		}
	}
	c.inflight = c.inflight[1:]
	c.budget.inflight -= f.b.bytes
	if recs := f.b.commits(); len(recs) > 0 {
		if err := c.cl.CommitRecords(ctx, recs...); err != nil {
			// The rows are stored; the next owner of the partition re-reads them and the
			// uuid dedup absorbs the repeat.
			c.log.Warn("commit failed after insert", "err", err)
		}
	}
	c.m.batches.Inc()
	c.recycle(f.b)
	return nil
}

// restart replaces the oldest flight f with a new insert of the same batch under ctx.
func (c *consumer) restart(ctx context.Context, f *flight) *flight {
	g := c.start(ctx, f.b)
	g.tainted = f.tainted
	c.inflight[0] = g
	return g
}

// storeAll stores everything polled: the batches in flight, then the current one; after
// it returns nil every record polled so far is stored and committed.
func (c *consumer) storeAll(ctx context.Context) error {
	if err := c.flushDLQ(ctx); err != nil {
		return err
	}
	if len(c.cur.msgs) > 0 || len(c.cur.last) > 0 {
		b := c.cur
		c.dedup.choose(b)
		c.inflight = append(c.inflight, c.start(ctx, b))
		c.budget.inflight += b.bytes
		c.cur = c.newBatch()
	}
	for len(c.inflight) > 0 {
		if err := c.settle(ctx, c.inflight[0]); err != nil {
			return err
		}
	}
	return nil
}

// drain stores everything polled and commits it. When stopping, ctx is already
// cancelled, so the final inserts get their own deadline.
func (c *consumer) drain(ctx context.Context, stopping bool) error {
	if stopping {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	return c.storeAll(ctx)
}

// forget drops parts from what the pending batches will commit: they were revoked or
// lost, so their next owner re-reads them from the last commit. Their events are still
// stored (a repeat the uuid dedup absorbs), and the other partitions' are not dropped —
// their records were polled and will not be polled again.
func (c *consumer) forget(parts map[string][]int32) {
	drop := func(b *batch) {
		for topic, ps := range parts {
			for _, p := range ps {
				delete(b.last, topicPartition{topic, p})
			}
		}
	}
	drop(c.cur)
	for _, f := range c.inflight {
		drop(f.b)
	}
	for topic, ps := range parts {
		for _, p := range ps {
			c.dedup.drop(topicPartition{topic, p})
		}
	}
}

// abandonFlights cancels the inserts in flight and waits for them a little; what they
// had not stored is not committed, and is re-read on the next start.
func (c *consumer) abandonFlights() {
	for _, f := range c.inflight {
		f.cancel()
	}
	for _, f := range c.inflight {
		select {
		case <-f.done:
		case <-time.After(stopGrace):
		}
	}
	c.inflight = nil
}
