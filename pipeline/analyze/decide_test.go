package analyze

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

// The decision paths of a pass, table by table, without ClickHouse: a fake reader hands
// the analyzer cells built from per-arm conversion counts (a conversion's sufficient
// statistics are its count: Σx = Σx² = converted users), and every expectation is a
// decision or a reason, never a number copied from a run.

const decideMonitors = `
defaults: {min_users_per_variant: 100, min_duration: 24h, pre_period: 0s}
core_metrics:
  - {name: purchase conversion, kind: conversion, event: purchase}
flags:
  - key: checkout
    control: control
    segments: [country]
    metrics:
      - {name: errors, kind: conversion, event: $exception, goal: decrease, guardrail: {max_increase: 0.30}}
  - key: split-flag
    control: control
    split: {control: 0.5, test: 0.5}
  - key: revenue-flag
    control: control
    metrics:
      - {name: revenue, kind: sum, event: purchase, property: revenue}
  - key: rolling
    control: control
    split: {control: 0.5, test: 0.5}
    metrics:
      - {name: errors, kind: conversion, event: $exception, guardrail: {max_increase: 0.30}}
    rollout:
      webhook: {url: "https://flags.example.com/flagwatch", secret_env: FLAGS_HMAC}
`

// arm is one (variant, segment value) cell's data: n users, and per metric name the
// users who converted (for the sum metric: the users' total, each user's value being
// conv/n… kept simple as a 0/1 conversion with the same counts).
type arm struct {
	variant, country string
	n                int
	conv             map[string]int
	bad              map[string]float64
}

type fakeReader struct {
	infos map[string]*flagInfo
	arms  map[string][]arm // per flag
	h     *history
}

func (f *fakeReader) activity(context.Context) (map[string]*flagInfo, error) {
	out := map[string]*flagInfo{}
	for k, v := range f.infos {
		c := *v
		out[k] = &c
	}
	return out, nil
}

func (f *fakeReader) history(context.Context) (*history, error) {
	if f.h != nil {
		return f.h, nil
	}
	return &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{}}, nil
}

// cells builds the plan's cells from the arms: the whole flag, and each country.
func (f *fakeReader) cells(_ context.Context, p *plan, ratioPairs [][2]int, _ string) (map[cellKey]*cell, error) {
	out := map[cellKey]*cell{}
	add := func(k cellKey, a arm) {
		c := out[k]
		if c == nil {
			c = &cell{m: make([]moments, len(p.measures)), ratios: make([]float64, len(ratioPairs)), bad: make([]float64, len(p.measures))}
			out[k] = c
		}
		c.n += uint64(a.n)
		for i, m := range p.measures {
			x := float64(a.conv[m.event])
			c.m[i].sum += x
			c.m[i].sumSq += x // 0/1 values
			c.bad[i] += a.bad[m.event]
		}
	}
	for flag, arms := range f.arms {
		for _, a := range arms {
			add(cellKey{flag, a.variant, "", ""}, a)
			if a.country != "" {
				add(cellKey{flag, a.variant, "country", a.country}, a)
			}
		}
	}
	return out, nil
}

type memWriter struct {
	results int
	alerts  []emittedFinding
}

func (w *memWriter) recordResults(_ context.Context, p *Pass) error {
	w.results += len(p.Rows)
	return nil
}
func (w *memWriter) recordAlerts(_ context.Context, _ *Pass, e []emittedFinding) error {
	w.alerts = append(w.alerts, e...)
	return nil
}

var decideNow = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func newDecider(t *testing.T, r *fakeReader) (*Analyzer, *memWriter) {
	t.Helper()
	mons, err := config.Parse([]byte(decideMonitors), "decide.yaml")
	require.NoError(t, err)
	w := &memWriter{}
	rolled := 0
	a := &Analyzer{Monitors: mons, Replica: "t", Now: func() time.Time { return decideNow }, reader: r, writer: w,
		Logger: quietLogger(),
		rollbacks: func(context.Context, *config.Rollback, *alert.Alert) *alert.Rollback {
			rolled++
			return &alert.Rollback{Action: "webhook", Status: "ok"}
		}}
	return a, w
}

func active(days int) *flagInfo {
	return &flagInfo{firstMs: decideNow.AddDate(0, 0, -days).UnixMilli(), lastMs: decideNow.Add(-time.Minute).UnixMilli()}
}

func conv(purchase int, more ...any) map[string]int {
	m := map[string]int{"purchase": purchase}
	for i := 0; i+1 < len(more); i += 2 {
		m[more[i].(string)] = more[i+1].(int)
	}
	return m
}

