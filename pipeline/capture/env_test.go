package capture_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/capture"
)

// fixedNow is the server clock in tests.
var fixedNow = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

// env is a capture handler behind a real HTTP server, producing to kfake over TCP, with
// a consumer reading what reached the topic.
type env struct {
	t        testing.TB
	url      string
	kafka    *broker.Embedded
	registry *prometheus.Registry
	consumer *kgo.Client
}

func newEnv(t testing.TB, opts capture.Options) *env {
	t.Helper()
	return newWrappedEnv(t, opts, func(h http.Handler) http.Handler { return h })
}

// newWrappedEnv serves wrap(capture handler), for tests that add other routes.
func newWrappedEnv(t testing.TB, opts capture.Options, wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	return newEnvWith(t, opts, wrap, nil)
}

// newEnvWith also lets the test wrap the Kafka producer (nil: as is).
func newEnvWith(t testing.TB, opts capture.Options, wrap func(http.Handler) http.Handler,
	wrapProducer func(capture.Producer) capture.Producer) *env {
	t.Helper()
	kafka := brokertest.Cluster(t, 3, broker.EventsTopic)
	opts.Brokers = kafka.Addrs()
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixedNow }
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	p, err := capture.NewProducer(opts)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	var producer capture.Producer = p
	if wrapProducer != nil {
		producer = wrapProducer(p)
	}
	h, err := capture.NewHandler(producer, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close(context.Background())) })
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); h.WatchKafka(ctx) }()
	t.Cleanup(func() { cancel(); <-watched })
	srv := httptest.NewServer(wrap(h))
	t.Cleanup(srv.Close)
	consumer := brokertest.Client(t, kafka,
		kgo.ConsumeTopics(broker.EventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	return &env{t: t, url: srv.URL, kafka: kafka, registry: opts.Registry, consumer: consumer}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, path string, header http.Header, body []byte) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	require.NoError(e.t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

func (e *env) post(path string, header http.Header, body []byte) response {
	e.t.Helper()
	return e.do(http.MethodPost, path, header, body)
}

// records returns exactly n records from the topic, sorted by key then value; it fails
// if fewer arrive within 10 s or more are there.
func (e *env) records(n int) []*kgo.Record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < n && ctx.Err() == nil {
		got = append(got, e.poll(ctx)...)
	}
	require.Len(e.t, got, n, "records on the topic")
	extraCtx, cancelExtra := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelExtra()
	require.Empty(e.t, e.poll(extraCtx), "more records than expected")
	sort.Slice(got, func(i, j int) bool {
		if c := bytes.Compare(got[i].Key, got[j].Key); c != 0 {
			return c < 0
		}
		return bytes.Compare(got[i].Value, got[j].Value) < 0
	})
	return got
}

// recordsSettled returns what reaches the topic until no record has arrived for 500 ms,
// for tests that cannot know the count (at-least-once retries).
func (e *env) recordsSettled() []*kgo.Record {
	e.t.Helper()
	var got []*kgo.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		recs := e.poll(ctx)
		cancel()
		if len(recs) == 0 {
			return got
		}
		got = append(got, recs...)
	}
}

func (e *env) poll(ctx context.Context) []*kgo.Record {
	fs := e.consumer.PollFetches(ctx)
	for _, fe := range fs.Errors() {
		if fe.Err != context.DeadlineExceeded && fe.Err != context.Canceled {
			require.NoError(e.t, fe.Err)
		}
	}
	return fs.Records()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}
