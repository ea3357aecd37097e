package notify

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/notify/slacktest"
)

// An alert becomes exactly the chat.postMessage Slack expects: the bot token, the
// monitor's channel, fallback text, the rendered blocks, and the op in message metadata;
// the log records it before the offset is committed.
func TestPostsAlertPayload(t *testing.T) {
	e := newEnv(t, 1)
	e.start(e.opts())
	a := lossAlert("new-checkout")
	e.produce(0, a)

	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "one message")
	eventually(t, 10*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "offset committed")

	require.Len(t, e.slack.Calls("auth.test"), 1)
	calls := e.slack.Calls("chat.postMessage")
	require.Len(t, calls, 1)
	c := calls[0]
	require.Equal(t, slacktest.Token, c.Token)
	require.Equal(t, "#checkout", c.Form.Get("channel"))
	require.Equal(t, a.Summary, c.Form.Get("text"))
	require.Empty(t, c.Form.Get("thread_ts"))

	want := renderAlert(a, renderFirst, "https://flagwatch.example.com", detected)
	wantBlocks, err := json.Marshal(want.Blocks)
	require.NoError(t, err)
	require.JSONEq(t, string(wantBlocks), c.Form.Get("blocks"))

	var md struct {
		EventType    string         `json:"event_type"`
		EventPayload map[string]any `json:"event_payload"`
	}
	require.NoError(t, json.Unmarshal([]byte(c.Form.Get("metadata")), &md))
	require.Equal(t, "flagwatch_alert", md.EventType)
	require.Equal(t, a.DedupKey, md.EventPayload["dedup_key"])
	require.Equal(t, "open|new-checkout#1|0", md.EventPayload["op"])

	rows := logRows(t, e.conn)
	require.Len(t, rows, 1)
	require.Equal(t, Entry{Op: "open|new-checkout#1|0", Flag: "new-checkout", Kind: kindOpen, DedupKey: a.DedupKey,
		Status: statusPosted, Channel: e.slack.ChannelID("#checkout"), TS: e.slack.Messages()[0].TS}, rows[0])
}

// A 429 with Retry-After: the notifier waits that long, then posts once.
func TestHonoursRetryAfter(t *testing.T) {
	e := newEnv(t, 1)
	e.slack.Script("chat.postMessage", slacktest.Response{Status: http.StatusTooManyRequests,
		Header: http.Header{"Retry-After": {"2"}}, Body: `{"ok":false,"error":"ratelimited"}`})
	e.start(e.opts())
	e.produce(0, lossAlert("new-checkout"))

	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "posted after the 429")
	calls := e.slack.Calls("chat.postMessage")
	require.Len(t, calls, 2)
	require.Equal(t, http.StatusTooManyRequests, calls[0].Status)
	require.GreaterOrEqual(t, calls[1].At.Sub(calls[0].At), 2*time.Second, "Retry-After honoured")
	require.Less(t, calls[1].At.Sub(calls[0].At), 5*time.Second)
}

// 5xx answers are retried with back-off; the alert is posted once Slack recovers.
func TestRetriesServerErrors(t *testing.T) {
	e := newEnv(t, 1)
	e.slack.Script("chat.postMessage",
		slacktest.Response{Status: http.StatusInternalServerError, Body: "<html>oops</html>"},
		slacktest.Response{Status: http.StatusBadGateway, Body: "<html>bad gateway</html>"},
		slacktest.Response{Status: http.StatusServiceUnavailable, Body: "<html>down</html>"})
	o := e.opts()
	var addr string
	var mu sync.Mutex
	o.ListenAddr = "127.0.0.1:0"
	o.test.listening = func(a string) { mu.Lock(); addr = a; mu.Unlock() }
	e.start(o)
	e.produce(0, lossAlert("new-checkout"))

	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "posted after the 5xx")
	calls := e.slack.Calls("chat.postMessage")
	require.Len(t, calls, 4)
	for i := 1; i < 4; i++ {
		require.Greater(t, calls[i].At.Sub(calls[i-1].At), 40*time.Millisecond, "backed off before attempt %d", i+1)
	}
	mu.Lock()
	defer mu.Unlock()
	m := scrape(t, addr)
	require.Contains(t, m, `flagwatch_notifier_slack_errors_total{error="http_500"} 1`)
	require.Contains(t, m, `flagwatch_notifier_slack_errors_total{error="http_503"} 1`)
	require.Contains(t, m, `flagwatch_notifier_messages_sent_total{kind="open"} 1`)
}

