package stats

// Decision is the verdict word of SPEC §4.
type Decision string

// Decisions. Stale is decided by the analyzer (exposures stopped), never here.
const (
	DecisionWin               Decision = "win"
	DecisionLoss              Decision = "loss"
	DecisionInconclusive      Decision = "inconclusive"
	DecisionInsufficientData  Decision = "insufficient_data"
	DecisionGuardrailBreach   Decision = "guardrail_breach"
	DecisionSRM               Decision = "srm"
	DecisionSegmentDivergence Decision = "segment_divergence"
	DecisionBehaviourShift    Decision = "behaviour_shift"
	DecisionStale             Decision = "stale"
)

// Latches reports whether d, once reached, is kept: win, loss and
// guardrail_breach come from an always-valid sequence crossing a boundary,
// and the α guarantee covers the first crossing — an interval that later
// drifts back over zero does not undo it.
func (d Decision) Latches() bool {
	return d == DecisionWin || d == DecisionLoss || d == DecisionGuardrailBreach
}

// Latch returns the decision to keep given the previously latched one (""
// when none) and this look's. A latched decision persists until the caller
// re-arms it on a config change by passing prev = "". The one exception is
// a guardrail breach, which overrides a latched win or loss because it calls
// for action (rollback) that the earlier verdict does not. Decisions that do
// not latch (inconclusive, insufficient_data, srm, …) are returned as they
// come.
func Latch(prev, next Decision) Decision {
	switch {
	case prev == DecisionGuardrailBreach:
		return prev
	case next == DecisionGuardrailBreach:
		return next
	case prev.Latches():
		return prev
	}
	return next
}
