package users_test

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/demo"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
	"github.com/flagwatch/flagwatch/pipeline/users"
)

const recordings = "https://us.posthog.com/project/1/replay/{session_id}"

const monitorsYAML = `defaults:
  min_users_per_variant: 100
  min_duration: 24h
  expose_users: true
  recordings_url: "` + recordings + `"
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
      - {name: revenue per order, kind: ratio, numerator: {event: purchase, property: revenue}, denominator: {event: purchase}}
  - key: fast-search
    control: control
    segments: [$geoip_country_code]
    metrics:
      - {name: errors per user, kind: count, event: $exception, goal: decrease, guardrail: {max_increase: 0.30}}
  - key: new-onboarding
    control: control
    expose_users: false
    segments: [$geoip_country_code, plan]
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase, goal: increase}
`

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture is a database with the story's data (new-checkout loses GB purchases and wins
// in the US and India, fast-search breaks its errors guardrail, new-onboarding is A/A),
// new-checkout with a flag-evaluation bug that makes some users $multiple, one analyzer
// pass over it with the sessions-to-watch hook, and the raw records for recomputing
// everything in Go.
type fixture struct {
	dsn   string
	conn  store.Conn
	mons  *config.Monitors
	start time.Time
	now   time.Time
	pass  *analyze.Pass
	raw   []rawEvent
	// analyzer ran the pass (its Now reads f.now).
	analyzer *analyze.Analyzer
}

// rawEvent is a synthetic record as the brute force reads it: straight from its JSON.
type rawEvent struct {
	UUID       string   `json:"uuid"`
	Event      string   `json:"event"`
	DistinctID string   `json:"distinct_id"`
	Timestamp  string   `json:"timestamp"`
	Properties rawProps `json:"properties"`
	ts         int64
}

// rawProps are the properties the recomputations need.
type rawProps struct {
	Flag    string  `json:"$feature_flag"`
	Variant string  `json:"$feature_flag_response"`
	Session string  `json:"$session_id"`
	Country string  `json:"$geoip_country_code"`
	Plan    string  `json:"plan"`
	Revenue float64 `json:"revenue"`
}

// days of data; the pass runs at the end of the last one.
const days = 8

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dsn, conn := chtest.DB(t)
	ctx := context.Background()
	mons, err := config.Parse([]byte(monitorsYAML), "flagwatch.yaml")
	require.NoError(t, err)
	start := time.Date(2026, 11, 12, 0, 0, 0, 0, time.UTC)
	flags := demo.Story()
	flags[0].ReassignFrac = 0.05 // some new-checkout users see both variants
	cfg := synth.Config{Seed: 19, Users: 12000, Start: start, Days: days, Flags: flags}
	f := &fixture{dsn: dsn, conn: conn, mons: mons, start: start, now: start.Add(days*24*time.Hour - time.Hour)}
	t0 := time.Now()
	var evs []event.Event
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		var e rawEvent
		if err := json.Unmarshal(r.Value, &e); err != nil {
			return err
		}
		ts, err := time.Parse(time.RFC3339Nano, e.Timestamp)
		if err != nil {
			return err
		}
		e.ts = ts.UnixMilli()
		f.raw = append(f.raw, e)
		decoded, err := event.Decode(r.Value, r.Time)
		evs = append(evs, decoded...)
		return err
	}))
	sort.Slice(evs, func(i, j int) bool { return evs[i].TsMs < evs[j].TsMs })
	w := store.NewWriter(conn)
	for i := 0; i < len(evs); i += 50000 {
		_, _, err := w.Write(ctx, evs[i:min(i+50000, len(evs))])
		require.NoError(t, err)
	}
	f.analyzer = &analyze.Analyzer{Conn: conn, Monitors: mons, Replica: "users-test", Logger: quiet, RecomputeAll: true,
		Now: func() time.Time { return f.now }, Sessions: users.Watcher(conn, mons, quiet)}
	a := f.analyzer
	f.pass, err = a.Run(ctx)
	require.NoError(t, err)
	t.Logf("%d events generated, written and analyzed in %s", len(evs), time.Since(t0))
	return f
}

// truth is one user of a flag as the brute force sees them.
type truth struct {
	id       string
	first    int64
	variant  string // of the first exposure
	variants map[string]bool
	props    rawProps // of the first exposure
}

func (u truth) multiple() bool { return len(u.variants) > 1 }

// users recomputes a flag's users from the raw records: first exposure, its variant and
// properties, and every variant seen.
func (f *fixture) users(flag string) map[string]*truth {
	out := map[string]*truth{}
	for _, e := range f.raw {
		if e.Event != "$feature_flag_called" || e.Properties.Flag != flag {
			continue
		}
		u := out[e.DistinctID]
		if u == nil {
			u = &truth{id: e.DistinctID, first: e.ts, variants: map[string]bool{}}
			out[e.DistinctID] = u
		}
		v := e.Properties.Variant
		u.variants[v] = true
		if e.ts < u.first || u.variant == "" {
			u.first, u.variant, u.props = e.ts, v, e.Properties
		}
	}
	return out
}

// byUser indexes the raw records by user, for recomputations over many users.
func (f *fixture) byUser() map[string][]rawEvent {
	out := map[string][]rawEvent{}
	for _, e := range f.raw {
		out[e.DistinctID] = append(out[e.DistinctID], e)
	}
	return out
}

// window are the events with first exposure ≤ time < first exposure + w.
func window(evs []rawEvent, u *truth, w time.Duration) []rawEvent {
	var out []rawEvent
	for _, e := range evs {
		if e.ts >= u.first && e.ts < u.first+w.Milliseconds() {
			out = append(out, e)
		}
	}
	return out
}

func did(evs []rawEvent, name string) int {
	n := 0
	for _, e := range evs {
		if e.Event == name {
			n++
		}
	}
	return n
}

// row finds the pass's row for a flag, metric, segment value and variant.
func (f *fixture) row(flag, metric, prop, value, variant string) *analyze.Row {
	for i, r := range f.pass.Rows {
		if r.Flag != flag || r.Metric != metric || r.Variant != variant {
			continue
		}
		if (prop == "" && r.Segment == nil) || (prop != "" && r.Segment != nil && r.Segment.Property == prop && r.Segment.ValueString() == value) {
			return &f.pass.Rows[i]
		}
	}
	return nil
}
