package web

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/stats"
)

// halfWidth is the always-valid interval's half-width at m users per variant, for a lift
// whose standard error is se at n per variant — computed here from stats directly.
func halfWidth(se float64, n, m int64, alpha, tuning float64) float64 {
	e := stats.Effect{SE: se * math.Sqrt(float64(n)/float64(m)), N: 2 * float64(m)}
	iv := e.Sequential(alpha, tuning)
	return (iv.Hi - iv.Lo) / 2
}

// The estimate is the least number of users at which the interval is as narrow as the
// effect: one user fewer is not enough.
func TestExtraUsersPerVariantIsTheLeastThatSuffices(t *testing.T) {
	for _, tc := range []struct {
		se     float64
		n      int64
		effect float64
	}{
		{0.031, 10000, 0.05}, {0.08, 1500, 0.05}, {0.2, 120, 0.10}, {0.01, 50000, 0.02}, {0.5, 30, 0.05},
	} {
		extra := ExtraUsersPerVariant(tc.se, tc.n, tc.effect, 0.05, 5000)
		require.Positive(t, extra, "%+v", tc)
		m := tc.n + extra
		require.LessOrEqual(t, halfWidth(tc.se, tc.n, m, 0.05, 5000), tc.effect, "%+v at %d", tc, m)
		require.Greater(t, halfWidth(tc.se, tc.n, m-1, 0.05, 5000), tc.effect, "%+v at %d", tc, m-1)
	}
	// Already narrow enough: nothing more to wait for.
	require.Zero(t, ExtraUsersPerVariant(0.001, 100000, 0.05, 0.05, 5000))
	// No standard error: no estimate.
	require.Equal(t, int64(-1), ExtraUsersPerVariant(0, 100, 0.05, 0.05, 5000))
}

func TestRoundUsersUpToTwoDigits(t *testing.T) {
	for in, want := range map[float64]int64{2271: 2300, 2300: 2300, 99: 99, 7: 7, 123456: 130000, 1001: 1100} {
		require.Equal(t, want, roundUsers(in), "%v", in)
	}
}

func TestFormats(t *testing.T) {
	require.Equal(t, "+12.3%", Pct(0.1234))
	require.Equal(t, "−5.0%", Pct(-0.05))
	require.Equal(t, "+0.0%", Pct(-0.00001))
	require.Equal(t, "[−3.1%, +20.9%]", Interval(-0.031, 0.209))
	require.Equal(t, "12,345", Count(12345))
	require.Equal(t, "999", Count(999))
	require.Equal(t, "1,000,000", Count(1000000))
	require.Equal(t, "< 0.0001", PValue(1e-9))
	require.Equal(t, "p < 0.0001", pText(1e-9))
	require.Equal(t, "p = 0.030", pText(0.03))
	require.Equal(t, "5%", effectText(0.05))
	require.Equal(t, "2.5%", effectText(0.025))
}

func TestFileNameIsSafe(t *testing.T) {
	for key, want := range map[string]string{
		"new-checkout": "new-checkout",
		"a/b":          "a%2Fb",
		"..":           "%2E.",
		`"><x>`:        "%22%3E%3Cx%3E",
		"v1.2":         "v1.2",
	} {
		require.Equal(t, want, fileName(key))
	}
}

