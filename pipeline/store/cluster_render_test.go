package store

import (
	"strings"
	"testing"
)

// Every migration renders for a cluster: a new migration whose statement has no cluster
// rule fails here, not on a user's cluster.
func TestEveryMigrationRendersForACluster(t *testing.T) {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []Version{{18, 16}, {26, 7}} {
		for _, m := range ms {
			stmts, err := m.statements(FeaturesFor(v))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range stmts {
				cs, err := clusterize(s, "c", "db")
				if err != nil {
					t.Errorf("%s: %v", m.name, err)
					continue
				}
				for _, c := range cs {
					if strings.Contains(c.sql, "ENGINE = MergeTree") || strings.Contains(c.sql, "ENGINE = ReplacingMergeTree") ||
						strings.Contains(c.sql, "ENGINE = AggregatingMergeTree") {
						t.Errorf("%s: a table that is not replicated on a cluster: %s", m.name, firstLine(c.sql))
					}
				}
			}
		}
	}
	cs, err := clusterize("CREATE TABLE IF NOT EXISTS events (\n x UInt8\n) ENGINE = ReplacingMergeTree\nORDER BY x", "c", "db")
	if err != nil || len(cs) != 2 || !strings.Contains(cs[0].sql, "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/events', '{replica}')") ||
		!strings.Contains(cs[1].sql, "Distributed(`c`, `db`, events, cityHash64(distinct_id))") {
		t.Errorf("a per-user table: %+v %v", cs, err)
	}
	cs, err = clusterize("CREATE TABLE IF NOT EXISTS alert_log (\n x UInt8\n) ENGINE = ReplacingMergeTree(x)\nORDER BY x", "c", "db")
	if err != nil || len(cs) != 1 || !strings.Contains(cs[0].sql, "ReplicatedReplacingMergeTree('/clickhouse/tables/all/db/alert_log', '{shard}-{replica}', x)") {
		t.Errorf("a table on every node: %+v %v", cs, err)
	}
}
