package capture_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flagwatch/flagwatch/pipeline/capture"
)

const oneEvent = `{"api_key":"k","batch":[{"event":"x","distinct_id":"u","uuid":"00000000-0000-4000-8000-000000000001"}]}`

// countingProducer counts the records capture tries to produce.
type countingProducer struct {
	capture.Producer
	n atomic.Int64
}

func (c *countingProducer) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	c.n.Add(1)
	c.Producer.Produce(ctx, r, promise)
}

// With Kafka gone, a request is answered 503 with Retry-After, never 200; once Kafka is
// known to be down (issue 12, finding 8) the next requests are answered at once, without
// producing and waiting ProduceTimeout for acks that cannot come, and /healthz says so.
func TestKafkaDownAnswers503WithRetryAfter(t *testing.T) {
	counter := &countingProducer{}
	e := newEnvWith(t, capture.Options{ProduceTimeout: time.Second, RetryAfter: 7 * time.Second},
		func(h http.Handler) http.Handler { return h },
		func(p capture.Producer) capture.Producer { counter.Producer = p; return counter })
	require.Equal(t, http.StatusOK, e.post("/batch/", nil, []byte(oneEvent)).status, "warm-up")
	e.kafka.Close()

	res := e.post("/batch/", nil, []byte(oneEvent))
	require.Equal(t, http.StatusServiceUnavailable, res.status, res.body)
	require.Equal(t, "7", res.header.Get("Retry-After"))
	require.Contains(t, res.body, `"type":"server_error","code":"kafka_unavailable"`)
	health := e.do(http.MethodGet, "/healthz", nil, nil)
	require.Equal(t, http.StatusServiceUnavailable, health.status, health.body)
	require.Contains(t, health.body, "kafka: failing")

	produced := counter.n.Load()
	for range 3 {
		res = e.post("/batch/", nil, []byte(oneEvent))
		require.Equal(t, http.StatusServiceUnavailable, res.status, res.body)
		require.Equal(t, "7", res.header.Get("Retry-After"))
		require.Contains(t, res.body, `"code":"kafka_unavailable","detail":"events not stored, retry later: kafka down since `)
	}
	require.Equal(t, produced, counter.n.Load(), "nothing produced while Kafka is known to be down")
	require.Contains(t, e.metrics(), `flagwatch_capture_produce_failures_total{reason="known_down"} 3`)
}

// While the broker refuses writes the SDK is told to retry; once it accepts them again, a
// retry is stored. Whatever reaches the topic is that one event, under its one uuid.
func TestRefusedProduceIs503AndARetrySucceeds(t *testing.T) {
	e := newEnv(t, capture.Options{ProduceTimeout: time.Second, KafkaOpts: []kgo.Opt{kgo.MetadataMinAge(250 * time.Millisecond)}})
	refuse := e.kafka.Cluster().Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1,
	})

	first := e.post("/batch/", nil, []byte(oneEvent))
	require.Equal(t, http.StatusServiceUnavailable, first.status, first.body)
	require.Positive(t, refuse.Hits())

	refuse.Remove()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res := e.post("/batch/", nil, []byte(oneEvent))
		if res.status == http.StatusOK {
			break
		}
		require.Equal(t, http.StatusServiceUnavailable, res.status, res.body)
		require.True(t, time.Now().Before(deadline), "no retry succeeded after the broker recovered")
		time.Sleep(200 * time.Millisecond) // as the SDKs back off
	}
	recs := e.recordsSettled()
	require.NotEmpty(t, recs)
	for _, r := range recs {
		require.Equal(t, "00000000-0000-4000-8000-000000000001", decode(t, r.Value)["uuid"])
	}
}
