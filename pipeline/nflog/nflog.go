// Package nflog is the notifier's notification log and the claims that arbitrate between
// notifiers, both in ClickHouse. The log has one row per effect on Slack (a post, a
// resolution, a digest), written right after Slack accepted it and before the Kafka
// offset is committed; every effect is named by an op, a deterministic function of the
// alert and the log, and an op found in the log is never performed again.
//
// The decision that shapes it: the log is written per post, not snapshotted (Alertmanager's
// nflog snapshots every 15 minutes, so a crash can re-notify), and the claim is a
// compare-and-set built on a ClickHouse Join(ANY, LEFT) table, which keeps the first row
// inserted for a key and serialises inserts under its lock: "insert my claim, read the
// key back" names one winner to every reader, with no transactions and on 18.16. (An
// "earliest claimed_at wins" rule on a MergeTree is not safe: client clocks skew, and
// server-side now() has one-second ties that a later inserter can win after an earlier
// one already read itself back as the winner.) Claims are leases: the holder renews
// before each Slack call and through each back-off, and another notifier takes over only
// after the lease expired.
//
// The claims themselves are pipeline/claim's put-if-absent: the Join table on one node,
// ZooKeeper on a cluster, so notifiers on different nodes of a cluster agree too.
//
// What is left, honestly: on one node, a server restart reloads the Join table's files
// in directory order, so a key that two notifiers raced for can change winner (the
// holder re-checks its claim before every call, which leaves a window of one Slack call).
//
// Every value enters SQL through store.Quote/QuoteList (no driver-side parameters: the
// embedded engine has none), and every joined subquery has an alias (ClickHouse ≥ 20
// refuses one without); the same statements run on 18.16 and 26.x.
package nflog

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Kinds of log entries.
const (
	KindOpen    = "open"    // the first message of an incident (one row per finding it shows)
	KindReply   = "reply"   // a finding new to an open incident (a thread reply)
	KindRepeat  = "repeat"  // an unresolved critical finding, again
	KindResolve = "resolve" // a finding no longer holds (one row per finding)
	KindDigest  = "digest"  // the weekly digest
	KindWatch   = "watch"   // an incident's sessions to watch (one row, once per incident)
)

// Statuses of log entries.
const (
	StatusPosted = "posted"
	StatusFailed = "failed"
)

// Entry is one row of the notification log: one finding's part in one effect on Slack
// (or in one that failed for good). The rows of one effect share its Op.
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
	// Message is the posted message's text and blocks (JSON), kept so the incident's first
	// message can be rewritten when it is resolved.
	Message string
	Replica string
	At      time.Time
}

// Log is the notification log in the table notification_log.
type Log struct{ conn store.Conn }

// NewLog returns the log on conn (migrated by store.Migrate).
func NewLog(conn store.Conn) *Log { return &Log{conn: conn} }

const entryColumns = `op, flag, incident, kind, dedup_key, decision, severity, status,
    channel, ts, thread_ts, error, message, replica, posted_ms`

// Entries returns a flag's entries in the order they were written.
func (l *Log) Entries(ctx context.Context, flag string) ([]Entry, error) {
	rows, err := l.conn.Query(ctx, "SELECT "+entryColumns+"\nFROM notification_log WHERE flag = "+store.Quote(flag)+
		" ORDER BY posted_ms, op")
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

// Has reports whether an effect with this op is recorded.
func (l *Log) Has(ctx context.Context, op string) (bool, error) {
	var n uint64
	if err := l.conn.QueryRow(ctx, "SELECT count() FROM notification_log WHERE op = "+store.Quote(op)).Scan(&n); err != nil {
		return false, fmt.Errorf("look up op %q: %w", op, err)
	}
	return n > 0, nil
}

// Append records the entries of one effect in one insert, so they land together or not
// at all (one block, one partition: they share posted_at's month).
func (l *Log) Append(ctx context.Context, es ...Entry) error {
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

// Claim is what a notifier knows about who may perform an op.
type Claim struct {
	Held    bool
	Holder  string
	Expires time.Time
}

// Claims arbitrates between notifiers. A claim's key is "op#epoch" and its value
// "holder|expires_ms"; epoch k+1 may be claimed by anyone once epoch k has expired, or by
// k's holder to renew.
type Claims struct {
	store claim.Store
	now   func() time.Time
	lease time.Duration
}

// NewClaims returns claims in s with the given least lease; now is the clock (claims
// from several notifiers compare their clocks, so they must be roughly in sync — far
// closer than the lease).
func NewClaims(s claim.Store, lease time.Duration, now func() time.Time) *Claims {
	if now == nil {
		now = time.Now
	}
	return &Claims{store: s, now: now, lease: lease}
}

type claimRow struct {
	epoch   int
	holder  string
	expires time.Time
}

func encodeClaim(holder string, expires time.Time) string {
	return holder + "|" + strconv.FormatInt(expires.UnixMilli(), 10)
}

func decodeClaim(v string) (claimRow, error) {
	i := strings.LastIndexByte(v, '|')
	if i < 0 {
		return claimRow{}, fmt.Errorf("malformed claim %q", v)
	}
	ms, err := strconv.ParseInt(v[i+1:], 10, 64)
	if err != nil {
		return claimRow{}, fmt.Errorf("malformed claim %q: %w", v, err)
	}
	return claimRow{holder: v[:i], expires: time.UnixMilli(ms)}, nil
}

// epochBatch is how many epochs one read looks up; a claim is renewed a few times per
// post, so one read almost always finds the end.
const epochBatch = 16

// latest returns op's highest claimed epoch (epoch 0: never claimed).
func (c *Claims) latest(ctx context.Context, op string) (claimRow, error) {
	var last claimRow
	for from := 1; ; from += epochBatch {
		keys := make([]string, epochBatch)
		for i := range keys {
			keys[i] = op + "#" + strconv.Itoa(from+i)
		}
		found, err := c.store.Lookup(ctx, keys)
		if err != nil {
			return last, fmt.Errorf("read claims of %q: %w", op, err)
		}
		for i, k := range keys {
			v, ok := found[k]
			if !ok {
				return last, nil
			}
			r, err := decodeClaim(v)
			if err != nil {
				return last, err
			}
			r.epoch = from + i
			last = r
		}
	}
}

// Acquire makes holder the holder of op until at least now+need, unless another holder's
// claim is still valid. Called again by the holder it renews the claim when less than
// need remains, so a holder calls it before every step that must not be done twice,
// with need covering that step.
func (c *Claims) Acquire(ctx context.Context, op, holder string, need time.Duration) (Claim, error) {
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
	key := op + "#" + strconv.Itoa(cur.epoch+1)
	got, err := c.store.Claim(ctx, key, encodeClaim(holder, now.Add(max(c.lease, need))))
	if err != nil {
		return Claim{}, fmt.Errorf("claim %q: %w", key, err)
	}
	r, err := decodeClaim(got)
	if err != nil {
		return Claim{}, err
	}
	return Claim{Held: r.holder == holder, Holder: r.holder, Expires: r.expires}, nil
}
