package render

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/slack"
)

// digestRows is the most metric lines one flag shows in the digest.
const digestRows = 6

func rowLift(r digest.Row) string {
	return LiftInterval(r.Lift, [2]float64{r.CILow, r.CIHigh})
}

// digestMetric is one metric's line: the deciding or diverging segments, then the total.
func digestMetric(m digest.Metric) string {
	name := "*" + Escape(m.Name) + "*"
	if m.Variant != "" {
		name += " (" + Escape(m.Variant) + ")"
	}
	var parts []string
	for i, s := range m.Segments {
		if i == maxSegments {
			parts = append(parts, fmt.Sprintf("…and %d more", len(m.Segments)-maxSegments))
			break
		}
		name := s.SegmentProperty + " = " + s.SegmentValue
		if m.Divergence != nil && m.Divergence.SegmentProperty == s.SegmentProperty {
			name = s.SegmentValue // the line ends naming the property
		}
		p := Escape(name) + " " + rowLift(s)
		if s.Decision == alert.Win || s.Decision == alert.Loss || s.Decision == alert.GuardrailBreach {
			p += " " + Words(s.Decision)
		}
		parts = append(parts, p)
	}
	line := name + ": "
	if len(parts) > 0 {
		line += strings.Join(parts, " · ") + "; "
	}
	switch {
	case m.Total != nil:
		if len(parts) > 0 {
			line += "total "
		}
		line += rowLift(*m.Total) + " (" + Words(m.Total.Decision) + ")"
	default:
		line = strings.TrimSuffix(line, "; ")
	}
	if m.Divergence != nil {
		line += " — segments diverge by " + Escape(m.Divergence.SegmentProperty)
	}
	return line
}

func digestChanges(f digest.Flag) string {
	if f.New {
		return "new this week"
	}
	var out []string
	for i, c := range f.Changes {
		if i == 4 {
			out = append(out, fmt.Sprintf("…and %d more", len(f.Changes)-4))
			break
		}
		name := Escape(c.Metric)
		if c.Variant != "" {
			name += " (" + Escape(c.Variant) + ")"
		}
		switch {
		case c.From == "":
			out = append(out, name+": new metric")
		case c.From != c.To:
			out = append(out, name+": "+Words(c.From)+" → "+Words(c.To))
		default:
			d := Decimals(c.FromLift, c.ToLift)
			out = append(out, name+": lift "+Lift(c.FromLift, d)+" → "+Lift(c.ToLift, d))
		}
	}
	if len(out) == 0 {
		return "no change"
	}
	return strings.Join(out, "; ")
}

// digestExplains says which properties explain the flag's result — the effect differs
// across their values — and which were tried without evidence of it: "What explains it:
// $geoip_country_code (purchase conversion, revenue per user; found by property
// discovery) · No evidence it differs by: $browser, plan".
func digestExplains(f digest.Flag) string {
	var parts []string
	if len(f.Explains) > 0 {
		var ps []string
		for i, p := range f.Explains {
			if i == 3 {
				ps = append(ps, fmt.Sprintf("and %d more", len(f.Explains)-3))
				break
			}
			what := make([]string, len(p.Metrics))
			for j, m := range p.Metrics {
				what[j] = Escape(m)
			}
			s := Escape(p.Name) + " (" + strings.Join(what, ", ")
			if p.Discovered {
				s += "; found by property discovery"
			}
			ps = append(ps, s+")")
		}
		parts = append(parts, "_What explains it:_ "+strings.Join(ps, ", "))
	}
	if len(f.NoEvidence) > 0 {
		names := make([]string, 0, min(len(f.NoEvidence), 5))
		for i, n := range f.NoEvidence {
			if i == 5 {
				names = append(names, fmt.Sprintf("%d more", len(f.NoEvidence)-5))
				break
			}
			names = append(names, Escape(n))
		}
		parts = append(parts, "_No evidence the effect differs by:_ "+strings.Join(names, ", "))
	}
	return strings.Join(parts, " · ")
}

