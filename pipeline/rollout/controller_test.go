package rollout_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
	"github.com/flagwatch/flagwatch/pipeline/rollback/posthogtest"
	"github.com/flagwatch/flagwatch/pipeline/rollout"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// captured collects alerts, from any number of replicas.
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

// rollouts returns the rollout alerts of flag, in order.
func (c *captured) rollouts(flag string) []alert.Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []alert.Alert
	for _, a := range c.alerts {
		if a.Flag == flag && a.Decision == alert.Rollout {
			out = append(out, a)
		}
	}
	return out
}

// changes lists the rollout alerts of flag as "change from→to".
func (c *captured) changes(flag string) []string {
	var out []string
	for _, a := range c.rollouts(flag) {
		r := a.Numbers.Rollout
		out = append(out, fmt.Sprintf("%s %s→%s", r.Change, r.From, r.To))
	}
	return out
}

const flagJSON = `{"id": 42, "key": "new-checkout", "name": "New checkout", "active": true, "version": 1,
 "filters": {
  "groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["qa@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 0}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"banner\": \"new\"}"}}}`

const monitors = `
flags:
  - key: new-checkout
    split: {control: 0.5, test: 0.5}
    metrics:
      - {name: errors per user, kind: count, event: $exception, guardrail: {max_increase: 0.3}}
    rollout:
      min_duration: 1d
      min_users_per_variant: 100
      stages: [{percent: 1}, {percent: 10}, {percent: 100}]
      %s
`

// rig is a plan, ClickHouse, the PostHog stand-in and the controllers of two replicas.
type rig struct {
	t      *testing.T
	conn   store.Conn
	ph     *posthogtest.Server
	alerts *captured
	ctrls  []*rollout.Controller
	mons   *config.Monitors
	n      int
}

func newRig(t *testing.T, target string, replicas int) *rig {
	_, conn := chtest.DB(t)
	r := &rig{t: t, conn: conn, alerts: &captured{}}
	r.ph = posthogtest.New(t, "1", "phx_key")
	r.ph.Add(flagJSON)
	if target == "" {
		target = fmt.Sprintf(`posthog: {host: %q, project_id: 1, flag_id: 42, api_key_env: POSTHOG_API_KEY}`, r.ph.URL)
	}
	var err error
	r.mons, err = config.Parse([]byte(fmt.Sprintf(monitors, target)), "flagwatch.yaml")
	require.NoError(t, err)
	for i := range replicas {
		r.ctrls = append(r.ctrls, rollout.New(rollout.Options{Conn: conn, Emitter: r.alerts, Monitors: r.mons,
			Replica: fmt.Sprintf("replica-%c", 'a'+i), Logger: quiet(), Lookup: lookup, HTTP: fastHTTP()}))
	}
	return r
}

func lookup(k string) (string, bool) {
	switch k {
	case "POSTHOG_API_KEY":
		return "phx_key", true
	case "HOOK_SECRET":
		return "hook-secret", true
	}
	return "", false
}

func fastHTTP() rollback.Options {
	return rollback.Options{Logger: quiet(), Retry: rollback.Retry{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond, Budget: time.Minute}}
}

// metricRows are a pass's whole-population rows of the flag's metrics.
func metricRows(control, test int64, decision string) []analyze.Row {
	return []analyze.Row{
		{Flag: "new-checkout", Metric: "pageviews", Variant: "test", N: test, ControlN: control, Decision: alert.Inconclusive},
		{Flag: "new-checkout", Metric: "errors per user", Variant: "test", N: test, ControlN: control, Lift: 0.04,
			CI: [2]float64{-0.08, 0.16}, Decision: decision},
	}
}

// pass runs one pass at time at with rows through every replica at once, and returns
// the rollout row of each.
func (r *rig) pass(at time.Time, rows []analyze.Row) []analyze.Row {
	r.n++
	var wg sync.WaitGroup
	out := make([]analyze.Row, len(r.ctrls))
	for i, c := range r.ctrls {
		wg.Go(func() {
			p := &analyze.Pass{ID: fmt.Sprintf("p%d-%d", r.n, i), Time: at, Rows: append([]analyze.Row(nil), rows...)}
			require.NoError(r.t, c.ObservePass(context.Background(), p))
			last := p.Rows[len(p.Rows)-1]
			require.Equal(r.t, alert.Rollout, last.Decision)
			out[i] = last
		})
	}
	wg.Wait()
	return out
}

var t0 = time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)

