package stats

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Prior is a proper Gaussian prior on the relative lift (0.1 = +10%).
type Prior struct {
	Mean     float64
	Variance float64
}

// Posterior is the Gaussian posterior of the relative lift.
type Posterior struct {
	Mean, SD float64
	// ChanceToWin is P(test beats control): P(lift > 0) for a metric whose
	// goal is Increase, P(lift < 0) for Decrease.
	ChanceToWin float64
	Lo, Hi      float64 // equal-tailed 1−α credible interval
}

// Posterior combines the effect's normal likelihood with prior (nil means
// GrowthBook's default improper flat prior, under which the posterior is
// N(lift, SE²)) by precision weighting — gbstats' EffectBayesianABTest.
func (e Effect) Posterior(goal Goal, prior *Prior, alpha float64) Posterior {
	prec := 1 / (e.SE * e.SE)
	mean := e.Lift
	if prior != nil {
		pp := 1 / prior.Variance
		mean = (e.Lift*prec + prior.Mean*pp) / (prec + pp)
		prec += pp
	}
	d := distuv.Normal{Mu: mean, Sigma: 1 / math.Sqrt(prec)}
	ctw := d.Survival(0)
	if goal == Decrease {
		ctw = d.CDF(0)
	}
	return Posterior{
		Mean: mean, SD: d.Sigma, ChanceToWin: ctw,
		Lo: d.Quantile(alpha / 2), Hi: d.Quantile(1 - alpha/2),
	}
}
