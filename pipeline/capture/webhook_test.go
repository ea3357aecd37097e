package capture_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

const webhookSecret = "4f9c2e7a1b8d3f6e0a5c9b2d7e1f4a8c"

// documentedTemplate is the JSON Body docs/posthog.md tells users to paste into PostHog.
func documentedTemplate(t *testing.T) any {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "posthog.md"))
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)<!-- webhook-body.*?-->\n *```json\n(.*?)\n *```").FindSubmatch(doc)
	require.NotNil(t, m, "docs/posthog.md has the webhook body template")
	var tpl any
	require.NoError(t, json.Unmarshal(m[1], &tpl))
	return tpl
}

var placeholder = regexp.MustCompile(`\{([a-z_]+(?:\.[a-z_$]+)*)\}`)

// render fills a JSON template as PostHog's destinations do: a string that is one
// placeholder becomes the value itself (an object stays an object); placeholders inside
// a longer string are printed into it.
func render(tpl any, globals map[string]any) any {
	switch v := tpl.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out[k] = render(x, globals)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = render(x, globals)
		}
		return out
	case string:
		if m := placeholder.FindStringSubmatch(v); m != nil && m[0] == v {
			return lookup(globals, m[1])
		}
		return placeholder.ReplaceAllStringFunc(v, func(p string) string {
			return fmt.Sprint(lookup(globals, p[1:len(p)-1]))
		})
	}
	return tpl
}

func lookup(globals map[string]any, path string) any {
	var cur any = globals
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// destinationEvent is an event as PostHog's destinations see it (HogFunctionInvocation
// globals): uuid, event, distinct_id, properties, an ISO timestamp, elements_chain, url.
func destinationEvent(uuid, name, user, ts string, props map[string]any) map[string]any {
	return map[string]any{"event": map[string]any{
		"uuid": uuid, "event": name, "distinct_id": user, "properties": props, "timestamp": ts,
		"elements_chain": "", "url": "https://us.posthog.com/project/1/events/" + uuid + "/" + ts,
	}, "person": map[string]any{"id": "p-" + user, "name": user, "properties": map[string]any{"email": user + "@example.com"},
		"url": "https://us.posthog.com/project/1/person/" + user}}
}

func (e *env) deliver(body any, auth string) response {
	e.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(e.t, err)
	h := hdr("Content-Type", "application/json", "Accept", "application/json")
	if auth != "" {
		h.Set("Authorization", auth)
	}
	return e.post(capture.WebhookPath, h, b)
}

// PostHog's HTTP Webhook destination, configured as docs/posthog.md says, delivers each
// event; its retry delivers every one of them again, and one comes a third time in the
// destination's default body. Each lands once in ClickHouse, at PostHog's timestamp,
// and the exposures give each user PostHog's variant.
func TestWebhookDestinationEventsLandOnce(t *testing.T) {
	dsn, conn := chtest.DB(t)
	e := newEnv(t, capture.Options{WebhookSecret: config.NewSecret(webhookSecret)})
	tpl := documentedTemplate(t)

	type delivered struct {
		user, event string
		ts          time.Time
	}
	want := map[string]delivered{}
	var globals []map[string]any
	for i, user := range []string{"user-1", "user-2", "user-3"} {
		ts := time.Date(2026, 3, 3, 10, i, 0, 0, time.UTC)
		// PostHog's ISO timestamps, in both of the forms it writes.
		tsText := ts.Format("2006-01-02T15:04:05.000Z")
		if i == 1 {
			tsText = ts.Format("2006-01-02T15:04:05.000-07:00")
		}
		exposure := fmt.Sprintf("0192f3a4-0000-7000-8000-%012d", 2*i)
		purchase := fmt.Sprintf("0192f3a4-0000-7000-8000-%012d", 2*i+1)
		globals = append(globals,
			destinationEvent(exposure, "$feature_flag_called", user, tsText,
				map[string]any{"$feature_flag": "new-checkout", "$feature_flag_response": variant(user), "$lib": "posthog-js"}),
			destinationEvent(purchase, "purchase", user, tsText,
				map[string]any{"revenue": 10.5, "$feature/new-checkout": variant(user), "$geoip_country_code": "GB"}))
		want[exposure] = delivered{user, "$feature_flag_called", ts}
		want[purchase] = delivered{user, "purchase", ts}
	}
	for range 2 { // PostHog's delivery, then its retry of every one
		for _, g := range globals {
			res := e.deliver(render(tpl, g), "Bearer "+webhookSecret)
			require.Equal(t, http.StatusOK, res.status, res.body)
			require.JSONEq(t, `{"status":1}`, res.body)
		}
	}
	// The destination's default body: {"event": "{event}", "person": "{person}"}.
	res := e.deliver(render(map[string]any{"event": "{event}", "person": "{person}"}, globals[0]), "Bearer "+webhookSecret)
	require.Equal(t, http.StatusOK, res.status, res.body)

	recs := e.records(2*len(globals) + 1)
	for _, r := range recs {
		m := decode(t, r.Value)
		require.NotContains(t, m, "sent_at", "PostHog's timestamp is already placed")
		require.NotContains(t, m, "token")
		require.Equal(t, "2026-03-04T12:00:00.000Z", m["now"], "capture's receive time")
	}
	runIngest(t, e.kafka.Addrs(), dsn)

	stored := storedEvents(t, conn)
	require.Len(t, stored, len(want))
	for id, w := range want {
		s, ok := stored[id]
		require.True(t, ok, "%s stored", id)
		require.Equal(t, uint64(1), s.rows, "%s stored once", id)
		require.Equal(t, w.event, s.event)
		require.Equal(t, w.user, s.distinctID)
		require.Equal(t, w.ts.UnixMilli(), s.tsMs, "PostHog's timestamp")
	}
	require.Equal(t, map[string]string{"user-1": variant("user-1"), "user-2": variant("user-2"), "user-3": variant("user-3")},
		exposuresOf(t, conn, "new-checkout"))
}

// lockedBuffer is a log destination a test can read while handlers write to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A delivery without the secret, with a wrong one or in another scheme is 401 and
// nothing of it is produced; any of several configured secrets is accepted (rotation);
// no secret configured is 404, another method 405; the secret never reaches the logs.
// In proxy mode the webhook is flagwatch's, not forwarded to PostHog.
func TestWebhookSecret(t *testing.T) {
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ph := newPostHog(t, "phc_k")
	e := newEnv(t, capture.Options{WebhookSecret: config.NewSecret(webhookSecret + ", next-secret-0001"),
		Upstream: ph.url(), Logger: log})
	body := map[string]any{"uuid": "0192f3a4-0000-7000-8000-000000000001", "event": "purchase",
		"distinct_id": "u", "timestamp": "2026-03-04T11:00:00.000Z", "properties": map[string]any{}}

	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Bearer " + webhookSecret[:len(webhookSecret)-1],
		"Bearer " + webhookSecret + "x", "Basic " + webhookSecret, webhookSecret} {
		res := e.deliver(body, auth)
		require.Equal(t, http.StatusUnauthorized, res.status, "Authorization %q: %s", auth, res.body)
		require.JSONEq(t, `{"type":"authentication_error","code":"invalid_secret",
		  "detail":"missing or wrong webhook secret: send Authorization: Bearer <FLAGWATCH_CAPTURE_WEBHOOK_SECRET>"}`, res.body)
	}
	require.Empty(t, e.recordsSettled(), "nothing of a refused delivery is produced")
	require.Equal(t, http.StatusOK, e.deliver(body, "Bearer "+webhookSecret).status)
	require.Equal(t, http.StatusOK, e.deliver(body, "bearer next-secret-0001").status)
	require.Len(t, e.recordsSettled(), 2)
	require.Empty(t, ph.eventRequests(), "the webhook is not forwarded to PostHog")

	res := e.do(http.MethodGet, capture.WebhookPath, hdr("Authorization", "Bearer "+webhookSecret), nil)
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
	require.Equal(t, "POST", res.header.Get("Allow"))
	require.Contains(t, e.metrics(), `flagwatch_capture_rejected_total{reason="invalid_secret"} 7`)
	require.NotContains(t, logs.String(), webhookSecret)
	require.NotContains(t, logs.String(), "next-secret-0001")

	off := newEnv(t, capture.Options{})
	res = off.deliver(body, "Bearer "+webhookSecret)
	require.Equal(t, http.StatusNotFound, res.status)
	require.Contains(t, res.body, `"code":"webhook_disabled"`)
}

