// Package analyze is flagwatch's analyzer: on a schedule it turns the cohort data in
// ClickHouse into decisions per flag, metric, segment and variant, appends them to the
// results history, emits new findings as alerts on flag_alerts, and calls a monitor's
// rollback action on a guardrail breach.
//
// The decision that shapes it: one pass runs one aggregation query for all monitors.
// ClickHouse joins each user's first exposure (aggregate states kept by a materialized
// view) with that user's events in a single scan, computes per-user measures for the
// distinct measures of all monitors, and returns per (flag, variant, segment) sufficient
// statistics; Go then runs the pure statistics (pipeline/stats via pipeline/evaluate, the
// same code path as `analyzer evaluate`). So a pass costs one scan of the events and one
// read of the assignment state whatever the number of flags × metrics × segments; the
// flags themselves, their age and staleness come from flag_activity, a few rows per flag.
//
// And the scheduled passes do not even do that: they are incremental (incremental.go).
// The per-(flag, user) rows of that query are kept, with per-cell sums beside them, and a
// pass recomputes only the users with new events or exposures since the last one, so its
// cost follows the new data. A pass from scratch (--recompute-all, and the daily rebuild)
// gives the same cells.
package analyze

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/evaluate"
	"github.com/flagwatch/flagwatch/pipeline/stats"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Segment is a row's segment: nil for the whole population; Value nil for a finding
// about a whole segment property.
type Segment = alert.Segment

// Row is one line of `analyzer once` (SPEC §6).
type Row struct {
	Flag        string     `json:"flag"`
	Metric      string     `json:"metric"`
	Segment     *Segment   `json:"segment"`
	Variant     string     `json:"variant"`
	N           int64      `json:"n"`
	Mean        float64    `json:"mean"`
	Lift        float64    `json:"lift"`
	CI          [2]float64 `json:"ci"`
	P           float64    `json:"p"`
	ChanceToWin float64    `json:"chance_to_win"`
	Decision    string     `json:"decision"`
	Reason      string     `json:"reason"`
	// Extra context for alerts and history.
	ControlN    int64   `json:"control_n,omitempty"`
	ControlMean float64 `json:"control_mean,omitempty"`
	SE          float64 `json:"se,omitempty"`
	CUPED       bool    `json:"cuped,omitempty"`
	Correction  string  `json:"correction,omitempty"`
}

// Pass is the outcome of one analysis pass.
type Pass struct {
	ID   string
	Time time.Time
	Rows []Row
	// Alerts are the findings this pass emitted (new, changed, or repeated critical).
	Alerts []alert.Alert
}

// Emitter publishes alerts; the Kafka producer in production.
type Emitter interface {
	Emit(ctx context.Context, alerts []alert.Alert) error
}

// Analyzer runs passes.
type Analyzer struct {
	Conn     store.Conn
	Monitors *config.Monitors
	Emitter  Emitter
	Logger   *slog.Logger
	// Now is the clock (tests and replays set it).
	Now func() time.Time
	// RepeatCritical re-emits an unresolved critical finding after this long.
	RepeatCritical time.Duration
	// Lookup reads rollback secrets (os.LookupEnv by default).
	Lookup  config.Lookup
	Replica string
	// RecomputeAll makes every pass recompute every (flag, user) instead of the users
	// with new data (see incremental.go).
	RecomputeAll bool
	// RebuildEvery rebuilds the incremental state from every (flag, user) once it is
	// this old (0: only when the plan changes).
	RebuildEvery time.Duration
}

func (a *Analyzer) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Analyzer) log() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// monitor is one flag's resolved configuration for a pass.
type monitor struct {
	flag     config.Flag
	variants []string // control first
	metrics  []metricPlan
}

type metricPlan struct {
	cfg      config.Metric
	num, den int // measure indexes
	ratio    int // index into ratio pairs, -1
}

