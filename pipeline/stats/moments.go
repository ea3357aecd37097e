package stats

import "math"

// Kind is how a metric aggregates a user's events.
type Kind string

// Metric kinds (SPEC §4). Mean, Count and Sum share the same mathematics (a
// per-user value with sample variance); they are distinct words because users
// configure them differently.
const (
	Conversion Kind = "conversion" // did the user do E in the window: 0/1 per user
	Count      Kind = "count"      // E per user
	Sum        Kind = "sum"        // numeric property per user, e.g. revenue
	Mean       Kind = "mean"       // any per-user value; same maths as count and sum
	Ratio      Kind = "ratio"      // Σ numerator / Σ denominator, delta method
)

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	switch k {
	case Conversion, Count, Sum, Mean, Ratio:
		return true
	}
	return false
}

// Goal is the direction in which a metric is good.
type Goal string

// Goals. The empty Goal means Increase.
const (
	Increase Goal = "increase"
	Decrease Goal = "decrease"
)

// Moments are one variant's sufficient statistics for one metric.
type Moments struct {
	N     int64   // users
	Sum   float64 // Σx over users (for Ratio: Σ numerator)
	SumSq float64 // Σx² over users; ignored for Conversion, where x² = x
	// Pre is the pre-exposure covariate for CUPED; nil when there is none.
	Pre *PrePeriod
	// Den is the denominator of a Ratio metric; nil for other kinds.
	Den *Denominator
}

// PrePeriod holds the sums of the CUPED covariate y (the same metric measured
// in the pre-period) and its cross product with the post-period value x.
type PrePeriod struct {
	Sum   float64 // Σy
	SumSq float64 // Σy²
	Cross float64 // Σxy
}

// Denominator holds the sums of a ratio metric's denominator d.
type Denominator struct {
	Sum   float64 // Σd
	SumSq float64 // Σd²
	Cross float64 // Σxd, numerator times denominator
}

// divisor is the variance denominator. Conversions use n because p(1−p) is
// the population variance of 0/1 data (as gbstats' ProportionStatistic does);
// every other kind uses the unbiased n−1.
func divisor(kind Kind, n float64) float64 {
	if kind == Conversion {
		return n
	}
	return n - 1
}

// variance of a per-user quantity from its sums. Rounding can push Σx²−(Σx)²/n
// a hair below zero for constant data; clamp so callers see exactly zero.
func variance(kind Kind, n, sum, sumSq float64) float64 {
	if n < 2 {
		return 0
	}
	return math.Max(0, sumSq-sum*sum/n) / divisor(kind, n)
}

// covariance of two per-user quantities from their sums and cross product.
func covariance(kind Kind, n, sumX, sumY, sumXY float64) float64 {
	if n < 2 {
		return 0
	}
	return (sumXY - sumX*sumY/n) / divisor(kind, n)
}

// sumSq returns Σx², substituting Σx for conversions (x ∈ {0,1}).
func (m Moments) sumSq(kind Kind) float64 {
	if kind == Conversion {
		return m.Sum
	}
	return m.SumSq
}

// MeanOf is the variant's unadjusted metric value: Σx/n, or Σx/Σd for ratios.
// It returns NaN when undefined (no users, or a zero ratio denominator).
func MeanOf(kind Kind, m Moments) float64 {
	if kind == Ratio {
		if m.Den == nil || m.Den.Sum == 0 {
			return math.NaN()
		}
		return m.Sum / m.Den.Sum
	}
	if m.N == 0 {
		return math.NaN()
	}
	return m.Sum / float64(m.N)
}

// arm is one variant reduced to what the lift needs: the mean of the
// per-user quantity and that quantity's per-user variance.
type arm struct {
	n, mean, variance float64
}

// armOf reduces Moments to an arm. For ratios the per-user variance is the
// delta-method variance of Σx/Σd scaled by n (gbstats' RatioStatistic).
func armOf(kind Kind, m Moments) arm {
	n := float64(m.N)
	if kind != Ratio {
		return arm{n: n, mean: m.Sum / n, variance: variance(kind, n, m.Sum, m.sumSq(kind))}
	}
	d := m.Den
	mx, md := m.Sum/n, d.Sum/n
	vx := variance(kind, n, m.Sum, m.SumSq)
	vd := variance(kind, n, d.Sum, d.SumSq)
	cxd := covariance(kind, n, m.Sum, d.Sum, d.Cross)
	return arm{n: n, mean: m.Sum / d.Sum, variance: ratioVariance(mx, vx, md, vd, cxd)}
}

// ratioVariance is the first-order (delta method) variance of X/D given the
// means, variances and covariance of X and D:
// Var(X/D) ≈ Var X/μd² + μx² Var D/μd⁴ − 2 μx Cov(X,D)/μd³.
func ratioVariance(mx, vx, md, vd, cxd float64) float64 {
	if md == 0 {
		return 0
	}
	return vx/(md*md) + vd*mx*mx/(md*md*md*md) - 2*cxd*mx/(md*md*md)
}
