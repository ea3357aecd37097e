package users

import (
	"fmt"
	"slices"
	"strings"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// The statements of a request. Every value is a literal made by store.Quote (the
// embedded engine has no parameters); every joined subquery has an alias (ClickHouse ≥
// 20 refuses one without); every name is unique across a join (18.16 does not resolve
// table-qualified names there). They run on 18.16 and 26.x alike.

// maxIDBytes bounds the distinct ids one statement lists (each twice in measureSQL):
// 18.16's max_query_size is 256 KiB.
const maxIDBytes = 64 << 10

// maxIDs bounds the users one statement measures.
const maxIDs = 1000

// absurdValue bounds a summed property, as the analyzer bounds it: beyond it a value is
// a bug or an attack, and is left out like a value that is not finite.
const absurdValue = 1e15

// tables are the names that read every shard (store.AllTable) and whether an IN over a
// subquery must be GLOBAL (a Distributed table on both sides, which 18.16 refuses
// otherwise).
type tables struct {
	exposures, events string
	global            bool
}

func tablesOf(conn store.Conn) tables {
	return tables{exposures: store.AllTable(conn, "exposures"), events: store.AllTable(conn, "events"),
		global: conn.Server().Cluster != ""}
}

func q(s string) string { return store.Quote(s) }

// cellSQL is the cell's users, one row each — c_id, c_first (first exposure, ms) and
// c_variant — read from the flag's exposures with the assignment state's rules: the
// first exposure, its variant, Multiple when the variants differ (excluded), its
// segment properties. Only a segment filter reads the segment properties.
func (p *plan) cellSQL(t tables) string {
	cols := "distinct_id AS c_id, min(ts_ms) AS c_first, if(min(cityHash64(variant)) = max(cityHash64(variant)), argMin(variant, ts_ms), " +
		q(Multiple) + ") AS c_variant"
	where := []string{"c_variant != " + q(Multiple)}
	if p.q.Variant != "" {
		where = append(where, "c_variant = "+q(p.q.Variant))
	}
	segs := false
	for _, s := range p.q.Segments {
		if s.Property == ExposureDay {
			// The analyzer's exposure-day cohort of the first exposure.
			where = append(where, "toString(toDate(toDateTime(intDiv(c_first, 1000)))) = "+q(s.Value))
			continue
		}
		segs = true
		where = append(where, fmt.Sprintf("visitParamExtractString(c_segments, %s) = %s", q(s.Property), q(s.Value)))
	}
	if segs {
		cols += ", argMin(segments, ts_ms) AS c_segments"
	}
	return fmt.Sprintf("SELECT c_id, c_first, c_variant FROM (\n  SELECT %s\n  FROM %s PREWHERE flag = %s\n  GROUP BY distinct_id\n) AS c0\nWHERE %s",
		cols, t.exposures, q(p.flag.Key), strings.Join(where, " AND "))
}

// order is the ORDER BY of a first-exposure page.
func (p *plan) order() string {
	if p.q.Sort.desc() {
		return "c_first DESC, c_id DESC"
	}
	return "c_first, c_id"
}

// pageSQL is up to limit users of the cell after the cursor, in the query's
// first-exposure order; with perVariant > 0, at most that many per variant.
func (p *plan) pageSQL(t tables, limit, perVariant int) string {
	var b strings.Builder
	b.WriteString("SELECT c_id, c_first, c_variant FROM (\n" + p.cellSQL(t) + "\n) AS c1")
	if k := p.after; k != nil {
		op := ">"
		if p.q.Sort.desc() {
			op = "<"
		}
		fmt.Fprintf(&b, "\nWHERE (c_first, c_id) %s (toInt64(%d), %s)", op, k.first, q(k.id))
	}
	b.WriteString("\nORDER BY " + p.order())
	if perVariant > 0 {
		fmt.Fprintf(&b, "\nLIMIT %d BY c_variant", perVariant)
	}
	fmt.Fprintf(&b, "\nLIMIT %d", limit)
	return b.String()
}

// eventValue is the numeric property of measure i of an event, NaN when it is not
// finite or absurd (left out of sums, as the analyzer leaves it out).
func eventValue(prop string) string {
	x := fmt.Sprintf("visitParamExtractFloat(properties, %s)", q(prop))
	return fmt.Sprintf("if(abs(%s) < %g, %s, nan)", x, absurdValue, x)
}

// measureEvents lists the measures' distinct events.
func (p *plan) measureEvents() []string {
	var evs []string
	for _, m := range p.measures {
		if !slices.Contains(evs, m.event) {
			evs = append(evs, m.event)
		}
	}
	return evs
}

// valueSQL is limit+1 users of the cell from offset, ordered by the metric's value per
// user (then first exposure and id, like the other orders), with the converted filter:
// c_id, c_first, c_variant. It reads the metric's events of the cell's users only —
// the events' first key column is the event — and computes the measures per user in
// the window, as the analyzer does.
func (p *plan) valueSQL(t tables, limit, offset int) string {
	evs := p.measureEvents()
	in := "IN"
	if t.global {
		in = "GLOBAL IN"
	}
	// Per user: the times (and property values) of the measures' events.
	var arrays []string
	for k := range evs {
		arrays = append(arrays, fmt.Sprintf("groupArrayIf(e_ts, e_k = %d) AS u_t%d", k+1, k))
	}
	var vals []string
	for i, m := range p.measures {
		if m.property != "" {
			vals = append(vals, fmt.Sprintf("%s AS e_v%d", eventValue(m.property), i))
			arrays = append(arrays, fmt.Sprintf("groupArrayIf(e_v%d, e_k = %d) AS u_v%d", i, indexOf(evs, m.event)+1, i))
		}
	}
	in2 := "x >= c_first AND x < c_first + " + fmt.Sprint(p.window.Milliseconds())
	side := func(i int) string {
		m := p.measures[i]
		k := indexOf(evs, m.event)
		if m.property != "" {
			return fmt.Sprintf("arraySum((x, v) -> if(%s AND isFinite(v), v, 0), u_t%d, u_v%d)", in2, k, i)
		}
		return fmt.Sprintf("toFloat64(arrayCount(x -> %s, u_t%d))", in2, k)
	}
	count := fmt.Sprintf("toFloat64(arrayCount(x -> %s, u_t%d))", in2, indexOf(evs, p.measures[0].event))
	value := side(0)
	if p.metric.Kind == config.Conversion {
		value = fmt.Sprintf("toFloat64(arrayExists(x -> %s, u_t%d))", in2, indexOf(evs, p.measures[0].event))
	}
	cell := p.cellSQL(t)
	var b strings.Builder
	// c_first is named in the outer select: 18.16 prunes the columns a query above does
	// not name, and does not see the ones its lambdas capture.
	fmt.Fprintf(&b, "SELECT c_id, c_first, c_variant FROM (\n  SELECT c_id, c_first, c_variant, %s AS m_value, %s AS m_count\n", value, count)
	fmt.Fprintf(&b, "  FROM (\n%s\n  ) AS c\n", cell)
	fmt.Fprintf(&b, "  ANY LEFT JOIN (\n    SELECT distinct_id AS c_id, %s\n", strings.Join(arrays, ", "))
	cols := "uuid, distinct_id, ts_ms AS e_ts, toUInt8(indexOf(" + store.QuoteList(evs) + ", event)) AS e_k"
	if len(vals) > 0 {
		cols += ", " + strings.Join(vals, ", ")
	}
	fmt.Fprintf(&b, "    FROM (SELECT %s FROM %s PREWHERE event IN (%s) AND distinct_id %s (SELECT c_id FROM (\n%s\n    )) LIMIT 1 BY uuid)\n",
		cols, t.events, quoteAll(evs), in, cell)
	b.WriteString("    GROUP BY distinct_id\n  ) AS u USING c_id\n) AS c2\n")
	if c := p.q.Converted; c != nil {
		if *c {
			b.WriteString("WHERE m_count > 0\n")
		} else {
			b.WriteString("WHERE m_count = 0\n")
		}
	}
	dir := ""
	if p.q.Sort.desc() {
		dir = " DESC"
	}
	fmt.Fprintf(&b, "ORDER BY m_value%s, c_first%s, c_id%s\nLIMIT %d OFFSET %d", dir, dir, dir, limit+1, offset)
	return b.String()
}

func indexOf(ss []string, s string) int { return slices.Index(ss, s) }

func quoteAll(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = q(s)
	}
	return strings.Join(out, ", ")
}

