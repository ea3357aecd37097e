package rollback

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

const secret = "s3cret"

// hit is one request a test server received.
type hit struct {
	method, path string
	header       http.Header
	body         []byte
	at           time.Time
}

// server answers with the given handlers in turn (the last one repeats) and records
// every request.
type server struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hit
}

func newServer(t *testing.T, replies ...http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		n := len(s.hits)
		s.hits = append(s.hits, hit{r.Method, r.URL.Path, r.Header.Clone(), body, time.Now()})
		s.mu.Unlock()
		replies[min(n, len(replies)-1)](w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hit(nil), s.hits...)
}

func status(code int, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, http.StatusText(code))
	}
}

// fakeSleep records the waits instead of sleeping.
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, d)
	return ctx.Err()
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testOptions(f *fakeSleep) Options {
	return Options{Logger: quiet(), Sleep: f.sleep, Retry: Retry{Attempts: 4, Base: 100 * time.Millisecond, Max: time.Second, Budget: time.Hour}}
}

func request() Request {
	uk := "GB"
	return Request{
		Flag: "new-checkout", Metric: "errors per user", Variant: "test",
		Segment:  &alert.Segment{Property: "$geoip_country_code", Value: &uk},
		Decision: alert.GuardrailBreach, Summary: "errors per user up 41% in GB",
		Numbers:  alert.Numbers{Control: "control", ControlN: 5000, VariantN: 5010, Lift: 0.41, CI: [2]float64{0.32, 0.5}},
		DedupKey: "new-checkout|errors per user|$geoip_country_code=GB|guardrail_breach",
		Time:     time.Date(2026, 3, 2, 10, 15, 0, 0, time.UTC),
	}
}

func TestWebhookSignedRequest(t *testing.T) {
	srv := newServer(t, status(http.StatusNoContent))
	f := &fakeSleep{}
	out := NewWebhook(srv.URL+"/hook", config.NewSecret(secret), testOptions(f)).Do(context.Background(), request())

	require.Equal(t, StatusOK, out.Status, out.Detail)
	require.Equal(t, "webhook", out.Action)
	require.Equal(t, srv.URL+"/hook", out.Target)
	require.Equal(t, "HTTP 204 No Content", out.Detail)
	require.False(t, out.At.IsZero())

	hits := srv.requests()
	require.Len(t, hits, 1)
	h := hits[0]
	require.Equal(t, http.MethodPost, h.method)
	require.Equal(t, "/hook", h.path)
	require.Equal(t, "application/json", h.header.Get("Content-Type"))
	require.True(t, Verify([]byte(secret), h.body, h.header.Get(SignatureHeader)), "signature verifies with the secret")
	require.False(t, Verify([]byte("other"), h.body, h.header.Get(SignatureHeader)))
	require.Regexp(t, `^sha256=[0-9a-f]{64}$`, h.header.Get(SignatureHeader))
	require.Equal(t, request().DedupKey, h.header.Get("Idempotency-Key"))
	ts, err := strconv.ParseInt(h.header.Get(TimestampHeader), 10, 64)
	require.NoError(t, err)
	require.InDelta(t, time.Now().Unix(), ts, 5)

	var body map[string]any
	require.NoError(t, json.Unmarshal(h.body, &body))
	require.Equal(t, "new-checkout", body["flag"])
	require.Equal(t, "errors per user", body["metric"])
	require.Equal(t, map[string]any{"property": "$geoip_country_code", "value": "GB"}, body["segment"])
	require.Equal(t, "guardrail_breach", body["decision"])
	require.Equal(t, "errors per user up 41% in GB", body["summary"])
	require.Equal(t, request().DedupKey, body["dedup_key"])
	require.Equal(t, "2026-03-02T10:15:00Z", body["time"])
	require.Equal(t, 0.41, body["numbers"].(map[string]any)["lift"])
	require.Empty(t, f.waits)
}

