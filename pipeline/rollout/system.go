package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
)

// system is the flag system a plan changes: PostHog's API, or a signed webhook.
type system interface {
	// apply brings the flag to stage c.to (a start picks its stage from the flag).
	apply(ctx context.Context, c *change) result
	// settle decides a change a replica claimed and left pending (it died between its
	// intent and the outcome).
	settle(ctx context.Context, c *change, pending *Entry) result
}

// change is what apply is asked to do.
type change struct {
	plan     *Plan
	kind     string // alert.RolloutStart, RolloutAdvance, RolloutBack
	from, to int
	id       string // the change's identity (changeID)
	summary  string
	at       time.Time
	// baseline is the flag as flagwatch wrote it last (nil before the first change).
	baseline *Snapshot
	// intend records the change's intent — the stage it goes to and the state it will
	// set (or the webhook body) — before the flag system is called.
	intend func(ctx context.Context, to int, state string) error
}

// result is how a change went.
type result struct {
	status string // statusOK, statusFailed, statusRefused; "" leaves a pending change pending
	to     int    // the stage the flag is at after it
	// why is the reason of a refusal, for people.
	why     string
	outcome alert.Rollback
	after   *Snapshot
}

// newSystem builds the plan's flag system, reading its secret now, so that a secret
// set after start-up is picked up and a missing one fails the change (alerted) rather
// than the analyzer.
func newSystem(p *Plan, lookup config.Lookup, opts rollback.Options) (system, error) {
	r := p.Rollout
	switch {
	case r.PostHog != nil:
		key, err := secret(r.PostHog.APIKeyEnv, lookup)
		if err != nil {
			return nil, fmt.Errorf("rollout posthog api key: %w", err)
		}
		return &posthog{api: rollback.NewFlagAPI(r.PostHog.Host, r.PostHog.ProjectID, r.PostHog.FlagID, key, opts)}, nil
	case r.Webhook != nil:
		key, err := secret(r.Webhook.SecretEnv, lookup)
		if err != nil {
			return nil, fmt.Errorf("rollout webhook secret: %w", err)
		}
		return &webhook{hook: rollback.NewWebhook(r.Webhook.URL, key, opts), url: r.Webhook.URL}, nil
	}
	return nil, errors.New("the plan names no flag system")
}

func secret(env string, lookup config.Lookup) (config.Secret, error) {
	s, err := config.LookupSecret(env, lookup)
	if err != nil {
		return s, err
	}
	if !s.IsSet() {
		return s, fmt.Errorf("environment variable %s (or %s_FILE) is not set", env, env)
	}
	return s, nil
}

// posthog changes a PostHog flag's release conditions.
type posthog struct {
	api *rollback.FlagAPI
}

func (p *posthog) fail(out rollback.Outcome, status, why string) result {
	out.Status = status
	if why != "" {
		out.Detail = why
	}
	return result{status: status, why: why, outcome: out}
}

func (p *posthog) apply(ctx context.Context, c *change) result {
	flag := c.plan.Flag
	f, out := p.api.Get(ctx, flag)
	if out.Status != rollback.StatusOK {
		return p.fail(out, statusFailed, "")
	}
	if f.Key != flag {
		return p.fail(out, statusRefused, fmt.Sprintf("the PostHog flag at this id has key %q, not %q: fix flag_id in the monitors file", f.Key, flag))
	}
	if c.kind == alert.RolloutBack && !f.Active {
		out.Detail = "the flag is already switched off in PostHog (active: false): nobody gets it"
		return result{status: statusOK, to: c.to, outcome: out, after: snapshotOf(f, f.Filters)}
	}
	if c.baseline != nil {
		if why := personChange(c.baseline, f); why != "" {
			return p.fail(out, statusRefused, why)
		}
	}
	if !f.Active {
		return p.fail(out, statusRefused, "the flag is switched off in PostHog (active: false); flagwatch will not ramp a flag that is off")
	}
	to := c.to
	if c.kind == alert.RolloutStart {
		var err error
		if to, err = adopt(c.plan, f.Filters); err != nil {
			return p.fail(out, statusRefused, err.Error())
		}
	}
	next, err := desired(c.plan, f.Filters, to)
	if err != nil {
		return p.fail(out, statusRefused, err.Error())
	}
	if next.Canonical() == f.Filters.Canonical() {
		out.Detail = "PostHog already had it; nothing to change"
		return result{status: statusOK, to: to, outcome: out, after: snapshotOf(f, f.Filters)}
	}
	if err := c.intend(ctx, to, snapshotOf(f, next).json()); err != nil {
		return p.fail(out, statusFailed, "not called: recording the intent failed: "+err.Error())
	}
	after, out, err := p.api.PatchFilters(ctx, flag, next, f.Version, f.Filters)
	switch {
	case errors.Is(err, rollback.ErrConflict):
		return p.fail(out, statusRefused, "someone saved the flag in PostHog while flagwatch changed it ("+out.Detail+")")
	case err != nil:
		return p.fail(out, statusFailed, "")
	case after == nil:
		// PostHog took the change but its answer could not be read: read the flag.
		var got rollback.Outcome
		if after, got = p.api.Get(ctx, flag); got.Status != rollback.StatusOK {
			out.Detail += "; reading the flag afterwards failed: " + got.Detail
			return result{status: statusOK, to: to, outcome: out, after: snapshotOf(f, next)}
		}
	}
	return result{status: statusOK, to: to, outcome: out, after: snapshotOf(after, after.Filters)}
}

