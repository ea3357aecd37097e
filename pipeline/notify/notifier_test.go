package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/render"
	"github.com/flagwatch/flagwatch/pipeline/render/rendertest"
	"github.com/flagwatch/flagwatch/pipeline/retry"
	"github.com/flagwatch/flagwatch/pipeline/slack"
	"github.com/flagwatch/flagwatch/pipeline/slack/slacktest"
)

// An alert becomes exactly the chat.postMessage Slack expects: the bot token, the
// monitor's channel, the notification text, the rendered blocks, and the op in message
// metadata; the log records it before the offset is committed.
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

	want := render.Opening(a, render.Options{ReportBaseURL: "https://flagwatch.example.com", Now: detected})
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
	require.Equal(t, nflog.Entry{Op: "open|new-checkout#1|0", Flag: "new-checkout", Kind: nflog.KindOpen, DedupKey: a.DedupKey,
		Status: nflog.StatusPosted, Channel: e.slack.ChannelID("#checkout"), TS: e.slack.Messages()[0].TS}, rows[0])
}

// The new-checkout incident: the first alert opens the thread with every finding; a later
// pass replies with only the new guardrail breach (the new headline); a re-sent alert
// posts nothing; after the repeat interval the unresolved critical finding is posted
// again, broadcast to the channel.
func TestIncidentThread(t *testing.T) {
	e := newEnv(t, 1)
	var mu sync.Mutex
	now := rendertest.Detected
	o := e.opts()
	o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e.start(o)

	e.produce(0, rendertest.NewCheckout())
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "opening")
	e.produce(0, rendertest.NewCheckoutLater(), rendertest.NewCheckoutLater(), lossAlert("marker-1"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 3 }, "reply and marker")
	msgs := e.slack.Messages()
	open, reply := msgs[0], msgs[1]
	require.Empty(t, open.ThreadTS)
	require.Contains(t, plain(open), "*What to do:* Ship to US and IN, not GB: target the variant by country.")
	require.Equal(t, open.TS, reply.ThreadTS, "later findings reply in the thread")
	require.False(t, reply.Broadcast)
	require.Contains(t, plain(reply), "Headline now · :red_circle: new-checkout — guardrail breached")
	require.NotContains(t, plain(reply), "revenue per user", "only what is new")
	require.Contains(t, msgs[2].Text, "marker-1", "the duplicate posted nothing")

	rows := logRows(t, e.conn)
	kinds := map[string]int{}
	for _, r := range rows {
		if r.Flag == "new-checkout" {
			kinds[r.Kind]++
		}
	}
	require.Equal(t, map[string]int{nflog.KindOpen: 5, nflog.KindReply: 1}, kinds, "one row per finding shown")

	mu.Lock()
	now = now.Add(4*time.Hour + time.Minute)
	mu.Unlock()
	e.produce(0, rendertest.NewCheckoutLater(), lossAlert("marker-2"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 5 }, "repeat and marker")
	rep := e.slack.Messages()[3]
	require.Equal(t, open.TS, rep.ThreadTS)
	require.True(t, rep.Broadcast, "a repeat is also shown in the channel")
	require.Contains(t, rep.Text, "Still unresolved")
	require.Contains(t, plain(rep), "errors per user")
	require.NotContains(t, plain(rep), "revenue per user", "only the critical finding repeats")
}

// A 429 with Retry-After: the notifier decides to wait exactly that long (its logged
// decision), and posts once.
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
	retries := e.logLines("retrying Slack call")
	require.Len(t, retries, 1)
	require.Equal(t, "2s", retries[0]["wait"], "Retry-After decides the wait")
	require.Contains(t, retries[0]["err"], "rate_limited")
	require.GreaterOrEqual(t, calls[1].At.Sub(calls[0].At), 2*time.Second, "and the notifier waited it")
}

