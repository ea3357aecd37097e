package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// native is a server reached through clickhouse-go's native protocol.
type native struct {
	conn   driver.Conn
	server Server
}

func openNative(ctx context.Context, dsn string, o openOptions) (Conn, error) {
	dsn, err := takeClusterParams(dsn, &o)
	if err != nil {
		return nil, err
	}
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse clickhouse dsn %q: %w", Redact(dsn), err)
	}
	if o.password != "" {
		opts.Auth.Password = o.password
	}
	if opts.DialTimeout <= 0 || opts.DialTimeout == 30*time.Second { // clickhouse-go's default
		opts.DialTimeout = o.dialTimeout
	}
	db := opts.Auth.Database
	if db == "" {
		db = "default"
	}
	where := fmt.Sprintf("ClickHouse at %v", opts.Addr)
	var v Version
	started := time.Now()
	err = retry.Do(ctx, o.log, "connecting to "+where, retry.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Elapsed: o.maxWait,
		Retryable: func(err error) bool {
			var dns *net.DNSError
			if errors.As(err, &dns) && dns.IsNotFound {
				// A name not registered yet (a container starting) gets a short grace.
				return time.Since(started) < o.dnsGrace
			}
			return Classify(err) == Transient
		}},
		func(ctx context.Context) error {
			boot := *opts
			boot.Auth.Database = "default"
			var err error
			v, err = createDatabase(ctx, &boot, db)
			if err != nil {
				o.waiting(fmt.Sprintf("%s: %v", where, err))
				return err
			}
			return nil
		})
	if err != nil {
		return nil, connectError(where, err)
	}
	opts.Auth.Database = db
	opts.Settings = serverSettings(v, opts.Settings)
	if o.cluster != "" {
		// An insert into a Distributed table returns once every shard has its rows,
		// so offsets are committed only after every shard acknowledged.
		opts.Settings["insert_distributed_sync"] = 1
		// …but not forever: a replica killed in the middle of an insert can leave the
		// insert waiting on it; after this many seconds it fails and is retried (block
		// deduplication absorbs what part of it had landed).
		opts.Settings["insert_distributed_timeout"] = 30
		// Inserts and reads through Distributed tables prefer each shard's first healthy
		// replica (as the per-shard connections do), so a pass reads what ingest just
		// wrote instead of a replica that has not fetched it yet. 18.16's protocol
		// carries only numeric settings: there the servers' profile must say it
		// (docs/operations.md; scripts/cluster.sh does).
		if v.AtLeast(20, 1) {
			opts.Settings["load_balancing"] = "in_order"
		}
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, connectError(where, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, connectError(where, err)
	}
	n := &native{conn: conn, server: Server{Engine: EngineServer, Version: v, Database: db, ZooKeeper: o.zookeeper}}
	if o.cluster != "" {
		c, err := openCluster(ctx, n, opts, o.cluster)
		if err != nil {
			conn.Close()
			return nil, err
		}
		o.ready()
		return c, nil
	}
	o.ready()
	return n, nil
}

// takeClusterParams moves the DSN's cluster= and zookeeper= parameters (the command
// line's -clickhouse-cluster and -zookeeper, see config.ResolveClickHouseDSNCluster) into
// o: they are flagwatch's, and clickhouse-go would send them to the server as settings.
func takeClusterParams(dsn string, o *openOptions) (string, error) {
	base, query, ok := strings.Cut(dsn, "?")
	if !ok {
		return dsn, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("parse clickhouse dsn %q: %w", Redact(dsn), err)
	}
	if c := q.Get("cluster"); c != "" && o.cluster == "" {
		o.cluster = c
	}
	if z := q.Get("zookeeper"); z != "" && len(o.zookeeper) == 0 {
		o.zookeeper = strings.Split(z, ",")
	}
	q.Del("cluster")
	q.Del("zookeeper")
	if len(q) == 0 {
		return base, nil
	}
	return base + "?" + q.Encode(), nil
}

// connectError says in one line what went wrong and what to check.
func connectError(where string, err error) error {
	switch {
	case IsAuth(err):
		return fmt.Errorf("%s refuses the credentials (check the DSN's user and the password or FLAGWATCH_CLICKHOUSE_PASSWORD): %w", where, err)
	case Classify(err) == Fatal:
		var dns *net.DNSError
		if errors.As(err, &dns) {
			return fmt.Errorf("%s: the host name does not resolve (check the DSN): %w", where, err)
		}
		return fmt.Errorf("%s: %w (is this the native-protocol port, usually 9000, not the HTTP port 8123?)", where, err)
	}
	return fmt.Errorf("%s not reachable: %w", where, err)
}

// serverSettings are the settings flagwatch needs on a server, by version: inserts are
// synchronous (26.2 made them asynchronous by default, which would acknowledge a batch
// before it is visible to the pass that follows), and one block may span any number of
// partitions (19.5 refuses more than 100, which one old event among today's reaches).
func serverSettings(v Version, s clickhouse.Settings) clickhouse.Settings {
	if s == nil {
		s = clickhouse.Settings{}
	}
	if v.AtLeast(19, 5) {
		s["max_partitions_per_insert_block"] = 0
	}
	if v.AtLeast(21, 11) {
		s["async_insert"] = 0
	}
	return s
}

func createDatabase(ctx context.Context, opts *clickhouse.Options, db string) (Version, error) {
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return Version{}, err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+QuoteIdent(db)); err != nil {
		return Version{}, err
	}
	var s string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s); err != nil {
		return Version{}, err
	}
	return ParseVersion(s), nil
}

func (n *native) Exec(ctx context.Context, q string) error { return n.conn.Exec(ctx, q) }

func (n *native) Query(ctx context.Context, q string) (Rows, error) {
	rows, err := n.conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (n *native) QueryRow(ctx context.Context, q string) Row { return n.conn.QueryRow(ctx, q) }

func (n *native) PrepareBatch(ctx context.Context, insert string) (Batch, error) {
	b, err := n.conn.PrepareBatch(ctx, insert)
	if err != nil {
		return nil, err
	}
	return nativeBatch{b}, nil
}

func (n *native) Ping(ctx context.Context) error { return n.conn.Ping(ctx) }
func (n *native) Close() error                   { return n.conn.Close() }
func (n *native) Server() Server                 { return n.server }

type nativeBatch struct{ b driver.Batch }

func (b nativeBatch) Append(v ...any) error    { return b.b.Append(v...) }
func (b nativeBatch) Column(i int) BatchColumn { return b.b.Column(i) }
func (b nativeBatch) Flush() error             { return b.b.Flush() }
func (b nativeBatch) Send() error              { return b.b.Send() }
func (b nativeBatch) Abort() error             { return b.b.Abort() }
