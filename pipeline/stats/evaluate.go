package stats

import (
	"errors"
	"fmt"
	"math"
)

// Defaults (SPEC §4).
const (
	DefaultAlpha    = 0.05
	DefaultMinUsers = 100
)

// Variant is one arm of an experiment.
type Variant struct {
	Name    string
	Moments Moments
}

// Guardrail is a limit on how far a metric may move in its bad direction,
// e.g. {MaxIncrease: 0.30}: errors per user must not rise more than 30%.
// Exactly one field is set.
type Guardrail struct {
	MaxIncrease float64
	MaxDecrease float64
}

// Test runs the one-sided always-valid test of "worse than the limit":
// for MaxIncrease L, H0: lift ≤ L against H1: lift > L, breached when the
// lower bound of the one-sided sequence exceeds L (MaxDecrease mirrors it).
func (g Guardrail) Test(e Effect, alpha, tuning float64) OneSided {
	if g.MaxIncrease > 0 {
		return e.SequentialOneSided(alpha, tuning, g.MaxIncrease, Greater)
	}
	return e.SequentialOneSided(alpha, tuning, -g.MaxDecrease, Less)
}

func (g Guardrail) check() error {
	inc, dec := g.MaxIncrease > 0, g.MaxDecrease > 0
	switch {
	case inc == dec:
		return errors.New("guardrail needs exactly one of max_increase and max_decrease, positive")
	case g.MaxIncrease < 0 || g.MaxDecrease < 0:
		return errors.New("guardrail limits must be positive")
	case dec && g.MaxDecrease >= 1:
		return fmt.Errorf("guardrail max_decrease must be below 1 (−100%%), got %g", g.MaxDecrease)
	}
	return nil
}

// Experiment is one metric (in one segment) of one flag: the input of
// Evaluate. Zero values of Alpha, Tuning, Correction and MinUsers mean the
// SPEC defaults.
type Experiment struct {
	Kind       Kind
	Goal       Goal
	Variants   []Variant
	Control    int       // index of the baseline in Variants
	Split      []float64 // expected traffic split; nil means equal
	Alpha      float64
	Tuning     float64 // N* of the confidence sequence
	Guardrail  *Guardrail
	Prior      *Prior // nil: flat prior
	Correction Correction
	MinUsers   int64 // users per variant before a win or loss is announced
}

func (x Experiment) withDefaults() Experiment {
	if x.Alpha == 0 {
		x.Alpha = DefaultAlpha
	}
	if x.Tuning == 0 {
		x.Tuning = DefaultTuning
	}
	if x.Correction == "" {
		x.Correction = Holm
	}
	if x.MinUsers == 0 {
		x.MinUsers = DefaultMinUsers
	}
	if x.Goal == "" {
		x.Goal = Increase
	}
	return x
}

func (x Experiment) check() error {
	switch {
	case !x.Kind.Valid():
		return fmt.Errorf("unknown metric kind %q", x.Kind)
	case x.Goal != Increase && x.Goal != Decrease:
		return fmt.Errorf("unknown goal %q", x.Goal)
	case len(x.Variants) < 2:
		return fmt.Errorf("need at least 2 variants, got %d", len(x.Variants))
	case x.Control < 0 || x.Control >= len(x.Variants):
		return fmt.Errorf("control index %d out of range", x.Control)
	case !(x.Alpha > 0 && x.Alpha < 0.5):
		return fmt.Errorf("alpha must be in (0, 0.5), got %g", x.Alpha)
	case !(x.Tuning > 0) || math.IsInf(x.Tuning, 0):
		return fmt.Errorf("sequential tuning must be positive, got %g", x.Tuning)
	case x.Prior != nil && !(x.Prior.Variance > 0):
		return fmt.Errorf("prior variance must be positive, got %g", x.Prior.Variance)
	}
	if x.Guardrail != nil {
		if err := x.Guardrail.check(); err != nil {
			return err
		}
	}
	for _, v := range x.Variants {
		if v.Moments.N < 2 {
			return fmt.Errorf("variant %q: need at least 2 users, got %d", v.Name, v.Moments.N)
		}
	}
	return nil
}

// Report is the verdict on one Experiment.
type Report struct {
	Control    Summary
	SRM        SRM
	Correction Correction
	Alpha      float64
	Tuning     float64
	Results    []Result // one per test variant, in input order
}

// Summary describes one variant.
type Summary struct {
	Name string
	N    int64
	Mean float64 // unadjusted; NaN when undefined
}

// Result compares one test variant with control.
type Result struct {
	Summary
	// Err is non-nil (ErrZeroBaseline, ErrNoVariance, …) when no lift could be
	// computed; then Effect and the tests below are zero.
	Err        error
	Effect     Effect
	Fixed      Interval
	Sequential Interval
	// SequentialPAdjusted is the sequential p-value after the experiment's
	// Correction across test variants; it is what decisions compare with α.
	SequentialPAdjusted float64
	Posterior           Posterior
	Guardrail           *OneSided // nil unless the metric has a guardrail
	Decision            Decision
	Reason              string // one line of evidence, for humans
}