// Two replicas watch the same passes: the flag goes 1 → 10 → 100% and completes, each
// change made once in PostHog (the stand-in fails the test on a second PATCH of a stage
// and on any PATCH that touches what the plan does not own) and told once.
func TestTwoReplicasMakeEachChangeOnce(t *testing.T) {
	r := newRig(t, "", 2)
	users := int64(0)
	for h := 0; h <= 4*24; h += 6 {
		users += 40
		r.pass(t0.Add(time.Duration(h)*time.Hour), metricRows(users, users+3, alert.Inconclusive))
	}
	require.Equal(t, []string{"start 0%→1%", "advance 1%→10%", "advance 10%→100%", "complete 100%→100%"}, r.alerts.changes("new-checkout"))
	var pcts []float64
	for _, p := range r.ph.Patches() {
		require.Equal(t, http.StatusOK, p.Status)
		pcts = append(pcts, posthogtest.Rollout(map[string]any{"filters": p.Body["filters"]}))
	}
	require.Equal(t, []float64{1, 10, 100}, pcts)

	as := r.alerts.rollouts("new-checkout")
	adv := as[1]
	require.Equal(t, alert.Info, adv.Severity)
	require.Equal(t, "new-checkout|rollout|2", adv.DedupKey)
	require.Regexp(t, `^new-checkout advanced to 10% \(stage 2 of 3\): guardrails hold, \d+ new users per variant, 1 day at 1%$`, adv.Summary)
	require.Equal(t, "posthog", adv.Rollback.Action)
	require.Equal(t, r.ph.URL+"/api/projects/1/feature_flags/42/", adv.Rollback.Target)
	require.Equal(t, "ok", adv.Rollback.Status)
	require.Regexp(t, `^decided by replica-[ab] \(pass p\d+-[01]\)$`, adv.Reason)
	require.Equal(t, []alert.GuardrailState{{Metric: "errors per user", Variant: "test", Limit: 0.3, Lift: 0.04,
		CI: [2]float64{-0.08, 0.16}, Decision: alert.Inconclusive}}, adv.Numbers.Rollout.Guardrails)
	require.Equal(t, 2, adv.Numbers.Rollout.ToStage)
	require.Equal(t, int64(24*3600), adv.Numbers.Rollout.InStageSeconds)
	require.Equal(t, "Nothing: flagwatch advances new-checkout to 100% (stage 3 of 3) when this stage's minimums are met, and rolls it back if a guardrail breaks.", adv.Action)
	require.Equal(t, "Clean up: remove the flag from the code, then archive it in PostHog.", as[3].Action)

	// Every change is in the log with who decided it and the flag as PostHog returned it.
	var n uint64
	require.NoError(t, r.conn.QueryRow(context.Background(),
		"SELECT count() FROM rollout_log WHERE flag = 'new-checkout' AND status = 'ok' AND change NOT IN ('alerted')").Scan(&n))
	require.Equal(t, uint64(4), n)
	rows := r.pass(t0.Add(5*24*time.Hour), metricRows(users, users, alert.Inconclusive))
	require.Equal(t, "at 100% (stage 3 of 3) for 3 days; the rollout is complete", rows[0].Reason)
	require.Len(t, r.ph.Patches(), 3, "nothing more once complete")
}

// A person changes the flag in PostHog between two changes: flagwatch refuses to
// overwrite it, stops and says so once; a resume hands control back and the plan goes
// on from where the person left the flag.
func TestAPersonsEditStopsTheRollout(t *testing.T) {
	r := newRig(t, "", 1)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	require.Equal(t, 1.0, posthogtest.Rollout(r.ph.Flag(42)))

	r.ph.Edit(42, posthogtest.User{ID: 7, Email: "ana@acme.com"}, func(f map[string]any) {
		posthogtest.Groups(f)[1]["rollout_percentage"] = 30.0
	})
	for h := 25; h < 60; h += 6 {
		r.pass(t0.Add(time.Duration(h)*time.Hour), metricRows(500, 510, alert.Inconclusive))
	}
	require.Equal(t, 30.0, posthogtest.Rollout(r.ph.Flag(42)), "the person's 30% stands")
	require.Len(t, r.ph.Patches(), 1, "no PATCH after the person's edit")
	as := r.alerts.rollouts("new-checkout")
	require.Len(t, as, 2, "start, then stopped — once")
	stop := as[1]
	require.Equal(t, alert.RolloutAdvance, stop.Numbers.Rollout.Change)
	require.Equal(t, "refused", stop.Numbers.Rollout.Status)
	require.Equal(t, alert.Warning, stop.Severity)
	require.Regexp(t, `^flagwatch stopped new-checkout's rollout at 1% \(stage 1 of 3\): the flag was changed in PostHog by ana@acme.com at \d{4}-\d\d-\d\d \d\d:\d\d UTC \(version 2 → 3\): condition 2 1% → 30%$`, stop.Summary)
	require.Equal(t, "refused", stop.Rollback.Status)
	require.Contains(t, stop.Action, "analyzer rollout resume new-checkout")

	require.NoError(t, rollout.Resume(context.Background(), r.conn, claim.Table{Conn: r.conn}, r.mons, "new-checkout", "ana@acme.com", t0.Add(60*time.Hour)))
	r.pass(t0.Add(61*time.Hour), metricRows(600, 610, alert.Inconclusive))
	as = r.alerts.rollouts("new-checkout")
	require.Len(t, as, 3)
	require.Equal(t, "new-checkout rollout resumed at 100% (stage 3 of 3): 1% → 10% → 100%", as[2].Summary,
		"the first stage at or above the person's 30%")
	require.Equal(t, 100.0, posthogtest.Rollout(r.ph.Flag(42)))
}

