package notify

import (
	"bytes"
	"context"
	"image/png"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/notify/slacktest"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

var digestAt = time.Date(2024, 6, 3, 9, 0, 0, 0, time.UTC)

// digestFixture: three flags this week (a loser with a bad UK segment, a winner, an SRM)
// and two of them last week.
func digestFixture() (now, prev []DigestRow) {
	at, before := digestAt.Add(-time.Hour), digestAt.Add(-7*24*time.Hour-time.Hour)
	row := func(pt time.Time, flag, metric, prop, val, variant string, n uint64, lift, lo, hi, ctw float64, decision, reason string) DigestRow {
		return DigestRow{PassTime: pt, Flag: flag, Metric: metric, SegmentProperty: prop, SegmentValue: val, Variant: variant,
			N: n, Mean: 0.1, Lift: lift, CILow: lo, CIHigh: hi, P: 0.01, ChanceToWin: ctw, Decision: decision, Reason: reason}
	}
	now = []DigestRow{
		row(at, "new-checkout", "purchase conversion", "", "", "control", 10000, 0, 0, 0, 0, "", ""),
		row(at, "new-checkout", "purchase conversion", "", "", "test", 10012, -0.08, -0.14, -0.02, 0.01, alert.Loss, ""),
		row(at, "new-checkout", "revenue per user", "", "", "test", 10012, 0.031, -0.012, 0.074, 0.91, alert.Inconclusive, ""),
		row(at, "new-checkout", "errors per user", "", "", "test", 10012, 0.12, -0.05, 0.29, 0.2, alert.Inconclusive, ""),
		row(at, "new-checkout", "purchase conversion", "$geoip_country_code", "GB", "test", 2100, -0.35, -0.5, -0.2, 0.0, alert.Loss, ""),
		row(at, "new-checkout", "purchase conversion", "$geoip_country_code", "US", "test", 5100, 0.01, -0.05, 0.07, 0.6, alert.Inconclusive, ""),
		row(at, "dark-mode", "pageviews", "", "", "test", 4000, 0.12, 0.05, 0.19, 0.998, alert.Win, ""),
		row(at, "dark-mode", "pageviews", "plan", "pro", "test", 900, 0.25, 0.08, 0.42, 0.99, alert.Win, ""),
		row(at, "onboarding-v2", "", "", "", "", 0, 0, 0, 0, 0, alert.SRM, "split 52.9/47.1, expected 50/50 (p < 0.001)"),
		row(at, "onboarding-v2", "activation", "", "", "test", 800, 0.4, -0.3, 1.4, 0.7, alert.Inconclusive, ""),
	}
	prev = []DigestRow{
		row(before, "new-checkout", "purchase conversion", "", "", "test", 5000, -0.02, -0.12, 0.08, 0.3, alert.Inconclusive, ""),
		row(before, "new-checkout", "revenue per user", "", "", "test", 5000, -0.03, -0.1, 0.04, 0.2, alert.Inconclusive, ""),
		row(before, "dark-mode", "pageviews", "", "", "test", 2000, 0.10, -0.01, 0.21, 0.96, alert.Inconclusive, ""),
	}
	return now, prev
}

type fixedSource struct{ now, prev []DigestRow }

func (s fixedSource) Results(_ context.Context, at time.Time) ([]DigestRow, error) {
	if at.Before(digestAt.Add(-24 * time.Hour)) {
		return s.prev, nil
	}
	return s.now, nil
}

// The digest for a fixed set of results, compared with testdata (go test -update).
func TestDigestGolden(t *testing.T) {
	now, prev := digestFixture()
	d, err := buildDigest(context.Background(), fixedSource{now, prev}, digestAt, "https://flagwatch.example.com")
	require.NoError(t, err)
	require.Len(t, d.msgs, 1)
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, d.msgs[0])))
	golden(t, "digest.golden.json", prettyJSON(t, d.msgs))
	golden(t, "digest_chart.golden.png", d.chart)

	img, err := png.Decode(bytes.NewReader(d.chart))
	require.NoError(t, err)
	require.Equal(t, chartW, img.Bounds().Dx())
}

// Many flags split over several messages of at most 50 blocks each.
func TestDigestSplitsLargeDigests(t *testing.T) {
	var fs []flagDigest
	for i := 0; i < 60; i++ {
		fs = append(fs, flagDigest{flag: "flag-" + string(rune('a'+i%26)), status: alert.Inconclusive, shifts: []string{"no change"}})
	}
	msgs := renderDigest(fs, digestAt, "")
	require.Greater(t, len(msgs), 2)
	for _, m := range msgs {
		require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	}
}

const createAnalysisResults = `CREATE TABLE IF NOT EXISTS analysis_results (
    pass_time DateTime, flag String, metric String, segment_property String, segment_value String,
    variant String, n UInt64, mean Float64, lift Float64, ci_low Float64, ci_high Float64, p Float64,
    chance_to_win Float64, decision String, reason String
) ENGINE = MergeTree ORDER BY (flag, pass_time)`

func insertResults(t *testing.T, conn store.Conn, rows []DigestRow) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, `INSERT INTO analysis_results (pass_time, flag, metric, segment_property,
    segment_value, variant, n, mean, lift, ci_low, ci_high, p, chance_to_win, decision, reason)`)
	require.NoError(t, err)
	for _, r := range rows {
		require.NoError(t, b.Append(r.PassTime, r.Flag, r.Metric, r.SegmentProperty, r.SegmentValue, r.Variant, r.N, r.Mean,
			r.Lift, r.CILow, r.CIHigh, r.P, r.ChanceToWin, r.Decision, r.Reason))
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
	require.NoError(t, e.conn.Exec(ctx, createAnalysisResults))
	now, prev := digestFixture()
	old := append([]DigestRow(nil), now...) // an older pass this week: must be ignored
	for i := range old {
		old[i].PassTime = old[i].PassTime.Add(-2 * time.Hour)
		old[i].Lift = 0.5
	}
	insertResults(t, e.conn, append(append(old, now...), prev...))

	src := chResults{conn: e.conn}
	got, err := src.Results(ctx, digestAt)
	require.NoError(t, err)
	require.Len(t, got, len(now))
	for i := range got {
		got[i].PassTime = got[i].PassTime.UTC()
	}
	require.ElementsMatch(t, now, got)

	o := e.opts()
	o.test.now = func() time.Time { return digestAt }
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := start(ctx, o)
			require.NoError(t, err)
			defer s.close()
			require.NoError(t, s.proc.sendDigest(ctx, s.src, digestAt, "digest|#growth|"+digestAt.Format(time.RFC3339)))
		}()
	}
	wg.Wait()
	require.NoError(t, SendDigest(ctx, o)) // --now: its own op, so it sends again

	msgs := e.slack.Messages()
	require.Len(t, msgs, 2, "one scheduled digest despite two replicas, plus the --now one")
	require.Equal(t, e.slack.ChannelID("#growth"), msgs[0].Channel)
	require.Contains(t, msgs[0].Blocks[0]["text"].(map[string]any)["text"], "Weekly growth review · Mon 3 Jun 2024")

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
