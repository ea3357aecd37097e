package chart

import (
	"html"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	zeroX  = regexp.MustCompile(`<line class="zero" x1="([0-9.]+)"`)
	zeroY  = regexp.MustCompile(`<line class="zero" x1="[0-9.]+" x2="[0-9.]+" y1="([0-9.]+)"`)
	rowAt  = regexp.MustCompile(`(?s)data-segment="([^"]*)".*?<path class="marker" d="M([0-9.]+) `)
	thresh = regexp.MustCompile(`<line class="threshold" x1="[0-9.]+" x2="[0-9.]+" y1="([0-9.]+)"`)
)

// has reports whether the SVG, as text, holds s (html/template writes + as &#43;).
func has(t *testing.T, svg, s string) {
	t.Helper()
	require.True(t, strings.Contains(html.UnescapeString(svg), s), "the chart lacks %q", s)
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	x, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return x
}

// A loss sits left of the zero line and a win right of it, whatever the domain.
func TestForestPlacesLiftsAroundZero(t *testing.T) {
	svg := string(Forest{Title: "purchase by country", Rows: []ForestRow{
		{Label: "US", Lift: 0.3, Lo: 0.18, Hi: 0.42, Decision: "win"},
		{Label: "all users", Lift: 0.03, Lo: -0.02, Hi: 0.08, Decision: "inconclusive", Total: true},
		{Label: "GB", Lift: -0.67, Lo: -0.75, Hi: -0.6, Decision: "loss"},
	}}.SVG())
	zero := num(t, zeroX.FindStringSubmatch(svg)[1])
	x := map[string]float64{}
	for _, m := range rowAt.FindAllStringSubmatch(svg, -1) {
		x[m[1]] = num(t, m[2])
	}
	// Markers are drawn from their left edge (a triangle's apex is its centre).
	require.Greater(t, x["US"], zero)
	require.Less(t, x["GB"], zero)
	require.Less(t, x["GB"], x["all users"])
	require.Less(t, x["all users"], x["US"])
	has(t, svg, "▼ −67.0% [−75.0%, −60.0%]")
	has(t, svg, "▲ +30.0% [+18.0%, +42.0%]")
	has(t, svg, "lift vs control (%)")
}

func TestLiftChartDrawsBandThresholdAndEvents(t *testing.T) {
	t0 := time.Date(2026, 11, 12, 0, 0, 0, 0, time.UTC)
	var pts []LiftPoint
	for i := range 96 {
		w := 0.8 / float64(i+2)
		pts = append(pts, LiftPoint{T: t0.Add(time.Duration(i) * 15 * time.Minute), Lift: 0.6, Lo: 0.6 - w, Hi: 0.6 + w})
	}
	limit := 0.3
	svg := string(Lift{Title: "errors per user", Series: []LiftSeries{{Name: "test", Points: pts}},
		Threshold: &limit, ThresholdLabel: "guardrail +30.0%",
		Events: []Event{{T: t0.Add(6 * time.Hour), Label: "guardrail breach", Kind: "alert", Decision: "guardrail_breach"},
			{T: t0.Add(6 * time.Hour), Label: "loss (GB)", Kind: "alert", Decision: "loss"},
			{T: t0.Add(6 * time.Hour), Label: "rollback ok", Kind: "rollback"}}}.SVG())
	has(t, svg, `class="band"`)
	has(t, svg, "guardrail +30.0%")
	has(t, svg, "⚑ guardrail breach, loss (GB)")
	has(t, svg, "↩ rollback ok")
	has(t, svg, "test +60.0%")
	// The threshold (+30%) is above the zero line (SVG y grows downwards).
	require.Less(t, num(t, thresh.FindStringSubmatch(svg)[1]), num(t, zeroY.FindStringSubmatch(svg)[1]))
	require.LessOrEqual(t, strings.Count(svg, `class="hit"`), 61, "hover targets are bounded")
	has(t, string(Lift{Title: "x"}.SVG()), "No passes with results yet.")
}

func TestChartsEscapeLabels(t *testing.T) {
	svg := string(Forest{Title: `<script>t</script>`, Rows: []ForestRow{{Label: `<script>alert(1)</script>`, Lift: 0.1, Lo: 0, Hi: 0.2}}}.SVG()) +
		string(Bars{Title: "x", Categories: []string{"Nov 1"}, Series: []BarSeries{{Name: `"><img src=x>`, Values: []float64{3}}}}.SVG()) +
		string(Cohorts{Title: "c", Rows: []ForestRow{{Label: `<b>`, Lift: 0.1}}}.SVG())
	for _, bad := range []string{"<script>", "<img", "<b>"} {
		require.False(t, strings.Contains(svg, bad), bad)
	}
	require.True(t, strings.Contains(svg, "&lt;script&gt;alert(1)&lt;/script&gt;"))
}

func TestNiceTicksCoverTheDomain(t *testing.T) {
	for _, tc := range [][2]float64{{-0.75, 0.42}, {0, 0.013}, {-2, 2}, {0.1, 0.1}} {
		ticks, lo, hi := niceTicks(tc[0], tc[1], 5)
		require.LessOrEqual(t, lo, tc[0])
		require.GreaterOrEqual(t, hi, tc[1])
		require.GreaterOrEqual(t, len(ticks), 2)
		require.LessOrEqual(t, len(ticks), 12)
	}
}
