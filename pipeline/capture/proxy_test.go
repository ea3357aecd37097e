package capture_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

var proxyUsers = []string{"user-1", "user-2", "user-3", "user-4", "user-5", "user-6"}

// sdkResult is what the SDK got from PostHog through the proxy.
type sdkResult struct {
	Flags    map[string]any `json:"flags"`
	Payloads map[string]any `json:"payloads"`
	Errors   []string       `json:"errors"`
}

// runProxyScript runs sdktest/proxy.mjs against host.
func runProxyScript(t *testing.T, dir, host string) sdkResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "proxy.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CAPTURE_HOST="+host, "API_KEY="+sdkAPIKey,
		"USERS="+strings.Join(proxyUsers, ","), "POSTHOG_CAPTURE_MODE=v0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "node proxy.mjs: %s", stderr.String())
	var res sdkResult
	require.NoError(t, json.Unmarshal(out, &res), "script output: %s", out)
	return res
}

// requireFlagsFromPostHog checks that the SDK got PostHog's answers.
func requireFlagsFromPostHog(t *testing.T, got sdkResult) {
	t.Helper()
	require.Empty(t, got.Errors, "the SDK reported errors")
	require.Len(t, got.Flags, len(proxyUsers))
	for _, u := range proxyUsers {
		require.Equal(t, variant(u), got.Flags[u], "PostHog's variant for %s", u)
		require.Equal(t, payload(u), got.Payloads[u], "PostHog's payload for %s", u)
	}
}

// The real posthog-node, pointed at capture in proxy mode, with a PostHog stand-in as
// the upstream that refuses what PostHog refuses: feature flags are evaluated by
// PostHog through the proxy; every event request reaches PostHog exactly as the SDK sent
// it (PostHog's 503 to the first one included: the SDK retried it, and only the copy of
// the accepted one is kept); and every event PostHog accepted lands once in ClickHouse,
// through Kafka and ingest, with each user's exposure to PostHog's variant.
func TestProxyPostHogNodeSDK(t *testing.T) {
	dir := installSDK(t)
	dsn, conn := chtest.DB(t)
	ph := newPostHog(t, sdkAPIKey)
	ph.failNext(1)
	front := &frontRecorder{}
	e := newWrappedEnv(t, capture.Options{Upstream: ph.url(), Tokens: []string{sdkAPIKey}}, front.wrap)

	requireFlagsFromPostHog(t, runProxyScript(t, dir, e.url))
	ph.noProblems(t)

	// Each /flags request reached PostHog (with PostHog's Host: noProblems) and its answer
	// came back to the SDK as PostHog sent it.
	answers, fromPostHog := front.flagAnswers(), ph.flagAnswers()
	require.Len(t, answers, len(fromPostHog))
	require.Len(t, answers, 2*len(proxyUsers), "getFeatureFlag and evaluateFlags, each user")
	for i, a := range answers {
		require.Equal(t, http.StatusOK, a.status)
		require.Equal(t, "application/json", a.header.Get("Content-Type"))
		require.Equal(t, "1", a.header.Get("X-Posthog-Stand-In"))
		require.True(t, bytes.Equal(fromPostHog[i], a.body), "answer %d passed byte for byte", i)
	}

	sent, got := front.sent(), ph.eventRequests()
	require.Len(t, got, len(sent), "every event request reached PostHog")
	for i := range sent {
		require.True(t, bytes.Equal(sent[i], got[i].body), "request %d reached PostHog byte for byte", i)
	}
	require.Equal(t, http.StatusServiceUnavailable, got[0].status)
	require.Equal(t, got[0].body, got[1].body, "the SDK retried the request PostHog refused")

	accepted := ph.accepted(t)
	require.NotEmpty(t, accepted)
	t.Logf("%d event requests (%d refused by PostHog and retried), %d events accepted, %d /flags requests",
		len(got), 1, len(accepted), ph.flagRequests())
	e.eventually("flagwatch_capture_tee_events_produced_total", float64(len(accepted)))
	require.Equal(t, 1.0, sampleValue(e.metrics(), `flagwatch_capture_tee_dropped_total{reason="upstream_status"}`))
	runIngest(t, e.kafka.Addrs(), dsn)

	stored := storedEvents(t, conn)
	require.Equal(t, slices.Sorted(maps.Keys(accepted)), slices.Sorted(maps.Keys(stored)),
		"the events PostHog accepted, no more, no less")
	for id, want := range accepted {
		s := stored[id]
		require.Equal(t, uint64(1), s.rows, "%s stored once", id)
		require.Equal(t, want.event, s.event)
		require.Equal(t, want.distinctID, s.distinctID)
	}
	want := map[string]string{}
	for _, u := range proxyUsers {
		want[u] = variant(u)
	}
	require.Equal(t, want, exposuresOf(t, conn, "new-checkout"), "flagwatch saw PostHog's assignment")
}

