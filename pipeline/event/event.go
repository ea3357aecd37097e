// Package event decodes the Kafka messages flagwatch accepts (SPEC §2) into one flat
// Event type: PostHog events (single or JSON arrays), PostHog's captured envelope, and
// OpenFeature evaluation events carried as OTLP/JSON logs or as a flat object.
//
// The decision that shapes it: a message is decoded whole or not at all. If any event in
// it is unusable, Decode returns a *Error with a machine-readable Reason and the caller
// sends the original bytes, unchanged, to the dead-letter topic, so nothing is half
// ingested and nothing is dropped silently. Events without a uuid get a deterministic
// one (SHA-1 of their bytes), so a replayed message deduplicates downstream.
//
// The decoder is also where an event's time is decided, once (time.go, Place): it is the
// one step every message passes whatever carried it — capture, PostHog's envelope, a
// service producing straight to Kafka, OpenTelemetry — so the rule lives here and
// capture only forwards what the client said. Capture runs this same decoder on each
// message before producing it, so it refuses exactly what ingest would dead-letter.
// Every input is bounded before it can hurt: nesting (depth.go, before the recursive
// parser), times (the store's DateTime range), and the names that become sort keys
// (names.go).
//
// The common message, one PostHog event object, takes a reflection-free fast path
// (fast.go) that declines anything it cannot decode exactly as the general path would.
package event

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/encoding/json"
)

// Sources name the shape an event arrived in.
const (
	SourcePostHog  = "posthog"
	SourceEnvelope = "posthog_envelope"
	SourceOTLP     = "otlp"
	SourceOTelFlat = "otel"
)

// ExposureEvent is PostHog's exposure event name; EvaluationEvent is OpenFeature's.
const (
	ExposureEvent   = "$feature_flag_called"
	EvaluationEvent = "feature_flag.evaluation"
)

// Event is one decoded event.
type Event struct {
	UUID       uuid.UUID
	Name       string
	DistinctID string
	// TsMs is the event time in Unix milliseconds.
	TsMs int64
	// Properties is the event's properties as a JSON object ("{}" when it has none).
	Properties string
	Source     string
	// Exposures are the flag evaluations this event reports: the exposure event itself,
	// an OpenFeature evaluation, or $feature/<key> properties.
	Exposures []Exposure
}

// Exposure is one flag evaluation carried by an event.
type Exposure struct {
	Flag    string
	Variant string
}

// Reasons a message is dead-lettered; they are the values of the DLQ reason header and
// of the reason label in metrics, so they are stable.
const (
	ReasonInvalidJSON    = "invalid_json"
	ReasonUnknownShape   = "unknown_shape"
	ReasonMissingEvent   = "missing_event"
	ReasonMissingUser    = "missing_distinct_id"
	ReasonBadTimestamp   = "bad_timestamp"
	ReasonBadEnvelope    = "bad_envelope"
	ReasonEmpty          = "empty"
	ReasonTooLarge       = "too_large"
	ReasonMissingFlagKey = "missing_flag_key"
	ReasonTooDeep        = "too_deep"
	ReasonBadName        = "bad_name"
	ReasonBadUser        = "bad_distinct_id"
)

// Error says why a message cannot be ingested.
type Error struct {
	Reason string
	Detail string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Detail }

