package config

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// splitTolerance is how far a split's weights may sum from 1.
const splitTolerance = 1e-6

var (
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	templateName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// invalid records a validation error at path, on the line of path or its nearest
// present ancestor, unless it would echo a decoding error (see quiet).
func (d *decoder) invalid(path, format string, args ...any) {
	if d.quiet(path) {
		return
	}
	d.fail(d.line(path), path, format, args...)
}

// validate checks every value of m after defaults are applied.
func (d *decoder) validate(m *Monitors) {
	d.checkDefaults(&m.Defaults)
	d.checkMetrics(m.CoreMetrics, "core_metrics")
	d.checkTemplates(m.Templates)
	first := map[string]string{}
	for i := range m.Flags {
		path := fmt.Sprintf("flags[%d]", i)
		f := &m.Flags[i]
		d.checkFlag(f, path)
		d.checkFlagTemplate(m, f, path)
		if f.Key == "" {
			continue
		}
		if prev, dup := first[f.Key]; dup {
			d.invalid(path+".key", "duplicate flag %q (first at line %d)", f.Key, d.line(prev))
			continue
		}
		first[f.Key] = path
	}
}

func (d *decoder) checkDefaults(df *Defaults) {
	const p = "defaults"
	if !(df.Alpha > 0 && df.Alpha < 1) {
		d.invalid(p+".alpha", "must be between 0 and 1 (exclusive), got %g", df.Alpha)
	}
	if !(df.SequentialTuning > 0) {
		d.invalid(p+".sequential_tuning", "must be > 0, got %g", df.SequentialTuning)
	}
	if df.MinUsersPerVariant < 1 {
		d.invalid(p+".min_users_per_variant", "must be >= 1, got %d", df.MinUsersPerVariant)
	}
	d.checkNonNegative(p+".min_duration", df.MinDuration)
	d.checkNonNegative(p+".pre_period", df.PrePeriod)
	d.checkNonNegative(p+".lateness", df.Lateness)
	d.checkPositive(p+".window", df.Window)
	d.checkPositive(p+".stale_after", df.StaleAfter)
	d.checkSegments(df.Segments, p+".segments")
	d.checkAutoSegmentsMax(p+".auto_segments_max", df.AutoSegmentsMax)
	if df.AutoSegmentsValues < 2 {
		d.invalid(p+".auto_segments_values", "must be >= 2 (a property with one value splits nothing), got %d", df.AutoSegmentsValues)
	}
	if !(df.AutoSegmentsCoverage > 0 && df.AutoSegmentsCoverage <= 1) {
		d.invalid(p+".auto_segments_coverage", "must be a share in (0, 1], got %g", df.AutoSegmentsCoverage)
	}
	d.checkRecordingsURL(p+".recordings_url", df.RecordingsURL)
}

func (d *decoder) checkAutoSegmentsMax(path string, n int) {
	if n < 1 {
		d.invalid(path, "must be >= 1, got %d (auto_segments: false turns discovery off)", n)
	}
}

func (d *decoder) checkPositive(path string, v time.Duration) {
	if v <= 0 {
		d.invalid(path, "must be > 0, got %v", v)
	}
}

func (d *decoder) checkNonNegative(path string, v time.Duration) {
	if v < 0 {
		d.invalid(path, "must be >= 0, got %v", v)
	}
}

func (d *decoder) checkSegments(segs []string, path string) {
	seen := map[string]bool{}
	for i, s := range segs {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case s == "":
			d.invalid(p, "segment property is empty")
		case seen[s]:
			d.invalid(p, "duplicate segment %q", s)
		default:
			d.checkPropertyName(s, p)
		}
		seen[s] = true
	}
}

// checkPropertyName refuses property names that can never match: the analyzer reads
// properties out of the stored JSON by name (visitParamExtract*), which finds only keys
// written without escapes, so a name with a quote, a backslash or a control character
// would silently measure nothing.
func (d *decoder) checkPropertyName(name, path string) {
	for _, r := range name {
		if r == '"' || r == '\\' || r < 0x20 || r == 0x7f {
			d.invalid(path, "property name %q has a quote, backslash or control character: such a key never matches (rename the property)", name)
			return
		}
	}
}

