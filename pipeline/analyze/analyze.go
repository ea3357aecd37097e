// Package analyze is flagwatch's analyzer: on a schedule it turns the cohort data in
// ClickHouse into decisions per flag, metric, segment and variant, appends them to the
// results history, emits each flag's findings as one incident alert on flag_alerts, and
// calls a monitor's rollback action on a guardrail breach.
//
// The decision that shapes it: one pass runs one aggregation query for all monitors.
// ClickHouse joins each user's first exposure (aggregate states kept by a materialized
// view) with that user's events in a single scan, computes per-user measures for the
// distinct measures of all monitors, and returns per (flag, variant, segment) sufficient
// statistics; Go then runs the pure statistics (pipeline/stats via pipeline/evaluate, the
// same code path as `analyzer evaluate`). So a pass costs one scan of the events and one
// read of the assignment state whatever the number of flags × metrics × segments; the
// flags themselves, their age and staleness come from flag_activity, a few rows per flag.
//
// And the scheduled passes do not even do that: they are incremental (incremental.go).
// The per-(flag, user) rows of that query are kept, with per-cell sums beside them, and a
// pass recomputes only the users with new events or exposures since the last one, so its
// cost follows the new data. A pass from scratch (--recompute-all, and the daily rebuild)
// gives the same cells.
//
// Segments need not be configured: property discovery (discover.go) also analyses every
// flag by the properties of its users' first exposures that qualify, with one false
// discovery rate correction across everything a pass tries, and the segment values
// travel through the pass as set ids, spelled out once per set (its cost against the
// configured segments alone: docs/statistics.md, "Cost").
//
// The code is split along that line: what a pass reads and writes is two small
// interfaces (passReader, passWriter; chstore.go implements them with SQL), and
// everything between — cells to rows (decide.go), rows to one incident per flag with a
// recommendation that never contradicts itself (incident.go) — is pure, and tested
// table by table without a database.
package analyze

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Segment is a row's segment: nil for the whole population; Value nil for a finding
// about a whole segment property.
type Segment = alert.Segment

// Row is one line of `analyzer once` (SPEC §6).
type Row struct {
	Flag        string     `json:"flag"`
	Metric      string     `json:"metric"`
	Segment     *Segment   `json:"segment"`
	Variant     string     `json:"variant"`
	N           int64      `json:"n"`
	Mean        float64    `json:"mean"`
	Lift        float64    `json:"lift"`
	CI          [2]float64 `json:"ci"`
	P           float64    `json:"p"`
	ChanceToWin float64    `json:"chance_to_win"`
	Decision    string     `json:"decision"`
	Reason      string     `json:"reason"`
	// Extra context for alerts and history.
	ControlN    int64   `json:"control_n,omitempty"`
	ControlMean float64 `json:"control_mean,omitempty"`
	SE          float64 `json:"se,omitempty"`
	CUPED       bool    `json:"cuped,omitempty"`
	Correction  string  `json:"correction,omitempty"`
	// Discovered is set on rows of a segment property found by property discovery
	// rather than configured (SPEC §10).
	Discovered bool `json:"discovered,omitempty"`
	// PropertiesTried is how many segment properties (configured and discovered) the
	// flag was analysed by in this pass, on its totals and property findings.
	PropertiesTried int `json:"properties_tried,omitempty"`
}

// Pass is the outcome of one analysis pass.
type Pass struct {
	ID   string
	Time time.Time
	Rows []Row
	// Cohorts are the lifts of exposure-day cohorts (segment $exposure_day), per flag,
	// metric and variant: the series the behaviour-shift detector watches, kept in the
	// results history for the flag pages.
	Cohorts []Row
	// Properties are the property-analysis rows (decisions Heterogeneity and
	// Correlation): for each flag, which properties explain its result and which go
	// with its metrics. In the results history, not printed by `analyzer once`.
	Properties []Row
	// Alerts are the incidents this pass emitted: one per flag with something new (or a
	// critical finding due for a repeat), its findings in priority order.
	Alerts []alert.Alert
}

// Emitter publishes alerts; the Kafka producer in production.
type Emitter interface {
	Emit(ctx context.Context, alerts []alert.Alert) error
}