// 5xx answers are retried with back-off, each retry logged with its reason; the alert is
// posted once Slack recovers.
func TestRetriesServerErrors(t *testing.T) {
	e := newEnv(t, 1)
	e.slack.Script("chat.postMessage",
		slacktest.Response{Status: http.StatusInternalServerError, Body: "<html>oops</html>"},
		slacktest.Response{Status: http.StatusBadGateway, Body: "<html>bad gateway</html>"},
		slacktest.Response{Status: http.StatusServiceUnavailable, Body: "<html>down</html>"})
	o := e.opts()
	addr := listen(&o)
	e.start(o)
	e.produce(0, lossAlert("new-checkout"))

	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "posted after the 5xx")
	require.Len(t, e.slack.Calls("chat.postMessage"), 4)
	retries := e.logLines("retrying Slack call")
	require.Len(t, retries, 3)
	for i, reason := range []string{"http_500", "http_502", "http_503"} {
		require.Contains(t, retries[i]["err"], reason)
		require.Equal(t, float64(i+1), retries[i]["attempt"])
		w, err := time.ParseDuration(retries[i]["wait"].(string))
		require.NoError(t, err)
		require.Greater(t, w, time.Duration(0))
		require.LessOrEqual(t, w, o.BackoffMax)
	}
	m := scrape(t, addr())
	require.Contains(t, m, `flagwatch_notifier_slack_errors_total{error="http_500"} 1`)
	require.Contains(t, m, `flagwatch_notifier_slack_errors_total{error="http_503"} 1`)
	require.Contains(t, m, `flagwatch_notifier_messages_sent_total{kind="open"} 1`)
}

// listen makes the notifier serve /metrics and /healthz on a free port; the returned
// function gives its address once it is up.
func listen(o *Options) func() string {
	var mu sync.Mutex
	var addr string
	o.ListenAddr = "127.0.0.1:0"
	o.test.listening = func(a string) { mu.Lock(); addr = a; mu.Unlock() }
	return func() string { mu.Lock(); defer mu.Unlock(); return addr }
}

func healthz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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
	require.Contains(t, plain(reply), "Headline now · :red_circle: new-checkout — guardrail breached")

	e.produce(0, resolvedAlert(guard))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 3 }, "guardrail resolved")
	res := e.slack.Messages()[2]
	require.Equal(t, parent.TS, res.ThreadTS)
	require.Contains(t, res.Text, "Resolved")
	require.Contains(t, plain(res), "still open")
	require.Empty(t, e.slack.Calls("chat.update"), "loss still open: the first message stays")

	e.produce(0, resolvedAlert(loss))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 4 }, "loss resolved")
	require.Len(t, e.slack.Calls("chat.update"), 1)
	up := e.slack.Messages()[0]
	require.Equal(t, 1, up.Updated)
	require.Contains(t, plain(up), ":white_check_mark: Resolved")
	require.Contains(t, plain(e.slack.Messages()[3]), "this incident is closed")

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
	o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e.start(o)
	a := lossAlert("new-checkout")
	e.produce(0, a)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "first")
	// The log records a post's time after Slack answers: move the clock only once the
	// alert is committed, or the first post may be logged at the later time.
	eventually(t, 30*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "first committed")
	mu.Lock()
	now = now.Add(3 * time.Hour)
	mu.Unlock()
	e.produce(0, a, lossAlert("marker-1"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "marker")
	require.Contains(t, e.slack.Messages()[1].Text, "marker-1", "no repeat before 4h")
	eventually(t, 30*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "marker committed")

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
	addr := listen(&o)
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

	var failed *nflog.Entry
	for _, r := range logRows(t, e.conn) {
		if r.Flag == "flag-b" {
			failed = &r
		}
	}
	require.NotNil(t, failed)
	require.Equal(t, nflog.StatusFailed, failed.Status)
	require.Equal(t, "not_in_channel", failed.Error)
	metrics := scrape(t, addr())
	require.Contains(t, metrics, `flagwatch_notifier_alerts_failed_total{error="not_in_channel"} 1`)
	require.Contains(t, metrics, `flagwatch_notifier_slack_errors_total{error="channel_not_found"} 2`)
}

