// Package claim arbitrates between replicas of flagwatch's services: the first value
// stored under a key holds, and every reader agrees which. Pass leases (one analyzer
// runs each scheduled pass), the incremental state's single writer, the notifier's
// claim on each Slack post and each rollout stage change are claims.
//
// The decision that shapes it: one primitive — put-if-absent, then read — with two
// implementations chosen by where the data lives. On one ClickHouse node it is a
// Join(ANY, LEFT) table, which keeps the first row inserted for a key and serialises
// inserts under its lock, so "insert, read back" names one winner with no transactions
// (18.16 has none). A Join table lives on one server, so a cluster claims in ZooKeeper
// (or ClickHouse Keeper), the coordinator the cluster already runs: creating a node is
// linearizable, and the first creator wins on every node.
//
// Keys are never reused: a lease that must move to another holder is claimed under the
// next key (the caller appends an epoch), so a claim never changes once made.
package claim

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Store is a place for claims.
type Store interface {
	// Claim stores value under key unless a value is there, and returns the value that
	// holds (value itself when this call won).
	Claim(ctx context.Context, key, value string) (string, error)
	// Lookup returns the values of the keys that have one.
	Lookup(ctx context.Context, keys []string) (map[string]string, error)
}

// Table is the claims Join table on one ClickHouse node (schemas/clickhouse/0070).
type Table struct{ Conn store.Conn }

// Claim inserts (key, value) and reads the key back.
func (t Table) Claim(ctx context.Context, key, value string) (string, error) {
	if value == "" {
		return "", fmt.Errorf("claim %q: empty value", key) // a Join reads a missing key as ""
	}
	b, err := t.Conn.PrepareBatch(ctx, "INSERT INTO claims (key, value)")
	if err != nil {
		return "", fmt.Errorf("prepare claim %q: %w", key, err)
	}
	if err := b.Append(key, value); err != nil {
		_ = b.Abort()
		return "", fmt.Errorf("append claim %q: %w", key, err)
	}
	if err := b.Send(); err != nil {
		return "", fmt.Errorf("insert claim %q: %w", key, err)
	}
	got, err := t.Lookup(ctx, []string{key})
	if err != nil {
		return "", err
	}
	v, ok := got[key]
	if !ok {
		return "", fmt.Errorf("claim %q: not found after insert", key)
	}
	return v, nil
}

// Lookup joins the keys, as a literal array, to the claims table.
func (t Table) Lookup(ctx context.Context, keys []string) (map[string]string, error) {
	out := map[string]string{}
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := t.Conn.Query(ctx, "SELECT k.key, value, toUInt8(value != '') FROM (SELECT arrayJoin("+store.QuoteList(keys)+
		") AS key) AS k ANY LEFT JOIN claims USING key")
	if err != nil {
		return nil, fmt.Errorf("read claims: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		var found uint8
		if err := rows.Scan(&k, &v, &found); err != nil {
			return nil, fmt.Errorf("scan claim: %w", err)
		}
		if found == 1 {
			out[k] = v
		}
	}
	return out, rows.Err()
}

// Open returns the claims of conn's ClickHouse: the Join table on one node, or a
// ZooKeeper session to the servers the connection names (-zookeeper) on a cluster.
// close ends the session.
func Open(conn store.Conn, log *slog.Logger) (s Store, close func(), err error) {
	srv := conn.Server()
	if srv.Cluster == "" {
		return Table{Conn: conn}, func() {}, nil
	}
	if len(srv.ZooKeeper) == 0 {
		_, err := For(conn, nil)
		return nil, nil, err
	}
	zk, err := DialZooKeeper(srv.ZooKeeper, srv.Database, log)
	if err != nil {
		return nil, nil, err
	}
	return zk, zk.Close, nil
}

// For returns the claims of conn's ClickHouse: the Join table on one node, ZooKeeper on
// a cluster (zk, the ensemble's servers, is then required).
func For(conn store.Conn, zk *ZooKeeper) (Store, error) {
	if conn.Server().Cluster == "" {
		return Table{Conn: conn}, nil
	}
	if zk == nil {
		return nil, fmt.Errorf("cluster %s: claims need ZooKeeper or ClickHouse Keeper (set -zookeeper / FLAGWATCH_ZOOKEEPER to the servers the cluster uses)", conn.Server().Cluster)
	}
	return zk, nil
}