// With Kafka down the SDK still gets PostHog's answers — flags and event acks — and
// every copy is dropped and counted; /healthz says degraded (200), not down.
func TestProxyKafkaDownSDKStillServed(t *testing.T) {
	dir := installSDK(t)
	ph := newPostHog(t, sdkAPIKey)
	e := newEnv(t, capture.Options{Upstream: ph.url(), KafkaCheckInterval: 50 * time.Millisecond})
	e.kafka.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.do(http.MethodGet, "/healthz", nil, nil).body, "kafka: degraded") {
		require.True(t, time.Now().Before(deadline), "Kafka never known down")
		time.Sleep(20 * time.Millisecond)
	}

	requireFlagsFromPostHog(t, runProxyScript(t, dir, e.url))
	ph.noProblems(t)
	requests := ph.eventRequests()
	require.NotEmpty(t, requests)
	for _, r := range requests {
		require.Equal(t, http.StatusOK, r.status)
	}
	e.eventually(`flagwatch_capture_tee_dropped_total{reason="kafka_down"}`, float64(len(requests)))
	require.Zero(t, sampleValue(e.metrics(), "flagwatch_capture_tee_events_produced_total"))
	health := e.do(http.MethodGet, "/healthz", nil, nil)
	require.Equal(t, http.StatusOK, health.status, health.body)
	require.True(t, strings.HasPrefix(health.body, "degraded\n"), health.body)
	require.Contains(t, health.body, "posthog: ok")
	require.Contains(t, health.body, "kafka: degraded: kafka down since ")
	require.Contains(t, health.body, fmt.Sprintf("tee: degraded: copies of events dropped within 1m0s: kafka_down (%d since start, last 0s ago)", len(requests)))
}

// pattern is n bytes of a repeating pattern, generated as they are read: the test holds
// none of the 64 MB itself.
type pattern struct{ left int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	for i := range n {
		b[i] = byte(i % 251)
	}
	p.left -= int64(n)
	return n, nil
}

func patternSHA(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, &pattern{left: n})
	return hex.EncodeToString(h.Sum(nil))
}

// A 64 MB body (PostHog's limit, a large recording) passes through whole, and what the
// process allocates meanwhile — counted, not timed — stays a fraction of it: the body is
// streamed, not buffered. Sent to an event endpoint it is not copied (over capture's
// body limit) or is copied only up to the limit and then given up, its memory returned.
func TestProxy64MBBodyStreamsThroughInBoundedMemory(t *testing.T) {
	ph := newPostHog(t, "phc_k")
	e := newEnv(t, capture.Options{Upstream: ph.url(), MaxBodyBytes: 1 << 20, MaxInFlightBytes: 4 << 20})
	const size = 64 << 20
	sum := patternSHA(size)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	for _, c := range []struct {
		name, path string
		chunked    bool
		reason     string // the copy's drop reason
	}{
		{"recording", "/s/?compression=gzip-js", false, ""},
		{"event endpoint, length known", "/batch/", false, "too_large"},
		{"event endpoint, chunked", "/batch/", true, "too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dropped := sampleValue(e.metrics(), `flagwatch_capture_tee_dropped_total{reason="too_large"}`)
			var body io.Reader = &pattern{left: size}
			if c.chunked {
				body = io.MultiReader(body)
			}
			req, err := http.NewRequest(http.MethodPost, e.url+c.path, body)
			require.NoError(t, err)
			if !c.chunked {
				req.ContentLength = size
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			res, err := client.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			runtime.ReadMemStats(&after)
			var got received
			if c.path == "/batch/" {
				reqs := ph.eventRequests()
				got = reqs[len(reqs)-1]
			} else {
				other := ph.otherRequests()
				got = other[len(other)-1]
			}
			require.Equal(t, got.status, res.StatusCode, "PostHog's answer")
			require.Equal(t, int64(size), got.size, "PostHog got every byte")
			require.Equal(t, sum, got.sha, "and the right ones")
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d MiB through the proxy: %.1f MiB allocated by the whole process", size>>20, float64(allocated)/(1<<20))
			require.Less(t, allocated, uint64(16<<20), "the body is streamed, not held")
			if c.reason != "" {
				e.eventually(`flagwatch_capture_tee_dropped_total{reason="too_large"}`, dropped+1)
			}
			e.eventually("flagwatch_capture_inflight_bytes", 0)
		})
	}
	ph.noProblems(t)
}

