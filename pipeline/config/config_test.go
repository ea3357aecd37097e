package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoadBadConfigs(t *testing.T) {
	for file, want := range map[string]string{
		"unknown_key.yaml":      `testdata/unknown_key.yaml:15: flags[0].metrics[1]: unknown key "evnt" (did you mean "event"?)`,
		"unknown_key_flow.yaml": `testdata/unknown_key_flow.yaml:5: flags[0].metrics[1]: unknown key "evnt" (did you mean "event"?)`,
		"unknown_top_key.yaml":  `testdata/unknown_top_key.yaml:3: unknown key "flag" (did you mean "flags"?)`,
		"repeated_key.yaml":     `testdata/repeated_key.yaml:4: flags[0]: key "control" repeated (first at line 3)`,
		"bad_kind.yaml":         `testdata/bad_kind.yaml:5: flags[0].metrics[0].kind: unknown kind "conversions" (want conversion, count, sum or ratio)`,
		"bad_goal.yaml":         `testdata/bad_goal.yaml:2: core_metrics[0].goal: unknown goal "down" (want increase or decrease)`,
		"bad_property_name.yaml": "testdata/bad_property_name.yaml:3: flags[0].segments[0]: property name \"plan\\\"x\" has a quote, backslash or control character: such a key never matches (rename the property)\n" +
			"testdata/bad_property_name.yaml:5: flags[0].metrics[0].property: property name \"rev\\\\enue\" has a quote, backslash or control character: such a key never matches (rename the property)",
		"split_sum.yaml":            `testdata/split_sum.yaml:4: flags[0].split: shares sum to 0.9, want 1`,
		"split_no_control.yaml":     `testdata/split_no_control.yaml:4: flags[0].split: has no share for the control variant "baseline"`,
		"duplicate_flag.yaml":       `testdata/duplicate_flag.yaml:6: flags[2].key: duplicate flag "new-checkout" (first at line 2)`,
		"duplicate_metric.yaml":     `testdata/duplicate_metric.yaml:5: flags[0].metrics[1].name: duplicate metric "purchase" (first at line 4)`,
		"ratio_no_denominator.yaml": `testdata/ratio_no_denominator.yaml:4: flags[0].metrics[0]: kind ratio needs denominator`,
		"sum_no_property.yaml":      `testdata/sum_no_property.yaml:2: core_metrics[0]: kind sum needs property`,
		"bad_cap.yaml": `testdata/bad_cap.yaml:2: core_metrics[0].cap: only kinds count and sum take a cap (a conversion is 0 or 1 already)
testdata/bad_cap.yaml:3: core_metrics[1].cap: must be a positive number, got -5`,
		"bad_duration.yaml": `testdata/bad_duration.yaml:2: defaults.pre_period: invalid duration "7 days" (want e.g. 90m, 36h or 7d)`,
		"zero_window.yaml":  `testdata/zero_window.yaml:4: flags[0].metrics[0].window: must be > 0, got 0s`,
		"syntax.yaml":       `testdata/syntax.yaml:1: invalid YAML: did not find expected '-' indicator`,
		"bad_alpha.yaml": `testdata/bad_alpha.yaml:2: defaults.alpha: must be between 0 and 1 (exclusive), got 1.5
testdata/bad_alpha.yaml:3: defaults.min_users_per_variant: must be >= 1, got 0`,
		"wrong_type.yaml": `testdata/wrong_type.yaml:2: defaults.alpha: want a number, got "high"
testdata/wrong_type.yaml:5: flags[0].segments: want a list, got "plan"`,
		"guardrail.yaml": `testdata/guardrail.yaml:2: core_metrics[0].guardrail: needs exactly one of max_increase or max_decrease
testdata/guardrail.yaml:3: core_metrics[1].guardrail.max_increase: must be > 0, got -0.1
testdata/guardrail.yaml:4: core_metrics[2].goal: goal increase contradicts the guardrail, which treats an increase as harm`,
		// Every mistake at once, in line order; a value that failed to decode does not
		// also fail validation (alpha, the metric with "evnt", the split of flags[1]).
		"many_errors.yaml": `testdata/many_errors.yaml:3: defaults.alpha: want a number, got "high"
testdata/many_errors.yaml:4: defaults.min_duration: invalid duration "2 days" (want e.g. 90m, 36h or 7d)
testdata/many_errors.yaml:5: defaults.sequential_tuning: must be > 0, got -5
testdata/many_errors.yaml:7: core_metrics[0]: unknown key "windw" (did you mean "window"?)
testdata/many_errors.yaml:10: flags[0].split: shares sum to 1.1, want 1
testdata/many_errors.yaml:12: flags[0].metrics[0].kind: unknown kind "conversions" (want conversion, count, sum or ratio)
testdata/many_errors.yaml:13: flags[0].metrics[1]: kind sum needs property
testdata/many_errors.yaml:14: flags[0].metrics[2]: unknown key "evnt" (did you mean "event"?)
testdata/many_errors.yaml:15: flags[1].key: duplicate flag "new-checkout" (first at line 9)
testdata/many_errors.yaml:16: flags[1]: unknown key "slack_chanel" (did you mean "slack_channel"?)
testdata/many_errors.yaml:17: flags[1].split: want a mapping of variant to share, got "50/50"
testdata/many_errors.yaml:18: flags[1]: unknown key "owner"`,
		"bad_auto_segments.yaml": `testdata/bad_auto_segments.yaml:2: defaults.auto_segments_max: must be >= 1, got 0 (auto_segments: false turns discovery off)
testdata/bad_auto_segments.yaml:3: defaults.auto_segments_values: must be >= 2 (a property with one value splits nothing), got 1
testdata/bad_auto_segments.yaml:4: defaults.auto_segments_coverage: must be a share in (0, 1], got 1.5
testdata/bad_auto_segments.yaml:7: flags[0].auto_segments: want true or false, got "maybe"
testdata/bad_auto_segments.yaml:8: flags[0].auto_segments_max: must be >= 1, got -2 (auto_segments: false turns discovery off)`,
		"bad_recordings_url.yaml": `testdata/bad_recordings_url.yaml:2: defaults.recordings_url: unknown placeholder {project_id} (want {session_id} or {distinct_id}; write the rest, such as the project id, into the URL itself)
testdata/bad_recordings_url.yaml:5: flags[0].recordings_url: want an http or https URL, got "us.posthog.com/replay/{session_id}"
testdata/bad_recordings_url.yaml:7: flags[1].recordings_url: has no {session_id} or {distinct_id}: every link would be the same`,
		"bad_rollback.yaml": `testdata/bad_rollback.yaml:4: flags[0].rollback.webhook.url: want an http or https URL, got "hooks.example.com/flagwatch"
testdata/bad_rollback.yaml:4: flags[0].rollback.webhook.secret_env: want the name of an environment variable, got "ROLLBACK-SECRET"
testdata/bad_rollback.yaml:5: flags[0].rollback.posthog.flag_id: want PostHog's numeric flag id (> 0), got 0`,
		// A plan's every mistake at once: stages, template names, what the merged plan of
		// each flag lacks.
		"bad_rollout.yaml": `testdata/bad_rollout.yaml:6: templates.ramp.rollout.stages[1].percent: stages must ramp up: 5% after 10% (line 5)
testdata/bad_rollout.yaml:7: templates.ramp.rollout.stages[2].percent: must be in (0, 100], got 150
testdata/bad_rollout.yaml:8: templates.ramp.rollout.stages[3]: takes percent or group, not both
testdata/bad_rollout.yaml:9: templates.ramp.rollout.stages[4].group: name is required (it names the stage in messages: "internal users")
testdata/bad_rollout.yaml:9: templates.ramp.rollout.stages[4].group.operator: unknown operator "equals" (want exact, is_not, icontains, not_icontains, regex, not_regex, gt, gte, lt, lte)
testdata/bad_rollout.yaml:10: templates.ramp.rollout.stages[5]: needs percent (of all users) or group (a cohort or property condition)
testdata/bad_rollout.yaml:11: templates.ramp.rollout.stages[6].fallback: must name an earlier stage (1 to 6), or 0 to turn the flag off, got 9
testdata/bad_rollout.yaml:12: templates.bad.name: template name "bad.name": use letters, digits, - and _
testdata/bad_rollout.yaml:15: flags[0].template: unknown template "rmap"
testdata/bad_rollout.yaml:16: flags[1].rollout: needs posthog or webhook: the flag system flagwatch changes (template "ramp" gives the plan)
testdata/bad_rollout.yaml:16: flags[1].rollout: needs at least one guardrail metric (a metric with guardrail:): flagwatch advances only while guardrails hold (template "ramp" gives the plan)
testdata/bad_rollout.yaml:20: flags[2].split: names variant "false", the answer of users outside the rollout: give the flag variants (control, test) and let the plan ramp who gets them
testdata/bad_rollout.yaml:24: flags[2].rollout.posthog: needs project_id, api_key_env
testdata/bad_rollout.yaml:25: flags[2].rollout.stages: needs at least one stage (or leave stages out for the default ramp 1, 5, 10, 25, 50, 100%)`,
	} {
		t.Run(file, func(t *testing.T) {
			m, err := Load(filepath.Join("testdata", file))
			require.Nil(t, m)
			require.EqualError(t, err, want)
		})
	}
}

