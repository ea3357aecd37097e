package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// TokenEnv is the environment variable holding the optional access token of the pages.
const TokenEnv = "FLAGWATCH_UI_TOKEN"

// Options configure the pages.
type Options struct {
	// Reader reads the results; when nil, one is made on Conn.
	Reader Reader
	Conn   store.Conn
	// Monitors give thresholds, splits, controls and minimums (config.Load's result).
	Monitors *config.Monitors
	// Token, when set, is required as a bearer token or as the basic-auth password.
	Token string
	// Effect is the effect size "wait" actions are sized for (default DefaultEffect).
	Effect float64
	// Users lists the users behind results when the monitors expose them (#19's
	// slot); nil: the tab says how to turn it on.
	Users UserLister
	// Now is the clock (tests and replays set it).
	Now    func() time.Time
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Reader == nil {
		if o.Conn == nil {
			return o, errors.New("web: Options need a Reader or a Conn")
		}
		o.Reader = NewReader(o.Conn)
	}
	if o.Monitors == nil {
		m, err := config.Parse(nil, "")
		if err != nil {
			return o, err
		}
		o.Monitors = m
	}
	if o.Effect <= 0 {
		o.Effect = DefaultEffect
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

func (o Options) builder() *builder {
	return &builder{mons: o.Monitors, now: o.Now(), effect: o.Effect}
}

//go:embed templates/*.html static/*
var assets embed.FS

// inline assets: the pages carry their style and script, so a page saved from the
// browser or written by WriteReport is one self-contained file.
var (
	styleCSS  = mustAsset("static/style.css")
	listJS    = mustAsset("static/list.js")
	styleHash = hash(styleCSS)
	listHash  = hash(listJS)
)

func mustAsset(name string) string {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}

// csp allows nothing but the page's own inline style and list script (by hash), so an
// escaping bug elsewhere could still not run a script.
var csp = "default-src 'none'; style-src " + styleHash + "; script-src " + listHash +
	"; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"pct":      Pct,
	"interval": func(ci [2]float64) string { return Interval(ci[0], ci[1]) },
	"count":    Count,
	"counti":   func(n int) string { return Count(int64(n)) },
	"mean":     Mean,
	"prob":     Prob,
	"pvalue":   PValue,
	"ptext":    pText,
	"share":    Share,
	"when": func(t any) string {
		switch x := t.(type) {
		case time.Time:
			return When(x)
		case *time.Time:
			if x == nil {
				return "—"
			}
			return When(*x)
		}
		return ""
	},
	"day":      func(t time.Time) string { return t.Format("Mon Jan 2") },
	"age":      func(s int64) string { return Duration(time.Duration(s) * time.Second) },
	"symbol":   func(s Status) string { return s.Symbol() },
	"sign":     decisionSign,
	"word":     func(d string) string { return strings.ReplaceAll(d, "_", " ") },
	"css":      func() template.CSS { return template.CSS(styleCSS) },
	"js":       func() template.JS { return template.JS(listJS) },
	"statuses": func() []Status { return Statuses },
	"effect":   effectText,
	"pct0":     func(alpha float64) string { return effectText(1 - alpha) },
	"hasGuardrails": func(ms []MetricView) bool {
		return slices.ContainsFunc(ms, func(m MetricView) bool { return m.Guardrail != nil })
	},
	"liftclass": func(d string) string {
		switch d {
		case "win":
			return "good"
		case "loss", "guardrail_breach":
			return "bad"
		}
		return ""
	},
}).ParseFS(assets, "templates/*.html"))

// decisionSign is a decision's symbol, shown next to its word.
func decisionSign(d string) string {
	switch d {
	case "win":
		return "▲"
	case "loss", "guardrail_breach":
		return "▼"
	case "srm", "segment_divergence", "behaviour_shift":
		return "!"
	case "stale":
		return "■"
	case "insufficient_data":
		return "○"
	}
	return "●"
}

// links are the URLs a page points to, relative so they work wherever the handler is
// mounted and in a static report opened from disk.
type links struct {
	Home   string
	static bool
	prefix string // from the current page to the site root
}

func (l links) Flag(key string) string {
	if l.static {
		return l.prefix + "flags/" + url.PathEscape(fileName(key)) + ".html"
	}
	return l.prefix + "flags/" + url.PathEscape(key)
}

func (l links) JSON(key string) string {
	if l.static {
		return l.prefix + "flags/" + url.PathEscape(fileName(key)) + ".json"
	}
	return l.prefix + "api/flags/" + url.PathEscape(key)
}

func (l links) CSV(key string) string {
	if l.static {
		return l.prefix + "flags/" + url.PathEscape(fileName(key)) + ".csv"
	}
	return l.prefix + "api/flags/" + url.PathEscape(key) + "/results.csv"
}

