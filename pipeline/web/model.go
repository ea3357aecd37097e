package web

import (
	"context"
	"errors"
	"html/template"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/stats"
)

// ExposureDay is the pseudo segment property of exposure-day cohorts (the analyzer's
// analyze.ExposureDay; repeated here so the pages do not depend on the analyzer).
const ExposureDay = "$exposure_day"

// The analyzer's property-analysis rows (analyze.Heterogeneity and analyze.Correlation):
// not results of their own but the evidence of what explains a flag's result; the page
// lists them in its own section.
const (
	decisionHeterogeneity = "heterogeneity"
	decisionCorrelation   = "correlation"
)

// isPropertyAnalysis is a heterogeneity or correlation row.
func isPropertyAnalysis(x Result) bool {
	return x.Decision == decisionHeterogeneity || x.Decision == decisionCorrelation
}

// Multiple is the variant of users who saw two or more variants of a flag.
const Multiple = "$multiple"

// FlagSummary is one line of the flags list (and the head of a flag's page).
type FlagSummary struct {
	Key         string `json:"key"`
	Declared    bool   `json:"declared"`
	Status      Status `json:"status"`
	StatusLabel string `json:"status_label"`
	// Verdict is one sentence: what the latest pass says about the flag.
	Verdict string `json:"verdict"`
	// Action is what to do now.
	Action   string         `json:"action"`
	Control  string         `json:"control"`
	Variants []VariantUsers `json:"variants"`
	// MinUsersPerVariant is the minimum sample before a decision (monitors defaults).
	MinUsersPerVariant int        `json:"min_users_per_variant"`
	FirstExposure      *time.Time `json:"first_exposure,omitempty"`
	LastExposure       *time.Time `json:"last_exposure,omitempty"`
	// AgeSeconds is the time since first exposure.
	AgeSeconds int64      `json:"age_seconds"`
	LastPass   *time.Time `json:"last_pass,omitempty"`
	PassID     string     `json:"pass_id,omitempty"`
	RolledBack *Rollback  `json:"rolled_back,omitempty"`
	// Wait is the sample-size estimate behind a "wait" action, when there is one.
	Wait *WaitEstimate `json:"wait,omitempty"`
}

// VariantUsers is a variant and its users in the latest pass.
type VariantUsers struct {
	Variant string `json:"variant"`
	Users   int64  `json:"users"`
	Control bool   `json:"control,omitempty"`
}

// FlagPage is everything on one flag's page; /api/flags/{key} returns it as JSON.
type FlagPage struct {
	FlagSummary
	Split    []SplitShare  `json:"expected_split"`
	Metrics  []MetricView  `json:"metrics"`
	Findings []FindingView `json:"findings"`
	Segments []SegmentView `json:"segments"`
	// Explain is property analysis: which properties explain the result and which do not.
	Explain   ExplainView   `json:"explain"`
	Shift     ShiftView     `json:"behaviour_shift"`
	Exposures ExposureView  `json:"exposures"`
	Timeline  []TimelineRow `json:"timeline"`
	Users     UsersView     `json:"users"`
	// Effect is the effect size the wait estimates are for (0.05 = 5%).
	Effect float64 `json:"effect"`
	Alpha  float64 `json:"alpha"`
}

// SplitShare is a variant's expected share of users.
type SplitShare struct {
	Variant string  `json:"variant"`
	Share   float64 `json:"share"`
}

// MetricView is one metric of a flag: its results per test variant and its history.
type MetricView struct {
	Name      string         `json:"name"`
	Kind      string         `json:"kind"`
	Goal      string         `json:"goal"`
	Primary   bool           `json:"primary"`
	Guardrail *GuardrailView `json:"guardrail,omitempty"`
	Control   ArmView        `json:"control"`
	Results   []ResultView   `json:"results"`
	History   []HistoryPoint `json:"history"`
	Markers   []Marker       `json:"markers"`
	Chart     template.HTML  `json:"-"`
}

