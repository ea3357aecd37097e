package rollout

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/retry"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// chLog is the rollout's log in ClickHouse: rollout_log (schemas/clickhouse/0060). Every
// call is retried while ClickHouse's error may pass (store.Classify), each retry logged.
type chLog struct {
	conn store.Conn
	log  *slog.Logger
}

var storeRetry = retry.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Elapsed: time.Minute,
	Retryable: func(err error) bool { return store.Classify(err) == store.Transient }}

func (l *chLog) do(ctx context.Context, what string, op func(context.Context) error) error {
	return retry.Do(ctx, l.log, what, storeRetry, op)
}

const logColumns = `flag, seq, change, status, from_stage, to_stage, stages, from_label, to_label, reason,
	numbers, users, action, target, detail, flag_state, decided_by, pass_id, at_ms, done_ms`

// read returns the entries of flag ("" for every flag), in log order. On a cluster the
// log is replicated on every node, asynchronously: the node first fetches every entry
// another node wrote (SYSTEM SYNC REPLICA), so a replica never decides from a log that
// lacks a change another one has made.
func (l *chLog) read(ctx context.Context, flag string) ([]Entry, error) {
	if l.conn.Server().Cluster != "" {
		if err := l.do(ctx, "sync rollout_log", func(ctx context.Context) error {
			return l.conn.Exec(ctx, "SYSTEM SYNC REPLICA rollout_log")
		}); err != nil {
			return nil, fmt.Errorf("sync rollout_log with the other nodes: %w", err)
		}
	}
	q := "SELECT " + logColumns + " FROM rollout_log"
	if flag != "" {
		q += " WHERE flag = " + store.Quote(flag)
	}
	q += " ORDER BY flag, seq, done_ms"
	var out []Entry
	err := l.do(ctx, "read rollout_log", func(ctx context.Context) error {
		out = out[:0]
		rows, err := l.conn.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("query rollout_log: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var e Entry
			if err := rows.Scan(&e.Flag, &e.Seq, &e.Change, &e.Status, &e.FromStage, &e.ToStage, &e.Stages, &e.From, &e.To,
				&e.Reason, &e.Numbers, &e.Users, &e.Action, &e.Target, &e.Detail, &e.FlagState, &e.DecidedBy, &e.PassID,
				&e.AtMs, &e.DoneMs); err != nil {
				return fmt.Errorf("scan rollout_log: %w", err)
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// append writes entries as one insert.
func (l *chLog) append(ctx context.Context, es ...Entry) error {
	return l.do(ctx, "write rollout_log", func(ctx context.Context) error {
		b, err := l.conn.PrepareBatch(ctx, "INSERT INTO rollout_log ("+logColumns+")")
		if err != nil {
			return fmt.Errorf("prepare rollout_log insert: %w", err)
		}
		for _, e := range es {
			if err := b.Append(e.Flag, e.Seq, e.Change, e.Status, e.FromStage, e.ToStage, e.Stages, e.From, e.To,
				e.Reason, e.Numbers, e.Users, e.Action, e.Target, e.Detail, e.FlagState, e.DecidedBy, e.PassID,
				e.AtMs, e.DoneMs); err != nil {
				_ = b.Abort()
				return fmt.Errorf("append rollout_log row: %w", err)
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("insert rollout_log: %w", err)
		}
		return nil
	})
}

// claimEpochs is how many epochs of one change claimChange looks at: a change is taken over
// only when its holder died mid-change, so a handful is plenty.
const claimEpochs = 16

// claimChange makes holder the one replica that performs the change key until now+lease, and
// reports whether it did. The claim is the value "holder|expires_ms" stored under
// key#epoch in the claims store (pipeline/claim: put-if-absent, the first value holds
// and every reader reads it — a Join table on one node, ZooKeeper on a cluster). A live
// claim of another holder wins; a claim whose lease ran out (its holder died mid-change)
// is taken over under the next epoch, and the new holder settles what the old one left
// (the log says whether it finished).
func claimChange(ctx context.Context, claims claim.Store, key, holder string, now time.Time, lease time.Duration) (bool, error) {
	keys := make([]string, claimEpochs)
	for i := range keys {
		keys[i] = key + "#" + strconv.Itoa(i+1)
	}
	held, err := claims.Lookup(ctx, keys)
	if err != nil {
		return false, fmt.Errorf("read the claims of %s: %w", key, err)
	}
	epoch := 0
	var last claimRow
	for i, k := range keys {
		v, ok := held[k]
		if !ok {
			break
		}
		if last, err = decodeClaim(v); err != nil {
			return false, err
		}
		epoch = i + 1
	}
	switch {
	case epoch > 0 && now.Before(last.expires):
		return last.holder == holder, nil
	case epoch == claimEpochs:
		return false, fmt.Errorf("claim %s: taken over %d times; look at the analyzer replicas", key, claimEpochs)
	}
	mine := holder + "|" + strconv.FormatInt(now.Add(lease).UnixMilli(), 10)
	got, err := claims.Claim(ctx, keys[epoch], mine)
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", keys[epoch], err)
	}
	return got == mine, nil
}

type claimRow struct {
	holder  string
	expires time.Time
}

func decodeClaim(v string) (claimRow, error) {
	i := strings.LastIndexByte(v, '|')
	if i < 0 {
		return claimRow{}, fmt.Errorf("malformed rollout claim %q", v)
	}
	ms, err := strconv.ParseInt(v[i+1:], 10, 64)
	if err != nil {
		return claimRow{}, fmt.Errorf("malformed rollout claim %q: %w", v, err)
	}
	return claimRow{holder: v[:i], expires: time.UnixMilli(ms)}, nil
}

// claimKey is the claims key of a flag's seq-th change.
func claimKey(flag string, seq int64) string { return "rollout|" + flag + "|" + itoa(seq) }
