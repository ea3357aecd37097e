//go:build wrk

package capture_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/capture"
)

// TestWrk load-tests capture as it runs in production (capture.Run, HTTP over loopback,
// kfake over TCP) with wrk posting 50-event gzip batches to /batch/, and prints
// requests/s and events/s. Run it with bench.sh; CAPTURE_BENCH_DURATION (default 10s)
// and CAPTURE_BENCH_CONNECTIONS (default 64) tune it.
func TestWrk(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed (apt-get install wrk); bench.sh installs it")
	}
	duration := envOr("CAPTURE_BENCH_DURATION", "10s")
	conns := envOr("CAPTURE_BENCH_CONNECTIONS", "64")

	url := startCapture(t)
	script := writeWrkScript(t, benchBatch(t, benchBatchSize))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, wrk, "-t2", "-c"+conns, "-d"+duration, "--latency",
		"-s", script, url+"/batch/").CombinedOutput()
	require.NoError(t, err, "wrk: %s", out)
	t.Logf("wrk output:\n%s", out)

	require.NotRegexp(t, `Non-2xx or 3xx responses`, string(out), "every request must be accepted")
	rps := match(t, out, `Requests/sec:\s+([0-9.]+)`)
	total := match(t, out, `([0-9]+) requests in`)
	produced := match(t, []byte(metricsOf(t, url)), `flagwatch_capture_events_produced_total ([0-9.e+]+)`)
	require.GreaterOrEqual(t, produced, total*benchBatchSize, "every answered request's events are in Kafka")
	fmt.Printf("capture wrk bench (%s, %s connections, %d-event gzip batches to /batch/): %.0f requests/s, %.0f events/s\n",
		duration, conns, benchBatchSize, rps, rps*benchBatchSize)
}

func startCapture(t *testing.T) string {
	kafka := brokertest.Cluster(t, 3, broker.EventsTopic)
	ctx, cancel := context.WithCancel(context.Background())
	addrc, done := make(chan net.Addr, 1), make(chan error, 1)
	go func() {
		done <- capture.Run(ctx, capture.Options{Addr: "127.0.0.1:0", Brokers: kafka.Addrs(),
			Logger: slog.New(slog.DiscardHandler), OnListen: func(a net.Addr) { addrc <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + (<-addrc).String()
}

func writeWrkScript(t *testing.T, body []byte) string {
	dir := t.TempDir()
	bodyPath := filepath.Join(dir, "batch.json.gz")
	require.NoError(t, os.WriteFile(bodyPath, body, 0o600))
	script := filepath.Join(dir, "batch.lua")
	lua := fmt.Sprintf(`wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Content-Encoding"] = "gzip"
local f = assert(io.open(%q, "rb"))
wrk.body = f:read("*all")
f:close()
`, bodyPath)
	require.NoError(t, os.WriteFile(script, []byte(lua), 0o600))
	return script
}

func metricsOf(t *testing.T, url string) string {
	e := &env{t: t, url: url}
	return e.metrics()
}

func match(t *testing.T, out []byte, re string) float64 {
	m := regexp.MustCompile(re).FindSubmatch(out)
	require.NotNil(t, m, "%s not found in:\n%s", re, out)
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
