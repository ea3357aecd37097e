package analyze

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/render"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
)

// This file turns a pass's rows into incidents: one alert per flag that has something
// new, its findings in priority order (alert.Priority), a headline a product manager
// reads in ten seconds, and one recommendation for the whole flag that never
// contradicts a finding. Everything but the rollback call is pure.

// history is what earlier passes emitted, read once per pass from alert_log.
type history struct {
	// latched is the last emitted win/loss/guardrail decision of every subject.
	latched map[string]string
	// emitted is, per dedup key, when it was last emitted and at which severity.
	emitted map[string]logged
	// rolledBack names the flags whose rollback already succeeded.
	rolledBack map[string]bool
}

type logged struct {
	emittedMs int64
	severity  string
}

var latching = map[string]bool{alert.Win: true, alert.Loss: true, alert.GuardrailBreach: true}

// alertable decisions become findings; the others stay in the history only.
var alertable = map[string]bool{alert.Win: true, alert.Loss: true, alert.GuardrailBreach: true,
	alert.SRM: true, alert.SegmentDivergence: true, alert.Stale: true, alert.BehaviourShift: true}

// emittedFinding is one alert_log row: a finding an incident carried as new.
type emittedFinding struct {
	dedupKey, subject, decision, severity string
	rollback                              *alert.Rollback
}

// incident is one flag's alert in a pass, before its effects.
type incident struct {
	alert alert.Alert
	// emitted are the findings new in this pass, for the alert log.
	emitted []emittedFinding
	// rollback is the monitor's action, due because a critical finding is new and the
	// flag was not rolled back yet.
	rollback *config.Rollback
}

// alert builds the pass's incidents, runs a due rollback (once per flag), emits the
// incidents and then logs their new findings, after the broker acknowledged them.
func (a *Analyzer) alert(ctx context.Context, pass *Pass, monitors []*monitor, h *history) error {
	incs := a.incidents(pass.Rows, monitors, h, pass.Time)
	if len(incs) == 0 {
		return nil
	}
	run := a.rollbacks
	if run == nil {
		run = a.rollback
	}
	var out []alert.Alert
	var emitted []emittedFinding
	for _, inc := range incs {
		if inc.rollback != nil {
			inc.alert.Rollback = run(ctx, inc.rollback, &inc.alert)
			for i := range inc.emitted {
				if inc.emitted[i].severity == alert.Critical {
					inc.emitted[i].rollback = inc.alert.Rollback
				}
			}
		}
		for i := 0; a.Sessions != nil && i < len(inc.alert.Findings); i++ {
			if f := &inc.alert.Findings[i]; f.New {
				if f.Watch = a.Sessions(ctx, inc.alert.Flag, *f); f.Watch != nil {
					break
				}
			}
		}
		out = append(out, inc.alert)
		emitted = append(emitted, inc.emitted...)
	}
	if a.Emitter != nil {
		if err := a.Emitter.Emit(ctx, out); err != nil {
			return fmt.Errorf("emit %d alerts: %w", len(out), err)
		}
	}
	pass.Alerts = out
	_, wr := a.backend()
	return wr.recordAlerts(ctx, pass, emitted)
}