func TestErrorCarriesPosition(t *testing.T) {
	_, err := Load("testdata/unknown_key.yaml")
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, Error{File: "testdata/unknown_key.yaml", Line: 15, Path: "flags[0].metrics[1]", Msg: `unknown key "evnt" (did you mean "event"?)`}, *e)
}

// TestLoadSpecExample parses the monitors file of SPEC §6 verbatim.
func TestLoadSpecExample(t *testing.T) {
	m, err := Load("testdata/spec.yaml")
	require.NoError(t, err)

	week := 7 * 24 * time.Hour
	pageviews := Metric{Name: "pageviews", Kind: Count, Event: "$pageview", Window: week, Goal: Increase}
	require.Equal(t, DefaultDefaults, m.Defaults)
	require.Equal(t, []Metric{pageviews}, m.CoreMetrics)
	require.Equal(t, "testdata/spec.yaml", m.File)
	require.Equal(t, []Flag{{
		Key:             "new-checkout",
		Control:         "control",
		Split:           Split{{"control", 0.5}, {"test", 0.5}},
		Segments:        []string{"$geoip_country_code", "plan"},
		AutoSegments:    true,
		AutoSegmentsMax: 20,
		Metrics: []Metric{
			pageviews,
			{Name: "purchase conversion", Kind: Conversion, Event: "purchase", Window: week, Goal: Increase},
			{Name: "revenue per user", Kind: Sum, Event: "purchase", Property: "revenue", Window: week, Goal: Increase},
			{Name: "revenue per order", Kind: Ratio,
				Numerator:   &Measure{Event: "purchase", Property: "revenue"},
				Denominator: &Measure{Event: "purchase"},
				Window:      week, Goal: Increase},
			{Name: "errors per user", Kind: Count, Event: "$exception", Window: week, Goal: Decrease,
				Guardrail: &Guardrail{MaxIncrease: 0.30}},
		},
		Rollback: &Rollback{
			Webhook: &Webhook{URL: "https://hooks.example.com/flagwatch", SecretEnv: "ROLLBACK_HMAC_SECRET"},
			PostHog: &PostHog{Host: "https://us.posthog.com", ProjectID: "1", FlagID: 42, APIKeyEnv: "POSTHOG_API_KEY"},
		},
		SlackChannel: "#checkout",
		Declared:     true,
	}}, m.Flags)
}

