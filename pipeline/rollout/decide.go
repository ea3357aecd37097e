package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/render"
)

// This file decides, from a pass's rows and the flag's log, what the plan does now.
// Nothing here reads or writes anything: each path has a table test (decide_test.go).

// outside is the answer of users the rollout does not include (PostHog's false): it is
// not a variant of the comparison, and not a sign of a broken split.
const outside = "false"

// Decision is what a pass does about one flag's plan.
type Decision struct {
	// Change is "" when the plan waits (Waits says for what) or has ended; otherwise
	// one of alert.RolloutStart, RolloutAdvance, RolloutComplete, RolloutHold,
	// RolloutBack.
	Change string
	From   int
	To     int
	// Why is the evidence in words: "guardrails hold, 1,240 new users per variant,
	// 2 days at 10%" or "errors per user +41% [+31%, +52%], beyond the +30% guardrail".
	Why string
	// HoldKey names a hold's reason (srm, stale, nodata, variant:<v>).
	HoldKey string
	// Waits are what the stage still needs, for status lines.
	Waits []string
	// Held is the hold in force, in words ("" when none).
	Held string
	// Ended says, when the plan has ended, how and what a person can do.
	Ended string
	// Evidence is the statistical test behind a rollback, in the analyzer's words.
	Evidence string
	// Numbers behind it.
	UsersPerVariant int64
	InStage         time.Duration
	Guardrails      []alert.GuardrailState
	// Users are the users per variant since the flag's first exposure, recorded with
	// a change so that the next stage counts its own.
	Users map[string]int64
}

// decide is the plan's step for one pass: rows are the pass's rows of the flag.
func decide(p *Plan, st *State, rows []analyze.Row, now time.Time) Decision {
	d := Decision{From: st.Stage, To: st.Stage, Users: usersOf(p, rows)}
	d.Guardrails = guardrailStates(p, rows)
	if st.Stage > 0 {
		d.InStage = max(now.Sub(st.Since), 0)
	}
	switch st.Ended {
	case endRollback:
		d.Ended = "rolled back at " + st.EndedBy.at().Format("2006-01-02 15:04 UTC") + "; fix the cause, then run analyzer rollout resume " + p.Flag
		return d
	case endComplete:
		d.Ended = "the rollout is complete"
		return d
	case endStopped:
		d.Ended = "stopped at " + st.EndedBy.at().Format("2006-01-02 15:04 UTC") + ": " + st.EndedBy.Detail +
			"; analyzer rollout resume " + p.Flag + " hands control back"
		return d
	}
	if !st.Started {
		d.Change, d.To = alert.RolloutStart, 1
		d.Why = "the plan " + p.Ramp() + " starts"
		return d
	}
	located, ok := locate(p, st)
	if !ok {
		d.Ended = "the plan changed: the flag is at " + st.StageLabel + ", no longer one of its stages (" + p.Ramp() +
			"); run analyzer rollout resume " + p.Flag + " to continue from the flag as it is"
		return d
	}
	st = located
	d.From, d.To = st.Stage, st.Stage
	if b := breach(p, rows); b != nil {
		d.Change, d.To = alert.RolloutBack, p.Stages[st.Stage-1].Fallback
		d.Why, d.Evidence = b.words(), b.reason
		d.Guardrails = append([]alert.GuardrailState{b.state}, d.Guardrails...)
		return d
	}
	newUsers := map[string]int64{}
	fewest, fewestIn, total := int64(-1), "", int64(0)
	for _, v := range p.Variants {
		n := max(d.Users[v]-st.UsersAtEntry[v], 0)
		newUsers[v] = n
		total += n
		if fewest < 0 || n < fewest {
			fewest, fewestIn = n, v
		}
	}
	d.UsersPerVariant = max(fewest, 0)
	stage := p.Stages[st.Stage-1]
	if key, why := holdReason(p, rows, total, d.InStage, stage.MinDuration); key != "" {
		if st.Holding == key {
			d.Held = why
			return d
		}
		d.Change, d.HoldKey, d.Why = alert.RolloutHold, key, why
		return d
	}
	if left := stage.MinDuration - d.InStage; left > 0 {
		d.Waits = append(d.Waits, fmt.Sprintf("%s more at %s (%s of %s)", Duration(left), p.Label(st.Stage), Duration(d.InStage), Duration(stage.MinDuration)))
	}
	if need := int64(stage.MinUsersPerVariant); d.UsersPerVariant < need {
		d.Waits = append(d.Waits, fmt.Sprintf("%s more users in %s (%s of %s new users per variant)",
			render.Count(need-d.UsersPerVariant), fewestIn, render.Count(d.UsersPerVariant), render.Count(need)))
	}
	for _, m := range p.Guardrails {
		if !evaluated(p, rows, m.Name) {
			d.Waits = append(d.Waits, "a verdict on the "+m.Name+" guardrail (too few users in a variant)")
		}
	}
	if len(d.Waits) > 0 {
		return d
	}
	d.Why = fmt.Sprintf("guardrails hold, %s new users per variant, %s at %s", render.Count(d.UsersPerVariant), Duration(d.InStage), p.Label(st.Stage))
	if st.Stage == len(p.Stages) {
		d.Change = alert.RolloutComplete
		return d
	}
	d.Change, d.To = alert.RolloutAdvance, st.Stage+1
	return d
}

