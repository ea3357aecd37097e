package analyze

import (
	"context"
	"fmt"
	"sort"
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
}

func (m measure) key() string {
	return fmt.Sprintf("%s|%s|%s|%d", m.kind, m.event, m.property, m.window)
}

// plan is the set of measures and segment properties of one pass.
type plan struct {
	measures []measure
	index    map[string]int
	segments []string
	pre      time.Duration
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
	for _, x := range p.segments {
		if x == s {
			return
		}
	}
	p.segments = append(p.segments, s)
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
		return p.add(measure{kind: "sum", event: m.Event, property: m.Property, window: w}), -1
	default:
		return p.add(measure{kind: string(m.Kind), event: m.Event, window: w}), -1
	}
}

func measureOf(x config.Measure, w time.Duration) measure {
	if x.Property != "" {
		return measure{kind: "sum", event: x.Event, property: x.Property, window: w}
	}
	return measure{kind: "count", event: x.Event, window: w}
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// assignmentBranches is how many parallel streams read the assignment state. Reading it
// with FINAL merges each (flag, user)'s rows as they stream by, in key order, so memory
// stays flat however many (flag, user) pairs there are (a GROUP BY over 30 M pairs needs
// more than 18.16's 10 GB limit) — but ClickHouse runs one FINAL read in one thread. So
// the read is split by a hash of the flag, the first key column: each branch's PREWHERE
// skips the granules of the other flags, and UNION ALL runs the branches in parallel.
const assignmentBranches = 8

// stateBlockRows is the block size of the queries that read the assignment state. Its
// properties (a whole properties object per (flag, user)) make 18.16's default 65,536-row
// blocks tens of megabytes each, and allocating and freeing those cost the kernel more
// than the read itself (measured at 30 M pairs: 14 of 44 CPU-seconds in the kernel; with
// 8,192 rows, 2 of 30).
const stateBlockRows = 8192

// externalGroupByBytes is where the pass query's aggregations start spilling to disk;
// 18.16's default limit for a query is 10 GB.
const externalGroupByBytes = 2 << 30

// assignmentsFinal is a UNION ALL of assignmentBranches FINAL reads of the assignment
// state with the given select list; where filters the merged rows.
func assignmentsFinal(cols, where string) string {
	var b strings.Builder
	for i := 0; i < assignmentBranches; i++ {
		if i > 0 {
			b.WriteString("\n    UNION ALL\n")
		}
		fmt.Fprintf(&b, "    SELECT %s\n    FROM assignments FINAL PREWHERE cityHash64(flag) %% %d = %d", cols, assignmentBranches, i)
		if where != "" {
			b.WriteString(" WHERE " + where)
		}
	}
	return b.String()
}

// sql builds the single query of a pass. Shape (every name unique, because 18.16 does
// not resolve table-qualified names across a JOIN):
//
//	per (flag, user): variant, first exposure, segment values — the assignment aggregate
//	  states merged by FINAL and finalized row by row (users with two or more variants,
//	  $multiple, left out), read in parallel branches (see assignmentBranches)
//	ANY LEFT JOIN one row per user: the times (and summed property values) of the user's
//	  events of each measured kind, as arrays — built from one FINAL (deduplicated) read of
//	  each measured event's key range, so the hash table holds users, not events
//	→ per (flag, user) measures in window and in the pre-period, by array functions
//	→ per (flag, variant, segment values) sums: n, Σx, Σx², Σpre, Σpre², Σx·pre, and
//	  Σx·y for ratio pairs (far fewer rows than (flag, user) pairs)
//	→ ARRAY JOIN over (total, each segment property) → per (flag, variant, segment) sums.
//
// Memory grows with the users (the join's hash table: one row per user, holding the
// times of their measured events) and with the (flag, variant, segment values) groups,
// never with the (flag, user) pairs or with events × flags. Results are those of the
// per-(flag, user) GROUP BY this replaced, which needed more than 18.16's 10 GB limit
// at 1 M users in 10–50 flags each.
func (p *plan) sql(ratioPairs [][2]int) string {
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
				cols += fmt.Sprintf(", visitParamExtractFloat(properties, %s) AS e_v%d", quote(pr), j)
			} else {
				cols += fmt.Sprintf(", toFloat64(0) AS e_v%d", j)
			}
		}
		branches = append(branches, fmt.Sprintf("      SELECT %s FROM events FINAL WHERE event = %s", cols, quote(e)))
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

	// Segment value columns of the assignment side.
	var segCols, segNames []string
	segs := []string{"('', '')"}
	for i, s := range p.segments {
		expr := fmt.Sprintf("visitParamExtractString(finalizeAggregation(props_state), %s)", quote(s))
		if s == ExposureDay {
			expr = "toString(toDate(toDateTime(intDiv(a_first, 1000))))"
		}
		segCols = append(segCols, fmt.Sprintf("%s AS a_s%d", expr, i))
		segNames = append(segNames, fmt.Sprintf("a_s%d", i))
		segs = append(segs, fmt.Sprintf("(%s, a_s%d)", quote(s), i))
	}
	keys := strings.Join(append([]string{"a_flag", "a_variant"}, segNames...), ", ")

	// Outermost: per (flag, variant, segment).
	b.WriteString("SELECT a_flag, a_variant, seg.1 AS seg_prop, seg.2 AS seg_value, sum(c_n) AS n")
	for i := range p.measures {
		fmt.Fprintf(&b, ", sum(s_x%d), sum(s_xx%d), sum(s_q%d), sum(s_qq%d), sum(s_xq%d)", i, i, i, i, i)
	}
	for i := range ratioPairs {
		fmt.Fprintf(&b, ", sum(s_r%d)", i)
	}
	// Per (flag, variant, segment values).
	// count(a_first), not count(): 18.16 prunes a subquery's columns that the query
	// above does not name, and does not see names captured by lambdas, so a_first must be
	// named here and in the select list below or the measures lose it.
	b.WriteString("\nFROM (\n  SELECT " + keys + ", count(a_first) AS c_n")
	for i := range p.measures {
		fmt.Fprintf(&b, ", sum(m%d) AS s_x%d, sum(m%d * m%d) AS s_xx%d, sum(q%d) AS s_q%d, sum(q%d * q%d) AS s_qq%d, sum(m%d * q%d) AS s_xq%d",
			i, i, i, i, i, i, i, i, i, i, i, i, i)
	}
	for i, rp := range ratioPairs {
		fmt.Fprintf(&b, ", sum(m%d * m%d) AS s_r%d", rp[0], rp[1], i)
	}
	// Per (flag, user): the measures.
	b.WriteString("\n  FROM (\n    SELECT " + keys + ", a_first")
	for i, m := range p.measures {
		k := evIdx[m.event]
		in := fmt.Sprintf("x_t >= a_first AND x_t < a_first + %d", m.window.Milliseconds())
		inPre := fmt.Sprintf("x_t >= a_first - %d AND x_t < a_first", pre)
		switch m.kind {
		case "sum":
			v := fmt.Sprintf("u_v%d_%d", k, props[m.property])
			fmt.Fprintf(&b, ",\n      arraySum((x_t, x_v) -> if(%s, x_v, 0), u_t%d, %s) AS m%d, arraySum((x_t, x_v) -> if(%s, x_v, 0), u_t%d, %s) AS q%d",
				in, k, v, i, inPre, k, v, i)
		case "conversion":
			fmt.Fprintf(&b, ",\n      toFloat64(arrayExists(x_t -> %s, u_t%d)) AS m%d, toFloat64(arrayExists(x_t -> %s, u_t%d)) AS q%d", in, k, i, inPre, k, i)
		default:
			fmt.Fprintf(&b, ",\n      toFloat64(arrayCount(x_t -> %s, u_t%d)) AS m%d, toFloat64(arrayCount(x_t -> %s, u_t%d)) AS q%d", in, k, i, inPre, k, i)
		}
	}
	aCols := strings.Join(append([]string{"flag AS a_flag", "distinct_id",
		"finalizeAggregation(first_state) AS a_first", "finalizeAggregation(variants_state)[1] AS a_variant"}, segCols...), ", ")
	b.WriteString("\n    FROM (\n" + assignmentsFinal(aCols, "length(finalizeAggregation(variants_state)) = 1") + "\n    )\n")
	b.WriteString("    ANY LEFT JOIN (\n      SELECT distinct_id, " + strings.Join(userCols, ", ") + "\n      FROM (\n")
	b.WriteString(strings.Join(branches, "\n      UNION ALL\n"))
	b.WriteString("\n      ) GROUP BY distinct_id\n    ) USING distinct_id\n  )\n")
	b.WriteString("  GROUP BY " + keys + "\n)\nARRAY JOIN [" + strings.Join(segs, ", ") + "] AS seg\n")
	b.WriteString("WHERE seg.1 = '' OR seg.2 != ''\nGROUP BY a_flag, a_variant, seg_prop, seg_value\n")
	// The (flag, variant, segment values) groups are few for the usual segments, but
	// segment properties of high cardinality could make them many: let them spill to
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
}

