package capture

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec   // endpoint, status
	rejected      *prometheus.CounterVec   // reason
	events        prometheus.Counter       // produced and acknowledged
	produceTime   prometheus.Histogram     // wait for a request's acks
	bytes         *prometheus.CounterVec   // stage: received (wire), decoded (JSON)
	invalidTimes  prometheus.Counter       // events whose time cannot be placed
	produceFails  *prometheus.CounterVec   // reason
	batchSize     prometheus.Histogram     // events per accepted request
	latency       *prometheus.HistogramVec // endpoint
	overload      *prometheus.CounterVec   // limit: bytes, requests
	inflightReqs  prometheus.Gauge
	inflightBytes prometheus.Gauge
	awaitingAcks  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_requests_total",
			Help: "Capture HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "status"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_rejected_total",
			Help: "Requests answered with an error, by reason (the decoder's reason for an event ingest would dead-letter, else the answer's code).",
		}, []string{"reason"}),
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
			Help: "Events whose time cannot be placed (bad_timestamp); their requests were answered 400.",
		}),
		produceFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_produce_failures_total",
			Help: "Requests whose events Kafka did not acknowledge, by reason (known_down: answered 503 without trying).",
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
		overload: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_overload_total",
			Help: "Requests answered 503 because the in-flight budget was held by others, by limit (bytes, requests).",
		}, []string{"limit"}),
		inflightReqs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagwatch_capture_inflight_requests",
			Help: "Capture requests being handled.",
		}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagwatch_capture_inflight_bytes",
			Help: "Bytes reserved by the requests in flight (body, decompressed payload, parse and records).",
		}),
		awaitingAcks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagwatch_capture_requests_awaiting_acks",
			Help: "Requests whose events are produced and waiting for Kafka's acks.",
		}),
	}
	// Labels known in advance are exported from the start, at 0.
	for _, s := range []string{"received", "decoded"} {
		m.bytes.WithLabelValues(s)
	}
	for _, l := range []string{"bytes", "requests"} {
		m.overload.WithLabelValues(l)
	}
	reg.MustRegister(m.requests, m.rejected, m.events, m.produceTime, m.bytes, m.invalidTimes,
		m.produceFails, m.batchSize, m.latency, m.overload, m.inflightReqs, m.inflightBytes, m.awaitingAcks)
	return m
}