// A guardrail breach rolls the flag back (to 0% here) once, critical; the latched
// breach of later passes changes nothing more.
func TestBreachRollsBackOnce(t *testing.T) {
	r := newRig(t, "", 2)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	r.pass(t0.Add(25*time.Hour), metricRows(300, 300, alert.Inconclusive))
	require.Equal(t, 10.0, posthogtest.Rollout(r.ph.Flag(42)))
	breach := metricRows(400, 400, alert.GuardrailBreach)
	breach[1].Lift, breach[1].CI = 0.42, [2]float64{0.33, 0.51}
	for h := 26; h < 40; h++ {
		r.pass(t0.Add(time.Duration(h)*time.Hour), breach)
	}
	require.Equal(t, 0.0, posthogtest.Rollout(r.ph.Flag(42)))
	require.Equal(t, []string{"start 0%→1%", "advance 1%→10%", "rollback 10%→0%"}, r.alerts.changes("new-checkout"))
	back := r.alerts.rollouts("new-checkout")[2]
	require.Equal(t, alert.Critical, back.Severity)
	require.Equal(t, "new-checkout rolled back to 0% at stage 2 of 3 (10%): errors per user +42% [+33%, +51%], beyond the +30% guardrail", back.Summary)
	require.Len(t, r.ph.Patches(), 3)
	require.Equal(t, 100.0, posthogtest.Groups(r.ph.Flag(42))[0]["rollout_percentage"], "the person condition untouched")
}

// PostHog down: the change fails after its retries, is told once, and is made at a
// later pass once PostHog answers.
func TestFailedChangeIsRetriedAndToldOnce(t *testing.T) {
	r := newRig(t, "", 1)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	for h := 25; h < 28; h++ {
		r.ph.FailNext(503, 503, 503)
		r.pass(t0.Add(time.Duration(h)*time.Hour), metricRows(300, 300, alert.Inconclusive))
	}
	require.Equal(t, 1.0, posthogtest.Rollout(r.ph.Flag(42)))
	r.pass(t0.Add(28*time.Hour), metricRows(300, 300, alert.Inconclusive))
	require.Equal(t, 10.0, posthogtest.Rollout(r.ph.Flag(42)))
	require.Equal(t, []string{"start 0%→1%", "advance 1%→10%", "advance 1%→10%"}, r.alerts.changes("new-checkout"))
	failed := r.alerts.rollouts("new-checkout")[1]
	require.Equal(t, "failed", failed.Rollback.Status)
	require.Equal(t, "new-checkout could not advance to 10% (stage 2 of 3): read flag: HTTP 503 Service Unavailable: "+
		`{"detail":"Service Unavailable","type":"server_error"}; gave up after 3 attempts; flagwatch tries again at the next pass`, failed.Summary)
}

