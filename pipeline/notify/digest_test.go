package notify

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/render/rendertest"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// insertResults writes rows into the migrated analysis_results table, as the analyzer
// does.
func insertResults(t *testing.T, conn store.Conn, rows []digest.Row) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, `INSERT INTO analysis_results (pass_time, pass_id, flag, metric, segment_property,
    segment_value, variant, n, control_n, mean, control_mean, lift, se, ci_low, ci_high, p, chance_to_win, cuped,
    decision, reason, discovered)`)
	require.NoError(t, err)
	for _, r := range rows {
		require.NoError(t, b.Append(r.PassTime, "pass-"+r.PassTime.Format(time.RFC3339), r.Flag, r.Metric, r.SegmentProperty,
			r.SegmentValue, r.Variant, r.N, r.ControlN, r.Mean, r.ControlMean, r.Lift, 0.0, r.CILow, r.CIHigh, r.P,
			r.ChanceToWin, uint8(0), r.Decision, r.Reason, map[bool]uint8{true: 1}[r.Discovered]))
	}
	require.NoError(t, b.Send())
}

// `notifier digest --now` against ClickHouse and the fake Slack: the digest reads the
// latest pass per flag from analysis_results, posts the blocks, and uploads the chart
// into its thread with the files API; a second run for the same slot sends nothing, and
// two replicas at once send one digest.
func TestSendDigestFromClickHouse(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	now, prev := rendertest.DigestRows()
	old := append([]digest.Row(nil), now...) // an older pass this week: must be ignored
	for i := range old {
		old[i].PassTime = old[i].PassTime.Add(-2 * time.Hour)
		old[i].Lift = 0.5
	}
	insertResults(t, e.conn, append(append(old, now...), prev...))

	o := e.opts()
	o.Now = func() time.Time { return rendertest.DigestAt }
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := start(ctx, o, false)
			if err != nil {
				errs[i] = err
				return
			}
			defer s.close()
			errs[i] = s.proc.sendDigest(ctx, s.src, rendertest.DigestAt, "digest|#growth|"+rendertest.DigestAt.Format(time.RFC3339))
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.NoError(t, SendDigest(ctx, o)) // --now: its own op, so it sends again

	msgs := e.slack.Messages()
	require.Len(t, msgs, 2, "one scheduled digest despite two replicas, plus the --now one")
	require.Equal(t, e.slack.ChannelID("#growth"), msgs[0].Channel)
	require.Contains(t, msgs[0].Blocks[0]["text"].(map[string]any)["text"], "Weekly growth review · Mon 3 Jun 2024")
	body := plain(msgs[0])
	require.Contains(t, body, "new-checkout* — segments diverge by $geoip_country_code")
	require.Contains(t, body, "GB −67% [−80%, −54%] loss")
	require.NotContains(t, body, "+50%", "the older pass is ignored")

	require.Len(t, e.slack.Calls("files.getUploadURLExternal"), 2)
	require.Len(t, e.slack.Calls("upload"), 2)
	require.Len(t, e.slack.Calls("files.completeUploadExternal"), 2)
	files := e.slack.Files()
	require.Len(t, files, 2)
	for _, f := range files {
		require.True(t, f.Completed)
		require.Equal(t, msgs[0].Channel, f.Channel)
		_, err := png.Decode(bytes.NewReader(f.Data))
		require.NoError(t, err)
	}
	threads := map[string]bool{msgs[0].TS: true, msgs[1].TS: true}
	require.True(t, threads[files[0].ThreadTS] && threads[files[1].ThreadTS], "charts go into the digests' threads")
}

// digest.ClickHouse reads the migrated analysis_results: each flag's latest pass in the
// week, every column as written.
func TestDigestSourceReadsLatestPass(t *testing.T) {
	e := newEnv(t, 1)
	now, prev := rendertest.DigestRows()
	old := append([]digest.Row(nil), now...)
	for i := range old {
		old[i].PassTime = old[i].PassTime.Add(-2 * time.Hour)
	}
	insertResults(t, e.conn, append(append(old, now...), prev...))
	got, err := digest.ClickHouse{Conn: e.conn}.Results(context.Background(), rendertest.DigestAt)
	require.NoError(t, err)
	for i := range got {
		got[i].PassTime = got[i].PassTime.UTC()
	}
	require.ElementsMatch(t, now, got)
	week, err := digest.ClickHouse{Conn: e.conn}.Results(context.Background(), rendertest.DigestAt.Add(-7*24*time.Hour))
	require.NoError(t, err)
	require.Len(t, week, len(prev))
}

