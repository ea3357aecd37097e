package analyze

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/evaluate"
	"github.com/flagwatch/flagwatch/pipeline/stats"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Property discovery (SPEC §10): what explains a result, without configuring segments.
//
// Two stages, so that discovery costs the pass little. When a generation is built (or a
// pass recomputes everything) the build reads flag_segment_sets — exposures per (flag,
// segment property set), a few thousand rows kept by a view — and preselect picks the
// properties worth extracting, with their frequent values (the rest fold into
// otherValue in SQL, so a property's cells stay few). The pass query then gives every
// such property the cells a configured segment gets. Everything after that is pure and
// exact, on the cells: per flag, properties qualifies the candidates (coverage, values
// with enough users, identifiers left out) and caps them; the pass then tests
//
//   - heterogeneity: does the effect differ across the property's values? Cochran's Q per
//     (flag, metric, test variant, property), Benjamini–Hochberg across every discovered
//     property × metric × variant tried in the pass; within a selected property its
//     values are tested at the Benjamini–Bogomolov level q·R/m, and a segment_divergence
//     needs a value significantly up and one down while the total is flat;
//   - correlation: per property value and variant, the metric of the value's users
//     relative to the rest of the variant, with an interval, BH across every
//     correlation of the pass (rows with decision "correlation");
//   - behaviour shift per segment value: the exposure-day cohorts of every analysed
//     value, configured or discovered, watched by the CUSUM with a threshold that gives
//     the flag's segment series together the false-alarm rate of one series.

// Decision words of the property-analysis rows: kept in the results history for the
// flag pages and the digest, never alerts and not printed by `analyzer once`.
const (
	// Heterogeneity is one row per (flag, metric, test variant, segment property):
	// Cochran's Q test that the effect is the same for every value of the property.
	Heterogeneity = "heterogeneity"
	// Correlation is one row per (flag, metric, variant, property value): the metric of
	// the value's users relative to the rest of the variant's users.
	Correlation = "correlation"
)

// otherValue is the value rare values of a discovered property are folded into.
const otherValue = "(other)"

// maxPlanDiscovered bounds the discovered properties a plan extracts for all flags
// together; each flag analyses at most its auto_segments_max of them.
const maxPlanDiscovered = 64

// discovery is what a plan needs to choose its discovered properties.
type discovery struct {
	// caps are the flags with discovery on, and their auto_segments_max.
	caps     map[string]int
	values   int     // auto_segments_values
	coverage float64 // auto_segments_coverage
	minUsers int     // min_users_per_variant
}

func (d discovery) on() bool { return len(d.caps) > 0 }

// discoveredProp is a property the pass query extracts for discovery, and the values it
// keeps; any other value is counted as otherValue.
type discoveredProp struct {
	Name   string   `json:"property"`
	Values []string `json:"values"`
}

// fold is the SQL of the property's value from x, the extracted value: x when kept,
// empty when unset, otherValue otherwise.
func (d discoveredProp) fold(x string) string {
	if len(d.Values) == 0 {
		return fmt.Sprintf("if(%s = '', '', %s)", x, quote(otherValue))
	}
	return fmt.Sprintf("multiIf(%s = '', '', has(%s, %s), %s, %s)", x, store.QuoteList(d.Values), x, x, quote(otherValue))
}

// perEventProperties are set per event rather than per user: where the user was when the
// flag was evaluated, not who the user is. event.SegmentProps already drops the ids
// unique per event or session.
var perEventProperties = map[string]bool{
	"$current_url": true, "$pathname": true, "$referrer": true, "$title": true,
	"$ip": true, "$raw_user_agent": true, "$host_url": true, "$prev_pageview_pathname": true,
}

// excludedProperty reports whether prop can never be a discovered segment of flag: a
// per-event property, an identifier (named id or ending in _id, Id or ID: one value
// per user or organisation), a flag assignment ($feature/<key>: the flag's own is the
// treatment itself, and another flag's differs between exposures made in the same
// millisecond, where "the first exposure's properties" is not well defined), or a
// property the analyzer derives.
func excludedProperty(prop string) bool {
	switch {
	case perEventProperties[prop], prop == "id", prop == ExposureDay, prop == "",
		strings.HasSuffix(prop, "_id"), strings.HasSuffix(prop, "Id"), strings.HasSuffix(prop, "ID"),
		strings.HasPrefix(prop, crossPrefix), strings.HasPrefix(prop, "$feature/"),
		strings.ContainsAny(prop, `\"`): // not addressable by name in the property set
		return true
	}
	return false
}

