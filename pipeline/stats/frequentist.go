package stats

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// DefaultTuning is N*, the total sample size at which the confidence sequence
// is tightest (GrowthBook's default sequential_tuning_parameter).
const DefaultTuning = 5000

// Interval is a two-sided test result on the relative lift.
type Interval struct {
	P  float64 // two-sided p-value for H0: lift = 0
	Lo float64 // lower end of the 1−α interval
	Hi float64 // upper end
}

// Excludes reports whether x lies outside the interval.
func (i Interval) Excludes(x float64) bool { return x < i.Lo || x > i.Hi }

// Fixed is the fixed-horizon Welch t-test on the relative lift: valid for
// exactly one look at a pre-planned sample size. It is reported for
// reference; decisions use Sequential.
func (e Effect) Fixed(alpha float64) Interval {
	w := tQuantile(1-alpha/2, e.DOF) * e.SE
	// 2·CDF(−|z|) rather than 2·(1−CDF(|z|)) keeps tiny p-values accurate.
	p := 2 * studentsT(e.DOF).CDF(-math.Abs(e.Lift/e.SE))
	return Interval{P: p, Lo: e.Lift - w, Hi: e.Lift + w}
}

// studentsT falls back to the normal distribution for huge (or infinite)
// degrees of freedom, where the two agree to machine precision and the
// incomplete-beta evaluation would only lose accuracy.
func studentsT(dof float64) interface {
	CDF(float64) float64
	Prob(float64) float64
	Quantile(float64) float64
} {
	if math.IsNaN(dof) || dof > normalDOF {
		return distuv.UnitNormal
	}
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: dof}
}

// tQuantile inverts gonum's Student-t CDF by Newton's method. gonum's own
// Quantile (cephes incbi) costs ≈ 12 µs, 90% of a whole evaluation, while
// its CDF costs ≈ 0.4 µs. For p > ½ the CDF is concave on x > 0 and the
// normal quantile lies below the t quantile, so Newton's iterates started
// there rise monotonically to the root; a few steps reach 1e-12.
//
// With many degrees of freedom — every cell of a few thousand users — the Cornish–Fisher
// expansion of the t quantile about the normal one (Abramowitz & Stegun 26.7.5, five
// terms) needs no CDF at all: from ν = 2000 on, out to 6σ, it is within 1e-12 of
// Newton's root (TestTQuantileMatchesGonum).
func tQuantile(p, dof float64) float64 {
	if p < 0.5 {
		return -tQuantile(1-p, dof)
	}
	x := distuv.UnitNormal.Quantile(p)
	if dof >= cornishFisherDOF && dof <= normalDOF && x <= 6 {
		return cornishFisher(x, dof)
	}
	return tQuantileNewton(p, x, dof)
}

// tQuantileNewton is tQuantile by Newton's method from the normal quantile x.
func tQuantileNewton(p, x, dof float64) float64 {
	t := studentsT(dof)
	for range 100 {
		step := (t.CDF(x) - p) / t.Prob(x)
		x -= step
		if math.Abs(step) <= 1e-12*math.Max(1, math.Abs(x)) {
			return x
		}
	}
	return t.Quantile(p) // not reached for α in (0, 0.5); kept as a safe fallback
}

// normalDOF is where studentsT becomes the normal distribution.
const normalDOF = 1e7

// cornishFisherDOF is where tQuantile starts using the expansion.
const cornishFisherDOF = 2000

// cornishFisher is the t quantile with dof degrees of freedom at the normal quantile x,
// to five terms in 1/dof.
func cornishFisher(x, dof float64) float64 {
	x2 := x * x
	g1 := x * (x2 + 1) / 4
	g2 := x * ((5*x2+16)*x2 + 3) / 96
	g3 := x * (((3*x2+19)*x2+17)*x2 - 15) / 384
	g4 := x * ((((79*x2+776)*x2+1482)*x2-1920)*x2 - 945) / 92160
	g5 := x * (((((27*x2+339)*x2+930)*x2-1782)*x2-765)*x2 + 17955) / 368640
	return x + (g1+(g2+(g3+(g4+g5/dof)/dof)/dof)/dof)/dof
}

