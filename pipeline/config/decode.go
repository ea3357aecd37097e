package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder turns a YAML node tree into the config types, strictly: it knows each
// struct's keys from its yaml tags, and records the line of every key present so that
// defaults and validation can tell absent from zero and name the line.
type decoder struct {
	file string
	seen map[string]int // path of every non-null key or list item → its line
	// bad holds the path of every value that failed to decode (an unknown or repeated
	// key counts as a value at mapping.key). Validation stays quiet about those values
	// and about the mapping holding them, which would only repeat the first error:
	// `evnt: purchase` is reported as an unknown key, not also as "needs event".
	bad    map[string]bool
	syntax bool // the file is not YAML at all; nothing was decoded
	errs   []*Error
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, seen: map[string]int{}, bad: map[string]bool{}}
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	splitType    = reflect.TypeFor[Split]()
	templateType = reflect.TypeFor[Templates]()
	yamlLine     = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

func (d *decoder) fail(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// badValue records a decoding error at valuePath, the path of the value that failed.
func (d *decoder) badValue(line int, valuePath, format string, args ...any) {
	d.bad[valuePath] = true
	d.fail(line, parent(valuePath), format, args...)
}

// badHere records a decoding error about the value at path itself (wrong type).
func (d *decoder) badHere(line int, path, format string, args ...any) {
	d.bad[path] = true
	d.fail(line, path, format, args...)
}

// quiet reports whether a validation error at path would only echo a decoding error:
// path or one of its ancestors failed to decode, or path holds a value that did.
func (d *decoder) quiet(path string) bool {
	for p := path; ; p = parent(p) {
		if d.bad[p] {
			return true
		}
		if p == "" {
			break
		}
	}
	for b := range d.bad {
		if b != "" && parent(b) == path {
			return true
		}
	}
	return false
}

// has reports whether path was present (and not null) in the file.
func (d *decoder) has(path string) bool {
	_, ok := d.seen[path]
	return ok
}

// line returns the line of path, or of its nearest present ancestor.
func (d *decoder) line(path string) int {
	for path != "" {
		if l, ok := d.seen[path]; ok {
			return l
		}
		path = parent(path)
	}
	return 0
}

// parent strips the last ".key" or "[i]" from path.
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// document parses data and decodes its first document into m.
func (d *decoder) document(data []byte, m *Monitors) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		d.syntaxError(err)
		return
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return // empty file
	}
	n := root.Content[0]
	if isNull(n) {
		return
	}
	d.value(n, reflect.ValueOf(m).Elem(), "")
}

// syntax reports a YAML parse error with the line the parser gives, which for an
// unclosed block or flow collection is the line where the collection starts.
func (d *decoder) syntaxError(err error) {
	d.syntax = true
	if g := yamlLine.FindStringSubmatch(err.Error()); g != nil {
		line, _ := strconv.Atoi(g[1])
		d.fail(line, "", "invalid YAML: %s", g[2])
		return
	}
	d.fail(0, "", "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case v.Type() == durationType:
		d.duration(n, v, path)
		return
	case v.Type() == splitType:
		d.split(n, v, path)
		return
	case v.Type() == templateType:
		d.templates(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

// mapping decodes a YAML mapping into struct v; keys without a yaml tag in v's type
// are errors. Merge keys (<<: *anchor) are applied first so explicit keys override.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.badHere(n.Line, path, "want a mapping, got %s", describe(n))
		return
	}
	fields := fieldsOf(v.Type())
	for _, m := range merged(n) {
		d.mapping(m, v, path)
	}
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		if l, dup := first[k.Value]; dup {
			d.badValue(k.Line, join(path, k.Value), "key %q repeated (first at line %d)", k.Value, l)
			continue
		}
		first[k.Value] = k.Line
		idx, ok := fields[k.Value]
		if !ok {
			d.badValue(k.Line, join(path, k.Value), "unknown key %q%s", k.Value, suggest(k.Value, fields))
			continue
		}
		if isNull(val) {
			continue
		}
		p := join(path, k.Value)
		d.seen[p] = k.Line
		d.value(val, v.Field(idx), p)
	}
}

