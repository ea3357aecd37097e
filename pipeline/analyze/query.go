package analyze

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// measure is one per-user value the pass computes: a count, a 0/1 conversion or a sum of
// a property, of one event within a window after first exposure. Monitors share
// measures (every flag's core metrics are the same measures), so the query's width
// grows with the distinct measures, not with flags × metrics.
type measure struct {
	kind     string // count, conversion, sum
	event    string
	property string
	window   time.Duration
	cap      float64 // > 0: a user's value counts at most this much
}

func (m measure) key() string {
	k := fmt.Sprintf("%s|%s|%s|%d", m.kind, m.event, m.property, m.window)
	if m.cap > 0 {
		k += fmt.Sprintf("|cap=%g", m.cap) // only then: uncapped plans keep their ids
	}
	return k
}

// capped limits a user's value x (SQL) to the measure's cap, if any.
func (m measure) capped(x string) string {
	if m.cap <= 0 {
		return x
	}
	return fmt.Sprintf("least(%s, toFloat64(%s))", x, strconv.FormatFloat(m.cap, 'g', -1, 64))
}

// plan is the set of measures and segment properties of one pass.
type plan struct {
	measures []measure
	index    map[string]int
	// segments are the configured segment properties (and ExposureDay): every value
	// gets its cells.
	segments []string
	// discovered are the properties extracted for property discovery (discover.go):
	// chosen when a generation is built, from discovery's settings.
	discovered []discoveredProp
	discovery  discovery
	pre        time.Duration
}

func newPlan(pre time.Duration) *plan { return &plan{index: map[string]int{}, pre: pre} }

func (p *plan) add(m measure) int {
	k := m.key()
	if i, ok := p.index[k]; ok {
		return i
	}
	p.index[k] = len(p.measures)
	p.measures = append(p.measures, m)
	return len(p.measures) - 1
}

func (p *plan) addSegment(s string) {
	if !slices.Contains(p.segments, s) {
		p.segments = append(p.segments, s)
	}
}

// metricMeasures maps a configured metric to its measure indexes: one for
// conversion/count/sum, numerator and denominator for ratio.
func (p *plan) metricMeasures(m config.Metric, defWindow time.Duration) (int, int) {
	w := m.Window
	if w <= 0 {
		w = defWindow
	}
	switch m.Kind {
	case config.Ratio:
		return p.add(measureOf(*m.Numerator, w)), p.add(measureOf(*m.Denominator, w))
	case config.Sum:
		return p.add(measure{kind: "sum", event: m.Event, property: m.Property, window: w, cap: m.Cap}), -1
	default:
		return p.add(measure{kind: string(m.Kind), event: m.Event, window: w, cap: m.Cap}), -1
	}
}

func measureOf(x config.Measure, w time.Duration) measure {
	if x.Property != "" {
		return measure{kind: "sum", event: x.Event, property: x.Property, window: w}
	}
	return measure{kind: "count", event: x.Event, window: w}
}

// quote renders a value as a SQL literal (store.Quote: quotes, backslashes, newlines).
func quote(s string) string { return store.Quote(s) }

// assignmentBranches is how many parallel streams read the assignment state. Reading it
// with FINAL merges each (flag, user)'s rows as they stream by, in key order, so memory
// stays flat however many (flag, user) pairs there are (a GROUP BY over 30 M pairs needs
// more than 18.16's 10 GB limit) — but ClickHouse runs one FINAL read in one thread. So
// the read is split into ranges of the user hash, the first key column: the sparse index
// gives each branch its own granules, and UNION ALL runs the branches in parallel.
const assignmentBranches = 8

// stateBlockRows is the block size of the pass query. Measured at 30 M pairs with 18.16's
// default 65,536-row blocks, allocating and freeing the blocks of the per-user event
// arrays cost the kernel more than the read itself.
const stateBlockRows = 8192

// externalGroupByBytes is where the pass query's aggregations start spilling to disk;
// 18.16's default limit for a query is 10 GB.
const externalGroupByBytes = 2 << 30

// Multiple is the variant a pass reports for users who saw two or more variants of a
// flag: counted, never compared.
const Multiple = "$multiple"

