package stats

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func twoArms(c, t Moments) []Variant {
	return []Variant{{Name: "control", Moments: c}, {Name: "test", Moments: t}}
}

func TestEvaluateDecisions(t *testing.T) {
	errorsPerUser := func(n int64, sum float64) Moments { return mean(n, sum, 1.6*sum) }
	tests := []struct {
		name   string
		x      Experiment
		want   Decision
		reason string // substring of Reason
	}{
		{"win", Experiment{Kind: Conversion, Variants: twoArms(conv(10000, 1000), conv(10000, 1200))},
			DecisionWin, "excludes 0"},
		// SPEC's example: +10% with fixed-horizon p = 0.028 but an always-valid
		// interval that still includes 0 — exactly the call peeking would get wrong.
		{"spec example is inconclusive", Experiment{Kind: Conversion, Variants: twoArms(conv(10000, 1000), conv(10000, 1100))},
			DecisionInconclusive, "interval [-4.2%, +24.2%]"},
		{"significant drop of an increase metric is a loss", Experiment{Kind: Conversion,
			Variants: twoArms(conv(10000, 1000), conv(10000, 800))}, DecisionLoss, "lift -20.0%"},
		{"significant rise of a decrease metric is a loss", Experiment{Kind: Count, Goal: Decrease,
			Variants: twoArms(errorsPerUser(10000, 1000), errorsPerUser(10000, 1200))}, DecisionLoss, "lift +20.0%"},
		{"significant fall of a decrease metric is a win", Experiment{Kind: Count, Goal: Decrease,
			Variants: twoArms(errorsPerUser(10000, 1000), errorsPerUser(10000, 800))}, DecisionWin, "lift -20.0%"},
		{"below the minimum sample", Experiment{Kind: Conversion, Variants: twoArms(conv(50, 5), conv(50, 25))},
			DecisionInsufficientData, "50 users in the smaller arm, need 100"},
		{"zero baseline", Experiment{Kind: Conversion, Variants: twoArms(conv(500, 0), conv(500, 3))},
			DecisionInsufficientData, "control mean is zero"},
		{"srm", Experiment{Kind: Conversion, Variants: twoArms(conv(5200, 520), conv(4800, 600))},
			DecisionSRM, "sample ratio mismatch: χ²=16.0"},
		{"guardrail breach", Experiment{Kind: Count, Goal: Decrease, Guardrail: &Guardrail{MaxIncrease: 0.3},
			Variants: twoArms(errorsPerUser(5000, 500), errorsPerUser(5000, 1000))},
			DecisionGuardrailBreach, "beyond the guardrail limit +30.0%"},
		// Fires before the minimum sample and overrides SRM (SPEC §4).
		// 200 vs 120 users is an SRM (χ² = 20); errors per user go 0.2 → 3.
		{"guardrail breach before minimum sample and under srm", Experiment{Kind: Count, Guardrail: &Guardrail{MaxIncrease: 0.3},
			MinUsers: 1000, Variants: twoArms(mean(200, 40, 48), mean(120, 360, 1440))}, DecisionGuardrailBreach, "lower bound"},
		// A significant +20% rise is a loss but not beyond a +30% limit.
		{"rise within the guardrail", Experiment{Kind: Count, Goal: Decrease, Guardrail: &Guardrail{MaxIncrease: 0.3},
			Variants: twoArms(errorsPerUser(10000, 1000), errorsPerUser(10000, 1200))}, DecisionLoss, "excludes 0"},
		{"max_decrease guardrail", Experiment{Kind: Sum, Guardrail: &Guardrail{MaxDecrease: 0.2},
			Variants: twoArms(mean(5000, 50000, 1e6), mean(5000, 25000, 0.5e6))}, DecisionGuardrailBreach, "upper bound"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Evaluate(tc.x)
			require.NoError(t, err)
			require.Len(t, rep.Results, 1)
			r := rep.Results[0]
			require.Equal(t, tc.want, r.Decision, r.Reason)
			require.Contains(t, r.Reason, tc.reason)
		})
	}
}

