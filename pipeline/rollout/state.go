package rollout

import (
	"sort"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// Entry statuses. A change is recorded as pending (its intent) before the flag system is
// called, and then with its outcome.
const (
	statusPending = "pending"
	statusOK      = "ok"      // done
	statusFailed  = "failed"  // the flag system did not take it; decided afresh next pass
	statusRefused = "refused" // flagwatch would not act (a person changed the flag)
)

// changeAlerted marks a change whose alert Kafka acknowledged.
const changeAlerted = "alerted"

// Entry is one row of rollout_log.
type Entry struct {
	Flag   string
	Seq    int64
	Change string // alert.Rollout* (or changeAlerted)
	Status string
	// Stages are 1-based; 0 is off.
	FromStage, ToStage, Stages int64
	From, To                   string // labels
	Reason                     string // the sentence people read
	// Numbers is the alert.RolloutChange of the change, as JSON.
	Numbers string
	// Users are the users per variant (since the flag's first exposure) at the change:
	// the next stage counts its new users from them.
	Users string
	// Action, Target and Detail say what was called and how it went.
	Action, Target, Detail string
	// FlagState is the flag as the flag system returned it after the change (a
	// Snapshot as JSON); on a pending entry, the state the change intends.
	FlagState string
	// DecidedBy is the replica and pass (or the person, for a resume).
	DecidedBy, PassID string
	AtMs, DoneMs      int64
}

func (e *Entry) at() time.Time { return time.UnixMilli(e.AtMs).UTC() }

func (e *Entry) users() map[string]int64 {
	out := map[string]int64{}
	_ = json.Unmarshal([]byte(e.Users), &out)
	return out
}

func (e *Entry) change() *alert.RolloutChange {
	var c alert.RolloutChange
	if json.Unmarshal([]byte(e.Numbers), &c) != nil {
		c = alert.RolloutChange{}
	}
	c.Change, c.ChangeID, c.Status = e.Change, changeID(e.Flag, e.Seq), e.Status
	c.FromStage, c.ToStage, c.Stages, c.From, c.To = int(e.FromStage), int(e.ToStage), int(e.Stages), e.From, e.To
	return &c
}

// Ends of a plan: after them the controller does nothing until a person resumes it.
const (
	endRollback = alert.RolloutBack
	endComplete = alert.RolloutComplete
	endStopped  = "stopped"
)

// State is a flag's rollout as its log tells it.
type State struct {
	LastSeq int64
	// Stage is the stage the flag is in (0: off, or not started).
	Stage int
	// StageLabel is the stage's label when the flag entered it: the plan may have been
	// edited since.
	StageLabel string
	// Since is when the flag entered Stage; UsersAtEntry the users per variant then.
	Since        time.Time
	UsersAtEntry map[string]int64
	// Baseline is the flag as flagwatch last wrote it (nil before the first change).
	Baseline *Snapshot
	// Started is set once the plan started (after the last resume).
	Started bool
	// Ended is "" while the plan runs, else how it ended (endRollback, endComplete,
	// endStopped); EndedBy is that entry.
	Ended   string
	EndedBy *Entry
	// Holding is the reason key of the hold in force ("" when none).
	Holding string
	// Pending is a change whose intent is recorded without an outcome.
	Pending *Entry
	// Outcomes are the entries with an outcome, in order; Alerted says which of them
	// had their alert acknowledged.
	Outcomes []Entry
	Alerted  map[int64]bool
}

// Last is the latest outcome, or nil.
func (s *State) Last() *Entry {
	if len(s.Outcomes) == 0 {
		return nil
	}
	return &s.Outcomes[len(s.Outcomes)-1]
}

// stateOf replays a flag's log.
func stateOf(entries []Entry) *State {
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].Seq != entries[j].Seq {
			return entries[i].Seq < entries[j].Seq
		}
		return entries[i].DoneMs < entries[j].DoneMs
	})
	s := &State{Alerted: map[int64]bool{}}
	pending := map[int64]*Entry{}
	done := map[int64]bool{}
	for i := range entries {
		e := &entries[i]
		s.LastSeq = max(s.LastSeq, e.Seq)
		switch {
		case e.Change == changeAlerted:
			s.Alerted[e.Seq] = true
		case e.Status == statusPending:
			pending[e.Seq] = e
		case !done[e.Seq]:
			// One outcome per change; a second (two replicas settling the same pending
			// change) repeats the first.
			done[e.Seq] = true
			s.apply(e)
		}
	}
	for seq, e := range pending {
		if !done[seq] && (s.Pending == nil || seq > s.Pending.Seq) {
			s.Pending = e
		}
	}
	return s
}

func (s *State) apply(e *Entry) {
	s.Outcomes = append(s.Outcomes, *e)
	if e.Change == alert.RolloutResumed {
		// A person handed the flag back as it is: the next start reads it afresh, and
		// what flagwatch wrote before is no longer the measure of a person's change.
		s.Started, s.Ended, s.EndedBy, s.Holding, s.Baseline = false, "", nil, "", nil
		return
	}
	if e.Status == statusRefused {
		s.Ended, s.EndedBy, s.Holding = endStopped, e, ""
		return
	}
	if e.Status != statusOK {
		return
	}
	if e.FlagState != "" {
		var snap Snapshot
		if json.Unmarshal([]byte(e.FlagState), &snap) == nil {
			s.Baseline = &snap
		}
	}
	switch e.Change {
	case alert.RolloutStart, alert.RolloutAdvance, alert.RolloutBack:
		s.Stage, s.StageLabel, s.Since, s.UsersAtEntry, s.Holding = int(e.ToStage), e.To, e.at(), e.users(), ""
		s.Started = true
		if e.Change == alert.RolloutBack {
			s.Ended, s.EndedBy = endRollback, e
		}
	case alert.RolloutComplete:
		s.Ended, s.EndedBy = endComplete, e
	case alert.RolloutHold:
		s.Holding = e.Detail // a hold calls nothing; its Detail is the reason's key
	}
}

// locate finds the flag's stage in p when the plan was edited after the flag entered it:
// the stage with the same label. It returns st unchanged when the plan still has the
// stage where it was, a copy at the new position when it moved, and ok false when the
// plan no longer has it.
func locate(p *Plan, st *State) (*State, bool) {
	if !st.Started || st.Stage == 0 || st.StageLabel == "" {
		return st, true
	}
	if st.Stage <= len(p.Stages) && p.Label(st.Stage) == st.StageLabel {
		return st, true
	}
	for k := 1; k <= len(p.Stages); k++ {
		if p.Label(k) == st.StageLabel {
			moved := *st
			moved.Stage = k
			return &moved, true
		}
	}
	return st, false
}
