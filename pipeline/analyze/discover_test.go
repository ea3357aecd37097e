package analyze

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Property discovery on Go-built cells: simulated users, each with properties, an
// exposure day and a conversion drawn from planted rates, summed into the cells the pass
// query would return — so each test below can run a hundred passes in a second.

// simProp is one property of simulated users: its values and their shares.
type simProp struct {
	name   string
	values []string
	shares []float64
}

// simFlag is one simulated flag: its users are drawn from props; rate gives a user's
// conversion probability from its variant, property values and exposure day.
type simFlag struct {
	key   string
	users int
	days  int
	props []simProp
	rate  func(variant string, vals map[string]string, day int) float64
	// value, when set, draws a user's metric value instead of a 0/1 conversion (a count
	// or sum metric); rate is then unused.
	value func(rng *rand.Rand, variant string, vals map[string]string, day int) float64
}

// simReader is a passReader over simulated flags; each pass draws new users (a new
// experiment) unless fixed is set.
type simReader struct {
	flags []simFlag
	rng   *rand.Rand
	h     *history
}

var simStart = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

func simDay(d int) string { return simStart.AddDate(0, 0, d).Format("2006-01-02") }

func (r *simReader) activity(context.Context) (map[string]*flagInfo, error) {
	out := map[string]*flagInfo{}
	for _, f := range r.flags {
		out[f.key] = &flagInfo{firstMs: decideNow.AddDate(0, 0, -20).UnixMilli(), lastMs: decideNow.Add(-time.Minute).UnixMilli()}
	}
	return out, nil
}

func (r *simReader) history(context.Context) (*history, error) {
	if r.h != nil {
		return r.h, nil
	}
	return &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{}}, nil
}

// cells sums the users into the plan's cells: the whole flag, each exposure day, and
// every property of the users (as if the plan extracted them all), each value and its
// exposure-day cohorts. Every measure of the plan is the user's 0/1 conversion, or the
// flag's drawn value.
func (r *simReader) cells(_ context.Context, p *plan, ratioPairs [][2]int, _ string) (map[cellKey]*cell, error) {
	out := map[cellKey]*cell{}
	type acc struct{ n, conv, sq float64 }
	put := func(k cellKey, a acc) {
		if a.n == 0 {
			return
		}
		c := &cell{n: uint64(a.n), m: make([]moments, len(p.measures)), ratios: make([]float64, len(ratioPairs)), bad: make([]float64, len(p.measures))}
		for i := range c.m {
			c.m[i] = moments{sum: a.conv, sumSq: a.sq}
		}
		out[k] = c
	}
	add := func(a *acc, b acc) { a.n, a.conv, a.sq = a.n+b.n, a.conv+b.conv, a.sq+b.sq }
	variants := []string{"control", "test"}
	for _, f := range r.flags {
		// n, Σx and Σx² per variant × day × (property, value), counted by index.
		total := make([][]acc, 2)
		byValue := make([][][][]acc, 2)
		for v := range 2 {
			total[v] = make([]acc, f.days)
			byValue[v] = make([][][]acc, f.days)
			for d := range f.days {
				byValue[v][d] = make([][]acc, len(f.props))
				for j, pr := range f.props {
					byValue[v][d][j] = make([]acc, len(pr.values))
				}
			}
		}
		vals := map[string]string{}
		idx := make([]int, len(f.props))
		for range f.users {
			v := r.rng.IntN(2)
			day := r.rng.IntN(f.days)
			for j, pr := range f.props {
				u := r.rng.Float64()
				idx[j] = len(pr.values) - 1
				for i, s := range pr.shares {
					if u < s {
						idx[j] = i
						break
					}
					u -= s
				}
				vals[pr.name] = pr.values[idx[j]]
			}
			var x float64
			switch {
			case f.value != nil:
				x = f.value(r.rng, variants[v], vals, day)
			case r.rng.Float64() < f.rate(variants[v], vals, day):
				x = 1
			}
			u := acc{1, x, x * x}
			add(&total[v][day], u)
			for j := range f.props {
				add(&byValue[v][day][j][idx[j]], u)
			}
		}
		for v, variant := range variants {
			var all acc
			for d := range f.days {
				add(&all, total[v][d])
				put(cellKey{f.key, variant, ExposureDay, simDay(d)}, total[v][d])
			}
			put(cellKey{f.key, variant, "", ""}, all)
			for j, pr := range f.props {
				for i, val := range pr.values {
					var sum acc
					for d := range f.days {
						a := byValue[v][d][j][i]
						add(&sum, a)
						put(crossKey(f.key, variant, pr.name, val, simDay(d)), a)
					}
					put(cellKey{f.key, variant, pr.name, val}, sum)
				}
			}
		}
	}
	return out, nil
}

