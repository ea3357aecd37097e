package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/flagwatch/flagwatch/pipeline/event"
)

// Writer inserts decoded events into the raw tables.
type Writer struct {
	conn Conn
}

// NewWriter returns a Writer on conn.
func NewWriter(conn Conn) *Writer { return &Writer{conn: conn} }

// columns are reused across batches to keep allocations flat under load.
type columns struct {
	uuids   []uuid.UUID
	names   []string
	users   []string
	ts      []int64
	times   []time.Time
	props   []string
	sources []string
	flags   []string
	vars    []string
}

func (c *columns) reset() {
	c.uuids, c.names, c.users, c.ts, c.times = c.uuids[:0], c.names[:0], c.users[:0], c.ts[:0], c.times[:0]
	c.props, c.sources, c.flags, c.vars = c.props[:0], c.sources[:0], c.flags[:0], c.vars[:0]
}

// Write inserts events into events and their exposures into exposures, one block per
// table. It is safe to call again with the same events after a failure: both tables
// deduplicate on uuid, so a retried or replayed batch does not double-count.
func (w *Writer) Write(ctx context.Context, evs []event.Event) (events, exposures int, err error) {
	if len(evs) == 0 {
		return 0, 0, nil
	}
	var c columns
	for i := range evs {
		e := &evs[i]
		c.uuids = append(c.uuids, e.UUID)
		c.names = append(c.names, e.Name)
		c.users = append(c.users, e.DistinctID)
		c.ts = append(c.ts, e.TsMs)
		c.times = append(c.times, time.UnixMilli(e.TsMs).UTC())
		c.props = append(c.props, e.Properties)
		c.sources = append(c.sources, e.Source)
	}
	if err := w.insert(ctx, "INSERT INTO events (uuid, event, distinct_id, ts_ms, timestamp, properties, source)",
		c.uuids, c.names, c.users, c.ts, c.times, c.props, c.sources); err != nil {
		return 0, 0, fmt.Errorf("insert events batch: %w", err)
	}
	c.reset()
	for i := range evs {
		e := &evs[i]
		for _, x := range e.Exposures {
			c.uuids = append(c.uuids, e.UUID)
			c.flags = append(c.flags, x.Flag)
			c.vars = append(c.vars, x.Variant)
			c.users = append(c.users, e.DistinctID)
			c.ts = append(c.ts, e.TsMs)
			c.times = append(c.times, time.UnixMilli(e.TsMs).UTC())
			c.props = append(c.props, e.Properties)
			c.sources = append(c.sources, e.Source)
		}
	}
	if len(c.uuids) > 0 {
		if err := w.insert(ctx, "INSERT INTO exposures (uuid, flag, variant, distinct_id, ts_ms, timestamp, properties, source)",
			c.uuids, c.flags, c.vars, c.users, c.ts, c.times, c.props, c.sources); err != nil {
			return 0, 0, fmt.Errorf("insert exposures batch: %w", err)
		}
	}
	return len(evs), len(c.uuids), nil
}

// insert sends one block, column by column (the driver's fastest path).
func (w *Writer) insert(ctx context.Context, query string, cols ...any) error {
	b, err := w.conn.PrepareBatch(ctx, query)
	if err != nil {
		return err
	}
	for i, col := range cols {
		if err := b.Column(i).Append(col); err != nil {
			_ = b.Abort()
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return b.Send()
}
