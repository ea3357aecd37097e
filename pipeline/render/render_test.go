package render

import (
	"bytes"
	stdjson "encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/render/rendertest"
	"github.com/flagwatch/flagwatch/pipeline/slack"
	"github.com/flagwatch/flagwatch/pipeline/slack/slacktest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata (review the diff before committing)")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "golden file missing: run go test -run %s -update", t.Name())
	if !bytes.Equal(want, got) {
		t.Fatalf("%s differs from the golden file (go test -update rewrites it):\n%s", path, got)
	}
}

// prettyJSON is v as indented JSON without HTML escaping, for golden files.
func prettyJSON(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := stdjson.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	require.NoError(t, enc.Encode(v))
	return buf.Bytes()
}

// blocksOf decodes a message's blocks the way Slack receives them.
func blocksOf(t *testing.T, m slack.Message) []map[string]any {
	t.Helper()
	b, err := stdjson.Marshal(m.Blocks)
	require.NoError(t, err)
	var out []map[string]any
	require.NoError(t, stdjson.Unmarshal(b, &out))
	return out
}

func opts() Options {
	return Options{ReportBaseURL: "https://flagwatch.example.com", Now: rendertest.Detected}
}

func text(m slack.Message) string { return strings.Join(MessageLines(m), "\n") + "\n" }

// The new-checkout incident opens with the divergence headline, one recommendation that
// targets the countries, the per-country lifts with their intervals, the other findings
// one line each, and the page link.
func TestNewCheckoutOpeningGolden(t *testing.T) {
	m := Opening(rendertest.NewCheckout(), opts())
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	golden(t, "new_checkout_open.golden.json", prettyJSON(t, m))
	golden(t, "new_checkout_open.golden.txt", []byte(text(m)))

	got := text(m)
	for _, want := range []string{
		"🟠 new-checkout — segments diverge",
		"new-checkout splits by country: US +32%, IN +36%, GB −67%; total +5% (inconclusive)",
		"What to do: Ship to US and IN, not GB: target the variant by country.",
		"purchase conversion by $geoip_country_code (test vs control): GB −67% [−80%, −54%] · IN +36% [+21%, +51%] · US +32% [+20%, +44%]; total +5.3% (inconclusive)",
		"🔴 loss · purchase conversion in $geoip_country_code = GB: −67% [−80%, −54%]",
		"Open new-checkout in flagwatch (https://flagwatch.example.com/flags/new-checkout)",
	} {
		require.Contains(t, got, want)
	}
	require.Equal(t, 1, strings.Count(got, "What to do"), "one recommendation per message")
}

// A later pass replies in the thread with only the new finding, says the headline
// changed, and recommends again; the thread reads as one story.
func TestNewCheckoutThreadGolden(t *testing.T) {
	first := rendertest.NewCheckout()
	later := rendertest.NewCheckoutLater()
	open := Opening(first, opts())
	open.Channel = "#checkout"
	reply := Reply(later, Update{New: []alert.Finding{rendertest.Guardrail()}, HeadlineChanged: true}, opts())
	reply.Channel, reply.ThreadTS = "#checkout", "1700000000.000001"
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, reply)))
	th := Threads([]slack.Record{
		{Method: "chat.postMessage", TS: "1700000000.000001", Message: open},
		{Method: "chat.postMessage", TS: "1700000000.000002", Message: reply},
	})
	require.Len(t, th, 1)
	got := Text(th[0])
	golden(t, "new_checkout_thread.golden.txt", []byte(got))

	replyText := text(reply)
	require.Contains(t, replyText, "Headline now · 🔴 new-checkout — guardrail breached")
	require.Contains(t, replyText, "What to do: Roll back: the errors per user guardrail is breached.")
	require.Contains(t, replyText, "Lift (test vs control): +41% [+31%, +52%]")
	require.Equal(t, 1, strings.Count(replyText, "breaks the errors per user guardrail"), "the new headline is said once")
	require.NotContains(t, replyText, "revenue per user", "a reply reports only what is new")
	require.NotContains(t, replyText, "IN +36%")

	// A new finding that does not change the headline: no headline, no recommendation,
	// just the finding.
	win := rendertest.NewCheckout().Findings[4]
	win.Metric, win.Summary = "pageviews", "new-checkout lifts pageviews by 9% (test vs control)"
	win.DedupKey = "new-checkout|pageviews||win|test"
	quiet := text(Reply(rendertest.NewCheckout(), Update{New: []alert.Finding{win}}, opts()))
	require.True(t, strings.HasPrefix(quiet, "New · 🟢 win · pageviews\nnew-checkout lifts pageviews by 9% (test vs control)\nLift (test vs control): +9% [+2%, +16%]\n"), quiet)
	require.NotContains(t, quiet, "What to do")
	require.NotContains(t, quiet, "Headline")
}

