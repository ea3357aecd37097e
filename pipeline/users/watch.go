package users

import (
	"context"
	"log/slog"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// WatchSessions is how many sessions a "sessions to watch" reply links.
const WatchSessions = 5

// watchCandidates is how many users of the cell SessionsToWatch looks at.
const watchCandidates = 50

// watchTimeout bounds the reads behind one finding's sessions: an alert never waits
// longer for them.
const watchTimeout = 30 * time.Second

// SessionsToWatch picks up to WatchSessions recorded sessions behind a finding, from
// different users, for the Slack reply of SPEC §12 — or nil when there is nothing to
// watch: the decision is not a loss, guardrail breach or segment divergence, the flag
// does not expose its users or has no recordings_url, or no user of the cell has a
// session in the window.
//
// Whose sessions: the finding's variant in its segment (for a divergence, the segment
// value that moved most the wrong way), and among them the ones who show the harm —
// for a metric meant to rise, the newest users who did not reach it (one session each:
// their first after exposure, where they met the variant); for a metric meant to fall
// (errors), the users with the most of it (each one's session with the most).
func SessionsToWatch(ctx context.Context, conn store.Conn, mons *config.Monitors, flag string, f alert.Finding) (*alert.Watch, error) {
	fc := mons.ForFlag(flag, nil)
	if !fc.ExposeUsers || fc.RecordingsURL == "" || f.Metric == "" || f.Variant == "" {
		return nil, nil
	}
	switch f.Decision {
	case alert.Loss, alert.GuardrailBreach, alert.SegmentDivergence:
	default:
		return nil, nil
	}
	var metric *config.Metric
	for i := range fc.Metrics {
		if fc.Metrics[i].Name == f.Metric {
			metric = &fc.Metrics[i]
		}
	}
	if metric == nil {
		return nil, nil
	}
	// The harmful direction: against the goal, or the guardrail's.
	up := metric.Goal == config.Decrease
	if f.Decision == alert.GuardrailBreach && metric.Guardrail != nil {
		_, harm := metric.Guardrail.Limit()
		up = harm == config.Increase
	}
	var seg *Segment
	switch {
	case f.Segment != nil && f.Segment.Value != nil:
		seg = &Segment{Property: f.Segment.Property, Value: *f.Segment.Value}
	case f.Decision == alert.SegmentDivergence && f.Segment != nil:
		seg = worstSegment(f, up)
	}
	q := Query{Flag: flag, Variant: f.Variant, Metric: metric.Name, Limit: watchCandidates}
	extra := ""
	if seg != nil {
		q.Segments, extra = []Segment{*seg}, seg.Property
	}
	if up {
		q.Converted, q.Sort = ptrTo(true), MostFirst
	} else {
		q.Converted, q.Sort = ptrTo(false), NewestFirst
	}
	p, err := resolve(mons, q, extra)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, watchTimeout)
	defer cancel()
	page, err := (&Lister{Conn: conn, Monitors: mons}).list(ctx, p)
	if err != nil {
		return nil, err
	}
	w := &alert.Watch{Who: who(seg, f.Variant, *metric, up)}
	for _, u := range page.Users {
		if len(w.Sessions) == WatchSessions {
			break
		}
		if len(u.Sessions) == 0 {
			continue
		}
		s := u.Sessions[0] // the first after exposure
		if up {
			for _, x := range u.Sessions[1:] {
				if x.MetricEvents > s.MetricEvents {
					s = x
				}
			}
		}
		w.Sessions = append(w.Sessions, alert.Session{ID: s.ID, URL: s.Recording, Start: s.Start})
	}
	if len(w.Sessions) == 0 {
		return nil, nil
	}
	return w, nil
}

// worstSegment is a divergence's segment value that moved most the harmful way.
func worstSegment(f alert.Finding, up bool) *Segment {
	var worst *alert.SegmentEffect
	for i, s := range f.Numbers.Segments {
		if s.Property != f.Segment.Property {
			continue
		}
		if worst == nil || (up && s.Lift > worst.Lift) || (!up && s.Lift < worst.Lift) {
			worst = &f.Numbers.Segments[i]
		}
	}
	if worst == nil {
		return nil
	}
	return &Segment{Property: worst.Property, Value: worst.Value}
}

func ptrTo[T any](v T) *T { return &v }

// Watcher is the analyzer's hook (analyze.Analyzer.Sessions): SessionsToWatch on conn
// and mons, with a failure logged and the alert sent without sessions.
func Watcher(conn store.Conn, mons *config.Monitors, log *slog.Logger) func(ctx context.Context, flag string, f alert.Finding) *alert.Watch {
	if log == nil {
		log = slog.Default()
	}
	return func(ctx context.Context, flag string, f alert.Finding) *alert.Watch {
		w, err := SessionsToWatch(ctx, conn, mons, flag, f)
		if err != nil {
			log.Warn("could not pick sessions to watch; the alert goes without them", "flag", flag, "dedup_key", f.DedupKey, "err", err)
			return nil
		}
		return w
	}
}

// who says whose sessions they are: "GB users on test who did not purchase", "users on
// test with the most errors".
func who(seg *Segment, variant string, m config.Metric, up bool) string {
	s := "users on " + variant
	if seg != nil {
		switch seg.Property {
		case "$geoip_country_code", "$geoip_country_name":
			s = seg.Value + " " + s
		case ExposureDay:
			s = "users first exposed on " + seg.Value + " on " + variant
		default:
			s += " with " + seg.Property + " = " + seg.Value
		}
	}
	ev, prop := m.Event, m.Property
	if m.Kind == config.Ratio {
		ev, prop = m.Numerator.Event, m.Numerator.Property
	}
	switch {
	case !up:
		return s + " who did not " + verb(ev)
	case prop != "":
		return s + " with the highest " + prop
	}
	return s + " with the most " + noun(ev)
}

// verb and noun name well-known PostHog events in words; other events by their name.
func verb(event string) string {
	switch event {
	case "$pageview":
		return "view a page"
	case "$screen":
		return "view a screen"
	case "$exception":
		return "hit an error"
	case "$autocapture":
		return "interact with the page"
	}
	return event
}

func noun(event string) string {
	switch event {
	case "$exception":
		return "errors"
	case "$pageview":
		return "page views"
	case "$screen":
		return "screen views"
	case "$pageleave":
		return "page leaves"
	}
	return event + " events"
}
