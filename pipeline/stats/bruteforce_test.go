package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distuv"
)

// These tests simulate raw per-user values, reduce them to the sufficient
// statistics the analyzer gets from ClickHouse, and check that the engine's
// answer equals a direct computation on the raw arrays (two-pass means and
// variances from gonum/stat, linearised delta-method variances). They prove
// that nothing is lost by working on sums, and they check the algebra of
// the ratio and CUPED variances by an independent route.

// sums reduces raw values to Moments.
func sums(x []float64) Moments {
	m := Moments{N: int64(len(x))}
	for _, v := range x {
		m.Sum += v
		m.SumSq += v * v
	}
	return m
}

func crossSum(x, y []float64) (s float64) {
	for i := range x {
		s += x[i] * y[i]
	}
	return s
}

// directWelch is the textbook delta-method relative lift and Welch test
// computed from raw arrays with sample variances.
func directWelch(a, b []float64, alpha float64) (lift, se, dof, p, lo, hi float64) {
	ma, va := stat.MeanVariance(a, nil)
	mb, vb := stat.MeanVariance(b, nil)
	na, nb := float64(len(a)), float64(len(b))
	lift = (mb - ma) / math.Abs(ma)
	se = math.Sqrt(vb/(nb*ma*ma) + va*mb*mb/(na*math.Pow(ma, 4)))
	sa, sb := va/na, vb/nb
	dof = (sa + sb) * (sa + sb) / (sa*sa/(na-1) + sb*sb/(nb-1))
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: dof}
	p = 2 * t.Survival(math.Abs(lift/se))
	w := t.Quantile(1-alpha/2) * se
	return lift, se, dof, p, lift - w, lift + w
}

func lognormals(rng *rand.Rand, n int, mu, sigma float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = math.Exp(mu + sigma*rng.NormFloat64())
	}
	return x
}

func TestBruteForceWelchFromRawValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		// Skewed revenue-like values of different sizes per arm.
		a := lognormals(rng, 200+rng.IntN(3000), 3, 1)
		b := lognormals(rng, 200+rng.IntN(3000), 3.05, 1.1)
		lift, se, dof, p, lo, hi := directWelch(a, b, 0.05)
		e := mustLift(t, Sum, sums(a), sums(b))
		f := e.Fixed(0.05)
		require.InEpsilon(t, lift, e.Lift, 1e-9, "trial %d", trial)
		require.InEpsilon(t, se, e.SE, 1e-9)
		require.InEpsilon(t, dof, e.DOF, 1e-9)
		require.InEpsilon(t, p, f.P, 1e-7)
		require.InEpsilon(t, lo, f.Lo, 1e-9)
		require.InEpsilon(t, hi, f.Hi, 1e-9)
	}
}

// For 0/1 data gbstats uses p(1−p), the population variance; the direct
// computation is therefore the population variance of the raw 0/1 array.
func TestBruteForceConversionFromRawValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	bern := func(n int, p float64) []float64 {
		x := make([]float64, n)
		for i := range x {
			if rng.Float64() < p {
				x[i] = 1
			}
		}
		return x
	}
	for range 20 {
		a, b := bern(500+rng.IntN(5000), 0.1), bern(500+rng.IntN(5000), 0.12)
		ma, va := stat.PopMeanVariance(a, nil)
		mb, vb := stat.PopMeanVariance(b, nil)
		na, nb := float64(len(a)), float64(len(b))
		se := math.Sqrt(vb/(nb*ma*ma) + va*mb*mb/(na*math.Pow(ma, 4)))
		e := mustLift(t, Conversion, sums(a), sums(b))
		require.InEpsilon(t, (mb-ma)/ma, e.Lift, 1e-9)
		require.InEpsilon(t, se, e.SE, 1e-9)
	}
}

