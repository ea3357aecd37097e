package stats

import (
	"errors"
	"fmt"
	"math"
)

// Errors for comparisons that have no defined relative lift. They are data
// conditions, not bugs: the analyzer reports them as insufficient_data.
var (
	ErrZeroBaseline  = errors.New("control mean is zero or undefined, so a relative lift is undefined")
	ErrNoVariance    = errors.New("a variant has no variance, so the lift has no standard error")
	ErrTooFewUsers   = errors.New("a variant has fewer than 2 users")
	ErrNoDenominator = errors.New("ratio metric without denominator sums")
	ErrUndefinedMean = errors.New("the test variant's ratio denominator sums to zero, so its mean is undefined")
)

// Effect is the relative lift of a test variant over control with its
// delta-method standard error. It is the common input of every test below,
// so a caller with an effect from elsewhere (say an absolute difference) can
// build one directly.
type Effect struct {
	Lift        float64 // (test − control) / |control|; 0.1 = +10%
	SE          float64 // standard error of Lift
	DOF         float64 // Welch–Satterthwaite degrees of freedom
	N           float64 // users in both arms: the "n" of the confidence sequence
	ControlMean float64 // unadjusted control mean (the lift's denominator)
	TestMean    float64 // unadjusted test mean
	CUPED       CUPED
}

// CUPED says whether variance reduction was applied and why not.
type CUPED struct {
	Applied bool
	Theta   float64 // pooled regression coefficient of post on pre
	Reason  string  // why it was not applied; empty when Applied
}

// RelativeLift compares test with control. It applies CUPED when both
// variants carry pre-period data with non-zero pooled variance (and the metric
// is not a ratio), and says in Effect.CUPED whether it did.
func RelativeLift(kind Kind, control, test Moments) (Effect, error) {
	if control.N < 2 || test.N < 2 {
		return Effect{}, ErrTooFewUsers
	}
	if err := ratioDefined(kind, control, test); err != nil {
		return Effect{}, err
	}
	c := cupedPlan(kind, control, test)
	var e Effect
	var err error
	if c.Applied {
		e, err = cupedLift(kind, control, test, c.Theta)
	} else {
		e, err = plainLift(armOf(kind, control), armOf(kind, test))
		e.CUPED = c
	}
	if err == nil && !(finite(e.Lift) && finite(e.SE) && e.SE > 0 && e.DOF > 0) {
		// Defensive: extreme sums can overflow; never hand NaN to the tests.
		err = ErrNoVariance
	}
	return e, err
}

