package capture

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// WebhookPath receives PostHog's "HTTP Webhook" destination: PostHog Cloud posts every
// event (or those its filters keep) here, one event per request, with a JSON body
// templated from the event (docs/posthog.md has the template). Accepted bodies: the
// documented template ({uuid, event, distinct_id, timestamp, properties}), the
// destination's default ({"event": {…}, "person": {…}}, of which the event is kept and
// the person ignored), and for backfills a JSON array of either or {"batch": […]}.
//
// The rules are capture's: a 2xx means every event is in Kafka, a request is accepted or
// refused whole, 503 with Retry-After while Kafka is down or the in-flight budget is
// held (PostHog retries 408, 429 and 5xx with backoff, honouring Retry-After up to five
// minutes), 400 naming the event and the reason for an event ingest would dead-letter
// (PostHog does not retry a 4xx). PostHog's uuid is kept, so its retries — and the
// same event delivered again — are stored once. Times: PostHog's timestamp is already
// the event's placed time, and is forwarded as the timestamp with capture's receive time
// as now (no sent_at, no offset); the decoder keeps it unless it is in the future.
const WebhookPath = "/webhook/posthog"

// webhookAuth checks the secret a webhook request carries as Authorization: Bearer
// <secret>. The secrets are held as SHA-256 digests and compared in constant time, all
// of them every time, so neither the secret's length nor which one matched shows in the
// timing.
type webhookAuth struct {
	digests [][sha256.Size]byte
}

func newWebhookAuth(secret config.Secret) *webhookAuth {
	a := &webhookAuth{}
	for s := range strings.SplitSeq(secret.Reveal(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			a.digests = append(a.digests, sha256.Sum256([]byte(s)))
		}
	}
	return a
}

func (a *webhookAuth) enabled() bool { return len(a.digests) > 0 }

func (a *webhookAuth) allows(r *http.Request) bool {
	scheme, given, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(given)))
	match := 0
	for i := range a.digests {
		match |= subtle.ConstantTimeCompare(d[:], a.digests[i][:])
	}
	return match == 1
}

func (h *Handler) webhookEndpoint() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := h.serveWebhook(w, r)
		h.m.requests.WithLabelValues(WebhookPath, strconv.Itoa(status)).Inc()
		h.m.latency.WithLabelValues(WebhookPath).Observe(time.Since(start).Seconds())
	})
}

// serveWebhook handles one delivery and returns the status it answered.
func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request) int {
	switch {
	case !h.webhook.enabled():
		return h.fail(w, r, &apiError{status: http.StatusNotFound, kind: "invalid_request", code: "webhook_disabled",
			detail: "the PostHog webhook is off: set FLAGWATCH_CAPTURE_WEBHOOK_SECRET (see docs/posthog.md)"})
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", "POST")
		return h.fail(w, r, &apiError{status: http.StatusMethodNotAllowed, kind: "invalid_request",
			code: "method_not_allowed", detail: "method " + r.Method + " not allowed: the webhook takes POST"})
	case !h.webhook.allows(r):
		// Nothing of the request is logged: a wrong secret may be a right one mistyped.
		return h.fail(w, r, &apiError{status: http.StatusUnauthorized, kind: "authentication_error", code: "invalid_secret",
			detail: "missing or wrong webhook secret: send Authorization: Bearer <FLAGWATCH_CAPTURE_WEBHOOK_SECRET>"})
	}
	recs, aerr := h.readRecords(w, r, true)
	if aerr != nil {
		return h.fail(w, r, aerr)
	}
	defer recs.release()
	if aerr := h.produce(r.Context(), recs.recs); aerr != nil {
		return h.fail(w, r, aerr)
	}
	writeJSON(w, http.StatusOK, map[string]int{"status": 1})
	return http.StatusOK
}

// destinationBody is the HTTP Webhook destination's default body, {"event": "{event}",
// "person": "{person}"}, rendered: the event is an object.
type destinationBody struct {
	Event json.RawMessage `json:"event"`
}

// unwrapDestinationEvents replaces each raw event that is the destination's default body
// by the event inside it; the raw bytes are shared, nothing is copied.
func (b *batch) unwrapDestinationEvents() {
	for i, raw := range b.raws {
		if len(raw) == 0 || raw[0] != '{' {
			continue
		}
		var d destinationBody
		if parse(raw, &d) == nil && len(d.Event) > 0 && d.Event[0] == '{' {
			b.raws[i] = bytes.TrimSpace(d.Event)
		}
	}
}
