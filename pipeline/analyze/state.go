package analyze

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// history is what earlier passes emitted, read once per pass from alert_log.
type history struct {
	// latched is the last emitted win/loss/guardrail decision of every subject.
	latched map[string]string
	// emitted is, per dedup key, when it was last emitted and at which severity.
	emitted map[string]logged
	// rolledBack names the flags whose rollback already succeeded.
	rolledBack map[string]bool
}

type logged struct {
	emittedMs int64
	severity  string
}

var latching = map[string]bool{alert.Win: true, alert.Loss: true, alert.GuardrailBreach: true}

func (a *Analyzer) history(ctx context.Context) (*history, error) {
	rows, err := a.Conn.Query(ctx, `SELECT dedup_key, subject, argMax(decision, emitted_ms), argMax(severity, emitted_ms),
		max(emitted_ms), max(rollback LIKE '%"status":"ok"%') FROM alert_log GROUP BY dedup_key, subject`)
	if err != nil {
		return nil, fmt.Errorf("read alert log: %w", err)
	}
	defer rows.Close()
	h := &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{}}
	latchedAt := map[string]int64{}
	for rows.Next() {
		var key, subj, decision, severity string
		var at int64
		var ok uint8
		if err := rows.Scan(&key, &subj, &decision, &severity, &at, &ok); err != nil {
			return nil, fmt.Errorf("scan alert log: %w", err)
		}
		if prev, seen := h.emitted[key]; !seen || at > prev.emittedMs {
			h.emitted[key] = logged{emittedMs: at, severity: severity}
		}
		if latching[decision] && at >= latchedAt[subj] {
			h.latched[subj], latchedAt[subj] = decision, at
		}
		if ok == 1 {
			flag, _, _ := strings.Cut(subj, "|")
			h.rolledBack[flag] = true
		}
	}
	return h, rows.Err()
}

// record appends the pass's rows to the history.
func (a *Analyzer) record(ctx context.Context, pass *Pass) error {
	if len(pass.Rows) == 0 {
		return nil
	}
	b, err := a.Conn.PrepareBatch(ctx, `INSERT INTO analysis_results (pass_time, pass_id, flag, metric,
		segment_property, segment_value, variant, n, control_n, mean, control_mean, lift, se, ci_low, ci_high,
		p, chance_to_win, cuped, decision, reason)`)
	if err != nil {
		return fmt.Errorf("prepare results insert: %w", err)
	}
	for _, r := range pass.Rows {
		var sp, sv string
		if r.Segment != nil {
			sp, sv = r.Segment.Property, r.Segment.ValueString()
		}
		var cuped uint8
		if r.CUPED {
			cuped = 1
		}
		if err := b.Append(pass.Time.UTC(), pass.ID, r.Flag, r.Metric, sp, sv, r.Variant, uint64(max(r.N, 0)),
			uint64(max(r.ControlN, 0)), finite(r.Mean), finite(r.ControlMean), finite(r.Lift), finite(r.SE),
			finite(r.CI[0]), finite(r.CI[1]), finite(r.P), finite(r.ChanceToWin), cuped, r.Decision, r.Reason); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append result row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert results batch: %w", err)
	}
	return nil
}

func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

// alertable decisions become alerts; the others stay in the history only.
var alertable = map[string]bool{alert.Win: true, alert.Loss: true, alert.GuardrailBreach: true,
	alert.SRM: true, alert.SegmentDivergence: true, alert.Stale: true, alert.BehaviourShift: true}

