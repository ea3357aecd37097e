package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/flagwatch/flagwatch/pipeline/event"
)

// blockRows is the number of rows per native block. One INSERT sends a batch as several
// blocks, and the server squashes the blocks of one INSERT into one part, so the parts are
// as large as the batch while the driver's column buffers stay block-sized and are reused
// from block to block (a 50,000-event batch as one block grew ~25 MB buffers per column by
// doubling, allocating gigabytes per million events).
const blockRows = 8192

// Writer inserts decoded events into the raw tables. It is safe for concurrent use; each
// call takes its own column buffers from a pool.
type Writer struct {
	conn Conn
	cols sync.Pool // *columns
}

// NewWriter returns a Writer on conn.
func NewWriter(conn Conn) *Writer { return &Writer{conn: conn} }

// columns are reused across blocks and batches to keep allocations flat under load.
type columns struct {
	uuids   []uuid.UUID
	names   []string
	users   []string
	ts      []int64
	secs    []int64 // DateTime as Unix seconds
	props   []string
	sources []string
	flags   []string
	vars    []string
	segs    []string // exposures' segment properties (event.SegmentProps)
}

func (c *columns) reset() {
	c.uuids, c.names, c.users, c.ts, c.secs = c.uuids[:0], c.names[:0], c.users[:0], c.ts[:0], c.secs[:0]
	c.props, c.sources, c.flags, c.vars, c.segs = c.props[:0], c.sources[:0], c.flags[:0], c.vars[:0], c.segs[:0]
}

// release empties the columns and drops their references to strings.
func (c *columns) release() {
	for _, s := range [][]string{c.names, c.users, c.props, c.sources, c.flags, c.vars, c.segs} {
		clear(s[:cap(s)])
	}
	c.reset()
}

// unixSeconds is time.UnixMilli(ms).Unix() without building a time.Time.
func unixSeconds(ms int64) int64 {
	s := ms / 1000
	if ms%1000 < 0 {
		s--
	}
	return s
}

// Write inserts events into events and their exposures into exposures, one INSERT per
// table. It is safe to call again with the same events after a failure: both tables
// deduplicate on uuid, so a retried or replayed batch does not double-count.
func (w *Writer) Write(ctx context.Context, evs []event.Event) (events, exposures int, err error) {
	if len(evs) == 0 {
		return 0, 0, nil
	}
	c, _ := w.cols.Get().(*columns)
	if c == nil {
		c = new(columns)
	}
	defer func() {
		// Drop the references to this batch's strings, so pooled buffers do not keep a
		// stored batch alive.
		c.release()
		w.cols.Put(c)
	}()

	i := 0
	// On a cluster, through the Distributed tables: every shard gets its users' rows.
	err = w.insert(ctx, "INSERT INTO "+AllTable(w.conn, "events")+" (uuid, event, distinct_id, ts_ms, timestamp, properties, source)",
		func() []any {
			c.reset()
			for ; i < len(evs) && len(c.uuids) < blockRows; i++ {
				e := &evs[i]
				c.uuids = append(c.uuids, e.UUID)
				c.names = append(c.names, e.Name)
				c.users = append(c.users, e.DistinctID)
				c.ts = append(c.ts, e.TsMs)
				c.secs = append(c.secs, unixSeconds(e.TsMs))
				c.props = append(c.props, e.Properties)
				c.sources = append(c.sources, e.Source)
			}
			if len(c.uuids) == 0 {
				return nil
			}
			return []any{c.uuids, c.names, c.users, c.ts, c.secs, c.props, c.sources}
		})
	if err != nil {
		return 0, 0, fmt.Errorf("insert events batch: %w", err)
	}

	for j := range evs {
		exposures += len(evs[j].Exposures)
	}
	if exposures == 0 {
		return len(evs), 0, nil
	}
	i, x := 0, 0 // event, exposure within it
	seg := ""    // the segment properties of evs[i], computed once for all its exposures
	err = w.insert(ctx, "INSERT INTO "+AllTable(w.conn, "exposures")+" (uuid, flag, variant, distinct_id, ts_ms, timestamp, properties, source, segments)",
		func() []any {
			c.reset()
			for ; i < len(evs) && len(c.uuids) < blockRows; i, x = i+1, 0 {
				e := &evs[i]
				if x == 0 && len(e.Exposures) > 0 {
					seg = event.SegmentProps(e.Properties)
				}
				for ; x < len(e.Exposures) && len(c.uuids) < blockRows; x++ {
					c.uuids = append(c.uuids, e.UUID)
					c.flags = append(c.flags, e.Exposures[x].Flag)
					c.vars = append(c.vars, e.Exposures[x].Variant)
					c.users = append(c.users, e.DistinctID)
					c.ts = append(c.ts, e.TsMs)
					c.secs = append(c.secs, unixSeconds(e.TsMs))
					c.props = append(c.props, e.Properties)
					c.sources = append(c.sources, e.Source)
					c.segs = append(c.segs, seg)
				}
				if x < len(e.Exposures) {
					break // the block is full in the middle of this event's exposures
				}
			}
			if len(c.uuids) == 0 {
				return nil
			}
			return []any{c.uuids, c.flags, c.vars, c.users, c.ts, c.secs, c.props, c.sources, c.segs}
		})
	if err != nil {
		return 0, 0, fmt.Errorf("insert exposures batch: %w", err)
	}
	return len(evs), exposures, nil
}

// insert runs one INSERT, sending the blocks next returns (column slices in the query's
// column order) until it returns nil.
func (w *Writer) insert(ctx context.Context, query string, next func() []any) error {
	b, err := w.conn.PrepareBatch(ctx, query)
	if err != nil {
		return err
	}
	for cols := next(); cols != nil; cols = next() {
		if err := appendBlock(b, cols); err != nil {
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}

func appendBlock(b Batch, cols []any) error {
	for i, col := range cols {
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("send block: %w", err)
	}
	return nil
}
