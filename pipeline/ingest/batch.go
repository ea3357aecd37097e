package ingest

import (
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// batch is the events decoded from a run of polled records, stored by one insert.
type batch struct {
	evs  []event.Event
	msgs []message // the records the events came from, in order
	// last is the last record polled per partition for this batch, dead-lettered ones
	// included: what the batch commits once it is stored.
	last  map[topicPartition]*kgo.Record
	bytes int64 // held: the records' bytes and their decoded events'
	start time.Time
	// rows is what an insert of the batch stores: every event, the exposures the cache
	// did not rule out, and every flag's first and last exposure (chosen at launch).
	rows store.RawBatch
}

// message is one record of a batch and the range of its events, evs[from:to]. The
// record is kept so that a message ClickHouse refuses can be dead-lettered unchanged.
type message struct {
	rec      *kgo.Record
	part     topicPartition
	from, to int32
	// refused: ClickHouse refused it and it was dead-lettered; a batch stored again
	// leaves it out.
	refused bool
}

func (c *consumer) newBatch() *batch {
	if n := len(c.spares); n > 0 {
		b := c.spares[n-1]
		c.spares = c.spares[:n-1]
		return b
	}
	return &batch{last: map[topicPartition]*kgo.Record{}}
}

// recycle empties a stored batch for reuse, dropping its references to events and
// records.
func (c *consumer) recycle(b *batch) {
	clear(b.evs)
	clear(b.msgs)
	b.evs, b.msgs = b.evs[:0], b.msgs[:0]
	clear(b.last)
	clear(b.rows.Exposures)
	clear(b.rows.Activity)
	b.rows = store.RawBatch{Exposures: b.rows.Exposures[:0], Activity: b.rows.Activity[:0]}
	b.bytes, b.start = 0, time.Time{}
	c.spares = append(c.spares, b)
}

// full reports whether the batch reached its event count or its bytes.
func (b *batch) full(o Options) bool {
	return len(b.evs) >= o.BatchSize || b.bytes >= int64(o.BatchBytes)
}

// begin notes when the batch's first record arrived.
func (b *batch) begin() {
	if b.start.IsZero() {
		b.start = time.Now()
	}
}

// due reports whether a partial batch has waited its interval.
func (b *batch) due(interval time.Duration) bool {
	return !b.start.IsZero() && time.Since(b.start) >= interval
}

// commits are the records whose offsets the batch commits.
func (b *batch) commits() []*kgo.Record {
	out := make([]*kgo.Record, 0, len(b.last))
	for _, r := range b.last {
		out = append(out, r)
	}
	return out
}

// Sizes of what a decoded event holds besides its strings' bytes.
const (
	eventSize    = int64(unsafe.Sizeof(event.Event{}))
	exposureSize = int64(unsafe.Sizeof(event.Exposure{}))
)

// eventBytes is what evs hold: their structs and the bytes of their strings. It counts
// what the decoder allocated, not what the Go runtime rounds it up to: a bound to steer
// by, computed from the data, so tests can check it exactly.
func eventBytes(evs []event.Event) int64 {
	var n int64
	for i := range evs {
		e := &evs[i]
		n += eventSize + int64(len(e.Name)+len(e.DistinctID)+len(e.Properties)) + int64(len(e.Exposures))*exposureSize
		for _, x := range e.Exposures {
			n += int64(len(x.Flag) + len(x.Variant))
		}
	}
	return n
}

// budget counts the bytes ingest holds in batches: the one being filled and those in
// flight. The loop stops decoding (waits for the oldest flight) rather than let the
// flights exceed InFlightBytes, and launches a batch before it exceeds BatchBytes, so
// what is held stays under their sum whatever the size of the events (issue: 50,000
// events near the 1 MB message limit were 50 GB as one batch).
type budget struct {
	inflight int64  // bytes of the batches in flight
	peak     *int64 // tests: the most held at once
}

func (bu *budget) grow(b *batch, n int64, m *metrics) {
	b.bytes += n
	bu.observe(b, m)
}

func (bu *budget) observe(cur *batch, m *metrics) {
	held := bu.inflight + cur.bytes
	m.held.Set(float64(held))
	if bu.peak != nil && held > *bu.peak {
		*bu.peak = held
	}
}