// alert emits the pass's new findings (and repeats unresolved critical ones), running
// the monitor's rollback on a first guardrail breach or loss, and logs what was emitted
// after the broker acknowledged it.
func (a *Analyzer) alert(ctx context.Context, pass *Pass, monitors []*monitor, h *history) error {
	seen, rolledBack := h.emitted, h.rolledBack
	byFlag := map[string]*monitor{}
	for _, m := range monitors {
		byFlag[m.flag.Key] = m
	}
	repeat := a.RepeatCritical
	if repeat <= 0 {
		repeat = 4 * time.Hour
	}
	// A breach of the whole population is one alert carrying its segments; the
	// segment rows stay in the history without alerts of their own.
	breached := map[string]bool{}
	for _, r := range pass.Rows {
		if r.Decision == alert.GuardrailBreach && r.Segment == nil {
			breached[subject(r.Flag, r.Metric, nil, r.Variant)] = true
		}
	}
	var out []alert.Alert
	var subjects []string
	for _, r := range pass.Rows {
		if !alertable[r.Decision] || (r.Segment != nil && breached[subject(r.Flag, r.Metric, nil, r.Variant)]) {
			continue
		}
		m := byFlag[r.Flag]
		al := a.build(r, m, pass.Time)
		prev, ok := seen[al.DedupKey]
		if ok && !(prev.severity == alert.Critical && pass.Time.UnixMilli()-prev.emittedMs >= repeat.Milliseconds()) {
			continue
		}
		// Only for alerts that go out: it scans every row of the pass.
		if r.Segment == nil && r.Metric != "" {
			al.Numbers.Segments = segmentsOf(pass.Rows, r)
		}
		if !ok && m != nil && m.flag.Rollback != nil && al.Severity == alert.Critical && !rolledBack[r.Flag] {
			// One rollback per flag: the first critical finding turns the flag off.
			al.Rollback = a.rollback(ctx, m.flag.Rollback, &al)
			rolledBack[r.Flag] = al.Rollback != nil && al.Rollback.Status == "ok"
		}
		out = append(out, al)
		subjects = append(subjects, subject(r.Flag, r.Metric, r.Segment, r.Variant))
	}
	if len(out) == 0 {
		return nil
	}
	if a.Emitter != nil {
		if err := a.Emitter.Emit(ctx, out); err != nil {
			return fmt.Errorf("emit %d alerts: %w", len(out), err)
		}
	}
	pass.Alerts = out
	b, err := a.Conn.PrepareBatch(ctx, "INSERT INTO alert_log (dedup_key, subject, decision, severity, emitted_ms, pass_id, rollback)")
	if err != nil {
		return fmt.Errorf("prepare alert log insert: %w", err)
	}
	for i, al := range out {
		var rb string
		if al.Rollback != nil {
			j, _ := json.Marshal(al.Rollback)
			rb = string(j)
		}
		if err := b.Append(al.DedupKey, subjects[i], al.Decision, al.Severity, pass.Time.UnixMilli(), pass.ID, rb); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append alert log: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert alert log: %w", err)
	}
	return nil
}

// segmentsOf lists the segment effects of a total row's metric and variant, worst
// first, for the alert body.
func segmentsOf(rows []Row, total Row) []alert.SegmentEffect {
	var out []alert.SegmentEffect
	for _, r := range rows {
		if r.Segment == nil || r.Segment.Value == nil || r.Flag != total.Flag || r.Metric != total.Metric || r.Variant != total.Variant {
			continue
		}
		out = append(out, alert.SegmentEffect{Property: r.Segment.Property, Value: *r.Segment.Value, N: r.N,
			Lift: r.Lift, CI: r.CI, Decision: r.Decision})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lift < out[j].Lift })
	if len(out) > 8 {
		out = out[:8]
	}
	return out
}

// rollback runs the monitor's actions; the first failing outcome wins the alert's slot,
// else the first success.
func (a *Analyzer) rollback(ctx context.Context, cfg *config.Rollback, al *alert.Alert) *alert.Rollback {
	acts, err := rollback.New(cfg, a.lookup(), rollback.Options{Logger: a.Logger})
	if err != nil {
		return &alert.Rollback{Action: "config", Status: "failed", Detail: err.Error(), At: a.now()}
	}
	outs := acts.Do(ctx, rollback.FromAlert(al))
	if len(outs) == 0 {
		return nil
	}
	res := outs[0]
	for _, o := range outs {
		if o.Status != "ok" {
			res = o
			break
		}
	}
	a.log().Info("rollback called", "flag", al.Flag, "action", res.Action, "status", res.Status, "detail", res.Detail)
	return &res
}