func rowOf(rows []Row, flag, metric, decision string, seg string) *Row {
	for i, r := range rows {
		s := ""
		if r.Segment != nil {
			s = r.Segment.Property
			if r.Segment.Value != nil {
				s += "=" + *r.Segment.Value
			}
		}
		if r.Flag == flag && r.Metric == metric && r.Decision == decision && s == seg {
			return &rows[i]
		}
	}
	return nil
}

func TestDecisionPaths(t *testing.T) {
	cases := []struct {
		name  string
		flag  string
		info  *flagInfo
		arms  []arm
		check func(t *testing.T, rows []Row)
	}{{
		name: "clear win once the minimum duration has passed",
		flag: "bigger", info: active(3),
		arms: []arm{{variant: "control", n: 10000, conv: conv(1000)}, {variant: "test", n: 10000, conv: conv(1300)}},
		check: func(t *testing.T, rows []Row) {
			r := rowOf(rows, "bigger", "purchase conversion", alert.Win, "")
			require.NotNil(t, r, "%+v", rows)
			require.Greater(t, r.CI[0], 0.0)
			require.Equal(t, int64(10000), r.ControlN)
		},
	}, {
		name: "the same win is withheld before the minimum duration",
		flag: "bigger", info: active(0),
		arms: []arm{{variant: "control", n: 10000, conv: conv(1000)}, {variant: "test", n: 10000, conv: conv(1300)}},
		check: func(t *testing.T, rows []Row) {
			r := rowOf(rows, "bigger", "purchase conversion", alert.InsufficientData, "")
			require.NotNil(t, r)
			require.Contains(t, r.Reason, "minimum duration")
		},
	}, {
		name: "a guardrail breach fires before the minimum duration",
		flag: "checkout", info: active(0),
		arms: []arm{{variant: "control", n: 8000, conv: conv(800, "$exception", 400)}, {variant: "test", n: 8000, conv: conv(800, "$exception", 800)}},
		check: func(t *testing.T, rows []Row) {
			require.NotNil(t, rowOf(rows, "checkout", "errors", alert.GuardrailBreach, ""), "%+v", rows)
		},
	}, {
		name: "sample ratio mismatch against the configured split",
		flag: "split-flag", info: active(3),
		arms: []arm{{variant: "control", n: 10000, conv: conv(1000)}, {variant: "test", n: 9000, conv: conv(900)}},
		check: func(t *testing.T, rows []Row) {
			r := rowOf(rows, "split-flag", "", alert.SRM, "")
			require.NotNil(t, r)
			require.Empty(t, r.Variant)
			require.Less(t, r.P, 0.001)
		},
	}, {
		name: "one exposure with a bogus variant does not blind the flag (#12.4)",
		flag: "checkout", info: active(3),
		arms: []arm{{variant: "control", n: 8000, conv: conv(800, "$exception", 400)}, {variant: "test", n: 8000, conv: conv(800, "$exception", 800)},
			{variant: "bogus", n: 1, conv: conv(0)}},
		check: func(t *testing.T, rows []Row) {
			require.NotNil(t, rowOf(rows, "checkout", "errors", alert.GuardrailBreach, ""), "the real arms are still compared: %+v", rows)
			u := rowOf(rows, "checkout", "", alert.SRM, "")
			require.NotNil(t, u, "the odd variant is reported")
			require.Equal(t, "bogus", u.Variant)
			require.Contains(t, u.Reason, `unexpected variant "bogus"`)
		},
	}, {
		name: "a variant outside the configured split is reported and left out",
		flag: "split-flag", info: active(3),
		arms: []arm{{variant: "control", n: 5000, conv: conv(500)}, {variant: "test", n: 5000, conv: conv(700)}, {variant: "beta", n: 400, conv: conv(40)}},
		check: func(t *testing.T, rows []Row) {
			require.NotNil(t, rowOf(rows, "split-flag", "purchase conversion", alert.Win, ""), "%+v", rows)
			u := rowOf(rows, "split-flag", "", alert.SRM, "")
			require.NotNil(t, u)
			require.Equal(t, "beta", u.Variant)
		},
	}, {
		name: "users outside a progressive rollout (false) are neither an arm nor unexpected",
		flag: "rolling", info: active(3),
		arms: []arm{{variant: "control", n: 500, conv: conv(50)}, {variant: "test", n: 500, conv: conv(70)}, {variant: "false", n: 9000, conv: conv(900)}},
		check: func(t *testing.T, rows []Row) {
			for _, r := range rows {
				require.NotEqual(t, alert.SRM, r.Decision, "%+v", r)
				require.NotEqual(t, "false", r.Variant)
			}
			require.NotNil(t, rowOf(rows, "rolling", "purchase conversion", alert.Inconclusive, ""), "%+v", rows)
		},
	}, {
		name: "at launch an arm with one user is neither compared nor reported",
		flag: "fresh", info: active(0),
		arms: []arm{{variant: "control", n: 3, conv: conv(0)}, {variant: "test", n: 1, conv: conv(0)}},
		check: func(t *testing.T, rows []Row) {
			require.Len(t, rows, 1)
			require.Equal(t, alert.InsufficientData, rows[0].Decision)
		},
	}, {
		name: "an arm too small to compare gives a row saying so, not silence",
		flag: "split-flag", info: active(3),
		arms: []arm{{variant: "control", n: 5000, conv: conv(500)}, {variant: "test", n: 1, conv: conv(0)}},
		check: func(t *testing.T, rows []Row) {
			r := rowOf(rows, "split-flag", "purchase conversion", alert.InsufficientData, "")
			require.NotNil(t, r, "%+v", rows)
			require.Contains(t, r.Reason, "test has 1")
		},
	}, {
		name: "values left out as not finite are counted in the reason (#12.5)",
		flag: "revenue-flag", info: active(3),
		arms: []arm{{variant: "control", n: 5000, conv: conv(500), bad: map[string]float64{"purchase": 2}}, {variant: "test", n: 5000, conv: conv(520), bad: map[string]float64{"purchase": 1}}},
		check: func(t *testing.T, rows []Row) {
			var r *Row
			for i := range rows {
				if rows[i].Metric == "revenue" && rows[i].Segment == nil {
					r = &rows[i]
				}
			}
			require.NotNil(t, r, "the metric keeps its row: %+v", rows)
			require.Contains(t, r.Reason, "3 property values were not finite")
		},
	}, {
		name: "segments diverging while the total is flat",
		flag: "checkout", info: active(5),
		arms: []arm{
			{variant: "control", country: "US", n: 6000, conv: conv(600)}, {variant: "test", country: "US", n: 6000, conv: conv(800)},
			{variant: "control", country: "IN", n: 6000, conv: conv(600)}, {variant: "test", country: "IN", n: 6000, conv: conv(800)},
			{variant: "control", country: "GB", n: 6000, conv: conv(900)}, {variant: "test", country: "GB", n: 6000, conv: conv(500)},
		},
		check: func(t *testing.T, rows []Row) {
			tot := rowOf(rows, "checkout", "purchase conversion", alert.Inconclusive, "")
			require.NotNil(t, tot, "%+v", rows)
			d := rowOf(rows, "checkout", "purchase conversion", alert.SegmentDivergence, "country")
			require.NotNil(t, d)
			require.NotZero(t, d.ControlN, "the divergence carries the total's numbers")
			require.NotEqual(t, [2]float64{}, d.CI)
			require.NotNil(t, rowOf(rows, "checkout", "purchase conversion", alert.Loss, "country=GB"))
			require.NotNil(t, rowOf(rows, "checkout", "purchase conversion", alert.Win, "country=US"))
		},
	}, {
		name: "exposures that stopped make the flag stale",
		flag: "old", info: &flagInfo{firstMs: decideNow.AddDate(0, 0, -9).UnixMilli(), lastMs: decideNow.AddDate(0, 0, -3).UnixMilli()},
		arms: []arm{{variant: "control", n: 500, conv: conv(50)}, {variant: "test", n: 500, conv: conv(50)}},
		check: func(t *testing.T, rows []Row) {
			r := rowOf(rows, "old", "", alert.Stale, "")
			require.NotNil(t, r)
			require.Contains(t, r.Reason, "no exposures for 72h")
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &fakeReader{infos: map[string]*flagInfo{c.flag: c.info}, arms: map[string][]arm{c.flag: c.arms}}
			a, _ := newDecider(t, r)
			pass, err := a.Run(context.Background())
			require.NoError(t, err)
			var mine []Row
			for _, row := range pass.Rows {
				if row.Flag == c.flag {
					mine = append(mine, row)
				}
			}
			c.check(t, mine)
		})
	}
}

