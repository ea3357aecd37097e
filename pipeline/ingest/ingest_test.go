package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/ops"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

var quiet = testLogger()

func testLogger() *slog.Logger {
	if os.Getenv("FLAGWATCH_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// stream builds n PostHog events for users u0..u(n/10); every 10th is an exposure.
func stream(n int, prefix string) []*kgo.Record {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	recs := make([]*kgo.Record, 0, n)
	for i := 0; i < n; i++ {
		user := fmt.Sprintf("%su%d", prefix, i%(n/10+1))
		ts := base.Add(time.Duration(i) * time.Second).Format(time.RFC3339Nano)
		var v string
		if i%10 == 0 {
			v = fmt.Sprintf(`{"event":"$feature_flag_called","distinct_id":%q,"timestamp":%q,"properties":{"$feature_flag":"f1","$feature_flag_response":"%s","$geoip_country_code":"GB"}}`,
				user, ts, []string{"control", "test"}[i%20/10])
		} else {
			v = fmt.Sprintf(`{"event":"purchase","distinct_id":%q,"timestamp":%q,"properties":{"revenue":%d,"$current_url":"https://shop.example.com/p/%d"}}`,
				user, ts, i%97, i)
		}
		recs = append(recs, &kgo.Record{Key: []byte(user), Value: []byte(v)})
	}
	return recs
}

func counts(t *testing.T, conn store.Conn) (events, uniqEvents, exposures uint64) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(), uniqExact(uuid) FROM events FINAL").Scan(&events, &uniqEvents))
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM exposures FINAL").Scan(&exposures))
	return
}

func run(t *testing.T, o ingest.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o.ExitWhenCaughtUp = true
	if o.Logger == nil {
		o.Logger = quiet
	}
	require.NoError(t, ingest.Run(ctx, o))
}

// The same stream consumed twice (a second group replays it from the start) stores each
// event exactly once; a poison message in the middle goes to the DLQ with its reason and
// does not block the partition.
func TestReplayTwiceExactCountsAndPoison(t *testing.T) {
	kc := brokertest.Cluster(t, 4, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	dsn, conn := chtest.DB(t)

	recs := stream(5000, "")
	poison := &kgo.Record{Key: []byte("u1"), Value: []byte(`{"event":"purchase","distinct_id":"u1","timestamp":"not a time"}`)}
	all := append(append(append([]*kgo.Record{}, recs[:2500]...), poison), recs[2500:]...)
	brokertest.Produce(t, cl, broker.EventsTopic, all...)

	reg := prometheus.NewRegistry()
	o := ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "g1", BatchSize: 700, Registerer: reg}
	run(t, o)
	require.Equal(t, 1.0, counterSum(t, reg, "flagwatch_ingest_dlq_total"), "DLQ counted by reason")
	require.Equal(t, 5001.0, counterSum(t, reg, "flagwatch_ingest_records_total"))
	o.Registerer = nil
	ev, uniq, exp := counts(t, conn)
	require.Equal(t, uint64(5000), ev)
	require.Equal(t, uint64(5000), uniq)
	require.Equal(t, uint64(500), exp)

	o.Group = "g2" // replay from the start
	run(t, o)
	ev, uniq, exp = counts(t, conn)
	require.Equal(t, uint64(5000), ev, "a replay must not double-count")
	require.Equal(t, uint64(5000), uniq)
	require.Equal(t, uint64(500), exp)

	// Assignment state from the materialized views: the 500 exposures (records 0, 10, …,
	// 4990) belong to 500 different users, one variant each, so 500 pairs and no
	// $multiple, however often the stream was replayed.
	var assigned, multiple uint64
	require.NoError(t, conn.QueryRow(context.Background(), `
		SELECT count(), countIf(lo != hi) FROM (
			SELECT flag, uh, minMerge(low_state) AS lo, maxMerge(high_state) AS hi
			FROM assignment_state GROUP BY flag, uh)`).Scan(&assigned, &multiple))
	require.Equal(t, uint64(0), multiple)
	require.Equal(t, uint64(500), assigned)

	dlq := consumeAll(t, kc, broker.DLQTopic, 2) // one per run
	require.Len(t, dlq, 2)
	for _, r := range dlq {
		require.Equal(t, string(poison.Value), string(r.Value), "dead-lettered whole and unchanged")
		require.Equal(t, event.ReasonBadTimestamp, header(r, "flagwatch-dlq-reason"))
	}
}

// counterSum adds up a counter family's values over its labels (0 when it has none).
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0 // a vector with no series yet
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func consumeAll(t *testing.T, kc *broker.Embedded, topic string, want int) []*kgo.Record {
	t.Helper()
	cl := brokertest.Client(t, kc, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		out = append(out, f.Records()...)
	}
	return out
}

// flakySink fails the first n writes after inserting only the events table, i.e. a
// batch that fails mid-way, then behaves.
type flakySink struct {
	w     *store.Writer
	fails atomic.Int32
}

func (f *flakySink) WriteBatch(ctx context.Context, b store.RawBatch) (int, int, error) {
	if f.fails.Add(-1) >= 0 {
		_, _, _ = f.w.Write(ctx, b.Events[:len(b.Events)/2]) // part of the batch lands
		return 0, 0, errors.New("injected: connection reset mid-batch")
	}
	return f.w.WriteBatch(ctx, b)
}

func TestBatchFailingMidwayThenSucceeding(t *testing.T) {
	kc := brokertest.Cluster(t, 2, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	dsn, conn := chtest.DB(t)
	brokertest.Produce(t, cl, broker.EventsTopic, stream(3000, "")...)

	sink := &flakySink{w: store.NewWriter(conn)}
	sink.fails.Store(3)
	run(t, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, BatchSize: 1000, Sink: sink})
	ev, uniq, exp := counts(t, conn)
	require.Equal(t, uint64(3000), ev)
	require.Equal(t, uint64(3000), uniq)
	require.Equal(t, uint64(300), exp)
	require.Less(t, sink.fails.Load(), int32(0), "the injected failures happened")
}

// ClickHouse is stopped while ingest is consuming and started again: ingest backs off,
// does not commit, and ends with every event stored once.
func TestClickHouseStoppedAndRestarted(t *testing.T) {
	srv := chtest.Start(t)
	dsn, conn := chtest.NewDB(t, srv.DSN)
	kc := brokertest.Cluster(t, 2, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	brokertest.Produce(t, cl, broker.EventsTopic, stream(4000, "a")...)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	health := &ops.Health{}
	go func() {
		done <- ingest.Run(ctx, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Logger: quiet,
			BatchSize: 500, BatchInterval: 50 * time.Millisecond, Health: health, UnhealthyAfter: time.Hour})
	}()
	require.Eventually(t, func() bool {
		var n uint64
		_ = conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&n)
		return n > 0
	}, 60*time.Second, 20*time.Millisecond)
	srv.Halt()
	// Events keep arriving while the store is down.
	brokertest.Produce(t, cl, broker.EventsTopic, stream(4000, "b")...)
	// /healthz says the inserts are being retried (within the grace: still healthy).
	var status []string
	require.Eventually(t, func() bool {
		status = health.Status()
		return slices.ContainsFunc(status, func(l string) bool { return strings.HasPrefix(l, "clickhouse: retrying") })
	}, time.Minute, 20*time.Millisecond, "%q", status)
	require.NoError(t, health.Check())
	srv.Resume()

	require.Eventually(t, func() bool {
		var n uint64
		_ = conn.QueryRow(ctx, "SELECT uniqExact(uuid) FROM events").Scan(&n)
		return n == 8000
	}, 90*time.Second, 200*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	ev, uniq, exp := counts(t, conn)
	require.Equal(t, uint64(8000), ev)
	require.Equal(t, uint64(8000), uniq)
	require.Equal(t, uint64(800), exp)
}

// Two replicas in one group: the second joins mid-stream, partitions move, and the
// result is still every event exactly once.
func TestRebalanceBetweenTwoConsumers(t *testing.T) {
	kc := brokertest.Cluster(t, 6, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	dsn, conn := chtest.DB(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Logger: quiet, Group: "rb",
		BatchSize: 300, BatchInterval: 20 * time.Millisecond}
	var wg sync.WaitGroup
	start := func() {
		wg.Add(1)
		go func() { defer wg.Done(); require.NoError(t, ingest.Run(ctx, o)) }()
	}
	start()
	total := 0
	for wave := 0; wave < 6; wave++ {
		brokertest.Produce(t, cl, broker.EventsTopic, stream(2000, fmt.Sprintf("w%d", wave))...)
		total += 2000
		if wave == 2 {
			start()
		}
		time.Sleep(300 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		var n uint64
		_ = conn.QueryRow(ctx, "SELECT uniqExact(uuid) FROM events").Scan(&n)
		return n == uint64(total)
	}, 90*time.Second, 100*time.Millisecond)
	cancel()
	wg.Wait()
	ev, uniq, _ := counts(t, conn)
	require.Equal(t, uint64(total), ev)
	require.Equal(t, uint64(total), uniq)
}

// kcat is a Kafka client nobody here wrote: what it produces must ingest the same way.
func TestKcatProducedStream(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat missing in CI: make test installs it")
		}
		t.Skip("kcat not installed (make test installs it)")
	}
	kc := brokertest.Cluster(t, 3, broker.EventsTopic)
	dsn, conn := chtest.DB(t)
	var in strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&in, "k%d\t{\"event\":\"$pageview\",\"distinct_id\":\"k%d\",\"properties\":{\"$current_url\":\"/p/%d\"}}\n", i%50, i%50, i)
	}
	cmd := exec.Command(kcat, "-P", "-b", strings.Join(kc.Addrs(), ","), "-t", broker.EventsTopic, "-K", "\t")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	run(t, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn})
	ev, uniq, _ := counts(t, conn)
	require.Equal(t, uint64(1000), ev)
	require.Equal(t, uint64(1000), uniq)
}