func (d *decoder) checkFlag(f *Flag, path string) {
	if f.Key == "" {
		d.invalid(path, "key is required")
	}
	d.checkSplit(f, path)
	d.checkSegments(f.Segments, path+".segments")
	d.checkAutoSegmentsMax(path+".auto_segments_max", f.AutoSegmentsMax)
	d.checkMetrics(f.Metrics, path+".metrics")
	if f.Rollback != nil {
		d.checkRollback(f.Rollback, path+".rollback")
	}
	if f.Rollout != nil {
		d.checkRolloutParts(f.Rollout, path+".rollout")
	}
	if d.has(path + ".recordings_url") {
		d.checkRecordingsURL(path+".recordings_url", f.RecordingsURL)
	}
}

// checkFlagTemplate checks the flag's template: it must exist; then the plan the
// template and the flag make together.
func (d *decoder) checkFlagTemplate(m *Monitors, f *Flag, path string) {
	if f.Template != "" {
		if tpl, _ := m.template(f.Template); tpl == nil {
			hint := ""
			if best, ok := Closest(f.Template, m.Templates.names()); ok {
				hint = fmt.Sprintf(" (did you mean %q?)", best)
			} else if len(m.Templates) == 0 {
				hint = " (the file has no templates:)"
			}
			d.invalid(path+".template", "unknown template %q%s", f.Template, hint)
			return
		}
	}
	if d.quiet(path+".rollout") || d.quiet(path+".template") {
		return
	}
	d.checkPlan(m, f, path)
}

func (d *decoder) checkSplit(f *Flag, path string) {
	if len(f.Split) == 0 {
		return
	}
	p := path + ".split"
	if len(f.Split) < 2 {
		d.invalid(p, "needs at least two variants")
	}
	sum := 0.0
	for _, s := range f.Split {
		if !(s.Weight > 0 && s.Weight <= 1) {
			d.invalid(p+"."+s.Variant, "share must be in (0, 1], got %g", s.Weight)
		}
		sum += s.Weight
	}
	if math.Abs(sum-1) > splitTolerance {
		d.invalid(p, "shares sum to %g, want 1", sum)
	}
	if f.Control != "" && !slices.Contains(f.Split.Variants(), f.Control) {
		d.invalid(p, "has no share for the control variant %q", f.Control)
	}
}

func (d *decoder) checkMetrics(ms []Metric, path string) {
	first := map[string]string{}
	for i := range ms {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.checkMetric(&ms[i], p)
		name := ms[i].Name
		if name == "" {
			continue
		}
		if prev, dup := first[name]; dup {
			d.invalid(p+".name", "duplicate metric %q (first at line %d)", name, d.line(prev))
			continue
		}
		first[name] = p
	}
}

func (d *decoder) checkMetric(mt *Metric, path string) {
	if mt.Name == "" {
		d.invalid(path, "name is required")
	}
	switch mt.Kind {
	case Conversion, Count, Sum:
		d.checkEventMetric(mt, path)
	case Ratio:
		d.checkRatioMetric(mt, path)
	case "":
		d.invalid(path, "kind is required (conversion, count, sum or ratio)")
	default:
		d.invalid(path+".kind", "unknown kind %q (want conversion, count, sum or ratio)", mt.Kind)
	}
	d.checkPositive(path+".window", mt.Window)
	if mt.Cap != 0 {
		switch {
		case mt.Kind != Count && mt.Kind != Sum:
			d.invalid(path+".cap", "only kinds count and sum take a cap (a conversion is 0 or 1 already)")
		case !(mt.Cap > 0) || math.IsInf(mt.Cap, 0):
			d.invalid(path+".cap", "must be a positive number, got %v", mt.Cap)
		}
	}
	if mt.Goal != Increase && mt.Goal != Decrease {
		d.invalid(path+".goal", "unknown goal %q (want increase or decrease)", mt.Goal)
	}
	if mt.Guardrail != nil {
		d.checkGuardrail(mt, path+".guardrail")
	}
}

func (d *decoder) checkEventMetric(mt *Metric, path string) {
	if mt.Event == "" {
		d.invalid(path, "kind %s needs event", mt.Kind)
	}
	if mt.Property != "" {
		d.checkPropertyName(mt.Property, path+".property")
	}
	switch {
	case mt.Kind == Sum && mt.Property == "":
		d.invalid(path, "kind sum needs property")
	case mt.Kind != Sum && mt.Property != "":
		d.invalid(path+".property", "only kind sum takes a property (use a ratio for per-event averages)")
	}
	if mt.Numerator != nil || mt.Denominator != nil {
		d.invalid(path, "only kind ratio takes numerator and denominator")
	}
}

