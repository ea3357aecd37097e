package event

import (
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// The time forms SDKs send (capture forwards them as sent).
func TestParseTime(t *testing.T) {
	for in, want := range map[string]string{
		`"2026-03-04T12:00:00Z"`:          "2026-03-04T12:00:00Z",
		`"2026-03-04T12:00:00.123456Z"`:   "2026-03-04T12:00:00.123Z",
		`"2026-03-04T14:00:00.5+02:00"`:   "2026-03-04T12:00:00.5Z",
		`"2026-03-04T14:05:04.805+02"`:    "2026-03-04T12:05:04.805Z",
		`"2026-03-04T14:05:04+0200"`:      "2026-03-04T12:05:04Z",
		`"2026-03-04T12:00:00"`:           "2026-03-04T12:00:00Z",
		`"2026-03-04 12:00:00"`:           "2026-03-04T12:00:00Z",
		`"2026-03-04 14:00:00+02:00"`:     "2026-03-04T12:00:00Z",
		`"2026-03-04"`:                    "2026-03-04T00:00:00Z",
		`" 2026-03-04T12:00:00Z "`:        "2026-03-04T12:00:00Z",
		`"2026-03-04T12:00:00\u005a"`:     "2026-03-04T12:00:00Z",
		`1772625600000`:                   "2026-03-04T12:00:00Z",
		`1772625600`:                      "2026-03-04T12:00:00Z",
		`1772625600.25`:                   "2026-03-04T12:00:00.25Z",
		`1772625600000000`:                "2026-03-04T12:00:00Z",
		`1772625600000000000`:             "2026-03-04T12:00:00Z",
		`"1772625600000"`:                 "2026-03-04T12:00:00Z",
		`"2026-03-04T12:00:00.000-00:00"`: "2026-03-04T12:00:00Z",
		`"0001-01-01T00:00:00Z"`:          "0001-01-01T00:00:00Z",
	} {
		got, err := parseTime(json.RawMessage(in))
		require.NoError(t, err, in)
		require.Equal(t, at(want).UnixMilli(), got, in)
	}
	for _, in := range []string{`"yesterday"`, `true`, `-5`, `0`, `"2026-13-01T00:00:00Z"`, `1e300`, `"1e300"`,
		`9.3e18`, `"NaN"`, `"Inf"`, `"2026-03-04T12:00:00Z`, `{}`, `[]`, `"\ud800"`} {
		_, err := parseTime(json.RawMessage(in))
		require.Error(t, err, in)
	}
}

// PostHog's rule (plugin-server timestamps.ts, rust capture parse_event_timestamp).
func TestPlace(t *testing.T) {
	now := at("2026-03-04T12:00:00Z")
	raw := func(s string) json.RawMessage {
		if s == "" {
			return nil
		}
		return json.RawMessage(s)
	}
	cases := []struct {
		name, timestamp, sentAt, offset, now string
		ignore                               bool
		want                                 string
	}{
		{name: "nothing: now", want: "2026-03-04T12:00:00Z"},
		{name: "null is absent", timestamp: "null", sentAt: "null", offset: "null", now: "null", want: "2026-03-04T12:00:00Z"},
		{name: "timestamp alone: as is", timestamp: `"2026-03-01T08:00:00Z"`, want: "2026-03-01T08:00:00Z"},
		{name: "client 2 h slow", timestamp: `"2026-03-04T09:59:50Z"`, sentAt: `"2026-03-04T10:00:00Z"`, want: "2026-03-04T11:59:50Z"},
		{name: "client 1 day fast", timestamp: `"2026-03-05T11:00:00Z"`, sentAt: `"2026-03-05T12:00:00Z"`, want: "2026-03-04T11:00:00Z"},
		{name: "sent_at ignored", timestamp: `"2026-03-01T08:00:00Z"`, sentAt: `"2026-03-05T12:00:00Z"`, ignore: true, want: "2026-03-01T08:00:00Z"},
		{name: "sent_at without timestamp: now", sentAt: `"2026-03-04T10:00:00Z"`, want: "2026-03-04T12:00:00Z"},
		{name: "offset wins", timestamp: `"2020-01-01T00:00:00Z"`, offset: "2500", want: "2026-03-04T11:59:57.5Z"},
		{name: "message now", now: `"2026-03-04T10:00:00Z"`, offset: "1000", want: "2026-03-04T09:59:59Z"},
		{name: "23 h ahead is kept", timestamp: `"2026-03-05T10:59:00Z"`, want: "2026-03-05T10:59:00Z"},
		{name: "over 23 h ahead: now", timestamp: `"2026-03-05T11:00:01Z"`, want: "2026-03-04T12:00:00Z"},
		{name: "skew-corrected into the future: now", timestamp: `"2026-03-06T00:00:00Z"`, sentAt: `"2026-03-04T00:00:00Z"`, want: "2026-03-04T12:00:00Z"},
		{name: "negative offset far ahead: now", offset: "-90000000", want: "2026-03-04T12:00:00Z"},
	}
	for _, c := range cases {
		got, err := Place(Times{Timestamp: raw(c.timestamp), SentAt: raw(c.sentAt), Offset: raw(c.offset), Now: raw(c.now),
			IgnoreSentAt: c.ignore}, now)
		require.NoError(t, err, c.name)
		require.Equal(t, at(c.want).UnixMilli(), got, "%s: got %s", c.name, time.UnixMilli(got).UTC())
	}
}

// FuzzPlace: any time inputs either place the event inside the store's range, never
// more than MaxFuture after now, or are a bad_timestamp error naming a field — never a
// panic, never a wrapped-around year.
func FuzzPlace(f *testing.F) {
	for _, s := range [][4]string{
		{`"2026-03-04T11:59:00Z"`, `"2026-03-04T12:00:00Z"`, ``, `"2026-03-04T12:00:05Z"`},
		{`1772625600`, ``, `1500`, ``},
		{`1e300`, `-1e300`, `1e300`, `"1900-01-01"`},
		{`"2026-03-04T14:05:04.805+02"`, `"2026-03-04"`, `-3600000`, `1772625600000`},
		{`"1969-12-31T23:59:59Z"`, `"\u0031"`, `"soon"`, `null`},
		{`9223372036854775807`, `0.5`, `-0`, `"2106-02-07T06:28:16Z"`},
	} {
		f.Add(s[0], s[1], s[2], s[3], false)
	}
	now := at("2026-03-04T12:00:00Z")
	raw := func(s string) json.RawMessage {
		if s == "" {
			return nil
		}
		return json.RawMessage(s)
	}
	f.Fuzz(func(t *testing.T, timestamp, sentAt, offset, nowS string, ignore bool) {
		in := Times{Timestamp: raw(timestamp), SentAt: raw(sentAt), Offset: raw(offset), Now: raw(nowS), IgnoreSentAt: ignore}
		ms, err := place(in, now)
		if err != nil {
			require.Equal(t, ReasonBadTimestamp, err.Reason)
			require.Regexp(t, `^(now|timestamp|sent_at|offset)\b`, err.Detail)
			return
		}
		require.GreaterOrEqual(t, ms, MinTime.UnixMilli())
		require.LessOrEqual(t, ms, MaxTime.UnixMilli()+999)
		ref := now.UnixMilli()
		if present(in.Now) {
			ref, _ = parseTime(in.Now)
		}
		require.LessOrEqual(t, ms-ref, MaxFuture.Milliseconds(), "placed more than 23 h after now")
	})
}