// A replica claims a change, writes its intent, PATCHes PostHog and dies before
// recording the outcome. No other replica touches the change while the claim lasts;
// after it, the next pass finds PostHog has it and records it without a second PATCH.
func TestAChangeLeftPendingIsSettledOnce(t *testing.T) {
	r := newRig(t, "", 1)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	// The dying replica: claim and intent of change 2, the PATCH, no outcome.
	dying := rollout.New(rollout.Options{Conn: r.conn, Monitors: r.mons, Replica: "dying", Logger: quiet(), Lookup: lookup,
		HTTP: fastHTTP()})
	at := t0.Add(25 * time.Hour)
	require.NoError(t, rollout.DieMidChange(context.Background(), dying, &analyze.Pass{ID: "dying-1", Time: at,
		Rows: metricRows(300, 300, alert.Inconclusive)}))
	require.Equal(t, 10.0, posthogtest.Rollout(r.ph.Flag(42)))
	require.Len(t, r.ph.Patches(), 2)

	rows := r.pass(at.Add(5*time.Minute), metricRows(300, 300, alert.Inconclusive))
	require.Equal(t, "change #2 is being made by another analyzer replica", rows[0].Reason)
	rows = r.pass(at.Add(15*time.Minute), metricRows(300, 300, alert.Inconclusive))
	require.Regexp(t, `^new-checkout advanced to 10% \(stage 2 of 3\)`, rows[0].Reason)
	require.Len(t, r.ph.Patches(), 2, "settled without a second PATCH")
	as := r.alerts.rollouts("new-checkout")
	require.Equal(t, []string{"start 0%→1%", "advance 1%→10%"}, r.alerts.changes("new-checkout"))
	require.Equal(t, "PostHog has the change: it was applied before the replica that made it stopped", as[1].Rollback.Detail)
	require.Regexp(t, `^decided by dying \(pass dying-1\); settled by replica-a \(pass p\d+-0\)$`, as[1].Reason)

	// The plan goes on from the settled change.
	r.pass(at.Add(25*time.Hour), metricRows(600, 600, alert.Inconclusive))
	require.Equal(t, 100.0, posthogtest.Rollout(r.ph.Flag(42)))
}

// For any other flag system: each change as a signed JSON POST with the change's
// identity as Idempotency-Key.
func TestWebhookReceivesEachChangeSigned(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	var keys []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		require.True(t, rollback.Verify([]byte("hook-secret"), b, req.Header.Get(rollback.SignatureHeader)), "signed")
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		mu.Lock()
		bodies, keys = append(bodies, m), append(keys, req.Header.Get(rollback.IdempotencyHeader))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	r := newRig(t, fmt.Sprintf(`webhook: {url: %q, secret_env: HOOK_SECRET}`, hook.URL+"/flags"), 2)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	r.pass(t0.Add(25*time.Hour), metricRows(300, 300, alert.Inconclusive))

	require.Equal(t, []string{"new-checkout|rollout|1", "new-checkout|rollout|2"}, keys)
	require.Equal(t, "advance", bodies[1]["change"])
	require.Equal(t, map[string]any{"stage": 1.0, "label": "1%", "percent": 1.0}, bodies[1]["from"])
	require.Equal(t, map[string]any{"stage": 2.0, "label": "10%", "percent": 10.0}, bodies[1]["to"])
	require.Equal(t, 3.0, bodies[1]["stages"])
	require.Equal(t, []any{}, bodies[1]["groups"])
	require.Equal(t, t0.Add(25*time.Hour).Format(time.RFC3339), bodies[1]["time"])
	require.Regexp(t, `^new-checkout advanced to 10% \(stage 2 of 3\): guardrails hold`, bodies[1]["summary"])
	as := r.alerts.rollouts("new-checkout")
	require.Len(t, as, 2)
	require.Equal(t, "webhook", as[1].Rollback.Action)
	require.Empty(t, r.ph.Patches())
}

// recordResults writes rows into analysis_results as the analyzer's pass at at does.
func recordResults(t *testing.T, conn store.Conn, at time.Time, rows []analyze.Row) {
	b, err := conn.PrepareBatch(context.Background(), `INSERT INTO analysis_results (pass_time, pass_id, flag, metric,
		segment_property, segment_value, variant, n, control_n, mean, control_mean, lift, se, ci_low, ci_high,
		p, chance_to_win, cuped, decision, reason)`)
	require.NoError(t, err)
	for _, r := range rows {
		require.NoError(t, b.Append(at, "pass-"+at.Format(time.RFC3339), r.Flag, r.Metric, "", "", r.Variant, uint64(r.N),
			uint64(r.ControlN), r.Mean, r.ControlMean, r.Lift, r.SE, r.CI[0], r.CI[1], r.P, r.ChanceToWin, uint8(0), r.Decision, r.Reason))
	}
	require.NoError(t, b.Send())
}

