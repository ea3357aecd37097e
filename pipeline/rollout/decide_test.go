package rollout

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

var t0 = time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)

func testPlan(t *testing.T) *Plan {
	t.Helper()
	m, err := config.Parse([]byte(`
flags:
  - key: new-checkout
    split: {control: 0.5, test: 0.5}
    metrics:
      - {name: purchase conversion, kind: conversion, event: purchase, guardrail: {max_decrease: 0.2}}
      - {name: errors per user, kind: count, event: $exception, guardrail: {max_increase: 0.3}}
    rollout:
      min_users_per_variant: 100
      stages: [{percent: 1, min_duration: 1d}, {percent: 10, min_duration: 2d, fallback: 1}, {percent: 100}]
      posthog: {host: "https://us.posthog.com", project_id: 1, flag_id: 42, api_key_env: POSTHOG_API_KEY}
`), "f.yaml")
	require.NoError(t, err)
	return Plans(m)[0]
}

// metricRows are the whole-population rows of every metric for test vs control.
func metricRows(control, test int64, decision string) []analyze.Row {
	var rows []analyze.Row
	for _, m := range []string{"pageviews", "purchase conversion", "errors per user"} {
		rows = append(rows, analyze.Row{Flag: "new-checkout", Metric: m, Variant: "test", N: test, ControlN: control,
			Lift: 0.02, CI: [2]float64{-0.05, 0.09}, Decision: decision})
	}
	return rows
}

// at is the state of a flag in stage k since the given time, users at entry as given.
func at(k int, since time.Time, users map[string]int64) *State {
	return &State{LastSeq: int64(k), Stage: k, Since: since, UsersAtEntry: users, Started: true, Alerted: map[int64]bool{}}
}