// DigestFlag is one flag's section of the digest.
func DigestFlag(f digest.Flag, o Options) string {
	var b strings.Builder
	b.WriteString(Emoji(f.Status) + " *" + Escape(f.Key) + "* — " + Words(f.Status))
	if f.Where != "" {
		b.WriteString(" " + Escape(f.Where))
	}
	if f.Metric != "" && f.Status != alert.SRM && f.Status != alert.Stale {
		b.WriteString(" on " + Escape(f.Metric))
	}
	if f.Was != "" && f.Was != f.Status {
		b.WriteString(" (last week: " + Words(f.Was) + ")")
	}
	if o.ReportBaseURL != "" {
		b.WriteString(" · " + Link(strings.TrimRight(o.ReportBaseURL, "/")+"/flags/"+urlPathEscape(f.Key), "page"))
	}
	if len(f.Users) > 0 {
		var us []string
		for _, u := range f.Users {
			us = append(us, Escape(u.Variant)+" "+Count(u.N))
		}
		b.WriteString("\nUsers: " + strings.Join(us, " · "))
	}
	for i, m := range f.Metrics {
		if i == digestRows {
			fmt.Fprintf(&b, "\n…and %d more metrics on the flag's page", len(f.Metrics)-digestRows)
			break
		}
		b.WriteString("\n• " + digestMetric(m))
	}
	if line := digestExplains(f); line != "" {
		b.WriteString("\n" + line)
	}
	for _, r := range f.Findings {
		s := "\n• " + Emoji(r.Decision) + " " + Words(r.Decision)
		if r.Reason != "" {
			s += ": " + Escape(r.Reason)
		}
		b.WriteString(s)
	}
	b.WriteString("\n_Since last week:_ " + digestChanges(f))
	return b.String()
}

// Digest lays the weekly digest out as one or more messages (Slack allows 50 blocks per
// message): the first carries the title and the count of flags per status, the rest
// continue in its thread.
func Digest(fs []digest.Flag, at time.Time, o Options) []slack.Message {
	title := "Weekly growth review · " + at.Format("Mon 2 Jan 2006")
	counts := map[string]int{}
	var order []string
	for _, f := range fs {
		if counts[f.Status] == 0 {
			order = append(order, f.Status)
		}
		counts[f.Status]++
	}
	var cs []string
	for _, d := range order { // fs is sorted by status already
		cs = append(cs, Emoji(d)+" "+strconv.Itoa(counts[d])+" "+Words(d))
	}
	summary := fmt.Sprintf("*%d flag%s monitored*", len(fs), plural(len(fs)))
	if len(cs) > 0 {
		summary += " · " + strings.Join(cs, " · ")
	}
	if len(fs) == 0 {
		summary = "*No flag had analysis results this week.* Check that the analyzer runs and that flags are exposed."
	}
	text := fmt.Sprintf("Weekly growth review: %d flag%s monitored", len(fs), plural(len(fs)))
	first := []slackapi.Block{slackapi.NewHeaderBlock(slackapi.NewTextBlockObject(slackapi.PlainTextType, ":bar_chart: "+title, true, false)),
		section(summary),
		contextBlock("Flags by status: guardrail breaches, sample ratio mismatches, diverging segments and losses first. Lifts are relative to control with always-valid (sequential) intervals. The chart is in the thread."),
		slackapi.NewDividerBlock()}
	msgs := []slack.Message{{Text: text, Blocks: first}}
	cur := &msgs[0]
	for i, f := range fs {
		if len(cur.Blocks)+2 > maxBlocks {
			// Block 0 is the "part i of n" line, filled in below.
			msgs = append(msgs, slack.Message{Text: text + " (continued)", Blocks: []slackapi.Block{nil}})
			cur = &msgs[len(msgs)-1]
		}
		cur.Blocks = append(cur.Blocks, section(DigestFlag(f, o)))
		if i < len(fs)-1 {
			cur.Blocks = append(cur.Blocks, slackapi.NewDividerBlock())
		}
	}
	for i := 1; i < len(msgs); i++ {
		msgs[i].Blocks[0] = contextBlock(fmt.Sprintf("%s, part %d of %d", title, i+1, len(msgs)))
	}
	return msgs
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