func simAnalyzer(t testing.TB, monitors string, r *simReader) *Analyzer {
	t.Helper()
	mons, err := config.Parse([]byte(monitors), "sim.yaml")
	require.NoError(t, err)
	return &Analyzer{Monitors: mons, Replica: "sim", Now: func() time.Time { return decideNow }, reader: r, writer: &memWriter{},
		Logger: quietLogger()}
}

const simMonitors = `
defaults: {min_users_per_variant: 100, min_duration: 24h, pre_period: 0s}
core_metrics:
  - {name: purchase conversion, kind: conversion, event: purchase}
`

func countries() simProp {
	return simProp{name: "$geoip_country_code", values: []string{"US", "IN", "GB", "DE", "BR"}, shares: []float64{0.3, 0.2, 0.3, 0.1, 0.1}}
}

func plans() simProp {
	return simProp{name: "plan", values: []string{"free", "pro", "enterprise"}, shares: []float64{0.6, 0.3, 0.1}}
}

func noise() []simProp {
	return []simProp{
		{name: "$browser", values: []string{"Chrome", "Safari", "Firefox", "Edge"}, shares: []float64{0.5, 0.25, 0.15, 0.1}},
		{name: "$os", values: []string{"Mac OS X", "Windows", "iOS", "Android"}, shares: []float64{0.3, 0.3, 0.2, 0.2}},
	}
}

func rowsWith(rows []Row, decision string) []Row {
	var out []Row
	for _, r := range rows {
		if r.Decision == decision {
			out = append(out, r)
		}
	}
	return out
}

