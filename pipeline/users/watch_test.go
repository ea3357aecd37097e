package users_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/users"
)

// finding returns the pass's finding with this decision and metric on flag.
func (f *fixture) finding(t *testing.T, flag, decision, metric string) (alert.Alert, alert.Finding) {
	t.Helper()
	for _, a := range f.pass.Alerts {
		for _, x := range a.Findings {
			if a.Flag == flag && x.Decision == decision && x.Metric == metric {
				return a, x
			}
		}
	}
	t.Fatalf("no %s on %s of %s in the pass", decision, metric, flag)
	return alert.Alert{}, alert.Finding{}
}

// sessionOwners maps every $session_id in a user's window to the user.
func sessionOwners(f *fixture, flag string, w time.Duration) (map[string]*truth, map[string][]rawEvent) {
	byUser := f.byUser()
	out := map[string]*truth{}
	for _, u := range f.users(flag) {
		for _, e := range window(byUser[u.id], u, w) {
			if e.Properties.Session != "" {
				out[e.Properties.Session] = u
			}
		}
	}
	return out, byUser
}

// The sessions to watch behind the story's findings: for new-checkout's GB loss on
// purchases (and its divergence, whose worst segment is GB), sessions of GB users on
// test who did not purchase in their week, newest first, one per user; for
// fast-search's errors breach, sessions of the test users with the most errors, each
// one's session with the most. Links follow the template. Nothing for a flag that
// does not expose its users or has no template, or for a win.
func testSessionsToWatch(t *testing.T, f *fixture) {
	const week = 7 * 24 * time.Hour
	ctx := context.Background()

	// What the analyzer attached to the incidents of the pass.
	nc, div := f.finding(t, "new-checkout", alert.SegmentDivergence, "revenue per user")
	require.Equal(t, nc.Findings[0].DedupKey, div.DedupKey, "the divergence leads new-checkout's incident")
	require.NotNil(t, div.Watch, "the first new finding with sessions carries them")
	for _, x := range nc.Findings[1:] {
		require.Nil(t, x.Watch, "one finding per incident carries sessions")
	}
	fs, breach := f.finding(t, "fast-search", alert.GuardrailBreach, "errors per user")
	require.Equal(t, fs.Findings[0].DedupKey, breach.DedupKey)

	_, loss := f.finding(t, "new-checkout", alert.Loss, "purchase conversion")
	got, err := users.SessionsToWatch(ctx, f.conn, f.mons, "new-checkout", loss)
	require.NoError(t, err)
	require.Equal(t, "GB users on test who did not purchase", got.Who)
	require.Equal(t, "GB users on test who did not purchase", div.Watch.Who, "the divergence's worst segment is GB")
	owners, byUser := sessionOwners(f, "new-checkout", week)
	for _, w := range []*alert.Watch{got, div.Watch} {
		require.Len(t, w.Sessions, users.WatchSessions)
		seen := map[string]bool{}
		var prev int64
		for i, s := range w.Sessions {
			u := owners[s.ID]
			require.NotNil(t, u, "session %s is in a user's window", s.ID)
			require.Equal(t, "test", u.variant)
			require.Equal(t, "GB", u.props.Country)
			require.False(t, u.multiple())
			require.Zero(t, did(window(byUser[u.id], u, week), "purchase"), "%s did not purchase", u.id)
			require.False(t, seen[u.id], "one session per user")
			seen[u.id] = true
			require.Equal(t, "https://us.posthog.com/project/1/replay/"+s.ID, s.URL)
			if i > 0 {
				require.LessOrEqual(t, u.first, prev, "newest first")
			}
			prev = u.first
			// Their first session after exposure.
			first := ""
			for _, e := range window(byUser[u.id], u, week) {
				if e.Properties.Session != "" {
					first = e.Properties.Session
					break
				}
			}
			require.Equal(t, first, s.ID)
		}
	}

	require.NotNil(t, breach.Watch)
	require.Equal(t, "users on test with the most errors", breach.Watch.Who)
	require.Len(t, breach.Watch.Sessions, users.WatchSessions)
	owners, byUser = sessionOwners(f, "fast-search", week)
	most := 0
	for _, u := range f.users("fast-search") {
		if u.variant == "test" && !u.multiple() {
			most = max(most, did(window(byUser[u.id], u, week), "$exception"))
		}
	}
	prevErrors := most
	for _, s := range breach.Watch.Sessions {
		u := owners[s.ID]
		require.NotNil(t, u)
		require.Equal(t, "test", u.variant)
		n := did(window(byUser[u.id], u, week), "$exception")
		require.LessOrEqual(t, n, prevErrors, "most errors first")
		prevErrors = n
		perSession := map[string]int{}
		for _, e := range window(byUser[u.id], u, week) {
			if e.Event == "$exception" {
				perSession[e.Properties.Session]++
			}
		}
		for _, k := range perSession {
			require.LessOrEqual(t, k, perSession[s.ID], "the user's session with the most errors")
		}
	}
	require.Equal(t, most, did(window(byUser[owners[breach.Watch.Sessions[0].ID].id], owners[breach.Watch.Sessions[0].ID], week), "$exception"))

	// Nothing to watch.
	_, win := f.finding(t, "new-checkout", alert.Win, "purchase conversion")
	w, err := users.SessionsToWatch(ctx, f.conn, f.mons, "new-checkout", win)
	require.NoError(t, err)
	require.Nil(t, w, "a win")
	w, err = users.SessionsToWatch(ctx, f.conn, f.mons, "new-onboarding", alert.Finding{Metric: "purchase conversion", Variant: "test", Decision: alert.Loss})
	require.NoError(t, err)
	require.Nil(t, w, "expose_users: false")
	noLinks, err := config.Parse([]byte(monitorsYAML+"\n"), "f.yaml")
	require.NoError(t, err)
	noLinks.Defaults.RecordingsURL = ""
	for i := range noLinks.Flags {
		noLinks.Flags[i].RecordingsURL = ""
	}
	w, err = users.SessionsToWatch(ctx, f.conn, noLinks, "new-checkout", loss)
	require.NoError(t, err)
	require.Nil(t, w, "no recordings_url")
}
