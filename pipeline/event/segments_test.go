package event

import (
	"strings"
	"testing"

	"github.com/segmentio/encoding/json"
)

func TestSegmentProps(t *testing.T) {
	long := strings.Repeat("x", maxSegmentLen+1)
	for _, tc := range []struct{ in, want string }{
		{`{}`, `{}`},
		{`{"$geoip_country_code":"GB","plan":"free"}`, `{"$geoip_country_code":"GB","plan":"free"}`},
		// Nested members stay in place; numbers, booleans, null, arrays are not segments.
		{`{"$set":{"plan":"pro"},"plan":"free","n":3,"ok":true,"z":null,"a":["x","y"],"o":{"k":"v"}}`,
			`{"plan":"pro","plan":"free","k":"v"}`},
		// Per-event identifiers, the exposure's own flag and variant and the other flags'
		// go.
		{`{"$session_id":"0190","$insert_id":"abc","$time":"1.5","$feature_flag":"f","$feature_flag_response":"test","$browser":"Safari","$feature/g":"on","$feature":"x"}`,
			`{"$browser":"Safari","$feature":"x"}`},
		// Escapes survive as written; a key or value over the limit goes.
		{`{"note":"say \"hi\"","url":"` + long + `","` + long + `":"v","k\\":"w"}`, `{"note":"say \"hi\"","k\\":"w"}`},
		{`{ "a" : "b" , "c" :"d"}`, `{"a":"b","c":"d"}`},
		// Malformed: what was read before the error.
		{`{"a":"b","c":"d`, `{"a":"b"}`},
		{`not json`, `{}`},
	} {
		if got := SegmentProps(tc.in); got != tc.want {
			t.Errorf("SegmentProps(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// For any valid properties object the result is a valid JSON object whose members are
// string pairs of the input.
func FuzzSegmentProps(f *testing.F) {
	f.Add(`{"$set":{"plan":"pro"},"plan":"free","n":3}`)
	f.Add(`{"a":["x",{"b":"c"}],"d":"e\u00e9\\"}`)
	f.Fuzz(func(t *testing.T, in string) {
		var v map[string]any
		if json.Unmarshal([]byte(in), &v) != nil {
			return
		}
		out := SegmentProps(in)
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("SegmentProps(%q) = %q: not JSON: %v", in, out, err)
		}
		for k, x := range got {
			if _, ok := x.(string); !ok {
				t.Fatalf("SegmentProps(%q): %q is not a string", in, k)
			}
			if notSegments[k] || strings.HasPrefix(k, featurePrefix) {
				t.Fatalf("SegmentProps(%q) kept %q", in, k)
			}
		}
	})
}

func BenchmarkSegmentProps(b *testing.B) {
	props := `{"$lib":"web","$lib_version":"1.200.0","$browser":"Chrome","$os":"Mac OS X","$device_type":"Desktop","$current_url":"https://shop.example.com/","$session_id":"fad992fd-e8c7-d978-ec4e-a7af2cef0354","$geoip_country_code":"US","plan":"free","$set":{"plan":"free","$geoip_country_code":"US"},"$feature_flag":"flag-00","$feature_flag_response":"control"}`
	b.SetBytes(int64(len(props)))
	for b.Loop() {
		_ = SegmentProps(props)
	}
}
