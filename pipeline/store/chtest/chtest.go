// Package chtest gives a test its own ClickHouse database on a real server: the one at
// $FLAGWATCH_TEST_CLICKHOUSE_DSN when set (make test starts one for the whole run),
// otherwise a throw-away server started with scripts/clickhouse.sh for this test alone.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// Start starts a private server for this test; it is stopped and removed at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
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
	base := os.Getenv("FLAGWATCH_TEST_CLICKHOUSE_DSN")
	if base == "" {
		base = Start(t).DSN
	}
	return NewDB(t, base)
}

// NewDB creates a fresh migrated database on the server at base.
func NewDB(t testing.TB, base string) (string, store.Conn) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse dsn %q: %v", base, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test_" + hex.EncodeToString(b[:])
	u.Path = "/" + name
	dsn := u.String()
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
