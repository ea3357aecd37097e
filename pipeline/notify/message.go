package notify

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/slack-go/slack"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// Slack's Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
const (
	maxHeaderChars  = 150
	maxSectionChars = 3000
	maxFieldChars   = 2000
	maxFields       = 10
	maxBlocks       = 50
	maxTextChars    = 4000 // the notification fallback text; Slack truncates at 40k
)

// Message is one Slack message to post or to write over an earlier one.
type Message struct {
	// Channel is a name ("#growth") or an ID; chat.update needs the ID.
	Channel string `json:"channel"`
	// ThreadTS makes the message a reply in that thread.
	ThreadTS string `json:"thread_ts,omitempty"`
	// Broadcast also shows a thread reply in the channel.
	Broadcast bool `json:"reply_broadcast,omitempty"`
	// Text is the notification and fallback text.
	Text     string               `json:"text"`
	Blocks   []slack.Block        `json:"blocks"`
	Metadata *slack.SlackMetadata `json:"metadata,omitempty"`
}

// body is what the log keeps of a message, enough to rewrite it later.
type body struct {
	Text   string       `json:"text"`
	Blocks slack.Blocks `json:"blocks"`
}

func (m Message) marshalBody() string {
	b, err := json.Marshal(body{Text: m.Text, Blocks: slack.Blocks{BlockSet: m.Blocks}})
	if err != nil {
		return ""
	}
	return string(b)
}

func unmarshalBody(s string) (body, error) {
	var b body
	err := json.Unmarshal([]byte(s), &b)
	return b, err
}

// renderKind says how an alert message is framed.
type renderKind int

const (
	renderFirst renderKind = iota
	renderUpdate
	renderRepeat
)

// decisionWords names a decision for people.
func decisionWords(d string) string {
	switch d {
	case alert.GuardrailBreach:
		return "guardrail breached"
	case alert.SRM:
		return "sample ratio mismatch"
	case alert.SegmentDivergence:
		return "segments diverge"
	case alert.BehaviourShift:
		return "behaviour shift"
	case alert.Stale:
		return "stale: exposures stopped"
	case alert.InsufficientData:
		return "insufficient data"
	case "":
		return "no decision"
	default:
		return strings.ReplaceAll(d, "_", " ")
	}
}

func decisionEmoji(d string) string {
	switch d {
	case alert.Win:
		return ":large_green_circle:"
	case alert.Loss, alert.GuardrailBreach:
		return ":red_circle:"
	case alert.SRM, alert.Stale, alert.SegmentDivergence, alert.BehaviourShift:
		return ":large_orange_circle:"
	case alert.Resolved:
		return ":white_check_mark:"
	case alert.InsufficientData:
		return ":hourglass_flowing_sand:"
	default:
		return ":white_circle:"
	}
}

// nextStep is what to do about a decision when the analyzer did not say.
func nextStep(d string) string {
	switch d {
	case alert.Win:
		return "Ship it: roll the winning variant out to everyone and clean up the flag."
	case alert.Loss:
		return "Roll back: turn the variant off, then look at the segments above to see where it hurts."
	case alert.GuardrailBreach:
		return "Roll back now: a guardrail metric moved past its limit."
	case alert.SRM:
		return "Check your flag-evaluation code: users are not split as configured, so the results cannot be trusted until the cause is fixed (exposures logged only on some paths, redirects, bots, caching)."
	case alert.Stale:
		return "Check that the flag is still evaluated and the SDK still sends exposures; if the experiment is over, archive the monitor."
	case alert.SegmentDivergence:
		return "Look at the segments: the total hides opposite effects; consider targeting the variant at the segments where it wins."
	case alert.BehaviourShift:
		return "Look at what changed around the shift (releases, campaigns, seasonality) before trusting the overall lift."
	case alert.Resolved:
		return "Nothing: the finding no longer holds."
	default:
		return "Keep the experiment running until it reaches a decision."
	}
}

// pct formats a relative change: 0.1234 → "+12.3%".
func pct(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	s := strconv.FormatFloat(100*x, 'f', 1, 64)
	if s == "-0.0" {
		s = "0.0"
	}
	if x > 0 && s != "0.0" {
		s = "+" + s
	}
	return s + "%"
}

// interval formats [lo, hi].
func interval(ci [2]float64) string {
	return "[" + pct(ci[0]) + ", " + pct(ci[1]) + "]"
}

// count formats an integer with thousands separators: 10012 → "10,012".
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// pValue formats a p-value for mrkdwn: "p = 0.012", "p &lt; 0.001".
func pValue(name string, p float64) string {
	switch {
	case p < 0.001:
		return name + " &lt; 0.001"
	case p < 0.01:
		return name + " = " + strconv.FormatFloat(p, 'f', 4, 64)
	default:
		return name + " = " + strconv.FormatFloat(p, 'f', 3, 64)
	}
}

