package store

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/segmentio/encoding/json"
)

// The embedded engine exchanges rows as JSON text: JSONCompactEachRowWithNamesAndTypes
// out (a names line, a types line, then one array per row), JSONCompactEachRow in. This
// file converts between that text and Go values with the same conversions the native
// driver makes for the types flagwatch uses.

var settingName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

type jsonRows struct {
	names, types []string
	lines        [][]byte
	i            int
	cur          []json.RawMessage
	err          error
}

func newJSONRows(out []byte) (*jsonRows, error) {
	r := &jsonRows{}
	if len(bytes.TrimSpace(out)) == 0 {
		return r, nil
	}
	lines := bytes.Split(bytes.TrimRight(out, "\n"), []byte("\n"))
	if len(lines) < 2 {
		return nil, fmt.Errorf("embedded ClickHouse: unexpected result %.200q", out)
	}
	if err := json.Unmarshal(lines[0], &r.names); err != nil {
		return nil, fmt.Errorf("embedded ClickHouse: result names: %w", err)
	}
	if err := json.Unmarshal(lines[1], &r.types); err != nil {
		return nil, fmt.Errorf("embedded ClickHouse: result types: %w", err)
	}
	r.lines = lines[2:]
	return r, nil
}

func (r *jsonRows) Next() bool {
	if r.err != nil || r.i >= len(r.lines) {
		return false
	}
	r.cur = r.cur[:0]
	if err := json.Unmarshal(r.lines[r.i], &r.cur); err != nil {
		r.err = fmt.Errorf("embedded ClickHouse: row %d: %w", r.i, err)
		return false
	}
	r.lines[r.i] = nil
	r.i++
	return true
}

func (r *jsonRows) Scan(dest ...any) error {
	if len(dest) != len(r.cur) {
		return fmt.Errorf("scan: %d destinations for %d columns", len(dest), len(r.cur))
	}
	for i, d := range dest {
		if err := scanJSON(r.cur[i], r.types[i], d); err != nil {
			return fmt.Errorf("scan column %s (%s): %w", r.names[i], r.types[i], err)
		}
	}
	return nil
}

func (r *jsonRows) Err() error   { return r.err }
func (r *jsonRows) Close() error { r.lines = nil; return nil }

var timeType = reflect.TypeOf(time.Time{})
var uuidType = reflect.TypeOf(uuid.UUID{})

func scanJSON(raw json.RawMessage, typ string, dest any) error {
	v := reflect.ValueOf(dest)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("destination %T is not a non-nil pointer", dest)
	}
	return setJSON(raw, typ, v.Elem())
}

// unwrapType drops Nullable(…) and LowCardinality(…).
func unwrapType(typ string) string {
	for {
		switch {
		case strings.HasPrefix(typ, "Nullable(") && strings.HasSuffix(typ, ")"):
			typ = typ[len("Nullable(") : len(typ)-1]
		case strings.HasPrefix(typ, "LowCardinality(") && strings.HasSuffix(typ, ")"):
			typ = typ[len("LowCardinality(") : len(typ)-1]
		default:
			return typ
		}
	}
}

func setJSON(raw json.RawMessage, typ string, v reflect.Value) error {
	typ = unwrapType(typ)
	if v.Kind() == reflect.Pointer {
		if string(raw) == "null" {
			v.SetZero()
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return setJSON(raw, typ, v.Elem())
	}
	switch v.Type() {
	case timeType:
		s, err := jsonString(raw)
		if err != nil {
			return err
		}
		t, err := parseCHTime(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(t))
		return nil
	case uuidType:
		s, err := jsonString(raw)
		if err != nil {
			return err
		}
		u, err := uuid.Parse(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(u))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if len(raw) > 0 && raw[0] == '"' {
			s, err := jsonString(raw)
			if err != nil {
				return err
			}
			v.SetString(s)
			return nil
		}
		v.SetString(string(raw))
		return nil
	case reflect.Bool:
		switch string(raw) {
		case "true", "1":
			v.SetBool(true)
		case "false", "0":
			v.SetBool(false)
		default:
			return fmt.Errorf("cannot read %.40s as bool", raw)
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s := numberText(raw)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot read %.40s as %s: %w", raw, v.Type(), err)
		}
		if v.OverflowInt(n) {
			return fmt.Errorf("%d overflows %s", n, v.Type())
		}
		v.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s := numberText(raw)
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot read %.40s as %s: %w", raw, v.Type(), err)
		}
		if v.OverflowUint(n) {
			return fmt.Errorf("%d overflows %s", n, v.Type())
		}
		v.SetUint(n)
		return nil
	case reflect.Float32, reflect.Float64:
		f, err := parseJSONFloat(raw)
		if err != nil {
			return err
		}
		v.SetFloat(f)
		return nil
	case reflect.Slice:
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("cannot read %.40s as %s: %w", raw, v.Type(), err)
		}
		elem := "String"
		if strings.HasPrefix(typ, "Array(") && strings.HasSuffix(typ, ")") {
			elem = typ[len("Array(") : len(typ)-1]
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, it := range items {
			if err := setJSON(it, elem, s.Index(i)); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
		v.Set(s)
		return nil
	case reflect.Interface:
		var x any
		if err := json.Unmarshal(raw, &x); err != nil {
			return err
		}
		v.Set(reflect.ValueOf(x))
		return nil
	}
	return fmt.Errorf("unsupported destination %s", v.Type())
}

// jsonString unquotes a JSON string keeping bytes that are not valid UTF-8 as they are
// (encoding/json would replace them, and ClickHouse strings are bytes).
func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", fmt.Errorf("cannot read %.40s as a string", raw)
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return string(in), nil
	}
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(in) {
			return "", fmt.Errorf("cannot read %.40s as a string: trailing backslash", raw)
		}
		switch in[i] {
		case '"', '\\', '/':
			out = append(out, in[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(in) {
				return "", fmt.Errorf("cannot read %.40s as a string: short \\u escape", raw)
			}
			r, err := strconv.ParseUint(string(in[i+1:i+5]), 16, 32)
			if err != nil {
				return "", fmt.Errorf("cannot read %.40s as a string: %w", raw, err)
			}
			i += 4
			ru := rune(r)
			if utf16.IsSurrogate(ru) && i+6 < len(in) && in[i+1] == '\\' && in[i+2] == 'u' {
				if r2, err := strconv.ParseUint(string(in[i+3:i+7]), 16, 32); err == nil {
					if d := utf16.DecodeRune(ru, rune(r2)); d != utf8.RuneError {
						ru = d
						i += 6
					}
				}
			}
			out = utf8.AppendRune(out, ru)
		default:
			return "", fmt.Errorf("cannot read %.40s as a string: bad escape \\%c", raw, in[i])
		}
	}
	return string(out), nil
}