// usersOf reads the users per variant (since first exposure) from the whole-population
// metric rows: a row's N is its variant's users, ControlN the control's.
func usersOf(p *Plan, rows []analyze.Row) map[string]int64 {
	out := map[string]int64{}
	for _, r := range rows {
		if r.Flag != p.Flag || r.Metric == "" || r.Segment != nil || r.Variant == "" || r.N <= 0 {
			continue
		}
		out[r.Variant] = max(out[r.Variant], r.N)
		out[p.Control] = max(out[p.Control], r.ControlN)
	}
	return out
}

// evaluated reports whether the guardrail metric has a comparison for every test
// variant: users in both arms (a row the statistics could not compute has none).
func evaluated(p *Plan, rows []analyze.Row, metric string) bool {
	for _, v := range p.Variants[1:] {
		if !slices.ContainsFunc(rows, func(r analyze.Row) bool {
			return r.Metric == metric && r.Segment == nil && r.Variant == v && r.N > 0 && r.ControlN > 0
		}) {
			return false
		}
	}
	return true
}

// guardrailStates are the whole-population comparisons of the guardrail metrics.
func guardrailStates(p *Plan, rows []analyze.Row) []alert.GuardrailState {
	var out []alert.GuardrailState
	for _, m := range p.Guardrails {
		for _, r := range rows {
			if r.Metric == m.Name && r.Segment == nil && r.Variant != "" && r.N > 0 {
				out = append(out, alert.GuardrailState{Metric: m.Name, Variant: r.Variant, Limit: signedLimit(&m),
					Lift: r.Lift, CI: r.CI, Decision: r.Decision})
			}
		}
	}
	return out
}

type breached struct {
	state  alert.GuardrailState
	reason string // the analyzer's: which bound crossed the limit
}

func (b *breached) words() string {
	where := ""
	if s := b.state.Segment; s != nil && s.Value != nil {
		where = " in " + s.Property + " = " + *s.Value
	}
	return fmt.Sprintf("%s%s %s, beyond the %s guardrail", b.state.Metric, where, render.LiftInterval(b.state.Lift, b.state.CI), render.Percent(b.state.Limit))
}

// breach finds a guardrail breach of the flag: the whole population first, else the
// segment that breaches most.
func breach(p *Plan, rows []analyze.Row) *breached {
	var best *breached
	for _, r := range rows {
		if r.Decision != alert.GuardrailBreach || p.guardrail(r.Metric) == nil {
			continue
		}
		b := &breached{state: alert.GuardrailState{Metric: r.Metric, Segment: r.Segment, Variant: r.Variant,
			Limit: signedLimit(p.guardrail(r.Metric)), Lift: r.Lift, CI: r.CI, Decision: r.Decision}, reason: r.Reason}
		switch {
		case best == nil:
			best = b
		case r.Segment == nil && best.state.Segment != nil:
			best = b
		case (r.Segment == nil) == (best.state.Segment == nil) && abs(r.Lift) > abs(best.state.Lift):
			best = b
		}
	}
	return best
}

// holdReason says why the plan must not advance: a sample ratio mismatch, a variant
// nobody configured, stopped exposures, or no new exposures in a stage that has lasted
// its minimum (at least an hour). total is the stage's new users.
func holdReason(p *Plan, rows []analyze.Row, total int64, inStage, minDuration time.Duration) (key, why string) {
	for _, r := range rows {
		if r.Decision == alert.SRM && r.Variant == "" && r.Segment == nil {
			return "srm", "sample ratio mismatch: " + strings.TrimSuffix(strings.TrimPrefix(r.Reason, "sample ratio mismatch: "), ".")
		}
	}
	for _, r := range rows {
		if r.Decision == alert.SRM && r.Variant != "" && r.Variant != outside && !slices.Contains(p.Variants, r.Variant) {
			return "variant:" + r.Variant, fmt.Sprintf("exposures report a variant %q that is not in the split (%s users): check the flag's evaluation code", r.Variant, render.Count(r.N))
		}
	}
	for _, r := range rows {
		if r.Decision == alert.Stale {
			return "stale", "exposures stopped: " + r.Reason
		}
	}
	if grace := max(minDuration, time.Hour); total == 0 && inStage >= grace {
		return "nodata", fmt.Sprintf("no new exposures in %s at this stage: is the flag still evaluated, and the SDK sending $feature_flag_called?", Duration(inStage))
	}
	return "", ""
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
