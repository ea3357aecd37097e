package evaluate

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"github.com/segmentio/encoding/json"
)

// values splits a stream into top-level JSON values and remembers the line
// each starts on, so errors can name it. It accepts one object per line as
// well as pretty-printed objects spanning lines, or several per line: it
// tracks bracket depth outside strings rather than splitting on newlines.
type values struct {
	r    *bufio.Reader
	line int // 1-based line of the next byte
}

func newValues(r io.Reader) *values { return &values{r: bufio.NewReader(r), line: 1} }

// errTruncated is a value the input ended inside of.
var errTruncated = errors.New("unexpected end of input")

// maxDepth bounds how deeply a value may nest. Input is at most four levels deep
// (variants[i].prior is three); the JSON parser recurses per level without a limit of
// its own, so a value of a million '[' would overflow the stack — a fatal error, not a
// recoverable panic. The framing below counts depth anyway, so the limit costs nothing
// and stops reading at the first byte too deep.
const maxDepth = 64

// errTooDeep is a value nested deeper than maxDepth.
var errTooDeep = fmt.Errorf("nested deeper than %d levels", maxDepth)

// next returns the next value and its first line, or io.EOF after the last.
func (v *values) next() ([]byte, int, error) {
	if err := v.skipSpace(); err != nil {
		return nil, v.line, err
	}
	start := v.line
	var buf []byte
	depth, inString, escaped := 0, false, false
	for {
		b, err := v.r.ReadByte()
		if err == io.EOF {
			if depth == 0 && !inString && len(buf) > 0 {
				return buf, start, nil // a bare scalar at the end; rejected later
			}
			return buf, start, errTruncated
		}
		if err != nil {
			return nil, start, fmt.Errorf("reading input: %w", err)
		}
		if depth == 0 && !inString && len(buf) > 0 && isSpace(b) {
			_ = v.r.UnreadByte() // a bare scalar ended; let skipSpace count the newline
			return buf, start, nil
		}
		if b == '\n' {
			v.line++
		}
		buf = append(buf, b)
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			if depth++; depth > maxDepth {
				return nil, start, errTooDeep
			}
		case b == '}' || b == ']':
			if depth--; depth <= 0 {
				return buf, start, nil
			}
		}
	}
}

func (v *values) skipSpace() error {
	for {
		b, err := v.r.ReadByte()
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
		if !isSpace(b) {
			return v.r.UnreadByte()
		}
		if b == '\n' {
			v.line++
		}
	}
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

// decode parses one value strictly: JSON syntax, then every key and type
// against Input's json tags (so a typo like "sum_squares" or a quoted number
// is an error naming its path, not a silently missing field), then into
// Input itself.
func decode(raw []byte) (Input, error) {
	var in Input
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return in, fmt.Errorf("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, ok := tree.(map[string]any); !ok {
		return in, fmt.Errorf("expected a JSON object, got %s", jsonType(tree))
	}
	if err := conform(tree, reflect.TypeOf(in), ""); err != nil {
		return in, err
	}
	if _, err := json.Parse(raw, &in, json.DontMatchCaseInsensitiveStructFields); err != nil {
		return in, fmt.Errorf("decoding input: %w", err)
	}
	return in, nil
}

// conform checks a decoded JSON tree against the Go type it will be decoded
// into. null is accepted anywhere and means "absent".
func conform(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return nil
	}
	want := expectedType(t)
	if got := jsonType(v); got != want {
		return fieldErr(path, "must be %s, got %s", article(want), got)
	}
	switch x := v.(type) {
	case map[string]any:
		fields := jsonFields(t)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys) // deterministic choice when several keys are wrong
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				return fieldErr(joinKey(path, k), "unknown field")
			}
			if err := conform(x[k], ft, joinKey(path, k)); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := conform(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonFields maps a struct's JSON keys to field types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	return out
}

// expectedType names the JSON type a Go type decodes from.
func expectedType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	default:
		return "number"
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	default:
		return "number"
	}
}

func article(typ string) string {
	if typ == "object" || typ == "array" {
		return "an " + typ
	}
	return "a " + typ
}
