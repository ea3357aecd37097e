// Package config reads flagwatch's monitors file (flagwatch.yaml, SPEC §6) and the
// settings every service takes as a command-line flag or a FLAGWATCH_* environment
// variable.
//
// The decision that shapes it: the file is decoded by walking the YAML node tree
// against the Go types ourselves instead of yaml.v3's KnownFields, so every problem —
// an unknown key, a wrong type, a failed validation — is reported as
// "file:line: path: message" (flagwatch.yaml:12: flags[0].metrics[1]: unknown key
// "evnt"), and so an absent key can be told from an explicit zero. Defaults are
// applied in one place (applyDefaults) to absent keys only; validation then checks
// every value, so an explicit alpha: 0 is an error rather than silently 0.05.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// DefaultPath is the monitors file read when none is given. If it is absent, every
// flag seen in exposures is monitored with the core metrics and the defaults.
const DefaultPath = "flagwatch.yaml"

// Kind is how a metric aggregates a user's events (SPEC §4).
type Kind string

// Metric kinds.
const (
	Conversion Kind = "conversion" // did the user do the event in the window (0/1)
	Count      Kind = "count"      // events per user
	Sum        Kind = "sum"        // Σ of a numeric property per user
	Ratio      Kind = "ratio"      // Σ numerator / Σ denominator (delta method)
)

// Goal is the direction in which a metric moving is good.
type Goal string

// Goals.
const (
	Increase Goal = "increase"
	Decrease Goal = "decrease"
)

// Monitors is the parsed monitors file with defaults applied: every Flag's metrics
// already include the core metrics, and every field a consumer reads is set.
type Monitors struct {
	Defaults Defaults `yaml:"defaults"`
	// CoreMetrics are applied to every flag, declared or discovered in exposures.
	// When the file has no core_metrics key they are DefaultCoreMetrics.
	CoreMetrics []Metric `yaml:"core_metrics"`
	// Templates are named bundles of metrics, segments and a rollout plan that a flag
	// takes with template: (see Template).
	Templates Templates `yaml:"templates"`
	Flags     []Flag    `yaml:"flags"`

	// File is the path the monitors were read from; "" when no file was read.
	File string `yaml:"-"`

	byKey map[string]int
}

// Defaults are the settings a flag or metric does not override.
type Defaults struct {
	Alpha              float64 `yaml:"alpha"`
	SequentialTuning   float64 `yaml:"sequential_tuning"`
	MinUsersPerVariant int     `yaml:"min_users_per_variant"`
	// MinDuration is the time since first exposure before a decision other than a
	// guardrail breach is announced.
	MinDuration time.Duration `yaml:"min_duration"`
	// PrePeriod is the CUPED covariate window before first exposure; 0 disables CUPED.
	PrePeriod    time.Duration `yaml:"pre_period"`
	SlackChannel string        `yaml:"slack_channel"`
	// Window is a metric's attribution window when the metric does not set one.
	Window time.Duration `yaml:"window"`
	// Lateness is how late exposures and events may arrive and still be joined.
	Lateness time.Duration `yaml:"lateness"`
	// StaleAfter is how long a flag's exposures may stop before it is reported stale.
	StaleAfter time.Duration `yaml:"stale_after"`
	// Segments are the properties every flag is split by when it declares none.
	Segments []string `yaml:"segments"`
	// AutoSegments turns property discovery on for every flag that does not say
	// otherwise: besides its configured segments, each flag is analysed by the
	// properties of its users' first exposures that qualify (SPEC §10).
	AutoSegments bool `yaml:"auto_segments"`
	// AutoSegmentsMax is the most discovered properties analysed per flag, the ones
	// covering most of its users first.
	AutoSegmentsMax int `yaml:"auto_segments_max"`
	// AutoSegmentsValues is the most values a discovered property may have (values with
	// fewer than MinUsersPerVariant users in a variant are folded into one "(other)").
	AutoSegmentsValues int `yaml:"auto_segments_values"`
	// AutoSegmentsCoverage is the least share of a flag's users a discovered property
	// must be set for.
	AutoSegmentsCoverage float64 `yaml:"auto_segments_coverage"`
	// ExposeUsers lets flagwatch list the users behind a result (SPEC §12); off by
	// default, because the list names people.
	ExposeUsers bool `yaml:"expose_users"`
	// RecordingsURL is the template of a session recording's link, with {session_id}
	// and {distinct_id} placeholders (RecordingLink); "" for no links.
	RecordingsURL string `yaml:"recordings_url"`
}

