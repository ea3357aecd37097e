package event

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
)

// The time rule. An event's time is placed once, here, by the decoder ingest runs on
// every message, whatever carried it: capture's messages, PostHog's captured envelope,
// events a service produced straight to Kafka, OpenTelemetry records. Capture does not
// correct times: it forwards what the client said (timestamp, sent_at, offset) with its
// own receive time (now), as PostHog's capture does, so there is one rule in one place
// and a message on the topic never carries an already-corrected time that a second
// correction would shift again.
//
// The rule is PostHog's (plugin-server timestamps.ts, rust capture's
// parse_event_timestamp), with now the message's "now" (capture's clock when it
// received the request), else the Kafka record's time:
//   - offset (ms before now) present: now − offset;
//   - else timestamp and sent_at (unless properties.$ignore_sent_at is true):
//     now + (timestamp − sent_at) — the client's clock may be wrong, its differences
//     are right;
//   - else timestamp as sent; else now;
//   - a time more than 23 h after now is replaced by now.
//
// Unlike PostHog, which replaces an unusable time silently, every present input must be
// a time and the result must fit the store (ClickHouse's DateTime: 1970-01-01 to
// 2106-02-07); otherwise the message is rejected as bad_timestamp naming the field.

// MaxFuture is how far ahead of now an event may be placed; later ones are placed at
// now (PostHog: FUTURE_EVENT_HOURS_CUTOFF_MILLIS).
const MaxFuture = 23 * time.Hour

// The range the store holds: DateTime is a UInt32 of Unix seconds.
var (
	MinTime = time.Unix(0, 0).UTC()
	MaxTime = time.Unix(math.MaxUint32, 0).UTC()
)

var (
	minMs = MinTime.UnixMilli()
	maxMs = MaxTime.UnixMilli() + 999
)

// maxOffsetMs bounds an offset: no two times the store holds are further apart.
const maxOffsetMs = float64(math.MaxUint32) * 1000

// Times are what a message says about an event's time, as raw JSON values; absent
// (nil) and null are the same.
type Times struct {
	Timestamp    json.RawMessage // the event's time by the client's clock
	SentAt       json.RawMessage // when the client sent it, by the same clock
	Offset       json.RawMessage // milliseconds between the event and now
	Now          json.RawMessage // when the server received it
	IgnoreSentAt bool            // properties.$ignore_sent_at: no clock-skew correction
}

// Place applies the time rule and returns the event's time in Unix milliseconds, or a
// *Error with ReasonBadTimestamp naming the field that cannot be placed. recordTime
// stands in for a missing now.
func Place(t Times, recordTime time.Time) (int64, error) {
	ms, err := place(t, recordTime)
	if err != nil {
		return 0, err
	}
	return ms, nil
}

func place(t Times, recordTime time.Time) (int64, *Error) {
	now := recordTime.UnixMilli()
	if present(t.Now) {
		n, err := parseTime(t.Now)
		if err != nil {
			return 0, badTime("now", t.Now, err)
		}
		now = n
	}
	var ts, sent, offset int64
	hasTS, hasSent, hasOffset := present(t.Timestamp), present(t.SentAt) && !t.IgnoreSentAt, present(t.Offset)
	var err error
	if hasTS {
		if ts, err = parseTime(t.Timestamp); err != nil {
			return 0, badTime("timestamp", t.Timestamp, err)
		}
	}
	if hasSent {
		if sent, err = parseTime(t.SentAt); err != nil {
			return 0, badTime("sent_at", t.SentAt, err)
		}
	}
	if hasOffset {
		if offset, err = parseOffset(t.Offset); err != nil {
			return 0, badTime("offset", t.Offset, err)
		}
	}
	ms, from := now, "now"
	switch {
	case hasOffset:
		ms, from = now-offset, "now − offset"
	case hasTS && hasSent:
		ms, from = now+(ts-sent), "now + (timestamp − sent_at)"
	case hasTS:
		ms, from = ts, "timestamp"
	}
	if ms-now > MaxFuture.Milliseconds() {
		ms, from = now, "now" // PostHog's rule: the client's clock cannot be that wrong
	}
	switch {
	case ms < minMs:
		return 0, errf(ReasonBadTimestamp, "%s is %s, before %s, the earliest time the store holds", from, fmtMs(ms), MinTime.Format(time.RFC3339))
	case ms > maxMs:
		return 0, errf(ReasonBadTimestamp, "%s is %s, after %s, the latest time the store holds", from, fmtMs(ms), MaxTime.Format(time.RFC3339))
	}
	return ms, nil
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && !isNull(raw) }

