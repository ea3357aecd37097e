package render

import (
	"strconv"
	"strings"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// A rollout alert (decision alert.Rollout) is one change of a flag's progressive
// rollout: its head names the change ("advanced to 25%"), its numbers are the stage,
// the users, the time in the stage and every guardrail against its limit.

// rolloutHead is a rollout finding's mark and words: ":fast_forward:", "advanced to 25%".
func rolloutHead(f alert.Finding) (mark, words string) {
	r := f.Numbers.Rollout
	if r == nil {
		return ":fast_forward:", "rollout"
	}
	if r.Status == "refused" {
		if r.Change == alert.RolloutBack {
			return ":red_circle:", "could not roll back: changed by a person"
		}
		return ":octagonal_sign:", "rollout stopped at " + Escape(r.From)
	}
	if r.Status == "failed" {
		switch r.Change {
		case alert.RolloutStart:
			return ":warning:", "could not start the rollout"
		case alert.RolloutBack:
			return ":red_circle:", "could not roll back to " + Escape(r.To)
		}
		return ":warning:", "could not advance to " + Escape(r.To)
	}
	switch r.Change {
	case alert.RolloutStart:
		return ":arrow_forward:", "rollout started at " + Escape(r.To)
	case alert.RolloutAdvance:
		return ":fast_forward:", "advanced to " + Escape(r.To)
	case alert.RolloutComplete:
		return ":checkered_flag:", "rollout complete at " + Escape(r.From)
	case alert.RolloutHold:
		return ":double_vertical_bar:", "held at " + Escape(r.From)
	case alert.RolloutBack:
		return ":rewind:", "rolled back to " + Escape(r.To)
	}
	return ":fast_forward:", "rollout"
}

// markWords are the mark and words of any finding: a rollout's from its change, the others' from their
// decision.
func markWords(f alert.Finding) (string, string) {
	if f.Decision == alert.Rollout {
		return rolloutHead(f)
	}
	return Emoji(f.Decision), Words(f.Decision)
}

// rolloutNumbers are a rollout change's lines: the stage, users and time, then the
// guardrails.
func rolloutNumbers(f alert.Finding) []string {
	r := f.Numbers.Rollout
	if r == nil {
		return nil
	}
	var lines, parts []string
	k := r.ToStage
	undone := r.Status == "failed" || r.Status == "refused"
	if r.Change == alert.RolloutHold || r.Change == alert.RolloutComplete || r.Change == alert.RolloutBack || undone {
		k = r.FromStage
	}
	if r.Stages > 0 && k > 0 {
		parts = append(parts, "stage "+strconv.Itoa(k)+" of "+strconv.Itoa(r.Stages))
	}
	if r.From != "" && r.To != "" && r.From != r.To && !undone {
		parts = append(parts, Escape(r.From)+" → "+Escape(r.To))
	}
	if r.UsersPerVariant > 0 {
		parts = append(parts, Count(r.UsersPerVariant)+" new users per variant")
	}
	if r.InStageSeconds > 0 && r.Change != alert.RolloutStart {
		parts = append(parts, durationWords(r.InStageSeconds)+" at "+Escape(r.From))
	}
	if len(parts) > 0 {
		lines = append(lines, "*Stage:* "+strings.Join(parts, " · "))
	}
	var gs []string
	for _, g := range r.Guardrails {
		s := Escape(g.Metric)
		if g.Segment != nil && g.Segment.Value != nil {
			s += " in " + Escape(g.Segment.Property+" = "+*g.Segment.Value)
		}
		s += " " + LiftInterval(g.Lift, g.CI) + " (limit " + Percent(g.Limit) + ")"
		if g.Decision == alert.GuardrailBreach {
			s += " :red_circle: breached"
		}
		gs = append(gs, s)
	}
	if len(gs) > 0 {
		lines = append(lines, "*Guardrails:* "+strings.Join(gs, " · "))
	}
	return lines
}

// durationWords prints seconds in a stage: "45m", "19h", "1d 4h", "2 days".
func durationWords(secs int64) string {
	m := secs / 60
	d, h, mm := m/(24*60), m%(24*60)/60, m%60
	switch {
	case d > 0 && h == 0:
		if d == 1 {
			return "1 day"
		}
		return strconv.FormatInt(d, 10) + " days"
	case d > 0:
		return strconv.FormatInt(d, 10) + "d " + strconv.FormatInt(h, 10) + "h"
	case h > 0 && mm == 0:
		return strconv.FormatInt(h, 10) + "h"
	case h > 0:
		return strconv.FormatInt(h, 10) + "h " + strconv.FormatInt(mm, 10) + "m"
	}
	return strconv.FormatInt(mm, 10) + "m"
}
