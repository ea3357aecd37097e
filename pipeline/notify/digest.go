package notify

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// DigestRow is one analysis result: a (flag, metric, segment, variant) at one analyzer
// pass (SPEC §6, `analyzer once`). Flag-level findings (srm, stale, …) have no metric;
// segment-property findings have a property and no value. A baseline row (the control)
// has a zero interval.
type DigestRow struct {
	PassTime        time.Time
	Flag            string
	Metric          string
	SegmentProperty string
	SegmentValue    string
	Variant         string
	N               uint64
	Mean            float64
	Lift            float64
	CILow, CIHigh   float64
	P               float64
	ChanceToWin     float64
	Decision        string
	Reason          string
}

func (r DigestRow) overall() bool  { return r.SegmentProperty == "" }
func (r DigestRow) baseline() bool { return r.CILow == 0 && r.CIHigh == 0 && r.Lift == 0 }
func (r DigestRow) key() string {
	return r.Flag + "|" + r.Metric + "|" + r.SegmentProperty + "=" + r.SegmentValue + "|" + r.Variant
}

// ResultsSource gives the digest its data.
type ResultsSource interface {
	// Results returns each flag's rows from its latest analyzer pass in (at-7d, at].
	Results(ctx context.Context, at time.Time) ([]DigestRow, error)
}

// chResults reads analysis_results (written by the analyzer).
type chResults struct{ conn store.Conn }

func (s chResults) Results(ctx context.Context, at time.Time) ([]DigestRow, error) {
	rows, err := s.conn.Query(ctx, `SELECT pass_time, flag, metric, segment_property, segment_value, variant,
    n, mean, lift, ci_low, ci_high, p, chance_to_win, decision, reason
FROM analysis_results
WHERE (flag, pass_time) IN (
    SELECT flag, max(pass_time) FROM analysis_results
    WHERE pass_time <= toDateTime(`+strconv.FormatInt(at.Unix(), 10)+`) AND pass_time > toDateTime(`+strconv.FormatInt(at.Add(-7*24*time.Hour).Unix(), 10)+`) GROUP BY flag)
ORDER BY flag, metric, segment_property, segment_value, variant`)
	if err != nil {
		return nil, fmt.Errorf("query analysis_results: %w", err)
	}
	defer rows.Close()
	var out []DigestRow
	seen := map[string]int{}
	for rows.Next() {
		var r DigestRow
		if err := rows.Scan(&r.PassTime, &r.Flag, &r.Metric, &r.SegmentProperty, &r.SegmentValue, &r.Variant,
			&r.N, &r.Mean, &r.Lift, &r.CILow, &r.CIHigh, &r.P, &r.ChanceToWin, &r.Decision, &r.Reason); err != nil {
			return nil, fmt.Errorf("scan analysis_results: %w", err)
		}
		if i, dup := seen[r.key()]; dup { // a pass written twice (at-least-once): keep one
			out[i] = r
			continue
		}
		seen[r.key()] = len(out)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read analysis_results: %w", err)
	}
	return out, nil
}

// severityRank orders decisions from most to least pressing.
func severityRank(d string) int {
	switch d {
	case alert.GuardrailBreach:
		return 0
	case alert.Loss:
		return 1
	case alert.SRM:
		return 2
	case alert.Stale:
		return 3
	case alert.SegmentDivergence:
		return 4
	case alert.BehaviourShift:
		return 5
	case alert.Win:
		return 6
	case alert.Inconclusive:
		return 7
	case alert.InsufficientData:
		return 8
	default:
		return 9
	}
}

// flagDigest is one flag's part of the digest.
type flagDigest struct {
	flag     string
	status   string // the most pressing overall decision
	was      string // last week's, "" when the flag is new
	users    []variantUsers
	best     *DigestRow
	worst    *DigestRow
	segments []DigestRow
	shifts   []string
	findings []string    // findings about the whole flag or a segment property (srm, stale, …)
	chart    []DigestRow // overall metric rows, for the chart
}

type variantUsers struct {
	variant string
	n       uint64
}

func flagStatus(rows []DigestRow) string {
	status := ""
	for _, r := range rows {
		if r.overall() && (status == "" || severityRank(r.Decision) < severityRank(status)) {
			status = r.Decision
		}
	}
	if status == "" {
		status = alert.InsufficientData
	}
	return status
}

