package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// Two services starting at once on different nodes of a 2 × 2 cluster both migrate; the
// per-user tables are sharded and replicated, the rest replicated everywhere.
func TestClusterMigrateFromTwoNodes(t *testing.T) {
	cl := chtest.SharedCluster(t)
	dsns := cl.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	conns := make([]store.Conn, 2)
	for i, dsn := range []string{dsns[0], dsns[len(dsns)-1]} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := store.Open(ctx, dsn, store.WithCluster(cl.Name))
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = c
			errs[i] = store.Migrate(ctx, c)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err)
		defer conns[i].Close()
	}
	conn := conns[0]
	require.Len(t, store.Shards(conn), 2)
	require.Equal(t, "events_all", store.AllTable(conn, "events"))

	// An insert through events_all lands on the shards by user, replicated.
	b, err := conn.PrepareBatch(ctx, "INSERT INTO events_all (uuid, event, distinct_id, ts_ms, timestamp, properties, source)")
	require.NoError(t, err)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 1000; i++ {
		require.NoError(t, b.Append(uuid.New(), "$pageview", "u"+string(rune('a'+i%26))+time.Duration(i).String(), now.UnixMilli(), now, "{}", "test"))
	}
	require.NoError(t, b.Send())
	var total uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM events_all").Scan(&total))
	require.Equal(t, uint64(1000), total)
	var perShard []uint64
	for _, s := range store.Shards(conn) {
		var n uint64
		require.NoError(t, s.QueryRow(ctx, "SELECT count() FROM events").Scan(&n))
		perShard = append(perShard, n)
	}
	require.Equal(t, uint64(1000), perShard[0]+perShard[1])
	require.NotZero(t, perShard[0])
	require.NotZero(t, perShard[1])
	// Every node has the migrations record and both replicas of a shard the same rows.
	for _, n := range cl.Nodes {
		var applied uint64
		nc, err := store.Open(ctx, dsns[(n.Shard-1)*2+n.Replica-1])
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			return nc.QueryRow(ctx, "SELECT count() FROM schema_migrations FINAL").Scan(&applied) == nil && applied >= 6
		}, 30*time.Second, 100*time.Millisecond, "node %s", n)
		var local uint64
		require.Eventually(t, func() bool {
			return nc.QueryRow(ctx, "SELECT count() FROM events").Scan(&local) == nil && local == perShard[n.Shard-1]
		}, 30*time.Second, 100*time.Millisecond, "node %s replicates its shard", n)
		nc.Close()
	}
}
