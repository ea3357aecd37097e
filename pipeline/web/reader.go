package web

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Reader is what the pages need from the results history. The ClickHouse implementation
// (NewReader) is the production one; tests may stand in their own.
type Reader interface {
	// Flags returns every flag that has results or exposures, with the whole-flag rows
	// (segment_value = '') of its latest pass.
	Flags(ctx context.Context) ([]FlagState, error)
	// Flag returns everything one flag's page shows; a flag with no results and no
	// exposures gives a FlagData with nothing in it, not an error.
	Flag(ctx context.Context, key string) (*FlagData, error)
}

// Result is one row of analysis_results.
type Result struct {
	PassTime        time.Time `json:"pass_time"`
	PassID          string    `json:"pass_id"`
	Flag            string    `json:"flag"`
	Metric          string    `json:"metric"`
	SegmentProperty string    `json:"segment_property"`
	SegmentValue    string    `json:"segment_value"`
	Variant         string    `json:"variant"`
	N               int64     `json:"n"`
	ControlN        int64     `json:"control_n"`
	Mean            float64   `json:"mean"`
	ControlMean     float64   `json:"control_mean"`
	Lift            float64   `json:"lift"`
	SE              float64   `json:"se"`
	CILow           float64   `json:"ci_low"`
	CIHigh          float64   `json:"ci_high"`
	P               float64   `json:"p"`
	ChanceToWin     float64   `json:"chance_to_win"`
	CUPED           bool      `json:"cuped"`
	Decision        string    `json:"decision"`
	Reason          string    `json:"reason"`
	// Discovered is set on rows of a segment property that property discovery found
	// (false while the table has no discovered column).
	Discovered bool `json:"discovered"`
}

// Activity is a flag's first and last exposure.
type Activity struct {
	First time.Time `json:"first_exposure"`
	Last  time.Time `json:"last_exposure"`
}

// FlagState is a flag as the flags list needs it.
type FlagState struct {
	Key      string
	Activity *Activity
	// Latest are the whole-flag rows (totals and findings about a whole flag or segment
	// property) of the flag's latest pass.
	Latest []Result
	// Rollback is the flag's last successful rollback, if any.
	Rollback *Rollback
	// Segments are the per-value rows of the latest pass of a flag whose segments
	// diverge (where to ship and where not); empty for the others.
	Segments []Result
}

// FlagData is what one flag's page shows.
type FlagData struct {
	Key      string
	Activity *Activity
	// Latest are every row of the flag's latest pass.
	Latest []Result
	// History is the whole-flag metric rows of past passes, downsampled to at most
	// historyPoints per (metric, variant): the last pass of each time bucket.
	History []Result
	// Alerts are what the analyzer emitted (alert_log), oldest first.
	Alerts []AlertEntry
	// Notifications are what the notifier posted (notification_log), oldest first.
	Notifications []Notification
	// Exposures are the users first exposed per UTC day and variant ($multiple for
	// users who saw several).
	Exposures []DayCount
}

// AlertEntry is one row of alert_log.
type AlertEntry struct {
	DedupKey string    `json:"dedup_key"`
	Subject  string    `json:"subject"`
	Decision string    `json:"decision"`
	Severity string    `json:"severity"`
	At       time.Time `json:"at"`
	PassID   string    `json:"pass_id"`
	Rollback *Rollback `json:"rollback,omitempty"`
}

