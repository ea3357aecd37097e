package capture_test

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/event"
)

// A 4 KB gzip body of ~2 M nested '[' (issue 12, finding 1) gets a 400 naming the
// problem, with or without a token, on every body form; capture keeps serving.
func TestNestingBombIs400(t *testing.T) {
	e := newEnv(t, capture.Options{Tokens: []string{"phc_good"}})
	bomb := gz(t, []byte(strings.Repeat("[", 2<<20)))
	require.Less(t, len(bomb), 4096)
	batchBomb := gz(t, []byte(`{"api_key":"phc_good","batch":[{"event":"x","distinct_id":"u","properties":{"a":`+strings.Repeat("[", 2<<20)))
	for name, res := range map[string]response{
		"no token":       e.post("/batch/", hdr("Content-Encoding", "gzip"), bomb),
		"token in query": e.post("/e/?token=phc_good", hdr("Content-Encoding", "gzip"), bomb),
		"in a batch":     e.post("/batch/", hdr("Content-Encoding", "gzip"), batchBomb),
	} {
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", name, res.body)
		require.Contains(t, res.body, "nested deeper than 128 levels", name)
	}
	ok := e.post("/e/", nil, []byte(`{"event":"x","distinct_id":"u","token":"phc_good"}`))
	require.Equal(t, http.StatusOK, ok.status, ok.body)
	e.records(1)
}

// A token outside the body (query, Authorization) is checked before the body is read or
// decompressed: a wrong one is 401 whatever the body, even one that is not gzip at all.
func TestTokenOutsideTheBodyIsCheckedFirst(t *testing.T) {
	e := newEnv(t, capture.Options{Tokens: []string{"phc_good"}})
	notGzip := []byte("this is not gzip")
	for name, res := range map[string]response{
		"query":  e.post("/e/?token=phc_evil", hdr("Content-Encoding", "gzip"), notGzip),
		"bearer": e.post("/batch/", hdr("Content-Encoding", "gzip", "Authorization", "Bearer phc_evil"), notGzip),
	} {
		require.Equal(t, http.StatusUnauthorized, res.status, "%s: %s", name, res.body)
		require.Contains(t, res.body, `API key \"phc_evil\" is not a project key`, name)
	}
	require.Contains(t, e.metrics(), `flagwatch_capture_bytes_total{stage="decoded"} 0`)
}

// storedTimes sends body to capture and decodes what reached Kafka as ingest does, so
// the result is the time the store will hold: event name → time.
func storedTimes(t *testing.T, e *env, body string, n int) map[string]time.Time {
	t.Helper()
	res := e.post("/batch/", hdr("Content-Encoding", "gzip"), gz(t, []byte(body)))
	require.Equal(t, http.StatusOK, res.status, res.body)
	got := map[string]time.Time{}
	for _, r := range e.records(n) {
		evs, err := event.Decode(r.Value, r.Timestamp)
		require.NoError(t, err, "%s", r.Value)
		require.Len(t, evs, 1)
		got[evs[0].Name] = time.UnixMilli(evs[0].TsMs).UTC()
	}
	return got
}

// Clock skew is corrected once (issue 12, finding 2): a client whose clock is 1 h behind,
// or 2 h ahead, gets its events stored at the true time, through capture and the
// decoder ingest runs. The server clock is injected (fixedNow).
func TestSkewedClientsAreStoredAtTheTrueTime(t *testing.T) {
	for name, skew := range map[string]time.Duration{"1 h behind": -time.Hour, "2 h ahead": 2 * time.Hour, "in sync": 0} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, capture.Options{})
			client := func(d time.Duration) string { return fixedNow.Add(skew).Add(d).Format(time.RFC3339Nano) }
			body := `{"api_key":"k","sent_at":"` + client(0) + `","batch":[
			  {"event":"thirty-seconds-ago","distinct_id":"u","timestamp":"` + client(-30*time.Second) + `"},
			  {"event":"own-sent-at","distinct_id":"u","timestamp":"` + client(-time.Minute) + `","sent_at":"` + client(-50*time.Second) + `"},
			  {"event":"offset","distinct_id":"u","offset":1500,"timestamp":"` + client(-time.Hour) + `"}]}`
			require.Equal(t, map[string]time.Time{
				"thirty-seconds-ago": fixedNow.Add(-30 * time.Second),
				"own-sent-at":        fixedNow.Add(-10 * time.Second),
				"offset":             fixedNow.Add(-1500 * time.Millisecond),
			}, storedTimes(t, e, body, 3))
		})
	}
}

