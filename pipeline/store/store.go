// Package store owns flagwatch's ClickHouse connection and schema: it opens a
// native-protocol connection from a DSN, creates the database, and applies the numbered
// migrations embedded in schemas/clickhouse. The decision that shapes it: every statement
// must run on ClickHouse 18.16 (CI's server) and on current releases, so migrations are
// templates rendered per server version (LowCardinality where the server has it) and are
// idempotent (IF NOT EXISTS), which makes running them twice, or from two processes at
// once, safe.
package store

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/schemas"
)

// DefaultDSN is used when FLAGWATCH_CLICKHOUSE_DSN is not set.
const DefaultDSN = config.DefaultClickHouseDSN

// ServerVersion asks the server for its version.
func ServerVersion(ctx context.Context, conn Conn) (Version, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s); err != nil {
		return Version{}, fmt.Errorf("query server version: %w", err)
	}
	return ParseVersion(s), nil
}

// Features are the template switches migrations are rendered with.
type Features struct {
	// Str is the type for low-cardinality strings (event names, flag keys).
	Str string
	// IfNotExists is "IF NOT EXISTS " where ALTER … ADD COLUMN takes it (not 18.16).
	IfNotExists string
}

// FeaturesFor picks the column types a server supports. LowCardinality is experimental
// before 19.x (18.16 needs a setting), so older servers get plain String.
func FeaturesFor(v Version) Features {
	f := Features{Str: "String"}
	if v.Major >= 19 {
		f.Str = "LowCardinality(String)"
	}
	if v.AtLeast(20, 1) {
		f.IfNotExists = "IF NOT EXISTS "
	}
	return f
}

type migration struct {
	version int
	name    string
	body    string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(schemas.ClickHouse, "clickhouse")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and '_'", name)
		}
		b, err := fs.ReadFile(schemas.ClickHouse, path.Join("clickhouse", name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, body: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// statements renders a migration and splits it on ';' at line ends; comments are dropped.
func (m migration) statements(f Features) ([]string, error) {
	t, err := template.New(m.name).Option("missingkey=error").Parse(m.body)
	if err != nil {
		return nil, fmt.Errorf("parse migration %s: %w", m.name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, f); err != nil {
		return nil, fmt.Errorf("render migration %s: %w", m.name, err)
	}
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(buf.String(), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out, nil
}

// Migrate applies the embedded migrations that are not yet recorded in
// schema_migrations. Each statement is idempotent, so a crash between a statement and the
// record, or two processes migrating at once, only repeats harmless work.
func Migrate(ctx context.Context, conn Conn) error {
	if c, ok := conn.(*cluster); ok {
		return migrateCluster(ctx, c)
	}
	if err := execTolerant(ctx, conn, migrationsTable); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	return applyMigrations(ctx, conn, func(_ migration, stmt string) error { return execTolerant(ctx, conn, stmt) })
}

// applyMigrations runs each migration not yet recorded in schema_migrations (read and
// written on conn) through run, statement by statement, and records it.
func applyMigrations(ctx context.Context, conn Conn, run func(m migration, stmt string) error) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	feats := conn.Server().Features()
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		stmts, err := m.statements(feats)
		if err != nil {
			return err
		}
		for _, s := range stmts {
			if err := run(m, s); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
		}
		if err := record(ctx, conn, m); err != nil {
			return fmt.Errorf("record migration %s: %w", m.name, err)
		}
		slog.Info("applied migration", "name", m.name, "cluster", conn.Server().Cluster)
	}
	return nil
}

// execTolerant runs DDL, treating "already exists" from a concurrent migrator as success:
// CREATE … IF NOT EXISTS is not atomic across two clients on every server version.
func execTolerant(ctx context.Context, conn Conn, stmt string) error {
	err := conn.Exec(ctx, stmt)
	// An ALTER … ADD COLUMN that another migrator, or this one before a crash, already
	// ran: 18.16 has no IF NOT EXISTS there and answers 44, current servers 15.
	switch code, _ := ExceptionCode(err); code {
	case 57, 82, 44, 15, 253: // TABLE_ALREADY_EXISTS, DATABASE_ALREADY_EXISTS, ILLEGAL_COLUMN, DUPLICATE_COLUMN, REPLICA_IS_ALREADY_EXIST
		return nil
	}
	return err
}

// migrationsTable is the record of applied migrations.
const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32, name String, applied_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree ORDER BY version`

// migrateCluster applies the migrations to every node of the cluster, one node at a time
// (see cluster.go for why not ON CLUSTER), and the backfills to one replica per shard.
func migrateCluster(ctx context.Context, c *cluster) error {
	db := c.server.Database
	nodes := make([]Conn, 0, len(c.nodes))
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for _, n := range c.nodes {
		conn, err := c.open([]string{n.Addr}, db)
		if err != nil {
			return fmt.Errorf("connect to node %s of cluster %s: %w", n.Addr, c.name, err)
		}
		nodes = append(nodes, conn)
	}
	everywhere := func(stmts []clusterStatement, what string) error {
		for _, st := range stmts {
			targets := nodes
			switch {
			case st.onePerShard:
				targets = c.shards
			case st.once:
				targets = []Conn{c.Conn}
			}
			for i, n := range targets {
				if err := execTolerant(ctx, n, st.sql); err != nil {
					where := "a shard"
					if !st.onePerShard && !st.once {
						where = c.nodes[i].Addr
					}
					return fmt.Errorf("%s on %s: %w", what, where, err)
				}
			}
		}
		return nil
	}
	mt, err := clusterize(migrationsTable, c.name, db)
	if err != nil {
		return err
	}
	if err := everywhere(mt, "create schema_migrations"); err != nil {
		return err
	}
	return applyMigrations(ctx, c.Conn, func(m migration, stmt string) error {
		cs, err := clusterize(stmt, c.name, db)
		if err != nil {
			return err
		}
		return everywhere(cs, "migration "+m.name)
	})
}

func appliedMigrations(ctx context.Context, conn Conn) (map[int]bool, error) {
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ver uint32
		if err := rows.Scan(&ver); err != nil {
			return nil, fmt.Errorf("scan schema_migrations: %w", err)
		}
		applied[int(ver)] = true
	}
	return applied, rows.Err()
}

func record(ctx context.Context, conn Conn, m migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name)")
	if err != nil {
		return err
	}
	if err := b.Append(uint32(m.version), m.name); err != nil {
		return err
	}
	return b.Send()
}