func TestDecide(t *testing.T) {
	p := testPlan(t)
	entry := map[string]int64{"control": 40, "test": 42}
	for name, tc := range map[string]struct {
		st      *State
		rows    []analyze.Row
		now     time.Time
		change  string
		to      int
		why     string
		waits   []string
		holdKey string
		held    string
		ended   string
	}{
		"not started: start at stage 1": {st: &State{Alerted: map[int64]bool{}}, now: t0,
			change: alert.RolloutStart, to: 1, why: "the plan 1% → 10% → 100% starts"},
		"minimums met: advance": {st: at(1, t0, entry), rows: metricRows(400, 410, alert.InsufficientData), now: t0.Add(25 * time.Hour),
			change: alert.RolloutAdvance, to: 2, why: "guardrails hold, 360 new users per variant, 1d 1h at 1%"},
		"too early": {st: at(1, t0, entry), rows: metricRows(400, 410, alert.Inconclusive), now: t0.Add(20 * time.Hour),
			waits: []string{"4h more at 1% (20h of 1 day)"}},
		"too few new users, whoever has fewest": {st: at(2, t0, entry), rows: metricRows(400, 120, alert.Inconclusive), now: t0.Add(72 * time.Hour),
			waits: []string{"22 more users in test (78 of 100 new users per variant)"}},
		"last stage: complete": {st: at(3, t0, entry), rows: metricRows(400, 410, alert.Inconclusive), now: t0.Add(25 * time.Hour),
			change: alert.RolloutComplete, to: 3, why: "guardrails hold, 360 new users per variant, 1d 1h at 100%"},
		"breach rolls back to the stage's fallback": {st: at(2, t0, entry),
			rows: append(metricRows(400, 410, alert.Inconclusive), analyze.Row{Flag: "new-checkout", Metric: "errors per user",
				Variant: "test", N: 410, ControlN: 400, Lift: 0.41, CI: [2]float64{0.31, 0.52}, Decision: alert.GuardrailBreach}),
			now: t0.Add(time.Hour), change: alert.RolloutBack, to: 1, why: "errors per user +41% [+31%, +52%], beyond the +30% guardrail"},
		"a segment's breach rolls back too, to 0 by default": {st: at(1, t0, entry),
			rows: append(metricRows(400, 410, alert.Inconclusive), analyze.Row{Flag: "new-checkout", Metric: "purchase conversion",
				Segment: &analyze.Segment{Property: "plan", Value: ptr("pro")}, Variant: "test", N: 90, ControlN: 95,
				Lift: -0.5, CI: [2]float64{-0.7, -0.3}, Decision: alert.GuardrailBreach}),
			now: t0.Add(time.Hour), change: alert.RolloutBack, to: 0, why: "purchase conversion in plan = pro −50% [−70%, −30%], beyond the −20% guardrail"},
		"srm holds": {st: at(1, t0, entry), rows: append(metricRows(400, 410, alert.Inconclusive),
			analyze.Row{Flag: "new-checkout", Decision: alert.SRM, N: 810, P: 1e-9, Reason: "sample ratio mismatch: users per variant control 300, test 510."}),
			now: t0.Add(48 * time.Hour), change: alert.RolloutHold, to: 1, holdKey: "srm",
			why: "sample ratio mismatch: users per variant control 300, test 510"},
		"a hold already told waits": {st: func() *State { s := at(1, t0, entry); s.Holding = "srm"; return s }(),
			rows: append(metricRows(400, 410, alert.Inconclusive), analyze.Row{Flag: "new-checkout", Decision: alert.SRM, Reason: "x"}),
			now:  t0.Add(48 * time.Hour), held: "sample ratio mismatch: x"},
		"users outside the rollout answer false: no hold": {st: at(1, t0, entry), rows: append(metricRows(400, 410, alert.Inconclusive),
			analyze.Row{Flag: "new-checkout", Variant: "false", Decision: alert.SRM, N: 40000}),
			now: t0.Add(25 * time.Hour), change: alert.RolloutAdvance, to: 2, why: "guardrails hold, 360 new users per variant, 1d 1h at 1%"},
		"a variant nobody configured holds": {st: at(1, t0, entry), rows: append(metricRows(400, 410, alert.Inconclusive),
			analyze.Row{Flag: "new-checkout", Variant: "tset", Decision: alert.SRM, N: 12}),
			now: t0.Add(25 * time.Hour), change: alert.RolloutHold, to: 1, holdKey: "variant:tset",
			why: `exposures report a variant "tset" that is not in the split (12 users): check the flag's evaluation code`},
		"stale holds": {st: at(1, t0, entry), rows: append(metricRows(400, 410, alert.Inconclusive),
			analyze.Row{Flag: "new-checkout", Decision: alert.Stale, Reason: "no exposures for 30h"}),
			now: t0.Add(30 * time.Hour), change: alert.RolloutHold, to: 1, holdKey: "stale", why: "exposures stopped: no exposures for 30h"},
		"no new exposures after the stage's minimum: missing data": {st: at(1, t0, entry), rows: metricRows(40, 42, alert.Inconclusive),
			now: t0.Add(25 * time.Hour), change: alert.RolloutHold, to: 1, holdKey: "nodata",
			why: "no new exposures in 1d 1h at this stage: is the flag still evaluated, and the SDK sending $feature_flag_called?"},
		"no new exposures yet: waits": {st: at(1, t0, entry), rows: metricRows(40, 42, alert.Inconclusive), now: t0.Add(2 * time.Hour),
			waits: []string{"22h more at 1% (2h of 1 day)", "100 more users in control (0 of 100 new users per variant)"}},
		"a guardrail without a verdict waits": {st: at(1, t0, entry), rows: metricRows(400, 410, alert.Inconclusive)[:2],
			now: t0.Add(25 * time.Hour), waits: []string{"a verdict on the errors per user guardrail (too few users in a variant)"}},
		"rolled back: nothing more": {st: &State{Stage: 1, Started: true, Ended: endRollback, EndedBy: &Entry{AtMs: t0.UnixMilli()}},
			rows: metricRows(400, 410, alert.GuardrailBreach), now: t0,
			ended: "rolled back at 2026-11-02 12:00 UTC; fix the cause, then run analyzer rollout resume new-checkout"},
		"stopped: nothing more": {st: &State{Stage: 2, Started: true, Ended: endStopped, EndedBy: &Entry{AtMs: t0.UnixMilli(), Detail: "the flag was changed"}},
			now: t0, ended: "stopped at 2026-11-02 12:00 UTC: the flag was changed; analyzer rollout resume new-checkout hands control back"},
	} {
		t.Run(name, func(t *testing.T) {
			d := decide(p, tc.st, tc.rows, tc.now)
			require.Equal(t, tc.change, d.Change, "waits: %v", d.Waits)
			require.Equal(t, tc.waits, d.Waits)
			require.Equal(t, tc.held, d.Held)
			require.Equal(t, tc.ended, d.Ended)
			if tc.change != "" {
				require.Equal(t, tc.to, d.To)
				require.Equal(t, tc.why, d.Why)
				require.Equal(t, tc.holdKey, d.HoldKey)
			}
		})
	}
}

func TestDecideRecordsTheNumbers(t *testing.T) {
	p := testPlan(t)
	d := decide(p, at(1, t0, map[string]int64{"control": 40, "test": 42}), metricRows(400, 410, alert.Inconclusive), t0.Add(25*time.Hour))
	require.Equal(t, map[string]int64{"control": 400, "test": 410}, d.Users, "users since first exposure, for the next stage to count from")
	require.Equal(t, int64(360), d.UsersPerVariant)
	require.Equal(t, 25*time.Hour, d.InStage)
	require.Len(t, d.Guardrails, 2)
	require.Equal(t, alert.GuardrailState{Metric: "purchase conversion", Variant: "test", Limit: -0.2, Lift: 0.02,
		CI: [2]float64{-0.05, 0.09}, Decision: alert.Inconclusive}, d.Guardrails[0])
	require.Equal(t, 0.3, d.Guardrails[1].Limit)
}

