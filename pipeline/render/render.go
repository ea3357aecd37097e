// Package render writes what people read: the Slack messages of a flag's incident
// (Block Kit, with the notification text), the weekly digest's messages, and a plain-text
// rendering of a thread for terminals (the demo and the notifier's dry run).
//
// The decision that shapes it: one story per flag. The first message of an incident
// opens the thread with the headline finding (the most important by alert.Priority),
// one recommendation for the whole flag, the headline's numbers with their interval, the
// other findings one line each, and the link to the flag's page; later messages reply in
// the thread with only what is new (and say when the headline changed). A number is
// printed only when it exists — no interval, user count or mean for a finding that has
// none — lifts carry a sign and shared decimals, conversions read as percentages, and
// everything is ordered by priority, then name. Every piece of text that came from an
// alert, an event or the configuration is escaped (Escape) wherever it lands — the
// notification text, blocks, digest, file titles, metadata — so a flag key such as
// "<!channel>" can never ping a channel; the only links are our own (Link).
package render

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/slack"
)

// Slack's Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
const (
	maxSectionChars = 3000
	maxBlocks       = 50
	maxTextChars    = 4000 // the notification text; Slack truncates at 40k
	maxOthers       = 12   // other findings listed in an opening message
	maxSegments     = 8    // segment effects on one line
)

// Options are what rendering needs beyond the alert.
type Options struct {
	// ReportBaseURL links <base>/flags/<flag> when an alert has no PageURL.
	ReportBaseURL string
	// Now stands in for an alert's missing DetectedAt, and stamps resolutions.
	Now time.Time
}

func (o Options) pageURL(a *alert.Alert) string {
	if a.PageURL != "" {
		return a.PageURL
	}
	if o.ReportBaseURL == "" {
		return ""
	}
	return strings.TrimRight(o.ReportBaseURL, "/") + "/flags/" + urlPathEscape(a.Flag)
}

func mrkdwn(text string) *slackapi.TextBlockObject {
	return slackapi.NewTextBlockObject(slackapi.MarkdownType, truncate(text, maxSectionChars), false, false)
}

func section(text string) slackapi.Block {
	return slackapi.NewSectionBlock(mrkdwn(text), nil, nil)
}

func contextBlock(texts ...string) slackapi.Block {
	var els []slackapi.MixedElement
	for _, t := range texts {
		if t != "" && len(els) < 10 {
			els = append(els, mrkdwn(t))
		}
	}
	return slackapi.NewContextBlock("", els...)
}

// metadata is the message metadata: the alert's identity and, for the notifier, its op,
// all escaped like any other text that reaches Slack.
func metadata(a *alert.Alert, decision, key string) *slackapi.SlackMetadata {
	return &slackapi.SlackMetadata{EventType: "flagwatch_alert", EventPayload: map[string]any{
		"flag": Escape(a.Flag), "decision": Escape(decision), "dedup_key": Escape(key),
	}}
}

// SetOp records the notifier's op in m's metadata (escaped: it contains the flag key).
func SetOp(m *slack.Message, op string) {
	if m.Metadata == nil {
		m.Metadata = &slackapi.SlackMetadata{EventType: "flagwatch_alert", EventPayload: map[string]any{}}
	}
	m.Metadata.EventPayload["op"] = Escape(op)
}

func segmentWords(s *alert.Segment) string {
	switch {
	case s == nil:
		return ""
	case s.Value == nil:
		return "by " + s.Property
	}
	return s.Property + " = " + *s.Value
}

// about is what a finding is about, escaped: "purchase conversion in $geoip_country_code = GB".
func about(f alert.Finding) string {
	var parts []string
	if f.Metric != "" {
		parts = append(parts, Escape(f.Metric))
	}
	if s := segmentWords(f.Segment); s != "" {
		if f.Segment.Value != nil {
			s = "in " + s
		}
		parts = append(parts, Escape(s))
	}
	return strings.Join(parts, " ")
}

