// Package ops is the operational surface every flagwatch service shares: one HTTP server
// with /metrics (a Prometheus Gatherer) and /healthz (a Health), started before the
// service connects to anything, so an operator can see from the first second what a
// service waits for. The decision that shapes it: health is the state of named
// components (clickhouse, kafka, passes, …) that the service's own loops report, each
// with a grace period, rather than a probe that the handler runs — a probe would answer
// "ok" between two failing passes, and a service that retries must not look dead while a
// single retry is under way.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Health is the state of a service's components. The zero value is ready to use and
// healthy; it is safe for concurrent use.
type Health struct {
	// Now is the clock (tests inject one); time.Now when nil.
	Now func() time.Time

	mu    sync.Mutex
	comps map[string]*component
}

type component struct {
	grace     time.Duration
	waiting   string    // non-empty: the component is not ready yet, and this says why
	err       error     // the last failure, nil when the last report was a success
	failingAt time.Time // first failure of the current run of failures
}

func (h *Health) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Health) get(name string) *component {
	if h.comps == nil {
		h.comps = map[string]*component{}
	}
	c := h.comps[name]
	if c == nil {
		c = &component{}
		h.comps[name] = c
	}
	return c
}

// Grace sets how long name may keep failing before the service reports unhealthy (0,
// the default: at once).
func (h *Health) Grace(name string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.get(name).grace = d
}

// Waiting marks name as not ready yet, with what it waits for ("ClickHouse at
// 127.0.0.1:9000: connection refused; next attempt in 2s").
func (h *Health) Waiting(name, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.get(name).waiting = what
}

// Report records the outcome of one attempt of name: nil clears a failure (and a wait).
func (h *Health) Report(name string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.get(name)
	c.waiting = ""
	if err == nil {
		c.err, c.failingAt = nil, time.Time{}
		return
	}
	if c.err == nil {
		c.failingAt = h.now()
	}
	c.err = err
}

// Check returns nil when every component is ready and none has failed for longer than
// its grace; otherwise an error naming each one that is not, in name order.
func (h *Health) Check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	names := make([]string, 0, len(h.comps))
	for n := range h.comps {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		c := h.comps[n]
		switch {
		case c.waiting != "":
			errs = append(errs, fmt.Errorf("%s: waiting: %s", n, c.waiting))
		case c.err != nil && now.Sub(c.failingAt) >= c.grace:
			errs = append(errs, fmt.Errorf("%s: failing for %s: %v", n, now.Sub(c.failingAt).Round(time.Second), c.err))
		}
	}
	return errors.Join(errs...)
}

// Status is one line per component for /healthz: "name: ok", "name: waiting: …",
// "name: failing …" (within its grace: "name: retrying: …").
func (h *Health) Status() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	var lines []string
	for n, c := range h.comps {
		switch {
		case c.waiting != "":
			lines = append(lines, n+": waiting: "+c.waiting)
		case c.err != nil && now.Sub(c.failingAt) >= c.grace:
			lines = append(lines, fmt.Sprintf("%s: failing for %s: %v", n, now.Sub(c.failingAt).Round(time.Second), c.err))
		case c.err != nil:
			lines = append(lines, fmt.Sprintf("%s: retrying (failing for %s, grace %s): %v", n, now.Sub(c.failingAt).Round(time.Second), c.grace, c.err))
		default:
			lines = append(lines, n+": ok")
		}
	}
	sort.Strings(lines)
	return lines
}

// Server serves /metrics and /healthz, and whatever else the service mounts on Mux.
type Server struct {
	Mux  *http.ServeMux
	Addr net.Addr
	srv  *http.Server
}

// Handler returns the /healthz handler: 200 and one line per component when healthy,
// 503 with the same lines when not.
func (h *Health) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		status := "ok"
		code := http.StatusOK
		if h.Check() != nil {
			status, code = "unhealthy", http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		fmt.Fprintln(w, status)
		for _, l := range h.Status() {
			fmt.Fprintln(w, l)
		}
	})
}

// Serve listens on addr and serves /metrics from g and /healthz from h until ctx ends.
// It returns once the listener is bound, so a port conflict is an error at start.
func Serve(ctx context.Context, addr string, g prometheus.Gatherer, h *Health, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", h.Handler())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for /metrics and /healthz on %s: %w", addr, err)
	}
	s := &Server{Mux: mux, Addr: ln.Addr(),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ops server stopped", "addr", addr, "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		_ = s.Close()
	}()
	return s, nil
}

// Close stops the server, giving in-flight requests a moment to finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// URL is http://addr of the server, for logs and tests.
func (s *Server) URL() string {
	a := s.Addr.String()
	if strings.HasPrefix(a, "[::]:") {
		a = "127.0.0.1:" + strings.TrimPrefix(a, "[::]:")
	}
	return "http://" + a
}
