package users_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/users"
)

// A page of users with long distinct ids (300 ids of 1 KB) is read in several statements,
// each within 18.16's 256 KiB max_query_size, and nothing is lost between them.
func TestLongDistinctIDs(t *testing.T) {
	_, conn := chtest.DB(t)
	ctx := context.Background()
	mons, err := config.Parse([]byte(`defaults: {expose_users: true, recordings_url: "https://r.example/{distinct_id}/{session_id}", segments: [plan]}
flags: [{key: f, metrics: [{name: bought, kind: conversion, event: purchase}]}]`), "f.yaml")
	require.NoError(t, err)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var evs []event.Event
	const n = 300
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%04d-%s", i, strings.Repeat("x", 1000))
		ts := start.Add(time.Duration(i) * time.Minute)
		for _, msg := range []string{
			fmt.Sprintf(`{"event":"$feature_flag_called","distinct_id":%q,"timestamp":%q,"properties":{"$feature_flag":"f","$feature_flag_response":"test","plan":"pro","$session_id":"s-%d"}}`, id, ts.Format(time.RFC3339), i),
			fmt.Sprintf(`{"event":"purchase","distinct_id":%q,"timestamp":%q,"properties":{"$session_id":"s-%d"}}`, id, ts.Add(time.Minute).Format(time.RFC3339), i),
		} {
			if i%2 == 1 && strings.Contains(msg, "purchase") {
				continue
			}
			e, err := event.Decode([]byte(msg), ts)
			require.NoError(t, err)
			evs = append(evs, e...)
		}
	}
	_, _, err = store.NewWriter(conn).Write(ctx, evs)
	require.NoError(t, err)
	l := &users.Lister{Conn: conn, Monitors: mons}
	for _, q := range []users.Query{
		{Flag: "f", Limit: n},
		{Flag: "f", Converted: ptr(true), Limit: n},
		{Flag: "f", Converted: ptr(false), Sort: users.MostFirst, Limit: n},
		{Flag: "f", Segments: []users.Segment{{Property: "plan", Value: "pro"}}, Sort: users.OldestFirst, Limit: n},
	} {
		p, err := l.List(ctx, q)
		require.NoError(t, err)
		want := n
		if q.Converted != nil {
			want = n / 2
		}
		require.Len(t, p.Users, want, "%+v", q)
		for _, u := range p.Users {
			var i int
			_, err := fmt.Sscanf(u.DistinctID, "%04d-", &i)
			require.NoError(t, err)
			require.Equal(t, i%2 == 0, u.Converted)
			require.Equal(t, map[string]string{"plan": "pro"}, u.Segments)
			require.Len(t, u.Sessions, 1)
			require.Equal(t, fmt.Sprintf("s-%d", i), u.Sessions[0].ID)
			require.Equal(t, "https://r.example/"+u.DistinctID+"/"+u.Sessions[0].ID, u.Sessions[0].Recording)
		}
	}
}
