package render

import (
	"regexp"
	"strings"

	slackapi "github.com/slack-go/slack"

	"github.com/flagwatch/flagwatch/pipeline/slack"
)

// Thread is one top-level message and what happened under it, in order: its replies, the
// files shared into it, and its rewrites (chat.update).
type Thread struct {
	Channel string
	Parent  slack.Record
	Replies []slack.Record
}

// Threads groups Slack calls (as the dry run records them) into threads, in the order
// their first messages were posted. An update replaces the message it rewrites; a reply
// whose parent is unknown starts a thread of its own.
func Threads(recs []slack.Record) []Thread {
	var out []Thread
	byTS := map[string]int{}
	for _, r := range recs {
		switch {
		case r.Method == "chat.update":
			if i, ok := byTS[r.TS]; ok {
				upd := out[i].Parent
				upd.Text, upd.Blocks = r.Text, r.Blocks
				out[i].Parent = upd
			}
		case r.ThreadTS != "":
			if i, ok := byTS[r.ThreadTS]; ok {
				out[i].Replies = append(out[i].Replies, r)
				continue
			}
			out = append(out, Thread{Channel: r.Channel, Parent: r})
		default:
			byTS[r.TS] = len(out)
			out = append(out, Thread{Channel: r.Channel, Parent: r})
		}
	}
	return out
}

// Text renders a thread as a person reads it in Slack, for a terminal: the channel, the
// first message, and each reply indented under it; mrkdwn becomes plain text (links as
// "label (url)", entities decoded, status emoji as Unicode).
func Text(t Thread) string {
	var b strings.Builder
	b.WriteString("── " + t.Channel + " " + strings.Repeat("─", max(3, 60-len([]rune(t.Channel)))) + "\n")
	writeMessage(&b, t.Parent, "")
	for _, r := range t.Replies {
		b.WriteString("  │\n")
		writeMessage(&b, r, "  │ ")
	}
	return b.String()
}

func writeMessage(b *strings.Builder, r slack.Record, indent string) {
	lines := MessageLines(r.Message)
	if r.File != nil {
		lines = []string{"📎 " + r.File.Name + " — " + plainText(r.File.Title)}
	}
	if r.Broadcast {
		lines = append([]string{"(also sent to the channel)"}, lines...)
	}
	for _, l := range lines {
		b.WriteString(strings.TrimRight(indent+l, " ") + "\n")
	}
}

// MessageLines is one message as plain-text lines.
func MessageLines(m slack.Message) []string {
	var lines []string
	add := func(s string) {
		lines = append(lines, strings.Split(plainText(s), "\n")...)
	}
	for _, blk := range m.Blocks {
		switch x := blk.(type) {
		case *slackapi.HeaderBlock:
			if x.Text != nil {
				add(x.Text.Text)
			}
		case *slackapi.SectionBlock:
			if x.Text != nil {
				add(x.Text.Text)
			}
			for _, f := range x.Fields {
				add(f.Text)
			}
		case *slackapi.ContextBlock:
			var parts []string
			for _, e := range x.ContextElements.Elements {
				if t, ok := e.(*slackapi.TextBlockObject); ok {
					parts = append(parts, t.Text)
				}
			}
			add(strings.Join(parts, " · "))
		case *slackapi.DividerBlock:
			lines = append(lines, "")
		}
	}
	if len(lines) == 0 {
		add(m.Text)
	}
	return lines
}

var (
	linkRE  = regexp.MustCompile(`<([^<>|]+)\|([^<>]*)>`)
	bareRE  = regexp.MustCompile(`<([^<>|]+)>`)
	boldRE  = regexp.MustCompile(`\*([^*\n]+)\*`)
	italRE  = regexp.MustCompile(`(^|[\s(])_([^_\n]+)_($|[\s.,:;)])`)
	emojiRE = regexp.MustCompile(`:[a-z0-9_+-]+:`)
	emojis  = map[string]string{
		":red_circle:": "🔴", ":large_green_circle:": "🟢", ":large_orange_circle:": "🟠", ":white_circle:": "⚪",
		":white_check_mark:": "✅", ":x:": "❌", ":repeat:": "🔁", ":hourglass_flowing_sand:": "⏳",
		":bar_chart:": "📊", ":information_source:": "ℹ️", ":movie_camera:": "🎥",
		":arrow_forward:": "▶️", ":fast_forward:": "⏩", ":checkered_flag:": "🏁", ":double_vertical_bar:": "⏸️",
		":rewind:": "⏪", ":octagonal_sign:": "🛑", ":warning:": "⚠️",
	}
	entities = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")
)

// plainText turns mrkdwn into what a reader sees.
func plainText(s string) string {
	s = linkRE.ReplaceAllStringFunc(s, func(m string) string {
		p := linkRE.FindStringSubmatch(m)
		return p[2] + " (" + strings.ReplaceAll(p[1], "&amp;", "&") + ")"
	})
	s = bareRE.ReplaceAllString(s, "$1")
	s = boldRE.ReplaceAllString(s, "$1")
	s = italRE.ReplaceAllString(s, "$1$2$3")
	s = emojiRE.ReplaceAllStringFunc(s, func(m string) string {
		if e, ok := emojis[m]; ok {
			return e
		}
		return m
	})
	return entities.Replace(s)
}