// Two variants each just significant on their own (sequential p ≈ 0.027
// and 0.035) are both wins uncorrected, but not after Holm (2 × 0.027 > α).
func TestEvaluateCorrectsAcrossVariants(t *testing.T) {
	x := Experiment{Kind: Conversion, Variants: []Variant{
		{Name: "control", Moments: conv(20000, 2000)},
		{Name: "a", Moments: conv(20000, 2220)},
		{Name: "b", Moments: conv(20000, 2215)},
	}}
	x.Correction = NoCorrection
	rep, err := Evaluate(x)
	require.NoError(t, err)
	for _, r := range rep.Results {
		require.Equal(t, DecisionWin, r.Decision)
		require.Equal(t, r.Sequential.P, r.SequentialPAdjusted)
	}
	x.Correction = ""
	rep, err = Evaluate(x)
	require.NoError(t, err)
	require.Equal(t, Holm, rep.Correction)
	for _, r := range rep.Results {
		require.Equal(t, DecisionInconclusive, r.Decision, r.Reason)
		require.Contains(t, r.Reason, "excludes 0, but not after the holm correction (p=")
		require.Contains(t, r.Reason, "holm-adjusted")
	}
	require.InDelta(t, 2*rep.Results[0].Sequential.P, rep.Results[0].SequentialPAdjusted, 1e-15)
	require.Equal(t, "a", rep.Results[0].Name)
	require.Equal(t, int64(20000), rep.Control.N)
	require.InDelta(t, 0.1, rep.Control.Mean, 1e-15)
}

func TestEvaluateControlIndexAndCUPEDReport(t *testing.T) {
	pre := func(m Moments, s, ss, x float64) Moments { m.Pre = &PrePeriod{Sum: s, SumSq: ss, Cross: x}; return m }
	x := Experiment{Kind: Mean, Control: 1, Variants: []Variant{
		{Name: "test", Moments: pre(mean(3461, 2422.7, 134698.29), 22.7, 1348.29, 1)},
		{Name: "control", Moments: pre(mean(3000, 1396.87, 52377.9767), 16.87, 527.9767, 1)},
	}}
	rep, err := Evaluate(x)
	require.NoError(t, err)
	require.Equal(t, "control", rep.Control.Name)
	r := rep.Results[0]
	require.True(t, r.Effect.CUPED.Applied)
	// Same as gbstats' test_sequential_test_runs_ra (see reference_test.go).
	require.InDelta(t, -0.50969, r.Sequential.Lo, gbTol)

	x.Variants[0].Moments.Pre = nil
	rep, err = Evaluate(x)
	require.NoError(t, err)
	require.False(t, rep.Results[0].Effect.CUPED.Applied)
	require.Equal(t, "pre-period data missing for a variant", rep.Results[0].Effect.CUPED.Reason)
}

func TestEvaluateRejectsBadExperiments(t *testing.T) {
	ok := twoArms(conv(100, 10), conv(100, 12))
	tests := []struct {
		x    Experiment
		want string
	}{
		{Experiment{Kind: "median", Variants: ok}, `evaluate: unknown metric kind "median"`},
		{Experiment{Kind: Conversion, Variants: ok[:1]}, "evaluate: need at least 2 variants, got 1"},
		{Experiment{Kind: Conversion, Variants: ok, Alpha: 0.5}, "evaluate: alpha must be in (0, 0.5), got 0.5"},
		{Experiment{Kind: Conversion, Variants: ok, Control: 2}, "evaluate: control index 2 out of range"},
		{Experiment{Kind: Conversion, Variants: ok, Tuning: -1}, "evaluate: sequential tuning must be positive, got -1"},
		{Experiment{Kind: Conversion, Variants: ok, Goal: "up"}, `evaluate: unknown goal "up"`},
		{Experiment{Kind: Conversion, Variants: ok, Guardrail: &Guardrail{}},
			"evaluate: guardrail needs exactly one of max_increase and max_decrease, positive"},
		{Experiment{Kind: Conversion, Variants: ok, Prior: &Prior{Variance: 0}}, "evaluate: prior variance must be positive, got 0"},
		{Experiment{Kind: Conversion, Variants: twoArms(conv(1, 1), conv(100, 12))},
			`evaluate: variant "control": need at least 2 users, got 1`},
		{Experiment{Kind: Conversion, Variants: ok, Split: []float64{1, 0}},
			"evaluate: srm: split weight 1 must be positive, got 0"},
	}
	for _, tc := range tests {
		_, err := Evaluate(tc.x)
		require.EqualError(t, err, tc.want)
	}
}