// Run executes one pass: query, evaluate, record history, emit alerts, roll back.
func (a *Analyzer) Run(ctx context.Context) (*Pass, error) {
	start := a.now()
	pass := &Pass{ID: fmt.Sprintf("%s-%d", a.Replica, start.UnixNano()), Time: start}
	infos, err := flagActivity(ctx, a.Conn)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(infos))
	for k := range infos {
		keys = append(keys, k)
	}
	p, monitors, ratioPairs := a.plan(keys)
	cells, err := a.cells(ctx, p, ratioPairs, pass.ID)
	if err != nil {
		return nil, err
	}
	addVariants(infos, cells)
	for _, m := range monitors {
		var vs []string
		if fi := infos[m.flag.Key]; fi != nil {
			vs = fi.variants
		}
		m.flag = a.Monitors.ForFlag(m.flag.Key, vs)
		m.variants = orderVariants(m.flag.Control, vs)
	}
	h, err := a.history(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range monitors {
		pass.Rows = append(pass.Rows, a.evaluateFlag(m, infos[m.flag.Key], cells, h.latched, start)...)
	}
	if err := a.record(ctx, pass); err != nil {
		return nil, err
	}
	if err := a.alert(ctx, pass, monitors, h); err != nil {
		return pass, err
	}
	return pass, nil
}

// plan builds a pass's query plan and monitors for the exposed flags keys and the
// declared ones. Metrics and segments do not depend on a flag's variants; the control of
// a flag that names none does, and is picked once the query has found them.
func (a *Analyzer) plan(keys []string) (*plan, []*monitor, [][2]int) {
	keys = slices.Clone(keys)
	for _, f := range a.Monitors.Flags {
		if !slices.Contains(keys, f.Key) {
			keys = append(keys, f.Key) // declared but never exposed: reported as no data
		}
	}
	sort.Strings(keys)
	d := a.Monitors.Defaults
	p := newPlan(d.PrePeriod)
	p.addSegment(ExposureDay)
	var ratioPairs [][2]int
	var monitors []*monitor
	for _, key := range keys {
		f := a.Monitors.ForFlag(key, nil)
		m := &monitor{flag: f}
		for _, s := range f.Segments {
			p.addSegment(s)
		}
		for _, mc := range f.Metrics {
			num, den := p.metricMeasures(mc, d.Window)
			mp := metricPlan{cfg: mc, num: num, den: den, ratio: -1}
			if den >= 0 {
				mp.ratio = len(ratioPairs)
				ratioPairs = append(ratioPairs, [2]int{num, den})
			}
			m.metrics = append(m.metrics, mp)
		}
		monitors = append(monitors, m)
	}
	return p, monitors, ratioPairs
}

// orderVariants puts control first and the rest in name order.
func orderVariants(control string, vs []string) []string {
	out := []string{}
	for _, v := range vs {
		if v == control {
			out = append(out, v)
		}
	}
	for _, v := range vs {
		if v != control {
			out = append(out, v)
		}
	}
	return out
}

