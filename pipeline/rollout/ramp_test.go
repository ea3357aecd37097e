package rollout_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/rollback/posthogtest"
	"github.com/flagwatch/flagwatch/pipeline/rollout"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// The simulated ramp runs the real pipeline — PostHog-shaped events through kfake,
// ingest, ClickHouse and analyzer passes — on a simulated clock, with a traffic source
// that obeys the flags as the PostHog stand-in holds them: a user the rollout includes
// (a hash of flag and user below the "everyone" percentage) gets control or test, every
// other user answers false, as posthog-js reports them. pipeline/synth plans a whole week
// up front; a ramp needs traffic that follows the percentages the controller sets,
// window by window, so the source is here.

const (
	window        = 12 * time.Hour
	windows       = 14
	usersInWindow = 1200
)

// simFlag is a flag of the simulation.
type simFlag struct {
	key string
	id  int64
	// testShare is the true share of test among the users the rollout includes (0.5
	// unless the flag has a sample ratio mismatch).
	testShare float64
	// errorsFrom, when > 0, multiplies test users' errors by errorsBy once the flag's
	// rollout has reached errorsFrom percent.
	errorsFrom, errorsBy float64
}

var simFlags = []simFlag{
	{key: "new-checkout", id: 1, testShare: 0.5},
	{key: "fast-search", id: 2, testShare: 0.5, errorsFrom: 10, errorsBy: 1.4},
	{key: "srm-banner", id: 3, testShare: 0.7},
	{key: "dark-mode", id: 4, testShare: 0.5},
}

const rampMonitors = `
defaults:
  min_duration: 0s         # the plans' stages have their own minimums
  alpha: 0.01
  sequential_tuning: 600
core_metrics: []
templates:
  autorollout-safe:
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase, guardrail: {max_decrease: 0.20}}
      - {name: errors per user, kind: count, event: $exception, guardrail: {max_increase: 0.30}}
    rollout:
      min_duration: 12h
      min_users_per_variant: 5
      posthog: {host: %[1]q, project_id: 1, api_key_env: POSTHOG_API_KEY}
flags:
  - key: new-checkout
    template: autorollout-safe
    split: {control: 0.5, test: 0.5}
    rollout: {posthog: {flag_id: 1}}
  - key: fast-search
    template: autorollout-safe
    split: {control: 0.5, test: 0.5}
    metrics:      # an important feature: a tighter error budget
      - {name: errors per user, kind: count, event: $exception, guardrail: {max_increase: 0.10}}
    rollout:
      posthog: {flag_id: 2}
      stages: [{percent: 1}, {percent: 5}, {percent: 10, min_duration: 4d}, {percent: 25}, {percent: 50}, {percent: 100}]
  - key: srm-banner
    template: autorollout-safe
    split: {control: 0.5, test: 0.5}
    rollout:
      posthog: {flag_id: 3}
      stages: [{percent: 10}, {percent: 50}, {percent: 100}]
  - key: dark-mode
    template: autorollout-safe
    split: {control: 0.5, test: 0.5}
    rollout: {posthog: {flag_id: 4}}
`

func flagAt(id int64, key string) string {
	return fmt.Sprintf(`{"id": %d, "key": %q, "name": "", "active": true, "version": 1,
 "filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["qa@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 0}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {}}}`, id, key)
}

func bucket(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
	}
	return float64(h.Sum64()%1_000_000) / 1_000_000
}

