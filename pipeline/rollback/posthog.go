package rollback

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// PostHog disables a feature flag through PostHog's REST API:
// PATCH {host}/api/projects/{project_id}/feature_flags/{id}/ with {"active": false},
// authorised by a personal API key with the feature_flag:write scope.
//
// Before disabling, it reads the flag and refuses when its key is not the monitored
// flag's: a flag_id copied from another monitor must not switch off the wrong feature.
type PostHog struct {
	url    string
	apiKey config.Secret
	sender sender
}

// NewPostHog returns the action that disables flag flagID of project projectID on host.
func NewPostHog(host, projectID string, flagID int64, apiKey config.Secret, opts Options) *PostHog {
	u := fmt.Sprintf("%s/api/projects/%s/feature_flags/%d/", strings.TrimRight(host, "/"), url.PathEscape(projectID), flagID)
	return &PostHog{url: u, apiKey: apiKey, sender: newSender("posthog", u, opts)}
}

// disable is the PATCH body.
var disable = []byte(`{"active":false}`)

// Do implements Action.
func (p *PostHog) Do(ctx context.Context, r Request) Outcome {
	if r.Flag != "" {
		if out, ok := p.checkKey(ctx, r.Flag); !ok {
			return out
		}
	}
	out, _ := p.sender.send(ctx, r.Flag, func(ctx context.Context) (*http.Request, error) {
		return p.request(ctx, http.MethodPatch, disable)
	})
	if out.Status == StatusOK {
		out.Detail = strings.TrimSpace("disabled flag "+r.Flag) + ": " + out.Detail
	}
	return out
}

// checkKey reads the flag and reports whether its key is want; when it is not, or the
// read fails, the failed Outcome says why.
func (p *PostHog) checkKey(ctx context.Context, want string) (Outcome, bool) {
	out, body := p.sender.send(ctx, want, func(ctx context.Context) (*http.Request, error) {
		return p.request(ctx, http.MethodGet, nil)
	})
	if out.Status != StatusOK {
		out.Detail = "read flag: " + out.Detail
		return out, false
	}
	var flag struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &flag); err != nil {
		return p.sender.outcome(StatusFailed, fmt.Sprintf("read flag: decode response: %v", err)), false
	}
	if flag.Key != want {
		return p.sender.outcome(StatusFailed,
			fmt.Sprintf("refused: PostHog flag at this id has key %q, not %q; fix flag_id in the monitors file", flag.Key, want)), false
	}
	return out, true
}

func (p *PostHog) request(ctx context.Context, method string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.apiKey.Reveal())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}
