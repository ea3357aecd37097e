package web_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

func getJSON(t *testing.T, srv *httptest.Server, path string, v any) {
	t.Helper()
	code, h, body := get(t, srv, path)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "application/json", h.Get("Content-Type"))
	require.NoError(t, json.Unmarshal([]byte(body), v))
}

// section is the HTML from the first occurrence of marker to the end of its table row.
func section(t *testing.T, body, marker string) string {
	t.Helper()
	i := strings.Index(body, marker)
	require.GreaterOrEqual(t, i, 0, "%s not on the page", marker)
	j := strings.Index(body[i:], "</tr>")
	require.Greater(t, j, 0)
	return body[i : i+j]
}

// attr is how a value appears in an attribute or text once the page is unescaped.
func attr(s string) string { return s }

func summaryOf(t *testing.T, lp web.ListPage, key string) web.FlagSummary {
	t.Helper()
	for _, f := range lp.Flags {
		if f.Key == key {
			return f
		}
	}
	t.Fatalf("flag %q not in the list", key)
	return web.FlagSummary{}
}

// The pages against a real ClickHouse holding what real passes wrote: every number on
// a page and in the API is the one the latest pass (what `analyzer once` printed) found.
func TestPages(t *testing.T) {
	t0 := time.Now()
	f := newFixture(t)
	t.Logf("fixture: %d passes in %s", f.passes, time.Since(t0).Round(time.Millisecond))
	require.EqualValues(t, 1, f.rollback, "fast-search's guardrail breach called the rollback webhook once")
	srv := httptest.NewServer(web.Handler(f.options()))
	defer srv.Close()

	t.Run("list API", func(t *testing.T) { testListAPI(t, f, srv) })
	t.Run("flag API equals the pass", func(t *testing.T) { testFlagAPI(t, f, srv) })
	t.Run("flag page shows the pass's numbers", func(t *testing.T) { testFlagHTML(t, f, srv) })
	t.Run("list page", func(t *testing.T) { testListHTML(t, f, srv) })
	t.Run("CSV", func(t *testing.T) { testCSV(t, f, srv) })
	t.Run("unknown flag", func(t *testing.T) {
		code, _, _ := get(t, srv, "/flags/no-such-flag")
		require.Equal(t, http.StatusNotFound, code)
		code, _, _ = get(t, srv, "/api/flags/no-such-flag")
		require.Equal(t, http.StatusNotFound, code)
		code, _, _ = get(t, srv, "/api/flags/no-such-flag/results.csv")
		require.Equal(t, http.StatusNotFound, code)
		resp, err := http.Post(srv.URL+"/api/flags", "text/plain", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "read-only")
	})
	t.Run("escaping", func(t *testing.T) { testEscaping(t, f, srv) })
	t.Run("static report", func(t *testing.T) { testReport(t, f) })
	t.Run("browser", func(t *testing.T) { testBrowser(t, srv) })
}

