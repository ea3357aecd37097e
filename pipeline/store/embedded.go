package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/flagwatch/flagwatch/pipeline/store/chdb"
)

// The embedded engine: ClickHouse 26 in this process through libchdb. One engine per
// process and data directory (libchdb's rule), shared by every Conn opened on it; each
// Conn has its own default database, switched with USE under the engine's lock, and the
// engine runs one statement at a time.
type engine struct {
	mu      sync.Mutex // serialises statements and guards current and refs
	c       *chdb.Conn
	dir     string
	current string // the database the session is USE-ing
	refs    int
	version Version
}

var engines struct {
	mu    sync.Mutex
	byDir map[string]*engine
}

// embeddedSession are the session settings the embedded engine runs with: the same
// insert semantics as serverSettings, UTC for DateTime text (the native driver returns
// times as instants, and so must this one), and JSON output that keeps ±inf and NaN
// distinguishable (they are null otherwise).
var embeddedSession = []string{
	"SET async_insert = 0",
	"SET max_partitions_per_insert_block = 0",
	"SET session_timezone = 'UTC'",
	"SET output_format_json_quote_denormals = 1",
	"SET output_format_json_quote_64bit_integers = 0",
	"SET input_format_skip_unknown_fields = 0",
}

// parseEmbeddedDSN reads chdb:///abs/dir or chdb://rel/dir, with ?database= (default
// flagwatch) and any other parameter as a session setting (?compatibility=24.8).
func parseEmbeddedDSN(dsn string) (dir, db string, settings [][2]string, err error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", "", nil, fmt.Errorf("parse embedded dsn %q: %w", dsn, err)
	}
	dir = u.Host + u.Path
	if u.Host == "" {
		dir = u.Path
	}
	if dir == "" || dir == "/" {
		return "", "", nil, fmt.Errorf("embedded dsn %q names no directory: want chdb:///path/to/dir", dsn)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", nil, fmt.Errorf("embedded dsn %q: %w", dsn, err)
	}
	db = "flagwatch"
	q := u.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := q.Get(k)
		if k == "database" {
			db = v
			continue
		}
		if !settingName.MatchString(k) {
			return "", "", nil, fmt.Errorf("embedded dsn %q: %q is not a setting name", dsn, k)
		}
		settings = append(settings, [2]string{k, v})
	}
	if db == "" {
		return "", "", nil, fmt.Errorf("embedded dsn %q: empty database", dsn)
	}
	return dir, db, settings, nil
}

func openEmbedded(dsn string, o openOptions) (Conn, error) {
	dir, db, settings, err := parseEmbeddedDSN(dsn)
	if err != nil {
		return nil, err
	}
	if o.cluster != "" {
		return nil, fmt.Errorf("the embedded engine (%s) cannot be a cluster: a cluster needs ClickHouse servers", dsn)
	}
	engines.mu.Lock()
	defer engines.mu.Unlock()
	if engines.byDir == nil {
		engines.byDir = map[string]*engine{}
	}
	e := engines.byDir[dir]
	if e == nil {
		c, err := chdb.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("embedded ClickHouse: %w", err)
		}
		e = &engine{c: c, dir: dir}
		for _, s := range embeddedSession {
			if _, err := c.Query(s, "TSV"); err != nil {
				c.Close()
				return nil, fmt.Errorf("embedded ClickHouse: %s: %w", s, parseException(err.Error()))
			}
		}
		out, err := c.Query("SELECT version()", "TSV")
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("embedded ClickHouse: version: %w", parseException(err.Error()))
		}
		e.version = ParseVersion(string(out))
		engines.byDir[dir] = e
		o.log.Info("embedded ClickHouse started", "dir", dir, "version", strings.TrimSpace(string(out)))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range settings {
		if _, err := e.c.Query("SET "+s[0]+" = "+Quote(s[1]), "TSV"); err != nil {
			e.release()
			return nil, fmt.Errorf("embedded ClickHouse: setting %s: %w", s[0], parseException(err.Error()))
		}
	}
	if _, err := e.c.Query("CREATE DATABASE IF NOT EXISTS "+QuoteIdent(db), "TSV"); err != nil {
		e.release()
		return nil, fmt.Errorf("embedded ClickHouse: create database %s: %w", db, parseException(err.Error()))
	}
	e.refs++
	o.ready()
	return &embedded{e: e, db: db, server: Server{Engine: EngineEmbedded, Version: e.version, Database: db}}, nil
}

// release closes the engine when no Conn uses it; engines.mu and e.mu are held.
func (e *engine) release() {
	if e.refs > 0 {
		return
	}
	e.c.Close()
	delete(engines.byDir, e.dir)
}