// Flag is one monitored feature flag.
type Flag struct {
	Key string `yaml:"key"`
	// Control is the baseline variant. When the file sets neither control nor split it
	// is "" after Load, and ForFlag picks it from the variants seen in exposures.
	Control string `yaml:"control"`
	// Split is the expected traffic split, in file order; empty means equal shares.
	Split    Split    `yaml:"split"`
	Segments []string `yaml:"segments"`
	// AutoSegments and AutoSegmentsMax override the defaults of property discovery
	// for this flag.
	AutoSegments    bool `yaml:"auto_segments"`
	AutoSegmentsMax int  `yaml:"auto_segments_max"`
	// Metrics are the core metrics, then the template's, then the flag's own; a metric
	// with the name of an earlier one replaces it in place.
	Metrics      []Metric  `yaml:"metrics"`
	Rollback     *Rollback `yaml:"rollback"`
	SlackChannel string    `yaml:"slack_channel"`
	// Template names the template whose metrics, segments and rollout plan the flag
	// takes; the flag's own keys override the template's.
	Template string `yaml:"template"`
	// Rollout is the flag's progressive rollout plan, resolved: the template's and the
	// flag's keys merged, every stage's minimums filled. nil: no plan.
	Rollout *Rollout `yaml:"rollout"`
	// ExposeUsers and RecordingsURL override the defaults' for this flag.
	ExposeUsers   bool   `yaml:"expose_users"`
	RecordingsURL string `yaml:"recordings_url"`

	// Declared is false for a flag seen in exposures but absent from the file.
	Declared bool `yaml:"-"`
}

// Split is a flag's expected traffic split: variant → share, in file order.
type Split []Share

// Share is one variant's expected share of exposures.
type Share struct {
	Variant string
	Weight  float64
}

// Metric is one thing measured per user for a flag.
type Metric struct {
	Name string `yaml:"name"`
	Kind Kind   `yaml:"kind"`
	// Event is the event counted (conversion, count) or summed (sum).
	Event string `yaml:"event"`
	// Property is the numeric property summed by a sum metric.
	Property string `yaml:"property"`
	// Numerator and Denominator define a ratio metric.
	Numerator   *Measure `yaml:"numerator"`
	Denominator *Measure `yaml:"denominator"`
	// Window is how long after first exposure a user's events count.
	Window time.Duration `yaml:"window"`
	// Cap, when set, is the most a user's value counts for (count and sum metrics): a few
	// users with huge values would otherwise dominate the variance and make the normal
	// approximations behind every interval and p-value wrong (winsorizing).
	Cap float64 `yaml:"cap"`
	// Goal defaults to increase, or to the direction opposite the guardrail limit.
	Goal      Goal       `yaml:"goal"`
	Guardrail *Guardrail `yaml:"guardrail"`
}

// Measure is one side of a ratio: the number of Event per user, or the sum of its
// Property when Property is set.
type Measure struct {
	Event    string `yaml:"event"`
	Property string `yaml:"property"`
}

// Guardrail is a limit on a harmful move of a metric; exactly one field is set. A
// breach may trigger the flag's rollback.
type Guardrail struct {
	// MaxIncrease is the largest tolerated relative rise (0.3 = +30%).
	MaxIncrease float64 `yaml:"max_increase"`
	// MaxDecrease is the largest tolerated relative fall (0.2 = −20%).
	MaxDecrease float64 `yaml:"max_decrease"`
}