// Users and UsersCSV are a flag's users API (pipeline/users), served beside the pages.
func (l links) Users(key string) string {
	return l.prefix + "api/flags/" + url.PathEscape(key) + "/users"
}
func (l links) UsersCSV(key string) string { return l.Users(key) + ".csv?limit=1000" }

func (l links) ListJSON() string {
	if l.static {
		return l.prefix + "flags.json"
	}
	return l.prefix + "api/flags"
}

// fileName is a flag's file name in a static report: its key with every character
// that is not safe in a file name percent-escaped ("/" included).
func fileName(key string) string {
	var b strings.Builder
	for _, c := range []byte(key) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '.' && b.Len() > 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// ListPage is the flags list.
type ListPage struct {
	GeneratedAt time.Time     `json:"generated_at"`
	Flags       []FlagSummary `json:"flags"`
}

type listData struct {
	ListPage
	Links  links
	Filter string
	Static bool
}

type flagData struct {
	*FlagPage
	Links  links
	Static bool
	Now    time.Time
}

// List builds the flags list: every flag with results or exposures, and every declared
// flag, most urgent first.
func List(ctx context.Context, o Options) (*ListPage, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	states, err := o.Reader.Flags(ctx)
	if err != nil {
		return nil, err
	}
	b := o.builder()
	lp := &ListPage{GeneratedAt: b.now.UTC(), Flags: []FlagSummary{}}
	seen := map[string]bool{}
	for _, s := range states {
		seen[s.Key] = true
		rows := append(slices.Clone(s.Latest), s.Segments...)
		lp.Flags = append(lp.Flags, b.summary(s.Key, s.Activity, rows, s.Rollback, nil))
	}
	for _, f := range o.Monitors.Flags {
		if !seen[f.Key] {
			lp.Flags = append(lp.Flags, b.summary(f.Key, nil, nil, nil, nil))
		}
	}
	sort.SliceStable(lp.Flags, func(i, j int) bool {
		ri, rj := lp.Flags[i].Status.Rank(), lp.Flags[j].Status.Rank()
		if ri != rj {
			return ri < rj
		}
		return lp.Flags[i].Key < lp.Flags[j].Key
	})
	return lp, nil
}

// ErrUnknownFlag is returned for a flag with no results, no exposures and no monitor.
var ErrUnknownFlag = errors.New("unknown flag")

// Flag builds one flag's page, charts included.
func Flag(ctx context.Context, o Options, key string) (*FlagPage, error) {
	p, err := flagPage(ctx, o, key)
	if err != nil {
		return nil, err
	}
	drawCharts(p)
	return p, nil
}

// flagPage builds one flag's page without its charts (what the JSON carries).
func flagPage(ctx context.Context, o Options, key string) (*FlagPage, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	d, err := o.Reader.Flag(ctx, key)
	if err != nil {
		return nil, err
	}
	declared := slices.ContainsFunc(o.Monitors.Flags, func(f config.Flag) bool { return f.Key == key })
	if len(d.Latest) == 0 && d.Activity == nil && len(d.Exposures) == 0 && len(d.Alerts) == 0 && !declared {
		return nil, fmt.Errorf("%w %q", ErrUnknownFlag, key)
	}
	p := o.builder().page(d)
	if o.Users != nil {
		us, err := o.Users.Users(ctx, key)
		switch {
		case errors.Is(err, ErrUsersOff):
		case err != nil:
			return nil, fmt.Errorf("list users of %s: %w", key, err)
		default:
			p.Users = UsersView{Enabled: true, Users: us, Metric: o.builder().primaryMetric(o.Monitors.ForFlag(key, nil))}
		}
	}
	return p, nil
}

// Handler serves the flags list (/), a page per flag (/flags/{key}), the same numbers
// as JSON (/api/flags, /api/flags/{key}) and a flag's latest results as CSV
// (/api/flags/{key}/results.csv). It only reads. With Options.Token set, every request
// needs it (bearer token, or basic auth with the token as password).
func Handler(o Options) http.Handler {
	o, err := o.withDefaults()
	mux := http.NewServeMux()
	if err != nil {
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		})
		return mux
	}
	s := &server{o: o}
	mux.HandleFunc("GET /{$}", s.list)
	mux.HandleFunc("GET /flags/{key}", s.flag)
	mux.HandleFunc("GET /api/flags", s.listJSON)
	mux.HandleFunc("GET /api/flags/{key}", s.flagJSON)
	mux.HandleFunc("GET /api/flags/{key}/results.csv", s.csv)
	return Secure(o.Token, mux)
}

type server struct{ o Options }

