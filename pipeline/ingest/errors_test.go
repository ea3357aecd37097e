package ingest_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// today builds n events of today (by the wall clock: the age limit is about now), an
// exposure every 10th, keyed by user.
func today(n int, prefix string) []*kgo.Record {
	base := time.Now().UTC().Add(-time.Hour)
	recs := make([]*kgo.Record, 0, n)
	for i := 0; i < n; i++ {
		user := fmt.Sprintf("%su%d", prefix, i%50)
		ts := base.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		v := fmt.Sprintf(`{"event":"$pageview","distinct_id":%q,"timestamp":%q,"properties":{"i":%d,"$feature/f1":"test"}}`, user, ts, i)
		recs = append(recs, &kgo.Record{Key: []byte(user), Value: []byte(v)})
	}
	return recs
}

// committedTotal is the sum of the group's committed offsets.
func committedTotal(t *testing.T, cl *kgo.Client, group string) int64 {
	t.Helper()
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	require.NoError(t, err)
	var n int64
	offs.Each(func(o kadm.OffsetResponse) { n += o.At })
	return n
}

// One event from 2015 among today's: by default it goes to the dead-letter topic as
// too_old and the rest lands; with the limit off (-max-event-age 0) it lands too. Either
// way the partition is not stalled: everything is committed and the run ends.
func TestEventFrom2015(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		stored uint64
		dlq    int
	}{
		{"dead-lettered by default", 0, 1000, 1},
		{"lands with the limit off", -1, 1001, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := brokertest.Cluster(t, 1, broker.EventsTopic) // one partition: the old event sits between today's
			cl := brokertest.Client(t, kc)
			dsn, conn := chtest.DB(t)
			recs := today(1000, "")
			old := &kgo.Record{Key: []byte("u7"), Value: []byte(
				`{"event":"$pageview","distinct_id":"u7","timestamp":"2015-03-01T12:00:00Z","properties":{"$feature/f1":"control"}}`)}
			all := append(append(append([]*kgo.Record{}, recs[:500]...), old), recs[500:]...)
			brokertest.Produce(t, cl, broker.EventsTopic, all...)

			reg := prometheus.NewRegistry()
			run(t, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "g", MaxEventAge: tc.maxAge, Registerer: reg})
			ev, uniq, _ := counts(t, conn)
			require.Equal(t, tc.stored, ev)
			require.Equal(t, tc.stored, uniq)
			require.Equal(t, int64(len(all)), committedTotal(t, cl, "g"), "every offset committed: the partition moved on")
			require.Equal(t, float64(tc.dlq), counterSum(t, reg, "flagwatch_ingest_dlq_total"))
			var oldRows uint64
			require.NoError(t, conn.QueryRow(context.Background(), "SELECT count() FROM events WHERE toYear(timestamp) = 2015").Scan(&oldRows))
			require.Equal(t, uint64(1-tc.dlq), oldRows)
			if tc.dlq == 0 {
				// u7 saw control in 2015 and test today: the 2015 exposure is its first.
				var first int64
				require.NoError(t, conn.QueryRow(context.Background(),
					"SELECT minMerge(first_state) FROM assignment_state WHERE flag = 'f1' AND uh = cityHash64('u7')").Scan(&first))
				require.Equal(t, time.Date(2015, 3, 1, 12, 0, 0, 0, time.UTC).UnixMilli(), first)
				return
			}
			dlq := consumeAll(t, kc, broker.DLQTopic, 1)
			require.Len(t, dlq, 1)
			require.Equal(t, string(old.Value), string(dlq[0].Value), "dead-lettered whole and unchanged")
			require.Equal(t, ingest.ReasonTooOld, header(dlq[0], "flagwatch-dlq-reason"))
			require.Contains(t, header(dlq[0], "flagwatch-dlq-detail"), "2015-03-01T12:00:00Z")
		})
	}
}

// refusingSink stores through the real writer but answers, for any batch holding an
// event whose properties contain marker, what ClickHouse answers a value a column cannot
// hold (code 53, TYPE_MISMATCH): bad data, the same every time.
type refusingSink struct {
	w      *store.Writer
	marker string
	calls  atomic.Int32
}

func (s *refusingSink) WriteBatch(ctx context.Context, b store.RawBatch) (int, int, error) {
	s.calls.Add(1)
	for _, e := range b.Events {
		if strings.Contains(e.Properties, s.marker) {
			return 0, 0, fmt.Errorf("insert events batch: %w", &store.Exception{Code: 53, Name: "TYPE_MISMATCH",
				Message: "Type mismatch in VALUES section: expected UInt32"})
		}
	}
	return s.w.WriteBatch(ctx, b)
}

