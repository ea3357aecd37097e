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

// sql builds the single query of a pass. Shape (every name unique, because 18.16 does
// not resolve table-qualified names across a JOIN):
//
//	per (flag, user): variant, first exposure, segment values — from the assignment
//	  aggregate states, users with two or more variants ($multiple) left out
//	ALL LEFT JOIN the user's events of the measured kinds (one scan of events, deduped)
//	→ per (flag, user) measures in window and in the pre-period
//	→ ARRAY JOIN over (total, each segment property) → per (flag, variant, segment)
//	  sums: n, Σx, Σx², Σpre, Σpre², Σx·pre, and Σx·y for ratio pairs.
func (p *plan) sql(ratioPairs [][2]int) string {
	var b strings.Builder
	events := map[string]bool{}
	props := map[string]int{}
	var propList []string
	for _, m := range p.measures {
		events[m.event] = true
		if m.property != "" {
			if _, ok := props[m.property]; !ok {
				props[m.property] = len(propList)
				propList = append(propList, m.property)
			}
		}
	}
	evList := make([]string, 0, len(events))
	for e := range events {
		evList = append(evList, quote(e))
	}
	sort.Strings(evList)

	segs := []string{"('', '')"}
	for _, s := range p.segments {
		expr := fmt.Sprintf("visitParamExtractString(a_props, %s)", quote(s))
		if s == ExposureDay {
			expr = "toString(toDate(toDateTime(intDiv(a_first, 1000))))"
		}
		segs = append(segs, fmt.Sprintf("(%s, %s)", quote(s), expr))
	}
	pre := p.pre.Milliseconds()

	b.WriteString("SELECT a_flag, a_variant, seg.1 AS seg_prop, seg.2 AS seg_value, count() AS n")
	for i := range p.measures {
		fmt.Fprintf(&b, ", sum(m%d), sum(m%d * m%d), sum(q%d), sum(q%d * q%d), sum(m%d * q%d)", i, i, i, i, i, i, i, i)
	}
	for _, rp := range ratioPairs {
		fmt.Fprintf(&b, ", sum(m%d * m%d)", rp[0], rp[1])
	}
	b.WriteString("\nFROM (\n  SELECT a_flag, a_variant, any(a_segs) AS segs")
	for i, m := range p.measures {
		in := fmt.Sprintf("e_event = %s AND e_ts >= a_first AND e_ts < a_first + %d", quote(m.event), m.window.Milliseconds())
		inPre := fmt.Sprintf("e_event = %s AND e_ts >= a_first - %d AND e_ts < a_first", quote(m.event), pre)
		switch m.kind {
		case "sum":
			v := fmt.Sprintf("e_v%d", props[m.property])
			fmt.Fprintf(&b, ",\n    sumIf(%s, %s) AS m%d, sumIf(%s, %s) AS q%d", v, in, i, v, inPre, i)
		case "conversion":
			fmt.Fprintf(&b, ",\n    toFloat64(countIf(%s) > 0) AS m%d, toFloat64(countIf(%s) > 0) AS q%d", in, i, inPre, i)
		default:
			fmt.Fprintf(&b, ",\n    toFloat64(countIf(%s)) AS m%d, toFloat64(countIf(%s)) AS q%d", in, i, inPre, i)
		}
	}
	b.WriteString("\n  FROM (\n    SELECT flag AS a_flag, distinct_id, argMinMerge(variant_state) AS a_variant,\n")
	b.WriteString("      minMerge(first_state) AS a_first, length(groupUniqArrayMerge(variants_state)) AS a_nv,\n")
	b.WriteString("      argMinMerge(props_state) AS a_props, [" + strings.Join(segs, ", ") + "] AS a_segs\n")
	b.WriteString("    FROM assignments GROUP BY flag, distinct_id HAVING a_nv = 1\n  )\n")
	b.WriteString("  ALL LEFT JOIN (\n    SELECT distinct_id, event AS e_event, ts_ms AS e_ts")
	for i, pr := range propList {
		fmt.Fprintf(&b, ", visitParamExtractFloat(properties, %s) AS e_v%d", quote(pr), i)
	}
	if len(propList) == 0 {
		b.WriteString(", 0 AS e_none")
	}
	fmt.Fprintf(&b, "\n    FROM events FINAL WHERE event IN (%s)\n  ) USING distinct_id\n", strings.Join(evList, ", "))
	b.WriteString("  GROUP BY a_flag, distinct_id, a_variant\n)\nARRAY JOIN segs AS seg\nWHERE seg.1 = '' OR seg.2 != ''\nGROUP BY a_flag, a_variant, seg_prop, seg_value")
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
}

func flagInfos(ctx context.Context, conn store.Conn) (map[string]*flagInfo, error) {
	out := map[string]*flagInfo{}
	rows, err := conn.Query(ctx, `SELECT flag, min(f), countIf(nv > 1) FROM (
		SELECT flag, distinct_id, minMerge(first_state) AS f, length(groupUniqArrayMerge(variants_state)) AS nv
		FROM assignments GROUP BY flag, distinct_id) GROUP BY flag`)
	if err != nil {
		return nil, fmt.Errorf("query flags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f string
		fi := &flagInfo{}
		if err := rows.Scan(&f, &fi.firstMs, &fi.multiple); err != nil {
			return nil, fmt.Errorf("scan flags: %w", err)
		}
		out[f] = fi
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