// setStats are the exposures per flag, per (flag, property) and per (flag, property,
// value) of frequent values, from flag_segment_sets.
type setStats struct {
	total  map[string]float64            // flag → exposures
	byProp map[string]map[string]float64 // flag → property → exposures that set it
	// values are each (flag, property)'s values with enough exposures to ever have the
	// minimum users per variant, most frequent first (at most 2·values+1 of them).
	values map[string]map[string][]valueCount
}

type valueCount struct {
	value string
	n     float64
}

// preselect picks the properties a plan extracts for discovery, and their values. A
// value is kept when it has at least 2·min_users_per_variant exposures in some flag: a
// value with fewer cannot have the minimum users in two variants (a user has at least
// one exposure), so folding it in SQL never hides a value the exact rule would keep.
// A property is a candidate of a flag when it is set on at least half the coverage
// asked for (the exact share of users is checked on the cells), has at most twice
// auto_segments_values kept values and at least two groups; each flag contributes its
// 2·auto_segments_max best covered, and the plan takes the union (at most
// maxPlanDiscovered, best covered first), in name order so the same data gives the
// same plan.
func preselect(st setStats, d discovery, configured []string) []discoveredProp {
	type cand struct {
		values map[string]float64
		share  float64
	}
	union := map[string]*cand{}
	for flag, cap := range d.caps {
		total := st.total[flag]
		if total <= 0 {
			continue
		}
		type scored struct {
			prop  string
			share float64
		}
		var mine []scored
		for prop, n := range st.byProp[flag] {
			if slices.Contains(configured, prop) || excludedProperty(prop) {
				continue
			}
			share := n / total
			vs := st.values[flag][prop]
			var kept float64
			for _, v := range vs {
				kept += v.n
			}
			groups := len(vs)
			if n-kept >= float64(2*d.minUsers) {
				groups++ // the rest is big enough to be a group of its own
			}
			if share < d.coverage/2 || len(vs) == 0 || len(vs) > 2*d.values || groups < 2 {
				continue
			}
			mine = append(mine, scored{prop, share})
		}
		slices.SortFunc(mine, func(a, b scored) int { return cmp.Or(cmp.Compare(b.share, a.share), cmp.Compare(a.prop, b.prop)) })
		for _, s := range mine[:min(len(mine), 2*cap)] {
			c := union[s.prop]
			if c == nil {
				c = &cand{values: map[string]float64{}}
				union[s.prop] = c
			}
			c.share = math.Max(c.share, s.share)
			for _, v := range st.values[flag][s.prop] {
				c.values[v.value] += v.n
			}
		}
	}
	names := make([]string, 0, len(union))
	for p := range union {
		names = append(names, p)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(union[b].share, union[a].share), cmp.Compare(a, b))
	})
	names = names[:min(len(names), maxPlanDiscovered)]
	sort.Strings(names)
	out := make([]discoveredProp, 0, len(names))
	for _, p := range names {
		vs := make([]string, 0, len(union[p].values))
		for v := range union[p].values {
			vs = append(vs, v)
		}
		slices.SortFunc(vs, func(a, b string) int {
			return cmp.Or(cmp.Compare(union[p].values[b], union[p].values[a]), cmp.Compare(a, b))
		})
		vs = vs[:min(len(vs), 2*d.values)]
		sort.Strings(vs)
		out = append(out, discoveredProp{Name: p, Values: vs})
	}
	return out
}

// property is one segment property a flag is analysed by in a pass.
type property struct {
	name       string
	discovered bool
	values     []string // the values with rows: raw values, or kept values and otherValue
	coverage   float64  // share of the flag's compared users with the property set
	small      []string // a discovered property's values folded into otherValue
}

