package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records      prometheus.Counter
	rows         *prometheus.CounterVec
	batches      prometheus.Counter
	dlq          *prometheus.CounterVec
	insertDur    prometheus.Histogram
	retries      prometheus.Counter
	lag          *prometheus.GaugeVec
	held         prometheus.Gauge
	skipped      prometheus.Counter
	cacheEntries prometheus.Gauge
	evicted      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_ingest_records_total", Help: "Kafka records consumed."}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_ingest_rows_inserted_total", Help: "Rows acknowledged by ClickHouse, by table."}, []string{"table"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_ingest_batches_total", Help: "Batches inserted and committed."}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagwatch_ingest_dlq_total", Help: "Messages sent to the dead-letter topic, by reason."}, []string{"reason"}),
		insertDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flagwatch_ingest_insert_seconds", Help: "Latency of one successful batch insert.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_ingest_insert_retries_total", Help: "Failed insert attempts that were retried."}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagwatch_ingest_consumer_lag", Help: "Records behind the partition's high watermark at the last fetch."},
			[]string{"topic", "partition"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagwatch_ingest_buffered_bytes", Help: "Bytes of messages and decoded events held in the batch being filled and the batches being inserted."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_ingest_exposures_skipped_total", Help: "Exposures not written because an earlier one of the same (flag, user, variant) was."}),
		cacheEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagwatch_ingest_exposure_cache_entries", Help: "(flag, user, variant) entries in the exposure cache."}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagwatch_ingest_exposure_cache_evictions_total", Help: "Users evicted from the exposure cache to keep it within its size."}),
	}
	reg.MustRegister(m.records, m.rows, m.batches, m.dlq, m.insertDur, m.retries, m.lag, m.held, m.skipped, m.cacheEntries, m.evicted)
	return m
}
