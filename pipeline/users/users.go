// Package users lists the users behind a flag's results (SPEC §12): for a flag, a
// variant, segment values and a metric, who was exposed, when first, whether they
// reached the metric in its window, and their $session_id values with links to the
// recordings. `analyzer users`, GET /api/flags/{key}/users (JSON and CSV), the flag
// page's users tab and the "sessions to watch" reply in Slack all read through it.
//
// The decision that shapes it: a request costs what it shows, not what the flag has.
// The users are picked from the flag's exposures — one key range, since exposures is
// ordered by flag first — grouped per user with the assignment state's rules (first
// exposure, its variant, $multiple when the variants differ, the segment properties of
// the first exposure), in a stable order with a keyset cursor; only then are events
// read, for those users alone (PREWHERE distinct_id IN the page's users). With a
// converted filter a request examines at most Lister.MaxExamined users and may return a
// short page with a cursor to go on. Sorting by the metric's value needs every user of
// the cell, so it reads the metric's own events (one key range of events) for the
// cell's users, paged by offset — never all events. Attribution is the analyzer's: an
// event counts iff first exposure ≤ its time < first exposure + the metric's window.
//
// Listing is off unless the monitors say expose_users: true (ErrOff); every value from
// a request is checked against the monitors (flag, metric, segment property, variant)
// and enters SQL through store.Quote.
package users

import (
	"errors"
	"fmt"
	"time"
)

// Sort orders a page.
type Sort string

// Orders: by first exposure (keyset-paged) or by the metric's value (offset-paged); a
// leading "-" is descending. Ties go by first exposure, then distinct_id.
const (
	NewestFirst Sort = "-first_exposure"
	OldestFirst Sort = "first_exposure"
	MostFirst   Sort = "-value"
	LeastFirst  Sort = "value"
)

// Sorts lists the orders a query may ask for, the default first.
var Sorts = []Sort{NewestFirst, OldestFirst, MostFirst, LeastFirst}

func (s Sort) byValue() bool { return s == MostFirst || s == LeastFirst }
func (s Sort) desc() bool    { return s == NewestFirst || s == MostFirst }

// Limits of a page.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
	// MaxSessions bounds the sessions listed per user (the earliest in the window);
	// MoreSessions counts the rest.
	MaxSessions = 20
)

// Segment is one segment filter: the first exposure's Property has Value.
type Segment struct {
	Property string `json:"property"`
	Value    string `json:"value"`
}

// Query selects the users of one cell. The zero value of every field but Flag means
// "any" (Variant: every variant except $multiple), the flag's primary metric, newest
// first, DefaultLimit users.
type Query struct {
	Flag     string
	Variant  string
	Segments []Segment
	Metric   string
	// Converted, when set, keeps the users who did (true) or did not (false) reach the
	// metric in its window.
	Converted *bool
	Sort      Sort
	Limit     int
	// Cursor is a page's NextCursor: the page after it.
	Cursor string
}

// Page is one page of users.
type Page struct {
	Flag       string    `json:"flag"`
	Variant    string    `json:"variant,omitempty"`
	Segments   []Segment `json:"segments,omitempty"`
	Metric     string    `json:"metric"`
	MetricKind string    `json:"metric_kind"`
	// Window is the metric's attribution window (converted, value and sessions count
	// what happened from first exposure until first exposure + Window).
	Window    string `json:"window"`
	Converted *bool  `json:"converted,omitempty"`
	Sort      Sort   `json:"sort"`
	// SegmentProperties are the properties every user's Segments may hold: the flag's
	// segments and the ones filtered on.
	SegmentProperties []string `json:"segment_properties"`
	Users             []User   `json:"users"`
	// Examined is how many users the request looked at to fill the page (first-exposure
	// orders only): more than len(Users) when a converted filter left some out.
	Examined int `json:"examined,omitempty"`
	// NextCursor continues after this page; empty when there is nothing after it. A page
	// can be shorter than the limit and still have one: the request examined its budget.
	NextCursor string `json:"next_cursor,omitempty"`
}

// User is one user of a cell.
type User struct {
	DistinctID    string    `json:"distinct_id"`
	Variant       string    `json:"variant"`
	FirstExposure time.Time `json:"first_exposure"`
	// Segments are the flag's segment properties (and any filtered on) of the first
	// exposure; only those, so a URL or an email in another property is not shown.
	Segments map[string]string `json:"segments"`
	// Converted: the user did the metric's event (a ratio's numerator event) in the window.
	Converted bool `json:"converted"`
	// Value is the metric per user: 0 or 1 for a conversion, the count, the sum, or a
	// ratio's numerator (Denominator is its denominator).
	Value       float64  `json:"value"`
	Denominator *float64 `json:"denominator,omitempty"`
	// Sessions are the user's sessions with events in the window, earliest first, at
	// most MaxSessions; MoreSessions counts the others.
	Sessions     []Session `json:"sessions"`
	MoreSessions int       `json:"more_sessions,omitempty"`
}

// Session is one $session_id of a user within the window.
type Session struct {
	ID    string    `json:"id"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Events are the user's events in the session (within the window); MetricEvents
	// those of the metric's event (a ratio's numerator event).
	Events       int `json:"events"`
	MetricEvents int `json:"metric_events"`
	// Recording is the recordings_url template filled in, when there is one.
	Recording string `json:"recording,omitempty"`
}

// ErrOff is returned for a flag whose users are not exposed.
var ErrOff = errors.New("listing users is off")

// offError says how to turn listing on.
func offError(flag string) error {
	return fmt.Errorf("%w for flag %q: set expose_users: true in the monitors file (under defaults, or on the flag) to list the users behind its results", ErrOff, flag)
}

// BadQueryError is a query that can never be answered as asked (an unknown metric,
// a malformed segment filter, a foreign cursor); the HTTP API answers 400 with it.
type BadQueryError struct{ Msg string }

func (e *BadQueryError) Error() string { return e.Msg }

func badf(format string, a ...any) error { return &BadQueryError{Msg: fmt.Sprintf(format, a...)} }

// IsBadQuery reports whether err is the query's fault.
func IsBadQuery(err error) bool {
	var b *BadQueryError
	return errors.As(err, &b)
}
