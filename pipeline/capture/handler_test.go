package capture_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/event"
)

// What posthog-node sends: {api_key, batch, sent_at}, gzip, Content-Encoding: gzip. The
// message carries the client's times as sent and capture's own (now); the client's
// clock is one minute slow, so the decoder ingest runs moves each event forward by one
// minute.
func TestBatchFromPostHogNodeIsProducedKeyedByDistinctIDWithSkewCorrected(t *testing.T) {
	e := newEnv(t, capture.Options{Tokens: []string{"phc_test"}})
	body := `{"api_key":"phc_test","sent_at":"2026-03-04T11:59:00.000Z","batch":[
	  {"event":"$feature_flag_called","distinct_id":"user-1","uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a51",
	   "timestamp":"2026-03-04T11:58:58.000Z","type":"capture","library":"posthog-node",
	   "properties":{"$feature_flag":"new-checkout","$feature_flag_response":"test","$lib":"posthog-node"}},
	  {"event":"purchase","distinct_id":"user-2","uuid":"0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A52",
	   "timestamp":"2026-03-04T11:58:59.500Z",
	   "properties":{"$feature/new-checkout":"control","revenue":42.5,"nested":{"a":[1,2]}}}]}`

	res := e.post("/batch/", hdr("Content-Type", "application/json", "Content-Encoding", "gzip"), gz(t, []byte(body)))

	require.Equal(t, http.StatusOK, res.status, res.body)
	require.JSONEq(t, `{"status":1}`, res.body)
	recs := e.records(2)
	require.Equal(t, "user-1", string(recs[0].Key))
	require.JSONEq(t, `{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a51","event":"$feature_flag_called",
	  "distinct_id":"user-1","timestamp":"2026-03-04T11:58:58.000Z",
	  "properties":{"$feature_flag":"new-checkout","$feature_flag_response":"test","$lib":"posthog-node"},
	  "token":"phc_test","sent_at":"2026-03-04T11:59:00.000Z","now":"2026-03-04T12:00:00.000Z"}`, string(recs[0].Value))
	require.Equal(t, fixedNow.Add(-2*time.Second), storedTime(t, recs[0]))
	require.Equal(t, "user-2", string(recs[1].Key))
	require.JSONEq(t, `{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a52","event":"purchase",
	  "distinct_id":"user-2","timestamp":"2026-03-04T11:58:59.500Z",
	  "properties":{"$feature/new-checkout":"control","revenue":42.5,"nested":{"a":[1,2]}},
	  "token":"phc_test","sent_at":"2026-03-04T11:59:00.000Z","now":"2026-03-04T12:00:00.000Z"}`, string(recs[1].Value))
	require.Equal(t, fixedNow.Add(-500*time.Millisecond), storedTime(t, recs[1]))
}

// pageview is one event as posthog-js sends it; wantPageview is its message when the
// request carries no sent_at.
const (
	pageview = `{"event":"$pageview","distinct_id":"u-1","uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",` +
		`"timestamp":"2026-03-04T11:00:00.000Z","properties":{"token":"phc_test","$title":">>~~~??"}}`
	wantPageview = `{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","event":"$pageview","distinct_id":"u-1",` +
		`"timestamp":"2026-03-04T11:00:00.000Z","properties":{"token":"phc_test","$title":">>~~~??"},` +
		`"token":"phc_test","now":"2026-03-04T12:00:00.000Z"}`
)

