package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Cluster mode (SPEC §8). With WithCluster(name), Open reads the cluster's shards and
// replicas from system.clusters, and:
//
//   - per-user tables (events, exposures, the assignment state, the incremental state:
//     shardedTables) are replicated within each shard (Replicated*MergeTree with the
//     {shard} and {replica} macros) and keep their names, so every statement of a pass
//     runs unchanged on one replica of each shard, over that shard's users only; a
//     Distributed table <name>_all over them, sharded by the same hash of distinct_id,
//     takes ingest's inserts (insert_distributed_sync: acknowledged once every shard
//     has the rows) and serves reads that need every shard;
//   - every other table (results history, alert and notification logs, generations, the
//     migrations record) is one replica set spanning every node: written on any node,
//     read on any node;
//   - migrations run on every node, one node at a time, rather than as ON CLUSTER DDL:
//     on 18.16 a materialized view created ON CLUSTER resolves its SELECT's tables in
//     `default` on the other nodes, ALTER … ON CLUSTER fails on a Distributed table and
//     OPTIMIZE … ON CLUSTER fails outright (see the cluster notes in docs/operations.md).
//     Every statement is idempotent, so several services migrating at once is safe, as
//     on one node.
//
// A user's rows all live on one shard (cityHash64(distinct_id) picks it, and the
// assignment state's uh is that same hash), so the join of exposures with events stays
// shard-local, and the ReplacingMergeTree deduplication sees every retry of an event.

// shardedTables maps each per-user table to the sharding expression of its <name>_all
// table.
var shardedTables = map[string]string{
	"events":           "cityHash64(distinct_id)",
	"exposures":        "cityHash64(distinct_id)",
	"assignment_state": "uh",
	"segment_sets":     "id",
	"flag_activity":    "cityHash64(flag)",
	// flag_segment_sets counts a shard's exposures per (flag, set), so that property
	// discovery joins it to the same shard's segment_sets.
	"flag_segment_sets": "cityHash64(flag)",
	"touched_users":     "uh",
	"contributions":     "uh",
	"cell_sums":         "cityHash64(flag)",
}

// Sharded reports whether table is split across shards in cluster mode.
func Sharded(table string) bool { _, ok := shardedTables[table]; return ok }

// AllTable is the name that reads every shard of table: table itself on one node, its
// Distributed table in cluster mode.
func AllTable(conn Conn, table string) string {
	if conn.Server().Cluster != "" && Sharded(table) {
		return table + "_all"
	}
	return table
}

// Node is one server of a cluster.
type Node struct {
	Shard, Replica int
	Addr           string
}

// ShardConns is implemented by a cluster connection: one connection per shard, each
// failing over between the shard's replicas.
type ShardConns interface {
	Shards() []Conn
	Nodes() []Node
}

// Shards returns one connection per shard of conn's cluster, or conn itself on a single
// node, so that per-shard work is one loop in both modes.
func Shards(conn Conn) []Conn {
	if sc, ok := conn.(ShardConns); ok {
		return sc.Shards()
	}
	return []Conn{conn}
}

// cluster is a connection to one node (the DSN's) plus one per shard.
type cluster struct {
	Conn
	name   string
	nodes  []Node
	shards []Conn
	server Server
	// open connects to addrs (one shard's replicas, in order) with database db.
	open func(addrs []string, db string) (Conn, error)
	mu   sync.Mutex
}

func (c *cluster) Shards() []Conn { return c.shards }
func (c *cluster) Nodes() []Node  { return c.nodes }
func (c *cluster) Server() Server { return c.server }

func (c *cluster) Close() error {
	var errs []error
	for _, s := range c.shards {
		errs = append(errs, s.Close())
	}
	errs = append(errs, c.Conn.Close())
	return errors.Join(errs...)
}

