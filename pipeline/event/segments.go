package event

import "strings"

// featurePrefix starts the property that carries another flag's variant.
const featurePrefix = "$feature/"

// maxSegmentLen bounds a segment property's key and value, in bytes of their JSON text.
// Longer values (URLs, user agents, free text) are not segments.
const maxSegmentLen = 100

// notSegments are properties unique per event, session or user: never a segment, and
// keeping them would make every exposure's segment set distinct. The exposure's own flag
// and variant are not segments of that flag either, nor are the other flags' variants
// ($feature/<key>, featurePrefix): posthog-js puts every active flag on every event, and
// 20–50 flags' variants make every user's set distinct.
var notSegments = map[string]bool{
	"$session_id": true, "$window_id": true, "$insert_id": true, "$pageview_id": true,
	"$device_id": true, "$anon_distinct_id": true, "distinct_id": true, "$user_id": true,
	"uuid": true, "token": true, "$time": true, "$timestamp": true, "$sent_at": true,
	"$feature_flag": true, "$feature_flag_response": true, "$feature_flag_payload": true,
}

// SegmentProps returns the segment properties of an exposure's properties object (JSON
// text): its members with a string value, at any depth and in their order, as a JSON
// object, less keys or values over maxSegmentLen bytes and the notSegments. Nested
// members are kept in place so that the first occurrence of a name is the same one a
// search of the whole object finds ("plan" inside "$set" before a top-level "plan").
//
// The result is what users share: per-event noise is gone, so a handful of distinct sets
// stand for millions of exposures, and the assignment state stores a set's hash instead
// of a properties object per (flag, user). Malformed JSON yields the members read before
// the error.
func SegmentProps(props string) string {
	var b strings.Builder
	b.WriteByte('{')
	n := 0
	i := 0
	for i < len(props) {
		c := props[i]
		if c != '"' {
			i++
			continue
		}
		// A string: a key if a ':' follows, else a value (or an array element), skipped.
		end, ok := stringEnd(props, i)
		if !ok {
			break
		}
		j := skipSpace(props, end)
		if j >= len(props) || props[j] != ':' {
			i = end
			continue
		}
		key := props[i:end]
		j = skipSpace(props, j+1)
		if j >= len(props) || props[j] != '"' {
			i = j // a non-string value: numbers, objects and arrays are scanned on
			continue
		}
		vend, ok := stringEnd(props, j)
		if !ok {
			break
		}
		val := props[j:vend]
		if len(key)-2 <= maxSegmentLen && len(val)-2 <= maxSegmentLen && len(key) > 2 && !notSegments[key[1:len(key)-1]] &&
			!strings.HasPrefix(key, `"`+featurePrefix) {
			if n > 0 {
				b.WriteByte(',')
			}
			b.WriteString(key)
			b.WriteByte(':')
			b.WriteString(val)
			n++
		}
		i = vend
	}
	b.WriteByte('}')
	return b.String()
}

// stringEnd returns the index just past the JSON string starting at s[i] == '"'.
func stringEnd(s string, i int) (int, bool) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}