// Rollback is the outcome of a rollback call as the analyzer logged it.
type Rollback struct {
	Action string    `json:"action"`
	Target string    `json:"target"`
	Status string    `json:"status"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// Notification is one row of notification_log: a Slack post, update or reply.
type Notification struct {
	Kind     string    `json:"kind"`
	DedupKey string    `json:"dedup_key"`
	Decision string    `json:"decision"`
	Severity string    `json:"severity"`
	Status   string    `json:"status"`
	Channel  string    `json:"channel"`
	Error    string    `json:"error,omitempty"`
	Message  string    `json:"message"`
	At       time.Time `json:"at"`
}

// DayCount is the number of users first exposed on one UTC day to one variant.
type DayCount struct {
	Day     time.Time `json:"day"`
	Variant string    `json:"variant"`
	Users   int64     `json:"users"`
}

// historyPoints bounds the points of a lift-over-time series: a month of 15-minute
// passes is 2,880 rows per series, more than a chart 720 pixels wide can show.
const historyPoints = 240

// maxTimeline bounds the alerts and Slack posts a page lists (the newest are kept).
const maxTimeline = 500

// chReader reads the results history from ClickHouse. Every query is bounded by the
// tables' sort keys: analysis_results is ordered by (flag, metric, segment_property,
// segment_value, variant, pass_time), so a flag's rows are one range of the key and the
// rows with segment_value = ” (totals and findings) are granules ClickHouse can pick
// out without reading the per-segment ones.
type chReader struct {
	conn store.Conn

	mu       sync.Mutex
	optional map[string]map[string]bool // per table, the optional columns it has
}

// NewReader returns the Reader over the analyzer's tables in conn's database.
func NewReader(conn store.Conn) Reader { return &chReader{conn: conn} }

// optionalColumns are analysis_results columns newer schemas add; a query selects the
// ones the table has and a constant for the others.
var optionalColumns = []string{"discovered"}

func (r *chReader) columns(ctx context.Context, table string) (map[string]bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if have, ok := r.optional[table]; ok {
		return have, nil
	}
	rows, err := r.conn.Query(ctx, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = "+
		store.Quote(table)+" AND name IN "+inList(optionalColumns))
	if err != nil {
		return nil, fmt.Errorf("read %s columns: %w", table, err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("scan %s columns: %w", table, err)
		}
		have[name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s columns: %w", table, err)
	}
	if r.optional == nil {
		r.optional = map[string]map[string]bool{}
	}
	r.optional[table] = have
	return have, nil
}

func inList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = store.Quote(s)
	}
	return "(" + strings.Join(q, ", ") + ")"
}

// resultColumns is the select list of a Result from table, in scanResult's order.
func (r *chReader) resultColumns(ctx context.Context, table string) (string, error) {
	have, err := r.columns(ctx, table)
	if err != nil {
		return "", err
	}
	discovered := "toUInt8(0)"
	if have["discovered"] {
		discovered = "toUInt8(discovered)"
	}
	return `pass_time, pass_id, toString(flag), metric, segment_property, segment_value, variant,
	toUInt64(n), toUInt64(control_n), mean, control_mean, lift, se, ci_low, ci_high, p, chance_to_win,
	toUInt8(cuped), toString(decision), reason, ` + discovered, nil
}

func scanResult(rows store.Rows) (Result, error) {
	var x Result
	var n, cn uint64
	var cuped, disc uint8
	if err := rows.Scan(&x.PassTime, &x.PassID, &x.Flag, &x.Metric, &x.SegmentProperty, &x.SegmentValue, &x.Variant,
		&n, &cn, &x.Mean, &x.ControlMean, &x.Lift, &x.SE, &x.CILow, &x.CIHigh, &x.P, &x.ChanceToWin,
		&cuped, &x.Decision, &x.Reason, &disc); err != nil {
		return x, err
	}
	x.PassTime = x.PassTime.UTC()
	x.N, x.ControlN, x.CUPED, x.Discovered = int64(n), int64(cn), cuped == 1, disc == 1
	return x, nil
}

// results reads Results from table ("analysis_results", or "analysis_latest FINAL").
func (r *chReader) results(ctx context.Context, what, table, where, tail string) ([]Result, error) {
	name, _, _ := strings.Cut(table, " ")
	cols, err := r.resultColumns(ctx, name)
	if err != nil {
		return nil, err
	}
	rows, err := r.conn.Query(ctx, "SELECT "+cols+"\nFROM "+table+"\nWHERE "+where+"\n"+tail)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer rows.Close()
	var out []Result
	for rows.Next() {
		x, err := scanResult(rows)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", what, err)
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return out, nil
}

// Flags reads the latest pass of every flag from analysis_latest (one row per key, so
// a few thousand rows however long the history), the flags' activity and their
// rollbacks: three small queries whatever the number of flags and passes.
func (r *chReader) Flags(ctx context.Context) ([]FlagState, error) {
	// Segment values only where they decided something: where to ship, and where not.
	latest, err := r.results(ctx, "latest results", "analysis_latest FINAL", "segment_value = '' OR decision IN ('win', 'loss')",
		"ORDER BY flag, metric, segment_property, segment_value, variant")
	if err != nil {
		return nil, err
	}
	acts, err := r.activity(ctx, "")
	if err != nil {
		return nil, err
	}
	rbs, err := r.rollbacks(ctx)
	if err != nil {
		return nil, err
	}
	byKey := map[string]*FlagState{}
	var order []string
	get := func(k string) *FlagState {
		if s, ok := byKey[k]; ok {
			return s
		}
		s := &FlagState{Key: k}
		byKey[k] = s
		order = append(order, k)
		return s
	}
	for _, x := range newestPass(latest) {
		s := get(x.Flag)
		if x.SegmentValue == "" {
			s.Latest = append(s.Latest, x)
		} else {
			s.Segments = append(s.Segments, x)
		}
	}
	for k, a := range acts {
		get(k).Activity = a
	}
	for k, rb := range rbs {
		if s, ok := byKey[k]; ok {
			s.Rollback = rb
		}
	}
	sort.Strings(order)
	out := make([]FlagState, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out, nil
}

// newestPass keeps, per flag, the rows of its newest pass: analysis_latest also holds
// keys that later passes stopped reporting (a segment value gone, a metric removed).
func newestPass(rows []Result) []Result {
	newest := map[string]Result{}
	for _, x := range rows {
		n, ok := newest[x.Flag]
		if !ok || x.PassTime.After(n.PassTime) || (x.PassTime.Equal(n.PassTime) && x.PassID > n.PassID) {
			newest[x.Flag] = x
		}
	}
	out := rows[:0]
	for _, x := range rows {
		if x.PassID == newest[x.Flag].PassID {
			out = append(out, x)
		}
	}
	return out
}

// activity reads flag_activity for one flag, or every flag when key is "".
func (r *chReader) activity(ctx context.Context, key string) (map[string]*Activity, error) {
	where := ""
	if key != "" {
		where = " WHERE flag = " + store.Quote(key)
	}
	rows, err := r.conn.Query(ctx, "SELECT toString(flag), toInt64(minMerge(first_state)), toInt64(maxMerge(last_state)) FROM flag_activity"+where+" GROUP BY flag")
	if err != nil {
		return nil, fmt.Errorf("read flag activity: %w", err)
	}
	defer rows.Close()
	out := map[string]*Activity{}
	for rows.Next() {
		var k string
		var first, last int64
		if err := rows.Scan(&k, &first, &last); err != nil {
			return nil, fmt.Errorf("scan flag activity: %w", err)
		}
		out[k] = &Activity{First: time.UnixMilli(first).UTC(), Last: time.UnixMilli(last).UTC()}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read flag activity: %w", err)
	}
	return out, nil
}

// rollbacks reads the last successful rollback of every flag from alert_log (the
// rollback column holds the outcome as JSON; alert_log is small).
func (r *chReader) rollbacks(ctx context.Context) (map[string]*Rollback, error) {
	rows, err := r.conn.Query(ctx, `SELECT subject, rollback, emitted_ms FROM alert_log
WHERE rollback LIKE '%"status":"ok"%' ORDER BY emitted_ms`)
	if err != nil {
		return nil, fmt.Errorf("read rollbacks: %w", err)
	}
	defer rows.Close()
	out := map[string]*Rollback{}
	for rows.Next() {
		var subject, rb string
		var at int64
		if err := rows.Scan(&subject, &rb, &at); err != nil {
			return nil, fmt.Errorf("scan rollbacks: %w", err)
		}
		if x := parseRollback(rb, at); x != nil {
			// The subject starts with the flag key; a key containing "|" is cut short
			// here, which only loses its rolled-back badge on the list.
			flag, _, _ := strings.Cut(subject, "|")
			out[flag] = x
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rollbacks: %w", err)
	}
	return out, nil
}

// Flag reads one flag's page: its latest pass (analysis_latest), the downsampled
// history of its totals (one range of analysis_results' sort key), its alerts, Slack
// posts and exposures per day.
func (r *chReader) Flag(ctx context.Context, key string) (*FlagData, error) {
	d := &FlagData{Key: key}
	acts, err := r.activity(ctx, key)
	if err != nil {
		return nil, err
	}
	d.Activity = acts[key]
	// The rest at once: a page waits for the slowest read, not for the sum.
	err = parallel(func() error {
		latest, err := r.results(ctx, "latest pass", "analysis_latest FINAL", "flag = "+store.Quote(key),
			"ORDER BY metric, segment_property, segment_value, variant")
		d.Latest = newestPass(latest)
		return err
	}, func() (err error) {
		d.History, err = r.history(ctx, key, d.Activity)
		return err
	}, func() (err error) {
		d.Alerts, err = r.alerts(ctx, key)
		return err
	}, func() (err error) {
		d.Notifications, err = r.notifications(ctx, key)
		return err
	}, func() (err error) {
		d.Exposures, err = r.exposures(ctx, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// parallel runs fns at once and returns the first error.
func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// history reads the totals of the flag's past passes, about historyPoints per
// (metric, variant): the last pass of each time bucket, whose always-valid interval
// holds for every earlier look too. The buckets divide the flag's exposure span (a
// month when it has none), which the passes follow. PREWHERE reads the other columns
// only for the granules holding totals, a few of each metric's range of the sort key.
func (r *chReader) history(ctx context.Context, key string, act *Activity) ([]Result, error) {
	span := 30 * 24 * time.Hour
	if act != nil && act.Last.After(act.First) {
		span = act.Last.Sub(act.First)
	}
	bucket := max(int64(span.Seconds())/historyPoints+1, 1)
	rows, err := r.conn.Query(ctx, `SELECT pass_time, metric, variant, toUInt64(n), toUInt64(control_n), lift, ci_low, ci_high
FROM analysis_results
PREWHERE flag = `+store.Quote(key)+` AND segment_property = ''
WHERE metric != '' AND variant != ''
ORDER BY metric, variant, pass_time DESC
LIMIT 1 BY metric, variant, intDiv(toUInt32(pass_time), `+fmt.Sprint(bucket)+`)`)
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", key, err)
	}
	defer rows.Close()
	var out []Result
	for rows.Next() {
		x := Result{Flag: key}
		var n, cn uint64
		if err := rows.Scan(&x.PassTime, &x.Metric, &x.Variant, &n, &cn, &x.Lift, &x.CILow, &x.CIHigh); err != nil {
			return nil, fmt.Errorf("scan history of %s: %w", key, err)
		}
		x.PassTime, x.N, x.ControlN = x.PassTime.UTC(), int64(n), int64(cn)
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history of %s: %w", key, err)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Metric != b.Metric {
			return a.Metric < b.Metric
		}
		if a.Variant != b.Variant {
			return a.Variant < b.Variant
		}
		return a.PassTime.Before(b.PassTime)
	})
	return dedupPasses(out), nil
}

// dedupPasses keeps one row per (metric, variant, pass_time): two passes within the same
// second (DateTime has no finer precision) would otherwise both be plotted.
func dedupPasses(rs []Result) []Result {
	out := rs[:0]
	for i, x := range rs {
		if i > 0 {
			p := rs[i-1]
			if p.Metric == x.Metric && p.Variant == x.Variant && p.PassTime.Equal(x.PassTime) {
				out[len(out)-1] = x
				continue
			}
		}
		out = append(out, x)
	}
	return out
}

// likePrefix renders a LIKE pattern matching strings that start with s.
func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return store.Quote(r.Replace(s) + "%")
}

// alerts reads the flag's rows of alert_log: its dedup keys start with "flag|", a range
// of the table's sort key.
func (r *chReader) alerts(ctx context.Context, key string) ([]AlertEntry, error) {
	rows, err := r.conn.Query(ctx, `SELECT dedup_key, subject, toString(decision), toString(severity), emitted_ms, pass_id, rollback
FROM alert_log WHERE dedup_key LIKE `+likePrefix(key+"|")+` ORDER BY emitted_ms DESC, dedup_key LIMIT `+fmt.Sprint(maxTimeline))
	if err != nil {
		return nil, fmt.Errorf("read alerts of %s: %w", key, err)
	}
	defer rows.Close()
	var out []AlertEntry
	for rows.Next() {
		var a AlertEntry
		var at int64
		var rb string
		if err := rows.Scan(&a.DedupKey, &a.Subject, &a.Decision, &a.Severity, &at, &a.PassID, &rb); err != nil {
			return nil, fmt.Errorf("scan alerts of %s: %w", key, err)
		}
		a.At = time.UnixMilli(at).UTC()
		a.Rollback = parseRollback(rb, at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read alerts of %s: %w", key, err)
	}
	reverse(out)
	return out, nil
}

func (r *chReader) notifications(ctx context.Context, key string) ([]Notification, error) {
	rows, err := r.conn.Query(ctx, `SELECT toString(kind), dedup_key, toString(decision), toString(severity), toString(status), channel, error, message, posted_ms
FROM notification_log WHERE flag = `+store.Quote(key)+` ORDER BY posted_ms DESC, op LIMIT `+fmt.Sprint(maxTimeline))
	if err != nil {
		return nil, fmt.Errorf("read slack posts of %s: %w", key, err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		var n Notification
		var at int64
		if err := rows.Scan(&n.Kind, &n.DedupKey, &n.Decision, &n.Severity, &n.Status, &n.Channel, &n.Error, &n.Message, &at); err != nil {
			return nil, fmt.Errorf("scan slack posts of %s: %w", key, err)
		}
		n.At = time.UnixMilli(at).UTC()
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read slack posts of %s: %w", key, err)
	}
	reverse(out)
	return out, nil
}

// exposures counts the flag's users by the UTC day of their first exposure and the
// variant of that exposure; a user who saw two or more variants is $multiple. It reads
// the raw exposures, whose sort key starts with the flag, so the cost follows this
// flag's exposures; the assignment state the pass reads holds the same answer (it is
// an aggregate of these rows) but is ordered by user, so one flag's users are spread
// over the whole table.
func (r *chReader) exposures(ctx context.Context, key string) ([]DayCount, error) {
	rows, err := r.conn.Query(ctx, `SELECT d, v, toUInt64(count())
FROM (
	SELECT intDiv(min(ts_ms), 86400000) AS d, if(uniqExact(variant) > 1, `+store.Quote(Multiple)+`, argMin(variant, ts_ms)) AS v
	FROM exposures WHERE flag = `+store.Quote(key)+`
	GROUP BY distinct_id
) AS a
GROUP BY d, v ORDER BY d, v`)
	if err != nil {
		return nil, fmt.Errorf("read exposures of %s: %w", key, err)
	}
	defer rows.Close()
	var out []DayCount
	for rows.Next() {
		var d int64
		var c DayCount
		var n uint64
		if err := rows.Scan(&d, &c.Variant, &n); err != nil {
			return nil, fmt.Errorf("scan exposures of %s: %w", key, err)
		}
		c.Day, c.Users = time.Unix(d*86400, 0).UTC(), int64(n)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read exposures of %s: %w", key, err)
	}
	return out, nil
}

// parseRollback reads the rollback outcome alert_log holds as JSON ("" when none).
func parseRollback(s string, emittedMs int64) *Rollback {
	if s == "" {
		return nil
	}
	var rb Rollback
	if err := json.Unmarshal([]byte(s), &rb); err != nil {
		return &Rollback{Status: "unknown", Detail: "unreadable rollback record: " + err.Error(), At: time.UnixMilli(emittedMs).UTC()}
	}
	// Placed at the pass that called it: the analyzer's clock, like every other time
	// on the page.
	rb.At = time.UnixMilli(emittedMs).UTC()
	return &rb
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}