func TestLatch(t *testing.T) {
	tests := []struct{ prev, next, want Decision }{
		{"", DecisionInconclusive, DecisionInconclusive},
		{"", DecisionWin, DecisionWin},
		{DecisionInconclusive, DecisionWin, DecisionWin},
		// The always-valid guarantee covers the first crossing: keep it.
		{DecisionWin, DecisionInconclusive, DecisionWin},
		{DecisionWin, DecisionLoss, DecisionWin},
		{DecisionLoss, DecisionInsufficientData, DecisionLoss},
		{DecisionLoss, DecisionSRM, DecisionLoss},
		// A breach calls for a rollback, whatever was decided before.
		{DecisionWin, DecisionGuardrailBreach, DecisionGuardrailBreach},
		{DecisionGuardrailBreach, DecisionWin, DecisionGuardrailBreach},
		{DecisionGuardrailBreach, DecisionInconclusive, DecisionGuardrailBreach},
		// Non-latching decisions follow the data.
		{DecisionSRM, DecisionInconclusive, DecisionInconclusive},
		{DecisionInsufficientData, DecisionLoss, DecisionLoss},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, Latch(tc.prev, tc.next), "Latch(%q, %q)", tc.prev, tc.next)
	}
}

// segmentEffect evaluates one segment value and returns what Divergence needs.
func segmentEffect(t *testing.T, value string, c, tr Moments) (SegmentEffect, Result) {
	t.Helper()
	rep, err := Evaluate(Experiment{Kind: Conversion, Variants: twoArms(c, tr)})
	require.NoError(t, err)
	r := rep.Results[0]
	return SegmentEffect{Value: value, Lift: r.Effect.Lift, SE: r.Effect.SE, P: r.Sequential.P}, r
}

// The motivating case of SPEC §4: US and IN +40%, GB strongly negative,
// the total flat.
func TestDivergenceMotivatingCase(t *testing.T) {
	us, usR := segmentEffect(t, "US", conv(4000, 400), conv(4000, 560))
	in, inR := segmentEffect(t, "IN", conv(3000, 300), conv(3000, 420))
	gb, gbR := segmentEffect(t, "GB", conv(8000, 800), conv(8000, 520))
	de, _ := segmentEffect(t, "DE", conv(1000, 100), conv(1000, 98))
	_, total := segmentEffect(t, "", conv(16000, 1600), conv(16000, 1598))

	require.Equal(t, DecisionInconclusive, total.Decision)
	require.Equal(t, DecisionWin, usR.Decision)
	require.Equal(t, DecisionWin, inR.Decision)
	require.Equal(t, DecisionLoss, gbR.Decision, "each segment row carries its own decision")

	d := Divergence(total.Sequential.P, []SegmentEffect{us, in, gb, de}, 0.05)
	require.True(t, d.Diverges, d.Reason)
	require.Equal(t, DecisionSegmentDivergence, d.Decision())
	require.Equal(t, []string{"US", "IN"}, d.Up)
	require.Equal(t, []string{"GB"}, d.Down)
	require.Greater(t, d.I2, 0.9)
	require.Less(t, d.QP, 1e-10)
	require.Contains(t, d.Reason, "up: US, IN; down: GB")
	require.False(t, d.Segments[3].Significant, "DE does not move")

	// Consistent segments: real heterogeneity in size, same direction.
	a, _ := segmentEffect(t, "A", conv(4000, 400), conv(4000, 560))
	b, _ := segmentEffect(t, "B", conv(4000, 400), conv(4000, 440))
	d = Divergence(0.5, []SegmentEffect{a, b}, 0.05)
	require.False(t, d.Diverges)
	require.Empty(t, d.Down)

	// The total itself moved: its own win or loss tells the story.
	d = Divergence(0.001, []SegmentEffect{us, in, gb}, 0.05)
	require.False(t, d.Diverges)

	// Undefined segments are ignored; fewer than two leave nothing to compare.
	d = Divergence(0.5, []SegmentEffect{us, {Value: "XX", SE: 0}}, 0.05)
	require.False(t, d.Diverges)
	require.Equal(t, "fewer than 2 segments with a defined lift", d.Reason)
}

