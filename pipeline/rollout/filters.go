package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
)

// This file is the plan's side of PostHog's filters: which release conditions the plan
// owns, what they are at a stage, and what a person changed. It is pure.

// Snapshot is a PostHog flag as flagwatch recorded it: after its own change (the
// baseline a person's change is detected against), or as a change intends it.
type Snapshot struct {
	Version    int             `json:"version,omitempty"`
	Active     bool            `json:"active"`
	ModifiedBy string          `json:"modified_by,omitempty"`
	UpdatedAt  string          `json:"updated_at,omitempty"`
	Filters    json.RawMessage `json:"filters"`
}

func snapshotOf(f *rollback.Flag, filters rollback.Filters) *Snapshot {
	return &Snapshot{Version: f.Version, Active: f.Active, ModifiedBy: f.ModifiedBy, UpdatedAt: f.UpdatedAt, Filters: filters.JSON()}
}

func (s *Snapshot) json() string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (s *Snapshot) filters() rollback.Filters {
	f, _ := rollback.DecodeFilters(s.Filters)
	return f
}

// errAmbiguous: the flag has several "everyone" conditions; the plan will not guess which
// one is its own.
var errAmbiguous = errors.New("ambiguous")

// everyone returns the index of the flag's "everyone" condition (no property filter, no
// variant override), -1 when it has none.
func everyone(f rollback.Filters) (int, error) {
	idx := -1
	for i, g := range f.Groups {
		if len(g.Properties()) == 0 && g.Variant() == "" {
			if idx >= 0 {
				return -1, fmt.Errorf("%w: release conditions %d and %d both match everyone; the plan owns exactly one (give the others a property or remove them)", errAmbiguous, idx+1, i+1)
			}
			idx = i
		}
	}
	return idx, nil
}

// condition is the property filter of a target group, as PostHog stores it.
func condition(g config.TargetGroup) map[string]any {
	if g.Cohort > 0 {
		return map[string]any{"key": "id", "type": "cohort", "value": g.Cohort}
	}
	var value any = g.Values
	switch g.Operator {
	case "exact", "is_not":
	default:
		// PostHog wants a string for the text and numeric operators.
		value = g.Values[0]
	}
	return map[string]any{"key": g.Property, "type": "person", "operator": g.Operator, "value": value}
}

// sameCondition reports whether a condition's property filters are exactly the target
// group's.
func sameCondition(props []map[string]any, g config.TargetGroup) bool {
	if len(props) != 1 {
		return false
	}
	want := condition(g)
	have := props[0]
	for _, k := range []string{"key", "type"} {
		if fmt.Sprint(have[k]) != fmt.Sprint(want[k]) {
			return false
		}
	}
	if g.Cohort > 0 {
		return fmt.Sprint(have["value"]) == strconv.FormatInt(g.Cohort, 10)
	}
	op, _ := have["operator"].(string)
	if op == "" {
		op = "exact"
	}
	return op == g.Operator && canonical(have["value"]) == canonical(want["value"])
}

func canonical(v any) string {
	b, _ := json.Marshal(v)
	var x any
	_ = json.Unmarshal(b, &x)
	b, _ = json.Marshal(x)
	return string(b)
}

// targetGroups returns the index of each of the plan's target groups in f (-1: absent).
func targetGroups(p *Plan, f rollback.Filters) map[string]int {
	out := map[string]int{}
	for _, s := range p.Stages {
		if s.Group == nil {
			continue
		}
		out[s.Group.Name] = slices.IndexFunc(f.Groups, func(g rollback.Group) bool {
			return g.Variant() == "" && sameCondition(g.Properties(), *s.Group)
		})
	}
	return out
}

