//go:build soak

package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// verdict is what the checks found: the failures, and the numbers of the summary.
type verdict struct {
	failures []string

	answers    int
	transport  int
	gaveUp     int // requests still answered 503 after maxAttempts
	over503    int // 503 answers (each retried)
	byKind     map[*kind]map[string]int
	kindsOrder []*kind

	acked, ackedStored, ackedDead int
	refusedEvents, unknownEvents  int
	unknownStored                 int
	directStored, directDead      int

	rawRows, finalRows, rawDupUUIDs uint64
	partitions                      int
	exposureTriples                 int

	dlqMessages, dlqCopies int
	dlqByReason            map[string]int
}

// examples keeps the first few instances of one kind of failure, and counts them by
// kind of request.
type examples struct {
	what   string
	n      int
	some   []string
	byKind map[string]int
}

func (e *examples) add(format string, a ...any) { e.addKind("", format, a...) }

func (e *examples) addKind(kind, format string, a ...any) {
	e.n++
	if kind != "" {
		if e.byKind == nil {
			e.byKind = map[string]int{}
		}
		e.byKind[kind]++
	}
	if len(e.some) < 5 {
		e.some = append(e.some, fmt.Sprintf(format, a...))
	}
}

func (v *verdict) report(e *examples) {
	if e.n == 0 {
		return
	}
	kinds := ""
	if len(e.byKind) > 0 {
		var parts []string
		for k, n := range e.byKind {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, n))
		}
		sort.Strings(parts)
		kinds = " (requests: " + strings.Join(parts, ", ") + ")"
	}
	v.failures = append(v.failures, fmt.Sprintf("%s: %d%s, e.g.\n    %s", e.what, e.n, kinds, strings.Join(e.some, "\n    ")))
}

func (v *verdict) fail(format string, a ...any) {
	v.failures = append(v.failures, fmt.Sprintf(format, a...))
}

// storedRow is one row of events (with FINAL).
type storedRow struct {
	uuid, user string
	ts         int64
}

func verify(t *testing.T, ctx context.Context, conn store.Conn, r *run) *verdict {
	t.Helper()
	v := &verdict{byKind: map[*kind]map[string]int{}, dlqByReason: map[string]int{}}
	v.checkProcesses(r)
	v.checkAnswers(r)

	// What must become of each event the soak sent.
	all := map[string]sent{}          // every event, by soak_id
	stored := map[string]sent{}       // acknowledged: one row each
	dead := map[string]string{}       // acknowledged through capture, for the dead-letter topic: id → reason
	forbidden := map[string]sent{}    // of requests answered "nothing produced": never stored
	unknown := map[string]sent{}      // of requests without a certain answer: at most once
	directWant := map[string]string{} // messages produced straight to Kafka, by header: reason ("": stored)
	directDead := map[string]string{} // their events that must not be stored: id → reason
	for _, o := range r.outcomes {
		req := o.req
		for i := range req.events {
			req.events[i].kind = req.kind.name
			all[req.events[i].id] = req.events[i]
		}
		switch {
		case req.direct != nil && o.acked():
			directWant[directID(req.index)] = req.direct.reason
			if req.direct.reason != "" {
				v.directDead++
			}
			for _, s := range req.events {
				if req.direct.reason != "" {
					directDead[s.id] = req.direct.reason
				} else {
					stored[s.id] = s
					v.directStored++
				}
			}
		case o.acked():
			for _, s := range req.events {
				v.acked++
				if s.tooOld {
					dead[s.id] = "too_old"
					v.ackedDead++
				} else {
					stored[s.id] = s
					v.ackedStored++
				}
			}
		case o.certainlyNotProduced():
			for _, s := range req.events {
				forbidden[s.id] = s
				v.refusedEvents++
			}
		default:
			for _, s := range req.events {
				unknown[s.id] = s
				v.unknownEvents++
			}
		}
	}
	for id, reason := range directDead {
		dead[id] = reason
	}

	rows := v.checkEvents(ctx, conn, stored, dead, forbidden, unknown)
	v.checkExposures(ctx, conn, all, rows)
	for id := range directDead {
		delete(dead, id) // in the dead-letter topic by their header
	}
	v.checkDLQ(r.dlq, stored, dead, forbidden, directWant)
	return v
}

