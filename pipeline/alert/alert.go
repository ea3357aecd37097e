// Package alert defines the message the analyzer writes to the flag_alerts topic and the
// notifier turns into Slack posts. It is the contract between the two services, so it is
// plain data with a stable JSON shape (SPEC §5, §6) and one rule: the dedup key names the
// finding (flag, metric, segment, decision), never the numbers, so a finding that is
// re-detected on every pass maps to the same key.
package alert

import (
	"strings"
	"time"
)

// Topic is the Kafka topic alerts are written to.
const Topic = "flag_alerts"

// Decisions (SPEC §4).
const (
	Win               = "win"
	Loss              = "loss"
	Inconclusive      = "inconclusive"
	InsufficientData  = "insufficient_data"
	GuardrailBreach   = "guardrail_breach"
	SRM               = "srm"
	SegmentDivergence = "segment_divergence"
	BehaviourShift    = "behaviour_shift"
	Stale             = "stale"
	// Resolved is sent when a previously alerted finding no longer holds (e.g. a stale
	// flag receives exposures again); the notifier closes the incident thread with it.
	Resolved = "resolved"
	// Rollout is a progressive rollout's change (a stage advanced, held, rolled back,
	// stopped, completed): an event said once, never an open finding that needs
	// resolving. Numbers.Rollout says what changed.
	Rollout = "rollout"
)

// What a heterogeneity row (the analyzer's test that a flag's effect is the same for
// every value of a property) concluded, in its reason — at the flag's α for a configured
// property, under the pass's false discovery rate for a discovered one — so that readers
// without the monitors file (the digest) tell the properties that explain a result from
// those that do not.
const (
	EffectDiffers = "the effect differs"
	NoEvidence    = "no evidence it differs"
)

// Severities.
const (
	Critical = "critical"
	Warning  = "warning"
	Info     = "info"
)

// Segment names the slice of users a finding is about. A nil *Segment is the whole
// population; Value nil means the whole segment property (e.g. segment divergence
// across all countries).
type Segment struct {
	Property string  `json:"property"`
	Value    *string `json:"value,omitempty"`
}

// Alert is one flag's incident in one pass: the most important of the flag's current
// findings (the headline, in the top-level fields, as SPEC §6 names them) and, in
// Findings, every current finding of the flag in priority order, headline first, with
// the ones that are new in this pass marked. The analyzer emits one Alert per flag per
// pass in which something is new (or a critical finding is due for a repeat), so one
// Slack thread tells one story; Action is the recommendation for the whole flag, and
// never contradicts a finding (no "ship it" while a segment or guardrail is losing).
// Fields that do not apply are empty.
type Alert struct {
	Flag     string   `json:"flag"`
	Metric   string   `json:"metric,omitempty"`
	Segment  *Segment `json:"segment"`
	Variant  string   `json:"variant,omitempty"`
	Decision string   `json:"decision"`
	Severity string   `json:"severity"`
	DedupKey string   `json:"dedup_key"`
	// Summary is one human sentence: "new-checkout is losing 35% of UK purchases".
	Summary string `json:"summary"`
	// Reason is the evidence in words (test used, thresholds crossed).
	Reason string `json:"reason,omitempty"`
	// Action is what the team should do next ("roll back", "ship it", …).
	Action       string    `json:"action,omitempty"`
	Numbers      Numbers   `json:"numbers"`
	Rollback     *Rollback `json:"rollback,omitempty"`
	SlackChannel string    `json:"slack_channel,omitempty"`
	DetectedAt   time.Time `json:"detected_at"`
	// Findings are the flag's current findings, most important first (Findings[0] is the
	// headline above). Empty in alerts from before incidents existed: treat the alert as
	// its own single finding.
	Findings []Finding `json:"findings,omitempty"`
	// PageURL links to the flag's page when the analyzer knows its public URL.
	PageURL string `json:"page_url,omitempty"`
}