// assignmentsFinal is a UNION ALL of assignmentBranches FINAL reads of the assignment
// state, one row per (flag, user): a_flag, u_id (the user's cityHash64), a_first (first exposure, ms),
// a_variant (its variant, or Multiple) and a_set (the id of its segment properties in
// segment_sets).
func assignmentsFinal() string {
	cols := "flag AS a_flag, uh AS u_id, finalizeAggregation(first_state) AS a_first, " +
		"if(finalizeAggregation(low_state) = finalizeAggregation(high_state), finalizeAggregation(variant_state), " + quote(Multiple) + ") AS a_variant, " +
		"finalizeAggregation(segments_state) AS a_set"
	var b strings.Builder
	for i := 0; i < assignmentBranches; i++ {
		if i > 0 {
			b.WriteString("\n      UNION ALL\n")
		}
		lo := uint64(i) * (1 << 64 / assignmentBranches)
		fmt.Fprintf(&b, "      SELECT %s\n      FROM assignment_state FINAL WHERE uh >= %d", cols, lo)
		if i < assignmentBranches-1 {
			fmt.Fprintf(&b, " AND uh < %d", lo+(1<<64/assignmentBranches))
		}
	}
	return b.String()
}

// pairs builds the per-(flag, user) level of a pass — columns a_flag, a_variant, a_set
// (the first exposure's segment property set; none without segment properties), a_day
// (its day), u_id, a_first, the measures m0…, q0… and the ratio products r0… — for
// every user, or with touched (a table expression with columns uh and distinct_id, e.g.
// "touched_users WHERE at >= …") for those users only.
func (p *plan) pairs(ratioPairs [][2]int, touched string) string {
	var b strings.Builder
	// Measured events, in name order, and the numeric properties each one needs.
	var evList []string
	evIdx := map[string]int{}
	props := map[string]int{}
	var propList []string
	for _, m := range p.measures {
		if _, ok := evIdx[m.event]; !ok {
			evIdx[m.event] = 0
			evList = append(evList, m.event)
		}
		if m.property != "" {
			if _, ok := props[m.property]; !ok {
				props[m.property] = len(propList)
				propList = append(propList, m.property)
			}
		}
	}
	sort.Strings(evList)
	for i, e := range evList {
		evIdx[e] = i
	}
	needs := map[[2]int]bool{} // (event, property) pairs summed by some measure
	for _, m := range p.measures {
		if m.kind == "sum" {
			needs[[2]int{evIdx[m.event], props[m.property]}] = true
		}
	}
	pre := p.pre.Milliseconds()

	// The per-user arrays of measured events.
	var branches []string
	for k, e := range evList {
		cols := fmt.Sprintf("distinct_id, toUInt8(%d) AS e_k, ts_ms AS e_ts", k)
		for j, pr := range propList {
			if needs[[2]int{k, j}] {
				// A value that is not finite (1e999 parses as +inf) or absurd becomes NaN
				// here, and the measures below leave it out and count it: one bad event
				// must not turn a whole metric into +inf.
				x := fmt.Sprintf("visitParamExtractFloat(properties, %s)", quote(pr))
				cols += fmt.Sprintf(", if(abs(%s) < %g, %s, nan) AS e_v%d", x, absurdValue, x, j)
			} else {
				cols += fmt.Sprintf(", toFloat64(0) AS e_v%d", j)
			}
		}
		if touched == "" {
			branches = append(branches, fmt.Sprintf("    SELECT %s FROM events FINAL WHERE event = %s", cols, quote(e)))
			continue
		}
		// A few users: their events found by PREWHERE and deduplicated by uuid, rather
		// than FINAL merging the whole key range of the event.
		branches = append(branches, fmt.Sprintf("    SELECT uuid AS e_id, %s FROM events PREWHERE distinct_id IN (SELECT distinct_id FROM %s) WHERE event = %s LIMIT 1 BY e_id",
			cols, touched, quote(e)))
	}
	var userCols []string
	for k := range evList {
		userCols = append(userCols, fmt.Sprintf("groupArrayIf(e_ts, e_k = %d) AS u_t%d", k, k))
		for j := range propList {
			if needs[[2]int{k, j}] {
				userCols = append(userCols, fmt.Sprintf("groupArrayIf(e_v%d, e_k = %d) AS u_v%d_%d", j, k, k, j))
			}
		}
	}

	// Per (flag, user) the segment values are two keys, the exposure day and the id of
	// the first exposure's segment property set: the property values are read from the
	// few sets once (flag, user) rows are summed by set (setValuesSQL). A plan without
	// segment properties does not split rows by set.
	keys := "a_flag, a_variant, a_set, a_day"
	if !p.hasSetValues() {
		keys = "a_flag, a_variant, a_day"
	}

	// Per (flag, user): the measures, ratio products and first exposure.
	b.WriteString("SELECT " + keys + ", u_id, a_first")
	for i, m := range p.measures {
		k := evIdx[m.event]
		in := fmt.Sprintf("x_t >= a_first AND x_t < a_first + %d", m.window.Milliseconds())
		inPre := fmt.Sprintf("x_t >= a_first - %d AND x_t < a_first", pre)
		switch m.kind {
		case "sum":
			v := fmt.Sprintf("u_v%d_%d", k, props[m.property])
			fmt.Fprintf(&b, ",\n  %s AS m%d, %s AS q%d",
				m.capped(fmt.Sprintf("arraySum((x_t, x_v) -> if(%s AND isFinite(x_v), x_v, 0), u_t%d, %s)", in, k, v)), i,
				m.capped(fmt.Sprintf("arraySum((x_t, x_v) -> if(%s AND isFinite(x_v), x_v, 0), u_t%d, %s)", inPre, k, v)), i)
			fmt.Fprintf(&b, ",\n  toFloat64(arrayCount((x_t, x_v) -> %s AND NOT isFinite(x_v), u_t%d, %s)) AS b%d", in, k, v, i)
		case "conversion":
			fmt.Fprintf(&b, ",\n  toFloat64(arrayExists(x_t -> %s, u_t%d)) AS m%d, toFloat64(arrayExists(x_t -> %s, u_t%d)) AS q%d, toFloat64(0) AS b%d", in, k, i, inPre, k, i, i)
		default:
			fmt.Fprintf(&b, ",\n  %s AS m%d, %s AS q%d, toFloat64(0) AS b%d",
				m.capped(fmt.Sprintf("toFloat64(arrayCount(x_t -> %s, u_t%d))", in, k)), i,
				m.capped(fmt.Sprintf("toFloat64(arrayCount(x_t -> %s, u_t%d))", inPre, k)), i, i)
		}
	}
	for i, rp := range ratioPairs {
		fmt.Fprintf(&b, ",\n  m%d * m%d AS r%d", rp[0], rp[1], i)
	}
	// The (flag, user) rows with their exposure day (a Date groups faster than its
	// string; the few grouped rows convert it).
	b.WriteString("\nFROM (\n  SELECT a_flag, u_id, a_first, a_variant, a_set, toDate(toDateTime(intDiv(a_first, 1000))) AS a_day")
	if touched == "" {
		b.WriteString("\n  FROM (\n" + assignmentsFinal() + "\n  ) AS a\n")
	} else {
		// A few users: their rows, found through the (uh, flag) key, merged by GROUP BY.
		b.WriteString("\n  FROM (\n    SELECT flag AS a_flag, uh AS u_id, minMerge(first_state) AS a_first, " +
			"if(minMerge(low_state) = maxMerge(high_state), argMinMerge(variant_state), " + quote(Multiple) + ") AS a_variant, " +
			"argMinMerge(segments_state) AS a_set\n    FROM assignment_state WHERE uh IN (SELECT uh FROM " + touched + ") GROUP BY flag, uh\n  ) AS a\n")
	}
	b.WriteString(") AS p\n")
	b.WriteString("ANY LEFT JOIN (\n  SELECT cityHash64(distinct_id) AS u_id, " + strings.Join(userCols, ", ") + "\n  FROM (\n")
	b.WriteString(strings.Join(branches, "\n  UNION ALL\n"))
	b.WriteString("\n  ) GROUP BY u_id\n) AS u USING u_id")
	return b.String()
}

