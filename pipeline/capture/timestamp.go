package capture

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
)

// maxFuture is how far ahead of the server an event may claim to be; PostHog uses
// 23 h and replaces anything later with now.
const maxFuture = 23 * time.Hour

// clientTimes is what a client says about an event's time.
type clientTimes struct {
	timestamp time.Time // zero: none or unparseable
	sentAt    time.Time // zero: none, unparseable, or ignored
	offsetMs  float64
	hasOffset bool
}

// eventTime applies PostHog's clock-skew correction. The client's clock may be wrong but
// its differences are right: an event stamped 3 s before the request was sent happened
// 3 s before the server received it.
func eventTime(now time.Time, c clientTimes) time.Time {
	t := now
	switch {
	case c.hasOffset:
		t = now.Add(-time.Duration(c.offsetMs * float64(time.Millisecond)))
	case !c.timestamp.IsZero() && !c.sentAt.IsZero():
		t = now.Add(c.timestamp.Sub(c.sentAt))
	case !c.timestamp.IsZero():
		t = c.timestamp
	}
	if t.Sub(now) > maxFuture {
		t = now
	}
	return t.UTC()
}

// timeLayouts are the timestamp forms SDKs send, most common first. A form without a
// zone is UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z07",   // "+03"
	"2006-01-02T15:04:05.999999999Z0700", // "+0300"
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// parseTime reads a JSON timestamp: a string in one of timeLayouts, or a number of
// Unix milliseconds (seconds when below 1e11). ok is false when absent or unparseable.
func parseTime(raw json.RawMessage) (time.Time, bool) {
	if isAbsent(raw) {
		return time.Time{}, false
	}
	if raw[0] != '"' {
		return parseEpoch(string(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return time.Time{}, false
	}
	return parseTimeString(strings.TrimSpace(s))
}

func parseTimeString(s string) (time.Time, bool) {
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return parseEpoch(s)
}

func parseEpoch(s string) (time.Time, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
		return time.Time{}, false
	}
	if f < 1e11 {
		f *= 1000
	}
	return time.UnixMilli(int64(f)).UTC(), true
}

// querySentAt reads posthog-js's ?_= parameter: the send time in Unix milliseconds.
// Values before 2021 are taken for seconds from older SDKs and ignored, as PostHog does.
func querySentAt(v string) time.Time {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	t := time.UnixMilli(ms).UTC()
	if t.Year() <= 2020 {
		return time.Time{}
	}
	return t
}