// chance formats a probability as a percentage for mrkdwn.
func chance(p float64) string {
	switch {
	case p < 0.01:
		return "&lt;1%"
	case p > 0.99:
		return "&gt;99%"
	default:
		return strconv.FormatFloat(100*p, 'f', 0, 64) + "%"
	}
}

func segmentWords(s *alert.Segment) string {
	switch {
	case s == nil:
		return "all users"
	case s.Value == nil:
		return "by " + s.Property
	default:
		return s.Property + " = " + *s.Value
	}
}

// truncate cuts s to at most n characters, ending in "…" when cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// escape makes s safe inside mrkdwn (Slack's three control characters).
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func plain(text string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, text, true, false)
}

func mrkdwn(text string, limit int) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, truncate(text, limit), false, false)
}

func header(text string) slack.Block {
	return slack.NewHeaderBlock(plain(truncate(text, maxHeaderChars)))
}

func section(text string) slack.Block {
	return slack.NewSectionBlock(mrkdwn(text, maxSectionChars), nil, nil)
}

func contextBlock(texts ...string) slack.Block {
	var els []slack.MixedElement
	for _, t := range texts {
		if t != "" {
			els = append(els, mrkdwn(t, maxSectionChars))
		}
	}
	return slack.NewContextBlock("", els...)
}

func reportURL(base, flag string) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/flags/" + url.PathEscape(flag)
}

// alertText is the one-line notification text of an alert.
func alertText(a *alert.Alert) string {
	if a.Summary != "" {
		return a.Summary
	}
	s := a.Flag + ": " + decisionWords(a.Decision)
	if a.Metric != "" {
		s += " on " + a.Metric
	}
	if a.Segment != nil {
		s += " (" + segmentWords(a.Segment) + ")"
	}
	return s
}

// renderAlert turns an alert into Block Kit: what changed, the numbers with their
// interval, the segments that drive it, what to do, the rollback outcome, the report link.
func renderAlert(a *alert.Alert, kind renderKind, reportBase string, now time.Time) Message {
	title := decisionEmoji(a.Decision) + " " + a.Flag + ": " + decisionWords(a.Decision)
	text := alertText(a)
	switch kind {
	case renderRepeat:
		title = ":repeat: Still unresolved · " + title
		text = "Still unresolved: " + text
	case renderUpdate:
		title = "Update · " + title
	}
	blocks := []slack.Block{header(title), section("*" + escape(text) + "*")}

	var fields []*slack.TextBlockObject
	field := func(name, value string) {
		if value != "" && len(fields) < maxFields {
			fields = append(fields, mrkdwn("*"+name+"*\n"+value, maxFieldChars))
		}
	}
	n := a.Numbers
	variant := a.Variant
	if variant == "" {
		variant = "variant"
	}
	control := n.Control
	if control == "" {
		control = "control"
	}
	field("Metric", escape(a.Metric))
	field("Segment", escape(segmentWords(a.Segment)))
	if n.Lift != 0 || n.CI != [2]float64{} {
		field("Lift ("+escape(variant)+" vs "+escape(control)+")", pct(n.Lift)+" "+interval(n.CI))
	}
	if n.ControlN > 0 || n.VariantN > 0 {
		field("Users per variant", escape(control)+" "+count(n.ControlN)+" · "+escape(variant)+" "+count(n.VariantN))
	}
	if n.ControlMean != 0 || n.VariantMean != 0 {
		field("Mean", escape(control)+" "+strconv.FormatFloat(n.ControlMean, 'g', 4, 64)+" · "+escape(variant)+" "+strconv.FormatFloat(n.VariantMean, 'g', 4, 64))
	}
	var ev []string
	if n.P > 0 {
		ev = append(ev, pValue("p", n.P))
	}
	if n.ChanceToWin > 0 {
		ev = append(ev, "chance to win "+chance(n.ChanceToWin))
	}
	if n.SRMP > 0 {
		ev = append(ev, pValue("SRM p", n.SRMP))
	}
	if n.CUPED {
		ev = append(ev, "CUPED")
	}
	field("Evidence", strings.Join(ev, " · "))
	if len(fields) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	}

	if len(n.Segments) > 0 {
		var b strings.Builder
		b.WriteString("*Segments driving it*")
		for i, s := range n.Segments {
			if i == 5 {
				fmt.Fprintf(&b, "\n…and %d more", len(n.Segments)-5)
				break
			}
			fmt.Fprintf(&b, "\n• %s = %s: %s %s, %s users", escape(s.Property), escape(s.Value), pct(s.Lift), interval(s.CI), count(s.N))
			if s.Decision != "" {
				b.WriteString(" (" + decisionWords(s.Decision) + ")")
			}
		}
		blocks = append(blocks, section(b.String()))
	}

	action := a.Action
	if action == "" {
		action = nextStep(a.Decision)
	} else if !strings.HasSuffix(action, ".") {
		action += "."
	}
	blocks = append(blocks, section("*What to do:* "+escape(upperFirst(action))))

	if r := a.Rollback; r != nil {
		mark := ":white_check_mark:"
		if r.Status != "ok" {
			mark = ":x:"
		}
		s := fmt.Sprintf("*Rollback* (%s `%s`): %s %s", escape(r.Action), escape(r.Target), mark, escape(r.Status))
		if r.Detail != "" {
			s += " · " + escape(r.Detail)
		}
		if !r.At.IsZero() {
			s += " · " + r.At.UTC().Format("2006-01-02 15:04 UTC")
		}
		blocks = append(blocks, section(s))
	}

	var ctx []string
	if a.Reason != "" {
		ctx = append(ctx, escape(a.Reason))
	}
	if n.Correction != "" {
		ctx = append(ctx, "Corrected for multiple comparisons: "+escape(n.Correction))
	}
	if u := reportURL(reportBase, a.Flag); u != "" {
		ctx = append(ctx, "<"+u+"|Open the report for "+escape(a.Flag)+">")
	}
	at := a.DetectedAt
	if at.IsZero() {
		at = now
	}
	ctx = append(ctx, "Detected "+at.UTC().Format("2006-01-02 15:04 UTC")+" · "+a.Severity)
	blocks = append(blocks, contextBlock(ctx...))

	return Message{
		Text:   truncate(text, maxTextChars),
		Blocks: blocks,
		Metadata: &slack.SlackMetadata{EventType: "flagwatch_alert", EventPayload: map[string]any{
			"flag": a.Flag, "decision": a.Decision, "dedup_key": a.DedupKey,
		}},
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	return strings.ToUpper(string(r[0])) + string(r[1:])
}

