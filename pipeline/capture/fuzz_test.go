package capture_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/event"
)

// memProducer acknowledges every record at once and keeps it.
type memProducer struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func (m *memProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	m.mu.Lock()
	m.recs = append(m.recs, r)
	m.mu.Unlock()
	promise(r, nil)
}

func (m *memProducer) Ping(context.Context) error { return nil }

// fuzzRequest builds a capture request carrying payload in one of the encodings
// PostHog SDKs use (mode picks it; the last modes send the bytes as they are).
func fuzzRequest(t *testing.T, payload []byte, mode uint8) *http.Request {
	b64 := base64.StdEncoding.EncodeToString
	var r *http.Request
	switch mode % 10 {
	case 0: // posthog-node without compression
		r = httptest.NewRequest("POST", "/batch/", bytes.NewReader(payload))
		r.Header.Set("Content-Type", "application/json")
	case 1: // posthog-node
		r = httptest.NewRequest("POST", "/batch/", bytes.NewReader(gz(t, payload)))
		r.Header.Set("Content-Encoding", "gzip")
	case 2: // posthog-js gzip-js
		r = httptest.NewRequest("POST", "/e/?compression=gzip-js&_=1772625600000", bytes.NewReader(gz(t, payload)))
		r.Header.Set("Content-Type", "text/plain")
	case 3: // base64 body
		r = httptest.NewRequest("POST", "/e/?compression=base64", bytes.NewReader([]byte(b64(payload))))
	case 4: // posthog-js base64: a form whose data is base64
		r = httptest.NewRequest("POST", "/e/", bytes.NewReader([]byte("data="+url.QueryEscape(b64(payload))+"&compression=base64")))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case 5: // legacy form with JSON data
		r = httptest.NewRequest("POST", "/track/", bytes.NewReader([]byte("data="+url.QueryEscape(string(payload)))))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case 6: // the GET pixel: base64 of gzip in the query
		r = httptest.NewRequest("GET", "/e/?data="+url.QueryEscape(b64(gz(t, payload))), nil)
	case 7: // lz64 is refused with a reason
		r = httptest.NewRequest("POST", "/e/?compression=lz64", bytes.NewReader(payload))
	case 8: // the bytes as they are: detection of gzip, base64, forms, JSON
		r = httptest.NewRequest("POST", "/e/", bytes.NewReader(payload))
	default: // claimed gzip
		r = httptest.NewRequest("POST", "/i/v0/e/", bytes.NewReader(payload))
		r.Header.Set("Content-Encoding", "gzip")
	}
	return r
}

// FuzzCaptureRequest: whatever a client sends, in whatever encoding, capture answers —
// never a panic, never a 5xx but 503 — and a 200 means every event was produced and
// decodes exactly as ingest will decode it; any other answer produced nothing and says
// why.
func FuzzCaptureRequest(f *testing.F) {
	for _, s := range []string{
		`{"api_key":"k","sent_at":"2026-03-04T11:59:00.000Z","batch":[{"event":"$feature_flag_called","distinct_id":"u","timestamp":"2026-03-04T11:58:58.000Z","properties":{"$feature_flag":"f","$feature_flag_response":"test"}}]}`,
		`[{"event":"$pageview","distinct_id":"u-1","uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","timestamp":"2026-03-04T11:00:00.000Z","properties":{"token":"k","$title":">>~~~??"}}]`,
		`{"event":"x","distinct_id":42,"offset":1500,"properties":{"$feature/a":"b","$set":{"plan":"pro"}}}`,
		`{"event":"x","distinct_id":"u","timestamp":1e300}`,
		`{"event":"x","distinct_id":"u","properties":{"a":[[[[[[[[[[[[]]]]]]]]]]]]}}`,
		`{"batch":{"event":"x"}}`,
		`[[[[[[[[`,
		`data=eyJldmVudCI6IngiLCJkaXN0aW5jdF9pZCI6InUifQ==`,
		"\x1f\x8b\x08\x00\x00\x00\x00\x00",
	} {
		for mode := range uint8(10) {
			f.Add([]byte(s), mode)
		}
	}
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, payload []byte, mode uint8) {
		p := &memProducer{}
		h, err := capture.NewHandler(p, capture.Options{MaxBodyBytes: 64 << 10, Registry: prometheus.NewRegistry(),
			Now: func() time.Time { return now }})
		require.NoError(t, err)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, fuzzRequest(t, payload, mode))
		switch w.Code {
		case http.StatusOK:
			require.NotEmpty(t, p.recs, "200 without events")
			for _, r := range p.recs {
				evs, err := event.Decode(r.Value, now)
				require.NoError(t, err, "capture accepted what ingest rejects: %s", r.Value)
				require.Len(t, evs, 1)
				require.Equal(t, evs[0].DistinctID, string(r.Key))
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable:
			require.Empty(t, p.recs, "a refused request produced events")
			require.Regexp(t, `^\{"type":"[a-z_]+","code":"[a-z_]+","detail":".+"\}$`, w.Body.String())
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
	})
}