// A delivery that can never be stored is 400 with the reason — PostHog shows it in the
// destination's logs — and a request is refused whole; while Kafka is down, 503 with
// Retry-After, which PostHog retries.
func TestWebhookRefusals(t *testing.T) {
	e := newEnv(t, capture.Options{WebhookSecret: config.NewSecret(webhookSecret), ProduceTimeout: time.Second,
		RetryAfter: 30 * time.Second})
	good := `{"uuid":"0192f3a4-0000-7000-8000-000000000001","event":"purchase","distinct_id":"u","timestamp":"2026-03-04T11:00:00Z","properties":{}}`
	for _, c := range []struct{ body, detail string }{
		{`{"event":"purchase","properties":{}}`, `events[0]: missing distinct_id`},
		{`{"uuid":"0192f3a4-0000-7000-8000-000000000002","event":"purchase","distinct_id":"u","timestamp":"last tuesday"}`, `events[0]: bad_timestamp`},
		{`[` + good + `,{"event":"","distinct_id":"u"}]`, `events[1]: missing event name`},
		{`{"event": "{event}"`, `invalid JSON`},
		{`"{event.uuid}"`, `payload is neither JSON, gzip nor base64`},
	} {
		res := e.post(capture.WebhookPath, hdr("Authorization", "Bearer "+webhookSecret), []byte(c.body))
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", c.body, res.body)
		require.Contains(t, res.body, `"code":"invalid_payload"`)
		require.Contains(t, res.body, c.detail)
	}
	require.Empty(t, e.recordsSettled())

	e.kafka.Close()
	var res response
	for range 2 { // the first waits for acks that cannot come; the second is refused at once
		res = e.post(capture.WebhookPath, hdr("Authorization", "Bearer "+webhookSecret), []byte(good))
		require.Equal(t, http.StatusServiceUnavailable, res.status, res.body)
		require.Equal(t, "30", res.header.Get("Retry-After"))
	}
	require.Contains(t, res.body, `"code":"kafka_unavailable"`)
}