type embedded struct {
	e      *engine
	db     string
	server Server
	closed atomic.Bool
}

// run executes one statement in the connection's database.
func (c *embedded) run(ctx context.Context, q, format string) ([]byte, error) {
	if c.closed.Load() {
		return nil, errors.New("embedded ClickHouse: connection closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.current != c.db {
		if _, err := e.c.Query("USE "+QuoteIdent(c.db), "TSV"); err != nil {
			return nil, parseException(err.Error())
		}
		e.current = c.db
	}
	out, err := e.c.Query(q, format)
	if err != nil {
		return nil, parseException(err.Error())
	}
	return out, nil
}

func (c *embedded) Exec(ctx context.Context, q string) error {
	_, err := c.run(ctx, q, "TSV")
	return err
}

func (c *embedded) Query(ctx context.Context, q string) (Rows, error) {
	out, err := c.run(ctx, q, "JSONCompactEachRowWithNamesAndTypes")
	if err != nil {
		return nil, err
	}
	return newJSONRows(out)
}

func (c *embedded) QueryRow(ctx context.Context, q string) Row {
	rows, err := c.Query(ctx, q)
	return &jsonRow{rows: rows, err: err}
}

func (c *embedded) PrepareBatch(ctx context.Context, insert string) (Batch, error) {
	if !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(insert)), "INSERT") {
		return nil, fmt.Errorf("prepare batch: %q is not an INSERT", insert)
	}
	return &jsonBatch{c: c, ctx: ctx, insert: strings.TrimSpace(insert)}, nil
}

func (c *embedded) Ping(ctx context.Context) error { return c.Exec(ctx, "SELECT 1") }

func (c *embedded) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	engines.mu.Lock()
	defer engines.mu.Unlock()
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	c.e.refs--
	c.e.release()
	return nil
}

func (c *embedded) Server() Server { return c.server }

// jsonRow is QueryRow's result.
type jsonRow struct {
	rows Rows
	err  error
}

func (r *jsonRow) Err() error { return r.err }

func (r *jsonRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	return r.rows.Scan(dest...)
}

// jsonBatch renders appended rows as JSONCompactEachRow text and sends them as one
// INSERT on Send, so a batch is one statement (one part, all or nothing) as on a server.
type jsonBatch struct {
	c      *embedded
	ctx    context.Context
	insert string
	buf    bytes.Buffer
	cols   map[int]any // Column(i).Append data of the current block
	rows   int
	sent   bool
}

func (b *jsonBatch) Append(values ...any) error {
	if b.sent {
		return errors.New("batch already sent")
	}
	b.buf.WriteByte('[')
	for i, v := range values {
		if i > 0 {
			b.buf.WriteByte(',')
		}
		if err := appendJSONValue(&b.buf, v); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	b.buf.WriteString("]\n")
	b.rows++
	return nil
}

type jsonColumn struct {
	b *jsonBatch
	i int
}

func (c jsonColumn) Append(v any) error {
	if c.b.cols == nil {
		c.b.cols = map[int]any{}
	}
	if _, dup := c.b.cols[c.i]; dup {
		return fmt.Errorf("column %d appended twice in one block", c.i)
	}
	c.b.cols[c.i] = v
	return nil
}

func (b *jsonBatch) Column(i int) BatchColumn { return jsonColumn{b, i} }

// Flush turns the columns of the current block into rows of text.
func (b *jsonBatch) Flush() error {
	if len(b.cols) == 0 {
		return nil
	}
	cols := make([]any, len(b.cols))
	for i := range cols {
		v, ok := b.cols[i]
		if !ok {
			return fmt.Errorf("flush: column %d has no values", i)
		}
		cols[i] = v
	}
	b.cols = nil
	return appendColumnRows(&b.buf, cols, &b.rows)
}

func (b *jsonBatch) Send() error {
	if b.sent {
		return errors.New("batch already sent")
	}
	if err := b.Flush(); err != nil {
		return err
	}
	b.sent = true
	if b.rows == 0 {
		return nil
	}
	var q bytes.Buffer
	q.Grow(len(b.insert) + 32 + b.buf.Len())
	q.WriteString(b.insert)
	q.WriteString(" FORMAT JSONCompactEachRow\n")
	q.Write(b.buf.Bytes())
	b.buf = bytes.Buffer{}
	raw := q.Bytes()
	_, err := b.c.run(b.ctx, unsafe.String(unsafe.SliceData(raw), len(raw)), "TSV")
	return err
}

func (b *jsonBatch) Abort() error {
	b.sent = true
	b.buf = bytes.Buffer{}
	b.cols = nil
	return nil
}
