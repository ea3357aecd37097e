package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
	"github.com/flagwatch/flagwatch/pipeline/rollback/posthogtest"
)

// A flag as a team has it before the plan: employees always get test (a variant
// override), a person condition at 100%, the "everyone" condition at 0%, 50/50 variants
// and a payload.
const teamFlag = `{"id": 42, "key": "new-checkout", "name": "New checkout", "active": true, "version": 3,
 "filters": {
  "groups": [
   {"properties": [{"key": "id", "type": "cohort", "value": 88}], "rollout_percentage": 100, "variant": "test"},
   {"properties": [{"key": "email", "type": "person", "value": ["qa@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 0}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"banner\": \"new\"}"},
  "aggregation_group_type_index": null}}`

func groupPlan(t *testing.T) *Plan {
	t.Helper()
	m, err := config.Parse([]byte(`
flags:
  - key: new-checkout
    split: {control: 0.5, test: 0.5}
    metrics: [{name: errors, kind: count, event: $exception, guardrail: {max_increase: 0.3}}]
    rollout:
      stages:
        - {group: {name: internal users, property: email, operator: icontains, values: ["@acme.com"]}}
        - {group: {name: beta users, cohort: 1234}}
        - {percent: 10}
        - {percent: 50, fallback: 2}
        - {percent: 100}
      posthog: {host: "https://us.posthog.com", project_id: 1, flag_id: 42, api_key_env: K}
`), "f.yaml")
	require.NoError(t, err)
	return Plans(m)[0]
}

// owned is the stand-in's view of the plan's conditions: "everyone", and the plan's
// target groups.
func owned(p *Plan) func(map[string]any) bool {
	return func(g map[string]any) bool {
		if posthogtest.Everyone(g) {
			return true
		}
		var grp rollback.Group
		b, _ := json.Marshal(g)
		_ = json.Unmarshal(b, &grp)
		for _, s := range p.Stages {
			if s.Group != nil && grp.Variant() == "" && sameCondition(grp.Properties(), *s.Group) {
				return true
			}
		}
		return false
	}
}