// ClickHouse refuses a batch as bad data: ingest splits it until it finds the two
// messages at fault, dead-letters them unchanged with the reason, stores the rest,
// commits and goes on — it neither retries the batch forever nor drops its neighbours.
func TestBadDataBisectedToTheMessages(t *testing.T) {
	kc := brokertest.Cluster(t, 2, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	dsn, conn := chtest.DB(t)
	recs := stream(3000, "")
	bad := []*kgo.Record{
		{Key: []byte("u3"), Value: []byte(`{"event":"purchase","distinct_id":"u3","timestamp":"2026-11-01T10:00:00Z","properties":{"poison":1}}`)},
		{Key: []byte("u4"), Value: []byte(`[{"event":"a","distinct_id":"u4","timestamp":"2026-11-01T10:00:00Z"},{"event":"b","distinct_id":"u4","timestamp":"2026-11-01T10:00:01Z","properties":{"poison":2}}]`)},
	}
	all := append(append(append(append([]*kgo.Record{}, recs[:1000]...), bad[0]), recs[1000:2000]...), append([]*kgo.Record{bad[1]}, recs[2000:]...)...)
	brokertest.Produce(t, cl, broker.EventsTopic, all...)

	sink := &refusingSink{w: store.NewWriter(conn), marker: `"poison"`}
	reg := prometheus.NewRegistry()
	run(t, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "g", BatchSize: 800, Sink: sink, Registerer: reg})
	ev, uniq, exp := counts(t, conn)
	require.Equal(t, uint64(3000), ev, "everything but the refused messages (the array's good event goes with it)")
	require.Equal(t, uint64(3000), uniq)
	require.Equal(t, uint64(300), exp)
	require.Equal(t, int64(len(all)), committedTotal(t, cl, "g"))
	require.Equal(t, 2.0, counterSum(t, reg, "flagwatch_ingest_dlq_total"))
	require.Zero(t, counterSum(t, reg, "flagwatch_ingest_insert_retries_total"), "bad data is not retried")
	require.Less(t, sink.calls.Load(), int32(60), "a bisection, not a write per message")

	dlq := consumeAll(t, kc, broker.DLQTopic, 2)
	require.Len(t, dlq, 2)
	got := map[string]bool{}
	for _, r := range dlq {
		got[string(r.Value)] = true
		require.Equal(t, ingest.ReasonRejected, header(r, "flagwatch-dlq-reason"))
		require.Contains(t, header(r, "flagwatch-dlq-detail"), "code: 53")
	}
	require.True(t, got[string(bad[0].Value)] && got[string(bad[1].Value)], "the refused messages, unchanged")
}

// fatalSink answers what ClickHouse answers wrong credentials (code 516): no retry can
// fix it.
type fatalSink struct{ calls atomic.Int32 }

func (s *fatalSink) WriteBatch(context.Context, store.RawBatch) (int, int, error) {
	s.calls.Add(1)
	return 0, 0, &store.Exception{Code: 516, Name: "AUTHENTICATION_FAILED", Message: "default: Authentication failed"}
}

// An error that can never succeed stops ingest at once with a clear error, committing
// nothing, instead of retrying forever.
func TestFatalErrorStopsWithoutCommitting(t *testing.T) {
	kc := brokertest.Cluster(t, 2, broker.EventsTopic)
	cl := brokertest.Client(t, kc)
	brokertest.Produce(t, cl, broker.EventsTopic, stream(2000, "")...)
	sink := &fatalSink{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := ingest.Run(ctx, ingest.Options{Brokers: kc.Addrs(), Group: "g", BatchSize: 500, Sink: sink, Logger: quiet,
		ExitWhenCaughtUp: true})
	require.Error(t, err)
	require.Contains(t, err.Error(), "retrying cannot help")
	require.Contains(t, err.Error(), "Authentication failed")
	require.LessOrEqual(t, sink.calls.Load(), int32(2), "not retried (two batches may be in flight)")
	require.Zero(t, committedTotal(t, cl, "g"))
}

// discard stores nothing.
type discard struct{}

func (discard) WriteBatch(_ context.Context, b store.RawBatch) (int, int, error) {
	return len(b.Events), len(b.Exposures), nil
}