// incidents groups the alertable rows of each flag into one incident when at least one
// of them is new (or is critical, unresolved and due for a repeat).
func (a *Analyzer) incidents(rows []Row, monitors []*monitor, h *history, now time.Time) []incident {
	repeat := a.RepeatCritical
	if repeat <= 0 {
		repeat = 4 * time.Hour
	}
	byFlag := map[string]*monitor{}
	var flags []string
	for _, m := range monitors {
		byFlag[m.flag.Key] = m
		flags = append(flags, m.flag.Key)
	}
	// A breach of the whole population is one finding carrying its segments; the
	// segment rows stay in the history without findings of their own.
	breached := map[string]bool{}
	for _, r := range rows {
		if r.Decision == alert.GuardrailBreach && r.Segment == nil {
			breached[subject(r.Flag, r.Metric, nil, r.Variant)] = true
		}
	}
	found := map[string][]alert.Finding{}
	subjects := map[string]string{}
	for _, r := range rows {
		if !alertable[r.Decision] || (r.Segment != nil && breached[subject(r.Flag, r.Metric, nil, r.Variant)]) {
			continue
		}
		if _, ok := byFlag[r.Flag]; !ok {
			byFlag[r.Flag] = nil
			flags = append(flags, r.Flag)
		}
		f := a.finding(r, byFlag[r.Flag], rows)
		prev, seen := h.emitted[f.DedupKey]
		f.New = !seen || (prev.severity == alert.Critical && now.UnixMilli()-prev.emittedMs >= repeat.Milliseconds())
		found[r.Flag] = append(found[r.Flag], f)
		subjects[f.DedupKey] = subject(r.Flag, r.Metric, r.Segment, r.Variant)
	}
	sort.Strings(flags)
	var out []incident
	for _, flag := range slices.Compact(flags) {
		fs := found[flag]
		if !slices.ContainsFunc(fs, func(f alert.Finding) bool { return f.New }) {
			continue
		}
		sortFindings(fs)
		m := byFlag[flag]
		inc := incident{alert: a.incidentAlert(flag, m, fs, rows, now)}
		firstCritical := false
		for _, f := range fs {
			if f.New {
				inc.emitted = append(inc.emitted, emittedFinding{dedupKey: f.DedupKey, subject: subjects[f.DedupKey],
					decision: f.Decision, severity: f.Severity})
				if f.Severity == alert.Critical {
					if _, seen := h.emitted[f.DedupKey]; !seen {
						firstCritical = true
					}
				}
			}
		}
		if firstCritical && m != nil && m.flag.Rollback != nil && !h.rolledBack[flag] {
			inc.rollback = m.flag.Rollback
		}
		out = append(out, inc)
	}
	return out
}

// sortFindings orders findings by priority, then metric, segment and variant, so a
// message reads the same on every pass.
func sortFindings(fs []alert.Finding) {
	slices.SortStableFunc(fs, func(x, y alert.Finding) int {
		return cmp.Or(
			cmp.Compare(alert.Priority(x.Decision), alert.Priority(y.Decision)),
			cmp.Compare(x.Metric, y.Metric),
			cmp.Compare(segKey(x.Segment), segKey(y.Segment)),
			cmp.Compare(x.Variant, y.Variant))
	})
}

func segKey(s *Segment) string {
	if s == nil {
		return ""
	}
	return s.Property + "\x00" + s.ValueString()
}

var severityRank = map[string]int{alert.Critical: 0, alert.Warning: 1, alert.Info: 2}

// incidentAlert is the flag's alert: the headline finding in the top-level fields, every
// finding below it, and the recommendation.
func (a *Analyzer) incidentAlert(flag string, m *monitor, fs []alert.Finding, rows []Row, now time.Time) alert.Alert {
	h := fs[0]
	al := alert.Alert{Flag: flag, Metric: h.Metric, Segment: h.Segment, Variant: h.Variant, Decision: h.Decision,
		Severity: h.Severity, DedupKey: h.DedupKey, Summary: h.Summary, Reason: h.Reason, Numbers: h.Numbers,
		DetectedAt: now.UTC(), Findings: fs}
	for _, f := range fs {
		if severityRank[f.Severity] < severityRank[al.Severity] {
			al.Severity = f.Severity
		}
	}
	al.Action = recommend(fs, rows, flag)
	if m != nil {
		al.SlackChannel = m.flag.SlackChannel
	}
	if al.SlackChannel == "" {
		al.SlackChannel = a.Monitors.Defaults.SlackChannel
	}
	if a.PublicURL != "" {
		al.PageURL = strings.TrimRight(a.PublicURL, "/") + "/flags/" + url.PathEscape(flag)
	}
	return al
}