// summarise builds the per-flag digest from this week's and last week's rows.
func summarise(now, prev []DigestRow) []flagDigest {
	byFlag := map[string][]DigestRow{}
	var flags []string
	for _, r := range now {
		if _, ok := byFlag[r.Flag]; !ok {
			flags = append(flags, r.Flag)
		}
		byFlag[r.Flag] = append(byFlag[r.Flag], r)
	}
	prevByFlag := map[string][]DigestRow{}
	for _, r := range prev {
		prevByFlag[r.Flag] = append(prevByFlag[r.Flag], r)
	}
	var out []flagDigest
	for _, f := range flags {
		rows := byFlag[f]
		d := flagDigest{flag: f, status: flagStatus(rows)}
		if p := prevByFlag[f]; len(p) > 0 {
			d.was = flagStatus(p)
		}
		users := map[string]uint64{}
		var metricRows []DigestRow
		for _, r := range rows {
			if r.overall() && r.Metric != "" && r.Variant != "" {
				users[r.Variant] = max(users[r.Variant], r.N)
				if !r.baseline() {
					metricRows = append(metricRows, r)
				}
			}
			if !r.overall() && (r.Decision == alert.Win || r.Decision == alert.Loss || r.Decision == alert.GuardrailBreach ||
				r.Decision == alert.SegmentDivergence || r.Decision == alert.BehaviourShift) {
				d.segments = append(d.segments, r)
			}
		}
		for v, n := range users {
			d.users = append(d.users, variantUsers{v, n})
		}
		sort.Slice(d.users, func(i, j int) bool { return d.users[i].variant < d.users[j].variant })
		d.chart = metricRows
		// Best and worst by chance to win, which knows each metric's goal direction; lift
		// breaks ties (and decides when the analyzer reports no chance to win).
		better := func(a, b DigestRow) bool {
			if a.ChanceToWin != b.ChanceToWin {
				return a.ChanceToWin > b.ChanceToWin
			}
			return a.Lift > b.Lift
		}
		for i := range metricRows {
			r := &metricRows[i]
			if d.best == nil || better(*r, *d.best) {
				d.best = r
			}
			if d.worst == nil || better(*d.worst, *r) {
				d.worst = r
			}
		}
		if d.worst == d.best {
			d.worst = nil
		}
		sort.SliceStable(d.segments, func(i, j int) bool {
			a, b := d.segments[i], d.segments[j]
			if ra, rb := severityRank(a.Decision), severityRank(b.Decision); ra != rb {
				return ra < rb
			}
			return math.Abs(a.Lift) > math.Abs(b.Lift)
		})
		if len(d.segments) > 3 {
			d.segments = d.segments[:3]
		}
		d.shifts = shifts(rows, prevByFlag[f])
		d.findings = findings(rows)
		out = append(out, d)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if ri, rj := severityRank(out[i].status), severityRank(out[j].status); ri != rj {
			return ri < rj
		}
		return out[i].flag < out[j].flag
	})
	return out
}

// shifts lists what changed since last week: decisions that moved, lifts that moved by
// five points or more, and findings about the flag as a whole.
func shifts(now, prev []DigestRow) []string {
	if len(prev) == 0 {
		return []string{"new this week"}
	}
	old := map[string]DigestRow{}
	for _, r := range prev {
		old[r.key()] = r
	}
	var out []string
	for _, r := range now {
		if !r.overall() || r.Metric == "" || r.baseline() {
			continue
		}
		name := r.Metric
		if r.Variant != "" {
			name += " (" + r.Variant + ")"
		}
		o, ok := old[r.key()]
		switch {
		case !ok:
			out = append(out, name+": new metric")
		case o.Decision != r.Decision:
			out = append(out, name+": "+decisionWords(o.Decision)+" → "+decisionWords(r.Decision))
		case math.Abs(r.Lift-o.Lift) >= 0.05:
			out = append(out, name+": lift "+pct(o.Lift)+" → "+pct(r.Lift))
		}
	}
	if len(out) > 4 {
		out = append(out[:4], fmt.Sprintf("…and %d more", len(out)-4))
	}
	if len(out) == 0 {
		out = []string{"no change"}
	}
	return out
}