func TestEndpointsAndEncodings(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("[" + pageview + "]"))
	require.Contains(t, b64, "+", "the fixture must exercise '+' restoration in form bodies")
	gzB64 := base64.StdEncoding.EncodeToString(gz(t, []byte(pageview)))
	cases := []struct {
		name   string
		method string
		path   string
		header http.Header
		body   []byte
		want   string
		stored time.Time // when the decoder places the event; zero: the timestamp as sent
	}{
		{name: "batch, plain JSON, no trailing slash", method: "POST", path: "/batch",
			header: hdr("Content-Type", "application/json"),
			body:   []byte(`{"api_key":"phc_test","batch":[` + pageview + `]}`)},
		{name: "e, gzip-js query, posthog-js sent_at in ?_=", method: "POST",
			path:   "/e/?compression=gzip-js&ip=1&_=1772623805000&ver=1.200.0", // 11:30:05
			header: hdr("Content-Type", "text/plain"), body: nil,
			want: `{"uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","event":"$pageview","distinct_id":"u-1",` +
				`"timestamp":"2026-03-04T11:00:00.000Z","properties":{"token":"phc_test","$title":">>~~~??"},` +
				`"token":"phc_test","sent_at":"2026-03-04T11:30:05.000Z","now":"2026-03-04T12:00:00.000Z"}`,
			stored: time.Date(2026, 3, 4, 11, 29, 55, 0, time.UTC)},
		{name: "i/v0/e, gzip magic bytes without header", method: "POST", path: "/i/v0/e/",
			header: hdr("Content-Type", "application/json"), body: nil},
		{name: "capture, single event", method: "POST", path: "/capture/",
			header: hdr("Content-Type", "application/json"), body: []byte(pageview)},
		{name: "track, legacy form with base64 data and unescaped '+'", method: "POST", path: "/track/",
			header: hdr("Content-Type", "application/x-www-form-urlencoded"),
			body:   []byte("data=" + b64 + "&compression=base64")},
		{name: "e, form with urlencoded JSON data", method: "POST", path: "/e/",
			header: hdr("Content-Type", "application/x-www-form-urlencoded"),
			body:   []byte("data=" + url.QueryEscape("["+pageview+"]"))},
		{name: "e, base64 body with compression=base64", method: "POST", path: "/e/?compression=base64",
			header: hdr("Content-Type", "text/plain"), body: []byte(b64)},
		{name: "e, base64-wrapped gzip detected without hints", method: "POST", path: "/e/",
			header: hdr("Content-Type", "text/plain"), body: []byte(gzB64)},
		{name: "GET pixel with ?data=", method: "GET", path: "/e/?data=" + url.QueryEscape(b64)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, capture.Options{Tokens: []string{"phc_test"}})
			body := c.body
			if body == nil && c.method == "POST" {
				body = gz(t, []byte("["+pageview+"]"))
			}
			res := e.do(c.method, c.path, c.header, body)
			require.Equal(t, http.StatusOK, res.status, res.body)
			require.JSONEq(t, `{"status":1}`, res.body)
			want := c.want
			if want == "" {
				want = wantPageview
			}
			recs := e.records(1)
			require.Equal(t, "u-1", string(recs[0].Key))
			require.JSONEq(t, want, string(recs[0].Value))
			stored := c.stored
			if stored.IsZero() {
				stored = time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC)
			}
			require.Equal(t, stored, storedTime(t, recs[0]))
		})
	}
}

// The time rule applied to what capture forwards: each event is stored where the
// decoder ingest runs places it, whatever form the client's times took.
func TestClockSkewAndDistinctIDForms(t *testing.T) {
	e := newEnv(t, capture.Options{})
	body := `{"api_key":"k","sent_at":"2026-03-04T13:00:00Z","batch":[
	  {"event":"a","distinct_id":42,"uuid":"00000000-0000-4000-8000-000000000001","timestamp":"2026-03-04T13:59:30+01:00"},
	  {"event":"b","$distinct_id":"dollar","uuid":"00000000-0000-4000-8000-000000000002","offset":1500},
	  {"event":"c","properties":{"distinct_id":"in-props"},"uuid":"00000000-0000-4000-8000-000000000003",
	   "timestamp":"2026-03-03T10:00:00Z","sent_at":"2026-03-03T10:00:10Z"},
	  {"event":"d","distinct_id":"hist","uuid":"00000000-0000-4000-8000-000000000004",
	   "timestamp":"2025-12-01T00:00:00Z","properties":{"$ignore_sent_at":true}},
	  {"event":"e","distinct_id":"future","uuid":"00000000-0000-4000-8000-000000000005",
	   "timestamp":"2026-03-06T00:00:00Z","properties":{"$ignore_sent_at":true}},
	  {"event":"g","distinct_id":"millis","uuid":"00000000-0000-4000-8000-000000000007","timestamp":1772629170000},
	  {"event":"h","distinct_id":"zone","uuid":"00000000-0000-4000-8000-000000000008","timestamp":"2026-03-04T13:59:40.5+0100"},
	  {"event":"i","distinct_id":"date","uuid":"00000000-0000-4000-8000-000000000009","timestamp":"2026-03-04",
	   "properties":{"$ignore_sent_at":true}}]}`

	res := e.post("/batch/", nil, []byte(body))

	require.Equal(t, http.StatusOK, res.status, res.body)
	want := map[string]string{ // key → event, stored time
		"42":       "a 2026-03-04T11:59:30Z",   // 12:59:30Z stamped 30 s before sent_at
		"dollar":   "b 2026-03-04T11:59:58.5Z", // offset 1.5 s
		"in-props": "c 2026-03-04T11:59:50Z",   // event-level sent_at wins over the batch's
		"hist":     "d 2025-12-01T00:00:00Z",   // $ignore_sent_at: taken as is
		"future":   "e 2026-03-04T12:00:00Z",   // > 23 h ahead: now
		"millis":   "g 2026-03-04T11:59:30Z",   // epoch ms 12:59:30Z, skew-corrected
		"zone":     "h 2026-03-04T11:59:40.5Z", // +0100
		"date":     "i 2026-03-04T00:00:00Z",   // a date alone is midnight UTC
	}
	got := map[string]string{}
	for _, r := range e.records(len(want)) {
		m := decode(t, r.Value)
		require.Equal(t, m["distinct_id"], string(r.Key))
		got[string(r.Key)] = fmt.Sprint(m["event"], " ", storedTime(t, r).Format(time.RFC3339Nano))
	}
	require.Equal(t, want, got)
}