// The status of every plan, as analyzer rollout status prints it.
func TestStatus(t *testing.T) {
	r := newRig(t, "", 1)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	r.pass(t0.Add(25*time.Hour), metricRows(300, 310, alert.Inconclusive))
	rows := metricRows(340, 390, alert.Inconclusive)
	r.pass(t0.Add(31*time.Hour), rows)
	recordResults(t, r.conn, t0.Add(31*time.Hour), rows)

	sts, err := rollout.Statuses(context.Background(), r.conn, r.mons, "", t0.Add(31*time.Hour))
	require.NoError(t, err)
	require.Len(t, sts, 1)
	var b strings.Builder
	rollout.WriteStatus(&b, sts)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	sort.Strings(lines[1:2])
	require.Equal(t, "new-checkout  PostHog flag 42 ("+r.ph.URL+")", lines[0])
	require.Equal(t, "  stage 2 of 3: 10% for 6h", lines[1])
	require.Equal(t, "  waits for: 18h more at 10% (6h of 1 day), 60 more users in control (40 of 100 new users per variant)", lines[2])
	require.Equal(t, "  guardrails: errors per user +4% [−8%, +16%] (limit +30%)", lines[3])
	require.Equal(t, "  stages: 1% ✓ · 10% ◀ · 100%", lines[4])
	require.Regexp(t, `^  last change: #2 advance 1% → 10% by replica-a \(pass p2-0\) at 2026-11-03 13:00 UTC, posthog: ok$`, lines[5])

	_, err = rollout.Statuses(context.Background(), r.conn, r.mons, "nope", t0)
	require.EqualError(t, err, `no rollout plan for flag "nope" in flagwatch.yaml (flags with a plan: new-checkout)`)
}

// A breach after a person changed the flag: flagwatch does not overwrite the person's
// change even to roll back — it says, critically, that the flag needs rolling back by
// hand.
func TestABreachAfterAPersonsEditIsNotOverwritten(t *testing.T) {
	r := newRig(t, "", 1)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	r.ph.Edit(42, posthogtest.User{ID: 7, Email: "ana@acme.com"}, func(f map[string]any) {
		posthogtest.Groups(f)[1]["rollout_percentage"] = 30.0
	})
	breach := metricRows(400, 400, alert.GuardrailBreach)
	breach[1].Lift, breach[1].CI = 0.42, [2]float64{0.33, 0.51}
	r.pass(t0.Add(2*time.Hour), breach)
	r.pass(t0.Add(3*time.Hour), breach)
	require.Equal(t, 30.0, posthogtest.Rollout(r.ph.Flag(42)))
	require.Len(t, r.ph.Patches(), 1)
	as := r.alerts.rollouts("new-checkout")
	require.Len(t, as, 2)
	require.Equal(t, alert.Critical, as[1].Severity)
	require.Regexp(t, `^flagwatch could not roll new-checkout back at 1% \(stage 1 of 3\): errors per user \+42% \[\+33%, \+51%\], `+
		`beyond the \+30% guardrail, but the flag was changed in PostHog by ana@acme.com at .* \(version 2 → 3\): condition 2 1% → 30%; roll it back by hand$`, as[1].Summary)
	require.Equal(t, "Roll the flag back by hand in PostHog now: a guardrail is breached, and flagwatch does not overwrite a person's change.", as[1].Action)
}

// A replica records the intent of a change and dies before calling PostHog. After its
// claim, the next pass finds PostHog without the change, records it as not made (told
// once), and the plan makes it afresh — one PATCH in all.
func TestAnIntentWithoutACallIsMadeAfresh(t *testing.T) {
	r := newRig(t, "", 1)
	r.pass(t0, metricRows(0, 0, alert.InsufficientData))
	dying := rollout.New(rollout.Options{Conn: r.conn, Monitors: r.mons, Replica: "dying", Logger: quiet(), Lookup: lookup,
		HTTP: fastHTTP()})
	at := t0.Add(25 * time.Hour)
	require.NoError(t, rollout.DieBeforeCall(context.Background(), dying, &analyze.Pass{ID: "dying-1", Time: at,
		Rows: metricRows(300, 300, alert.Inconclusive)}))
	require.Len(t, r.ph.Patches(), 1, "the dying replica never called PostHog")

	rows := r.pass(at.Add(15*time.Minute), metricRows(300, 300, alert.Inconclusive))
	require.Equal(t, "new-checkout could not advance to 10% (stage 2 of 3): not applied: the replica that claimed it stopped before PostHog answered; flagwatch tries again at the next pass", rows[0].Reason)
	rows = r.pass(at.Add(30*time.Minute), metricRows(300, 300, alert.Inconclusive))
	require.Regexp(t, `^new-checkout advanced to 10% \(stage 2 of 3\)`, rows[0].Reason)
	require.Equal(t, 10.0, posthogtest.Rollout(r.ph.Flag(42)))
	require.Len(t, r.ph.Patches(), 2)
	require.Equal(t, []string{"start 0%→1%", "advance 1%→10%", "advance 1%→10%"}, r.alerts.changes("new-checkout"))
	require.Equal(t, "failed", r.alerts.rollouts("new-checkout")[1].Numbers.Rollout.Status)
}