// GuardrailView is a guardrail's limit as a signed relative change (+0.3 for "must not
// rise more than 30%").
type GuardrailView struct {
	Limit float64 `json:"limit"`
	Text  string  `json:"text"`
}

// ArmView is the control variant of a comparison.
type ArmView struct {
	Variant string  `json:"variant"`
	N       int64   `json:"n"`
	Mean    float64 `json:"mean"`
}

// ResultView is one test variant against control, as the latest pass found it.
type ResultView struct {
	Variant     string     `json:"variant"`
	N           int64      `json:"n"`
	ControlN    int64      `json:"control_n"`
	Mean        float64    `json:"mean"`
	ControlMean float64    `json:"control_mean"`
	Lift        float64    `json:"lift"`
	CI          [2]float64 `json:"ci"`
	SE          float64    `json:"se"`
	P           float64    `json:"p"`
	ChanceToWin float64    `json:"chance_to_win"`
	CUPED       bool       `json:"cuped"`
	Decision    string     `json:"decision"`
	Reason      string     `json:"reason"`
}

// HistoryPoint is a test variant's cumulative lift at one past pass.
type HistoryPoint struct {
	Time     time.Time  `json:"time"`
	Variant  string     `json:"variant"`
	N        int64      `json:"n"`
	Lift     float64    `json:"lift"`
	CI       [2]float64 `json:"ci"`
	Decision string     `json:"decision"`
}

// Marker is an event drawn on a lift-over-time chart: an alert or a rollback.
type Marker struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"` // alert, rollback
	Decision string    `json:"decision,omitempty"`
	Label    string    `json:"label"`
}

// FindingView is a finding about the whole flag or a whole segment property.
type FindingView struct {
	Decision string  `json:"decision"`
	Metric   string  `json:"metric,omitempty"`
	Property string  `json:"property,omitempty"`
	Variant  string  `json:"variant,omitempty"`
	N        int64   `json:"n,omitempty"`
	P        float64 `json:"p,omitempty"`
	Lift     float64 `json:"lift,omitempty"`
	Reason   string  `json:"reason"`
}

// SegmentView is one segment property × metric: each value's lift with its interval.
type SegmentView struct {
	Property   string        `json:"property"`
	Metric     string        `json:"metric"`
	Primary    bool          `json:"primary"`
	Discovered bool          `json:"discovered"`
	Total      []ResultView  `json:"total"`
	Rows       []SegmentRow  `json:"rows"`
	Divergence *FindingView  `json:"divergence,omitempty"`
	Chart      template.HTML `json:"-"`
}

// SegmentRow is one segment value's result (for one test variant).
type SegmentRow struct {
	Value string `json:"value"`
	ResultView
}

// ExplainView is what the analyzer's property analysis found for a flag (its
// heterogeneity and correlation rows): the properties across whose values the effect
// differs, the others tried, and the values that go with a metric in every variant.
type ExplainView struct {
	// Tried is how many properties (configured and discovered) the flag was analysed by.
	Tried      int               `json:"properties_tried"`
	Explains   []PropertyView    `json:"explains"`
	NoEvidence []PropertyView    `json:"no_evidence"`
	Correlated []CorrelationView `json:"correlated"`
}

// PropertyView is one property × metric × test variant's heterogeneity test.
type PropertyView struct {
	Property   string  `json:"property"`
	Metric     string  `json:"metric"`
	Variant    string  `json:"variant"`
	Discovered bool    `json:"discovered"`
	P          float64 `json:"p"`
	Reason     string  `json:"reason"`
}

// CorrelationView is one property value's metric relative to the rest of a variant's
// users, reported when its interval (corrected across the pass) excludes zero.
type CorrelationView struct {
	Property   string     `json:"property"`
	Value      string     `json:"value"`
	Metric     string     `json:"metric"`
	Variant    string     `json:"variant"`
	Discovered bool       `json:"discovered"`
	Lift       float64    `json:"lift"`
	CI         [2]float64 `json:"ci"`
	P          float64    `json:"p"`
	Reason     string     `json:"reason"`
}

