package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Templates give metrics, segments and a plan; a flag's own keys override them, and the
// plan's gaps are filled from the rollout section, then the defaults.
func TestTemplatesAndRolloutPlans(t *testing.T) {
	m, err := Load("testdata/templates.yaml")
	require.NoError(t, err)
	require.Equal(t, []string{"autorollout-conversion", "staged-with-safety"}, m.Templates.names())

	day := 24 * time.Hour
	week := 7 * day
	conversion := Metric{Name: "purchase conversion", Kind: Conversion, Event: "purchase", Window: week, Goal: Increase,
		Guardrail: &Guardrail{MaxDecrease: 0.20}}
	pageviews := Metric{Name: "pageviews", Kind: Count, Event: "$pageview", Window: week, Goal: Increase}

	nc := m.ForFlag("new-checkout", nil)
	require.Equal(t, "autorollout-conversion", nc.Template)
	require.Equal(t, []string{"$geoip_country_code"}, nc.Segments, "the template's segments")
	require.Equal(t, []Metric{pageviews, conversion}, nc.Metrics, "core metrics, then the template's")
	require.Equal(t, &PostHog{Host: "https://us.posthog.com", ProjectID: "1", FlagID: 42, APIKeyEnv: "POSTHOG_API_KEY"},
		nc.Rollout.PostHog, "host, project and key from the template, the flag id from the flag")
	require.Nil(t, nc.Rollout.Webhook)
	var ramp []float64
	for _, s := range nc.Rollout.Stages {
		ramp = append(ramp, s.Percent)
		require.Equal(t, day, s.MinDuration, "the template's rollout.min_duration")
		require.Equal(t, 200, s.MinUsersPerVariant, "defaults.min_users_per_variant")
		require.Nil(t, s.Group)
		require.Zero(t, s.Fallback)
	}
	require.Equal(t, DefaultRamp, ramp, "no stages: the default ramp")

	fs := m.ForFlag("fast-search", nil)
	require.Empty(t, fs.Segments, "the flag's segments: [] beats the template's")
	require.Len(t, fs.Metrics, 3)
	require.Equal(t, conversion, fs.Metrics[1])
	require.Equal(t, "errors per user", fs.Metrics[2].Name)
	require.Equal(t, 0.10, fs.Metrics[2].Guardrail.MaxIncrease, "the flag's metric replaces the template's of the same name")
	require.Equal(t, &Webhook{URL: "https://flags.example.com/flagwatch", SecretEnv: "FLAGS_HMAC"}, fs.Rollout.Webhook)
	require.Nil(t, fs.Rollout.PostHog)
	require.Equal(t, []Stage{
		{Group: &TargetGroup{Name: "internal users", Property: "email", Operator: "icontains", Values: []string{"@acme.com"}},
			MinDuration: 2 * day, MinUsersPerVariant: 20},
		{Group: &TargetGroup{Name: "beta users", Cohort: 1234, Operator: "exact"}, MinDuration: 12 * time.Hour, MinUsersPerVariant: 50},
		{Percent: 10, MinDuration: 12 * time.Hour, MinUsersPerVariant: 300},
		{Percent: 50, MinDuration: 3 * day, MinUsersPerVariant: 300, Fallback: 3},
		{Percent: 100, MinDuration: 12 * time.Hour, MinUsersPerVariant: 300},
	}, fs.Rollout.Stages, "the flag's min_duration (12h) fills the template's stages that set none")
	require.Equal(t, "internal users", fs.Rollout.Stages[0].Label())
	require.Equal(t, "10%", fs.Rollout.Stages[2].Label())

	// The template itself is not modified by the flags that use it.
	require.Len(t, m.Templates[1].Metrics, 2)
	require.Equal(t, 0.30, m.Templates[1].Metrics[1].Guardrail.MaxIncrease)

	require.Nil(t, m.ForFlag("undeclared", nil).Rollout)
}

func TestRolloutWithoutTemplate(t *testing.T) {
	m, err := Parse([]byte(`
flags:
  - key: a
    split: {control: 0.9, test: 0.1}
    metrics: [{name: errors, kind: count, event: $exception, guardrail: {max_increase: 0.3}}]
    rollout:
      min_users_per_variant: 0
      stages: [{percent: 2.5, min_duration: 90m}, {percent: 100}]
      webhook: {url: "http://flags.internal/hook", secret_env: HOOK_SECRET}
`), "f.yaml")
	require.NoError(t, err)
	r := m.Flags[0].Rollout
	require.Equal(t, []Stage{{Percent: 2.5, MinDuration: 90 * time.Minute}, {Percent: 100, MinDuration: DefaultRolloutMinDuration}}, r.Stages)
	require.Equal(t, "2.5%", r.Stages[0].Label())
}

func TestTemplateDecodingErrors(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"unknown key in a template": {"templates:\n  t:\n    metrcs: []\n",
			`f.yaml:3: templates.t: unknown key "metrcs" (did you mean "metrics"?)`},
		"repeated template": {"templates:\n  t: {}\n  t: {}\n",
			`f.yaml:3: templates: template "t" repeated (first at line 2)`},
		"templates as a list": {"templates: [a]\n",
			`f.yaml:1: templates: want a mapping of template name to template, got a list`},
		"unknown key in a stage": {"templates:\n  t:\n    rollout:\n      stages: [{percent: 5, min_users: 3}]\n",
			`f.yaml:4: templates.t.rollout.stages[0]: unknown key "min_users"`},
		"no templates at all": {"flags: [{key: a, template: t}]\n",
			`f.yaml:1: flags[0].template: unknown template "t" (the file has no templates:)`},
		"suggestion": {"templates: {autorollout: {}}\nflags: [{key: a, template: autorolout}]\n",
			`f.yaml:2: flags[0].template: unknown template "autorolout" (did you mean "autorollout"?)`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "f.yaml")
			require.EqualError(t, err, tc.want)
		})
	}
}
