package ingest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// denseStream is posthog-js at real flag density: every event carries $feature/<key>
// for each of 20 active flags (some multivariate, one reporting other variants now and
// then: $multiple users), besides the exposure events themselves.
func denseStream(t *testing.T) []synth.Record {
	t.Helper()
	cfg := synth.Config{Seed: 13, Users: 300, Days: 6, FeatureProps: true,
		Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)}
	for i := range 20 {
		f := synth.Flag{Key: fmt.Sprintf("flag-%02d", i), LaunchDay: i % 3}
		switch i % 5 {
		case 1:
			f.Variants = []string{"a", "b", "c"}
		case 2:
			f.ReassignFrac = 0.1
		case 3:
			f.ExposedFrac = 0.5
		}
		cfg.Flags = append(cfg.Flags, f)
	}
	var recs []synth.Record
	require.NoError(t, cfg.Each(func(r synth.Record) error { recs = append(recs, r); return nil }))
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	return recs
}

// knowledge is everything downstream reads of exposures: per (flag, user) the first
// exposure, its variant, the least and greatest variant hash ($multiple) and the first
// exposure's segment set (resolved to its text, so the id must be in segment_sets); per
// flag the first and last exposure; and the events.
type knowledge struct {
	assignments map[string]assignment // by "flag uh"
	activity    []string
	perDay      []string // users by flag, day of first exposure and variant, as the flag page reads them
	events      uint64
	exposureRow uint64
}

type assignment struct {
	first           int64
	variant         string
	low, high       uint64
	segments        string
	variantsAtFirst []string // the reference's: every variant and segment set at the
	segmentsAtFirst []string // first exposure's time (ClickHouse's argMin picks any of a tie)
}

func know(t *testing.T, conn store.Conn, reference bool) knowledge {
	t.Helper()
	ctx := context.Background()
	k := knowledge{assignments: map[string]assignment{}}
	rows, err := conn.Query(ctx, `
		SELECT flag, uh, first, variant, lo, hi, s.segments
		FROM (
			SELECT flag, uh, minMerge(first_state) AS first, argMinMerge(variant_state) AS variant,
				minMerge(low_state) AS lo, maxMerge(high_state) AS hi, argMinMerge(segments_state) AS id
			FROM assignment_state GROUP BY flag, uh
		) AS a ALL LEFT JOIN (SELECT id, any(segments) AS segments FROM segment_sets GROUP BY id) AS s USING id`)
	require.NoError(t, err)
	for rows.Next() {
		var flag string
		var uh uint64
		var a assignment
		require.NoError(t, rows.Scan(&flag, &uh, &a.first, &a.variant, &a.low, &a.high, &a.segments))
		k.assignments[fmt.Sprint(flag, " ", uh)] = a
	}
	require.NoError(t, rows.Err())
	rows.Close()
	if reference {
		rows, err := conn.Query(ctx, `
			SELECT flag, uh, groupUniqArray(variant), groupUniqArray(segments) FROM (
				SELECT flag, cityHash64(distinct_id) AS uh, ts_ms, variant, segments FROM exposures
			) AS e ALL INNER JOIN (
				SELECT flag, cityHash64(distinct_id) AS uh, min(ts_ms) AS m FROM exposures GROUP BY flag, uh
			) AS f USING flag, uh
			WHERE ts_ms = m GROUP BY flag, uh`)
		require.NoError(t, err)
		for rows.Next() {
			var flag string
			var uh uint64
			var vs, ss []string
			require.NoError(t, rows.Scan(&flag, &uh, &vs, &ss))
			key := fmt.Sprint(flag, " ", uh)
			a := k.assignments[key]
			a.variantsAtFirst, a.segmentsAtFirst = vs, ss
			k.assignments[key] = a
		}
		require.NoError(t, rows.Err())
		rows.Close()
	}
	rows, err = conn.Query(ctx, `SELECT concat(flag, ' ', toString(minMerge(first_state)), ' ', toString(maxMerge(last_state)))
		FROM flag_activity GROUP BY flag ORDER BY flag`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		k.activity = append(k.activity, s)
	}
	require.NoError(t, rows.Err())
	rows.Close()
	rows, err = conn.Query(ctx, `SELECT concat(flag, ' ', toString(d), ' ', v, ' ', toString(count())) FROM (
		SELECT flag, intDiv(min(ts_ms), 86400000) AS d, if(uniqExact(variant) > 1, '$multiple', argMin(variant, ts_ms)) AS v
		FROM exposures GROUP BY flag, distinct_id
	) AS a GROUP BY flag, d, v ORDER BY flag, d, v`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		k.perDay = append(k.perDay, s)
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(uuid) FROM events").Scan(&k.events))
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM exposures").Scan(&k.exposureRow))
	return k
}

func toKafka(recs []synth.Record) []*kgo.Record {
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		out[i] = &kgo.Record{Key: []byte(r.Key), Value: r.Value, Timestamp: r.Time}
	}
	return out
}