// The story's country effect on a flag nobody configured segments for, and a plan
// effect on a second: each is found, named, and alerted once; the properties without an
// effect are tried and stay quiet.
func TestDiscoveryFindsUnconfiguredHeterogeneity(t *testing.T) {
	country := map[string]float64{"US": 1.4, "IN": 1.4, "GB": 1 - (0.3*0.4+0.2*0.4)/0.3} // total flat
	plan := map[string]float64{"pro": 1.6, "enterprise": 1, "free": 1 - 0.3*0.6/0.6}
	r := &simReader{rng: rand.New(rand.NewPCG(16, 1)), flags: []simFlag{
		{key: "new-checkout", users: 60000, days: 1, props: append([]simProp{countries(), plans()}, noise()...),
			rate: func(v string, vals map[string]string, _ int) float64 {
				if m, ok := country[vals["$geoip_country_code"]]; ok && v == "test" {
					return 0.1 * m
				}
				return 0.1
			}},
		{key: "pricing-page", users: 60000, days: 1, props: append([]simProp{countries(), plans()}, noise()...),
			rate: func(v string, vals map[string]string, _ int) float64 {
				if v == "test" {
					return 0.1 * plan[vals["plan"]]
				}
				return 0.1
			}},
	}}
	// new-checkout has a rollback: a discovered segment's loss must not call it.
	a := simAnalyzer(t, simMonitors+`flags:
  - key: new-checkout
    rollback: {webhook: {url: "https://hooks.example.com/x", secret_env: S}}
`, r)
	rollbacks := 0
	a.rollbacks = func(context.Context, *config.Rollback, *alert.Alert) *alert.Rollback {
		rollbacks++
		return &alert.Rollback{Action: "webhook", Status: "ok"}
	}
	pass, err := a.Run(context.Background())
	require.NoError(t, err)
	require.Zero(t, rollbacks, "a discovered segment never rolls back")

	want := map[string]string{"new-checkout": "$geoip_country_code", "pricing-page": "plan"}
	divs := rowsWith(pass.Rows, alert.SegmentDivergence)
	require.Len(t, divs, 2, "%+v", divs)
	for _, d := range divs {
		require.Equal(t, want[d.Flag], d.Segment.Property, "named: %+v", d)
		require.True(t, d.Discovered)
		require.Equal(t, 4, d.PropertiesTried, "country, plan, browser and OS were tried")
		require.Contains(t, d.Reason, "found by property discovery")
		total := rowOf(pass.Rows, d.Flag, "purchase conversion", alert.Inconclusive, "")
		require.NotNil(t, total, "%s: the total is flat", d.Flag)
		require.Equal(t, 4, total.PropertiesTried)
	}
	require.NotNil(t, rowOf(pass.Rows, "new-checkout", "purchase conversion", alert.Loss, "$geoip_country_code=GB"), "GB loses")
	require.NotNil(t, rowOf(pass.Rows, "pricing-page", "purchase conversion", alert.Win, "plan=pro"), "pro wins")
	for _, row := range pass.Rows {
		if row.Segment != nil && row.Segment.Value != nil && (row.Segment.Property == "$browser" || row.Segment.Property == "$os") {
			require.True(t, row.Discovered)
			require.NotContains(t, []string{alert.Win, alert.Loss}, row.Decision, "no effect by %s: %+v", row.Segment.Property, row)
		}
	}
	// One heterogeneity row per flag × property × test variant, the noise not selected.
	het := rowsWith(pass.Properties, Heterogeneity)
	require.Len(t, het, 8)
	for _, h := range het {
		require.Equal(t, h.Segment.Property == want[h.Flag], h.P < 0.05, "%+v", h)
		require.Contains(t, h.Reason, "4 properties tried for "+h.Flag)
	}

	// One incident per flag, the divergence its headline, named and marked discovered.
	require.Len(t, pass.Alerts, 2)
	for _, al := range pass.Alerts {
		require.Equal(t, alert.SegmentDivergence, al.Decision, al.Summary)
		f := al.Findings[0]
		require.True(t, f.Discovered)
		require.Equal(t, 4, f.Numbers.PropertiesTried)
		require.Equal(t, want[al.Flag], f.Segment.Property)
		require.True(t, strings.HasPrefix(al.Summary, "the effect of "+al.Flag+" on purchase conversion differs by "+PropertyName(want[al.Flag])+": "), al.Summary)
		require.Contains(t, al.Summary, "found by property discovery (4 properties tried)")
		require.True(t, strings.HasPrefix(al.Action, "Target it: ship to "), al.Action)
	}
	require.Contains(t, pass.Alerts[0].Action, "not to GB")
	require.Equal(t, alert.Warning, pass.Alerts[0].Severity)

	// The next pass (new users, same effects) finds the same and sends nothing: the
	// findings were emitted once.
	h := &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{}}
	for _, e := range a.writer.(*memWriter).alerts {
		h.emitted[e.dedupKey] = logged{emittedMs: decideNow.UnixMilli(), severity: e.severity}
	}
	r.h = h
	pass, err = a.Run(context.Background())
	require.NoError(t, err)
	require.Len(t, rowsWith(pass.Rows, alert.SegmentDivergence), 2)
	require.Empty(t, pass.Alerts, "alerted once")

	// auto_segments: false turns it off: nothing is tried, nothing found.
	a = simAnalyzer(t, simMonitors+"flags:\n  - {key: new-checkout, auto_segments: false}\n", r)
	r.h = nil
	pass, err = a.Run(context.Background())
	require.NoError(t, err)
	for _, row := range pass.Rows {
		if row.Flag == "new-checkout" {
			require.Nil(t, row.Segment, "%+v", row)
			require.Zero(t, row.PropertiesTried)
		}
	}
	require.Len(t, rowsWith(pass.Rows, alert.SegmentDivergence), 1, "the other flag still has discovery")
}

// An A/A flag with 20 candidate properties, over 100 simulated experiments: the share of
// passes with any discovered divergence — or any discovered segment win or loss — stays
// within the false-discovery level, and so does the share of passes in which any
// property is selected as heterogeneous at all (the FDR-controlled step itself). Every
// test of such a pass is a true null, where the FDR is the probability of any false
// discovery, so its bound is α plus three standard errors of a proportion over 100
// passes.
func TestDiscoveryAAStaysQuiet(t *testing.T) {
	props := aaProps()
	r := &simReader{rng: rand.New(rand.NewPCG(16, 2)), flags: []simFlag{{key: "aa", users: 12000, days: 1, props: props,
		rate: func(string, map[string]string, int) float64 { return 0.2 }}}}
	a := simAnalyzer(t, simMonitors, r)
	const passes = 100
	c := runAA(t, a, passes)
	noisy, selected, tried := c.noisy, c.selected, c.tried
	require.Equal(t, 20, tried, "all 20 properties tried")
	alpha := a.Monitors.Defaults.Alpha
	bound := alpha + 3*math.Sqrt(alpha*(1-alpha)/passes)
	t.Logf("A/A passes with a discovered finding: %d of %d; with a property selected as heterogeneous: %d (bound %.3f each)", noisy, passes, selected, bound)
	require.LessOrEqual(t, float64(noisy)/passes, bound)
	require.LessOrEqual(t, float64(selected)/passes, bound)
}

