package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/flagwatch/flagwatch/pipeline/event"
)

// A native block ends at blockRows rows or once its strings pass blockBytes. One INSERT
// sends a batch as several blocks, and the server squashes the blocks of one INSERT into
// one part, so the parts are as large as the batch while the driver's column buffers
// stay block-sized and are reused from block to block (a 50,000-event batch as one block
// grew ~25 MB buffers per column by doubling, allocating gigabytes per million events;
// and 8,192 events near the 1 MB message limit would be an 8 GB block).
const (
	blockRows  = 8192
	blockBytes = 16 << 20
)

// Writer inserts decoded events into the raw tables. It is safe for concurrent use; each
// call takes its own column buffers from a pool.
type Writer struct {
	conn Conn
	cols sync.Pool // *columns
}

// NewWriter returns a Writer on conn.
func NewWriter(conn Conn) *Writer { return &Writer{conn: conn} }

// ExposureRef names one exposure of a RawBatch: Event indexes Events, Exposure that
// event's Exposures.
type ExposureRef struct{ Event, Exposure int32 }

// FlagActivity is the first and last exposure time of a flag among a batch's events.
type FlagActivity struct {
	Flag            string
	FirstMs, LastMs int64
}

// RawBatch is one batch for Write: the events, the exposures among them to store as
// rows, and the first and last exposure of every flag among all of them (stored rows or
// not). An exposure row carries the event's properties only when it is the event's own
// exposure ($feature_flag_called, an OpenFeature evaluation); one read from a
// $feature/<key> property carries its segments and an empty properties, since with 50
// active flags an event's properties would be stored 50 times over — they are in events
// under the same uuid. Ingest stores only the exposures that can change a (flag, user)'s assignment
// state, so the last exposure of a flag — whether it went stale — comes from Activity,
// one row per flag per batch, rather than from the rows.
type RawBatch struct {
	Events    []event.Event
	Exposures []ExposureRef
	Activity  []FlagActivity
}

// AllOf is the batch that stores every exposure of evs.
func AllOf(evs []event.Event) RawBatch {
	b := RawBatch{Events: evs}
	idx := map[string]int{}
	for i := range evs {
		e := &evs[i]
		for x := range e.Exposures {
			b.Exposures = append(b.Exposures, ExposureRef{int32(i), int32(x)})
			f := e.Exposures[x].Flag
			j, ok := idx[f]
			if !ok {
				j = len(b.Activity)
				idx[f] = j
				b.Activity = append(b.Activity, FlagActivity{Flag: f, FirstMs: e.TsMs, LastMs: e.TsMs})
			}
			a := &b.Activity[j]
			a.FirstMs, a.LastMs = min(a.FirstMs, e.TsMs), max(a.LastMs, e.TsMs)
		}
	}
	return b
}

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
	bytes   int      // string bytes in the current block
}

func (c *columns) reset() {
	c.uuids, c.names, c.users, c.ts, c.secs = c.uuids[:0], c.names[:0], c.users[:0], c.ts[:0], c.secs[:0]
	c.props, c.sources, c.flags, c.vars, c.segs = c.props[:0], c.sources[:0], c.flags[:0], c.vars[:0], c.segs[:0]
	c.bytes = 0
}

func (c *columns) full() bool { return len(c.uuids) >= blockRows || c.bytes >= blockBytes }

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

// Write inserts evs into events and every exposure of theirs into exposures and
// flag_activity: WriteBatch of AllOf(evs).
func (w *Writer) Write(ctx context.Context, evs []event.Event) (events, exposures int, err error) {
	return w.WriteBatch(ctx, AllOf(evs))
}

