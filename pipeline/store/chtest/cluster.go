package chtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterNode is one server of a test cluster.
type ClusterNode struct {
	Shard, Replica int
	// DSN points at the node's flagwatch database.
	DSN string
}

// Cluster is a ClickHouse cluster started by scripts/cluster.sh: ZooKeeper and shards ×
// replicas 18.16 servers on this machine.
type Cluster struct {
	Dir   string
	Name  string
	Nodes []ClusterNode
	// ZooKeeper is the ensemble's address (host:port).
	ZooKeeper string
	t         testing.TB
}

var (
	sharedCluster   *Cluster
	sharedClusterMu sync.Mutex
)

// SharedCluster is a 2 × 2 cluster shared by the tests of one test binary (started on
// first use, stopped when the binary exits); tests that kill servers start their own.
// The cluster tests need ClickHouse 18.16 and ZooKeeper from Debian; without them the
// test fails under CI and is skipped elsewhere.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	sharedClusterMu.Lock()
	defer sharedClusterMu.Unlock()
	if sharedCluster == nil {
		sharedCluster = startCluster(t, 2, 2, false)
	}
	return sharedCluster
}

// StartCluster starts a private cluster for this test, stopped at cleanup.
func StartCluster(t testing.TB, shards, replicas int) *Cluster {
	t.Helper()
	return startCluster(t, shards, replicas, true)
}

func startCluster(t testing.TB, shards, replicas int, private bool) *Cluster {
	t.Helper()
	if Embedded() {
		t.Skip("cluster tests run against ClickHouse servers (make test-cluster)")
	}
	if _, err := os.Stat("/usr/share/java/zookeeper.jar"); err != nil && os.Getenv("CI") == "" {
		t.Skip("ZooKeeper is not installed (scripts/cluster.sh install); make test-cluster installs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script(t)[:len(script(t))-len("clickhouse.sh")]+"cluster.sh", "start", strconv.Itoa(shards), strconv.Itoa(replicas))
	// A server that kept the output pipe open must not hang the test: the script's
	// output is complete when it exits.
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "CLICKHOUSE_WATCH_PID="+strconv.Itoa(os.Getpid()))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	c := &Cluster{t: t}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "dir":
			c.Dir = f[1]
		case len(f) == 2 && f[0] == "cluster":
			c.Name = f[1]
		case len(f) == 2 && f[0] == "zookeeper":
			c.ZooKeeper = f[1]
		case len(f) == 4 && f[0] == "node":
			s, _ := strconv.Atoi(f[1])
			r, _ := strconv.Atoi(f[2])
			c.Nodes = append(c.Nodes, ClusterNode{Shard: s, Replica: r, DSN: f[3]})
		}
	}
	if c.Dir == "" || len(c.Nodes) == 0 {
		t.Fatalf("start cluster: unexpected output %q", out)
	}
	if private {
		t.Cleanup(func() { _ = exec.Command(c.script(), "stop", c.Dir).Run() })
	}
	return c
}

func (c *Cluster) script() string {
	s := script(c.t)
	return s[:len(s)-len("clickhouse.sh")] + "cluster.sh"
}

// Database names a fresh database for a test: every node's DSN for it (the database is
// created by the first store.Open in cluster mode). It is dropped on every node at
// cleanup.
func (c *Cluster) Database(t testing.TB) []string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test_" + hex.EncodeToString(b[:])
	var dsns []string
	for _, n := range c.Nodes {
		i := strings.LastIndex(n.DSN, "/")
		dsns = append(dsns, n.DSN[:i+1]+name)
	}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			port := n.DSN[strings.LastIndex(n.DSN, ":")+1 : strings.LastIndex(n.DSN, "/")]
			_ = exec.Command("clickhouse-client", "--port", port, "-q", "DROP DATABASE IF EXISTS "+name).Run()
		}
	})
	return dsns
}

// Kill stops one server with SIGKILL.
func (c *Cluster) Kill(shard, replica int) {
	c.t.Helper()
	if out, err := exec.Command(c.script(), "kill", c.Dir, strconv.Itoa(shard), strconv.Itoa(replica)).CombinedOutput(); err != nil {
		c.t.Fatalf("kill node %d-%d: %v: %s", shard, replica, err, out)
	}
}

// Restart starts a killed server again on its ports.
func (c *Cluster) Restart(shard, replica int) {
	c.t.Helper()
	if out, err := exec.Command(c.script(), "restart", c.Dir, strconv.Itoa(shard), strconv.Itoa(replica)).CombinedOutput(); err != nil {
		c.t.Fatalf("restart node %d-%d: %v: %s", shard, replica, err, out)
	}
}

func (n ClusterNode) String() string { return fmt.Sprintf("%d-%d", n.Shard, n.Replica) }
