package event

import "fmt"

// Limits on the strings that become ClickHouse sort and grouping keys: the event name
// (events are ordered by event, distinct_id, …), flag keys and variants (exposures by
// flag, distinct_id, …; cells by flag, variant, segment). A megabyte-long name would be
// copied into every index mark and every grouped row, and a name with a newline breaks
// every one-line log, CSV export and Slack message that shows it.
const (
	// MaxNameBytes bounds event names, flag keys and variants (PostHog limits
	// distinct_id to 200 characters; names are no longer in practice).
	MaxNameBytes = 200
	// MaxDistinctIDBytes bounds distinct_id: capture truncates ids to PostHog's 200
	// characters (at most 800 bytes of UTF-8); this bounds producers that bypass it.
	MaxDistinctIDBytes = 1024
)

// checkEvent checks a decoded event's names and user against the limits above.
//
// A quote or backslash in a name is kept: names are their own columns, matched with
// equality through a quoted SQL literal, so any character matches. Property keys are
// not checked: an odd key nobody measures must not cost the event, and only the
// configured metric and segment properties are looked up (by visitParamExtract*, which
// compares a key's JSON text and so cannot find a key that needs escaping; the monitors
// file is the place to refuse such names).
func checkEvent(ev *Event) *Error {
	if err := checkName("event name", ev.Name); err != nil {
		return err
	}
	if len(ev.DistinctID) > MaxDistinctIDBytes {
		return errf(ReasonBadUser, "distinct_id is %d bytes, longer than %d", len(ev.DistinctID), MaxDistinctIDBytes)
	}
	for _, x := range ev.Exposures {
		if err := checkName("flag key", x.Flag); err != nil {
			return err
		}
		if err := checkName("variant", x.Variant); err != nil {
			err.Detail = fmt.Sprintf("flag %q: %s", x.Flag, err.Detail)
			return err
		}
	}
	return nil
}

func checkName(what, s string) *Error {
	if len(s) > MaxNameBytes {
		return errf(ReasonBadName, "%s %q… is %d bytes, longer than %d", what, truncateRunes(s, 40), len(s), MaxNameBytes)
	}
	for i, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return errf(ReasonBadName, "%s %q has a control character at byte %d", what, s, i)
		}
	}
	return nil
}

func truncateRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}