// Ratio metrics (revenue per order): the delta-method variance of Σx/Σd per
// user equals Var(x − R·d)/μd² with R = Σx/Σd — the linearisation of the
// ratio. Computing that from the raw residuals is an independent route to
// the same number.
func TestBruteForceRatioFromRawValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	gen := func(n int, price float64) (num, den []float64) {
		num, den = make([]float64, n), make([]float64, n)
		for i := range num {
			orders := float64(1 + rng.IntN(4))
			den[i] = orders
			num[i] = orders * price * math.Exp(0.3*rng.NormFloat64())
		}
		return num, den
	}
	ratioArm := func(num, den []float64) (r, v float64) {
		r = stat.Mean(num, nil) / stat.Mean(den, nil)
		res := make([]float64, len(num))
		for i := range num {
			res[i] = num[i] - r*den[i]
		}
		md := stat.Mean(den, nil)
		return r, stat.Variance(res, nil) / (md * md)
	}
	moments := func(num, den []float64) Moments {
		m := sums(num)
		d := sums(den)
		m.Den = &Denominator{Sum: d.Sum, SumSq: d.SumSq, Cross: crossSum(num, den)}
		return m
	}
	for range 20 {
		an, ad := gen(300+rng.IntN(3000), 40)
		bn, bd := gen(300+rng.IntN(3000), 42)
		ra, va := ratioArm(an, ad)
		rb, vb := ratioArm(bn, bd)
		na, nb := float64(len(an)), float64(len(bn))
		se := math.Sqrt(vb/(nb*ra*ra) + va*rb*rb/(na*math.Pow(ra, 4)))
		e := mustLift(t, Ratio, moments(an, ad), moments(bn, bd))
		require.InEpsilon(t, (rb-ra)/ra, e.Lift, 1e-9)
		require.InEpsilon(t, se, e.SE, 1e-8)
		require.InEpsilon(t, ra, MeanOf(Ratio, moments(an, ad)), 1e-12)
	}
}

// CUPED from raw arrays: θ by regressing post on pre over the pooled users
// (gonum's covariance and variance), adjusted values xᵢ − θyᵢ, and the
// delta-method variance written as variances of linear combinations:
// Var_trt = Var(x − θy)/(nb x̄a²), Var_ctrl = Var(r·x − θy)/(na x̄a²) with
// r = x̄b/x̄a.
func TestBruteForceCUPEDFromRawValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 20 {
		a, ay := correlated(rng, 500+rng.IntN(3000), 10, 0.7, 0)
		b, by := correlated(rng, 500+rng.IntN(3000), 10, 0.7, 0.03)
		pooledX, pooledY := append(append([]float64{}, a...), b...), append(append([]float64{}, ay...), by...)
		theta := stat.Covariance(pooledX, pooledY, nil) / stat.Variance(pooledY, nil)
		lin := func(x, y []float64, cx float64) []float64 {
			out := make([]float64, len(x))
			for i := range x {
				out[i] = cx*x[i] - theta*y[i]
			}
			return out
		}
		xa, xb := stat.Mean(a, nil), stat.Mean(b, nil)
		adjA := stat.Mean(lin(a, ay, 1), nil)
		adjB := stat.Mean(lin(b, by, 1), nil)
		na, nb := float64(len(a)), float64(len(b))
		v := stat.Variance(lin(b, by, 1), nil)/(nb*xa*xa) + stat.Variance(lin(a, ay, xb/xa), nil)/(na*xa*xa)

		withPre := func(x, y []float64) Moments {
			m, p := sums(x), sums(y)
			m.Pre = &PrePeriod{Sum: p.Sum, SumSq: p.SumSq, Cross: crossSum(x, y)}
			return m
		}
		e := mustLift(t, Mean, withPre(a, ay), withPre(b, by))
		require.True(t, e.CUPED.Applied)
		require.InEpsilon(t, theta, e.CUPED.Theta, 1e-9)
		require.InEpsilon(t, (adjB-adjA)/xa, e.Lift, 1e-8)
		require.InEpsilon(t, math.Sqrt(v), e.SE, 1e-8)
	}
}

// correlated draws n users' (post, pre) values: pre ~ N(mu, (mu/3)²), post
// correlated with pre at rho, post mean mu·(1+lift).
func correlated(rng *rand.Rand, n int, mu, rho, lift float64) (post, pre []float64) {
	sd := mu / 3
	post, pre = make([]float64, n), make([]float64, n)
	for i := range post {
		z1, z2 := rng.NormFloat64(), rng.NormFloat64()
		pre[i] = mu + sd*z1
		post[i] = mu*(1+lift) + sd*(rho*z1+math.Sqrt(1-rho*rho)*z2)
	}
	return post, pre
}
