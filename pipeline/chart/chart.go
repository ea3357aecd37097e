// Package chart draws the weekly digest's picture: a forest plot of lifts with their
// always-valid intervals, one row per flag metric and, under it, one row per segment
// that decides or diverges, so a segment losing while the total is flat is visible at a
// glance.
//
// The decision that shapes it: gonum.org/v1/plot does the axes, ticks and layout, and
// the text is set in the Go fonts (golang.org/x/image/font/gofont) embedded in the
// binary — real proportional fonts in normal case, the same on every machine (so the
// golden image is stable), with no system fonts to install. The plot measures every
// label before laying out, and the picture is made wide enough for the longest one, so
// no label is ever cut.
package chart

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"sort"
	"sync"

	xfont "golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/digest"
)

// MaxRows is the most rows drawn; the rest are named in a note under the plot.
const MaxRows = 40

var (
	colText    = color.RGBA{0x1d, 0x1c, 0x1d, 0xff}
	colMuted   = color.RGBA{0x61, 0x60, 0x61, 0xff}
	colGrid    = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	colWin     = color.RGBA{0x2e, 0x9e, 0x4f, 0xff}
	colLoss    = color.RGBA{0xd6, 0x33, 0x33, 0xff}
	colNeutral = color.RGBA{0x6b, 0x7b, 0x8c, 0xff}
	colStripe  = color.RGBA{0xf4, 0xf5, 0xf7, 0xff}
)

var (
	fontsOnce sync.Once
	handler   text.Handler
	fontsErr  error
)

// goFonts is a text handler with the Go fonts, regular and bold.
func goFonts() (text.Handler, error) {
	fontsOnce.Do(func() {
		reg, err := opentype.Parse(goregular.TTF)
		if err != nil {
			fontsErr = fmt.Errorf("parse Go Regular: %w", err)
			return
		}
		bold, err := opentype.Parse(gobold.TTF)
		if err != nil {
			fontsErr = fmt.Errorf("parse Go Bold: %w", err)
			return
		}
		handler = text.Plain{Fonts: font.NewCache(font.Collection{
			{Font: font.Font{Typeface: "Go"}, Face: reg},
			{Font: font.Font{Typeface: "Go", Weight: xfont.WeightBold}, Face: bold},
		})}
	})
	return handler, fontsErr
}

// Row is one line of the forest.
type Row struct {
	Label    string
	Sub      bool // a segment under the metric above
	Lift     float64
	CI       [2]float64
	Decision string
}

// Rows lays the digest's flags out as chart rows, in the digest's order: each metric's
// total (with an interval), then its segments. The second result is how many rows were
// left out.
func Rows(fs []digest.Flag) ([]Row, int) {
	var rows []Row
	for _, f := range fs {
		for _, m := range f.Metrics {
			label := f.Key + " · " + m.Name
			if m.Variant != "" {
				label += " (" + m.Variant + ")"
			}
			if m.Total != nil && m.Total.HasInterval() {
				rows = append(rows, Row{Label: label, Lift: m.Total.Lift, CI: [2]float64{m.Total.CILow, m.Total.CIHigh},
					Decision: m.Total.Decision})
			} else if len(m.Segments) > 0 {
				rows = append(rows, Row{Label: label, Decision: alert.SegmentDivergence, CI: [2]float64{math.NaN(), math.NaN()}})
			}
			for _, s := range m.Segments {
				if !s.HasInterval() {
					continue
				}
				rows = append(rows, Row{Label: s.SegmentProperty + " = " + s.SegmentValue, Sub: true, Lift: s.Lift,
					CI: [2]float64{s.CILow, s.CIHigh}, Decision: s.Decision})
			}
		}
	}
	if len(rows) > MaxRows {
		return rows[:MaxRows], len(rows) - MaxRows
	}
	return rows, 0
}

// niceRange is the smallest of a few round numbers at or above x.
func niceRange(x float64) float64 {
	for _, r := range []float64{0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10} {
		if x <= r {
			return r
		}
	}
	return 10
}

func colorOf(d string) color.Color {
	switch d {
	case alert.Win:
		return colWin
	case alert.Loss, alert.GuardrailBreach:
		return colLoss
	}
	return colNeutral
}

// forest draws the rows' intervals and points; row i sits at y = n-1-i, so the first
// row is on top.
type forest struct {
	rows []Row
	span float64
}

func (f forest) DataRange() (xmin, xmax, ymin, ymax float64) {
	return -f.span, f.span, -0.5, float64(len(f.rows)) - 0.5
}

