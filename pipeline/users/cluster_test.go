package users_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/demo"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
	"github.com/flagwatch/flagwatch/pipeline/users"
)

// On a 2 × 2 cluster (reads through the Distributed tables) every kind of page — first
// exposure with and without a converted filter, by value, the flag page's sample, the
// sessions to watch — equals a single node's over the same data.
func TestClusterEqualsSingleNode(t *testing.T) {
	cl := chtest.SharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	flags := demo.Story()
	flags[0].ReassignFrac = 0.05
	cfg := synth.Config{Seed: 7, Users: 3000, Days: 6, Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), Flags: flags}
	var evs []event.Event
	require.NoError(t, cfg.Each(func(r synth.Record) error {
		var err error
		evs, err = event.AppendDecode(evs, r.Value, r.Time)
		return err
	}))
	mons, err := config.Parse([]byte(monitorsYAML), "flagwatch.yaml")
	require.NoError(t, err)

	_, single := chtest.DB(t)
	dsns := cl.Database(t)
	node, err := store.Open(ctx, dsns[0], store.WithCluster(cl.Name))
	require.NoError(t, err)
	defer node.Close()
	require.NoError(t, store.Migrate(ctx, node))
	for _, c := range []store.Conn{single, node} {
		w := store.NewWriter(c)
		for i := 0; i < len(evs); i += 5000 {
			_, _, err := w.Write(ctx, evs[i:min(i+5000, len(evs))])
			require.NoError(t, err)
		}
	}
	one, many := &users.Lister{Conn: single, Monitors: mons}, &users.Lister{Conn: node, Monitors: mons}
	gb := []users.Segment{{Property: "$geoip_country_code", Value: "GB"}}
	for _, q := range []users.Query{
		{Flag: "new-checkout", Limit: 300},
		{Flag: "new-checkout", Variant: "test", Segments: gb, Converted: ptr(false), Limit: 100},
		{Flag: "new-checkout", Variant: "test", Metric: "revenue per user", Converted: ptr(true), Sort: users.MostFirst, Limit: 40},
		{Flag: "fast-search", Variant: "test", Metric: "errors per user", Sort: users.LeastFirst, Limit: 100},
	} {
		a, b := all(t, one, q), all(t, many, q)
		require.NotEmpty(t, a)
		require.Equal(t, a, b, "%+v", q)
	}
	a, err := one.Users(ctx, "new-checkout")
	require.NoError(t, err)
	b, err := many.Users(ctx, "new-checkout")
	require.NoError(t, err)
	require.Equal(t, a, b)
	gbValue := "GB"
	loss := alert.Finding{Metric: "purchase conversion", Variant: "test", Decision: alert.Loss,
		Segment: &alert.Segment{Property: "$geoip_country_code", Value: &gbValue}}
	wa, err := users.SessionsToWatch(ctx, single, mons, "new-checkout", loss)
	require.NoError(t, err)
	wb, err := users.SessionsToWatch(ctx, node, mons, "new-checkout", loss)
	require.NoError(t, err)
	require.NotNil(t, wa)
	require.Equal(t, wa, wb)
}
