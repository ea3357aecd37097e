// Package chart draws the feature page's charts as inline SVG, server-side, from Go
// templates: lift over time with its always-valid band, the forest plot of segment
// lifts, exposures per day per variant, and exposure-day cohorts.
//
// The decision that shapes it: no JavaScript and no charting library. The charts are
// geometry computed in Go (scales, ticks, paths) rendered by html/template, so a page
// works offline, in a static report and in a link preview, every label from events or
// configuration is escaped like any other text, and a chart is a pure function of its
// data that tests can check by reading the SVG. Readability rules: values in percent with
// a sign, labelled axes, and every colour doubled by a shape or a sign (▲ win, ▼ loss,
// ● no decision) so nothing depends on colour alone.
package chart

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

//go:embed templates/*.svg
var files embed.FS

// The templates print numbers as they are (no formatting function: a function call per
// attribute was most of a page's rendering time); every position is rounded to a tenth
// of a pixel when computed.
var tmpl = template.Must(template.New("").ParseFS(files, "templates/*.svg"))

func render(name string, data any) template.HTML {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		// The templates are fixed and the data is plain numbers and strings: an error
		// here is a bug, shown in place of the chart rather than failing the page.
		return template.HTML("<p class=\"chart-error\">chart failed: " + template.HTMLEscapeString(err.Error()) + "</p>")
	}
	return template.HTML(b.String()) // #nosec: produced by html/template, which escaped every value
}

// Palette are the series colours (Okabe–Ito, readable by colour-blind readers); series
// are told apart by their labels too.
var Palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00"}

// Decision colours and shapes.
const (
	colourWin  = "#1a7f37"
	colourLoss = "#cf222e"
	colourNone = "#57606a"
)

// Pct formats a relative change with its sign and a true minus: −5.0%.
func Pct(x float64) string {
	s := fmt.Sprintf("%+.1f%%", 100*x)
	if s == "-0.0%" {
		s = "+0.0%"
	}
	return strings.Replace(s, "-", "−", 1)
}

// pctTick formats an axis tick without decimals when it has none.
func pctTick(x float64) string {
	v := 100 * x
	if math.Abs(v-math.Round(v)) < 1e-9 {
		s := fmt.Sprintf("%+.0f%%", v)
		if s == "+0%" || s == "-0%" {
			return "0%"
		}
		return strings.Replace(s, "-", "−", 1)
	}
	return Pct(x)
}

// scale maps a domain onto a pixel range.
type scale struct{ d0, d1, r0, r1 float64 }

// at maps x to a pixel, rounded to a tenth: enough for a crisp chart, and short when
// the templates print it.
func (s scale) at(x float64) float64 {
	if s.d1 == s.d0 {
		return r1((s.r0 + s.r1) / 2)
	}
	return r1(s.r0 + (x-s.d0)/(s.d1-s.d0)*(s.r1-s.r0))
}

// r1 rounds to a tenth of a pixel.
func r1(x float64) float64 { return math.Round(x*10) / 10 }

// niceTicks returns about n round ticks covering [lo, hi] and the widened domain.
func niceTicks(lo, hi float64, n int) ([]float64, float64, float64) {
	if hi < lo {
		lo, hi = hi, lo
	}
	if hi-lo < 1e-9 {
		lo, hi = lo-0.01, hi+0.01
	}
	raw := (hi - lo) / float64(max(n, 1))
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	start := math.Floor(lo/step) * step
	end := math.Ceil(hi/step) * step
	var ticks []float64
	for v := start; v <= end+step/2; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	return ticks, start, end
}

// Tick is an axis tick: its pixel position and label.
type Tick struct {
	Pos   float64
	Label string
}

// Shape is a decision's marker.
type Shape struct {
	Kind   string // up, down, dot, ring
	Colour string
	Sign   string // ▲ ▼ ● ○
	Word   string // win, loss, …
}

