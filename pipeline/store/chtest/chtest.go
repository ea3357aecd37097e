// Package chtest gives a test its own ClickHouse database on a real engine. Which
// engine is the test matrix's choice, not the test's: FLAGWATCH_TEST_ENGINE=server (the
// default) uses the server at $FLAGWATCH_TEST_CLICKHOUSE_DSN when set (make test starts
// one for the whole run), otherwise a throw-away server started with
// scripts/clickhouse.sh for this test alone; FLAGWATCH_TEST_ENGINE=embedded uses
// ClickHouse 26 in the test process (chDB; CHDB_LIB_PATH names the library), one engine
// per test binary with a database per test, with the session settings in
// $FLAGWATCH_TEST_EMBEDDED_SETTINGS ("compatibility=24.8") if any. make test runs every
// package that uses chtest once per engine.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Server is a ClickHouse server a test started itself (so it may stop and restart it).
type Server struct {
	t   testing.TB
	Dir string
	// DSN points at the server's default database.
	DSN string
}

func script(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "scripts", "clickhouse.sh")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("chtest: go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// Engine is the engine this run of the tests uses: "server" or "embedded".
func Engine() string {
	if os.Getenv("FLAGWATCH_TEST_ENGINE") == "embedded" {
		return "embedded"
	}
	return "server"
}

// Embedded reports whether this run uses the embedded engine.
func Embedded() bool { return Engine() == "embedded" }

// ServerOnly skips a test that needs what only a server has — a second process on the
// same data, or stopping the server under a running test — in the embedded run of the
// matrix; the server run of the same test covers it.
func ServerOnly(t testing.TB, why string) {
	t.Helper()
	if Embedded() {
		t.Skipf("server only (the server run of the test matrix covers it): %s", why)
	}
}

var (
	embeddedOnce sync.Once
	embeddedDir  string
	embeddedErr  error
)

// embeddedBase is the DSN of the test binary's embedded engine, created on first use in
// a directory under $TMPDIR (make test points it at a directory it removes afterwards).
func embeddedBase(t testing.TB) string {
	t.Helper()
	embeddedOnce.Do(func() {
		embeddedDir, embeddedErr = os.MkdirTemp("", "flagwatch-chdb-")
		if embeddedErr != nil {
			return
		}
		// Held for the life of the test binary, so the engine is started once rather
		// than once per test.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, embeddedErr = store.Open(ctx, "chdb://"+embeddedDir+"?database=chtest")
	})
	if embeddedErr != nil {
		t.Fatalf("embedded engine dir: %v", embeddedErr)
	}
	dsn := "chdb://" + embeddedDir
	if s := os.Getenv("FLAGWATCH_TEST_EMBEDDED_SETTINGS"); s != "" {
		dsn += "?" + s
	}
	return dsn
}

// Start starts a private server for this test; it is stopped and removed at cleanup.
// In the embedded run of the matrix the test is skipped (see ServerOnly).
func Start(t testing.TB) *Server {
	t.Helper()
	ServerOnly(t, "starts, stops and restarts a server of its own")
	dirFile := filepath.Join(t.TempDir(), "chdir")
	cmd := exec.Command(script(t), "start")
	cmd.Env = append(os.Environ(), "CLICKHOUSE_DIR_FILE="+dirFile, "CLICKHOUSE_WATCH_PID="+strconv.Itoa(os.Getpid()))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("start clickhouse: %v", err)
	}
	dir, err := os.ReadFile(dirFile)
	if err != nil {
		t.Fatalf("start clickhouse: %v", err)
	}
	s := &Server{t: t, Dir: strings.TrimSpace(string(dir)), DSN: strings.TrimSpace(string(out))}
	t.Cleanup(func() { _ = exec.Command(script(t), "stop", s.Dir).Run() })
	return s
}

// Halt stops the server, keeping its data.
func (s *Server) Halt() {
	s.t.Helper()
	if out, err := exec.Command(script(s.t), "halt", s.Dir).CombinedOutput(); err != nil {
		s.t.Fatalf("halt clickhouse: %v: %s", err, out)
	}
}

// Resume starts a halted server again on the same port.
func (s *Server) Resume() {
	s.t.Helper()
	if out, err := exec.Command(script(s.t), "resume", s.Dir).CombinedOutput(); err != nil {
		s.t.Fatalf("resume clickhouse: %v: %s", err, out)
	}
}

// DB returns the DSN of a new, empty, migrated database (dropped at cleanup) and a
// connection to it.
func DB(t testing.TB) (string, store.Conn) {
	t.Helper()
	if Embedded() {
		return NewDB(t, embeddedBase(t))
	}
	base := os.Getenv("FLAGWATCH_TEST_CLICKHOUSE_DSN")
	if base == "" {
		base = Start(t).DSN
	}
	return NewDB(t, base)
}

// Base is the DSN a test's own databases are created under (NewDB), for tests that need
// several: the shared server, or the test binary's embedded engine.
func Base(t testing.TB) string {
	t.Helper()
	if Embedded() {
		return embeddedBase(t)
	}
	if base := os.Getenv("FLAGWATCH_TEST_CLICKHOUSE_DSN"); base != "" {
		return base
	}
	return Start(t).DSN
}

// NewDB creates a fresh migrated database on the server at base.
func NewDB(t testing.TB, base string) (string, store.Conn) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test_" + hex.EncodeToString(b[:])
	dsn, err := store.WithDatabase(base, name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	if err := store.Migrate(ctx, conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
		conn.Close()
	})
	return dsn, conn
}