func ratioDefined(kind Kind, control, test Moments) error {
	switch {
	case kind != Ratio:
		return nil
	case control.Den == nil || test.Den == nil:
		return ErrNoDenominator
	case control.Den.Sum == 0:
		return ErrZeroBaseline
	case test.Den.Sum == 0:
		return ErrUndefinedMean
	}
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// plainLift is the delta-method relative lift of two independent means:
// Var(b̄/ā) ≈ Var b̄/ā² + b̄² Var ā/ā⁴ (gbstats' frequentist_variance).
func plainLift(a, b arm) (Effect, error) {
	if a.mean == 0 || math.IsNaN(a.mean) {
		return Effect{}, ErrZeroBaseline
	}
	if !(a.variance > 0 && b.variance > 0) {
		return Effect{}, ErrNoVariance
	}
	ma2 := a.mean * a.mean
	v := b.variance/(b.n*ma2) + a.variance*b.mean*b.mean/(a.n*ma2*ma2)
	return Effect{
		Lift:        (b.mean - a.mean) / math.Abs(a.mean),
		SE:          math.Sqrt(v),
		DOF:         welchDOF(a.variance, a.n, b.variance, b.n),
		N:           a.n + b.n,
		ControlMean: a.mean,
		TestMean:    b.mean,
	}, nil
}

// welchDOF is the Welch–Satterthwaite approximation for unequal variances.
func welchDOF(va, na, vb, nb float64) float64 {
	sa, sb := va/na, vb/nb
	return (sa + sb) * (sa + sb) / (sa*sa/(na-1) + sb*sb/(nb-1))
}

// cupedPlan decides whether CUPED applies and computes θ. θ is pooled over
// both arms — Cov(x, y)/Var(y) on the combined sums — because randomisation
// makes the pre-period independent of assignment, and pooling keeps θ from
// absorbing the treatment effect (Deng et al. 2013; gbstats compute_theta).
func cupedPlan(kind Kind, a, b Moments) CUPED {
	switch {
	case kind == Ratio:
		return CUPED{Reason: "CUPED is not implemented for ratio metrics"}
	case a.Pre == nil && b.Pre == nil:
		return CUPED{Reason: "no pre-period data"}
	case a.Pre == nil || b.Pre == nil:
		return CUPED{Reason: "pre-period data missing for a variant"}
	}
	n := float64(a.N + b.N)
	sx, sxx := a.Sum+b.Sum, a.sumSq(kind)+b.sumSq(kind)
	sy, syy, sxy := a.Pre.Sum+b.Pre.Sum, a.Pre.SumSq+b.Pre.SumSq, a.Pre.Cross+b.Pre.Cross
	vy := variance(kind, n, sy, syy)
	if vy <= 0 {
		return CUPED{Reason: "pre-period covariate has no variance"}
	}
	if variance(kind, n, sx, sxx) <= 0 {
		return CUPED{Reason: "metric has no variance"}
	}
	return CUPED{Applied: true, Theta: covariance(kind, n, sx, sy, sxy) / vy}
}

// cupedArm is one variant's post and pre moments for CUPED.
type cupedArm struct {
	n, post, pre, vPost, vPre, cov float64
}

func cupedArmOf(kind Kind, m Moments) cupedArm {
	n := float64(m.N)
	return cupedArm{
		n:     n,
		post:  m.Sum / n,
		pre:   m.Pre.Sum / n,
		vPost: variance(kind, n, m.Sum, m.sumSq(kind)),
		vPre:  variance(kind, n, m.Pre.Sum, m.Pre.SumSq),
		cov:   covariance(kind, n, m.Sum, m.Pre.Sum, m.Pre.Cross),
	}
}

// adjustedVariance is Var(x − θy) per user.
func (c cupedArm) adjustedVariance(theta float64) float64 {
	return c.vPost + theta*theta*c.vPre - 2*theta*c.cov
}

// cupedLift is the relative lift of the CUPED-adjusted means over the
// unadjusted control mean (SPEC §4), with its delta-method variance.
//
// The estimate is L = (x̄b − θȳb − x̄a + θȳa)/x̄a. Its gradient in the control
// moments (x̄a, ȳa) is (−(x̄b − θ(ȳb − ȳa))/x̄a², θ/x̄a); like gbstats we drop
// θ(ȳb − ȳa), which is zero in expectation under randomisation, giving
// Var_a = (x̄b²/x̄a²·Var x − 2θ x̄b/x̄a·Cov(x,y) + θ² Var y)/(na x̄a²) and
// Var_b = Var(x − θy)/(nb x̄a²). θ is treated as known (its estimation error
// is O(1/n) and ignored, as everywhere in the CUPED literature).
func cupedLift(kind Kind, control, test Moments, theta float64) (Effect, error) {
	a, b := cupedArmOf(kind, control), cupedArmOf(kind, test)
	if a.post == 0 {
		return Effect{}, ErrZeroBaseline
	}
	va, vb := a.adjustedVariance(theta), b.adjustedVariance(theta)
	if !(va > 0 && vb > 0) {
		return Effect{}, ErrNoVariance
	}
	ma2 := a.post * a.post
	r := b.post / a.post
	vCtrl := (a.vPost*r*r - 2*theta*a.cov*r + theta*theta*a.vPre) / (a.n * ma2)
	vTrt := vb / (b.n * ma2)
	if !(vCtrl+vTrt > 0) {
		return Effect{}, ErrNoVariance
	}
	adjA, adjB := a.post-theta*a.pre, b.post-theta*b.pre
	return Effect{
		Lift:        (adjB - adjA) / math.Abs(a.post),
		SE:          math.Sqrt(vCtrl + vTrt),
		DOF:         welchDOF(va, a.n, vb, b.n),
		N:           a.n + b.n,
		ControlMean: a.post,
		TestMean:    b.post,
		CUPED:       CUPED{Applied: true, Theta: theta},
	}, nil
}

// String is for logs and test failures.
func (e Effect) String() string {
	return fmt.Sprintf("lift=%.5g se=%.5g dof=%.4g n=%g cuped=%t", e.Lift, e.SE, e.DOF, e.N, e.CUPED.Applied)
}
