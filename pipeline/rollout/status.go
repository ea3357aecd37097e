package rollout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Status is one plan as analyzer rollout status shows it: its log, and what the latest
// pass's numbers say the stage waits for.
type Status struct {
	Plan     *Plan
	State    *State
	Decision Decision
	// ResultsAt is the time of the pass whose numbers Decision reads (zero: no pass yet).
	ResultsAt time.Time
}

// Statuses reads the plans of mons (only flag's when flag is set) from ClickHouse: the
// rollout log, and the latest results of the analyzer for the numbers.
func Statuses(ctx context.Context, conn store.Conn, mons *config.Monitors, flag string, now time.Time) ([]Status, error) {
	plans, err := plansFor(mons, flag)
	if err != nil {
		return nil, err
	}
	l := &chLog{conn: conn, log: slog.Default()}
	var out []Status
	for _, p := range plans {
		entries, err := l.read(ctx, p.Flag)
		if err != nil {
			return nil, err
		}
		st := stateOf(entries)
		rows, at, err := latestResults(ctx, conn, p.Flag)
		if err != nil {
			return nil, err
		}
		out = append(out, Status{Plan: p, State: st, Decision: decide(p, st, rows, now), ResultsAt: at})
	}
	return out, nil
}

func plansFor(mons *config.Monitors, flag string) ([]*Plan, error) {
	plans := Plans(mons)
	if flag == "" {
		return plans, nil
	}
	var names []string
	for _, p := range plans {
		if p.Flag == flag {
			return []*Plan{p}, nil
		}
		names = append(names, p.Flag)
	}
	with := "none"
	if len(names) > 0 {
		with = strings.Join(names, ", ")
	}
	file := mons.File
	if file == "" {
		file = "the monitors file"
	}
	return nil, argErrorf("no rollout plan for flag %q in %s (flags with a plan: %s)", flag, file, with)
}

// ArgError is a request the rollout cannot serve as asked (a flag without a plan, a
// resume of a running rollout): the command's mistake, not a failure.
type ArgError struct{ msg string }

func (e *ArgError) Error() string { return e.msg }

func argErrorf(format string, a ...any) error { return &ArgError{msg: fmt.Sprintf(format, a...)} }

// latestResults reads the flag's rows of the latest pass from analysis_results.
func latestResults(ctx context.Context, conn store.Conn, flag string) ([]analyze.Row, time.Time, error) {
	var passID string
	var at time.Time
	if err := conn.QueryRow(ctx, "SELECT argMax(pass_id, pass_time), max(pass_time) FROM analysis_results WHERE flag = "+
		store.Quote(flag)).Scan(&passID, &at); err != nil {
		return nil, at, fmt.Errorf("read the latest pass of %s: %w", flag, err)
	}
	if passID == "" {
		return nil, time.Time{}, nil
	}
	rows, err := conn.Query(ctx, `SELECT metric, segment_property, segment_value, variant, n, control_n, lift, ci_low, ci_high,
		decision, reason FROM analysis_results WHERE flag = `+store.Quote(flag)+` AND pass_id = `+store.Quote(passID))
	if err != nil {
		return nil, at, fmt.Errorf("read the results of %s: %w", flag, err)
	}
	defer rows.Close()
	var out []analyze.Row
	for rows.Next() {
		r := analyze.Row{Flag: flag}
		var prop, value string
		var n, cn uint64
		if err := rows.Scan(&r.Metric, &prop, &value, &r.Variant, &n, &cn, &r.Lift, &r.CI[0], &r.CI[1], &r.Decision, &r.Reason); err != nil {
			return nil, at, fmt.Errorf("scan the results of %s: %w", flag, err)
		}
		r.N, r.ControlN = int64(n), int64(cn)
		if prop != "" {
			r.Segment = &analyze.Segment{Property: prop}
			if value != "" {
				v := value
				r.Segment.Value = &v
			}
		}
		out = append(out, r)
	}
	return out, at, rows.Err()
}

