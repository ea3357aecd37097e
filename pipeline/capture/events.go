package capture

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"
)

// batch is a decoded request: its events and what the request says about all of them.
type batch struct {
	token  string          // api_key/token of a {batch: […]} body
	sentAt json.RawMessage // its sent_at, as sent; nil when absent
	events []inEvent
	raws   []json.RawMessage // each event's bytes, for deterministic uuids
}

// envelope is a body that is an object: a {batch: […]} request or a single event.
type envelope struct {
	APIKey json.RawMessage `json:"api_key"`
	Token  json.RawMessage `json:"token"`
	SentAt json.RawMessage `json:"sent_at"`
	Batch  json.RawMessage `json:"batch"`
}

// inEvent is one event as an SDK sends it. Fields whose JSON type varies across SDKs
// are kept raw and interpreted by the methods below.
type inEvent struct {
	Event         json.RawMessage `json:"event"`
	DistinctID    json.RawMessage `json:"distinct_id"`
	DistinctIDAlt json.RawMessage `json:"$distinct_id"`
	UUID          json.RawMessage `json:"uuid"`
	Timestamp     json.RawMessage `json:"timestamp"`
	SentAt        json.RawMessage `json:"sent_at"`
	Offset        json.RawMessage `json:"offset"`
	Token         json.RawMessage `json:"token"`
	TokenAlt      json.RawMessage `json:"$token"`
	APIKey        json.RawMessage `json:"api_key"`
	Properties    json.RawMessage `json:"properties"`
	Set           json.RawMessage `json:"$set"`
	SetOnce       json.RawMessage `json:"$set_once"`

	props peekProps
}

// peekProps are the properties capture itself reads; the rest pass through unparsed.
type peekProps struct {
	Token         json.RawMessage `json:"token"`
	DistinctID    json.RawMessage `json:"distinct_id"`
	DistinctIDAlt json.RawMessage `json:"$distinct_id"`
}

// outEvent is the message produced to Kafka: PostHog's event shape with the client's
// time fields as it sent them and capture's receive time, from which the decoder places
// the event (event.Place), plus provenance.
type outEvent struct {
	UUID       string          `json:"uuid"`
	Event      string          `json:"event"`
	DistinctID string          `json:"distinct_id"`
	Timestamp  json.RawMessage `json:"timestamp,omitempty"`
	SentAt     json.RawMessage `json:"sent_at,omitempty"`
	Offset     json.RawMessage `json:"offset,omitempty"`
	Now        string          `json:"now"`
	Properties json.RawMessage `json:"properties"`
	Set        json.RawMessage `json:"$set,omitempty"`
	SetOnce    json.RawMessage `json:"$set_once,omitempty"`
	Token      string          `json:"token,omitempty"`
}

// timeFormat is RFC 3339 in UTC with milliseconds, as PostHog writes timestamps.
const timeFormat = "2006-01-02T15:04:05.000Z"

// maxDistinctIDLen is PostHog's limit; longer ids are truncated.
const maxDistinctIDLen = 200

// parse decodes JSON without copying: the raw messages point into b, which the
// request owns (segmentio/encoding copies each one otherwise).
func parse(b []byte, v any) error {
	rest, err := json.Parse(b, v, json.DontCopyRawMessage)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("invalid character %q after top-level value", rest[0])
	}
	return err
}

// parseBatch decodes a JSON payload: an array of events, a {batch: […]} object, or
// one event, into its events' raw bytes; parseEvents decodes the events. Before any
// per-event memory is allocated it calls reserve with the number of events, so the
// in-flight budget can refuse a payload of millions of tiny events ("[{},{},…]": 3
// bytes each, 24 to hold their raw bytes alone) before it costs anything. The payload's
// depth was checked (event.CheckDepth): the parser recurses.
func parseBatch(payload []byte, reserve func(events int) error) (*batch, error) {
	b := &batch{}
	switch payload[0] {
	case '[':
		if err := b.parseArray(payload, reserve); err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
	case '{':
		if err := b.parseObject(payload, reserve); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("payload is not a JSON object or array")
	}
	if len(b.raws) == 0 {
		return nil, errors.New("no events in payload")
	}
	return b, nil
}

// parseArray decodes a JSON array of events into b.raws, after reserving for them.
func (b *batch) parseArray(array []byte, reserve func(events int) error) error {
	n := countElements(array)
	if err := reserve(n); err != nil {
		return err
	}
	b.raws = make([]json.RawMessage, 0, n)
	return parse(array, &b.raws)
}

// countElements counts the elements of the JSON array b starts with (a comma inside
// it counts one more), without allocating or recursing; for anything else it is 1.
// Malformed input only makes the count wrong: the parse that follows reports it.
func countElements(b []byte) int {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '[' {
		return 1
	}
	n, depth, empty := 1, 0, true
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			empty = false
		case '[', '{':
			if depth++; depth > 1 {
				empty = false
			}
		case ']', '}':
			if depth--; depth == 0 {
				if empty {
					return 0
				}
				return n
			}
		case ',':
			if depth == 1 {
				n++
			}
		case ' ', '\t', '\r', '\n':
		default:
			empty = false
		}
	}
	return n
}

// parseEvents decodes each event of b, or refuses the request naming the first event
// that is not one.
func (b *batch) parseEvents() *apiError {
	b.events = make([]inEvent, len(b.raws))
	for i, raw := range b.raws {
		if err := b.events[i].parse(raw); err != nil {
			return invalid(fmt.Sprintf("events[%d]: %v", i, err), "invalid_payload")
		}
	}
	return nil
}

