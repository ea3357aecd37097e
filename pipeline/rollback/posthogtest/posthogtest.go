// Package posthogtest is a stand-in for PostHog's feature-flag REST API, for tests of the
// code that changes flags: GET and PATCH of /api/projects/{project_id}/feature_flags/{id}/
// with a personal API key, behaving as PostHog's FeatureFlagSerializer does — a PATCH
// with filters replaces the whole filters object, every save increments version and
// sets last_modified_by and updated_at, a PATCH carrying a stale version and the
// original_flag is refused with 409 when someone else changed the same fields, and
// multivariate weights must sum to 100.
//
// The decision that shapes it: it is also a referee. A PATCH from the code under test
// fails the test when it drops, reorders or alters a release condition it does not own
// (everything but the rollout percentage of an owned condition, and conditions it adds),
// or alters multivariate, payloads or any other member of filters; and when two PATCHes
// set the same stage (a PATCH that changes nothing the plan owns, or returns the owned
// conditions to a state they had before, other than "off"). A person's edit goes through
// Edit and is not refereed.
package posthogtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// User is who saves a flag, as PostHog's UserBasicSerializer shows them.
type User struct {
	ID        int    `json:"id"`
	Email     string `json:"email"`
	FirstName string `json:"first_name"`
}

// Patch is one PATCH the server took.
type Patch struct {
	Flag   int64
	Body   map[string]any
	Status int
	// Owned is the state of the owned conditions after it (see Server.Owned).
	Owned string
}

// Server is the stand-in. Create it with New.
type Server struct {
	*httptest.Server
	t       testing.TB
	project string
	key     string
	// APIUser is the owner of the personal API key: PostHog records them as the one who
	// saved the flag when the key is used.
	APIUser User
	// Owned reports whether a release condition belongs to the plan under test: its
	// rollout percentage may change. Default: the "everyone" condition (no properties,
	// no variant override).
	Owned func(group map[string]any) bool
	// Now is the server's clock for updated_at (default time.Now).
	Now func() time.Time

	mu      sync.Mutex
	flags   map[int64]map[string]any
	patches []Patch
	seen    map[int64][]string // owned states each flag's PATCHes reached
	fail    []int              // statuses for the next requests
	gets    int
}

var flagPath = regexp.MustCompile(`^/api/projects/([^/]+)/feature_flags/(\d+)/$`)

// New starts the stand-in for project with personal API key; it is closed at the end
// of the test.
func New(t testing.TB, project, key string) *Server {
	s := &Server{t: t, project: project, key: key, flags: map[int64]map[string]any{}, seen: map[int64][]string{},
		APIUser: User{ID: 1, Email: "flagwatch-bot@acme.com", FirstName: "flagwatch"}, Now: time.Now}
	s.Owned = Everyone
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Everyone reports whether group is the "everyone" condition: no property filter and
// no variant override.
func Everyone(group map[string]any) bool {
	ps, _ := group["properties"].([]any)
	v, _ := group["variant"].(string)
	return len(ps) == 0 && v == ""
}

// Add stores a flag (a JSON object as PostHog returns it; id and key required) and
// returns its id. Missing bookkeeping fields get PostHog's defaults.
func (s *Server) Add(flagJSON string) int64 {
	var f map[string]any
	if err := json.Unmarshal([]byte(flagJSON), &f); err != nil {
		s.t.Fatalf("posthogtest: bad flag JSON: %v", err)
	}
	id := int64(f["id"].(float64))
	if _, ok := f["version"]; !ok {
		f["version"] = float64(1)
	}
	if _, ok := f["active"]; !ok {
		f["active"] = true
	}
	if _, ok := f["deleted"]; !ok {
		f["deleted"] = false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flags[id] = f
	s.seen[id] = []string{s.ownedState(f)}
	return id
}

// Flag returns a copy of flag id as it is now.
func (s *Server) Flag(id int64) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return clone(s.flags[id])
}

// Patches returns the PATCHes taken so far.
func (s *Server) Patches() []Patch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Patch(nil), s.patches...)
}

// Gets counts the GETs answered.
func (s *Server) Gets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets
}

// Edit changes flag id as a person in PostHog's UI does: fn edits the flag, then the
// version is incremented and by recorded as the last to modify it.
func (s *Server) Edit(id int64, by User, fn func(flag map[string]any)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flags[id]
	fn(f)
	s.saved(f, by)
	s.seen[id] = append(s.seen[id], s.ownedState(f))
}

// FailNext answers the next len(statuses) requests with those statuses.
func (s *Server) FailNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, statuses...)
}

