// Package rollout moves flags through their progressive rollout plans (SPEC §11): after
// every analyzer pass it decides, per flag with a plan, whether the flag advances to its
// next stage, holds, rolls back, or waits, changes the flag in PostHog (or through a
// signed webhook), records the change with who decided it and the numbers behind it,
// and tells the team through an alert on flag_alerts.
//
// The decision that shapes it: each change is made once, across restarts and analyzer
// replicas, because it is numbered and claimed before it is made. A flag's changes are
// numbered (its 1st, 2nd, … change); a replica claims the next number in ClickHouse
// (claim, a compare-and-set on a Join(ANY) table), records its intent, calls the flag
// system, and records the outcome in rollout_log. A replica that loses the claim does
// nothing; one that finds an intent without outcome, once its claim has run out, reads
// the flag and settles it without changing it twice. The decisions themselves are pure
// (decide.go), and what flagwatch writes to PostHog is the filters it read with only the
// plan's conditions changed (filters.go); a flag a person changed since flagwatch's last
// change is never overwritten.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/rollback"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

var errDied = errors.New("died mid-change (test)")

// DefaultLease is how long a claim on a change lasts: well beyond a change's retries
// (two minutes), well below the pass interval, so a change whose replica died is settled
// by the next pass.
const DefaultLease = 10 * time.Minute

// Options configure a Controller.
type Options struct {
	Conn store.Conn
	// Claims is where changes are claimed (pipeline/claim); nil: the claims table on
	// Conn (one node). NewObservers opens the store Conn's ClickHouse uses.
	Claims   claim.Store
	Emitter  analyze.Emitter
	Monitors *config.Monitors
	// Replica names this analyzer in claims and in who decided a change.
	Replica string
	Logger  *slog.Logger
	// Lookup reads the flag systems' secrets (os.LookupEnv by default), when a change is
	// made: a missing one fails that change, with the reason in its alert.
	Lookup config.Lookup
	// PublicURL, when set, is where the flag pages are; alerts link to them.
	PublicURL string
	// Lease is how long a claim lasts (DefaultLease).
	Lease time.Duration
	// HTTP tunes the calls to PostHog and webhooks (retries, client, clock).
	HTTP rollback.Options
}

// Controller is the pass observer that runs the plans.
type Controller struct {
	o     Options
	plans []*Plan
	log   *chLog
	// dieAfterCall makes act return right after the flag system took a change, before
	// its outcome is recorded; dieAtIntent right after the intent is recorded, before
	// the flag system is called: a replica dying mid-change, for tests.
	dieAfterCall, dieAtIntent bool
}

// New returns the controller of the monitors' plans.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Lookup == nil {
		o.Lookup = os.LookupEnv
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.HTTP.Logger == nil {
		o.HTTP.Logger = o.Logger
	}
	if o.Claims == nil {
		o.Claims = claim.Table{Conn: o.Conn}
	}
	return &Controller{o: o, plans: Plans(o.Monitors), log: &chLog{conn: o.Conn, log: o.Logger}}
}

// NewObservers is analyze.Options.NewObservers for the monitors' plans: no observer when
// no flag has a plan. The controller claims its changes in the analyzer's claims (unless
// o.Claims names others).
func NewObservers(o Options) func(conn store.Conn, claims claim.Store, emit analyze.Emitter, mons *config.Monitors) ([]analyze.PassObserver, error) {
	return func(conn store.Conn, claims claim.Store, emit analyze.Emitter, mons *config.Monitors) ([]analyze.PassObserver, error) {
		o.Conn, o.Emitter, o.Monitors = conn, emit, mons
		if len(Plans(mons)) == 0 {
			return nil, nil
		}
		if o.Claims == nil {
			o.Claims = claims
		}
		return []analyze.PassObserver{New(o)}, nil
	}
}