// finding describes one row for people: severity, a one-sentence summary and the numbers
// that exist for it.
func (a *Analyzer) finding(r Row, m *monitor, rows []Row) alert.Finding {
	f := alert.Finding{Metric: r.Metric, Segment: r.Segment, Variant: r.Variant, Decision: r.Decision, Reason: r.Reason,
		Discovered: r.Discovered}
	f.Numbers.PropertiesTried = r.PropertiesTried
	f.DedupKey = alert.DedupKey(r.Flag, r.Metric, r.Segment, r.Decision)
	if r.Variant != "" {
		f.DedupKey += "|" + r.Variant
	}
	hasRollback := m != nil && m.flag.Rollback != nil
	if m != nil {
		f.Numbers.Control = m.flag.Control
		for _, mc := range m.flag.Metrics {
			if mc.Name == r.Metric {
				f.Numbers.MetricKind = string(mc.Kind)
			}
		}
	}
	// Numbers only where the finding has them: a metric's comparison has users, means,
	// a lift and its interval; SRM has its p-value; divergence the total's lift and the
	// segments; stale and shift none of the comparison's.
	switch r.Decision {
	case alert.Win, alert.Loss, alert.GuardrailBreach, alert.SegmentDivergence:
		f.Numbers.ControlN, f.Numbers.VariantN = r.ControlN, r.N
		f.Numbers.ControlMean, f.Numbers.VariantMean = r.ControlMean, r.Mean
		f.Numbers.Lift, f.Numbers.CI, f.Numbers.P = r.Lift, r.CI, r.P
		f.Numbers.ChanceToWin, f.Numbers.CUPED, f.Numbers.Correction = r.ChanceToWin, r.CUPED, r.Correction
	case alert.SRM:
		f.Numbers.SRMP, f.Numbers.VariantN = r.P, r.N
	case alert.BehaviourShift:
		f.Numbers.Lift = r.Lift
	}
	switch {
	case r.Decision == alert.SegmentDivergence && r.Segment != nil:
		f.Numbers.Segments = segmentsOf(rows, r, r.Segment.Property)
	case r.Segment == nil && r.Metric != "":
		f.Numbers.Segments = segmentsOf(rows, r, "")
	}
	where := ""
	if r.Segment != nil && r.Segment.Value != nil {
		where = " in " + *r.Segment.Value
	}
	switch r.Decision {
	case alert.GuardrailBreach:
		f.Severity = alert.Critical
		f.Summary = fmt.Sprintf("%s breaks the %s guardrail%s: %s %s", r.Flag, r.Metric, where, pct(r.Lift), interval(r.CI))
	case alert.Loss:
		f.Severity = alert.Warning
		if hasRollback && !r.Discovered { // a property the analyzer found never rolls back
			f.Severity = alert.Critical
		}
		f.Summary = fmt.Sprintf("%s %s %s%s: %s %s", r.Flag, moves(r.Lift), r.Metric, where, pct(r.Lift), interval(r.CI))
	case alert.Win:
		f.Severity = alert.Info
		f.Summary = fmt.Sprintf("%s %s %s%s: %s %s", r.Flag, moves(r.Lift), r.Metric, where, pct(r.Lift), interval(r.CI))
	case alert.SRM:
		f.Severity = alert.Warning
		if r.Variant != "" {
			f.Summary = fmt.Sprintf("%s sends an unexpected variant %q (%d users): it is left out of the comparison", r.Flag, r.Variant, r.N)
		} else {
			f.Summary = fmt.Sprintf("%s has a sample ratio mismatch: its results cannot be trusted", r.Flag)
		}
	case alert.SegmentDivergence:
		f.Severity = alert.Warning
		f.Summary = divergenceSummary(r, f.Numbers.Segments)
	case alert.Stale:
		f.Severity = alert.Warning
		f.Summary = fmt.Sprintf("%s stopped receiving exposures", r.Flag)
	case alert.BehaviourShift:
		f.Severity = alert.Info
		f.Summary = fmt.Sprintf("%s: the effect on %s changed for later cohorts (now %s)", r.Flag, r.Metric, pct(r.Lift))
		if r.Segment != nil && r.Segment.Value != nil {
			f.Summary = fmt.Sprintf("%s: the effect on %s changed for later cohorts in %s = %s (now %s)", r.Flag, r.Metric,
				PropertyName(r.Segment.Property), *r.Segment.Value, pct(r.Lift))
		}
	default:
		f.Severity = alert.Info
		f.Summary = fmt.Sprintf("%s: %s on %s", r.Flag, strings.ReplaceAll(r.Decision, "_", " "), r.Metric)
	}
	return f
}

func moves(lift float64) string {
	if lift < 0 {
		return "lowers"
	}
	return "lifts"
}

// pct prints a relative change with its sign and a real minus: +32%, −67%, +4.5%.
func pct(x float64) string {
	v := 100 * x
	s := fmt.Sprintf("%.0f%%", math.Abs(v))
	if math.Abs(v) < 9.95 {
		s = fmt.Sprintf("%.1f%%", math.Abs(v))
	}
	if s == "0%" || s == "0.0%" {
		return "±0%"
	}
	if v < 0 {
		return "−" + s
	}
	return "+" + s
}