// A win the sequential test crossed stays a win on later passes (the guarantee covers the
// first crossing).
func TestLatchedDecisionStays(t *testing.T) {
	r := &fakeReader{infos: map[string]*flagInfo{"bigger": active(3)},
		arms: map[string][]arm{"bigger": {{variant: "control", n: 10000, conv: conv(1000)}, {variant: "test", n: 10000, conv: conv(1010)}}},
		h: &history{latched: map[string]string{"bigger|purchase conversion||test": alert.Win},
			emitted: map[string]logged{}, rolledBack: map[string]bool{}}}
	a, _ := newDecider(t, r)
	pass, err := a.Run(context.Background())
	require.NoError(t, err)
	row := rowOf(pass.Rows, "bigger", "purchase conversion", alert.Win, "")
	require.NotNil(t, row, "%+v", pass.Rows)
	require.Contains(t, row.Reason, "latched win")
}

// The incident of the story's flag: one alert, the divergence as its headline, the
// recommendation to target, every finding below it; the next pass with nothing new
// sends nothing, and a guardrail breach rolls back once and repeats after 4 h.
func TestIncidentPerFlag(t *testing.T) {
	arms := []arm{
		{variant: "control", country: "US", n: 6000, conv: conv(600, "$exception", 300)}, {variant: "test", country: "US", n: 6000, conv: conv(800, "$exception", 300)},
		{variant: "control", country: "IN", n: 6000, conv: conv(600, "$exception", 300)}, {variant: "test", country: "IN", n: 6000, conv: conv(800, "$exception", 300)},
		{variant: "control", country: "GB", n: 6000, conv: conv(900, "$exception", 300)}, {variant: "test", country: "GB", n: 6000, conv: conv(500, "$exception", 300)},
	}
	r := &fakeReader{infos: map[string]*flagInfo{"checkout": active(5)}, arms: map[string][]arm{"checkout": arms}}
	a, w := newDecider(t, r)
	a.PublicURL = "https://flagwatch.example.com/"
	pass, err := a.Run(context.Background())
	require.NoError(t, err)
	require.Len(t, pass.Alerts, 1, "one alert for the flag")
	al := pass.Alerts[0]
	require.Equal(t, alert.SegmentDivergence, al.Decision)
	ci := map[string]string{}
	for _, s := range al.Findings[0].Numbers.Segments {
		ci[s.Value] = interval(s.CI)
	}
	require.Equal(t, "the effect of checkout on purchase conversion differs by country: IN +33% "+ci["IN"]+", US +33% "+ci["US"]+
		", GB −44% "+ci["GB"]+"; the total is flat (±0%)", al.Summary)
	require.Equal(t, "Target it: ship to IN and US, not to GB", al.Action)
	require.Equal(t, "https://flagwatch.example.com/flags/checkout", al.PageURL)
	require.Equal(t, al.Findings[0].DedupKey, al.DedupKey)
	for i := 1; i < len(al.Findings); i++ {
		require.LessOrEqual(t, alert.Priority(al.Findings[i-1].Decision), alert.Priority(al.Findings[i].Decision), "priority order")
	}
	require.Len(t, al.Findings[0].Numbers.Segments, 3)
	for _, f := range al.Findings {
		require.True(t, f.New)
	}
	require.Len(t, w.alerts, len(al.Findings), "each new finding logged once")

	// Next pass, same data: the history has every finding, nothing is sent.
	h := &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{}}
	for _, e := range w.alerts {
		h.emitted[e.dedupKey] = logged{emittedMs: decideNow.UnixMilli(), severity: e.severity}
	}
	r.h = h
	pass, err = a.Run(context.Background())
	require.NoError(t, err)
	require.Empty(t, pass.Alerts)
}