func TestStateReplaysTheLog(t *testing.T) {
	e := func(seq int64, change, status string, to int64, ms int64) Entry {
		return Entry{Flag: "f", Seq: seq, Change: change, Status: status, ToStage: to, AtMs: ms, DoneMs: ms, Users: `{"control": 5}`}
	}
	st := stateOf([]Entry{
		e(3, alert.RolloutHold, statusOK, 2, 30),
		e(1, alert.RolloutStart, statusPending, 1, 10),
		e(1, alert.RolloutStart, statusOK, 1, 11),
		{Flag: "f", Seq: 1, Change: changeAlerted, Status: statusOK},
		e(2, alert.RolloutAdvance, statusOK, 2, 20),
		e(4, alert.RolloutAdvance, statusFailed, 3, 40),
		e(5, alert.RolloutAdvance, statusPending, 3, 50),
	})
	require.Equal(t, int64(5), st.LastSeq)
	require.Equal(t, 2, st.Stage, "a failed change leaves the stage")
	require.Equal(t, time.UnixMilli(20).UTC(), st.Since)
	require.Equal(t, map[string]int64{"control": 5}, st.UsersAtEntry)
	require.True(t, st.Started)
	require.Empty(t, st.Ended)
	require.Empty(t, st.Holding, "the hold's Detail is its key; this one has none")
	require.NotNil(t, st.Pending)
	require.Equal(t, int64(5), st.Pending.Seq)
	require.Len(t, st.Outcomes, 4)
	require.True(t, st.Alerted[1])
	require.False(t, st.Alerted[2])

	st = stateOf([]Entry{e(1, alert.RolloutStart, statusOK, 1, 10), e(2, alert.RolloutAdvance, statusRefused, 2, 20)})
	require.Equal(t, endStopped, st.Ended)
	st = stateOf([]Entry{e(1, alert.RolloutStart, statusOK, 1, 10), e(2, alert.RolloutAdvance, statusRefused, 2, 20),
		e(3, alert.RolloutResumed, statusOK, 1, 30)})
	require.Empty(t, st.Ended, "a resume hands control back")
	require.False(t, st.Started, "and starts again from the flag as it is")
	require.Equal(t, 1, st.Stage)
}

func TestNeedsAlertOnlyTheFirstOfRepeatedFailures(t *testing.T) {
	fail := func(seq int64, to int64) Entry {
		return Entry{Seq: seq, Change: alert.RolloutAdvance, Status: statusFailed, ToStage: to}
	}
	st := &State{Outcomes: []Entry{fail(1, 2), fail(2, 2), fail(3, 3)}}
	require.True(t, needsAlert(st, &st.Outcomes[0]))
	require.False(t, needsAlert(st, &st.Outcomes[1]), "the same failure again")
	require.True(t, needsAlert(st, &st.Outcomes[2]), "another change failing")
	require.False(t, needsAlert(st, &Entry{Change: alert.RolloutResumed, Status: statusOK}))
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0m", 45 * time.Minute: "45m", 19 * time.Hour: "19h", 90 * time.Minute: "1h 30m",
		24 * time.Hour: "1 day", 48 * time.Hour: "2 days", 28 * time.Hour: "1d 4h",
	} {
		require.Equal(t, want, Duration(d), d.String())
	}
}

func ptr[T any](v T) *T { return &v }

// The plan was edited while the flag was in a stage: the stage is found again by its
// label, or, when the plan no longer has it, the plan waits for a person.
func TestDecideAfterThePlanChanged(t *testing.T) {
	p := testPlan(t) // 1% → 10% → 100%
	st := at(1, t0, map[string]int64{"control": 40, "test": 42})
	st.StageLabel = "5%"
	d := decide(p, st, metricRows(400, 410, alert.Inconclusive), t0.Add(25*time.Hour))
	require.Empty(t, d.Change)
	require.Equal(t, "the plan changed: the flag is at 5%, no longer one of its stages (1% → 10% → 100%); run analyzer rollout resume new-checkout to continue from the flag as it is", d.Ended)

	st.Stage, st.StageLabel = 3, "10%" // it was stage 3 of 1% → 5% → 10% → …
	d = decide(p, st, metricRows(400, 410, alert.Inconclusive), t0.Add(49*time.Hour))
	require.Equal(t, alert.RolloutAdvance, d.Change)
	require.Equal(t, 2, d.From, "10% is stage 2 of the plan now")
	require.Equal(t, 3, d.To)
}