func (p *posthog) settle(ctx context.Context, c *change, pending *Entry) result {
	f, out := p.api.Get(ctx, c.plan.Flag)
	if out.Status != rollback.StatusOK {
		return result{} // stays pending: tried again next pass
	}
	var intended Snapshot
	if err := json.Unmarshal([]byte(pending.FlagState), &intended); err != nil {
		return p.fail(out, statusFailed, "the intent of the change is unreadable: "+err.Error())
	}
	switch {
	case f.Active == intended.Active && f.Filters.Canonical() == intended.filters().Canonical():
		out.Detail = "PostHog has the change: it was applied before the replica that made it stopped"
		return result{status: statusOK, to: int(pending.ToStage), outcome: out, after: snapshotOf(f, f.Filters)}
	case c.baseline == nil || personChange(c.baseline, f) == "":
		return p.fail(out, statusFailed, "not applied: the replica that claimed it stopped before PostHog answered")
	}
	return p.fail(out, statusRefused, personChange(c.baseline, f))
}

// webhook sends each change to a signed webhook, for any other flag system.
type webhook struct {
	hook *rollback.Webhook
	url  string
}

// webhookStage is a stage in the webhook body.
type webhookStage struct {
	Stage   int     `json:"stage"`
	Label   string  `json:"label"`
	Percent float64 `json:"percent"`
}

// webhookGroup is a target group in the webhook body.
type webhookGroup struct {
	Name     string   `json:"name"`
	Cohort   int64    `json:"cohort,omitempty"`
	Property string   `json:"property,omitempty"`
	Operator string   `json:"operator,omitempty"`
	Values   []string `json:"values,omitempty"`
}

type webhookBody struct {
	Flag     string         `json:"flag"`
	Change   string         `json:"change"`
	ChangeID string         `json:"change_id"`
	From     webhookStage   `json:"from"`
	To       webhookStage   `json:"to"`
	Stages   int            `json:"stages"`
	Groups   []webhookGroup `json:"groups"`
	Summary  string         `json:"summary"`
	Time     time.Time      `json:"time"`
}

func (w *webhook) apply(ctx context.Context, c *change) result {
	p := c.plan
	body := webhookBody{Flag: p.Flag, Change: c.kind, ChangeID: c.id,
		From:   webhookStage{Stage: c.from, Label: p.Label(c.from), Percent: p.Percent(c.from)},
		To:     webhookStage{Stage: c.to, Label: p.Label(c.to), Percent: p.Percent(c.to)},
		Stages: len(p.Stages), Groups: []webhookGroup{}, Summary: c.summary, Time: c.at.UTC()}
	for _, g := range p.Groups(c.to) {
		body.Groups = append(body.Groups, webhookGroup{Name: g.Name, Cohort: g.Cohort, Property: g.Property, Operator: opOf(g), Values: g.Values})
	}
	b, err := json.Marshal(body)
	if err != nil {
		return result{status: statusFailed, outcome: w.outcome(statusFailed, "encode the webhook body: "+err.Error())}
	}
	if err := c.intend(ctx, c.to, string(b)); err != nil {
		return result{status: statusFailed, outcome: w.outcome(statusFailed, "not called: recording the intent failed: "+err.Error())}
	}
	return w.send(ctx, c, c.to, b)
}

func opOf(g config.TargetGroup) string {
	if g.Cohort > 0 {
		return ""
	}
	return g.Operator
}

func (w *webhook) settle(ctx context.Context, c *change, pending *Entry) result {
	// The receiver deduplicates on the Idempotency-Key: sending the same body again is
	// how a webhook change is settled.
	return w.send(ctx, c, int(pending.ToStage), []byte(pending.FlagState))
}

func (w *webhook) send(ctx context.Context, c *change, to int, body []byte) result {
	out := w.hook.Post(ctx, c.plan.Flag, c.id, body)
	st := statusOK
	if out.Status != rollback.StatusOK {
		st = statusFailed
	}
	return result{status: st, to: to, outcome: out}
}

func (w *webhook) outcome(status, detail string) rollback.Outcome {
	return rollback.Outcome{Action: "webhook", Target: w.url, Status: status, Detail: detail, At: time.Now().UTC()}
}
