package web

import (
	"sort"

	"github.com/flagwatch/flagwatch/pipeline/web/chart"
)

// drawCharts fills the page's SVG charts from its numbers, so the charts and the JSON
// can never disagree.
func drawCharts(p *FlagPage) {
	for i := range p.Metrics {
		m := &p.Metrics[i]
		c := chart.Lift{Title: m.Name + ": lift over time"}
		byVariant := map[string]int{}
		for _, h := range m.History {
			j, ok := byVariant[h.Variant]
			if !ok {
				j = len(c.Series)
				byVariant[h.Variant] = j
				c.Series = append(c.Series, chart.LiftSeries{Name: h.Variant})
			}
			c.Series[j].Points = append(c.Series[j].Points, chart.LiftPoint{T: h.Time, Lift: h.Lift, Lo: h.CI[0], Hi: h.CI[1], Decision: h.Decision})
		}
		if g := m.Guardrail; g != nil {
			limit := g.Limit
			c.Threshold, c.ThresholdLabel = &limit, "guardrail "+Pct(limit)
		}
		for _, mk := range m.Markers {
			c.Events = append(c.Events, chart.Event{T: mk.Time, Label: mk.Label, Kind: mk.Kind, Decision: mk.Decision})
		}
		m.Chart = c.SVG()
	}
	for i := range p.Segments {
		s := &p.Segments[i]
		multi := len(s.Total) > 1
		var rows []chart.ForestRow
		label := func(value, variant string) string {
			if multi {
				return value + " · " + variant
			}
			return value
		}
		// Values by lift, highest first, the total in its place among them: a glance
		// shows who is above and who below the whole flag.
		for _, r := range s.Rows {
			rows = append(rows, chart.ForestRow{Label: label(r.Value, r.Variant), Lift: r.Lift, Lo: r.CI[0], Hi: r.CI[1], N: r.N, Decision: r.Decision})
		}
		for _, t := range s.Total {
			rows = append(rows, chart.ForestRow{Label: label("all users", t.Variant), Lift: t.Lift, Lo: t.CI[0], Hi: t.CI[1], N: t.N, Decision: t.Decision, Total: true})
		}
		sort.SliceStable(rows, func(a, b int) bool { return rows[a].Lift > rows[b].Lift })
		var threshold *float64
		for _, m := range p.Metrics {
			if m.Name == s.Metric && m.Guardrail != nil {
				l := m.Guardrail.Limit
				threshold = &l
			}
		}
		s.Chart = chart.Forest{Title: s.Metric + " by " + s.Property, Rows: rows, Threshold: threshold}.SVG()
	}
	for i := range p.Shift.Cohorts {
		c := &p.Shift.Cohorts[i]
		var rows []chart.ForestRow
		for _, pt := range c.Points {
			rows = append(rows, chart.ForestRow{Label: pt.Value, Lift: pt.Lift, Lo: pt.CI[0], Hi: pt.CI[1], N: pt.N, Decision: pt.Decision})
		}
		c.Chart = chart.Cohorts{Title: c.Metric + " (" + c.Variant + ") by exposure-day cohort", Rows: rows, ShiftAt: c.ShiftAt}.SVG()
	}
	e := &p.Exposures
	b := chart.Bars{Title: "users first exposed per day", YLabel: "users"}
	for _, d := range e.Days {
		b.Categories = append(b.Categories, d.Day.Format("Jan 2"))
	}
	for j, v := range e.Variants {
		s := chart.BarSeries{Name: v}
		for _, d := range e.Days {
			s.Values = append(s.Values, float64(d.Users[j]))
		}
		b.Series = append(b.Series, s)
	}
	e.Chart = b.SVG()
}