func testListAPI(t *testing.T, f *fixture, srv *httptest.Server) {
	var lp web.ListPage
	getJSON(t, srv, "/api/flags", &lp)
	want := map[string]web.Status{
		"fast-search":            web.StatusRolledBack,
		"srm-banner":             web.StatusSRM,
		"new-checkout":           web.StatusDiverge,
		"bigger-buttons":         web.StatusWinning,
		"old-banner":             web.StatusStale,
		"new-onboarding":         web.StatusHealthy,
		"declared-never-exposed": web.StatusCollecting,
	}
	for key, st := range want {
		s := summaryOf(t, lp, key)
		require.Equal(t, st, s.Status, "%s: %s / %s", key, s.Verdict, s.Action)
		require.NotEmpty(t, s.Verdict)
		require.NotEmpty(t, s.Action)
	}
	// Most urgent first.
	for i := 1; i < len(lp.Flags); i++ {
		require.LessOrEqual(t, lp.Flags[i-1].Status.Rank(), lp.Flags[i].Status.Rank())
	}
	nc := summaryOf(t, lp, "new-checkout")
	// Where to ship follows the per-country decisions of the pass.
	var up, down []string
	for _, r := range f.last.Rows {
		if r.Flag == "new-checkout" && r.Metric == "purchase conversion" && r.Segment != nil && r.Segment.Property == "$geoip_country_code" && r.Segment.Value != nil {
			switch r.Decision {
			case "win":
				up = append(up, *r.Segment.Value)
			case "loss":
				down = append(down, *r.Segment.Value)
			}
		}
	}
	require.NotEmpty(t, up)
	require.Equal(t, []string{"GB"}, down)
	require.Contains(t, nc.Action, "Ship to "+strings.Join(up, " and ")+" only; keep GB on control")
	// Users per variant are the pass's.
	tot := f.row("new-checkout", "purchase conversion", "", "", "test")
	require.NotNil(t, tot)
	require.Equal(t, []web.VariantUsers{{Variant: "control", Users: tot.ControlN, Control: true}, {Variant: "test", Users: tot.N}}, nc.Variants)
	require.NotNil(t, nc.LastPass)
	require.Equal(t, f.last.Time.Unix(), nc.LastPass.Unix())
	require.Equal(t, f.last.ID, nc.PassID)

	// A flag with nothing decided says how many more users it needs, sized from its
	// observed variance (the estimate is checked against the interval in verdict_test).
	on := summaryOf(t, lp, "new-onboarding")
	require.NotNil(t, on.Wait, on.Action)
	require.Equal(t, "purchase conversion", on.Wait.Metric)
	require.Contains(t, on.Action, "Wait: "+web.Count(on.Wait.MoreUsersPerVariant)+" more users per variant for a 5% effect on purchase conversion")
	sb := summaryOf(t, lp, "srm-banner")
	require.Contains(t, sb.Verdict, "sample ratio mismatch")
}

func testFlagAPI(t *testing.T, f *fixture, srv *httptest.Server) {
	var p web.FlagPage
	getJSON(t, srv, "/api/flags/new-checkout", &p)
	require.Equal(t, web.StatusDiverge, p.Status)
	seen := 0
	for _, r := range f.last.Rows {
		if r.Flag != "new-checkout" || r.Metric == "" {
			continue
		}
		switch {
		case r.Segment == nil:
			got := findResult(t, p.Metrics, r.Metric, r.Variant)
			requireSame(t, &r, got)
			seen++
		case r.Segment.Value != nil && r.Decision == "behaviour_shift":
			// A segment value's own shift is the behaviour-shift section's.
			require.True(t, slices.ContainsFunc(p.Shift.Findings, func(x web.FindingView) bool { return x.Reason == r.Reason }), r.Reason)
			seen++
		case r.Segment.Value != nil:
			got := findSegment(t, p.Segments, r.Segment.Property, r.Metric, *r.Segment.Value, r.Variant)
			requireSame(t, &r, got.ResultView)
			seen++
		case r.Decision == "segment_divergence":
			for _, s := range p.Segments {
				if s.Property == r.Segment.Property && s.Metric == r.Metric {
					require.NotNil(t, s.Divergence)
					require.Equal(t, r.Reason, s.Divergence.Reason)
					seen++
				}
			}
		}
	}
	require.Greater(t, seen, 10)
	testExplain(t, f, p)
	// The history has a point per pass that had results, the last one the latest pass.
	for _, m := range p.Metrics {
		require.NotEmpty(t, m.History, m.Name)
		require.LessOrEqual(t, len(m.History), f.passes)
		last := m.History[len(m.History)-1]
		r := f.row("new-checkout", m.Name, "", "", last.Variant)
		require.Equal(t, r.Lift, last.Lift)
		require.Equal(t, r.CI, last.CI)
		require.Equal(t, f.last.Time.Unix(), last.Time.Unix())
	}
	// Exposures per day add up to the users the pass compared (all data is in).
	tot := f.row("new-checkout", "purchase conversion", "", "", "test")
	require.Equal(t, []web.VariantUsers{{Variant: "control", Users: tot.ControlN, Control: true}, {Variant: "test", Users: tot.N}}, p.Exposures.Totals)
	require.False(t, p.Exposures.SRM.Alarm)
	require.True(t, p.Exposures.SRM.Checked)

	var srm web.FlagPage
	getJSON(t, srv, "/api/flags/srm-banner", &srm)
	require.True(t, srm.Exposures.SRM.Alarm)
	sr := f.row("srm-banner", "", "", "", "")
	require.NotNil(t, sr)
	require.Equal(t, sr.P, srm.Exposures.SRM.P)
	require.Equal(t, []web.SplitShare{{Variant: "control", Share: 0.5}, {Variant: "test", Share: 0.5}}, srm.Exposures.SRM.Expected)
	obs := srm.Exposures.SRM.Observed
	require.Len(t, obs, 2)
	require.Greater(t, obs[0].Share, 0.53, "synth planted a 56/44 split")

	var fs web.FlagPage
	getJSON(t, srv, "/api/flags/fast-search", &fs)
	require.Equal(t, web.StatusRolledBack, fs.Status)
	require.NotNil(t, fs.RolledBack)
	require.Equal(t, "ok", fs.RolledBack.Status)
	var kinds []string
	for _, e := range fs.Timeline {
		kinds = append(kinds, e.Kind+":"+e.Decision)
	}
	require.Contains(t, kinds, "rollback:guardrail_breach")
	require.Contains(t, kinds, "alert:guardrail_breach")
	var guard *web.MetricView
	for i := range fs.Metrics {
		if fs.Metrics[i].Name == "errors per user" {
			guard = &fs.Metrics[i]
		}
	}
	require.NotNil(t, guard)
	require.NotNil(t, guard.Guardrail)
	require.Equal(t, 0.3, guard.Guardrail.Limit)
	var markers []string
	for _, m := range guard.Markers {
		markers = append(markers, m.Kind)
	}
	require.Contains(t, markers, "rollback")
	require.Contains(t, markers, "alert")
	require.False(t, fs.Users.Enabled)
	require.Contains(t, fs.Users.Hint, "expose_users: true")
}

