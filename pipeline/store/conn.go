package store

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Conn is what flagwatch needs of ClickHouse: run a statement, read rows, insert a
// batch. Two engines implement it — a server through clickhouse-go's native protocol
// (Open with clickhouse:// or tcp://) and the embedded engine, chDB (chdb://) — and
// every ClickHouse-backed test runs on both. SQL is passed with its values already
// rendered as literals (Quote): the embedded engine has no parameter binding.
type Conn interface {
	Exec(ctx context.Context, query string) error
	Query(ctx context.Context, query string) (Rows, error)
	QueryRow(ctx context.Context, query string) Row
	// PrepareBatch starts an insert: "INSERT INTO t (a, b, …)" with an explicit column
	// list (the native protocol fails without one).
	PrepareBatch(ctx context.Context, insert string) (Batch, error)
	Ping(ctx context.Context) error
	Close() error
	// Server is what the connection runs on: engine, version and features.
	Server() Server
}

// Rows are the rows of a query; Scan converts each column into the pointer given for
// it (string, integers, float64, bool, time.Time, uuid.UUID, slices of those).
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Row is the first row of a query; Scan returns the query's error or sql-like
// ErrNoRows-style error when there is no row.
type Row interface {
	Scan(dest ...any) error
	Err() error
}

// Batch collects the rows of one INSERT. Append adds one row; Column(i).Append adds a
// slice of values to column i (all columns must then receive slices of the same length
// before Flush). Flush sends what was appended as one block of the same INSERT; Send
// finishes the INSERT. Abort drops it.
type Batch interface {
	Append(values ...any) error
	Column(i int) BatchColumn
	Flush() error
	Send() error
	Abort() error
}

// BatchColumn is one column of a Batch.
type BatchColumn interface {
	Append(values any) error
}

// Engine names what stores the data.
type Engine string

const (
	// EngineServer is a ClickHouse server reached over the native protocol.
	EngineServer Engine = "server"
	// EngineEmbedded is ClickHouse running inside this process (chDB).
	EngineEmbedded Engine = "embedded"
)

// Server describes the ClickHouse a Conn talks to.
type Server struct {
	Engine  Engine
	Version Version
	// Database is the connection's default database.
	Database string
	// Cluster is the ClickHouse cluster (remote_servers) the data is spread over; ""
	// on a single node.
	Cluster string
	// ZooKeeper are the servers of the cluster's ZooKeeper or Keeper ensemble.
	ZooKeeper []string
}

// Features are what the server's SQL dialect allows (migrations are rendered with them).
func (s Server) Features() Features { return FeaturesFor(s.Version) }

// Open connects to the ClickHouse in dsn — clickhouse://host:port/db or tcp://… for a
// server, chdb:///dir (the embedded engine; ?database=name, default flagwatch) —
// creates the database if missing and returns a connection whose default database is
// that one. Errors that can never succeed (bad credentials, unknown scheme, the HTTP
// port instead of the native one) return at once; transient ones (a server still
// starting) are retried with a log line each, until ctx ends or the options' wait.
func Open(ctx context.Context, dsn string, opts ...Option) (Conn, error) {
	o := openOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	o.defaults()
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok {
		return nil, fmt.Errorf("clickhouse dsn %q: want clickhouse://host:9000/db, tcp://host:9000/db or chdb:///path/to/dir", Redact(dsn))
	}
	switch strings.ToLower(scheme) {
	case "clickhouse", "tcp":
		return openNative(ctx, dsn, o)
	case "chdb":
		return openEmbedded(dsn, o)
	default:
		return nil, fmt.Errorf("clickhouse dsn %q: unknown scheme %q: want clickhouse://, tcp:// or chdb://", Redact(dsn), scheme)
	}
}

// WithDatabase returns dsn naming database db instead of its own: the path of a
// server's DSN, the database parameter of an embedded one.
func WithDatabase(dsn, db string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parse clickhouse dsn %q: %w", Redact(dsn), err)
	}
	if strings.EqualFold(u.Scheme, "chdb") {
		q := u.Query()
		q.Set("database", db)
		u.RawQuery = q.Encode()
	} else {
		u.Path = "/" + db
	}
	return u.String(), nil
}

// Redact hides the password of a DSN for logs and errors.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