func TestRetryAfter5xx(t *testing.T) {
	srv := newServer(t, status(http.StatusInternalServerError), status(http.StatusOK))
	f := &fakeSleep{}
	out := NewWebhook(srv.URL, config.NewSecret(secret), testOptions(f)).Do(context.Background(), request())

	require.Equal(t, StatusOK, out.Status, out.Detail)
	require.Equal(t, "HTTP 200 OK after 2 attempts", out.Detail)
	hits := srv.requests()
	require.Len(t, hits, 2)
	require.Equal(t, hits[0].body, hits[1].body, "a retry sends the same body")
	require.Equal(t, hits[0].header.Get(SignatureHeader), hits[1].header.Get(SignatureHeader))
	require.Equal(t, hits[0].header.Get("Idempotency-Key"), hits[1].header.Get("Idempotency-Key"))
	require.Equal(t, []time.Duration{100 * time.Millisecond}, f.waits)
}

func TestRetryAfterHeaderHonoured(t *testing.T) {
	srv := newServer(t, status(http.StatusTooManyRequests, "Retry-After", "7"), status(http.StatusOK))
	f := &fakeSleep{}
	out := NewWebhook(srv.URL, config.NewSecret(secret), testOptions(f)).Do(context.Background(), request())
	require.Equal(t, StatusOK, out.Status, out.Detail)
	require.Equal(t, []time.Duration{7 * time.Second}, f.waits, "Retry-After beats the 100ms backoff")
	require.Len(t, srv.requests(), 2)
}

// TestRetryAfterRealClock waits for real, with the default sleep.
func TestRetryAfterRealClock(t *testing.T) {
	srv := newServer(t, status(http.StatusTooManyRequests, "Retry-After", "1"), status(http.StatusOK))
	opts := Options{Logger: quiet(), Retry: Retry{Base: time.Millisecond}}
	out := NewWebhook(srv.URL, config.NewSecret(secret), opts).Do(context.Background(), request())
	require.Equal(t, StatusOK, out.Status, out.Detail)
	hits := srv.requests()
	require.Len(t, hits, 2)
	require.GreaterOrEqual(t, hits[1].at.Sub(hits[0].at), time.Second)
}

func TestClientErrorNotRetried(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "{\"error\":\n \"unknown flag\"}")
	})
	f := &fakeSleep{}
	out := NewWebhook(srv.URL, config.NewSecret(secret), testOptions(f)).Do(context.Background(), request())
	require.Equal(t, StatusFailed, out.Status)
	require.Equal(t, `HTTP 400 Bad Request: {"error": "unknown flag"}`, out.Detail)
	require.Len(t, srv.requests(), 1)
	require.Empty(t, f.waits)
}

func TestGiveUpAfterAttempts(t *testing.T) {
	srv := newServer(t, status(http.StatusServiceUnavailable))
	f := &fakeSleep{}
	out := NewWebhook(srv.URL, config.NewSecret(secret), testOptions(f)).Do(context.Background(), request())
	require.Equal(t, StatusFailed, out.Status)
	require.Equal(t, "HTTP 503 Service Unavailable: Service Unavailable; gave up after 4 attempts", out.Detail)
	require.Len(t, srv.requests(), 4)
	require.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, f.waits)
}

