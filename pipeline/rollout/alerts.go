package rollout

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/render"
)

// This file words a change for people: the sentence (the alert's summary, the log's
// reason, the row of analyzer once), what to do, and the alert itself.

// where is "10% (stage 3 of 6)".
func where(p *Plan, k int) string {
	if k == 0 {
		return "0%"
	}
	return fmt.Sprintf("%s (stage %d of %d)", p.Label(k), k, len(p.Stages))
}

// sentence is the change in one sentence.
func sentence(p *Plan, e *Entry, why string, resumed bool) string {
	from, to := int(e.FromStage), int(e.ToStage)
	switch {
	case e.Status == statusRefused && e.Change == alert.RolloutBack:
		return fmt.Sprintf("flagwatch could not roll %s back at %s: %s; roll it back by hand", p.Flag, where(p, from), why)
	case e.Status == statusRefused:
		return fmt.Sprintf("flagwatch stopped %s's rollout at %s: %s", p.Flag, where(p, from), why)
	case e.Status == statusFailed:
		verb := map[string]string{alert.RolloutStart: "start its rollout at", alert.RolloutAdvance: "advance to", alert.RolloutBack: "roll back to"}[e.Change]
		return fmt.Sprintf("%s could not %s %s: %s; flagwatch tries again at the next pass", p.Flag, verb, where(p, to), why)
	}
	switch e.Change {
	case alert.RolloutStart:
		verb := "started"
		if resumed {
			verb = "resumed"
		}
		return fmt.Sprintf("%s rollout %s at %s: %s", p.Flag, verb, where(p, to), p.Ramp())
	case alert.RolloutAdvance:
		return fmt.Sprintf("%s advanced to %s: %s", p.Flag, where(p, to), why)
	case alert.RolloutComplete:
		return fmt.Sprintf("%s rollout complete at %s: %s", p.Flag, where(p, from), why)
	case alert.RolloutHold:
		return fmt.Sprintf("%s held at %s: %s", p.Flag, where(p, from), why)
	case alert.RolloutBack:
		return fmt.Sprintf("%s rolled back to %s at stage %d of %d (%s): %s", p.Flag, p.Label(to), from, len(p.Stages), p.Label(from), why)
	}
	return p.Flag + ": " + why
}

// todo is what the team should do after the change.
func todo(p *Plan, e *Entry, st *State) string {
	switch {
	case e.Status == statusRefused && e.Change == alert.RolloutBack:
		return "Roll the flag back by hand in PostHog now: a guardrail is breached, and flagwatch does not overwrite a person's change."
	case e.Status == statusRefused:
		return "Review the change in PostHog; to hand the rollout back to flagwatch, run analyzer rollout resume " + p.Flag + "."
	case e.Status == statusFailed:
		return "Nothing yet: flagwatch tries again at every pass. If it keeps failing, check the API key and that " + p.System() + " is reachable."
	}
	switch e.Change {
	case alert.RolloutStart, alert.RolloutAdvance:
		k := int(e.ToStage)
		if k == len(p.Stages) {
			return fmt.Sprintf("Nothing: flagwatch completes the rollout when the last stage's minimums are met, and rolls %s back if a guardrail breaks.", p.Flag)
		}
		return fmt.Sprintf("Nothing: flagwatch advances %s to %s when this stage's minimums are met, and rolls it back if a guardrail breaks.", p.Flag, where(p, k+1))
	case alert.RolloutComplete:
		return "Clean up: remove the flag from the code, then archive it in PostHog."
	case alert.RolloutHold:
		if e.Detail == "srm" || strings.HasPrefix(e.Detail, "variant:") {
			return fmt.Sprintf("Check the flag's evaluation code: users are not split as configured. flagwatch holds %s at %s until the split is healthy.", p.Flag, p.Label(int(e.FromStage)))
		}
		return fmt.Sprintf("Check that the flag is still evaluated and that exposures reach flagwatch; it holds %s at %s meanwhile.", p.Flag, p.Label(int(e.FromStage)))
	case alert.RolloutBack:
		return "Find out why the guardrail broke; once fixed, run analyzer rollout resume " + p.Flag + " to ramp again."
	}
	return ""
}

// severity of a change.
func severity(e *Entry) string {
	switch {
	case e.Change == alert.RolloutBack:
		return alert.Critical // done or not: a guardrail broke
	case e.Status == statusRefused || e.Status == statusFailed || e.Change == alert.RolloutHold:
		return alert.Warning
	}
	return alert.Info
}

// needsAlert reports whether an outcome is told: every change but a resume, and a
// failure only when the change before it did not fail the same way.
func needsAlert(st *State, e *Entry) bool {
	if e.Change == alert.RolloutResumed {
		return false
	}
	if e.Status != statusFailed {
		return true
	}
	for i := len(st.Outcomes) - 1; i >= 0; i-- {
		prev := &st.Outcomes[i]
		if prev.Seq >= e.Seq {
			continue
		}
		return !(prev.Status == statusFailed && prev.Change == e.Change && prev.ToStage == e.ToStage)
	}
	return true
}

// alertOf is the alert of a change.
func alertOf(p *Plan, e *Entry, st *State, publicURL string) alert.Alert {
	c := e.change()
	a := alert.Alert{Flag: p.Flag, Decision: alert.Rollout, Severity: severity(e), DedupKey: c.ChangeID,
		Summary: e.Reason, Action: todo(p, e, st), SlackChannel: p.Channel, DetectedAt: e.at(),
		Numbers: alert.Numbers{Control: p.Control, Rollout: c}}
	// The guardrails' numbers are in Numbers.Rollout; the evidence line says which test
	// and who decided.
	var ev []string
	if c.Evidence != "" {
		ev = append(ev, c.Evidence)
	}
	if e.DecidedBy != "" {
		ev = append(ev, "decided by "+e.DecidedBy)
	}
	a.Reason = strings.Join(ev, "; ")
	if e.Action != "" && e.Action != "none" {
		a.Rollback = &alert.Rollback{Action: e.Action, Target: e.Target, Status: e.Status, Detail: e.Detail, At: time.UnixMilli(e.DoneMs).UTC()}
		if e.Status == statusRefused {
			a.Rollback.Status = "refused"
		}
	}
	if publicURL != "" {
		a.PageURL = strings.TrimRight(publicURL, "/") + "/flags/" + url.PathEscape(p.Flag)
	}
	return a
}

// guardrailWords is "errors per user +3.1% [−5.0%, +12%] (limit +30%)".
func guardrailWords(g alert.GuardrailState) string {
	s := g.Metric
	if g.Segment != nil && g.Segment.Value != nil {
		s += " in " + g.Segment.Property + " = " + *g.Segment.Value
	}
	return s + " " + render.LiftInterval(g.Lift, g.CI) + " (limit " + render.Percent(g.Limit) + ")"
}
