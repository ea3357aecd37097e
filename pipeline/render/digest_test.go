package render

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/render/rendertest"
	"github.com/flagwatch/flagwatch/pipeline/slack/slacktest"
)

// The digest for a fixed set of results: flags by the headline priority, new-checkout's
// diverging countries with GB losing, totals with intervals only where they exist.
func TestDigestGolden(t *testing.T) {
	now, prev := rendertest.DigestRows()
	msgs := Digest(digest.Summarise(now, prev), rendertest.DigestAt, opts())
	require.Len(t, msgs, 1)
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, msgs[0])))
	golden(t, "digest.golden.json", prettyJSON(t, msgs))
	got := text(msgs[0])
	golden(t, "digest.golden.txt", []byte(got))

	i := func(s string) int {
		n := strings.Index(got, s)
		require.GreaterOrEqual(t, n, 0, "missing %q", s)
		return n
	}
	require.Less(t, i("fast-search"), i("onboarding-v2"), "guardrail breach before SRM")
	require.Less(t, i("onboarding-v2"), i("new-checkout"), "SRM before divergence")
	require.Less(t, i("new-checkout"), i("dark-mode"), "divergence before win")
	require.Contains(t, got, "🟠 new-checkout — segments diverge by $geoip_country_code on purchase conversion (last week: inconclusive)")
	require.Contains(t, got, "• purchase conversion (test): GB −67% [−80%, −54%] loss · IN +36% [+21%, +51%] win · US +32% [+20%, +44%] win · DE +2% [−20%, +24%]; total +5% [−1%, +12%] (inconclusive) — segments diverge by $geoip_country_code")
	require.Contains(t, got, "What explains it: $geoip_country_code (purchase conversion, revenue per user; found by property discovery) · No evidence the effect differs by: $browser, plan")
	require.NotContains(t, got, "[0%, 0%]")
	require.NotContains(t, got, "$geoip_country_code = ", "no empty segment value")
}

// Many flags split over several messages of at most 50 blocks each.
func TestDigestSplitsLargeDigests(t *testing.T) {
	var fs []digest.Flag
	for i := 0; i < 60; i++ {
		fs = append(fs, digest.Flag{Key: "flag-" + string(rune('a'+i%26)), Status: alert.Inconclusive})
	}
	msgs := Digest(fs, rendertest.DigestAt, Options{})
	require.Greater(t, len(msgs), 2)
	for _, m := range msgs {
		require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	}
}

// Flag keys, metric names and segment values from events reach the digest escaped.
func TestDigestEscapes(t *testing.T) {
	rows := []digest.Row{
		{Flag: "<!channel>", Metric: "<@U123>", Variant: "<!here>", N: 10, Lift: 0.1, CILow: 0.05, CIHigh: 0.15, Decision: alert.Win},
		{Flag: "<!channel>", Metric: "<@U123>", Variant: "<!here>", SegmentProperty: "<!here>", SegmentValue: "<@U123>", N: 5,
			Lift: -0.2, CILow: -0.3, CIHigh: -0.1, Decision: alert.Loss},
		{Flag: "<!channel>", Decision: alert.SRM, Reason: "<http://evil.example|click>"},
	}
	for _, m := range Digest(digest.Summarise(rows, nil), rendertest.DigestAt, opts()) {
		requireInert(t, "digest", m)
	}
}
