package notify

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

func rolloutAlert(flag string, seq string, change, to string) *alert.Alert {
	return &alert.Alert{Flag: flag, Decision: alert.Rollout, Severity: alert.Info, DedupKey: flag + "|rollout|" + seq,
		Summary: flag + " advanced to " + to, SlackChannel: "#checkout", DetectedAt: detected,
		Numbers: alert.Numbers{Rollout: &alert.RolloutChange{Change: change, Status: "ok", ChangeID: flag + "|rollout|" + seq,
			FromStage: 1, ToStage: 2, Stages: 6, From: "1%", To: to}}}
}

// A rollout's changes through the notifier: the first opens the flag's thread, the
// next reply in it, a redelivered change is not posted twice, and an incident that
// opens later threads under the same message; closing that incident is not blocked by
// the rollout's messages.
func TestRolloutChangesThreadUnderTheFlag(t *testing.T) {
	e := newEnv(t, 1)
	e.start(e.opts())
	e.produce(0, rolloutAlert("new-checkout", "1", alert.RolloutStart, "1%"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 1 }, "first change")
	e.produce(0, rolloutAlert("new-checkout", "2", alert.RolloutAdvance, "5%"), rolloutAlert("new-checkout", "1", alert.RolloutStart, "1%"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "second change")
	guard := guardrailAlert("new-checkout")
	e.produce(0, guard)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 3 }, "breach")

	msgs := e.slack.Messages()
	parent := msgs[0]
	require.Empty(t, parent.ThreadTS)
	require.Contains(t, plain(parent), "new-checkout — rollout started at 1%")
	require.Equal(t, parent.TS, msgs[1].ThreadTS)
	require.Contains(t, plain(msgs[1]), "New · :fast_forward: advanced to 5%")
	require.NotContains(t, plain(msgs[1]), "Headline now", "a rollout change never leads the thread")
	require.Equal(t, parent.TS, msgs[2].ThreadTS)
	require.Contains(t, plain(msgs[2]), "Headline now · :red_circle: new-checkout — guardrail breached")

	e.produce(0, resolvedAlert(guard))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 4 }, "resolved")
	require.Contains(t, plain(e.slack.Messages()[3]), "this incident is closed")
	require.Len(t, e.slack.Calls("chat.update"), 1, "the first message is marked resolved")
}
