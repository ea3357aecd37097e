package users_test

import (
	"context"
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/users"
)

// TestUsers runs every check that needs the story's data on one fixture: building it
// (the story written to ClickHouse and an analyzer pass) is most of the time.
func TestUsers(t *testing.T) {
	f := newFixture(t)
	t.Run("cell equals the brute force", func(t *testing.T) { testCellEqualsBruteForce(t, f) })
	t.Run("by value", func(t *testing.T) { testByValue(t, f) })
	t.Run("api", func(t *testing.T) { testAPI(t, f) })
	t.Run("api errors", func(t *testing.T) { testAPIErrors(t, f) })
	t.Run("page", func(t *testing.T) { testPage(t, f) })
	t.Run("cli", func(t *testing.T) { testCLI(t, f) })
	t.Run("sessions to watch", func(t *testing.T) { testSessionsToWatch(t, f) })
	// Last: it runs a later pass.
	t.Run("slack", func(t *testing.T) { testSlack(t, f) })
}

func ptr[T any](v T) *T { return &v }

// all pages through q and returns every user, checking that pages do not overlap.
func all(t *testing.T, l *users.Lister, q users.Query) []users.User {
	t.Helper()
	var out []users.User
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100, "paging does not end")
		p, err := l.List(context.Background(), q)
		require.NoError(t, err)
		for _, u := range p.Users {
			require.False(t, seen[u.DistinctID], "%s on two pages", u.DistinctID)
			seen[u.DistinctID] = true
		}
		out = append(out, p.Users...)
		if p.NextCursor == "" {
			return out
		}
		q.Cursor = p.NextCursor
	}
}

// The users listed for new-checkout / test / GB / did not purchase are exactly those a
// recomputation from the raw records finds — first exposure on test in GB, never
// another variant, no purchase from first exposure until 7 days after — with their first
// exposure, segments and sessions; and their number is what the analyzer's cell says.
func testCellEqualsBruteForce(t *testing.T, f *fixture) {
	const week = 7 * 24 * time.Hour
	truths := f.users("new-checkout")
	byUser := f.byUser()
	want := map[string]*truth{}
	multipleGB := 0
	cell := 0
	for _, u := range truths {
		if u.variant != "test" || u.props.Country != "GB" {
			continue
		}
		if u.multiple() {
			multipleGB++
			continue
		}
		cell++
		if did(window(byUser[u.id], u, week), "purchase") == 0 {
			want[u.id] = u
		}
	}
	require.Positive(t, multipleGB, "the fixture has $multiple users in the cell to leave out")
	require.Greater(t, len(want), 1000, "more than one page")

	r := f.row("new-checkout", "purchase conversion", "$geoip_country_code", "GB", "test")
	require.NotNil(t, r)
	require.Equal(t, int64(cell), r.N, "the analyzer's cell has the same users")
	require.InDelta(t, float64(len(want)), float64(r.N)*(1-r.Mean), 1e-6, "and the same conversions")

	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	got := all(t, l, users.Query{Flag: "new-checkout", Variant: "test", Metric: "purchase conversion",
		Segments: []users.Segment{{Property: "$geoip_country_code", Value: "GB"}}, Converted: ptr(false), Limit: users.MaxLimit})
	require.Len(t, got, len(want))
	for i, u := range got {
		w := want[u.DistinctID]
		require.NotNil(t, w, "%s is not in the cell", u.DistinctID)
		require.False(t, u.Converted)
		require.Zero(t, u.Value)
		require.Equal(t, "test", u.Variant)
		if i > 0 {
			prev := got[i-1]
			require.True(t, prev.FirstExposure.After(u.FirstExposure) ||
				prev.FirstExposure.Equal(u.FirstExposure) && prev.DistinctID > u.DistinctID, "newest first")
		}
	}
	// A sample, field by field.
	for _, u := range []users.User{got[0], got[len(got)/2], got[len(got)-1]} {
		w := want[u.DistinctID]
		require.Equal(t, time.UnixMilli(w.first).UTC(), u.FirstExposure)
		require.Equal(t, map[string]string{"$geoip_country_code": "GB", "plan": w.props.Plan}, u.Segments)
		var sessions []string
		events := map[string]int{}
		for _, e := range window(byUser[u.DistinctID], w, week) {
			if s := e.Properties.Session; s != "" {
				if events[s] == 0 {
					sessions = append(sessions, s)
				}
				events[s]++
			}
		}
		require.NotEmpty(t, sessions)
		require.Len(t, u.Sessions, len(sessions))
		for _, s := range u.Sessions {
			require.Equal(t, events[s.ID], s.Events, "events of session %s", s.ID)
			require.Equal(t, "https://us.posthog.com/project/1/replay/"+s.ID, s.Recording)
			require.False(t, s.End.Before(s.Start))
		}
	}
	// And no $multiple user anywhere in the flag's lists.
	every := all(t, l, users.Query{Flag: "new-checkout", Limit: users.MaxLimit})
	for _, u := range every {
		require.False(t, truths[u.DistinctID].multiple(), "%s saw two variants", u.DistinctID)
		require.NotEqual(t, users.Multiple, u.Variant)
	}
	single := 0
	for _, u := range truths {
		if !u.multiple() {
			single++
		}
	}
	require.Len(t, every, single)
}

// Ordered by revenue, the top of test's users and their revenue equal the brute force's,
// and offset paging reaches the same users as first-exposure paging.
func testByValue(t *testing.T, f *fixture) {
	const week = 7 * 24 * time.Hour
	byUser := f.byUser()
	type scored struct {
		id    string
		first int64
		rev   float64
	}
	var want []scored
	for _, u := range f.users("new-checkout") {
		if u.variant != "test" || u.multiple() {
			continue
		}
		rev := 0.0
		for _, e := range window(byUser[u.id], u, week) {
			if e.Event == "purchase" {
				rev += e.Properties.Revenue
			}
		}
		if rev > 0 {
			want = append(want, scored{u.id, u.first, rev})
		}
	}
	sort.Slice(want, func(i, j int) bool {
		a, b := want[i], want[j]
		if a.rev != b.rev {
			return a.rev > b.rev
		}
		if a.first != b.first {
			return a.first > b.first
		}
		return a.id > b.id
	})
	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	q := users.Query{Flag: "new-checkout", Variant: "test", Metric: "revenue per user", Converted: ptr(true), Sort: users.MostFirst, Limit: 25}
	p, err := l.List(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, p.Users, 25)
	require.NotEmpty(t, p.NextCursor)
	for i, u := range p.Users {
		require.Equal(t, want[i].id, u.DistinctID, "rank %d", i)
		require.InDelta(t, want[i].rev, u.Value, 1e-6*math.Max(1, want[i].rev))
		require.True(t, u.Converted)
	}
	got := all(t, l, users.Query{Flag: q.Flag, Variant: q.Variant, Metric: q.Metric, Converted: q.Converted, Sort: users.LeastFirst, Limit: 700})
	require.Len(t, got, len(want))
	ids := make([]string, len(got))
	for i, u := range got {
		ids[i] = u.DistinctID
	}
	require.Equal(t, want[len(want)-1].id, ids[0], "least first")
	slices.Reverse(ids)
	wantIDs := make([]string, len(want))
	for i, w := range want {
		wantIDs[i] = w.id
	}
	require.Equal(t, wantIDs, ids)
}