type cellKey struct{ flag, variant, segProp, segValue string }

// run executes the pass query and returns its cells.
func (p *plan) run(ctx context.Context, conn store.Conn, ratioPairs [][2]int) (map[cellKey]*cell, error) {
	if len(p.measures) == 0 {
		return map[cellKey]*cell{}, nil
	}
	rows, err := conn.Query(ctx, p.sql(ratioPairs))
	if err != nil {
		return nil, fmt.Errorf("query cohort statistics: %w", err)
	}
	defer rows.Close()
	out := map[cellKey]*cell{}
	for rows.Next() {
		var k cellKey
		c := &cell{m: make([]moments, len(p.measures)), ratios: make([]float64, len(ratioPairs))}
		dest := []any{&k.flag, &k.variant, &k.segProp, &k.segValue, &c.n}
		for i := range c.m {
			dest = append(dest, &c.m[i].sum, &c.m[i].sumSq, &c.m[i].pre, &c.m[i].preSq, &c.m[i].cross)
		}
		for i := range c.ratios {
			dest = append(dest, &c.ratios[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan cohort statistics: %w", err)
		}
		out[k] = c
	}
	return out, rows.Err()
}

// flagInfo is what a pass knows of each flag besides its metrics.
type flagInfo struct {
	firstMs, lastMs int64
	multiple        uint64
	// variants are the variants of the flag's users who saw exactly one, in name order
	// (what flagVariants returns, from the same read).
	variants []string
}

// flagInfos reads, per flag, the first exposure, the number of $multiple users and the
// variants, in one streaming FINAL read of the assignment state (see
// assignmentBranches): a GROUP BY over every (flag, user) would hold all the pairs in
// memory.
func flagInfos(ctx context.Context, conn store.Conn) (map[string]*flagInfo, error) {
	out := map[string]*flagInfo{}
	rows, err := conn.Query(ctx, "SELECT flag, toUInt8(nv > 1) AS multi, if(multi = 1, '', vs[1]) AS v, min(f), count() FROM (\n"+
		assignmentsFinal("flag, finalizeAggregation(first_state) AS f, finalizeAggregation(variants_state) AS vs, length(vs) AS nv", "")+
		fmt.Sprintf("\n) GROUP BY flag, multi, v ORDER BY flag, multi, v SETTINGS max_block_size = %d", stateBlockRows))
	if err != nil {
		return nil, fmt.Errorf("query flags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f, v string
		var multi uint8
		var first int64
		var n uint64
		if err := rows.Scan(&f, &multi, &v, &first, &n); err != nil {
			return nil, fmt.Errorf("scan flags: %w", err)
		}
		fi := out[f]
		if fi == nil {
			fi = &flagInfo{firstMs: first}
			out[f] = fi
		}
		fi.firstMs = min(fi.firstMs, first)
		if multi == 1 {
			fi.multiple += n
		} else {
			fi.variants = append(fi.variants, v)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows2, err := conn.Query(ctx, "SELECT flag, max(ts_ms) FROM exposures GROUP BY flag")
	if err != nil {
		return nil, fmt.Errorf("query last exposures: %w", err)
	}
	defer rows2.Close()
	for rows2.Next() {
		var f string
		var last int64
		if err := rows2.Scan(&f, &last); err != nil {
			return nil, fmt.Errorf("scan last exposures: %w", err)
		}
		if fi := out[f]; fi != nil {
			fi.lastMs = last
		}
	}
	return out, rows2.Err()
}
