package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/render"
)

// An incident is one flag's run of findings from its first message until every finding
// in it is resolved; everything said about it is threaded under that first message.
// Incidents are numbered per flag: "new-checkout#1", "new-checkout#2", …

// finding is what the log says about one dedup key within an incident.
type finding struct {
	open       bool
	decision   string
	lastPosted time.Time
	lastFailed time.Time
}

// Events (alert.IsEvent: a rollout's stage changes) are findings of their own kind:
// posted once, in the flag's open thread (or a thread of their own), and never open, so
// they neither keep an incident open nor become its headline. A thread that has only
// events stays the flag's thread until a finding in it is resolved.

type incident struct {
	id       string
	parent   *nflog.Entry // a posted KindOpen entry; nil while not opened
	findings map[string]*finding
	// findingsSeen counts the posted entries about findings (not events).
	findingsSeen int
	// watched: the incident's sessions to watch were posted (or failed for good); it
	// gets them once.
	watched bool
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

// headline is the open finding the thread leads with: the most important by
// alert.Priority, then by key — the order the analyzer uses.
func (in *incident) headline() string {
	best := ""
	for _, k := range in.openKeys() {
		p, bp := alert.Priority(in.findings[k].decision), 0
		if best != "" {
			bp = alert.Priority(in.findings[best].decision)
		}
		if best == "" || p < bp || (p == bp && k < best) {
			best = k
		}
	}
	return best
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
	// said are the events posted, in any incident.
	said map[string]bool
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

// slotOf strips an op's sequence number: "reply|f#1|ab12|2" → "reply|f#1|ab12".
func slotOf(op string) string {
	if i := strings.LastIndexByte(op, '|'); i >= 0 {
		return op[:i]
	}
	return op
}

func buildState(flag string, entries []nflog.Entry) *flagState {
	st := &flagState{flag: flag, incidents: map[int]*incident{}, slots: map[string]int{}, said: map[string]bool{}}
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
		if e.Kind == nflog.KindWatch {
			in.watched = true
			continue
		}
		f := in.finding(e.DedupKey)
		if e.Kind == nflog.KindResolve {
			// A finding that no longer holds is resolved even if the message saying so
			// could not be posted.
			f.open = false
			continue
		}
		if e.Status != nflog.StatusPosted {
			f.lastFailed = e.At
			continue
		}
		switch e.Kind {
		case nflog.KindOpen:
			if in.parent == nil {
				in.parent = e
			}
			st.lastOpen = max(st.lastOpen, n)
		case nflog.KindReply, nflog.KindRepeat:
		default:
			continue
		}
		f.lastPosted, f.decision = e.At, e.Decision
		if alert.IsEvent(e.Decision) {
			st.said[e.DedupKey] = true
			continue
		}
		f.open = true
		in.findingsSeen++
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

// current is the open incident — one with open findings, or a thread of events only —
// or nil.
func (st *flagState) current() *incident {
	in := st.incidents[st.lastOpen]
	if in == nil || in.parent == nil || (len(in.openKeys()) == 0 && in.findingsSeen > 0) {
		return nil
	}
	return in
}

func (st *flagState) op(slot string) string { return slot + "|" + strconv.Itoa(st.slots[slot]) }

// action is what an alert calls for, given the log: open an incident with every current
// finding, or reply in its thread with what is new, due again, or resolved.
type action struct {
	kind     string // nflog.KindOpen or nflog.KindReply
	op       string
	incident *incident
	open     []alert.Finding // KindOpen: the findings the first message shows
	update   render.Update   // KindReply
	// resolveKeys are the open keys the reply's resolutions close.
	resolveKeys []string
}

// Reasons an alert needs no message, for the suppressed metric.
const (
	skipDuplicate     = "duplicate"
	skipNothingOpen   = "nothing_to_resolve"
	skipRecentFailure = "failed_recently"
)

// decide compares an alert's findings (render.Findings order: headline first) with the
// log. Every op it names is a deterministic function of the findings and the log, so two
// notifiers looking at the same log name the same op and the claim on it picks one.
//
// whole says fs are all the flag's current findings (an alert with Findings), so its
// first is the headline; otherwise (an alert from before incidents, one finding) the
// headline is the most important of what is open in the thread and new.
func decide(flag string, fs []alert.Finding, whole bool, st *flagState, now time.Time, repeat time.Duration) (*action, string) {
	var active, resolved []alert.Finding
	said := 0
	for _, f := range fs {
		switch {
		case f.Decision == alert.Resolved:
			resolved = append(resolved, f)
		case alert.IsEvent(f.Decision) && st.said[f.DedupKey]:
			said++ // an event is said once
		default:
			active = append(active, f)
		}
	}
	if said > 0 && len(active)+len(resolved) == 0 {
		return nil, skipDuplicate
	}
	failedRecently := func(in *incident, key string) bool {
		f := in.findings[key]
		return f != nil && !f.lastFailed.IsZero() && now.Sub(f.lastFailed) < repeat
	}

	in := st.current()
	if in == nil {
		if len(active) == 0 {
			return nil, skipNothingOpen
		}
		next := st.incident(st.lastOpen + 1)
		if failedRecently(next, active[0].DedupKey) {
			return nil, skipRecentFailure
		}
		return &action{kind: nflog.KindOpen, op: st.op("open|" + next.id), incident: next, open: active}, ""
	}

	act := &action{kind: nflog.KindReply, incident: in}
	var tags []string
	for _, f := range active {
		cur := in.findings[f.DedupKey]
		switch {
		case cur != nil && cur.open && f.Severity == alert.Critical && now.Sub(cur.lastPosted) >= repeat:
			act.update.Repeat = append(act.update.Repeat, f)
			if act.update.Since.IsZero() || cur.lastPosted.Before(act.update.Since) {
				act.update.Since = cur.lastPosted
			}
			tags = append(tags, "r:"+f.DedupKey)
		case cur != nil && cur.open:
		case failedRecently(in, f.DedupKey):
		default:
			act.update.New = append(act.update.New, f)
			tags = append(tags, "n:"+f.DedupKey)
		}
	}
	open := in.openKeys()
	closing := map[string]bool{}
	for _, r := range resolved {
		prefix := alert.DedupKey(flag, r.Metric, r.Segment, "")
		matched := false
		for _, k := range open {
			if strings.HasPrefix(k, prefix) && !closing[k] {
				closing[k], matched = true, true
				act.resolveKeys = append(act.resolveKeys, k)
				tags = append(tags, "x:"+k)
			}
		}
		if matched {
			act.update.Resolved = append(act.update.Resolved, r)
		}
	}
	if len(tags) == 0 {
		if len(active) == 0 {
			return nil, skipNothingOpen
		}
		return nil, skipDuplicate
	}
	act.update.Closes = len(act.update.New) == 0 && len(act.update.Repeat) == 0 && len(closing) == len(open)
	if len(active) > 0 {
		act.update.HeadlineChanged = headline(active, in, closing, whole) != in.headline()
	}
	sort.Strings(tags)
	sum := sha256.Sum256([]byte(strings.Join(tags, "\n")))
	act.op = st.op("reply|" + in.id + "|" + hex.EncodeToString(sum[:6]))
	return act, ""
}

// headline is the key the thread leads with after this reply; events never lead.
func headline(active []alert.Finding, in *incident, closing map[string]bool, whole bool) string {
	if whole && !alert.IsEvent(active[0].Decision) {
		return active[0].DedupKey
	}
	best, bestP := "", 0
	consider := func(key, decision string) {
		if closing[key] || alert.IsEvent(decision) {
			return
		}
		if p := alert.Priority(decision); best == "" || p < bestP || (p == bestP && key < best) {
			best, bestP = key, p
		}
	}
	for _, k := range in.openKeys() {
		consider(k, in.findings[k].decision)
	}
	for _, f := range active {
		consider(f.DedupKey, f.Decision)
	}
	return best
}