// columns are the segment value columns of the pass query, a_s0… in order: the
// configured segments (with ExposureDay), then the discovered properties.
func (p *plan) columns() []string {
	out := slices.Clone(p.segments)
	for _, d := range p.discovered {
		out = append(out, d.Name)
	}
	return out
}

// crossPrefix starts the property of an exposure-day cohort of one segment value: the
// cell (flag, variant, "$exposure_day/plan", "2026-10-05/enterprise") holds the users
// with plan = enterprise first exposed on 5 October — the series the behaviour-shift
// detector watches per segment value.
const crossPrefix = ExposureDay + "/"

// crossKey is the cell key of value's exposure-day cohort of day.
func crossKey(flag, variant, prop, value, day string) cellKey {
	return cellKey{flag, variant, crossPrefix + prop, day + "/" + value}
}

// hasDay says whether the plan has exposure-day cohorts (every analyzer pass's plan
// does). Then the pass query computes only the cells that partition a flag's users finely
// — each exposure day, and each segment value's exposure-day cohorts — and derive adds
// the whole flag (the sum of its days) and each segment value (the sum of its cohorts):
// half the cells to spread each row over, in the query, the incremental view and the
// reads.
func (p *plan) hasDay() bool { return slices.Contains(p.segments, ExposureDay) }