// ObservePass implements analyze.PassObserver: one step of every plan, each flag on its
// own (one failing flag does not stop the others). It appends one row per plan to the
// pass — decision "rollout", what the pass did or what the stage waits for — which
// analyzer once prints after the result rows.
func (c *Controller) ObservePass(ctx context.Context, pass *analyze.Pass) error {
	byFlag := map[string][]analyze.Row{}
	for _, r := range pass.Rows {
		byFlag[r.Flag] = append(byFlag[r.Flag], r)
	}
	var errs []error
	var rows []analyze.Row
	for _, p := range c.plans {
		row, err := c.step(ctx, pass, p, byFlag[p.Flag])
		if err != nil {
			c.o.Logger.Error("rollout step failed", "flag", p.Flag, "err", err)
			errs = append(errs, fmt.Errorf("rollout of %s: %w", p.Flag, err))
		}
		rows = append(rows, row)
	}
	pass.Rows = append(pass.Rows, rows...)
	return errors.Join(errs...)
}

// row is a plan's line in analyzer once.
func row(p *Plan, users int64, reason string) analyze.Row {
	return analyze.Row{Flag: p.Flag, Decision: alert.Rollout, N: users, Reason: reason}
}

func (c *Controller) step(ctx context.Context, pass *analyze.Pass, p *Plan, rows []analyze.Row) (analyze.Row, error) {
	entries, err := c.log.read(ctx, p.Flag)
	if err != nil {
		return row(p, 0, "rollout state unavailable: "+err.Error()), err
	}
	st := stateOf(entries)
	resendErr := c.resend(ctx, pass, p, st)
	if st.Pending != nil {
		r, err := c.settle(ctx, pass, p, st)
		return r, errors.Join(resendErr, err)
	}
	d := decide(p, st, rows, pass.Time)
	if d.Change == "" {
		return row(p, d.UsersPerVariant, waiting(p, st, d)), resendErr
	}
	r, err := c.act(ctx, pass, p, st, d)
	return r, errors.Join(resendErr, err)
}

// waiting is the row of a plan that changes nothing in this pass.
func waiting(p *Plan, st *State, d Decision) string {
	s := "at " + where(p, st.Stage)
	if st.Stage > 0 {
		s += " for " + Duration(d.InStage)
	}
	switch {
	case d.Ended != "":
		return s + "; " + d.Ended
	case d.Held != "":
		return "held " + s + ": " + d.Held
	}
	return s + "; waits for " + strings.Join(d.Waits, ", ")
}

// own claims change seq of flag p for this replica, and reads the log again: true when
// this replica makes the change, with the flag's state as of the claim.
func (c *Controller) own(ctx context.Context, pass *analyze.Pass, p *Plan, seq int64) (bool, *State, error) {
	var won bool
	err := c.log.do(ctx, "claim "+changeID(p.Flag, seq), func(ctx context.Context) error {
		var err error
		won, err = claimChange(ctx, c.o.Claims, claimKey(p.Flag, seq), c.o.Replica, pass.Time, c.o.Lease)
		return err
	})
	if err != nil || !won {
		return false, nil, err
	}
	entries, err := c.log.read(ctx, p.Flag)
	if err != nil {
		return false, nil, err
	}
	return true, stateOf(entries), nil
}

