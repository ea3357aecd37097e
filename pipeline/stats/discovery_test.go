package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// Three segments (2 df): the χ² survival function has the closed form e^(−Q/2),
// and Q the textbook alternative form Σwy² − (Σwy)²/Σw (Borenstein et al.,
// Introduction to Meta-Analysis, 2009, eq. 16.1–16.2), computed here
// independently of cochranQ.
func TestHeterogeneityClosedForm(t *testing.T) {
	seg := []SegmentEffect{{Value: "US", Lift: 0.4, SE: 0.1}, {Value: "IN", Lift: 0.36, SE: 0.15}, {Value: "GB", Lift: -0.67, SE: 0.2}}
	var sw, swy, swyy float64
	for _, s := range seg {
		w := 1 / (s.SE * s.SE)
		sw, swy, swyy = sw+w, swy+w*s.Lift, swyy+w*s.Lift*s.Lift
	}
	q := swyy - swy*swy/sw
	h := Heterogeneity(seg)
	require.InDelta(t, q, h.Q, 1e-9)
	require.Equal(t, 2, h.DF)
	require.InDelta(t, math.Exp(-q/2), h.P, 1e-12)
	require.InDelta(t, (q-2)/q, h.I2, 1e-12)

	// Equal lifts: no heterogeneity at all.
	h = Heterogeneity([]SegmentEffect{{Lift: 0.1, SE: 0.1}, {Lift: 0.1, SE: 0.3}})
	require.InDelta(t, 0, h.Q, 1e-12)
	require.InDelta(t, 1, h.P, 1e-12)
	require.Zero(t, h.I2)

	// Segments without information are left out; fewer than two: undefined.
	h = Heterogeneity([]SegmentEffect{{Lift: 0.1, SE: 0.1}, {Lift: math.NaN(), SE: 0.1}, {Lift: 1, SE: 0}})
	require.Equal(t, 1.0, h.P)
	require.Zero(t, h.DF)
}

// Under homogeneity Q is χ²(k−1): its test rejects at the nominal rate.
func TestHeterogeneitySize(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 1))
	const sims = 4000
	rejected := 0
	for range sims {
		var seg []SegmentEffect
		for range 6 {
			se := 0.02 + 0.2*rng.Float64()
			seg = append(seg, SegmentEffect{Lift: 0.05 + se*rng.NormFloat64(), SE: se})
		}
		if Heterogeneity(seg).P < 0.05 {
			rejected++
		}
	}
	rate := float64(rejected) / sims
	t.Logf("Cochran's Q rejections at 5%% under homogeneity: %.4f", rate)
	require.InDelta(t, 0.05, rate, 3*binomialSE(0.05, sims))
}

// Montgomery's Table 9.3 (see TestCUSUMARLMatchesMontgomery): the two-sided
// CUSUM with k = 1/2 has ARL₀ ≈ 168 at h = 4 and ≈ 465 at h = 5, so the
// threshold for those ARLs is 4 and 5 (within Siegmund's ≈1% of the table).
// The threshold inverts the ARL exactly, and grows with the ARL asked for.
func TestCUSUMThreshold(t *testing.T) {
	require.InDelta(t, 4, CUSUMThreshold(0.5, 168), 0.01)
	require.InDelta(t, 5, CUSUMThreshold(0.5, 465), 0.01)
	for _, arl := range []float64{50, 1286, 1286 * 40, 1e7} {
		h := CUSUMThreshold(DefaultShiftK, arl)
		require.InEpsilon(t, arl, CUSUMARL(DefaultShiftK, h, 0)/2, 1e-6)
	}
	require.Greater(t, CUSUMThreshold(0.5, 1286*40), CUSUMThreshold(0.5, 1286))
	require.InDelta(t, DefaultShiftH, CUSUMThreshold(DefaultShiftK, CUSUMARL(DefaultShiftK, DefaultShiftH, 0)/2), 1e-6)
	require.Zero(t, CUSUMThreshold(0.5, 1))
}

// A family of S series watched with the threshold for S·ARL₀ raises its first
// false alarm after about ARL₀ periods: simulated on 10 series.
func TestCUSUMThresholdFamilyRunLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 2))
	const series, arl0 = 10, 200.0
	h := CUSUMThreshold(DefaultShiftK, series*arl0)
	cfg := ShiftConfig{H: h}
	const runs = 300
	var total float64
	for range runs {
		first := math.Inf(1)
		for range series {
			ps := make([]Point, 4000) // the first of 10 alarms is past 4,000 with probability ≈ e⁻²⁰
			for i := range ps {
				se := 0.5 + rng.Float64()
				ps[i] = Point{Value: se * rng.NormFloat64(), SE: se}
			}
			s, err := DetectShift(ps, cfg)
			require.NoError(t, err)
			if s.Detected {
				first = math.Min(first, float64(s.At))
			}
		}
		total += first
	}
	mean := total / runs
	t.Logf("first false alarm of %d series at h = %.2f: mean %.0f periods (target %.0f)", series, h, mean, arl0)
	// The minimum of 10 roughly geometric run lengths is roughly geometric: the mean
	// of 300 has a relative SE of about 6%; Siegmund's approximation is within a few %.
	require.InEpsilon(t, arl0, mean, 0.25)
}

// Benjamini–Bogomolov selection: BH over the family p-values, then q·R/m.
// By hand: p = (0.001, 0.2, 0.03, 0.9) at q = 0.05: BH-adjusted (0.004, 0.267,
// 0.06, 0.9): only the first is selected, so R/m = 1/4 and the level 0.0125.
func TestSelectFamiliesByHand(t *testing.T) {
	s := SelectFamilies([]float64{0.001, 0.2, 0.03, 0.9}, 0.05)
	require.Equal(t, []bool{true, false, false, false}, s.Selected)
	require.InDeltaSlice(t, []float64{0.004, 0.8 / 3, 0.06, 0.9}, s.FamilyAdjusted, 1e-12)
	require.InDelta(t, 0.0125, s.Level, 1e-15)
	require.Zero(t, SelectFamilies(nil, 0.05).Level)
	require.Zero(t, SelectFamilies([]float64{0.5, 0.7}, 0.05).Level)
}