func errf(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

var uuidNamespace = uuid.MustParse("6f0c1d64-3a8e-4b5e-9a40-5d1f2b7c9e11")

// DeterministicUUID is the uuid given to an event that arrived without one.
func DeterministicUUID(raw []byte) uuid.UUID { return uuid.NewSHA1(uuidNamespace, raw) }

// Decode decodes one Kafka message. recordTime is the Kafka record's timestamp.
func Decode(msg []byte, recordTime time.Time) ([]Event, error) {
	evs, err := AppendDecode(nil, msg, recordTime)
	if err != nil {
		return nil, err
	}
	return evs, nil
}

// AppendDecode is Decode appending the message's events to dst (so a consumer can decode
// a whole poll into one batch without a slice per message). On error it returns dst
// unchanged, whatever its length.
func AppendDecode(dst []Event, msg []byte, recordTime time.Time) ([]Event, error) {
	b := bytes.TrimSpace(msg)
	if len(b) == 0 {
		return dst, errf(ReasonEmpty, "empty message")
	}
	switch b[0] {
	case '[':
		if err := checkDepth(b); err != nil {
			return dst, err
		}
		var items []json.RawMessage
		if err := json.Unmarshal(b, &items); err != nil {
			return dst, errf(ReasonInvalidJSON, "%v", err)
		}
		if len(items) == 0 {
			return dst, errf(ReasonEmpty, "empty array")
		}
		n := len(dst)
		for i, it := range items {
			var err *Error
			dst, err = appendObject(dst, it, recordTime)
			if err != nil {
				err.Detail = fmt.Sprintf("element %d: %s", i, err.Detail)
				return dst[:n], err
			}
		}
		return dst, nil
	case '{':
		out, err := appendObject(dst, b, recordTime)
		if err != nil {
			return dst, err
		}
		return out, nil
	default:
		return dst, errf(ReasonInvalidJSON, "message is neither a JSON object nor an array")
	}
}

// shape is the union of the top-level fields of every accepted object shape; which are
// present decides the shape.
type shape struct {
	UUID       string          `json:"uuid"`
	Event      string          `json:"event"`
	DistinctID json.RawMessage `json:"distinct_id"`
	Timestamp  json.RawMessage `json:"timestamp"`
	SentAt     json.RawMessage `json:"sent_at"`
	Offset     json.RawMessage `json:"offset"`
	Now        json.RawMessage `json:"now"`
	Properties json.RawMessage `json:"properties"`
	// PostHog envelope.
	Data *string `json:"data"`
	// OpenTelemetry.
	Name         string          `json:"name"`
	Attributes   json.RawMessage `json:"attributes"`
	ResourceLogs json.RawMessage `json:"resourceLogs"`
}

// appendObject decodes one object by either path, then checks what both paths
// produced against the limits of the store.
func appendObject(dst []Event, raw []byte, recordTime time.Time) ([]Event, *Error) {
	n := len(dst)
	if ev, ok := fastPostHog(raw, recordTime); ok {
		dst = append(dst, ev)
	} else {
		var err *Error
		if dst, err = appendObjectGeneral(dst, raw, recordTime); err != nil {
			return dst[:n], err
		}
	}
	for i := n; i < len(dst); i++ {
		if err := checkEvent(&dst[i]); err != nil {
			return dst[:n], err
		}
	}
	return dst, nil
}

// appendObjectGeneral decodes any accepted object shape (the reference the fast path is
// checked against).
func appendObjectGeneral(dst []Event, raw []byte, recordTime time.Time) ([]Event, *Error) {
	if err := checkDepth(raw); err != nil {
		return dst, err
	}
	var s shape
	if err := json.Unmarshal(raw, &s); err != nil {
		return dst, errf(ReasonInvalidJSON, "%v", err)
	}
	switch {
	case s.ResourceLogs != nil:
		evs, err := decodeOTLP(s.ResourceLogs, recordTime)
		if err != nil {
			return dst, err
		}
		return append(dst, evs...), nil
	case s.Data != nil:
		ev, err := decodeEnvelope(&s, recordTime)
		if err != nil {
			return dst, err
		}
		return append(dst, ev), nil
	case s.Event == "" && s.Name != "" && s.Attributes != nil:
		ev, err := decodeOTelFlat(&s, raw, recordTime)
		if err != nil {
			return dst, err
		}
		return append(dst, ev), nil
	default:
		ev, err := decodePostHog(&s, raw, recordTime, SourcePostHog)
		if err != nil {
			return dst, err
		}
		return append(dst, ev), nil
	}
}

// props holds the properties flagwatch itself reads.
type props struct {
	DistinctID  json.RawMessage `json:"distinct_id"`
	DistinctID2 json.RawMessage `json:"$distinct_id"`
	Flag        json.RawMessage `json:"$feature_flag"`
	Response    json.RawMessage `json:"$feature_flag_response"`
	IgnoreSent  json.RawMessage `json:"$ignore_sent_at"`
}

func decodePostHog(s *shape, raw []byte, recordTime time.Time, source string) (Event, *Error) {
	if s.Event == "" {
		return Event{}, errf(ReasonMissingEvent, "no event name")
	}
	ev := Event{Name: s.Event, Source: source, Properties: "{}"}
	var p props
	if len(s.Properties) > 0 && !isNull(s.Properties) {
		if s.Properties[0] != '{' {
			return Event{}, errf(ReasonInvalidJSON, "properties is not an object")
		}
		if err := json.Unmarshal(s.Properties, &p); err != nil {
			return Event{}, errf(ReasonInvalidJSON, "properties: %v", err)
		}
		ev.Properties = string(s.Properties)
	}
	ev.DistinctID = scalar(s.DistinctID)
	if ev.DistinctID == "" {
		ev.DistinctID = scalar(p.DistinctID)
	}
	if ev.DistinctID == "" {
		ev.DistinctID = scalar(p.DistinctID2)
	}
	if ev.DistinctID == "" {
		return Event{}, errf(ReasonMissingUser, "event %q has no distinct_id", s.Event)
	}
	ts, err := place(Times{Timestamp: s.Timestamp, SentAt: s.SentAt, Offset: s.Offset, Now: s.Now,
		IgnoreSentAt: string(p.IgnoreSent) == "true"}, recordTime)
	if err != nil {
		return Event{}, err
	}
	ev.TsMs = ts
	ev.UUID = eventUUID(s.UUID, raw)
	if s.Event == ExposureEvent {
		flag := scalar(p.Flag)
		if flag == "" {
			return Event{}, errf(ReasonMissingFlagKey, "%s without properties.$feature_flag", ExposureEvent)
		}
		if v := variant(p.Response); v != "" {
			ev.Exposures = append(ev.Exposures, Exposure{Flag: flag, Variant: v})
		}
	}
	if bytes.Contains(s.Properties, []byte(`"$feature/`)) {
		exps, err := featureProps(s.Properties)
		if err != nil {
			return Event{}, err
		}
		own := ev.Exposures // the exposure event's own flag, if any; exps are distinct
		for _, x := range exps {
			if !hasFlag(own, x.Flag) {
				ev.Exposures = append(ev.Exposures, x)
			}
		}
	}
	return ev, nil
}

func hasFlag(xs []Exposure, flag string) bool {
	for _, x := range xs {
		if x.Flag == flag {
			return true
		}
	}
	return false
}

// featureProps reads $feature/<key> properties; only messages that contain the prefix
// pay for the map decode.
func featureProps(raw json.RawMessage) ([]Exposure, *Error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errf(ReasonInvalidJSON, "properties: %v", err)
	}
	var out []Exposure
	for k, v := range m {
		flag, ok := strings.CutPrefix(k, "$feature/")
		if !ok || flag == "" {
			continue
		}
		if vr := variant(v); vr != "" {
			out = append(out, Exposure{Flag: flag, Variant: vr})
		}
	}
	// Map order is random; a stable order keeps inserts reproducible.
	sortExposures(out)
	return out, nil
}