func findResult(t *testing.T, ms []web.MetricView, metric, variant string) web.ResultView {
	t.Helper()
	for _, m := range ms {
		if m.Name == metric {
			for _, r := range m.Results {
				if r.Variant == variant {
					return r
				}
			}
		}
	}
	t.Fatalf("no result for %s / %s", metric, variant)
	return web.ResultView{}
}

func findSegment(t *testing.T, ss []web.SegmentView, prop, metric, value, variant string) web.SegmentRow {
	t.Helper()
	for _, s := range ss {
		if s.Property == prop && s.Metric == metric {
			for _, r := range s.Rows {
				if r.Value == value && r.Variant == variant {
					return r
				}
			}
		}
	}
	t.Fatalf("no segment row %s=%s for %s / %s", prop, value, metric, variant)
	return web.SegmentRow{}
}

func requireSame(t *testing.T, want *analyze.Row, got web.ResultView) {
	t.Helper()
	require.Equal(t, want.Variant, got.Variant)
	require.Equal(t, want.N, got.N)
	require.Equal(t, want.ControlN, got.ControlN)
	require.Equal(t, want.Mean, got.Mean)
	require.Equal(t, want.ControlMean, got.ControlMean)
	require.Equal(t, want.Lift, got.Lift)
	require.Equal(t, want.CI, got.CI)
	require.Equal(t, want.P, got.P)
	require.Equal(t, want.ChanceToWin, got.ChanceToWin)
	require.Equal(t, want.Decision, got.Decision)
	require.Equal(t, want.Reason, got.Reason)
	require.Equal(t, want.CUPED, got.CUPED)
}