func (v *verdict) checkProcesses(r *run) {
	if r.captureExitedEarly {
		v.fail("capture exited during the soak: %v", r.captureExit)
	}
	if r.captureHealth != http.StatusOK {
		v.fail("capture's /healthz answered %d at the end, want 200", r.captureHealth)
	}
	if r.captureStop != nil {
		v.fail("capture on SIGTERM: %v, want exit 0", r.captureStop)
	}
	if r.rssHWM > rssBound || r.rssMax > rssBound {
		v.fail("capture's RSS reached %s (VmHWM; %s sampled), over the bound of %s", mib(r.rssHWM), mib(r.rssMax), mib(rssBound))
	}
	if r.rssSamples == 0 {
		v.fail("capture's RSS was never sampled")
	}
	kills := 0
	for _, ir := range r.ingestRuns {
		if ir.killed {
			kills++
		}
	}
	if kills != 2 {
		v.fail("ingest was killed %d times, want 2", kills)
	}
	for i, ir := range r.ingestRuns {
		if ir.unexpected {
			v.fail("ingest run %d exited by itself: %v", i+1, ir.p.exitErr)
		}
	}
	for _, err := range r.ingestErrs {
		v.fail("restarting ingest: %v", err)
	}
	if r.ingestStop != nil {
		v.fail("ingest on SIGTERM: %v, want exit 0", r.ingestStop)
	}
}

// label names an answer in the summary: "200", "400 invalid_payload", "transport error".
func label(a answer, direct bool) string {
	switch {
	case direct && a.err == nil:
		return "produced"
	case a.err != nil:
		return "error"
	case a.code != "":
		return fmt.Sprintf("%d %s", a.status, a.code)
	}
	return fmt.Sprint(a.status)
}

func (v *verdict) checkAnswers(r *run) {
	transport := &examples{what: "requests without an answer (transport errors)"}
	shape := &examples{what: "error answers without PostHog's {type, code, detail}"}
	noRetry := &examples{what: "503 answers without Retry-After"}
	validWrong := &examples{what: "valid requests not acknowledged"}
	refusedWrong := &examples{what: "refused requests without the answer their kind calls for"}
	produceErr := &examples{what: "messages a direct producer could not produce"}
	clientCounts := map[int]float64{}
	for _, o := range r.outcomes {
		k := o.req.kind
		if v.byKind[k] == nil {
			v.byKind[k] = map[string]int{}
			v.kindsOrder = append(v.kindsOrder, k)
		}
		for _, a := range o.answers {
			v.answers++
			v.byKind[k][label(a, o.req.direct != nil)]++
			if o.req.direct != nil {
				if a.err != nil {
					produceErr.add("%s: %v", k.name, a.err)
				}
				continue
			}
			if a.err != nil {
				v.transport++
				transport.add("%s (request %d): %v", k.name, o.req.index, a.err)
				continue
			}
			clientCounts[a.status]++
			if a.status != http.StatusOK && (a.kind == "" || a.code == "" || a.detail == "") {
				shape.add("%s: %d %q %q %q", k.name, a.status, a.kind, a.code, a.detail)
			}
			if a.status == http.StatusServiceUnavailable {
				v.over503++
				if a.retryAfter == "" {
					noRetry.add("%s: %s", k.name, a.detail)
				}
			}
		}
		if o.req.direct != nil {
			continue
		}
		f := o.final()
		if f.err != nil {
			continue
		}
		if f.status == http.StatusServiceUnavailable {
			v.gaveUp++ // allowed: the budget was held by others maxAttempts times
			continue
		}
		switch {
		case k.valid && !o.acked():
			validWrong.add("%s (request %d): %d %s: %s", k.name, o.req.index, f.status, f.code, f.detail)
		case !k.valid && (f.status != k.status || f.code != k.code || !strings.Contains(f.detail, k.detail)):
			refusedWrong.add("%s (request %d): got %d %s %q, want %d %s containing %q",
				k.name, o.req.index, f.status, f.code, f.detail, k.status, k.code, k.detail)
		}
	}
	for _, e := range []*examples{transport, shape, noRetry, validWrong, refusedWrong, produceErr} {
		v.report(e)
	}
	// Capture's own count of what it answered must be the client's.
	statuses := map[int]bool{}
	for s := range clientCounts {
		statuses[s] = true
	}
	for s := range r.captureStatuses {
		statuses[s] = true
	}
	for s := range statuses {
		if clientCounts[s] != r.captureStatuses[s] {
			v.fail("capture counted %v answers %d (flagwatch_capture_requests_total), the client got %v", r.captureStatuses[s], s, clientCounts[s])
		}
	}
}

func queryRows(ctx context.Context, conn store.Conn, q string, scan func(store.Rows) error) error {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return rows.Err()
}