// Killed after the post (and its log row) but before the offset commit: the restarted
// notifier sees the alert again and posts nothing.
func TestRestartBetweenPostAndCommit(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.test.afterLog = func(string) bool { return true }
	stop := e.start(o)
	e.produce(0, lossAlert("new-checkout"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "first post")
	require.ErrorIs(t, stop(), errCrashed)
	require.Equal(t, int64(1), e.lag("notifier-test"), "the crash left the offset uncommitted")

	e.start(e.opts())
	e.produce(0, lossAlert("other-flag")) // behind the redelivered alert on the same partition
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "second flag posted")
	eventually(t, 10*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "all committed")
	time.Sleep(200 * time.Millisecond)
	msgs := e.slack.Messages()
	require.Len(t, msgs, 2)
	require.Contains(t, msgs[0].Text, "new-checkout")
	require.Contains(t, msgs[1].Text, "other-flag")
}

// Stopped while Slack is down: nothing is committed, and the restarted notifier posts the
// alert once Slack is back. No alert is lost, none is doubled.
func TestShutdownWhileSlackDownKeepsAlert(t *testing.T) {
	e := newEnv(t, 1)
	var down []slacktest.Response
	for i := 0; i < 1000; i++ {
		down = append(down, slacktest.Response{Status: http.StatusServiceUnavailable, Body: "down"})
	}
	e.slack.Script("chat.postMessage", down...)
	stop := e.start(e.opts())
	e.produce(0, lossAlert("new-checkout"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Calls("chat.postMessage")) >= 3 }, "retrying")
	require.NoError(t, stop(), "graceful shutdown")
	require.Equal(t, int64(1), e.lag("notifier-test"))
	require.Empty(t, e.slack.Messages())

	e.slack.Reset("chat.postMessage") // Slack is back
	e.start(e.opts())
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "posted after restart")
	eventually(t, 10*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "committed")
}

// Two replicas in one group, with every alert written to all four partitions so both
// replicas handle each alert at the same time: one post per alert.
func TestTwoReplicasPostOnce(t *testing.T) {
	e := newEnv(t, 4)
	o1, o2 := e.opts(), e.opts()
	o1.ReplicaID, o2.ReplicaID = "replica-1", "replica-2"
	e.start(o1)
	e.start(o2)
	eventually(t, 30*time.Second, func() bool { return groupMembers(t, e, "notifier-test") == 2 }, "both replicas joined")

	flags := []string{"f1", "f2", "f3", "f4", "f5"}
	for _, f := range flags {
		for p := int32(0); p < 4; p++ {
			e.produce(p, lossAlert(f))
		}
	}
	eventually(t, 60*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "all alerts handled")
	msgs := e.slack.Messages()
	perFlag := map[string]int{}
	for _, m := range msgs {
		perFlag[strings.Fields(m.Text)[0]]++
	}
	for _, f := range flags {
		require.Equal(t, 1, perFlag[f], "posts for %s", f)
	}
	require.Len(t, msgs, len(flags))
}

