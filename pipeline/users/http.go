package users

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

// Patterns are the routes Handler serves; mount it on each, behind the pages' token.
var Patterns = []string{"GET /api/flags/{key}/users", "GET /api/flags/{key}/users.csv"}

// Handler serves a flag's users as JSON (/api/flags/{key}/users) and CSV
// (/api/flags/{key}/users.csv) with the query parameters of ParseQuery: 400 with the
// reason for a bad parameter, 404 saying how to turn listing on for a flag that does
// not expose its users. It has no access control of its own.
func Handler(l *Lister, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	s := &server{l: l, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc(Patterns[0], s.json)
	mux.HandleFunc(Patterns[1], s.csv)
	return mux
}

type server struct {
	l   *Lister
	log *slog.Logger
}

// Params are the query parameters ParseQuery accepts.
var Params = []string{"variant", "segment", "metric", "converted", "sort", "limit", "cursor"}

// ParseQuery reads a request's parameters: variant, segment (property:value, repeated
// for several), metric (a name of the flag's metrics), converted (true or false), sort
// (first_exposure, -first_exposure, value, -value), limit (1–1000) and cursor. An
// unknown or repeated parameter and a malformed value are a *BadQueryError naming it;
// names are checked against the monitors later, by List.
func ParseQuery(flag string, v url.Values) (Query, error) {
	q := Query{Flag: flag}
	names := slices.Sorted(maps.Keys(v))
	for _, name := range names {
		vals := v[name]
		if !slices.Contains(Params, name) {
			hint := ""
			if best, ok := config.Closest(name, Params); ok {
				hint = " (did you mean " + strconv.Quote(best) + "?)"
			}
			return q, badf("unknown parameter %q%s: want %s", name, hint, strings.Join(Params, ", "))
		}
		if len(vals) > 1 && name != "segment" {
			return q, badf("parameter %q given %d times", name, len(vals))
		}
	}
	q.Variant, q.Metric, q.Sort, q.Cursor = v.Get("variant"), v.Get("metric"), Sort(v.Get("sort")), v.Get("cursor")
	for _, s := range v["segment"] {
		prop, val, ok := strings.Cut(s, ":")
		if !ok || prop == "" {
			return q, badf("segment %q: want property:value, e.g. $geoip_country_code:GB", s)
		}
		q.Segments = append(q.Segments, Segment{Property: prop, Value: val})
	}
	if c := v.Get("converted"); c != "" {
		b, err := strconv.ParseBool(c)
		if err != nil {
			return q, badf("converted %q: want true or false", c)
		}
		q.Converted = &b
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, badf("limit %q: want a number from 1 to %d", s, MaxLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// page answers a request, or writes its error and returns nil.
func (s *server) page(w http.ResponseWriter, r *http.Request, asJSON bool) *Page {
	q, err := ParseQuery(r.PathValue("key"), r.URL.Query())
	var p *Page
	if err == nil {
		p, err = s.l.List(r.Context(), q)
	}
	if err == nil {
		return p
	}
	status, msg := http.StatusBadGateway, "could not read the users (see the analyzer's log)"
	switch {
	case IsBadQuery(err):
		status, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrOff):
		status, msg = http.StatusNotFound, err.Error()
	case errors.Is(r.Context().Err(), context.Canceled):
		return nil
	default:
		s.log.Error("list users failed", "flag", q.Flag, "err", err)
	}
	if asJSON {
		writeJSON(w, status, map[string]string{"error": "flagwatch: " + msg})
	} else {
		http.Error(w, "flagwatch: "+msg, status)
	}
	return nil
}

// next is the URL of the page after p: the request's, with p's cursor.
func next(r *http.Request, p *Page) string {
	if p.NextCursor == "" {
		return ""
	}
	v := r.URL.Query()
	v.Set("cursor", p.NextCursor)
	return (&url.URL{Path: r.URL.Path, RawQuery: v.Encode()}).String()
}

func (s *server) json(w http.ResponseWriter, r *http.Request) {
	p := s.page(w, r, true)
	if p == nil {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		*Page
		Next string `json:"next,omitempty"`
	}{p, next(r, p)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "flagwatch: could not encode the users", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (s *server) csv(w http.ResponseWriter, r *http.Request) {
	p := s.page(w, r, false)
	if p == nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+fileName(p.Flag)+`-users.csv"`)
	if n := next(r, p); n != "" {
		h.Set("Link", "<"+n+`>; rel="next"`)
	}
	if err := WriteCSV(w, p); err != nil {
		s.log.Warn("write users csv", "flag", p.Flag, "err", err)
	}
}

// CSVHeader is the start of a users CSV's header; the page's segment properties follow
// first_exposure, and a ratio metric adds denominator after value.
var CSVHeader = []string{"distinct_id", "variant", "first_exposure"}

// WriteCSV writes a page as CSV: one row per user, sessions and recording links
// space-separated. A cell a spreadsheet would run as a formula is prefixed with an
// apostrophe (ids and segment values come from events).
func WriteCSV(w io.Writer, p *Page) error { return writeCSV(w, p, true) }

// writeCSV writes p's rows, after the header line when header is set (the first of
// several pages).
func writeCSV(w io.Writer, p *Page, header bool) error {
	props := p.SegmentProperties
	ratio := p.MetricKind == string(config.Ratio)
	head := slices.Clone(CSVHeader)
	head = append(head, props...)
	head = append(head, "metric", "converted", "value")
	if ratio {
		head = append(head, "denominator")
	}
	head = append(head, "sessions", "recordings")
	cw := csv.NewWriter(w)
	if header {
		if err := cw.Write(head); err != nil {
			return err
		}
	}
	for _, u := range p.Users {
		rec := []string{web.CSVCell(u.DistinctID), web.CSVCell(u.Variant), u.FirstExposure.UTC().Format(time.RFC3339Nano)}
		for _, prop := range props {
			rec = append(rec, web.CSVCell(u.Segments[prop]))
		}
		rec = append(rec, web.CSVCell(p.Metric), strconv.FormatBool(u.Converted), strconv.FormatFloat(u.Value, 'g', -1, 64))
		if ratio {
			d := ""
			if u.Denominator != nil {
				d = strconv.FormatFloat(*u.Denominator, 'g', -1, 64)
			}
			rec = append(rec, d)
		}
		var ids, links []string
		for _, s := range u.Sessions {
			ids = append(ids, s.ID)
			if s.Recording != "" {
				links = append(links, s.Recording)
			}
		}
		rec = append(rec, web.CSVCell(strings.Join(ids, " ")), web.CSVCell(strings.Join(links, " ")))
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// fileName keeps a download's name to safe characters.
func fileName(key string) string {
	var b strings.Builder
	for _, c := range []byte(key) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
