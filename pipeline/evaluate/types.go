package evaluate

// Input is one request of `analyzer evaluate` in the shape of SPEC §4. The
// pointer fields are optional (nil: absent) or are required fields whose
// absence must be told apart from zero; Float makes them from literals.
type Input struct {
	Metric           Metric    `json:"metric"`
	Alpha            *float64  `json:"alpha,omitempty"`             // default 0.05
	ExpectedSplit    []float64 `json:"expected_split,omitempty"`    // default equal split
	SequentialTuning *float64  `json:"sequential_tuning,omitempty"` // N*, default 5000
	// Correction across test variants: "holm" (default), "bh" or "none".
	Correction string `json:"correction,omitempty"`
	// Prior is a proper Gaussian prior on the relative lift for
	// chance_to_win; absent means a flat prior.
	Prior *Prior `json:"prior,omitempty"`
	// MinUsersPerVariant before a win or loss is announced; default 100.
	MinUsersPerVariant *float64  `json:"min_users_per_variant,omitempty"`
	Variants           []Variant `json:"variants"`
}

// Metric names the metric and how to judge it.
type Metric struct {
	Name      string     `json:"name,omitempty"`
	Kind      string     `json:"kind"`           // conversion, count, sum, mean or ratio
	Goal      string     `json:"goal,omitempty"` // increase (default) or decrease
	Guardrail *Guardrail `json:"guardrail,omitempty"`
}

// Guardrail is a limit on a metric's bad move; exactly one field is set.
type Guardrail struct {
	MaxIncrease *float64 `json:"max_increase,omitempty"`
	MaxDecrease *float64 `json:"max_decrease,omitempty"`
}

// Prior is a Gaussian prior on the relative lift.
type Prior struct {
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
}

// Variant carries one variant's sufficient statistics. The first variant,
// or the one named "control", is the baseline.
type Variant struct {
	Name  string   `json:"name"`
	N     *float64 `json:"n"`                // users; a whole number ≥ 2
	Sum   *float64 `json:"sum"`              // Σx (ratio: Σ numerator)
	SumSq *float64 `json:"sum_sq,omitempty"` // Σx²; optional for conversions
	// CUPED covariate: all three or none.
	PreSum   *float64 `json:"pre_sum,omitempty"`
	PreSumSq *float64 `json:"pre_sum_sq,omitempty"`
	PreCross *float64 `json:"pre_cross,omitempty"` // Σ x·pre
	// Ratio metrics only: all three required.
	DenSum   *float64 `json:"den_sum,omitempty"`
	DenSumSq *float64 `json:"den_sum_sq,omitempty"`
	CrossSum *float64 `json:"cross_sum,omitempty"` // Σ numerator·denominator
}

// Float returns a pointer to x, for building an Input in Go.
func Float(x float64) *float64 { return &x }

// Output is the verdict on one Input. Keys follow SPEC §4; numbers that
// are undefined (no lift when the control mean is zero, say) are null.
type Output struct {
	SRMP             float64  `json:"srm_p"`
	SRM              bool     `json:"srm"` // the SRM alarm: p < 0.001 with enough users
	Correction       string   `json:"correction"`
	Metric           string   `json:"metric,omitempty"`
	Alpha            float64  `json:"alpha"`
	SequentialTuning float64  `json:"sequential_tuning"`
	Control          Arm      `json:"control"`
	Results          []Result `json:"results"`
}

// Arm describes the control variant.
type Arm struct {
	Variant string   `json:"variant"`
	N       int64    `json:"n"`
	Mean    *float64 `json:"mean"`
}

// Result compares one test variant with control. Lifts and intervals are
// relative: 0.1 = +10%.
type Result struct {
	Variant     string          `json:"variant"`
	N           int64           `json:"n"`
	Mean        *float64        `json:"mean"`
	Lift        *float64        `json:"lift"`
	SE          *float64        `json:"se"`
	Fixed       *Test           `json:"fixed"`      // Welch t, fixed horizon; for reference
	Sequential  *Test           `json:"sequential"` // always-valid; drives the decision
	ChanceToWin *float64        `json:"chance_to_win"`
	CUPED       bool            `json:"cuped"`
	CUPEDTheta  *float64        `json:"cuped_theta,omitempty"`
	CUPEDNote   string          `json:"cuped_note,omitempty"` // why CUPED was not applied
	Guardrail   *GuardrailCheck `json:"guardrail,omitempty"`
	Decision    string          `json:"decision"`
	Reason      string          `json:"reason"`
}

// Test is a two-sided test on the relative lift.
type Test struct {
	P float64 `json:"p"`
	// PAdjusted is the p-value after the output's correction (sequential only).
	PAdjusted *float64   `json:"p_adjusted,omitempty"`
	CI        [2]float64 `json:"ci"`
}

// GuardrailCheck is the one-sided always-valid test of a guardrail.
type GuardrailCheck struct {
	Limit  float64 `json:"limit"` // +0.3 for max_increase 0.3, −0.2 for max_decrease 0.2
	Bound  float64 `json:"bound"` // the one-sided bound compared with Limit
	P      float64 `json:"p"`
	Breach bool    `json:"breach"`
}