// An event without a uuid gets one derived from the request, so an SDK's retry of the
// same request produces the same uuids, while distinct events get distinct ones.
func TestEventsWithoutUUIDGetDeterministicUUIDs(t *testing.T) {
	e := newEnv(t, capture.Options{})
	body := []byte(`{"api_key":"k","sent_at":"2026-03-04T12:00:00Z","batch":[
	  {"event":"x","distinct_id":"u","timestamp":"2026-03-04T11:59:00Z"},
	  {"event":"x","distinct_id":"u","timestamp":"2026-03-04T11:59:00Z"}]}`)
	for range 2 {
		res := e.post("/batch/", nil, body)
		require.Equal(t, http.StatusOK, res.status, res.body)
	}
	count := map[string]int{}
	for _, r := range e.records(4) {
		id := decode(t, r.Value)["uuid"].(string)
		require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, id)
		count[id]++
	}
	require.Len(t, count, 2, "two distinct events, each sent twice")
	for id, n := range count {
		require.Equal(t, 2, n, id)
	}
}

func TestAPIKeys(t *testing.T) {
	e := newEnv(t, capture.Options{Tokens: []string{"phc_good", "phc_other"}})
	event := func(extra string) []byte {
		return []byte(`{"event":"x","distinct_id":"u","uuid":"00000000-0000-4000-8000-00000000000` + extra)
	}
	accepted := []struct {
		name   string
		path   string
		header http.Header
		body   []byte
	}{
		{"event api_key", "/capture/", nil, append(event("1"), `","api_key":"phc_good"}`...)},
		{"event $token", "/capture/", nil, append(event("2"), `","$token":"phc_other"}`...)},
		{"query token", "/capture/?token=phc_good", nil, append(event("3"), `"}`...)},
		{"bearer", "/capture/", hdr("Authorization", "Bearer phc_good"), append(event("4"), `"}`...)},
		{"batch token field", "/batch/", nil, []byte(`{"token":"phc_good","batch":[` + string(event("5")) + `"}]}`)},
	}
	for _, c := range accepted {
		res := e.post(c.path, c.header, c.body)
		require.Equal(t, http.StatusOK, res.status, "%s: %s", c.name, res.body)
	}

	unknown := e.post("/capture/", nil, append(event("6"), `","api_key":"phc_evil"}`...))
	require.Equal(t, http.StatusUnauthorized, unknown.status)
	require.JSONEq(t, `{"type":"authentication_error","code":"invalid_api_key",
	  "detail":"API key \"phc_evil\" is not a project key of this capture"}`, unknown.body)
	missing := e.post("/capture/", nil, append(event("7"), `"}`...))
	require.Equal(t, http.StatusUnauthorized, missing.status)
	require.Contains(t, missing.body, "API key missing")
	mixed := e.post("/e/", nil, []byte(`[`+string(event("8"))+`","token":"phc_good"},`+string(event("9"))+`","token":"phc_other"}]`))
	require.Equal(t, http.StatusBadRequest, mixed.status)
	require.Contains(t, mixed.body, "more than one API key in one request")

	e.records(len(accepted))
}

