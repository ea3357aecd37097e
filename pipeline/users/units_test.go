package users

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Ids are percent-encoded wherever the template puts them, and the link still parses
// with the id in one path segment or one query value.
func TestRecordingLink(t *testing.T) {
	require.Empty(t, RecordingLink("", "s1", "u1"))
	require.Equal(t, "https://us.posthog.com/project/1/replay/0192a-b_c.d~e", RecordingLink("https://us.posthog.com/project/1/replay/{session_id}", "0192a-b_c.d~e", "u"))
	for _, id := range []string{"a/b", "a?b=c", "x&y=z", "a b+c", "é#frag", "../../admin", "%41"} {
		link := RecordingLink("https://app.example.com/people/{distinct_id}/replay?session={session_id}&x=1", id, id)
		u, err := url.Parse(link)
		require.NoError(t, err, link)
		require.Equal(t, "/people/"+id+"/replay", u.Path, link)
		require.Equal(t, id, u.Query().Get("session"), link)
		require.Equal(t, "1", u.Query().Get("x"))
		require.Empty(t, u.Fragment)
	}
}

func TestWho(t *testing.T) {
	conv := config.Metric{Name: "purchase conversion", Kind: config.Conversion, Event: "purchase"}
	errs := config.Metric{Name: "errors per user", Kind: config.Count, Event: "$exception"}
	refunds := config.Metric{Name: "refunds", Kind: config.Sum, Event: "refund", Property: "amount"}
	ratio := config.Metric{Name: "revenue per order", Kind: config.Ratio, Numerator: &config.Measure{Event: "purchase", Property: "revenue"},
		Denominator: &config.Measure{Event: "purchase"}}
	for _, tc := range []struct {
		seg  *Segment
		m    config.Metric
		up   bool
		want string
	}{
		{&Segment{"$geoip_country_code", "GB"}, conv, false, "GB users on test who did not purchase"},
		{nil, errs, true, "users on test with the most errors"},
		{&Segment{"plan", "free"}, conv, false, "users on test with plan = free who did not purchase"},
		{&Segment{ExposureDay, "2026-11-14"}, conv, false, "users first exposed on 2026-11-14 on test who did not purchase"},
		{nil, refunds, true, "users on test with the highest amount"},
		{nil, ratio, false, "users on test who did not purchase"},
		{nil, config.Metric{Kind: config.Count, Event: "$pageview"}, false, "users on test who did not view a page"},
		{nil, config.Metric{Kind: config.Count, Event: "crash"}, true, "users on test with the most crash events"},
	} {
		require.Equal(t, tc.want, who(tc.seg, "test", tc.m, tc.up))
	}
}

func TestFormatWindow(t *testing.T) {
	for d, want := range map[time.Duration]string{7 * 24 * time.Hour: "7d", 36 * time.Hour: "36h", 90 * time.Minute: "1h30m", 45 * time.Second: "45s"} {
		require.Equal(t, want, formatWindow(d))
	}
}

// A statement lists at most maxIDs users and maxIDBytes of them, so the query stays
// within 18.16's 256 KiB max_query_size even for long ids.
func TestChunks(t *testing.T) {
	long := strings.Repeat("x", 10_000)
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = "u"
		if i%100 == 0 {
			ids[i] = long
		}
	}
	cs := chunks(len(ids), func(i int) string { return ids[i] })
	next := 0
	for _, c := range cs {
		require.Equal(t, next, c[0])
		require.LessOrEqual(t, c[1]-c[0], maxIDs)
		n := 0
		for _, id := range ids[c[0]:c[1]] {
			n += len(id) + 4
		}
		require.LessOrEqual(t, n, maxIDBytes)
		next = c[1]
	}
	require.Equal(t, len(ids), next)
	require.Len(t, chunks(0, nil), 0)
}

// A cursor is tied to its query: the same query takes it, another refuses it.
func TestCursor(t *testing.T) {
	mons, err := config.Parse([]byte("defaults: {expose_users: true}\nflags: [{key: f, segments: [plan], metrics: [{name: m, kind: conversion, event: e}]}]"), "f.yaml")
	require.NoError(t, err)
	p, err := resolve(mons, Query{Flag: "f", Variant: "test"}, "")
	require.NoError(t, err)
	c := p.encodeCursor(cursor{T: 1700000000000, ID: "user-1"})
	p2, err := resolve(mons, Query{Flag: "f", Variant: "test", Cursor: c, Limit: 10}, "")
	require.NoError(t, err, "the limit may change between pages")
	require.Equal(t, &key{first: 1700000000000, id: "user-1"}, p2.after)
	for _, q := range []Query{
		{Flag: "f", Variant: "control", Cursor: c},
		{Flag: "f", Variant: "test", Cursor: c, Sort: OldestFirst},
		{Flag: "f", Variant: "test", Cursor: c, Converted: new(bool)},
		{Flag: "f", Variant: "test", Cursor: c, Segments: []Segment{{"plan", "free"}}},
		{Flag: "f", Variant: "test", Cursor: c + "x"},
	} {
		_, err := resolve(mons, q, "")
		require.True(t, IsBadQuery(err), "%+v: %v", q, err)
	}
}
