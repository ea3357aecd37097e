package proxy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests *prometheus.CounterVec   // upstream, status
	duration *prometheus.HistogramVec // upstream
	bytes    *prometheus.CounterVec   // upstream
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_proxy_requests_total",
			Help: "Requests forwarded to PostHog, by upstream (api, assets) and PostHog's status code (unreachable: answered 502; too_large: answered 413; client_gone: the client left first).",
		}, []string{"upstream", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flagwatch_capture_proxy_duration_seconds",
			Help:    "Time from receiving a request to the end of PostHog's answer, by upstream.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 15),
		}, []string{"upstream"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_capture_proxy_request_bytes_total",
			Help: "Request body bytes forwarded to PostHog, by upstream.",
		}, []string{"upstream"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.bytes)
	}
	return m
}