// properties are the segment properties flag m is analysed by: its configured segments
// found in the cells, then — with auto_segments on — the other properties of the cells
// that qualify, best covered first, at most auto_segments_max. A discovered property's
// values with fewer than the minimum users in a variant are folded, in cells, into
// otherValue (so everything downstream reads cells by key, as for configured values).
func (a *Analyzer) properties(m *monitor, cells map[cellKey]*cell) []property {
	f := m.flag
	d := a.Monitors.Defaults
	raw := map[string][]string{}
	for _, k := range m.keys {
		if k.segProp != "" && k.segProp != ExposureDay && !strings.HasPrefix(k.segProp, crossPrefix) &&
			k.variant == m.variants[0] && !slices.Contains(raw[k.segProp], k.segValue) {
			raw[k.segProp] = append(raw[k.segProp], k.segValue)
		}
	}
	// A value seen only in a test arm still has cells there: collect every arm's.
	for _, k := range m.keys {
		if raw[k.segProp] != nil && slices.Contains(m.variants, k.variant) && !slices.Contains(raw[k.segProp], k.segValue) {
			raw[k.segProp] = append(raw[k.segProp], k.segValue)
		}
	}
	var total float64
	for _, v := range m.variants {
		if c := cells[cellKey{f.Key, v, "", ""}]; c != nil {
			total += float64(c.n)
		}
	}
	usersOf := func(prop, value string) (all float64, least uint64) {
		least = math.MaxUint64
		for _, v := range m.variants {
			var n uint64
			if c := cells[cellKey{f.Key, v, prop, value}]; c != nil {
				n = c.n
			}
			all += float64(n)
			least = min(least, n)
		}
		return all, least
	}
	var out, found []property
	for _, p := range f.Segments {
		if vs, ok := raw[p]; ok {
			sort.Strings(vs)
			out = append(out, property{name: p, values: vs})
		}
	}
	if !f.AutoSegments || total == 0 {
		return out
	}
	for p, vs := range raw {
		if slices.Contains(f.Segments, p) || excludedProperty(p) {
			continue
		}
		var covered float64
		var kept, small []string
		for _, v := range vs {
			all, least := usersOf(p, v)
			covered += all
			if v != otherValue && least >= uint64(d.MinUsersPerVariant) {
				kept = append(kept, v)
			} else {
				small = append(small, v)
			}
		}
		groups := len(kept)
		if len(small) > 0 {
			groups++
		}
		if covered/total < d.AutoSegmentsCoverage || len(kept) == 0 || len(kept) > d.AutoSegmentsValues || groups < 2 {
			continue
		}
		sort.Strings(kept)
		sort.Strings(small)
		prop := property{name: p, discovered: true, values: kept, coverage: covered / total}
		if len(small) > 0 {
			prop.values = append(prop.values, otherValue)
			prop.small = small
		}
		found = append(found, prop)
	}
	slices.SortFunc(found, func(x, y property) int {
		return cmp.Or(cmp.Compare(y.coverage, x.coverage), cmp.Compare(x.name, y.name))
	})
	found = found[:min(len(found), f.AutoSegmentsMax)]
	for _, p := range found {
		if len(p.small) > 0 {
			foldCells(cells, m, p.name, p.small)
		}
	}
	return append(out, found...)
}

// foldCells replaces, in every variant and exposure-day cohort, the cells of small
// values of a property by one otherValue cell holding their sums.
func foldCells(cells map[cellKey]*cell, m *monitor, prop string, small []string) {
	flag := m.flag.Key
	folded := map[cellKey]*cell{}
	add := func(k cellKey, c *cell) {
		if folded[k] == nil {
			folded[k] = c.emptyLike()
		}
		folded[k].add(c, 1)
	}
	for _, k := range m.keys {
		c := cells[k]
		switch {
		case k.segProp == prop && slices.Contains(small, k.segValue):
			add(cellKey{flag, k.variant, prop, otherValue}, c)
		case k.segProp == crossPrefix+prop:
			day, v, _ := strings.Cut(k.segValue, "/")
			if slices.Contains(small, v) {
				add(crossKey(flag, k.variant, prop, otherValue, day), c)
			}
		}
	}
	for k, c := range folded {
		if cells[k] == nil {
			m.keys = append(m.keys, k)
		}
		cells[k] = c
	}
}

// emptyLike is a cell with no users, shaped like c (its measures, ratios and counts).
func (c *cell) emptyLike() *cell {
	return &cell{m: make([]moments, len(c.m)), ratios: make([]float64, len(c.ratios)), bad: make([]float64, len(c.bad))}
}