// checkEvents checks the events table against what was sent and returns its rows (with
// FINAL) by soak_id.
func (v *verdict) checkEvents(ctx context.Context, conn store.Conn, stored map[string]sent, dead map[string]string,
	forbidden, unknown map[string]sent) map[string][]storedRow {
	rows := map[string][]storedRow{}
	err := queryRows(ctx, conn, "SELECT visitParamExtractString(properties, 'soak_id'), toString(uuid), distinct_id, ts_ms FROM events FINAL",
		func(rs store.Rows) error {
			var id string
			var r storedRow
			if err := rs.Scan(&id, &r.uuid, &r.user, &r.ts); err != nil {
				return err
			}
			rows[id] = append(rows[id], r)
			v.finalRows++
			return nil
		})
	if err != nil {
		v.fail("read events: %v", err)
		return rows
	}
	missing := &examples{what: "acknowledged events not stored"}
	twice := &examples{what: "acknowledged events on more than one row with FINAL"}
	wrong := &examples{what: "events stored with another uuid or distinct_id than sent"}
	for id, s := range stored {
		rs := rows[id]
		switch {
		case len(rs) == 0:
			missing.add("%s (uuid %q, user %s)", id, s.uuid, s.user)
		case len(rs) > 1:
			twice.add("%s: %d rows %v", id, len(rs), rs)
		case s.uuid != "" && rs[0].uuid != s.uuid, rs[0].user != s.user:
			wrong.add("%s: stored %s/%s, sent %s/%s", id, rs[0].uuid, rs[0].user, s.uuid, s.user)
		}
	}
	refusedStored := &examples{what: "events of refused requests stored"}
	oldStored := &examples{what: "events ingest must dead-letter (too old) stored"}
	unexpected := &examples{what: "rows the soak did not send"}
	for id, rs := range rows {
		_, isStored := stored[id]
		_, isUnknown := unknown[id]
		_, isForbidden := forbidden[id]
		_, isDead := dead[id]
		switch {
		case isStored:
		case isUnknown:
			v.unknownStored++
			if len(rs) > 1 {
				twice.add("%s (request without a certain answer): %d rows", id, len(rs))
			}
		case isForbidden:
			refusedStored.addKind(forbidden[id].kind, "%s (%s): %v", id, forbidden[id].kind, rs)
		case isDead:
			oldStored.add("%s: %v", id, rs)
		default:
			unexpected.add("soak_id %q: %v", id, rs)
		}
	}
	for _, e := range []*examples{missing, twice, wrong, refusedStored, oldStored, unexpected} {
		v.report(e)
	}

	// No uuid twice, as readers see the table; raw duplicates are the kills' replays.
	var dups []string
	if err := queryRows(ctx, conn, "SELECT toString(uuid), count() AS n FROM events FINAL GROUP BY uuid HAVING n > 1 LIMIT 5",
		func(rs store.Rows) error {
			var u string
			var n uint64
			err := rs.Scan(&u, &n)
			dups = append(dups, fmt.Sprintf("%s×%d", u, n))
			return err
		}); err != nil {
		v.fail("%v", err)
	}
	if len(dups) > 0 {
		v.fail("uuids on more than one row with FINAL: %v", dups)
	}
	var uniq uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(uuid) FROM events").Scan(&v.rawRows, &uniq); err != nil {
		v.fail("count events: %v", err)
	}
	v.rawDupUUIDs = v.rawRows - uniq
	// Merged, every raw duplicate collapses: each was a replay of the same row.
	var parts []string
	if err := queryRows(ctx, conn, "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active",
		func(rs store.Rows) error {
			var p string
			err := rs.Scan(&p)
			parts = append(parts, p)
			return err
		}); err != nil {
		v.fail("%v", err)
	}
	v.partitions = len(parts)
	for _, p := range parts {
		if err := conn.Exec(ctx, "OPTIMIZE TABLE events PARTITION "+p+" FINAL"); err != nil {
			v.fail("merge events partition %s: %v", p, err)
		}
	}
	var left int64
	if err := conn.QueryRow(ctx, "SELECT toInt64(count()) - toInt64(uniqExact(uuid)) FROM events").Scan(&left); err != nil {
		v.fail("count events after the merge: %v", err)
	} else if left != 0 {
		v.fail("%d duplicate rows left after OPTIMIZE TABLE events FINAL: duplicates that are not replays of the same row", left)
	}
	return rows
}

type triple struct{ flag, user, variant string }