func TestBackoffCapped(t *testing.T) {
	p := Retry{Base: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for n := 1; n <= 5; n++ {
		got = append(got, backoff(p, n))
	}
	require.Equal(t, []time.Duration{1, 2, 4, 5, 5}, scale(got, time.Second))
}

func scale(ds []time.Duration, unit time.Duration) []time.Duration {
	for i := range ds {
		ds[i] /= unit
	}
	return ds
}

func TestRetryAfterBeyondBudget(t *testing.T) {
	srv := newServer(t, status(http.StatusTooManyRequests, "Retry-After", "3600"))
	f := &fakeSleep{}
	opts := testOptions(f)
	opts.Retry.Budget = time.Minute
	out := NewWebhook(srv.URL, config.NewSecret(secret), opts).Do(context.Background(), request())
	require.Equal(t, StatusFailed, out.Status)
	require.Equal(t, "HTTP 429 Too Many Requests: Too Many Requests; gave up after 1 attempt: waiting 1h0m0s more would exceed the 1m0s budget", out.Detail)
	require.Empty(t, f.waits)
}

func TestNetworkErrorRetried(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // connection refused from now on
	f := &fakeSleep{}
	out := NewWebhook(url+"/hook?token=abc", config.NewSecret(secret), testOptions(f)).Do(context.Background(), request())
	require.Equal(t, StatusFailed, out.Status)
	require.Contains(t, out.Detail, "connection refused")
	require.Contains(t, out.Detail, "gave up after 4 attempts")
	require.NotContains(t, out.Detail, "token=abc")
	require.Equal(t, url+"/hook", out.Target, "no query in the target")
	require.Len(t, f.waits, 3)
}

func TestContextCancelStopsRetries(t *testing.T) {
	srv := newServer(t, status(http.StatusBadGateway))
	ctx, cancel := context.WithCancel(context.Background())
	opts := Options{Logger: quiet(), Sleep: func(ctx context.Context, _ time.Duration) error {
		cancel()
		return ctx.Err()
	}}
	out := NewWebhook(srv.URL, config.NewSecret(secret), opts).Do(ctx, request())
	require.Equal(t, StatusFailed, out.Status)
	require.Equal(t, "HTTP 502 Bad Gateway: Bad Gateway; stopped after 1 attempt: context canceled", out.Detail)
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	require.Equal(t, 120*time.Second, retryAfter("120", now))
	require.Equal(t, 30*time.Second, retryAfter(now.Add(30*time.Second).Format(http.TimeFormat), now))
	require.Zero(t, retryAfter(now.Add(-time.Hour).Format(http.TimeFormat), now))
	require.Zero(t, retryAfter("soon", now))
	require.Zero(t, retryAfter("", now))
}

func TestTargetHasNoCredentials(t *testing.T) {
	require.Equal(t, "https://hooks.example.com/x", redactURL("https://user:pw@hooks.example.com/x?sig=1#f"))
}

func TestIdempotencyKeyHeaderSafe(t *testing.T) {
	srv := newServer(t, status(http.StatusOK))
	r := request()
	r.DedupKey = "f|m|plan=pro\nevil: 1|loss"
	out := NewWebhook(srv.URL, config.NewSecret(secret), testOptions(&fakeSleep{})).Do(context.Background(), r)
	require.Equal(t, StatusOK, out.Status, out.Detail)
	require.Equal(t, "f|m|plan=pro_evil: 1|loss", srv.requests()[0].header.Get("Idempotency-Key"))
}

const flagJSON = `{"id": 42, "key": "new-checkout", "active": true}`

func TestPostHogDisablesFlag(t *testing.T) {
	srv := newServer(t,
		func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, flagJSON) },
		func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, strings.Replace(flagJSON, "true", "false", 1))
		})
	f := &fakeSleep{}
	out := NewPostHog(srv.URL+"/", "1", 42, config.NewSecret("phx_key"), testOptions(f)).Do(context.Background(), request())

	require.Equal(t, StatusOK, out.Status, out.Detail)
	require.Equal(t, "posthog", out.Action)
	require.Equal(t, srv.URL+"/api/projects/1/feature_flags/42/", out.Target)
	require.Equal(t, "disabled flag new-checkout: HTTP 200 OK", out.Detail)

	hits := srv.requests()
	require.Len(t, hits, 2)
	get, patch := hits[0], hits[1]
	require.Equal(t, http.MethodGet, get.method)
	require.Equal(t, "/api/projects/1/feature_flags/42/", get.path)
	require.Equal(t, http.MethodPatch, patch.method)
	require.Equal(t, "/api/projects/1/feature_flags/42/", patch.path)
	require.Equal(t, `{"active":false}`, string(patch.body))
	require.Equal(t, "application/json", patch.header.Get("Content-Type"))
	for _, h := range hits {
		require.Equal(t, "Bearer phx_key", h.header.Get("Authorization"))
	}
}

