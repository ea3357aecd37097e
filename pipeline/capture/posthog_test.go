package capture_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// postHog is a stand-in for PostHog Cloud's API host that checks requests the way
// PostHog's proxy guide documents them — Host set to PostHog's (else 401), the client's
// address in X-Forwarded-For, the project key in the body — and answers /flags (v2) and
// the capture endpoints as PostHog does. It records what it received, byte for byte.
type postHog struct {
	t    testing.TB
	srv  *httptest.Server
	keys []string // accepted project API keys

	mu       sync.Mutex
	events   []received // event requests (/batch/, /e/, /i/v0/e/)
	flagsN   int
	answers  [][]byte   // the /flags answers sent
	other    []received // everything else (recordings are hashed, not kept)
	problems []string   // what a real PostHog would have refused
	fail     int        // answer the next n event requests 503
	hold     chan struct{}
	held     chan struct{}
	options  int // preflights seen
}

// received is one request as PostHog got it.
type received struct {
	method, path, query string
	encoding            string // Content-Encoding
	body                []byte // kept up to 1 MiB
	size                int64
	sha                 string
	status              int // what the stand-in answered
}

func newPostHog(t testing.TB, keys ...string) *postHog {
	t.Helper()
	ph := &postHog{t: t, keys: keys}
	ph.srv = httptest.NewServer(http.HandlerFunc(ph.serve))
	t.Cleanup(ph.srv.Close)
	return ph
}

func (ph *postHog) url() string { return ph.srv.URL }

// failNext makes PostHog answer the next n event requests 503 (an SDK retries them).
func (ph *postHog) failNext(n int) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	ph.fail = n
}

// holdNext makes the next event request wait in PostHog until release is closed; held
// is closed once it arrived.
func (ph *postHog) holdNext() (held <-chan struct{}, release chan<- struct{}) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	h, r := make(chan struct{}), make(chan struct{})
	ph.held, ph.hold = h, r
	return h, r
}

func (ph *postHog) problem(format string, a ...any) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	ph.problems = append(ph.problems, fmt.Sprintf(format, a...))
}

// answer writes PostHog's JSON answers.
func answer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Posthog-Stand-In", "1")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (ph *postHog) serve(w http.ResponseWriter, r *http.Request) {
	if host := strings.TrimPrefix(ph.srv.URL, "http://"); r.Host != host {
		ph.problem("%s %s: Host %q, not PostHog's %q", r.Method, r.URL.Path, r.Host, host)
		answer(w, http.StatusUnauthorized, `{"type":"authentication_error","code":"invalid_api_key","detail":"Project API key invalid."}`)
		return
	}
	if hops := strings.Split(r.Header.Get("X-Forwarded-For"), ", "); hops[len(hops)-1] != "127.0.0.1" {
		ph.problem("%s %s: X-Forwarded-For %q does not end with the client's address", r.Method, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}
	if r.Method == http.MethodOptions {
		ph.mu.Lock()
		ph.options++
		ph.mu.Unlock()
		ph.allowAnyOrigin(w, r)
		w.WriteHeader(http.StatusOK)
		return
	}
	ph.allowAnyOrigin(w, r)
	rec := received{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, encoding: r.Header.Get("Content-Encoding")}
	h := sha256.New()
	var kept bytes.Buffer
	n, err := io.Copy(io.MultiWriter(h, &limitedBuffer{b: &kept, max: 1 << 20}), r.Body)
	if err != nil {
		ph.problem("%s %s: body cut short: %v", r.Method, r.URL.Path, err)
		answer(w, http.StatusBadRequest, `{"type":"validation_error","code":"invalid_payload","detail":"body cut short"}`)
		return
	}
	rec.body, rec.size, rec.sha = kept.Bytes(), n, hex.EncodeToString(h.Sum(nil))
	switch p := r.URL.Path; {
	case p == "/flags/" || p == "/flags":
		ph.serveFlags(w, r, rec)
	case p == "/batch/" || p == "/e/" || p == "/i/v0/e/":
		ph.serveEvents(w, r, rec)
	default:
		rec.status = http.StatusOK
		ph.mu.Lock()
		ph.other = append(ph.other, rec)
		ph.mu.Unlock()
		answer(w, http.StatusOK, `{"status":1}`)
	}
}

// allowAnyOrigin is PostHog's CORS: any origin reflected, with credentials.
func (ph *postHog) allowAnyOrigin(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		w.Header().Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "*")
		}
	}
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// variant is the stand-in's assignment of new-checkout, a hash of the user as PostHog's
// is; payload the flag's payload for it.
func variant(distinctID string) string {
	if sha256.Sum256([]byte("new-checkout." + distinctID))[0]%2 == 0 {
		return "control"
	}
	return "test"
}

func payload(distinctID string) map[string]any {
	return map[string]any{"discount": float64(len(variant(distinctID)))}
}