// desired returns f with the conditions the plan owns as stage k has them (k = 0: off
// for everyone the plan gave the flag to): the "everyone" condition at the stage's
// percentage (added when missing and needed), the target groups of stages up to k at
// 100% (added when missing), those of later stages at 0%. Every other member of f is
// untouched.
func desired(p *Plan, f rollback.Filters, k int) (rollback.Filters, error) {
	out := f.Clone()
	idx, err := everyone(out)
	if err != nil {
		return out, err
	}
	pct := p.Percent(k)
	switch {
	case idx >= 0 && out.Groups[idx].RolloutPercentage() != pct:
		out.Groups[idx].SetRolloutPercentage(pct)
	case idx < 0 && pct > 0:
		g := rollback.Group{"properties": json.RawMessage("[]")}
		g.SetRolloutPercentage(pct)
		out.Groups = append(out.Groups, g)
	}
	at := targetGroups(p, out)
	for i, s := range p.Stages {
		if s.Group == nil {
			continue
		}
		want := 0.0
		if i < k {
			want = 100
		}
		j := at[s.Group.Name]
		switch {
		case j >= 0 && out.Groups[j].RolloutPercentage() != want:
			out.Groups[j].SetRolloutPercentage(want)
		case j < 0 && want > 0:
			props, _ := json.Marshal([]map[string]any{condition(*s.Group)})
			g := rollback.Group{"properties": props}
			g.SetRolloutPercentage(want)
			out.Groups = append(out.Groups, g)
		}
	}
	return out, nil
}

// adopt is the stage a plan starts at on flag f: stage 1 when the "everyone" condition
// gives the flag to nobody, else the first percentage stage at or above its share (the
// last stage when the flag is beyond the plan), so adding a plan never takes the feature
// away from anyone.
func adopt(p *Plan, f rollback.Filters) (int, error) {
	idx, err := everyone(f)
	if err != nil {
		return 0, err
	}
	cur := 0.0
	if idx >= 0 {
		cur = f.Groups[idx].RolloutPercentage()
	}
	if cur <= 0 {
		return 1, nil
	}
	for i, s := range p.Stages {
		if s.Group == nil && s.Percent >= cur {
			return i + 1, nil
		}
	}
	return len(p.Stages), nil
}

// personChange describes how flag f differs from what flagwatch wrote last (baseline),
// in the conditions or the on/off switch; "" when it does not. A change of anything else
// (name, tags) is not a person's change of the rollout.
func personChange(baseline *Snapshot, f *rollback.Flag) string {
	old := baseline.filters()
	var parts []string
	if baseline.Active != f.Active {
		parts = append(parts, fmt.Sprintf("switched %s", map[bool]string{true: "on", false: "off"}[f.Active]))
	}
	if old.Canonical() != f.Filters.Canonical() {
		parts = append(parts, filtersChange(old, f.Filters))
	}
	if len(parts) == 0 {
		return ""
	}
	who := f.ModifiedBy
	if who == "" {
		who = "someone"
	}
	s := "the flag was changed in PostHog by " + who
	if at, err := time.Parse(time.RFC3339Nano, f.UpdatedAt); err == nil {
		s += " at " + at.UTC().Format("2006-01-02 15:04 UTC")
	} else if f.UpdatedAt != "" {
		s += " at " + f.UpdatedAt
	}
	if baseline.Version > 0 && f.Version > 0 {
		s += fmt.Sprintf(" (version %d → %d)", baseline.Version, f.Version)
	}
	return s + ": " + strings.Join(parts, "; ")
}

// filtersChange says in words how the conditions changed: "condition 2 10% → 30%",
// "a condition added", "the variants' weights changed".
func filtersChange(old, cur rollback.Filters) string {
	var parts []string
	for i := 0; i < min(len(old.Groups), len(cur.Groups)); i++ {
		o, c := old.Groups[i], cur.Groups[i]
		if string(o.JSON()) == string(c.JSON()) {
			continue
		}
		if po, pc := o.RolloutPercentage(), c.RolloutPercentage(); po != pc {
			parts = append(parts, fmt.Sprintf("condition %d %s → %s", i+1, config.FormatPercent(po), config.FormatPercent(pc)))
		} else {
			parts = append(parts, fmt.Sprintf("condition %d edited", i+1))
		}
	}
	switch d := len(cur.Groups) - len(old.Groups); {
	case d == 1:
		parts = append(parts, "a condition added")
	case d > 1:
		parts = append(parts, fmt.Sprintf("%d conditions added", d))
	case d == -1:
		parts = append(parts, "a condition removed")
	case d < -1:
		parts = append(parts, fmt.Sprintf("%d conditions removed", -d))
	}
	for _, k := range []string{"multivariate", "payloads"} {
		if canonical(raw(old.Rest[k])) != canonical(raw(cur.Rest[k])) {
			parts = append(parts, k+" changed")
		}
	}
	if len(parts) == 0 {
		return "the release conditions changed"
	}
	return strings.Join(parts, ", ")
}

func raw(b json.RawMessage) any {
	var v any
	_ = json.Unmarshal(b, &v)
	return v
}
