package capture

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/event"
)

// requestToken finds the request's API key: the body's, the query's (?token=,
// ?api_key=), the Authorization bearer's, or the events'. A request carries one key.
func requestToken(q url.Values, hdr http.Header, b *batch) (string, error) {
	candidates := []string{b.token, q.Get("token"), q.Get("api_key"), bearer(hdr)}
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

// outsideTokens are the API keys a request carries outside its body (?token=,
// ?api_key=, Authorization: Bearer): they can be checked before the body is read.
func outsideTokens(q url.Values, hdr http.Header) []string {
	var out []string
	for _, t := range []string{q.Get("token"), q.Get("api_key"), bearer(hdr)} {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

func bearer(hdr http.Header) string {
	scheme, tok, ok := strings.Cut(hdr.Get("Authorization"), " ")
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
	sentAt json.RawMessage // request-level sent_at (body, else ?_=), as sent
}

// eventError is an event the decoder would dead-letter: the request is refused with its
// reason, so a 2xx promises events ingest will store.
type eventError struct {
	index int
	err   *event.Error
}

func (e *eventError) Error() string { return fmt.Sprintf("events[%d]: %v", e.index, e.err) }

// buildRecords turns a request's events into Kafka records, or fails naming the first
// event that cannot be one.
func buildRecords(b *batch, rc recordContext) ([]*kgo.Record, error) {
	recs := make([]*kgo.Record, 0, len(b.events))
	var check []event.Event // reused by every event's check
	for i := range b.events {
		rec, err := buildRecord(b, i, rc)
		if err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		// The message is decoded here exactly as ingest will decode it (times placed,
		// names bounded): what ingest would dead-letter is refused now, with the reason,
		// while the client can still see it.
		if check, err = event.AppendDecode(check[:0], rec.Value, rc.now); err != nil {
			var de *event.Error
			if !errors.As(err, &de) {
				return nil, fmt.Errorf("events[%d]: %w", i, err)
			}
			return nil, &eventError{index: i, err: de}
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

func buildRecord(b *batch, i int, rc recordContext) (*kgo.Record, error) {
	e := &b.events[i]
	out := outEvent{Properties: e.Properties, Set: nonNull(e.Set), SetOnce: nonNull(e.SetOnce), Token: rc.token,
		Timestamp: nonNull(e.Timestamp), Offset: nonNull(e.Offset), SentAt: nonNull(e.SentAt),
		Now: rc.now.UTC().Format(timeFormat)}
	var err error
	if out.Event, err = e.name(); err != nil {
		return nil, err
	}
	if out.DistinctID, err = e.distinctID(); err != nil {
		return nil, err
	}
	if out.SentAt == nil {
		out.SentAt = rc.sentAt
	}
	if out.UUID, err = e.uuid(); err != nil {
		return nil, err
	}
	if out.UUID == "" {
		hasClientTime := out.Timestamp != nil || out.SentAt != nil
		out.UUID = derivedUUID(rc.token, out.SentAt, i, b.raws[i], rc.now, hasClientTime)
	}
	// Sized up front, so encoding allocates the message once; the raw values were
	// validated by the parse, and are copied as they came (no compaction, no HTML
	// escaping): the properties reach Kafka byte for byte.
	size := 192 + len(out.UUID) + 2*(len(out.Event)+len(out.DistinctID)+len(out.Token)) + len(out.Timestamp) +
		len(out.SentAt) + len(out.Offset) + len(out.Now) + len(out.Properties) + len(out.Set) + len(out.SetOnce)
	value, err := json.Append(make([]byte, 0, size), out, json.TrustRawMessage)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	// The record's own timestamp stays unset, so the client stamps it with the produce
	// time: brokers apply retention to it, and the delivery timeout counts from it.
	return &kgo.Record{Topic: rc.topic, Key: []byte(out.DistinctID), Value: value}, nil
}

// querySentAt reads posthog-js's ?_= parameter, the send time in Unix milliseconds, as
// an RFC 3339 JSON string (nil when absent). Values before 2021 are taken for seconds
// from older SDKs and ignored, as PostHog does.
func querySentAt(v string) json.RawMessage {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	if t.Year() <= 2020 || t.Year() > 9999 {
		return nil
	}
	return json.RawMessage(`"` + t.Format(timeFormat) + `"`)
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if isAbsent(raw) {
		return nil
	}
	return raw
}
