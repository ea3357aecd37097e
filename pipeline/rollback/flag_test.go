package rollback_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
	"github.com/flagwatch/flagwatch/pipeline/rollback/posthogtest"
)

// A flag with everything a PATCH must carry back: a person's condition, a variant
// override, the multivariate weights, payloads with characters an encoder likes to
// escape, and members flagwatch knows nothing about.
const flag = `{"id": 42, "key": "new-checkout", "name": "", "active": true, "version": 12,
 "updated_at": "2026-11-18T09:00:00.000000Z", "last_modified_by": {"id": 2, "email": "ana@acme.com", "first_name": "Ana"},
 "filters": {
  "groups": [
   {"properties": [{"key": "id", "type": "cohort", "value": 88, "cohort_name": "Employees"}], "rollout_percentage": 100, "variant": "test"},
   {"properties": [], "rollout_percentage": 5, "description": "everyone else"}],
  "multivariate": {"variants": [{"key": "control", "name": "Old", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"banner\": \"<b>new</b> & shiny\"}"},
  "aggregation_group_type_index": null,
  "super_groups": [{"properties": [{"key": "$feature_enrollment/new-checkout", "type": "person", "value": ["true"]}], "rollout_percentage": 100}]},
 "ensure_experience_continuity": false, "tags": ["checkout"]}`

func api(s *posthogtest.Server, opts rollback.Options) *rollback.FlagAPI {
	return rollback.NewFlagAPI(s.URL, "1", 42, config.NewSecret("phx_key"), opts)
}

func TestFlagAPIReadsAndPatchesOneCondition(t *testing.T) {
	s := posthogtest.New(t, "1", "phx_key")
	s.Add(flag)
	c := api(s, rollback.Options{Logger: quiet()})
	ctx := context.Background()

	f, out := c.Get(ctx, "new-checkout")
	require.Equal(t, rollback.StatusOK, out.Status, out.Detail)
	require.Equal(t, "new-checkout", f.Key)
	require.Equal(t, 12, f.Version)
	require.True(t, f.Active)
	require.Equal(t, "ana@acme.com", f.ModifiedBy)
	require.Len(t, f.Filters.Groups, 2)
	require.Equal(t, 100.0, f.Filters.Groups[0].RolloutPercentage())
	require.Equal(t, "test", f.Filters.Groups[0].Variant())
	require.Len(t, f.Filters.Groups[0].Properties(), 1)
	require.Empty(t, f.Filters.Groups[1].Properties())
	require.Equal(t, 5.0, f.Filters.Groups[1].RolloutPercentage())

	next := f.Filters.Clone()
	next.Groups[1].SetRolloutPercentage(10)
	require.Equal(t, 5.0, f.Filters.Groups[1].RolloutPercentage(), "the clone is a copy")
	after, out, err := c.PatchFilters(ctx, "new-checkout", next, f.Version, f.Filters)
	require.NoError(t, err)
	require.Equal(t, rollback.StatusOK, out.Status, out.Detail)
	require.Equal(t, 13, after.Version)
	require.Equal(t, "flagwatch-bot@acme.com", after.ModifiedBy)
	require.Equal(t, next.Canonical(), after.Filters.Canonical())

	p := s.Patches()
	require.Len(t, p, 1)
	require.Equal(t, 12.0, p[0].Body["version"], "the version read goes along")
	orig, _ := json.Marshal(p[0].Body["original_flag"])
	var want any
	require.NoError(t, json.Unmarshal([]byte(`{"filters": `+string(f.Filters.JSON())+`}`), &want))
	wantJSON, _ := json.Marshal(want)
	require.JSONEq(t, string(wantJSON), string(orig))
	require.Equal(t, 10.0, posthogtest.Rollout(s.Flag(42)))
}

// What a PATCH sends back is what was read: every member byte for byte apart from the
// one percentage (no re-encoding of payloads, no dropped null).
func TestFiltersRoundTripRaw(t *testing.T) {
	var whole struct {
		Filters json.RawMessage `json:"filters"`
	}
	require.NoError(t, json.Unmarshal([]byte(flag), &whole))
	f, err := rollback.DecodeFilters(whole.Filters)
	require.NoError(t, err)
	out := string(f.JSON())
	require.Contains(t, out, `"payloads":{"test": "{\"banner\": \"<b>new</b> & shiny\"}"}`)
	require.Contains(t, out, `"aggregation_group_type_index":null`)
	require.Contains(t, out, `"description":"everyone else"`)
	require.JSONEq(t, string(whole.Filters), out)

	empty, err := rollback.DecodeFilters([]byte("null"))
	require.NoError(t, err)
	require.Equal(t, `{"groups":[]}`, string(empty.JSON()))
}

func TestFlagAPIConflictAndRetries(t *testing.T) {
	s := posthogtest.New(t, "1", "phx_key")
	s.Add(flag)
	var waits []time.Duration
	opts := rollback.Options{Logger: quiet(), Sleep: func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	}, Retry: rollback.Retry{Attempts: 4, Base: 100 * time.Millisecond, Max: time.Second, Budget: time.Hour}}
	c := api(s, opts)
	ctx := context.Background()

	s.FailNext(http.StatusBadGateway, http.StatusTooManyRequests)
	f, out := c.Get(ctx, "new-checkout")
	require.Equal(t, rollback.StatusOK, out.Status, out.Detail)
	require.Equal(t, "HTTP 200 OK after 3 attempts", out.Detail)
	require.Equal(t, []time.Duration{100 * time.Millisecond, time.Second}, waits, "backoff, then Retry-After")

	s.Edit(42, posthogtest.User{ID: 3, Email: "bo@acme.com"}, func(fl map[string]any) {
		posthogtest.Groups(fl)[1]["rollout_percentage"] = 30.0
	})
	next := f.Filters.Clone()
	next.Groups[1].SetRolloutPercentage(10)
	_, out, err := c.PatchFilters(ctx, "new-checkout", next, f.Version, f.Filters)
	require.ErrorIs(t, err, rollback.ErrConflict)
	require.Contains(t, out.Detail, "HTTP 409 Conflict")
	require.Contains(t, out.Detail, "bo@acme.com")
	require.Equal(t, 30.0, posthogtest.Rollout(s.Flag(42)))

	bad := rollback.NewFlagAPI(s.URL, "1", 42, config.NewSecret("wrong"), opts)
	_, out = bad.Get(ctx, "new-checkout")
	require.Equal(t, rollback.StatusFailed, out.Status)
	require.True(t, strings.HasPrefix(out.Detail, "read flag: HTTP 401 Unauthorized"), out.Detail)
}

func TestWebhookPostSignsAnyBody(t *testing.T) {
	var got *http.Request
	var body []byte
	srv := newStub(t, func(r *http.Request, b []byte) { got, body = r, b })
	out := rollback.NewWebhook(srv.URL, config.NewSecret("k"), rollback.Options{Logger: quiet()}).
		Post(context.Background(), "new-checkout", "new-checkout|rollout|4", []byte(`{"change":"advance"}`))
	require.Equal(t, rollback.StatusOK, out.Status, out.Detail)
	require.Equal(t, `{"change":"advance"}`, string(body))
	require.Equal(t, "new-checkout|rollout|4", got.Header.Get(rollback.IdempotencyHeader))
	require.True(t, rollback.Verify([]byte("k"), body, got.Header.Get(rollback.SignatureHeader)))
}