// Through every stage, a fallback and a rollback, each PATCH changes only what the plan
// owns: the stand-in referees every request.
func TestDesiredChangesOnlyWhatThePlanOwns(t *testing.T) {
	p := groupPlan(t)
	s := posthogtest.New(t, "1", "phx")
	s.Owned = owned(p)
	s.Add(teamFlag)
	api := rollback.NewFlagAPI(s.URL, "1", 42, config.NewSecret("phx"), rollback.Options{Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()

	set := func(k int) *rollback.Flag {
		t.Helper()
		f, out := api.Get(ctx, "new-checkout")
		require.Equal(t, rollback.StatusOK, out.Status, out.Detail)
		next, err := desired(p, f.Filters, k)
		require.NoError(t, err)
		after, out, err := api.PatchFilters(ctx, "new-checkout", next, f.Version, f.Filters)
		require.NoError(t, err, out.Detail)
		return after
	}
	describe := func(f *rollback.Flag) []string {
		var out []string
		for _, g := range f.Filters.Groups {
			props, _ := json.Marshal(g.Properties())
			out = append(out, fmt.Sprintf("%s@%g", props, g.RolloutPercentage()))
		}
		return out
	}
	cohort := `[{"key":"id","type":"cohort","value":88}]@100`
	qa := `[{"key":"email","operator":"exact","type":"person","value":["qa@acme.com"]}]@100`
	internal := `[{"key":"email","operator":"icontains","type":"person","value":"@acme.com"}]`
	beta := `[{"key":"id","type":"cohort","value":1234}]`

	require.Equal(t, []string{cohort, qa, "[]@0", internal + "@100"}, describe(set(1)), "internal users added")
	require.Equal(t, []string{cohort, qa, "[]@0", internal + "@100", beta + "@100"}, describe(set(2)), "beta users added")
	require.Equal(t, []string{cohort, qa, "[]@10", internal + "@100", beta + "@100"}, describe(set(3)))
	require.Equal(t, []string{cohort, qa, "[]@50", internal + "@100", beta + "@100"}, describe(set(4)))
	require.Equal(t, []string{cohort, qa, "[]@0", internal + "@100", beta + "@100"}, describe(set(2)), "fallback to stage 2: the groups stay")
	last := set(0)
	require.Equal(t, []string{cohort, qa, "[]@0", internal + "@0", beta + "@0"}, describe(last), "off: every owned condition at 0%")
	require.Equal(t, `{"variants":[{"key":"control","rollout_percentage":50},{"key":"test","rollout_percentage":50}]}`,
		string(last.Filters.Rest["multivariate"]))
	require.Len(t, s.Patches(), 6)
}

func TestDesiredAddsEveryoneWhenMissing(t *testing.T) {
	p := testPlan(t)
	f, err := rollback.DecodeFilters([]byte(`{"groups": [{"properties": [{"key": "plan", "type": "person", "value": ["pro"]}], "rollout_percentage": 100}]}`))
	require.NoError(t, err)
	next, err := desired(p, f, 1)
	require.NoError(t, err)
	require.Len(t, next.Groups, 2)
	require.Equal(t, `{"properties":[],"rollout_percentage":1}`, string(next.Groups[1].JSON()))
	off, err := desired(p, f, 0)
	require.NoError(t, err)
	require.Equal(t, f.Canonical(), off.Canonical(), "off needs no everyone condition")

	two, err := rollback.DecodeFilters([]byte(`{"groups": [{"properties": [], "rollout_percentage": 5}, {"rollout_percentage": 20}]}`))
	require.NoError(t, err)
	_, err = desired(p, two, 2)
	require.EqualError(t, err, "ambiguous: release conditions 1 and 2 both match everyone; the plan owns exactly one (give the others a property or remove them)")
}

func TestAdoptNeverTakesTheFlagAway(t *testing.T) {
	p := groupPlan(t)
	for pct, want := range map[string]int{`0`: 1, `null`: 5, `10`: 3, `20`: 4, `50`: 4, `75`: 5} {
		f, err := rollback.DecodeFilters([]byte(`{"groups": [{"properties": [], "rollout_percentage": ` + pct + `}]}`))
		require.NoError(t, err)
		got, err := adopt(p, f)
		require.NoError(t, err)
		require.Equal(t, want, got, "everyone at %s%%", pct)
	}
	none, _ := rollback.DecodeFilters([]byte(`{"groups": []}`))
	got, err := adopt(p, none)
	require.NoError(t, err)
	require.Equal(t, 1, got)
}

func TestPersonChange(t *testing.T) {
	base := func(filters string, active bool) *Snapshot {
		return &Snapshot{Version: 7, Active: active, Filters: json.RawMessage(filters)}
	}
	flag := func(filters string, active bool) *rollback.Flag {
		f, err := rollback.DecodeFilters([]byte(filters))
		require.NoError(t, err)
		return &rollback.Flag{Key: "k", Active: active, Version: 8, ModifiedBy: "ana@acme.com", UpdatedAt: "2026-11-03T14:02:00Z", Filters: f}
	}
	const ours = `{"groups": [{"properties": [], "rollout_percentage": 10}], "payloads": {}}`
	require.Empty(t, personChange(base(ours, true), flag(`{"payloads":{},"groups":[{"rollout_percentage":10,"properties":[]}]}`, true)),
		"the same conditions, another member order: a name or tag edit is not a change of the rollout")
	require.Equal(t, "the flag was changed in PostHog by ana@acme.com at 2026-11-03 14:02 UTC (version 7 → 8): condition 1 10% → 30%",
		personChange(base(ours, true), flag(`{"groups": [{"properties": [], "rollout_percentage": 30}], "payloads": {}}`, true)))
	require.Equal(t, "the flag was changed in PostHog by ana@acme.com at 2026-11-03 14:02 UTC (version 7 → 8): switched off",
		personChange(base(ours, true), flag(ours, false)))
	require.Equal(t, "the flag was changed in PostHog by ana@acme.com at 2026-11-03 14:02 UTC (version 7 → 8): a condition added, payloads changed",
		personChange(base(ours, true), flag(`{"groups": [{"properties": [], "rollout_percentage": 10}, {"properties": [{"key": "a"}]}], "payloads": {"true": "1"}}`, true)))
}
