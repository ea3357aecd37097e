package capture

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"
)

// requestToken finds the request's API key: the body's, the query's (?token=,
// ?api_key=), the Authorization bearer's, or the events'. A request carries one key.
func requestToken(r *http.Request, b *batch) (string, error) {
	q := r.URL.Query()
	candidates := []string{b.token, q.Get("token"), q.Get("api_key"), bearer(r)}
	for i := range b.events {
		tok, err := b.events[i].token()
		if err != nil {
			return "", fmt.Errorf("events[%d]: %w", i, err)
		}
		candidates = append(candidates, tok)
	}
	var token string
	for _, c := range candidates {
		switch {
		case c == "" || c == token:
		case token == "":
			token = c
		default:
			return "", errors.New("more than one API key in one request")
		}
	}
	return token, nil
}

func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// recordContext is what every event of one request shares.
type recordContext struct {
	topic  string
	token  string
	now    time.Time
	sentAt time.Time // request-level sent_at (body, else ?_=)
}

// buildRecords turns a request's events into Kafka records, or fails naming the first
// event that cannot be one. invalidTimes counts timestamps that did not parse (the event
// then takes the server's time, as in PostHog).
func buildRecords(b *batch, rc recordContext) (recs []*kgo.Record, invalidTimes int, err error) {
	recs = make([]*kgo.Record, 0, len(b.events))
	for i := range b.events {
		rec, badTime, err := buildRecord(b, i, rc)
		if err != nil {
			return nil, 0, fmt.Errorf("events[%d]: %w", i, err)
		}
		if badTime {
			invalidTimes++
		}
		recs = append(recs, rec)
	}
	return recs, invalidTimes, nil
}

func buildRecord(b *batch, i int, rc recordContext) (rec *kgo.Record, badTime bool, err error) {
	e := &b.events[i]
	out := outEvent{Properties: e.Properties, Set: nonNull(e.Set), SetOnce: nonNull(e.SetOnce), Token: rc.token}
	if out.Event, err = e.name(); err != nil {
		return nil, false, err
	}
	if out.DistinctID, err = e.distinctID(); err != nil {
		return nil, false, err
	}
	ct, badTime, err := clientTimesOf(e, rc)
	if err != nil {
		return nil, false, err
	}
	if out.UUID, err = e.uuid(); err != nil {
		return nil, false, err
	}
	if out.UUID == "" {
		hasClientTime := !ct.timestamp.IsZero() || !ct.sentAt.IsZero()
		out.UUID = derivedUUID(rc.token, ct.sentAt, i, b.raws[i], rc.now, hasClientTime)
	}
	out.Timestamp = eventTime(rc.now, ct).Format(timeFormat)
	out.Now = rc.now.UTC().Format(timeFormat)
	if !ct.sentAt.IsZero() {
		out.SentAt = ct.sentAt.Format(timeFormat)
	}
	value, err := json.Marshal(out)
	if err != nil {
		return nil, false, fmt.Errorf("encode event: %w", err)
	}
	// The record's own timestamp stays unset, so the client stamps it with the produce
	// time: brokers apply retention to it, and the delivery timeout counts from it.
	return &kgo.Record{Topic: rc.topic, Key: []byte(out.DistinctID), Value: value}, badTime, nil
}

// clientTimesOf collects the event's timestamp, sent_at (its own, else the request's,
// unless $ignore_sent_at) and offset. badTime reports a timestamp that did not parse.
func clientTimesOf(e *inEvent, rc recordContext) (ct clientTimes, badTime bool, err error) {
	var ok bool
	ct.timestamp, ok = parseTime(e.Timestamp)
	badTime = !ok && !isAbsent(e.Timestamp)
	if !e.ignoresSentAt() {
		if ct.sentAt, ok = parseTime(e.SentAt); !ok {
			ct.sentAt = rc.sentAt
		}
	}
	ct.offsetMs, ct.hasOffset, err = e.offsetMs()
	return ct, badTime, err
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if isAbsent(raw) {
		return nil
	}
	return raw
}
