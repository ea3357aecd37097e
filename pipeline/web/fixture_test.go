package web_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/demo"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

// Hostile names: a flag key and segment values that would run script if a page put them
// into HTML unescaped.
const (
	hostileFlag  = `"><img src=x onerror=alert(1)>`
	hostileValue = `<script>alert("seg")</script>`
	hostileQuote = `';alert(2);//&amp;`
)

// fixture is a database with the story's data, written day by day with a real analyzer
// pass at the end of each day, as production would have seen it.
type fixture struct {
	conn     store.Conn
	mons     *config.Monitors
	start    time.Time
	now      time.Time
	last     *analyze.Pass // the latest pass: what `analyzer once` printed
	passes   int
	rollback int64
}

const monitorsYAML = `defaults:
  min_users_per_variant: 100
  min_duration: 24h
core_metrics:
  - {name: pageviews, kind: count, event: $pageview}
flags:
  - key: new-checkout
    control: control
    split: {control: 0.5, test: 0.5}
    segments: [$geoip_country_code, plan]
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase, window: 7d, goal: increase}
      - {name: revenue per user, kind: sum, event: purchase, property: revenue}
  - key: fast-search
    control: control
    segments: [$geoip_country_code]
    metrics:
      - {name: errors per user, kind: count, event: $exception, goal: decrease, guardrail: {max_increase: 0.30}}
    rollback:
      webhook: {url: "%s", secret_env: ROLLBACK_HMAC_SECRET}
  - key: new-onboarding
    control: control
    segments: [$geoip_country_code, plan]
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase, goal: increase}
  - key: srm-banner
    control: control
    split: {control: 0.5, test: 0.5}
  - key: bigger-buttons
    control: control
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase}
  - key: '%s'
    control: control
    segments: [plan]
  - key: declared-never-exposed
    control: control
`

// hostileEvents are exposures of the hostile flag whose plan property is hostile too.
func hostileEvents(t testing.TB, start time.Time) map[int][]event.Event {
	out := map[int][]event.Event{}
	for i := 0; i < 600; i++ {
		day := i % 6
		ts := start.Add(time.Duration(day)*24*time.Hour + time.Duration(9+i%8)*time.Hour)
		variant := []string{"control", "test"}[i%2]
		plan := []string{hostileValue, hostileQuote, "pro"}[i%3]
		msg := fmt.Sprintf(`{"event":"$feature_flag_called","distinct_id":"hostile-%d","timestamp":%q,"properties":{"$feature_flag":%q,"$feature_flag_response":%q,"plan":%q}}`,
			i, ts.Format(time.RFC3339), hostileFlag, variant, plan)
		evs, err := event.Decode([]byte(msg), ts)
		require.NoError(t, err)
		for k := 0; k < 1+i%3; k++ {
			pv := fmt.Sprintf(`{"event":"$pageview","distinct_id":"hostile-%d","timestamp":%q,"properties":{}}`, i, ts.Add(time.Duration(k+1)*time.Minute).Format(time.RFC3339))
			more, err := event.Decode([]byte(pv), ts)
			require.NoError(t, err)
			evs = append(evs, more...)
		}
		out[day] = append(out[day], evs...)
	}
	return out
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newFixture builds the data: 8 days of the story (new-checkout diverges by country,
// fast-search breaks its guardrail and is rolled back, new-onboarding is A/A) plus a clear
// win, an SRM flag, a flag whose exposures stop, and the hostile flag.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, conn := chtest.DB(t)
	ctx := context.Background()
	start := time.Date(2026, 11, 12, 0, 0, 0, 0, time.UTC)
	const days = 8
	var calls atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !rollback.Verify([]byte("fixture-secret"), body, r.Header.Get("X-Flagwatch-Signature")) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		calls.Add(1)
	}))
	t.Cleanup(hook.Close)
	mons, err := config.Parse([]byte(fmt.Sprintf(monitorsYAML, hook.URL, hostileFlag)), "flagwatch.yaml")
	require.NoError(t, err)

	flags := append(demo.Story(),
		synth.Flag{Key: "bigger-buttons", LaunchDay: 1, Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 1.5}}},
		synth.Flag{Key: "srm-banner", LaunchDay: 1, Split: []float64{0.56, 0.44}},
		synth.Flag{Key: "old-banner", LaunchDay: 1, EndDay: 5},
	)
	cfg := synth.Config{Seed: 2026, Users: 20000, Start: start, Days: days, Flags: flags}
	byDay := hostileEvents(t, start)
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		evs, err := event.Decode(r.Value, r.Time)
		if err != nil {
			return err
		}
		d := int(r.Time.Sub(start) / (24 * time.Hour))
		byDay[d] = append(byDay[d], evs...)
		return nil
	}))
	f := &fixture{conn: conn, mons: mons, start: start}
	w := store.NewWriter(conn)
	a := &analyze.Analyzer{Conn: conn, Monitors: mons, Replica: "web-test", Logger: quiet, RecomputeAll: true,
		Lookup: func(k string) (string, bool) {
			if k == "ROLLBACK_HMAC_SECRET" {
				return "fixture-secret", true
			}
			return "", false
		}}
	for d := 0; d < days; d++ {
		evs := byDay[d]
		sort.Slice(evs, func(i, j int) bool { return evs[i].TsMs < evs[j].TsMs })
		for i := 0; i < len(evs); i += 50000 {
			_, _, err := w.Write(ctx, evs[i:min(i+50000, len(evs))])
			require.NoError(t, err)
		}
		// A pass at the end of each day, on what arrived so far.
		at := start.Add(time.Duration(d)*24*time.Hour + 23*time.Hour)
		a.Now = func() time.Time { return at }
		pass, err := a.Run(ctx)
		require.NoError(t, err)
		f.last, f.now = pass, at
		f.passes++
	}
	f.rollback = calls.Load()
	return f
}

// row finds the latest pass's row for a flag, metric, segment and variant.
func (f *fixture) row(flag, metric, prop, value, variant string) *analyze.Row {
	for i, r := range f.last.Rows {
		if r.Flag != flag || r.Metric != metric || r.Variant != variant {
			continue
		}
		switch {
		case prop == "" && r.Segment == nil:
			return &f.last.Rows[i]
		case prop != "" && r.Segment != nil && r.Segment.Property == prop && r.Segment.ValueString() == value:
			return &f.last.Rows[i]
		}
	}
	return nil
}

func (f *fixture) options() web.Options {
	return web.Options{Conn: f.conn, Monitors: f.mons, Now: func() time.Time { return f.now.Add(time.Minute) }, Logger: quiet}
}

func decisionsOf(rows []analyze.Row, flag string) map[string]bool {
	out := map[string]bool{}
	for _, r := range rows {
		if r.Flag == flag {
			out[r.Decision] = true
		}
	}
	return out
}