// renderResolved is the thread reply that closes a finding.
func renderResolved(a *alert.Alert, keys []string, closes bool, now time.Time) Message {
	text := "Resolved: " + alertText(a)
	lines := "*:white_check_mark: " + escape(text) + "*"
	if !closes {
		lines += "\nOther findings on " + escape(a.Flag) + " are still open."
	} else {
		lines += "\nNothing is open on " + escape(a.Flag) + " any more; this incident is closed."
	}
	ctx := []string{}
	if a.Reason != "" {
		ctx = append(ctx, escape(a.Reason))
	}
	ctx = append(ctx, "Resolved "+now.UTC().Format("2006-01-02 15:04 UTC")+" · "+strconv.Itoa(len(keys))+" finding(s)")
	return Message{
		Text:   truncate(text, maxTextChars),
		Blocks: []slack.Block{section(lines), contextBlock(ctx...)},
		Metadata: &slack.SlackMetadata{EventType: "flagwatch_alert", EventPayload: map[string]any{
			"flag": a.Flag, "decision": alert.Resolved, "dedup_key": a.DedupKey,
		}},
	}
}

// markResolved rewrites an incident's first message: a "Resolved" header and a closing
// line, the rest as it was.
func markResolved(parent body, a *alert.Alert, now time.Time) Message {
	blocks := append([]slack.Block(nil), parent.Blocks.BlockSet...)
	title := "Resolved"
	if len(blocks) > 0 {
		if h, ok := blocks[0].(*slack.HeaderBlock); ok && h.Text != nil {
			old := h.Text.Text
			if i := strings.Index(old, " "); i > 0 && strings.HasPrefix(old, ":") {
				old = old[i+1:] // drop the status emoji
			}
			title = ":white_check_mark: Resolved · " + old
			blocks = blocks[1:]
		}
	}
	closing := contextBlock("*Resolved " + now.UTC().Format("2006-01-02 15:04 UTC") + ":* " + escape(alertText(a)))
	out := append([]slack.Block{header(title)}, blocks...)
	if len(out) >= maxBlocks {
		out = out[:maxBlocks-1]
	}
	out = append(out, closing)
	return Message{Text: truncate("Resolved: "+parent.Text, maxTextChars), Blocks: out}
}

// withFallbackNote adds the reason an alert landed in the default channel.
func withFallbackNote(m Message, wanted, reason string) Message {
	m.Blocks = append(append([]slack.Block(nil), m.Blocks...),
		contextBlock(":information_source: Could not post to "+escape(wanted)+" ("+reason+"); posted here instead. Invite the app there or fix the monitor's slack_channel."))
	if len(m.Blocks) > maxBlocks {
		m.Blocks = append(m.Blocks[:maxBlocks-1], m.Blocks[len(m.Blocks)-1])
	}
	return m
}