func TestSizeLimits(t *testing.T) {
	e := newEnv(t, capture.Options{MaxBodyBytes: 2048})
	big := `{"event":"x","distinct_id":"u","properties":{"pad":"` + strings.Repeat("a", 4096) + `"}}`
	bomb := `{"event":"x","distinct_id":"u","properties":{"pad":"` + strings.Repeat("0", 1<<20) + `"}}`
	require.Less(t, len(gz(t, []byte(bomb))), 2048, "the bomb must pass the wire limit")

	for name, res := range map[string]response{
		"raw":            e.post("/capture/", nil, []byte(big)),
		"gzip bomb":      e.post("/capture/", hdr("Content-Encoding", "gzip"), gz(t, []byte(bomb))),
		"gzip by magic":  e.post("/e/", nil, gz(t, []byte(bomb))),
		"base64 of gzip": e.post("/e/", nil, []byte(base64.StdEncoding.EncodeToString(gz(t, []byte(bomb))))),
	} {
		require.Equal(t, http.StatusRequestEntityTooLarge, res.status, "%s: %s", name, res.body)
		require.Contains(t, res.body, `"code":"payload_too_large"`, name)
	}
	ok := e.post("/capture/", nil, []byte(`{"event":"x","distinct_id":"u","properties":{"pad":"`+strings.Repeat("a", 1900)+`"}}`))
	require.Equal(t, http.StatusOK, ok.status, ok.body)
	e.records(1)
}

func TestMalformedRequestsAreRejectedWholeWithTheProblemNamed(t *testing.T) {
	e := newEnv(t, capture.Options{})
	good := `{"event":"ok","distinct_id":"u"}`
	cases := []struct {
		name, method, path string
		header             http.Header
		body               string
		status             int
		detail             string
	}{
		{"invalid JSON", "POST", "/batch/", nil, `{"batch":[`, 400, "invalid JSON"},
		{"missing event name", "POST", "/batch/", nil, `{"batch":[` + good + `,{"distinct_id":"u"}]}`, 400,
			"events[1]: missing event name"},
		{"event name not a string", "POST", "/e/", nil, `[` + good + `,` + good + `,{"event":7,"distinct_id":"u"}]`, 400,
			"events[2]: event: must be a string, got 7"},
		{"missing distinct_id", "POST", "/e/", nil, `[` + good + `,{"event":"x","distinct_id":""}]`, 400,
			"events[1]: missing distinct_id"},
		{"properties not an object", "POST", "/capture/", nil, `{"event":"x","distinct_id":"u","properties":[1]}`, 400,
			"events[0]: properties: must be an object"},
		{"bad uuid", "POST", "/capture/", nil, `{"event":"x","distinct_id":"u","uuid":"nope"}`, 400,
			`events[0]: uuid \"nope\": not a UUID`},
		{"batch not an array", "POST", "/batch/", nil, `{"api_key":"k","batch":{"event":"x"}}`, 400,
			"batch: must be an array of events"},
		{"empty batch", "POST", "/batch/", nil, `{"api_key":"k","batch":[]}`, 400, "no events in payload"},
		{"empty body", "POST", "/e/", nil, ``, 400, "empty payload"},
		{"GET without data", "GET", "/e/", nil, ``, 400, "empty payload"},
		{"not JSON", "POST", "/e/", nil, `hello world`, 400, "payload is neither JSON, gzip nor base64"},
		{"Content-Encoding gzip but not gzip", "POST", "/batch/", hdr("Content-Encoding", "gzip"), good, 400,
			"invalid gzip data"},
		{"unsupported Content-Encoding", "POST", "/batch/", hdr("Content-Encoding", "br"), good, 400,
			`unsupported Content-Encoding \"br\" (use gzip)`},
		{"lz64", "POST", "/e/?compression=lz64", nil, `N4Ig`, 400, `compression \"lz64\" is not supported`},
		{"offset not a number", "POST", "/capture/", nil, `{"event":"x","distinct_id":"u","offset":"soon"}`, 400,
			`events[0]: bad_timestamp: offset \"soon\": must be a number of milliseconds`},
		{"event name too long", "POST", "/capture/", nil, `{"event":"` + strings.Repeat("x", 201) + `","distinct_id":"u"}`, 400,
			`events[0]: bad_name: event name \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"… is 201 bytes, longer than 200`},
		{"flag key with a newline", "POST", "/capture/", nil,
			`{"event":"$feature_flag_called","distinct_id":"u","properties":{"$feature_flag":"a\nb","$feature_flag_response":"x"}}`, 400,
			`events[0]: bad_name: flag key \"a\\nb\" has a control character at byte 1`},
		{"method", "PUT", "/e/", nil, good, 405, "method PUT not allowed"},
	}
	for _, c := range cases {
		res := e.do(c.method, c.path, c.header, []byte(c.body))
		require.Equal(t, c.status, res.status, "%s: %s", c.name, res.body)
		require.Contains(t, res.body, `"detail":"`+c.detail, c.name)
		require.Contains(t, res.body, `"type":"`, c.name)
	}
	// Nothing of the rejected requests reached Kafka: the only record is this one.
	require.Equal(t, http.StatusOK, e.post("/e/", nil, []byte(good)).status)
	recs := e.records(1)
	require.Equal(t, "ok", decode(t, recs[0].Value)["event"])
}