// #13's property: with the exposure cache, ingest writes a fraction of the exposure rows
// at 20 flags per event, and what the pipeline knows — the assignment state, the
// segments, each flag's first and last exposure, the users per day of first exposure and
// variant that a flag's page shows — is exactly what writing every exposure
// gives, whatever the delivery: in order, shuffled within a day, replayed, a crash and a
// restart mid-stream, two consumers with a rebalance, and a cache so small it evicts
// all the time.
func TestDenseFlagsCacheChangesNothingDownstream(t *testing.T) {
	recs := denseStream(t)
	t.Logf("%d events", len(recs))
	base := chtest.Base(t)

	rnd := rand.New(rand.NewPCG(3, 4))
	shuffled := append([]synth.Record(nil), recs...)
	jitter := make([]time.Duration, len(shuffled))
	for i := range jitter {
		jitter[i] = time.Duration(rnd.Int64N(int64(24 * time.Hour)))
	}
	idx := make([]int, len(recs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		return recs[idx[a]].Time.Add(jitter[idx[a]]).Before(recs[idx[b]].Time.Add(jitter[idx[b]]))
	})
	for i, j := range idx {
		shuffled[i] = recs[j]
	}
	replayed := append(append([]synth.Record(nil), recs...), recs...)

	deliver := func(t *testing.T, recs []synth.Record, o ingest.Options) store.Conn {
		dsn, conn := chtest.NewDB(t, base)
		kc := brokertest.Cluster(t, 4, broker.EventsTopic)
		cl := brokertest.Client(t, kc, kgo.ProducerLinger(5*time.Millisecond))
		brokertest.Produce(t, cl, broker.EventsTopic, toKafka(recs)...)
		o.Brokers, o.ClickHouseDSN, o.Group, o.BatchSize = kc.Addrs(), dsn, "dense", 3000
		run(t, o)
		return conn
	}

	want := know(t, deliver(t, recs, ingest.Options{ExposureCache: -1}), true)
	require.NotEmpty(t, want.assignments)
	var multiple int
	for _, a := range want.assignments {
		if a.low != a.high {
			multiple++
		}
	}
	require.Positive(t, multiple, "the stream has $multiple users")

	// Equal, but for the one choice ClickHouse makes arbitrarily with or without the
	// cache: which of several exposures at the same first millisecond argMin keeps.
	check := func(t *testing.T, got knowledge) {
		t.Helper()
		require.Equal(t, want.events, got.events)
		require.Equal(t, want.activity, got.activity, "first and last exposure per flag")
		require.Equal(t, want.perDay, got.perDay, "users per day of first exposure and variant")
		require.Equal(t, len(want.assignments), len(got.assignments), "(flag, user) pairs")
		for k, w := range want.assignments {
			g, ok := got.assignments[k]
			require.True(t, ok, "missing %s", k)
			require.Equal(t, w.first, g.first, "%s: first exposure", k)
			require.Equal(t, [2]uint64{w.low, w.high}, [2]uint64{g.low, g.high}, "%s: variants seen", k)
			require.Contains(t, w.variantsAtFirst, g.variant, "%s: variant", k)
			require.Contains(t, w.segmentsAtFirst, g.segments, "%s: segments", k)
		}
	}

	for _, sc := range []struct {
		name string
		recs []synth.Record
		o    ingest.Options
	}{
		{"in order", recs, ingest.Options{}},
		{"shuffled within 24h", shuffled, ingest.Options{}},
		{"replayed twice", replayed, ingest.Options{}},
		{"a tiny cache, evicting all the time", shuffled, ingest.Options{ExposureCache: 50}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			got := know(t, deliver(t, sc.recs, sc.o), false)
			check(t, got)
			if sc.o.ExposureCache == 0 && len(sc.recs) == len(recs) {
				require.Less(t, float64(got.exposureRow), 0.25*float64(want.exposureRow),
					"the cache writes a fraction of the exposure rows (%d of %d)", got.exposureRow, want.exposureRow)
			}
			t.Logf("%d of %d exposure rows", got.exposureRow, want.exposureRow)
		})
	}

	t.Run("a crash mid-stream, then a restart", func(t *testing.T) {
		dsn, conn := chtest.NewDB(t, base)
		kc := brokertest.Cluster(t, 4, broker.EventsTopic)
		cl := brokertest.Client(t, kc, kgo.ProducerLinger(5*time.Millisecond))
		brokertest.Produce(t, cl, broker.EventsTopic, toKafka(shuffled)...)
		// The first process stores three batches, then dies (its store refuses it for
		// good): what it cached of the batches it never stored must not cost the restart
		// a row.
		sink := &dyingSink{w: store.NewWriter(conn), ok: 3}
		err := ingest.Run(context.Background(), ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "dense",
			BatchSize: 3000, Logger: quiet, Sink: sink})
		require.Error(t, err)
		require.Greater(t, sink.n.Load(), sink.ok, "it died mid-stream")
		run(t, ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "dense", BatchSize: 3000})
		check(t, know(t, conn, false))
	})

	t.Run("two consumers with a rebalance", func(t *testing.T) {
		dsn, conn := chtest.NewDB(t, base)
		kc := brokertest.Cluster(t, 4, broker.EventsTopic)
		cl := brokertest.Client(t, kc, kgo.ProducerLinger(5*time.Millisecond))
		o := ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "dense", Logger: quiet,
			BatchSize: 3000, BatchInterval: 50 * time.Millisecond}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		startConsumer := func() {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- ingest.Run(ctx, o) }()
		}
		startConsumer()
		half := len(shuffled) / 2
		brokertest.Produce(t, cl, broker.EventsTopic, toKafka(shuffled[:half])...)
		startConsumer() // partitions move mid-stream
		brokertest.Produce(t, cl, broker.EventsTopic, toKafka(shuffled[half:])...)
		require.Eventually(t, func() bool {
			var n uint64
			_ = conn.QueryRow(ctx, "SELECT uniqExact(uuid) FROM events").Scan(&n)
			return n == want.events
		}, 2*time.Minute, 100*time.Millisecond)
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		check(t, know(t, conn, false))
	})
}

// dyingSink stores ok batches, then fails as no retry can fix.
type dyingSink struct {
	w  *store.Writer
	ok int32
	n  atomic.Int32
}

func (s *dyingSink) WriteBatch(ctx context.Context, b store.RawBatch) (int, int, error) {
	if s.n.Add(1) <= s.ok {
		return s.w.WriteBatch(ctx, b)
	}
	return 0, 0, &store.Exception{Code: 516, Name: "AUTHENTICATION_FAILED", Message: "the process dies here"}
}
