package notify

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/render/rendertest"
)

// watching returns a copy of a with sessions to watch on its finding about metric.
func watching(a *alert.Alert, metric, who string, ids ...string) *alert.Alert {
	c := *a
	c.Findings = append([]alert.Finding(nil), a.Findings...)
	for i := range c.Findings {
		if c.Findings[i].Metric != metric {
			continue
		}
		w := &alert.Watch{Who: who}
		for k, id := range ids {
			w.Sessions = append(w.Sessions, alert.Session{ID: id, URL: "https://us.posthog.com/project/1/replay/" + id,
				Start: rendertest.Detected.Add(-time.Duration(k+1) * time.Hour)})
		}
		c.Findings[i].Watch = w
		break
	}
	return &c
}

// An incident's sessions to watch are one reply in its thread, right after the opening,
// with a link per session; the same alert again, and a later alert of the incident with
// other sessions, post none; once the incident is closed, the next one gets its own.
func TestSessionsToWatchOncePerIncident(t *testing.T) {
	e := newEnv(t, 1)
	e.start(e.opts())
	ids := []string{"0192-a", "0192-b", "0192-c", "0192-d", "0192-e"}
	first := watching(rendertest.NewCheckout(), "purchase conversion", "GB users on test who did not purchase", ids...)
	e.produce(0, first)
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 2 }, "opening and sessions")
	open, watch := e.slack.Messages()[0], e.slack.Messages()[1]
	require.Equal(t, open.TS, watch.ThreadTS, "a reply in the incident's thread")
	require.Equal(t, "5 sessions to watch: GB users on test who did not purchase", watch.Text)
	body := plain(watch)
	for i, id := range ids {
		require.Contains(t, body, fmt.Sprintf("<https://us.posthog.com/project/1/replay/%s|Session %d · started ", id, i+1))
	}
	require.NotContains(t, body, "@", "links only: no emails")

	later := watching(rendertest.NewCheckoutLater(), "errors per user", "users on test with the most errors", "0193-x")
	e.produce(0, first, later, lossAlert("marker-1"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == 4 }, "the later alert's reply and the marker")
	msgs := e.slack.Messages()
	require.Contains(t, msgs[2].Text, "new-checkout", "the later alert replies with what is new")
	require.Contains(t, msgs[3].Text, "marker-1")
	for _, m := range msgs {
		require.NotContains(t, m.Text, "0193-x")
		require.NotContains(t, plain(m), "0193-x", "no second sessions reply in the incident")
	}
	watches := 0
	for _, r := range logRows(t, e.conn) {
		if r.Kind == nflog.KindWatch {
			watches++
			require.Equal(t, "watch|new-checkout#1|0", r.Op)
			require.Equal(t, nflog.StatusPosted, r.Status)
			require.Equal(t, open.TS, r.ThreadTS)
		}
	}
	require.Equal(t, 1, watches)

	// Every finding resolved: the incident closes; the next alert opens #2 with its own.
	var resolved []*alert.Alert
	for _, f := range later.Findings {
		resolved = append(resolved, resolvedAlert(&alert.Alert{Flag: later.Flag, Metric: f.Metric, Segment: f.Segment,
			Variant: f.Variant, SlackChannel: later.SlackChannel}))
	}
	e.produce(0, resolved...)
	eventually(t, 30*time.Second, func() bool {
		for _, m := range e.slack.Messages() {
			if strings.Contains(plain(m), "this incident is closed") {
				return true
			}
		}
		return false
	}, "the incident closed")
	n := len(e.slack.Messages())
	e.produce(0, watching(rendertest.NewCheckout(), "purchase conversion", "GB users on test who did not purchase", "0194-z"))
	eventually(t, 30*time.Second, func() bool { return len(e.slack.Messages()) == n+2 }, "a new incident and its sessions")
	msgs = e.slack.Messages()
	require.Empty(t, msgs[n].ThreadTS)
	require.Equal(t, msgs[n].TS, msgs[n+1].ThreadTS)
	require.Equal(t, "1 session to watch: GB users on test who did not purchase", msgs[n+1].Text)
	require.Contains(t, plain(msgs[n+1]), "https://us.posthog.com/project/1/replay/0194-z")
}
