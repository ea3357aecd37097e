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

const healthTimeout = 2 * time.Second

type handler struct {
	p      Producer
	opts   Options
	tokens map[string]bool
	m      *metrics
	log    *slog.Logger
}

// NewHandler serves the capture endpoints, /healthz (Kafka reachable) and /metrics,
// producing through p. It registers its metrics on opts.Registry.
func NewHandler(p Producer, opts Options) http.Handler {
	opts = opts.withDefaults()
	h := &handler{p: p, opts: opts, tokens: map[string]bool{}, m: newMetrics(opts.Registry), log: opts.Logger}
	for _, t := range opts.Tokens {
		h.tokens[t] = true
	}
	mux := http.NewServeMux()
	for _, ep := range Endpoints {
		mux.Handle(ep+"{$}", h.endpoint(ep))
		mux.Handle(strings.TrimSuffix(ep, "/"), h.endpoint(ep))
	}
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	return mux
}

func (h *handler) endpoint(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := h.serve(w, r)
		h.m.requests.WithLabelValues(name, strconv.Itoa(status)).Inc()
		h.m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	})
}

// serve handles one capture request and returns the status it answered.
func (h *handler) serve(w http.ResponseWriter, r *http.Request) int {
	allowCORS(w, r)
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
// acknowledged all of them, or with the *apiError to answer.
func (h *handler) accept(w http.ResponseWriter, r *http.Request) *apiError {
	body, err := readBody(w, r, h.opts.MaxBodyBytes)
	if err != nil {
		return payloadError(err)
	}
	h.m.bytes.WithLabelValues("received").Add(float64(len(body) + len(r.URL.Query().Get("data"))))
	payload, err := unwrapRequest(r, body, h.opts.MaxBodyBytes)
	if err != nil {
		return payloadError(err)
	}
	h.m.bytes.WithLabelValues("decoded").Add(float64(len(payload)))
	b, err := parseBatch(payload)
	if err != nil {
		return invalid(err.Error())
	}
	token, err := requestToken(r, b)
	if err != nil {
		return invalid(err.Error())
	}
	if aerr := h.authorize(token); aerr != nil {
		return aerr
	}
	now := h.opts.Now()
	rc := recordContext{topic: h.opts.Topic, token: token, now: now, sentAt: b.sentAt}
	if rc.sentAt.IsZero() {
		rc.sentAt = querySentAt(r.URL.Query().Get("_"))
	}
	recs, badTimes, err := buildRecords(b, rc)
	if err != nil {
		return invalid(err.Error())
	}
	h.m.invalidTimes.Add(float64(badTimes))
	return h.produce(r.Context(), recs)
}

func (h *handler) authorize(token string) *apiError {
	if len(h.tokens) == 0 || h.tokens[token] {
		return nil
	}
	detail := "API key " + strconv.Quote(token) + " is not a project key of this capture"
	if token == "" {
		detail = "API key missing: send api_key in the body, ?token=, or Authorization: Bearer"
	}
	return &apiError{status: http.StatusUnauthorized, kind: "authentication_error", code: "invalid_api_key", detail: detail}
}

// produce waits for the acks of all recs, at most ProduceTimeout. A client that
// disconnects does not cancel it: once started, the request's records are seen through.
func (h *handler) produce(ctx context.Context, recs []*kgo.Record) *apiError {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.opts.ProduceTimeout)
	defer cancel()
	start := time.Now()
	err := produceAll(ctx, h.p, recs)
	h.m.produceTime.Observe(time.Since(start).Seconds())
	if err == nil {
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
	h.log.Warn("Kafka did not acknowledge events; answering 503", "events", len(recs), "err", err)
	return &apiError{status: http.StatusServiceUnavailable, kind: "server_error", code: "kafka_unavailable",
		detail: "events not stored, retry later: " + err.Error(), retryAfter: h.opts.RetryAfter}
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

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := h.p.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "kafka": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// apiError is an error answer, written as PostHog writes its errors:
// {"type": …, "code": …, "detail": …}.
type apiError struct {
	status     int
	kind       string
	code       string
	detail     string
	retryAfter time.Duration
}

// errorBody is the JSON of an error answer.
type errorBody struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

func invalid(detail string) *apiError {
	return &apiError{status: http.StatusBadRequest, kind: "validation_error", code: "invalid_payload", detail: detail}
}

// payloadError maps a body-reading or decoding error to 413 or 400.
func payloadError(err error) *apiError {
	if errors.Is(err, errTooLarge) {
		return &apiError{status: http.StatusRequestEntityTooLarge, kind: "validation_error", code: "payload_too_large", detail: err.Error()}
	}
	return invalid(err.Error())
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, e *apiError) int {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.retryAfter.Seconds()))))
	}
	if e.status < 500 {
		h.log.Debug("Capture request rejected", "path", r.URL.Path, "status", e.status, "detail", e.detail)
	}
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

// allowCORS lets browsers (posthog-js) post from any origin, as PostHog does.
func allowCORS(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	hd := w.Header()
	hd.Set("Access-Control-Allow-Origin", origin)
	hd.Set("Access-Control-Allow-Credentials", "true")
	hd.Add("Vary", "Origin")
	if r.Method != http.MethodOptions {
		return
	}
	hd.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	allowed := r.Header.Get("Access-Control-Request-Headers")
	if allowed == "" {
		allowed = "Content-Type, Content-Encoding, Authorization"
	}
	hd.Set("Access-Control-Allow-Headers", allowed)
	hd.Set("Access-Control-Max-Age", "86400")
}
