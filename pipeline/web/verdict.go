package web

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/render"
	"github.com/flagwatch/flagwatch/pipeline/stats"
)

// Status is a flag's badge on the list.
type Status string

// Statuses, most urgent first (Rank).
const (
	StatusRolledBack Status = "rolled_back"
	StatusGuardrail  Status = "guardrail_breached"
	StatusSRM        Status = "srm"
	StatusLosing     Status = "losing"
	StatusDiverge    Status = "segments_diverge"
	StatusWinning    Status = "winning"
	StatusShift      Status = "behaviour_shift"
	StatusStale      Status = "stale"
	StatusCollecting Status = "collecting_data"
	StatusHealthy    Status = "healthy"
)

// Statuses lists every status in rank order (the list's filter offers them).
var Statuses = []Status{StatusRolledBack, StatusGuardrail, StatusSRM, StatusLosing, StatusDiverge, StatusWinning,
	StatusShift, StatusStale, StatusCollecting, StatusHealthy}

// Label is the badge text.
func (s Status) Label() string {
	switch s {
	case StatusRolledBack:
		return "rolled back"
	case StatusGuardrail:
		return "guardrail breached"
	case StatusSRM:
		return "SRM"
	case StatusDiverge:
		return "segments diverge"
	case StatusShift:
		return "behaviour shift"
	case StatusCollecting:
		return "collecting data"
	}
	return string(s)
}

// Rank orders statuses by urgency (0 first).
func (s Status) Rank() int {
	for i, x := range Statuses {
		if x == s {
			return i
		}
	}
	return len(Statuses)
}

// Symbol is the badge's sign, so a status never depends on colour alone.
func (s Status) Symbol() string {
	switch s {
	case StatusRolledBack:
		return "↩"
	case StatusGuardrail, StatusLosing:
		return "▼"
	case StatusSRM, StatusDiverge, StatusShift:
		return "!"
	case StatusWinning:
		return "▲"
	case StatusStale:
		return "■"
	case StatusCollecting:
		return "…"
	}
	return "●"
}

// DefaultEffect is the effect size a "wait" action is sized for: 5% relative lift.
const DefaultEffect = 0.05

// WaitEstimate is how many more users per variant the primary metric needs before its
// always-valid interval is narrow enough to show an effect of Effect (see
// ExtraUsersPerVariant).
type WaitEstimate struct {
	Metric              string  `json:"metric"`
	Effect              float64 `json:"effect"`
	UsersPerVariant     int64   `json:"users_per_variant"`
	MoreUsersPerVariant int64   `json:"more_users_per_variant"`
	// Days at the flag's average rate of new users so far (0 when unknown).
	Days float64 `json:"days,omitempty"`
}

type verdict struct {
	status   Status
	sentence string
	action   string
	wait     *WaitEstimate
}

// ExtraUsersPerVariant is the number of users per variant to add to n (users per
// variant now) before the always-valid interval of a lift whose standard error is se
// now has a half-width of at most effect.
//
// The standard error of a relative lift shrinks as 1/√n when both arms grow alike
// (its delta-method variance is a sum of per-arm variances over n), so at m users per
// variant it is se·√(n/m). The interval is the confidence sequence the analyzer uses,
// half-width SE·√(2(v+1)/v·log(√(v+1)/α)) with v = 2m·ρ² (stats.Effect.Sequential), so
// the answer is the least m with that half-width ≤ effect, found by doubling then
// bisection; an interval that is already that narrow needs 0 more.
func ExtraUsersPerVariant(se float64, n int64, effect, alpha, tuning float64) int64 {
	if se <= 0 || n <= 0 || effect <= 0 || math.IsNaN(se) {
		return -1
	}
	hw := func(m float64) float64 {
		e := stats.Effect{SE: se * math.Sqrt(float64(n)/m), N: 2 * m}
		iv := e.Sequential(alpha, tuning)
		return (iv.Hi - iv.Lo) / 2
	}
	if hw(float64(n)) <= effect {
		return 0
	}
	lo, hi := float64(n), 2*float64(n)
	for hw(hi) > effect {
		lo, hi = hi, 2*hi
		if hi > 1e12 {
			return -1
		}
	}
	for hi-lo > 1 {
		mid := math.Floor((lo + hi) / 2)
		if hw(mid) <= effect {
			hi = mid
		} else {
			lo = mid
		}
	}
	return int64(hi) - n
}