func TestGuardrailRollsBackOnceAndRepeats(t *testing.T) {
	mons := decideMonitors + `    rollback: {webhook: {url: "https://hooks.example.com/x", secret_env: S}}
`
	_ = mons
	arms := []arm{{variant: "control", n: 8000, conv: conv(800, "$exception", 400)}, {variant: "test", n: 8000, conv: conv(800, "$exception", 800)}}
	r := &fakeReader{infos: map[string]*flagInfo{"checkout": active(3)}, arms: map[string][]arm{"checkout": arms}}
	a, w := newDecider(t, r)
	a.Monitors.Flags[0].Rollback = &config.Rollback{Webhook: &config.Webhook{URL: "https://hooks.example.com/x", SecretEnv: "S"}}
	calls := 0
	a.rollbacks = func(context.Context, *config.Rollback, *alert.Alert) *alert.Rollback {
		calls++
		return &alert.Rollback{Action: "webhook", Status: "ok"}
	}
	pass, err := a.Run(context.Background())
	require.NoError(t, err)
	require.Len(t, pass.Alerts, 1)
	require.Equal(t, alert.GuardrailBreach, pass.Alerts[0].Decision)
	require.Equal(t, alert.Critical, pass.Alerts[0].Severity)
	require.True(t, strings.HasPrefix(pass.Alerts[0].Action, "Roll back"), pass.Alerts[0].Action)
	require.Equal(t, 1, calls)

	h := &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{"checkout": true}}
	for _, e := range w.alerts {
		h.emitted[e.dedupKey] = logged{emittedMs: decideNow.UnixMilli(), severity: e.severity}
	}
	r.h = h
	for _, after := range []time.Duration{time.Hour, 3 * time.Hour} {
		at := decideNow.Add(after)
		a.Now = func() time.Time { return at }
		pass, err = a.Run(context.Background())
		require.NoError(t, err)
		require.Empty(t, pass.Alerts, "within the repeat interval")
	}
	at := decideNow.Add(5 * time.Hour)
	a.Now = func() time.Time { return at }
	pass, err = a.Run(context.Background())
	require.NoError(t, err)
	require.Len(t, pass.Alerts, 1, "repeated after 4 h")
	require.Nil(t, pass.Alerts[0].Rollback, "no second rollback")
	require.Equal(t, 1, calls)
}