func (f forest) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	n := len(f.rows)
	for i := range f.rows {
		if i%2 == 1 {
			y0, y1 := trY(float64(n-1-i)-0.5), trY(float64(n-1-i)+0.5)
			c.FillPolygon(colStripe, []vg.Point{{X: c.Min.X, Y: y0}, {X: c.Max.X, Y: y0}, {X: c.Max.X, Y: y1}, {X: c.Min.X, Y: y1}})
		}
	}
	for _, t := range []float64{-f.span, -f.span / 2, f.span / 2, f.span} {
		x := trX(t)
		c.StrokeLine2(draw.LineStyle{Color: colGrid, Width: vg.Points(0.75)}, x, c.Min.Y, x, c.Max.Y)
	}
	x0 := trX(0)
	c.StrokeLine2(draw.LineStyle{Color: colMuted, Width: vg.Points(1)}, x0, c.Min.Y, x0, c.Max.Y)
	clamp := func(v float64) float64 { return math.Max(-f.span, math.Min(f.span, v)) }
	for i, r := range f.rows {
		if math.IsNaN(r.CI[0]) {
			continue // a heading row: the metric's total has no interval
		}
		y := trY(float64(n - 1 - i))
		col := colorOf(r.Decision)
		ls := draw.LineStyle{Color: col, Width: vg.Points(2.5)}
		lo, hi := trX(clamp(r.CI[0])), trX(clamp(r.CI[1]))
		c.StrokeLine2(ls, lo, y, hi, y)
		capH := vg.Points(5)
		if r.CI[0] < -f.span {
			c.FillPolygon(col, []vg.Point{{X: lo - vg.Points(4), Y: y}, {X: lo + vg.Points(4), Y: y + capH}, {X: lo + vg.Points(4), Y: y - capH}})
		} else {
			c.StrokeLine2(ls, lo, y-capH, lo, y+capH)
		}
		if r.CI[1] > f.span {
			c.FillPolygon(col, []vg.Point{{X: hi + vg.Points(4), Y: y}, {X: hi - vg.Points(4), Y: y + capH}, {X: hi - vg.Points(4), Y: y - capH}})
		} else {
			c.StrokeLine2(ls, hi, y-capH, hi, y+capH)
		}
		pt := vg.Point{X: trX(clamp(r.Lift)), Y: y}
		c.DrawGlyph(draw.GlyphStyle{Color: colText, Radius: vg.Points(5), Shape: draw.CircleGlyph{}}, pt)
		c.DrawGlyph(draw.GlyphStyle{Color: col, Radius: vg.Points(3.5), Shape: draw.CircleGlyph{}}, pt)
	}
}

// Draw renders the digest's forest plot as a PNG; nil when there is nothing to draw.
func Draw(fs []digest.Flag) ([]byte, error) {
	rows, more := Rows(fs)
	if len(rows) == 0 {
		return nil, nil
	}
	h, err := goFonts()
	if err != nil {
		return nil, err
	}
	// restyle keeps the plot's alignment of each text and sets the Go font.
	restyle := func(s *text.Style, size vg.Length, bold bool, col color.Color) {
		s.Font = font.Font{Typeface: "Go", Size: size}
		if bold {
			s.Font.Weight = xfont.WeightBold
		}
		s.Handler, s.Color = h, col
	}

	// The axis fits every point and most intervals; one very wide interval (a flag with
	// few users) is clipped, with an arrow head, rather than squashing all the others.
	span := 0.0
	var extents []float64
	for _, r := range rows {
		if math.IsNaN(r.CI[0]) {
			continue
		}
		span = math.Max(span, 1.2*math.Abs(r.Lift))
		extents = append(extents, math.Max(math.Abs(r.CI[0]), math.Abs(r.CI[1])))
	}
	sort.Float64s(extents)
	if len(extents) > 0 {
		span = math.Max(span, extents[(len(extents)-1)*3/4])
	}
	span = niceRange(span)

	p := plot.New()
	p.BackgroundColor = color.White
	p.Title.Text = "Lift vs control, with always-valid 95% intervals"
	restyle(&p.Title.TextStyle, 13, true, colText)
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = "relative lift"
	if more > 0 {
		p.X.Label.Text = fmt.Sprintf("relative lift  ·  %d more rows on the flags' pages", more)
	}
	restyle(&p.X.Label.TextStyle, 10, false, colMuted)
	restyle(&p.X.Tick.Label, 10, false, colMuted)
	p.X.Min, p.X.Max = -span, span
	p.X.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		var ts []plot.Tick
		for _, t := range []float64{-span, -span / 2, 0, span / 2, span} {
			ts = append(ts, plot.Tick{Value: t, Label: tickLabel(t)})
		}
		return ts
	})
	p.X.LineStyle.Color = colGrid
	p.X.Tick.LineStyle.Color = colGrid

	restyle(&p.Y.Tick.Label, 11, false, colText)
	labelStyle := p.Y.Tick.Label
	p.Y.Tick.Length, p.Y.Tick.Width = 0, 0
	p.Y.Width = 0
	p.Y.Padding = vg.Points(6)
	p.Y.Min, p.Y.Max = -0.5, float64(len(rows))-0.5
	ticks := make([]plot.Tick, len(rows))
	widest := vg.Length(0)
	for i, r := range rows {
		// Segment labels end nearer the plot than their metric's, so they read as nested.
		label := r.Label
		if !r.Sub {
			label += "    "
		}
		ticks[i] = plot.Tick{Value: float64(len(rows) - 1 - i), Label: label}
		widest = max(widest, labelStyle.Width(label))
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Add(forest{rows: rows, span: span})

	width := widest + vg.Points(580)
	height := vg.Points(float64(len(rows))*22 + 90)
	c := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96), vgimg.UseBackgroundColor(color.White))
	const margin = 12
	p.Draw(draw.Crop(draw.New(c), vg.Points(margin), -vg.Points(margin), vg.Points(margin/2), -vg.Points(margin/2)))
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encode chart: %w", err)
	}
	return buf.Bytes(), nil
}

func tickLabel(t float64) string {
	s := fmt.Sprintf("%g%%", math.Abs(100*t))
	switch {
	case t > 0:
		return "+" + s
	case t < 0:
		return "−" + s
	}
	return "0%"
}

var (
	_ plot.Plotter    = forest{}
	_ plot.DataRanger = forest{}
)
