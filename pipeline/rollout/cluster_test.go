package rollout_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback/posthogtest"
	"github.com/flagwatch/flagwatch/pipeline/rollout"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// Two analyzers connected to different nodes of a 2 × 2 cluster: the rollout log is
// replicated across the nodes and the changes are claimed in ZooKeeper, so each change
// is made once.
func TestTwoReplicasOnTwoNodesOfACluster(t *testing.T) {
	cl := chtest.SharedCluster(t)
	dsns := cl.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ph := posthogtest.New(t, "1", "phx_key")
	ph.Add(flagJSON)
	mons, err := config.Parse([]byte(fmt.Sprintf(monitors,
		fmt.Sprintf(`posthog: {host: %q, project_id: 1, flag_id: 42, api_key_env: POSTHOG_API_KEY}`, ph.URL))), "flagwatch.yaml")
	require.NoError(t, err)
	alerts := &captured{}
	var ctrls []*rollout.Controller
	for i, dsn := range []string{dsns[0], dsns[len(dsns)-1]} {
		conn, err := store.Open(ctx, dsn+"?cluster="+url.QueryEscape(cl.Name)+"&zookeeper="+url.QueryEscape(cl.ZooKeeper))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		require.NoError(t, store.Migrate(ctx, conn))
		claims, closeClaims, err := claim.Open(conn, quiet())
		require.NoError(t, err)
		t.Cleanup(closeClaims)
		ctrls = append(ctrls, rollout.New(rollout.Options{Conn: conn, Claims: claims, Emitter: alerts, Monitors: mons,
			Replica: fmt.Sprintf("node-%d", i), Logger: quiet(), Lookup: lookup, HTTP: fastHTTP()}))
	}
	users := int64(0)
	for h := 0; h <= 4*24; h += 6 {
		users += 40
		var wg sync.WaitGroup
		for i, c := range ctrls {
			wg.Go(func() {
				p := &analyze.Pass{ID: fmt.Sprintf("h%d-%d", h, i), Time: t0.Add(time.Duration(h) * time.Hour),
					Rows: metricRows(users, users+3, alert.Inconclusive)}
				require.NoError(t, c.ObservePass(ctx, p))
			})
		}
		wg.Wait()
	}
	require.Equal(t, []string{"start 0%→1%", "advance 1%→10%", "advance 10%→100%", "complete 100%→100%"}, alerts.changes("new-checkout"))
	require.Len(t, ph.Patches(), 3)
}
