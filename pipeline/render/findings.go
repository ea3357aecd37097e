package render

import (
	"sort"
	"strings"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// Findings returns a's findings, headline first and the rest by priority, then metric,
// segment and variant, so a thread reads the same however the alert listed them. An alert
// from before incidents (no Findings) is its own single finding, new.
func Findings(a *alert.Alert) []alert.Finding {
	fs := a.Findings
	if len(fs) == 0 {
		fs = []alert.Finding{{Metric: a.Metric, Segment: a.Segment, Variant: a.Variant, Decision: a.Decision,
			Severity: a.Severity, DedupKey: a.DedupKey, Summary: a.Summary, Reason: a.Reason, Numbers: a.Numbers, New: true}}
	}
	out := append([]alert.Finding(nil), fs...)
	for i := range out {
		out[i].DedupKey = Key(a.Flag, out[i])
	}
	if len(out) > 1 {
		rest := out[1:]
		sort.SliceStable(rest, func(i, j int) bool { return less(rest[i], rest[j]) })
	}
	return out
}

// Key is a finding's dedup key: the analyzer's, or one built from the finding.
func Key(flag string, f alert.Finding) string {
	if f.DedupKey != "" {
		return f.DedupKey
	}
	return alert.DedupKey(flag, f.Metric, f.Segment, f.Decision)
}

// less orders findings by priority, then by what they are about.
func less(a, b alert.Finding) bool {
	if pa, pb := alert.Priority(a.Decision), alert.Priority(b.Decision); pa != pb {
		return pa < pb
	}
	if a.Metric != b.Metric {
		return a.Metric < b.Metric
	}
	if sa, sb := segmentWords(a.Segment), segmentWords(b.Segment); sa != sb {
		return sa < sb
	}
	if a.Variant != b.Variant {
		return a.Variant < b.Variant
	}
	return a.DedupKey < b.DedupKey
}

// Less is the order of findings in messages: priority, then metric, segment, variant.
func Less(a, b alert.Finding) bool { return less(a, b) }

// segmentEffects returns a finding's segment effects by priority, then property and value.
func segmentEffects(n alert.Numbers) []alert.SegmentEffect {
	out := append([]alert.SegmentEffect(nil), n.Segments...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if pa, pb := rankEffect(a.Decision), rankEffect(b.Decision); pa != pb {
			return pa < pb
		}
		if a.Property != b.Property {
			return a.Property < b.Property
		}
		return a.Value < b.Value
	})
	return out
}

func rankEffect(d string) int {
	if d == "" || d == alert.Inconclusive || d == alert.InsufficientData {
		return 20
	}
	return alert.Priority(d)
}

// losing reports whether any finding says the variant hurts somewhere: a guardrail
// breach, a loss (whole population or a segment), or a diverging segment that loses.
func losing(fs []alert.Finding) bool {
	for _, f := range fs {
		switch f.Decision {
		case alert.GuardrailBreach, alert.Loss:
			return true
		}
		for _, s := range f.Numbers.Segments {
			if s.Decision == alert.Loss || s.Decision == alert.GuardrailBreach {
				return true
			}
		}
	}
	return false
}

// shipsToEveryone reports whether a recommendation says to ship the variant to everyone,
// as opposed to targeting it ("ship to US and IN, not GB") or not shipping at all.
func shipsToEveryone(action string) bool {
	a := " " + strings.ToLower(strings.TrimSpace(action)) + " "
	if !strings.HasPrefix(a, " ship") && !strings.HasPrefix(a, " roll out") && !strings.HasPrefix(a, " roll it out") &&
		!strings.HasPrefix(a, " launch") {
		return false
	}
	for _, q := range []string{" not ", "n't ", " only", " except", " exclud", " target", " but "} {
		if strings.Contains(a, q) {
			return false
		}
	}
	for _, all := range []string{"everyone", "all users", "100%"} {
		if strings.Contains(a, all) {
			return true
		}
	}
	return !strings.Contains(a, " ship to ") // "ship to US and IN" names where
}

// Recommendation is the one thing to do about the flag: the analyzer's Action when it
// has one and it does not contradict the findings, otherwise one derived from the
// findings by the same priority as the headline. It never says "ship" while any
// finding loses.
func Recommendation(a *alert.Alert, fs []alert.Finding) string {
	if act := strings.TrimSpace(a.Action); act != "" && !(losing(fs) && shipsToEveryone(act)) {
		return sentence(upperFirst(act))
	}
	return recommend(fs)
}

func recommend(fs []alert.Finding) string {
	has := func(d string) *alert.Finding {
		for i := range fs {
			if fs[i].Decision == d {
				return &fs[i]
			}
		}
		return nil
	}
	if f := has(alert.GuardrailBreach); f != nil {
		return "Roll back now: the " + f.Metric + " guardrail is breached."
	}
	if has(alert.SRM) != nil {
		return "Check the flag's evaluation code before trusting any result: users are not split as configured (exposures logged on some paths only, redirects, bots, caching)."
	}
	var wins, losses []string
	prop := ""
	for _, f := range fs {
		for _, s := range f.Numbers.Segments {
			switch s.Decision {
			case alert.Win:
				wins = appendNew(wins, s.Value)
			case alert.Loss:
				losses = appendNew(losses, s.Value)
			}
			if prop == "" {
				prop = s.Property
			}
		}
		if f.Segment != nil && f.Segment.Value != nil {
			switch f.Decision {
			case alert.Win:
				wins = appendNew(wins, *f.Segment.Value)
			case alert.Loss:
				losses = appendNew(losses, *f.Segment.Value)
			}
			if prop == "" {
				prop = f.Segment.Property
			}
		}
	}
	wholeLoss := false
	for _, f := range fs {
		if f.Decision == alert.Loss && (f.Segment == nil || f.Segment.Value == nil) {
			wholeLoss = true
		}
	}
	switch {
	case wholeLoss:
		return "Roll back: the variant is losing overall; then look at the segments to see where it hurts."
	case len(losses) > 0 && len(wins) > 0:
		return "Don't ship to everyone: target the variant by " + prop + " — ship to " + join(wins) + ", not " + join(losses) + "."
	case len(losses) > 0:
		return "Don't ship: the variant is losing in " + join(losses) + ". Roll back, or exclude " + join(losses) + " and keep watching."
	case has(alert.SegmentDivergence) != nil:
		return "Don't ship to everyone yet: segments move in opposite directions while the total is flat; look at the segments and consider targeting."
	case has(alert.Win) != nil:
		return "Ship it: roll the variant out to everyone and clean up the flag."
	case has(alert.BehaviourShift) != nil:
		return "Look at what changed around the shift (releases, campaigns, seasonality) before trusting the overall lift."
	case has(alert.Stale) != nil:
		return "Check that the flag is still evaluated and the SDK still sends exposures; if the experiment is over, archive the monitor."
	case has(alert.Resolved) != nil:
		return "Nothing: the finding no longer holds."
	}
	return "Keep the experiment running until it reaches a decision."
}

func appendNew(ss []string, s string) []string {
	for _, x := range ss {
		if x == s {
			return ss
		}
	}
	return append(ss, s)
}

func join(ss []string) string {
	ss = append([]string(nil), ss...)
	sort.Strings(ss)
	switch len(ss) {
	case 0:
		return ""
	case 1:
		return ss[0]
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " and " + ss[len(ss)-1]
}