func badTime(field string, raw json.RawMessage, err error) *Error {
	return errf(ReasonBadTimestamp, "%s %s: %v", field, truncate(raw, 64), err)
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// fmtMs formats Unix milliseconds as RFC 3339 where time can (years 0–9999).
func fmtMs(ms int64) string {
	t := time.UnixMilli(ms).UTC()
	if t.Year() < 0 || t.Year() > 9999 {
		return strconv.FormatInt(ms, 10) + " ms after 1970"
	}
	return t.Format("2006-01-02T15:04:05.999Z07:00")
}

// parseOffset reads an offset: a JSON number of milliseconds, finite and within the
// span of times the store holds.
func parseOffset(raw json.RawMessage) (int64, error) {
	if raw[0] == '"' {
		return 0, fmt.Errorf("must be a number of milliseconds")
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("must be a number of milliseconds")
	}
	if math.Abs(f) > maxOffsetMs {
		return 0, fmt.Errorf("more than %.0f ms, beyond any time the store holds", maxOffsetMs)
	}
	return int64(f), nil
}

// parseTime reads a time value as SDKs send it: a string in one of timeLayouts (a form
// without a zone is UTC), or Unix seconds, milliseconds, microseconds or nanoseconds as
// a number or a numeric string (told apart by magnitude). It returns Unix
// milliseconds; anything else, and numbers beyond any Unix time in nanoseconds, are an
// error.
func parseTime(raw json.RawMessage) (int64, error) {
	if raw[0] != '"' {
		return parseUnix(string(raw))
	}
	if bytes.IndexByte(raw, '\\') < 0 && len(raw) >= 2 && raw[len(raw)-1] == '"' {
		return parseTimeString(string(raw[1 : len(raw)-1]))
	}
	return parseEscapedTime(raw)
}

// parseEscapedTime is parseTime for a string with escapes (apart, so that the common
// case does not pay for the heap string Unmarshal needs).
func parseEscapedTime(raw json.RawMessage) (int64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("not a JSON string: %v", err)
	}
	return parseTimeString(s)
}

// timeLayouts are the timestamp forms SDKs send, most common first.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04:05.999999999Z07",   // "+03"
	"2006-01-02T15:04:05.999999999Z0700", // "+0300"
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// errNotATime is what parseTimeString says about anything it cannot read.
var errNotATime = fmt.Errorf("not a time (RFC 3339 / ISO 8601, or Unix seconds, ms, µs or ns)")

func parseTimeString(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 10 && isDigit(s[0]) && s[4] == '-' { // a date: skip ParseFloat's work
		for _, l := range timeLayouts {
			if t, err := time.Parse(l, s); err == nil {
				return t.UnixMilli(), nil
			}
		}
		return 0, errNotATime
	}
	return parseUnix(s)
}

// parseUnix reads a Unix time; its unit follows from its magnitude: below 1e11
// seconds (until 5138), below 1e14 milliseconds, below 1e17 microseconds, below 2⁶³
// nanoseconds (until 2262).
func parseUnix(s string) (int64, error) {
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && f == 0, math.IsNaN(f):
		return 0, errNotATime
	case f <= 0:
		return 0, fmt.Errorf("not a positive Unix time")
	case f < 1e11:
		return int64(f * 1e3), nil
	case f < 1e14:
		return int64(f), nil
	case f < 1e17:
		return int64(f) / 1e3, nil
	case f < math.MaxInt64:
		return int64(f) / 1e6, nil
	default:
		return 0, fmt.Errorf("beyond any Unix time (the largest is 2⁶³ ns, in 2262)")
	}
}
