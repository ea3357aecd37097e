// Package digest turns the analyzer's results history into the weekly growth review's
// content: per flag, a status, the users per variant, each metric's total lift with the
// segments that decide or diverge, the flag-level findings, and what changed since last
// week. It reads the latest pass per flag from analysis_results and leaves wording and
// layout to pipeline/render and the picture to pipeline/chart.
//
// The decision that shapes it: a flag's status follows the same fixed priority as the
// incident headline in Slack (alert.Priority: guardrail breach > SRM > segment divergence
// > loss > win > shift > stale), taken over every row of the flag — totals, segment values
// and whole-flag findings — so the digest never headlines "win" for a flag whose thread
// says a segment is losing. Everything is ordered by priority, then name, so two digests
// of the same data read the same.
package digest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Row is one analysis result: a (flag, metric, segment, variant) at one analyzer pass
// (SPEC §6, `analyzer once`). Whole-flag findings (srm, stale, …) have no metric; whole
// segment-property findings (segment_divergence by a property) have a property and no
// value. A baseline row (the control) has neither lift nor interval.
type Row struct {
	PassTime        time.Time
	Flag            string
	Metric          string
	SegmentProperty string
	SegmentValue    string
	Variant         string
	N               uint64
	ControlN        uint64
	Mean            float64
	ControlMean     float64
	Lift            float64
	CILow, CIHigh   float64
	P               float64
	ChanceToWin     float64
	Decision        string
	Reason          string
	// Discovered is set on the rows of a property the analyzer found by itself
	// (property discovery) rather than one the monitors file lists.
	Discovered bool
}

// Overall reports whether r is about the whole population.
func (r Row) Overall() bool { return r.SegmentProperty == "" }

// Baseline reports whether r is the control variant's row (no comparison).
func (r Row) Baseline() bool {
	return r.CILow == 0 && r.CIHigh == 0 && r.Lift == 0 && (r.Decision == "" || r.Decision == alert.InsufficientData)
}

// HasInterval reports whether r carries a confidence interval (a whole-property finding
// or a baseline has none).
func (r Row) HasInterval() bool {
	return r.CILow != r.CIHigh && !math.IsNaN(r.CILow) && !math.IsNaN(r.CIHigh)
}

func (r Row) key() string {
	return r.Flag + "|" + r.Metric + "|" + r.SegmentProperty + "=" + r.SegmentValue + "|" + r.Variant
}

// Source gives the digest its data.
type Source interface {
	// Results returns each flag's rows from its latest analyzer pass in (at-7d, at].
	Results(ctx context.Context, at time.Time) ([]Row, error)
}

// ClickHouse reads analysis_results (written by the analyzer).
type ClickHouse struct{ Conn store.Conn }

// Results implements Source. The analyzer's exposure-day cohorts and its correlation
// rows are not results of their own and are left out; its heterogeneity rows say which
// properties explain a result (Summarise keeps them apart).
func (s ClickHouse) Results(ctx context.Context, at time.Time) ([]Row, error) {
	hi, lo := strconv.FormatInt(at.Unix(), 10), strconv.FormatInt(at.Add(-7*24*time.Hour).Unix(), 10)
	rows, err := s.Conn.Query(ctx, `SELECT pass_time, flag, metric, segment_property, segment_value, variant,
    n, control_n, mean, control_mean, lift, ci_low, ci_high, p, chance_to_win, decision, reason, toUInt8(discovered)
FROM analysis_results
WHERE segment_property != '$exposure_day' AND decision != 'correlation' AND (flag, pass_time) IN (
    SELECT flag, max(pass_time) FROM analysis_results
    WHERE pass_time <= toDateTime(`+hi+`) AND pass_time > toDateTime(`+lo+`) GROUP BY flag)
ORDER BY flag, metric, segment_property, segment_value, variant`)
	if err != nil {
		return nil, fmt.Errorf("query analysis_results: %w", err)
	}
	defer rows.Close()
	var out []Row
	seen := map[string]int{}
	for rows.Next() {
		var r Row
		var discovered uint8
		if err := rows.Scan(&r.PassTime, &r.Flag, &r.Metric, &r.SegmentProperty, &r.SegmentValue, &r.Variant,
			&r.N, &r.ControlN, &r.Mean, &r.ControlMean, &r.Lift, &r.CILow, &r.CIHigh, &r.P, &r.ChanceToWin,
			&r.Decision, &r.Reason, &discovered); err != nil {
			return nil, fmt.Errorf("scan analysis_results: %w", err)
		}
		r.Discovered = discovered == 1
		// A pass written twice (at-least-once): keep one. A property's heterogeneity
		// row shares its key with the property's divergence row.
		k := r.key() + "|" + strconv.FormatBool(r.Decision == heterogeneity)
		if i, dup := seen[k]; dup {
			out[i] = r
			continue
		}
		seen[k] = len(out)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read analysis_results: %w", err)
	}
	return out, nil
}

