// Package proxy forwards HTTP requests to PostHog unchanged: it is the reverse proxy
// PostHog recommends running on one's own domain, so that ad blockers do not drop the
// SDKs' requests, and the place where flagwatch's capture looks at the events on their
// way (a Tap).
//
// The decision that shapes it: PostHog answers, flagwatch only watches. Every request —
// capture endpoints, /flags, /decide, recordings, surveys, remote config, static assets —
// goes to PostHog with its method, path, query, headers and body as the client sent
// them (Host set to PostHog's, X-Forwarded-For extended with the client's address), and
// PostHog's status, headers and body go back as PostHog sent them, both streamed through
// net/http/httputil.ReverseProxy, so a 64 MB recording costs a 32 KiB buffer, not 64 MB.
// A Tap sees a request's body bytes as they are forwarded and is told how PostHog
// answered; nothing it does can delay or fail the forwarded request. The one change to
// PostHog's answers is the CORS headers, which the owner (capture) may set by its own
// policy (Options.AdjustResponse).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// DefaultMaxBodyBytes is PostHog's own limit on a request body (session recordings can
// be large).
const DefaultMaxBodyBytes = 64 << 20

// HealthComponent names PostHog in /healthz.
const HealthComponent = "posthog"

// DefaultUnreachableGrace is how long PostHog may be unreachable before /healthz says so:
// one failed connection is not an outage.
const DefaultUnreachableGrace = 30 * time.Second

// A Tap sees the requests the proxy forwards. Open is called before a request is
// forwarded, in the request's goroutine; a nil Copy means the request is not copied.
type Tap interface {
	Open(r *http.Request) Copy
}

// A Copy receives one request's body as it is forwarded. Write is called with each
// chunk the upstream reads, possibly from another goroutine and possibly after Done (the
// transport may still be writing when PostHog has answered); an error from Write stops
// the copying, not the forwarding. Done is called once, after PostHog's answer went back
// to the client (or the forwarding failed): status is PostHog's status code (0 when
// PostHog was not reached) and complete whether the whole body was forwarded.
type Copy interface {
	Write(p []byte) (int, error)
	Done(status int, complete bool)
}

// Options configure a Proxy.
type Options struct {
	// API is PostHog's API host (https://us.i.posthog.com): capture endpoints, /flags,
	// /decide, recordings, surveys, everything but assets.
	API *url.URL
	// Assets is PostHog's assets host (https://us-assets.i.posthog.com) for /static/*
	// and /array/*; nil: API.
	Assets *url.URL
	// MaxBodyBytes bounds a request body (default 64 MiB); larger ones get 413.
	MaxBodyBytes int64
	// Tap, when set, sees every request.
	Tap Tap
	// AdjustResponse, when set, may change the headers of an answer before they are
	// written (capture applies its CORS policy); r is the client's request.
	AdjustResponse func(h http.Header, r *http.Request)
	// Health receives PostHog's reachability as the component "posthog", failing
	// after UnreachableGrace (default DefaultUnreachableGrace); nil: not reported.
	Health           *ops.Health
	UnreachableGrace time.Duration
	// Registry receives the metrics (nil: not registered).
	Registry prometheus.Registerer
	// Transport forwards the requests (default: a clone of http.DefaultTransport that
	// does not decompress responses).
	Transport http.RoundTripper
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
}

// Proxy is an http.Handler that forwards every request to PostHog.
type Proxy struct {
	opts Options
	rp   *httputil.ReverseProxy
	m    *metrics
	log  *slog.Logger
}

// New returns a Proxy, or an error naming a bad upstream.
func New(o Options) (*Proxy, error) {
	if err := CheckUpstream(o.API); err != nil {
		return nil, fmt.Errorf("posthog api host: %w", err)
	}
	if o.Assets == nil {
		o.Assets = o.API
	} else if err := CheckUpstream(o.Assets); err != nil {
		return nil, fmt.Errorf("posthog assets host: %w", err)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.UnreachableGrace <= 0 {
		o.UnreachableGrace = DefaultUnreachableGrace
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The client's Accept-Encoding goes to PostHog as sent; without this the
		// transport would ask for gzip itself and hand the client a decompressed body.
		t.DisableCompression = true
		t.MaxIdleConnsPerHost = 64
		t.ResponseHeaderTimeout = time.Minute
		o.Transport = t
	}
	if o.Health != nil {
		o.Health.Grace(HealthComponent, o.UnreachableGrace)
	}
	p := &Proxy{opts: o, m: newMetrics(o.Registry), log: o.Logger}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      o.Transport,
		BufferPool:     bufferPool{},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// CheckUpstream accepts http(s)://host[:port][/path] without query or user info.
func CheckUpstream(u *url.URL) error {
	switch {
	case u == nil:
		return errors.New("missing")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: must start with https:// or http://", u.Redacted())
	case u.Host == "":
		return fmt.Errorf("%q: must name a host", u.Redacted())
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: must be scheme://host[:port][/path] only", u.Redacted())
	}
	return nil
}

// AssetsHost is the assets host PostHog Cloud pairs with api (us.i.posthog.com →
// us-assets.i.posthog.com), or nil when api is not PostHog Cloud's: a self-hosted
// PostHog serves its assets itself.
func AssetsHost(api *url.URL) *url.URL {
	region, ok := strings.CutSuffix(api.Hostname(), ".i.posthog.com")
	if !ok || region == "" || strings.Contains(region, ".") || strings.HasSuffix(region, "-assets") {
		return nil
	}
	u := *api
	u.Host = region + "-assets.i.posthog.com"
	if port := api.Port(); port != "" {
		u.Host = net.JoinHostPort(u.Host, port)
	}
	return &u
}

// Upstream names the host a request goes to: "assets" for /static/* and /array/*, else
// "api".
func Upstream(path string) string {
	if strings.HasPrefix(path, "/static/") || strings.HasPrefix(path, "/array/") {
		return "assets"
	}
	return "api"
}

// forward is what the proxy knows about one request while it is forwarded.
type forward struct {
	upstream string
	target   *url.URL
	body     *body // nil without a body
	status   int   // PostHog's status, 0 until it answers
	err      error // why PostHog was not reached
}

type forwardKey struct{}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	f := &forward{upstream: Upstream(r.URL.Path), target: p.opts.API}
	if f.upstream == "assets" {
		f.target = p.opts.Assets
	}
	if r.ContentLength > p.opts.MaxBodyBytes {
		p.tooLarge(w, r, f)
		p.observe(r, f, start)
		return
	}
	var cp Copy
	if p.opts.Tap != nil {
		cp = p.opts.Tap.Open(r)
	}
	if r.Body != nil && r.Body != http.NoBody {
		f.body = &body{r: r.Body, limit: p.opts.MaxBodyBytes}
		if cp != nil {
			f.body.copy = cp
		}
		r.Body = f.body
	}
	defer func() {
		// Deferred: the reverse proxy panics with http.ErrAbortHandler when the client
		// goes away while the answer is streamed back.
		p.observe(r, f, start)
		if cp != nil {
			cp.Done(f.status, f.body == nil || f.body.eof.Load())
		}
	}()
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, f)))
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	f := pr.In.Context().Value(forwardKey{}).(*forward)
	pr.SetURL(f.target) // also sets Host to PostHog's: PostHog answers 401 to any other
	// Append the client's address to the chain it came with, as PostHog's own proxy
	// guides do (nginx's $proxy_add_x_forwarded_for): PostHog locates the user by it.
	pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	pr.SetXForwarded()
}

