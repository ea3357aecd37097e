package proxy_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/capture/proxy"
	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// seen is a request as the upstream received it.
type seen struct {
	method, path, rawQuery, host string
	header                       http.Header
	body                         []byte
}

// upstream is a stand-in for one PostHog host: it records what it receives and answers
// with a fixed status, headers and body.
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []seen
	status int
	header http.Header
	body   []byte
}

func newUpstream(t *testing.T, status int, header http.Header, body []byte) *upstream {
	u := &upstream{status: status, header: header, body: body}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil { // a body cut short on the way: answered, not recorded
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.got = append(u.got, seen{method: r.Method, path: r.URL.Path, rawQuery: r.URL.RawQuery, host: r.Host,
			header: r.Header.Clone(), body: b})
		u.mu.Unlock()
		for k, vs := range u.header {
			w.Header()[k] = vs
		}
		w.WriteHeader(u.status)
		_, _ = w.Write(u.body)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.got...)
}

func (u *upstream) url(t *testing.T) *url.URL {
	p, err := url.Parse(u.srv.URL)
	require.NoError(t, err)
	return p
}

func gzipped(t *testing.T, s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// rawClient does not decompress or follow anything: it sees the answer as sent.
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func serve(t *testing.T, o proxy.Options) string {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := proxy.New(o)
	require.NoError(t, err)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Every kind of request an SDK sends reaches the right PostHog host exactly as sent —
// method, path, query, headers, body — with Host set to PostHog's and the client's
// address appended to X-Forwarded-For; PostHog's answer comes back exactly as PostHog
// sent it: status, headers (a gzip body stays gzip'd), body.
func TestRequestsAndAnswersPassUnchanged(t *testing.T) {
	answer := gzipped(t, `{"flags":{"new-checkout":{"key":"new-checkout","enabled":true,"variant":"test"}}}`)
	answerHeader := http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"},
		"X-Posthog-Request": {"r-1"}, "Set-Cookie": {"a=b; Path=/"}, "Cache-Control": {"no-store"}}
	api := newUpstream(t, http.StatusCreated, answerHeader, answer)
	assets := newUpstream(t, http.StatusOK, http.Header{"Content-Type": {"text/javascript"}}, []byte("/* array.js */"))
	base := serve(t, proxy.Options{API: api.url(t), Assets: assets.url(t)})

	cases := []struct {
		method, target string
		body           []byte
		header         http.Header
		to             *upstream
	}{
		{"POST", "/flags/?v=2&config=true", []byte(`{"token":"phc_k","distinct_id":"u1"}`), http.Header{"Content-Type": {"application/json"}}, api},
		{"POST", "/decide/?v=3", []byte(`{"token":"phc_k","distinct_id":"u1"}`), nil, api},
		{"POST", "/batch/", gzipped(t, `{"api_key":"phc_k","batch":[{"event":"x","distinct_id":"u"}]}`),
			http.Header{"Content-Encoding": {"gzip"}, "Content-Type": {"application/json"}}, api},
		{"POST", "/e/?compression=gzip-js&ip=1&_=1772623805000&ver=1.200.0", gzipped(t, `[{"event":"$pageview"}]`), nil, api},
		{"POST", "/s/?compression=gzip-js", bytes.Repeat([]byte{0, 1, 2, 255}, 10_000), nil, api},
		{"GET", "/api/surveys/?token=phc_k", nil, nil, api},
		{"GET", "/e/?data=eyJldmVudCI6IngifQ%3D%3D&ip=1", nil, nil, api},
		{"GET", "/static/array.js", nil, http.Header{"Accept-Encoding": {"gzip, br"}}, assets},
		{"GET", "/array/phc_k/config", nil, nil, assets},
		{"GET", "/array/phc_k/config.js", nil, nil, assets},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.target, func(t *testing.T) {
			before := len(c.to.requests())
			req, err := http.NewRequest(c.method, base+c.target, bytes.NewReader(c.body))
			require.NoError(t, err)
			if c.body == nil {
				req.Body = nil
			}
			for k, vs := range c.header {
				req.Header[k] = vs
			}
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("User-Agent", "posthog-node/5.70.0")
			res, err := rawClient.Do(req)
			require.NoError(t, err)
			got, err := io.ReadAll(res.Body)
			require.NoError(t, err)
			res.Body.Close()

			reqs := c.to.requests()
			require.Len(t, reqs, before+1, "exactly one request reached the %s host", c.to.srv.URL)
			r := reqs[before]
			want, _ := url.Parse(c.target)
			require.Equal(t, c.method, r.method)
			require.Equal(t, want.Path, r.path)
			require.Equal(t, want.RawQuery, r.rawQuery)
			require.Equal(t, c.to.url(t).Host, r.host, "Host is PostHog's, or PostHog answers 401")
			require.Equal(t, "203.0.113.7, 127.0.0.1", r.header.Get("X-Forwarded-For"))
			require.Equal(t, "posthog-node/5.70.0", r.header.Get("User-Agent"))
			for k := range c.header {
				require.Equal(t, c.header.Values(k), r.header.Values(k), k)
			}
			require.Equal(t, len(c.body), len(r.body))
			require.True(t, bytes.Equal(c.body, r.body), "body forwarded byte for byte")

			require.Equal(t, c.to.status, res.StatusCode)
			require.Equal(t, c.to.body, got, "answer passed byte for byte")
			for k, vs := range c.to.header {
				require.Equal(t, vs, res.Header.Values(k), k)
			}
		})
	}
}

