package rollout

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/retry"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// chLog is the rollout's state in ClickHouse: rollout_log and rollout_claims
// (schemas/clickhouse/0060_rollout.sql). Every call is retried while ClickHouse's error
// may pass (store.Classify), each retry logged.
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

// read returns the entries of flag ("" for every flag), in log order.
func (l *chLog) read(ctx context.Context, flag string) ([]Entry, error) {
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

// claimEpochs is how many epochs of one change claim looks at: a change is taken over
// only when its holder died mid-change, so a handful is plenty.
const claimEpochs = 16

// claim makes holder the one replica that performs the change key (flag|rollout|seq)
// until now+lease, and reports whether it did. The claim is a row (key#epoch, holder,
// lease) inserted into rollout_claims, a Join(ANY, LEFT) table: it keeps the first row
// of a key and every reader reads the same winner, a compare-and-set that ClickHouse
// 18.16 can do without transactions. A live claim of another holder wins; a claim whose
// lease ran out (its holder died mid-change) is taken over under the next epoch, and
// the new holder settles what the old one left (the log says whether it finished).
//
// This is the one function to change when the claims move to a cluster (a table on
// one shard, or Keeper).
func claim(ctx context.Context, conn store.Conn, key, holder string, now time.Time, lease time.Duration) (bool, error) {
	keys := make([]string, claimEpochs)
	for i := range keys {
		keys[i] = key + "#" + strconv.Itoa(i+1)
	}
	held, err := readClaims(ctx, conn, keys)
	if err != nil {
		return false, err
	}
	epoch := 0
	var last claimRow
	for i, k := range keys {
		c, ok := held[k]
		if !ok {
			break
		}
		epoch, last = i+1, c
	}
	switch {
	case epoch > 0 && now.Before(last.expires):
		return last.holder == holder, nil
	case epoch == claimEpochs:
		return false, fmt.Errorf("claim %s: taken over %d times; look at the analyzer replicas", key, claimEpochs)
	}
	next := keys[epoch]
	b, err := conn.PrepareBatch(ctx, "INSERT INTO rollout_claims (claim, replica, claimed_ms, expires_ms)")
	if err != nil {
		return false, fmt.Errorf("prepare claim: %w", err)
	}
	if err := b.Append(next, holder, now.UnixMilli(), now.Add(lease).UnixMilli()); err != nil {
		_ = b.Abort()
		return false, fmt.Errorf("append claim: %w", err)
	}
	if err := b.Send(); err != nil {
		return false, fmt.Errorf("insert claim %s: %w", next, err)
	}
	got, err := readClaims(ctx, conn, []string{next})
	if err != nil {
		return false, err
	}
	return got[next].holder == holder, nil
}

type claimRow struct {
	holder  string
	expires time.Time
}

// readClaims reads the claims of keys: the keys are a literal array joined to the claims
// table; a key without a claim reads back with an empty replica and is left out.
func readClaims(ctx context.Context, conn store.Conn, keys []string) (map[string]claimRow, error) {
	q := "SELECT k.claim, replica, expires_ms FROM (SELECT arrayJoin(" + store.QuoteList(keys) +
		") AS claim) AS k ANY LEFT JOIN rollout_claims USING claim"
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read rollout claims: %w", err)
	}
	defer rows.Close()
	out := map[string]claimRow{}
	for rows.Next() {
		var k, holder string
		var exp int64
		if err := rows.Scan(&k, &holder, &exp); err != nil {
			return nil, fmt.Errorf("scan rollout claim: %w", err)
		}
		if holder != "" {
			out[k] = claimRow{holder: holder, expires: time.UnixMilli(exp)}
		}
	}
	return out, rows.Err()
}