// act makes the decided change: claim its number, call the flag system, record the
// outcome, tell the team.
func (c *Controller) act(ctx context.Context, pass *analyze.Pass, p *Plan, st *State, d Decision) (analyze.Row, error) {
	seq := st.LastSeq + 1
	won, now, err := c.own(ctx, pass, p, seq)
	switch {
	case err != nil:
		return row(p, d.UsersPerVariant, "could not claim change #"+itoa(seq)+": "+err.Error()), err
	case !won:
		return row(p, d.UsersPerVariant, "change #"+itoa(seq)+" is being made by another analyzer replica"), nil
	case now.LastSeq >= seq:
		return row(p, d.UsersPerVariant, "change #"+itoa(seq)+" was made by another analyzer replica"), nil
	}
	e := Entry{Flag: p.Flag, Seq: seq, Change: d.Change, FromStage: int64(d.From), ToStage: int64(d.To),
		Stages: int64(len(p.Stages)), Users: usersJSON(d.Users), DecidedBy: c.o.Replica + " (pass " + pass.ID + ")",
		PassID: pass.ID, AtMs: pass.Time.UnixMilli(), DoneMs: pass.Time.UnixMilli(), Action: "none"}
	why := d.Why
	switch d.Change {
	case alert.RolloutHold:
		e.Status, e.Detail = statusOK, d.HoldKey
	case alert.RolloutComplete:
		e.Status = statusOK
	default:
		why = c.callSystem(ctx, pass, p, st, d, &e)
		if c.dieAfterCall || c.dieAtIntent {
			return analyze.Row{}, errDied
		}
	}
	resumed := len(st.Outcomes) > 0 && st.Last().Change == alert.RolloutResumed
	if e.Status == statusRefused && d.Change == alert.RolloutBack {
		why = d.Why + ", but " + why
	}
	e.From, e.To = p.Label(int(e.FromStage)), p.Label(int(e.ToStage))
	e.Reason = sentence(p, &e, why, resumed)
	e.Numbers = numbersJSON(d)
	return c.finish(ctx, p, st, &e, d.UsersPerVariant)
}

// callSystem makes a start, advance or rollback in the flag system and fills the
// entry's outcome; it returns the words behind the change (or its failure).
func (c *Controller) callSystem(ctx context.Context, pass *analyze.Pass, p *Plan, st *State, d Decision, e *Entry) string {
	sys, err := newSystem(p, c.o.Lookup, c.o.HTTP)
	if err != nil {
		e.Status, e.Action, e.Detail = statusFailed, systemName(p), err.Error()
		return err.Error()
	}
	ch := &change{plan: p, kind: d.Change, from: d.From, to: d.To, id: changeID(p.Flag, e.Seq), at: pass.Time,
		baseline: st.Baseline}
	ch.summary = sentence(p, e, d.Why, false)
	ch.intend = func(ctx context.Context, to int, state string) error {
		intent := *e
		intent.Status, intent.FlagState, intent.ToStage = statusPending, state, int64(to)
		intent.From, intent.To = p.Label(d.From), p.Label(to)
		intent.Reason = sentence(p, &intent, d.Why, false)
		intent.Numbers = numbersJSON(d)
		if err := c.log.append(ctx, intent); err != nil {
			return err
		}
		if c.dieAtIntent {
			return errDied
		}
		return nil
	}
	res := sys.apply(ctx, ch)
	c.outcome(e, res)
	if res.status == statusOK {
		return d.Why
	}
	if res.why != "" {
		return res.why
	}
	return res.outcome.Detail
}

// outcome copies a call's result into the entry.
func (c *Controller) outcome(e *Entry, res result) {
	e.Status = res.status
	e.Action, e.Target, e.Detail = res.outcome.Action, res.outcome.Target, res.outcome.Detail
	if res.status == statusOK {
		e.ToStage = int64(res.to)
	}
	// The flag as the system returned it, the baseline of the next change; a pending
	// entry's intended state does not carry over to its outcome.
	e.FlagState = ""
	if res.after != nil {
		e.FlagState = res.after.json()
	}
}

