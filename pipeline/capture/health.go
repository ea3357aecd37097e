package capture

import (
	"fmt"
	"net/http"
	"sort"
)

// healthz serves /healthz: opts.Health's components, and in proxy mode also what the tee
// is losing. Proxy mode has three states: "ok"; "degraded" (200: PostHog answers the
// SDKs, but copies of events are being dropped — Kafka down, or no room); "unhealthy"
// (503: a component failing past its grace, such as PostHog unreachable).
func (h *Handler) healthz() http.Handler {
	if h.tee == nil {
		return h.opts.Health.Handler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		lines := h.opts.Health.Status()
		degraded := h.tee.degraded()
		status, code := "ok", http.StatusOK
		switch {
		case h.opts.Health.Check() != nil:
			status, code = "unhealthy", http.StatusServiceUnavailable
		case len(degraded) > 0:
			status = "degraded"
		}
		lines = append(lines, degraded...)
		sort.Strings(lines)
		w.WriteHeader(code)
		fmt.Fprintln(w, status)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	})
}