// openCluster turns a connection to one node into a cluster connection.
func openCluster(ctx context.Context, base *native, opts *clickhouse.Options, name string) (*cluster, error) {
	rows, err := base.Query(ctx, "SELECT shard_num, replica_num, host_address, port FROM system.clusters WHERE cluster = "+Quote(name)+" ORDER BY shard_num, replica_num")
	if err != nil {
		return nil, fmt.Errorf("read cluster %q: %w", name, err)
	}
	var nodes []Node
	for rows.Next() {
		var s, r uint32
		var host string
		var port uint16
		if err := rows.Scan(&s, &r, &host, &port); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read cluster %q: %w", name, err)
		}
		nodes = append(nodes, Node{Shard: int(s), Replica: int(r), Addr: host + ":" + strconv.Itoa(int(port))})
	}
	rows.Close()
	if len(nodes) == 0 {
		return nil, fmt.Errorf("cluster %q is not in the server's remote_servers (system.clusters)", name)
	}
	c := &cluster{Conn: base, name: name, nodes: nodes, server: base.server}
	c.server.Cluster = name
	c.open = func(addrs []string, db string) (Conn, error) {
		o := *opts
		o.Addr = addrs
		o.Auth.Database = db
		o.ConnOpenStrategy = clickhouse.ConnOpenInOrder
		conn, err := clickhouse.Open(&o)
		if err != nil {
			return nil, err
		}
		return &native{conn: conn, server: c.server}, nil
	}
	// Every node needs the database before a connection may name it.
	for _, n := range nodes {
		boot, err := c.open([]string{n.Addr}, "default")
		if err != nil {
			return nil, fmt.Errorf("connect to node %s of cluster %q: %w", n.Addr, name, err)
		}
		err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+QuoteIdent(base.server.Database))
		boot.Close()
		if err != nil {
			return nil, fmt.Errorf("create database %s on node %s: %w", base.server.Database, n.Addr, err)
		}
	}
	byShard := map[int][]string{}
	var shardNums []int
	for _, n := range nodes {
		if _, ok := byShard[n.Shard]; !ok {
			shardNums = append(shardNums, n.Shard)
		}
		byShard[n.Shard] = append(byShard[n.Shard], n.Addr)
	}
	sort.Ints(shardNums)
	for _, s := range shardNums {
		conn, err := c.open(byShard[s], base.server.Database)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("open shard %d of cluster %q: %w", s, name, err)
		}
		c.shards = append(c.shards, conn)
	}
	base.server.Cluster = name
	return c, nil
}

var (
	createTableRE = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS (\w+) (.*?)ENGINE = (\w+)(\([^)]*\))?(.*)$`)
	createViewRE  = regexp.MustCompile(`^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+)`)
	alterAddRE    = regexp.MustCompile(`^ALTER TABLE (\w+) (?:ADD|MODIFY) COLUMN`)
	insertRE      = regexp.MustCompile(`^INSERT INTO (\w+)`)
	dropRE        = regexp.MustCompile(`^DROP TABLE IF EXISTS (\w+)$`)
)

// clusterStatement is one rendered statement in cluster mode: the SQL to run on every
// node, or only on one replica of each shard (a backfill: replication copies it).
type clusterStatement struct {
	sql         string
	onePerShard bool
	// once: on one node only (a backfill of a table replicated on every node).
	once bool
}

// clusterize rewrites a single-node migration statement for cluster c and database db.
func clusterize(stmt, c, db string) ([]clusterStatement, error) {
	s := strings.TrimSpace(stmt)
	if m := createTableRE.FindStringSubmatch(s); m != nil {
		table, cols, engine, args, rest := m[1], m[2], m[3], m[4], m[5]
		if !strings.HasSuffix(engine, "MergeTree") {
			// Join tables stay per node (cluster mode coordinates elsewhere).
			return []clusterStatement{{sql: s}}, nil
		}
		path, replica := "'/clickhouse/tables/all/"+db+"/"+table+"'", "'{shard}-{replica}'"
		if Sharded(table) {
			path, replica = "'/clickhouse/tables/{shard}/"+db+"/"+table+"'", "'{replica}'"
		}
		inner := path + ", " + replica
		if a := strings.TrimSuffix(strings.TrimPrefix(args, "("), ")"); strings.TrimSpace(a) != "" {
			inner += ", " + a
		}
		out := []clusterStatement{{sql: "CREATE TABLE IF NOT EXISTS " + table + " " + cols + "ENGINE = Replicated" + engine + "(" + inner + ")" + rest}}
		if key, ok := shardedTables[table]; ok {
			out = append(out, clusterStatement{sql: distributedSQL(table, c, db, key)})
		}
		return out, nil
	}
	if m := alterAddRE.FindStringSubmatch(s); m != nil {
		out := []clusterStatement{{sql: s}}
		if key, ok := shardedTables[m[1]]; ok {
			// A Distributed table copies its columns when created: make it again.
			out = append(out, clusterStatement{sql: "DROP TABLE IF EXISTS " + m[1] + "_all"},
				clusterStatement{sql: distributedSQL(m[1], c, db, key)})
		}
		return out, nil
	}
	if m := dropRE.FindStringSubmatch(s); m != nil {
		out := []clusterStatement{{sql: s}}
		if Sharded(m[1]) {
			out = append(out, clusterStatement{sql: "DROP TABLE IF EXISTS " + m[1] + "_all"})
		}
		return out, nil
	}
	if m := insertRE.FindStringSubmatch(s); m != nil {
		if Sharded(m[1]) {
			return []clusterStatement{{sql: s, onePerShard: true}}, nil
		}
		return []clusterStatement{{sql: s, once: true}}, nil
	}
	if createViewRE.MatchString(s) {
		return []clusterStatement{{sql: s}}, nil
	}
	return nil, fmt.Errorf("cluster mode: no rule to render %q", firstLine(s))
}

func distributedSQL(table, c, db, key string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s_all AS %s ENGINE = Distributed(%s, %s, %s, %s)",
		table, table, QuoteIdent(c), QuoteIdent(db), table, key)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
