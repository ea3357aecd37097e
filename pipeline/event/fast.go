package event

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// The fast path. Almost every message on the events topic is one PostHog event object
// with plain string fields and an object of properties. fastPostHog decodes exactly that
// shape in one pass over the bytes, without reflection and without copying anything but
// the strings it returns, and declines (ok = false) everything else: other shapes,
// envelopes, escaped or non-ASCII strings where it would have to
// unescape them, keys that match a field only case-insensitively, duplicate keys, deep
// nesting, and every message the general path would reject. Declined messages take the
// general path, so the fast path changes no result, only the cost (FuzzFastPathAgrees
// checks the two against each other). Times go through the same place as the general
// path's, so capture's messages (timestamp, sent_at, offset, now) take the fast path.

// maxFastDepth bounds the nesting the fast path follows; deeper messages are declined.
const maxFastDepth = 64

// strClass marks the bytes a string scan must stop at: the closing quote, an escape, a
// control character (invalid in JSON strings) and non-ASCII (validated as UTF-8).
var strClass = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}()

type fastScanner struct {
	b []byte
	i int
}

func (s *fastScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips whitespace and reports the next byte (0 at the end).
func (s *fastScanner) next() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str scans the string at s.i (an opening quote) and returns its contents' bounds.
// plain means no escapes and only ASCII: the contents are the string's value verbatim.
// ok is false when the string is not valid JSON.
func (s *fastScanner) str() (start, end int, plain, ok bool) {
	s.i++ // opening quote
	start, plain = s.i, true
	for s.i < len(s.b) {
		// Eight bytes at a time while none needs a look (SWAR: each term's lowest set
		// bit marks its first match, so the lowest bit of the union is the first byte
		// that is a quote, a backslash, a control character or non-ASCII).
		for s.i+8 <= len(s.b) {
			w := binary.LittleEndian.Uint64(s.b[s.i:])
			m := hasLess(w, 0x20) | hasZero(w^(lsb*'"')) | hasZero(w^(lsb*'\\')) | w&msb
			if m != 0 {
				s.i += bits.TrailingZeros64(m) / 8
				break
			}
			s.i += 8
		}
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		if !strClass[c] {
			s.i++
			continue
		}
		switch {
		case c == '"':
			end = s.i
			s.i++
			return start, end, plain, true
		case c == '\\':
			plain = false
			if !s.escape() {
				return 0, 0, false, false
			}
		case c < 0x20:
			return 0, 0, false, false
		default: // non-ASCII
			plain = false
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n <= 1 {
				return 0, 0, false, false
			}
			s.i += n
		}
	}
	return 0, 0, false, false
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// hasZero has the high bit set in (at least) the lowest zero byte of w; hasLess likewise
// for the lowest byte below n (n ≤ 128).
func hasZero(w uint64) uint64           { return (w - lsb) & ^w & msb }
func hasLess(w uint64, n uint64) uint64 { return (w - lsb*n) & ^w & msb }

func (s *fastScanner) escape() bool {
	s.i++ // backslash
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
		return true
	case 'u':
		if s.i+5 > len(s.b) {
			return false
		}
		for _, h := range s.b[s.i+1 : s.i+5] {
			if !isHex(h) {
				return false
			}
		}
		s.i += 5
		return true
	}
	return false
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number scans a JSON number (RFC 8259 grammar).
func (s *fastScanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	s.i = i
	return true
}

func (s *fastScanner) literal(lit string) bool {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

// value skips one JSON value starting at s.i (whitespace already skipped).
func (s *fastScanner) value(depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, _, _, ok := s.str()
		return ok
	case c == '{':
		if depth >= maxFastDepth {
			return false
		}
		s.i++
		if s.next() == '}' {
			s.i++
			return true
		}
		for {
			if s.next() != '"' {
				return false
			}
			if _, _, _, ok := s.str(); !ok {
				return false
			}
			if s.next() != ':' {
				return false
			}
			s.i++
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			switch s.next() {
			case ',':
				s.i++
			case '}':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '[':
		if depth >= maxFastDepth {
			return false
		}
		s.i++
		if s.next() == ']' {
			s.i++
			return true
		}
		for {
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			switch s.next() {
			case ',':
				s.i++
			case ']':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.number()
	}
}

// span is a value's bytes within the message; set says the key was present.
type span struct {
	start, end int
	set        bool
}

// shapeKeys are the (lower-case) keys of shape; a key equal to one of them only
// case-insensitively would be matched by the general decoder, so the fast path declines.
var shapeKeys = []string{"uuid", "event", "distinct_id", "timestamp", "sent_at", "offset", "properties",
	"data", "now", "name", "attributes", "resourcelogs"}

// propKeys are the keys of props, likewise.
var propKeys = []string{"distinct_id", "$distinct_id", "$feature_flag", "$feature_flag_response", "$ignore_sent_at"}

func foldsToAny(key []byte, keys []string) bool {
	for _, k := range keys {
		if len(k) == len(key) && bytes.EqualFold(key, []byte(k)) {
			return true
		}
	}
	return false
}

// fastProps are the properties the fast path reads, as spans of the message.
type fastProps struct {
	distinctID, distinctID2, flag, response, ignoreSentAt span
	features                                              []featureSpan // $feature/<key> properties
}

// featureBufs holds the features' backing arrays between events: 20–50 flags per event
// are usual, and an array inside fastProps would move every event's props to the heap
// (3 KB each, flags or not).
var featureBufs = sync.Pool{New: func() any { b := make([]featureSpan, 0, 64); return &b }}

type featureSpan struct {
	key   []byte // without the $feature/ prefix
	value span
}

// fastPostHog is the fast path for one PostHog event object raw (already trimmed).
func fastPostHog(raw []byte, recordTime time.Time) (Event, bool) {
	s := fastScanner{b: raw}
	if s.next() != '{' {
		return Event{}, false
	}
	s.i++
	var uuidS, event, distinct, timestamp, sentAt, offset, now, props span
	var p fastProps
	defer func() {
		if p.features != nil {
			f := p.features[:0]
			clear(f[:cap(f)])
			featureBufs.Put(&f)
		}
	}()
	if s.next() == '}' {
		return Event{}, false // no event name: the general path says so
	}
	for {
		if s.next() != '"' {
			return Event{}, false
		}
		ks, ke, plain, ok := s.str()
		if !ok || !plain {
			return Event{}, false
		}
		key := raw[ks:ke]
		if s.next() != ':' {
			return Event{}, false
		}
		s.i++
		s.ws()
		var dst *span
		switch string(key) {
		case "uuid":
			dst = &uuidS
		case "event":
			dst = &event
		case "distinct_id":
			dst = &distinct
		case "timestamp":
			dst = &timestamp
		case "sent_at":
			dst = &sentAt
		case "offset":
			dst = &offset
		case "now":
			dst = &now
		case "properties":
			dst = &props
		default:
			if foldsToAny(key, shapeKeys) {
				return Event{}, false
			}
		}
		if dst != nil && dst.set {
			return Event{}, false // duplicate key: the general path has the last one win
		}
		start := s.i
		if dst == &props {
			if !s.properties(&p) {
				return Event{}, false
			}
		} else if !s.value(1) {
			return Event{}, false
		}
		if dst != nil {
			*dst = span{start, s.i, true}
		}
		switch s.next() {
		case ',':
			s.i++
			continue
		case '}':
			s.i++
		default:
			return Event{}, false
		}
		break
	}
	if s.i != len(raw) {
		return Event{}, false
	}

	ev := Event{Source: SourcePostHog, Properties: "{}"}
	name, ok := plainString(raw, event)
	if !ok || name == "" {
		return Event{}, false
	}
	ev.Name = name
	if props.set {
		ev.Properties = string(raw[props.start:props.end])
	}
	for _, d := range []span{distinct, p.distinctID, p.distinctID2} {
		if ev.DistinctID, ok = fastScalar(raw, d); !ok {
			return Event{}, false
		}
		if ev.DistinctID != "" {
			break
		}
	}
	if ev.DistinctID == "" {
		return Event{}, false
	}
	ts, err := place(Times{Timestamp: rawOf(raw, timestamp), SentAt: rawOf(raw, sentAt), Offset: rawOf(raw, offset),
		Now: rawOf(raw, now), IgnoreSentAt: p.ignoreSentAt.set && string(rawOf(raw, p.ignoreSentAt)) == "true"}, recordTime)
	if err != nil {
		return Event{}, false
	}
	ev.TsMs = ts
	if uuidS.set {
		u, ok := plainString(raw, uuidS)
		if !ok {
			return Event{}, false
		}
		ev.UUID = eventUUID(u, raw)
	} else {
		ev.UUID = DeterministicUUID(raw)
	}
	if ev.Name == ExposureEvent {
		flag, ok := fastScalar(raw, p.flag)
		if !ok || flag == "" {
			return Event{}, false
		}
		v, ok := fastVariant(raw, p.response)
		if !ok {
			return Event{}, false
		}
		if v != "" {
			ev.Exposures = append(ev.Exposures, Exposure{Flag: flag, Variant: v})
		}
	}
	if len(p.features) > 0 { // filled only while reading props
		// In key order; a key twice is declined (the general path's map keeps the last).
		slices.SortFunc(p.features, func(a, b featureSpan) int { return bytes.Compare(a.key, b.key) })
		for i := 1; i < len(p.features); i++ {
			if bytes.Equal(p.features[i].key, p.features[i-1].key) {
				return Event{}, false
			}
		}
		exps := make([]Exposure, 0, len(p.features))
		for _, f := range p.features {
			v, ok := fastVariant(raw, f.value)
			if !ok {
				return Event{}, false
			}
			if len(f.key) > 0 && v != "" {
				exps = append(exps, Exposure{Flag: string(f.key), Variant: v})
			}
		}
		if len(ev.Exposures) == 0 {
			if len(exps) > 0 {
				ev.Exposures = exps
			}
		} else {
			own := ev.Exposures // the exposure event's own flag; exps are distinct
			for _, x := range exps {
				if !hasFlag(own, x.Flag) {
					ev.Exposures = append(ev.Exposures, x)
				}
			}
		}
	}
	return ev, true
}

// properties scans the properties object at s.i, noting the values flagwatch reads.
func (s *fastScanner) properties(p *fastProps) bool {
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false // null or not an object: the general path decides
	}
	s.i++
	if s.next() == '}' {
		s.i++
		return true
	}
	for {
		if s.next() != '"' {
			return false
		}
		ks, ke, plain, ok := s.str()
		if !ok || !plain {
			return false
		}
		key := s.b[ks:ke]
		if s.next() != ':' {
			return false
		}
		s.i++
		s.ws()
		var dst *span
		switch string(key) {
		case "distinct_id":
			dst = &p.distinctID
		case "$distinct_id":
			dst = &p.distinctID2
		case "$feature_flag":
			dst = &p.flag
		case "$feature_flag_response":
			dst = &p.response
		case "$ignore_sent_at":
			dst = &p.ignoreSentAt
		default:
			if foldsToAny(key, propKeys) {
				return false
			}
		}
		if dst != nil && dst.set {
			return false
		}
		start := s.i
		if !s.value(2) {
			return false
		}
		if dst != nil {
			*dst = span{start, s.i, true}
		} else if flag, ok := bytes.CutPrefix(key, []byte("$feature/")); ok {
			if p.features == nil {
				p.features = (*featureBufs.Get().(*[]featureSpan))[:0]
			}
			p.features = append(p.features, featureSpan{key: flag, value: span{start, s.i, true}})
		}
		switch s.next() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// plainString is the value of a JSON string without escapes or non-ASCII bytes; ok is
// false for anything else (other types, null, strings the general path would unescape).
func plainString(raw []byte, sp span) (string, bool) {
	v := raw[sp.start:sp.end]
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	v = v[1 : len(v)-1]
	for _, c := range v {
		if strClass[c] {
			return "", false
		}
	}
	return string(v), true
}

// fastScalar is scalar for a span: strings (plain only), numbers as written, "" for
// absent, null, objects, arrays and booleans.
func fastScalar(raw []byte, sp span) (string, bool) {
	if !sp.set {
		return "", true
	}
	switch raw[sp.start] {
	case '"':
		return plainString(raw, sp)
	case 'n', '{', '[', 't', 'f':
		return "", true
	default:
		return string(raw[sp.start:sp.end]), true
	}
}

// fastVariant is variant for a span.
func fastVariant(raw []byte, sp span) (string, bool) {
	if sp.set {
		switch string(raw[sp.start:sp.end]) {
		case "true":
			return "true", true
		case "false":
			return "false", true
		}
	}
	return fastScalar(raw, sp)
}

// rawOf is a span's bytes, nil when the key was absent.
func rawOf(raw []byte, sp span) []byte {
	if !sp.set {
		return nil
	}
	return raw[sp.start:sp.end]
}
