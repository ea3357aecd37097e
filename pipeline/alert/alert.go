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

// Alert is one finding. Fields that do not apply are empty.
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
}

// Numbers carries the statistics behind a finding, for the message body.
type Numbers struct {
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