// Evaluate runs every test on one metric of one flag: SRM over all
// variants, then each test variant against control, the multiple-comparison
// correction across test variants, and the decision.
func Evaluate(x Experiment) (Report, error) {
	x = x.withDefaults()
	if err := x.check(); err != nil {
		return Report{}, fmt.Errorf("evaluate: %w", err)
	}
	srm, err := CheckSRM(userCounts(x.Variants), x.Split)
	if err != nil {
		return Report{}, fmt.Errorf("evaluate: %w", err)
	}
	control := x.Variants[x.Control]
	rep := Report{
		Control:    summarize(x.Kind, control),
		SRM:        srm,
		Correction: x.Correction,
		Alpha:      x.Alpha,
		Tuning:     x.Tuning,
		Results:    make([]Result, 0, len(x.Variants)-1),
	}
	for i, v := range x.Variants {
		if i != x.Control {
			rep.Results = append(rep.Results, x.compare(control, v))
		}
	}
	x.adjust(rep.Results)
	for i := range rep.Results {
		r := &rep.Results[i]
		r.Decision, r.Reason = x.decide(*r, rep.Control, srm)
	}
	return rep, nil
}

func userCounts(vs []Variant) []int64 {
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = v.Moments.N
	}
	return out
}

func summarize(kind Kind, v Variant) Summary {
	return Summary{Name: v.Name, N: v.Moments.N, Mean: MeanOf(kind, v.Moments)}
}

// compare runs the per-variant tests.
func (x Experiment) compare(control, test Variant) Result {
	r := Result{Summary: summarize(x.Kind, test)}
	e, err := RelativeLift(x.Kind, control.Moments, test.Moments)
	if err != nil {
		r.Err = err
		r.Effect.CUPED = e.CUPED
		return r
	}
	r.Effect = e
	r.Fixed = e.Fixed(x.Alpha)
	r.Sequential = e.Sequential(x.Alpha, x.Tuning)
	r.Posterior = e.Posterior(x.Goal, x.Prior, x.Alpha)
	if x.Guardrail != nil {
		g := x.Guardrail.Test(e, x.Alpha, x.Tuning)
		r.Guardrail = &g
	}
	return r
}

// adjust applies the correction to the sequential p-values of the variants
// that have one; undefined comparisons are not part of the family.
func (x Experiment) adjust(rs []Result) {
	var ps []float64
	var at []int
	for i, r := range rs {
		if r.Err == nil {
			ps = append(ps, r.Sequential.P)
			at = append(at, i)
		}
	}
	for j, p := range x.Correction.Adjust(ps) {
		rs[at[j]].SequentialPAdjusted = p
	}
}

// decide picks the decision word. Precedence, and why:
//  1. guardrail_breach — fires even before the minimum sample (SPEC §4), and
//     even under SRM, because a variant that crashes is a classic cause of
//     SRM and rolling back is the safe action either way;
//  2. srm — the assignment is broken, so no comparison can be trusted;
//  3. insufficient_data — no defined lift, or below the minimum sample;
//  4. win / loss — the (corrected) always-valid p-value is below α; the
//     direction is judged against the metric's goal;
//  5. inconclusive.
func (x Experiment) decide(r Result, control Summary, srm SRM) (Decision, string) {
	if g := r.Guardrail; g != nil && g.Rejected {
		return DecisionGuardrailBreach, fmt.Sprintf(
			"lift %s: the always-valid %s bound %s is beyond the guardrail limit %s (one-sided p=%.3g)",
			pct(r.Effect.Lift), boundName(g), pct(g.Bound), pct(g.Null), g.P)
	}
	if srm.Alarm {
		return DecisionSRM, fmt.Sprintf(
			"sample ratio mismatch: χ²=%.1f, p=%.3g < %g against the configured split; results are not trustworthy",
			srm.ChiSquare, srm.P, SRMAlpha)
	}
	if r.Err != nil {
		return DecisionInsufficientData, r.Err.Error()
	}
	if n := min(control.N, r.N); n < x.MinUsers {
		return DecisionInsufficientData, fmt.Sprintf(
			"%d users in the smaller arm, need %d per variant before deciding", n, x.MinUsers)
	}
	if r.SequentialPAdjusted < x.Alpha {
		if (r.Effect.Lift > 0) == (x.Goal == Increase) {
			return DecisionWin, x.evidence(r)
		}
		return DecisionLoss, x.evidence(r)
	}
	return DecisionInconclusive, x.evidence(r)
}

// evidence states the sequential result in one line, e.g. "lift +12.0%,
// always-valid 95% interval [+3.1%, +20.9%] excludes 0 (p=0.004)".
func (x Experiment) evidence(r Result) string {
	s := r.Sequential
	verdict := "includes 0"
	switch {
	case r.SequentialPAdjusted < x.Alpha:
		verdict = "excludes 0"
	case s.Excludes(0):
		verdict = fmt.Sprintf("excludes 0, but not after the %s correction", x.Correction)
	}
	p := fmt.Sprintf("p=%.3g", s.P)
	if x.Correction != NoCorrection && len(x.Variants) > 2 {
		p += fmt.Sprintf(", %s-adjusted %.3g", x.Correction, r.SequentialPAdjusted)
	}
	return fmt.Sprintf("lift %s, always-valid %.4g%% interval [%s, %s] %s (%s)",
		pct(r.Effect.Lift), 100*(1-x.Alpha), pct(s.Lo), pct(s.Hi), verdict, p)
}

func boundName(g *OneSided) string {
	if g.Bound < g.Null {
		return "upper"
	}
	return "lower"
}

// pct formats a relative change for humans: 0.1234 → "+12.3%".
func pct(x float64) string {
	return fmt.Sprintf("%+.1f%%", 100*x)
}