// A time that cannot be placed (issue 12, finding 7) fails the request with a 400 that
// names the event and the field; nothing of it is produced. An old but representable
// time is kept as sent.
func TestUnplaceableTimesAre400(t *testing.T) {
	e := newEnv(t, capture.Options{})
	good := `{"event":"ok","distinct_id":"u"}`
	for field, bad := range map[string]string{
		"offset":    `{"event":"x","distinct_id":"u","offset":1e300}`,
		"timestamp": `{"event":"x","distinct_id":"u","timestamp":1e300}`,
		"sent_at":   `{"event":"x","distinct_id":"u","timestamp":"2026-03-04T11:00:00Z","sent_at":"last tuesday"}`,
	} {
		res := e.post("/e/", nil, []byte(`[`+good+`,`+bad+`]`))
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", field, res.body)
		require.Contains(t, res.body, `"detail":"events[1]: `, field)
		require.Contains(t, res.body, field, field)
		require.Contains(t, res.body, "bad_timestamp", field)
	}
	for _, ts := range []string{"1900-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z"} {
		res := e.post("/e/", nil, []byte(`{"event":"x","distinct_id":"u","timestamp":"`+ts+`","properties":{"$ignore_sent_at":true}}`))
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", ts, res.body)
		require.Contains(t, res.body, `events[0]: bad_timestamp: timestamp`, ts)
		require.Contains(t, res.body, `before 1970-01-01`, ts)
	}
	res := e.post("/e/?_=1772625600000", nil, []byte(`{"event":"old","distinct_id":"u","timestamp":"2015-06-01T12:00:00Z","properties":{"$ignore_sent_at":true}}`))
	require.Equal(t, http.StatusOK, res.status, res.body)
	recs := e.records(1)
	evs, err := event.Decode(recs[0].Value, recs[0].Timestamp)
	require.NoError(t, err)
	require.Equal(t, time.Date(2015, 6, 1, 12, 0, 0, 0, time.UTC).UnixMilli(), evs[0].TsMs)
}

// Memory amplification (issue 12, finding 6): forty 19 KB gzip bodies that each inflate
// to 19 MB (760 KB on the wire) arrive at once while Kafka holds every produce. Capture
// takes what its in-flight budget holds and answers the rest 503 with Retry-After
// before inflating them: the bytes reserved never exceed the budget, and everything
// allocated meanwhile — by capture, the Kafka client and this test — stays within a
// small multiple of it, where unbounded it was 2 GB. Counted, not timed: the test waits
// until every request is either answered or waiting for its acks.
func TestInFlightMemoryIsBounded(t *testing.T) {
	const requests = 40
	opts := capture.Options{ProduceTimeout: time.Minute}
	e := newEnv(t, opts)
	release := make(chan struct{})
	e.kafka.Cluster().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.Cluster().KeepControl()
		e.kafka.Cluster().SleepControl(func() { <-release })
		return nil, nil, false
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	var batch bytes.Buffer
	batch.WriteString(`{"api_key":"k","batch":[`)
	for i := range requests {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"event":"x","distinct_id":"u%d","properties":{"pad":"%s"}}`, i, strings.Repeat("a", 450_000))
	}
	batch.WriteString(`]}`)
	body := gz(t, batch.Bytes())
	require.Less(t, len(body)*requests, 800_000, "about 760 KB on the wire")
	require.Less(t, batch.Len(), capture.DefaultMaxBodyBytes, "each within the body limit")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	answers := make(chan response, requests)
	for range requests {
		go func() {
			answers <- e.post("/batch/", hdr("Content-Encoding", "gzip"), body)
		}()
	}
	var answered []response
	deadline := time.Now().Add(time.Minute) // only a guard against a hang
	for {
		select {
		case a := <-answers:
			answered = append(answered, a)
			continue
		default:
		}
		if len(answered)+int(metricValue(t, e, "flagwatch_capture_requests_awaiting_acks")) == requests {
			break
		}
		require.True(t, time.Now().Before(deadline), "requests neither answered nor waiting for acks")
		time.Sleep(20 * time.Millisecond)
	}
	inflight := metricValue(t, e, "flagwatch_capture_inflight_bytes")
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc

	held := requests - len(answered)
	require.GreaterOrEqual(t, held, 1, "the budget holds at least one request at the body limit")
	require.LessOrEqual(t, inflight, float64(capture.DefaultMaxInFlightBytes))
	for _, a := range answered {
		require.Equal(t, http.StatusServiceUnavailable, a.status, a.body)
		require.Contains(t, a.body, `"code":"over_capacity"`)
		require.Equal(t, "5", a.header.Get("Retry-After"))
	}
	require.Equal(t, float64(len(answered)), metricValue(t, e, `flagwatch_capture_overload_total{limit="bytes"}`))
	t.Logf("%d requests held, %d refused; %d MiB reserved, %d MiB allocated", held, len(answered), int(inflight)>>20, allocated>>20)
	require.Less(t, allocated, uint64(3*capture.DefaultMaxInFlightBytes), "allocations bounded by the budget")

	unblock()
	for range held {
		a := <-answers
		require.Equal(t, http.StatusOK, a.status, a.body)
	}
	require.Zero(t, metricValue(t, e, "flagwatch_capture_inflight_bytes"), "everything released")
}

// metricValue reads one sample (name with its labels, as /metrics prints it).
func metricValue(t *testing.T, e *env, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(e.metrics(), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

// A batch of millions of tiny events ("[{},{},…]", 19 KB gzip'd) would cost ~400 bytes
// per event to decode, 1 KB of JSON becoming 130 KB: it is counted before any per-event
// memory is allocated, and refused with 413 as larger than the whole budget.
func TestMillionsOfTinyEventsAreRefusedBeforeDecoding(t *testing.T) {
	e := newEnv(t, capture.Options{})
	payload := []byte("[" + strings.Repeat("{},", 6_000_000) + "{}]")
	body := gz(t, payload)
	require.Less(t, len(body), 40_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res := e.post("/e/", hdr("Content-Encoding", "gzip"), body)
	runtime.ReadMemStats(&after)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, res.body)
	require.Contains(t, res.body, "request needs more memory than capture holds for all requests in flight")
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MB of events: %d MiB allocated", len(payload)/1e6, allocated>>20)
	require.Less(t, allocated, uint64(2*len(payload)), "no more than the decompressed payload and its scans")
}