// title is a finding's status line: ":red_circle: guardrail breached · errors per user".
func title(f alert.Finding) string {
	mark, words := markWords(f)
	s := mark + " " + words
	if a := about(f); a != "" {
		s += " · " + a
	}
	return s
}

// summary is a finding's sentence, escaped: the analyzer's Summary, or one built from
// the finding.
func summary(flag string, f alert.Finding) string {
	if f.Summary != "" {
		return Escape(f.Summary)
	}
	s := Escape(flag) + ": " + Words(f.Decision)
	if a := about(f); a != "" {
		s += " · " + a
	}
	return s
}

// versus names the comparison: "test vs control".
func versus(f alert.Finding) string {
	v, c := f.Variant, f.Numbers.Control
	if v == "" {
		return ""
	}
	if c == "" {
		c = "control"
	}
	return Escape(v) + " vs " + Escape(c)
}

// segmentLine is a finding's per-segment lifts: "GB −67% [−80%, −54%] · IN +36% [+21%,
// +51%]; total +5% (inconclusive)", grouped by property when the finding is not about one
// ("$geoip_country_code: GB −73% · IN +46%; plan: free +8%"). withCI false drops the
// intervals for compact lines.
func segmentLine(f alert.Finding, withCI bool) string {
	effs := segmentEffects(f.Numbers)
	own := f.Segment != nil && f.Segment.Value == nil
	byProp := map[string][]string{}
	var props []string
	for i, s := range effs {
		if i == maxSegments {
			byProp[props[len(props)-1]] = append(byProp[props[len(props)-1]], fmt.Sprintf("…and %d more", len(effs)-maxSegments))
			break
		}
		l := Percent(s.Lift)
		if withCI {
			l = LiftInterval(s.Lift, s.CI)
		}
		if _, ok := byProp[s.Property]; !ok {
			props = append(props, s.Property)
		}
		byProp[s.Property] = append(byProp[s.Property], Escape(s.Value)+" "+l)
	}
	var groups []string
	for _, p := range props {
		g := strings.Join(byProp[p], " · ")
		if !own || p != f.Segment.Property {
			g = Escape(p) + ": " + g
		}
		groups = append(groups, g)
	}
	line := strings.Join(groups, "; ")
	if f.Decision == alert.SegmentDivergence {
		if t := total(f); t != "" {
			line += "; " + t
		}
	}
	return line
}

// total is a divergence's total lift: with its interval and what the interval says when
// there is one; a divergence means the total is flat, so without one it is inconclusive.
func total(f alert.Finding) string {
	n := f.Numbers
	if !hasInterval(n.CI) {
		if n.Lift == 0 {
			return ""
		}
		return "total " + Percent(n.Lift) + " (inconclusive)"
	}
	verdict := "inconclusive"
	if n.CI[0] > 0 || n.CI[1] < 0 {
		verdict = "significant"
	}
	return "total " + LiftInterval(n.Lift, n.CI) + " (" + verdict + ")"
}

// numbers is the evidence of a finding, each part printed only when it exists.
func numbers(f alert.Finding) []string {
	if f.Decision == alert.Rollout {
		return rolloutNumbers(f)
	}
	n := f.Numbers
	var lines []string
	if f.Decision != alert.SegmentDivergence && (hasInterval(n.CI) || n.Lift != 0) && f.Metric != "" {
		s := "*Lift"
		if vs := versus(f); vs != "" {
			s += " (" + vs + ")"
		}
		lines = append(lines, s+":* "+LiftInterval(n.Lift, n.CI))
	}
	if len(n.Segments) > 0 && (f.Decision == alert.SegmentDivergence || f.Segment == nil) {
		head := about(f)
		if f.Decision != alert.SegmentDivergence {
			head = "By segment"
		}
		if vs := versus(f); vs != "" && f.Decision == alert.SegmentDivergence {
			head += " (" + vs + ")"
		}
		lines = append(lines, "*"+head+":* "+segmentLine(f, true))
	}
	var ev []string
	control := n.Control
	if control == "" {
		control = "control"
	}
	variant := f.Variant
	if variant == "" {
		variant = "variant"
	}
	// Means exist when both arms have users and the analyzer sent them: two zero means
	// cannot come with a lift, so they were not sent.
	if n.ControlN > 0 && n.VariantN > 0 && (n.ControlMean != 0 || n.VariantMean != 0) && f.Metric != "" &&
		f.Decision != alert.SegmentDivergence {
		cm, vm := means(n.MetricKind, n.ControlMean, n.VariantMean)
		label := "mean"
		if n.MetricKind == "conversion" {
			label = "conversion"
		}
		ev = append(ev, label+" "+Escape(control)+" "+cm+" → "+Escape(variant)+" "+vm)
	}
	switch {
	case n.ControlN > 0 && n.VariantN > 0:
		ev = append(ev, "users "+Escape(control)+" "+Count(n.ControlN)+" · "+Escape(variant)+" "+Count(n.VariantN))
	case n.VariantN > 0:
		ev = append(ev, Count(n.VariantN)+" users")
	}
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
	if len(ev) > 0 {
		lines = append(lines, strings.Join(ev, " · "))
	}
	return lines
}

