package rollout

import (
	"slices"
	"strings"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Plan is one flag's rollout plan as the controller uses it.
type Plan struct {
	Flag   string
	Stages []config.Stage
	// Control and Variants are the compared variants (the flag's split), control first.
	Control  string
	Variants []string
	// Guardrails are the flag's guardrail metrics.
	Guardrails []config.Metric
	Rollout    *config.Rollout
	Channel    string
}

// Plans returns the plans of the monitors' flags, in file order.
func Plans(mons *config.Monitors) []*Plan {
	var out []*Plan
	for _, f := range mons.Flags {
		if f.Rollout != nil {
			out = append(out, NewPlan(f, mons.Defaults.SlackChannel))
		}
	}
	return out
}

// NewPlan is flag f's plan (f.Rollout must be set).
func NewPlan(f config.Flag, defaultChannel string) *Plan {
	p := &Plan{Flag: f.Key, Stages: f.Rollout.Stages, Control: f.Control, Rollout: f.Rollout, Channel: f.SlackChannel}
	if p.Channel == "" {
		p.Channel = defaultChannel
	}
	p.Variants = append(p.Variants, f.Control)
	for _, v := range f.Split.Variants() {
		if v != f.Control {
			p.Variants = append(p.Variants, v)
		}
	}
	for _, m := range f.Metrics {
		if m.Guardrail != nil {
			p.Guardrails = append(p.Guardrails, m)
		}
	}
	return p
}

// Label names stage k (1-based) for people; stage 0 is "0%".
func (p *Plan) Label(k int) string {
	if k <= 0 || k > len(p.Stages) {
		return "0%"
	}
	return p.Stages[k-1].Label()
}

// Percent is the share of all users stage k gives the flag to: the highest percentage
// stage up to k (target-group stages add groups, not a share of everyone).
func (p *Plan) Percent(k int) float64 {
	pct := 0.0
	for i := 0; i < k && i < len(p.Stages); i++ {
		pct = max(pct, p.Stages[i].Percent)
	}
	return pct
}

// Groups are the target groups stage k gives the flag to.
func (p *Plan) Groups(k int) []config.TargetGroup {
	var out []config.TargetGroup
	for i := 0; i < k && i < len(p.Stages); i++ {
		if g := p.Stages[i].Group; g != nil {
			out = append(out, *g)
		}
	}
	return out
}

// Ramp is the stages in one line: "1% → 5% → 10% → 25% → 50% → 100%".
func (p *Plan) Ramp() string {
	labels := make([]string, len(p.Stages))
	for i := range p.Stages {
		labels[i] = p.Label(i + 1)
	}
	return strings.Join(labels, " → ")
}

// System names the flag system: "PostHog flag 42" or the webhook's URL.
func (p *Plan) System() string {
	switch r := p.Rollout; {
	case r.PostHog != nil:
		return "PostHog flag " + itoa(r.PostHog.FlagID) + " (" + r.PostHog.Host + ")"
	case r.Webhook != nil:
		return "webhook " + r.Webhook.URL
	}
	return ""
}

// guardrail returns the guardrail metric called name, or nil.
func (p *Plan) guardrail(name string) *config.Metric {
	i := slices.IndexFunc(p.Guardrails, func(m config.Metric) bool { return m.Name == name })
	if i < 0 {
		return nil
	}
	return &p.Guardrails[i]
}

// signedLimit is a guardrail's limit with the sign of the harm: +0.30, −0.20.
func signedLimit(m *config.Metric) float64 {
	limit, harm := m.Guardrail.Limit()
	if harm == config.Decrease {
		return -limit
	}
	return limit
}

// changeID is the identity of a flag's seq-th change.
func changeID(flag string, seq int64) string { return flag + "|" + alert.Rollout + "|" + itoa(seq) }