// recordingTap copies every request it is offered and keeps what it saw.
type recordingTap struct {
	mu     sync.Mutex
	copies []*recordingCopy
}

type recordingCopy struct {
	path     string
	mu       sync.Mutex
	body     []byte
	status   int
	complete bool
	done     bool
	stopAt   int // give up once this many bytes are copied (0: never)
}

func (t *recordingTap) Open(r *http.Request) proxy.Copy {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &recordingCopy{path: r.URL.Path}
	if r.URL.Path == "/s/" {
		c.stopAt = 1000
	}
	t.copies = append(t.copies, c)
	return c
}

func (c *recordingCopy) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopAt > 0 && len(c.body) >= c.stopAt {
		return 0, errors.New("enough")
	}
	c.body = append(c.body, p...)
	return len(p), nil
}

func (c *recordingCopy) isDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *recordingCopy) Done(status int, complete bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status, c.complete, c.done = status, complete, true
}

// A tap receives the body as it is forwarded and PostHog's status once the client has
// its answer; a tap that gives up stops receiving, and the request is forwarded whole.
func TestTapSeesTheBodyAndTheAnswer(t *testing.T) {
	api := newUpstream(t, http.StatusOK, nil, []byte(`{"status":1}`))
	tap := &recordingTap{}
	base := serve(t, proxy.Options{API: api.url(t), Tap: tap})

	batch := gzipped(t, `{"api_key":"phc_k","batch":[{"event":"x","distinct_id":"u"}]}`)
	recording := bytes.Repeat([]byte("0123456789"), 100_000)
	for _, r := range []struct {
		path string
		body []byte
	}{{"/batch/", batch}, {"/s/", recording}} {
		res, err := http.Post(base+r.path, "application/json", bytes.NewReader(r.body))
		require.NoError(t, err)
		res.Body.Close()
	}
	require.Len(t, tap.copies, 2)
	for _, c := range tap.copies {
		require.Eventually(t, c.isDone, 5*time.Second, time.Millisecond, c.path)
		require.Equal(t, http.StatusOK, c.status, c.path)
		require.True(t, c.complete, "%s: the whole body was forwarded", c.path)
	}
	byPath := map[string]*recordingCopy{tap.copies[0].path: tap.copies[0], tap.copies[1].path: tap.copies[1]}
	require.Equal(t, batch, byPath["/batch/"].body)
	require.Less(t, len(byPath["/s/"].body), 100_000, "the tap stopped copying")
	require.Len(t, api.requests(), 2)
	require.True(t, bytes.Equal(recording, api.requests()[1].body), "forwarded whole after the tap gave up")
}