// evaluateFlag turns one flag's cells into rows: per metric × segment × test variant,
// then SRM, divergence and staleness findings.
func (a *Analyzer) evaluateFlag(m *monitor, info *flagInfo, cells map[cellKey]*cell, latched map[string]string, now time.Time) []Row {
	f := m.flag
	d := a.Monitors.Defaults
	if info == nil || len(m.variants) < 2 {
		reason := "no exposures yet"
		if info != nil {
			reason = fmt.Sprintf("only one variant seen (%s)", strings.Join(m.variants, ", "))
		}
		return []Row{{Flag: f.Key, Decision: alert.InsufficientData, Reason: reason}}
	}
	young := now.Sub(time.UnixMilli(info.firstMs)) < d.MinDuration
	var rows []Row
	segValues := map[string][]string{}
	for k := range cells {
		if k.flag == f.Key && k.segProp != "" && slices.Contains(f.Segments, k.segProp) && !slices.Contains(segValues[k.segProp], k.segValue) {
			segValues[k.segProp] = append(segValues[k.segProp], k.segValue)
		}
	}
	var srmDone bool
	for _, mp := range m.metrics {
		total, out, ok := a.verdict(m, mp, cells, "", "")
		if !ok {
			continue
		}
		if !srmDone {
			srmDone = true
			if out.SRM {
				rows = append(rows, Row{Flag: f.Key, Variant: "", Decision: alert.SRM, N: total,
					P: out.SRMP, Reason: fmt.Sprintf("sample ratio mismatch: users per variant %s against the configured split %v (χ² p = %.2g < 0.001); check your flag-evaluation code", usersOf(m, cells), f.ExpectedSplit(m.variants), out.SRMP)})
			}
		}
		rows = append(rows, a.rowsOf(f.Key, mp, nil, out, latched, young)...)
		for prop, values := range segValues {
			sort.Strings(values)
			var segRows []Row
			for _, v := range values {
				_, so, ok := a.verdict(m, mp, cells, prop, v)
				if !ok {
					continue
				}
				val := v
				segRows = append(segRows, a.rowsOf(f.Key, mp, &Segment{Property: prop, Value: &val}, so, latched, young)...)
			}
			correctSegments(segRows, d.Alpha)
			rows = append(rows, segRows...)
			if div := divergence(f.Key, mp.cfg.Name, prop, out, segRows, d.Alpha); div != nil {
				rows = append(rows, *div)
			}
		}
	}
	for _, mp := range m.metrics {
		rows = append(rows, a.shifts(m, mp, cells)...)
	}
	if staleFor := now.Sub(time.UnixMilli(info.lastMs)); info.lastMs > 0 && staleFor > d.StaleAfter {
		rows = append(rows, Row{Flag: f.Key, Decision: alert.Stale,
			Reason: fmt.Sprintf("no exposures for %s (last at %s; grace %s)", staleFor.Round(time.Minute), time.UnixMilli(info.lastMs).UTC().Format(time.RFC3339), d.StaleAfter)})
	}
	if info.multiple > 0 {
		for i := range rows {
			if rows[i].Metric != "" && rows[i].Segment == nil {
				rows[i].Reason = strings.TrimSpace(rows[i].Reason + fmt.Sprintf(" (%d users saw several variants ($multiple) and are excluded)", info.multiple))
			}
		}
	}
	return rows
}

func usersOf(m *monitor, cells map[cellKey]*cell) string {
	var parts []string
	for _, v := range m.variants {
		if c := cells[cellKey{m.flag.Key, v, "", ""}]; c != nil {
			parts = append(parts, fmt.Sprintf("%s %d", v, c.n))
		}
	}
	return strings.Join(parts, ", ")
}

// verdict builds the evaluate input for one metric and segment and runs it.
func (a *Analyzer) verdict(m *monitor, mp metricPlan, cells map[cellKey]*cell, prop, value string) (int64, evaluate.Output, bool) {
	d := a.Monitors.Defaults
	in := evaluate.Input{
		Metric:             evaluate.Metric{Name: mp.cfg.Name, Kind: string(mp.cfg.Kind), Goal: string(mp.cfg.Goal)},
		Alpha:              evaluate.Float(d.Alpha),
		SequentialTuning:   evaluate.Float(d.SequentialTuning),
		MinUsersPerVariant: evaluate.Float(float64(d.MinUsersPerVariant)),
		ExpectedSplit:      m.flag.ExpectedSplit(m.variants),
		Correction:         "holm",
	}
	if g := mp.cfg.Guardrail; g != nil {
		in.Metric.Guardrail = &evaluate.Guardrail{}
		if g.MaxIncrease > 0 {
			in.Metric.Guardrail.MaxIncrease = evaluate.Float(g.MaxIncrease)
		}
		if g.MaxDecrease > 0 {
			in.Metric.Guardrail.MaxDecrease = evaluate.Float(g.MaxDecrease)
		}
	}
	var total int64
	for _, v := range m.variants {
		c := cells[cellKey{m.flag.Key, v, prop, value}]
		if c == nil || c.n < 2 {
			return 0, evaluate.Output{}, false
		}
		total += int64(c.n)
		x := c.m[mp.num]
		vr := evaluate.Variant{Name: v, N: evaluate.Float(float64(c.n)), Sum: evaluate.Float(x.sum), SumSq: evaluate.Float(x.sumSq)}
		if mp.ratio >= 0 {
			y := c.m[mp.den]
			vr.DenSum, vr.DenSumSq, vr.CrossSum = evaluate.Float(y.sum), evaluate.Float(y.sumSq), evaluate.Float(c.ratios[mp.ratio])
		} else if d.PrePeriod > 0 {
			vr.PreSum, vr.PreSumSq, vr.PreCross = evaluate.Float(x.pre), evaluate.Float(x.preSq), evaluate.Float(x.cross)
		}
		in.Variants = append(in.Variants, vr)
	}
	out, err := evaluate.Verdict(in)
	if err != nil {
		a.log().Warn("metric not evaluated", "flag", m.flag.Key, "metric", mp.cfg.Name, "segment", prop+"="+value, "err", err)
		return 0, evaluate.Output{}, false
	}
	return total, out, true
}

