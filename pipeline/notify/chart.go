package notify

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"sort"
	"strconv"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// Chart geometry.
const (
	chartW      = 1100
	chartRowH   = 28
	chartTop    = 56
	chartBottom = 44
	chartLabelW = 520
	chartRight  = 50
	chartMaxRow = 40
)

var (
	colBackground = color.RGBA{0xff, 0xff, 0xff, 0xff}
	colText       = color.RGBA{0x1d, 0x1c, 0x1d, 0xff}
	colMuted      = color.RGBA{0x61, 0x60, 0x61, 0xff}
	colGrid       = color.RGBA{0xe8, 0xe8, 0xe8, 0xff}
	colZero       = color.RGBA{0x61, 0x60, 0x61, 0xff}
	colWin        = color.RGBA{0x2e, 0x9e, 0x4f, 0xff}
	colLoss       = color.RGBA{0xd6, 0x33, 0x33, 0xff}
	colNeutral    = color.RGBA{0x6b, 0x7b, 0x8c, 0xff}
	colStripe     = color.RGBA{0xf6, 0xf6, 0xf8, 0xff}
)

// niceRange is the smallest of a few round numbers at or above x.
func niceRange(x float64) float64 {
	for _, r := range []float64{0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10} {
		if x <= r {
			return r
		}
	}
	return 10
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	if x1 < x0 {
		x0, x1 = x1, x0
	}
	draw.Draw(img, image.Rect(x0, y0, x1+1, y1+1), &image.Uniform{c}, image.Point{}, draw.Src)
}

// liftChart draws each row's lift as a point with its interval as a bar, on one shared
// axis centred on zero: green where the variant wins, red where it loses or breaches a
// guardrail, grey otherwise. Intervals beyond the axis are clipped with an arrow head.
func liftChart(rows []DigestRow) ([]byte, error) {
	more := 0
	if len(rows) > chartMaxRow {
		more = len(rows) - chartMaxRow
		rows = rows[:chartMaxRow]
	}
	extra := 0
	if more > 0 {
		extra = chartRowH
	}
	h := chartTop + len(rows)*chartRowH + chartBottom + extra
	img := image.NewRGBA(image.Rect(0, 0, chartW, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{colBackground}, image.Point{}, draw.Src)

	// The axis fits every point and most intervals; one very wide interval (a flag with
	// few users) is clipped rather than squashing all the others.
	span := 0.0
	var extents []float64
	for _, r := range rows {
		span = math.Max(span, 1.2*math.Abs(r.Lift))
		extents = append(extents, math.Max(math.Abs(r.CILow), math.Abs(r.CIHigh)))
	}
	sort.Float64s(extents)
	span = niceRange(math.Max(span, extents[(len(extents)-1)*3/4]))
	x0, x1 := chartLabelW, chartW-chartRight
	xOf := func(v float64) int {
		v = math.Max(-span, math.Min(span, v))
		return x0 + int(math.Round((v+span)/(2*span)*float64(x1-x0)))
	}
	plotTop, plotBottom := chartTop-6, chartTop+len(rows)*chartRowH

	drawText(img, 16, 14, "LIFT VS CONTROL, ALWAYS-VALID INTERVALS", colText)
	for i := range rows {
		if i%2 == 1 {
			fill(img, 0, chartTop+i*chartRowH, chartW-1, chartTop+(i+1)*chartRowH-1, colStripe)
		}
	}
	for _, t := range []float64{-span, -span / 2, span / 2, span} {
		x := xOf(t)
		fill(img, x, plotTop, x, plotBottom, colGrid)
	}
	for _, t := range []float64{-span, -span / 2, 0, span / 2, span} {
		x := xOf(t)
		label := strconv.FormatFloat(100*t, 'f', -1, 64) + "%"
		if t > 0 {
			label = "+" + label
		}
		drawText(img, x-textWidth(label)/2, plotBottom+10, label, colMuted)
	}
	fill(img, xOf(0), plotTop, xOf(0), plotBottom, colZero)

	maxChars := (chartLabelW - 30) / advance
	for i, r := range rows {
		y := chartTop + i*chartRowH + chartRowH/2
		label := r.Flag + ": " + r.Metric
		if r.Variant != "" {
			label += " (" + r.Variant + ")"
		}
		drawText(img, 16, y-lineHeight/2, fit(label, maxChars), colText)
		c := colNeutral
		switch r.Decision {
		case alert.Win:
			c = colWin
		case alert.Loss, alert.GuardrailBreach:
			c = colLoss
		}
		lo, hi := xOf(r.CILow), xOf(r.CIHigh)
		fill(img, lo, y-2, hi, y+2, c)
		fill(img, lo, y-7, lo+1, y+7, c)
		fill(img, hi-1, y-7, hi, y+7, c)
		if r.CILow < -span {
			for d := 0; d < 7; d++ {
				fill(img, lo+d, y-6+d, lo+d, y+6-d, c)
			}
		}
		if r.CIHigh > span {
			for d := 0; d < 7; d++ {
				fill(img, hi-d, y-6+d, hi-d, y+6-d, c)
			}
		}
		p := xOf(r.Lift)
		fill(img, p-5, y-5, p+5, y+5, colText)
		fill(img, p-3, y-3, p+3, y+3, c)
	}
	if more > 0 {
		drawText(img, 16, plotBottom+chartBottom, fmt.Sprintf("AND %d MORE", more), colMuted)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