func (p *Proxy) modifyResponse(res *http.Response) error {
	f := res.Request.Context().Value(forwardKey{}).(*forward)
	f.status = res.StatusCode
	if p.opts.AdjustResponse != nil {
		p.opts.AdjustResponse(res.Header, res.Request)
	}
	return nil
}

// errorHandler answers a request PostHog did not answer: 413 when the body was over the
// limit, else 502 — in PostHog's error shape, so SDKs read it as they read PostHog's.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	f := r.Context().Value(forwardKey{}).(*forward)
	f.err = err
	if f.body != nil && f.body.over.Load() {
		p.tooLarge(w, r, f)
		return
	}
	if r.Context().Err() != nil {
		// The client went away: nobody is listening, and PostHog is not at fault.
		w.WriteHeader(499)
		return
	}
	p.log.Warn("PostHog did not answer; answering 502", "upstream", f.target.Redacted(), "path", r.URL.Path, "err", err)
	p.writeError(w, r, http.StatusBadGateway, "server_error", "upstream_unreachable",
		"PostHog at "+f.target.Redacted()+" did not answer: "+err.Error())
}

func (p *Proxy) tooLarge(w http.ResponseWriter, r *http.Request, f *forward) {
	f.err = errTooLarge
	p.writeError(w, r, http.StatusRequestEntityTooLarge, "validation_error", "payload_too_large",
		"request body over "+strconv.FormatInt(p.opts.MaxBodyBytes, 10)+" bytes")
}

func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, status int, kind, code, detail string) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	if p.opts.AdjustResponse != nil {
		p.opts.AdjustResponse(hd, r)
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":%q,"code":%q,"detail":%q}`, kind, code, detail)
}

// observe counts a forwarded request and reports PostHog's reachability.
func (p *Proxy) observe(r *http.Request, f *forward, start time.Time) {
	status := strconv.Itoa(f.status)
	switch {
	case errors.Is(f.err, errTooLarge):
		status = "too_large"
	case f.status == 0 && r.Context().Err() != nil:
		status = "client_gone"
	case f.status == 0:
		status = "unreachable"
	}
	p.m.requests.WithLabelValues(f.upstream, status).Inc()
	p.m.duration.WithLabelValues(f.upstream).Observe(time.Since(start).Seconds())
	if f.body != nil {
		p.m.bytes.WithLabelValues(f.upstream).Add(float64(f.body.n.Load()))
	}
	if p.opts.Health == nil {
		return
	}
	switch status {
	case "unreachable":
		p.opts.Health.Report(HealthComponent, fmt.Errorf("%s: %w", f.target.Redacted(), f.err))
	case "too_large", "client_gone":
	default:
		p.opts.Health.Report(HealthComponent, nil)
	}
}

var errTooLarge = errors.New("request body too large")

// body is a request body on its way to PostHog: bounded, counted, and copied to the
// tap while the tap takes it.
type body struct {
	r     io.Reader
	limit int64
	copy  Copy // nil once the tap gave up; only Read touches it

	// Read runs in the transport's goroutine, which can outlive the handler.
	n    atomic.Int64
	eof  atomic.Bool
	over atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if total := b.n.Add(int64(n)); total > b.limit {
		b.over.Store(true)
		return 0, fmt.Errorf("%w: over %d bytes", errTooLarge, b.limit)
	}
	if n > 0 && b.copy != nil {
		if _, werr := b.copy.Write(p[:n]); werr != nil {
			b.copy = nil // the tap gave up on this request; forwarding goes on
		}
	}
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

func (b *body) Close() error { return nil }

// bufferPool lends the 32 KiB buffers the reverse proxy copies answers with.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