func testFlagHTML(t *testing.T, f *fixture, srv *httptest.Server) {
	code, h, raw := get(t, srv, "/flags/new-checkout")
	require.Equal(t, http.StatusOK, code)
	// html/template escapes more than it must (a + becomes &#43;): compare text.
	body := html.UnescapeString(raw)
	require.Equal(t, "text/html; charset=utf-8", h.Get("Content-Type"))
	require.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'")
	var p web.FlagPage
	getJSON(t, srv, "/api/flags/new-checkout", &p)
	require.Contains(t, body, attr(p.Verdict))
	require.Contains(t, body, attr(p.Action))
	for _, r := range f.last.Rows {
		if r.Flag != "new-checkout" || r.Metric == "" || r.Decision == "segment_divergence" ||
			(r.Segment != nil && r.Decision == "behaviour_shift") {
			continue
		}
		var row string
		if r.Segment == nil {
			row = section(t, body, `<tr data-metric="`+attr(r.Metric)+`" data-variant="`+attr(r.Variant)+`">`)
			require.Contains(t, row, web.Prob(r.ChanceToWin))
			require.Contains(t, row, web.Mean(r.Mean))
		} else {
			seg := `data-property="` + attr(r.Segment.Property) + `" data-metric="` + attr(r.Metric) + `"`
			i := strings.Index(body, seg)
			require.GreaterOrEqual(t, i, 0)
			row = section(t, body[i:], `<tr data-segment="`+attr(*r.Segment.Value)+`">`)
		}
		require.Contains(t, row, web.Pct(r.Lift), "%s %v", r.Metric, r.Segment)
		require.Contains(t, row, web.Interval(r.CI[0], r.CI[1]))
		require.Contains(t, row, web.Count(r.N)+" / "+web.Count(r.ControlN))
		require.Contains(t, row, strings.ReplaceAll(r.Decision, "_", " "))
	}
	// The forest plot puts GB left of zero and US and IN right of it.
	require.Regexp(t, `data-segment="GB" data-decision="loss" data-lift="−`, body)
	require.Regexp(t, `data-segment="US" data-decision="win" data-lift="\+`, body)
	for _, s := range []string{"Lift over time", "Segments", "Behaviour shift", "Exposures and sample ratio", "Alerts and actions", "Users and recordings", "enable", "expose_users: true"} {
		if s == "enable" {
			continue
		}
		require.Contains(t, body, s)
	}
	require.Contains(t, body, `id="srm-ok"`)
	require.NotContains(t, body, `id="srm-banner"`)
	// What explains the result: the country, whose effect differs, in its table.
	i := strings.Index(body, `<table class="results compact" id="explains">`)
	require.GreaterOrEqual(t, i, 0, "the explain table is on the page")
	explains := body[i : i+strings.Index(body[i:], "</table>")]
	require.Contains(t, explains, `<tr data-property="$geoip_country_code">`)
	require.Contains(t, body, "What explains the result")

	_, _, srm := get(t, srv, "/flags/srm-banner")
	require.Contains(t, srm, `id="srm-banner"`)
	require.Contains(t, srm, "expected control 50.0% · test 50.0%")

	_, _, fs := get(t, srv, "/flags/fast-search")
	fs = html.UnescapeString(fs)
	require.Contains(t, fs, `class="threshold"`, "the guardrail limit is drawn")
	require.Contains(t, fs, "guardrail +30.0%")
	require.Contains(t, fs, "↩ rollback ok")
}

func testListHTML(t *testing.T, f *fixture, srv *httptest.Server) {
	code, _, raw := get(t, srv, "/")
	require.Equal(t, http.StatusOK, code)
	body := html.UnescapeString(raw)
	var lp web.ListPage
	getJSON(t, srv, "/api/flags", &lp)
	for _, s := range lp.Flags {
		row := section(t, body, `<tr data-key="`+attr(s.Key)+`"`)
		require.Contains(t, row, `href="flags/`+attr(url.PathEscape(s.Key))+`"`)
		require.Contains(t, row, s.StatusLabel)
		require.Contains(t, row, attr(s.Verdict))
		for _, v := range s.Variants {
			require.Contains(t, row, web.Count(v.Users))
		}
	}
	// The status filter works without JavaScript too.
	_, _, only := get(t, srv, "/?status=srm")
	require.Contains(t, only, `data-key="srm-banner"`)
	require.NotContains(t, only, `data-key="new-checkout"`)
	// And the link from the list reaches the page.
	code, _, _ = get(t, srv, "/flags/"+url.PathEscape(hostileFlag))
	require.Equal(t, http.StatusOK, code)
}