// settle finishes a change a replica claimed and left pending, once its claim has run
// out: the flag system says whether it happened.
func (c *Controller) settle(ctx context.Context, pass *analyze.Pass, p *Plan, st *State) (analyze.Row, error) {
	pe := st.Pending
	won, now, err := c.own(ctx, pass, p, pe.Seq)
	switch {
	case err != nil:
		return row(p, 0, "could not claim pending change #"+itoa(pe.Seq)+": "+err.Error()), err
	case !won:
		return row(p, 0, "change #"+itoa(pe.Seq)+" is being made by another analyzer replica"), nil
	case now.Pending == nil || now.Pending.Seq != pe.Seq:
		return row(p, 0, "change #"+itoa(pe.Seq)+" was settled by another analyzer replica"), nil
	}
	sys, err := newSystem(p, c.o.Lookup, c.o.HTTP)
	if err != nil {
		return row(p, 0, "change #"+itoa(pe.Seq)+" stays pending: "+err.Error()), nil
	}
	ch := &change{plan: p, kind: pe.Change, from: int(pe.FromStage), to: int(pe.ToStage), id: changeID(p.Flag, pe.Seq),
		at: pass.Time, baseline: now.Baseline, summary: pe.Reason}
	res := sys.settle(ctx, ch, pe)
	if res.status == "" {
		return row(p, 0, "change #"+itoa(pe.Seq)+" stays pending: the flag could not be read to settle it"), nil
	}
	e := *pe
	e.DecidedBy = pe.DecidedBy + "; settled by " + c.o.Replica + " (pass " + pass.ID + ")"
	e.DoneMs = pass.Time.UnixMilli()
	c.outcome(&e, res)
	why := res.why
	if why == "" {
		why = res.outcome.Detail
	}
	if e.Status == statusOK {
		// The intended change happened: its words are the ones decided with it.
		e.Reason = pe.Reason
	} else {
		e.From, e.To = p.Label(int(e.FromStage)), p.Label(int(e.ToStage))
		e.Reason = sentence(p, &e, why, false)
	}
	var users int64
	if ch := e.change(); ch != nil {
		users = ch.UsersPerVariant
	}
	return c.finish(ctx, p, now, &e, users)
}

// finish records an outcome and tells the team.
func (c *Controller) finish(ctx context.Context, p *Plan, st *State, e *Entry, users int64) (analyze.Row, error) {
	if err := c.log.append(ctx, *e); err != nil {
		return row(p, users, e.Reason+" (not recorded: "+err.Error()+")"), err
	}
	c.o.Logger.Info("rollout change", "flag", p.Flag, "seq", e.Seq, "change", e.Change, "status", e.Status,
		"from", e.From, "to", e.To, "detail", e.Detail)
	err := c.tell(ctx, p, st, e)
	return row(p, users, e.Reason), err
}

// tell emits a change's alert, when it has one, and marks it told.
func (c *Controller) tell(ctx context.Context, p *Plan, st *State, e *Entry) error {
	if needsAlert(st, e) && c.o.Emitter != nil {
		if err := c.o.Emitter.Emit(ctx, []alert.Alert{alertOf(p, e, st, c.o.PublicURL)}); err != nil {
			return fmt.Errorf("emit the alert of change #%d: %w", e.Seq, err)
		}
	}
	mark := Entry{Flag: e.Flag, Seq: e.Seq, Change: changeAlerted, Status: statusOK, AtMs: e.AtMs, DoneMs: e.DoneMs}
	return c.log.append(ctx, mark)
}

// resend emits the alerts of changes recorded without their alert's acknowledgement
// (their replica died in between), once they are older than a claim, so the live
// replica that made them has had its chance. The notifier posts each change once.
func (c *Controller) resend(ctx context.Context, pass *analyze.Pass, p *Plan, st *State) error {
	var errs []error
	for i := range st.Outcomes {
		e := &st.Outcomes[i]
		if st.Alerted[e.Seq] || pass.Time.Sub(time.UnixMilli(e.DoneMs)) < c.o.Lease {
			continue
		}
		errs = append(errs, c.tell(ctx, p, st, e))
	}
	return errors.Join(errs...)
}

func systemName(p *Plan) string {
	if p.Rollout.PostHog != nil {
		return "posthog"
	}
	return "webhook"
}

func usersJSON(u map[string]int64) string {
	b, _ := json.Marshal(u)
	return string(b)
}

func numbersJSON(d Decision) string {
	b, _ := json.Marshal(alert.RolloutChange{UsersPerVariant: d.UsersPerVariant, InStageSeconds: int64(d.InStage / time.Second),
		Guardrails: d.Guardrails, Evidence: d.Evidence})
	return string(b)
}