// numberText is a JSON number's text, or a quoted 64-bit integer's.
func numberText(raw json.RawMessage) string {
	s := string(raw)
	if len(s) >= 2 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	switch s {
	case "true":
		return "1"
	case "false":
		return "0"
	}
	return s
}

func parseJSONFloat(raw json.RawMessage) (float64, error) {
	s := numberText(raw)
	switch strings.ToLower(s) {
	case "inf", "+inf":
		return math.Inf(1), nil
	case "-inf":
		return math.Inf(-1), nil
	case "nan", "-nan", "null":
		return math.NaN(), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("cannot read %.40s as a number: %w", raw, err)
	}
	return f, nil
}

// parseCHTime reads DateTime ("2006-01-02 15:04:05"), DateTime64 (fractional seconds)
// and Date text, in UTC (the embedded session's time zone).
func parseCHTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read %q as a time", s)
}

// appendJSONValue renders one value for JSONCompactEachRow input.
func appendJSONValue(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		appendJSONString(b, x)
	case []byte:
		appendJSONString(b, string(x))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int8:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int16:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case uint:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint8:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint16:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint32:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case float32:
		appendJSONFloat(b, float64(x))
	case float64:
		appendJSONFloat(b, x)
	case time.Time:
		// DateTime columns take Unix seconds.
		b.WriteString(strconv.FormatInt(x.Unix(), 10))
	case uuid.UUID:
		b.WriteByte('"')
		b.WriteString(x.String())
		b.WriteByte('"')
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			return fmt.Errorf("cannot insert a %T", v)
		}
		b.WriteByte('[')
		for i := 0; i < rv.Len(); i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := appendJSONValue(b, rv.Index(i).Interface()); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	}
	return nil
}

func appendJSONFloat(b *bytes.Buffer, f float64) {
	switch {
	case math.IsNaN(f):
		b.WriteString(`"nan"`)
	case math.IsInf(f, 1):
		b.WriteString(`"inf"`)
	case math.IsInf(f, -1):
		b.WriteString(`"-inf"`)
	default:
		b.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s for ClickHouse's JSON input. Bytes that are not valid UTF-8
// are passed through as they are (ClickHouse strings are bytes, and the native driver
// stores them unchanged; encoding/json would replace them).
func appendJSONString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			if c < utf8.RuneSelf {
				i++
				continue
			}
			_, size := utf8.DecodeRuneInString(s[i:])
			i += size
			continue
		}
		b.WriteString(s[start:i])
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// appendColumnRows transposes a block of column slices into rows of text.
func appendColumnRows(b *bytes.Buffer, cols []any, rows *int) error {
	vals := make([]reflect.Value, len(cols))
	n := -1
	for i, c := range cols {
		vals[i] = reflect.ValueOf(c)
		if vals[i].Kind() != reflect.Slice {
			return fmt.Errorf("column %d: %T is not a slice", i, c)
		}
		if n >= 0 && vals[i].Len() != n {
			return fmt.Errorf("column %d has %d values, column 0 has %d", i, vals[i].Len(), n)
		}
		n = vals[i].Len()
	}
	for r := 0; r < n; r++ {
		b.WriteByte('[')
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := appendJSONValue(b, v.Index(r).Interface()); err != nil {
				return fmt.Errorf("column %d: %w", i, err)
			}
		}
		b.WriteString("]\n")
		*rows++
	}
	return nil
}