// WriteStatus prints statuses for people.
func WriteStatus(w io.Writer, sts []Status) {
	for i, s := range sts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		p, st, d := s.Plan, s.State, s.Decision
		fmt.Fprintf(w, "%s  %s\n", p.Flag, p.System())
		switch {
		case !st.Started && st.Ended == "":
			fmt.Fprintf(w, "  not started: the next pass starts it at %s\n", where(p, 1))
		default:
			k := st.Stage
			if at, ok := locate(p, st); ok {
				k = at.Stage
			}
			fmt.Fprintf(w, "  stage %d of %d: %s for %s\n", k, len(p.Stages), p.Label(k), Duration(d.InStage))
		}
		switch {
		case d.Ended != "":
			fmt.Fprintf(w, "  %s\n", d.Ended)
		case d.Held != "":
			fmt.Fprintf(w, "  held: %s\n", d.Held)
		case d.Change != "" && st.Started:
			fmt.Fprintf(w, "  next pass: %s\n", next(p, d))
		case len(d.Waits) > 0:
			fmt.Fprintf(w, "  waits for: %s\n", strings.Join(d.Waits, ", "))
		}
		if s.ResultsAt.IsZero() {
			fmt.Fprintln(w, "  guardrails: no analysis pass yet")
		} else if len(d.Guardrails) > 0 {
			var gs []string
			for _, g := range d.Guardrails {
				gs = append(gs, guardrailWords(g))
			}
			fmt.Fprintf(w, "  guardrails: %s\n", strings.Join(gs, " · "))
		}
		var stages []string
		for k := 1; k <= len(p.Stages); k++ {
			mark := ""
			switch {
			case k < st.Stage || (k == st.Stage && st.Ended == endComplete):
				mark = " ✓"
			case k == st.Stage:
				mark = " ◀"
			}
			stages = append(stages, p.Label(k)+mark)
		}
		fmt.Fprintf(w, "  stages: %s\n", strings.Join(stages, " · "))
		if e := st.Last(); e != nil {
			fmt.Fprintf(w, "  last change: #%d %s %s → %s by %s at %s, %s: %s\n", e.Seq, e.Change, e.From, e.To, e.DecidedBy,
				e.at().Format("2006-01-02 15:04 UTC"), e.Action, e.Status)
		}
	}
}

// next is what the next pass will do, in words.
func next(p *Plan, d Decision) string {
	switch d.Change {
	case alert.RolloutAdvance:
		return "advances to " + where(p, d.To) + ": " + d.Why
	case alert.RolloutComplete:
		return "completes the rollout: " + d.Why
	case alert.RolloutHold:
		return "holds: " + d.Why
	case alert.RolloutBack:
		return "rolls back to " + p.Label(d.To) + ": " + d.Why
	}
	return d.Why
}

// Resume hands a stopped, rolled-back or completed rollout back to flagwatch: the next
// pass takes the flag as it is in the flag system and continues from the first stage at
// or above it. who is the person, recorded with it.
func Resume(ctx context.Context, conn store.Conn, claims claim.Store, mons *config.Monitors, flag, who string, now time.Time) error {
	plans, err := plansFor(mons, flag)
	if err != nil {
		return err
	}
	p := plans[0]
	l := &chLog{conn: conn, log: slog.Default()}
	entries, err := l.read(ctx, flag)
	if err != nil {
		return err
	}
	st := stateOf(entries)
	if _, onPlan := locate(p, st); st.Ended == "" && onPlan {
		if !st.Started {
			return argErrorf("the rollout of %s has not started: the next pass starts it; nothing to resume", flag)
		}
		return argErrorf("the rollout of %s is running (at %s): nothing to resume", flag, where(p, st.Stage))
	}
	seq := st.LastSeq + 1
	won, err := claimChange(ctx, claims, claimKey(flag, seq), "resume:"+who, now, DefaultLease)
	if err != nil {
		return err
	}
	if !won {
		return fmt.Errorf("change #%d of %s is being made by an analyzer right now; try again in a minute", seq, flag)
	}
	e := Entry{Flag: flag, Seq: seq, Change: alert.RolloutResumed, Status: statusOK, FromStage: int64(st.Stage), ToStage: int64(st.Stage),
		Stages: int64(len(p.Stages)), From: p.Label(st.Stage), To: p.Label(st.Stage), Action: "none",
		Reason: fmt.Sprintf("%s handed %s's rollout back to flagwatch (it had %s)", who, flag, map[string]string{
			endRollback: "rolled back", endStopped: "stopped", endComplete: "completed", "": "left its plan"}[st.Ended]),
		DecidedBy: who + " (analyzer rollout resume)", AtMs: now.UnixMilli(), DoneMs: now.UnixMilli()}
	return l.append(ctx, e)
}