func TestTimelineNewestFirstWithSlackAndRollbacks(t *testing.T) {
	at := func(h int) time.Time { return time.Date(2026, 11, 14, h, 0, 0, 0, time.UTC) }
	d := &FlagData{Key: "fast-search",
		Alerts: []AlertEntry{
			{DedupKey: "fast-search|errors per user||guardrail_breach|test", Subject: "fast-search|errors per user||test", Decision: "guardrail_breach",
				Severity: "critical", At: at(1), Rollback: &Rollback{Action: "webhook", Target: "https://hooks.example.com/x", Status: "ok", At: at(1)}},
			{DedupKey: "fast-search|||stale", Subject: "fast-search|||", Decision: "stale", Severity: "warning", At: at(5)},
		},
		Notifications: []Notification{{Kind: "post", Decision: "guardrail_breach", Severity: "critical", Status: "ok", Channel: "#growth", Message: "fast-search breaks…", At: at(2)},
			{Kind: "reply", Decision: "stale", Status: "failed", Error: "slack: channel_not_found", Channel: "#growth", At: at(6)}}}
	tl := timeline(d)
	require.Len(t, tl, 5)
	var kinds []string
	for i, r := range tl {
		kinds = append(kinds, r.Kind)
		if i > 0 {
			require.False(t, r.Time.After(tl[i-1].Time), "newest first")
		}
	}
	require.Equal(t, []string{"slack", "alert", "slack", "alert", "rollback"}, kinds)
	require.Equal(t, "slack: channel_not_found", tl[0].Detail, "a failed post shows its error")
	require.Equal(t, "errors per user · test", tl[3].Subject)
	require.Equal(t, "", tl[1].Subject, "a finding about the whole flag")
	require.Equal(t, "ok", tl[4].Status)
}

// The list knows only the test variants of a flag's results; the control is the one they
// leave out ("control", or "false" for a boolean flag).
func TestListControlOfUndeclaredFlags(t *testing.T) {
	mons, err := config.Parse(nil, "")
	require.NoError(t, err)
	b := &builder{mons: mons, now: time.Now(), effect: DefaultEffect}
	rows := func(variant string) []Result {
		return []Result{{Flag: "f", Metric: "pageviews", Variant: variant, N: 10, ControlN: 12, Decision: "inconclusive"}}
	}
	require.Equal(t, "control", b.summary("f", nil, rows("test"), nil, nil).Control)
	require.Equal(t, "false", b.summary("f", nil, rows("true"), nil, nil).Control)
	s := b.summary("f", nil, rows("true"), nil, nil)
	require.Equal(t, []VariantUsers{{Variant: "false", Users: 12, Control: true}, {Variant: "true", Users: 10}}, s.Variants)
}

// Exposure-day cohorts (rows with segment property $exposure_day) become one series per
// metric and variant, in day order, marked from the cohort where the analyzer's reason
// says the shift started; they stay out of the segments' forest plots.
func TestCohortsAndShift(t *testing.T) {
	mons, err := config.Parse([]byte("flags:\n  - key: promo\n    control: control\n    metrics: [{name: purchase conversion, kind: conversion, event: purchase}]\n"), "m.yaml")
	require.NoError(t, err)
	b := &builder{mons: mons, now: time.Now(), effect: DefaultEffect}
	var rows []Result
	for i, day := range []string{"2026-10-04", "2026-10-02", "2026-10-03", "2026-10-06", "2026-10-05"} {
		rows = append(rows, Result{Flag: "promo", Metric: "purchase conversion", SegmentProperty: ExposureDay, SegmentValue: day,
			Variant: "test", Lift: float64(i) / 10, N: 500, ControlN: 500, Decision: "inconclusive"})
	}
	rows = append(rows, Result{Flag: "promo", Metric: "purchase conversion", SegmentProperty: ExposureDay, Variant: "test",
		Decision: "behaviour_shift", Reason: "the lift of users first exposed from 2026-10-05 on rose (CUSUM over 5 daily cohorts, in-control ARL 370 days): …"})
	f := b.flagConfig("promo", []string{"control", "test"}, true)
	sv := b.shift(f, rows)
	require.Len(t, sv.Cohorts, 1)
	require.Len(t, sv.Findings, 1)
	c := sv.Cohorts[0]
	require.Equal(t, "2026-10-05", c.ShiftAt)
	var days []string
	for _, p := range c.Points {
		days = append(days, p.Value)
	}
	require.Equal(t, []string{"2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05", "2026-10-06"}, days)
	require.Empty(t, b.segments(f, rows), "cohorts are not a segment property")
	v := b.verdict(f, FlagSummary{Variants: []VariantUsers{{Variant: "control", Users: 2500, Control: true}, {Variant: "test", Users: 2500}}}, rows)
	require.Equal(t, StatusShift, v.status)
}