// The same for skewed count metrics — half the users none, the others a log-normal
// count — where tests built on normal approximations are the first to go wrong: over 100
// A/A experiments with 20 candidate properties, passes with any discovered finding, with
// a property selected as heterogeneous, or with any property value reported as correlated
// with the metric stay within α plus three standard errors. Two shapes: σ = 0.8 on the
// log scale as it is, and σ = 1.2 — whose correlation rows, uncapped, report a false
// correlation in about a fifth of passes — capped at its 99.9th percentile (50), as
// `cap: 50` does in the pass query (TestJoinExactUnderAnyDelivery checks the query
// caps). docs/statistics.md, "Heavy-tailed metrics".
func TestDiscoveryAAStaysQuietOnSkewedCounts(t *testing.T) {
	props := aaProps()
	for _, tc := range []struct {
		name       string
		sigma, cap float64
	}{{"σ=0.8", 0.8, math.Inf(1)}, {"σ=1.2 capped at 50", 1.2, 50}} {
		t.Run(tc.name, func(t *testing.T) {
			pageviews := func(rng *rand.Rand, _ string, _ map[string]string, _ int) float64 {
				if rng.Float64() < 0.5 {
					return 0
				}
				return math.Min(tc.cap, math.Floor(math.Exp(0.5+tc.sigma*rng.NormFloat64())))
			}
			r := &simReader{rng: rand.New(rand.NewPCG(16, 7)), flags: []simFlag{{key: "aa", users: 12000, days: 1, props: props, value: pageviews}}}
			a := simAnalyzer(t, `
defaults: {min_users_per_variant: 100, min_duration: 24h, pre_period: 0s}
core_metrics:
  - {name: pageviews, kind: count, event: $pageview}
`, r)
			const passes = 100
			c := runAA(t, a, passes)
			require.Equal(t, passes, c.withCorrelations, "every pass has correlation rows")
			noisy, selected, correlated, tried := c.noisy, c.selected, c.correlated, c.tried
			require.Equal(t, 20, tried, "all 20 properties tried")
			alpha := a.Monitors.Defaults.Alpha
			bound := alpha + 3*math.Sqrt(alpha*(1-alpha)/passes)
			t.Logf("A/A passes on a skewed count with a discovered finding: %d of %d; a property selected as heterogeneous: %d; a value correlated: %d (bound %.3f each)",
				noisy, passes, selected, correlated, bound)
			require.LessOrEqual(t, float64(noisy)/passes, bound)
			require.LessOrEqual(t, float64(selected)/passes, bound)
			require.LessOrEqual(t, float64(correlated)/passes, bound)
		})
	}
}

// aaProps are the A/A tests' 20 candidate properties, with 2 to 5 equally common values.
func aaProps() []simProp {
	var props []simProp
	for i := range 20 {
		k := 2 + i%4
		p := simProp{name: fmt.Sprintf("prop_%02d", i)}
		for j := range k {
			p.values = append(p.values, fmt.Sprintf("v%d", j))
			p.shares = append(p.shares, 1/float64(k))
		}
		props = append(props, p)
	}
	return props
}

// aaCounts are what an A/A Monte-Carlo counts over its passes.
type aaCounts struct {
	noisy            int // passes with a discovered divergence, win, loss or breach
	selected         int // passes with a property selected as heterogeneous
	correlated       int // passes with a value reported as correlated
	withCorrelations int // passes with any correlation row
	tried            int // properties tried, as the last pass's total rows say
}

// runAA runs passes passes of a (each a new simulated experiment) and counts them; every
// pass must have one heterogeneity row per candidate property.
func runAA(t *testing.T, a *Analyzer, passes int) aaCounts {
	t.Helper()
	var c aaCounts
	for range passes {
		pass, err := a.Run(context.Background())
		require.NoError(t, err)
		het := rowsWith(pass.Properties, Heterogeneity)
		require.Len(t, het, 20)
		if slices.ContainsFunc(het, func(h Row) bool { return h.P < a.Monitors.Defaults.Alpha }) {
			c.selected++
		}
		corr := rowsWith(pass.Properties, Correlation)
		if len(corr) > 0 {
			c.withCorrelations++
		}
		if slices.ContainsFunc(corr, func(r Row) bool { return strings.HasPrefix(r.Reason, "correlated:") }) {
			c.correlated++
		}
		found := len(rowsWith(pass.Rows, alert.SegmentDivergence)) > 0
		for _, row := range pass.Rows {
			if row.Discovered && (row.Decision == alert.Win || row.Decision == alert.Loss || row.Decision == alert.GuardrailBreach) {
				found = true
			}
			if row.Segment == nil && row.Metric != "" {
				c.tried = row.PropertiesTried
			}
		}
		if found {
			c.noisy++
		}
	}
	return c
}