// checkExposures checks that each (flag, user, variant)'s first exposure in the
// exposures table is the first of the stored events that carry it (whichever they are:
// an event stored that should not be is reported by checkEvents): the exposure cache
// may skip rows, never the first, across kills and replays.
func (v *verdict) checkExposures(ctx context.Context, conn store.Conn, all map[string]sent, rows map[string][]storedRow) {
	want := map[triple]int64{}
	for id, rs := range rows {
		s, ok := all[id]
		if !ok || len(rs) == 0 {
			continue
		}
		for _, x := range s.exposures {
			k := triple{x.flag, s.user, x.variant}
			if ts, ok := want[k]; !ok || rs[0].ts < ts {
				want[k] = rs[0].ts
			}
		}
	}
	got := map[triple]int64{}
	if err := queryRows(ctx, conn, "SELECT flag, distinct_id, variant, min(ts_ms) FROM exposures GROUP BY flag, distinct_id, variant",
		func(rs store.Rows) error {
			var k triple
			var ts int64
			err := rs.Scan(&k.flag, &k.user, &k.variant, &ts)
			got[k] = ts
			return err
		}); err != nil {
		v.fail("read exposures: %v", err)
		return
	}
	v.exposureTriples = len(want)
	bad := &examples{what: "(flag, user, variant) whose first exposure is not the first stored event's"}
	for k, ts := range want {
		if g, ok := got[k]; !ok {
			bad.add("%v: no exposure row, want %s", k, time.UnixMilli(ts).UTC())
		} else if g != ts {
			bad.add("%v: first exposure %s, want %s", k, time.UnixMilli(g).UTC(), time.UnixMilli(ts).UTC())
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			bad.add("%v: exposure rows of no stored event", k)
		}
	}
	v.report(bad)
}

// checkDLQ checks every message of the dead-letter topic: it carries a reason and a
// detail, it is one the soak expects there with that reason, and every message that
// must be there is.
func (v *verdict) checkDLQ(dlq []*kgo.Record, stored map[string]sent, dead map[string]string, forbidden map[string]sent, directWant map[string]string) {
	noReason := &examples{what: "dead-lettered messages without a reason or detail header"}
	wrongReason := &examples{what: "dead-lettered messages with another reason than their kind's"}
	unexpected := &examples{what: "dead-lettered messages the soak did not expect there"}
	seen := map[string]int{}
	for _, rec := range dlq {
		v.dlqMessages++
		h := map[string]string{}
		for _, x := range rec.Headers {
			h[x.Key] = string(x.Value)
		}
		reason, detail := h["flagwatch-dlq-reason"], h["flagwatch-dlq-detail"]
		v.dlqByReason[reason]++
		if reason == "" || detail == "" {
			noReason.add("offset %d: reason %q, detail %q: %.120s", rec.Offset, reason, detail, rec.Value)
		}
		if id, ok := h[soakIDHeader]; ok {
			want, ok := directWant[id]
			switch {
			case !ok || want == "":
				unexpected.add("%s (%s: %s)", id, reason, detail)
			case want != reason:
				wrongReason.add("%s: %s (%s), want %s", id, reason, detail, want)
			}
			seen[id]++
			continue
		}
		var msg struct {
			Properties struct {
				SoakID string `json:"soak_id"`
			} `json:"properties"`
		}
		_ = json.Unmarshal(rec.Value, &msg)
		id := msg.Properties.SoakID
		want, ok := dead[id]
		switch {
		case !ok:
			what := "not sent by the soak"
			kind := ""
			if s, ok := stored[id]; ok {
				what, kind = "acknowledged for storing", s.kind
			} else if s, ok := forbidden[id]; ok {
				what, kind = "of a refused request", s.kind
			}
			unexpected.addKind(kind, "soak_id %q, %s (%s): %s: %s", id, what, kind, reason, detail)
		case want != reason:
			wrongReason.add("%s: %s (%s), want %s", id, reason, detail, want)
		}
		seen[id]++
	}
	missing := &examples{what: "messages ingest must dead-letter that are not in the dead-letter topic"}
	for id, reason := range dead {
		if seen[id] == 0 {
			missing.add("%s (%s)", id, reason)
		}
	}
	for id, reason := range directWant {
		if reason != "" && seen[id] == 0 {
			missing.add("%s (%s)", id, reason)
		}
	}
	for _, n := range seen {
		v.dlqCopies += n - 1
	}
	for _, e := range []*examples{noReason, wrongReason, unexpected, missing} {
		v.report(e)
	}
}

