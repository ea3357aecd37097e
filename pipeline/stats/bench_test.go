package stats

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// flagFixture is one flag as the analyzer sees it after one ClickHouse
// query: 5 metrics × 20 segment values × 3 variants of sufficient statistics.
func flagFixture() [][]Experiment {
	rng := rand.New(rand.NewPCG(1, 1))
	kinds := []struct {
		kind Kind
		goal Goal
		g    *Guardrail
		pre  bool
	}{
		{Conversion, Increase, nil, true},
		{Count, Decrease, &Guardrail{MaxIncrease: 0.3}, false},
		{Sum, Increase, nil, true},
		{Ratio, Increase, nil, false},
		{Mean, Increase, nil, true},
	}
	metrics := make([][]Experiment, len(kinds))
	for m, k := range kinds {
		for range 20 {
			x := Experiment{Kind: k.kind, Goal: k.goal, Guardrail: k.g}
			for v := range 3 {
				n := int64(2000 + rng.IntN(2000))
				mu := 0.1 * (1 + 0.05*float64(v) + 0.02*rng.NormFloat64())
				mo := Moments{N: n, Sum: mu * float64(n), SumSq: 1.5 * mu * float64(n)}
				if k.kind == Conversion {
					mo.SumSq = mo.Sum
				}
				if k.pre {
					mo.Pre = &PrePeriod{Sum: 0.9 * mo.Sum, SumSq: 0.9 * mo.SumSq, Cross: 0.7 * mo.SumSq}
				}
				if k.kind == Ratio {
					mo.Den = &Denominator{Sum: 0.5 * float64(n), SumSq: 0.6 * float64(n), Cross: 0.6 * mo.Sum}
				}
				x.Variants = append(x.Variants, Variant{Name: fmt.Sprintf("v%d", v), Moments: mo})
			}
			metrics[m] = append(metrics[m], x)
		}
	}
	return metrics
}

// evaluateFlag is what the analyzer does per flag per pass: every metric in
// every segment, then the divergence check per metric and test variant.
func evaluateFlag(metrics [][]Experiment) (decisions int, err error) {
	for _, segments := range metrics {
		effects := make([][]SegmentEffect, 2)
		for s, x := range segments {
			rep, err := Evaluate(x)
			if err != nil {
				return 0, err
			}
			for i, r := range rep.Results {
				effects[i] = append(effects[i], SegmentEffect{
					Value: fmt.Sprint(s), Lift: r.Effect.Lift, SE: r.Effect.SE, P: r.Sequential.P})
				decisions++
			}
		}
		for _, e := range effects {
			Divergence(0.5, e, DefaultAlpha)
		}
	}
	return decisions, nil
}

func TestEvaluateFlagFixture(t *testing.T) {
	n, err := evaluateFlag(flagFixture())
	if err != nil || n != 5*20*2 {
		t.Fatalf("evaluateFlag = %d, %v", n, err)
	}
}

// BenchmarkEvaluateFlag: one flag × 5 metrics × 20 segments × 3 variants.
func BenchmarkEvaluateFlag(b *testing.B) {
	metrics := flagFixture()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := evaluateFlag(metrics); err != nil {
			b.Fatal(err)
		}
	}
}