// Groups returns the release conditions of flag f.
func Groups(f map[string]any) []map[string]any {
	filters, _ := f["filters"].(map[string]any)
	gs, _ := filters["groups"].([]any)
	out := make([]map[string]any, len(gs))
	for i, g := range gs {
		out[i], _ = g.(map[string]any)
	}
	return out
}

// Rollout returns the rollout percentage of the owned "everyone" condition of flag f,
// or -1 when it has none.
func Rollout(f map[string]any) float64 {
	for _, g := range Groups(f) {
		if Everyone(g) {
			if p, ok := g["rollout_percentage"].(float64); ok {
				return p
			}
			return 100
		}
	}
	return -1
}

func (s *Server) saved(f map[string]any, by User) {
	f["version"] = f["version"].(float64) + 1
	f["updated_at"] = s.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	f["last_modified_by"] = map[string]any{"id": float64(by.ID), "email": by.Email, "first_name": by.FirstName}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fail) > 0 {
		code := s.fail[0]
		s.fail = s.fail[1:]
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, code, map[string]any{"type": "server_error", "detail": http.StatusText(code)})
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.key {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"type": "authentication_error", "code": "authentication_failed",
			"detail": "Personal API key found in request Authorization header is invalid."})
		return
	}
	m := flagPath.FindStringSubmatch(r.URL.Path)
	if m == nil || m[1] != s.project {
		writeJSON(w, http.StatusNotFound, map[string]any{"type": "invalid_request", "code": "not_found", "detail": "Not found."})
		return
	}
	id, _ := strconv.ParseInt(m[2], 10, 64)
	f, ok := s.flags[id]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"type": "invalid_request", "code": "not_found", "detail": "Not found."})
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.gets++
		writeJSON(w, http.StatusOK, f)
	case http.MethodPatch:
		s.patch(w, r, id, f)
	default:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": "Method not allowed."})
	}
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, id int64, f map[string]any) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"type": "validation_error", "detail": "JSON parse error - " + err.Error()})
		return
	}
	record := func(status int) {
		s.patches = append(s.patches, Patch{Flag: id, Body: body, Status: status, Owned: s.ownedState(f)})
	}
	// The conflict check of FeatureFlagSerializer.update: a stale version with an
	// original_flag whose fields someone else changed in between.
	if v, ok := body["version"].(float64); ok && v != f["version"].(float64) {
		if orig, ok := body["original_flag"].(map[string]any); ok {
			for field, val := range body {
				if field == "version" || field == "original_flag" {
					continue
				}
				o, had := orig[field]
				if had && !reflect.DeepEqual(val, o) && !reflect.DeepEqual(o, f[field]) && !reflect.DeepEqual(val, f[field]) {
					record(http.StatusConflict)
					by := "another user"
					if u, ok := f["last_modified_by"].(map[string]any); ok {
						by, _ = u["email"].(string)
					}
					writeJSON(w, http.StatusConflict, map[string]any{"type": "conflict",
						"detail": "The feature flag was updated by " + by + " since you started editing it. Please refresh and try again."})
					return
				}
			}
		}
	}
	next := clone(f)
	for field, val := range body {
		switch field {
		case "version", "original_flag":
		case "filters":
			filters, _ := val.(map[string]any)
			if _, ok := filters["groups"]; !ok {
				continue // PostHog keeps the current filters when a PATCH's have no groups
			}
			if msg := validFilters(filters); msg != "" {
				record(http.StatusBadRequest)
				writeJSON(w, http.StatusBadRequest, map[string]any{"type": "validation_error", "code": "invalid_input", "attr": "filters", "detail": msg})
				return
			}
			next["filters"] = clone(filters) // the recorded PATCH body stays as it was sent
		default:
			next[field] = val
		}
	}
	s.referee(id, f, next)
	s.saved(next, s.APIUser)
	s.flags[id] = next
	record(http.StatusOK)
	writeJSON(w, http.StatusOK, next)
}

// validFilters is PostHog's validation of filters that matters here.
func validFilters(filters map[string]any) string {
	variants := map[string]bool{}
	if mv, ok := filters["multivariate"].(map[string]any); ok {
		sum := 0.0
		vs, _ := mv["variants"].([]any)
		for _, v := range vs {
			vm, _ := v.(map[string]any)
			p, _ := vm["rollout_percentage"].(float64)
			sum += p
			k, _ := vm["key"].(string)
			variants[k] = true
		}
		if len(vs) > 0 && sum != 100 {
			return "Invalid variant definitions: Variant rollout percentages must sum to 100."
		}
	}
	gs, ok := filters["groups"].([]any)
	if !ok {
		return "Filters are not valid (groups must be a list)"
	}
	for _, g := range gs {
		gm, ok := g.(map[string]any)
		if !ok {
			return "Filters are not valid (a group must be an object)"
		}
		if v, ok := gm["variant"].(string); ok && v != "" && !variants[v] {
			return "Filters are not valid (variant override does not exist)"
		}
		if p, ok := gm["rollout_percentage"].(float64); ok && (p < 0 || p > 100) {
			return "Filters are not valid (rollout_percentage must be between 0 and 100)"
		}
	}
	return ""
}