// Rollback says what to call when a guardrail is breached or a loss is certain.
type Rollback struct {
	Webhook *Webhook `yaml:"webhook"`
	PostHog *PostHog `yaml:"posthog"`
}

// Webhook is a generic rollback endpoint; requests are signed with HMAC-SHA256 using
// the secret held in the environment variable SecretEnv (or the file SecretEnv_FILE).
type Webhook struct {
	URL       string `yaml:"url"`
	SecretEnv string `yaml:"secret_env"`
}

// PostHog disables a flag through PostHog's feature-flag API with the personal API
// key held in the environment variable APIKeyEnv (or the file APIKeyEnv_FILE).
type PostHog struct {
	Host      string `yaml:"host"`
	ProjectID string `yaml:"project_id"`
	FlagID    int64  `yaml:"flag_id"`
	APIKeyEnv string `yaml:"api_key_env"`
}

// DefaultDefaults are the defaults of SPEC §4 and §6.
var DefaultDefaults = Defaults{
	Alpha:              0.05,
	SequentialTuning:   5000,
	MinUsersPerVariant: 100,
	MinDuration:        24 * time.Hour,
	PrePeriod:          7 * day,
	SlackChannel:       "#growth",
	Window:             7 * day,
	Lateness:           24 * time.Hour,
	StaleAfter:         24 * time.Hour,

	AutoSegments:         true,
	AutoSegmentsMax:      20,
	AutoSegmentsValues:   50,
	AutoSegmentsCoverage: 0.2,
}

// DefaultCoreMetrics are the core metrics when the file has no core_metrics key
// ($pageview is what PostHog's JavaScript SDK captures by default).
var DefaultCoreMetrics = []Metric{{Name: "pageviews", Kind: Count, Event: "$pageview"}}

const day = 24 * time.Hour

// Load reads the monitors file at path. A missing file is an error, except when path
// is DefaultPath: then every flag is auto-discovered with the defaults.
func Load(path string) (*Monitors, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && path == DefaultPath {
		return Parse(nil, "")
	}
	if err != nil {
		return nil, &readError{path: path, err: err}
	}
	return Parse(data, path)
}

// readError is a monitors file that could not be read.
type readError struct {
	path string
	err  error
}

func (e *readError) Error() string { return fmt.Sprintf("read config %s: %v", e.path, e.err) }
func (e *readError) Unwrap() error { return e.err }

// IsInvalid reports whether err is the monitors file's fault — it could not be read,
// or Parse found problems in it — rather than a failure at run time, so that commands
// can exit with the code for bad configuration (2) instead of a failure (1).
func IsInvalid(err error) bool {
	var e *Error
	var r *readError
	return errors.As(err, &e) || errors.As(err, &r)
}

