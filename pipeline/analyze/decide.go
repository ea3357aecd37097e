package analyze

import (
	"fmt"
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
)

// This file turns a pass's cells into rows. Nothing here reads or writes anything: the
// cells, the monitors, the latches and the time decide every row, so each decision path
// has a table test (decide_test.go).

// srmMinExposures is the number of a flag's users before a split problem is reported
// (SPEC §4: SRM needs 100 exposures).
const srmMinExposures = 100

// unexpectedShare is the share of a flag's users below which a variant that is not in a
// configured split is not treated as an arm of the experiment (with fewer users than the
// minimum per variant, too): one exposure with a mistyped variant must not become a
// third arm that blocks every comparison.
const unexpectedShare = 0.01

// pickVariants chooses the variants a flag's metrics compare — control first, then the
// others by name — and the unexpected ones, reported but not compared. With a configured
// split, the compared variants are the split's that were seen and the unexpected ones
// are the rest; without one, a variant is unexpected when it has fewer than two users,
// or fewer than 1% of the flag's users and fewer than the minimum per variant.
func pickVariants(f config.Flag, seen []string, cells map[cellKey]*cell, minUsers int) (compared, unexpected []string) {
	users := func(v string) uint64 {
		if c := cells[cellKey{f.Key, v, "", ""}]; c != nil {
			return c.n
		}
		return 0
	}
	var total uint64
	for _, v := range seen {
		total += users(v)
	}
	configured := f.Split.Variants()
	var keep []string
	for _, v := range seen {
		switch {
		case v == "false" && f.Rollout != nil && !slices.Contains(configured, v):
			// Outside a progressive rollout's share, PostHog answers false: those users
			// are neither an arm nor a mistake.
			continue
		case len(configured) > 0 && !slices.Contains(configured, v):
			unexpected = append(unexpected, v)
		case len(configured) == 0 && v != f.Control && (users(v) < 2 ||
			(float64(users(v)) < unexpectedShare*float64(total) && users(v) < uint64(minUsers))):
			unexpected = append(unexpected, v)
		default:
			keep = append(keep, v)
		}
	}
	sort.Strings(keep)
	sort.Strings(unexpected)
	return orderVariants(f.Control, keep), unexpected
}

// flagResult is one flag's part of a pass before the pass-wide corrections of property
// discovery.
type flagResult struct {
	flag          string
	rows, cohorts []Row
	// props are the heterogeneity rows of configured properties.
	props []Row
	// families and correlations are decided with every other flag's (discover.go).
	families     []*family
	correlations []pendingCorrelation
}

