package clustertest

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// BenchmarkIngestOneNodeVsTwoShards ingests the same topic (FLAGWATCH_BENCH_USERS users,
// default 30,000, a week, 4 flags) into one ClickHouse 18.16 server and into a cluster of
// two shards (one replica each) on the same machine, and prints events/s for both and
// their ratio. Both run on the same cores, so the ratio shows the cost of the cluster's
// distributed inserts, not the capacity a second machine would add.
func BenchmarkIngestOneNodeVsTwoShards(b *testing.B) {
	users := 30000
	if v, err := strconv.Atoi(os.Getenv("FLAGWATCH_BENCH_USERS")); err == nil && v > 0 {
		users = v
	}
	cfg := synth.Config{Seed: 9, Users: users, Days: 7, Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
		Flags: []synth.Flag{{Key: "a", LaunchDay: 1}, {Key: "b", LaunchDay: 1}, {Key: "c", LaunchDay: 2}, {Key: "d", LaunchDay: 3}}}
	var recs []*kgo.Record
	if err := cfg.Each(func(r synth.Record) error {
		recs = append(recs, &kgo.Record{Key: []byte(r.Key), Value: r.Value, Timestamp: r.Time})
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	kc := brokertest.Cluster(b, 4, broker.EventsTopic)
	brokertest.Produce(b, brokertest.Client(b, kc, kgo.ProducerLinger(5*time.Millisecond)), broker.EventsTopic, recs...)

	run := func(name, dsn string) float64 {
		ctx := context.Background()
		conn, err := store.Open(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		if err := store.Migrate(ctx, conn); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := ingest.Run(ctx, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "bench-" + name,
			Logger: quiet(), ExitWhenCaughtUp: true}); err != nil {
			b.Fatal(err)
		}
		return float64(len(recs)) / time.Since(start).Seconds()
	}
	dsn, _ := chtest.DB(b)
	one := run("one-node", dsn)
	cl := chtest.StartCluster(b, 2, 1)
	two := run("two-shards", clusterDSN(cl, cl.Database(b)))
	b.ReportMetric(one, "one-node-events/s")
	b.ReportMetric(two, "two-shards-events/s")
	b.Logf("ingest of %d events: one node %.0f events/s, two shards (same machine) %.0f events/s, ratio %.2f",
		len(recs), one, two, two/one)
}