func sortExposures(xs []Exposure) {
	slices.SortFunc(xs, func(a, b Exposure) int { return strings.Compare(a.Flag, b.Flag) })
}

// decodeEnvelope unwraps PostHog's captured envelope: the event is a JSON string in data,
// and the envelope's now/sent_at correct its clock.
func decodeEnvelope(s *shape, recordTime time.Time) (Event, *Error) {
	inner := []byte(*s.Data)
	if err := checkDepth(inner); err != nil {
		return Event{}, err
	}
	var d shape
	if err := json.Unmarshal(inner, &d); err != nil {
		return Event{}, errf(ReasonBadEnvelope, "data is not a JSON event: %v", err)
	}
	if d.DistinctID == nil || isNull(d.DistinctID) {
		d.DistinctID = s.DistinctID
	}
	if d.UUID == "" {
		d.UUID = s.UUID
	}
	d.Now = s.Now
	if !present(d.SentAt) {
		d.SentAt = s.SentAt
	}
	return decodePostHog(&d, inner, recordTime, SourceEnvelope)
}

func eventUUID(s string, raw []byte) uuid.UUID {
	if s != "" {
		if u, err := uuid.Parse(s); err == nil {
			return u
		}
		// A malformed uuid is still an identity: derive from it, so replays agree.
		return DeterministicUUID([]byte(s))
	}
	return DeterministicUUID(raw)
}

// scalar renders a JSON string or number as a string; anything else is "".
func scalar(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	case 'n', '{', '[', 't', 'f':
		return ""
	default:
		return string(raw)
	}
}

// variant renders a flag response: strings as is, booleans as "true"/"false", numbers
// as written.
func variant(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	switch string(raw) {
	case "true":
		return "true"
	case "false":
		return "false"
	}
	return scalar(raw)
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }
