package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Templates are the monitors file's named bundles, in file order.
type Templates []Template

// Template is a named bundle of metrics (guardrails among them), segments and a rollout
// plan, for the flags that name it with template:. A flag's own keys override the
// template's: its segments replace the template's, a metric of the same name replaces
// the template's metric, and each rollout key it sets replaces the template's key.
type Template struct {
	// Name is the template's key under templates:.
	Name     string   `yaml:"-"`
	Segments []string `yaml:"segments"`
	Metrics  []Metric `yaml:"metrics"`
	Rollout  *Rollout `yaml:"rollout"`
}

// Rollout is a progressive rollout plan: the stages a flag goes through, and the flag
// system flagwatch changes (PostHog's feature-flag API or a signed webhook).
type Rollout struct {
	// Stages in order; DefaultStages when the file names none.
	Stages []Stage `yaml:"stages"`
	// MinDuration and MinUsersPerVariant are every stage's minimums unless the stage
	// sets its own.
	MinDuration        time.Duration `yaml:"min_duration"`
	MinUsersPerVariant int           `yaml:"min_users_per_variant"`
	PostHog            *PostHog      `yaml:"posthog"`
	Webhook            *Webhook      `yaml:"webhook"`
}

// Stage is one step of a rollout: a percentage of all users, or a target group (a
// PostHog cohort or a person-property condition) added to the flag's release
// conditions. The stage advances to the next once it has lasted MinDuration, each
// compared variant has MinUsersPerVariant users first exposed during it, and no
// guardrail is breached.
type Stage struct {
	Percent            float64       `yaml:"percent"`
	Group              *TargetGroup  `yaml:"group"`
	MinDuration        time.Duration `yaml:"min_duration"`
	MinUsersPerVariant int           `yaml:"min_users_per_variant"`
	// Fallback is the stage (1-based) a guardrail breach in this stage returns the flag
	// to; 0 turns the flag off for everyone the plan gave it to.
	Fallback int `yaml:"fallback"`
}

// TargetGroup is a release condition: everyone in a cohort, or every person whose
// property matches.
type TargetGroup struct {
	Name     string   `yaml:"name"`
	Cohort   int64    `yaml:"cohort"`
	Property string   `yaml:"property"`
	Operator string   `yaml:"operator"`
	Values   []string `yaml:"values"`
}

// DefaultRamp is the percentages of the default plan.
var DefaultRamp = []float64{1, 5, 10, 25, 50, 100}

// DefaultRolloutMinDuration is a stage's minimum duration when nothing sets one.
const DefaultRolloutMinDuration = 24 * time.Hour

// groupOperators are the PostHog property operators a target group may use.
var groupOperators = []string{"exact", "is_not", "icontains", "not_icontains", "regex", "not_regex", "gt", "gte", "lt", "lte"}

// Label names the stage for people: "25%" or "internal users".
func (s Stage) Label() string {
	if s.Group != nil {
		return s.Group.Name
	}
	return FormatPercent(s.Percent)
}

// FormatPercent prints a rollout percentage: 1%, 2.5%, 100%.
func FormatPercent(p float64) string {
	return strconv.FormatFloat(p, 'f', -1, 64) + "%"
}

// template returns the template called name, or nil.
func (m *Monitors) template(name string) (*Template, string) {
	for i := range m.Templates {
		if m.Templates[i].Name == name {
			return &m.Templates[i], "templates." + name
		}
	}
	return nil, ""
}

// names lists the templates' names.
func (ts Templates) names() []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

// resolveRollout merges a flag's rollout with its template's, key by key (the flag's
// wins), and fills what neither sets: the default ramp, and each stage's minimums from
// the stage, else the merged rollout, else the defaults. nil when neither has a plan.
// has reports the keys present in the file; tplPath and path locate the two.
func resolveRollout(tpl *Template, tplPath string, f *Flag, path string, has func(string) bool, def Defaults) *Rollout {
	var base *Rollout
	if tpl != nil {
		base = tpl.Rollout
	}
	own := f.Rollout
	if base == nil && own == nil {
		return nil
	}
	rp, tp := path+".rollout", tplPath+".rollout"
	from := func(key string) (*Rollout, string) {
		if own != nil && has(rp+"."+key) {
			return own, rp
		}
		if base != nil && has(tp+"."+key) {
			return base, tp
		}
		return nil, ""
	}
	out := &Rollout{MinDuration: DefaultRolloutMinDuration, MinUsersPerVariant: def.MinUsersPerVariant}
	if r, _ := from("min_duration"); r != nil {
		out.MinDuration = r.MinDuration
	}
	if r, _ := from("min_users_per_variant"); r != nil {
		out.MinUsersPerVariant = r.MinUsersPerVariant
	}
	if r, _ := from("webhook"); r != nil {
		w := *r.Webhook
		out.Webhook = &w
	}
	out.PostHog = mergePostHog(own, base, rp, tp, has)
	r, sp := from("stages")
	if r == nil {
		for _, p := range DefaultRamp {
			out.Stages = append(out.Stages, Stage{Percent: p, MinDuration: out.MinDuration, MinUsersPerVariant: out.MinUsersPerVariant})
		}
		return out
	}
	for i, s := range r.Stages {
		p := fmt.Sprintf("%s.stages[%d]", sp, i)
		if !has(p + ".min_duration") {
			s.MinDuration = out.MinDuration
		}
		if !has(p + ".min_users_per_variant") {
			s.MinUsersPerVariant = out.MinUsersPerVariant
		}
		if s.Group != nil {
			g := *s.Group
			if g.Operator == "" {
				g.Operator = "exact"
			}
			g.Values = slices.Clone(g.Values)
			s.Group = &g
		}
		out.Stages = append(out.Stages, s)
	}
	return out
}

// mergePostHog merges the posthog section field by field, so a template can hold the
// host, project and key variable of a team and each flag only its flag_id.
func mergePostHog(own, base *Rollout, rp, tp string, has func(string) bool) *PostHog {
	var out PostHog
	any := false
	field := func(key string, set func(src *PostHog)) {
		switch {
		case own != nil && own.PostHog != nil && has(rp+".posthog."+key):
			set(own.PostHog)
		case base != nil && base.PostHog != nil && has(tp+".posthog."+key):
			set(base.PostHog)
		default:
			return
		}
		any = true
	}
	field("host", func(s *PostHog) { out.Host = s.Host })
	field("project_id", func(s *PostHog) { out.ProjectID = s.ProjectID })
	field("flag_id", func(s *PostHog) { out.FlagID = s.FlagID })
	field("api_key_env", func(s *PostHog) { out.APIKeyEnv = s.APIKeyEnv })
	if !any && !(own != nil && own.PostHog != nil) && !(base != nil && base.PostHog != nil) {
		return nil
	}
	return &out
}

// checkTemplates validates the templates: names, their segments and metrics, and the
// parts of their rollout plans they give.
func (d *decoder) checkTemplates(ts Templates) {
	for _, t := range ts {
		p := "templates." + t.Name
		if !templateName.MatchString(t.Name) {
			d.invalid(p, "template name %q: use letters, digits, - and _", t.Name)
		}
		d.checkSegments(t.Segments, p+".segments")
		d.checkMetrics(t.Metrics, p+".metrics")
		if t.Rollout != nil {
			d.checkRolloutParts(t.Rollout, p+".rollout")
		}
	}
}

// checkRolloutParts checks the keys a rollout section gives, wherever it is (a
// template's or a flag's); what the merged plan needs is checkPlan's.
func (d *decoder) checkRolloutParts(r *Rollout, path string) {
	if d.has(path + ".stages") {
		d.checkStages(r.Stages, path+".stages")
	}
	d.checkNonNegative(path+".min_duration", r.MinDuration)
	if r.MinUsersPerVariant < 0 {
		d.invalid(path+".min_users_per_variant", "must be >= 0, got %d", r.MinUsersPerVariant)
	}
	if w := r.Webhook; w != nil {
		d.checkHTTPURL(path+".webhook.url", w.URL)
		d.checkEnvVar(path+".webhook.secret_env", w.SecretEnv)
	}
	if ph := r.PostHog; ph != nil {
		p := path + ".posthog"
		if d.has(p + ".host") {
			d.checkHTTPURL(p+".host", ph.Host)
		}
		if d.has(p+".project_id") && (ph.ProjectID == "" || strings.ContainsAny(ph.ProjectID, "/?#")) {
			d.invalid(p+".project_id", "want a project id, got %q", ph.ProjectID)
		}
		if d.has(p+".flag_id") && ph.FlagID <= 0 {
			d.invalid(p+".flag_id", "want PostHog's numeric flag id (> 0), got %d", ph.FlagID)
		}
		if d.has(p + ".api_key_env") {
			d.checkEnvVar(p+".api_key_env", ph.APIKeyEnv)
		}
	}
}

func (d *decoder) checkStages(stages []Stage, path string) {
	if len(stages) == 0 {
		d.invalid(path, "needs at least one stage (or leave stages out for the default ramp 1, 5, 10, 25, 50, 100%%)")
		return
	}
	last, lastAt := 0.0, ""
	groups := map[string]string{}
	for i, s := range stages {
		p := fmt.Sprintf("%s[%d]", path, i)
		hasPercent, hasGroup := d.has(p+".percent"), s.Group != nil
		switch {
		case hasPercent && hasGroup:
			d.invalid(p, "takes percent or group, not both")
		case !hasPercent && !hasGroup:
			d.invalid(p, "needs percent (of all users) or group (a cohort or property condition)")
		case hasPercent && !(s.Percent > 0 && s.Percent <= 100):
			d.invalid(p+".percent", "must be in (0, 100], got %g", s.Percent)
		case hasPercent && s.Percent <= last:
			d.invalid(p+".percent", "stages must ramp up: %s after %s (line %d)", FormatPercent(s.Percent), FormatPercent(last), d.line(lastAt))
		case hasPercent:
			last, lastAt = s.Percent, p+".percent"
		case hasGroup:
			d.checkGroup(s.Group, p+".group")
			if prev, dup := groups[s.Group.Name]; dup && s.Group.Name != "" {
				d.invalid(p+".group.name", "duplicate group %q (first at line %d)", s.Group.Name, d.line(prev))
			}
			groups[s.Group.Name] = p + ".group.name"
		}
		d.checkNonNegative(p+".min_duration", s.MinDuration)
		if s.MinUsersPerVariant < 0 {
			d.invalid(p+".min_users_per_variant", "must be >= 0, got %d", s.MinUsersPerVariant)
		}
		if s.Fallback < 0 || s.Fallback > i {
			d.invalid(p+".fallback", "must name an earlier stage (1 to %d), or 0 to turn the flag off, got %d", i, s.Fallback)
		}
	}
}

func (d *decoder) checkGroup(g *TargetGroup, path string) {
	if g.Name == "" {
		d.invalid(path, "name is required (it names the stage in messages: \"internal users\")")
	}
	cohort, prop := d.has(path+".cohort"), d.has(path+".property")
	switch {
	case cohort && prop:
		d.invalid(path, "takes cohort or property, not both")
	case !cohort && !prop:
		d.invalid(path, "needs cohort (a PostHog cohort id) or property (a person property condition)")
	case cohort && g.Cohort <= 0:
		d.invalid(path+".cohort", "want PostHog's numeric cohort id (> 0), got %d", g.Cohort)
	case cohort && (len(g.Values) > 0 || g.Operator != ""):
		d.invalid(path, "a cohort takes no operator or values")
	case prop && len(g.Values) == 0:
		d.invalid(path, "property %s needs values", g.Property)
	}
	switch {
	case g.Operator != "" && !slices.Contains(groupOperators, g.Operator):
		d.invalid(path+".operator", "unknown operator %q (want %s)", g.Operator, strings.Join(groupOperators, ", "))
	case g.Operator != "" && g.Operator != "exact" && g.Operator != "is_not" && len(g.Values) > 1:
		d.invalid(path+".values", "operator %s compares with one value, got %d", g.Operator, len(g.Values))
	}
}

// checkPlan checks what a flag's merged plan needs: a flag system to act through, a
// split of the variants inside the rollout, and a guardrail to watch.
func (d *decoder) checkPlan(m *Monitors, f *Flag, path string) {
	tpl, tplPath := m.template(f.Template)
	r := resolveRollout(tpl, tplPath, f, path, d.has, m.Defaults)
	if r == nil {
		return
	}
	rp := path + ".rollout"
	from := ""
	if tpl != nil && tpl.Rollout != nil {
		from = fmt.Sprintf(" (template %q gives the plan)", tpl.Name)
	}
	switch {
	case r.PostHog == nil && r.Webhook == nil:
		d.invalid(rp, "needs posthog or webhook: the flag system flagwatch changes%s", from)
	case r.PostHog != nil && r.Webhook != nil:
		d.invalid(rp, "takes posthog or webhook, not both")
	case r.PostHog != nil:
		var missing []string
		ph := r.PostHog
		for _, k := range []struct {
			key string
			set bool
		}{{"host", ph.Host != ""}, {"project_id", ph.ProjectID != ""}, {"flag_id", ph.FlagID != 0}, {"api_key_env", ph.APIKeyEnv != ""}} {
			if !k.set {
				missing = append(missing, k.key)
			}
		}
		if len(missing) > 0 {
			d.invalid(rp+".posthog", "needs %s%s", strings.Join(missing, ", "), from)
		}
	}
	switch {
	case len(f.Split) < 2:
		d.invalid(path, "a rollout compares the variants inside it: declare split (e.g. {control: 0.5, test: 0.5}); users outside the rollout answer false and are not compared")
	case slices.Contains(f.Split.Variants(), "false"):
		d.invalid(path+".split", "names variant \"false\", the answer of users outside the rollout: give the flag variants (control, test) and let the plan ramp who gets them")
	}
	guarded := false
	for _, mt := range slices.Concat(m.CoreMetrics, templateMetrics(tpl), f.Metrics) {
		guarded = guarded || mt.Guardrail != nil
	}
	if !guarded {
		d.invalid(rp, "needs at least one guardrail metric (a metric with guardrail:): flagwatch advances only while guardrails hold%s", from)
	}
}

func templateMetrics(t *Template) []Metric {
	if t == nil {
		return nil
	}
	return t.Metrics
}
