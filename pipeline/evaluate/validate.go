package evaluate

import (
	"fmt"
	"math"

	"github.com/flagwatch/flagwatch/pipeline/stats"
)

// FieldError is invalid input, located by its JSON path.
type FieldError struct {
	Field   string // e.g. "variants[1].n"
	Problem string // e.g. "must be ≥ 2, got 1"
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// experiment validates in and builds the stats engine's input. Checks run
// in document order so the first problem reported is the first one a
// reader meets.
func experiment(in Input) (stats.Experiment, error) {
	x := stats.Experiment{Alpha: stats.DefaultAlpha, Tuning: stats.DefaultTuning}
	var err error
	if x.Kind, x.Goal, x.Guardrail, err = metric(in.Metric); err != nil {
		return x, err
	}
	if in.Alpha != nil {
		if x.Alpha = *in.Alpha; !(x.Alpha > 0 && x.Alpha < 0.5) {
			return x, fieldErr("alpha", "must be in (0, 0.5), got %g", x.Alpha)
		}
	}
	if in.SequentialTuning != nil {
		if x.Tuning = *in.SequentialTuning; !(x.Tuning > 0) || math.IsInf(x.Tuning, 0) {
			return x, fieldErr("sequential_tuning", "must be > 0, got %g", x.Tuning)
		}
	}
	if x.Correction, err = stats.ParseCorrection(in.Correction); err != nil {
		return x, fieldErr("correction", "must be holm, bh or none, got %q", in.Correction)
	}
	if p := in.Prior; p != nil {
		if math.IsNaN(p.Mean) || math.IsInf(p.Mean, 0) {
			return x, fieldErr("prior.mean", "must be a finite number, got %g", p.Mean)
		}
		if !(p.Variance > 0) || math.IsInf(p.Variance, 0) {
			return x, fieldErr("prior.variance", "must be > 0, got %g", p.Variance)
		}
		x.Prior = &stats.Prior{Mean: p.Mean, Variance: p.Variance}
	}
	if x.MinUsers, err = minUsers(in.MinUsersPerVariant); err != nil {
		return x, err
	}
	if x.Variants, x.Control, err = variants(x.Kind, in.Variants); err != nil {
		return x, err
	}
	x.Split, err = split(in.ExpectedSplit, len(in.Variants))
	return x, err
}

func metric(m Metric) (stats.Kind, stats.Goal, *stats.Guardrail, error) {
	kind := stats.Kind(m.Kind)
	switch {
	case m.Kind == "":
		return "", "", nil, fieldErr("metric.kind", "required (conversion, count, sum, mean or ratio)")
	case !kind.Valid():
		return "", "", nil, fieldErr("metric.kind", "must be one of conversion, count, sum, mean, ratio; got %q", m.Kind)
	}
	goal := stats.Goal(m.Goal)
	switch goal {
	case "":
		goal = stats.Increase
	case stats.Increase, stats.Decrease:
	default:
		return "", "", nil, fieldErr("metric.goal", "must be increase or decrease, got %q", m.Goal)
	}
	g, err := guardrail(m.Guardrail)
	return kind, goal, g, err
}

func guardrail(g *Guardrail) (*stats.Guardrail, error) {
	switch {
	case g == nil:
		return nil, nil
	case (g.MaxIncrease == nil) == (g.MaxDecrease == nil):
		return nil, fieldErr("metric.guardrail", "needs exactly one of max_increase and max_decrease")
	case g.MaxIncrease != nil:
		if v := *g.MaxIncrease; !(v > 0) || math.IsInf(v, 0) {
			return nil, fieldErr("metric.guardrail.max_increase", "must be > 0, got %g", v)
		}
		return &stats.Guardrail{MaxIncrease: *g.MaxIncrease}, nil
	}
	if v := *g.MaxDecrease; !(v > 0 && v < 1) {
		return nil, fieldErr("metric.guardrail.max_decrease", "must be in (0, 1), got %g", v)
	}
	return &stats.Guardrail{MaxDecrease: *g.MaxDecrease}, nil
}

func minUsers(v *float64) (int64, error) {
	if v == nil {
		return stats.DefaultMinUsers, nil
	}
	if !(*v >= 0) || *v != math.Trunc(*v) || *v > 1e15 {
		return 0, fieldErr("min_users_per_variant", "must be a whole number ≥ 0, got %g", *v)
	}
	// Every variant has n ≥ 2, so a minimum below 2 means "no minimum";
	// stats reads 0 as "the default", so pass 2.
	return max(2, int64(*v)), nil
}

// variants converts and checks the variants and finds the control: the one
// named "control", else the first.
func variants(kind stats.Kind, vs []Variant) ([]stats.Variant, int, error) {
	if len(vs) < 2 {
		return nil, 0, fieldErr("variants", "need at least 2 (control and a test variant), got %d", len(vs))
	}
	out := make([]stats.Variant, len(vs))
	control := 0
	seen := make(map[string]bool, len(vs))
	for i, v := range vs {
		at := fmt.Sprintf("variants[%d]", i)
		switch {
		case v.Name == "":
			return nil, 0, fieldErr(at+".name", "required")
		case seen[v.Name]:
			return nil, 0, fieldErr(at+".name", "duplicate %q", v.Name)
		}
		seen[v.Name] = true
		if v.Name == "control" {
			control = i
		}
		m, err := moments(kind, v, at)
		if err != nil {
			return nil, 0, err
		}
		out[i] = stats.Variant{Name: v.Name, Moments: m}
	}
	return out, control, nil
}

// moments checks one variant's sums for consistency with n and its kind.
// The checks are the ones sums of real per-user values always pass: a
// conversion count between 0 and n, Σx² ≥ (Σx)²/n (Cauchy–Schwarz), and
// covariances no larger than the product of standard deviations.
func moments(kind stats.Kind, v Variant, at string) (stats.Moments, error) {
	if err := finite(v, at); err != nil {
		return stats.Moments{}, err
	}
	if v.N == nil {
		return stats.Moments{}, fieldErr(at+".n", "required")
	}
	n := *v.N
	switch {
	case n != math.Trunc(n) || math.IsInf(n, 0):
		return stats.Moments{}, fieldErr(at+".n", "must be a whole number, got %g", n)
	case n < 2:
		return stats.Moments{}, fieldErr(at+".n", "must be ≥ 2, got %g", n)
	case n > 1e15:
		return stats.Moments{}, fieldErr(at+".n", "must be ≤ 1e15, got %g", n)
	}
	if v.Sum == nil {
		return stats.Moments{}, fieldErr(at+".sum", "required")
	}
	m := stats.Moments{N: int64(n), Sum: *v.Sum}
	var err error
	if m.SumSq, err = sumAndSquares(kind, v, at, n); err != nil {
		return m, err
	}
	if m.Pre, err = prePeriod(v, at, n, m.Sum, m.SumSq); err != nil {
		return m, err
	}
	m.Den, err = denominator(kind, v, at, n, m.Sum, m.SumSq)
	return m, err
}

// finite rejects NaN and ±Inf, which JSON cannot carry but a Go caller can.
func finite(v Variant, at string) error {
	fields := []struct {
		name string
		p    *float64
	}{
		{"n", v.N}, {"sum", v.Sum}, {"sum_sq", v.SumSq},
		{"pre_sum", v.PreSum}, {"pre_sum_sq", v.PreSumSq}, {"pre_cross", v.PreCross},
		{"den_sum", v.DenSum}, {"den_sum_sq", v.DenSumSq}, {"cross_sum", v.CrossSum},
	}
	for _, f := range fields {
		if f.p != nil && (math.IsNaN(*f.p) || math.IsInf(*f.p, 0)) {
			return fieldErr(at+"."+f.name, "must be a finite number, got %g", *f.p)
		}
	}
	return nil
}

func sumAndSquares(kind stats.Kind, v Variant, at string, n float64) (float64, error) {
	sum := *v.Sum
	switch kind {
	case stats.Conversion:
		if sum < 0 || sum > n || sum != math.Trunc(sum) {
			return 0, fieldErr(at+".sum", "must be a whole number of converted users between 0 and n (%g), got %g", n, sum)
		}
		if v.SumSq != nil && *v.SumSq != sum {
			return 0, fieldErr(at+".sum_sq", "must equal sum for a conversion metric (x² = x for 0/1 values), got %g with sum %g", *v.SumSq, sum)
		}
		return sum, nil
	case stats.Count, stats.Ratio:
		if sum < 0 {
			return 0, fieldErr(at+".sum", "must be ≥ 0 for a %s metric, got %g", kind, sum)
		}
	}
	if v.SumSq == nil {
		return 0, fieldErr(at+".sum_sq", "required for a %s metric", kind)
	}
	return *v.SumSq, squaresConsistent(at+".sum_sq", n, sum, *v.SumSq)
}

// squaresConsistent checks Σx² ≥ (Σx)²/n, allowing for rounding in sums
// that were computed in floating point.
func squaresConsistent(field string, n, sum, sumSq float64) error {
	floor := sum * sum / n
	if sumSq < floor-1e-9*math.Max(1, floor) {
		return fieldErr(field, "must be ≥ sum²/n = %g (Cauchy–Schwarz), got %g", floor, sumSq)
	}
	return nil
}

// crossConsistent checks |Σxy − ΣxΣy/n| ≤ sqrt((Σx² − (Σx)²/n)(Σy² − (Σy)²/n)).
func crossConsistent(field, with string, n, sx, sxx, sy, syy, sxy float64) error {
	cov := sxy - sx*sy/n
	bound := math.Sqrt(math.Max(0, sxx-sx*sx/n) * math.Max(0, syy-sy*sy/n))
	if math.Abs(cov) > bound*(1+1e-9)+1e-9*math.Max(1, math.Abs(sxy)) {
		return fieldErr(field, "inconsistent with %s: the implied correlation is %.3g, beyond ±1", with, cov/bound)
	}
	return nil
}

func prePeriod(v Variant, at string, n, sum, sumSq float64) (*stats.PrePeriod, error) {
	given := []*float64{v.PreSum, v.PreSumSq, v.PreCross}
	names := []string{"pre_sum", "pre_sum_sq", "pre_cross"}
	present := 0
	for _, p := range given {
		if p != nil {
			present++
		}
	}
	if present == 0 {
		return nil, nil
	}
	for i, p := range given {
		if p == nil {
			return nil, fieldErr(at+"."+names[i], "required when any of pre_sum, pre_sum_sq, pre_cross is given")
		}
	}
	if err := squaresConsistent(at+".pre_sum_sq", n, *v.PreSum, *v.PreSumSq); err != nil {
		return nil, err
	}
	if err := crossConsistent(at+".pre_cross", "sum_sq and pre_sum_sq", n, sum, sumSq, *v.PreSum, *v.PreSumSq, *v.PreCross); err != nil {
		return nil, err
	}
	return &stats.PrePeriod{Sum: *v.PreSum, SumSq: *v.PreSumSq, Cross: *v.PreCross}, nil
}

func denominator(kind stats.Kind, v Variant, at string, n, sum, sumSq float64) (*stats.Denominator, error) {
	given := []*float64{v.DenSum, v.DenSumSq, v.CrossSum}
	names := []string{"den_sum", "den_sum_sq", "cross_sum"}
	for i, p := range given {
		switch {
		case kind != stats.Ratio && p != nil:
			return nil, fieldErr(at+"."+names[i], "only for ratio metrics, this one is %s", kind)
		case kind == stats.Ratio && p == nil:
			return nil, fieldErr(at+"."+names[i], "required for a ratio metric")
		}
	}
	if kind != stats.Ratio {
		return nil, nil
	}
	if *v.DenSum < 0 {
		return nil, fieldErr(at+".den_sum", "must be ≥ 0, got %g", *v.DenSum)
	}
	if err := squaresConsistent(at+".den_sum_sq", n, *v.DenSum, *v.DenSumSq); err != nil {
		return nil, err
	}
	if err := crossConsistent(at+".cross_sum", "sum_sq and den_sum_sq", n, sum, sumSq, *v.DenSum, *v.DenSumSq, *v.CrossSum); err != nil {
		return nil, err
	}
	return &stats.Denominator{Sum: *v.DenSum, SumSq: *v.DenSumSq, Cross: *v.CrossSum}, nil
}

// split checks the expected traffic split: one positive weight per variant,
// summing to 1 (a typo like [0.5, 0.6] should not be silently normalised).
func split(w []float64, k int) ([]float64, error) {
	if w == nil {
		return nil, nil
	}
	if len(w) != k {
		return nil, fieldErr("expected_split", "has %d weights for %d variants", len(w), k)
	}
	var s float64
	for i, x := range w {
		if !(x > 0) || math.IsInf(x, 0) {
			return nil, fieldErr(fmt.Sprintf("expected_split[%d]", i), "must be > 0, got %g", x)
		}
		s += x
	}
	if math.Abs(s-1) > 1e-6 {
		return nil, fieldErr("expected_split", "must sum to 1, got %g", s)
	}
	return w, nil
}