// maxExplain bounds each list of the explain section: the strongest first.
const maxExplain = 10

// explain collects the property-analysis rows. A heterogeneity row explains the result
// when the analyzer found that the effect differs across the property's values;
// a correlation row is listed when the analyzer found it correlated.
func (b *builder) explain(rows []Result) ExplainView {
	ev := ExplainView{Explains: []PropertyView{}, NoEvidence: []PropertyView{}, Correlated: []CorrelationView{}}
	for _, x := range rows {
		if !isPropertyAnalysis(x) {
			continue
		}
		if x.Decision == decisionCorrelation {
			if strings.HasPrefix(x.Reason, "correlated") {
				ev.Correlated = append(ev.Correlated, CorrelationView{Property: x.SegmentProperty, Value: x.SegmentValue,
					Metric: x.Metric, Variant: x.Variant, Discovered: x.Discovered, Lift: x.Lift,
					CI: [2]float64{x.CILow, x.CIHigh}, P: x.P, Reason: x.Reason})
			}
			continue
		}
		pv := PropertyView{Property: x.SegmentProperty, Metric: x.Metric, Variant: x.Variant, Discovered: x.Discovered, P: x.P, Reason: x.Reason}
		// The analyzer states its verdict (at the flag's α, or under the pass's FDR);
		// rows written before it did are judged at the default α.
		differs := strings.Contains(x.Reason, alert.EffectDiffers) ||
			(!strings.Contains(x.Reason, alert.NoEvidence) && x.P < b.mons.Defaults.Alpha)
		if differs {
			ev.Explains = append(ev.Explains, pv)
		} else {
			ev.NoEvidence = append(ev.NoEvidence, pv)
		}
	}
	props := map[string]bool{}
	for _, x := range rows {
		if x.SegmentProperty != "" && x.SegmentProperty != ExposureDay && x.Metric != "" {
			props[x.SegmentProperty] = true
		}
	}
	ev.Tried = len(props)
	byP := func(ps []PropertyView) []PropertyView {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].P < ps[j].P })
		return ps[:min(len(ps), maxExplain)]
	}
	ev.Explains, ev.NoEvidence = byP(ev.Explains), byP(ev.NoEvidence)
	sort.SliceStable(ev.Correlated, func(i, j int) bool { return math.Abs(ev.Correlated[i].Lift) > math.Abs(ev.Correlated[j].Lift) })
	ev.Correlated = ev.Correlated[:min(len(ev.Correlated), maxExplain)]
	return ev
}

// ShiftView is the exposure-day cohorts of the flag's metrics and the behaviour shifts
// found in them.
type ShiftView struct {
	Cohorts  []CohortSeries `json:"cohorts"`
	Findings []FindingView  `json:"findings"`
}

// CohortSeries is one metric × test variant's lift per exposure-day cohort.
type CohortSeries struct {
	Metric  string        `json:"metric"`
	Variant string        `json:"variant"`
	Points  []SegmentRow  `json:"points"`
	ShiftAt string        `json:"shift_at,omitempty"`
	Chart   template.HTML `json:"-"`
}

// ExposureView is the users first exposed per day and variant, and the SRM check.
type ExposureView struct {
	Variants []string         `json:"variants"`
	Days     []ExposureDayRow `json:"days"`
	Totals   []VariantUsers   `json:"totals"`
	Multiple int64            `json:"multiple"`
	SRM      SRMView          `json:"srm"`
	Chart    template.HTML    `json:"-"`
}

// ExposureDayRow is one day's new users per variant (in ExposureView.Variants order).
type ExposureDayRow struct {
	Day   time.Time `json:"day"`
	Users []int64   `json:"users"`
}