// measureSQL is, per (user, $session_id) of the given users, their events within their
// window — first exposure ≤ time < first exposure + window — deduplicated by uuid:
// e_id, e_sid, the session's first and last time and event count, and per measure i the
// count of its event (n_i) and, for a property, the sum of its finite values (s_i). The
// events are found by PREWHERE distinct_id IN the users, never by a scan of an event.
func (p *plan) measureSQL(t tables, ids []string, firsts []int64) string {
	lo, hi := firsts[0], firsts[0]
	fs := make([]string, len(firsts))
	for i, f := range firsts {
		lo, hi = min(lo, f), max(hi, f)
		fs[i] = fmt.Sprint(f)
	}
	w := p.window.Milliseconds()
	list := quoteAll(ids)
	var aggs, vals []string
	for i, m := range p.measures {
		aggs = append(aggs, fmt.Sprintf("toFloat64(countIf(e_event = %s)) AS n%d", q(m.event), i))
		if m.property != "" {
			vals = append(vals, fmt.Sprintf(", %s AS e_v%d", eventValue(m.property), i))
			aggs = append(aggs, fmt.Sprintf("sumIf(e_v%d, e_event = %s AND isFinite(e_v%d)) AS s%d", i, q(m.event), i, i))
		} else {
			aggs = append(aggs, fmt.Sprintf("toFloat64(0) AS s%d", i))
		}
	}
	sel := ""
	if len(aggs) > 0 {
		sel = ", " + strings.Join(aggs, ", ")
	}
	return fmt.Sprintf(`SELECT e_id, e_sid, min(e_ts) AS s_start, max(e_ts) AS s_end, count() AS s_events%s
FROM (
  SELECT distinct_id AS e_id, event AS e_event, ts_ms AS e_ts,
         visitParamExtractString(properties, '$session_id') AS e_sid%s,
         transform(distinct_id, [%s], [%s], 0) AS e_first
  FROM (SELECT uuid, distinct_id, event, ts_ms, properties FROM %s
        PREWHERE distinct_id IN (%s) WHERE ts_ms >= %d AND ts_ms < %d LIMIT 1 BY uuid) AS e
  WHERE e_ts >= e_first AND e_ts < e_first + %d
)
GROUP BY e_id, e_sid`, sel, strings.Join(vals, ""), list, strings.Join(fs, ", "), t.events, list, lo, hi+w, w)
}

