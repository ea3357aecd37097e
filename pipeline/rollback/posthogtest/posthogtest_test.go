package posthogtest

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder is a testing.TB whose Errorf is recorded, so the referee's verdicts can be
// checked.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

const flag = `{"id": 7, "key": "new-checkout", "name": "New checkout", "active": true,
 "filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 10}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}}`

func patch(t *testing.T, s *Server, body string) int {
	req, err := http.NewRequest(http.MethodPatch, s.URL+"/api/projects/1/feature_flags/7/", bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer phx_key")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestRefereeAcceptsTheOwnedPercentage(t *testing.T) {
	s := New(t, "1", "phx_key")
	s.Add(flag)
	code := patch(t, s, `{"filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 25}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}, "version": 1}`)
	require.Equal(t, http.StatusOK, code)
	f := s.Flag(7)
	require.Equal(t, 25.0, Rollout(f))
	require.Equal(t, 2.0, f["version"])
	require.Equal(t, "flagwatch-bot@acme.com", f["last_modified_by"].(map[string]any)["email"])
}

// Every way a PATCH can break what it does not own fails the test.
func TestRefereeFailsTheTest(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"drops a group": {`{"filters": {"groups": [{"properties": [], "rollout_percentage": 25}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}}`, "dropped release conditions"},
		"alters another group": {`{"filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 50},
   {"properties": [], "rollout_percentage": 25}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}}`, "changed groups[0].rollout_percentage"},
		"drops multivariate": {`{"filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 25}],
  "payloads": {"test": "{\"color\": \"blue\"}"}}}`, "changed filters.multivariate"},
		"alters payloads": {`{"filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 25}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {}}}`, "changed filters.payloads"},
		"same stage twice": {`{"filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 10}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}}`, "the same stage set twice"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{TB: t}
			s := New(rec, "1", "phx_key")
			s.Add(flag)
			require.Equal(t, http.StatusOK, patch(t, s, tc.body))
			require.NotEmpty(t, rec.errs, "the referee must fail the test")
			require.Contains(t, strings.Join(rec.errs, "\n"), tc.want)
		})
	}
}

func TestConflictAfterAPersonsEdit(t *testing.T) {
	s := New(t, "1", "phx_key")
	s.Add(flag)
	s.Edit(7, User{ID: 2, Email: "ana@acme.com"}, func(f map[string]any) {
		Groups(f)[1]["rollout_percentage"] = 30.0
	})
	orig := `{"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": 10}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}`
	next := strings.Replace(orig, `"rollout_percentage": 10}`, `"rollout_percentage": 25}`, 1)
	code := patch(t, s, `{"filters": `+next+`, "version": 1, "original_flag": {"filters": `+orig+`}}`)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, 30.0, Rollout(s.Flag(7)), "the person's edit stands")
	require.Equal(t, 401, func() int {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/api/projects/1/feature_flags/7/", nil)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}(), "no key, no flag")
}

// Going back to an earlier stage is a fallback; going forward to a stage reached before
// is a change made twice.
func TestRefereeAllowsFallbackNotASecondAdvance(t *testing.T) {
	rec := &recorder{TB: t}
	s := New(rec, "1", "phx_key")
	s.Add(flag)
	body := func(pct string) string {
		return `{"filters": {"groups": [
   {"properties": [{"key": "email", "type": "person", "value": ["ana@acme.com"], "operator": "exact"}], "rollout_percentage": 100},
   {"properties": [], "rollout_percentage": ` + pct + `}],
  "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]},
  "payloads": {"test": "{\"color\": \"blue\"}"}}}`
	}
	for _, pct := range []string{"25", "50", "25"} {
		require.Equal(t, http.StatusOK, patch(t, s, body(pct)))
	}
	require.Empty(t, rec.errs, "10 → 25 → 50, then back to 25")
	require.Equal(t, http.StatusOK, patch(t, s, body("50")))
	require.Len(t, rec.errs, 1)
	require.Contains(t, rec.errs[0], "raises the owned conditions to [[]@50] a second time")
}