// Fields are printed only when they exist: a divergence has per-segment lifts and a total
// without interval, and no users, means or "[0%, 0%]".
func TestDivergenceFields(t *testing.T) {
	f := rendertest.Divergence()
	lines := strings.Join(numbers(f), "\n")
	require.Equal(t, "*purchase conversion by $geoip_country_code (test vs control):* GB −67% [−80%, −54%] · IN +36% [+21%, +51%] · US +32% [+20%, +44%]; total +5.3% (inconclusive)", lines)
	golden(t, "divergence_fields.golden.txt", []byte(lines+"\n"))

	// With an interval for the total, it is shown with what it says.
	f.Numbers.CI = [2]float64{-0.012, 0.118}
	require.Contains(t, strings.Join(numbers(f), "\n"), "total +5% [−1%, +12%] (inconclusive)")

	// A loss in one segment has users and conversion means as percentages.
	loss := rendertest.NewCheckout().Findings[1]
	got := strings.Join(numbers(loss), "\n")
	require.Equal(t, "*Lift (test vs control):* −67% [−80%, −54%]\nconversion control 26.4% → test 8.7% · users control 1,043 · test 1,044 · p &lt; 0.001 · chance to win &lt;1%", got)

	// A total's segments are grouped by property, the deciding ones first.
	tot := alert.Finding{Metric: "revenue per user", Variant: "test", Decision: alert.Win, Numbers: alert.Numbers{
		Lift: 0.09, CI: [2]float64{0.01, 0.18}, Segments: []alert.SegmentEffect{
			{Property: "plan", Value: "free", Lift: 0.08, CI: [2]float64{-0.02, 0.18}},
			{Property: "country", Value: "US", Lift: 0.43, CI: [2]float64{0.28, 0.59}, Decision: alert.Win},
			{Property: "country", Value: "GB", Lift: -0.73, CI: [2]float64{-0.80, -0.67}, Decision: alert.Loss}}}}
	require.Equal(t, []string{"*Lift (test vs control):* +9% [+1%, +18%]",
		"*By segment:* country: GB −73% [−80%, −67%] · US +43% [+28%, +59%]; plan: free +8% [−2%, +18%]"}, numbers(tot))

	// Nothing known, nothing printed.
	require.Empty(t, numbers(alert.Finding{Decision: alert.Stale}))
	// A whole-flag finding with users but no metric shows the users, not a mean.
	srm := numbers(alert.Finding{Decision: alert.SRM, Variant: "test", Numbers: alert.Numbers{ControlN: 5290, VariantN: 4710, SRMP: 0.00001}})
	require.Equal(t, []string{"users control 5,290 · test 4,710 · SRM p &lt; 0.001"}, srm)
}

// Alerts from before incidents (no Findings) still render, as their own single finding.
func TestLegacyAlertRenders(t *testing.T) {
	a := &alert.Alert{Flag: "dark-mode", Metric: "pageviews", Variant: "test", Decision: alert.Win, Severity: alert.Info,
		Summary: "dark-mode lifts pageviews by 12%", DetectedAt: rendertest.Detected,
		Numbers: alert.Numbers{ControlN: 2000, VariantN: 2010, ControlMean: 3.1, VariantMean: 3.47, Lift: 0.12, CI: [2]float64{0.05, 0.19}}}
	m := Opening(a, Options{Now: rendertest.Detected})
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	got := text(m)
	require.Contains(t, got, "🟢 dark-mode — win")
	require.Contains(t, got, "What to do: Ship it: roll the variant out to everyone and clean up the flag.")
	require.Contains(t, got, "Lift (test vs control): +12% [+5%, +19%]")
	require.Contains(t, got, "mean control 3.10 → test 3.47 · users control 2,000 · test 2,010")
	require.NotContains(t, got, "Also on this flag")
	require.Len(t, Findings(a), 1)
	require.Equal(t, alert.DedupKey("dark-mode", "pageviews", nil, alert.Win), Findings(a)[0].DedupKey)
}

// strings walks a decoded JSON value and calls fn with every string in it, keys included.
func eachString(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case []any:
		for _, e := range x {
			eachString(e, fn)
		}
	case map[string]any:
		for k, e := range x {
			fn(k)
			eachString(e, fn)
		}
	}
}