// Secure puts next behind the pages' access control: with token set, every request
// needs it (bearer token, or basic auth with the token as password); and every response
// carries the pages' security headers. Other handlers mounted beside the pages (the
// users API) use it so that one token guards everything.
func Secure(token string, next http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		// Pages may list users: never kept by a shared cache.
		h.Set("Cache-Control", "no-store")
		if len(want) > 0 && !authorized(r, want) {
			h.Set("WWW-Authenticate", `Basic realm="flagwatch", charset="UTF-8"`)
			http.Error(w, "flagwatch: this page needs the token in FLAGWATCH_UI_TOKEN (bearer token, or basic-auth password)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorized compares in constant time; the user name of basic auth is ignored.
func authorized(r *http.Request, want []byte) bool {
	var got string
	if auth := r.Header.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		got = strings.TrimSpace(auth[7:])
	} else if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	} else {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), want) == 1
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrUnknownFlag) {
		http.Error(w, "flagwatch: no results, exposures or monitor for this flag", http.StatusNotFound)
		return
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		return
	}
	s.o.Logger.Error("page failed", "path", r.URL.Path, "err", err)
	http.Error(w, "flagwatch: could not read the results (see the analyzer's log)", http.StatusBadGateway)
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	lp, err := List(r.Context(), s.o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := listData{ListPage: *lp, Links: links{}, Filter: r.URL.Query().Get("status")}
	if d.Filter != "" {
		var kept []FlagSummary
		for _, f := range d.Flags {
			if string(f.Status) == d.Filter {
				kept = append(kept, f)
			}
		}
		d.Flags = kept
	}
	s.html(w, "list.html", d)
}

func (s *server) flag(w http.ResponseWriter, r *http.Request) {
	p, err := Flag(r.Context(), s.o, r.PathValue("key"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.html(w, "flag.html", flagData{FlagPage: p, Links: links{Home: "../", prefix: "../"}, Now: s.o.Now()})
}

func (s *server) listJSON(w http.ResponseWriter, r *http.Request) {
	lp, err := List(r.Context(), s.o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, lp)
}

func (s *server) flagJSON(w http.ResponseWriter, r *http.Request) {
	p, err := flagPage(r.Context(), s.o, r.PathValue("key"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, p)
}

func (s *server) csv(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	d, err := s.o.Reader.Flag(r.Context(), key)
	if err == nil && len(d.Latest) == 0 {
		_, err = flagPage(r.Context(), s.o, key) // unknown flag → 404, known → empty file
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+fileName(key)+`-results.csv"`)
	if err := WriteCSV(w, d.Latest); err != nil {
		s.o.Logger.Warn("write csv", "flag", key, "err", err)
	}
}

func (s *server) html(w http.ResponseWriter, name string, data any) {
	var b strings.Builder
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		s.o.Logger.Error("render page", "template", name, "err", err)
		http.Error(w, "flagwatch: could not render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, b.String())
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "flagwatch: could not encode the results", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// CSVHeader is the first line of a results CSV: analysis_results' columns.
var CSVHeader = []string{"pass_time", "pass_id", "flag", "metric", "segment_property", "segment_value", "variant",
	"n", "control_n", "mean", "control_mean", "lift", "se", "ci_low", "ci_high", "p", "chance_to_win", "cuped",
	"decision", "reason", "discovered"}

// WriteCSV writes results as CSV, numbers in full precision (a spreadsheet gets what
// the analyzer computed). A cell that a spreadsheet would run as a formula is prefixed
// with an apostrophe (segment values come from events).
func WriteCSV(w io.Writer, rows []Result) error {
	// One line per result row of the pass, as `analyzer once` prints them.
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	b := func(x bool) string {
		if x {
			return "1"
		}
		return "0"
	}
	for _, x := range rows {
		if x.SegmentProperty == ExposureDay || isPropertyAnalysis(x) {
			continue // the behaviour-shift chart's series and the property analysis, not results of the pass
		}
		rec := []string{x.PassTime.UTC().Format(time.RFC3339), x.PassID, CSVCell(x.Flag), CSVCell(x.Metric), CSVCell(x.SegmentProperty),
			CSVCell(x.SegmentValue), CSVCell(x.Variant), strconv.FormatInt(x.N, 10), strconv.FormatInt(x.ControlN, 10),
			f(x.Mean), f(x.ControlMean), f(x.Lift), f(x.SE), f(x.CILow), f(x.CIHigh), f(x.P), f(x.ChanceToWin),
			b(x.CUPED), x.Decision, CSVCell(x.Reason), b(x.Discovered)}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// CSVCell defuses spreadsheet formulas in text from events and configuration, for every
// CSV flagwatch serves.
func CSVCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