// SRMView is the sample-ratio check: the analyzer's verdict and the split behind it.
type SRMView struct {
	// Alarm is set when the latest pass reported srm.
	Alarm    bool           `json:"alarm"`
	P        float64        `json:"p"`
	Checked  bool           `json:"checked"`
	Expected []SplitShare   `json:"expected"`
	Observed []SplitShare   `json:"observed"`
	Users    []VariantUsers `json:"users"`
	Reason   string         `json:"reason,omitempty"`
}

// TimelineRow is one thing that happened: an alert, a Slack post, a rollback.
type TimelineRow struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"` // alert, slack, rollback
	Decision string    `json:"decision,omitempty"`
	Severity string    `json:"severity,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Status   string    `json:"status,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

// UsersView is the "users and recordings" tab. Listing users is off unless the
// monitors enable it (expose_users) and the page has a UserLister; until then the page
// says how to turn it on.
type UsersView struct {
	Enabled bool          `json:"enabled"`
	Hint    string        `json:"hint,omitempty"`
	Users   []ExposedUser `json:"users,omitempty"`
	// Metric is the metric Converted refers to (the primary one, in its window).
	Metric string `json:"metric,omitempty"`
}

// UserLister lists the users behind a flag's results (SPEC §12): the slot the
// users-and-recordings tab fills when the monitors file has expose_users: true. It
// returns ErrUsersOff for a flag whose users are not exposed: the tab then says how to
// turn listing on.
type UserLister interface {
	Users(ctx context.Context, flag string) ([]ExposedUser, error)
}

// ErrUsersOff is a UserLister's answer for a flag that does not expose its users.
var ErrUsersOff = errors.New("listing users is off for this flag")

// ExposedUser is one user behind a result: their variant and segment values, their
// first exposure, their sessions and links to the recordings of those sessions.
type ExposedUser struct {
	DistinctID    string            `json:"distinct_id"`
	Variant       string            `json:"variant"`
	Segments      map[string]string `json:"segments,omitempty"`
	FirstExposure time.Time         `json:"first_exposure"`
	Converted     bool              `json:"converted"`
	Sessions      []string          `json:"sessions,omitempty"`
	// Recordings are the links to Sessions' recordings, one per session in the same
	// order, when the flag has a recordings_url.
	Recordings []string `json:"recordings,omitempty"`
}

// usersOff is what the tab says while listing users is off.
const usersOff = "Listing the users behind a result is off. Set expose_users: true in the monitors file to list, per variant and segment, the users, their first exposure, their $session_id values and links to their session recordings."

// builder turns what the Reader read into pages.
type builder struct {
	mons   *config.Monitors
	now    time.Time
	effect float64
}

// isTotal is a metric's row for the whole population.
func isTotal(x Result) bool { return x.Metric != "" && x.SegmentProperty == "" && x.Variant != "" }

// isFinding is a row about a whole flag or a whole segment property.
func isFinding(x Result) bool {
	return x.SegmentValue == "" && !isTotal(x) && x.Decision != alert.InsufficientData && !isPropertyAnalysis(x)
}

// flagConfig is the flag's monitor. variants are every variant seen when known (a
// page reads them from the exposures); otherwise (the list) only the test variants of
// the results are known, and the control is the one those leave out.
func (b *builder) flagConfig(key string, variants []string, complete bool) config.Flag {
	if complete {
		f := b.mons.ForFlag(key, variants)
		if f.Control == "" {
			f.Control = "control"
		}
		return f
	}
	f := b.mons.ForFlag(key, nil)
	if i := slices.IndexFunc(b.mons.Flags, func(x config.Flag) bool { return x.Key == key }); i < 0 || b.mons.Flags[i].Control == "" {
		switch {
		case slices.Contains(variants, "true") && !slices.Contains(variants, "false"):
			f.Control = "false"
		case !slices.Contains(variants, "control"):
			f.Control = "control"
		}
	}
	return f
}

// testVariants are the variants the rows compare with control, in name order.
func testVariants(rows []Result) []string {
	var vs []string
	for _, x := range rows {
		if x.Variant != "" && x.Metric != "" && !isPropertyAnalysis(x) && !slices.Contains(vs, x.Variant) {
			vs = append(vs, x.Variant)
		}
	}
	sort.Strings(vs)
	return vs
}