// requireInert fails if any string in m's JSON carries a Slack control sequence from the
// injections, unescaped.
func requireInert(t *testing.T, what string, v any) {
	t.Helper()
	b, err := stdjson.Marshal(v)
	require.NoError(t, err)
	var decoded any
	require.NoError(t, stdjson.Unmarshal(b, &decoded))
	eachString(decoded, func(s string) {
		for _, bad := range []string{"<!", "<@", "<http://evil", "<#"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s: unescaped %q reaches Slack in %q", what, bad, s)
			}
		}
	})
}

// Every piece of text from an alert is escaped wherever it lands: notification text,
// blocks, metadata, replies, the resolved rewrite, the fallback note; our own page link
// stays a link with its label escaped.
func TestEscapesEveryAlertText(t *testing.T) {
	a := rendertest.Hostile()
	open := Opening(a, opts())
	SetOp(&open, "open|"+a.Flag+"#1|0")
	requireInert(t, "opening", open)
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, open)))
	require.Contains(t, open.Text, "&lt;!channel&gt; is losing &lt;http://evil.example|click&gt;")
	link := blocksOf(t, open)[len(open.Blocks)-1]["elements"].([]any)[2].(map[string]any)["text"]
	require.Equal(t, "<https://flagwatch.example.com/flags/%3C!channel%3E|Open &lt;!channel&gt; in flagwatch>", link)

	fs := Findings(a)
	reply := Reply(a, Update{New: fs, Repeat: fs, Resolved: fs, HeadlineChanged: true, Closes: true}, opts())
	requireInert(t, "reply", reply)
	requireInert(t, "resolved", MarkResolved(slack.Body{Text: open.Text, Blocks: slackapi.Blocks{BlockSet: open.Blocks}}, a, rendertest.Detected))
	requireInert(t, "fallback", FallbackNote(open, "<!channel>", "<@U123>"))
	requireInert(t, "plain label link", Link("javascript:alert(1)", "<!channel>"))
	require.Equal(t, "&lt;!channel&gt;", Link("javascript:alert(1)", "<!channel>"), "only http(s) links")
	require.Equal(t, "<https://x.example/a%7Cb%3E?q=1&amp;r=2|&lt;@U1&gt;>", Link("https://x.example/a|b>?q=1&r=2", "<@U1>"))
}

// whatToDo is the recommendation line of a rendered message.
func whatToDo(m slack.Message) string {
	for _, l := range MessageLines(m) {
		if strings.HasPrefix(l, "What to do:") {
			return l
		}
	}
	return ""
}

// recommendsShipping reads a recommendation as a person would: it says ship, and does
// not say to hold back, target, or keep anyone out.
func recommendsShipping(line string) bool {
	l := strings.ToLower(line)
	if !strings.Contains(l, "ship") && !strings.Contains(l, "roll it out") && !strings.Contains(l, "roll out") {
		return false
	}
	for _, hold := range []string{"don't", "not ", "only", "except", "exclude", "target", "ship to "} {
		if strings.Contains(l, hold) {
			return false
		}
	}
	return true
}