func (d *decoder) checkRatioMetric(mt *Metric, path string) {
	if mt.Event != "" || mt.Property != "" {
		d.invalid(path, "kind ratio takes numerator and denominator, not event or property")
	}
	for _, side := range []struct {
		name string
		m    *Measure
	}{{"numerator", mt.Numerator}, {"denominator", mt.Denominator}} {
		switch {
		case side.m == nil:
			d.invalid(path, "kind ratio needs %s", side.name)
		case side.m.Event == "":
			d.invalid(path+"."+side.name, "event is required")
		case side.m.Property != "":
			d.checkPropertyName(side.m.Property, path+"."+side.name+".property")
		}
	}
}

func (d *decoder) checkGuardrail(mt *Metric, path string) {
	g := mt.Guardrail
	inc, dec := d.has(path+".max_increase"), d.has(path+".max_decrease")
	switch {
	case inc == dec:
		d.invalid(path, "needs exactly one of max_increase or max_decrease")
		return
	case inc && !(g.MaxIncrease > 0):
		d.invalid(path+".max_increase", "must be > 0, got %g", g.MaxIncrease)
	case dec && !(g.MaxDecrease > 0):
		d.invalid(path+".max_decrease", "must be > 0, got %g", g.MaxDecrease)
	}
	limit, harmful := g.Limit()
	if limit > 0 && mt.Goal == harmful {
		d.invalid(strings.TrimSuffix(path, ".guardrail")+".goal",
			"goal %s contradicts the guardrail, which treats an %s as harm", mt.Goal, harmful)
	}
}

func (d *decoder) checkRollback(r *Rollback, path string) {
	if r.Webhook == nil && r.PostHog == nil {
		d.invalid(path, "needs webhook or posthog")
	}
	if w := r.Webhook; w != nil {
		p := path + ".webhook"
		d.checkHTTPURL(p+".url", w.URL)
		d.checkEnvVar(p+".secret_env", w.SecretEnv)
	}
	if ph := r.PostHog; ph != nil {
		p := path + ".posthog"
		d.checkHTTPURL(p+".host", ph.Host)
		if ph.ProjectID == "" || strings.ContainsAny(ph.ProjectID, "/?#") {
			d.invalid(p+".project_id", "want a project id, got %q", ph.ProjectID)
		}
		if ph.FlagID <= 0 {
			d.invalid(p+".flag_id", "want PostHog's numeric flag id (> 0), got %d", ph.FlagID)
		}
		d.checkEnvVar(p+".api_key_env", ph.APIKeyEnv)
	}
}

func (d *decoder) checkHTTPURL(path, s string) {
	if s == "" {
		d.invalid(path, "is required")
		return
	}
	u, err := url.Parse(s)
	if err != nil {
		d.invalid(path, "invalid URL: %v", unwrapURLError(err))
		return
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		d.invalid(path, "want an http or https URL, got %q", s)
	}
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (d *decoder) checkEnvVar(path, name string) {
	if !envName.MatchString(name) {
		d.invalid(path, "want the name of an environment variable, got %q", name)
	}
}

// RecordingsPlaceholders are what a recordings_url template may contain; pipeline/users
// fills them in, URL-escaped.
var RecordingsPlaceholders = []string{"{session_id}", "{distinct_id}"}

var placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)

// checkRecordingsURL accepts "" (no links) or an http(s) URL template whose only
// placeholders are {session_id} and {distinct_id}, at least one of them.
func (d *decoder) checkRecordingsURL(path, s string) {
	if s == "" {
		return
	}
	found := false
	for _, ph := range placeholderRE.FindAllString(s, -1) {
		if !slices.Contains(RecordingsPlaceholders, ph) {
			d.invalid(path, "unknown placeholder %s (want {session_id} or {distinct_id}; write the rest, such as the project id, into the URL itself)", ph)
			return
		}
		found = true
	}
	if !found {
		d.invalid(path, "has no {session_id} or {distinct_id}: every link would be the same")
		return
	}
	u, err := url.Parse(placeholderRE.ReplaceAllString(s, "x"))
	if err != nil {
		d.invalid(path, "invalid URL: %v", unwrapURLError(err))
		return
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		d.invalid(path, "want an http or https URL, got %q", s)
	}
}