// usersOf reads the users per variant from the totals of a pass: every metric of a flag
// counts the same users, so the largest n seen per variant is the variant's size.
func usersOf(control string, rows []Result) []VariantUsers {
	var cn int64
	per := map[string]int64{}
	for _, x := range rows {
		if !isTotal(x) {
			continue
		}
		cn = max(cn, x.ControlN)
		per[x.Variant] = max(per[x.Variant], x.N)
	}
	if len(per) == 0 {
		return nil
	}
	out := []VariantUsers{{Variant: control, Users: cn, Control: true}}
	for _, v := range testVariants(rows) {
		out = append(out, VariantUsers{Variant: v, Users: per[v]})
	}
	return out
}

// summary builds a flag's line of the list from its latest whole-flag rows (and, for
// the action of a divergence, the segment rows when the caller has them).
func (b *builder) summary(key string, act *Activity, rows []Result, rb *Rollback, variants []string) FlagSummary {
	complete := len(variants) > 0
	if !complete {
		variants = testVariants(rows)
	}
	f := b.flagConfig(key, variants, complete)
	s := FlagSummary{Key: key, Declared: f.Declared, Control: f.Control, MinUsersPerVariant: b.mons.Defaults.MinUsersPerVariant,
		RolledBack: rb}
	s.Variants = usersOf(f.Control, rows)
	if act != nil {
		first, last := act.First, act.Last
		s.FirstExposure, s.LastExposure = &first, &last
		s.AgeSeconds = int64(b.now.Sub(first).Seconds())
	}
	if len(rows) > 0 {
		t := rows[0].PassTime
		s.LastPass, s.PassID = &t, rows[0].PassID
	}
	v := b.verdict(f, s, rows)
	s.Status, s.StatusLabel, s.Verdict, s.Action, s.Wait = v.status, v.status.Label(), v.sentence, v.action, v.wait
	return s
}

// page builds a flag's page.
func (b *builder) page(d *FlagData) *FlagPage {
	var variants []string
	for _, e := range d.Exposures {
		if e.Variant != Multiple && !slices.Contains(variants, e.Variant) {
			variants = append(variants, e.Variant)
		}
	}
	for _, v := range testVariants(d.Latest) {
		if !slices.Contains(variants, v) {
			variants = append(variants, v)
		}
	}
	sort.Strings(variants)
	var rb *Rollback
	for _, a := range d.Alerts {
		if a.Rollback != nil && a.Rollback.Status == "ok" {
			rb = a.Rollback
		}
	}
	p := &FlagPage{FlagSummary: b.summary(d.Key, d.Activity, d.Latest, rb, variants),
		Effect: b.effect, Alpha: b.mons.Defaults.Alpha}
	f := b.flagConfig(d.Key, variants, len(variants) > 0)
	ordered := orderVariants(f.Control, variants)
	for i, share := range f.ExpectedSplit(ordered) {
		p.Split = append(p.Split, SplitShare{Variant: ordered[i], Share: share})
	}
	p.Metrics = b.metrics(f, d)
	for _, x := range d.Latest {
		if isFinding(x) && x.Decision != alert.SegmentDivergence && x.Decision != alert.BehaviourShift {
			p.Findings = append(p.Findings, finding(x))
		}
	}
	p.Segments = b.segments(f, d.Latest)
	p.Explain = b.explain(d.Latest)
	p.Shift = b.shift(f, d.Latest)
	p.Exposures = b.exposures(f, ordered, d, p.Variants)
	p.Timeline = timeline(d)
	p.Users = UsersView{Hint: usersOff}
	return p
}

func orderVariants(control string, vs []string) []string {
	out := []string{}
	if slices.Contains(vs, control) {
		out = append(out, control)
	}
	for _, v := range vs {
		if v != control {
			out = append(out, v)
		}
	}
	return out
}

