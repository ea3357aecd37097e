package event

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireReason decodes msg and requires a *Error with reason.
func requireReason(t *testing.T, msg, reason string) *Error {
	t.Helper()
	_, err := Decode([]byte(msg), recTime)
	var e *Error
	require.True(t, errors.As(err, &e), "%.80q: want *Error, got %v", msg, err)
	require.Equal(t, reason, e.Reason, "%.80q: %v", msg, err)
	return e
}

// A nesting bomb (issue 12, finding 1): ~2 M nested brackets, alone, inside an event's
// properties, in an array message and inside an envelope's data, is rejected with a
// reason; none reaches a recursive parser.
func TestNestingBombIsRejected(t *testing.T) {
	bomb := strings.Repeat("[", 2<<20)
	for name, msg := range map[string]string{
		"bare":          bomb,
		"closed":        bomb + strings.Repeat("]", 2<<20),
		"in properties": `{"event":"x","distinct_id":"u","properties":{"a":` + bomb + `}}`,
		"in an array":   `[{"event":"x","distinct_id":"u"},` + bomb + `]`,
		"in envelope":   `{"uuid":"u","now":"2026-11-20T10:00:00Z","data":"{\"event\":\"x\",\"distinct_id\":\"u\",\"properties\":{\"a\":` + bomb + `}}"}`,
	} {
		t.Run(name, func(t *testing.T) {
			e := requireReason(t, msg, ReasonTooDeep)
			require.Contains(t, e.Detail, "nested deeper than 128")
		})
	}
	// At the limit a message is still decoded.
	deep := strings.Repeat(`{"a":`, MaxDepth-1) + `1` + strings.Repeat(`}`, MaxDepth-1)
	evs, err := Decode([]byte(`{"event":"x","distinct_id":"u","properties":`+deep+`}`), recTime)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	requireReason(t, `{"event":"x","distinct_id":"u","properties":{"b":`+deep+`}}`, ReasonTooDeep)
}

// Every time input is bounded (issue 12, finding 7): what cannot be placed in the store's
// range (1970-01-01 to 2106-02-07, ClickHouse's DateTime) is dead-lettered as
// bad_timestamp with the field named; old but representable times are kept, and times
// more than 23 h ahead of the server are placed at the server's time, as PostHog does.
func TestTimesAreBoundedAndValidated(t *testing.T) {
	ev := func(fields string) string { return `{"event":"e","distinct_id":"u",` + fields + `}` }
	rejected := map[string]string{ // message → field named in the detail
		ev(`"offset":1e300`):                                      "offset",
		ev(`"offset":-1e300`):                                     "offset",
		ev(`"offset":"soon"`):                                     "offset",
		ev(`"timestamp":1e300`):                                   "timestamp",
		ev(`"timestamp":"1e300"`):                                 "timestamp",
		ev(`"timestamp":9.3e18`):                                  "timestamp",
		ev(`"timestamp":"1900-01-01T00:00:00Z"`):                  "timestamp",
		ev(`"timestamp":"1969-12-31T23:59:59Z"`):                  "timestamp",
		ev(`"timestamp":"yesterday"`):                             "timestamp",
		ev(`"timestamp":-5`):                                      "timestamp",
		ev(`"timestamp":1e300,"offset":1000`):                     "timestamp", // every input is checked, even one the offset overrides
		ev(`"offset":5e12`):                                       "offset",
		ev(`"sent_at":"soon","timestamp":"2026-11-20T11:00:00Z"`): "sent_at",
		ev(`"now":"2200-01-01T00:00:00Z"`):                        "now",
		ev(`"now":"1900-01-01T00:00:00Z","timestamp":"2026-11-20T11:00:00Z","sent_at":"2026-11-20T11:00:00Z"`):                                                   "now",
		ev(`"now":"2026-11-20T12:00:00Z","timestamp":"1960-01-01T00:00:00Z","sent_at":"2026-11-20T11:00:00Z"`):                                                   "timestamp",
		`{"name":"feature_flag.evaluation","timestamp":"1900-01-01T00:00:00Z","attributes":{"feature_flag.key":"k","feature_flag.context.id":"u"}}`:              "timestamp",
		`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"-5","eventName":"e","attributes":[{"key":"user.id","value":{"stringValue":"u"}}]}]}]}]}`: "timeUnixNano",
	}
	for msg, field := range rejected {
		e := requireReason(t, msg, ReasonBadTimestamp)
		require.Contains(t, e.Detail, field, msg)
	}
	placed := map[string]time.Time{
		ev(`"timestamp":"2015-06-01T12:00:00Z"`):                                  time.Date(2015, 6, 1, 12, 0, 0, 0, time.UTC),
		ev(`"timestamp":"1970-01-01T00:00:00Z"`):                                  time.Unix(0, 0),
		ev(`"timestamp":"2026-11-21T10:59:00Z"`):                                  time.Date(2026, 11, 21, 10, 59, 0, 0, time.UTC), // 22 h 59 m ahead
		ev(`"timestamp":"2026-11-21T11:00:01Z"`):                                  recTime,                                         // over 23 h ahead: now
		ev(`"timestamp":"2200-01-01T00:00:00Z"`):                                  recTime,
		ev(`"offset":-3600000`):                                                   recTime.Add(time.Hour),
		ev(`"timestamp":"2020-01-01T00:00:00Z","offset":1000`):                    recTime.Add(-time.Second), // the offset wins, as in PostHog
		ev(`"offset":2500.5`):                                                     recTime.Add(-2500 * time.Millisecond),
		ev(`"timestamp":"2026-11-20T10:00:00Z","sent_at":"2026-11-20T10:00:10Z"`): recTime.Add(-10 * time.Second),
		ev(`"timestamp":"2026-11-20T10:00:00Z","sent_at":"2026-11-20T10:00:10Z","properties":{"$ignore_sent_at":true}`): time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC),
		ev(`"timestamp":"1969-06-01T00:00:00Z","sent_at":"1969-06-01T00:01:00Z"`):                                       recTime.Add(-time.Minute), // a clock set to 1969: its differences still count
		ev(`"now":"2026-11-20T08:00:00Z","timestamp":"2026-11-20T09:00:00Z","sent_at":"2026-11-20T09:00:05Z"`):          time.Date(2026, 11, 20, 7, 59, 55, 0, time.UTC),
	}
	for msg, want := range placed {
		evs, err := Decode([]byte(msg), recTime)
		require.NoError(t, err, msg)
		require.Equal(t, want.UnixMilli(), evs[0].TsMs, "%s: got %s", msg, time.UnixMilli(evs[0].TsMs).UTC())
	}
}

