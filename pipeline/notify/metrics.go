package notify

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reg          *prometheus.Registry
	received     prometheus.Counter
	decodeErrors prometheus.Counter
	sent         *prometheus.CounterVec
	suppressed   *prometheus.CounterVec
	failed       *prometheus.CounterVec
	slackErrors  *prometheus.CounterVec
	claimsLost   prometheus.Counter
	digests      *prometheus.CounterVec
	lag          *prometheus.GaugeVec
	rateWaits    prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_notifier_alerts_received_total",
			Help: "Alerts read from the alerts topic."}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_notifier_decode_errors_total",
			Help: "Alert messages that could not be decoded and were skipped."}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_notifier_messages_sent_total",
			Help: "Slack messages posted, by kind (open: an incident's first message, reply: a thread reply, watch: an incident's sessions to watch, digest)."}, []string{"kind"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_notifier_alerts_suppressed_total",
			Help: "Alerts that needed no message, by reason."}, []string{"reason"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_notifier_alerts_failed_total",
			Help: "Alerts recorded as failed for good (Slack rejected the channel or the message), by Slack error."}, []string{"error"}),
		slackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_notifier_slack_errors_total",
			Help: "Failed Slack calls, retried or not, by error (rate_limited, http_503, network, channel_not_found, invalid_auth, …)."}, []string{"error"}),
		claimsLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_notifier_claims_lost_total",
			Help: "Posts another replica claimed first."}),
		digests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagwatch_notifier_digests_total",
			Help: "Digest runs by outcome (sent, skipped, failed)."}, []string{"outcome"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flagwatch_notifier_consumer_lag",
			Help: "Records behind the high watermark, per partition, as of the last fetch."}, []string{"partition"}),
		rateWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "flagwatch_notifier_rate_limit_waits_total",
			Help: "Messages that waited for their channel's rate limit."}),
	}
	m.reg.MustRegister(m.received, m.decodeErrors, m.sent, m.suppressed, m.failed, m.slackErrors, m.claimsLost,
		m.digests, m.lag, m.rateWaits, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
