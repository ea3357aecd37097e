package clustertest

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// logFile keeps a service's log for the test's failure message.
func logFile(t *testing.T) io.Writer {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "log")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("service log (tail):\n%s", b)
		}
		f.Close()
	})
	return f
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clusterDSN names every node (clickhouse-go fails over in order) and the cluster.
func clusterDSN(cl *chtest.Cluster, dsns []string) string {
	var hosts []string
	db := ""
	for _, d := range dsns {
		u, _ := url.Parse(d)
		hosts = append(hosts, u.Host)
		db = u.Path
	}
	return "clickhouse://" + strings.Join(hosts, ",") + db + "?cluster=" + url.QueryEscape(cl.Name) + "&zookeeper=" + url.QueryEscape(cl.ZooKeeper)
}

func count(t *testing.T, conn store.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		return 0
	}
	return n
}

// Ingest keeps going while one replica of each shard is killed with SIGKILL, and after
// they come back: every event is stored once (nothing lost, nothing doubled) and the
// replicas of each shard converge.
func TestIngestThroughReplicaKills(t *testing.T) {
	cl := chtest.StartCluster(t, 2, 2)
	dsns := cl.Database(t)
	dsn := clusterDSN(cl, dsns)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	conn, err := store.Open(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, store.Migrate(ctx, conn))

	cfg := synth.Config{Seed: 3, Users: 3000, Days: 4, Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
		Flags: []synth.Flag{{Key: "checkout", LaunchDay: 1}}}
	var recs []*kgo.Record
	uuids := map[string]bool{}
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		recs = append(recs, &kgo.Record{Key: []byte(r.Key), Value: r.Value, Timestamp: r.Time})
		return nil
	}))
	kc := brokertest.Cluster(t, 4, broker.EventsTopic)
	prod := brokertest.Client(t, kc, kgo.ProducerLinger(5*time.Millisecond))
	half := len(recs) / 2
	brokertest.Produce(t, prod, broker.EventsTopic, recs[:half]...)

	ictx, stopIngest := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- ingest.Run(ictx, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "cluster-ingest",
			Logger: slog.New(slog.NewTextHandler(logFile(t), nil)), BatchSize: 2000, BatchInterval: 50 * time.Millisecond})
	}()
	require.Eventually(t, func() bool { return count(t, conn, "SELECT count() FROM events_all") > 0 }, 2*time.Minute, 100*time.Millisecond)

	// The replicas the cluster prefers (in_order) go down mid-stream.
	cl.Kill(1, 1)
	cl.Kill(2, 1)
	brokertest.Produce(t, prod, broker.EventsTopic, recs[half:]...)

	for _, r := range recs {
		uuids[string(r.Value)] = true
	}
	// synth writes one event per message and no two alike: the distinct messages are the
	// distinct events.
	want := uint64(len(uuids))
	// Ingest stores and commits everything while a replica of each shard is down. (What a
	// replica acknowledged just before it was killed becomes visible again when it comes
	// back and the other replica fetches it: it is on its disk, not lost.)
	adm := kadm.NewClient(prod)
	require.Eventually(t, func() bool {
		ends, err := adm.ListEndOffsets(ctx, broker.EventsTopic)
		if err != nil {
			return false
		}
		committed, err := adm.FetchOffsets(ctx, "cluster-ingest")
		if err != nil {
			return false
		}
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			c, ok := committed.Lookup(o.Topic, o.Partition)
			done = done && ok && c.At >= o.Offset
		})
		return done
	}, 3*time.Minute, 500*time.Millisecond, "ingest commits the whole stream while a replica of each shard is down")

	cl.Restart(1, 1)
	cl.Restart(2, 1)
	// Replicas converge: each node holds its shard's events, the same on both replicas.
	perNode := func() []uint64 {
		var out []uint64
		for _, d := range dsns {
			c, err := store.Open(ctx, d, store.WithMaxWait(10*time.Second))
			if err != nil {
				return nil
			}
			out = append(out, count(t, c, "SELECT count() FROM events FINAL"))
			c.Close()
		}
		return out
	}
	require.Eventually(t, func() bool {
		n := perNode()
		return len(n) == 4 && n[0] == n[1] && n[2] == n[3] && n[0]+n[2] == want && n[0] > 0 && n[2] > 0
	}, 3*time.Minute, time.Second, "replicas converge on every event (want %d)", want)
	require.Equal(t, want, count(t, conn, "SELECT uniqExact(uuid) FROM events_all"), "nothing lost")
	require.Equal(t, want, count(t, conn, "SELECT count() FROM events_all FINAL"), "nothing doubled")
	stopIngest()
	require.NoError(t, <-done)
}
