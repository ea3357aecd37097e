package ingest_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /healthz answers from the first second and says what ingest waits for; a backfill
// (-exit-when-caught-up) whose Kafka or ClickHouse never comes gives up after
// -startup-wait instead of hanging.
func TestHealthWhileWaitingAndStartupWait(t *testing.T) {
	kc := brokertest.Cluster(t, 1, broker.EventsTopic)
	for _, tc := range []struct {
		name, waitsFor, brokers, dsn string
	}{
		{"Kafka never comes", "kafka: waiting: Kafka at", freeAddr(t), "clickhouse://" + freeAddr(t) + "/db"},
		{"ClickHouse never comes", "clickhouse: waiting", kc.Addrs()[0], "clickhouse://" + freeAddr(t) + "/db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen := freeAddr(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- ingest.Run(ctx, ingest.Options{Brokers: []string{tc.brokers}, ClickHouseDSN: tc.dsn, Logger: quiet,
					ExitWhenCaughtUp: true, StartupWait: 3 * time.Second, ListenAddr: listen})
			}()
			var body string
			require.Eventually(t, func() bool {
				var code int
				code, body = get(t, "http://"+listen+"/healthz")
				return code == http.StatusServiceUnavailable && strings.Contains(body, tc.waitsFor)
			}, 20*time.Second, 20*time.Millisecond, "last /healthz: %s", body)
			select {
			case err := <-done:
				require.Error(t, err)
				require.Contains(t, err.Error(), "3s")
			case <-ctx.Done():
				t.Fatal("ingest kept waiting past -startup-wait")
			}
		})
	}
}

// /metrics serves the registry the caller gave (it served the default one), and
// /healthz the health the caller gave.
func TestMetricsAndHealthFromTheCaller(t *testing.T) {
	kc := brokertest.Cluster(t, 1, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	brokertest.Produce(t, cl, broker.EventsTopic, stream(100, "")...)
	reg := prometheus.NewRegistry()
	health := &ops.Health{}
	listen := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- ingest.Run(ctx, ingest.Options{Brokers: kc.Addrs(), Logger: quiet, Sink: discard{}, Registerer: reg,
			Health: health, ListenAddr: listen, BatchInterval: 20 * time.Millisecond})
	}()
	require.Eventually(t, func() bool {
		code, body := get(t, "http://"+listen+"/metrics")
		return code == http.StatusOK && strings.Contains(body, "flagwatch_ingest_records_total 100")
	}, 30*time.Second, 20*time.Millisecond)
	code, body := get(t, "http://"+listen+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "kafka: ok")
	require.Contains(t, body, "clickhouse: ok")
	require.NoError(t, health.Check())
	cancel()
	require.NoError(t, <-done)
}