// CORS: any origin may send events, none gets credentials by reflection; the origins
// configured for credentials (posthog-js's XHR transport sends them) get exactly that.
func TestCORS(t *testing.T) {
	e := newEnv(t, capture.Options{CORSCredentialOrigins: []string{"https://shop.example"}})
	preflight := func(origin string) response {
		return e.do(http.MethodOptions, "/e/", hdr("Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type"), nil)
	}
	for _, origin := range []string{"https://evil.example", "null", "https://shop.example.evil.example"} {
		res := preflight(origin)
		require.Equal(t, http.StatusOK, res.status)
		require.Equal(t, "*", res.header.Get("Access-Control-Allow-Origin"), origin)
		require.Empty(t, res.header.Get("Access-Control-Allow-Credentials"), origin)
		require.Equal(t, "content-type", res.header.Get("Access-Control-Allow-Headers"))
		post := e.post("/e/", hdr("Origin", origin), []byte(`{"event":"x","distinct_id":"u"}`))
		require.Equal(t, http.StatusOK, post.status, post.body)
		require.Equal(t, "*", post.header.Get("Access-Control-Allow-Origin"), origin)
		require.Empty(t, post.header.Get("Access-Control-Allow-Credentials"), origin)
	}
	res := preflight("https://shop.example")
	require.Equal(t, "https://shop.example", res.header.Get("Access-Control-Allow-Origin"))
	require.Equal(t, "true", res.header.Get("Access-Control-Allow-Credentials"))
	require.Contains(t, res.header.Values("Vary"), "Origin")
	e.records(3)
}

func TestHealthzAndMetrics(t *testing.T) {
	e := newEnv(t, capture.Options{})
	health := e.do(http.MethodGet, "/healthz", nil, nil)
	require.Equal(t, http.StatusOK, health.status, health.body)
	require.True(t, strings.HasPrefix(health.body, "ok\n"), health.body)

	require.Equal(t, http.StatusOK, e.post("/batch/", nil, []byte(`{"api_key":"k","batch":[
	  {"event":"a","distinct_id":"u"},{"event":"b","distinct_id":"u"}]}`)).status)
	require.Equal(t, http.StatusBadRequest, e.post("/e/", nil, []byte(`{`)).status)

	m := e.metrics()
	for _, line := range []string{
		`flagwatch_capture_requests_total{endpoint="/batch/",status="200"} 1`,
		`flagwatch_capture_requests_total{endpoint="/e/",status="400"} 1`,
		`flagwatch_capture_events_produced_total 2`,
		`flagwatch_capture_produce_duration_seconds_count 1`,
		`flagwatch_capture_bytes_total{stage="received"}`,
	} {
		require.Contains(t, m, line)
	}
}

func (e *env) metrics() string {
	e.t.Helper()
	res := e.do(http.MethodGet, "/metrics", nil, nil)
	require.Equal(e.t, http.StatusOK, res.status)
	return res.body
}

// storedTime is the time the decoder ingest runs gives the record's event.
func storedTime(t testing.TB, r *kgo.Record) time.Time {
	t.Helper()
	evs, err := event.Decode(r.Value, r.Timestamp)
	require.NoError(t, err, "%s", r.Value)
	require.Len(t, evs, 1)
	return time.UnixMilli(evs[0].TsMs).UTC()
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}