// ShapeOf picks the marker of a decision: ▲ for a win, ▼ for a loss (and a guardrail
// breach), ● for no decision yet, ○ for too little data.
func ShapeOf(decision string) Shape {
	switch decision {
	case "win":
		return Shape{"up", colourWin, "▲", "win"}
	case "loss", "guardrail_breach":
		return Shape{"down", colourLoss, "▼", strings.ReplaceAll(decision, "_", " ")}
	case "insufficient_data":
		return Shape{"ring", colourNone, "○", "insufficient data"}
	}
	return Shape{"dot", colourNone, "●", strings.ReplaceAll(decision, "_", " ")}
}

// fill is the marker's inside: hollow for too little data.
func (s Shape) fill() string {
	if s.Kind == "ring" {
		return "#fff"
	}
	return s.Colour
}

// markerPath is the SVG path of a marker centred on (x, y).
func markerPath(kind string, x, y float64) string {
	switch kind {
	case "up":
		return fmt.Sprintf("M%.1f %.1fL%.1f %.1fL%.1f %.1fZ", x, y-6, x+6, y+5, x-6, y+5)
	case "down":
		return fmt.Sprintf("M%.1f %.1fL%.1f %.1fL%.1f %.1fZ", x, y+6, x+6, y-5, x-6, y-5)
	}
	return fmt.Sprintf("M%.1f %.1fa5 5 0 1 0 10 0a5 5 0 1 0 -10 0Z", x-5, y)
}

// LiftPoint is a test variant's cumulative lift and always-valid interval at one pass.
type LiftPoint struct {
	T        time.Time
	Lift     float64
	Lo, Hi   float64
	Decision string
}

// LiftSeries is one test variant's lift over time.
type LiftSeries struct {
	Name   string
	Points []LiftPoint
}

// Event is a moment marked on a lift chart: an alert or a rollback.
type Event struct {
	T     time.Time
	Label string
	// Kind is "alert" or "rollback".
	Kind     string
	Decision string
}

// Lift is the lift-over-time chart of one metric.
type Lift struct {
	Title  string
	Series []LiftSeries
	// Threshold is a guardrail limit as a relative change (+0.3), drawn dashed.
	Threshold      *float64
	ThresholdLabel string
	Events         []Event
}

type liftView struct {
	Title, Desc                   string
	W, H, Left, Right, Top, Bot   float64
	ZeroY                         float64
	YTicks, XTicks                []Tick
	Series                        []liftSeriesView
	Threshold                     *Tick
	Events                        []eventView
	Empty                         bool
	XLabel, YLabel                string
	PlotW, PlotH, MidX, YLabelPos float64
}

type liftSeriesView struct {
	Name, Colour, Line, Band, Last string
	LastX, LastY                   float64
	Points                         []pointView
}

type pointView struct {
	X, Y  float64
	Title string
}

type eventView struct {
	X             float64
	Label, Colour string
	Kind          string
	LabelY        float64
}