func (ph *postHog) serveFlags(w http.ResponseWriter, r *http.Request, rec received) {
	var req struct {
		Token      string `json:"token"`
		DistinctID string `json:"distinct_id"`
	}
	if r.Method != http.MethodPost || json.Unmarshal(rec.body, &req) != nil || !slices.Contains(ph.keys, req.Token) {
		ph.problem("/flags: %s %s", r.Method, rec.body)
		answer(w, http.StatusUnauthorized, `{"type":"authentication_error","code":"invalid_api_key","detail":"Project API key invalid."}`)
		return
	}
	pl, _ := json.Marshal(payload(req.DistinctID))
	body, _ := json.Marshal(map[string]any{
		"flags": map[string]any{"new-checkout": map[string]any{
			"key": "new-checkout", "enabled": true, "variant": variant(req.DistinctID),
			"reason":   map[string]any{"code": "condition_match", "condition_index": 0, "description": "Matched condition set 1"},
			"metadata": map[string]any{"id": 42, "version": 3, "payload": string(pl)},
		}},
		"errorsWhileComputingFlags": false, "requestId": "0f1e2d3c-0000-4000-8000-000000000000",
	})
	ph.mu.Lock()
	ph.flagsN++
	ph.answers = append(ph.answers, body)
	ph.mu.Unlock()
	answer(w, http.StatusOK, string(body))
}

func (ph *postHog) serveEvents(w http.ResponseWriter, r *http.Request, rec received) {
	ph.mu.Lock()
	held, hold := ph.held, ph.hold
	ph.held, ph.hold = nil, nil
	fail := ph.fail > 0
	if fail {
		ph.fail--
	}
	ph.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
	rec.status = http.StatusOK
	switch key := requestKey(rec.body, r); {
	case r.URL.Query().Get("compression") == "lz64":
		// PostHog decodes lz-string; the stand-in takes its word for the key.
	case !slices.Contains(ph.keys, key):
		rec.status = http.StatusUnauthorized
	case fail:
		rec.status = http.StatusServiceUnavailable
	}
	ph.mu.Lock()
	ph.events = append(ph.events, rec)
	ph.mu.Unlock()
	switch rec.status {
	case http.StatusUnauthorized:
		answer(w, rec.status, `{"type":"authentication_error","code":"invalid_api_key","detail":"Project API key invalid."}`)
	case http.StatusServiceUnavailable:
		answer(w, rec.status, `{"type":"server_error","code":"unavailable","detail":"try again"}`)
	default:
		answer(w, rec.status, `{"status":"Ok"}`)
	}
}

// requestKey is the project key of an event request, from wherever the SDKs put it.
func requestKey(body []byte, r *http.Request) string {
	if k := r.URL.Query().Get("token"); k != "" {
		return k
	}
	for _, e := range postedEvents(body, r.Header, r.URL.Query()) {
		if e.key != "" {
			return e.key
		}
	}
	return ""
}

// postedEvent is what the test needs of an event as an SDK posted it.
type postedEvent struct {
	uuid, event, distinctID, key string
}

// postedEvents decodes an event request as PostHog does (gzip by header or query; one
// event, an array, or {api_key, batch}).
func postedEvents(body []byte, hdr http.Header, q url.Values) []postedEvent {
	if hdr.Get("Content-Encoding") == "gzip" || strings.HasPrefix(q.Get("compression"), "gzip") {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil
		}
		if body, err = io.ReadAll(zr); err != nil {
			return nil
		}
	}
	type ev struct {
		UUID       string         `json:"uuid"`
		Event      string         `json:"event"`
		DistinctID string         `json:"distinct_id"`
		APIKey     string         `json:"api_key"`
		Token      string         `json:"token"`
		Properties map[string]any `json:"properties"`
	}
	var batch struct {
		APIKey string `json:"api_key"`
		Batch  []ev   `json:"batch"`
	}
	var evs []ev
	if json.Unmarshal(body, &batch) == nil && batch.Batch != nil {
		evs = batch.Batch
	} else if json.Unmarshal(body, &evs) != nil {
		var one ev
		if json.Unmarshal(body, &one) != nil {
			return nil
		}
		evs = []ev{one}
	}
	var out []postedEvent
	for _, e := range evs {
		key := batch.APIKey
		for _, k := range []string{e.APIKey, e.Token, fmt.Sprint(e.Properties["token"])} {
			if key == "" && k != "" && k != "<nil>" {
				key = k
			}
		}
		out = append(out, postedEvent{uuid: strings.ToLower(e.UUID), event: e.Event, distinctID: e.DistinctID, key: key})
	}
	return out
}

// eventRequests are the event requests PostHog received, in order.
func (ph *postHog) eventRequests() []received {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return append([]received(nil), ph.events...)
}