// Analyzer runs passes.
type Analyzer struct {
	// Conn is the ClickHouse the pass reads and writes (tests of the decisions replace
	// it with the reader and writer below).
	Conn     store.Conn
	Monitors *config.Monitors
	Emitter  Emitter
	Logger   *slog.Logger
	// Now is the clock (tests and replays set it).
	Now func() time.Time
	// RepeatCritical re-emits an unresolved critical finding after this long.
	RepeatCritical time.Duration
	// Lookup reads rollback secrets (os.LookupEnv by default).
	Lookup  config.Lookup
	Replica string
	// RecomputeAll makes every pass recompute every (flag, user) instead of the users
	// with new data (see incremental.go).
	RecomputeAll bool
	// RebuildEvery rebuilds the incremental state from every (flag, user) once it is
	// this old (0: only when the plan changes).
	RebuildEvery time.Duration
	// PublicURL, when set, is where the flag pages are served; alerts link to them.
	PublicURL string
	// Sessions, when set, picks sessions to watch behind a finding (SPEC §12;
	// users.Watcher), or nil: each incident's new findings are offered in priority
	// order until one gets some.
	Sessions func(ctx context.Context, flag string, f alert.Finding) *alert.Watch
	// Claims arbitrate between analyzer replicas (leases); the claims Join table on
	// Conn when nil (a cluster needs ZooKeeper: claim.For).
	Claims claim.Store

	// Observers see every pass once it has emitted its incidents (progressive rollout
	// decides its stages there). An observer's error fails the pass after the others ran.
	Observers []PassObserver

	// reader and writer default to chStore on Conn.
	reader passReader
	writer passWriter
	// rollbacks runs a monitor's rollback (a.rollback by default).
	rollbacks func(ctx context.Context, cfg *config.Rollback, al *alert.Alert) *alert.Rollback
}

// PassObserver acts on a finished pass: its rows (every flag's decisions) and the
// incidents it emitted.
type PassObserver interface {
	ObservePass(ctx context.Context, pass *Pass) error
}

// passReader is what a pass reads: the flags seen in exposures, the cohort cells of its
// plan, and what earlier passes emitted.
type passReader interface {
	activity(ctx context.Context) (map[string]*flagInfo, error)
	cells(ctx context.Context, p *plan, ratioPairs [][2]int, passID string) (map[cellKey]*cell, error)
	history(ctx context.Context) (*history, error)
}

// passWriter is what a pass writes once it has decided: its rows (the results history)
// and the findings it emitted (the alert log, read back as the next pass's history).
type passWriter interface {
	recordResults(ctx context.Context, pass *Pass) error
	recordAlerts(ctx context.Context, pass *Pass, emitted []emittedFinding) error
}

func (a *Analyzer) backend() (passReader, passWriter) {
	rd, wr := a.reader, a.writer
	if rd == nil || wr == nil {
		cs := a.chStore()
		if rd == nil {
			rd = cs
		}
		if wr == nil {
			wr = cs
		}
	}
	return rd, wr
}

func (a *Analyzer) chStore() *chStore {
	return &chStore{conn: a.Conn, claims: a.claims(), replica: a.Replica, log: a.log(), recomputeAll: a.RecomputeAll, rebuildEvery: a.RebuildEvery}
}

func (a *Analyzer) claims() claim.Store {
	if a.Claims != nil {
		return a.Claims
	}
	return claim.Table{Conn: a.Conn}
}

func (a *Analyzer) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Analyzer) log() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// monitor is one flag's resolved configuration for a pass.
type monitor struct {
	flag     config.Flag
	variants []string // compared: control first
	// unexpected are variants seen in exposures that are not compared: not in the
	// configured split, or (without one) too few users to be a real arm — a typo in an
	// SDK call, a test user. They are reported, never allowed to hide the real arms.
	unexpected []string
	metrics    []metricPlan
	// keys are the flag's cells in the pass, so that per-flag work does not scan every
	// flag's cells.
	keys []cellKey
}

type metricPlan struct {
	cfg      config.Metric
	num, den int // measure indexes
	ratio    int // index into ratio pairs, -1
}

// Run executes one pass: read, decide, record the history, emit the incidents (rolling
// back where a monitor says so), record what was emitted.
func (a *Analyzer) Run(ctx context.Context) (*Pass, error) {
	rd, wr := a.backend()
	start := a.now()
	pass := &Pass{ID: fmt.Sprintf("%s-%d", a.Replica, start.UnixNano()), Time: start}
	infos, err := rd.activity(ctx)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(infos))
	for k := range infos {
		keys = append(keys, k)
	}
	p, monitors, ratioPairs := a.plan(keys)
	cells, err := rd.cells(ctx, p, ratioPairs, pass.ID)
	if err != nil {
		return nil, err
	}
	h, err := rd.history(ctx)
	if err != nil {
		return nil, err
	}
	pass.Rows, pass.Cohorts, pass.Properties = a.decide(monitors, infos, cells, h.latched, start)
	if err := wr.recordResults(ctx, pass); err != nil {
		return nil, err
	}
	if err := a.alert(ctx, pass, monitors, h); err != nil {
		return pass, err
	}
	var errs []error
	for _, o := range a.Observers {
		if err := o.ObservePass(ctx, pass); err != nil {
			errs = append(errs, err)
		}
	}
	return pass, errors.Join(errs...)
}

