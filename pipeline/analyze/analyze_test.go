package analyze_test

import (
	"context"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/demo"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

const extraMonitors = `  - key: bigger-buttons
    control: control
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase}
  - key: srm-banner
    control: control
    split: {control: 0.5, test: 0.5}
`

type captured struct {
	mu     sync.Mutex
	alerts []alert.Alert
}

func (c *captured) Emit(_ context.Context, as []alert.Alert) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alerts = append(c.alerts, as...)
	return nil
}

func find(rows []analyze.Row, flag, metric, decision string, seg func(*analyze.Segment) bool) *analyze.Row {
	for i, r := range rows {
		if r.Flag == flag && r.Metric == metric && r.Decision == decision && seg(r.Segment) {
			return &rows[i]
		}
	}
	return nil
}

func total(s *analyze.Segment) bool { return s == nil }

// End to end on kfake + real ClickHouse with planted effects: the story's three flags
// plus a clear win, an SRM flag and a flag whose exposures stopped. Then the analyzer
// keeps looking every 15 minutes: nothing is re-alerted, the A/A flag stays quiet, and
// the rollback webhook was called exactly once.
func TestAnalyzerEndToEndPlantedEffects(t *testing.T) {
	base := chtest.Base(t)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	res, err := demo.Run(ctx, demo.Options{ClickHouseDSN: base, DataDir: filepath.Join(t.TempDir(), "demo"),
		Users: 20000, Days: 8, Now: now, Out: io.Discard, SlackOut: io.Discard,
		ExtraFlags: []synth.Flag{
			{Key: "bigger-buttons", LaunchDay: 1, Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 1.5}}},
			{Key: "srm-banner", LaunchDay: 1, Split: []float64{0.56, 0.44}},
			{Key: "old-banner", LaunchDay: 1, EndDay: 5},
		},
		ExtraMonitors: extraMonitors})
	require.NoError(t, err)
	rows := res.Rows

	require.NotNil(t, find(rows, "fast-search", "errors per user", alert.GuardrailBreach, total), "planted +60% errors")
	require.Equal(t, 1, res.RollbackCalls, "the rollback webhook is called once, signed")
	require.NotNil(t, find(rows, "new-checkout", "purchase conversion", alert.SegmentDivergence,
		func(s *analyze.Segment) bool {
			return s != nil && s.Property == "$geoip_country_code" && s.Value == nil
		}))
	require.NotNil(t, find(rows, "new-checkout", "purchase conversion", alert.Loss,
		func(s *analyze.Segment) bool { return s != nil && s.ValueString() == "GB" }), "UK purchases fall")
	tot := find(rows, "new-checkout", "purchase conversion", alert.Inconclusive, total)
	require.NotNil(t, tot, "the total stays flat")
	require.NotNil(t, find(rows, "bigger-buttons", "purchase conversion", alert.Win, total))
	require.NotNil(t, find(rows, "srm-banner", "", alert.SRM, total))
	require.NotNil(t, find(rows, "old-banner", "", alert.Stale, total))
	for _, r := range rows {
		if r.Flag == "new-onboarding" {
			require.Contains(t, []string{alert.Inconclusive, alert.InsufficientData}, r.Decision, "A/A flag: %+v", r)
		}
	}
	require.Positive(t, res.Alerts)

	// Keep looking, every 30 minutes for 3.5 hours: no repeats, no false alarm on A/A.
	conn, err := store.Open(ctx, res.DSN)
	require.NoError(t, err)
	defer conn.Close()
	mons, err := config.Load(res.ConfigPath)
	require.NoError(t, err)
	em := &captured{}
	a := &analyze.Analyzer{Conn: conn, Monitors: mons, Emitter: em, Replica: "t",
		Lookup: func(string) (string, bool) { return "x", true }}
	for i := 1; i <= 7; i++ { // 3.5 h, inside the 4 h repeat interval
		at := now.Add(time.Duration(i) * 30 * time.Minute)
		a.Now = func() time.Time { return at }
		pass, err := a.Run(ctx)
		require.NoError(t, err)
		for _, r := range pass.Rows {
			if r.Flag == "new-onboarding" {
				require.Contains(t, []string{alert.Inconclusive, alert.InsufficientData}, r.Decision)
			}
		}
	}
	require.Empty(t, em.alerts, "unchanged findings are not re-emitted within the repeat interval")

	// Past the repeat interval an unresolved critical finding is sent again, without a
	// second rollback.
	at := now.Add(5 * time.Hour)
	a.Now = func() time.Time { return at }
	_, err = a.Run(ctx)
	require.NoError(t, err)
	require.Len(t, em.alerts, 1)
	require.Equal(t, alert.GuardrailBreach, em.alerts[0].Decision)
	require.Nil(t, em.alerts[0].Rollback)

	var history uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(pass_id) FROM analysis_results").Scan(&history))
	require.Equal(t, uint64(9), history, "every pass is in the results history")
}

// Two replicas racing for the same scheduled pass: exactly one gets the lease.
func TestLeaseOneReplicaPerSlot(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	for slot := 0; slot < 5; slot++ {
		var wg sync.WaitGroup
		wins := make([]bool, 4)
		errs := make([]error, 4)
		for i := range wins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wins[i], errs[i] = analyze.Lease(ctx, claim.Table{Conn: conn}, "slot-"+string(rune('a'+slot)), "replica-"+string(rune('0'+i)))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		n := 0
		for _, w := range wins {
			if w {
				n++
			}
		}
		require.Equal(t, 1, n, "slot %d", slot)
	}
}