// SequentialRho is the mixing parameter ρ of the Gaussian-mixture boundary,
// chosen so the confidence sequence is tightest at N* total users
// (Waudby-Smith et al. 2023, arXiv:2103.06476v7 eq. 161; gbstats
// sequential_rho). A one-sided sequence spends α in one tail, which the
// paper's formula expresses by substituting 2α.
func SequentialRho(alpha, tuning float64, twoSided bool) float64 {
	a := alpha
	if !twoSided {
		a = 2 * alpha
	}
	l := -2 * math.Log(a)
	return math.Sqrt((l + math.Log(l+1)) / tuning)
}

// Sequential is the asymptotic confidence sequence of Waudby-Smith et al.
// (2023, eq. 9) as GrowthBook implements it, with tuning parameter N*. Its
// interval covers the true lift at every look simultaneously with
// probability ≥ 1−α, so the analyzer may look every 15 minutes for months.
//
// With s² = N·SE² (the per-user variance of the lift) and v = Nρ² the
// half-width is s·sqrt(2(v+1)/(N²ρ²)·log(sqrt(v+1)/α)), which simplifies to
// SE·sqrt(2(v+1)/v·log(sqrt(v+1)/α)).
//
// The p-value is the smallest α at which the sequence (with ρ held at the
// configured α, as gbstats does) excludes zero. That inversion has a closed
// form — the reciprocal of the mixture e-value exp(v z²/(2(v+1)))/sqrt(v+1),
// z = lift/SE (paper eq. 155) — so P < α exactly when the interval excludes
// zero; TestSequentialPValueIsIntervalInversion checks it by bisection.
func (e Effect) Sequential(alpha, tuning float64) Interval {
	rho := SequentialRho(alpha, tuning, true)
	v := e.N * rho * rho
	hw := e.SE * math.Sqrt(2*(v+1)/v*math.Log(math.Sqrt(v+1)/alpha))
	z := e.Lift / e.SE
	logE := v*z*z/(2*(v+1)) - 0.5*math.Log(v+1)
	return Interval{P: math.Exp(-math.Max(0, logE)), Lo: e.Lift - hw, Hi: e.Lift + hw}
}

// Side is the alternative of a one-sided test.
type Side int

// Sides of a one-sided test.
const (
	Greater Side = 1  // H1: lift > null; reports a lower bound
	Less    Side = -1 // H1: lift < null; reports an upper bound
)

// OneSided is a one-sided always-valid test of H0: lift ≤ null (Greater) or
// lift ≥ null (Less).
type OneSided struct {
	Null     float64 // the boundary tested, e.g. +0.30 for "must not rise more than 30%"
	Bound    float64 // lower (Greater) or upper (Less) confidence bound
	P        float64 // always-valid one-sided p-value
	Rejected bool    // the bound is beyond Null: H0 is rejected at α
}

// SequentialOneSided is the one-sided confidence sequence (Waudby-Smith et
// al. 2023 eq. 134; gbstats sequential_interval_halfwidth_one_sided): half-width
// SE·sqrt(2(v+1)/v·log(1 + sqrt(v+1)/(2α))), ρ from 2α.
//
// gbstats finds the one-sided p-value by bisection on α; with ρ fixed the
// bound meets Null where log(1+sqrt(v+1)/(2α)) = v z²/(2(v+1)), so
// α = sqrt(v+1)/(2·expm1(v z²/(2(v+1)))) exactly, z = (lift−null)/SE.
// gbstats also clamps its bisection to [1e-5, 0.4999]; we do not.
func (e Effect) SequentialOneSided(alpha, tuning, null float64, side Side) OneSided {
	rho := SequentialRho(alpha, tuning, false)
	v := e.N * rho * rho
	hw := e.SE * math.Sqrt(2*(v+1)/v*math.Log1p(math.Sqrt(v+1)/(2*alpha)))
	r := OneSided{Null: null, Bound: e.Lift - float64(side)*hw, P: 1}
	z := (e.Lift - null) / e.SE * float64(side) // > 0 when the estimate points to H1
	if z > 0 {
		r.P = math.Min(1, math.Sqrt(v+1)/(2*math.Expm1(v*z*z/(2*(v+1)))))
	}
	r.Rejected = float64(side)*(r.Bound-null) > 0
	return r
}