// add adds sign × o's sums to c.
func (c *cell) add(o *cell, sign float64) {
	if sign > 0 {
		c.n += o.n
	} else {
		c.n -= min(c.n, o.n)
	}
	for i := range c.m {
		if i < len(o.m) {
			c.m[i].sum += sign * o.m[i].sum
			c.m[i].sumSq += sign * o.m[i].sumSq
			c.m[i].pre += sign * o.m[i].pre
			c.m[i].preSq += sign * o.m[i].preSq
			c.m[i].cross += sign * o.m[i].cross
		}
	}
	for i := range c.ratios {
		c.ratios[i] += sign * at(o.ratios, i)
	}
	for i := range c.bad {
		c.bad[i] += sign * at(o.bad, i)
	}
}

// momentsOf is a cell's sufficient statistics for metric mp, with the CUPED covariate
// when pre is set.
func momentsOf(c *cell, mp metricPlan, pre bool) stats.Moments {
	x := c.m[mp.num]
	mo := stats.Moments{N: int64(c.n), Sum: x.sum, SumSq: x.sumSq}
	if mp.ratio >= 0 {
		y := c.m[mp.den]
		mo.Den = &stats.Denominator{Sum: y.sum, SumSq: y.sumSq, Cross: c.ratios[mp.ratio]}
	} else if pre {
		mo.Pre = &stats.PrePeriod{Sum: x.pre, SumSq: x.preSq, Cross: x.cross}
	}
	return mo
}

// minus is a's sums less b's: the users of a who are not in b.
func minus(a, b stats.Moments) stats.Moments {
	out := stats.Moments{N: a.N - b.N, Sum: a.Sum - b.Sum, SumSq: a.SumSq - b.SumSq}
	if a.Pre != nil && b.Pre != nil {
		out.Pre = &stats.PrePeriod{Sum: a.Pre.Sum - b.Pre.Sum, SumSq: a.Pre.SumSq - b.Pre.SumSq, Cross: a.Pre.Cross - b.Pre.Cross}
	}
	if a.Den != nil && b.Den != nil {
		out.Den = &stats.Denominator{Sum: a.Den.Sum - b.Den.Sum, SumSq: a.Den.SumSq - b.Den.SumSq, Cross: a.Den.Cross - b.Den.Cross}
	}
	return out
}

// family is one discovered property's heterogeneity test for one metric and test
// variant: the pass tests them all together.
type family struct {
	flag, metric, variant, prop string
	tried                       int
	het                         stats.HeterogeneityResult
	rows                        []Row // the property's value rows for this variant
	total                       evaluate.Result
	totalOut                    evaluate.Output
	young                       bool
	// Filled in by resolveFamilies.
	selected  bool
	adjustedP float64
	level     float64
}

// pendingCorrelation is one correlation row before the pass-wide correction.
type pendingCorrelation struct {
	row    Row
	effect stats.Effect
	fixed  stats.Interval // at α
}

// correlations compares, for each value of prop and each compared variant, the metric
// of the value's users with the rest of the variant's users: the "which properties go
// with conversion" half of property analysis. Not a decision: an association within
// one arm, whatever the flag does.
func (a *Analyzer) correlations(m *monitor, mp metricPlan, p property, cells map[cellKey]*cell, tried int) []pendingCorrelation {
	var out []pendingCorrelation
	kind := stats.Kind(mp.cfg.Kind)
	for _, v := range m.variants {
		total := cells[cellKey{m.flag.Key, v, "", ""}]
		if total == nil {
			continue
		}
		for _, val := range p.values {
			c := cells[cellKey{m.flag.Key, v, p.name, val}]
			if c == nil || c.n < 2 || total.n < c.n+2 {
				continue
			}
			own := momentsOf(c, mp, false)
			e, err := stats.RelativeLift(kind, minus(momentsOf(total, mp, false), own), own)
			if err != nil {
				continue
			}
			value := val
			out = append(out, pendingCorrelation{effect: e, fixed: e.Fixed(a.Monitors.Defaults.Alpha), row: Row{Flag: m.flag.Key, Metric: mp.cfg.Name,
				Segment: &Segment{Property: p.name, Value: &value}, Variant: v, N: int64(c.n), ControlN: int64(total.n - c.n),
				Mean: e.TestMean, ControlMean: e.ControlMean, Lift: e.Lift, SE: e.SE, Decision: Correlation,
				Discovered: p.discovered, PropertiesTried: tried}})
		}
	}
	return out
}