// What the copy cannot keep is counted by reason, and none of it changes what PostHog
// gets or what the client is answered: another project's key (in the body or the query),
// an encoding capture cannot decode, PostHog refusing the request, and — within a
// request PostHog accepted — an event ingest would dead-letter, dropped alone.
func TestProxyDropsWhatItCannotKeepAndForwardsEverything(t *testing.T) {
	ph := newPostHog(t, "phc_k", "phc_other")
	e := newEnv(t, capture.Options{Upstream: ph.url(), Tokens: []string{"phc_k"}})
	ev := func(uuid, ts string) string {
		return `{"event":"purchase","distinct_id":"u","uuid":"` + uuid + `","timestamp":"` + ts + `"}`
	}
	cases := []struct {
		name, path, body string
		status           int
		sample           string
	}{
		{"another project's key in the body", "/batch/",
			`{"api_key":"phc_other","batch":[` + ev("00000000-0000-4000-8000-000000000001", "2026-03-04T11:00:00Z") + `]}`,
			200, `flagwatch_capture_tee_dropped_total{reason="token_not_listed"}`},
		{"another project's key in the query", "/e/?token=phc_other", ev("00000000-0000-4000-8000-000000000002", "2026-03-04T11:00:00Z"),
			200, `flagwatch_capture_tee_dropped_total{reason="token_not_listed"}`},
		{"lz64, which PostHog decodes and capture does not", "/e/?compression=lz64&token=phc_k", "N4IgLgngDgpiBcIA",
			200, `flagwatch_capture_tee_dropped_total{reason="invalid"}`},
		{"PostHog refuses the key", "/batch/", `{"api_key":"phc_unknown","batch":[` + ev("00000000-0000-4000-8000-000000000003", "2026-03-04T11:00:00Z") + `]}`,
			401, `flagwatch_capture_tee_dropped_total{reason="upstream_status"}`},
		{"one event of two has a time that cannot be placed", "/batch/",
			`{"api_key":"phc_k","batch":[` + ev("00000000-0000-4000-8000-000000000004", "yesterday") + `,` +
				ev("00000000-0000-4000-8000-000000000005", "2026-03-04T11:00:00Z") + `]}`,
			200, `flagwatch_capture_tee_events_dropped_total{reason="bad_timestamp"}`},
	}
	counts := map[string]float64{}
	for _, c := range cases {
		before := len(ph.eventRequests())
		res := e.post(c.path, hdr("Content-Type", "application/json"), []byte(c.body))
		require.Equal(t, c.status, res.status, "%s: PostHog's answer: %s", c.name, res.body)
		require.Equal(t, "1", res.header.Get("X-Posthog-Stand-In"), c.name)
		reqs := ph.eventRequests()
		require.Len(t, reqs, before+1, c.name)
		require.Equal(t, c.body, string(reqs[before].body), "%s: forwarded as sent", c.name)
		counts[c.sample]++
		e.eventually(c.sample, counts[c.sample])
	}
	recs := e.records(1)
	require.Equal(t, "00000000-0000-4000-8000-000000000005", decode(t, recs[0].Value)["uuid"], "the one event flagwatch keeps")
	require.Equal(t, "phc_k", decode(t, recs[0].Value)["token"])
}

// oneBatch is a one-event batch of project phc_k.
func oneBatch(i int) []byte {
	return []byte(fmt.Sprintf(`{"api_key":"phc_k","batch":[{"event":"e%d","distinct_id":"u%d","uuid":"00000000-0000-4000-8000-%012d"}]}`, i, i, i))
}

// A copy that does not fit in the in-flight budget — other requests hold it — is
// dropped, and the request is forwarded and answered all the same.
func TestProxyCopyOverTheBudgetIsDroppedNotWaitedFor(t *testing.T) {
	ph := newPostHog(t, "phc_k")
	e := newEnv(t, capture.Options{Upstream: ph.url(), MaxBodyBytes: 1 << 20, MaxInFlightBytes: 4 << 20})
	// ~900 KB each: with its parse, one copy reserves ~2.7 MB of the 4 MiB.
	big := func(i int) []byte {
		pad := strings.Repeat("x", 900_000)
		return []byte(fmt.Sprintf(`{"api_key":"phc_k","batch":[{"event":"e%d","distinct_id":"u%d","uuid":"00000000-0000-4000-8000-%012d","properties":{"pad":"%s"}}]}`, i, i, i, pad))
	}
	held, release := ph.holdNext()
	first := make(chan response, 1)
	go func() { first <- e.post("/batch/", nil, big(1)) }()
	waitFor(t, held, "the first request to reach PostHog")

	second := e.post("/batch/", nil, big(2))
	require.Equal(t, http.StatusOK, second.status, "forwarded and answered while the budget is held")
	e.eventually(`flagwatch_capture_tee_dropped_total{reason="budget"}`, 1)
	close(release)
	require.Equal(t, http.StatusOK, (<-first).status)

	recs := e.records(1)
	require.Equal(t, "u1", string(recs[0].Key), "the copy that fitted is kept")
	require.Len(t, ph.eventRequests(), 2)
	health := e.do(http.MethodGet, "/healthz", nil, nil)
	require.Equal(t, http.StatusOK, health.status)
	require.Contains(t, health.body, "tee: degraded: copies of events dropped within 1m0s: budget (1 since start")
}