// parseEachEvent decodes each event of b and returns each one's error (nil when it
// decoded); it stops at nothing.
func (b *batch) parseEachEvent() []error {
	b.events = make([]inEvent, len(b.raws))
	errs := make([]error, len(b.raws))
	for i, raw := range b.raws {
		errs[i] = b.events[i].parse(raw)
	}
	return errs
}

func (b *batch) parseObject(payload []byte, reserve func(events int) error) error {
	var env envelope
	if err := parse(payload, &env); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if isAbsent(env.Batch) {
		if err := reserve(1); err != nil {
			return err
		}
		b.raws = []json.RawMessage{payload}
		return nil
	}
	if err := b.parseArray(env.Batch, reserve); err != nil {
		if errors.Is(err, errBusy) || errors.Is(err, errOverBudget) {
			return err
		}
		return fmt.Errorf("batch: must be an array of events: %w", err)
	}
	for _, raw := range []json.RawMessage{env.APIKey, env.Token} {
		tok, err := stringField(raw)
		if err != nil {
			return fmt.Errorf("api_key: %w", err)
		}
		if tok != "" {
			b.token = tok
			break
		}
	}
	b.sentAt = nonNull(env.SentAt)
	return nil
}

func (e *inEvent) parse(raw json.RawMessage) error {
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("not a JSON object")
	}
	if err := parse(raw, e); err != nil {
		return fmt.Errorf("invalid event: %w", err)
	}
	if isAbsent(e.Properties) {
		e.Properties = json.RawMessage("{}")
		return nil
	}
	if e.Properties[0] != '{' {
		return errors.New("properties: must be an object")
	}
	if err := parse(e.Properties, &e.props); err != nil {
		return fmt.Errorf("properties: %w", err)
	}
	return nil
}

// token is the API key the event itself carries, if any.
func (e *inEvent) token() (string, error) {
	for _, raw := range []json.RawMessage{e.Token, e.TokenAlt, e.APIKey, e.props.Token} {
		tok, err := stringField(raw)
		if err != nil {
			return "", fmt.Errorf("token: %w", err)
		}
		if tok != "" {
			return tok, nil
		}
	}
	return "", nil
}

// name is the event name, which must be a non-empty string.
func (e *inEvent) name() (string, error) {
	name, err := stringField(e.Event)
	if err != nil {
		return "", fmt.Errorf("event: %w", err)
	}
	if name == "" {
		return "", errors.New("missing event name")
	}
	return name, nil
}

// distinctID finds the user as PostHog does: distinct_id, $distinct_id, then the same
// in properties. Numbers, booleans and containers become their JSON text.
func (e *inEvent) distinctID() (string, error) {
	for _, raw := range []json.RawMessage{e.DistinctID, e.DistinctIDAlt, e.props.DistinctID, e.props.DistinctIDAlt} {
		if isAbsent(raw) {
			continue
		}
		id := string(raw)
		if raw[0] == '"' {
			if err := json.Unmarshal(raw, &id); err != nil {
				return "", fmt.Errorf("distinct_id: %w", err)
			}
		}
		if id = cleanDistinctID(id); id != "" {
			return id, nil
		}
	}
	return "", errors.New("missing distinct_id")
}

func cleanDistinctID(id string) string {
	id = strings.ReplaceAll(strings.TrimSpace(id), "\x00", "\uFFFD")
	if utf8.RuneCountInString(id) > maxDistinctIDLen {
		id = string([]rune(id)[:maxDistinctIDLen])
	}
	return id
}

// uuid returns the event's uuid in canonical form, or "" when it has none.
func (e *inEvent) uuid() (string, error) {
	s, err := stringField(e.UUID)
	if err != nil || s == "" {
		if err != nil {
			err = fmt.Errorf("uuid: %w", err)
		}
		return "", err
	}
	u, ok := canonicalUUID(s)
	if !ok {
		return "", fmt.Errorf("uuid %q: not a UUID", s)
	}
	return u, nil
}

func canonicalUUID(s string) (string, bool) {
	h := strings.ToLower(strings.ReplaceAll(s, "-", ""))
	if len(h) != 32 || (len(s) != 32 && len(s) != 36) {
		return "", false
	}
	if len(s) == 36 && (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		return "", false
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", false
	}
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

// derivedUUID names an event that came without a uuid deterministically from what the
// request says about it, so the SDK retrying the same request produces the same uuid.
// Without any client time (timestamp, sent_at) identical requests are told apart by
// the server's clock instead.
func derivedUUID(token string, sentAt []byte, index int, raw []byte, now time.Time, hasClientTime bool) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", token, sentAt, index)
	if !hasClientTime {
		fmt.Fprintf(h, "%d\x00", now.UnixNano())
	}
	h.Write(raw)
	sum := h.Sum(nil)
	sum[6] = sum[6]&0x0f | 0x80 // version 8: custom
	sum[8] = sum[8]&0x3f | 0x80 // RFC 4122 variant
	s := hex.EncodeToString(sum[:16])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// stringField reads an optional JSON string; absent and null are "".
func stringField(raw json.RawMessage) (string, error) {
	if isAbsent(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("must be a string, got %s", truncate(raw, 40))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

func isAbsent(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