// compact is a finding on one line: its status, what it is about, and its lift.
func compact(f alert.Finding) string {
	mark, words := markWords(f)
	s := mark + " *" + words + "*"
	if a := about(f); a != "" {
		s += " · " + a
	}
	switch {
	case len(f.Numbers.Segments) > 0 && f.Decision == alert.SegmentDivergence:
		s += ": " + segmentLine(f, false)
	case f.Metric != "" && (hasInterval(f.Numbers.CI) || f.Numbers.Lift != 0):
		s += ": " + LiftInterval(f.Numbers.Lift, f.Numbers.CI)
	case f.Summary != "":
		s += ": " + Escape(f.Summary)
	}
	if f.Discovered {
		s += " _(found by property discovery)_"
	}
	return s
}

// rollbackLine is what the analyzer called: a rollback, or a rollout's flag change.
func rollbackLine(a *alert.Alert) string {
	r := a.Rollback
	mark := ":white_check_mark:"
	if r.Status != "ok" {
		mark = ":x:"
	}
	label := "Rollback"
	if a.Decision == alert.Rollout {
		label = "Flag change"
	}
	s := fmt.Sprintf("*%s* (%s `%s`): %s %s", label, Escape(r.Action), Escape(r.Target), mark, Escape(r.Status))
	if r.Detail != "" {
		s += " · " + Escape(r.Detail)
	}
	if !r.At.IsZero() {
		s += " · " + r.At.UTC().Format("2006-01-02 15:04 UTC")
	}
	return s
}

func stamp(a *alert.Alert, o Options) string {
	at := a.DetectedAt
	if at.IsZero() {
		at = o.Now
	}
	s := "Detected " + at.UTC().Format("2006-01-02 15:04 UTC")
	if a.Severity != "" {
		s += " · " + Escape(a.Severity)
	}
	return s
}

// Opening is the first message of a flag's incident: the headline, what to do, the
// headline's numbers, the other findings one line each, the rollback, and the page link.
func Opening(a *alert.Alert, o Options) slack.Message {
	fs := Findings(a)
	head := fs[0]
	mark, words := markWords(head)
	blocks := []slackapi.Block{
		section("*" + mark + " " + Escape(a.Flag) + " — " + words + "*\n" + summary(a.Flag, head)),
		section("*What to do:* " + Escape(Recommendation(a, fs))),
	}
	if lines := numbers(head); len(lines) > 0 {
		blocks = append(blocks, section(strings.Join(lines, "\n")))
	}
	if len(fs) > 1 {
		var b strings.Builder
		b.WriteString("*Also on this flag*")
		for i, f := range fs[1:] {
			if i == maxOthers {
				fmt.Fprintf(&b, "\n…and %d more on the flag's page", len(fs)-1-maxOthers)
				break
			}
			b.WriteString("\n• " + compact(f))
		}
		blocks = append(blocks, section(b.String()))
	}
	if a.Rollback != nil {
		blocks = append(blocks, section(rollbackLine(a)))
	}
	blocks = append(blocks, contextBlock(footer(a, head, o)...))
	return slack.Message{
		Text:     truncate(summary(a.Flag, head), maxTextChars),
		Blocks:   blocks,
		Metadata: metadata(a, head.Decision, head.DedupKey),
	}
}