func finding(x Result) FindingView {
	return FindingView{Decision: x.Decision, Metric: x.Metric, Property: x.SegmentProperty, Variant: x.Variant,
		N: x.N, P: x.P, Lift: x.Lift, Reason: x.Reason}
}

func resultView(x Result) ResultView {
	return ResultView{Variant: x.Variant, N: x.N, ControlN: x.ControlN, Mean: x.Mean, ControlMean: x.ControlMean,
		Lift: x.Lift, CI: [2]float64{x.CILow, x.CIHigh}, SE: x.SE, P: x.P, ChanceToWin: x.ChanceToWin, CUPED: x.CUPED,
		Decision: x.Decision, Reason: x.Reason}
}

// primaryMetric is the metric the page judges a flag by first (config's rule).
func (b *builder) primaryMetric(f config.Flag) string { return b.mons.PrimaryMetric(f) }

func guardrailView(g *config.Guardrail) *GuardrailView {
	if g == nil {
		return nil
	}
	limit, dir := g.Limit()
	if dir == config.Increase {
		return &GuardrailView{Limit: limit, Text: "must not rise more than " + Share(limit)}
	}
	return &GuardrailView{Limit: -limit, Text: "must not fall more than " + Share(limit)}
}

// metrics lists the flag's metrics in the monitors' order (then any metric the results
// have that the monitors no longer name), guardrails last.
func (b *builder) metrics(f config.Flag, d *FlagData) []MetricView {
	primary := b.primaryMetric(f)
	var out []MetricView
	seen := map[string]bool{}
	add := func(name string, cfg *config.Metric) {
		if seen[name] {
			return
		}
		seen[name] = true
		mv := MetricView{Name: name, Primary: name == primary, Control: ArmView{Variant: f.Control}, Results: []ResultView{},
			History: []HistoryPoint{}, Markers: []Marker{}}
		if cfg != nil {
			mv.Kind, mv.Goal, mv.Guardrail = string(cfg.Kind), string(cfg.Goal), guardrailView(cfg.Guardrail)
		}
		for _, x := range d.Latest {
			if isTotal(x) && x.Metric == name {
				mv.Results = append(mv.Results, resultView(x))
				mv.Control.N, mv.Control.Mean = x.ControlN, x.ControlMean
			}
		}
		for _, x := range d.History {
			if x.Metric == name {
				mv.History = append(mv.History, HistoryPoint{Time: x.PassTime, Variant: x.Variant, N: x.N, Lift: x.Lift,
					CI: [2]float64{x.CILow, x.CIHigh}, Decision: x.Decision})
			}
		}
		mv.Markers = markers(d.Alerts, f.Key, name)
		out = append(out, mv)
	}
	for i := range f.Metrics {
		add(f.Metrics[i].Name, &f.Metrics[i])
	}
	for _, x := range d.Latest {
		if isTotal(x) {
			add(x.Metric, nil)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		gi, gj := out[i].Guardrail != nil, out[j].Guardrail != nil
		if gi != gj {
			return !gi
		}
		return out[i].Primary && !out[j].Primary
	})
	return out
}

// markers are the alerts about a metric (any segment) and every rollback of the flag.
func markers(alerts []AlertEntry, flag, metric string) []Marker {
	out := []Marker{}
	prefix := flag + "|" + metric + "|"
	for _, a := range alerts {
		if strings.HasPrefix(a.DedupKey, prefix) {
			seg := strings.TrimPrefix(a.DedupKey, prefix)
			seg, _, _ = strings.Cut(seg, "|")
			label := strings.ReplaceAll(a.Decision, "_", " ")
			if seg != "" {
				label += " (" + seg + ")"
			}
			out = append(out, Marker{Time: a.At, Kind: "alert", Decision: a.Decision, Label: label})
		}
		if a.Rollback != nil {
			out = append(out, Marker{Time: a.Rollback.At, Kind: "rollback", Label: "rollback " + a.Rollback.Status})
		}
	}
	return out
}

