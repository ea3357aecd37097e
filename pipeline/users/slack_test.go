package users_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/notify"
	"github.com/flagwatch/flagwatch/pipeline/slack/slacktest"
)

var recordingLink = regexp.MustCompile(`<(https://[^|>]+)\|Session \d+ · started [^>]+>`)

// blockText is every text of a Slack message's blocks.
func blockText(m slacktest.Message) string {
	b, _ := json.Marshal(m.Blocks)
	var s strings.Builder
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if t, ok := x["text"].(string); ok {
				s.WriteString(t + "\n")
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	var v any
	_ = json.Unmarshal(b, &v)
	walk(v)
	return s.String()
}

// From the analyzer's pass to Slack: each incident (new-checkout's divergence and GB
// loss, fast-search's breach) gets one "sessions to watch" reply in its thread, whose
// links are the recordings_url template filled with the sessions the analyzer picked;
// a later pass that re-sends the unresolved breach gets its repeat, and no second
// sessions reply.
func testSlack(t *testing.T, f *fixture) {
	ctx := context.Background()
	cluster := brokertest.Cluster(t, 1, alert.Topic)
	prod := brokertest.Client(t, cluster)
	emit := func(as []alert.Alert) {
		var recs []*kgo.Record
		for _, a := range as {
			b, err := json.Marshal(a)
			require.NoError(t, err)
			recs = append(recs, &kgo.Record{Key: []byte(a.Flag), Value: b})
		}
		brokertest.Produce(t, prod, alert.Topic, recs...)
	}
	sl := slacktest.New(t, "#growth")
	var mu sync.Mutex
	now := f.now
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	nctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- notify.Run(nctx, notify.Options{Brokers: strings.Join(cluster.Addrs(), ","), Group: "users-test",
			ClickHouseDSN: f.dsn, SlackToken: config.NewSecret(slacktest.Token), SlackAPIURL: sl.APIURL(),
			DefaultChannel: "#growth", ClaimLease: 3 * time.Second, BackoffMin: 50 * time.Millisecond,
			BackoffMax: 400 * time.Millisecond, PollInterval: 50 * time.Millisecond, Now: clock, Logger: quiet})
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	watches := func() []slacktest.Message {
		var out []slacktest.Message
		for _, m := range sl.Messages() {
			if strings.Contains(m.Text, "sessions to watch") {
				out = append(out, m)
			}
		}
		return out
	}
	emit(f.pass.Alerts)
	eventually(t, func() bool { return len(watches()) == 2 }, "a sessions reply per incident")

	byTS := map[string]slacktest.Message{}
	for _, m := range sl.Messages() {
		byTS[m.TS] = m
	}
	for _, flag := range []string{"new-checkout", "fast-search"} {
		var a alert.Alert
		for _, x := range f.pass.Alerts {
			if x.Flag == flag {
				a = x
			}
		}
		var w *alert.Watch
		for _, x := range a.Findings {
			if x.Watch != nil {
				w = x.Watch
				break
			}
		}
		require.NotNil(t, w, flag)
		var reply *slacktest.Message
		for _, m := range watches() {
			if strings.Contains(m.Text, w.Who) {
				reply = &m
			}
		}
		require.NotNil(t, reply, flag)
		require.Equal(t, "5 sessions to watch: "+w.Who, reply.Text)
		parent, ok := byTS[reply.ThreadTS]
		require.True(t, ok, "a reply in a thread")
		require.Contains(t, parent.Text, flag, "in the flag's incident")
		var links []string
		for _, m := range recordingLink.FindAllStringSubmatch(blockText(*reply), -1) {
			links = append(links, m[1])
		}
		var want []string
		for _, s := range w.Sessions {
			want = append(want, "https://us.posthog.com/project/1/replay/"+s.ID)
		}
		require.Equal(t, want, links, "%s: the template's links", flag)
	}

	// Five hours later the breach is still there: the analyzer repeats it (critical) with
	// sessions again; the notifier repeats it in the thread, and posts no other sessions.
	mu.Lock()
	now = now.Add(5 * time.Hour)
	mu.Unlock()
	f.now = now
	pass, err := f.analyzer.Run(ctx)
	require.NoError(t, err)
	require.Len(t, pass.Alerts, 1)
	require.Equal(t, "fast-search", pass.Alerts[0].Flag)
	require.NotNil(t, pass.Alerts[0].Findings[0].Watch)
	before := len(sl.Messages())
	// A marker after it on the same partition: once it is posted, the pass's alert is done.
	marker := alert.Alert{Flag: "marker", Decision: alert.Loss, Severity: alert.Warning, Summary: "marker posted",
		DedupKey: alert.DedupKey("marker", "m", nil, alert.Loss), DetectedAt: now}
	emit(append(pass.Alerts, marker))
	eventually(t, func() bool { return len(sl.Messages()) == before+2 }, "the repeat and the marker")
	msgs := sl.Messages()
	require.Contains(t, msgs[before].Text, "Still unresolved")
	require.Equal(t, "marker posted", msgs[before+1].Text)
	require.Len(t, watches(), 2)

	rows, err := f.conn.Query(ctx, "SELECT incident, op, status FROM notification_log WHERE kind = "+
		"'"+nflog.KindWatch+"' ORDER BY incident")
	require.NoError(t, err)
	defer rows.Close()
	var ops []string
	for rows.Next() {
		var in, op, status string
		require.NoError(t, rows.Scan(&in, &op, &status))
		require.Equal(t, nflog.StatusPosted, status)
		ops = append(ops, op)
	}
	require.Equal(t, []string{"watch|fast-search#1|0", "watch|new-checkout#1|0"}, ops)
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
