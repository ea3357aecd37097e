package capture_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/capture"
)

const benchBatchSize = 50

// benchBatch is a posthog-node style /batch/ body of n events, gzip-compressed.
func benchBatch(tb testing.TB, n int) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"api_key":"phc_bench","sent_at":"2026-03-04T11:59:59.000Z","batch":[`)
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		event := "purchase"
		if i%5 == 0 {
			event = "$feature_flag_called"
		}
		fmt.Fprintf(&buf, `{"event":%q,"distinct_id":"user-%d","uuid":"0190a1b2-c3d4-7e5f-8a9b-%012d",`+
			`"timestamp":"2026-03-04T11:59:58.%03dZ","type":"capture","properties":{"$feature_flag":"new-checkout",`+
			`"$feature_flag_response":"test","$feature/new-checkout":"test","revenue":%d.5,"plan":"pro",`+
			`"$geoip_country_code":"GB","$current_url":"https://shop.example/checkout?step=%d",`+
			`"$lib":"posthog-node","$lib_version":"5.70.0","$is_server":true}}`, event, i%37, i, i, i, i%4)
	}
	buf.WriteString(`]}`)
	return gz(tb, buf.Bytes())
}

// ackingProducer acknowledges every record at once: the handler's own cost.
type ackingProducer struct{}

func (ackingProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	promise(r, nil)
}

func (ackingProducer) Ping(context.Context) error { return nil }

// BenchmarkBatch50Gzip measures /batch/ with 50-event gzip batches: decoding alone
// (handler-only) and with the acks of a kfake broker over TCP (kfake).
func BenchmarkBatch50Gzip(b *testing.B) {
	body := benchBatch(b, benchBatchSize)
	b.Run("handler-only", func(b *testing.B) {
		h, err := capture.NewHandler(ackingProducer{}, capture.Options{Registry: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		benchHandler(b, h, body)
	})
	b.Run("kfake", func(b *testing.B) {
		kafka := brokertest.Cluster(b, 3, broker.EventsTopic)
		opts := capture.Options{Brokers: kafka.Addrs(), Registry: prometheus.NewRegistry()}
		p, err := capture.NewProducer(opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		b.SetParallelism(16) // many SDK clients at once, as in production
		h, err := capture.NewHandler(p, opts)
		if err != nil {
			b.Fatal(err)
		}
		benchHandler(b, h, body)
	})
}

func benchHandler(b *testing.B, h http.Handler, body []byte) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/batch/", bytes.NewReader(body))
			req.Header.Set("Content-Encoding", "gzip")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*benchBatchSize)/b.Elapsed().Seconds(), "events/s")
}