// invalid_auth keeps the alert (every post would fail alike) until Slack accepts the
// token again; past the grace period /healthz says why, and recovers with Slack.
func TestInvalidAuthKeepsAlert(t *testing.T) {
	e := newEnv(t, 1)
	var rejected []slacktest.Response
	for i := 0; i < 6; i++ {
		rejected = append(rejected, slacktest.Response{Error: "invalid_auth"})
	}
	e.slack.Script("chat.postMessage", rejected...)
	o := e.opts()
	o.UnhealthyAfter = time.Millisecond
	addr := listen(&o)
	e.start(o)
	e.produce(0, lossAlert("new-checkout"))
	eventually(t, 30*time.Second, func() bool {
		code, body := healthz(addr())
		return code == http.StatusServiceUnavailable && strings.Contains(body, "slack: failing") &&
			strings.Contains(body, "Slack rejects the credentials (invalid_auth)")
	}, "/healthz reports the rejected token")
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "posted once accepted")
	require.Len(t, e.slack.Calls("chat.postMessage"), 7)
	code, body := healthz(addr())
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "slack: ok")
}

// While ClickHouse does not answer at start, /healthz is up and says so; the notifier
// keeps trying and logs each attempt.
func TestHealthzWhileClickHouseIsDown(t *testing.T) {
	o := Options{ClickHouseDSN: "clickhouse://127.0.0.1:1/flagwatch", DryRun: true, DryRunText: io.Discard,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: testLogger(t, io.Discard)}
	addr := listen(&o)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, o) }()
	eventually(t, 30*time.Second, func() bool {
		code, body := healthz(addr())
		return code == http.StatusServiceUnavailable && strings.Contains(body, "clickhouse: waiting: connecting to clickhouse://127.0.0.1:1/flagwatch")
	}, "/healthz names what it waits for")
	cancel()
	select {
	case err := <-errc:
		require.Error(t, err, "stopped before ClickHouse answered")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// While Kafka does not answer, /healthz says the notifier waits for it.
func TestHealthzWhileKafkaIsDown(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.Brokers = "127.0.0.1:1"
	addr := listen(&o)
	stop := e.start(o)
	eventually(t, 30*time.Second, func() bool {
		code, body := healthz(addr())
		return code == http.StatusServiceUnavailable && strings.Contains(body, "kafka: waiting: connecting to 127.0.0.1:1") &&
			strings.Contains(body, "clickhouse: ok")
	}, "/healthz names what it waits for")
	require.NoError(t, stop())
}

// At most N messages per channel per window: the rest are queued, not dropped. (The
// limiter's decisions are tested on a fake clock in TestLimiterDecisions.)
func TestRateLimitQueues(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.RateLimit, o.RateWindow = 2, 300*time.Millisecond
	e.start(o)
	var as []*alert.Alert
	for _, f := range []string{"r1", "r2", "r3", "r4", "r5"} {
		as = append(as, lossAlert(f))
	}
	e.produce(0, as...)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 5 }, "all five posted")
	for i, m := range e.slack.Messages() {
		require.Equal(t, as[i].Flag, strings.Fields(m.Text)[0], "in order")
	}
}

// The limiter's decisions on an injected clock: two per window per channel, the third
// waits exactly until the first leaves the window; channels are independent.
func TestLimiterDecisions(t *testing.T) {
	t0 := time.Date(2024, 6, 3, 9, 0, 0, 0, time.UTC)
	now := t0
	l := newLimiter(2, time.Minute, func() time.Time { return now })
	require.Zero(t, l.Reserve("#a"))
	now = now.Add(10 * time.Second)
	require.Zero(t, l.Reserve("#a"))
	require.Equal(t, 50*time.Second, l.Reserve("#a"), "third waits until the first is a minute old")
	require.Zero(t, l.Reserve("#b"), "another channel is not held up")
	now = t0.Add(time.Minute)
	require.Zero(t, l.Reserve("#a"))
	require.Equal(t, 10*time.Second, l.Reserve("#a"))

	// Wait sleeps through the injected sleep, which moves the clock: five messages
	// go at 0, 0, 60, 60, 120 seconds.
	now = t0
	l = newLimiter(2, time.Minute, func() time.Time { return now })
	l.sleep = func(_ context.Context, d time.Duration) error { now = now.Add(d); return nil }
	var at []time.Duration
	for i := 0; i < 5; i++ {
		_, err := l.Wait(context.Background(), "#a")
		require.NoError(t, err)
		at = append(at, now.Sub(t0))
	}
	require.Equal(t, []time.Duration{0, 0, time.Minute, time.Minute, 2 * time.Minute}, at)

	// A property: for any arrival times, no window holds more than n grants.
	now = t0
	l = newLimiter(3, time.Second, func() time.Time { return now })
	var granted []time.Time
	for i := 0; i < 2000; i++ {
		now = now.Add(time.Duration(i*7919%300) * time.Millisecond)
		if l.Reserve("#c") == 0 {
			granted = append(granted, now)
		}
	}
	for i := 3; i < len(granted); i++ {
		require.GreaterOrEqual(t, granted[i].Sub(granted[i-3]), time.Second, "grant %d", i)
	}
	// And a cancelled wait returns the context's error.
	l.sleep = retry.Sleep
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for l.Reserve("#c") == 0 {
	}
	_, err := l.Wait(ctx, "#c")
	require.ErrorIs(t, err, context.Canceled)
}