// plan = enterprise converts three times as often in both arms: a correlation with the
// metric, reported as such (in both variants, with an interval above zero), and not a
// divergence — the flag does the same to everyone.
func TestCorrelationIsNotDivergence(t *testing.T) {
	r := &simReader{rng: rand.New(rand.NewPCG(16, 3)), flags: []simFlag{{key: "onboarding", users: 40000, days: 1,
		props: append([]simProp{plans()}, noise()...),
		rate: func(_ string, vals map[string]string, _ int) float64 {
			if vals["plan"] == "enterprise" {
				return 0.3
			}
			return 0.1
		}}}}
	a := simAnalyzer(t, simMonitors, r)
	pass, err := a.Run(context.Background())
	require.NoError(t, err)
	require.Empty(t, rowsWith(pass.Rows, alert.SegmentDivergence))
	for _, row := range pass.Rows {
		if row.Segment != nil && row.Segment.Value != nil {
			require.NotContains(t, []string{alert.Win, alert.Loss}, row.Decision, "%+v", row)
		}
	}
	var enterprise []Row
	for _, c := range rowsWith(pass.Properties, Correlation) {
		if c.Segment.Property == "plan" && *c.Segment.Value == "enterprise" {
			enterprise = append(enterprise, c)
			continue
		}
		if c.Segment.Property != "plan" {
			require.True(t, strings.HasPrefix(c.Reason, "not correlated"), "%+v", c)
		}
	}
	require.Len(t, enterprise, 2, "one per variant")
	for _, c := range enterprise {
		require.True(t, strings.HasPrefix(c.Reason, "correlated: plan = enterprise vs the rest of "+c.Variant), c.Reason)
		require.Less(t, c.P, 0.05)
		require.Greater(t, c.CI[0], 0.0, "the interval is above zero")
		require.Greater(t, c.Lift, 1.0, "enterprise converts more than twice as often as the rest")
		require.InDelta(t, c.Mean/c.ControlMean-1, c.Lift, 1e-9)
		require.True(t, c.Discovered)
	}
	for _, h := range rowsWith(pass.Properties, Heterogeneity) {
		if h.Segment.Property == "plan" {
			require.GreaterOrEqual(t, h.P, 0.05, "the effect does not differ by plan: %+v", h)
		}
	}
}

// GB's effect flips from +50% to −33% for users first exposed from day 7 of 14: one
// behaviour_shift names GB and a cohort at the change; the other countries stay quiet.
// The same holds when the country is a configured segment.
func TestSegmentBehaviourShift(t *testing.T) {
	for _, monitors := range []string{simMonitors, simMonitors + "flags:\n  - {key: promo, segments: [$geoip_country_code]}\n"} {
		r := &simReader{rng: rand.New(rand.NewPCG(16, 4)), flags: []simFlag{{key: "promo", users: 140000, days: 14,
			props: []simProp{countries()},
			rate: func(v string, vals map[string]string, day int) float64 {
				if v == "test" && vals["$geoip_country_code"] == "GB" {
					if day < 7 {
						return 0.2 * 1.5
					}
					return 0.2 * 0.67
				}
				return 0.2
			}}}}
		a := simAnalyzer(t, monitors, r)
		pass, err := a.Run(context.Background())
		require.NoError(t, err)
		var segs []Row
		for _, row := range rowsWith(pass.Rows, alert.BehaviourShift) {
			if row.Segment != nil && row.Segment.Value != nil {
				segs = append(segs, row)
			}
		}
		require.Len(t, segs, 1, "%+v", segs)
		s := segs[0]
		require.Equal(t, "$geoip_country_code", s.Segment.Property)
		require.Equal(t, "GB", *s.Segment.Value)
		require.Contains(t, s.Reason, "fell")
		first := strings.SplitN(strings.SplitN(s.Reason, "first exposed from ", 2)[1], " ", 2)[0]
		day, err := time.Parse("2006-01-02", first)
		require.NoError(t, err, s.Reason)
		require.InDelta(t, 7, day.Sub(simStart).Hours()/24, 1, "the first changed cohort: %s", s.Reason)
		require.Less(t, s.Lift, 0.0, "now negative")
		f := a.finding(s, nil, pass.Rows)
		require.Contains(t, f.Summary, "in country = GB")
	}
}

