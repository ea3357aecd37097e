package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Kinds of log entries.
const (
	kindOpen    = "open"    // the first message of an incident
	kindReply   = "reply"   // a new finding in an open incident (a thread reply)
	kindRepeat  = "repeat"  // an unresolved critical finding, again
	kindResolve = "resolve" // a finding no longer holds (one row per finding)
	kindDigest  = "digest"  // the weekly digest
)

// Statuses of log entries.
const (
	statusPosted = "posted"
	statusFailed = "failed"
)

// Entry is one row of the notification log: one effect on Slack (or one that failed
// for good).
type Entry struct {
	Op       string
	Flag     string
	Incident string
	Kind     string
	DedupKey string
	Decision string
	Severity string
	Status   string
	Channel  string
	TS       string
	ThreadTS string
	Error    string
	Message  string
	Replica  string
	At       time.Time
}

// Log is the notification log as the notifier uses it.
type Log interface {
	// Entries returns a flag's entries in the order they were written.
	Entries(ctx context.Context, flag string) ([]Entry, error)
	// Has reports whether an effect with this op is recorded.
	Has(ctx context.Context, op string) (bool, error)
	// Append records entries (all of one op) at once.
	Append(ctx context.Context, es ...Entry) error
}

// Claim is what a replica knows about who may perform an op.
type Claim struct {
	Held    bool
	Holder  string
	Expires time.Time
}

// Claimer arbitrates between notifiers that want to perform the same op.
type Claimer interface {
	// Acquire makes holder the holder of op until at least now+need, unless another
	// holder's claim is still valid. Called again by the holder it renews the claim when
	// less than need remains, so a holder calls it before every step that must not be
	// done twice, with need covering that step.
	Acquire(ctx context.Context, op, holder string, need time.Duration) (Claim, error)
}

// chLog is the notification log in ClickHouse (table notification_log).
type chLog struct{ conn store.Conn }

func (l *chLog) Entries(ctx context.Context, flag string) ([]Entry, error) {
	rows, err := l.conn.Query(ctx, `SELECT op, flag, incident, kind, dedup_key, decision, severity, status,
    channel, ts, thread_ts, error, message, replica, posted_ms
FROM notification_log WHERE flag = `+store.Quote(flag)+` ORDER BY posted_ms, op`)
	if err != nil {
		return nil, fmt.Errorf("read notification log for %s: %w", flag, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var ms int64
		if err := rows.Scan(&e.Op, &e.Flag, &e.Incident, &e.Kind, &e.DedupKey, &e.Decision, &e.Severity, &e.Status,
			&e.Channel, &e.TS, &e.ThreadTS, &e.Error, &e.Message, &e.Replica, &ms); err != nil {
			return nil, fmt.Errorf("scan notification log: %w", err)
		}
		e.At = time.UnixMilli(ms)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read notification log for %s: %w", flag, err)
	}
	return out, nil
}

func (l *chLog) Has(ctx context.Context, op string) (bool, error) {
	var n uint64
	if err := l.conn.QueryRow(ctx, "SELECT count() FROM notification_log WHERE op = "+store.Quote(op)).Scan(&n); err != nil {
		return false, fmt.Errorf("look up op %q: %w", op, err)
	}
	return n > 0, nil
}

func (l *chLog) Append(ctx context.Context, es ...Entry) error {
	b, err := l.conn.PrepareBatch(ctx, `INSERT INTO notification_log (op, flag, incident, kind, dedup_key, decision,
    severity, status, channel, ts, thread_ts, error, message, replica, posted_ms, posted_at)`)
	if err != nil {
		return fmt.Errorf("prepare notification log insert: %w", err)
	}
	for _, e := range es {
		if err := b.Append(e.Op, e.Flag, e.Incident, e.Kind, e.DedupKey, e.Decision, e.Severity, e.Status,
			e.Channel, e.TS, e.ThreadTS, e.Error, e.Message, e.Replica, e.At.UnixMilli(), e.At.UTC()); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append notification log row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert notification log: %w", err)
	}
	return nil
}

// chClaims implements Claimer on the Join(ANY, LEFT) table notification_claims: the first
// row inserted for a key wins, under the table's insert lock. A claim's key is
// "op#epoch"; epoch k+1 may be claimed by anyone once epoch k has expired, or by k's
// holder to renew.
type chClaims struct {
	conn  store.Conn
	now   func() time.Time
	lease time.Duration // the least length of a new claim
}

type claimRow struct {
	epoch   int
	holder  string
	expires time.Time
}

// latest returns op's highest claimed epoch (epoch 0: never claimed).
func (c *chClaims) latest(ctx context.Context, op string) (claimRow, error) {
	var last claimRow
	const batch = 16
	for from := 1; ; from += batch {
		keys := make([]string, batch)
		for i := range keys {
			keys[i] = op + "#" + strconv.Itoa(from+i)
		}
		rows, err := c.conn.Query(ctx, `SELECT claim, replica, expires_ms
FROM (SELECT arrayJoin(`+store.QuoteList(keys)+`) AS claim) AS k ANY LEFT JOIN notification_claims USING claim`)
		if err != nil {
			return last, fmt.Errorf("read claims of %q: %w", op, err)
		}
		found := map[string]claimRow{}
		for rows.Next() {
			var key, holder string
			var exp int64
			if err := rows.Scan(&key, &holder, &exp); err != nil {
				rows.Close()
				return last, fmt.Errorf("scan claim: %w", err)
			}
			if holder != "" {
				found[key] = claimRow{holder: holder, expires: time.UnixMilli(exp)}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return last, fmt.Errorf("read claims of %q: %w", op, err)
		}
		for i, k := range keys {
			r, ok := found[k]
			if !ok {
				return last, nil
			}
			r.epoch = from + i
			last = r
		}
	}
}

func (c *chClaims) Acquire(ctx context.Context, op, holder string, need time.Duration) (Claim, error) {
	cur, err := c.latest(ctx, op)
	if err != nil {
		return Claim{}, err
	}
	now := c.now()
	live := cur.epoch > 0 && now.Before(cur.expires)
	switch {
	case live && cur.holder == holder && cur.expires.Sub(now) >= need:
		return Claim{Held: true, Holder: holder, Expires: cur.expires}, nil
	case live && cur.holder != holder:
		return Claim{Holder: cur.holder, Expires: cur.expires}, nil
	}
	// Free, expired, or ours and due for renewal: claim the next epoch.
	next := cur.epoch + 1
	key := op + "#" + strconv.Itoa(next)
	b, err := c.conn.PrepareBatch(ctx, "INSERT INTO notification_claims (claim, replica, claimed_ms, expires_ms)")
	if err != nil {
		return Claim{}, fmt.Errorf("prepare claim insert: %w", err)
	}
	if err := b.Append(key, holder, now.UnixMilli(), now.Add(max(c.lease, need)).UnixMilli()); err != nil {
		_ = b.Abort()
		return Claim{}, fmt.Errorf("append claim: %w", err)
	}
	if err := b.Send(); err != nil {
		return Claim{}, fmt.Errorf("insert claim %q: %w", key, err)
	}
	var got string
	var exp int64
	if err := c.conn.QueryRow(ctx, `SELECT replica, expires_ms
FROM (SELECT `+store.Quote(key)+` AS claim) AS k ANY LEFT JOIN notification_claims USING claim`).Scan(&got, &exp); err != nil {
		return Claim{}, fmt.Errorf("read back claim %q: %w", key, err)
	}
	return Claim{Held: got == holder, Holder: got, Expires: time.UnixMilli(exp)}, nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