// Parse decodes, completes and validates a monitors file; file names it in errors.
// Empty data gives the defaults. Every problem is returned at once, in line order,
// joined (one per line when printed), each an *Error: wrong types and unknown keys
// do not hide bad values elsewhere, so one edit can fix them all. Only a YAML syntax
// error stops at the first, as the parser does.
func Parse(data []byte, file string) (*Monitors, error) {
	d := newDecoder(file)
	m := &Monitors{File: file}
	d.document(data, m)
	if !d.syntax {
		m.applyDefaults(d.has)
		d.validate(m)
	}
	if len(d.errs) > 0 {
		slices.SortStableFunc(d.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
		errs := make([]error, len(d.errs))
		for i, e := range d.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	m.resolve(d.has)
	return m, nil
}

// Error is one problem in a monitors file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Path string // e.g. flags[0].metrics[1].kind; "" for the document
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// applyDefaults fills every key absent from the file; has reports whether a path was
// present. It is the only place defaults are applied.
func (m *Monitors) applyDefaults(has func(path string) bool) {
	m.Defaults.fill(has)
	if !has("core_metrics") {
		m.CoreMetrics = slices.Clone(DefaultCoreMetrics)
	}
	for i := range m.CoreMetrics {
		m.CoreMetrics[i].fill(has, fmt.Sprintf("core_metrics[%d]", i), m.Defaults)
	}
	for i := range m.Templates {
		t := &m.Templates[i]
		for j := range t.Metrics {
			t.Metrics[j].fill(has, fmt.Sprintf("templates.%s.metrics[%d]", t.Name, j), m.Defaults)
		}
	}
	for i := range m.Flags {
		f := &m.Flags[i]
		path := fmt.Sprintf("flags[%d]", i)
		f.fill(has, path, m.Defaults)
		if tpl, tp := m.template(f.Template); tpl != nil && !has(path+".segments") && has(tp+".segments") {
			f.Segments = slices.Clone(tpl.Segments)
		}
		f.Declared = true
	}
}

func (d *Defaults) fill(has func(string) bool) {
	def := DefaultDefaults
	absent := func(key string) bool { return !has("defaults." + key) }
	setIf(absent("alpha"), &d.Alpha, def.Alpha)
	setIf(absent("sequential_tuning"), &d.SequentialTuning, def.SequentialTuning)
	setIf(absent("min_users_per_variant"), &d.MinUsersPerVariant, def.MinUsersPerVariant)
	setIf(absent("min_duration"), &d.MinDuration, def.MinDuration)
	setIf(absent("pre_period"), &d.PrePeriod, def.PrePeriod)
	setIf(absent("slack_channel"), &d.SlackChannel, def.SlackChannel)
	setIf(absent("window"), &d.Window, def.Window)
	setIf(absent("lateness"), &d.Lateness, def.Lateness)
	setIf(absent("stale_after"), &d.StaleAfter, def.StaleAfter)
	setIf(absent("auto_segments"), &d.AutoSegments, def.AutoSegments)
	setIf(absent("auto_segments_max"), &d.AutoSegmentsMax, def.AutoSegmentsMax)
	setIf(absent("auto_segments_values"), &d.AutoSegmentsValues, def.AutoSegmentsValues)
	setIf(absent("auto_segments_coverage"), &d.AutoSegmentsCoverage, def.AutoSegmentsCoverage)
}

func setIf[T any](cond bool, dst *T, v T) {
	if cond {
		*dst = v
	}
}

func (f *Flag) fill(has func(string) bool, path string, def Defaults) {
	if !has(path+".control") && len(f.Split) > 0 {
		f.Control = pickControl(f.Split.Variants())
	}
	if !has(path + ".segments") {
		f.Segments = slices.Clone(def.Segments)
	}
	if !has(path + ".slack_channel") {
		f.SlackChannel = def.SlackChannel
	}
	setIf(!has(path+".auto_segments"), &f.AutoSegments, def.AutoSegments)
	setIf(!has(path+".auto_segments_max"), &f.AutoSegmentsMax, def.AutoSegmentsMax)
	if !has(path + ".expose_users") {
		f.ExposeUsers = def.ExposeUsers
	}
	if !has(path + ".recordings_url") {
		f.RecordingsURL = def.RecordingsURL
	}
	for i := range f.Metrics {
		f.Metrics[i].fill(has, fmt.Sprintf("%s.metrics[%d]", path, i), def)
	}
}

func (mt *Metric) fill(has func(string) bool, path string, def Defaults) {
	if !has(path + ".window") {
		mt.Window = def.Window
	}
	if !has(path + ".goal") {
		mt.Goal = Increase
		if mt.Guardrail != nil && mt.Guardrail.MaxIncrease > 0 {
			mt.Goal = Decrease
		}
	}
}

// pickControl chooses the baseline among variants: "control", else "false" (boolean
// flags), else the first one.
func pickControl(variants []string) string {
	switch {
	case len(variants) == 0 || slices.Contains(variants, "control"):
		return "control"
	case slices.Contains(variants, "false"):
		return "false"
	default:
		return variants[0]
	}
}

// resolve completes every declared flag once the file is valid: the core metrics, then
// its template's, then its own (a later metric of the same name replaces an earlier one
// in place), and its rollout plan merged with the template's; it indexes flags by key.
func (m *Monitors) resolve(has func(string) bool) {
	m.byKey = make(map[string]int, len(m.Flags))
	for i := range m.Flags {
		f := &m.Flags[i]
		tpl, tp := m.template(f.Template)
		f.Rollout = resolveRollout(tpl, tp, f, fmt.Sprintf("flags[%d]", i), has, m.Defaults)
		f.Metrics = withCore(withCore(m.CoreMetrics, templateMetrics(tpl)), f.Metrics)
		m.byKey[f.Key] = i
	}
}

// withCore returns base followed by own, a metric of own replacing the one of base with
// the same name in place.
func withCore(base, own []Metric) []Metric {
	out := slices.Clone(base)
	for _, mt := range own {
		i := slices.IndexFunc(out[:len(base)], func(c Metric) bool { return c.Name == mt.Name })
		if i >= 0 {
			out[i] = mt
			continue
		}
		out = append(out, mt)
	}
	return out
}

// ForFlag returns the monitor for flag key: the declared one, or for a flag seen only
// in exposures one with the core metrics and the defaults. variants are the variants
// seen in exposures; they choose the control when the file does not ("control", else
// "false" for boolean flags, else the first in sorted order). The result shares
// slices with m and must not be modified.
// PrimaryMetric is the metric a flag is judged by first — on its page, in its users
// list, in its verdict: its first own metric that is not a guardrail, else its first
// metric that is not a guardrail, else its first; "" for a flag without metrics.
func (m *Monitors) PrimaryMetric(f Flag) string {
	core := map[string]bool{}
	for _, c := range m.CoreMetrics {
		core[c.Name] = true
	}
	for _, x := range f.Metrics {
		if x.Guardrail == nil && !core[x.Name] {
			return x.Name
		}
	}
	for _, x := range f.Metrics {
		if x.Guardrail == nil {
			return x.Name
		}
	}
	if len(f.Metrics) > 0 {
		return f.Metrics[0].Name
	}
	return ""
}

func (m *Monitors) ForFlag(key string, variants []string) Flag {
	if i, ok := m.byKey[key]; ok {
		f := m.Flags[i]
		if f.Control == "" {
			f.Control = pickControl(sorted(variants))
		}
		return f
	}
	return Flag{
		Key:             key,
		Control:         pickControl(sorted(variants)),
		Segments:        m.Defaults.Segments,
		AutoSegments:    m.Defaults.AutoSegments,
		AutoSegmentsMax: m.Defaults.AutoSegmentsMax,
		Metrics:         m.CoreMetrics,
		SlackChannel:    m.Defaults.SlackChannel,
		ExposeUsers:     m.Defaults.ExposeUsers,
		RecordingsURL:   m.Defaults.RecordingsURL,
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// Variants returns the split's variant names in file order.
func (s Split) Variants() []string {
	out := make([]string, len(s))
	for i, sh := range s {
		out[i] = sh.Variant
	}
	return out
}

// ExpectedSplit returns the expected share of each of variants, for the
// sample-ratio-mismatch test: the configured weights (0 for a variant the split does
// not name), or equal shares when the flag declares no split.
func (f *Flag) ExpectedSplit(variants []string) []float64 {
	out := make([]float64, len(variants))
	for i, v := range variants {
		if len(f.Split) == 0 {
			out[i] = 1 / float64(len(variants))
			continue
		}
		if j := slices.IndexFunc(f.Split, func(s Share) bool { return s.Variant == v }); j >= 0 {
			out[i] = f.Split[j].Weight
		}
	}
	return out
}

// Limit returns the guardrail's limit and the harmful direction it bounds.
func (g *Guardrail) Limit() (float64, Goal) {
	if g.MaxIncrease > 0 {
		return g.MaxIncrease, Increase
	}
	return g.MaxDecrease, Decrease
}