// evaluateFlag turns one flag's cells into rows: per metric × segment × test variant,
// then SRM, unexpected variants, divergence, behaviour shift and staleness findings. It
// also returns the exposure-day cohort rows, and leaves its discovered properties' tests
// to the pass-wide correction.
func (a *Analyzer) evaluateFlag(m *monitor, info *flagInfo, cells map[cellKey]*cell, latched map[string]string, now time.Time) *flagResult {
	f := m.flag
	d := a.Monitors.Defaults
	res := &flagResult{flag: f.Key}
	if info == nil {
		res.rows = []Row{{Flag: f.Key, Decision: alert.InsufficientData, Reason: "no exposures yet"}}
		return res
	}
	var rows []Row
	var flagUsers uint64
	for _, v := range append(slices.Clone(m.variants), m.unexpected...) {
		if c := cells[cellKey{f.Key, v, "", ""}]; c != nil {
			flagUsers += c.n
		}
	}
	for _, v := range m.unexpected {
		if flagUsers < srmMinExposures {
			// At launch a real arm can have one user; it is left out of the comparison
			// but not reported until the flag has the exposures an SRM test needs.
			break
		}
		var n uint64
		if c := cells[cellKey{f.Key, v, "", ""}]; c != nil {
			n = c.n
		}
		expected := "the configured split " + strings.Join(f.Split.Variants(), ", ")
		if len(f.Split) == 0 {
			expected = "the arms " + strings.Join(m.variants, ", ")
		}
		rows = append(rows, Row{Flag: f.Key, Variant: v, N: int64(n), Decision: alert.SRM,
			Reason: fmt.Sprintf("unexpected variant %q seen in exposures (%d users), not one of %s: excluded from the comparison; check the flag's evaluation code and the variant names your SDK sends", v, n, expected)})
	}
	if len(m.variants) < 2 {
		reason := fmt.Sprintf("only one variant seen (%s)", strings.Join(m.variants, ", "))
		if len(m.variants) == 0 {
			reason = "no variant with users yet"
		}
		res.rows = append(rows, Row{Flag: f.Key, Decision: alert.InsufficientData, Reason: reason})
		return res
	}
	young := now.Sub(time.UnixMilli(info.firstMs)) < d.MinDuration
	props := a.properties(m, cells)
	tried := len(props)
	var srmDone bool
	for _, mp := range m.metrics {
		total, out, err := a.verdict(m, mp, cells, "", "")
		if err != nil {
			rows = append(rows, Row{Flag: f.Key, Metric: mp.cfg.Name, Decision: alert.InsufficientData, Reason: err.Error()})
			continue
		}
		if !srmDone {
			srmDone = true
			if out.SRM {
				rows = append(rows, Row{Flag: f.Key, Decision: alert.SRM, N: total, P: out.SRMP,
					Reason: fmt.Sprintf("sample ratio mismatch: users per variant %s against the configured split %v (χ² p = %.2g < 0.001); check your flag-evaluation code", usersOf(m, cells), f.ExpectedSplit(m.variants), out.SRMP)})
			}
		}
		totals := a.rowsOf(mp, nil, out, latched, young, m, cells)
		for i := range totals {
			totals[i].PropertiesTried = tried
		}
		rows = append(rows, totals...)
		for _, p := range props {
			var segRows []Row
			for _, v := range p.values {
				_, so, err := a.verdict(m, mp, cells, p.name, v)
				if err != nil {
					continue // a segment value without users in every arm says nothing
				}
				val := v
				segRows = append(segRows, a.rowsOf(mp, &Segment{Property: p.name, Value: &val}, so, latched, young, m, cells)...)
			}
			correctSegments(segRows, d.Alpha)
			res.correlations = append(res.correlations, a.correlations(m, mp, p, cells, tried)...)
			if !p.discovered {
				rows = append(rows, segRows...)
				for _, t := range out.Results {
					res.props = append(res.props, configuredHeterogeneity(f.Key, mp.cfg.Name, p.name, t, out, segRows, tried, d.Alpha))
				}
				if div := divergence(f.Key, mp.cfg.Name, p.name, out, segRows, d.Alpha); div != nil && !young {
					div.PropertiesTried = tried
					rows = append(rows, *div)
				}
				continue
			}
			for _, t := range out.Results {
				var mine []Row
				for _, r := range segRows {
					if r.Variant == t.Variant {
						r.Discovered, r.PropertiesTried = true, tried
						mine = append(mine, r)
					}
				}
				if len(mine) == 0 {
					continue
				}
				res.families = append(res.families, &family{flag: f.Key, metric: mp.cfg.Name, variant: t.Variant, prop: p.name,
					tried: tried, het: hetOf(mine), rows: mine, total: t, totalOut: out, young: young})
			}
		}
	}
	for _, mp := range m.metrics {
		sh, co := a.shifts(m, mp, cells)
		rows = append(rows, sh...)
		res.cohorts = append(res.cohorts, co...)
	}
	rows = append(rows, a.segmentShifts(m, props, cells, tried)...)
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
	res.rows = rows
	return res
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

// verdict builds the evaluate input for one metric and segment and runs it. An error
// says in words why the metric could not be evaluated (too few users in an arm).
func (a *Analyzer) verdict(m *monitor, mp metricPlan, cells map[cellKey]*cell, prop, value string) (int64, evaluate.Output, error) {
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
			var n uint64
			if c != nil {
				n = c.n
			}
			return 0, evaluate.Output{}, fmt.Errorf("not enough users to compare yet: %s has %d", v, n)
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
		// The query keeps non-finite values out, so this is a bug worth a log line; the
		// metric still gets a row saying why it has no verdict.
		a.log().Warn("metric not evaluated", "flag", m.flag.Key, "metric", mp.cfg.Name, "segment", prop+"="+value, "err", err)
		return 0, evaluate.Output{}, fmt.Errorf("not evaluated: %v", err)
	}
	return total, out, nil
}