func footer(a *alert.Alert, head alert.Finding, o Options) []string {
	var ctx []string
	if head.Reason != "" {
		ctx = append(ctx, Escape(head.Reason))
	}
	if c := head.Numbers.Correction; c != "" {
		ctx = append(ctx, "Corrected for multiple comparisons: "+Escape(c))
	}
	if u := o.pageURL(a); u != "" {
		ctx = append(ctx, Link(u, "Open "+a.Flag+" in flagwatch"))
	}
	return append(ctx, stamp(a, o))
}

// Update is what a thread reply reports: the findings new to the thread, the unresolved
// critical ones posted again, and the ones that no longer hold.
type Update struct {
	New, Repeat, Resolved []alert.Finding
	// HeadlineChanged says the flag's most important finding is not the one the thread
	// last headlined.
	HeadlineChanged bool
	// Closes says nothing is open on the flag after this reply.
	Closes bool
	// Since is when the repeated findings were last posted.
	Since time.Time
}

// Empty reports whether the update has nothing to say.
func (u Update) Empty() bool { return len(u.New)+len(u.Repeat)+len(u.Resolved) == 0 }

// Reply is a thread reply with only what is new: the new findings with their numbers,
// the repeats, the resolutions; the headline and recommendation again only when the
// headline changed or something critical is reported.
func Reply(a *alert.Alert, u Update, o Options) slack.Message {
	fs := Findings(a)
	head := fs[0]
	var blocks []slackapi.Block
	var text string
	critical := false
	for _, f := range append(append([]alert.Finding(nil), u.New...), u.Repeat...) {
		critical = critical || f.Severity == alert.Critical
	}
	switch {
	case u.HeadlineChanged && len(u.New)+len(u.Repeat) > 0:
		blocks = append(blocks, section("*Headline now · "+Emoji(head.Decision)+" "+Escape(a.Flag)+" — "+Words(head.Decision)+"*\n"+summary(a.Flag, head)))
		text = "Headline now: " + summary(a.Flag, head)
	case len(u.Repeat) > 0 && len(u.New) == 0:
		text = "Still unresolved: " + summary(a.Flag, u.Repeat[0])
	case len(u.New) > 0:
		text = "Update on " + Escape(a.Flag) + ": " + summary(a.Flag, u.New[0])
	default:
		text = "Resolved: " + summary(a.Flag, u.Resolved[0])
	}
	if (u.HeadlineChanged || critical) && len(u.New)+len(u.Repeat) > 0 {
		blocks = append(blocks, section("*What to do:* "+Escape(Recommendation(a, fs))))
	}
	headShown := false
	for _, f := range u.New {
		if u.HeadlineChanged && f.DedupKey == head.DedupKey {
			// The new headline was just introduced above: its numbers follow it directly.
			if lines := numbers(f); len(lines) > 0 {
				blocks = append(blocks, section(strings.Join(lines, "\n")))
			}
			headShown = true
		}
	}
	for i, f := range u.New {
		if headShown && f.DedupKey == head.DedupKey {
			continue
		}
		if len(blocks) >= maxBlocks-6 {
			blocks = append(blocks, section(fmt.Sprintf("…and %d more new findings on the flag's page", len(u.New)-i)))
			break
		}
		lines := append([]string{"*New · " + title(f) + "*", summary(a.Flag, f)}, numbers(f)...)
		blocks = append(blocks, section(strings.Join(lines, "\n")))
	}
	if len(u.Repeat) > 0 {
		var b strings.Builder
		b.WriteString("*:repeat: Still unresolved")
		if !u.Since.IsZero() {
			b.WriteString(" (last posted " + u.Since.UTC().Format("2006-01-02 15:04 UTC") + ")")
		}
		b.WriteString("*")
		for _, f := range u.Repeat {
			b.WriteString("\n• " + compact(f))
		}
		blocks = append(blocks, section(b.String()))
	}
	if len(u.Resolved) > 0 {
		var b strings.Builder
		b.WriteString("*:white_check_mark: No longer holds*")
		for _, f := range u.Resolved {
			b.WriteString("\n• " + summary(a.Flag, f))
		}
		if u.Closes {
			b.WriteString("\nNothing is open on " + Escape(a.Flag) + " any more; this incident is closed.")
		} else {
			b.WriteString("\nOther findings on " + Escape(a.Flag) + " are still open.")
		}
		blocks = append(blocks, section(b.String()))
	}
	if a.Rollback != nil && len(u.New) > 0 {
		blocks = append(blocks, section(rollbackLine(a)))
	}
	var ctx []string
	if u := o.pageURL(a); u != "" {
		ctx = append(ctx, Link(u, "Open "+a.Flag+" in flagwatch"))
	}
	blocks = append(blocks, contextBlock(append(ctx, stamp(a, o))...))
	key := head.DedupKey
	if len(u.New) > 0 {
		key = u.New[0].DedupKey
	}
	return slack.Message{Text: truncate(text, maxTextChars), Blocks: blocks, Metadata: metadata(a, head.Decision, key)}
}

