package analyze_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/ops"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

func quietSlog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func healthz(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /healthz tells the truth: while every pass fails (here: a table the pass reads is
// gone), the analyzer turns unhealthy once the failures outlast -unhealthy-after, and
// says why; before that it says it is retrying.
func TestHealthFailsWhilePassesFail(t *testing.T) {
	dsn, conn := chtest.DB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, conn.Exec(ctx, "DROP TABLE flag_activity_mv"))
	require.NoError(t, conn.Exec(ctx, "DROP TABLE flag_activity"))
	kc := brokertest.Cluster(t, 1, broker.AlertsTopic)

	// The health's clock is the test's: failing "for longer than 30 minutes" is a step
	// of this clock, not a wait.
	var mu sync.Mutex
	clock := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	health := &ops.Health{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }}
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- analyze.Run(ctx, analyze.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, ConfigPath: "flagwatch.yaml",
			Schedule: "0 0 1 1 *", ListenAddr: "127.0.0.1:0", UnhealthyAfter: 30 * time.Minute, Replica: "health-test",
			Logger: quietSlog(), Health: health, OnListen: func(a string) { addr <- a }})
	}()
	a := <-addr
	// The first pass fails: within the grace the analyzer says it is retrying.
	require.Eventually(t, func() bool {
		_, body := healthz(t, a)
		return strings.Contains(body, "passes: retrying")
	}, time.Minute, 50*time.Millisecond)
	code, body := healthz(t, a)
	require.Equal(t, http.StatusOK, code, body)

	mu.Lock()
	clock = clock.Add(31 * time.Minute)
	mu.Unlock()
	code, body = healthz(t, a)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "passes: failing for 31m0s")
	require.Contains(t, body, "flag_activity")
	cancel()
	require.NoError(t, <-done)
}
