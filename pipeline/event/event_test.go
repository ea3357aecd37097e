package event

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

var recTime = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func TestDecodeShapes(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want []Event // UUID zero = deterministic, checked separately
	}{
		{
			name: "posthog exposure with boolean response",
			msg:  `{"uuid":"0190d7a2-1b2c-7def-8123-456789abcdef","event":"$feature_flag_called","distinct_id":42,"timestamp":"2026-11-20T10:00:00.250Z","properties":{"$feature_flag":"new-checkout","$feature_flag_response":true,"$geoip_country_code":"GB"}}`,
			want: []Event{{UUID: uuid.MustParse("0190d7a2-1b2c-7def-8123-456789abcdef"), Name: "$feature_flag_called", DistinctID: "42",
				TsMs: time.Date(2026, 11, 20, 10, 0, 0, 250e6, time.UTC).UnixMilli(), Source: SourcePostHog,
				Properties: `{"$feature_flag":"new-checkout","$feature_flag_response":true,"$geoip_country_code":"GB"}`,
				Exposures:  []Exposure{{Flag: "new-checkout", Variant: "true"}}}},
		},
		{
			name: "distinct_id in properties and $feature props",
			msg:  `{"event":"purchase","timestamp":1763632800,"properties":{"$distinct_id":"u1","revenue":12.5,"$feature/b":"test","$feature/a":false}}`,
			want: []Event{{Name: "purchase", DistinctID: "u1", TsMs: 1763632800000, Source: SourcePostHog,
				Properties: `{"$distinct_id":"u1","revenue":12.5,"$feature/b":"test","$feature/a":false}`,
				Exposures:  []Exposure{{Flag: "a", Variant: "false"}, {Flag: "b", Variant: "test"}}}},
		},
		{
			name: "array of events, no timestamp uses record time",
			msg:  `[{"event":"$pageview","distinct_id":"u1"},{"event":"$pageview","properties":{"distinct_id":"u2"}}]`,
			want: []Event{
				{Name: "$pageview", DistinctID: "u1", TsMs: recTime.UnixMilli(), Source: SourcePostHog, Properties: "{}"},
				{Name: "$pageview", DistinctID: "u2", TsMs: recTime.UnixMilli(), Source: SourcePostHog, Properties: `{"distinct_id":"u2"}`},
			},
		},
		{
			name: "posthog envelope with clock skew correction",
			// The client clock is 1 h fast: sent_at 11:00 client time arrives at now 10:00.
			msg: `{"uuid":"0190d7a2-1b2c-7def-8123-456789abcde0","distinct_id":"u9","ip":"1.2.3.4","now":"2026-11-20T10:00:00Z","sent_at":"2026-11-20T11:00:00Z","token":"phc","data":"{\"event\":\"purchase\",\"timestamp\":\"2026-11-20T10:59:00Z\",\"properties\":{\"revenue\":3}}"}`,
			want: []Event{{UUID: uuid.MustParse("0190d7a2-1b2c-7def-8123-456789abcde0"), Name: "purchase", DistinctID: "u9",
				TsMs: time.Date(2026, 11, 20, 9, 59, 0, 0, time.UTC).UnixMilli(), Source: SourceEnvelope, Properties: `{"revenue":3}`}},
		},
		{
			name: "otel flat evaluation",
			msg:  `{"name":"feature_flag.evaluation","timestamp":"2026-11-20T10:00:00Z","attributes":{"feature_flag.key":"k","feature_flag.result.variant":"on","feature_flag.context.id":"u3","feature_flag.provider.name":"flagd"}}`,
			want: []Event{{Name: "feature_flag.evaluation", DistinctID: "u3", TsMs: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC).UnixMilli(), Source: SourceOTelFlat,
				Properties: `{"feature_flag.context.id":"u3","feature_flag.key":"k","feature_flag.provider.name":"flagd","feature_flag.result.variant":"on"}`,
				Exposures:  []Exposure{{Flag: "k", Variant: "on"}}}},
		},
		{
			name: "otlp json logs, old variant attribute, plain log skipped",
			msg: `{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},"scopeLogs":[{"logRecords":[
				{"timeUnixNano":"1763632800000000000","eventName":"feature_flag.evaluation","attributes":[{"key":"feature_flag.key","value":{"stringValue":"k"}},{"key":"feature_flag.variant","value":{"stringValue":"blue"}},{"key":"feature_flag.context.id","value":{"stringValue":"u4"}}]},
				{"timeUnixNano":"1763632800000000000","body":{"stringValue":"GET /"}}]}]}]}`,
			want: []Event{{Name: "feature_flag.evaluation", DistinctID: "u4", TsMs: 1763632800000, Source: SourceOTLP,
				Properties: `{"feature_flag.context.id":"u4","feature_flag.key":"k","feature_flag.variant":"blue"}`,
				Exposures:  []Exposure{{Flag: "k", Variant: "blue"}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.msg), recTime)
			require.NoError(t, err)
			require.Len(t, got, len(tt.want))
			for i := range got {
				if tt.want[i].UUID == uuid.Nil {
					require.NotEqual(t, uuid.Nil, got[i].UUID)
					tt.want[i].UUID = got[i].UUID
				}
				require.Equal(t, tt.want[i], got[i])
			}
			again, err := Decode([]byte(tt.msg), recTime)
			require.NoError(t, err)
			require.Equal(t, got, again, "decoding is deterministic, so replays deduplicate")
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct{ msg, reason string }{
		{``, ReasonEmpty},
		{`not json`, ReasonInvalidJSON},
		{`{"event":"x","distinct_id":"u"`, ReasonInvalidJSON},
		{`{"distinct_id":"u"}`, ReasonMissingEvent},
		{`{"event":"x"}`, ReasonMissingUser},
		{`{"event":"x","distinct_id":{"a":1}}`, ReasonMissingUser},
		{`{"event":"x","distinct_id":"u","timestamp":"yesterday"}`, ReasonBadTimestamp},
		{`[{"event":"x","distinct_id":"u"},{"event":"y"}]`, ReasonMissingUser},
		{`{"event":"$feature_flag_called","distinct_id":"u","properties":{}}`, ReasonMissingFlagKey},
		{`{"uuid":"x","data":"{not json"}`, ReasonBadEnvelope},
		{`{"name":"feature_flag.evaluation","attributes":{"feature_flag.key":"k"}}`, ReasonMissingUser},
		{`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}`, ReasonEmpty},
		{`[]`, ReasonEmpty},
	}
	for _, tt := range tests {
		_, err := Decode([]byte(tt.msg), recTime)
		var e *Error
		require.True(t, errors.As(err, &e), "%q: want *Error, got %v", tt.msg, err)
		require.Equal(t, tt.reason, e.Reason, "%q: %v", tt.msg, err)
	}
}

func TestDeterministicUUIDDiffersByContent(t *testing.T) {
	a, err := Decode([]byte(`{"event":"x","distinct_id":"u","timestamp":1763632800}`), recTime)
	require.NoError(t, err)
	b, err := Decode([]byte(`{"event":"x","distinct_id":"u","timestamp":1763632801}`), recTime)
	require.NoError(t, err)
	require.NotEqual(t, a[0].UUID, b[0].UUID)
}

// FuzzDecode: any input either decodes into events that carry a name, a user and a uuid,
// or yields an *Error with a known reason — never a panic, never a half-valid event.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"event":"$pageview","distinct_id":"u1","properties":{"$feature/x":"a"}}`,
		`[{"event":"a","distinct_id":1}]`,
		`{"data":"{\"event\":\"e\",\"distinct_id\":\"d\"}","now":"2026-01-01T00:00:00Z","sent_at":"2026-01-01T00:00:01Z"}`,
		`{"name":"feature_flag.evaluation","attributes":{"feature_flag.key":"k","feature_flag.context.id":"u"}}`,
		`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"eventName":"e","attributes":[{"key":"user.id","value":{"intValue":"5"}}]}]}]}]}`,
		`{"event":"e","distinct_id":"u","timestamp":1e300,"offset":-1e300,"sent_at":"1900-01-01","now":"2200-01-01T00:00:00Z"}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
	} {
		f.Add([]byte(s))
	}
	reasons := map[string]bool{ReasonInvalidJSON: true, ReasonUnknownShape: true, ReasonMissingEvent: true,
		ReasonMissingUser: true, ReasonBadTimestamp: true, ReasonBadEnvelope: true, ReasonEmpty: true, ReasonMissingFlagKey: true,
		ReasonTooDeep: true, ReasonBadName: true, ReasonBadUser: true}
	f.Fuzz(func(t *testing.T, msg []byte) {
		evs, err := Decode(msg, recTime)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !reasons[e.Reason] {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		for _, ev := range evs {
			if ev.Name == "" || ev.DistinctID == "" || ev.UUID == uuid.Nil || ev.Properties == "" {
				t.Fatalf("half-valid event %+v from %q", ev, msg)
			}
			if ev.TsMs < MinTime.UnixMilli() || ev.TsMs > MaxTime.UnixMilli()+999 {
				t.Fatalf("time %d outside the store's range from %q", ev.TsMs, msg)
			}
			if len(ev.Name) > MaxNameBytes || len(ev.DistinctID) > MaxDistinctIDBytes {
				t.Fatalf("unbounded name or user from %q", msg)
			}
		}
	})
}