// SVG renders the chart.
func (c Lift) SVG() template.HTML {
	v := liftView{Title: c.Title, W: 720, H: 280, Left: 60, Right: 620, Top: 24, Bot: 240,
		XLabel: "pass time (UTC)", YLabel: "lift vs control"}
	v.PlotW, v.PlotH, v.MidX, v.YLabelPos = v.Right-v.Left, v.Bot-v.Top, (v.Left+v.Right)/2, (v.Top+v.Bot)/2
	var t0, t1 time.Time
	lo, hi := 0.0, 0.0
	n := 0
	for _, s := range c.Series {
		for _, p := range s.Points {
			if n == 0 || p.T.Before(t0) {
				t0 = p.T
			}
			if n == 0 || p.T.After(t1) {
				t1 = p.T
			}
			lo, hi = math.Min(lo, p.Lo), math.Max(hi, p.Hi)
			n++
		}
	}
	if n == 0 {
		v.Empty = true
		v.Desc = "No passes with results yet."
		return render("lift.svg", v)
	}
	if c.Threshold != nil {
		lo, hi = math.Min(lo, *c.Threshold), math.Max(hi, *c.Threshold)
	}
	for _, e := range c.Events {
		if e.T.Before(t0) {
			t0 = e.T
		}
		if e.T.After(t1) {
			t1 = e.T
		}
	}
	if !t1.After(t0) {
		t0, t1 = t0.Add(-time.Hour), t1.Add(time.Hour)
	}
	// Early passes have huge intervals; clip the domain so the recent band stays legible.
	lo, hi = math.Max(lo, -1.5), math.Min(hi, 1.5)
	yt, ylo, yhi := niceTicks(lo, hi, 5)
	ys := scale{ylo, yhi, v.Bot, v.Top}
	xs := scale{float64(t0.Unix()), float64(t1.Unix()), v.Left, v.Right}
	clip := func(y float64) float64 { return math.Max(v.Top, math.Min(v.Bot, y)) }
	for _, t := range yt {
		v.YTicks = append(v.YTicks, Tick{Pos: ys.at(t), Label: pctTick(t)})
	}
	v.ZeroY = ys.at(0)
	v.XTicks = timeTicks(t0, t1, xs)
	if c.Threshold != nil {
		v.Threshold = &Tick{Pos: clip(ys.at(*c.Threshold)), Label: c.ThresholdLabel}
	}
	var desc []string
	for i, s := range c.Series {
		sv := liftSeriesView{Name: s.Name, Colour: Palette[i%len(Palette)]}
		var line, upper, lower strings.Builder
		for j, p := range s.Points {
			x, y := xs.at(float64(p.T.Unix())), clip(ys.at(p.Lift))
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&line, "%s%.1f %.1f", cmd, x, y)
			fmt.Fprintf(&upper, "%s%.1f %.1f", cmd, x, clip(ys.at(p.Hi)))
			// A hover target with the numbers on about 60 points of a series: enough to
			// read the curve, few enough to keep a month of passes light.
			if every := max(1, (len(s.Points)+59)/60); j%every == 0 || j == len(s.Points)-1 {
				sv.Points = append(sv.Points, pointView{X: x, Y: y, Title: fmt.Sprintf("%s %s: %s [%s, %s]", s.Name, p.T.UTC().Format("2006-01-02 15:04"), Pct(p.Lift), Pct(p.Lo), Pct(p.Hi))})
			}
		}
		for j := len(s.Points) - 1; j >= 0; j-- {
			p := s.Points[j]
			fmt.Fprintf(&lower, "L%.1f %.1f", xs.at(float64(p.T.Unix())), clip(ys.at(p.Lo)))
		}
		sv.Line = line.String()
		sv.Band = upper.String() + lower.String() + "Z"
		if len(s.Points) > 0 {
			last := s.Points[len(s.Points)-1]
			sv.LastX, sv.LastY = xs.at(float64(last.T.Unix())), clip(ys.at(last.Lift))
			sv.Last = s.Name + " " + Pct(last.Lift)
			desc = append(desc, fmt.Sprintf("%s: latest lift %s, always-valid interval [%s, %s]", s.Name, Pct(last.Lift), Pct(last.Lo), Pct(last.Hi)))
		}
		v.Series = append(v.Series, sv)
	}
	// Events of one pass share a line and a label, so labels do not pile up.
	for _, e := range c.Events {
		x := xs.at(float64(e.T.Unix()))
		col := colourNone
		switch {
		case e.Kind == "rollback":
			col = colourLoss
		case e.Decision == "win":
			col = colourWin
		case e.Decision == "loss" || e.Decision == "guardrail_breach":
			col = colourLoss
		}
		if n := len(v.Events); n > 0 && math.Abs(v.Events[n-1].X-x) < 0.5 && v.Events[n-1].Kind == e.Kind {
			last := &v.Events[n-1]
			last.Label += ", " + e.Label
			if col != colourNone {
				last.Colour = col
			}
			continue
		}
		v.Events = append(v.Events, eventView{X: x, Label: e.Label, Colour: col, Kind: e.Kind})
	}
	for i := range v.Events {
		v.Events[i].LabelY = v.Top + 10 + float64(i%4)*11
	}
	v.Desc = strings.Join(desc, "; ")
	return render("lift.svg", v)
}