func TestDetectShiftBasics(t *testing.T) {
	flat := make([]Point, 100)
	for i := range flat {
		flat[i] = Point{Value: 0.05 + 0.01*math.Sin(float64(i)), SE: 0.02}
	}
	s, err := DetectShift(flat, ShiftConfig{})
	require.NoError(t, err)
	require.False(t, s.Detected)
	require.Equal(t, -1, s.At)
	require.InDelta(t, 1286, s.ARL0, 1)

	// A rise of 3 SE from index 40 on a noiseless series: the standardised
	// residual at 40 is 0.06/sqrt(0.02² + 0.02²/40) = 2.96; later residuals
	// shrink a little as the running mean absorbs the new level (2.89,
	// 2.82), so S⁺ = 2.46, 4.86, 7.18 and exceeds 6 at index 42.
	step := append([]Point(nil), flat...)
	for i := range step {
		step[i].Value = 0.05
		if i >= 40 {
			step[i].Value += 0.06
		}
	}
	s, err = DetectShift(step, ShiftConfig{})
	require.NoError(t, err)
	require.True(t, s.Detected)
	require.Equal(t, 42, s.At)
	require.Equal(t, 40, s.Start)
	require.Equal(t, 1, s.Direction)
	require.Equal(t, DecisionBehaviourShift, s.Decision())
	require.Equal(t, "the series rose from period 40: CUSUM 7.2 > 6 at period 42 (in-control false alarm once per ≈1286 periods)", s.Reason)

	// Prefix property: the detector on a prefix sees what it saw then.
	s, err = DetectShift(step[:42], ShiftConfig{})
	require.NoError(t, err)
	require.False(t, s.Detected)

	_, err = DetectShift([]Point{{Value: 1, SE: 0}}, ShiftConfig{})
	require.EqualError(t, err, "detect shift: point 0: need a finite value and a positive, finite SE")
	_, err = DetectShift(nil, ShiftConfig{H: -1})
	require.EqualError(t, err, "detect shift: need K ≥ 0 and H > 0, got K=0.5 H=-1")
}

// The precedence claimed above: the breach case really is under SRM and
// below the minimum sample, which on their own would decide srm and
// insufficient_data.
func TestGuardrailPrecedence(t *testing.T) {
	x := Experiment{Kind: Count, Guardrail: &Guardrail{MaxIncrease: 0.3}, MinUsers: 1000,
		Variants: twoArms(mean(200, 40, 48), mean(120, 360, 1440))}
	rep, err := Evaluate(x)
	require.NoError(t, err)
	require.True(t, rep.SRM.Alarm)
	require.Equal(t, DecisionGuardrailBreach, rep.Results[0].Decision)
	x.Guardrail = nil
	rep, err = Evaluate(x)
	require.NoError(t, err)
	require.Equal(t, DecisionSRM, rep.Results[0].Decision)
}

func TestRelativeLiftUndefined(t *testing.T) {
	den := func(m Moments, sum, sumSq, cross float64) Moments {
		m.Den = &Denominator{Sum: sum, SumSq: sumSq, Cross: cross}
		return m
	}
	tests := []struct {
		name string
		kind Kind
		a, b Moments
		want error
	}{
		{"one user", Mean, mean(1, 1, 1), mean(10, 5, 5), ErrTooFewUsers},
		{"no conversions in control", Conversion, conv(100, 0), conv(100, 5), ErrZeroBaseline},
		{"every user converted in test", Conversion, conv(100, 10), conv(100, 100), ErrNoVariance},
		{"constant values", Mean, mean(10, 20, 40), mean(10, 30, 90), ErrNoVariance},
		{"ratio without denominator", Ratio, mean(10, 5, 5), mean(10, 5, 5), ErrNoDenominator},
		{"ratio control without orders", Ratio, den(mean(10, 0, 0), 0, 0, 0), den(mean(10, 5, 5), 5, 5, 5), ErrZeroBaseline},
		{"ratio test without orders", Ratio, den(mean(10, 5, 5), 5, 5, 5), den(mean(10, 0, 0), 0, 0, 0), ErrUndefinedMean},
	}
	for _, tc := range tests {
		_, err := RelativeLift(tc.kind, tc.a, tc.b)
		require.ErrorIs(t, err, tc.want, tc.name)
	}
}
