package notify

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// Two notifiers connected to different nodes of a 2 × 2 cluster, sharing one consumer
// group whose partitions all carry the same flags: their claims live in ZooKeeper, so
// each alert is posted once.
func TestTwoReplicasPostOnceOnCluster(t *testing.T) {
	cl := chtest.SharedCluster(t)
	dsns := cl.Database(t)
	e := newEnv(t, 4)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(e.logs.String())
		}
	})
	withCluster := func(dsn string) string {
		return dsn + "?cluster=" + url.QueryEscape(cl.Name) + "&zookeeper=" + url.QueryEscape(cl.ZooKeeper)
	}
	o1, o2 := e.opts(), e.opts()
	o1.ReplicaID, o2.ReplicaID = "node-1", "node-4"
	o1.ClickHouseDSN, o2.ClickHouseDSN = withCluster(dsns[0]), withCluster(dsns[len(dsns)-1])
	e.start(o1)
	e.start(o2)
	eventually(t, 60*time.Second, func() bool { return groupMembers(t, e, "notifier-test") == 2 }, "both replicas joined")

	flags := []string{"f1", "f2", "f3", "f4", "f5"}
	for _, f := range flags {
		for p := int32(0); p < 4; p++ {
			e.produce(p, lossAlert(f))
		}
	}
	eventually(t, 90*time.Second, func() bool { return e.lag("notifier-test") == 0 }, "all alerts handled")
	perFlag := map[string]int{}
	for _, m := range e.slack.Messages() {
		perFlag[strings.Fields(m.Text)[0]]++
	}
	for _, f := range flags {
		require.Equal(t, 1, perFlag[f], "posts for %s", f)
	}
}