// timeTicks picks about six ticks on whole days (or hours for short spans).
func timeTicks(t0, t1 time.Time, xs scale) []Tick {
	span := t1.Sub(t0)
	step, layout := 24*time.Hour, "Jan 2"
	switch {
	case span <= 12*time.Hour:
		step, layout = 2*time.Hour, "15:04"
	case span <= 3*24*time.Hour:
		step, layout = 12*time.Hour, "Jan 2 15h"
	default:
		days := int(math.Ceil(span.Hours() / 24 / 7))
		step = time.Duration(max(days, 1)) * 24 * time.Hour
	}
	var out []Tick
	for t := t0.UTC().Truncate(step); !t.After(t1); t = t.Add(step) {
		if t.Before(t0) {
			continue
		}
		out = append(out, Tick{Pos: xs.at(float64(t.Unix())), Label: t.Format(layout)})
	}
	return out
}

// ForestRow is one segment value (or the total) in a forest plot.
type ForestRow struct {
	Label    string
	Lift     float64
	Lo, Hi   float64
	N        int64
	Decision string
	// Total marks the whole flag's row, drawn in bold.
	Total bool
}

// Forest is a forest plot: each row's lift with its interval on one shared axis.
type Forest struct {
	Title string
	Rows  []ForestRow
	// Threshold is a guardrail limit, drawn dashed.
	Threshold *float64
}

type forestView struct {
	Title, Desc             string
	W, H, Left, Right, Top  float64
	Bot, ZeroX, MidX        float64
	XTicks                  []Tick
	Rows                    []forestRowView
	Threshold               *Tick
	Empty                   bool
	ValueX, LabelX, XLabelY float64
}

type forestRowView struct {
	Label, Value, Decision, Sign, Colour, Fill, Path, Class string
	Y, X, Lo, Hi, TextY                                     float64
	Lift                                                    string
	Total                                                   bool
}

// SVG renders the plot.
func (c Forest) SVG() template.HTML {
	rowH := 26.0
	v := forestView{Title: c.Title, W: 720, Left: 150, Right: 540, Top: 16, LabelX: 8, ValueX: 552}
	v.H = v.Top + rowH*float64(len(c.Rows)) + 44
	v.Bot = v.H - 36
	v.XLabelY = v.H - 6
	v.MidX = (v.Left + v.Right) / 2
	if len(c.Rows) == 0 {
		v.Empty, v.H, v.Desc = true, 60, "No segment results yet."
		return render("forest.svg", v)
	}
	lo, hi := 0.0, 0.0
	for _, r := range c.Rows {
		lo, hi = math.Min(lo, r.Lo), math.Max(hi, r.Hi)
	}
	if c.Threshold != nil {
		lo, hi = math.Min(lo, *c.Threshold), math.Max(hi, *c.Threshold)
	}
	lo, hi = math.Max(lo, -2), math.Min(hi, 2)
	ticks, dlo, dhi := niceTicks(lo, hi, 6)
	xs := scale{dlo, dhi, v.Left, v.Right}
	clip := func(x float64) float64 { return math.Max(v.Left, math.Min(v.Right, x)) }
	for _, t := range ticks {
		v.XTicks = append(v.XTicks, Tick{Pos: xs.at(t), Label: pctTick(t)})
	}
	v.ZeroX = xs.at(0)
	if c.Threshold != nil {
		v.Threshold = &Tick{Pos: clip(xs.at(*c.Threshold)), Label: "guardrail " + pctTick(*c.Threshold)}
	}
	var desc []string
	for i, r := range c.Rows {
		sh := ShapeOf(r.Decision)
		y := v.Top + rowH*float64(i) + rowH/2
		x := clip(xs.at(r.Lift))
		rv := forestRowView{Label: r.Label, Decision: sh.Word, Sign: sh.Sign, Colour: sh.Colour, Fill: sh.fill(), Y: y, X: x, TextY: y + 4,
			Lo: clip(xs.at(r.Lo)), Hi: clip(xs.at(r.Hi)), Path: markerPath(sh.Kind, x, y), Total: r.Total,
			Lift:  Pct(r.Lift),
			Value: fmt.Sprintf("%s %s [%s, %s]", sh.Sign, Pct(r.Lift), Pct(r.Lo), Pct(r.Hi))}
		rv.Class = "row"
		if r.Total {
			rv.Class = "row total"
		}
		v.Rows = append(v.Rows, rv)
		desc = append(desc, fmt.Sprintf("%s %s %s", r.Label, Pct(r.Lift), sh.Word))
	}
	v.Desc = strings.Join(desc, "; ")
	return render("forest.svg", v)
}