// Later findings for a flag are replies in its thread; duplicates are dropped; a
// resolution is a reply, and once nothing is open the first message is rewritten as
// resolved; the next finding opens a new thread.
func TestThreadsAndResolution(t *testing.T) {
	e := newEnv(t, 1)
	e.start(e.opts())
	loss, guard := lossAlert("new-checkout"), guardrailAlert("new-checkout")
	e.produce(0, loss)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "first")
	e.produce(0, guard, loss) // a new finding, then a re-detection
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "reply")
	parent := e.slack.Messages()[0]
	reply := e.slack.Messages()[1]
	require.Equal(t, parent.TS, reply.ThreadTS)
	require.Contains(t, reply.Blocks[0]["text"].(map[string]any)["text"], "Update · :red_circle: new-checkout: guardrail breached")

	e.produce(0, resolvedAlert(guard))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 3 }, "guardrail resolved")
	res := e.slack.Messages()[2]
	require.Equal(t, parent.TS, res.ThreadTS)
	require.Contains(t, res.Text, "Resolved")
	require.Contains(t, res.Blocks[0]["text"].(map[string]any)["text"], "still open")
	require.Empty(t, e.slack.Calls("chat.update"), "loss still open: the first message stays")

	e.produce(0, resolvedAlert(loss))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 4 }, "loss resolved")
	require.Len(t, e.slack.Calls("chat.update"), 1)
	up := e.slack.Messages()[0]
	require.Equal(t, 1, up.Updated)
	require.Contains(t, up.Blocks[0]["text"].(map[string]any)["text"], ":white_check_mark: Resolved · new-checkout: loss")
	require.Contains(t, e.slack.Messages()[3].Blocks[0]["text"].(map[string]any)["text"], "this incident is closed")

	e.produce(0, resolvedAlert(loss), loss) // nothing left to resolve; then the loss is back
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 5 }, "new incident")
	again := e.slack.Messages()[4]
	require.Empty(t, again.ThreadTS, "a new incident starts a new thread")
	eventually(t, 10*time.Second, func() bool {
		rows := logRows(t, e.conn)
		return rows[len(rows)-1].Op == "open|new-checkout#2|0"
	}, "second incident logged")
}

// An unresolved critical finding is posted again once the repeat interval has passed,
// as a thread reply also sent to the channel; before that, re-detections are dropped.
func TestRepeatsUnresolvedCritical(t *testing.T) {
	e := newEnv(t, 1)
	var mu sync.Mutex
	now := detected
	o := e.opts()
	o.test.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e.start(o)
	a := lossAlert("new-checkout")
	e.produce(0, a)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "first")
	mu.Lock()
	now = now.Add(3 * time.Hour)
	mu.Unlock()
	e.produce(0, a, lossAlert("marker-1"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "marker")
	require.Contains(t, e.slack.Messages()[1].Text, "marker-1", "no repeat before 4h")

	mu.Lock()
	now = now.Add(time.Hour + time.Minute)
	mu.Unlock()
	e.produce(0, a)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 3 }, "repeat")
	rep := e.slack.Messages()[2]
	require.Equal(t, e.slack.Messages()[0].TS, rep.ThreadTS)
	require.True(t, rep.Broadcast)
	require.Contains(t, rep.Text, "Still unresolved")

	e.produce(0, a, lossAlert("marker-2"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 4 }, "marker 2")
	require.Contains(t, e.slack.Messages()[3].Text, "marker-2", "no second repeat right after the first")
}

// A channel Slack rejects does not block others: the alert goes to the default channel
// with a note; if that fails too it is recorded as failed and counted, and the next
// alert still goes out.
func TestChannelNotFoundDoesNotBlock(t *testing.T) {
	e := newEnv(t, 1, "#growth", "#checkout")
	o := e.opts()
	var addr string
	var mu sync.Mutex
	o.ListenAddr = "127.0.0.1:0"
	o.test.listening = func(a string) { mu.Lock(); addr = a; mu.Unlock() }
	e.start(o)

	a := lossAlert("flag-a")
	a.SlackChannel = "#nope"
	e.produce(0, a)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "fallback post")
	m := e.slack.Messages()[0]
	require.Equal(t, e.slack.ChannelID("#growth"), m.Channel)
	last := m.Blocks[len(m.Blocks)-1]["elements"].([]any)[0].(map[string]any)["text"]
	require.Contains(t, last, "Could not post to #nope (channel_not_found)")

	// Now a replica whose default channel is gone too.
	e.slack.Script("chat.postMessage", slacktest.Response{Error: "channel_not_found"}, slacktest.Response{Error: "not_in_channel"})
	b := lossAlert("flag-b")
	b.SlackChannel = "#nope"
	c := lossAlert("flag-c")
	e.produce(0, b, c)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "flag-c posted")
	require.Contains(t, e.slack.Messages()[1].Text, "flag-c")
	eventually(t, 10*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "failed alert committed")

	var failed *Entry
	for _, r := range logRows(t, e.conn) {
		if r.Flag == "flag-b" {
			failed = &r
		}
	}
	require.NotNil(t, failed)
	require.Equal(t, statusFailed, failed.Status)
	require.Equal(t, "not_in_channel", failed.Error)
	mu.Lock()
	defer mu.Unlock()
	metrics := scrape(t, addr)
	require.Contains(t, metrics, `flagwatch_notifier_alerts_failed_total{error="not_in_channel"} 1`)
	require.Contains(t, metrics, `flagwatch_notifier_slack_errors_total{error="channel_not_found"} 2`)
}