// referee fails the test when a PATCH changes what the plan does not own, or sets a
// stage twice.
func (s *Server) referee(id int64, before, after map[string]any) {
	bf, _ := before["filters"].(map[string]any)
	af, _ := after["filters"].(map[string]any)
	for k, v := range bf {
		if k == "groups" {
			continue
		}
		if !reflect.DeepEqual(v, af[k]) {
			s.t.Errorf("posthogtest: PATCH of flag %d changed filters.%s:\nbefore %s\nafter  %s", id, k, js(v), js(af[k]))
		}
	}
	for k, v := range af {
		if _, had := bf[k]; !had && k != "groups" {
			s.t.Errorf("posthogtest: PATCH of flag %d added filters.%s = %s", id, k, js(v))
		}
	}
	for _, k := range []string{"key", "name", "active", "deleted", "ensure_experience_continuity"} {
		if !reflect.DeepEqual(before[k], after[k]) {
			s.t.Errorf("posthogtest: PATCH of flag %d changed %s: %s → %s", id, k, js(before[k]), js(after[k]))
		}
	}
	bg, ag := Groups(before), Groups(after)
	if len(ag) < len(bg) {
		s.t.Errorf("posthogtest: PATCH of flag %d dropped release conditions: %d before, %d after:\nbefore %s\nafter  %s",
			id, len(bg), len(ag), js(bf["groups"]), js(af["groups"]))
		return
	}
	for i, b := range bg {
		a := ag[i]
		owned := s.Owned(b)
		for k, v := range b {
			if k == "rollout_percentage" && owned {
				continue
			}
			if !reflect.DeepEqual(v, a[k]) {
				s.t.Errorf("posthogtest: PATCH of flag %d changed groups[%d].%s (owned by the plan: %v): %s → %s",
					id, i, k, owned, js(v), js(a[k]))
			}
		}
		for k, v := range a {
			if _, had := b[k]; !had && !(k == "rollout_percentage" && owned) {
				s.t.Errorf("posthogtest: PATCH of flag %d added groups[%d].%s = %s", id, i, k, js(v))
			}
		}
	}
	for i, a := range ag[len(bg):] {
		if !s.Owned(a) {
			s.t.Errorf("posthogtest: PATCH of flag %d added a release condition the plan does not own: groups[%d] = %s", id, len(bg)+i, js(a))
		}
	}
	state := s.ownedState(after)
	prev := s.seen[id]
	switch {
	case state == prev[len(prev)-1]:
		s.t.Errorf("posthogtest: PATCH of flag %d leaves the owned conditions as they were (%s): the same stage set twice", id, state)
	case s.exposure(after) > s.exposure(before) && contains(prev, state):
		// Going back (a fallback) may return to an earlier stage; going forward to a
		// stage already reached is a change made twice.
		s.t.Errorf("posthogtest: PATCH of flag %d raises the owned conditions to %s a second time: the same stage changed twice", id, state)
	}
	s.seen[id] = append(prev, state)
}

// exposure is the sum of the owned conditions' percentages: it rises as a plan advances.
func (s *Server) exposure(f map[string]any) float64 {
	sum := 0.0
	for _, g := range Groups(f) {
		if !s.Owned(g) {
			continue
		}
		p, ok := g["rollout_percentage"].(float64)
		if !ok {
			p = 100
		}
		sum += p
	}
	return sum
}

// ownedState describes the owned conditions of f: "off" when they give the flag to
// nobody, else each one's properties and rollout percentage.
func (s *Server) ownedState(f map[string]any) string {
	var parts []string
	on := false
	for _, g := range Groups(f) {
		if !s.Owned(g) {
			continue
		}
		p, ok := g["rollout_percentage"].(float64)
		if !ok {
			p = 100
		}
		on = on || p > 0
		parts = append(parts, js(g["properties"])+"@"+strconv.FormatFloat(p, 'f', -1, 64))
	}
	if !on {
		return "off"
	}
	return fmt.Sprint(parts)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func clone(f map[string]any) map[string]any {
	b, _ := json.Marshal(f)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