// Finding is one decision about a flag in a pass: a metric's win or loss (whole
// population or one segment value), a guardrail breach, or a finding about the whole
// flag or a segment property (srm, stale, segment_divergence, behaviour_shift).
type Finding struct {
	Metric   string   `json:"metric,omitempty"`
	Segment  *Segment `json:"segment"`
	Variant  string   `json:"variant,omitempty"`
	Decision string   `json:"decision"`
	Severity string   `json:"severity"`
	DedupKey string   `json:"dedup_key"`
	Summary  string   `json:"summary"`
	Reason   string   `json:"reason,omitempty"`
	Numbers  Numbers  `json:"numbers"`
	// New is set on findings first emitted in this pass, or repeated because they are
	// critical and unresolved: what a thread reply reports.
	New bool `json:"new,omitempty"`
	// Discovered is set when the segment property was found by property discovery rather
	// than configured.
	Discovered bool `json:"discovered,omitempty"`
	// Watch, on a loss, guardrail breach or divergence of a flag that exposes its users
	// and has a recordings_url, is a few sessions behind the finding to watch; the
	// notifier posts them once per incident.
	Watch *Watch `json:"watch,omitempty"`
}

// Watch is a few recorded sessions behind a finding (SPEC §12): links only, never a
// name or an email, because the message goes to a channel.
type Watch struct {
	// Who says whose sessions these are: "GB users on test who did not purchase".
	Who      string    `json:"who"`
	Sessions []Session `json:"sessions"`
}

// Session is one session to watch: its $session_id, the link to its recording and
// when it started.
type Session struct {
	ID    string    `json:"id"`
	URL   string    `json:"url"`
	Start time.Time `json:"start"`
}

// Priority orders decisions by how much they matter to the team reading them: a
// guardrail breach (and its rollback) first, then a sample ratio mismatch (nothing else
// can be trusted), segments diverging, a loss, a win, a behaviour shift, stale exposures.
// Lower is more important; unknown decisions sort last.
func Priority(decision string) int {
	switch decision {
	case GuardrailBreach:
		return 0
	case SRM:
		return 1
	case SegmentDivergence:
		return 2
	case Loss:
		return 3
	case Win:
		return 4
	case BehaviourShift:
		return 5
	case Stale:
		return 6
	case Resolved:
		return 7
	case Rollout:
		return 8
	}
	return 9
}

// IsEvent reports whether decision is an event rather than a finding: said once, in the
// flag's thread, and never open.
func IsEvent(decision string) bool { return decision == Rollout }

// Numbers carries the statistics behind a finding, for the message body.
type Numbers struct {
	// MetricKind is the metric's kind (conversion, count, sum, ratio): a conversion's
	// means are shown as percentages.
	MetricKind  string     `json:"metric_kind,omitempty"`
	Control     string     `json:"control,omitempty"`
	ControlN    int64      `json:"control_n,omitempty"`
	VariantN    int64      `json:"variant_n,omitempty"`
	ControlMean float64    `json:"control_mean,omitempty"`
	VariantMean float64    `json:"variant_mean,omitempty"`
	Lift        float64    `json:"lift,omitempty"`
	CI          [2]float64 `json:"ci"`
	P           float64    `json:"p,omitempty"`
	ChanceToWin float64    `json:"chance_to_win,omitempty"`
	SRMP        float64    `json:"srm_p,omitempty"`
	CUPED       bool       `json:"cuped,omitempty"`
	Correction  string     `json:"correction,omitempty"`
	// Segments are the per-segment effects that drive the finding, worst first.
	Segments []SegmentEffect `json:"segments,omitempty"`
	// Property analysis: how many candidate segment properties were tried for this flag
	// in the pass (for the false-discovery statement next to a discovered divergence).
	PropertiesTried int `json:"properties_tried,omitempty"`
	// Rollout is set on a rollout alert: the stage change and the evidence behind it.
	Rollout *RolloutChange `json:"rollout,omitempty"`
}