func TestDefaultsAppliedToAbsentKeysOnly(t *testing.T) {
	m, err := Parse([]byte(`
defaults: {window: 3d, slack_channel: "#exp", segments: [plan]}
core_metrics: []
flags:
  - key: a
    metrics:
      - {name: errors, kind: count, event: $exception, guardrail: {max_decrease: 0.1}}
      - {name: crashes, kind: count, event: crash, guardrail: {max_increase: 0.1}}
      - {name: slow, kind: count, event: slow, window: 1h, goal: decrease}
  - key: b
    segments: []
    slack_channel: "#b"
`), "f.yaml")
	require.NoError(t, err)
	require.Equal(t, 3*24*time.Hour, m.Defaults.Window)
	require.Equal(t, 0.05, m.Defaults.Alpha)
	require.Empty(t, m.CoreMetrics, "an explicit empty core_metrics disables the built-in one")

	a := m.Flags[0]
	require.Equal(t, []string{"plan"}, a.Segments)
	require.Equal(t, "#exp", a.SlackChannel)
	require.Equal(t, "", a.Control, "no control and no split: chosen from exposures by ForFlag")
	require.Equal(t, Increase, a.Metrics[0].Goal, "max_decrease guards a metric meant to rise")
	require.Equal(t, Decrease, a.Metrics[1].Goal, "max_increase guards a metric meant to fall")
	require.Equal(t, 3*24*time.Hour, a.Metrics[0].Window)
	require.Equal(t, time.Hour, a.Metrics[2].Window)
	require.Equal(t, Decrease, a.Metrics[2].Goal)

	b := m.Flags[1]
	require.Empty(t, b.Segments)
	require.Equal(t, "#b", b.SlackChannel)
}