// blockingProducer holds every Produce until released, as franz-go does when its
// buffer is full.
type blockingProducer struct {
	capture.Producer
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingProducer) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	b.Producer.Produce(ctx, r, promise)
}

// When the workers cannot keep up (the producer blocks) the bounded queue fills and
// further copies are dropped as queue_full; the requests are answered by PostHog
// without waiting, and what was queued is produced once the producer moves again.
func TestProxyQueueFullDropsCopiesNeverTheRequest(t *testing.T) {
	ph := newPostHog(t, "phc_k")
	bp := &blockingProducer{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnvWith(t, capture.Options{Upstream: ph.url(), TeeQueue: 1, TeeWorkers: 1},
		func(h http.Handler) http.Handler { return h },
		func(p capture.Producer) capture.Producer { bp.Producer = p; return bp })

	require.Equal(t, http.StatusOK, e.post("/batch/", nil, oneBatch(1)).status)
	waitFor(t, bp.entered, "the worker to produce the first copy")
	require.Equal(t, http.StatusOK, e.post("/batch/", nil, oneBatch(2)).status) // queued
	require.Equal(t, http.StatusOK, e.post("/batch/", nil, oneBatch(3)).status) // no room
	e.eventually(`flagwatch_capture_tee_dropped_total{reason="queue_full"}`, 1)
	require.Equal(t, 1.0, sampleValue(e.metrics(), "flagwatch_capture_tee_queued"))
	close(bp.release)

	recs := e.records(2)
	require.Equal(t, "u1", string(recs[0].Key))
	require.Equal(t, "u2", string(recs[1].Key))
	require.Len(t, ph.eventRequests(), 3, "PostHog got all three")
}

// PostHog's CORS reflects any origin with credentials; through the proxy the answers
// follow capture's policy instead — any origin without credentials, credentials only
// for configured origins — and every other header is PostHog's. Preflights reach
// PostHog too.
func TestProxyCORSFollowsCapturesPolicy(t *testing.T) {
	ph := newPostHog(t, "phc_k")
	e := newEnv(t, capture.Options{Upstream: ph.url(), CORSCredentialOrigins: []string{"https://shop.example"}})
	for origin, want := range map[string][2]string{
		"https://elsewhere.example": {"*", ""},
		"https://shop.example":      {"https://shop.example", "true"},
	} {
		res := e.post("/flags/?v=2", hdr("Origin", origin, "Content-Type", "application/json"), []byte(`{"token":"phc_k","distinct_id":"u"}`))
		require.Equal(t, http.StatusOK, res.status, res.body)
		require.Equal(t, want[0], res.header.Get("Access-Control-Allow-Origin"), origin)
		require.Equal(t, want[1], res.header.Get("Access-Control-Allow-Credentials"), origin)
		require.Equal(t, []string{"Origin"}, res.header.Values("Vary"))
		require.Equal(t, "1", res.header.Get("X-Posthog-Stand-In"))
		require.Contains(t, res.body, `"variant":"`+variant("u")+`"`)

		pre := e.do(http.MethodOptions, "/e/", hdr("Origin", origin, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "content-type"), nil)
		require.Equal(t, http.StatusOK, pre.status)
		require.Equal(t, want[0], pre.header.Get("Access-Control-Allow-Origin"))
		require.Equal(t, want[1], pre.header.Get("Access-Control-Allow-Credentials"))
		require.Equal(t, "content-type", pre.header.Get("Access-Control-Allow-Headers"))
	}
	require.Equal(t, 2, ph.preflights(), "preflights are PostHog's to answer too")
	res := e.post("/flags/?v=2", hdr("Content-Type", "application/json"), []byte(`{"token":"phc_k","distinct_id":"u"}`))
	require.Empty(t, res.header.Get("Access-Control-Allow-Origin"), "no Origin, nothing added")
	ph.noProblems(t)
}

// Proxy mode is refused with a bad upstream, naming it.
func TestProxyOptionsAreChecked(t *testing.T) {
	_, err := capture.NewHandler(nil, capture.Options{Upstream: "us.i.posthog.com"})
	require.ErrorContains(t, err, `upstream: "us.i.posthog.com": must start with https:// or http://`)
	_, err = capture.NewHandler(nil, capture.Options{AssetsUpstream: "https://us-assets.i.posthog.com"})
	require.ErrorContains(t, err, "assets upstream: set only with an upstream")
	_, err = capture.NewHandler(nil, capture.Options{Upstream: "https://us.i.posthog.com", AssetsUpstream: "https://x/?a"})
	require.ErrorContains(t, err, `assets upstream: "https://x/?a": must be scheme://host[:port][/path] only`)
}
