package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// ZooKeeper keeps claims as znodes under a root (one per flagwatch database): a claim is
// a create, which ZooKeeper makes linearizable, so the first creator wins everywhere.
// Claims older than Retention are swept, a few at a time, as claims are made.
type ZooKeeper struct {
	conn *zk.Conn
	root string
	// Retention is how long a claim is kept (default 7 days); keys are unique per
	// pass slot, post and stage change, so old ones are never read again.
	Retention time.Duration
	log       *slog.Logger

	mu        sync.Mutex
	lastSweep time.Time
}

// DialZooKeeper connects to the ensemble (host:port, …) and keeps claims under
// /flagwatch/<database>/claims.
func DialZooKeeper(servers []string, database string, log *slog.Logger) (*ZooKeeper, error) {
	if len(servers) == 0 {
		return nil, errors.New("no ZooKeeper servers")
	}
	if log == nil {
		log = slog.Default()
	}
	c, _, err := zk.Connect(servers, 10*time.Second, zk.WithLogger(zkLogger{log}))
	if err != nil {
		return nil, fmt.Errorf("connect to ZooKeeper %s: %w", strings.Join(servers, ","), err)
	}
	z := &ZooKeeper{conn: c, root: "/flagwatch/" + database + "/claims", Retention: 7 * 24 * time.Hour, log: log}
	if err := z.ensure(z.root); err != nil {
		c.Close()
		return nil, err
	}
	return z, nil
}

// Close ends the session.
func (z *ZooKeeper) Close() { z.conn.Close() }

func (z *ZooKeeper) ensure(p string) error {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	cur := ""
	for _, part := range parts {
		cur += "/" + part
		_, err := z.conn.Create(cur, nil, 0, zk.WorldACL(zk.PermAll))
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create ZooKeeper node %s: %w", cur, err)
		}
	}
	return nil
}

// node is the znode of key: keys are path-escaped into one level.
func (z *ZooKeeper) node(key string) string { return path.Join(z.root, url.PathEscape(key)) }

// Claim creates key's node with value, or reads the node another replica created.
func (z *ZooKeeper) Claim(ctx context.Context, key, value string) (string, error) {
	if value == "" {
		return "", errors.New("claim: empty value")
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	z.sweep()
	_, err := z.conn.Create(z.node(key), []byte(value), 0, zk.WorldACL(zk.PermAll))
	switch {
	case err == nil:
		return value, nil
	case errors.Is(err, zk.ErrNodeExists):
		b, _, err := z.conn.Get(z.node(key))
		if err != nil {
			return "", fmt.Errorf("read claim %q: %w", key, err)
		}
		return string(b), nil
	default:
		return "", fmt.Errorf("claim %q in ZooKeeper: %w", key, err)
	}
}

// Lookup reads the keys' nodes.
func (z *ZooKeeper) Lookup(ctx context.Context, keys []string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, _, err := z.conn.Get(z.node(k))
		switch {
		case err == nil:
			out[k] = string(b)
		case errors.Is(err, zk.ErrNoNode):
		default:
			return nil, fmt.Errorf("read claim %q: %w", k, err)
		}
	}
	return out, nil
}

// sweep deletes claims older than Retention, at most once an hour and a bounded number
// at a time; space, not correctness (a key is never claimed again).
func (z *ZooKeeper) sweep() {
	z.mu.Lock()
	if time.Since(z.lastSweep) < time.Hour {
		z.mu.Unlock()
		return
	}
	z.lastSweep = time.Now()
	z.mu.Unlock()
	go func() {
		children, _, err := z.conn.Children(z.root)
		if err != nil {
			z.log.Warn("list old claims", "err", err)
			return
		}
		cutoff := time.Now().Add(-z.Retention).UnixMilli()
		deleted := 0
		for _, c := range children {
			if deleted >= 10000 {
				return
			}
			p := path.Join(z.root, c)
			_, st, err := z.conn.Get(p)
			if err != nil || st.Ctime > cutoff {
				continue
			}
			if err := z.conn.Delete(p, st.Version); err == nil {
				deleted++
			}
		}
	}()
}

type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Debug("zookeeper: " + fmt.Sprintf(format, args...))
}