func poisson(r *rand.Rand, lambda float64) int {
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// traffic produces window w's events, each flag answering as PostHog holds it (pct).
func traffic(r *rand.Rand, w int, start time.Time, pct map[string]float64) []*kgo.Record {
	var recs []*kgo.Record
	n := 0
	event := func(user, name string, at time.Time, props string) {
		n++
		v := fmt.Sprintf(`{"uuid":"00000000-0000-4000-8000-%012d","event":%q,"distinct_id":%q,"timestamp":%q,"properties":{"$lib":"web"%s}}`,
			w*10_000_000+n, name, user, at.UTC().Format("2006-01-02T15:04:05.000Z"), props)
		recs = append(recs, &kgo.Record{Key: []byte(user), Value: []byte(v), Timestamp: at})
	}
	for i := range usersInWindow {
		user := fmt.Sprintf("user-%d-%d", w, i)
		sessions := 1 + r.IntN(2)
		at := start.Add(time.Duration(r.Int64N(int64(window / 2))))
		for range sessions {
			errRate := 0.8
			for _, f := range simFlags {
				variant := "false"
				if bucket(f.key, user)*100 < pct[f.key] {
					variant = "control"
					if bucket(f.key, "variant", user) < f.testShare {
						variant = "test"
						if f.errorsFrom > 0 && pct[f.key] >= f.errorsFrom {
							errRate *= f.errorsBy
						}
					}
				}
				event(user, "$feature_flag_called", at, fmt.Sprintf(`,"$feature_flag":%q,"$feature_flag_response":%q`, f.key, variant))
			}
			for range 2 {
				at = at.Add(time.Duration(10+r.IntN(120)) * time.Second)
				event(user, "$pageview", at, `,"$current_url":"https://shop.example.com/"`)
			}
			for range poisson(r, errRate) {
				at = at.Add(time.Duration(1+r.IntN(30)) * time.Second)
				event(user, "$exception", at, `,"$exception_type":"TypeError"`)
			}
			if r.Float64() < 0.15 {
				at = at.Add(time.Minute)
				event(user, "purchase", at, `,"revenue":42`)
			}
			at = at.Add(time.Duration(r.Int64N(int64(window / 4))))
		}
	}
	return recs
}

// TestSimulatedRamp: two analyzers run four plans over a simulated week of traffic.
//   - new-checkout (healthy) goes 1 → 5 → 10 → 25 → 50 → 100% in order, each stage
//     after its minimum duration and users, and completes;
//   - fast-search's errors rise 40% once it reaches 10%: it is rolled back at that
//     stage, alerted once;
//   - srm-banner's users are split 30/70 instead of 50/50: it holds, alerted once;
//   - dark-mode is changed in PostHog by a person at 5%: flagwatch stops and says so.
//
// Both analyzers' controllers see every pass at once; the PostHog stand-in fails the
// test if a stage is changed twice or a PATCH touches what the plan does not own.
func TestSimulatedRamp(t *testing.T) {
	ctx := context.Background()
	dsn, conn := chtest.DB(t)
	kafka := brokertest.Cluster(t, 2, broker.EventsTopic, broker.DLQTopic)
	prod := brokertest.Client(t, kafka, kgo.DefaultProduceTopic(broker.EventsTopic), kgo.ProducerLinger(5*time.Millisecond))

	// Whole days in the past, so that every event is one ingest accepts.
	start := time.Now().UTC().Truncate(24 * time.Hour).Add(-10 * 24 * time.Hour)
	var clock struct {
		sync.Mutex
		now time.Time
	}
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	ph := posthogtest.New(t, "1", "phx_key")
	ph.Now = now
	for _, f := range simFlags {
		ph.Add(flagAt(f.id, f.key))
	}
	mons, err := config.Parse([]byte(fmt.Sprintf(rampMonitors, ph.URL)), "flagwatch.yaml")
	require.NoError(t, err)

	alerts := &captured{}
	a := &analyze.Analyzer{Conn: conn, Monitors: mons, Emitter: alerts, Replica: "analyzer-a", Now: now, Logger: quiet()}
	var ctrls []*rollout.Controller
	for _, name := range []string{"analyzer-a", "analyzer-b"} {
		ctrls = append(ctrls, rollout.New(rollout.Options{Conn: conn, Emitter: alerts, Monitors: mons, Replica: name,
			Logger: quiet(), Lookup: lookup, HTTP: fastHTTP()}))
	}

	r := rand.New(rand.NewPCG(2026, 11))
	edited := false
	var last []analyze.Row
	for w := 0; w <= windows; w++ {
		at := start.Add(time.Duration(w) * window)
		if w > 0 {
			pct := map[string]float64{}
			for _, f := range simFlags {
				pct[f.key] = max(posthogtest.Rollout(ph.Flag(f.id)), 0)
			}
			brokertest.Produce(t, prod, broker.EventsTopic, traffic(r, w, at.Add(-window), pct)...)
			require.NoError(t, ingest.Run(ctx, ingest.Options{Brokers: kafka.Addrs(), ClickHouseDSN: dsn, Group: "ramp",
				ExitWhenCaughtUp: true, Logger: quiet()}))
		}
		clock.Lock()
		clock.now = at
		clock.Unlock()
		pass, err := a.Run(ctx)
		require.NoError(t, err)
		// Both replicas act on the pass at the same moment.
		var wg sync.WaitGroup
		for i, c := range ctrls {
			wg.Go(func() {
				p := *pass
				p.ID = fmt.Sprintf("%s-%d", []string{"a", "b"}[i], w)
				p.Rows = append([]analyze.Row(nil), pass.Rows...)
				require.NoError(t, c.ObservePass(ctx, &p))
				if i == 0 {
					last = p.Rows
				}
			})
		}
		wg.Wait()
		if !edited && posthogtest.Rollout(ph.Flag(4)) == 5 {
			// A person ramps dark-mode by hand in PostHog.
			ph.Edit(4, posthogtest.User{ID: 9, Email: "ana@acme.com"}, func(f map[string]any) {
				posthogtest.Groups(f)[1]["rollout_percentage"] = 20.0
			})
			edited = true
		}
	}

	patched := func(id int64) []float64 {
		var out []float64
		for _, p := range ph.Patches() {
			if p.Flag == id {
				require.Equal(t, 200, p.Status)
				out = append(out, posthogtest.Rollout(map[string]any{"filters": p.Body["filters"]}))
			}
		}
		return out
	}

	// The healthy flag: every stage in order, none before its minimums, then complete.
	require.Equal(t, []float64{1, 5, 10, 25, 50, 100}, patched(1))
	require.Equal(t, []string{"start 0%→1%", "advance 1%→5%", "advance 5%→10%", "advance 10%→25%", "advance 25%→50%",
		"advance 50%→100%", "complete 100%→100%"}, alerts.changes("new-checkout"))
	for i, al := range alerts.rollouts("new-checkout")[1:] {
		ch := al.Numbers.Rollout
		require.Equal(t, i+1, ch.FromStage, "no stage skipped")
		require.GreaterOrEqual(t, ch.InStageSeconds, int64(12*3600), "%s: the stage's minimum duration", al.Summary)
		require.GreaterOrEqual(t, ch.UsersPerVariant, int64(5), "%s: the stage's minimum users per variant", al.Summary)
		require.Len(t, ch.Guardrails, 2, al.Summary)
		for _, g := range ch.Guardrails {
			require.NotEqual(t, alert.GuardrailBreach, g.Decision)
		}
	}

	// Errors up 40% from 10%: rolled back at that stage, once.
	require.Equal(t, []float64{1, 5, 10, 0}, patched(2))
	require.Equal(t, []string{"start 0%→1%", "advance 1%→5%", "advance 5%→10%", "rollback 10%→0%"}, alerts.changes("fast-search"))
	back := alerts.rollouts("fast-search")[3]
	require.Equal(t, alert.Critical, back.Severity)
	require.True(t, strings.HasPrefix(back.Summary, "fast-search rolled back to 0% at stage 3 of 6 (10%): errors per user +"), back.Summary)
	require.Contains(t, back.Summary, "beyond the +10% guardrail")
	require.Regexp(t, `^lift \+[\d.]+%: the always-valid lower bound \+[\d.]+% is beyond the guardrail limit \+10(\.0)?% \(one-sided p=.*\); decided by analyzer-[ab] \(pass [ab]-\d+\)$`, back.Reason)

	// A sample ratio mismatch: started, then held, once.
	require.Equal(t, []float64{10}, patched(3))
	require.Equal(t, []string{"start 0%→10%", "hold 10%→10%"}, alerts.changes("srm-banner"))
	require.Contains(t, alerts.rollouts("srm-banner")[1].Summary, "srm-banner held at 10% (stage 1 of 3): sample ratio mismatch")

	// A person's edit: flagwatch stops, says so once, and leaves the flag alone.
	require.True(t, edited)
	require.Equal(t, []float64{1, 5}, patched(4))
	require.Equal(t, []string{"start 0%→1%", "advance 1%→5%", "advance 5%→10%"}, alerts.changes("dark-mode"))
	require.Equal(t, "refused", alerts.rollouts("dark-mode")[2].Numbers.Rollout.Status)
	require.Contains(t, alerts.rollouts("dark-mode")[2].Summary, "the flag was changed in PostHog by ana@acme.com")
	require.Equal(t, 20.0, posthogtest.Rollout(ph.Flag(4)))

	// analyzer once prints one rollout row per plan after the results.
	var rolloutRows []string
	for _, row := range last {
		if row.Decision == alert.Rollout {
			rolloutRows = append(rolloutRows, row.Flag+": "+row.Reason)
		}
	}
	for _, al := range alerts.alerts {
		if al.Decision == alert.Rollout {
			t.Logf("%s %s", al.DetectedAt.Sub(start), al.Summary)
		}
	}
	for _, rr := range rolloutRows {
		t.Log(rr)
	}
	require.Len(t, rolloutRows, 4)
	require.Regexp(t, `^new-checkout: at 100% \(stage 6 of 6\) for .*; the rollout is complete$`, rolloutRows[0])
	require.Regexp(t, `^fast-search: at 0%; rolled back at .*; fix the cause, then run analyzer rollout resume fast-search$`, rolloutRows[1])
	require.Regexp(t, `^srm-banner: held at 10% \(stage 1 of 3\) for 7 days: sample ratio mismatch: users per variant control \d+, test \d+`, rolloutRows[2])
	require.Regexp(t, `^dark-mode: at 5% \(stage 2 of 6\) for .*; stopped at .*: the flag was changed in PostHog by ana@acme.com`, rolloutRows[3])

	// The log has every change once, with its outcome and who decided it.
	var changes, twice uint64
	require.NoError(t, conn.QueryRow(ctx, `SELECT count() FROM rollout_log
		WHERE status != 'pending' AND change != 'alerted' AND decided_by LIKE 'analyzer-_ (pass _-%)'`).Scan(&changes))
	require.Equal(t, uint64(7+4+2+3), changes)
	require.NoError(t, conn.QueryRow(ctx, `SELECT count() FROM (SELECT flag, seq, count() AS n FROM rollout_log
		WHERE status != 'pending' AND change != 'alerted' GROUP BY flag, seq) AS outcomes WHERE n > 1`).Scan(&twice))
	require.Zero(t, twice, "one outcome per change")
}