// WriteBatch inserts b's events into events, the exposures b selects into exposures,
// and b's flag activity into flag_activity, one INSERT per table. It is safe to call
// again with the same batch after a failure: the tables deduplicate on uuid and the
// activity is a min and a max, so a retried or replayed batch does not double-count.
func (w *Writer) WriteBatch(ctx context.Context, b RawBatch) (events, exposures int, err error) {
	evs := b.Events
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
			for ; i < len(evs) && !c.full(); i++ {
				e := &evs[i]
				c.uuids = append(c.uuids, e.UUID)
				c.names = append(c.names, e.Name)
				c.users = append(c.users, e.DistinctID)
				c.ts = append(c.ts, e.TsMs)
				c.secs = append(c.secs, unixSeconds(e.TsMs))
				c.props = append(c.props, e.Properties)
				c.sources = append(c.sources, e.Source)
				c.bytes += len(e.Properties) + len(e.DistinctID) + len(e.Name)
			}
			if len(c.uuids) == 0 {
				return nil
			}
			return []any{c.uuids, c.names, c.users, c.ts, c.secs, c.props, c.sources}
		})
	if err != nil {
		return 0, 0, fmt.Errorf("insert events batch: %w", err)
	}

	if refs := b.Exposures; len(refs) > 0 {
		j := 0
		segOf, seg := int32(-1), "" // the segment properties of evs[segOf], computed once per event
		err = w.insert(ctx, "INSERT INTO "+AllTable(w.conn, "exposures")+" (uuid, flag, variant, distinct_id, ts_ms, timestamp, properties, source, segments)",
			func() []any {
				c.reset()
				for ; j < len(refs) && !c.full(); j++ {
					r := refs[j]
					e := &evs[r.Event]
					if r.Event != segOf {
						segOf, seg = r.Event, event.SegmentProps(e.Properties)
					}
					x := &e.Exposures[r.Exposure]
					props := ""
					if r.Exposure == 0 && (e.Name == event.ExposureEvent || e.Name == event.EvaluationEvent) {
						props = e.Properties
					}
					c.uuids = append(c.uuids, e.UUID)
					c.flags = append(c.flags, x.Flag)
					c.vars = append(c.vars, x.Variant)
					c.users = append(c.users, e.DistinctID)
					c.ts = append(c.ts, e.TsMs)
					c.secs = append(c.secs, unixSeconds(e.TsMs))
					c.props = append(c.props, props)
					c.sources = append(c.sources, e.Source)
					c.segs = append(c.segs, seg)
					c.bytes += len(props) + len(seg) + len(e.DistinctID)
				}
				if len(c.uuids) == 0 {
					return nil
				}
				return []any{c.uuids, c.flags, c.vars, c.users, c.ts, c.secs, c.props, c.sources, c.segs}
			})
		if err != nil {
			return 0, 0, fmt.Errorf("insert exposures batch: %w", err)
		}
	}

	if err := w.insertActivity(ctx, b.Activity); err != nil {
		return 0, 0, err
	}
	return len(evs), len(b.Exposures), nil
}

// activityChunk bounds the flag keys' bytes in one flag_activity statement, well under
// ClickHouse's max_query_size (256 KiB): a client sending thousands of made-up flag keys
// must not make the statement one the server refuses.
const activityChunk = 64 << 10

// insertActivity adds a batch's first and last exposure per flag to flag_activity: a
// few rows per batch, built from literals (the aggregate states cannot be appended
// through a batch).
func (w *Writer) insertActivity(ctx context.Context, act []FlagActivity) error {
	for len(act) > 0 {
		n, size := 0, 0
		for n < len(act) && (n == 0 || size+len(act[n].Flag) < activityChunk) {
			size += len(act[n].Flag) + 48
			n++
		}
		if err := w.insertActivityChunk(ctx, act[:n]); err != nil {
			return err
		}
		act = act[n:]
	}
	return nil
}

func (w *Writer) insertActivityChunk(ctx context.Context, act []FlagActivity) error {
	flags := make([]string, len(act))
	var first, last strings.Builder
	for i, a := range act {
		flags[i] = a.Flag
		if i > 0 {
			first.WriteByte(',')
			last.WriteByte(',')
		}
		first.WriteString(strconv.FormatInt(a.FirstMs, 10))
		last.WriteString(strconv.FormatInt(a.LastMs, 10))
	}
	q := "INSERT INTO " + AllTable(w.conn, "flag_activity") + " (flag, first_state, last_state) " +
		"SELECT flag, minState(toInt64(lo)), maxState(toInt64(hi)) FROM (SELECT " + QuoteList(flags) +
		" AS fs, [" + first.String() + "] AS los, [" + last.String() + "] AS his) AS a " +
		"ARRAY JOIN fs AS flag, los AS lo, his AS hi GROUP BY flag"
	if err := w.conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("insert flag activity: %w", err)
	}
	return nil
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
