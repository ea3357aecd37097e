package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/capture/proxy"
	"github.com/flagwatch/flagwatch/pipeline/event"
)

// Producer is the part of a Kafka client capture uses; *kgo.Client implements it.
type Producer interface {
	// Produce sends r and calls promise once Kafka acknowledged it or it failed.
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	// Ping checks that a broker answers.
	Ping(ctx context.Context) error
}

// Endpoints are the PostHog capture paths served (each also without the trailing slash).
var Endpoints = []string{"/batch/", "/e/", "/i/v0/e/", "/capture/", "/track/"}

// Handler serves the capture endpoints (or, in proxy mode, forwards everything to
// PostHog and copies the events), the PostHog webhook, /healthz and /metrics.
type Handler struct {
	root    http.Handler
	p       Producer
	opts    Options
	tokens  map[string]bool
	cors    map[string]bool // origins allowed to send credentials
	m       *metrics
	budget  *budget
	kafka   *kafkaState
	webhook *webhookAuth
	tee     *tee // nil outside proxy mode
	log     *slog.Logger
}

// NewHandler serves the capture endpoints, the PostHog webhook, /healthz (opts.Health,
// where Kafka's state is the "kafka" component) and /metrics, producing through p; with
// opts.Upstream it is PostHog's reverse proxy instead of the capture endpoints (see
// Options.Upstream). It registers its metrics on opts.Registry. Kafka's state comes from
// produce outcomes and from WatchKafka, which the caller runs (Run does); in proxy mode
// the caller also calls Close after the HTTP server stopped.
func NewHandler(p Producer, opts Options) (*Handler, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("capture options: %w", err)
	}
	api, assets, _ := opts.upstreams()
	m := newMetrics(opts.Registry)
	// In proxy mode PostHog answers the SDKs: Kafka down only costs flagwatch its copy,
	// which /healthz shows as degraded rather than failing.
	kafkaHealth := opts.Health
	if api != nil {
		kafkaHealth = nil
	}
	h := &Handler{p: p, opts: opts, tokens: map[string]bool{}, cors: map[string]bool{}, m: m,
		budget:  newBudget(opts.MaxInFlightBytes, opts.MaxInFlightRequests, m),
		kafka:   newKafkaState(p, kafkaHealth, opts.Now, opts.Logger),
		webhook: newWebhookAuth(opts.WebhookSecret), log: opts.Logger}
	for _, t := range opts.Tokens {
		h.tokens[t] = true
	}
	for _, o := range opts.CORSCredentialOrigins {
		h.cors[o] = true
	}
	if api != nil {
		h.tee = newTee(h)
	}
	mux := http.NewServeMux()
	mux.Handle(WebhookPath, h.webhookEndpoint())
	mux.Handle("GET /healthz", h.healthz())
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	h.root = mux
	if api == nil {
		for _, ep := range Endpoints {
			mux.Handle(ep+"{$}", h.endpoint(ep))
			mux.Handle(strings.TrimSuffix(ep, "/"), h.endpoint(ep))
		}
		return h, nil
	}
	px, err := proxy.New(proxy.Options{API: api, Assets: assets, MaxBodyBytes: opts.ProxyMaxBodyBytes, Tap: h.tee,
		AdjustResponse: h.proxyCORS, Health: opts.Health, Registry: opts.Registry, Logger: opts.Logger})
	if err != nil {
		_ = h.tee.close(context.Background())
		return nil, fmt.Errorf("capture proxy: %w", err)
	}
	// Everything but flagwatch's own paths goes to PostHog as it came: no ServeMux in
	// front of the proxy, which would clean or redirect paths.
	h.root = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/metrics", WebhookPath:
			mux.ServeHTTP(w, r)
		default:
			px.ServeHTTP(w, r)
		}
	})
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.root.ServeHTTP(w, r) }

// WatchKafka pings the brokers until ctx ends — every KafkaCheckInterval while they
// answer, every second while they do not — and reports the outcome to /healthz and to
// the requests, which fail fast while Kafka is known to be down.
func (h *Handler) WatchKafka(ctx context.Context) {
	h.kafka.watch(ctx, h.opts.KafkaCheckInterval)
}

// Close, in proxy mode, stops taking copies of events and waits until the copies already
// taken are decoded and handed to the producer, or ctx ends (then the rest are dropped
// and counted). Call it once the HTTP server has stopped; flush the producer after it.
func (h *Handler) Close(ctx context.Context) error {
	if h.tee == nil {
		return nil
	}
	return h.tee.close(ctx)
}

// listed reports whether token is a project key flagwatch keeps (all are, when none is
// configured).
func (h *Handler) listed(token string) bool { return len(h.tokens) == 0 || h.tokens[token] }

func (h *Handler) endpoint(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := h.serve(w, r)
		h.m.requests.WithLabelValues(name, strconv.Itoa(status)).Inc()
		h.m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	})
}

