package stats

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// SRM thresholds (SPEC §4). p < 0.001 rather than α because SRM is checked
// on every look: a strict threshold keeps repeated checking from crying wolf,
// while real mismatches (a buggy assignment, a variant that crashes before
// logging its exposure) reach p-values far below it within hours.
const (
	SRMAlpha         = 0.001
	SRMMinPerVariant = 8   // below this the χ² approximation is unreliable
	SRMMinTotal      = 100 // and too few exposures say nothing anyway
)

// SRM is a sample-ratio-mismatch check.
type SRM struct {
	ChiSquare float64
	DF        int
	P         float64
	Eligible  bool // enough users for the χ² approximation
	Alarm     bool // Eligible and P < SRMAlpha
}

// CheckSRM runs Pearson's χ² goodness-of-fit test of the observed users per
// variant against the configured split (weights, normalised; nil means an
// equal split), as gbstats check_srm does.
func CheckSRM(users []int64, split []float64) (SRM, error) {
	k := len(users)
	if k < 2 {
		return SRM{}, fmt.Errorf("srm: need at least 2 variants, got %d", k)
	}
	w, err := splitWeights(split, k)
	if err != nil {
		return SRM{}, fmt.Errorf("srm: %w", err)
	}
	var total int64
	eligible := true
	for _, u := range users {
		total += u
		eligible = eligible && u >= SRMMinPerVariant
	}
	r := SRM{DF: k - 1, P: 1, Eligible: eligible && total >= SRMMinTotal}
	if total == 0 {
		return r, nil
	}
	for i, u := range users {
		e := w[i] * float64(total)
		d := float64(u) - e
		r.ChiSquare += d * d / e
	}
	r.P = distuv.ChiSquared{K: float64(r.DF)}.Survival(r.ChiSquare)
	r.Alarm = r.Eligible && r.P < SRMAlpha
	return r, nil
}

// splitWeights normalises the expected split; nil means equal weights.
func splitWeights(split []float64, k int) ([]float64, error) {
	w := make([]float64, k)
	if split == nil {
		for i := range w {
			w[i] = 1 / float64(k)
		}
		return w, nil
	}
	if len(split) != k {
		return nil, fmt.Errorf("split has %d weights for %d variants", len(split), k)
	}
	var s float64
	for i, x := range split {
		if !(x > 0) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("split weight %d must be positive, got %g", i, x)
		}
		s += x
	}
	for i, x := range split {
		w[i] = x / s
	}
	return w, nil
}
