package capture_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/capture"
)

// corsPage sends events to capture from another origin the ways posthog-js can: fetch
// without credentials (its default transport), fetch with credentials, a JSON body
// (which needs a preflight), and XHR with credentials (its fallback transport); then it
// posts what the browser let it see to /result.
const corsPage = `<!doctype html><script>
const capture = %q;
const body = JSON.stringify({event: "cors", distinct_id: "u", token: "k"});
async function status(url, init) {
  try { return (await fetch(capture + url, init)).status; } catch (e) { return "blocked"; }
}
(async () => {
  const out = {};
  out.fetch = await status("/e/", {method: "POST", body, headers: {"Content-Type": "text/plain"}});
  out.fetchCredentials = await status("/e/", {method: "POST", body, credentials: "include", headers: {"Content-Type": "text/plain"}});
  out.preflighted = await status("/batch/", {method: "POST", body: JSON.stringify({api_key: "k", batch: [JSON.parse(body)]}),
    headers: {"Content-Type": "application/json"}});
  out.xhrCredentials = await new Promise(done => {
    const x = new XMLHttpRequest();
    x.open("POST", capture + "/e/");
    x.withCredentials = true;
    x.onloadend = () => done(x.status === 0 ? "blocked" : x.status);
    x.send(body);
  });
  await fetch("/result", {method: "POST", body: JSON.stringify(out)});
})();
</script>`

// In a real browser (Debian's chromium), a page on another origin can send events
// without credentials whatever capture's settings, and with credentials only from an
// origin configured for them (issue 12, finding 8: no reflected origin with
// credentials) — also in proxy mode, where PostHog (a stand-in that reflects any origin
// with credentials, as PostHog does) answers.
func TestCORSInABrowser(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium not installed (apt-get install chromium)")
		}
		t.Skip("chromium not installed: cannot run the browser CORS test")
	}
	results := make(chan map[string]any, 1)
	var captureURL atomic.Pointer[string] // set per case, read by the page's handler
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/result" {
			b, _ := io.ReadAll(r.Body)
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				results <- m
			}
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, corsPage, *captureURL.Load())
	}))
	t.Cleanup(page.Close)
	// The page is http://localhost:port, capture http://127.0.0.1:port: two origins.
	pageOrigin := strings.Replace(page.URL, "127.0.0.1", "localhost", 1)

	ph := newPostHog(t, "k")
	for _, c := range []struct {
		name     string
		origins  []string
		upstream string
		want     map[string]any
	}{
		{"no origin configured", nil, "",
			map[string]any{"fetch": 200.0, "fetchCredentials": "blocked", "preflighted": 200.0, "xhrCredentials": "blocked"}},
		{"the page's origin configured", []string{pageOrigin}, "",
			map[string]any{"fetch": 200.0, "fetchCredentials": 200.0, "preflighted": 200.0, "xhrCredentials": 200.0}},
		{"proxy mode, no origin configured", nil, ph.url(),
			map[string]any{"fetch": 200.0, "fetchCredentials": "blocked", "preflighted": 200.0, "xhrCredentials": "blocked"}},
		{"proxy mode, the page's origin configured", []string{pageOrigin}, ph.url(),
			map[string]any{"fetch": 200.0, "fetchCredentials": 200.0, "preflighted": 200.0, "xhrCredentials": 200.0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, capture.Options{CORSCredentialOrigins: c.origins, Upstream: c.upstream})
			captureURL.Store(&e.url)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, browser, "--headless=new", "--no-sandbox", "--disable-gpu",
				"--no-first-run", "--user-data-dir="+t.TempDir(), pageOrigin+"/")
			// Its own process group, ended whole: chromium's helper processes otherwise
			// outlive it and write into the profile directory while the test removes it.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			require.NoError(t, cmd.Start())
			defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()
			select {
			case got := <-results:
				require.Equal(t, c.want, got)
			case <-ctx.Done():
				t.Fatal("the page reported nothing within a minute")
			}
		})
	}
	// Whatever the browser was allowed to read, every request went through to PostHog.
	require.Len(t, ph.eventRequests(), 2*4, "fetch, fetch with credentials, preflighted, XHR; twice")
	ph.noProblems(t)
}
