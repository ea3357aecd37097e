//go:build soak

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
)

// The load generator: requests at a bounded rate, each with its own answers recorded.
// A 503 with Retry-After is retried after that long with the same bytes (same uuids),
// as the SDKs do; nothing else is retried, so every other answer is the one the checks
// judge.

// maxAttempts bounds the tries of one request answered 503.
const maxAttempts = 5

// concurrency bounds the requests in flight (retries waiting out a Retry-After do not
// count): far above what capture needs at the default rate, so the rate is the bound.
const concurrency = 256

// answer is what one attempt got.
type answer struct {
	status int
	// code and detail are the error body's ({"type", "code", "detail"}); ok is
	// {"status": 1}.
	kind, code, detail string
	ok                 bool
	retryAfter         string
	err                error // no answer at all (transport), or the produce's error
	at                 time.Time
}

// outcome is a request and every answer it got, the last one final.
type outcome struct {
	req     *request
	answers []answer
}

func (o *outcome) final() answer { return o.answers[len(o.answers)-1] }

func (o *outcome) acked() bool {
	f := o.final()
	if o.req.direct != nil {
		return f.err == nil
	}
	return f.status == http.StatusOK && f.ok
}

// certainlyNotProduced: every answer said nothing was produced — a 4xx, or a 503 for
// the in-flight budget (refused before producing). A 503 kafka_unavailable or a lost
// answer leaves it unknown (an idempotent producer may still deliver).
func (o *outcome) certainlyNotProduced() bool {
	if o.acked() || o.req.direct != nil {
		return false
	}
	for _, a := range o.answers {
		switch {
		case a.err != nil:
			return false
		case a.status == http.StatusServiceUnavailable && a.code != "over_capacity":
			return false
		case a.status >= 500 && a.status != http.StatusServiceUnavailable:
			return false
		}
	}
	return true
}

type sender struct {
	base   string
	client *http.Client
	kafka  *kgo.Client
	seed   uint64
}

func newSender(base string, seed uint64, kafka *kgo.Client) *sender {
	tr := &http.Transport{
		MaxIdleConns:          concurrency,
		MaxIdleConnsPerHost:   concurrency,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: 10 * time.Second,
		DisableCompression:    true,
	}
	return &sender{base: base, seed: seed, kafka: kafka,
		// Generous: capture waits at most its produce timeout (10 s) for Kafka.
		client: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// run sends rate requests a second for dur (request i at start + i/rate, later only
// when concurrency requests are in flight) and returns every outcome once all are
// answered, retries included, and how long sending took.
func (s *sender) run(ctx context.Context, rate float64, dur time.Duration) ([]*outcome, time.Duration) {
	n := int(rate * dur.Seconds())
	out := make([]*outcome, n)
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			out = out[:i]
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.do(ctx, i, sem)
		}()
	}
	sent := time.Since(start)
	wg.Wait()
	return out, sent
}

// do sends request i until it gets an answer other than 503, or maxAttempts answers;
// it holds a slot of sem while sending (not while waiting to retry) and releases it
// at the end.
func (s *sender) do(ctx context.Context, i int, sem chan struct{}) *outcome {
	o := &outcome{}
	for attempt := 1; ; attempt++ {
		// Built once: a retry resends the same bytes, uuids and times.
		if o.req == nil {
			o.req = build(s.seed, i, time.Now())
		}
		var a answer
		if o.req.direct != nil {
			a = s.produce(ctx, o.req)
		} else {
			a = s.send(ctx, o.req)
		}
		o.answers = append(o.answers, a)
		if a.status != http.StatusServiceUnavailable || attempt == maxAttempts || ctx.Err() != nil {
			<-sem
			return o
		}
		wait := 5 * time.Second
		if secs, err := strconv.Atoi(a.retryAfter); err == nil && secs > 0 {
			wait = min(time.Duration(secs)*time.Second, 30*time.Second)
		}
		<-sem
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		sem <- struct{}{}
	}
}

// largeBody is the size from which a request asks before sending its body (Expect:
// 100-continue, as curl does): capture may refuse a request before reading its body
// (a wrong key outside it, a budget held by others, a Content-Length over the limit)
// and then closes the connection, and net/http's client reports the write error
// rather than the answer it was sent (golang.org/issue/11745).
const largeBody = 64 << 10

func (s *sender) send(ctx context.Context, r *request) answer {
	if r.chunked {
		return s.sendChunked(ctx, r)
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, s.base+r.target, body)
	if err != nil {
		return answer{err: err, at: time.Now()}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if len(r.body) > largeBody {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return answer{err: err, at: time.Now()}
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

// sendChunked sends r's body chunked (no Content-Length) on a connection of its own,
// reading the answer while it writes: a server may answer before the body ends, and
// capture does when it refuses one midway, which net/http's client would report as a
// broken pipe instead (see largeBody).
func (s *sender) sendChunked(ctx context.Context, r *request) answer {
	req, err := http.NewRequestWithContext(ctx, r.method, s.base+r.target, &filler{left: r.bodyLen})
	if err != nil {
		return answer{err: err, at: time.Now()}
	}
	req.ContentLength = -1
	for k, v := range r.header {
		req.Header[k] = v
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", req.URL.Host)
	if err != nil {
		return answer{err: err, at: time.Now()}
	}
	defer conn.Close() // also ends the writer, if the answer came first
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	go func() { _ = req.Write(conn) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return answer{err: err, at: time.Now()}
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

// readAnswer reads capture's answer: {"status": 1}, or PostHog's error shape.
func readAnswer(resp *http.Response) answer {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), err: err, at: time.Now()}
	if resp.StatusCode == http.StatusOK {
		var okBody struct {
			Status int `json:"status"`
		}
		a.ok = json.Unmarshal(b, &okBody) == nil && okBody.Status == 1
		return a
	}
	var e struct {
		Type   string `json:"type"`
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(b, &e) != nil {
		a.detail = fmt.Sprintf("(not PostHog's error shape) %.200s", b)
		return a
	}
	a.kind, a.code, a.detail = e.Type, e.Code, e.Detail
	return a
}

// soakIDHeader names the message a direct producer sent, in the dead-letter copy too.
const soakIDHeader = "soak-id"

func (s *sender) produce(ctx context.Context, r *request) answer {
	rec := &kgo.Record{Topic: broker.EventsTopic, Key: []byte(r.direct.key), Value: r.body,
		Headers: []kgo.RecordHeader{{Key: soakIDHeader, Value: []byte(directID(r.index))}}}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return answer{err: s.kafka.ProduceSync(pctx, rec).FirstErr(), at: time.Now()}
}

func directID(index int) string { return "direct-" + strconv.Itoa(index) }
