// Package chdb binds libchdb, ClickHouse as a library (chDB), so flagwatch can run on an
// embedded ClickHouse 26 without a server. It speaks the stable C ABI of chdb.h
// (chdb_connect, chdb_query, chdb_result_*) through purego, without cgo.
//
// The decision that shapes it: the library is loaded lazily, on the first Open, from
// CHDB_LIB_PATH (else libchdb.so on the loader's path, else /usr/local/lib). chdb-go
// v1.11.0, the official binding, loads it in a package init() and panics when it is
// absent; importing it would make every flagwatch binary — and its --help — crash on a
// machine without the 566 MB library, although only a chdb:// DSN needs it. So this
// package binds the same ABI itself and reports a missing library as an error that says
// how to get it.
//
// libchdb allows one connection per process, and it runs one query at a time on it: Conn
// serialises its callers.
package chdb

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The C functions, bound once by load.
var (
	loadOnce sync.Once
	loadErr  error

	chdbConnect            func(argc int, argv []*byte) unsafe.Pointer // chdb_connection*
	chdbCloseConn          func(conn unsafe.Pointer)
	chdbQuery              func(conn unsafe.Pointer, query, format string) unsafe.Pointer // chdb_result*
	chdbDestroyQueryResult func(res unsafe.Pointer)
	chdbResultBuffer       func(res unsafe.Pointer) unsafe.Pointer
	chdbResultLength       func(res unsafe.Pointer) uintptr
	chdbResultError        func(res unsafe.Pointer) string
)

// LibraryPath is where the library is looked for: CHDB_LIB_PATH when set, else the
// first of the usual places that exists, else the bare name for the loader's search.
func LibraryPath() string {
	if p := os.Getenv("CHDB_LIB_PATH"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/local/lib/libchdb.so", "/usr/lib/libchdb.so"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "libchdb.so"
}

func load() error {
	loadOnce.Do(func() {
		path := LibraryPath()
		lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			loadErr = fmt.Errorf("load the embedded ClickHouse library %s: %w (install it with scripts/deps.sh --embedded, or set CHDB_LIB_PATH to libchdb.so from the npm package @chdb/lib-linux-x64-gnu)", path, err)
			return
		}
		defer func() {
			// RegisterLibFunc panics on a missing symbol: an incompatible library.
			if r := recover(); r != nil {
				loadErr = fmt.Errorf("the embedded ClickHouse library %s lacks a function flagwatch needs (%v); use libchdb 3.x / ClickHouse 25+", path, r)
			}
		}()
		purego.RegisterLibFunc(&chdbConnect, lib, "chdb_connect")
		purego.RegisterLibFunc(&chdbCloseConn, lib, "chdb_close_conn")
		purego.RegisterLibFunc(&chdbQuery, lib, "chdb_query")
		purego.RegisterLibFunc(&chdbDestroyQueryResult, lib, "chdb_destroy_query_result")
		purego.RegisterLibFunc(&chdbResultBuffer, lib, "chdb_result_buffer")
		purego.RegisterLibFunc(&chdbResultLength, lib, "chdb_result_length")
		purego.RegisterLibFunc(&chdbResultError, lib, "chdb_result_error")
	})
	return loadErr
}

// Conn is the process's connection to an embedded ClickHouse whose data lives in one
// directory.
type Conn struct {
	mu   sync.Mutex
	conn unsafe.Pointer // chdb_connection*
	dir  string
}

var (
	openMu sync.Mutex
	opened *Conn
)

// ErrOtherDir is returned by Open when the process already has an engine on another
// directory: libchdb holds one per process.
var ErrOtherDir = errors.New("this process already runs an embedded ClickHouse on another directory")

// Open starts the embedded engine on dir (created if missing), or returns the one this
// process already runs there. args are extra clickhouse-local start-up arguments
// ("--key=value").
func Open(dir string, args ...string) (*Conn, error) {
	if err := load(); err != nil {
		return nil, err
	}
	openMu.Lock()
	defer openMu.Unlock()
	if opened != nil {
		if opened.dir != dir {
			return nil, fmt.Errorf("open %s: %w (%s)", dir, ErrOtherDir, opened.dir)
		}
		return opened, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create embedded ClickHouse directory: %w", err)
	}
	argv := append([]string{"clickhouse", "--path=" + dir}, args...)
	cargs := make([]*byte, len(argv))
	for i, a := range argv {
		b := append([]byte(a), 0)
		cargs[i] = &b[0]
	}
	p := chdbConnect(len(cargs), cargs)
	if p == nil {
		return nil, fmt.Errorf("start embedded ClickHouse on %s: chdb_connect failed (is another process using this directory?)", dir)
	}
	opened = &Conn{conn: p, dir: dir}
	return opened, nil
}

// Dir is the data directory.
func (c *Conn) Dir() string { return c.dir }

// Query runs one statement (or several separated by ';') and returns its output in
// format ("JSONCompactEachRowWithNamesAndTypes", "TSV", …), copied into Go memory.
func (c *Conn) Query(query, format string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil, errors.New("embedded ClickHouse is closed")
	}
	// chdb_connect returns a chdb_connection* whose first field is the handle that
	// chdb_query takes by value.
	res := chdbQuery(*(*unsafe.Pointer)(c.conn), query, format)
	if res == nil {
		return nil, nil
	}
	defer chdbDestroyQueryResult(res)
	if msg := chdbResultError(res); msg != "" {
		return nil, errors.New(msg)
	}
	n := chdbResultLength(res)
	buf := chdbResultBuffer(res)
	if n == 0 || buf == nil {
		return nil, nil
	}
	out := make([]byte, n)
	copy(out, unsafe.Slice((*byte)(buf), n))
	return out, nil
}

// Close stops the engine; the process may Open another directory afterwards.
func (c *Conn) Close() {
	openMu.Lock()
	defer openMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		chdbCloseConn(c.conn)
		c.conn = nil
	}
	if opened == c {
		opened = nil
	}
}