// spreadCell is one cell a summed row of the pass adds to: its property, a constant,
// and its value's SQL: the segment value (a_s<i> of setValuesSQL) or, for the first cell,
// the empty string.
type spreadCell struct {
	prop, value string
}

// spread lists the cells each row adds to, the first being the row's exposure day with
// day cohorts (the whole flag without them); the others are, per segment column, the
// value's exposure-day cohort (the value itself without day cohorts). A cell whose
// value is empty is left out.
func (p *plan) spread() []spreadCell {
	day := p.hasDay()
	out := []spreadCell{{prop: "", value: "''"}}
	if day {
		out[0].prop = ExposureDay
	}
	for i, s := range p.columns() {
		if s == ExposureDay {
			continue
		}
		c := spreadCell{prop: s, value: fmt.Sprintf("a_s%d", i)}
		if day {
			c.prop = crossPrefix + s
		}
		out = append(out, c)
	}
	return out
}

// spelled is cell c's value as its key spells it, in SQL, for a row whose exposure day
// is the Date column day: the first cell's is the day (empty without day cohorts), a cohort's
// day/value (empty when the row has no value).
func (p *plan) spelled(c spreadCell, first bool, day string) string {
	switch {
	case !p.hasDay():
		return c.value
	case first:
		return fmt.Sprintf("toString(%s)", day)
	default:
		return fmt.Sprintf("if(%s = '', '', %s)", c.value, cohort(day, c.value))
	}
}

// spreadSQL is how grouped and cell-sum queries spread summed rows over their cells: an
// ARRAY JOIN over (cell number, value hash, value) — numbers group far faster than the
// strings of the cells' keys — its filter, the extra GROUP BY keys, and the expressions
// that name each cell (seg_prop, seg_value) once the rows are grouped.
type spreadSQL struct {
	arrayJoin, where, keys, prop, value string
}

func (p *plan) spreadSQL(day string) spreadSQL {
	cells := p.spread()
	var tuples, props []string
	for i, c := range cells {
		tuples = append(tuples, fmt.Sprintf("(toUInt8(%d), cityHash64(%s), %s)", i, c.value, c.value))
		props = append(props, quote(c.prop))
	}
	out := spreadSQL{
		arrayJoin: "ARRAY JOIN [" + strings.Join(tuples, ", ") + "] AS seg",
		where:     "seg.1 = 0 OR seg.3 != ''",
		keys:      "seg.1, seg.2",
		prop:      fmt.Sprintf("[%s][seg.1 + 1]", strings.Join(props, ", ")),
		value:     "any(seg.3)",
	}
	if p.hasDay() {
		out.keys = day + ", " + out.keys
		out.value = fmt.Sprintf("if(seg.1 = 0, toString(%s), %s)", day, cohort(day, "any(seg.3)"))
	}
	return out
}

// derive adds to a pass's cells those the query leaves out (hasDay): per flag and
// variant the whole flag, the sum of its exposure-day cells, and each segment value, the
// sum of its exposure-day cohorts.
func (p *plan) derive(cells map[cellKey]*cell) {
	if !p.hasDay() {
		return
	}
	sums := map[cellKey]*cell{}
	add := func(k cellKey, c *cell) {
		s := sums[k]
		if s == nil {
			s = c.emptyLike()
			sums[k] = s
		}
		s.add(c, 1)
	}
	for k, c := range cells {
		switch {
		case k.segProp == ExposureDay:
			add(cellKey{k.flag, k.variant, "", ""}, c)
		case strings.HasPrefix(k.segProp, crossPrefix):
			if _, v, ok := strings.Cut(k.segValue, "/"); ok {
				add(cellKey{k.flag, k.variant, k.segProp[len(crossPrefix):], v}, c)
			}
		}
	}
	for k, c := range sums {
		cells[k] = c
	}
}

