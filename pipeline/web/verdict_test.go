package web

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/stats"
)

// halfWidth is the always-valid interval's half-width at m users per variant, for a lift
// whose standard error is se at n per variant — computed here from stats directly.
func halfWidth(se float64, n, m int64, alpha, tuning float64) float64 {
	e := stats.Effect{SE: se * math.Sqrt(float64(n)/float64(m)), N: 2 * float64(m)}
	iv := e.Sequential(alpha, tuning)
	return (iv.Hi - iv.Lo) / 2
}

// The estimate is the least number of users at which the interval is as narrow as the
// effect: one user fewer is not enough.
func TestExtraUsersPerVariantIsTheLeastThatSuffices(t *testing.T) {
	for _, tc := range []struct {
		se     float64
		n      int64
		effect float64
	}{
		{0.031, 10000, 0.05}, {0.08, 1500, 0.05}, {0.2, 120, 0.10}, {0.01, 50000, 0.02}, {0.5, 30, 0.05},
	} {
		extra := ExtraUsersPerVariant(tc.se, tc.n, tc.effect, 0.05, 5000)
		require.Positive(t, extra, "%+v", tc)
		m := tc.n + extra
		require.LessOrEqual(t, halfWidth(tc.se, tc.n, m, 0.05, 5000), tc.effect, "%+v at %d", tc, m)
		require.Greater(t, halfWidth(tc.se, tc.n, m-1, 0.05, 5000), tc.effect, "%+v at %d", tc, m-1)
	}
	// Already narrow enough: nothing more to wait for.
	require.Zero(t, ExtraUsersPerVariant(0.001, 100000, 0.05, 0.05, 5000))
	// No standard error: no estimate.
	require.Equal(t, int64(-1), ExtraUsersPerVariant(0, 100, 0.05, 0.05, 5000))
}

func TestRoundUsersUpToTwoDigits(t *testing.T) {
	for in, want := range map[float64]int64{2271: 2300, 2300: 2300, 99: 99, 7: 7, 123456: 130000, 1001: 1100} {
		require.Equal(t, want, roundUsers(in), "%v", in)
	}
}

func TestFormats(t *testing.T) {
	require.Equal(t, "+12.3%", Pct(0.1234))
	require.Equal(t, "−5.0%", Pct(-0.05))
	require.Equal(t, "+0.0%", Pct(-0.00001))
	require.Equal(t, "[−3.1%, +20.9%]", Interval(-0.031, 0.209))
	require.Equal(t, "12,345", Count(12345))
	require.Equal(t, "999", Count(999))
	require.Equal(t, "1,000,000", Count(1000000))
	require.Equal(t, "< 0.0001", PValue(1e-9))
	require.Equal(t, "p < 0.0001", pText(1e-9))
	require.Equal(t, "p = 0.030", pText(0.03))
	require.Equal(t, "5%", effectText(0.05))
	require.Equal(t, "2.5%", effectText(0.025))
}

func TestFileNameIsSafe(t *testing.T) {
	for key, want := range map[string]string{
		"new-checkout": "new-checkout",
		"a/b":          "a%2Fb",
		"..":           "%2E.",
		`"><x>`:        "%22%3E%3Cx%3E",
		"v1.2":         "v1.2",
	} {
		require.Equal(t, want, fileName(key))
	}
}