// Property discovery is on by default; defaults and each flag can turn it off or
// cap it, and a flag seen only in exposures takes the defaults.
func TestAutoSegmentsDefaultsAndOverrides(t *testing.T) {
	m, err := Parse([]byte(`
defaults: {auto_segments: false, auto_segments_max: 5}
flags:
  - key: a
  - key: b
    auto_segments: true
    auto_segments_max: 3
`), "f.yaml")
	require.NoError(t, err)
	require.False(t, m.Flags[0].AutoSegments)
	require.Equal(t, 5, m.Flags[0].AutoSegmentsMax)
	require.True(t, m.Flags[1].AutoSegments)
	require.Equal(t, 3, m.Flags[1].AutoSegmentsMax)
	require.False(t, m.ForFlag("undeclared", nil).AutoSegments)
	require.Equal(t, 50, m.Defaults.AutoSegmentsValues)
	require.Equal(t, 0.2, m.Defaults.AutoSegmentsCoverage)

	m, err = Parse(nil, "")
	require.NoError(t, err)
	f := m.ForFlag("undeclared", nil)
	require.True(t, f.AutoSegments, "on by default (SPEC §10)")
	require.Equal(t, 20, f.AutoSegmentsMax)
}

// expose_users and recordings_url: off and empty by default, inherited from defaults by
// declared and undeclared flags, and a flag's own value (even false) wins.
func TestUsersSettings(t *testing.T) {
	m, err := Parse([]byte(`flags: [{key: a}]`), "f.yaml")
	require.NoError(t, err)
	require.False(t, m.Flags[0].ExposeUsers)
	require.Empty(t, m.Flags[0].RecordingsURL)

	m, err = Parse([]byte(`
defaults: {expose_users: true, recordings_url: "https://us.posthog.com/project/1/replay/{session_id}"}
flags:
  - key: a
  - key: b
    expose_users: false
    recordings_url: "https://app.example.com/people/{distinct_id}?session={session_id}"
`), "f.yaml")
	require.NoError(t, err)
	a, b, c := m.ForFlag("a", nil), m.ForFlag("b", nil), m.ForFlag("undeclared", nil)
	require.True(t, a.ExposeUsers)
	require.Equal(t, "https://us.posthog.com/project/1/replay/{session_id}", a.RecordingsURL)
	require.False(t, b.ExposeUsers)
	require.Equal(t, "https://app.example.com/people/{distinct_id}?session={session_id}", b.RecordingsURL)
	require.True(t, c.ExposeUsers)
	require.Equal(t, a.RecordingsURL, c.RecordingsURL)
}

func TestFlagMetricReplacesCoreMetricOfSameName(t *testing.T) {
	m, err := Parse([]byte(`
core_metrics:
  - {name: pageviews, kind: count, event: $pageview}
  - {name: signups, kind: conversion, event: signup}
flags:
  - key: a
    metrics:
      - {name: purchase, kind: conversion, event: purchase}
      - {name: pageviews, kind: count, event: $pageview, window: 1d, guardrail: {max_decrease: 0.2}}
`), "f.yaml")
	require.NoError(t, err)
	var names []string
	for _, mt := range m.Flags[0].Metrics {
		names = append(names, mt.Name)
	}
	require.Equal(t, []string{"pageviews", "signups", "purchase"}, names)
	require.Equal(t, 24*time.Hour, m.Flags[0].Metrics[0].Window)
	require.NotNil(t, m.Flags[0].Metrics[0].Guardrail)
	require.Nil(t, m.CoreMetrics[0].Guardrail, "core metrics are not modified")
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	m, err := Load("testdata/anchors.yaml")
	require.NoError(t, err)
	got := m.Flags[0].Metrics[1]
	require.Equal(t, Metric{Name: "purchases 3d", Kind: Count, Event: "purchase", Window: 3 * 24 * time.Hour, Goal: Increase}, got)
}