// setValuesSQL reads, per segment property set, the value of every segment column but
// the exposure day: a_s<i> for column i of columns(), a discovered property's rare
// values folded into otherValue; its id column is named id. It is "" when the plan has
// no such column. Sets are few — users share them — so a pass joins them after summing
// rows by set, never row by row, and reads the property values once per set (reading
// all of them costs milliseconds: in the benchmark's 1 M users, a few hundred sets; a
// filter by the sets a pass needs cost more than the whole read).
func (p *plan) setValuesSQL(id string) string {
	var cols []string
	for i, s := range p.columns() {
		if s == ExposureDay {
			continue
		}
		x := fmt.Sprintf("visitParamExtractString(segments, %s)", quote(s))
		if i >= len(p.segments) {
			x = p.discovered[i-len(p.segments)].fold(x)
		}
		cols = append(cols, fmt.Sprintf("%s AS a_s%d", x, i))
	}
	if len(cols) == 0 {
		return ""
	}
	// any(): before a merge, segment_sets may hold a set twice (the same set each time).
	return fmt.Sprintf("SELECT %s, %s FROM (SELECT id AS %s, any(segments) AS segments FROM segment_sets GROUP BY id)",
		id, strings.Join(cols, ", "), id)
}

// hasSetValues says whether the plan has segment columns besides the exposure day, so
// its rows are keyed by segment property set.
func (p *plan) hasSetValues() bool { return p.setValuesSQL("") != "" }

// joinSetValues joins a level keyed by the set-id column id to its set's segment values
// (setValuesSQL): "" when the plan has none.
func (p *plan) joinSetValues(id string) string {
	if !p.hasSetValues() {
		return ""
	}
	return "\nANY LEFT JOIN (" + p.setValuesSQL(id) + ") AS ss USING " + id
}

// cohort is the SQL of a value's exposure-day cohort as cell keys spell it, day/value.
func cohort(day, value string) string {
	return fmt.Sprintf("concat(toString(%s), '/', %s)", day, value)
}

// groupedSQL is the pass query that computes every cell from scratch. Shape (every name unique, because 18.16 does
// not resolve table-qualified names across a JOIN):
//
//	per (flag, user hash): variant (Multiple for users who saw two or more), first
//	  exposure and the id of its segment property set — the assignment aggregate
//	  states merged by FINAL and finalized row by row, read in parallel branches (see
//	  assignmentBranches)
//	ANY LEFT JOIN one row per user hash: the times (and summed property values) of the
//	  user's events of each measured kind, as arrays — built from one FINAL
//	  (deduplicated) read of each measured event's key range, so the hash table holds
//	  users, not events
//	→ per (flag, user) measures in window and in the pre-period, by array functions
//	→ per (flag, variant, set, exposure day) sums: n, Σx, Σx², Σpre, Σpre², Σx·pre, and
//	  Σx·y for ratio pairs (far fewer rows than (flag, user) pairs), grouped by numbers:
//	  a hash of (flag, variant) instead of the two strings
//	  ANY LEFT JOIN segment_sets: each set's segment values (setValuesSQL), read once
//	  per set
//	→ ARRAY JOIN over the cells of spread (exposure day, each value's exposure-day
//	  cohort), by number → per (flag, variant, cell) sums; derive adds the whole flag
//	  and each value.
//
// Memory grows with the users (the join's hash table: one row per user, holding the
// times of their measured events) and with the (flag, variant, set, day) groups,
// never with the (flag, user) pairs or with events × flags. Results are those of the
// per-(flag, user) GROUP BY this replaced, which needed more than 18.16's 10 GB limit
// at 1 M users in 10–50 flags each.
func (p *plan) groupedSQL(ratioPairs [][2]int) string {
	ps := p.pairs(ratioPairs, "")
	var b strings.Builder
	// The sums per (flag, variant, set, day), s_…, and the pass's columns made of them
	// (cell's order: per measure Σx, Σx², Σq, Σq², Σx·q; ratio products; per measure the
	// values left out). Groups are many, and each sum is a state in every one of them, so
	// sums that are known are not kept: a conversion is 0 or 1, its squares are itself;
	// only sum measures leave values out.
	var inner, outer []string
	for i, m := range p.measures {
		inner = append(inner, fmt.Sprintf("sum(m%d) AS s_x%d", i, i), fmt.Sprintf("sum(q%d) AS s_q%d", i, i), fmt.Sprintf("sum(m%d * q%d) AS s_xq%d", i, i, i))
		xx, qq := fmt.Sprintf("s_xx%d", i), fmt.Sprintf("s_qq%d", i)
		if m.kind == "conversion" {
			xx, qq = fmt.Sprintf("s_x%d", i), fmt.Sprintf("s_q%d", i)
		} else {
			inner = append(inner, fmt.Sprintf("sum(m%d * m%d) AS s_xx%d", i, i, i), fmt.Sprintf("sum(q%d * q%d) AS s_qq%d", i, i, i))
		}
		outer = append(outer, fmt.Sprintf("sum(s_x%d)", i), "sum("+xx+")", fmt.Sprintf("sum(s_q%d)", i), "sum("+qq+")", fmt.Sprintf("sum(s_xq%d)", i))
	}
	for i := range ratioPairs {
		inner = append(inner, fmt.Sprintf("sum(r%d) AS s_r%d", i, i))
		outer = append(outer, fmt.Sprintf("sum(s_r%d)", i))
	}
	for i, m := range p.measures {
		if m.kind != "sum" {
			outer = append(outer, "toFloat64(0)")
			continue
		}
		inner = append(inner, fmt.Sprintf("sum(b%d) AS s_b%d", i, i))
		outer = append(outer, fmt.Sprintf("sum(s_b%d)", i))
	}
	sp := p.spreadSQL("a_day")
	fmt.Fprintf(&b, "SELECT any(g_flag) AS a_flag, any(g_variant) AS a_variant, %s AS seg_prop, %s AS seg_value, sum(s_n) AS n, %s",
		sp.prop, sp.value, strings.Join(outer, ", "))
	keys := "fv, a_day"
	if p.hasSetValues() {
		keys = "fv, a_set, a_day"
	}
	// count(a_first), not count(): 18.16 prunes a subquery's columns that the query
	// above does not name, and does not see names captured by lambdas, so a_first must be
	// named here or the measures below lose it.
	b.WriteString("\nFROM (\n  SELECT * FROM (\n  SELECT cityHash64(a_flag, a_variant) AS fv, any(a_flag) AS g_flag, any(a_variant) AS g_variant, " +
		strings.TrimPrefix(keys, "fv, ") + ", count(a_first) AS s_n")
	for _, x := range inner {
		b.WriteString(", " + x)
	}
	b.WriteString("\n  FROM (\n" + ps + "\n  )\n")
	b.WriteString("  GROUP BY " + keys + "\n  ) AS g" + p.joinSetValues("a_set"))
	b.WriteString("\n)\n" + sp.arrayJoin + "\nWHERE " + sp.where + "\nGROUP BY fv, " + sp.keys + "\n")
	// The (flag, variant, set, day) groups are many when sets are: let them spill to
	// disk rather than fail the pass.
	fmt.Fprintf(&b, "SETTINGS max_bytes_before_external_group_by = %d, max_block_size = %d", externalGroupByBytes, stateBlockRows)
	return b.String()
}