// serve handles one capture request and returns the status it answered.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) int {
	h.allowCORS(w, r)
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	case http.MethodGet, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		return h.fail(w, r, &apiError{status: http.StatusMethodNotAllowed, kind: "invalid_request",
			code: "method_not_allowed", detail: "method " + r.Method + " not allowed: use POST (or GET with ?data=)"})
	}
	if err := h.accept(w, r); err != nil {
		return h.fail(w, r, err)
	}
	writeJSON(w, http.StatusOK, map[string]int{"status": 1})
	return http.StatusOK
}

// accept decodes, checks and produces a request's events; it returns only once Kafka has
// acknowledged all of them, or with the *apiError to answer. The cheap refusals come
// before any work: a wrong token outside the body, Kafka known to be down, no room in
// the in-flight budget.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request) *apiError {
	q := r.URL.Query()
	for _, tok := range outsideTokens(q, r.Header) {
		if aerr := h.authorize(tok); aerr != nil {
			return aerr
		}
	}
	recs, aerr := h.readRecords(w, r, false)
	if aerr != nil {
		return aerr
	}
	defer recs.release()
	return h.produce(r.Context(), recs.recs)
}

// records are a request's records, holding their share of the in-flight budget until
// released.
type records struct {
	recs []*kgo.Record
	res  *reservation
}

func (rs records) release() { rs.res.release() }

// readRecords reads, decodes and checks a request's events into records, whole or not
// at all, once Kafka is not known to be down and the request fits in the budget. A
// capture request's project key must be one of Tokens; a webhook's events may come in
// the destination's default body, and carry no key (the secret authenticated them).
func (h *Handler) readRecords(w http.ResponseWriter, r *http.Request, webhook bool) (records, *apiError) {
	if down := h.kafka.down(); down != nil {
		h.m.produceFails.WithLabelValues("known_down").Inc()
		return records{}, kafkaUnavailable(down, h.opts.RetryAfter)
	}
	res, err := h.budget.admit()
	if err != nil {
		return records{}, h.overload(err)
	}
	payload, received, err := readPayload(w, r, h.opts.MaxBodyBytes, res)
	h.m.bytes.WithLabelValues("received").Add(float64(received))
	if err != nil {
		res.release()
		return records{}, h.payloadError(err)
	}
	h.m.bytes.WithLabelValues("decoded").Add(float64(len(payload)))
	b, aerr := h.decodeBatch(payload, res)
	if aerr == nil && webhook {
		b.unwrapDestinationEvents()
	}
	if aerr == nil {
		aerr = b.parseEvents()
	}
	var token string
	if aerr == nil && !webhook {
		token, aerr = h.requestToken(r, b)
	}
	if aerr != nil {
		res.release()
		return records{}, aerr
	}
	rc := recordContext{topic: h.opts.Topic, token: token, now: h.opts.Now(), sentAt: b.sentAt}
	if rc.sentAt == nil {
		rc.sentAt = querySentAt(r.URL.Query().Get("_"))
	}
	recs, err := buildRecords(b, rc)
	if err != nil {
		res.release()
		var ee *eventError
		if errors.As(err, &ee) {
			if ee.err.Reason == event.ReasonBadTimestamp {
				h.m.invalidTimes.Inc()
			}
			return records{}, invalid(err.Error(), ee.err.Reason)
		}
		return records{}, invalid(err.Error(), "invalid_payload")
	}
	return records{recs: recs, res: res}, nil
}

// decodeBatch splits a payload into its events' raw bytes, within the budget. The token
// may be inside the body: until it is known, the work is bounded by the size limits and
// the budget, and the recursive parser is only reached by a payload of bounded depth.
func (h *Handler) decodeBatch(payload []byte, res *reservation) (*batch, *apiError) {
	if err := event.CheckDepth(payload); err != nil {
		return nil, invalid(err.Error(), event.ReasonTooDeep)
	}
	if err := res.growForParse(len(payload), 0); err != nil {
		return nil, h.overload(err)
	}
	b, err := parseBatch(payload, func(events int) error { return res.grow(eventCost * int64(events)) })
	if errors.Is(err, errBusy) || errors.Is(err, errOverBudget) {
		return nil, h.overload(err)
	}
	if err != nil {
		return nil, invalid(err.Error(), "invalid_payload")
	}
	return b, nil
}

// parseCost is what parsing a payload of n bytes holds beyond the payload itself: the
// records built from it (the events' bytes again) and the copy of each event's
// properties that the ingest decoder's check makes; the parse itself does not copy
// (zero-copy raw messages). Once the events are counted, each reserves eventCost more
// for what every event costs whatever its size (its decoded fields, record, uuid,
// envelope fields). TestParseCostCoversAllocations keeps both honest.
func parseCost(n int) int64 { return 2*int64(n) + int64(n)/16 + 4<<10 }

const eventCost = 3072

// requestToken is the request's project key, which must be one of Tokens.
func (h *Handler) requestToken(r *http.Request, b *batch) (string, *apiError) {
	token, err := requestToken(r.URL.Query(), r.Header, b)
	if err != nil {
		return "", invalid(err.Error(), "invalid_payload")
	}
	return token, h.authorize(token)
}