func metricConfig(f config.Flag, name string) *config.Metric {
	for i := range f.Metrics {
		if f.Metrics[i].Name == name {
			return &f.Metrics[i]
		}
	}
	return nil
}

func segmentName(x Result) string {
	if x.SegmentProperty == "" {
		return ""
	}
	if x.SegmentValue == "" {
		return x.SegmentProperty
	}
	return x.SegmentValue
}

// verdict reads a flag's latest pass: its status, one sentence, and what to do.
func (b *builder) verdict(f config.Flag, s FlagSummary, rows []Result) verdict {
	var totals, findings, segs []Result
	for _, x := range rows {
		switch {
		case isPropertyAnalysis(x):
			continue // evidence, not a decision
		case isTotal(x):
			totals = append(totals, x)
		case x.SegmentValue == "" || x.Decision == alert.BehaviourShift: // a flag's, or a segment value's, shift
			findings = append(findings, x)
		default:
			segs = append(segs, x)
		}
	}
	first := func(decision string, in []Result) *Result {
		for i := range in {
			if in[i].Decision == decision {
				return &in[i]
			}
		}
		return nil
	}
	key := f.Key

	if rb := s.RolledBack; rb != nil {
		v := verdict{status: StatusRolledBack,
			sentence: fmt.Sprintf("%s was rolled back at %s (%s).", key, When(rb.At), strings.TrimSpace(rb.Action+" "+rb.Target)),
			action:   "Keep it off: find and fix the cause before turning it on again."}
		if g := first(alert.GuardrailBreach, totals); g != nil {
			v.sentence = fmt.Sprintf("%s was rolled back at %s after %s broke its guardrail: %s %s.", key, When(rb.At), g.Metric, Pct(g.Lift), Interval(g.CILow, g.CIHigh))
		}
		return v
	}
	if g := first(alert.GuardrailBreach, totals); g != nil {
		limit := ""
		if mc := metricConfig(f, g.Metric); mc != nil && mc.Guardrail != nil {
			limit = " (" + guardrailView(mc.Guardrail).Text + ")"
		}
		action := "Roll back now."
		if f.Rollback != nil {
			action = "Roll back now: the automatic rollback has not succeeded (see the timeline)."
		}
		return verdict{status: StatusGuardrail,
			sentence: fmt.Sprintf("%s breaks the %s guardrail%s: %s %s for %s.", key, g.Metric, limit, Pct(g.Lift), Interval(g.CILow, g.CIHigh), g.Variant),
			action:   action}
	}
	if x := first(alert.SRM, findings); x != nil {
		return verdict{status: StatusSRM,
			sentence: fmt.Sprintf("%s has a sample ratio mismatch: %s, against the configured split (%s).", key, splitText(s.Variants), pText(x.P)),
			action:   "Don't act on these results: check the flag-evaluation code (who is assigned, who is exposed, and whether an error path skips the exposure event)."}
	}
	if x := first(alert.Loss, totals); x != nil {
		return verdict{status: StatusLosing,
			sentence: fmt.Sprintf("%s is losing on %s: %s %s for %s against %s.", key, x.Metric, Pct(x.Lift), Interval(x.CILow, x.CIHigh), x.Variant, f.Control),
			action:   "Roll back."}
	}
	if x := first(alert.SegmentDivergence, findings); x != nil {
		return b.divergence(f, *x, segs)
	}
	if x := first(alert.Win, totals); x != nil {
		v := verdict{status: StatusWinning,
			sentence: fmt.Sprintf("%s wins on %s: %s %s for %s against %s.", key, x.Metric, Pct(x.Lift), Interval(x.CILow, x.CIHigh), x.Variant, f.Control),
			action:   "Ship it."}
		var losing []string
		for _, sg := range segs {
			if sg.Decision == alert.Loss && sg.SegmentProperty != ExposureDay {
				losing = append(losing, sg.SegmentValue)
			}
		}
		if len(losing) > 0 {
			v.action = "Ship it, except to " + render.JoinAnd(uniq(losing)) + " (losing there)."
		}
		return v
	}
	if x := first(alert.BehaviourShift, findings); x != nil {
		return verdict{status: StatusShift,
			sentence: fmt.Sprintf("%s: the effect on %s changed for later users: %s.", key, x.Metric, x.Reason),
			action:   "Look at the cohorts before deciding: a novelty effect wearing off, a bug shipped to later users or a change in who arrives."}
	}
	if x := first(alert.Stale, findings); x != nil {
		sentence := fmt.Sprintf("%s is stale: %s.", key, x.Reason)
		if s.LastExposure != nil {
			sentence = fmt.Sprintf("%s is stale: no exposures since %s (%s ago).", key, When(*s.LastExposure), Duration(b.now.Sub(*s.LastExposure)))
		}
		return verdict{status: StatusStale, sentence: sentence,
			action: "Clean up the flag (ship or remove it), or check the SDK if it should still be evaluated."}
	}
	return b.waiting(f, s, totals, findings)
}