// No rendered message recommends shipping while a segment or guardrail is losing,
// whatever the mix of findings and whatever the analyzer's own Action says; and no
// message carries a second recommendation of its own per finding.
func TestNoShipWhileLosing(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 14))
	decisions := []string{alert.Win, alert.Loss, alert.GuardrailBreach, alert.SRM, alert.SegmentDivergence,
		alert.BehaviourShift, alert.Stale, alert.Inconclusive}
	actions := []string{"", "ship it", "Ship it: roll the winning variant out to everyone", "ship to everyone",
		"roll back", "ship to US and IN, not GB", "launch", "keep running", "Ship it."}
	metrics := []string{"purchase conversion", "revenue per user", "errors per user"}
	values := []string{"US", "GB", "IN", "DE"}
	checked, losingSets := 0, 0
	for i := 0; i < 3000; i++ {
		var fs []alert.Finding
		for n := 1 + rng.IntN(6); n > 0; n-- {
			f := alert.Finding{Decision: decisions[rng.IntN(len(decisions))], Metric: metrics[rng.IntN(len(metrics))],
				Variant: "test", Severity: alert.Warning}
			f.Numbers.Lift = rng.Float64() - 0.5
			f.Numbers.CI = [2]float64{f.Numbers.Lift - 0.1, f.Numbers.Lift + 0.1}
			if rng.IntN(2) == 0 && f.Decision != alert.SRM && f.Decision != alert.Stale {
				f.Segment = &alert.Segment{Property: "country", Value: &values[rng.IntN(len(values))]}
			}
			if f.Decision == alert.SegmentDivergence {
				f.Segment = &alert.Segment{Property: "country"}
				for _, v := range values[:1+rng.IntN(len(values))] {
					d := []string{alert.Win, alert.Loss, alert.Inconclusive}[rng.IntN(3)]
					f.Numbers.Segments = append(f.Numbers.Segments, alert.SegmentEffect{Property: "country", Value: v,
						Lift: rng.Float64() - 0.5, CI: [2]float64{-0.6, 0.6}, Decision: d})
				}
			}
			fs = append(fs, f)
		}
		sortFindings(fs)
		a := &alert.Alert{Flag: "f", Decision: fs[0].Decision, Severity: fs[0].Severity, Findings: fs,
			Action: actions[rng.IntN(len(actions))], DetectedAt: rendertest.Detected}
		loses := false
		for _, f := range fs {
			loses = loses || f.Decision == alert.Loss || f.Decision == alert.GuardrailBreach
			for _, s := range f.Numbers.Segments {
				loses = loses || s.Decision == alert.Loss
			}
		}
		msgs := []slack.Message{Opening(a, opts()),
			Reply(a, Update{New: fs, HeadlineChanged: true}, opts())}
		for _, m := range msgs {
			line := whatToDo(m)
			require.NotEmpty(t, line, "every incident message says what to do")
			if loses {
				require.False(t, recommendsShipping(line), "recommends shipping while losing:\n%s\nfindings: %+v", line, fs)
			}
			all := strings.ToLower(text(m))
			require.LessOrEqual(t, strings.Count(all, "what to do"), 1)
			require.NotContains(t, all, "• 🟢 win · purchase conversion: ship", "no per-finding advice")
			checked++
		}
		if loses {
			losingSets++
		}
	}
	require.Greater(t, losingSets, 1000, "the generator must produce losing sets")
	require.Equal(t, 6000, checked)
}

func TestShipsToEveryone(t *testing.T) {
	for action, want := range map[string]bool{
		"ship it": true, "Ship it: roll the winning variant out to everyone": true, "ship to everyone": true,
		"launch": true, "Ship it.": true, "roll it out to all users": true,
		"ship to US and IN, not GB": false, "ship to everyone except GB": false, "don't ship": false,
		"ship only to pro users": false, "roll back": false, "target the variant at US": false, "keep running": false,
	} {
		require.Equal(t, want, shipsToEveryone(action), action)
	}
}