// decide turns a pass's cells into rows (pure: the cells, the monitors, the latches
// and the time decide everything). It also returns the exposure-day cohort rows and the
// property-analysis rows, kept in the history for the flag pages but not printed by
// `analyzer once`. Discovered properties are decided last, all flags' together: their
// tests share one false-discovery-rate correction across the pass (discover.go).
func (a *Analyzer) decide(monitors []*monitor, infos map[string]*flagInfo, cells map[cellKey]*cell, latched map[string]string, now time.Time) (rows, cohorts, props []Row) {
	addVariants(infos, cells)
	keys := map[string][]cellKey{}
	for k := range cells {
		keys[k.flag] = append(keys[k.flag], k)
	}
	for _, m := range monitors {
		m.keys = keys[m.flag.Key]
		fi := infos[m.flag.Key]
		var vs []string
		if fi != nil {
			vs = fi.variants
		}
		m.flag = a.Monitors.ForFlag(m.flag.Key, vs)
		m.variants, m.unexpected = pickVariants(m.flag, vs, cells, a.Monitors.Defaults.MinUsersPerVariant)
	}
	var results []*flagResult
	var fams []*family
	var corrs []pendingCorrelation
	for _, m := range monitors {
		r := a.evaluateFlag(m, infos[m.flag.Key], cells, latched, now)
		results = append(results, r)
		fams = append(fams, r.families...)
		corrs = append(corrs, r.correlations...)
	}
	alpha := a.Monitors.Defaults.Alpha
	found, het := resolveFamilies(fams, alpha, latched)
	byFlag := map[string][]Row{}
	for _, r := range found {
		byFlag[r.Flag] = append(byFlag[r.Flag], r)
	}
	for _, r := range results {
		rows = append(rows, r.rows...)
		rows = append(rows, byFlag[r.flag]...)
		cohorts = append(cohorts, r.cohorts...)
		props = append(props, r.props...)
	}
	props = append(props, het...)
	props = append(props, resolveCorrelations(corrs, alpha)...)
	return rows, cohorts, props
}

// plan builds a pass's query plan and monitors for the exposed flags keys and the
// declared ones. Metrics and segments do not depend on a flag's variants; the control of
// a flag that names none does, and is picked once the query has found them.
func (a *Analyzer) plan(keys []string) (*plan, []*monitor, [][2]int) {
	keys = slices.Clone(keys)
	for _, f := range a.Monitors.Flags {
		if !slices.Contains(keys, f.Key) {
			keys = append(keys, f.Key) // declared but never exposed: reported as no data
		}
	}
	sort.Strings(keys)
	d := a.Monitors.Defaults
	p := newPlan(d.PrePeriod)
	p.addSegment(ExposureDay)
	p.discovery = discovery{caps: map[string]int{}, values: d.AutoSegmentsValues, coverage: d.AutoSegmentsCoverage, minUsers: d.MinUsersPerVariant}
	var ratioPairs [][2]int
	var monitors []*monitor
	for _, key := range keys {
		f := a.Monitors.ForFlag(key, nil)
		m := &monitor{flag: f}
		for _, s := range f.Segments {
			p.addSegment(s)
		}
		if f.AutoSegments {
			p.discovery.caps[key] = f.AutoSegmentsMax
		}
		for _, mc := range f.Metrics {
			num, den := p.metricMeasures(mc, d.Window)
			mp := metricPlan{cfg: mc, num: num, den: den, ratio: -1}
			if den >= 0 {
				mp.ratio = len(ratioPairs)
				ratioPairs = append(ratioPairs, [2]int{num, den})
			}
			m.metrics = append(m.metrics, mp)
		}
		monitors = append(monitors, m)
	}
	return p, monitors, ratioPairs
}

// orderVariants puts control first and the rest in name order.
func orderVariants(control string, vs []string) []string {
	out := []string{}
	for _, v := range vs {
		if v == control {
			out = append(out, v)
		}
	}
	for _, v := range vs {
		if v != control {
			out = append(out, v)
		}
	}
	return out
}
