package capture

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/capture/proxy"
	"github.com/flagwatch/flagwatch/pipeline/event"
)

// tee keeps a copy of the event requests the proxy forwards to PostHog and produces
// their events to Kafka in the background.
//
// The copy never costs the forwarded request anything it would notice: the body is
// copied as the proxy streams it to PostHog (into a buffer reserved from the in-flight
// budget, up to MaxBodyBytes), decoded after PostHog answered by a few workers fed
// through a bounded queue, and produced without waiting for acks. Whatever cannot be
// kept that way is dropped and counted by reason, never waited for: Kafka known to be
// down, no room in the budget or the queue, a body over the limit. A copy is kept only
// when PostHog accepted the request (2xx): what PostHog refused the SDK will send again
// or never, and a copy of a refused request would count events PostHog does not have.
// Events are decoded by the same code as capture's own requests (and event.AppendDecode,
// as ingest will), with one difference: PostHog took the request, so an event flagwatch
// cannot store is dropped alone and counted rather than failing its request.
type tee struct {
	h *Handler
	m *teeMetrics

	queue  chan *teeCopy
	mu     sync.RWMutex // closed, against sends on a closed queue
	closed bool
	ctx    context.Context // ends when Close gives up: produces in progress fail
	cancel context.CancelFunc
	done   sync.WaitGroup

	lossMu sync.Mutex
	losses map[string]loss // by reason, the drops that mean flagwatch is short of something
}

// loss is when copies were last dropped for one reason, and how many so far.
type loss struct {
	last  time.Time
	count int
}

// lossWindow is how long a dropped copy keeps /healthz degraded.
const lossWindow = time.Minute

// Reasons a copy, or an event of it, is dropped.
const (
	dropKafkaDown    = "kafka_down"       // Kafka known to be down when the request came
	dropKafkaError   = "kafka_error"      // Kafka did not acknowledge the event
	dropBudget       = "budget"           // the in-flight budget was held by other requests
	dropQueueFull    = "queue_full"       // TeeQueue copies were waiting already
	dropTooLarge     = "too_large"        // over MaxBodyBytes, or over the whole budget
	dropUpstream     = "upstream_status"  // PostHog did not answer 2xx
	dropIncomplete   = "incomplete"       // the body did not reach PostHog whole
	dropInvalid      = "invalid"          // capture cannot decode the payload
	dropTokenSkipped = "token_not_listed" // another project's key (FLAGWATCH_CAPTURE_TOKENS)
	dropShutdown     = "shutdown"         // still queued when Close gave up
)

// lossReasons are the drops that mean flagwatch lacks capacity or Kafka, and so degrade
// /healthz; the others are about the requests themselves.
var lossReasons = []string{dropKafkaDown, dropKafkaError, dropBudget, dropQueueFull, dropShutdown}

type teeMetrics struct {
	dropped       *prometheus.CounterVec // reason
	eventsDropped *prometheus.CounterVec // reason
	events        prometheus.Counter
	queued        prometheus.Gauge
}

func newTeeMetrics(reg prometheus.Registerer) *teeMetrics {
	m := &teeMetrics{
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_tee_dropped_total",
			Help: "Proxied event requests whose copy was not produced to Kafka, by reason (kafka_down, budget, queue_full, too_large, upstream_status, incomplete, invalid, token_not_listed, shutdown); PostHog answered them all.",
		}, []string{"reason"}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_tee_events_dropped_total",
			Help: "Events of copied requests not produced, by reason: kafka_error, event_too_large, or the decoder's reason for an event ingest would dead-letter.",
		}, []string{"reason"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_capture_tee_events_produced_total",
			Help: "Events of proxied requests produced to Kafka and acknowledged.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagwatch_capture_tee_queued",
			Help: "Copies of proxied requests waiting to be decoded.",
		}),
	}
	for _, r := range []string{dropKafkaDown, dropBudget, dropQueueFull, dropTooLarge, dropUpstream, dropIncomplete, dropInvalid, dropTokenSkipped} {
		m.dropped.WithLabelValues(r)
	}
	m.eventsDropped.WithLabelValues(dropKafkaError)
	reg.MustRegister(m.dropped, m.eventsDropped, m.events, m.queued)
	return m
}

