package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// The real binary on SIGTERM: flushes, commits and exits 0, and what it committed is
// exactly what it stored.
func TestSIGTERMFlushesCommitsAndExitsZero(t *testing.T) {
	chtest.ServerOnly(t, "the binary under test and this test would both open the embedded engine's directory")
	bin := filepath.Join(t.TempDir(), "ingest")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	kc := brokertest.Cluster(t, 3, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	dsn, conn := chtest.DB(t)
	var recs []*kgo.Record
	for i := 0; i < 20000; i++ {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i % 300)), Value: []byte(fmt.Sprintf(
			`{"event":"$pageview","distinct_id":"u%d","timestamp":"2026-11-01T00:00:%02dZ","properties":{"i":%d}}`, i%300, i%60, i))})
	}
	brokertest.Produce(t, cl, broker.EventsTopic, recs...)

	cmd := exec.Command(bin, "--kafka-brokers", strings.Join(kc.Addrs(), ","), "--clickhouse-dsn", dsn,
		"--group", "sigterm", "--batch-size", "2000", "--batch-interval", "10s", "--listen", "")
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	ctx := context.Background()
	require.Eventually(t, func() bool {
		var n uint64
		_ = conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&n)
		return n > 0
	}, 60*time.Second, 20*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit 0 on SIGTERM")
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("ingest did not exit within 30 s of SIGTERM")
	}

	var stored uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(uuid) FROM events").Scan(&stored))
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, "sigterm")
	require.NoError(t, err)
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) { committed += o.At })
	require.Positive(t, committed)
	require.Equal(t, uint64(committed), stored, "everything polled was flushed before the commit, nothing more")
}