func testCSV(t *testing.T, f *fixture, srv *httptest.Server) {
	code, h, body := get(t, srv, "/api/flags/new-checkout/results.csv")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "text/csv; charset=utf-8", h.Get("Content-Type"))
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, web.CSVHeader, recs[0])
	col := map[string]int{}
	for i, c := range recs[0] {
		col[c] = i
	}
	n := 0
	for _, r := range f.last.Rows {
		if r.Flag == "new-checkout" {
			n++
		}
	}
	require.Len(t, recs[1:], n, "one line per row of the latest pass")
	for _, rec := range recs[1:] {
		if rec[col["segment_value"]] == "" && rec[col["segment_property"]] != "" {
			continue
		}
		r := f.row("new-checkout", rec[col["metric"]], rec[col["segment_property"]], rec[col["segment_value"]], rec[col["variant"]])
		require.NotNil(t, r, "%v", rec)
		lift, err := strconv.ParseFloat(rec[col["lift"]], 64)
		require.NoError(t, err)
		require.Equal(t, r.Lift, lift)
		lo, _ := strconv.ParseFloat(rec[col["ci_low"]], 64)
		hi, _ := strconv.ParseFloat(rec[col["ci_high"]], 64)
		require.Equal(t, r.CI, [2]float64{lo, hi})
		require.Equal(t, strconv.FormatInt(r.N, 10), rec[col["n"]])
		require.Equal(t, r.Decision, rec[col["decision"]])
		require.Equal(t, f.last.ID, rec[col["pass_id"]])
	}
}

var scriptTag = regexp.MustCompile(`(?i)<script`)

func testEscaping(t *testing.T, f *fixture, srv *httptest.Server) {
	_, _, list := get(t, srv, "/")
	_, _, page := get(t, srv, "/flags/"+url.PathEscape(hostileFlag))
	require.Contains(t, list, "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;", "the hostile key is listed, as text")
	for name, body := range map[string]string{"list": list, "page": page} {
		require.NotContains(t, body, hostileFlag, name)
		require.NotContains(t, body, hostileValue, name)
		require.NotContains(t, strings.ToLower(body), "<img", name)
	}
	require.Len(t, scriptTag.FindAllString(list, -1), 1, "only the list's own sorting script")
	require.Empty(t, scriptTag.FindAllString(page, -1), "a flag page runs no script")
	require.Contains(t, page, "&lt;script&gt;alert(&#34;seg&#34;)&lt;/script&gt;", "a segment value <script> shows as text")
	require.Contains(t, html.UnescapeString(page), hostileQuote)
	var p web.FlagPage
	getJSON(t, srv, "/api/flags/"+url.PathEscape(hostileFlag), &p)
	require.Equal(t, hostileFlag, p.Key, "the API returns the key as it is")
	var values []string
	for _, s := range p.Segments {
		for _, r := range s.Rows {
			values = append(values, r.Value)
		}
	}
	require.Contains(t, values, hostileValue)
	_, _, csvBody := get(t, srv, "/api/flags/"+url.PathEscape(hostileFlag)+"/results.csv")
	recs, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	require.NoError(t, err)
	var csvValues []string
	for _, rec := range recs[1:] {
		require.Equal(t, hostileFlag, rec[2])
		csvValues = append(csvValues, rec[5])
	}
	require.Contains(t, csvValues, hostileValue, "CSV carries values as they are")
}