// accepted are the events of the event requests PostHog answered 2xx, by uuid.
func (ph *postHog) accepted(t *testing.T) map[string]postedEvent {
	t.Helper()
	out := map[string]postedEvent{}
	for _, r := range ph.eventRequests() {
		if r.status != http.StatusOK {
			continue
		}
		q, _ := url.ParseQuery(r.query)
		for _, e := range postedEvents(r.body, http.Header{"Content-Encoding": {r.encoding}}, q) {
			require.NotEmpty(t, e.uuid, "the SDK names its events")
			require.NotContains(t, out, e.uuid, "PostHog accepted the event %s twice", e.uuid)
			out[e.uuid] = e
		}
	}
	return out
}

func (ph *postHog) otherRequests() []received {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return append([]received(nil), ph.other...)
}

func (ph *postHog) flagRequests() int {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.flagsN
}

func (ph *postHog) flagAnswers() [][]byte {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return append([][]byte(nil), ph.answers...)
}

func (ph *postHog) preflights() int {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.options
}

func (ph *postHog) noProblems(t *testing.T) {
	t.Helper()
	ph.mu.Lock()
	defer ph.mu.Unlock()
	require.Empty(t, ph.problems, "requests a real PostHog would have refused")
}

// frontRecorder sits between the SDK and capture: it keeps each event request's body as
// the SDK sent it, and each /flags answer as the SDK received it.
type frontRecorder struct {
	mu      sync.Mutex
	bodies  [][]byte
	answers []frontAnswer
}

// frontAnswer is an answer as the client got it.
type frontAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (f *frontRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/batch/", "/e/", "/i/v0/e/":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f.mu.Lock()
			f.bodies = append(f.bodies, b)
			f.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		case "/flags/", "/flags":
			rw := &answerRecorder{ResponseWriter: w}
			h.ServeHTTP(rw, r)
			f.mu.Lock()
			f.answers = append(f.answers, frontAnswer{status: rw.status, header: rw.header, body: rw.body.Bytes()})
			f.mu.Unlock()
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (f *frontRecorder) sent() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.bodies...)
}

func (f *frontRecorder) flagAnswers() []frontAnswer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]frontAnswer(nil), f.answers...)
}

// answerRecorder passes an answer on and keeps a copy of it.
type answerRecorder struct {
	http.ResponseWriter
	status int
	header http.Header
	body   bytes.Buffer
}

func (a *answerRecorder) WriteHeader(code int) {
	a.status, a.header = code, a.ResponseWriter.Header().Clone()
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerRecorder) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	a.body.Write(p)
	return a.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController (the reverse proxy flushes through it) reach the
// real writer.
func (a *answerRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

var quiet = slog.New(slog.DiscardHandler)

// runIngest runs ingest in-process until it has stored everything on the topic.
func runIngest(t *testing.T, brokers []string, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, ingest.Run(ctx, ingest.Options{Brokers: brokers, Topics: []string{broker.EventsTopic},
		ClickHouseDSN: dsn, ExitWhenCaughtUp: true, Group: "capture-test", Logger: quiet}))
}

// stored is each event in ClickHouse, by uuid, with how many rows it has.
type storedEvent struct {
	event, distinctID string
	tsMs              int64
	rows              uint64
}

func storedEvents(t *testing.T, conn store.Conn) map[string]storedEvent {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		"SELECT toString(uuid), any(event), any(distinct_id), any(ts_ms), count() FROM events FINAL GROUP BY uuid")
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]storedEvent{}
	for rows.Next() {
		var u string
		var s storedEvent
		require.NoError(t, rows.Scan(&u, &s.event, &s.distinctID, &s.tsMs, &s.rows))
		out[u] = s
	}
	require.NoError(t, rows.Err())
	return out
}

// exposuresOf is each user's variant of flag in ClickHouse; it fails when a user has
// two variants or an exposure is stored twice.
func exposuresOf(t *testing.T, conn store.Conn, flag string) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT distinct_id, groupUniqArray(variant), count(), uniqExact(uuid) "+
		"FROM exposures FINAL WHERE flag = "+store.Quote(flag)+" GROUP BY distinct_id")
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var user string
		var variants []string
		var n, uniq uint64
		require.NoError(t, rows.Scan(&user, &variants, &n, &uniq))
		require.Equal(t, uniq, n, "%s: an exposure stored twice", user)
		require.Len(t, variants, 1, "%s: one variant", user)
		out[user] = variants[0]
	}
	require.NoError(t, rows.Err())
	return out
}

// eventually polls a metric sample until it reaches want.
func (e *env) eventually(sample string, want float64) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := sampleValue(e.metrics(), sample)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			require.Equal(e.t, want, got, sample)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampleValue reads one sample from /metrics text (0 when absent).
func sampleValue(metrics, sample string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}
