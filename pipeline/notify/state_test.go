package notify

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
)

// A rollout's changes are events: each is posted once, in the flag's thread, never held
// open, never the headline; a thread of events only stays the flag's thread.
func TestRolloutEventsAreSaidOnceAndNeverOpen(t *testing.T) {
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	event := func(seq string) alert.Finding {
		return alert.Finding{Decision: alert.Rollout, Severity: alert.Info, DedupKey: "f|rollout|" + seq, Summary: "f advanced"}
	}
	breach := alert.Finding{Metric: "errors", Decision: alert.GuardrailBreach, Severity: alert.Critical, DedupKey: "f|errors||guardrail_breach|test"}
	posted := func(op, kind string, f alert.Finding) nflog.Entry {
		return nflog.Entry{Op: op, Flag: "f", Incident: "f#1", Kind: kind, DedupKey: f.DedupKey, Decision: f.Decision,
			Severity: f.Severity, Status: nflog.StatusPosted, TS: "1.0", At: now}
	}

	// Nothing open: the first change opens a thread of its own.
	act, _ := decide("f", []alert.Finding{event("1")}, false, buildState("f", nil), now, 4*time.Hour)
	require.Equal(t, nflog.KindOpen, act.kind)
	log := []nflog.Entry{posted(act.op, nflog.KindOpen, event("1"))}

	// The same change again: said already.
	act, skip := decide("f", []alert.Finding{event("1")}, false, buildState("f", log), now, 4*time.Hour)
	require.Nil(t, act)
	require.Equal(t, skipDuplicate, skip)

	// The next change replies in that thread, without a new headline.
	act, _ = decide("f", []alert.Finding{event("2")}, false, buildState("f", log), now, 4*time.Hour)
	require.Equal(t, nflog.KindReply, act.kind)
	require.Equal(t, []alert.Finding{event("2")}, act.update.New)
	require.False(t, act.update.HeadlineChanged)
	require.False(t, act.update.Closes)
	log = append(log, posted(act.op, nflog.KindReply, event("2")))

	// A finding in the rollout's thread becomes its headline.
	act, _ = decide("f", []alert.Finding{breach}, true, buildState("f", log), now, 4*time.Hour)
	require.Equal(t, nflog.KindReply, act.kind)
	require.True(t, act.update.HeadlineChanged)
	log = append(log, posted(act.op, nflog.KindReply, breach))

	// A rollback after it: a reply, the breach stays the headline.
	act, _ = decide("f", []alert.Finding{event("3")}, false, buildState("f", log), now, 4*time.Hour)
	require.False(t, act.update.HeadlineChanged)
	log = append(log, posted(act.op, nflog.KindReply, event("3")))

	// Resolving the breach closes the incident: the events kept nothing open.
	act, _ = decide("f", []alert.Finding{{Metric: "errors", Decision: alert.Resolved, Severity: alert.Info}}, false,
		buildState("f", log), now, 4*time.Hour)
	require.True(t, act.update.Closes)
	log = append(log, nflog.Entry{Op: act.op, Flag: "f", Incident: "f#1", Kind: nflog.KindResolve, DedupKey: breach.DedupKey,
		Decision: alert.Resolved, Status: nflog.StatusPosted, At: now})

	// The next change opens a new thread; the old ones are still said.
	st := buildState("f", log)
	require.Nil(t, st.current())
	act, _ = decide("f", []alert.Finding{event("4")}, false, st, now, 4*time.Hour)
	require.Equal(t, nflog.KindOpen, act.kind)
	require.Equal(t, "f#2", act.incident.id)
	act, skip = decide("f", []alert.Finding{event("3")}, false, st, now, 4*time.Hour)
	require.Nil(t, act)
	require.Equal(t, skipDuplicate, skip)
}