// --dry-run prints each message as text, writes the Block Kit JSON lines to their own
// writer, and the log still keeps a re-detection from printing again.
func TestDryRun(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.DryRun, o.SlackToken = true, config.Secret{}
	out, js := &syncBuffer{}, &syncBuffer{}
	o.DryRunText, o.DryRunJSON = out, js
	e.start(o)
	e.produce(0, lossAlert("new-checkout"), guardrailAlert("new-checkout"), lossAlert("new-checkout"), lossAlert("marker"))
	eventually(t, 30*time.Second, func() bool { return strings.Count(js.String(), "\n") == 3 }, "three messages")
	recs, err := slack.ReadRecords(strings.NewReader(js.String()))
	require.NoError(t, err)
	require.Len(t, recs, 3)
	require.Equal(t, "chat.postMessage", recs[0].Method)
	require.Equal(t, "#checkout", recs[0].Channel)
	require.NotEmpty(t, recs[0].TS)
	require.Equal(t, recs[0].TS, recs[1].ThreadTS)
	b, err := json.Marshal(recs[0].Blocks)
	require.NoError(t, err)
	var blocks []map[string]any
	require.NoError(t, json.Unmarshal(b, &blocks))
	require.NoError(t, slacktest.ValidateBlocks(blocks))

	text := out.String()
	require.Contains(t, text, "── #checkout ──\n🔴 new-checkout — loss\nnew-checkout is losing 35% of UK purchases\n")
	require.Contains(t, text, "── #checkout · reply in thread "+recs[0].TS+" ──\nHeadline now · 🔴 new-checkout — guardrail breached\n")
	require.NotContains(t, text, `"blocks"`, "no JSON in the readable output")
	require.Empty(t, e.slack.Calls(""), "dry run talks to no Slack")
}

// An incoming webhook posts the same blocks; it cannot thread, so a later finding is a
// message of its own.
func TestWebhook(t *testing.T) {
	e := newEnv(t, 1)
	o := e.opts()
	o.SlackToken, o.SlackWebhookURL = config.Secret{}, config.NewSecret(e.slack.WebhookURL())
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
		s, err := start(ctx, o, false)
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
		require.NoError(t, errors.Join(errs...))
	}
	require.Len(t, e.slack.Messages(), 6)
	require.Len(t, logRows(t, e.conn), 6)
}

// Options can be logged whole: the one Secret type (config.Secret) never prints.
func TestOptionsNeverPrintSecrets(t *testing.T) {
	o := Options{SlackToken: config.NewSecret("xoxb-secret"), SlackWebhookURL: config.NewSecret("https://hooks.slack.com/services/SECRET")}
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o)} {
		require.NotContains(t, s, "SECRET")
		require.NotContains(t, s, "xoxb-secret")
	}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("options", "token", o.SlackToken, "webhook", o.SlackWebhookURL)
	require.NotContains(t, buf.String(), "secret")
	require.NotContains(t, buf.String(), "SECRET")
}