// BarSeries is one variant's users per day.
type BarSeries struct {
	Name   string
	Values []float64
}

// Bars is a grouped bar chart: per category (day), one bar per series (variant).
type Bars struct {
	Title      string
	Categories []string
	Series     []BarSeries
	YLabel     string
}

type barsView struct {
	Title, Desc, YLabel             string
	W, H, Left, Right, Top, Bot     float64
	YTicks, XTicks                  []Tick
	Bars                            []barView
	Legend                          []legendView
	Empty                           bool
	MidX, YLabelPos, XLabelY, PlotH float64
}

type barView struct {
	X, Y, W, H float64
	Colour     string
	Title      string
}

type legendView struct {
	X      float64
	Colour string
	Name   string
}

// SVG renders the chart.
func (c Bars) SVG() template.HTML {
	v := barsView{Title: c.Title, YLabel: c.YLabel, W: 720, H: 240, Left: 60, Right: 700, Top: 30, Bot: 200}
	v.MidX, v.YLabelPos, v.XLabelY, v.PlotH = (v.Left+v.Right)/2, (v.Top+v.Bot)/2, v.H-4, v.Bot-v.Top
	hi := 0.0
	for _, s := range c.Series {
		for _, x := range s.Values {
			hi = math.Max(hi, x)
		}
	}
	if len(c.Categories) == 0 || hi == 0 {
		v.Empty, v.Desc = true, "No exposures yet."
		return render("bars.svg", v)
	}
	ticks, _, top := niceTicks(0, hi, 4)
	ys := scale{0, top, v.Bot, v.Top}
	for _, t := range ticks {
		v.YTicks = append(v.YTicks, Tick{Pos: ys.at(t), Label: strconv.FormatFloat(t, 'f', -1, 64)})
	}
	groupW := (v.Right - v.Left) / float64(len(c.Categories))
	barW := math.Max(1, (groupW*0.8)/float64(max(len(c.Series), 1)))
	every := max(1, len(c.Categories)/10)
	for i, cat := range c.Categories {
		gx := v.Left + groupW*float64(i) + groupW*0.1
		if i%every == 0 {
			v.XTicks = append(v.XTicks, Tick{Pos: r1(v.Left + groupW*(float64(i)+0.5)), Label: cat})
		}
		for j, s := range c.Series {
			val := 0.0
			if i < len(s.Values) {
				val = s.Values[i]
			}
			y := ys.at(val)
			v.Bars = append(v.Bars, barView{X: r1(gx + barW*float64(j)), Y: y, W: r1(math.Max(barW-1, 1)), H: r1(v.Bot - y),
				Colour: Palette[j%len(Palette)], Title: fmt.Sprintf("%s on %s: %s", s.Name, cat, strconv.FormatFloat(val, 'f', -1, 64))})
		}
	}
	for j, s := range c.Series {
		v.Legend = append(v.Legend, legendView{X: r1(v.Left + float64(j)*140), Colour: Palette[j%len(Palette)], Name: s.Name})
	}
	var desc []string
	for _, s := range c.Series {
		total := 0.0
		for _, x := range s.Values {
			total += x
		}
		desc = append(desc, fmt.Sprintf("%s: %s in total", s.Name, strconv.FormatFloat(total, 'f', -1, 64)))
	}
	v.Desc = strings.Join(desc, "; ")
	return render("bars.svg", v)
}