// Rank orders decisions for the digest: alert.Priority for the findings, then
// inconclusive, then insufficient data. Lower is more important.
func Rank(decision string) int {
	switch decision {
	case alert.Inconclusive:
		return 20
	case alert.InsufficientData, "":
		return 21
	}
	return alert.Priority(decision)
}

// decided reports whether a segment row says something on its own.
func decided(d string) bool {
	return d == alert.Win || d == alert.Loss || d == alert.GuardrailBreach || d == alert.BehaviourShift
}

// Flag is one flag's part of the digest.
type Flag struct {
	Key string
	// Status is the most important decision over all the flag's rows (Rank), and Where
	// the segment it is about ("GB", "by $geoip_country_code"; "" for the whole flag).
	Status, Where string
	Metric        string // the metric Status is about, if any
	// Was is last week's status, "" when the flag had no results then.
	Was      string
	Users    []VariantUsers
	Metrics  []Metric
	Findings []Row // whole-flag findings (srm, stale, behaviour_shift without a metric)
	// New is set when the flag had no results last week; Changes are then empty.
	New     bool
	Changes []Change
	// Explains are the properties across whose values the flag's effect differs (the
	// analyzer's heterogeneity test, configured and discovered properties alike), most
	// significant first; NoEvidence the properties tried without evidence that it does.
	Explains   []Property
	NoEvidence []string
}

// Property is a property that explains a flag's result: the metrics whose effect
// differs across its values.
type Property struct {
	Name       string
	Metrics    []string
	Discovered bool
	p          float64
}

// heterogeneity is the decision word of the analyzer's property-analysis rows.
const heterogeneity = "heterogeneity"

// explain splits a flag's heterogeneity rows into the properties that explain its
// result and those that do not, from the verdict each row states.
func explain(rows []Row) ([]Property, []string) {
	byName := map[string]*Property{}
	tried := map[string]bool{}
	for _, r := range rows {
		tried[r.SegmentProperty] = true
		if !strings.Contains(r.Reason, alert.EffectDiffers) {
			continue
		}
		p := byName[r.SegmentProperty]
		if p == nil {
			p = &Property{Name: r.SegmentProperty, p: r.P}
			byName[r.SegmentProperty] = p
		}
		if !slices.Contains(p.Metrics, r.Metric) {
			p.Metrics = append(p.Metrics, r.Metric)
		}
		p.Discovered = p.Discovered || r.Discovered
		p.p = min(p.p, r.P)
	}
	var explains []Property
	for _, p := range byName {
		sort.Strings(p.Metrics)
		explains = append(explains, *p)
	}
	sort.Slice(explains, func(i, j int) bool {
		if explains[i].p != explains[j].p {
			return explains[i].p < explains[j].p
		}
		return explains[i].Name < explains[j].Name
	})
	var none []string
	for name := range tried {
		if byName[name] == nil {
			none = append(none, name)
		}
	}
	sort.Strings(none)
	return explains, none
}

// Change is a metric total that moved since last week: its decision changed, it is new,
// or its lift moved by five points or more.
type Change struct {
	Metric, Variant string
	// From and To are the decisions (equal when only the lift moved); From is "" for a
	// metric that is new this week.
	From, To         string
	FromLift, ToLift float64
}

// VariantUsers is a variant's number of users.
type VariantUsers struct {
	Variant string
	N       uint64
}

// Metric is one metric and variant of a flag: its total and the segments that decide or
// diverge.
type Metric struct {
	Name, Variant string
	Total         *Row
	// Divergence is the whole-property row that says the segments diverge, if any.
	Divergence *Row
	// Segments are the segment values worth showing: those with a decision of their own,
	// and every value of a diverging property; by Rank, then property and value.
	Segments []Row
	rank     int
}

// Rank is the most important decision of the metric (total, divergence, segments).
func (m Metric) Rank() int { return m.rank }

func status(rows []Row) (decision, where, metric string) {
	best := Row{Decision: alert.InsufficientData}
	found := false
	for _, r := range rows {
		if r.Decision == "" {
			continue
		}
		if !found || Rank(r.Decision) < Rank(best.Decision) ||
			(Rank(r.Decision) == Rank(best.Decision) && r.Overall() && !best.Overall()) {
			best, found = r, true
		}
	}
	switch {
	case best.SegmentValue != "":
		where = best.SegmentValue
	case best.SegmentProperty != "":
		where = "by " + best.SegmentProperty
	}
	return best.Decision, where, best.Metric
}