// resolveCorrelations corrects every correlation of the pass together: p-values by
// Benjamini–Hochberg, and the intervals of the R correlations it reports, out of m
// tested, at the false-coverage-rate level 1 − αR/m (Benjamini & Yekutieli 2005), so
// that "correlated" and "its interval excludes zero" say the same thing. The others
// carry their plain 1 − α interval.
func resolveCorrelations(pending []pendingCorrelation, alpha float64) []Row {
	if len(pending) == 0 {
		return nil
	}
	ps := make([]float64, len(pending))
	for i, c := range pending {
		ps[i] = c.fixed.P
	}
	sel := stats.SelectFamilies(ps, alpha)
	r := 0
	for _, s := range sel.Selected {
		if s {
			r++
		}
	}
	out := make([]Row, len(pending))
	for i, c := range pending {
		row := c.row
		row.P = sel.FamilyAdjusted[i]
		row.Correction = fmt.Sprintf("benjamini-hochberg across %d correlations", len(pending))
		what := fmt.Sprintf("%s = %s vs the rest of %s", PropertyName(row.Segment.Property), *row.Segment.Value, row.Variant)
		if sel.Selected[i] {
			iv := c.effect.Fixed(sel.Level)
			row.CI = [2]float64{iv.Lo, iv.Hi}
			row.Reason = fmt.Sprintf("correlated: %s %s %s (adjusted p = %.2g; interval at the false-coverage level for the %d correlated of %d tested)",
				what, pct(row.Lift), interval(row.CI), row.P, r, len(pending))
		} else {
			row.CI = [2]float64{c.fixed.Lo, c.fixed.Hi}
			row.Reason = fmt.Sprintf("not correlated: %s %s %s (adjusted p = %.2g across %d tested)", what, pct(row.Lift), interval(row.CI), row.P, len(pending))
		}
		out[i] = row
	}
	return out
}