func interval(ci [2]float64) string {
	return "[" + pct(ci[0]) + ", " + pct(ci[1]) + "]"
}

// propertyNames are the words people use for PostHog's well-known properties.
var propertyNames = map[string]string{
	"$geoip_country_code": "country", "$geoip_country_name": "country", "$geoip_city_name": "city",
	"$browser": "browser", "$os": "operating system", "$device_type": "device type",
	"$referring_domain": "referring domain", "$initial_referring_domain": "first referring domain",
	"$exposure_day": "exposure day", "$lib": "SDK",
}

// PropertyName is how a message names a segment property: "country" for
// $geoip_country_code, the property itself otherwise.
func PropertyName(p string) string {
	if n, ok := propertyNames[p]; ok {
		return n
	}
	return p
}

// divergenceSummary is the headline of a divergence: "the effect of new-checkout on
// purchase conversion differs by country: US +40% [+21%, +62%], IN +36% […], GB −67%
// […]; the total is flat (+1.2%)", and for a discovered property how many were tried.
func divergenceSummary(r Row, segs []alert.SegmentEffect) string {
	byLift := slices.Clone(segs)
	sort.SliceStable(byLift, func(i, j int) bool { return byLift[i].Lift > byLift[j].Lift })
	var parts []string
	for i, s := range byLift {
		if i == 5 && len(byLift) > 6 {
			last := byLift[len(byLift)-1]
			parts = append(parts, fmt.Sprintf("… %s %s %s", last.Value, pct(last.Lift), interval(last.CI)))
			break
		}
		parts = append(parts, s.Value+" "+pct(s.Lift)+" "+interval(s.CI))
	}
	s := fmt.Sprintf("the effect of %s on %s differs by %s: %s; the total is flat (%s)", r.Flag, r.Metric,
		PropertyName(r.Segment.Property), strings.Join(parts, ", "), pct(r.Lift))
	if r.Discovered {
		s += fmt.Sprintf("; found by property discovery (%d properties tried)", r.PropertiesTried)
	}
	return s
}

// segmentsOf lists the segment effects behind a total row (every property, worst first,
// at most 8: of discovered properties only the values with a decision of their own) or
// a divergence (that property's values).
func segmentsOf(rows []Row, total Row, prop string) []alert.SegmentEffect {
	var out []alert.SegmentEffect
	for _, r := range rows {
		if r.Segment == nil || r.Segment.Value == nil || r.Flag != total.Flag || r.Metric != total.Metric || r.Variant != total.Variant ||
			(prop != "" && r.Segment.Property != prop) || r.Segment.Property == ExposureDay || r.Decision == alert.BehaviourShift ||
			(prop == "" && r.Discovered && r.Decision != alert.Win && r.Decision != alert.Loss) {
			continue
		}
		out = append(out, alert.SegmentEffect{Property: r.Segment.Property, Value: *r.Segment.Value, N: r.N,
			Lift: r.Lift, CI: r.CI, Decision: r.Decision})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Lift < out[j].Lift })
	if prop == "" && len(out) > 8 {
		out = out[:8]
	}
	return out
}

