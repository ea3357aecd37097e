package event

import (
	"bytes"
	"strconv"
	"time"

	"github.com/segmentio/encoding/json"
)

// OpenFeature semantic-convention attribute names.
const (
	attrFlagKey    = "feature_flag.key"
	attrVariant    = "feature_flag.result.variant"
	attrVariantOld = "feature_flag.variant"
	attrContextID  = "feature_flag.context.id"
	attrEventName  = "event.name"
	attrUserID     = "user.id"
	attrEndUserID  = "enduser.id"
	attrFlagValue  = "feature_flag.result.value"
)

type otlpValue struct {
	StringValue *string          `json:"stringValue"`
	BoolValue   *bool            `json:"boolValue"`
	IntValue    json.RawMessage  `json:"intValue"`
	DoubleValue *float64         `json:"doubleValue"`
	ArrayValue  *json.RawMessage `json:"arrayValue"`
	KvlistValue *json.RawMessage `json:"kvlistValue"`
}

type otlpAttr struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

type otlpRecord struct {
	TimeUnixNano         json.RawMessage `json:"timeUnixNano"`
	ObservedTimeUnixNano json.RawMessage `json:"observedTimeUnixNano"`
	EventName            string          `json:"eventName"`
	Attributes           []otlpAttr      `json:"attributes"`
}

type otlpLogs []struct {
	ScopeLogs []struct {
		LogRecords []json.RawMessage `json:"logRecords"`
	} `json:"scopeLogs"`
}

// decodeOTLP reads OTLP/JSON logs. Records that are not events (no event name) are
// application logs that happen to share the topic: they are skipped, not dead-lettered.
func decodeOTLP(raw json.RawMessage, recordTime time.Time) ([]Event, *Error) {
	var logs otlpLogs
	if err := json.Unmarshal(raw, &logs); err != nil {
		return nil, errf(ReasonInvalidJSON, "resourceLogs: %v", err)
	}
	var out []Event
	for _, rl := range logs {
		for _, sl := range rl.ScopeLogs {
			for _, recRaw := range sl.LogRecords {
				var rec otlpRecord
				if err := json.Unmarshal(recRaw, &rec); err != nil {
					return nil, errf(ReasonInvalidJSON, "logRecord: %v", err)
				}
				attrs := flattenAttrs(rec.Attributes)
				name := rec.EventName
				if name == "" {
					name = attrs[attrEventName]
				}
				if name == "" {
					continue
				}
				ts, err := recordMs(&rec, recordTime)
				if err != nil {
					return nil, err
				}
				ev, err := otelEvent(name, attrs, ts, recRaw, SourceOTLP)
				if err != nil {
					return nil, err
				}
				out = append(out, ev)
			}
		}
	}
	if len(out) == 0 {
		return nil, errf(ReasonEmpty, "OTLP logs without any event record")
	}
	return out, nil
}

// decodeOTelFlat reads {"name", "timestamp", "attributes": {…}}.
func decodeOTelFlat(s *shape, raw []byte, recordTime time.Time) (Event, *Error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(s.Attributes, &m); err != nil {
		return Event{}, errf(ReasonInvalidJSON, "attributes: %v", err)
	}
	attrs := make(map[string]string, len(m))
	for k, v := range m {
		attrs[k] = variant(v)
	}
	ts, err := place(Times{Timestamp: s.Timestamp, SentAt: s.SentAt, Offset: s.Offset, Now: s.Now}, recordTime)
	if err != nil {
		return Event{}, err
	}
	return otelEvent(s.Name, attrs, ts, raw, SourceOTelFlat)
}

// otelEvent builds an event from attributes; an evaluation also yields an exposure.
func otelEvent(name string, attrs map[string]string, tsMs int64, raw []byte, source string) (Event, *Error) {
	user := attrs[attrContextID]
	if name != EvaluationEvent {
		for _, k := range []string{attrUserID, attrEndUserID} {
			if user == "" {
				user = attrs[k]
			}
		}
	}
	if user == "" {
		return Event{}, errf(ReasonMissingUser, "%s without %s", name, attrContextID)
	}
	ev := Event{
		UUID:       DeterministicUUID(raw),
		Name:       name,
		DistinctID: user,
		TsMs:       tsMs,
		Properties: attrsJSON(attrs),
		Source:     source,
	}
	if name == EvaluationEvent {
		flag := attrs[attrFlagKey]
		if flag == "" {
			return Event{}, errf(ReasonMissingFlagKey, "%s without %s", name, attrFlagKey)
		}
		v := attrs[attrVariant]
		if v == "" {
			v = attrs[attrVariantOld]
		}
		if v == "" {
			v = attrs[attrFlagValue]
		}
		if v != "" {
			ev.Exposures = []Exposure{{Flag: flag, Variant: v}}
		}
	}
	return ev, nil
}

func flattenAttrs(as []otlpAttr) map[string]string {
	m := make(map[string]string, len(as))
	for _, a := range as {
		v := a.Value
		switch {
		case v.StringValue != nil:
			m[a.Key] = *v.StringValue
		case v.BoolValue != nil:
			m[a.Key] = strconv.FormatBool(*v.BoolValue)
		case v.IntValue != nil:
			m[a.Key] = scalar(v.IntValue)
		case v.DoubleValue != nil:
			m[a.Key] = strconv.FormatFloat(*v.DoubleValue, 'g', -1, 64)
		}
	}
	return m
}

// attrsJSON renders attributes as a flat properties object, sorted for stable bytes.
func attrsJSON(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, _ := json.Marshal(m[k])
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.String()
}

// recordMs places a log record by its time, else its observed time (OTLP: 0 or absent
// means unknown), else the Kafka record's time, under the one time rule.
func recordMs(rec *otlpRecord, recordTime time.Time) (int64, *Error) {
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"timeUnixNano", rec.TimeUnixNano}, {"observedTimeUnixNano", rec.ObservedTimeUnixNano}} {
		if !present(f.raw) || string(f.raw) == "0" || string(f.raw) == `"0"` {
			continue
		}
		ms, err := place(Times{Timestamp: f.raw}, recordTime)
		if err != nil {
			err.Detail = "logRecord." + f.name + ": " + err.Detail
		}
		return ms, err
	}
	return place(Times{}, recordTime)
}
