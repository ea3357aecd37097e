package render

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/slack"
	"github.com/flagwatch/flagwatch/pipeline/slack/slacktest"
)

// rolloutAlert is a change of new-checkout's rollout as pipeline/rollout emits it.
func rolloutAlert(seq, change, status, from, to string, fromStage, toStage int, severity, summary, action string) *alert.Alert {
	at := time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC)
	a := &alert.Alert{Flag: "new-checkout", Decision: alert.Rollout, Severity: severity, DedupKey: "new-checkout|rollout|" + seq,
		Summary: summary, Action: action, SlackChannel: "#checkout", DetectedAt: at,
		Reason: "decided by analyzer-7f3c (pass analyzer-7f3c-1762344000000000000)",
		Numbers: alert.Numbers{Control: "control", Rollout: &alert.RolloutChange{Change: change, Status: status,
			ChangeID: "new-checkout|rollout|" + seq, FromStage: fromStage, ToStage: toStage, Stages: 6, From: from, To: to,
			UsersPerVariant: 1240, InStageSeconds: 2 * 24 * 3600,
			Guardrails: []alert.GuardrailState{
				{Metric: "purchase conversion", Variant: "test", Limit: -0.2, Lift: -0.012, CI: [2]float64{-0.08, 0.059}, Decision: alert.Inconclusive},
				{Metric: "errors per user", Variant: "test", Limit: 0.3, Lift: 0.031, CI: [2]float64{-0.05, 0.12}, Decision: alert.Inconclusive}}}},
		Rollback: &alert.Rollback{Action: "posthog", Target: "https://us.posthog.com/api/projects/1/feature_flags/42/",
			Status: status, Detail: "HTTP 200 OK", At: at},
	}
	return a
}

// A rollout's changes read as one story in the flag's thread: the stage, the users, the
// time at the stage, every guardrail against its limit, and what was changed in PostHog.
func TestRolloutThreadGolden(t *testing.T) {
	adv := rolloutAlert("4", alert.RolloutAdvance, "ok", "10%", "25%", 3, 4, alert.Info,
		"new-checkout advanced to 25% (stage 4 of 6): guardrails hold, 1,240 new users per variant, 2 days at 10%",
		"Nothing: flagwatch advances new-checkout to 50% (stage 5 of 6) when this stage's minimums are met, and rolls it back if a guardrail breaks.")
	back := rolloutAlert("5", alert.RolloutBack, "ok", "25%", "0%", 4, 0, alert.Critical,
		"new-checkout rolled back to 0% at stage 4 of 6 (25%): errors per user +41% [+31%, +52%], beyond the +30% guardrail",
		"Find out why the guardrail broke; once fixed, run analyzer rollout resume new-checkout to ramp again.")
	back.Numbers.Rollout.Guardrails = []alert.GuardrailState{{Metric: "errors per user", Variant: "test", Limit: 0.3, Lift: 0.41,
		CI: [2]float64{0.31, 0.52}, Decision: alert.GuardrailBreach}}
	back.Numbers.Rollout.InStageSeconds = 28 * 3600

	open := Opening(adv, opts())
	open.Channel = "#checkout"
	reply := Reply(back, Update{New: Findings(back)}, opts())
	reply.Channel, reply.ThreadTS = "#checkout", "1762344000.000001"
	for _, m := range []slack.Message{open, reply} {
		require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	}
	th := Threads([]slack.Record{
		{Method: "chat.postMessage", TS: "1762344000.000001", Message: open},
		{Method: "chat.postMessage", TS: "1762344000.000002", Message: reply},
	})
	got := Text(th[0])
	golden(t, "rollout_thread.golden.txt", []byte(got))

	for _, want := range []string{
		"⏩ new-checkout — advanced to 25%",
		"new-checkout advanced to 25% (stage 4 of 6): guardrails hold, 1,240 new users per variant, 2 days at 10%",
		"Stage: stage 4 of 6 · 10% → 25% · 1,240 new users per variant · 2 days at 10%",
		"Guardrails: purchase conversion −1.2% [−8.0%, +5.9%] (limit −20%) · errors per user +3% [−5%, +12%] (limit +30%)",
		"Flag change (posthog `https://us.posthog.com/api/projects/1/feature_flags/42/`): ✅ ok · HTTP 200 OK",
		"New · ⏪ rolled back to 0%",
		"Stage: stage 4 of 6 · 25% → 0% · 1,240 new users per variant · 1d 4h at 25%",
		"What to do: Find out why the guardrail broke",
		"errors per user +41% [+31%, +52%] (limit +30%) 🔴 breached",
	} {
		require.Contains(t, got, want)
	}
	require.Equal(t, "Update on new-checkout: "+back.Summary, reply.Text)

	failed := rolloutAlert("6", alert.RolloutAdvance, "failed", "10%", "25%", 3, 4, alert.Warning, "new-checkout could not advance to 25%", "")
	require.Contains(t, text(Opening(failed, opts())), "⚠️ new-checkout — could not advance to 25%")
	require.Contains(t, text(Opening(failed, opts())), "Flag change (posthog `https://us.posthog.com/api/projects/1/feature_flags/42/`): ❌ failed")
	for change, want := range map[string]string{
		alert.RolloutStart: "▶️ new-checkout — rollout started at 25%", alert.RolloutComplete: "🏁 new-checkout — rollout complete at 10%",
		alert.RolloutHold: "⏸️ new-checkout — held at 10%",
	} {
		a := rolloutAlert("7", change, "ok", "10%", "25%", 3, 4, alert.Info, "s", "")
		require.True(t, strings.HasPrefix(text(Opening(a, opts())), want+"\n"), change)
	}
	stopped := text(Opening(rolloutAlert("8", alert.RolloutAdvance, "refused", "10%", "25%", 3, 4, alert.Warning, "s", ""), opts()))
	require.True(t, strings.HasPrefix(stopped, "🛑 new-checkout — rollout stopped at 10%\n"), stopped)
	require.Contains(t, stopped, "Stage: stage 3 of 6 · 1,240 new users per variant", "the stage it stays at, no arrow")
	notBack := text(Opening(rolloutAlert("9", alert.RolloutBack, "refused", "10%", "0%", 3, 0, alert.Critical, "s", ""), opts()))
	require.True(t, strings.HasPrefix(notBack, "🔴 new-checkout — could not roll back: changed by a person\n"), notBack)
}
