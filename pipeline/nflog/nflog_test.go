package nflog

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// The log and the claims on a real ClickHouse (the SQL has no driver-side parameters and
// aliases its joined subquery, so it runs on 18.16 and on current releases alike).
func TestLogAndClaims(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()

	t.Run("log", func(t *testing.T) {
		l := NewLog(conn)
		at := time.UnixMilli(time.Date(2024, 6, 3, 8, 15, 0, 0, time.UTC).UnixMilli())
		flag := `it's a "flag" with \ and` + "\n newline"
		es := []Entry{
			{Op: "open|" + flag + "#1|0", Flag: flag, Incident: flag + "#1", Kind: KindOpen, DedupKey: "k1", Decision: "loss",
				Severity: "warning", Status: StatusPosted, Channel: "C1", TS: "1.1", Message: `{"text":"x"}`, Replica: "r", At: at},
			{Op: "open|" + flag + "#1|0", Flag: flag, Incident: flag + "#1", Kind: KindOpen, DedupKey: "k2", Decision: "win",
				Severity: "info", Status: StatusPosted, Channel: "C1", TS: "1.1", Replica: "r", At: at},
		}
		require.NoError(t, l.Append(ctx, es...))
		require.NoError(t, l.Append(ctx, Entry{Op: "open|other#1|0", Flag: "other", At: at.Add(time.Second)}))
		got, err := l.Entries(ctx, flag)
		require.NoError(t, err)
		require.Len(t, got, 2)
		for i := range got {
			got[i].At = got[i].At.UTC()
		}
		byKey := map[string]Entry{got[0].DedupKey: got[0], got[1].DedupKey: got[1]}
		es[0].At, es[1].At = es[0].At.UTC(), es[1].At.UTC()
		require.Equal(t, es[0], byKey["k1"])
		require.Equal(t, es[1], byKey["k2"])
		has, err := l.Has(ctx, es[0].Op)
		require.NoError(t, err)
		require.True(t, has)
		has, err = l.Has(ctx, "open|"+flag+"#2|0")
		require.NoError(t, err)
		require.False(t, has)
	})

	t.Run("claims", func(t *testing.T) {
		now := time.Date(2024, 6, 3, 8, 0, 0, 0, time.UTC)
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		c := NewClaims(claim.Table{Conn: conn}, time.Minute, clock)
		op := `post|it's #1|k`

		a, err := c.Acquire(ctx, op, "a", time.Minute)
		require.NoError(t, err)
		require.True(t, a.Held)
		require.Equal(t, "a", a.Holder)
		require.True(t, a.Expires.Equal(clock().Add(time.Minute)), "%s", a.Expires)

		b, err := c.Acquire(ctx, op, "b", time.Minute)
		require.NoError(t, err)
		require.False(t, b.Held, "a holds it")
		require.Equal(t, "a", b.Holder)

		advance(30 * time.Second)
		r, err := c.Acquire(ctx, op, "a", 10*time.Second)
		require.NoError(t, err)
		require.True(t, r.Held)
		require.True(t, a.Expires.Equal(r.Expires), "enough left: no renewal")
		r, err = c.Acquire(ctx, op, "a", 2*time.Minute)
		require.NoError(t, err)
		require.True(t, r.Held)
		require.True(t, clock().Add(2*time.Minute).Equal(r.Expires), "renewed to cover the need")

		advance(2*time.Minute + time.Second)
		b, err = c.Acquire(ctx, op, "b", time.Minute)
		require.NoError(t, err)
		require.True(t, b.Held, "a's lease expired: b takes over")
		a, err = c.Acquire(ctx, op, "a", time.Minute)
		require.NoError(t, err)
		require.False(t, a.Held)

		// Many epochs (more than one lookup batch) are followed to the end.
		for i := 0; i < epochBatch+3; i++ {
			advance(2 * time.Minute)
			got, err := c.Acquire(ctx, op, "h"+strconv.Itoa(i), time.Minute)
			require.NoError(t, err)
			require.True(t, got.Held, "epoch %d", i)
		}
	})

	t.Run("race", func(t *testing.T) {
		c := NewClaims(claim.Table{Conn: conn}, time.Minute, nil)
		for round := 0; round < 5; round++ {
			op := "race|" + strconv.Itoa(round)
			const n = 6
			res := make([]Claim, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() { defer wg.Done(); res[i], errs[i] = c.Acquire(ctx, op, "h"+strconv.Itoa(i), time.Minute) }()
			}
			wg.Wait()
			held := 0
			for i := range res {
				require.NoError(t, errs[i])
				if res[i].Held {
					held++
				}
			}
			require.Equal(t, 1, held, "one winner among %d", n)
		}
	})
}