// segments groups the per-value rows by property and metric; the exposure-day cohorts
// are the behaviour-shift section's.
func (b *builder) segments(f config.Flag, rows []Result) []SegmentView {
	primary := b.primaryMetric(f)
	type key struct{ prop, metric string }
	idx := map[key]int{}
	var out []SegmentView
	get := func(k key) *SegmentView {
		if i, ok := idx[k]; ok {
			return &out[i]
		}
		idx[k] = len(out)
		out = append(out, SegmentView{Property: k.prop, Metric: k.metric, Primary: k.metric == primary, Rows: []SegmentRow{}})
		for _, x := range rows {
			if isTotal(x) && x.Metric == k.metric {
				out[len(out)-1].Total = append(out[len(out)-1].Total, resultView(x))
			}
		}
		return &out[len(out)-1]
	}
	for _, x := range rows {
		if x.SegmentProperty == "" || x.SegmentProperty == ExposureDay || x.Metric == "" || isPropertyAnalysis(x) ||
			(x.SegmentValue != "" && x.Decision == alert.BehaviourShift) {
			continue // the explain and behaviour-shift sections' rows
		}
		sv := get(key{x.SegmentProperty, x.Metric})
		if x.Discovered {
			sv.Discovered = true
		}
		if x.SegmentValue == "" {
			if x.Decision == alert.SegmentDivergence {
				fv := finding(x)
				sv.Divergence = &fv
			}
			continue
		}
		sv.Rows = append(sv.Rows, SegmentRow{Value: x.SegmentValue, ResultView: resultView(x)})
	}
	// Primary metric first, then the monitors' order of properties as read.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Primary && !out[j].Primary })
	return out
}

// shift collects the exposure-day cohorts per metric and variant, and the shifts found.
func (b *builder) shift(f config.Flag, rows []Result) ShiftView {
	sv := ShiftView{Cohorts: []CohortSeries{}, Findings: []FindingView{}}
	idx := map[[2]string]int{}
	for _, x := range rows {
		if x.SegmentProperty != ExposureDay && x.SegmentValue != "" && x.Decision == alert.BehaviourShift {
			// A segment value's own shift (the analyzer runs the detector per value).
			sv.Findings = append(sv.Findings, finding(x))
			continue
		}
		if x.SegmentProperty != ExposureDay || x.Metric == "" {
			continue
		}
		if x.SegmentValue == "" {
			if x.Decision == alert.BehaviourShift {
				sv.Findings = append(sv.Findings, finding(x))
			}
			continue
		}
		k := [2]string{x.Metric, x.Variant}
		i, ok := idx[k]
		if !ok {
			i = len(sv.Cohorts)
			idx[k] = i
			sv.Cohorts = append(sv.Cohorts, CohortSeries{Metric: x.Metric, Variant: x.Variant})
		}
		sv.Cohorts[i].Points = append(sv.Cohorts[i].Points, SegmentRow{Value: x.SegmentValue, ResultView: resultView(x)})
	}
	for i := range sv.Cohorts {
		c := &sv.Cohorts[i]
		sort.Slice(c.Points, func(a, b int) bool { return c.Points[a].Value < c.Points[b].Value })
		for _, fnd := range sv.Findings {
			if fnd.Metric == c.Metric && fnd.Variant == c.Variant {
				c.ShiftAt = shiftStart(fnd.Reason)
			}
		}
	}
	primary := b.primaryMetric(f)
	sort.SliceStable(sv.Cohorts, func(i, j int) bool {
		return sv.Cohorts[i].Metric == primary && sv.Cohorts[j].Metric != primary
	})
	return sv
}

// shiftStart reads the first cohort of a shift from the analyzer's reason ("… users
// first exposed from 2026-10-06 on rose …").
func shiftStart(reason string) string {
	_, rest, ok := strings.Cut(reason, "first exposed from ")
	if !ok {
		return ""
	}
	day, _, ok := strings.Cut(rest, " on")
	if !ok {
		return ""
	}
	return day
}