func (v *verdict) summary(r *run) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	reqs := len(r.outcomes)
	p("== soak: %s at %g requests/s (seed %d) ==", r.cfg.duration, r.cfg.rate, r.cfg.seed)
	p("requests: %d scheduled in %s (%.1f/s), %d answers (%d answered 503 and retried, %d still 503 after %d tries, %d without an answer)",
		reqs, r.sendTook.Round(time.Second), float64(reqs)/r.sendTook.Seconds(), v.answers, v.over503, v.gaveUp, maxAttempts, v.transport)
	order := slices.Clone(v.kindsOrder)
	sort.SliceStable(order, func(i, j int) bool { return slices.Index(allKinds, order[i]) < slices.Index(allKinds, order[j]) })
	p("  %-34s %8s  %s", "kind", "requests", "answers")
	for _, k := range order {
		var parts []string
		total := 0
		for l, n := range v.byKind[k] {
			parts = append(parts, fmt.Sprintf("%s ×%d", l, n))
			total += n
		}
		sort.Strings(parts)
		n := 0
		for _, o := range r.outcomes {
			if o.req.kind == k {
				n++
			}
		}
		p("  %-34s %8d  %s", k.name, n, strings.Join(parts, ", "))
	}
	p("events: %d acknowledged in 2xx → %d stored exactly once (FINAL), %d dead-lettered (too_old); %d in refused requests, none stored",
		v.acked, v.ackedStored, v.ackedDead, v.refusedEvents)
	if v.unknownEvents > 0 {
		p("  %d events of requests without a certain answer: %d stored (at most once each)", v.unknownEvents, v.unknownStored)
	}
	p("  events table: %d rows with FINAL; %d raw rows at the end, %d of them a uuid's second row (replays after the kills that merges had not collapsed yet); none after OPTIMIZE FINAL of its %d partitions",
		v.finalRows, v.rawRows, v.rawDupUUIDs, v.partitions)
	var acked float64
	for _, ir := range r.ingestRuns {
		acked += ir.rows
	}
	p("  replays: ClickHouse acknowledged %.0f event rows to ingest's %d runs, for %d events: %.0f stored a second time (and more if a kill cut an insert short after ClickHouse stored it)",
		acked, len(r.ingestRuns), v.finalRows, max(0, acked-float64(v.finalRows)))
	p("  exposures: %d (flag, user, variant) first exposures, each the first stored event's", v.exposureTriples)
	p("direct to Kafka: %d stored, %d dead-lettered", v.directStored, v.directDead)
	var reasons []string
	for k, n := range v.dlqByReason {
		reasons = append(reasons, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(reasons)
	p("dead-letter topic: %d messages (%d extra copies from the kills), by reason: %s", v.dlqMessages, v.dlqCopies, strings.Join(reasons, ", "))
	var runs []string
	for i, ir := range r.ingestRuns {
		end := "stopped"
		switch {
		case ir.killed && ir.aimed:
			end = fmt.Sprintf("SIGKILLed right after a batch was acknowledged (lag %d)", ir.lagAtKill)
		case ir.killed:
			end = fmt.Sprintf("SIGKILLed (lag %d)", ir.lagAtKill)
		case ir.unexpected:
			end = fmt.Sprintf("EXITED: %v", ir.p.exitErr)
		}
		runs = append(runs, fmt.Sprintf("run %d %s–%s %s, %.0f event rows acknowledged, peak RSS %s", i+1,
			ir.p.started.Sub(r.start).Round(time.Second), ir.p.exited.Sub(r.start).Round(time.Second), end, ir.rows, mib(ir.p.peakRSS())))
	}
	p("ingest: %s", strings.Join(runs, "; "))
	p("  caught up %s after the load; SIGTERM at the end: %s", r.catchUp.Round(time.Second), exitText(r.ingestStop))
	alive := "never exited"
	if r.captureExitedEarly {
		alive = "EXITED"
	}
	p("capture: %s, /healthz %d at the end; RSS %s idle, peak %s (VmHWM; %s the largest of %d samples), bound %s (3 × the in-flight budget); SIGTERM: %s",
		alive, r.captureHealth, mib(r.rssIdle), mib(r.rssHWM), mib(r.rssMax), r.rssSamples, mib(rssBound), exitText(r.captureStop))
	if len(v.failures) == 0 {
		p("PASS: every check")
	} else {
		p("FAIL: %d checks", len(v.failures))
	}
	return b.String()
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}
