package analyze_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// The story on real ClickHouse, with no segment configured anywhere: new-checkout lifts
// purchases in the US and India and cuts them in the UK (the total flat), pricing-page
// lifts them for pro users and cuts them for free ones. Property discovery finds both,
// names the property, alerts once, and writes its rows — discovered segment values,
// heterogeneity and correlation rows — to the results history.
func TestDiscoveryEndToEnd(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	cfg := synth.Config{Seed: 16, Users: 24000, Start: start, Days: 10, Flags: []synth.Flag{
		{Key: "new-checkout", LaunchDay: 1, Effects: []synth.Effect{
			// Synth's countries are 40% US, 20% IN, 20% GB: +30%, +30% and −80% leave the
			// total at +2%.
			{Event: "purchase", Variant: "test", Property: "$geoip_country_code", Value: "US", Multiplier: 1.3},
			{Event: "purchase", Variant: "test", Property: "$geoip_country_code", Value: "IN", Multiplier: 1.3},
			{Event: "purchase", Variant: "test", Property: "$geoip_country_code", Value: "GB", Multiplier: 0.2},
		}},
		{Key: "pricing-page", LaunchDay: 1, Effects: []synth.Effect{ // 30% pro, 70% free: total +3%
			{Event: "purchase", Variant: "test", Property: "plan", Value: "pro", Multiplier: 1.8},
			{Event: "purchase", Variant: "test", Property: "plan", Value: "free", Multiplier: 0.7},
		}},
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
defaults: {pre_period: 0s}
core_metrics:
  - {name: purchase conversion, kind: conversion, event: purchase}
`), "discovery.yaml")
	require.NoError(t, err)
	a := &analyze.Analyzer{Conn: conn, Monitors: mons, Replica: "t", Now: func() time.Time { return start.AddDate(0, 0, 10) }}
	pass, err := a.Run(ctx)
	require.NoError(t, err)

	want := map[string]string{"new-checkout": "$geoip_country_code", "pricing-page": "plan"}
	var divs []analyze.Row
	for _, r := range pass.Rows {
		if r.Decision == alert.SegmentDivergence {
			divs = append(divs, r)
		}
	}
	require.Len(t, divs, 2, "%+v", divs)
	for _, d := range divs {
		require.Equal(t, want[d.Flag], d.Segment.Property, "%+v", d)
		require.True(t, d.Discovered)
		// country, plan, browser and OS: the synthetic events' other string properties
		// have one value ($lib, $device_type) or are per event ($current_url).
		require.Equal(t, 4, d.PropertiesTried, d.Reason)
		line, err := json.Marshal(d)
		require.NoError(t, err)
		require.Contains(t, string(line), `"discovered":true`, "analyzer once prints it")
	}
	require.NotNil(t, find(pass.Rows, "new-checkout", "purchase conversion", alert.Loss,
		func(s *analyze.Segment) bool { return s != nil && s.ValueString() == "GB" }), "UK purchases fall")
	require.Len(t, pass.Alerts, 2)
	for _, al := range pass.Alerts {
		require.Equal(t, alert.SegmentDivergence, al.Decision)
		require.True(t, al.Findings[0].Discovered)
		require.Contains(t, al.Summary, "differs by "+analyze.PropertyName(want[al.Flag]))
	}

	// The history has the discovered rows, marked, and the property analysis.
	var discovered, het, corr uint64
	require.NoError(t, conn.QueryRow(ctx, `SELECT countIf(discovered = 1 AND segment_value != ''), countIf(decision = 'heterogeneity'),
		countIf(decision = 'correlation') FROM analysis_results`).Scan(&discovered, &het, &corr))
	require.Positive(t, discovered)
	require.Equal(t, uint64(2*4), het, "one per flag × property (one metric, one test variant)")
	require.Positive(t, corr)
	var reason string
	require.NoError(t, conn.QueryRow(ctx, `SELECT reason FROM analysis_results WHERE decision = 'correlation'
		AND flag = 'new-checkout' AND segment_property = 'plan' AND variant = 'control' LIMIT 1`).Scan(&reason))
	require.True(t, strings.Contains(reason, "correlated: plan = "), reason)
	// The latest results (what the pages read) keep every row of the pass: a value's
	// result and its correlation, a property's divergence and its heterogeneity test
	// share (flag, metric, segment, variant) and differ by decision only.
	var latest, latestDiscovered, inPass uint64
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(), countIf(discovered = 1) FROM analysis_latest FINAL
		WHERE segment_property != '$exposure_day'`).Scan(&latest, &latestDiscovered))
	require.NoError(t, conn.QueryRow(ctx, `SELECT count() FROM analysis_results WHERE segment_property != '$exposure_day'`).Scan(&inPass))
	require.Equal(t, inPass, latest, "one pass so far: every row of it is latest")
	require.Positive(t, latestDiscovered)
	var both uint64
	require.NoError(t, conn.QueryRow(ctx, `SELECT uniqExact(decision) FROM analysis_latest FINAL WHERE flag = 'new-checkout'
		AND segment_property = '$geoip_country_code' AND segment_value = '' AND decision IN ('segment_divergence', 'heterogeneity')`).Scan(&both))
	require.Equal(t, uint64(2), both, "the divergence and the heterogeneity row")

	// Fifteen minutes later, the incremental pass keeps the generation's properties and
	// finds the same; nothing is sent again.
	a.Now = func() time.Time { return start.AddDate(0, 0, 10).Add(15 * time.Minute) }
	pass, err = a.Run(ctx)
	require.NoError(t, err)
	n := 0
	for _, r := range pass.Rows {
		if r.Decision == alert.SegmentDivergence {
			n++
		}
	}
	require.Equal(t, 2, n)
	require.Empty(t, pass.Alerts, "alerted once")
}