// invalid_auth keeps the alert (every post would fail alike) until Slack accepts the
// token again; /healthz says why meanwhile.
func TestInvalidAuthKeepsAlert(t *testing.T) {
	e := newEnv(t, 1)
	e.slack.Script("chat.postMessage", slacktest.Response{Error: "invalid_auth"}, slacktest.Response{Error: "invalid_auth"})
	e.start(e.opts())
	e.produce(0, lossAlert("new-checkout"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "posted once accepted")
	require.Len(t, e.slack.Calls("chat.postMessage"), 3)
}

// At most N messages per channel per minute: the rest are queued, not dropped.
func TestRateLimitQueues(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.RateLimit = 2
	o.test.rateWindow = time.Second
	e.start(o)
	var as []*alert.Alert
	for _, f := range []string{"r1", "r2", "r3", "r4", "r5"} {
		as = append(as, lossAlert(f))
	}
	e.produce(0, as...)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 5 }, "all five posted")
	calls := e.slack.Calls("chat.postMessage")
	for i := 2; i < len(calls); i++ {
		require.GreaterOrEqual(t, calls[i].At.Sub(calls[i-2].At), 990*time.Millisecond, "at most 2 per second")
	}
}

// --dry-run prints one JSON object per message, with channel and thread, and the log
// still keeps a re-detection from printing again.
func TestDryRun(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.DryRun, o.SlackToken = true, ""
	out := &syncBuffer{}
	o.Stdout = out
	e.start(o)
	e.produce(0, lossAlert("new-checkout"), guardrailAlert("new-checkout"), lossAlert("new-checkout"), lossAlert("marker"))
	eventually(t, 30*time.Second, func() bool { return strings.Count(out.String(), "\n") == 3 }, "three lines")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var first, second map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &second))
	require.Equal(t, "chat.postMessage", first["method"])
	require.Equal(t, "#checkout", first["channel"])
	require.NotEmpty(t, first["ts"])
	require.Equal(t, first["ts"], second["thread_ts"])
	var blocks []map[string]any
	b, _ := json.Marshal(first["blocks"])
	require.NoError(t, json.Unmarshal(b, &blocks))
	require.NoError(t, slacktest.ValidateBlocks(blocks))
	require.Empty(t, e.slack.Calls(""), "dry run talks to no Slack")
}

// An incoming webhook posts the same blocks; it cannot thread, so a later finding is a
// message of its own.
func TestWebhook(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.SlackToken, o.SlackWebhookURL = "", Secret(e.slack.WebhookURL())
	e.start(o)
	e.produce(0, lossAlert("new-checkout"), guardrailAlert("new-checkout"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "two webhook posts")
	calls := e.slack.Calls("webhook")
	require.Len(t, calls, 2)
	require.Equal(t, "new-checkout is losing 35% of UK purchases", calls[0].Body["text"])
	require.Empty(t, e.slack.Messages()[1].ThreadTS)
	require.Empty(t, e.slack.Calls("auth.test"))
}

// Several notifiers (replicas, or partitions of one) handling the same alert at the same
// moment: the claim lets exactly one post.
func TestConcurrentHandlersPostOnce(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	var procs []*processor
	for i := 0; i < 4; i++ {
		o := e.opts()
		o.ReplicaID = "r" + string(rune('a'+i))
		s, err := start(ctx, o)
		require.NoError(t, err)
		t.Cleanup(s.close)
		procs = append(procs, s.proc)
	}
	for _, f := range []string{"c1", "c2", "c3", "c4", "c5", "c6"} {
		var wg sync.WaitGroup
		errs := make([]error, len(procs))
		for i, p := range procs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = p.handle(ctx, lossAlert(f)) }()
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
	}
	require.Len(t, e.slack.Messages(), 6)
	require.Len(t, logRows(t, e.conn), 6)
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