// recommend is the one thing to do about the flag, read off all its findings and
// segment rows, in the findings' priority: roll back on a guardrail breach or a loss;
// distrust everything on SRM; target the segments that gain when segments diverge;
// ship only a winner whose segments do not lose — and then never to a losing segment.
func recommend(fs []alert.Finding, rows []Row, flag string) string {
	has := func(d string) *alert.Finding {
		for i := range fs {
			if fs[i].Decision == d && (d != alert.SRM || fs[i].Variant == "") {
				return &fs[i]
			}
		}
		return nil
	}
	losers := func(metric, variant, prop string) (up, down []string) {
		for _, r := range rows {
			if r.Flag != flag || r.Segment == nil || r.Segment.Value == nil || r.Segment.Property == ExposureDay ||
				(metric != "" && r.Metric != metric) || (variant != "" && r.Variant != variant) ||
				(prop != "" && r.Segment.Property != prop) {
				continue
			}
			switch {
			case r.Decision == alert.Loss || r.Decision == alert.GuardrailBreach:
				down = append(down, *r.Segment.Value)
			case r.Decision == alert.Win:
				up = append(up, *r.Segment.Value)
			}
		}
		sort.Strings(up)
		sort.Strings(down)
		return slices.Compact(up), slices.Compact(down)
	}
	if f := has(alert.GuardrailBreach); f != nil {
		return fmt.Sprintf("Roll back: %s is past its guardrail", f.Metric)
	}
	if has(alert.SRM) != nil {
		return "Do not act on these numbers: users are not split as configured. Check how the flag assigns variants, then restart the experiment"
	}
	totalLoss := func() *alert.Finding {
		for i := range fs {
			if fs[i].Decision == alert.Loss && fs[i].Segment == nil {
				return &fs[i]
			}
		}
		return nil
	}
	if f := totalLoss(); f != nil {
		var gains []string
		for _, g := range fs {
			if g.Decision == alert.Win && g.Segment == nil {
				gains = append(gains, g.Metric)
			}
		}
		if len(gains) > 0 {
			return fmt.Sprintf("Roll back, or weigh it: it lowers %s but lifts %s", f.Metric, strings.Join(gains, ", "))
		}
		return fmt.Sprintf("Roll back: it lowers %s", f.Metric)
	}
	if f := has(alert.SegmentDivergence); f != nil {
		up, down := losers(f.Metric, f.Variant, f.Segment.Property)
		// A segment that loses on any metric is never a target, and is named as one not
		// to ship to.
		_, downAny := losers("", "", f.Segment.Property)
		up = slices.DeleteFunc(up, func(v string) bool { return slices.Contains(downAny, v) })
		for _, v := range downAny {
			if !slices.Contains(down, v) {
				down = append(down, v)
			}
		}
		sort.Strings(down)
		if len(up) == 0 {
			for _, s := range f.Numbers.Segments {
				if s.CI[0] > 0 && !slices.Contains(down, s.Value) {
					up = append(up, s.Value)
				}
			}
		}
		if len(down) == 0 {
			for _, s := range f.Numbers.Segments {
				if s.CI[1] < 0 {
					down = append(down, s.Value)
				}
			}
		}
		switch {
		case len(up) > 0 && len(down) > 0:
			return fmt.Sprintf("Target it: ship to %s, not to %s", render.JoinAnd(up), render.JoinAnd(down))
		case len(down) > 0:
			return fmt.Sprintf("Keep it off for %s; look at the other segments before shipping", render.JoinAnd(down))
		default:
			return "Look at the segments before shipping: the effect depends on " + PropertyName(f.Segment.Property)
		}
	}
	if f := has(alert.Loss); f != nil { // a segment's loss, total not lost
		return fmt.Sprintf("Keep it off for %s: it lowers %s there", f.Segment.ValueString(), f.Metric)
	}
	if f := has(alert.Win); f != nil {
		_, down := losers("", "", "")
		if len(down) > 0 {
			return fmt.Sprintf("Ship it to everyone except %s (it loses there)", render.JoinAnd(down))
		}
		if f.Segment != nil {
			return fmt.Sprintf("Consider shipping to %s, where it wins; elsewhere it is not decided yet", f.Segment.ValueString())
		}
		return "Ship it"
	}
	if f := has(alert.BehaviourShift); f != nil {
		if f.Segment != nil && f.Segment.Value != nil {
			return fmt.Sprintf("Look at recent cohorts in %s before deciding: the effect changed over time there", *f.Segment.Value)
		}
		return "Look at recent cohorts before deciding: the effect changed over time"
	}
	if has(alert.Stale) != nil {
		return "Clean up the flag, or check that the SDK still evaluates it"
	}
	if has(alert.SRM) == nil && len(fs) > 0 && fs[0].Decision == alert.SRM {
		return "Check the variant names the flag sends"
	}
	return "Keep watching"
}

// rollback runs the monitor's actions; the first failing outcome wins the alert's slot,
// else the first success.
func (a *Analyzer) rollback(ctx context.Context, cfg *config.Rollback, al *alert.Alert) *alert.Rollback {
	acts, err := rollback.New(cfg, a.lookup(), rollback.Options{Logger: a.Logger})
	if err != nil {
		return &alert.Rollback{Action: "config", Status: "failed", Detail: err.Error(), At: a.now()}
	}
	outs := acts.Do(ctx, rollback.FromAlert(al))
	if len(outs) == 0 {
		return nil
	}
	res := outs[0]
	for _, o := range outs {
		if o.Status != "ok" {
			res = o
			break
		}
	}
	a.log().Info("rollback called", "flag", al.Flag, "action", res.Action, "status", res.Status, "detail", res.Detail)
	return &res
}
