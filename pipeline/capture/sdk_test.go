package capture_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/capture"
)

const (
	sdkAPIKey      = "phc_sdk_test"
	sdkPersonalKey = "phx_local_eval"
)

// The real posthog-node, from the npm registry, pointed at capture: its gzip /batch/
// requests are accepted, and the exposures getFeatureFlag sends (flags evaluated locally
// from definitions this test serves), the captures and a raw $feature_flag_called all
// reach Kafka with the SDK's distinct_id, event and properties. shutdown() resolving
// means every event is already in Kafka, since capture answers 200 only after the acks.
func TestPostHogNodeSDK(t *testing.T) {
	dir := installSDK(t)
	var mu sync.Mutex
	var unexpected []string
	gzipped := 0
	e := newWrappedEnv(t, capture.Options{Tokens: []string{sdkAPIKey}}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/flags/definitions", "/api/feature_flag/local_evaluation/", "/api/feature_flag/local_evaluation":
				serveFlagDefinitions(t, w, r)
			case "/batch/", "/batch":
				mu.Lock()
				if r.Header.Get("Content-Encoding") == "gzip" {
					gzipped++
				}
				mu.Unlock()
				h.ServeHTTP(w, r)
			default:
				mu.Lock()
				unexpected = append(unexpected, r.Method+" "+r.URL.String())
				mu.Unlock()
				http.NotFound(w, r)
			}
		})
	})

	assigned := runSDKScript(t, dir, e.url)

	require.Len(t, assigned, 4)
	type seen struct{ event, flag, response, variantProp string }
	got := map[string][]seen{}
	for _, r := range e.recordsSettled() {
		m := decode(t, r.Value)
		require.Equal(t, string(r.Key), m["distinct_id"])
		require.Equal(t, sdkAPIKey, m["token"])
		require.Regexp(t, `^[0-9a-f-]{36}$`, m["uuid"], "the SDK's uuid is kept")
		// The SDK's clock (real time) is months away from capture's (fixedNow); skew
		// correction puts each event just before capture received it.
		require.WithinRange(t, storedTime(t, r), fixedNow.Add(-10*time.Second), fixedNow)
		props := m["properties"].(map[string]any)
		require.Equal(t, "posthog-node", props["$lib"])
		s := seen{event: m["event"].(string)}
		s.flag, _ = props["$feature_flag"].(string)
		if resp, ok := props["$feature_flag_response"]; ok {
			s.response = toString(resp)
		}
		s.variantProp = toString(props["$feature/new-checkout"])
		if s.event == "$feature_flag_called" && s.flag == "new-checkout" {
			s.variantProp = "" // the exposure's own $feature/ property is not under test
		}
		got[string(r.Key)] = append(got[string(r.Key)], s)
	}
	want := map[string][]seen{
		"user-5": {{event: "$feature_flag_called", flag: "kill-switch", response: "false"}},
	}
	for user, variant := range assigned {
		require.Contains(t, []string{"control", "test"}, variant)
		want[user] = []seen{
			{event: "$feature_flag_called", flag: "new-checkout", response: variant},
			{event: "purchase", variantProp: variant},
		}
	}
	require.Equal(t, want, got)
	require.Empty(t, unexpected, "the SDK called endpoints capture does not serve")
	require.Positive(t, gzipped, "the SDK sent gzip batches")
}

func toString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func serveFlagDefinitions(t *testing.T, w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+sdkPersonalKey {
		http.Error(w, "bad personal API key", http.StatusUnauthorized)
		return
	}
	body, err := os.ReadFile(filepath.Join("testdata", "flag_definitions.json"))
	require.NoError(t, err)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// installSDK installs posthog-node from the committed lock file into sdktest/node_modules
// (git-ignored), unless it is already there; it skips the test when node or npm is
// missing, and fails then under CI.
func installSDK(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed: the posthog-node SDK tests need it (apt-get install nodejs npm)", tool)
			}
			t.Skipf("%s not installed: cannot run the posthog-node SDK test", tool)
		}
	}
	dir, err := filepath.Abs("sdktest")
	require.NoError(t, err)
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	require.NoError(t, err)
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err == nil && !installed.ModTime().Before(lock.ModTime()) {
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "npm ci in %s:\n%s", dir, out)
	return dir
}

// runSDKScript runs send.mjs against host and returns the variants the SDK assigned.
func runSDKScript(t *testing.T, dir, host string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "send.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CAPTURE_HOST="+host, "API_KEY="+sdkAPIKey,
		"PERSONAL_API_KEY="+sdkPersonalKey, "POSTHOG_CAPTURE_MODE=v0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "node send.mjs: %s", stderr.String())
	var res struct {
		Assigned map[string]string `json:"assigned"`
	}
	require.NoError(t, json.Unmarshal(out, &res), "script output: %s", out)
	return res.Assigned
}