func testReport(t *testing.T, f *fixture) {
	dir := t.TempDir()
	require.NoError(t, web.WriteReport(context.Background(), f.options(), dir))
	index, err := os.ReadFile(filepath.Join(dir, "index.html"))
	require.NoError(t, err)
	// Every link of the index resolves to a file of the report.
	hrefs := regexp.MustCompile(`href="([^"#]+)"`).FindAllStringSubmatch(string(index), -1)
	require.NotEmpty(t, hrefs)
	for _, m := range hrefs {
		target, err := url.PathUnescape(html.UnescapeString(m[1]))
		require.NoError(t, err)
		_, err = os.Stat(filepath.Join(dir, target))
		require.NoError(t, err, "link %s", m[1])
	}
	page, err := os.ReadFile(filepath.Join(dir, "flags", "new-checkout.html"))
	require.NoError(t, err)
	require.Contains(t, string(page), `href="../index.html"`)
	require.Contains(t, string(page), `href="../flags/new-checkout.csv"`)
	for _, ext := range []string{"<link", " src=", "@import", "url("} {
		require.NotContains(t, string(page), ext, "self-contained: nothing loaded from elsewhere")
	}
	var p web.FlagPage
	b, err := os.ReadFile(filepath.Join(dir, "flags", "new-checkout.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &p))
	require.Contains(t, html.UnescapeString(string(page)), p.Verdict)
	_, err = os.Stat(filepath.Join(dir, "flags", "%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.html"))
	require.NoError(t, err, "the hostile key is a safe file name")
}

// testExplain: the page's explain section holds the latest pass's property analysis —
// the heterogeneity rows split by whether the effect differs at α, strongest first, and
// the correlated values with their intervals — and the segments' forest plots hold none
// of those rows.
func testExplain(t *testing.T, f *fixture, p web.FlagPage) {
	t.Helper()
	var het, explains, corr int
	for _, r := range f.last.Properties {
		if r.Flag != "new-checkout" {
			continue
		}
		switch r.Decision {
		case analyze.Heterogeneity:
			het++
			in := p.Explain.NoEvidence
			if r.P < f.mons.Defaults.Alpha {
				in = p.Explain.Explains
				explains++
			}
			if len(in) < 10 { // each list keeps the strongest ten
				require.True(t, slices.ContainsFunc(in, func(x web.PropertyView) bool {
					return x.Property == r.Segment.Property && x.Metric == r.Metric && x.Variant == r.Variant && x.P == r.P && x.Discovered == r.Discovered
				}), "%s %s %s p=%g", r.Segment.Property, r.Metric, r.Variant, r.P)
			}
		case analyze.Correlation:
			if strings.HasPrefix(r.Reason, "correlated") {
				corr++
				if len(p.Explain.Correlated) < 10 {
					require.True(t, slices.ContainsFunc(p.Explain.Correlated, func(x web.CorrelationView) bool {
						return x.Property == r.Segment.Property && x.Value == *r.Segment.Value && x.Metric == r.Metric &&
							x.Variant == r.Variant && x.Lift == r.Lift && x.CI == r.CI
					}), r.Reason)
				}
			}
		}
	}
	require.Positive(t, het, "the pass analysed new-checkout's properties")
	require.Len(t, p.Explain.Explains, min(explains, 10))
	require.Len(t, p.Explain.NoEvidence, min(het-explains, 10))
	require.Len(t, p.Explain.Correlated, min(corr, 10))
	require.GreaterOrEqual(t, p.Explain.Tried, 2, "$geoip_country_code and plan are configured")
	// The story's country effect explains the purchase conversion result.
	require.True(t, slices.ContainsFunc(p.Explain.Explains, func(x web.PropertyView) bool {
		return x.Property == "$geoip_country_code" && x.Metric == "purchase conversion"
	}), "%+v", p.Explain)
	for i := 1; i < len(p.Explain.Explains); i++ {
		require.LessOrEqual(t, p.Explain.Explains[i-1].P, p.Explain.Explains[i].P)
	}
	for _, sv := range p.Segments {
		for _, r := range sv.Rows {
			require.NotContains(t, []string{"heterogeneity", "correlation", "behaviour_shift"}, r.Decision, "%s %s", sv.Property, r.Value)
		}
	}
	for _, x := range p.Findings {
		require.NotEqual(t, "heterogeneity", x.Decision)
	}
}
