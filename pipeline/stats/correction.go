package stats

import (
	"fmt"
	"math"
	"sort"
)

// Correction names a multiple-comparison adjustment.
type Correction string

// Corrections. Holm controls the family-wise error rate and suits the few
// variant-vs-control comparisons behind a ship/rollback decision;
// Benjamini–Hochberg controls the false discovery rate and suits the many
// segments scanned for "where is it failing".
const (
	Holm              Correction = "holm"
	BenjaminiHochberg Correction = "benjamini-hochberg"
	NoCorrection      Correction = "none"
)

// ParseCorrection accepts the names above and "bh"; "" means Holm.
func ParseCorrection(s string) (Correction, error) {
	switch s {
	case "", string(Holm):
		return Holm, nil
	case "bh", string(BenjaminiHochberg):
		return BenjaminiHochberg, nil
	case string(NoCorrection):
		return NoCorrection, nil
	}
	return "", fmt.Errorf("unknown correction %q (want holm, bh or none)", s)
}

// Adjust returns adjusted p-values in the order of p.
func (c Correction) Adjust(p []float64) []float64 {
	switch c {
	case BenjaminiHochberg:
		return AdjustBH(p)
	case NoCorrection:
		return append([]float64(nil), p...)
	default:
		return AdjustHolm(p)
	}
}

// ascending returns the indices of p sorted by value.
func ascending(p []float64) []int {
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] < p[idx[b]] })
	return idx
}

// AdjustHolm is Holm's (1979) step-down adjustment: the i-th smallest p-value
// (from 0) becomes max over j ≤ i of min(1, (m−j)·p₍ⱼ₎) — R's p.adjust "holm".
func AdjustHolm(p []float64) []float64 {
	m := len(p)
	out := make([]float64, m)
	running := 0.0
	for rank, i := range ascending(p) {
		running = math.Max(running, math.Min(1, float64(m-rank)*p[i]))
		out[i] = running
	}
	return out
}

// AdjustBH is the Benjamini–Hochberg (1995) step-up adjustment: the i-th
// smallest p-value (from 1) becomes min over j ≥ i of min(1, m·p₍ⱼ₎/j) — R's
// p.adjust "BH". Rejecting where the adjusted value is < q controls the FDR
// at q for independent or positively dependent tests.
func AdjustBH(p []float64) []float64 {
	m := len(p)
	out := make([]float64, m)
	idx := ascending(p)
	running := 1.0
	for rank := m - 1; rank >= 0; rank-- {
		i := idx[rank]
		running = math.Min(running, float64(m)*p[i]/float64(rank+1))
		out[i] = running
	}
	return out
}

// Selective is the outcome of testing many families of hypotheses and, within
// the families selected, their members (Benjamini & Bogomolov 2014).
type Selective struct {
	// Selected marks the families whose p-value survives Benjamini–Hochberg at q.
	Selected []bool
	// FamilyAdjusted are the families' BH-adjusted p-values.
	FamilyAdjusted []float64
	// Level is the level q·R/m at which members of a selected family are tested
	// (with BH within the family): R families selected out of m. 0 when none is.
	Level float64
}

// SelectFamilies selects families by Benjamini–Hochberg on their p-values at
// level q, and returns the level at which each selected family's own members
// are then to be tested, q·R/m. Benjamini & Bogomolov (2014, "Selective
// inference on multiple families of hypotheses", JRSS B 76(1)) show that
// testing within each selected family with BH at q·R/m controls the expected
// average false discovery rate over the selected families at q, for
// independent families; the family p-value may be any valid test of the
// family's global null (the analyzer uses Cochran's Q: "the effect does not
// differ across the values of this property"). The same q·R/m is the level of
// Benjamini & Yekutieli's (2005) false-coverage-rate-adjusted intervals for
// the R selected parameters.
func SelectFamilies(familyP []float64, q float64) Selective {
	s := Selective{Selected: make([]bool, len(familyP)), FamilyAdjusted: AdjustBH(familyP)}
	r := 0
	for i, p := range s.FamilyAdjusted {
		if p < q {
			s.Selected[i] = true
			r++
		}
	}
	if len(familyP) > 0 {
		s.Level = q * float64(r) / float64(len(familyP))
	}
	return s
}