// rowsOf renders a verdict's test variants as rows, applying the minimum duration and
// the latch.
func (a *Analyzer) rowsOf(flag string, mp metricPlan, seg *Segment, out evaluate.Output, latched map[string]string, young bool) []Row {
	var rows []Row
	for _, r := range out.Results {
		row := Row{Flag: flag, Metric: mp.cfg.Name, Segment: seg, Variant: r.Variant, N: r.N,
			Decision: r.Decision, Reason: r.Reason, CUPED: r.CUPED, Correction: out.Correction,
			ControlN: out.Control.N}
		if out.Control.Mean != nil {
			row.ControlMean = *out.Control.Mean
		}
		row.Mean, row.Lift, row.SE, row.ChanceToWin = deref(r.Mean), deref(r.Lift), deref(r.SE), deref(r.ChanceToWin)
		if r.Sequential != nil {
			row.CI, row.P = r.Sequential.CI, r.Sequential.P
			if r.Sequential.PAdjusted != nil {
				row.P = *r.Sequential.PAdjusted
			}
		}
		if young && row.Decision != alert.GuardrailBreach && row.Decision != alert.InsufficientData {
			row.Decision = alert.InsufficientData
			row.Reason = "minimum duration since first exposure not reached; " + row.Reason
		}
		if prev := latched[subject(flag, mp.cfg.Name, seg, r.Variant)]; prev != "" {
			if l := string(stats.Latch(stats.Decision(prev), stats.Decision(row.Decision))); l != row.Decision {
				row.Reason = fmt.Sprintf("latched %s (the sequential test crossed earlier; now %s: %s)", l, row.Decision, row.Reason)
				row.Decision = l
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func deref(p *float64) float64 {
	if p == nil || math.IsNaN(*p) {
		return 0
	}
	return *p
}

// correctSegments applies Benjamini–Hochberg across one property's segment values: a
// segment's win or loss stands only if it survives the correction.
func correctSegments(rows []Row, alpha float64) {
	byVariant := map[string][]int{}
	for i, r := range rows {
		byVariant[r.Variant] = append(byVariant[r.Variant], i)
	}
	for _, idx := range byVariant {
		ps := make([]float64, len(idx))
		for j, i := range idx {
			ps[j] = rows[i].P
		}
		adj := stats.AdjustBH(ps)
		for j, i := range idx {
			rows[i].P = adj[j]
			rows[i].Correction = "benjamini-hochberg across segments"
			if (rows[i].Decision == alert.Win || rows[i].Decision == alert.Loss) && adj[j] >= alpha {
				rows[i].Reason = fmt.Sprintf("not significant after Benjamini–Hochberg across %d segments (adjusted p = %.3g); %s", len(idx), adj[j], rows[i].Reason)
				rows[i].Decision = alert.Inconclusive
			}
		}
	}
}

// divergence reports segments moving in opposite directions while the total is flat.
func divergence(flag, metric, prop string, total evaluate.Output, segRows []Row, alpha float64) *Row {
	for _, t := range total.Results {
		if t.Decision == alert.Win || t.Decision == alert.Loss || t.Sequential == nil {
			continue
		}
		var effects []stats.SegmentEffect
		for _, r := range segRows {
			if r.Variant == t.Variant && r.SE > 0 {
				// r.P is already BH-adjusted across the segments; Divergence adjusts again,
				// which only makes it more conservative.
				effects = append(effects, stats.SegmentEffect{Value: r.Segment.ValueString(), Lift: r.Lift, SE: r.SE, P: r.P})
			}
		}
		res := stats.Divergence(t.Sequential.P, effects, alpha)
		if !res.Diverges {
			continue
		}
		return &Row{Flag: flag, Metric: metric, Segment: &Segment{Property: prop}, Variant: t.Variant,
			N: t.N, Lift: deref(t.Lift), Decision: alert.SegmentDivergence,
			Reason: fmt.Sprintf("%s: up in %s, down in %s while the total is flat (lift %+.1f%%); %s",
				prop, strings.Join(res.Up, ", "), strings.Join(res.Down, ", "), 100*deref(t.Lift), res.Reason)}
	}
	return nil
}

func subject(flag, metric string, seg *Segment, variant string) string {
	s := ""
	if seg != nil {
		s = seg.Property
		if seg.Value != nil {
			s += "=" + *seg.Value
		}
	}
	return flag + "|" + metric + "|" + s + "|" + variant
}

func (a *Analyzer) lookup() config.Lookup {
	if a.Lookup != nil {
		return a.Lookup
	}
	return os.LookupEnv
}

// ExposureDay is the pseudo segment property of exposure-day cohorts: the pass query
// groups users by the UTC day of their first exposure, so the lift of each day's cohort
// is a series the change detector can watch.
const ExposureDay = "$exposure_day"

// minShiftPoints is the fewest cohort days the detector looks at.
const minShiftPoints = 5

// shifts runs the CUSUM change detector over the lift of successive exposure-day
// cohorts: a behaviour_shift row says from which cohort on the effect changed (a novelty
// effect wearing off, a bug shipped to later users, a marketing campaign changing who
// arrives).
func (a *Analyzer) shifts(m *monitor, mp metricPlan, cells map[cellKey]*cell) []Row {
	var days []string
	for k := range cells {
		if k.flag == m.flag.Key && k.segProp == ExposureDay && k.variant == m.variants[0] {
			days = append(days, k.segValue)
		}
	}
	if len(days) < minShiftPoints {
		return nil
	}
	sort.Strings(days)
	var rows []Row
	for _, variant := range m.variants[1:] {
		var points []stats.Point
		var used []string
		for _, d := range days {
			_, out, ok := a.verdict(m, mp, cells, ExposureDay, d)
			if !ok {
				continue
			}
			for _, r := range out.Results {
				if r.Variant == variant && r.Lift != nil && r.SE != nil && *r.SE > 0 && r.N >= int64(a.Monitors.Defaults.MinUsersPerVariant) {
					points = append(points, stats.Point{Value: *r.Lift, SE: *r.SE})
					used = append(used, d)
				}
			}
		}
		if len(points) < minShiftPoints {
			continue
		}
		sh, err := stats.DetectShift(points, stats.ShiftConfig{})
		if err != nil || !sh.Detected {
			continue
		}
		dir := "rose"
		if sh.Direction < 0 {
			dir = "fell"
		}
		rows = append(rows, Row{Flag: m.flag.Key, Metric: mp.cfg.Name, Segment: &Segment{Property: ExposureDay},
			Variant: variant, Decision: alert.BehaviourShift, Lift: points[len(points)-1].Value,
			Reason: fmt.Sprintf("the lift of users first exposed from %s on %s (CUSUM over %d daily cohorts, in-control ARL %.0f days): %s",
				used[max(sh.Start, 0)], dir, len(points), sh.ARL0, sh.Reason)})
	}
	return rows
}
