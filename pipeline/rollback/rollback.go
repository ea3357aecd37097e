// Package rollback carries out a monitor's rollback actions when the analyzer finds a
// guardrail breach or a certain loss (SPEC §4–§6): a signed generic webhook, and
// disabling the flag through PostHog's feature-flag API. It is also the transport of
// progressive rollout (pipeline/rollout): FlagAPI reads a PostHog flag and saves its
// filters, and Webhook.Post sends any signed body.
//
// The decision that shapes it: an action never returns an error. It retries what is
// worth retrying (network errors, 5xx, 429 honouring Retry-After) within a bounded
// number of attempts and time, and always returns an Outcome — the record the analyzer
// puts in the alert — so a failed rollback reaches the people reading Slack instead of
// a log line. Secrets are read once, at construction, so a missing one stops the
// analyzer at start-up rather than at the moment a rollback is needed.
package rollback

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// Outcome records what was called and how it went; it is the alert's rollback field.
type Outcome = alert.Rollback

// Outcome statuses.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// Request describes the finding that calls for a rollback. It is also the webhook's
// JSON body.
type Request struct {
	Flag     string         `json:"flag"`
	Metric   string         `json:"metric"`
	Segment  *alert.Segment `json:"segment"`
	Variant  string         `json:"variant,omitempty"`
	Decision string         `json:"decision"`
	Summary  string         `json:"summary"`
	Numbers  alert.Numbers  `json:"numbers"`
	DedupKey string         `json:"dedup_key"`
	Time     time.Time      `json:"time"`
}

// FromAlert builds the request for alert a.
func FromAlert(a *alert.Alert) Request {
	return Request{
		Flag: a.Flag, Metric: a.Metric, Segment: a.Segment, Variant: a.Variant,
		Decision: a.Decision, Summary: a.Summary, Numbers: a.Numbers,
		DedupKey: a.DedupKey, Time: a.DetectedAt,
	}
}

// Action is one rollback action. Do blocks until the action succeeded or gave up.
type Action interface {
	Do(ctx context.Context, r Request) Outcome
}

// Actions are a monitor's rollback actions.
type Actions []Action

// Do runs every action concurrently and returns their outcomes in order.
func (as Actions) Do(ctx context.Context, r Request) []Outcome {
	out := make([]Outcome, len(as))
	var wg sync.WaitGroup
	for i, a := range as {
		wg.Go(func() { out[i] = a.Do(ctx, r) })
	}
	wg.Wait()
	return out
}

// New builds the actions of a monitor's rollback section, reading the secrets from the
// environment variables it names (or their _FILE variants). A nil section gives no
// actions; a missing secret is an error.
func New(cfg *config.Rollback, lookup config.Lookup, opts Options) (Actions, error) {
	if cfg == nil {
		return nil, nil
	}
	var as Actions
	if w := cfg.Webhook; w != nil {
		secret, err := requireSecret(w.SecretEnv, lookup)
		if err != nil {
			return nil, fmt.Errorf("rollback webhook secret: %w", err)
		}
		as = append(as, NewWebhook(w.URL, secret, opts))
	}
	if p := cfg.PostHog; p != nil {
		key, err := requireSecret(p.APIKeyEnv, lookup)
		if err != nil {
			return nil, fmt.Errorf("rollback posthog api key: %w", err)
		}
		as = append(as, NewPostHog(p.Host, p.ProjectID, p.FlagID, key, opts))
	}
	return as, nil
}

func requireSecret(env string, lookup config.Lookup) (config.Secret, error) {
	s, err := config.LookupSecret(env, lookup)
	if err != nil {
		return s, err
	}
	if !s.IsSet() {
		return s, fmt.Errorf("environment variable %s (or %s_FILE) is not set", env, env)
	}
	return s, nil
}

// Options tune how actions call out. The zero value is ready to use.
type Options struct {
	// Client sends the requests; nil means a client with a 10 s timeout per attempt.
	Client *http.Client
	// Retry bounds the attempts; zero fields take DefaultRetry's.
	Retry  Retry
	Logger *slog.Logger // nil: slog.Default()
	// Now and Sleep are the clock, for tests; nil: the real ones.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Retry is the retry policy: capped exponential backoff (Base, 2·Base, … up to Max),
// or the server's Retry-After when longer, within Attempts tries and Budget time.
type Retry struct {
	Attempts int           // tries in all, the first included
	Base     time.Duration // wait after the first failure
	Max      time.Duration // cap on the backoff (not on Retry-After)
	Budget   time.Duration // no attempt starts after this much time
}

// DefaultRetry fits a rollback: urgent, but worth a couple of minutes of retrying.
var DefaultRetry = Retry{Attempts: 6, Base: 500 * time.Millisecond, Max: 15 * time.Second, Budget: 2 * time.Minute}

func (o Options) withDefaults() Options {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	d := DefaultRetry
	if o.Retry.Attempts <= 0 {
		o.Retry.Attempts = d.Attempts
	}
	if o.Retry.Base <= 0 {
		o.Retry.Base = d.Base
	}
	if o.Retry.Max <= 0 {
		o.Retry.Max = d.Max
	}
	if o.Retry.Budget <= 0 {
		o.Retry.Budget = d.Budget
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = retry.Sleep
	}
	return o
}
