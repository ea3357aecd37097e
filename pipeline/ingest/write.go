package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/retry"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Storing one batch. ClickHouse's answer decides what happens (store.Classify):
//   - transient (network, a server starting or overloaded): back off and retry, each
//     retry logged with its reason, /healthz "retrying" and, after UnhealthyAfter,
//     unhealthy;
//   - bad data (a value a column cannot hold, a parse error): the same rows fail the
//     same way forever, so the batch is split in halves until the messages ClickHouse
//     refuses are found; they go to the dead-letter topic unchanged with the reason,
//     the rest is stored, and the partition moves on;
//   - fatal (credentials, a missing table): stop with a clear error, committing nothing
//     that was not stored.

// ReasonTooOld and ReasonRejected are ingest's own dead-letter reasons, beside the
// decoder's (event.Reason*).
const (
	// ReasonTooOld: an event older than -max-event-age.
	ReasonTooOld = "too_old"
	// ReasonRejected: ClickHouse refused the message's rows as bad data.
	ReasonRejected = "clickhouse_rejected"
)

// fatalError is a ClickHouse error no retry can fix; it stops ingest.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func isFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}

// store stores b and returns how many of its messages it dead-lettered because
// ClickHouse refused them.
func (c *consumer) store(ctx context.Context, b *batch) (dead int, err error) {
	if len(b.evs) == 0 {
		return 0, nil
	}
	rows := b.rows
	for _, m := range b.msgs {
		if m.refused { // stored again after a bisection: without what was refused
			rows = allRows(b)
			break
		}
	}
	err = c.write(ctx, rows)
	if err == nil {
		return 0, nil
	}
	if store.Classify(err) != store.BadData || ctx.Err() != nil {
		return 0, err
	}
	c.log.Warn("ClickHouse refused a batch as bad data; splitting it to find the messages",
		"messages", len(b.msgs), "events", len(b.evs), "err", err)
	return c.bisect(ctx, b, 0, len(b.msgs), err)
}

// bisect stores msgs[lo:hi] of b, whose insert failed with the bad-data error cause, by
// halves, and dead-letters each single message that still fails. Halves are stored with
// every exposure: the cache's choice assumed the whole batch would land.
func (c *consumer) bisect(ctx context.Context, b *batch, lo, hi int, cause error) (dead int, err error) {
	if hi-lo == 1 {
		m := &b.msgs[lo]
		if m.refused {
			return 0, nil
		}
		rec := c.deadLetter(m.rec, &event.Error{Reason: ReasonRejected, Detail: cause.Error()})
		if err := c.produceDLQ(ctx, rec); err != nil {
			return dead, err
		}
		m.refused = true
		return 1, nil
	}
	mid := (lo + hi) / 2
	for _, h := range [][2]int{{lo, mid}, {mid, hi}} {
		rows := rowsOf(b, h[0], h[1])
		if len(rows.Events) == 0 {
			continue
		}
		err := c.write(ctx, rows)
		if err == nil {
			continue
		}
		if store.Classify(err) != store.BadData || ctx.Err() != nil {
			return dead, err
		}
		d, err := c.bisect(ctx, b, h[0], h[1], err)
		dead += d
		if err != nil {
			return dead, err
		}
	}
	return dead, nil
}

// write inserts rows, retrying transient failures until ctx ends. It returns nil, a
// bad-data error, a *fatalError or the last error when ctx ended.
func (c *consumer) write(ctx context.Context, rows store.RawBatch) error {
	err := retry.Do(ctx, c.log, "insert batch", retry.Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second,
		Retryable: func(err error) bool { return store.Classify(err) == store.Transient }},
		func(ctx context.Context) error {
			start := time.Now()
			nev, nexp, err := c.sink.WriteBatch(ctx, rows)
			if err == nil {
				c.health.Report(store.HealthComponent, nil)
				c.m.insertDur.Observe(time.Since(start).Seconds())
				c.m.rows.WithLabelValues("events").Add(float64(nev))
				c.m.rows.WithLabelValues("exposures").Add(float64(nexp))
				return nil
			}
			switch store.Classify(err) {
			case store.Transient:
				if ctx.Err() == nil {
					c.health.Report(store.HealthComponent, fmt.Errorf("insert failing, retrying: %w", err))
					c.m.retries.Inc()
				}
			case store.BadData:
				// The server answers; the rows are at fault.
				c.health.Report(store.HealthComponent, nil)
			case store.Fatal:
				c.health.Report(store.HealthComponent, err)
			}
			return err
		})
	if err != nil && store.Classify(err) == store.Fatal && ctx.Err() == nil {
		return &fatalError{fmt.Errorf("ClickHouse refused the insert and retrying cannot help (stopping; nothing unstored was committed): %w", err)}
	}
	return err
}