// exposures builds the per-day table and the SRM check. The observed split is the
// latest pass's users per variant (what the analyzer tested); the daily counts come from
// the assignment state and include users who arrived after that pass.
func (b *builder) exposures(f config.Flag, ordered []string, d *FlagData, users []VariantUsers) ExposureView {
	ev := ExposureView{Variants: ordered, Days: []ExposureDayRow{}, Totals: []VariantUsers{}}
	col := map[string]int{}
	for i, v := range ordered {
		col[v] = i
	}
	byDay := map[time.Time]*ExposureDayRow{}
	totals := make([]int64, len(ordered))
	for _, e := range d.Exposures {
		if e.Variant == Multiple {
			ev.Multiple += e.Users
			continue
		}
		i, ok := col[e.Variant]
		if !ok {
			continue
		}
		r := byDay[e.Day]
		if r == nil {
			r = &ExposureDayRow{Day: e.Day, Users: make([]int64, len(ordered))}
			byDay[e.Day] = r
		}
		r.Users[i] += e.Users
		totals[i] += e.Users
	}
	for _, r := range byDay {
		ev.Days = append(ev.Days, *r)
	}
	sort.Slice(ev.Days, func(i, j int) bool { return ev.Days[i].Day.Before(ev.Days[j].Day) })
	for i, v := range ordered {
		ev.Totals = append(ev.Totals, VariantUsers{Variant: v, Users: totals[i], Control: v == f.Control})
	}
	srm := SRMView{Users: users}
	split := f.ExpectedSplit(ordered)
	for i, v := range ordered {
		srm.Expected = append(srm.Expected, SplitShare{Variant: v, Share: split[i]})
	}
	if len(users) >= 2 {
		var n []int64
		var total int64
		for _, u := range users {
			total += u.Users
		}
		exp := make([]float64, len(users))
		for i, u := range users {
			n = append(n, u.Users)
			if total > 0 {
				srm.Observed = append(srm.Observed, SplitShare{Variant: u.Variant, Share: float64(u.Users) / float64(total)})
			}
			if j := slices.Index(ordered, u.Variant); j >= 0 {
				exp[i] = split[j]
			}
		}
		if chk, err := stats.CheckSRM(n, exp); err == nil {
			srm.P, srm.Checked = chk.P, true
		}
	}
	for _, x := range d.Latest {
		if x.Decision == alert.SRM && x.SegmentProperty == "" && x.Metric == "" {
			srm.Alarm, srm.P, srm.Checked, srm.Reason = true, x.P, true, x.Reason
		}
	}
	ev.SRM = srm
	return ev
}

// subjectText reads an alert's subject (flag|metric|segment|variant) without the flag:
// "purchase conversion · $geoip_country_code=GB · test".
func subjectText(subject string) string {
	parts := strings.Split(subject, "|")
	var out []string
	for _, p := range parts[min(1, len(parts)):] {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " · ")
}

// timeline merges alerts, rollbacks and Slack posts, newest first.
func timeline(d *FlagData) []TimelineRow {
	out := []TimelineRow{}
	for _, a := range d.Alerts {
		out = append(out, TimelineRow{Time: a.At, Kind: "alert", Decision: a.Decision, Severity: a.Severity,
			Subject: subjectText(a.Subject)})
		if rb := a.Rollback; rb != nil {
			out = append(out, TimelineRow{Time: rb.At, Kind: "rollback", Decision: a.Decision, Status: rb.Status,
				Subject: rb.Action + " " + rb.Target, Detail: rb.Detail})
		}
	}
	for _, n := range d.Notifications {
		detail := n.Message
		if n.Error != "" {
			detail = n.Error
		}
		out = append(out, TimelineRow{Time: n.At, Kind: "slack", Decision: n.Decision, Severity: n.Severity,
			Status: n.Status, Subject: strings.TrimSpace(n.Kind + " " + n.Channel), Detail: detail})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out
}