func TestPostHogRefusesOtherFlag(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"id": 42, "key": "dark-mode", "active": true}`)
	})
	out := NewPostHog(srv.URL, "1", 42, config.NewSecret("k"), testOptions(&fakeSleep{})).Do(context.Background(), request())
	require.Equal(t, StatusFailed, out.Status)
	require.Equal(t, `refused: PostHog flag at this id has key "dark-mode", not "new-checkout"; fix flag_id in the monitors file`, out.Detail)
	require.Len(t, srv.requests(), 1, "no PATCH")
}

func TestPostHogRetriesAndAuthFailure(t *testing.T) {
	srv := newServer(t,
		func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, flagJSON) },
		status(http.StatusInternalServerError),
		status(http.StatusOK))
	f := &fakeSleep{}
	out := NewPostHog(srv.URL, "1", 42, config.NewSecret("k"), testOptions(f)).Do(context.Background(), request())
	require.Equal(t, StatusOK, out.Status, out.Detail)
	require.Equal(t, "disabled flag new-checkout: HTTP 200 OK after 2 attempts", out.Detail)

	srv = newServer(t, status(http.StatusUnauthorized))
	out = NewPostHog(srv.URL, "1", 42, config.NewSecret("k"), testOptions(f)).Do(context.Background(), request())
	require.Equal(t, StatusFailed, out.Status)
	require.Equal(t, "read flag: HTTP 401 Unauthorized: Unauthorized", out.Detail)
	require.Len(t, srv.requests(), 1)
}

func TestNewFromConfig(t *testing.T) {
	cfg := &config.Rollback{
		Webhook: &config.Webhook{URL: "https://hooks.example.com/flagwatch", SecretEnv: "ROLLBACK_HMAC_SECRET"},
		PostHog: &config.PostHog{Host: "https://us.posthog.com", ProjectID: "1", FlagID: 42, APIKeyEnv: "POSTHOG_API_KEY"},
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte("phx_from_file\n"), 0o600))
	env := map[string]string{"ROLLBACK_HMAC_SECRET": "s", "POSTHOG_API_KEY_FILE": keyFile}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	as, err := New(cfg, lookup, Options{})
	require.NoError(t, err)
	require.Len(t, as, 2)
	require.Equal(t, "s", as[0].(*Webhook).secret.Reveal())
	require.Equal(t, "phx_from_file", as[1].(*PostHog).apiKey.Reveal())
	require.Equal(t, "https://us.posthog.com/api/projects/1/feature_flags/42/", as[1].(*PostHog).url)

	delete(env, "POSTHOG_API_KEY_FILE")
	_, err = New(cfg, lookup, Options{})
	require.EqualError(t, err, "rollback posthog api key: environment variable POSTHOG_API_KEY (or POSTHOG_API_KEY_FILE) is not set")

	delete(env, "ROLLBACK_HMAC_SECRET")
	_, err = New(cfg, lookup, Options{})
	require.EqualError(t, err, "rollback webhook secret: environment variable ROLLBACK_HMAC_SECRET (or ROLLBACK_HMAC_SECRET_FILE) is not set")

	as, err = New(nil, lookup, Options{})
	require.NoError(t, err)
	require.Empty(t, as)
}

func TestActionsRunAllInOrder(t *testing.T) {
	ok := newServer(t, status(http.StatusOK))
	bad := newServer(t, status(http.StatusForbidden))
	opts := testOptions(&fakeSleep{})
	as := Actions{
		NewWebhook(bad.URL, config.NewSecret(secret), opts),
		NewWebhook(ok.URL, config.NewSecret(secret), opts),
	}
	outs := as.Do(context.Background(), request())
	require.Len(t, outs, 2)
	require.Equal(t, StatusFailed, outs[0].Status)
	require.Equal(t, bad.URL, outs[0].Target)
	require.Equal(t, StatusOK, outs[1].Status)
}

func TestFromAlert(t *testing.T) {
	r := request()
	a := &alert.Alert{
		Flag: r.Flag, Metric: r.Metric, Segment: r.Segment, Variant: r.Variant, Decision: r.Decision,
		Summary: r.Summary, Numbers: r.Numbers, DedupKey: r.DedupKey, DetectedAt: r.Time,
		Severity: alert.Critical,
	}
	require.Equal(t, r, FromAlert(a))
}
