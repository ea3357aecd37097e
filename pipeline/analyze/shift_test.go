package analyze_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// A flag whose effect appears only for users first exposed from day 6 on (later cohorts
// behave differently) raises behaviour_shift naming when it started; an A/A flag in the
// same data does not.
func TestBehaviourShiftAcrossExposureCohorts(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	cfg := synth.Config{Seed: 5, Users: 30000, Start: start, Days: 16, Flags: []synth.Flag{
		{Key: "promo", LaunchDay: 1, Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 2.5, FromDay: 6}}},
		{Key: "quiet", LaunchDay: 1},
	}}
	w := store.NewWriter(conn)
	var batch []event.Event
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		evs, err := event.Decode(r.Value, r.Time)
		if err != nil {
			return err
		}
		batch = append(batch, evs...)
		if len(batch) >= 50000 {
			_, _, err = w.Write(ctx, batch)
			batch = batch[:0]
		}
		return err
	}))
	_, _, err := w.Write(ctx, batch)
	require.NoError(t, err)

	mons, err := config.Parse([]byte(`
flags:
  - key: promo
    control: control
    metrics: [{name: purchase conversion, kind: conversion, event: purchase}]
  - key: quiet
    control: control
    metrics: [{name: purchase conversion, kind: conversion, event: purchase}]
`), "shift.yaml")
	require.NoError(t, err)
	a := &analyze.Analyzer{Conn: conn, Monitors: mons, Replica: "t", Now: func() time.Time { return start.AddDate(0, 0, 16) }}
	pass, err := a.Run(ctx)
	require.NoError(t, err)
	var found *analyze.Row
	for i, r := range pass.Rows {
		if r.Decision == alert.BehaviourShift {
			require.Equal(t, "promo", r.Flag, "A/A flag must not shift: %+v", r)
			found = &pass.Rows[i]
		}
	}
	for _, r := range pass.Rows {
		if r.Decision == alert.BehaviourShift {
			t.Log(r.Segment, r.Reason)
		}
	}
	require.NotNil(t, found, "planted shift from day 6 detected")
	require.Equal(t, analyze.ExposureDay, found.Segment.Property)
	require.Contains(t, found.Reason, "rose")
	t.Log(found.Reason)
}