// resolveFamilies decides every discovered property's findings of the pass: BH over
// the heterogeneity p-values of all families, then, in each selected family, values
// tested at the Benjamini–Bogomolov level αR/m. A value's win or loss stands only
// there (and a discovered value never triggers a rollback: a guardrail breach becomes
// a loss); a divergence needs a value significantly up and one down while the total
// is flat. It returns, per family, the value rows, the heterogeneity row and the
// divergence row if any.
func resolveFamilies(fams []*family, alpha float64, latched map[string]string) (rows, props []Row) {
	if len(fams) == 0 {
		return nil, nil
	}
	ps := make([]float64, len(fams))
	for i, f := range fams {
		ps[i] = f.het.P
	}
	sel := stats.SelectFamilies(ps, alpha)
	for i, f := range fams {
		f.selected, f.adjustedP, f.level = sel.Selected[i], sel.FamilyAdjusted[i], sel.Level
	}
	for _, f := range fams {
		var up, down []string
		for i := range f.rows {
			r := &f.rows[i]
			significant := f.selected && r.P < f.level
			if significant && r.Lift > 0 {
				up = append(up, r.Segment.ValueString())
			}
			if significant && r.Lift < 0 {
				down = append(down, r.Segment.ValueString())
			}
			if latched[subject(r.Flag, r.Metric, r.Segment, r.Variant)] != "" {
				continue // a decision announced earlier stays (the guarantee covers the first crossing)
			}
			switch {
			case r.Decision != alert.Win && r.Decision != alert.Loss && r.Decision != alert.GuardrailBreach:
			case !f.selected:
				r.Reason = fmt.Sprintf("not a finding: the effect does not differ by %s (heterogeneity adjusted p = %.2g across %d discovered property tests); %s",
					f.prop, f.adjustedP, len(fams), r.Reason)
				r.Decision = alert.Inconclusive
			case !significant:
				r.Reason = fmt.Sprintf("not significant at the level of the %s test (adjusted p = %.3g ≥ %.3g); %s", f.prop, r.P, f.level, r.Reason)
				r.Decision = alert.Inconclusive
			case r.Decision == alert.GuardrailBreach:
				r.Reason = "a discovered segment does not trigger a rollback; " + r.Reason
				r.Decision = alert.Loss
			}
		}
		rows = append(rows, f.rows...)
		het := Row{Flag: f.flag, Metric: f.metric, Segment: &Segment{Property: f.prop}, Variant: f.variant,
			N: f.total.N, ControlN: f.totalOut.Control.N, P: f.adjustedP, Decision: Heterogeneity, Discovered: true,
			PropertiesTried: f.tried, Correction: fmt.Sprintf("benjamini-hochberg across %d discovered property tests", len(fams)),
			Reason: fmt.Sprintf("%s: Q = %.1f on %d df (p = %.2g, I² = %.0f%%); adjusted across %d discovered property × metric tests of the pass: p = %.2g, %s; %d properties tried for %s",
				f.prop, f.het.Q, f.het.DF, f.het.P, 100*f.het.I2, len(fams), f.adjustedP, verdictWord(f.selected), f.tried, f.flag)}
		props = append(props, het)
		t := f.total
		if !f.selected || f.young || t.Decision == alert.Win || t.Decision == alert.Loss || t.Sequential == nil ||
			len(up) == 0 || len(down) == 0 {
			continue
		}
		sort.Strings(up)
		sort.Strings(down)
		div := Row{Flag: f.flag, Metric: f.metric, Segment: &Segment{Property: f.prop}, Variant: f.variant,
			N: t.N, ControlN: f.totalOut.Control.N, Lift: deref(t.Lift), SE: deref(t.SE), CI: t.Sequential.CI, P: t.Sequential.P,
			Mean: deref(t.Mean), Decision: alert.SegmentDivergence, Discovered: true, PropertiesTried: f.tried,
			Correction: het.Correction,
			Reason: fmt.Sprintf("%s (found by property discovery): up in %s, down in %s while the total is flat (lift %+.1f%%); heterogeneity Q = %.1f on %d df, I² = %.0f%%, p = %.2g adjusted across %d discovered property × metric tests of the pass; values tested at %.3g (%d of %d properties selected); %d properties tried for %s",
				f.prop, strings.Join(up, ", "), strings.Join(down, ", "), 100*deref(t.Lift), f.het.Q, f.het.DF, 100*f.het.I2,
				f.adjustedP, len(fams), f.level, countTrue(sel.Selected), len(fams), f.tried, f.flag)}
		if f.totalOut.Control.Mean != nil {
			div.ControlMean = *f.totalOut.Control.Mean
		}
		rows = append(rows, div)
	}
	return rows, props
}