func uniq(xs []string) []string {
	var out []string
	for _, x := range xs {
		if !containsString(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func containsString(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func splitText(vs []VariantUsers) string {
	var total int64
	for _, v := range vs {
		total += v.Users
	}
	if total == 0 {
		return "no users"
	}
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", v.Variant, Count(v.Users), Share(float64(v.Users)/float64(total))))
	}
	return strings.Join(parts, ", ")
}

// divergence says where to ship when segments move apart: to the values that win, not
// to those that lose.
func (b *builder) divergence(f config.Flag, x Result, segs []Result) verdict {
	var up, down []string
	for _, sg := range segs {
		if sg.SegmentProperty != x.SegmentProperty || sg.Metric != x.Metric || sg.Variant != x.Variant {
			continue
		}
		switch sg.Decision {
		case alert.Win:
			up = append(up, sg.SegmentValue)
		case alert.Loss:
			down = append(down, sg.SegmentValue)
		}
	}
	sort.Strings(up)
	sort.Strings(down)
	v := verdict{status: StatusDiverge,
		sentence: fmt.Sprintf("%s moves %s in opposite directions across %s while the total is flat (%s).", f.Key, x.Metric, x.SegmentProperty, Pct(x.Lift))}
	if len(up) > 0 || len(down) > 0 {
		v.sentence = fmt.Sprintf("%s moves %s in opposite directions across %s: up in %s, down in %s, flat in total (%s).",
			f.Key, x.Metric, x.SegmentProperty, orNone(up), orNone(down), Pct(x.Lift))
	}
	switch {
	case len(up) > 0 && len(down) > 0:
		v.action = fmt.Sprintf("Ship to %s only; keep %s on %s.", render.JoinAnd(up), render.JoinAnd(down), f.Control)
	case len(up) > 0:
		v.action = fmt.Sprintf("Ship to %s only.", render.JoinAnd(up))
	case len(down) > 0:
		v.action = fmt.Sprintf("Keep %s on %s; look at the other segments before shipping.", render.JoinAnd(down), f.Control)
	default:
		v.action = "Look at the segments before shipping; consider targeting."
	}
	return v
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return render.JoinAnd(xs)
}

// waiting is a flag with nothing decided: collecting data below the minimum sample or
// duration, else healthy, with how many more users the primary metric needs.
func (b *builder) waiting(f config.Flag, s FlagSummary, totals, findings []Result) verdict {
	d := b.mons.Defaults
	minUsers := int64(d.MinUsersPerVariant)
	smallest := int64(-1)
	for _, v := range s.Variants {
		if smallest < 0 || v.Users < smallest {
			smallest = v.Users
		}
	}
	if smallest < 0 {
		smallest = 0
	}
	age := time.Duration(s.AgeSeconds) * time.Second
	if len(totals) == 0 || smallest < minUsers || (s.FirstExposure != nil && age < d.MinDuration) {
		reason := "no results yet"
		for _, x := range findings {
			if x.Decision == alert.InsufficientData && x.Reason != "" {
				reason = x.Reason
			}
		}
		if len(totals) > 0 || s.FirstExposure != nil {
			reason = fmt.Sprintf("%s users in the smallest variant of the %s needed", Count(smallest), Count(minUsers))
			if s.FirstExposure != nil {
				reason += fmt.Sprintf(", %s since first exposure of the %s needed", Duration(age), Duration(d.MinDuration))
			}
		}
		var waits []string
		if smallest < minUsers {
			waits = append(waits, fmt.Sprintf("%s more users per variant", Count(minUsers-smallest)))
		}
		if s.FirstExposure != nil && age < d.MinDuration {
			waits = append(waits, Duration(d.MinDuration-age)+" more")
		}
		action := "Wait for exposures: none has reached flagwatch yet."
		if len(waits) > 0 {
			action = "Wait: " + render.JoinAnd(waits) + " before any decision (a guardrail breach is reported at once)."
		} else if s.FirstExposure != nil {
			action = "Wait for the next pass."
		}
		return verdict{status: StatusCollecting, sentence: fmt.Sprintf("%s is collecting data: %s.", f.Key, reason), action: action}
	}
	v := verdict{status: StatusHealthy}
	primary := b.primaryMetric(f)
	var x *Result
	for i := range totals {
		if totals[i].Metric == primary && (x == nil || totals[i].SE > x.SE) {
			x = &totals[i]
		}
	}
	if x == nil {
		x = &totals[0]
	}
	v.sentence = fmt.Sprintf("%s shows no significant effect on %s yet: %s %s for %s; no guardrail is breached.", f.Key, x.Metric, Pct(x.Lift), Interval(x.CILow, x.CIHigh), x.Variant)
	n := (x.N + x.ControlN) / 2
	extra := ExtraUsersPerVariant(x.SE, n, b.effect, d.Alpha, d.SequentialTuning)
	switch {
	case extra > 0:
		w := &WaitEstimate{Metric: x.Metric, Effect: b.effect, MoreUsersPerVariant: roundUsers(float64(extra))}
		w.UsersPerVariant = n + w.MoreUsersPerVariant
		eta := ""
		if days := age.Hours() / 24; days >= 1 && n > 0 {
			w.Days = math.Ceil(float64(w.MoreUsersPerVariant) / (float64(n) / days))
			eta = fmt.Sprintf(" (about %.0f days at the current rate)", w.Days)
		}
		v.wait = w
		v.action = fmt.Sprintf("Wait: %s more users per variant for a %s effect on %s%s.", Count(w.MoreUsersPerVariant), effectText(b.effect), x.Metric, eta)
	case extra == 0 && x.CILow > -b.effect && x.CIHigh < b.effect:
		v.action = fmt.Sprintf("Decide on product grounds: the interval rules out an effect of %s or more on %s either way.", effectText(b.effect), x.Metric)
	case extra == 0:
		v.action = fmt.Sprintf("Wait for the next passes: there are enough users to show a %s effect on %s.", effectText(b.effect), x.Metric)
	default:
		v.action = "Wait for more data."
	}
	return v
}

// effectText formats an effect size without needless decimals: 0.05 → "5%".
func effectText(e float64) string { return strconv.FormatFloat(100*e, 'g', 3, 64) + "%" }

// pText states a p-value in a sentence: "p = 0.003", "p < 0.0001".
func pText(p float64) string {
	v := PValue(p)
	if strings.HasPrefix(v, "<") {
		return "p " + v
	}
	return "p = " + v
}