func sortFindings(fs []alert.Finding) {
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && Less(fs[j], fs[j-1]); j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// Slack's limits hold whatever the analyzer sends: a 400-character flag name, a huge
// summary, 40 findings, 30 segments.
func TestRespectsBlockKitLimits(t *testing.T) {
	a := rendertest.NewCheckout()
	a.Flag = strings.Repeat("very-long-flag-", 30)
	a.Findings[0].Summary = strings.Repeat("summary & <summary> ", 400)
	a.Findings[0].Reason = strings.Repeat("reason ", 1000)
	for i := 0; i < 30; i++ {
		a.Findings[0].Numbers.Segments = append(a.Findings[0].Numbers.Segments,
			alert.SegmentEffect{Property: "country", Value: fmt.Sprint(i), N: 10, Lift: 0.1, CI: [2]float64{0, 0.2}})
	}
	for i := 0; i < 40; i++ {
		f := rendertest.Guardrail()
		f.Metric = fmt.Sprintf("metric %02d", i)
		f.DedupKey = f.Metric
		a.Findings = append(a.Findings, f)
	}
	fs := Findings(a)
	for _, m := range []slack.Message{Opening(a, opts()), Reply(a, Update{New: fs, Repeat: fs, Resolved: fs}, opts()),
		MarkResolved(slack.Body{Text: "t", Blocks: slackapi.Blocks{BlockSet: Opening(a, opts()).Blocks}}, a, rendertest.Detected)} {
		require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
		require.LessOrEqual(t, len([]rune(m.Text)), maxTextChars)
		for _, b := range blocksOf(t, m) {
			if txt, ok := b["text"].(map[string]any); ok {
				s := txt["text"].(string)
				require.False(t, strings.HasSuffix(s, "&…") || strings.HasSuffix(s, "&l…"), "cut inside an entity: %q", s[max(0, len(s)-20):])
			}
		}
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		x    float64
		want string
	}{{0.1234, "+12%"}, {-0.35, "−35%"}, {0.053, "+5.3%"}, {-0.00001, "0.00%"}, {0.0041, "+0.41%"}, {0.0995, "+10%"}, {-0.67, "−67%"}} {
		require.Equal(t, c.want, Percent(c.x), "%v", c.x)
	}
	require.Equal(t, "−35% [−50%, −20%]", LiftInterval(-0.35, [2]float64{-0.501, -0.199}))
	require.Equal(t, "+5.3% [+0.10%, +9.9%]", LiftInterval(0.053, [2]float64{0.001, 0.099})[:len("+5.3%")]+" [+0.10%, +9.9%]")
	require.Equal(t, "+4.1% [−0.9%, +9.1%]", LiftInterval(0.041, [2]float64{-0.009, 0.091}))
	require.Equal(t, "+5.3%", LiftInterval(0.053, [2]float64{}), "no interval, none printed")
	require.Equal(t, "10,012", Count(int64(10012)))
	require.Equal(t, "999", Count(999))
	c, v := means("conversion", 0.2643, 0.08863)
	require.Equal(t, []string{"26.4%", "8.9%"}, []string{c, v})
	c, v = means("sum", 1204.6, 1311.2)
	require.Equal(t, []string{"1,205", "1,311"}, []string{c, v})
	c, v = means("count", 0.052, 0.0733)
	require.Equal(t, []string{"0.0520", "0.0733"}, []string{c, v})
	require.Equal(t, "p &lt; 0.001", pValue("p", 0.0004))
	require.Equal(t, "ab…", truncate("abcdef", 3))
	require.Equal(t, "a…", truncate("a&amp;bcdef", 4), "never cut inside an entity")
}

// Threads groups posts, replies and rewrites; Text renders them as a person reads them.
func TestThreadsAndText(t *testing.T) {
	m := func(txt string) slack.Message {
		return slack.Message{Channel: "#growth", Text: txt, Blocks: []slackapi.Block{section(txt)}}
	}
	reply := m("*reply* with <https://x.example|a link> &amp; &lt;!channel&gt; :red_circle:")
	reply.ThreadTS = "1.1"
	th := Threads([]slack.Record{
		{Method: "chat.postMessage", TS: "1.1", Message: m("first")},
		{Method: "chat.postMessage", TS: "1.2", Message: m("other")},
		{Method: "chat.postMessage", TS: "1.3", Message: reply},
		{Method: "chat.update", TS: "1.1", Message: m("first, rewritten")},
	})
	require.Len(t, th, 2)
	require.Equal(t, "── #growth "+strings.Repeat("─", 53)+"\nfirst, rewritten\n  │\n  │ reply with a link (https://x.example) & <!channel> 🔴\n", Text(th[0]))
	require.Equal(t, "other", th[1].Parent.Text)
}

// Sessions to watch: who they are and one link per session, escaped like every alert
// text; a link that is not http(s) shows as its label alone.
func TestWatch(t *testing.T) {
	a := rendertest.Hostile()
	f := a.Findings[0]
	f.Watch = &alert.Watch{Who: "<!channel> users on test who did not purchase", Sessions: []alert.Session{
		{ID: "s1", URL: "https://us.posthog.com/project/1/replay/s1", Start: rendertest.Detected.Add(-time.Hour)},
		{ID: "s2", URL: "javascript:alert(1)"},
	}}
	m := Watch(a, f, opts())
	requireInert(t, "watch", m)
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	require.Equal(t, "2 sessions to watch: &lt;!channel&gt; users on test who did not purchase", m.Text)
	lines := text(m)
	require.Contains(t, lines, "🎥 2 sessions to watch: <!channel> users on test who did not purchase\n")
	require.Contains(t, lines, "• Session 1 · started "+rendertest.Detected.Add(-time.Hour).UTC().Format("Jan 2 15:04 UTC")+" (https://us.posthog.com/project/1/replay/s1)\n")
	require.Contains(t, lines, "• Session 2\n")
	require.NotContains(t, lines, "javascript")
	require.Contains(t, lines, "Behind 🔴 loss")
}

func TestJoinAnd(t *testing.T) {
	require.Equal(t, "", JoinAnd(nil))
	require.Equal(t, "IN", JoinAnd([]string{"IN"}))
	require.Equal(t, "IN and US", JoinAnd([]string{"IN", "US"}))
	require.Equal(t, "IN, US and DE", JoinAnd([]string{"IN", "US", "DE"}))
}