// Whatever the findings, the recommendation never says to ship while a segment or the
// total of a metric is losing or a guardrail is breached — except to name the segments
// it must not be shipped to.
func TestRecommendationNeverShipsALoser(t *testing.T) {
	decisions := []string{alert.Win, alert.Loss, alert.Inconclusive, alert.GuardrailBreach}
	countries := []string{"US", "IN", "GB", "DE"}
	seed := uint64(1)
	next := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int((seed >> 33) % uint64(n))
	}
	for trial := 0; trial < 3000; trial++ {
		var rows []Row
		for _, metric := range []string{"purchase", "revenue"} {
			lift := float64(next(200)-100) / 100
			rows = append(rows, Row{Flag: "f", Metric: metric, Variant: "test", Decision: decisions[next(len(decisions))], Lift: lift})
			for _, c := range countries[:1+next(len(countries))] {
				v := c
				rows = append(rows, Row{Flag: "f", Metric: metric, Variant: "test", Segment: &Segment{Property: "country", Value: &v},
					Decision: decisions[next(3)], Lift: float64(next(200)-100) / 100})
			}
			if next(4) == 0 {
				rows = append(rows, Row{Flag: "f", Metric: metric, Variant: "test", Segment: &Segment{Property: "country"}, Decision: alert.SegmentDivergence})
			}
		}
		a := &Analyzer{Monitors: &config.Monitors{}}
		var fs []alert.Finding
		for _, r := range rows {
			if alertable[r.Decision] {
				fs = append(fs, a.finding(r, nil, rows))
			}
		}
		if len(fs) == 0 {
			continue
		}
		sortFindings(fs)
		rec := recommend(fs, rows, "f")
		lower := strings.ToLower(rec)
		ships := strings.Contains(lower, "ship it") || strings.Contains(lower, "ship to") || strings.Contains(lower, "shipping to")
		var losing []string
		breach, totalLoss := false, false
		for _, r := range rows {
			switch {
			case r.Decision == alert.GuardrailBreach:
				breach = true
			case r.Decision == alert.Loss && r.Segment == nil:
				totalLoss = true
			case r.Decision == alert.Loss:
				losing = append(losing, *r.Segment.Value)
			}
		}
		msg := fmt.Sprintf("trial %d: %q for %+v", trial, rec, rows)
		if breach || totalLoss {
			require.False(t, ships, msg)
			continue
		}
		if !ships {
			continue
		}
		// Where it ships, nothing loses; where it ships to everyone but some, those
		// include every loser.
		switch {
		case strings.HasPrefix(rec, "Ship it to everyone except "):
			for _, l := range losing {
				require.Contains(t, strings.TrimPrefix(rec, "Ship it to everyone except "), l, msg)
			}
		case rec == "Ship it":
			require.Empty(t, losing, msg)
		default:
			_, target, _ := strings.Cut(rec, "hip to ")
			if i := strings.Index(target, ", not to"); i >= 0 {
				target = target[:i]
			}
			if i := strings.Index(target, ", where"); i >= 0 {
				target = target[:i]
			}
			for _, l := range losing {
				for _, t2 := range strings.FieldsFunc(target, func(r rune) bool { return r == ',' || r == ' ' }) {
					require.NotEqual(t, l, t2, msg)
				}
			}
		}
	}
}

func TestPercentFormatting(t *testing.T) {
	for _, c := range []struct {
		x    float64
		want string
	}{{0.32, "+32%"}, {-0.667, "−67%"}, {0.053, "+5.3%"}, {-0.004, "−0.4%"}, {0, "±0%"}, {math.Copysign(0, -1), "±0%"}, {1.5, "+150%"}} {
		require.Equal(t, c.want, pct(c.x), "%v", c.x)
	}
}
