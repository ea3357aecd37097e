package capture

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests     *prometheus.CounterVec   // endpoint, status
	events       prometheus.Counter       // produced and acknowledged
	produceTime  prometheus.Histogram     // wait for a request's acks
	bytes        *prometheus.CounterVec   // stage: received (wire), decoded (JSON)
	invalidTimes prometheus.Counter       // timestamps replaced by now
	produceFails *prometheus.CounterVec   // reason
	batchSize    prometheus.Histogram     // events per accepted request
	latency      *prometheus.HistogramVec // endpoint
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_requests_total",
			Help: "Capture HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "status"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_capture_events_produced_total",
			Help: "Events produced to Kafka and acknowledged.",
		}),
		produceTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flagwatch_capture_produce_duration_seconds",
			Help:    "Time from producing a request's events to Kafka's last ack.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_bytes_total",
			Help: "Payload bytes: received (as sent, possibly compressed) and decoded (JSON).",
		}, []string{"stage"}),
		invalidTimes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_capture_invalid_timestamps_total",
			Help: "Event timestamps that did not parse and were replaced by the receive time.",
		}),
		produceFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_produce_failures_total",
			Help: "Requests whose events Kafka did not acknowledge, by reason.",
		}, []string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flagwatch_capture_batch_events",
			Help:    "Events per accepted request.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flagwatch_capture_request_duration_seconds",
			Help:    "Capture request handling time by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.requests, m.events, m.produceTime, m.bytes, m.invalidTimes,
		m.produceFails, m.batchSize, m.latency)
	return m
}
