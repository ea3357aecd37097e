package ingest

import (
	"hash/maphash"
	"slices"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// The exposure cache. posthog-js attaches $feature/<key> for every active flag to every
// event, so with 20–50 flags almost every exposure repeats what is already known. What a
// (flag, user) contributes downstream is a function of the earliest exposure per
// (flag, user, variant): the assignment state keeps the first time, its variant and its
// segments (argMin over time) and whether two variants were seen. So an exposure can
// change that state only when its (flag, user, variant) was not stored before, or only
// later than it. Ingest writes exactly those, and skips an exposure only when one of the
// same (flag, user, variant) no later than it was written by this process for the same
// partition, in a batch committed no later than this one (batches commit in order). Of
// several exposures at the same first millisecond ClickHouse's argMin keeps any one
// (with or without the cache, which one depends on how parts merge); the cache writes
// the first it meets, one of them.
//
// The cache is per partition — a partition owns its users (records are keyed by
// distinct_id) — and starts empty when a partition is assigned (at start, after a
// rebalance, after a crash the committed offsets replay with an empty cache), so the
// new owner writes a little more, never less. Evicting an entry likewise costs a row
// more, never one less. When ClickHouse refuses a batch's messages, their exposures
// were counted as stored: the whole cache is forgotten and the batches already chosen
// against it are stored again with every exposure before they commit (flight.go).
//
// The first and last exposure of each flag are counted from every exposure, written or
// not, into one row per flag per batch (store.RawBatch.Activity), so staleness sees the
// last exposure while the rows stay few.

// maxPairs bounds the interned (flag, variant) pairs. Past it (flag keys that never
// repeat: a buggy or hostile client), the rest of the batch is written uncached, and
// the cache starts over with the next batch.
const maxPairs = 1 << 16

type dedup struct {
	limit int // entries over all partitions; negative: the cache is off
	size  int
	parts map[topicPartition]*partCache
	m     *metrics
	seeds [2]maphash.Seed

	flags    map[string]*flagInfo // interned flags and their variants
	npairs   int
	overflow bool // a batch met more than maxPairs pairs
	// per batch: the flag's slot in the batch's activity, valid when actGen matches gen.
	gen uint32
}

type flagInfo struct {
	variants map[string]uint32 // variant → pair id
	gen      uint32
	slot     int32
}

type partCache struct {
	users map[[2]uint64]*userEntry
}

// userEntry holds a user's pairs (sorted) and the earliest exposure written for each.
type userEntry struct {
	pairs []uint32
	ts    []int64
	used  bool // seen since the last eviction sweep (CLOCK)
}

func newDedup(limit int, m *metrics) *dedup {
	return &dedup{limit: limit, m: m, parts: map[topicPartition]*partCache{}, flags: map[string]*flagInfo{},
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

// allRows is the batch's rows with every exposure.
func allRows(b *batch) store.RawBatch { return rowsOf(b, 0, len(b.msgs)) }

// rowsOf is the rows of msgs[lo:hi] with every exposure, less the messages refused.
func rowsOf(b *batch, lo, hi int) store.RawBatch {
	if lo >= hi {
		return store.RawBatch{}
	}
	refused := false
	for _, m := range b.msgs[lo:hi] {
		refused = refused || m.refused
	}
	if !refused {
		return store.AllOf(b.evs[b.msgs[lo].from:b.msgs[hi-1].to])
	}
	var evs []event.Event
	for _, m := range b.msgs[lo:hi] {
		if !m.refused {
			evs = append(evs, b.evs[m.from:m.to]...)
		}
	}
	return store.AllOf(evs)
}

// choose sets b.rows: every event, the exposures that can change the assignment state,
// and every flag's first and last exposure.
func (d *dedup) choose(b *batch) {
	if d.limit < 0 {
		b.rows = allRows(b)
		return
	}
	rows := store.RawBatch{Events: b.evs, Exposures: b.rows.Exposures[:0], Activity: b.rows.Activity[:0]}
	d.gen++
	var other map[string]int32 // activity slots of flags not interned (overflow)
	skipped := 0
	for _, m := range b.msgs {
		var pc *partCache
		for i := m.from; i < m.to; i++ {
			e := &b.evs[i]
			if len(e.Exposures) == 0 {
				continue
			}
			if pc == nil {
				pc = d.part(m.part)
			}
			u := pc.user(d.key(e.DistinctID))
			for x := range e.Exposures {
				ex := &e.Exposures[x]
				f := d.flag(ex.Flag)
				var slot int32
				if f != nil {
					if f.gen != d.gen {
						f.gen, f.slot = d.gen, int32(len(rows.Activity))
						rows.Activity = append(rows.Activity, store.FlagActivity{Flag: ex.Flag, FirstMs: e.TsMs, LastMs: e.TsMs})
					}
					slot = f.slot
				} else {
					if other == nil {
						other = map[string]int32{}
					}
					s, ok := other[ex.Flag]
					if !ok {
						s = int32(len(rows.Activity))
						other[ex.Flag] = s
						rows.Activity = append(rows.Activity, store.FlagActivity{Flag: ex.Flag, FirstMs: e.TsMs, LastMs: e.TsMs})
					}
					slot = s
				}
				a := &rows.Activity[slot]
				a.FirstMs, a.LastMs = min(a.FirstMs, e.TsMs), max(a.LastMs, e.TsMs)

				p, ok := d.pair(f, ex.Variant)
				if ok && u.seenBefore(p, e.TsMs, &d.size) {
					skipped++
					continue
				}
				rows.Exposures = append(rows.Exposures, store.ExposureRef{Event: i, Exposure: int32(x)})
			}
		}
	}
	b.rows = rows
	d.m.skipped.Add(float64(skipped))
	if d.overflow {
		d.overflow = false
		d.resetAll()
		clear(d.flags)
		d.npairs = 0
	}
	if d.size > d.limit {
		d.evict(d.limit * 3 / 4)
	}
	d.m.cacheEntries.Set(float64(d.size))
}

// seenBefore reports whether p was written for the user at or before ts; otherwise it
// records ts as p's earliest written exposure (the caller writes it).
func (u *userEntry) seenBefore(p uint32, ts int64, size *int) bool {
	u.used = true
	j, found := slices.BinarySearch(u.pairs, p)
	if found {
		if u.ts[j] <= ts {
			return true
		}
		u.ts[j] = ts
		return false
	}
	u.pairs = slices.Insert(u.pairs, j, p)
	u.ts = slices.Insert(u.ts, j, ts)
	*size++
	return false
}

// key is a 128-bit hash of the user: two users colliding (about n²/2¹²⁹) is what it
// takes for the cache to skip a row it should write.
func (d *dedup) key(user string) [2]uint64 {
	return [2]uint64{maphash.String(d.seeds[0], user), maphash.String(d.seeds[1], user)}
}

func (d *dedup) part(tp topicPartition) *partCache {
	pc := d.parts[tp]
	if pc == nil {
		pc = &partCache{users: map[[2]uint64]*userEntry{}}
		d.parts[tp] = pc
	}
	return pc
}

func (pc *partCache) user(k [2]uint64) *userEntry {
	u := pc.users[k]
	if u == nil {
		u = &userEntry{}
		pc.users[k] = u
	}
	return u
}

// flag interns a flag key; nil once the intern table is full for this batch.
func (d *dedup) flag(key string) *flagInfo {
	if f := d.flags[key]; f != nil {
		return f
	}
	if d.npairs >= maxPairs {
		d.overflow = true
		return nil
	}
	f := &flagInfo{variants: map[string]uint32{}}
	d.flags[key] = f
	return f
}

// pair interns (flag, variant); ok is false when it cannot be cached.
func (d *dedup) pair(f *flagInfo, variant string) (uint32, bool) {
	if f == nil {
		return 0, false
	}
	if p, ok := f.variants[variant]; ok {
		return p, true
	}
	if d.npairs >= maxPairs {
		d.overflow = true
		return 0, false
	}
	p := uint32(d.npairs)
	d.npairs++
	f.variants[variant] = p
	return p, true
}

// drop forgets a partition (revoked or lost); reset (assigned) is the same: the owner
// starts with an empty cache.
func (d *dedup) drop(tp topicPartition) {
	if pc := d.parts[tp]; pc != nil {
		for _, u := range pc.users {
			d.size -= len(u.pairs)
		}
		delete(d.parts, tp)
	}
	d.m.cacheEntries.Set(float64(d.size))
}

func (d *dedup) resetAll() {
	clear(d.parts)
	d.size = 0
	d.m.cacheEntries.Set(0)
}

// evict removes users not seen since the previous sweep (CLOCK, an approximation of
// least recently used) until at most target entries remain.
func (d *dedup) evict(target int) {
	for d.size > target && len(d.parts) > 0 {
		removed := false
		for tp, pc := range d.parts {
			for k, u := range pc.users {
				if u.used {
					u.used = false
					continue
				}
				d.size -= len(u.pairs)
				delete(pc.users, k)
				removed = true
				d.m.evicted.Inc()
				if d.size <= target {
					return
				}
			}
			if len(pc.users) == 0 {
				delete(d.parts, tp)
			}
		}
		_ = removed // none: every user was used; the bits are clear now, the next sweep removes
	}
}
