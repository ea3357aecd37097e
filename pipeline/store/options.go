package store

import (
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// Option configures Open.
type Option func(*openOptions)

type openOptions struct {
	log         *slog.Logger
	health      *ops.Health
	maxWait     time.Duration
	dialTimeout time.Duration
	dnsGrace    time.Duration
	password    string
	cluster     string
	zookeeper   []string
}

func (o *openOptions) defaults() {
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.dialTimeout <= 0 {
		o.dialTimeout = 5 * time.Second
	}
	if o.dnsGrace <= 0 {
		o.dnsGrace = 30 * time.Second
	}
}

func (o *openOptions) waiting(what string) {
	if o.health != nil {
		o.health.Waiting(HealthComponent, what)
	}
}

func (o *openOptions) ready() {
	if o.health != nil {
		o.health.Report(HealthComponent, nil)
	}
}

// HealthComponent is the name Open reports under in an ops.Health.
const HealthComponent = "clickhouse"

// WithLogger logs each retry of the connection there (slog.Default otherwise).
func WithLogger(l *slog.Logger) Option { return func(o *openOptions) { o.log = l } }

// WithHealth reports "waiting for ClickHouse …" to h while Open retries.
func WithHealth(h *ops.Health) Option { return func(o *openOptions) { o.health = h } }

// WithMaxWait gives up retrying a transient connection error after d (0: only ctx
// ends it). One-shot commands use it so a server that never comes does not hang them.
func WithMaxWait(d time.Duration) Option { return func(o *openOptions) { o.maxWait = d } }

// WithDialTimeout bounds each connection attempt (default 5s).
func WithDialTimeout(d time.Duration) Option { return func(o *openOptions) { o.dialTimeout = d } }

// WithCluster runs flagwatch on the ClickHouse cluster name (from the servers'
// remote_servers): per-user tables sharded by user and replicated, everything else
// replicated on every node (see cluster.go). "" is a single node.
func WithCluster(name string) Option { return func(o *openOptions) { o.cluster = name } }

// WithZooKeeper names the ZooKeeper or ClickHouse Keeper servers of the cluster, where
// flagwatch's leases and claims live in cluster mode (pipeline/claim).
func WithZooKeeper(servers []string) Option { return func(o *openOptions) { o.zookeeper = servers } }

// WithPassword sets the server password, overriding the DSN's (it comes from
// FLAGWATCH_CLICKHOUSE_PASSWORD or its _FILE and is never logged).
func WithPassword(p string) Option { return func(o *openOptions) { o.password = p } }

// Version is the server's major.minor.
type Version struct{ Major, Minor int }

// ParseVersion reads "26.7.2.1" as {26, 7}.
func ParseVersion(s string) Version {
	parts := strings.SplitN(strings.TrimSpace(s), ".", 3)
	var v Version
	if len(parts) >= 2 {
		v.Major, _ = strconv.Atoi(parts[0])
		v.Minor, _ = strconv.Atoi(parts[1])
	}
	return v
}

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

func (v Version) String() string { return strconv.Itoa(v.Major) + "." + strconv.Itoa(v.Minor) }