// Names that become sort keys are bounded (issue 12, finding 8): an event name, a flag
// key (from $feature_flag or a $feature/<key> property) or a variant longer than 200
// bytes or with a control character is dead-lettered as bad_name; quotes and
// backslashes are kept, since names are matched as columns, never inside JSON.
func TestNamesAreBounded(t *testing.T) {
	long := strings.Repeat("n", MaxNameBytes+1)
	for _, msg := range []string{
		`{"event":"` + long + `","distinct_id":"u"}`,
		`{"event":"line\nbreak","distinct_id":"u"}`,
		`{"event":"$feature_flag_called","distinct_id":"u","properties":{"$feature_flag":"` + long + `","$feature_flag_response":"a"}}`,
		`{"event":"$feature_flag_called","distinct_id":"u","properties":{"$feature_flag":"f","$feature_flag_response":"` + long + `"}}`,
		`{"event":"$pageview","distinct_id":"u","properties":{"$feature/` + long + `":"a"}}`,
		`{"event":"$pageview","distinct_id":"u","properties":{"$feature/tab\there":"a"}}`,
		`{"name":"feature_flag.evaluation","attributes":{"feature_flag.key":"` + long + `","feature_flag.result.variant":"on","feature_flag.context.id":"u"}}`,
	} {
		e := requireReason(t, msg, ReasonBadName)
		require.Regexp(t, `longer than 200|control character`, e.Detail)
	}
	requireReason(t, `{"event":"e","distinct_id":"`+strings.Repeat("d", MaxDistinctIDBytes+1)+`"}`, ReasonBadUser)

	evs, err := Decode([]byte(`{"event":"say \"hi\" \\ o/","distinct_id":"u","properties":{"$feature/a\"b":"x","k\\\"ey":1}}`), recTime)
	require.NoError(t, err)
	require.Equal(t, `say "hi" \ o/`, evs[0].Name)
	require.Equal(t, []Exposure{{Flag: `a"b`, Variant: "x"}}, evs[0].Exposures)
	evs, err = Decode([]byte(`{"event":"`+long[1:]+`","distinct_id":"u"}`), recTime)
	require.NoError(t, err, "200 bytes is within the limit")
	require.Len(t, evs[0].Name, MaxNameBytes)
}