func newTee(h *Handler) *tee {
	t := &tee{h: h, m: newTeeMetrics(h.opts.Registry), queue: make(chan *teeCopy, h.opts.TeeQueue),
		losses: map[string]loss{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for range h.opts.TeeWorkers {
		t.done.Add(1)
		go func() {
			defer t.done.Done()
			for c := range t.queue {
				t.m.queued.Dec()
				t.process(c)
			}
		}()
	}
	return t
}

// isEndpoint reports whether path is one of PostHog's capture endpoints.
func isEndpoint(path string) bool {
	if !strings.HasSuffix(path, "/") {
		path += "/"
	}
	return slices.Contains(Endpoints, path)
}

// Open starts a copy of an event request, or returns nil (and counts why) when there
// will be none. It runs before the request is forwarded, so it only looks at what is
// known without reading the body: the key outside it, Kafka, the size, the budget.
func (t *tee) Open(r *http.Request) proxy.Copy {
	if !isEndpoint(r.URL.Path) || (r.Method != http.MethodPost && r.Method != http.MethodGet) {
		return nil
	}
	h := t.h
	q := r.URL.Query()
	for _, tok := range outsideTokens(q, r.Header) {
		if !h.listed(tok) {
			t.drop(dropTokenSkipped, nil)
			return nil
		}
	}
	if down := h.kafka.down(); down != nil {
		t.drop(dropKafkaDown, nil)
		return nil
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		t.drop(dropTooLarge, nil)
		return nil
	}
	if err := checkRequest(q, r.Header); err != nil {
		t.drop(dropInvalid, err)
		return nil
	}
	res, err := h.budget.admit()
	if err != nil {
		t.drop(budgetReason(err), nil)
		return nil
	}
	c := &teeCopy{t: t, q: q, res: res, limit: h.opts.MaxBodyBytes, now: h.opts.Now(), hdr: http.Header{}}
	for _, k := range []string{"Content-Type", "Content-Encoding", "Authorization"} {
		if v := r.Header.Values(k); len(v) > 0 {
			c.hdr[k] = v
		}
	}
	if r.ContentLength > 0 {
		// The whole body and what parsing it will take, in one step, as capture's own
		// requests reserve it.
		size := min(r.ContentLength+1, h.opts.MaxBodyBytes+1)
		if err := res.growForParse(int(r.ContentLength), size); err != nil {
			res.release()
			t.drop(budgetReason(err), nil)
			return nil
		}
		c.buf = make([]byte, 0, size)
	}
	return c
}

func budgetReason(err error) string {
	if errors.Is(err, errOverBudget) {
		return dropTooLarge
	}
	return dropBudget
}

// teeCopy is one request's copy: its query, the headers that say how to decode it, and
// its body as it was forwarded.
type teeCopy struct {
	t     *tee
	q     url.Values
	hdr   http.Header
	limit int64
	now   time.Time // when the request came: the events' "now"

	mu      sync.Mutex
	buf     []byte
	res     *reservation // nil once released
	dropped bool
	done    bool
}

var errCopyDropped = errors.New("copy dropped")

// Write appends forwarded body bytes, growing the buffer within the reservation; it runs
// in the transport's goroutine while the proxy streams the body to PostHog.
func (c *teeCopy) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped || c.done {
		return 0, errCopyDropped
	}
	need := len(c.buf) + len(p)
	if int64(need) > c.limit {
		c.dropLocked(dropTooLarge)
		return 0, errCopyDropped
	}
	if need > cap(c.buf) {
		grown := min(max(2*cap(c.buf), need, 512), int(c.limit))
		if err := c.res.grow(int64(grown - cap(c.buf))); err != nil {
			c.dropLocked(budgetReason(err))
			return 0, errCopyDropped
		}
		c.buf = append(make([]byte, 0, grown), c.buf...)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// dropLocked gives the copy up: its memory goes back to the budget at once, so a large
// body that will not be kept does not hold it while it streams on to PostHog.
func (c *teeCopy) dropLocked(reason string) {
	c.dropped = true
	c.buf = nil
	c.res.release()
	c.res = nil
	c.t.drop(reason, nil)
}

// Done queues the copy for decoding if PostHog accepted the whole request; the queue
// never blocks the request.
func (c *teeCopy) Done(status int, complete bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	switch {
	case c.dropped:
		return
	case status < 200 || status > 299:
		c.dropLocked(dropUpstream)
		return
	case !complete:
		c.dropLocked(dropIncomplete)
		return
	}
	if !c.t.enqueue(c) {
		c.dropLocked(dropQueueFull)
	}
}

func (t *tee) enqueue(c *teeCopy) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	select {
	case t.queue <- c:
		t.m.queued.Inc()
		return true
	default:
		return false
	}
}

// process decodes a queued copy and produces its events; the reservation is released
// when Kafka has answered for the last of them.
func (t *tee) process(c *teeCopy) {
	h := t.h
	c.mu.Lock() // the transport is done with the body: Done ran after it
	body, res := c.buf, c.res
	c.buf, c.res = nil, nil
	c.mu.Unlock()
	if t.ctx.Err() != nil {
		res.release()
		t.drop(dropShutdown, nil)
		return
	}
	recs, reason, err := t.decode(c, body, res)
	if reason != "" {
		res.release()
		t.drop(reason, err)
		return
	}
	if len(recs) == 0 {
		res.release()
		return
	}
	var pending atomic.Int64
	pending.Store(int64(len(recs)))
	for _, r := range recs {
		// Produce blocks only when the producer's own buffer is full: then this worker
		// waits, the queue fills, and further copies are dropped as queue_full.
		h.p.Produce(t.ctx, r, func(_ *kgo.Record, err error) {
			switch {
			case err == nil:
				t.m.events.Inc()
				h.kafka.ok()
			case errors.Is(err, kerr.MessageTooLarge):
				t.m.eventsDropped.WithLabelValues("event_too_large").Inc()
			default:
				t.m.eventsDropped.WithLabelValues(dropKafkaError).Inc()
				t.noteLoss(dropKafkaError)
				if t.ctx.Err() == nil {
					h.kafka.failed(err)
				}
			}
			if pending.Add(-1) == 0 {
				res.release()
			}
		})
	}
}

// decode turns a copy into records, or says why the whole copy is dropped. Events that
// cannot be stored are dropped one by one and counted.
func (t *tee) decode(c *teeCopy, body []byte, res *reservation) ([]*kgo.Record, string, error) {
	h := t.h
	payload, _, err := requestPayload(c.q, c.hdr, body, c.limit, res)
	if err != nil {
		return nil, payloadReason(err), err
	}
	b, aerr := h.decodeBatch(payload, res)
	if aerr != nil {
		if aerr.status == http.StatusServiceUnavailable {
			return nil, dropBudget, errors.New(aerr.detail)
		}
		if aerr.status == http.StatusRequestEntityTooLarge {
			return nil, dropTooLarge, errors.New(aerr.detail)
		}
		return nil, dropInvalid, errors.New(aerr.detail)
	}
	parseErrs := b.parseEachEvent()
	token, err := requestToken(c.q, c.hdr, b)
	if err != nil {
		return nil, dropInvalid, err
	}
	if !h.listed(token) {
		return nil, dropTokenSkipped, nil
	}
	rc := recordContext{topic: h.opts.Topic, token: token, now: c.now, sentAt: b.sentAt}
	if rc.sentAt == nil {
		rc.sentAt = querySentAt(c.q.Get("_"))
	}
	recs := make([]*kgo.Record, 0, len(b.events))
	var check []event.Event
	for i := range b.events {
		if parseErrs[i] != nil {
			t.dropEvent("invalid_event", parseErrs[i])
			continue
		}
		rec, err := buildRecord(b, i, rc)
		if err != nil {
			t.dropEvent("invalid_event", err)
			continue
		}
		if check, err = event.AppendDecode(check[:0], rec.Value, rc.now); err != nil {
			var de *event.Error
			if errors.As(err, &de) {
				t.dropEvent(de.Reason, err)
			} else {
				t.dropEvent("invalid_event", err)
			}
			continue
		}
		recs = append(recs, rec)
	}
	return recs, "", nil
}

func payloadReason(err error) string {
	switch {
	case errors.Is(err, errBusy):
		return dropBudget
	case errors.Is(err, errOverBudget), errors.Is(err, errTooLarge):
		return dropTooLarge
	}
	return dropInvalid
}

// drop counts a copy dropped for reason; the first of each reason is logged with why,
// since a drop is silent to the client.
func (t *tee) drop(reason string, err error) {
	t.m.dropped.WithLabelValues(reason).Inc()
	if slices.Contains(lossReasons, reason) {
		t.noteLoss(reason)
	}
	if err != nil {
		t.h.log.Debug("Copy of a proxied request dropped", "reason", reason, "err", err)
	}
}

func (t *tee) dropEvent(reason string, err error) {
	t.m.eventsDropped.WithLabelValues(reason).Inc()
	t.h.log.Debug("Event of a proxied request dropped", "reason", reason, "err", err)
}

// noteLoss records a drop for want of capacity; the first after a quiet lossWindow is
// logged, so a burst of drops is one line, not one per request.
func (t *tee) noteLoss(reason string) {
	now := t.h.opts.Now()
	t.lossMu.Lock()
	l, seen := t.losses[reason]
	t.losses[reason] = loss{last: now, count: l.count + 1}
	t.lossMu.Unlock()
	if !seen || now.Sub(l.last) >= lossWindow {
		t.h.log.Warn("Dropping copies of proxied events; PostHog still answers, flagwatch misses them",
			"reason", reason, "dropped_since_start", l.count+1)
	}
}

// degraded says, one line each, why copies are being lost: Kafka down, or drops for
// want of capacity within the last lossWindow. Empty when all is well.
func (t *tee) degraded() []string {
	var lines []string
	if down := t.h.kafka.down(); down != nil {
		lines = append(lines, "kafka: degraded: "+down.Error()+"; copies of events are dropped, PostHog still answers")
	}
	now := t.h.opts.Now()
	t.lossMu.Lock()
	defer t.lossMu.Unlock()
	var parts []string
	for reason, l := range t.losses {
		if ago := now.Sub(l.last); ago < lossWindow {
			parts = append(parts, fmt.Sprintf("%s (%d since start, last %s ago)", reason, l.count, ago.Round(time.Second)))
		}
	}
	if len(parts) > 0 {
		sort.Strings(parts)
		lines = append(lines, "tee: degraded: copies of events dropped within "+lossWindow.String()+": "+strings.Join(parts, ", "))
	}
	return lines
}

// close stops taking copies and waits for the workers to drain the queue, or for ctx to
// end; then what is still queued is dropped as shutdown, and produces in progress fail.
func (t *tee) close(ctx context.Context) error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.queue)
	}
	t.mu.Unlock()
	drained := make(chan struct{})
	go func() { t.done.Wait(); close(drained) }()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		t.cancel()
		<-drained
		return fmt.Errorf("copies of events not produced before shutdown: %w", ctx.Err())
	}
}