// A body over the limit is refused with 413 in PostHog's error shape: at once when its
// Content-Length says so (PostHog never sees it), and when a chunked body passes the
// limit on the way (the tap hears the request was not forwarded whole).
func TestBodiesOverTheLimitAre413(t *testing.T) {
	api := newUpstream(t, http.StatusOK, nil, []byte(`{"status":1}`))
	tap := &recordingTap{}
	reg := prometheus.NewRegistry()
	base := serve(t, proxy.Options{API: api.url(t), MaxBodyBytes: 1000, Tap: tap, Registry: reg})

	res, err := http.Post(base+"/batch/", "application/json", bytes.NewReader(make([]byte, 1001)))
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	require.JSONEq(t, `{"type":"validation_error","code":"payload_too_large","detail":"request body over 1000 bytes"}`, string(b))
	require.Empty(t, api.requests())
	require.Empty(t, tap.copies, "nothing to copy")

	// Chunked: io.MultiReader hides the length from the client.
	res, err = http.Post(base+"/batch/", "application/json", io.MultiReader(bytes.NewReader(make([]byte, 5000))))
	require.NoError(t, err)
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode, string(b))
	require.Len(t, tap.copies, 1)
	// The client can have its answer before the handler returns and tells the tap.
	require.Eventually(t, tap.copies[0].isDone, 5*time.Second, time.Millisecond)
	require.False(t, tap.copies[0].complete)
	require.Equal(t, 2.0, counted(t, reg, "too_large"))
}

// counted is how many requests the proxy counted with status, over both upstreams.
func counted(t *testing.T, reg *prometheus.Registry, status string) float64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "flagwatch_capture_proxy_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == status {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// PostHog unreachable: the client gets 502 in PostHog's error shape (the SDKs retry
// 5xx), the tap hears status 0, and /healthz fails once it has lasted the grace.
func TestUnreachablePostHogIs502AndUnhealthyAfterTheGrace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	require.NoError(t, ln.Close())
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	health := &ops.Health{Now: func() time.Time { return now }}
	tap := &recordingTap{}
	base := serve(t, proxy.Options{API: dead, Tap: tap, Health: health, UnreachableGrace: time.Minute})

	res, err := http.Post(base+"/batch/", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusBadGateway, res.StatusCode)
	require.Contains(t, string(b), `{"type":"server_error","code":"upstream_unreachable","detail":"PostHog at http://`+dead.Host+` did not answer: `)
	require.Eventually(t, tap.copies[0].isDone, 5*time.Second, time.Millisecond)
	require.Equal(t, 0, tap.copies[0].status)
	require.NoError(t, health.Check(), "one failure is within the grace")
	now = now.Add(time.Minute)
	require.ErrorContains(t, health.Check(), "posthog: failing for 1m0s")
}

func TestUpstreamsAndAssetsHost(t *testing.T) {
	for api, assets := range map[string]string{
		"https://us.i.posthog.com":        "https://us-assets.i.posthog.com",
		"https://eu.i.posthog.com":        "https://eu-assets.i.posthog.com",
		"https://eu.i.posthog.com:8443":   "https://eu-assets.i.posthog.com:8443",
		"https://posthog.example.com":     "",
		"https://us-assets.i.posthog.com": "",
	} {
		u, err := url.Parse(api)
		require.NoError(t, err)
		got := proxy.AssetsHost(u)
		if assets == "" {
			require.Nil(t, got, api)
			continue
		}
		require.Equal(t, assets, got.String(), api)
	}
	for _, bad := range []string{"us.i.posthog.com", "ftp://x", "https://user:pw@x", "https://x/?a=1", "https://"} {
		u, err := url.Parse(bad)
		require.NoError(t, err)
		require.Error(t, proxy.CheckUpstream(u), bad)
	}
	require.Equal(t, "assets", proxy.Upstream("/static/array.js"))
	require.Equal(t, "assets", proxy.Upstream("/array/phc/config"))
	require.Equal(t, "api", proxy.Upstream("/flags/"))
	require.Equal(t, "api", proxy.Upstream("/staticx"))
}
