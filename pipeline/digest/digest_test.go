package digest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// A flag's status is its most important row by the headline priority, segments and
// whole-flag findings included: a winning total with a losing segment is a loss there.
func TestStatusFollowsHeadlinePriority(t *testing.T) {
	row := func(flag, metric, prop, val, decision string, lift float64) Row {
		return Row{Flag: flag, Metric: metric, SegmentProperty: prop, SegmentValue: val, Variant: "test", N: 100,
			Lift: lift, CILow: lift - 0.1, CIHigh: lift + 0.1, Decision: decision}
	}
	rows := []Row{
		row("a", "m", "", "", alert.Win, 0.2),
		row("a", "m", "country", "GB", alert.Loss, -0.5),
		row("b", "m", "", "", alert.Win, 0.2),
		row("c", "m", "", "", alert.Inconclusive, 0.01),
		row("d", "m", "", "", alert.Win, 0.3),
		{Flag: "d", Decision: alert.SRM, Reason: "split 60/40"},
		row("e", "m", "", "", alert.GuardrailBreach, 0.5),
		{Flag: "f", Metric: "m", Variant: "control", N: 100},
	}
	fs := Summarise(rows, nil)
	var got [][3]string
	for _, f := range fs {
		got = append(got, [3]string{f.Key, f.Status, f.Where})
	}
	require.Equal(t, [][3]string{
		{"e", alert.GuardrailBreach, ""}, {"d", alert.SRM, ""}, {"a", alert.Loss, "GB"},
		{"b", alert.Win, ""}, {"c", alert.Inconclusive, ""}, {"f", alert.InsufficientData, ""},
	}, got)
	a := fs[2]
	require.Len(t, a.Metrics, 1)
	require.Equal(t, "GB", a.Metrics[0].Segments[0].SegmentValue, "the deciding segment is kept")
	require.True(t, a.New)
	require.Empty(t, fs[5].Metrics, "a baseline alone is no metric line")
	require.Len(t, fs[1].Findings, 1)
}

// Changes since last week: moved decisions, lifts moved by five points, new metrics;
// small moves are no change.
func TestChanges(t *testing.T) {
	r := func(metric, decision string, lift float64) Row {
		return Row{Flag: "f", Metric: metric, Variant: "test", Lift: lift, CILow: lift - 0.1, CIHigh: lift + 0.1, Decision: decision}
	}
	now := []Row{r("a", alert.Win, 0.2), r("b", alert.Inconclusive, 0.10), r("c", alert.Inconclusive, 0.02), r("d", alert.Inconclusive, 0)}
	prev := []Row{r("a", alert.Inconclusive, 0.1), r("b", alert.Inconclusive, 0.04), r("c", alert.Inconclusive, 0.01)}
	fs := Summarise(now, prev)
	require.False(t, fs[0].New)
	require.Equal(t, []Change{
		{Metric: "a", Variant: "test", From: alert.Inconclusive, To: alert.Win, FromLift: 0.1, ToLift: 0.2},
		{Metric: "b", Variant: "test", From: alert.Inconclusive, To: alert.Inconclusive, FromLift: 0.04, ToLift: 0.10},
		{Metric: "d", Variant: "test", To: alert.Inconclusive},
	}, fs[0].Changes)
}

// The analyzer's heterogeneity rows say which properties explain a result; they are
// never a status, a metric line or a change of their own.
func TestHeterogeneityRowsExplainAndStayApart(t *testing.T) {
	het := func(metric, prop string, discovered bool, p float64, verdict string) Row {
		return Row{Flag: "f", Metric: metric, SegmentProperty: prop, Variant: "test", N: 100, P: p,
			Decision: "heterogeneity", Reason: prop + ": Q = 9 on 2 df; " + verdict, Discovered: discovered}
	}
	now := []Row{
		{Flag: "f", Metric: "conversion", Variant: "test", N: 100, Lift: 0.01, CILow: -0.1, CIHigh: 0.12, Decision: alert.Inconclusive},
		het("conversion", "plan", false, 0.01, alert.EffectDiffers),
		het("revenue", "country", true, 0.001, alert.EffectDiffers),
		het("conversion", "country", true, 0.003, alert.EffectDiffers),
		het("conversion", "browser", true, 0.6, alert.NoEvidence),
		het("revenue", "plan", false, 0.3, alert.NoEvidence),
	}
	prev := []Row{het("conversion", "plan", false, 0.2, alert.NoEvidence)}
	fs := Summarise(now, prev)
	require.Len(t, fs, 1)
	f := fs[0]
	require.Equal(t, alert.Inconclusive, f.Status, "a heterogeneity row is no status")
	require.Len(t, f.Metrics, 1)
	require.True(t, f.New, "last week's heterogeneity rows alone are no results")
	require.Equal(t, []Property{
		{Name: "country", Metrics: []string{"conversion", "revenue"}, Discovered: true, p: 0.001},
		{Name: "plan", Metrics: []string{"conversion"}, p: 0.01},
	}, f.Explains, "strongest first; a property that differs on one metric explains it")
	require.Equal(t, []string{"browser"}, f.NoEvidence)
}
