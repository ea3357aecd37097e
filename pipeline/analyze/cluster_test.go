package analyze

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

type emitted struct {
	mu     sync.Mutex
	alerts []alert.Alert
}

func (e *emitted) Emit(_ context.Context, as []alert.Alert) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.alerts = append(e.alerts, as...)
	return nil
}

// On a 2 × 2 cluster the analyzer gives the cells and the rows of a single node over the
// same data — recomputed and incremental — and two analyzers on different nodes run
// each pass slot once and emit each finding once.
func TestClusterEqualsSingleNode(t *testing.T) {
	cl := chtest.SharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := synth.Config{Seed: 21, Users: 4000, Days: 6, FeatureProps: true,
		Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
		Flags: []synth.Flag{
			{Key: "checkout", LaunchDay: 1, ReassignFrac: 0.05, Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 1.5}}},
			{Key: "search", LaunchDay: 2, Variants: []string{"a", "b", "c"}},
		}}
	var evs []event.Event
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		var err error
		evs, err = event.AppendDecode(evs, r.Value, r.Time)
		return err
	}))
	mons, err := config.Parse([]byte(`defaults: {segments: [$geoip_country_code, plan], min_duration: 1h}
core_metrics:
  - {name: purchase conversion, kind: conversion, event: purchase, window: 3d}
  - {name: revenue, kind: sum, event: purchase, property: revenue}
  - {name: revenue per order, kind: ratio, numerator: {event: purchase, property: revenue}, denominator: {event: purchase}}
`), "cluster.yaml")
	require.NoError(t, err)

	_, single := chtest.DB(t)
	dsns := cl.Database(t)
	var nodes []store.Conn
	for _, dsn := range []string{dsns[0], dsns[len(dsns)-1]} { // shard 1 replica 1, shard 2 replica 2
		c, err := store.Open(ctx, dsn, store.WithCluster(cl.Name))
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, store.Migrate(ctx, c))
		nodes = append(nodes, c)
	}
	zk, err := claim.DialZooKeeper([]string{cl.ZooKeeper}, nodes[0].Server().Database, quietLogger())
	require.NoError(t, err)
	defer zk.Close()
	for _, c := range []store.Conn{single, nodes[0]} {
		w := store.NewWriter(c)
		for i := 0; i < len(evs); i += 5000 {
			_, _, err := w.Write(ctx, evs[i:min(i+5000, len(evs))])
			require.NoError(t, err)
		}
	}

	now := cfg.Start.AddDate(0, 0, cfg.Days)
	newAnalyzer := func(c store.Conn, replica string, cs claim.Store, em Emitter) *Analyzer {
		return &Analyzer{Conn: c, Monitors: mons, Replica: replica, Logger: quietLogger(), Claims: cs, Emitter: em,
			Now: func() time.Time { return now }}
	}
	one := newAnalyzer(single, "single", nil, nil)
	p, _, ratioPairs := one.plan([]string{"checkout", "search"})
	want, err := one.chStore().cells(ctx, p, ratioPairs, "single")
	require.NoError(t, err)
	recomputed, err := one.chStore().recompute(ctx, p, ratioPairs)
	require.NoError(t, err)
	requireSameCells(t, "single node: incremental = recomputed", recomputed, want)

	onCluster := newAnalyzer(nodes[1], "cluster", zk, nil)
	got, err := onCluster.chStore().recompute(ctx, p, ratioPairs)
	require.NoError(t, err)
	requireSameCells(t, "cluster, recomputed per shard", want, got)
	got, err = onCluster.chStore().cells(ctx, p, ratioPairs, "cluster")
	require.NoError(t, err)
	requireSameCells(t, "cluster, incremental per shard", want, got)

	// Two analyzers on two nodes race for each of three pass slots: one pass per slot,
	// and a finding is emitted once.
	em := &emitted{}
	analyzers := []*Analyzer{newAnalyzer(nodes[0], "node-a", zk, em), newAnalyzer(nodes[1], "node-b", zk, em)}
	var rows []Row
	for slot := 0; slot < 3; slot++ {
		key := "2026-10-07T00:0" + string(rune('0'+slot)) + ":00Z"
		var wg sync.WaitGroup
		ran := make([]*Pass, 2)
		errs := make([]error, 2)
		for i, a := range analyzers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := Lease(ctx, zk, key, a.Replica)
				if err != nil || !ok {
					errs[i] = err
					return
				}
				ran[i], errs[i] = a.Run(ctx)
			}()
		}
		wg.Wait()
		passes := 0
		for i := range ran {
			require.NoError(t, errs[i])
			if ran[i] != nil {
				passes++
				rows = ran[i].Rows
			}
		}
		require.Equal(t, 1, passes, "slot %d", slot)
	}
	require.NotEmpty(t, em.alerts, "the planted effect is found")
	seen := map[string]int{}
	for _, al := range em.alerts {
		for _, f := range al.Findings {
			if f.New {
				seen[f.DedupKey]++
			}
		}
	}
	for k, n := range seen {
		require.Equal(t, 1, n, "finding %s emitted once across both analyzers and three slots", k)
	}

	// The single node's pass gives the same rows.
	pass, err := one.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, len(pass.Rows), len(rows))
	key := func(r Row) string { return subject(r.Flag, r.Metric, r.Segment, r.Variant) + "|" + r.Decision }
	byKey := map[string]Row{}
	for _, r := range pass.Rows {
		byKey[key(r)] = r
	}
	for _, r := range rows {
		w, ok := byKey[key(r)]
		require.True(t, ok, "row %s", key(r))
		require.Equal(t, w.N, r.N, key(r))
		require.InDelta(t, w.Lift, r.Lift, 1e-9, key(r))
	}
}
