package analyze

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// An incremental pass gives exactly the cells of a pass that recomputes every (flag,
// user), every segment included (configured, discovered, and their values' exposure-day
// cohorts): over a stream delivered in shuffled chunks with passes
// in between (so most users are untouched by a given pass), after a pass that applied its
// rows but died before recording its watermark, and after a rebuild of the generation.
func TestIncrementalEqualsRecompute(t *testing.T) {
	base := chtest.Base(t)
	cfg := synth.Config{Seed: 5, Users: 5000, Days: 10, FeatureProps: true,
		Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
		Flags: []synth.Flag{
			{Key: "checkout", LaunchDay: 2, ReassignFrac: 0.05, Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 1.3}}},
			{Key: "search", LaunchDay: 3, ExposedFrac: 0.6, Variants: []string{"a", "b", "c"}},
		}}
	var recs []synth.Record
	require.NoError(t, cfg.Each(func(r synth.Record) error { recs = append(recs, r); return nil }))
	rnd := rand.New(rand.NewPCG(3, 4))
	rnd.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })

	mons, err := config.Parse([]byte(`defaults: {segments: [$geoip_country_code, plan]}
core_metrics:
  - {name: purchase conversion, kind: conversion, event: purchase, window: 3d}
  - {name: pageviews, kind: count, event: $pageview}
  - {name: revenue, kind: sum, event: purchase, property: revenue}
  - {name: revenue per order, kind: ratio, numerator: {event: purchase, property: revenue}, denominator: {event: purchase}}
`), "incremental.yaml")
	require.NoError(t, err)
	dsn, conn := chtest.NewDB(t, base)
	a := &Analyzer{Conn: conn, Monitors: mons, Replica: "t", Logger: quietLogger()}
	ctx := context.Background()
	touchMargin = 0 // the chunks below are a second apart, not minutes
	t.Cleanup(func() { touchMargin = 5 * time.Minute })

	check := func(what string) {
		t.Helper()
		p, _, ratioPairs := a.plan([]string{"checkout", "search"})
		got, err := a.chStore().cells(ctx, p, ratioPairs, what)
		require.NoError(t, err, what)
		want, err := p.run(ctx, conn, ratioPairs)
		require.NoError(t, err, what)
		requireSameCells(t, what, want, got)
		require.True(t, slices.ContainsFunc(p.discovered, func(d discoveredProp) bool { return d.Name == "$browser" }),
			"%s: $browser is discovered: %+v", what, p.discovered)
		require.NotNil(t, got[crossKey("checkout", "control", "$browser", "Chrome", "2026-10-04")], "%s: a discovered value's exposure-day cohort", what)
	}
	// Chunk 0 is 60% of the stream; the rest goes in three chunks by user, so each later
	// pass updates a third of the users and leaves the others' rows alone.
	// The last 5% arrive after a replay, below.
	late := recs[len(recs)*95/100:]
	chunks := make([][]synth.Record, 4)
	head := len(recs) * 6 / 10
	chunks[0] = recs[:head]
	for _, r := range recs[head : len(recs)*95/100] {
		k := 1 + int(fnvHash(r.Key)%3)
		chunks[k] = append(chunks[k], r)
	}
	for i, c := range chunks {
		ingestInto(t, dsn, c, fmt.Sprintf("chunk-%d", i))
		// touched_users has second resolution: a pass in the second of an insert looks
		// at that second again next time.
		time.Sleep(1100 * time.Millisecond)
		check(fmt.Sprintf("after chunk %d", i))
		if i == 1 {
			var negated, added uint64
			require.NoError(t, conn.QueryRow(ctx, "SELECT countIf(sign < 0), countIf(sign > 0) FROM contributions").Scan(&negated, &added))
			require.Positive(t, negated, "the pass updated users")
			require.Less(t, 2*negated, added-negated, "the pass left most users alone")
		}
		time.Sleep(1100 * time.Millisecond)
	}

	// A pass that inserted its rows but died before recording the watermark: the next
	// one recomputes the same users from what was inserted. It sees a replay of a tenth
	// of the stream and the late 5%.
	ingestInto(t, dsn, append(slices.Clone(recs[:len(recs)/10]), late...), "replay")
	p, _, ratioPairs := a.plan([]string{"checkout", "search"})
	g, err := currentGeneration(ctx, conn, p.id(ratioPairs))
	require.NoError(t, err)
	p.discovered = g.discovered // as a pass between rebuilds does (chStore.cells)
	touched := fmt.Sprintf("touched_users WHERE at >= toDateTime(%d)", g.watermark.Unix())
	rowCount := func() uint64 {
		t.Helper()
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM contributions").Scan(&n))
		return n
	}
	before := rowCount()
	require.NoError(t, conn.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, touched)))
	require.Greater(t, rowCount(), before, "the late events changed rows")
	check("after a pass that died before its watermark")

	// A pass inserts rows for what changed, not for every row of the users it
	// recomputes: run again over the same users, it finds (almost) nothing to change — a
	// float sum added up in another order may differ in its last bits. (So may a user's
	// property set while the assignment state is unmerged, when the user's first two
	// exposures share a millisecond and differ in properties: argMin keeps whichever part
	// it reads first. The stream here has such users; merged, they are stable.)
	require.NoError(t, conn.Exec(ctx, "OPTIMIZE TABLE assignment_state FINAL"))
	require.NoError(t, conn.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, touched)))
	var recomputed uint64
	require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf(`SELECT count() FROM (SELECT sum(sign) AS live FROM contributions
		WHERE gen = %d AND uh IN (SELECT uh FROM %s) GROUP BY uh, flag, variant, set_id, day, s HAVING live > 0)`, g.gen, touched)).Scan(&recomputed))
	before = rowCount()
	require.NoError(t, conn.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, touched)))
	again := rowCount() - before
	t.Logf("the same users again: %d live rows recomputed, %d inserted", recomputed, again)
	require.Greater(t, recomputed, uint64(1000), "the pass recomputed many users")
	require.Less(t, 20*again, recomputed, "unchanged rows are not inserted again")
	check("after passes over the same users")

	// Two passes at once (say `analyzer once` beside the schedule): one updates, the
	// other recomputes; both see the right cells, and so does the next.
	ingestInto(t, dsn, recs[len(recs)/2:len(recs)/2+len(recs)/20], "overlap")
	time.Sleep(1100 * time.Millisecond)
	p, _, ratioPairs = a.plan([]string{"checkout", "search"})
	g, err = currentGeneration(ctx, conn, p.id(ratioPairs))
	require.NoError(t, err)
	require.NotEmpty(t, g.discovered, "the generation extracts discovered properties")
	p.discovered = g.discovered // what both passes below read: the generation is not due for a rebuild
	want, err := p.run(ctx, conn, ratioPairs)
	require.NoError(t, err)
	var gensBefore uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM analysis_generations").Scan(&gensBefore))
	var wg sync.WaitGroup
	outs := make([]map[cellKey]*cell, 2)
	errs := make([]error, 2)
	for i := range outs {
		wg.Add(1)
		r := *a // another process: `analyzer once` beside the service
		r.Replica = fmt.Sprintf("overlap-%d", i)
		q := *p
		go func() { defer wg.Done(); outs[i], errs[i] = r.chStore().cells(ctx, &q, ratioPairs, r.Replica) }()
	}
	wg.Wait()
	for i := range outs {
		require.NoError(t, errs[i])
		requireSameCells(t, fmt.Sprintf("overlapping pass %d", i), want, outs[i])
	}
	var after uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM analysis_generations").Scan(&after))
	require.Equal(t, gensBefore+1, after, "one of the two passes updated (and recorded a watermark); the other recomputed")
	check("after two overlapping passes")

	// touched_users keeps only the days passes still read.
	require.NoError(t, conn.Exec(ctx, "INSERT INTO touched_users SELECT now() - 5 * 86400, 1, 'old'"))
	check("with an old day of touched users")
	var stale uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM touched_users WHERE at < now() - 3 * 86400").Scan(&stale))
	require.Zero(t, stale, "days before yesterday are dropped")

	a.RebuildEvery = time.Nanosecond
	check("after a rebuild")
	var gens uint64
	require.NoError(t, conn.QueryRow(ctx, `SELECT uniqExact(partition) FROM system.parts
		WHERE database = currentDatabase() AND table = 'contributions' AND active`).Scan(&gens))
	require.Equal(t, uint64(1), gens, "the rebuild dropped the older generation")
}

