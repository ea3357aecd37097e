package event

import "fmt"

// MaxDepth is how deeply arrays and objects may nest in a message: the recursion limit
// of serde_json, which PostHog's own capture decodes with, so an SDK event PostHog
// accepts is accepted here too. segmentio/encoding parses nested values recursively
// and has no limit of its own: ~2 M nested '[' (a 4 KB gzip body) overflow the
// goroutine stack, a fatal error that no recover catches. So every input is measured by
// CheckDepth, which does not recurse, before a recursive parser sees it.
const MaxDepth = 128

// depthClass marks the bytes CheckDepth stops at outside strings.
var depthClass = func() (t [256]bool) {
	for _, c := range `"[]{}` {
		t[c] = true
	}
	return t
}()

// CheckDepth returns a *Error with ReasonTooDeep if arrays and objects in b nest deeper
// than MaxDepth. It reads b once and does not validate it otherwise: the decoder that
// follows does, with its own error.
func CheckDepth(b []byte) error {
	if err := checkDepth(b); err != nil {
		return err
	}
	return nil
}

func checkDepth(b []byte) *Error {
	depth := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !depthClass[c] {
			continue
		}
		switch c {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			if depth++; depth > MaxDepth {
				return &Error{Reason: ReasonTooDeep, Detail: fmt.Sprintf("arrays and objects nested deeper than %d levels", MaxDepth)}
			}
		default:
			depth--
		}
	}
	return nil
}
