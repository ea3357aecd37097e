package capture

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

// The rules of PostHog's parse_event_timestamp (rust/capture … timestamp handling).
func TestEventTime(t *testing.T) {
	now := at("2026-03-04T12:00:00Z")
	cases := []struct {
		name string
		in   clientTimes
		want string
	}{
		{"nothing: now", clientTimes{}, "2026-03-04T12:00:00Z"},
		{"timestamp alone: as is", clientTimes{timestamp: at("2026-03-01T08:00:00Z")}, "2026-03-01T08:00:00Z"},
		{"client 2 h slow", clientTimes{timestamp: at("2026-03-04T09:59:50Z"), sentAt: at("2026-03-04T10:00:00Z")},
			"2026-03-04T11:59:50Z"},
		{"client 1 day fast", clientTimes{timestamp: at("2026-03-05T11:00:00Z"), sentAt: at("2026-03-05T12:00:00Z")},
			"2026-03-04T11:00:00Z"},
		{"sent_at without timestamp: now", clientTimes{sentAt: at("2026-03-04T10:00:00Z")}, "2026-03-04T12:00:00Z"},
		{"offset wins", clientTimes{timestamp: at("2020-01-01T00:00:00Z"), offsetMs: 2500, hasOffset: true},
			"2026-03-04T11:59:57.5Z"},
		{"23 h ahead is kept", clientTimes{timestamp: at("2026-03-05T10:59:00Z")}, "2026-03-05T10:59:00Z"},
		{"over 23 h ahead: now", clientTimes{timestamp: at("2026-03-05T11:00:01Z")}, "2026-03-04T12:00:00Z"},
	}
	for _, c := range cases {
		require.Equal(t, at(c.want), eventTime(now, c.in), c.name)
	}
}

func TestParseTime(t *testing.T) {
	for in, want := range map[string]string{
		`"2026-03-04T12:00:00Z"`:          "2026-03-04T12:00:00Z",
		`"2026-03-04T12:00:00.123456Z"`:   "2026-03-04T12:00:00.123456Z",
		`"2026-03-04T14:00:00.5+02:00"`:   "2026-03-04T12:00:00.5Z",
		`"2026-03-04T14:05:04.805+02"`:    "2026-03-04T12:05:04.805Z",
		`"2026-03-04T14:05:04+0200"`:      "2026-03-04T12:05:04Z",
		`"2026-03-04T12:00:00"`:           "2026-03-04T12:00:00Z",
		`"2026-03-04 12:00:00"`:           "2026-03-04T12:00:00Z",
		`"2026-03-04"`:                    "2026-03-04T00:00:00Z",
		`1772625600000`:                   "2026-03-04T12:00:00Z",
		`1772625600`:                      "2026-03-04T12:00:00Z",
		`"1772625600000"`:                 "2026-03-04T12:00:00Z",
		`"2026-03-04T12:00:00.000-00:00"`: "2026-03-04T12:00:00Z",
	} {
		got, ok := parseTime(json.RawMessage(in))
		require.True(t, ok, in)
		require.Equal(t, at(want), got, in)
	}
	for _, in := range []string{``, `null`, `"yesterday"`, `true`, `-5`, `"2026-13-01T00:00:00Z"`} {
		_, ok := parseTime(json.RawMessage(in))
		require.False(t, ok, in)
	}
}

func TestQuerySentAt(t *testing.T) {
	require.Equal(t, at("2026-03-04T12:00:00Z"), querySentAt("1772625600000"))
	require.True(t, querySentAt("1772625600").IsZero(), "seconds from old SDKs are ignored")
	require.True(t, querySentAt("soon").IsZero())
}