// Rollout changes (RolloutChange.Change).
const (
	RolloutStart    = "start"    // the plan took the flag to its first stage
	RolloutAdvance  = "advance"  // to the next stage
	RolloutComplete = "complete" // the last stage's minimums were met: done
	RolloutHold     = "hold"     // not advancing: SRM or missing data
	RolloutBack     = "rollback" // a guardrail breach: back to the fallback stage
	RolloutResumed  = "resume"   // a person handed control back (analyzer rollout resume)
)

// A change the flag system did not take keeps its Change and has RolloutChange.Status
// "failed"; one flagwatch would not make (a person changed the flag since flagwatch's
// last change) keeps it too, with Status "refused", and stops the plan.

// RolloutChange is one change of a flag's progressive rollout.
type RolloutChange struct {
	Change string `json:"change"`
	// Status is how the change went: "ok", "failed" (the flag system did not take it;
	// tried again next pass) or "refused" (flagwatch would not act: a person changed
	// the flag; the plan stops).
	Status string `json:"status,omitempty"`
	// ChangeID is the change's identity, the flag's n-th change: "new-checkout|rollout|4".
	ChangeID string `json:"change_id"`
	// Stages are 1-based; 0 is "before the plan" (off for everyone the plan owns).
	FromStage int    `json:"from_stage"`
	ToStage   int    `json:"to_stage"`
	Stages    int    `json:"stages"`
	From      string `json:"from,omitempty"` // the stages' labels: "10%", "beta users"
	To        string `json:"to,omitempty"`
	// UsersPerVariant is the fewest users first exposed during the stage among the
	// compared variants.
	UsersPerVariant int64 `json:"users_per_variant,omitempty"`
	// InStageSeconds is how long the flag had been in the stage it leaves (or holds).
	InStageSeconds int64 `json:"in_stage_seconds,omitempty"`
	// Guardrails are the guardrail metrics' state at the change.
	Guardrails []GuardrailState `json:"guardrails,omitempty"`
	// Evidence is the test behind a rollback, in the analyzer's words.
	Evidence string `json:"evidence,omitempty"`
}

// GuardrailState is one guardrail metric at a rollout change.
type GuardrailState struct {
	Metric  string   `json:"metric"`
	Segment *Segment `json:"segment,omitempty"`
	Variant string   `json:"variant,omitempty"`
	// Limit is the signed limit: +0.30 for max_increase 0.30, −0.20 for max_decrease.
	Limit    float64    `json:"limit"`
	Lift     float64    `json:"lift"`
	CI       [2]float64 `json:"ci"`
	Decision string     `json:"decision"`
}

// SegmentEffect is one segment value's lift.
type SegmentEffect struct {
	Property string     `json:"property"`
	Value    string     `json:"value"`
	N        int64      `json:"n"`
	Lift     float64    `json:"lift"`
	CI       [2]float64 `json:"ci"`
	Decision string     `json:"decision,omitempty"`
}

// Rollback records what the analyzer called and how it went.
type Rollback struct {
	Action string    `json:"action"` // "webhook" or "posthog"
	Target string    `json:"target"` // URL called (no secrets)
	Status string    `json:"status"` // "ok" or "failed"
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// DedupKey is the stable identity of a finding.
func DedupKey(flag, metric string, seg *Segment, decision string) string {
	var b strings.Builder
	b.WriteString(flag)
	b.WriteByte('|')
	b.WriteString(metric)
	b.WriteByte('|')
	if seg != nil {
		b.WriteString(seg.Property)
		if seg.Value != nil {
			b.WriteByte('=')
			b.WriteString(*seg.Value)
		}
	}
	b.WriteByte('|')
	b.WriteString(decision)
	return b.String()
}

// ValueString is the segment's value, or "" for a whole-property finding.
func (s *Segment) ValueString() string {
	if s == nil || s.Value == nil {
		return ""
	}
	return *s.Value
}