// segmentsSQL is the segment properties (p.props) of the given users' first exposure:
// distinct_id, then one column per property. The (flag, distinct_id) key finds them.
func (p *plan) segmentsSQL(t tables, ids []string) string {
	var cols []string
	for i, prop := range p.props {
		cols = append(cols, fmt.Sprintf("visitParamExtractString(g_segments, %s) AS g%d", q(prop), i))
	}
	return fmt.Sprintf(`SELECT g_id, %s FROM (
  SELECT distinct_id AS g_id, argMin(segments, ts_ms) AS g_segments
  FROM %s PREWHERE flag = %s AND distinct_id IN (%s)
  GROUP BY distinct_id
) AS g`, strings.Join(cols, ", "), t.exposures, q(p.flag.Key), quoteAll(ids))
}

// chunks splits ids into runs a statement can list (maxIDs, maxIDBytes).
func chunks(n int, id func(int) string) [][2]int {
	var out [][2]int
	start, bytes := 0, 0
	for i := 0; i < n; i++ {
		sz := len(q(id(i))) + 2
		if i > start && (i-start >= maxIDs || bytes+sz > maxIDBytes) {
			out = append(out, [2]int{start, i})
			start, bytes = i, 0
		}
		bytes += sz
	}
	if start < n {
		out = append(out, [2]int{start, n})
	}
	return out
}