// moments are one variant's sufficient statistics for one measure.
type moments struct{ sum, sumSq, pre, preSq, cross float64 }

// cell is one (flag, variant, segment) row of the pass query.
type cell struct {
	n      uint64
	m      []moments
	ratios []float64 // Σx·y per ratio pair
	// bad counts, per measure, the property values in the window left out as not
	// finite or absurd (sum measures only).
	bad []float64
}

// excluded is how many property values metric mp's measures left out in this cell.
func (c *cell) excluded(mp metricPlan) float64 {
	var n float64
	for _, i := range []int{mp.num, mp.den} {
		if i >= 0 && i < len(c.bad) {
			n += c.bad[i]
		}
	}
	return n
}

// absurdValue bounds a summed property: beyond it a value is a bug or an attack
// (revenue of 10¹⁵ per event), and one such value would own every sum it enters.
const absurdValue = 1e15

type cellKey struct{ flag, variant, segProp, segValue string }

// flagInfo is what a pass knows of each flag besides its metrics.
type flagInfo struct {
	firstMs, lastMs int64
	multiple        uint64
	// variants are the variants of the flag's users who saw exactly one, in name order,
	// from the pass query's cells.
	variants []string
}

// addVariants fills infos' variants and $multiple counts from the whole-flag cells of a
// pass.
func addVariants(infos map[string]*flagInfo, cells map[cellKey]*cell) {
	for k, c := range cells {
		if k.segProp != "" {
			continue
		}
		fi := infos[k.flag]
		if fi == nil {
			continue // exposed after flag_activity was read
		}
		if k.variant == Multiple {
			fi.multiple += c.n
		} else {
			fi.variants = append(fi.variants, k.variant)
		}
	}
	for _, fi := range infos {
		sort.Strings(fi.variants)
	}
}