// Watch is an incident's "sessions to watch" reply (SPEC §12): whose sessions they are
// and a link to each one's recording, for the finding f that carries them (f.Watch).
// It holds links and start times only, never a name or an email.
func Watch(a *alert.Alert, f alert.Finding, o Options) slack.Message {
	w := f.Watch
	n := len(w.Sessions)
	head := fmt.Sprintf("%d sessions to watch: %s", n, Escape(w.Who))
	if n == 1 {
		head = "1 session to watch: " + Escape(w.Who)
	}
	var b strings.Builder
	b.WriteString("*:movie_camera: " + head + "*")
	for i, s := range w.Sessions {
		if i == maxOthers {
			break
		}
		label := fmt.Sprintf("Session %d", i+1)
		if !s.Start.IsZero() {
			label += " · started " + s.Start.UTC().Format("Jan 2 15:04 UTC")
		}
		b.WriteString("\n• " + Link(s.URL, label))
	}
	ctx := []string{"Behind " + title(f)}
	if u := o.pageURL(a); u != "" {
		ctx = append(ctx, Link(u, "Open "+a.Flag+" in flagwatch"))
	}
	return slack.Message{
		Text:     truncate(head, maxTextChars),
		Blocks:   []slackapi.Block{section(b.String()), contextBlock(ctx...)},
		Metadata: metadata(a, f.Decision, f.DedupKey),
	}
}

// MarkResolved rewrites an incident's first message once nothing is open: a "Resolved"
// line on top and a closing line at the bottom, the rest as it was.
func MarkResolved(parent slack.Body, a *alert.Alert, now time.Time) slack.Message {
	blocks := append([]slackapi.Block{section("*:white_check_mark: Resolved " + now.UTC().Format("2006-01-02 15:04 UTC") + "* · nothing is open on " + Escape(a.Flag) + " any more")},
		parent.Blocks.BlockSet...)
	if len(blocks) > maxBlocks {
		blocks = blocks[:maxBlocks]
	}
	return slack.Message{Text: truncate("Resolved: "+parent.Text, maxTextChars), Blocks: blocks}
}

// FallbackNote adds the reason an alert landed in the default channel.
func FallbackNote(m slack.Message, wanted, reason string) slack.Message {
	m.Blocks = append(append([]slackapi.Block(nil), m.Blocks...),
		contextBlock(":information_source: Could not post to "+Escape(wanted)+" ("+Escape(reason)+"); posted here instead. Invite the app there or fix the monitor's slack_channel."))
	if len(m.Blocks) > maxBlocks {
		m.Blocks = append(m.Blocks[:maxBlocks-1], m.Blocks[len(m.Blocks)-1])
	}
	return m
}

func urlPathEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(strconv.FormatInt(int64(c)|0x100, 16)[1:]))
		}
	}
	return b.String()
}