// Slack mention injection (issue 12.3): flag keys, metric names, segment values,
// variants, summaries, reasons, actions and rollback details from events and
// configuration never reach Slack unescaped — in any field of any request the Slack
// stand-in receives: text, blocks, metadata, replies, the resolved rewrite, the digest
// and its file.
func TestNoMentionInjection(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	e.start(o)
	h := rendertest.Hostile()
	later := rendertest.Hostile()
	g := rendertest.Guardrail()
	g.Metric, g.Summary = "<!channel> errors", "<@U123> breaks <!here>"
	g.DedupKey = alert.DedupKey(h.Flag, g.Metric, nil, g.Decision)
	later.Findings = append([]alert.Finding{g}, later.Findings...)
	resolved := &alert.Alert{Flag: h.Flag, Decision: alert.Resolved, Severity: alert.Info, Summary: "<!channel> resolved",
		SlackChannel: h.SlackChannel, Findings: []alert.Finding{
			{Metric: h.Findings[0].Metric, Segment: h.Findings[0].Segment, Decision: alert.Resolved, Summary: "<!channel> back"},
			{Metric: h.Findings[1].Metric, Segment: h.Findings[1].Segment, Decision: alert.Resolved, Summary: "<@U123> back"},
			{Metric: g.Metric, Decision: alert.Resolved, Summary: "<!here> back"}}}
	e.produce(0, h, later, resolved)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 3 }, "opening, reply, resolution")
	eventually(t, 10*time.Second, func() bool { return len(e.slack.Calls("chat.update")) == 1 }, "resolved rewrite")

	rows := []digest.Row{
		{PassTime: rendertest.DigestAt.Add(-time.Hour), Flag: "<!channel>", Metric: "<@U123>", Variant: "<!here>", N: 10,
			Lift: 0.1, CILow: 0.05, CIHigh: 0.15, Decision: alert.Win},
		{PassTime: rendertest.DigestAt.Add(-time.Hour), Flag: "<!channel>", Metric: "<@U123>", Variant: "<!here>",
			SegmentProperty: "<!here>", SegmentValue: "<!channel>", N: 5, Lift: -0.2, CILow: -0.3, CIHigh: -0.1, Decision: alert.Loss},
		{PassTime: rendertest.DigestAt.Add(-time.Hour), Flag: "<@U123>", Decision: alert.SRM, Reason: "<http://evil.example|click>"},
	}
	insertResults(t, e.conn, rows)
	do := o
	do.Now = func() time.Time { return rendertest.DigestAt }
	require.NoError(t, SendDigest(context.Background(), do))
	require.Len(t, e.slack.Files(), 1)

	calls := e.slack.Calls("")
	require.Greater(t, len(calls), 6)
	for _, c := range calls {
		var fields []string
		for k, vs := range c.Form {
			fields = append(fields, k)
			fields = append(fields, vs...)
		}
		if c.Body != nil {
			b, err := json.Marshal(c.Body)
			require.NoError(t, err)
			fields = append(fields, string(b))
		}
		for _, f := range fields {
			// JSON-encoded form values (blocks, metadata, files) are checked decoded too.
			var v any
			if json.Unmarshal([]byte(f), &v) == nil {
				eachString(v, func(s string) { fields = append(fields, s) })
			}
		}
		for _, f := range fields {
			for _, bad := range rendertest.Injections {
				require.NotContains(t, f, bad, "%s sent %q unescaped", c.Method, bad)
			}
			for _, bad := range []string{"<!", "<@"} {
				require.False(t, strings.Contains(f, bad) && !strings.Contains(f, "<http"), "%s sent %q in %q", c.Method, bad, f)
			}
		}
	}
	// What was escaped is still there for people to read.
	require.Contains(t, e.slack.Messages()[0].Text, "&lt;!channel&gt;")
}

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

// A dry-run digest prints what people would read, and keeps the chart it would upload.
func TestDryRunDigest(t *testing.T) {
	e := newEnv(t, 1)
	now, prev := rendertest.DigestRows()
	insertResults(t, e.conn, append(now, prev...))
	o := e.opts()
	out := &syncBuffer{}
	o.DryRun, o.SlackToken, o.DryRunText, o.DryRunFiles = true, config.Secret{}, out, t.TempDir()
	o.Now = func() time.Time { return rendertest.DigestAt }
	require.NoError(t, SendDigest(context.Background(), o))
	text := out.String()
	require.Contains(t, text, "📊 Weekly growth review · Mon 3 Jun 2024")
	require.Contains(t, text, "🟠 new-checkout — segments diverge by $geoip_country_code on purchase conversion")
	name := "flagwatch-lift-2024-06-03.png"
	require.Contains(t, text, "written to "+filepath.Join(o.DryRunFiles, name))
	b, err := os.ReadFile(filepath.Join(o.DryRunFiles, name))
	require.NoError(t, err)
	_, err = png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	require.Empty(t, e.slack.Calls(""))
}