func TestLoadMissingFile(t *testing.T) {
	t.Run("default path absent: auto-discovery", func(t *testing.T) {
		t.Chdir(t.TempDir())
		m, err := Load(DefaultPath)
		require.NoError(t, err)
		require.Empty(t, m.Flags)
		require.Equal(t, "", m.File)
		require.Equal(t, DefaultDefaults, m.Defaults)
		require.Equal(t, "pageviews", m.CoreMetrics[0].Name)
		require.Equal(t, 7*24*time.Hour, m.CoreMetrics[0].Window)
	})
	t.Run("explicit path absent: error", func(t *testing.T) {
		_, err := Load("testdata/nope.yaml")
		require.EqualError(t, err, "read config testdata/nope.yaml: open testdata/nope.yaml: no such file or directory")
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("empty file", func(t *testing.T) {
		m, err := Parse([]byte("# nothing yet\n"), "f.yaml")
		require.NoError(t, err)
		require.Equal(t, DefaultDefaults, m.Defaults)
	})
}

func TestForFlag(t *testing.T) {
	m, err := Load("testdata/spec.yaml")
	require.NoError(t, err)

	declared := m.ForFlag("new-checkout", []string{"test", "control"})
	require.True(t, declared.Declared)
	require.Equal(t, "#checkout", declared.SlackChannel)
	require.Len(t, declared.Metrics, 5)

	for _, tc := range []struct {
		variants []string
		control  string
	}{
		{[]string{"test", "control"}, "control"},
		{[]string{"true", "false"}, "false"},
		{[]string{"b", "a", "c"}, "a"},
		{nil, "control"},
	} {
		f := m.ForFlag("dark-mode", tc.variants)
		require.Equal(t, tc.control, f.Control, "variants %v", tc.variants)
		require.False(t, f.Declared)
		require.Equal(t, "dark-mode", f.Key)
		require.Equal(t, m.CoreMetrics, f.Metrics)
		require.Equal(t, "#growth", f.SlackChannel)
	}

	m, err = Parse([]byte("flags: [{key: beta}]"), "f.yaml")
	require.NoError(t, err)
	require.Equal(t, "false", m.ForFlag("beta", []string{"true", "false"}).Control,
		"a declared flag without control or split takes it from exposures")
}

func TestControlFromSplit(t *testing.T) {
	m, err := Parse([]byte(`flags: [{key: a, split: {"true": 0.2, "false": 0.8}}, {key: b, split: {x: 0.5, y: 0.5}}]`), "f.yaml")
	require.NoError(t, err)
	require.Equal(t, "false", m.Flags[0].Control)
	require.Equal(t, "x", m.Flags[1].Control, "the first variant of the split")
}

func TestExpectedSplit(t *testing.T) {
	f := Flag{Split: Split{{"control", 0.8}, {"test", 0.2}}}
	require.Equal(t, []float64{0.2, 0.8, 0}, f.ExpectedSplit([]string{"test", "control", "other"}))
	require.Equal(t, []float64{0.5, 0.5}, (&Flag{}).ExpectedSplit([]string{"a", "b"}))
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "14d": 14 * 24 * time.Hour, "0d": 0,
		"36h": 36 * time.Hour, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute,
	} {
		got, err := parseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"7 days", "1.5d", "-1d", "d", "7", ""} {
		_, err := parseDuration(in)
		require.Error(t, err, in)
	}
}

func TestGuardrailLimit(t *testing.T) {
	limit, harm := (&Guardrail{MaxIncrease: 0.3}).Limit()
	require.Equal(t, 0.3, limit)
	require.Equal(t, Increase, harm)
	limit, harm = (&Guardrail{MaxDecrease: 0.2}).Limit()
	require.Equal(t, 0.2, limit)
	require.Equal(t, Decrease, harm)
}

func TestAllErrorsAreErrors(t *testing.T) {
	_, err := Load("testdata/bad_rollback.yaml")
	var n int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *Error
		require.True(t, errors.As(e, &ce))
		n++
	}
	require.Equal(t, 3, n)
}

func TestPrimaryMetric(t *testing.T) {
	g := &Guardrail{}
	mons := &Monitors{CoreMetrics: []Metric{{Name: "pageviews"}}}
	for _, c := range []struct {
		name    string
		metrics []Metric
		want    string
	}{
		{"own metric before a core one", []Metric{{Name: "pageviews"}, {Name: "errors", Guardrail: g}, {Name: "purchase"}}, "purchase"},
		{"a core metric before a guardrail", []Metric{{Name: "errors", Guardrail: g}, {Name: "pageviews"}}, "pageviews"},
		{"only guardrails: the first", []Metric{{Name: "errors", Guardrail: g}, {Name: "latency", Guardrail: g}}, "errors"},
		{"no metrics", nil, ""},
	} {
		require.Equal(t, c.want, mons.PrimaryMetric(Flag{Metrics: c.metrics}), c.name)
	}
}