func (a *Analyzer) build(r Row, m *monitor, now time.Time) alert.Alert {
	al := alert.Alert{Flag: r.Flag, Metric: r.Metric, Segment: r.Segment, Variant: r.Variant,
		Decision: r.Decision, Reason: r.Reason, DetectedAt: now.UTC()}
	al.DedupKey = alert.DedupKey(r.Flag, r.Metric, r.Segment, r.Decision)
	if r.Variant != "" {
		al.DedupKey += "|" + r.Variant
	}
	al.Numbers = alert.Numbers{ControlN: r.ControlN, VariantN: r.N, ControlMean: r.ControlMean,
		VariantMean: r.Mean, Lift: r.Lift, CI: r.CI, P: r.P, ChanceToWin: r.ChanceToWin, CUPED: r.CUPED,
		Correction: r.Correction}
	hasRollback := false
	if m != nil {
		al.SlackChannel = m.flag.SlackChannel
		al.Numbers.Control = m.flag.Control
		hasRollback = m.flag.Rollback != nil
	}
	if al.SlackChannel == "" {
		al.SlackChannel = a.Monitors.Defaults.SlackChannel
	}
	where := ""
	if r.Segment != nil && r.Segment.Value != nil {
		where = " in " + *r.Segment.Value
	}
	pct := math.Abs(100 * r.Lift)
	switch r.Decision {
	case alert.GuardrailBreach:
		al.Severity = alert.Critical
		al.Summary = fmt.Sprintf("%s breaks the %s guardrail%s: %+.0f%% (interval %+.0f%% to %+.0f%%)", r.Flag, r.Metric, where, 100*r.Lift, 100*r.CI[0], 100*r.CI[1])
		al.Action = "roll back"
	case alert.Loss:
		al.Severity = alert.Warning
		if hasRollback {
			al.Severity = alert.Critical
		}
		al.Summary = fmt.Sprintf("%s is losing %.0f%% of %s%s (%s vs control)", r.Flag, pct, r.Metric, where, r.Variant)
		al.Action = "roll back"
	case alert.Win:
		al.Severity = alert.Info
		al.Summary = fmt.Sprintf("%s lifts %s%s by %.0f%% (%s vs control)", r.Flag, r.Metric, where, pct, r.Variant)
		al.Action = "ship it"
	case alert.SRM:
		al.Severity = alert.Warning
		al.Summary = fmt.Sprintf("%s has a sample ratio mismatch: its results cannot be trusted", r.Flag)
		al.Action = "check your flag-evaluation code"
	case alert.SegmentDivergence:
		al.Severity = alert.Warning
		al.Summary = fmt.Sprintf("%s moves %s in opposite directions across %s while the total is flat", r.Flag, r.Metric, r.Segment.Property)
		al.Action = "look at the segments before shipping; consider targeting"
	case alert.Stale:
		al.Severity = alert.Warning
		al.Summary = fmt.Sprintf("%s stopped receiving exposures", r.Flag)
		al.Action = "clean up the flag or check the SDK"
	default:
		al.Severity = alert.Info
		al.Summary = fmt.Sprintf("%s: %s on %s", r.Flag, strings.ReplaceAll(r.Decision, "_", " "), r.Metric)
	}
	return al
}

// Lease claims a pass slot for this replica; false means another replica has it.
func Lease(ctx context.Context, conn store.Conn, slot, replica string, now time.Time) (bool, error) {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO analyzer_leases (slot, replica, leased_ms)")
	if err != nil {
		return false, fmt.Errorf("prepare lease: %w", err)
	}
	if err := b.Append(slot, replica, now.UnixMilli()); err != nil {
		return false, fmt.Errorf("append lease: %w", err)
	}
	if err := b.Send(); err != nil {
		return false, fmt.Errorf("insert lease: %w", err)
	}
	var holder string
	q := "SELECT replica FROM (SELECT " + quote(slot) + " AS slot) AS s ANY LEFT JOIN analyzer_leases USING slot"
	if err := conn.QueryRow(ctx, q).Scan(&holder); err != nil {
		return false, fmt.Errorf("read lease: %w", err)
	}
	return holder == replica, nil
}