// Summarise builds the per-flag digest from this week's and last week's rows, most
// important flag first.
func Summarise(now, prev []Row) []Flag {
	byFlag := map[string][]Row{}
	hetByFlag := map[string][]Row{}
	for _, r := range now {
		if r.Decision == heterogeneity {
			hetByFlag[r.Flag] = append(hetByFlag[r.Flag], r)
			continue
		}
		byFlag[r.Flag] = append(byFlag[r.Flag], r)
	}
	prevByFlag := map[string][]Row{}
	for _, r := range prev {
		if r.Decision != heterogeneity {
			prevByFlag[r.Flag] = append(prevByFlag[r.Flag], r)
		}
	}
	out := make([]Flag, 0, len(byFlag))
	for key, rows := range byFlag {
		f := Flag{Key: key}
		f.Status, f.Where, f.Metric = status(rows)
		if p := prevByFlag[key]; len(p) > 0 {
			f.Was, _, _ = status(p)
		}
		users := map[string]uint64{}
		for _, r := range rows {
			if r.Overall() && r.Metric != "" && r.Variant != "" {
				users[r.Variant] = max(users[r.Variant], r.N)
			}
			if r.Metric == "" && r.Decision != "" && Rank(r.Decision) < Rank(alert.Inconclusive) {
				f.Findings = append(f.Findings, r)
			}
		}
		for v, n := range users {
			f.Users = append(f.Users, VariantUsers{v, n})
		}
		sort.Slice(f.Users, func(i, j int) bool { return f.Users[i].Variant < f.Users[j].Variant })
		sort.Slice(f.Findings, func(i, j int) bool {
			a, b := f.Findings[i], f.Findings[j]
			if Rank(a.Decision) != Rank(b.Decision) {
				return Rank(a.Decision) < Rank(b.Decision)
			}
			return a.SegmentProperty < b.SegmentProperty
		})
		f.Metrics = metrics(rows)
		f.Explains, f.NoEvidence = explain(hetByFlag[key])
		f.New = len(prevByFlag[key]) == 0
		if !f.New {
			f.Changes = changes(rows, prevByFlag[key])
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		if ri, rj := Rank(out[i].Status), Rank(out[j].Status); ri != rj {
			return ri < rj
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// metrics groups a flag's metric rows by (metric, variant), leaving out the baseline.
func metrics(rows []Row) []Metric {
	type id struct{ name, variant string }
	byID := map[id]*Metric{}
	get := func(r Row) *Metric {
		k := id{r.Metric, r.Variant}
		m := byID[k]
		if m == nil {
			m = &Metric{Name: r.Metric, Variant: r.Variant, rank: Rank("")}
			byID[k] = m
		}
		return m
	}
	diverging := map[id]map[string]bool{}
	for _, r := range rows {
		if r.Metric == "" || r.Baseline() {
			continue
		}
		if r.SegmentProperty != "" && r.SegmentValue == "" && r.Decision == alert.SegmentDivergence {
			k := id{r.Metric, r.Variant}
			if diverging[k] == nil {
				diverging[k] = map[string]bool{}
			}
			diverging[k][r.SegmentProperty] = true
		}
	}
	for _, r := range rows {
		if r.Metric == "" || r.Baseline() {
			continue
		}
		r := r
		m := get(r)
		switch {
		case r.Overall():
			m.Total = &r
		case r.SegmentValue == "":
			if r.Decision == alert.SegmentDivergence {
				m.Divergence = &r
			}
		case decided(r.Decision) || diverging[id{r.Metric, r.Variant}][r.SegmentProperty]:
			m.Segments = append(m.Segments, r)
		default:
			continue
		}
		if r.Decision != "" {
			m.rank = min(m.rank, Rank(r.Decision))
		}
	}
	out := make([]Metric, 0, len(byID))
	for _, m := range byID {
		if m.Total == nil && m.Divergence == nil && len(m.Segments) == 0 {
			continue
		}
		sort.Slice(m.Segments, func(i, j int) bool {
			a, b := m.Segments[i], m.Segments[j]
			if Rank(a.Decision) != Rank(b.Decision) {
				return Rank(a.Decision) < Rank(b.Decision)
			}
			if a.SegmentProperty != b.SegmentProperty {
				return a.SegmentProperty < b.SegmentProperty
			}
			return a.SegmentValue < b.SegmentValue
		})
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Variant < b.Variant
	})
	return out
}

// changes lists the metric totals that moved since last week, in metric order.
func changes(now, prev []Row) []Change {
	old := map[string]Row{}
	for _, r := range prev {
		old[r.key()] = r
	}
	var totals []Row
	for _, r := range now {
		if r.Overall() && r.Metric != "" && !r.Baseline() {
			totals = append(totals, r)
		}
	}
	sort.Slice(totals, func(i, j int) bool {
		if totals[i].Metric != totals[j].Metric {
			return totals[i].Metric < totals[j].Metric
		}
		return totals[i].Variant < totals[j].Variant
	})
	var out []Change
	for _, r := range totals {
		c := Change{Metric: r.Metric, Variant: r.Variant, To: r.Decision, ToLift: r.Lift}
		o, ok := old[r.key()]
		if ok {
			c.From, c.FromLift = o.Decision, o.Lift
		}
		if !ok || o.Decision != r.Decision || math.Abs(r.Lift-o.Lift) >= 0.05 {
			out = append(out, c)
		}
	}
	return out
}