// findings lists the flag's findings that are not about one metric (srm, stale,
// segment divergence, behaviour shift) with their evidence.
func findings(rows []DigestRow) []string {
	var out []string
	for _, r := range rows {
		if r.Metric != "" || r.Decision == "" || r.Decision == alert.Inconclusive || r.Decision == alert.InsufficientData {
			continue
		}
		s := decisionWords(r.Decision)
		if r.SegmentProperty != "" {
			s += " by " + r.SegmentProperty
		}
		if r.Reason != "" {
			s += ": " + r.Reason
		}
		out = append(out, s)
	}
	return out
}

func rowLift(r DigestRow) string {
	s := escape(r.Metric)
	if r.SegmentProperty != "" {
		s = escape(r.SegmentProperty+" = "+r.SegmentValue) + " · " + s
	}
	if r.Variant != "" {
		s += " (" + escape(r.Variant) + ")"
	}
	s += " " + pct(r.Lift) + " " + interval([2]float64{r.CILow, r.CIHigh})
	if r.ChanceToWin > 0 {
		s += ", chance to win " + chance(r.ChanceToWin)
	}
	return s
}

func (d flagDigest) text(reportBase string) string {
	var b strings.Builder
	b.WriteString(decisionEmoji(d.status) + " *" + escape(d.flag) + "*: " + decisionWords(d.status))
	if d.was != "" && d.was != d.status {
		b.WriteString(" (last week: " + decisionWords(d.was) + ")")
	}
	if u := reportURL(reportBase, d.flag); u != "" {
		b.WriteString(" · <" + u + "|report>")
	}
	if len(d.users) > 0 {
		var us []string
		for _, u := range d.users {
			us = append(us, escape(u.variant)+" "+count(int64(u.n)))
		}
		b.WriteString("\n*Users:* " + strings.Join(us, " · "))
	}
	if d.best != nil {
		b.WriteString("\n*Best:* " + rowLift(*d.best))
	}
	if d.worst != nil {
		b.WriteString("\n*Worst:* " + rowLift(*d.worst))
	}
	if len(d.segments) > 0 {
		var ss []string
		for _, s := range d.segments {
			x := rowLift(s)
			if s.Metric == "" {
				x = escape(s.SegmentProperty) + ": " + escape(s.Reason)
			}
			ss = append(ss, x+" ("+decisionWords(s.Decision)+")")
		}
		b.WriteString("\n*Notable segments:* " + strings.Join(ss, "; "))
	}
	if len(d.findings) > 0 {
		b.WriteString("\n*Findings:* " + escape(strings.Join(d.findings, "; ")))
	}
	b.WriteString("\n*Since last week:* " + escape(strings.Join(d.shifts, "; ")))
	return b.String()
}

// blocksPerFlag: one section and one divider.
const blocksPerFlag = 2

// renderDigest lays the digest out as one or more messages (Slack allows 50 blocks per
// message); the first carries the header and the counts, the rest continue in its thread.
func renderDigest(fs []flagDigest, at time.Time, reportBase string) []Message {
	title := "Weekly growth review · " + at.Format("Mon 2 Jan 2006")
	counts := map[string]int{}
	for _, f := range fs {
		counts[f.status]++
	}
	var cs []string
	for _, d := range []string{alert.GuardrailBreach, alert.Loss, alert.SRM, alert.Stale, alert.SegmentDivergence,
		alert.BehaviourShift, alert.Win, alert.Inconclusive, alert.InsufficientData} {
		if counts[d] > 0 {
			cs = append(cs, decisionEmoji(d)+" "+strconv.Itoa(counts[d])+" "+decisionWords(d))
		}
	}
	summary := fmt.Sprintf("*%d flag(s) monitored*", len(fs))
	if len(cs) > 0 {
		summary += " · " + strings.Join(cs, " · ")
	}
	if len(fs) == 0 {
		summary = "*No flag had analysis results this week.* Check that the analyzer runs and that flags are exposed."
	}
	text := fmt.Sprintf("Weekly growth review: %d flag(s) monitored", len(fs))
	first := []slack.Block{header(":bar_chart: " + title), section(summary),
		contextBlock("Lifts are relative to control with always-valid (sequential) intervals; best and worst by chance to win. Chart in the thread."),
		slack.NewDividerBlock()}
	msgs := []Message{{Text: text, Blocks: first}}
	cur := &msgs[0]
	for i, f := range fs {
		if len(cur.Blocks)+blocksPerFlag > maxBlocks {
			// Block 0 is the "part i of n" line, filled in below.
			msgs = append(msgs, Message{Text: fmt.Sprintf("%s (continued)", text), Blocks: []slack.Block{nil}})
			cur = &msgs[len(msgs)-1]
		}
		cur.Blocks = append(cur.Blocks, section(f.text(reportBase)))
		if i < len(fs)-1 {
			cur.Blocks = append(cur.Blocks, slack.NewDividerBlock())
		}
	}
	for i := 1; i < len(msgs); i++ {
		msgs[i].Blocks[0] = contextBlock(fmt.Sprintf("%s, part %d of %d", title, i+1, len(msgs)))
	}
	return msgs
}