func fnvHash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func requireSameCells(t *testing.T, what string, want, got map[cellKey]*cell) {
	t.Helper()
	require.Greater(t, len(want), 20, "%s: the plan has segments and metrics", what)
	require.NoError(t, sameCells(want, got), what)
}

// sameCells reports the first difference between two passes' cells (sums within 1e-9,
// relative: the incremental sums add and subtract).
func sameCells(want, got map[cellKey]*cell) error {
	var keys []cellKey
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	if len(want) != len(got) {
		return fmt.Errorf("%d cells, want %d", len(got), len(want))
	}
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(x)) }
	for _, k := range keys {
		w, g := want[k], got[k]
		if g == nil {
			return fmt.Errorf("missing %v", k)
		}
		if w.n != g.n {
			return fmt.Errorf("%v: %d users, want %d", k, g.n, w.n)
		}
		for i := range w.m {
			wm, gm := w.m[i], g.m[i]
			if !(near(wm.sum, gm.sum) && near(wm.sumSq, gm.sumSq) && near(wm.pre, gm.pre) && near(wm.preSq, gm.preSq) && near(wm.cross, gm.cross)) {
				return fmt.Errorf("%v measure %d: %+v, want %+v", k, i, gm, wm)
			}
		}
		for i := range w.ratios {
			if !near(w.ratios[i], g.ratios[i]) {
				return fmt.Errorf("%v ratio %d: %g, want %g", k, i, g.ratios[i], w.ratios[i])
			}
		}
	}
	return nil
}

// ingestInto sends recs through a fresh kfake cluster and ingest into the database at dsn.
func ingestInto(t *testing.T, dsn string, recs []synth.Record, group string) {
	t.Helper()
	kc := brokertest.Cluster(t, 4, broker.EventsTopic)
	cl := brokertest.Client(t, kc, kgo.ProducerLinger(5*time.Millisecond))
	krecs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		krecs[i] = &kgo.Record{Key: []byte(r.Key), Value: r.Value, Timestamp: r.Time}
	}
	brokertest.Produce(t, cl, broker.EventsTopic, krecs...)
	require.NoError(t, ingest.Run(context.Background(), ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: group,
		Logger: quietLogger(), BatchSize: 20000, BatchInterval: 100 * time.Millisecond, ExitWhenCaughtUp: true}))
}