// The A/A flag's segment series — 5 properties × 3 values over 10 daily cohorts — over
// 100 simulated experiments: runs with a segment behaviour_shift stay within the
// stated false-alarm rate, one alarm per ≈1,290 days for the flag's segment series
// together, i.e. at most 10/1,290 per 10-day run, plus three standard errors.
func TestSegmentShiftAAStaysQuiet(t *testing.T) {
	var props []simProp
	for i := range 5 {
		props = append(props, simProp{name: fmt.Sprintf("prop_%d", i), values: []string{"a", "b", "c"}, shares: []float64{0.4, 0.3, 0.3}})
	}
	r := &simReader{rng: rand.New(rand.NewPCG(16, 5)), flags: []simFlag{{key: "aa", users: 40000, days: 10, props: props,
		rate: func(string, map[string]string, int) float64 { return 0.2 }}}}
	a := simAnalyzer(t, simMonitors, r)
	const runs = 100
	alarms, series := 0, 0
	for range runs {
		pass, err := a.Run(context.Background())
		require.NoError(t, err)
		for _, row := range rowsWith(pass.Rows, alert.BehaviourShift) {
			if row.Segment != nil && row.Segment.Value != nil {
				alarms++
				break
			}
		}
		series++
	}
	rate := 10.0 / 1286
	bound := rate + 3*math.Sqrt(rate*(1-rate)/runs)
	t.Logf("A/A runs with a segment behaviour shift: %d of %d (bound %.3f)", alarms, series, bound)
	require.LessOrEqual(t, float64(alarms)/runs, bound)
}

// preselect: the plan extracts properties set on enough of a flag's exposures with a
// bounded number of frequent values; identifiers, per-event properties, flag
// assignments and configured segments are never candidates; values too rare to ever
// have the minimum users in two variants are folded in SQL.
func TestPreselect(t *testing.T) {
	st := setStats{
		total: map[string]float64{"f": 10000, "g": 5000, "off": 10000},
		byProp: map[string]map[string]float64{
			"f": {"plan": 10000, "$browser": 9000, "rare": 1000, "$current_url": 10000, "org_id": 10000,
				"$feature/g": 10000, "configured": 10000, "one": 10000, "many": 10000},
			"g":   {"$os": 5000},
			"off": {"$device_type": 10000},
		},
		values: map[string]map[string][]valueCount{
			"f": {
				"plan":         {{"free", 7000}, {"pro", 2500}}, // enterprise (500) is folded
				"$browser":     {{"Chrome", 6000}, {"Safari", 3000}},
				"rare":         {{"x", 1000}},
				"$current_url": {{"/", 5000}, {"/pricing", 5000}},
				"org_id":       {{"o1", 5000}, {"o2", 5000}},
				"$feature/g":   {{"control", 5000}, {"test", 5000}},
				"configured":   {{"a", 5000}, {"b", 5000}},
				"one":          {{"only", 10000}},
			},
			"g":   {"$os": {{"iOS", 3000}, {"Android", 2000}}},
			"off": {"$device_type": {{"Desktop", 6000}, {"Mobile", 4000}}},
		},
	}
	for i := range 101 { // more than 2·50 frequent values
		st.values["f"]["many"] = append(st.values["f"]["many"], valueCount{fmt.Sprint(i), 99})
	}
	d := discovery{caps: map[string]int{"f": 20, "g": 20}, values: 50, coverage: 0.2, minUsers: 100}
	got := preselect(st, d, []string{"configured", ExposureDay})
	require.Equal(t, []discoveredProp{
		{Name: "$browser", Values: []string{"Chrome", "Safari"}},
		{Name: "$os", Values: []string{"Android", "iOS"}},
		{Name: "plan", Values: []string{"free", "pro"}},
	}, got, "rare covers 10%% (< half of 20%%); one has one group; many has too many values; off has discovery off")

	d.caps = map[string]int{"f": 1}
	require.Equal(t, []discoveredProp{{Name: "$browser", Values: []string{"Chrome", "Safari"}}, {Name: "plan", Values: []string{"free", "pro"}}},
		preselect(st, d, []string{"configured"}), "each flag brings its 2·auto_segments_max best covered")
}