func verdictWord(selected bool) string {
	if selected {
		return alert.EffectDiffers
	}
	return alert.NoEvidence
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// configuredHeterogeneity is the heterogeneity row of a configured property: Cochran's
// Q at α on its own (a configured segment is a hypothesis the team wrote down, not one
// of many tried).
func configuredHeterogeneity(flag, metric, prop string, variant evaluate.Result, out evaluate.Output, rows []Row, tried int, alpha float64) Row {
	var effects []stats.SegmentEffect
	for _, r := range rows {
		if r.Variant == variant.Variant && r.SE > 0 {
			effects = append(effects, stats.SegmentEffect{Value: r.Segment.ValueString(), Lift: r.Lift, SE: r.SE})
		}
	}
	h := stats.Heterogeneity(effects)
	return Row{Flag: flag, Metric: metric, Segment: &Segment{Property: prop}, Variant: variant.Variant, N: variant.N,
		ControlN: out.Control.N, P: h.P, Decision: Heterogeneity, PropertiesTried: tried, Correction: "none (configured segment)",
		Reason: fmt.Sprintf("%s: Q = %.1f on %d df (p = %.2g, I² = %.0f%%), configured, at α = %g: %s; %d properties tried for %s",
			prop, h.Q, h.DF, h.P, 100*h.I2, alpha, verdictWord(h.DF > 0 && h.P < alpha), tried, flag)}
}

// hetOf is the heterogeneity test of one variant's value rows.
func hetOf(rows []Row) stats.HeterogeneityResult {
	var effects []stats.SegmentEffect
	for _, r := range rows {
		if r.SE > 0 {
			effects = append(effects, stats.SegmentEffect{Value: r.Segment.ValueString(), Lift: r.Lift, SE: r.SE})
		}
	}
	return stats.Heterogeneity(effects)
}

// segmentSeries is one segment value's exposure-day cohort series for a metric and test
// variant: per day, the value's lift minus the lift of the rest of the flag's users.
type segmentSeries struct {
	metric, variant, prop, value string
	discovered                   bool
	points                       []stats.Point // lift of the value's users − lift of the others
	lifts                        []float64     // the value's own lift
	days                         []string
}

// segmentShifts runs the behaviour-shift detector over the exposure-day cohorts of
// every analysed segment value, configured or discovered. What it watches is the
// segment's own change: per cohort, the lift of the value's users minus the lift of the
// other users first exposed that day (independent users, so the SEs add in
// quadrature). A change of every user's lift is the whole flag's shift, reported once
// by shifts; a segment that turns while the others do not is reported here, even when
// it also moves the total.
//
// S series tested together get the CUSUM threshold of an in-control ARL S times the
// single series' (stats.CUSUMThreshold), so the flag's segment series together raise a
// false alarm about as rarely as its one total series does — the "same false-alarm
// control across all series tested". One value turning also moves every other value of
// the property relative to its rest (by its share of that rest), so per property,
// metric and variant only the value whose change is clearest is reported; dropping
// alarms never adds false ones.
func (a *Analyzer) segmentShifts(m *monitor, props []property, cells map[cellKey]*cell, tried int) []Row {
	d := a.Monitors.Defaults
	if len(m.variants) < 2 {
		return nil
	}
	// The flag's exposure-day cells and its values' cohort cells, by day and variant,
	// found once for every metric.
	variantIdx := map[string]int{}
	for i, v := range m.variants {
		variantIdx[v] = i
	}
	dayIdx := map[string]int{}
	var order []string
	for _, k := range m.keys {
		if k.segProp == ExposureDay {
			if _, ok := dayIdx[k.segValue]; !ok {
				dayIdx[k.segValue] = 0
				order = append(order, k.segValue)
			}
		}
	}
	if len(order) < minShiftPoints {
		return nil
	}
	sort.Strings(order)
	for i, day := range order {
		dayIdx[day] = i
	}
	grid := func() [][]*cell {
		g := make([][]*cell, len(order))
		for i := range g {
			g[i] = make([]*cell, len(m.variants))
		}
		return g
	}
	dayCells := grid()
	cohorts := map[[2]string][][]*cell{} // (property, value) → day → variant
	for _, k := range m.keys {
		vi, ok := variantIdx[k.variant]
		if !ok {
			continue
		}
		switch {
		case k.segProp == ExposureDay:
			dayCells[dayIdx[k.segValue]][vi] = cells[k]
		case strings.HasPrefix(k.segProp, crossPrefix):
			day, val, _ := strings.Cut(k.segValue, "/")
			di, ok := dayIdx[day]
			if !ok {
				continue
			}
			key := [2]string{k.segProp[len(crossPrefix):], val}
			if cohorts[key] == nil {
				cohorts[key] = grid()
			}
			cohorts[key][di][vi] = cells[k]
		}
	}
	minUsers := int64(d.MinUsersPerVariant)
	pre := d.PrePeriod > 0
	var series []segmentSeries
	for _, mp := range m.metrics {
		kind := stats.Kind(mp.cfg.Kind)
		lift := func(c, t stats.Moments) (stats.Point, bool) {
			if c.N < minUsers || t.N < minUsers {
				return stats.Point{}, false
			}
			e, err := stats.RelativeLift(kind, c, t)
			if err != nil {
				return stats.Point{}, false
			}
			return stats.Point{Value: e.Lift, SE: e.SE}, true
		}
		of := func(c *cell) stats.Moments {
			if c == nil {
				return stats.Moments{}
			}
			return momentsOf(c, mp, pre)
		}
		// The flag's day cohorts, once per metric: every value's rest is taken from them.
		days := make([][]stats.Moments, len(order))
		for di := range days {
			days[di] = make([]stats.Moments, len(m.variants))
			for vi, c := range dayCells[di] {
				days[di][vi] = of(c)
			}
		}
		// rest is the day's cohort of a variant less the segment's part of it.
		rest := func(all stats.Moments, seg stats.Moments) stats.Moments {
			if all.N == 0 || all.N < seg.N {
				return stats.Moments{}
			}
			return minus(all, seg)
		}
		for vi := 1; vi < len(m.variants); vi++ {
			for _, p := range props {
				for _, val := range p.values {
					g := cohorts[[2]string{p.name, val}]
					if g == nil {
						continue
					}
					s := segmentSeries{metric: mp.cfg.Name, variant: m.variants[vi], prop: p.name, value: val, discovered: p.discovered}
					for di, day := range order {
						c, t := of(g[di][0]), of(g[di][vi])
						own, ok := lift(c, t)
						if !ok {
							continue
						}
						others, ok := lift(rest(days[di][0], c), rest(days[di][vi], t))
						if !ok {
							continue
						}
						s.points = append(s.points, stats.Point{Value: own.Value - others.Value, SE: math.Hypot(own.SE, others.SE)})
						s.lifts = append(s.lifts, own.Value)
						s.days = append(s.days, day)
					}
					if len(s.points) >= minShiftPoints {
						series = append(series, s)
					}
				}
			}
		}
	}
	if len(series) == 0 {
		return nil
	}
	arl := stats.CUSUMARL(stats.DefaultShiftK, stats.DefaultShiftH, 0) / 2
	cfg := stats.ShiftConfig{H: stats.CUSUMThreshold(stats.DefaultShiftK, float64(len(series))*arl)}
	type alarm struct {
		s    segmentSeries
		sh   stats.Shift
		from int
		chg  change
	}
	best := map[string]alarm{}
	var keys []string
	for _, s := range series {
		sh, err := stats.DetectShift(s.points, cfg)
		if err != nil || !sh.Detected {
			continue
		}
		from := max(sh.Start, 1)
		al := alarm{s: s, sh: sh, from: from, chg: changeAt(s.points, from)}
		k := s.metric + "|" + s.variant + "|" + s.prop
		prev, seen := best[k]
		if !seen {
			keys = append(keys, k)
		}
		if !seen || al.chg.z() > prev.chg.z() {
			best[k] = al
		}
	}
	var rows []Row
	for _, k := range keys {
		al := best[k]
		s := al.s
		dir := "rose"
		if al.sh.Direction < 0 {
			dir = "fell"
		}
		value := s.value
		rows = append(rows, Row{Flag: m.flag.Key, Metric: s.metric, Segment: &Segment{Property: s.prop, Value: &value},
			Variant: s.variant, Decision: alert.BehaviourShift, Lift: s.lifts[len(s.lifts)-1],
			Discovered: s.discovered, PropertiesTried: tried,
			Reason: fmt.Sprintf("in %s = %s, the lift of users first exposed from %s on %s relative to the other users' (by %s; CUSUM over %d daily cohorts, threshold h = %.1f so that the flag's %d segment series together raise a false alarm once per ≈%.0f days): %s",
				PropertyName(s.prop), s.value, s.days[al.from], dir, signedPoints(al.chg.delta), len(s.points), cfg.H, len(series), arl, al.sh.Reason)})
	}
	return rows
}

// change is the difference of a series' precision-weighted means after and before a
// point, with its standard error.
type change struct{ delta, se float64 }

func (c change) z() float64 {
	if c.se == 0 {
		return 0
	}
	return math.Abs(c.delta) / c.se
}

// changeAt is the change of points at index from; points with SE 0 are missing.
func changeAt(points []stats.Point, from int) change {
	mean := func(ps []stats.Point) (float64, float64) {
		var sw, swx float64
		for _, p := range ps {
			if p.SE > 0 {
				w := 1 / (p.SE * p.SE)
				sw += w
				swx += w * p.Value
			}
		}
		if sw == 0 {
			return 0, 0
		}
		return swx / sw, 1 / sw
	}
	if from <= 0 || from >= len(points) {
		return change{}
	}
	b, vb := mean(points[:from])
	a, va := mean(points[from:])
	if vb == 0 || va == 0 {
		return change{}
	}
	return change{delta: a - b, se: math.Sqrt(va + vb)}
}

// signedPoints prints a change of a relative lift in percentage points: +12 pp, −60 pp.
func signedPoints(x float64) string {
	v := math.Round(100 * x)
	if v < 0 {
		return fmt.Sprintf("−%.0f pp", -v)
	}
	return fmt.Sprintf("+%.0f pp", v)
}