// Cohorts is the lift of successive exposure-day cohorts with their intervals, and the
// cohort from which a behaviour shift was detected.
type Cohorts struct {
	Title string
	Rows  []ForestRow // Label is the cohort's day
	// ShiftAt is the label of the first cohort after the change, if one was detected.
	ShiftAt string
}

type cohortsView struct {
	Title, Desc                     string
	W, H, Left, Right, Top, Bot     float64
	ZeroY                           float64
	YTicks, XTicks                  []Tick
	Points                          []forestRowView
	Shift                           *Tick
	Empty                           bool
	MidX, YLabelPos, XLabelY, PlotH float64
}

// SVG renders the chart.
func (c Cohorts) SVG() template.HTML {
	v := cohortsView{Title: c.Title, W: 720, H: 260, Left: 60, Right: 700, Top: 24, Bot: 210}
	v.MidX, v.YLabelPos, v.XLabelY, v.PlotH = (v.Left+v.Right)/2, (v.Top+v.Bot)/2, v.H-4, v.Bot-v.Top
	if len(c.Rows) == 0 {
		v.Empty, v.Desc = true, "No exposure-day cohorts yet."
		return render("cohorts.svg", v)
	}
	lo, hi := 0.0, 0.0
	for _, r := range c.Rows {
		lo, hi = math.Min(lo, r.Lo), math.Max(hi, r.Hi)
	}
	lo, hi = math.Max(lo, -2), math.Min(hi, 2)
	ticks, dlo, dhi := niceTicks(lo, hi, 5)
	ys := scale{dlo, dhi, v.Bot, v.Top}
	clip := func(y float64) float64 { return math.Max(v.Top, math.Min(v.Bot, y)) }
	for _, t := range ticks {
		v.YTicks = append(v.YTicks, Tick{Pos: ys.at(t), Label: pctTick(t)})
	}
	v.ZeroY = ys.at(0)
	step := (v.Right - v.Left) / float64(len(c.Rows))
	every := max(1, len(c.Rows)/8)
	var desc []string
	for i, r := range c.Rows {
		sh := ShapeOf(r.Decision)
		x := r1(v.Left + step*(float64(i)+0.5))
		y := clip(ys.at(r.Lift))
		v.Points = append(v.Points, forestRowView{Label: r.Label, X: x, Y: y, Lo: clip(ys.at(r.Lo)), Hi: clip(ys.at(r.Hi)),
			Path: markerPath(sh.Kind, x, y), Colour: sh.Colour, Fill: sh.fill(), Sign: sh.Sign, Decision: sh.Word, Lift: Pct(r.Lift),
			Value: fmt.Sprintf("cohort %s: %s [%s, %s], %d users", r.Label, Pct(r.Lift), Pct(r.Lo), Pct(r.Hi), r.N)})
		if i%every == 0 {
			v.XTicks = append(v.XTicks, Tick{Pos: x, Label: r.Label})
		}
		if r.Label == c.ShiftAt {
			v.Shift = &Tick{Pos: r1(x - step/2), Label: "shift from " + r.Label}
		}
		desc = append(desc, fmt.Sprintf("%s %s", r.Label, Pct(r.Lift)))
	}
	v.Desc = strings.Join(desc, "; ")
	return render("cohorts.svg", v)
}