// merged returns the mappings named by n's merge keys.
func merged(n *yaml.Node) []*yaml.Node {
	var out []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Tag != "!!merge" {
			continue
		}
		val := n.Content[i+1]
		if val.Kind == yaml.SequenceNode {
			out = append(out, val.Content...)
		} else {
			out = append(out, val)
		}
	}
	for i, m := range out {
		if m.Kind == yaml.AliasNode {
			out[i] = m.Alias
		}
	}
	return out
}

// fieldsOf maps the yaml key of each tagged field of struct type t to its index.
func fieldsOf(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" {
			out[name] = i
		}
	}
	return out
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.badHere(n.Line, path, "want a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.seen[p] = item.Line
		d.value(item, s.Index(i), p)
	}
	v.Set(s)
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	want := map[reflect.Kind]string{
		reflect.String: "a string", reflect.Bool: "true or false",
		reflect.Int: "an integer", reflect.Int64: "an integer", reflect.Float64: "a number",
	}[v.Kind()]
	if n.Kind != yaml.ScalarNode {
		d.badHere(n.Line, path, "want %s, got %s", want, describe(n))
		return
	}
	if v.Kind() == reflect.String {
		v.SetString(n.Value)
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.badHere(n.Line, path, "want %s, got %s", want, describe(n))
	}
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.badHere(n.Line, path, "want a duration, got %s", describe(n))
		return
	}
	dur, err := parseDuration(n.Value)
	if err != nil {
		d.badHere(n.Line, path, "invalid duration %q (want e.g. 90m, 36h or 7d)", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

// split decodes {variant: weight, …} keeping the file order.
func (d *decoder) split(n *yaml.Node, v reflect.Value, path string) {
	var s Split
	d.ordered(n, path, "variant", "a mapping of variant to share", func(k, val *yaml.Node, p string) {
		var w float64
		d.scalar(val, reflect.ValueOf(&w).Elem(), p)
		s = append(s, Share{Variant: k.Value, Weight: w})
	})
	v.Set(reflect.ValueOf(s))
}

// templates decodes {name: template, …} keeping the file order; each template's keys
// are decoded strictly like any mapping, under the path templates.<name>.
func (d *decoder) templates(n *yaml.Node, v reflect.Value, path string) {
	var ts Templates
	d.ordered(n, path, "template", "a mapping of template name to template", func(k, val *yaml.Node, p string) {
		t := Template{Name: k.Value}
		if !isNull(val) {
			d.value(val, reflect.ValueOf(&t).Elem(), p)
		}
		ts = append(ts, t)
	})
	v.Set(reflect.ValueOf(ts))
}

// ordered calls each for the entries of a mapping whose order matters, in file order,
// under path.<key>; a repeated key (what names it) is reported and skipped.
func (d *decoder) ordered(n *yaml.Node, path, what, want string, each func(k, val *yaml.Node, p string)) {
	if n.Kind != yaml.MappingNode {
		d.badHere(n.Line, path, "want %s, got %s", want, describe(n))
		return
	}
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if l, dup := first[k.Value]; dup {
			d.badValue(k.Line, join(path, k.Value), "%s %q repeated (first at line %d)", what, k.Value, l)
			continue
		}
		first[k.Value] = k.Line
		p := join(path, k.Value)
		d.seen[p] = k.Line
		each(k, val, p)
	}
}

// parseDuration accepts Go durations ("36h", "90m") and whole days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("parse days %q: %w", s, err)
		}
		return time.Duration(n) * day, nil
	}
	return time.ParseDuration(s)
}

// suggest returns ` (did you mean "x"?)` for the known key closest to an unknown one,
// or "".
func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	if best, ok := Closest(key, names); ok {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// Closest returns the candidate nearest to word when word is a likely typo of it: at
// most two edits away, and fewer than half its length; ties go to the first in
// alphabetical order. It suggests keys of the monitors file and command-line flags.
func Closest(word string, candidates []string) (string, bool) {
	best, bestDist := "", 3
	for _, c := range candidates {
		if dist := editDistance(word, c); dist < bestDist || dist == bestDist && c < best {
			best, bestDist = c, dist
		}
	}
	if best == "" || 2*bestDist >= len(best) {
		return "", false
	}
	return best, true
}

// editDistance is the Levenshtein distance between a and b, counted in bytes (keys
// and flag names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return strconv.Quote(n.Value)
	}
}
