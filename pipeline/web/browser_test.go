package web_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/web"
)

// chromium is Debian's headless browser (scripts/deps.sh test installs it).
const chromium = "/usr/bin/chromium"

// browser starts headless Chromium with a fresh profile and collects every console
// error, uncaught exception and browser log error (a CSP violation is one).
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: scripts/deps.sh test installs it", chromium)
		}
		t.Skipf("%s is missing (scripts/deps.sh test installs it)", chromium)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	var mu sync.Mutex
	var errs []string
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value))
				}
				errs = append(errs, "console: "+strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			errs = append(errs, fmt.Sprintf("exception: %s at %s:%d", e.ExceptionDetails.Text, e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber))
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				errs = append(errs, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	}))
	// chromedp enables the runtime and log domains of every tab it opens.
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(t, err, js)
	return v
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, sel)
	return v
}

// A real browser loads the flags list and flag pages from a running server: no console
// errors, the verdict rendered, GB left of zero in the forest plot and the whole flag
// between GB and the winners, the SRM banner on the SRM flag, and the list's sorting
// and filtering script working.
func testBrowser(t *testing.T, srv *httptest.Server) {
	ctx, consoleErrors := browser(t)
	shots := t.TempDir()
	if d := os.Getenv("FLAGWATCH_SCREENSHOTS"); d != "" {
		shots = d
		require.NoError(t, os.MkdirAll(d, 0o755))
	}

	// The list: sort by flag name, filter by status.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#flags"))))
	require.Greater(t, eval[int](t, ctx, `document.querySelectorAll("#flags tbody tr").length`), 5)
	screenshot(t, ctx, shots, "flags.png")
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`th button[data-sort="key"]`))))
	require.Equal(t, hostileFlag, eval[string](t, ctx, `document.querySelector("#flags tbody tr").dataset.key`),
		"sorted by key, the hostile key (it starts with a quote) comes first, as text")
	require.Equal(t, "ascending", eval[string](t, ctx, `document.querySelector('th button[data-sort="key"]').getAttribute("aria-sort")`))
	visible := eval[int](t, ctx, `(() => { const s = document.getElementById("status-filter"); s.value = "srm";
		s.dispatchEvent(new Event("change")); return document.querySelectorAll("#flags tbody tr:not([hidden])").length; })()`)
	require.Equal(t, 1, visible, "one SRM flag")

	// The new-checkout page.
	var p web.FlagPage
	getJSON(t, srv, "/api/flags/new-checkout", &p)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/flags/new-checkout"), chromedp.WaitVisible(chromedp.CSS("#verdict-sentence"))))
	require.Equal(t, p.Verdict, text(t, ctx, "#verdict-sentence"))
	require.Equal(t, p.Action, text(t, ctx, "#action"))
	type geometry struct{ Zero, GB, US, IN, Total float64 }
	geo := eval[geometry](t, ctx, `(() => {
		const svg = document.querySelector('details.segment[data-property="$geoip_country_code"][data-metric="purchase conversion"] svg.forest');
		const mid = el => { const r = el.getBoundingClientRect(); return r.left + r.width / 2; };
		const at = v => mid(svg.querySelector('g.row[data-segment="' + v + '"] path.marker'));
		return {Zero: mid(svg.querySelector('line.zero')), GB: at('GB'), US: at('US'), IN: at('IN'), Total: at('all users')};
	})()`)
	require.Less(t, geo.GB, geo.Zero, "GB left of zero: %+v", geo)
	require.Greater(t, geo.US, geo.Zero, "US right of zero: %+v", geo)
	require.Greater(t, geo.IN, geo.Zero, "IN right of zero: %+v", geo)
	require.Less(t, geo.GB, geo.Total, "the whole flag between GB and the winners: %+v", geo)
	require.Less(t, geo.Total, geo.US, "%+v", geo)
	screenshot(t, ctx, shots, "new-checkout.png")

	// The SRM flag shows its banner.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/flags/srm-banner"), chromedp.WaitVisible(chromedp.CSS("#srm-banner"))))
	require.Contains(t, text(t, ctx, "#srm-banner"), "Sample ratio mismatch")
	require.Greater(t, eval[float64](t, ctx, `document.getElementById("srm-banner").getBoundingClientRect().height`), 10.0)
	screenshot(t, ctx, shots, "srm-banner.png")

	// The rolled-back flag and the hostile one render without errors too.
	for _, path := range []string{"/flags/fast-search", "/flags/%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E"} {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+path), chromedp.WaitVisible(chromedp.CSS("#verdict"))))
		require.NotEmpty(t, eval[string](t, ctx, `document.title`))
	}
	screenshot(t, ctx, shots, "hostile.png")
	require.Zero(t, eval[int](t, ctx, `document.querySelectorAll("img, script").length`), "no element from the hostile key or values")
	require.Empty(t, consoleErrors(), "console errors")
}
