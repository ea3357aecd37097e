package notify

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// An incident is one flag's run of findings from its first message until every finding
// in it is resolved; its findings are threaded under that first message. Incidents are
// numbered per flag: "new-checkout#1", "new-checkout#2", …

// finding is one dedup key within an incident.
type finding struct {
	open       bool
	lastPosted time.Time
	lastFailed time.Time
}

type incident struct {
	id       string
	parent   *Entry // the posted kindOpen entry; nil while not opened
	findings map[string]*finding
}

func (in *incident) openKeys() []string {
	var keys []string
	for k, f := range in.findings {
		if f.open {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (in *incident) finding(key string) *finding {
	f := in.findings[key]
	if f == nil {
		f = &finding{}
		in.findings[key] = f
	}
	return f
}

// flagState is what the log says about one flag.
type flagState struct {
	flag      string
	incidents map[int]*incident
	lastOpen  int            // highest incident number with a posted first message
	slots     map[string]int // slot → number of distinct ops recorded in it
}

func incidentID(flag string, n int) string { return flag + "#" + strconv.Itoa(n) }

func incidentNumber(id string) int {
	i := strings.LastIndexByte(id, '#')
	if i < 0 {
		return 0
	}
	n, _ := strconv.Atoi(id[i+1:])
	return n
}

// slotOf strips an op's sequence number: "post|f#1|key|2" → "post|f#1|key".
func slotOf(op string) string {
	if i := strings.LastIndexByte(op, '|'); i >= 0 {
		return op[:i]
	}
	return op
}

func buildState(flag string, entries []Entry) *flagState {
	st := &flagState{flag: flag, incidents: map[int]*incident{}, slots: map[string]int{}}
	seen := map[string]bool{}
	for i := range entries {
		e := &entries[i]
		if !seen[e.Op] {
			seen[e.Op] = true
			st.slots[slotOf(e.Op)]++
		}
		n := incidentNumber(e.Incident)
		if n == 0 {
			continue
		}
		in := st.incident(n)
		f := in.finding(e.DedupKey)
		if e.Kind == kindResolve {
			// A finding that no longer holds is resolved even if the message saying so
			// could not be posted.
			f.open = false
			continue
		}
		if e.Status != statusPosted {
			f.lastFailed = e.At
			continue
		}
		switch e.Kind {
		case kindOpen:
			if in.parent == nil {
				in.parent = e
			}
			if n > st.lastOpen {
				st.lastOpen = n
			}
			f.open, f.lastPosted = true, e.At
		case kindReply, kindRepeat:
			f.open, f.lastPosted = true, e.At
		}
	}
	return st
}

func (st *flagState) incident(n int) *incident {
	in := st.incidents[n]
	if in == nil {
		in = &incident{id: incidentID(st.flag, n), findings: map[string]*finding{}}
		st.incidents[n] = in
	}
	return in
}

// current is the open incident, or nil.
func (st *flagState) current() *incident {
	in := st.incidents[st.lastOpen]
	if in == nil || in.parent == nil || len(in.openKeys()) == 0 {
		return nil
	}
	return in
}

func (st *flagState) op(slot string) string { return slot + "|" + strconv.Itoa(st.slots[slot]) }

// action is what an alert calls for, given the log.
type action struct {
	kind     string // kindOpen, kindReply, kindRepeat, kindResolve
	op       string
	incident *incident
	key      string   // the finding posted (open, reply, repeat)
	keys     []string // the findings resolved
	closes   bool     // the resolve leaves nothing open
}

// Reasons an alert needs no message, for the suppressed metric.
const (
	skipDuplicate     = "duplicate"
	skipNothingOpen   = "nothing_to_resolve"
	skipRecentFailure = "failed_recently"
)

// decide compares an alert with the log. Every op it names is a deterministic function
// of the log, so two notifiers looking at the same log name the same op and the claim
// on it picks one of them.
func decide(a *alert.Alert, st *flagState, now time.Time, repeat time.Duration) (*action, string) {
	if a.Decision == alert.Resolved {
		in := st.current()
		if in == nil {
			return nil, skipNothingOpen
		}
		prefix := alert.DedupKey(a.Flag, a.Metric, a.Segment, "")
		var keys []string
		open := in.openKeys()
		for _, k := range open {
			if strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return nil, skipNothingOpen
		}
		return &action{kind: kindResolve, op: st.op("resolve|" + in.id + "|" + prefix), incident: in,
			keys: keys, closes: len(keys) == len(open)}, ""
	}
	key := dedupKey(a)
	if in := st.current(); in != nil {
		f := in.findings[key]
		switch {
		case f != nil && f.open && a.Severity == alert.Critical && now.Sub(f.lastPosted) >= repeat:
			return &action{kind: kindRepeat, op: st.op("post|" + in.id + "|" + key), incident: in, key: key}, ""
		case f != nil && f.open:
			return nil, skipDuplicate
		case f != nil && !f.lastFailed.IsZero() && now.Sub(f.lastFailed) < repeat:
			return nil, skipRecentFailure
		}
		return &action{kind: kindReply, op: st.op("post|" + in.id + "|" + key), incident: in, key: key}, ""
	}
	in := st.incident(st.lastOpen + 1)
	if f := in.findings[key]; f != nil && !f.lastFailed.IsZero() && now.Sub(f.lastFailed) < repeat {
		return nil, skipRecentFailure
	}
	return &action{kind: kindOpen, op: st.op("open|" + in.id), incident: in, key: key}, ""
}

func dedupKey(a *alert.Alert) string {
	if a.DedupKey != "" {
		return a.DedupKey
	}
	return alert.DedupKey(a.Flag, a.Metric, a.Segment, a.Decision)
}