// rowsOf renders a verdict's test variants as rows, applying the minimum duration and
// the latch; for the whole population it also says how many values of a summed property
// the query left out as not finite or absurd.
func (a *Analyzer) rowsOf(mp metricPlan, seg *Segment, out evaluate.Output, latched map[string]string, young bool, m *monitor, cells map[cellKey]*cell) []Row {
	flag := m.flag.Key
	var rows []Row
	excluded := 0.0
	if seg == nil {
		for _, v := range m.variants {
			if c := cells[cellKey{flag, v, "", ""}]; c != nil {
				excluded += c.excluded(mp)
			}
		}
	}
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
		if excluded > 0 {
			row.Reason = strings.TrimSpace(row.Reason + fmt.Sprintf(" (%.0f property values were not finite or beyond ±1e15 and were left out)", excluded))
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
// The row carries the total's numbers; the segments' own are their rows.
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
		row := &Row{Flag: flag, Metric: metric, Segment: &Segment{Property: prop}, Variant: t.Variant,
			N: t.N, ControlN: total.Control.N, Lift: deref(t.Lift), SE: deref(t.SE), CI: t.Sequential.CI, P: t.Sequential.P,
			Mean: deref(t.Mean), Decision: alert.SegmentDivergence,
			Reason: fmt.Sprintf("%s: up in %s, down in %s while the total is flat (lift %+.1f%%); %s",
				prop, strings.Join(res.Up, ", "), strings.Join(res.Down, ", "), 100*deref(t.Lift), res.Reason)}
		if total.Control.Mean != nil {
			row.ControlMean = *total.Control.Mean
		}
		return row
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
// arrives). It also returns each cohort's row, the series itself.
func (a *Analyzer) shifts(m *monitor, mp metricPlan, cells map[cellKey]*cell) (rows, cohorts []Row) {
	var days []string
	for _, k := range m.keys {
		if k.segProp == ExposureDay && k.variant == m.variants[0] {
			days = append(days, k.segValue)
		}
	}
	sort.Strings(days)
	outs := make([]evaluate.Output, len(days))
	ok := make([]bool, len(days))
	for i, d := range days {
		_, out, err := a.verdict(m, mp, cells, ExposureDay, d)
		if err != nil {
			continue
		}
		outs[i], ok[i] = out, true
		day := d
		for _, r := range out.Results {
			c := Row{Flag: m.flag.Key, Metric: mp.cfg.Name, Segment: &Segment{Property: ExposureDay, Value: &day},
				Variant: r.Variant, N: r.N, ControlN: out.Control.N, Mean: deref(r.Mean), Lift: deref(r.Lift), SE: deref(r.SE),
				Decision: "cohort"}
			if out.Control.Mean != nil {
				c.ControlMean = *out.Control.Mean
			}
			if r.Sequential != nil {
				c.CI, c.P = r.Sequential.CI, r.Sequential.P
			}
			cohorts = append(cohorts, c)
		}
	}
	if len(days) < minShiftPoints {
		return nil, cohorts
	}
	for _, variant := range m.variants[1:] {
		var points []stats.Point
		var used []string
		for i, d := range days {
			if !ok[i] {
				continue
			}
			for _, r := range outs[i].Results {
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
	return rows, cohorts
}
