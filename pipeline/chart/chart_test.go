package chart

import (
	"bytes"
	"flag"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/render/rendertest"
)

var update = flag.Bool("update", false, "rewrite the golden image in testdata (look at it before committing)")

// The digest's chart for the fixture: one row per metric total and one per deciding or
// diverging segment, compared with the golden image (go test -update rewrites it).
func TestChartGolden(t *testing.T) {
	now, prev := rendertest.DigestRows()
	fs := digest.Summarise(now, prev)
	rows, more := Rows(fs)
	require.Zero(t, more)
	var labels []string
	for _, r := range rows {
		labels = append(labels, r.Label)
	}
	require.Equal(t, []string{
		"fast-search · errors per user (test)",
		"onboarding-v2 · activation (test)",
		"new-checkout · purchase conversion (test)",
		"$geoip_country_code = GB", "$geoip_country_code = IN", "$geoip_country_code = US", "$geoip_country_code = DE",
		"new-checkout · revenue per user (test)",
		"new-checkout · errors per user (test)",
		"dark-mode · pageviews (test)",
		"plan = pro",
	}, labels, "totals in digest order, diverging and deciding segments under their metric")

	png1, err := Draw(fs)
	require.NoError(t, err)
	path := filepath.Join("testdata", "digest_chart.golden.png")
	if *update {
		require.NoError(t, os.WriteFile(path, png1, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "golden image missing: go test -run TestChartGolden -update")
	require.True(t, bytes.Equal(want, png1), "the chart differs from %s (go test -update rewrites it; look at it)", path)
}

// A label of any length is drawn whole: the picture grows to fit it.
func TestLongLabelsAreNotCut(t *testing.T) {
	long := strings.Repeat("a-very-long-flag-key-", 8)
	fs := []digest.Flag{{Key: long, Status: alert.Win, Metrics: []digest.Metric{{Name: "purchase conversion", Variant: "test",
		Total: &digest.Row{Lift: 0.1, CILow: 0.05, CIHigh: 0.15, Decision: alert.Win}}}}}
	b, err := Draw(fs)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	h, err := goFonts()
	require.NoError(t, err)
	label := long + " · purchase conversion (test)"
	w := text.Style{Font: font.Font{Typeface: "Go", Size: 11}, Handler: h}.Width(label)
	px := int(w.Dots(96))
	require.Greater(t, img.Bounds().Dx(), px+int(vg.Points(300).Dots(96)), "the label (%d px) and a plot fit", px)
}

func TestNothingToDraw(t *testing.T) {
	b, err := Draw(nil)
	require.NoError(t, err)
	require.Nil(t, b)
}
