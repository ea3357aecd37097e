package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestUnwrapRequest(t *testing.T) {
	const js = `[{"event":"x"}]`
	b64 := base64.StdEncoding.EncodeToString
	cases := []struct {
		name, target, contentType, encoding string
		body                                []byte
	}{
		{"plain", "/e/", "application/json", "", []byte(js)},
		{"leading whitespace", "/e/", "", "", []byte("\n  " + js)},
		{"gzip header", "/e/", "", "gzip", gzipped(t, js)},
		{"gzip magic", "/e/", "", "", gzipped(t, js)},
		{"gzip-js hint", "/e/?compression=gzip-js", "text/plain", "", gzipped(t, js)},
		{"base64 hint", "/e/?compression=base64", "", "", []byte(b64([]byte(js)))},
		{"raw url base64", "/e/", "", "", []byte(base64.RawURLEncoding.EncodeToString([]byte(js)))},
		{"base64 of gzip", "/e/", "", "", []byte(b64(gzipped(t, js)))},
		{"base64 of base64", "/e/", "", "", []byte(b64([]byte(b64([]byte(js)))))},
		{"form, JSON data", "/e/", "application/x-www-form-urlencoded", "", []byte("data=" + strings.ReplaceAll(js, `"`, "%22"))},
		{"form, base64 data, compression in form", "/e/", "application/x-www-form-urlencoded", "",
			[]byte("compression=base64&data=" + b64([]byte(js)))},
		{"form detected by data= without content type", "/e/", "", "", []byte("data=" + b64([]byte(js)))},
		{"JSON labelled as form", "/e/", "application/x-www-form-urlencoded", "", []byte(js)},
		{"query data wins over body", "/e/?data=" + b64([]byte(js)), "", "", []byte("ignored")},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", c.target, bytes.NewReader(c.body))
		r.Header.Set("Content-Type", c.contentType)
		r.Header.Set("Content-Encoding", c.encoding)
		got, _, err := readPayload(httptest.NewRecorder(), r, 1<<20, testReservation(t))
		require.NoError(t, err, c.name)
		require.Equal(t, js, string(got), c.name)
	}
}

// testReservation is a request's share of a budget large enough for any test payload.
func testReservation(t *testing.T) *reservation {
	t.Helper()
	res, err := newBudget(1<<30, 1, newMetrics(prometheus.NewRegistry())).admit()
	require.NoError(t, err)
	t.Cleanup(res.release)
	return res
}

func TestQuerySentAt(t *testing.T) {
	require.JSONEq(t, `"2026-03-04T12:00:00.000Z"`, string(querySentAt("1772625600000")))
	require.Nil(t, querySentAt("1772625600"), "seconds from old SDKs are ignored")
	require.Nil(t, querySentAt("soon"))
	require.Nil(t, querySentAt("9223372036854775807"))
}

func TestCountElements(t *testing.T) {
	for in, want := range map[string]int{
		`[]`: 0, ` [ ] `: 0, `[{}]`: 1, `[{},{}]`: 2, `[1,"a,b",[2,3],{"k":[4,5]}]`: 4, `["\\",","]`: 2,
		`{"event":"x"}`: 1, `[{},{}`: 2, `[[]]`: 1,
	} {
		require.Equal(t, want, countElements([]byte(in)), in)
	}
}

func TestCanonicalUUID(t *testing.T) {
	for in, want := range map[string]string{
		"0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"0190a1b2c3d47e5f8a9b0c1d2e3f4a5b":     "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
	} {
		got, ok := canonicalUUID(in)
		require.True(t, ok, in)
		require.Equal(t, want, got)
	}
	for _, in := range []string{"", "nope", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", "0190a1b2c-3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"zz90a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"} {
		_, ok := canonicalUUID(in)
		require.False(t, ok, in)
	}
}

func TestDistinctIDs(t *testing.T) {
	for raw, want := range map[string]string{
		`{"distinct_id":"a"}`:                                    "a",
		`{"distinct_id":23.5}`:                                   "23.5",
		`{"distinct_id":["a","b"]}`:                              `["a","b"]`,
		`{"distinct_id":null,"$distinct_id":"d"}`:                "d",
		`{"properties":{"$distinct_id":"p"}}`:                    "p",
		`{"distinct_id":"top","properties":{"distinct_id":"p"}}`: "top",
		`{"distinct_id":"a\u0000b"}`:                             "a\uFFFDb",
		`{"distinct_id":"` + strings.Repeat("é", 250) + `"}`:     strings.Repeat("é", 200),
	} {
		var e inEvent
		require.NoError(t, e.parse([]byte(raw)), raw)
		got, err := e.distinctID()
		require.NoError(t, err, raw)
		require.Equal(t, want, got, raw)
	}
}

// parseCost, which the in-flight budget reserves before parsing, covers what parsing a
// payload and building its records allocates: measured, for small and large events.
func TestParseCostCoversAllocations(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct{ pad, events int }{{0, 10_000}, {100, 6_000}, {10_000, 200}, {1_000_000, 2}, {0, 1}, {2_000, 1}} {
		pad, n := c.pad, c.events
		var b strings.Builder
		b.WriteString(`{"api_key":"k","sent_at":"2026-03-04T11:59:59Z","batch":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"event":"$pageview","distinct_id":"user-%d","timestamp":"2026-03-04T11:59:58Z",`+
				`"properties":{"$current_url":"https://shop.example/p/%d","pad":"%s","$feature/f":"test"}}`, i, i, strings.Repeat("x", pad))
		}
		b.WriteString(`]}`)
		payload := []byte(b.String())
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		batch, err := parseBatch(payload, func(int) error { return nil })
		require.NoError(t, err)
		require.Nil(t, batch.parseEvents())
		recs, err := buildRecords(batch, recordContext{topic: "events", token: "k", now: now, sentAt: batch.sentAt})
		require.NoError(t, err)
		runtime.ReadMemStats(&after)
		require.Len(t, recs, n)
		allocated := after.TotalAlloc - before.TotalAlloc
		reserved := parseCost(len(payload)) + eventCost*int64(n)
		t.Logf("%d events of %d bytes: %d bytes allocated, %d reserved", n, len(payload)/n, allocated, reserved)
		require.LessOrEqual(t, allocated, uint64(reserved), "%d events with %d-byte pads", n, pad)
	}
}
