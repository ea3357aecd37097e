package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

// The bench's shape (issue #15): 30 days of 15-minute passes, 50 flags × 5 metrics ×
// 20 segment values (plus the totals), one test variant — 15.1 million result rows —
// and 20,000 users per flag in the assignment state.
const (
	benchDays     = 30
	benchPasses   = benchDays * 96
	benchFlags    = 50
	benchMetrics  = 5
	benchSegments = 20
	benchUsers    = 20000
)

// BenchmarkPages renders the flags list and one flag's page from a month of history
// (make bench-web). The budget is 200 ms each on the reference machine; the times are
// printed, not asserted (the machine's speed must not fail a test).
func BenchmarkPages(b *testing.B) {
	ctx := context.Background()
	var conn store.Conn
	var have uint64
	if dsn := os.Getenv("FLAGWATCH_BENCH_DSN"); dsn != "" {
		// A database kept between runs (generated on the first), for working on queries.
		var err error
		conn, err = store.Open(ctx, dsn)
		require.NoError(b, err)
		defer conn.Close()
		require.NoError(b, store.Migrate(ctx, conn))
		require.NoError(b, conn.QueryRow(ctx, "SELECT count() FROM analysis_results").Scan(&have))
	} else {
		_, conn = chtest.DB(b)
	}
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	t0 := time.Now()
	perPass := benchFlags * benchMetrics * (benchSegments + 1)
	rows := benchPasses * perPass
	if have == 0 {
		generate(b, conn, start, perPass, rows)
		b.Logf("%d result rows and %d users generated in %s", rows, benchFlags*benchUsers, time.Since(t0).Round(time.Millisecond))
	}
	// A month of passes arrives 5,250 rows at a time, and analysis_latest stays merged down
	// to about one row per key; a bulk insert of the month leaves it at millions of rows
	// until merges catch up, which no production table looks like.
	require.NoError(b, conn.Exec(ctx, "OPTIMIZE TABLE analysis_latest FINAL"))
	// The flags are declared, with their metrics and segment property.
	var yaml strings.Builder
	yaml.WriteString("flags:\n")
	for f := range benchFlags {
		fmt.Fprintf(&yaml, "  - key: flag-%d\n    control: control\n    segments: [country]\n    metrics:\n", f)
		for m := range benchMetrics {
			fmt.Fprintf(&yaml, "      - {name: metric %d, kind: conversion, event: e%d}\n", m, m)
		}
	}
	mons, err := config.Parse([]byte(yaml.String()), "bench.yaml")
	require.NoError(b, err)
	now := start.AddDate(0, 0, benchDays)
	h := web.Handler(web.Options{Conn: conn, Monitors: mons, Now: func() time.Time { return now }, Logger: quiet})
	page := func(b *testing.B, path string) {
		// The first request reads the table's columns once; it is not what a reader waits for.
		for range 2 {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			require.Equal(b, http.StatusOK, rec.Code, rec.Body.String())
		}
		var worst time.Duration
		var total time.Duration
		n := 0
		for b.Loop() {
			t := time.Now()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			d := time.Since(t)
			if rec.Code != http.StatusOK {
				b.Fatalf("%s: %d", path, rec.Code)
			}
			total += d
			worst = max(worst, d)
			n++
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(n), "ms/page")
		load, _ := os.ReadFile("/proc/loadavg")
		b.Logf("%s: %s per page on average, %s at worst over %d (budget 200ms; load average %s)", path,
			(total / time.Duration(n)).Round(time.Millisecond), worst.Round(time.Millisecond), n, strings.Join(strings.Fields(string(load))[:3], " "))
	}
	b.Run("list", func(b *testing.B) { page(b, "/") })
	b.Run("flag", func(b *testing.B) { page(b, "/flags/flag-7") })
	b.Run("flag json", func(b *testing.B) { page(b, "/api/flags/flag-7") })
}

func generate(b *testing.B, conn store.Conn, start time.Time, perPass, rows int) {
	ctx := context.Background()
	// Generated inside ClickHouse: a month of passes is too many rows to send.
	require.NoError(b, conn.Exec(ctx, fmt.Sprintf(`INSERT INTO analysis_results (pass_time, pass_id, flag, metric,
	segment_property, segment_value, variant, n, control_n, mean, control_mean, lift, se, ci_low, ci_high, p,
	chance_to_win, cuped, decision, reason)
SELECT toDateTime(%[1]d + pass * 900) AS pass_time, concat('bench-', toString(pass)) AS pass_id,
	concat('flag-', toString(f)) AS flag, concat('metric ', toString(m)) AS metric,
	if(s = 0, '', 'country') AS segment_property, if(s = 0, '', concat('c', toString(s))) AS segment_value,
	'test' AS variant, toUInt64(10 + pass * 7) AS n, toUInt64(10 + pass * 7) AS control_n,
	0.1 AS mean, 0.1 AS control_mean, (f - 25) / 500 AS lift, 0.5 / sqrt(10 + pass * 7) AS se,
	lift - 2 * se AS ci_low, lift + 2 * se AS ci_high, 0.5 AS p, 0.5 AS chance_to_win, toUInt8(1) AS cuped,
	'inconclusive' AS decision, 'bench' AS reason
FROM (SELECT number AS k, intDiv(k, %[2]d) AS pass, intDiv(k %% %[2]d, %[3]d) AS f,
	intDiv(k %% %[3]d, %[4]d) AS m, k %% %[4]d AS s FROM numbers(%[5]d)) AS g`,
		start.Unix(), perPass, benchMetrics*(benchSegments+1), benchSegments+1, rows)))
	// Exposures (the views fill the assignment state from them): one per user, users
	// spread over the month, one in three in test.
	require.NoError(b, conn.Exec(ctx, fmt.Sprintf(`INSERT INTO exposures (uuid, flag, variant, distinct_id, ts_ms, timestamp, properties, source, segments)
SELECT generateUUIDv4(), concat('flag-', toString(number %% %[1]d)), if(number %% 3 = 0, 'test', 'control'),
	concat('user-', toString(number)), toInt64(%[2]d + (number %% %[3]d) * 1000) AS ts, toDateTime(intDiv(ts, 1000)),
	'{}', 'bench', '{}'
FROM numbers(%[4]d)`, benchFlags, start.UnixMilli(), benchDays*86400, benchFlags*benchUsers)))
}