func (h *Handler) authorize(token string) *apiError {
	if len(h.tokens) == 0 || h.tokens[token] {
		return nil
	}
	detail := "API key " + strconv.Quote(token) + " is not a project key of this capture"
	if token == "" {
		detail = "API key missing: send api_key in the body, ?token=, or Authorization: Bearer"
	}
	return &apiError{status: http.StatusUnauthorized, kind: "authentication_error", code: "invalid_api_key", detail: detail}
}

// overload answers a refusal by the in-flight budget: 503 with Retry-After while other
// requests hold it, 413 when this request alone would not fit.
func (h *Handler) overload(err error) *apiError {
	if errors.Is(err, errOverBudget) {
		return &apiError{status: http.StatusRequestEntityTooLarge, kind: "validation_error", code: "payload_too_large",
			detail: err.Error()}
	}
	return &apiError{status: http.StatusServiceUnavailable, kind: "server_error", code: "over_capacity",
		detail: "events not stored, retry later: " + err.Error(), retryAfter: h.opts.RetryAfter}
}

// produce waits for the acks of all recs, at most ProduceTimeout. A client that
// disconnects does not cancel it: once started, the request's records are seen through.
func (h *Handler) produce(ctx context.Context, recs []*kgo.Record) *apiError {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.opts.ProduceTimeout)
	defer cancel()
	start := time.Now()
	h.m.awaitingAcks.Inc()
	err := produceAll(ctx, h.p, recs)
	h.m.awaitingAcks.Dec()
	h.m.produceTime.Observe(time.Since(start).Seconds())
	if err == nil {
		h.kafka.ok()
		h.m.events.Add(float64(len(recs)))
		h.m.batchSize.Observe(float64(len(recs)))
		return nil
	}
	if errors.Is(err, kerr.MessageTooLarge) {
		h.m.produceFails.WithLabelValues("too_large").Inc()
		return &apiError{status: http.StatusRequestEntityTooLarge, kind: "validation_error", code: "event_too_large",
			detail: "an event is larger than Kafka accepts: " + err.Error()}
	}
	h.m.produceFails.WithLabelValues("unavailable").Inc()
	h.kafka.failed(err)
	h.log.Warn("Kafka did not acknowledge events; answering 503 until a broker answers again", "events", len(recs), "err", err)
	return kafkaUnavailable(err, h.opts.RetryAfter)
}

func kafkaUnavailable(err error, retryAfter time.Duration) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, kind: "server_error", code: "kafka_unavailable",
		detail: "events not stored, retry later: " + err.Error(), retryAfter: retryAfter}
}

// produceAll produces recs and waits for every ack or for ctx to end. It does not rely
// on the client to give up: an idempotent producer that lost its connection mid-request
// cannot know whether the broker stored the batch and keeps it until the broker is back,
// so the wait is bounded here. Records still pending then may yet be stored; the
// client's retry after the 503 carries the same uuids.
func produceAll(ctx context.Context, p Producer, recs []*kgo.Record) error {
	acks := make(chan error, len(recs)) // buffered: promises must never block
	for _, r := range recs {
		p.Produce(ctx, r, func(_ *kgo.Record, err error) { acks <- err })
	}
	var first error
	for range recs {
		select {
		case err := <-acks:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			return fmt.Errorf("kafka did not acknowledge all events in time: %w", context.Cause(ctx))
		}
	}
	return first
}

// apiError is an error answer, written as PostHog writes its errors:
// {"type": …, "code": …, "detail": …}.
type apiError struct {
	status     int
	kind       string
	code       string
	reason     string // metrics label; code when empty
	detail     string
	retryAfter time.Duration
}

// errorBody is the JSON of an error answer.
type errorBody struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// invalid is a 400 for a payload that can never be accepted; reason labels the metric.
func invalid(detail, reason string) *apiError {
	return &apiError{status: http.StatusBadRequest, kind: "validation_error", code: "invalid_payload", reason: reason, detail: detail}
}

// payloadError maps a body-reading or decoding error to 413, 503 (budget) or 400.
func (h *Handler) payloadError(err error) *apiError {
	switch {
	case errors.Is(err, errBusy), errors.Is(err, errOverBudget):
		return h.overload(err)
	case errors.Is(err, errTooLarge):
		return &apiError{status: http.StatusRequestEntityTooLarge, kind: "validation_error", code: "payload_too_large", detail: err.Error()}
	}
	return invalid(err.Error(), "invalid_payload")
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, e *apiError) int {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.retryAfter.Seconds()))))
	}
	if e.status < 500 {
		h.log.Debug("Capture request rejected", "path", r.URL.Path, "status", e.status, "detail", e.detail)
	}
	reason := e.reason
	if reason == "" {
		reason = e.code
	}
	h.m.rejected.WithLabelValues(reason).Inc()
	writeJSON(w, e.status, errorBody{Type: e.kind, Code: e.code, Detail: e.detail})
	return e.status
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
