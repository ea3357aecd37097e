package stats

import (
	"fmt"
	"math"
	"strings"

	"gonum.org/v1/gonum/stat/distuv"
)

// SegmentEffect is one segment value's lift for one test variant, as the
// analyzer gets it from Evaluate on that segment's sufficient statistics.
type SegmentEffect struct {
	Value string  // e.g. "GB"
	Lift  float64 // relative lift
	SE    float64 // its standard error
	P     float64 // its two-sided p-value (the always-valid one by default)
}

// SegmentFinding is a segment after the false-discovery-rate correction.
type SegmentFinding struct {
	SegmentEffect
	PAdjusted   float64 // Benjamini–Hochberg over the segments of this property
	Significant bool    // PAdjusted < α
}

// DivergenceResult says whether segments of one property move in opposite
// directions while the total does not move.
type DivergenceResult struct {
	Diverges bool
	// Cochran's Q heterogeneity test of the segment lifts against their
	// inverse-variance-weighted mean, its p-value (χ² with DF = k−1) and
	// Higgins' I² = max(0, (Q−DF)/Q), the share of variation due to real
	// differences between segments rather than noise.
	Q, QP, I2 float64
	DF        int
	Up, Down  []string // significant segments after BH, by direction
	Segments  []SegmentFinding
	Reason    string
}

// Decision is segment_divergence when the segments diverge and
// inconclusive otherwise.
func (r DivergenceResult) Decision() Decision {
	if r.Diverges {
		return DecisionSegmentDivergence
	}
	return DecisionInconclusive
}

// Divergence flags the motivating case of SPEC §4 — US and IN up 40%, GB
// strongly down, total flat — which a total-only analysis calls
// "inconclusive". It requires all of:
//   - the total is not significant (totalP ≥ α): otherwise the total's own
//     win or loss already tells the story and segment rows add the detail;
//   - Cochran's Q rejects homogeneity at α: the segments really differ;
//   - after Benjamini–Hochberg at level α over the segments (FDR, because a
//     property may have dozens of values and we are scanning, not
//     confirming), at least one segment is significantly up and one down.
//
// Segments with a non-positive or non-finite SE carry no information and are
// left out of both tests.
func Divergence(totalP float64, segments []SegmentEffect, alpha float64) DivergenceResult {
	var seg []SegmentEffect
	for _, s := range segments {
		if s.SE > 0 && !math.IsInf(s.SE, 0) && !math.IsNaN(s.Lift) {
			seg = append(seg, s)
		}
	}
	r := DivergenceResult{Segments: make([]SegmentFinding, len(seg))}
	if len(seg) < 2 {
		r.Reason = "fewer than 2 segments with a defined lift"
		return r
	}
	h := Heterogeneity(seg)
	r.Q, r.DF, r.QP, r.I2 = h.Q, h.DF, h.P, h.I2
	ps := make([]float64, len(seg))
	for i, s := range seg {
		ps[i] = s.P
	}
	for i, p := range AdjustBH(ps) {
		f := SegmentFinding{SegmentEffect: seg[i], PAdjusted: p, Significant: p < alpha}
		r.Segments[i] = f
		switch {
		case f.Significant && f.Lift > 0:
			r.Up = append(r.Up, f.Value)
		case f.Significant && f.Lift < 0:
			r.Down = append(r.Down, f.Value)
		}
	}
	r.Diverges = totalP >= alpha && r.QP < alpha && len(r.Up) > 0 && len(r.Down) > 0
	r.Reason = r.describe(totalP)
	return r
}

// HeterogeneityResult is Cochran's Q test that segment effects share one value.
type HeterogeneityResult struct {
	Q  float64 // Σ wᵢ(liftᵢ − l̄)², wᵢ = 1/SEᵢ², l̄ the w-weighted mean lift
	DF int     // segments − 1
	P  float64 // P(χ²(DF) ≥ Q); 1 when fewer than 2 segments
	// I2 is Higgins' I² = max(0, (Q − DF)/Q): the share of the variation between
	// segments that is real rather than noise.
	I2 float64
}

// Heterogeneity is Cochran's (1954) Q test of the segment lifts against their
// inverse-variance-weighted mean, with Higgins & Thompson's (2002) I². Under
// homogeneity, with known SEs, Q is χ² with k−1 degrees of freedom. Segments
// with a non-positive or non-finite SE, or a NaN lift, carry no information and
// are left out; with fewer than 2 left the test is undefined and P is 1.
func Heterogeneity(segments []SegmentEffect) HeterogeneityResult {
	var seg []SegmentEffect
	for _, s := range segments {
		if s.SE > 0 && !math.IsInf(s.SE, 0) && !math.IsNaN(s.Lift) && !math.IsInf(s.Lift, 0) {
			seg = append(seg, s)
		}
	}
	if len(seg) < 2 {
		return HeterogeneityResult{P: 1, DF: max(len(seg)-1, 0)}
	}
	q, df := cochranQ(seg)
	h := HeterogeneityResult{Q: q, DF: df, P: distuv.ChiSquared{K: float64(df)}.Survival(q)}
	if q > 0 {
		h.I2 = math.Max(0, (q-float64(df))/q)
	}
	return h
}

// cochranQ is Σ wᵢ(yᵢ − ȳ)² with wᵢ = 1/SEᵢ² and ȳ the w-weighted mean.
func cochranQ(seg []SegmentEffect) (float64, int) {
	var sw, swy float64
	for _, s := range seg {
		w := 1 / (s.SE * s.SE)
		sw += w
		swy += w * s.Lift
	}
	mean := swy / sw
	var q float64
	for _, s := range seg {
		d := s.Lift - mean
		q += d * d / (s.SE * s.SE)
	}
	return q, len(seg) - 1
}

func (r DivergenceResult) describe(totalP float64) string {
	return fmt.Sprintf("up: %s; down: %s; total p=%.3g; heterogeneity Q=%.1f (df %d, p=%.3g, I²=%.0f%%)",
		listOrNone(r.Up), listOrNone(r.Down), totalP, r.Q, r.DF, r.QP, 100*r.I2)
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}