// digest is one rendered digest.
type digest struct {
	msgs  []Message
	chart []byte // PNG, nil when there is nothing to draw
}

func buildDigest(ctx context.Context, src ResultsSource, at time.Time, reportBase string) (digest, error) {
	now, err := src.Results(ctx, at)
	if err != nil {
		return digest{}, fmt.Errorf("digest results: %w", err)
	}
	prev, err := src.Results(ctx, at.Add(-7*24*time.Hour))
	if err != nil {
		return digest{}, fmt.Errorf("digest results a week ago: %w", err)
	}
	fs := summarise(now, prev)
	d := digest{msgs: renderDigest(fs, at, reportBase)}
	var rows []DigestRow
	for _, f := range fs {
		rows = append(rows, f.chart...)
	}
	if len(rows) > 0 {
		if d.chart, err = liftChart(rows); err != nil {
			return digest{}, fmt.Errorf("draw digest chart: %w", err)
		}
	}
	return d, nil
}

// sendDigest posts the digest for the schedule slot at once across replicas and
// restarts: its op is the slot, claimed and logged like an alert's.
func (p *processor) sendDigest(ctx context.Context, src ResultsSource, at time.Time, op string) error {
	l := p.logger.With("channel", p.o.DefaultChannel, "op", op)
	done, err := p.log.Has(ctx, op)
	if err != nil {
		return err
	}
	if done {
		p.m.digests.WithLabelValues("skipped").Inc()
		l.Info("digest already sent")
		return nil
	}
	holder := p.o.ReplicaID + "/" + randomID(4)
	c, err := p.acquire(ctx, op, holder, p.o.ClaimLease)
	if err != nil {
		return err
	}
	if !c.Held {
		p.m.digests.WithLabelValues("skipped").Inc()
		l.Info("another notifier is sending the digest", "holder", c.Holder)
		return nil
	}
	if done, err = p.log.Has(ctx, op); err != nil || done {
		return err
	}
	d, err := buildDigest(ctx, src, at, p.o.ReportBaseURL)
	if err != nil {
		p.m.digests.WithLabelValues("failed").Inc()
		return err
	}
	e := Entry{Op: op, Kind: kindDigest, Replica: holder, Status: statusPosted, Message: d.msgs[0].marshalBody()}
	var channel, ts string
	for i, m := range d.msgs {
		m.Channel = p.o.DefaultChannel
		if i > 0 {
			m.ThreadTS = ts
			if channel != "" {
				m.Channel = channel
			}
		}
		ch, mts, err := p.post(ctx, op, holder, m)
		if err != nil {
			p.m.digests.WithLabelValues("failed").Inc()
			if i == 0 {
				return fmt.Errorf("post digest: %w", err)
			}
			l.Error("could not post the rest of the digest", "part", i+1, "err", err)
			break
		}
		p.m.sent.WithLabelValues(kindDigest).Inc()
		if i == 0 {
			channel, ts = ch, mts
		}
	}
	e.Channel, e.TS, e.At = channel, ts, p.now()
	if d.chart != nil && p.uploader != nil && channel != "" {
		f := File{Channel: channel, ThreadTS: ts, Name: "flagwatch-lift-" + at.Format("2006-01-02") + ".png",
			Title: "Lift with intervals, " + at.Format("2 Jan 2006"), Data: d.chart}
		if err := p.call(ctx, op, holder, channel, func(ctx context.Context) error { return p.uploader.Upload(ctx, f) }); err != nil {
			l.Error("could not upload the digest chart", "err", err)
			e.Error = "chart: " + err.Error()
		}
	}
	p.m.digests.WithLabelValues("sent").Inc()
	l.Info("digest sent", "ts", ts, "messages", len(d.msgs))
	return p.record(ctx, e)
}
