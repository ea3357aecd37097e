package users

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// DefaultMaxExamined is how many users one request with a converted filter may look at.
const DefaultMaxExamined = 5000

// Lister lists users from ClickHouse.
type Lister struct {
	Conn     store.Conn
	Monitors *config.Monitors
	// MaxExamined bounds the users a request with a converted filter examines
	// (DefaultMaxExamined when 0): the page may come back short, with a cursor.
	MaxExamined int
}

// candidate is one user of a cell, before their events are read.
type candidate struct {
	id      string
	first   int64
	variant string
}

// List answers q: a page of users. Errors are ErrOff (the flag does not expose its
// users), a *BadQueryError, or ClickHouse's.
func (l *Lister) List(ctx context.Context, q Query) (*Page, error) {
	p, err := resolve(l.Monitors, q, "")
	if err != nil {
		return nil, err
	}
	return l.list(ctx, p)
}

func (l *Lister) list(ctx context.Context, p *plan) (*Page, error) {
	page := &Page{Flag: p.flag.Key, Variant: p.q.Variant, Segments: p.q.Segments, Metric: p.q.Metric,
		Window: formatWindow(p.window), Converted: p.q.Converted, Sort: p.q.Sort, SegmentProperties: append([]string{}, p.props...), Users: []User{}}
	if p.metric != nil {
		page.MetricKind = string(p.metric.Kind)
	}
	t := tablesOf(l.Conn)
	var users []*User
	if p.q.Sort.byValue() {
		cands, err := l.candidates(ctx, p.valueSQL(t, p.q.Limit, p.offset))
		if err != nil {
			return nil, err
		}
		if len(cands) > p.q.Limit {
			cands = cands[:p.q.Limit]
			page.NextCursor = p.encodeCursor(cursor{O: p.offset + p.q.Limit})
		}
		if users, err = l.measure(ctx, p, t, cands); err != nil {
			return nil, err
		}
	} else {
		budget := p.q.Limit
		if p.q.Converted != nil {
			budget = max(p.q.Limit, l.MaxExamined)
			if l.MaxExamined <= 0 {
				budget = max(p.q.Limit, DefaultMaxExamined)
			}
		}
		cands, err := l.candidates(ctx, p.pageSQL(t, budget, 0))
		if err != nil {
			return nil, err
		}
		var last *candidate
	scan:
		for _, ch := range chunks(len(cands), func(i int) string { return cands[i].id }) {
			us, err := l.measureChunk(ctx, p, t, cands[ch[0]:ch[1]])
			if err != nil {
				return nil, err
			}
			for i, u := range us {
				page.Examined++
				last = &cands[ch[0]+i]
				if p.q.Converted == nil || u.Converted == *p.q.Converted {
					users = append(users, u)
					if len(users) == p.q.Limit {
						break scan
					}
				}
			}
		}
		if last != nil && (page.Examined < len(cands) || len(cands) == budget) {
			page.NextCursor = p.encodeCursor(cursor{T: last.first, ID: last.id})
		}
	}
	if err := l.finish(ctx, p, t, users); err != nil {
		return nil, err
	}
	for _, u := range users {
		page.Users = append(page.Users, *u)
	}
	return page, nil
}

// finish fills in the users' segments and recording links.
func (l *Lister) finish(ctx context.Context, p *plan, t tables, users []*User) error {
	if err := l.segments(ctx, p, t, users); err != nil {
		return err
	}
	for _, u := range users {
		for i := range u.Sessions {
			u.Sessions[i].Recording = RecordingLink(p.flag.RecordingsURL, u.Sessions[i].ID, u.DistinctID)
		}
	}
	return nil
}

// candidates reads the users a page statement picked, in its order.
func (l *Lister) candidates(ctx context.Context, sql string) ([]candidate, error) {
	rows, err := l.Conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("pick users: %w", err)
	}
	defer rows.Close()
	var out []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.first, &c.variant); err != nil {
			return nil, fmt.Errorf("scan users: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pick users: %w", err)
	}
	return out, nil
}

// measure reads the events of cands and returns them as users, in cands' order:
// converted, value, sessions. Segments and recording links are filled in later.
func (l *Lister) measure(ctx context.Context, p *plan, t tables, cands []candidate) ([]*User, error) {
	var out []*User
	for _, ch := range chunks(len(cands), func(i int) string { return cands[i].id }) {
		us, err := l.measureChunk(ctx, p, t, cands[ch[0]:ch[1]])
		if err != nil {
			return nil, err
		}
		out = append(out, us...)
	}
	return out, nil
}

// measureChunk is measure for as many users as one statement may list (chunks).
func (l *Lister) measureChunk(ctx context.Context, p *plan, t tables, cands []candidate) ([]*User, error) {
	out := make([]*User, len(cands))
	byID := make(map[string]int, len(cands))
	ids := make([]string, len(cands))
	firsts := make([]int64, len(cands))
	for i, c := range cands {
		out[i] = &User{DistinctID: c.id, Variant: c.variant, FirstExposure: time.UnixMilli(c.first).UTC(), Sessions: []Session{}}
		byID[c.id], ids[i], firsts[i] = i, c.id, c.first
	}
	if len(cands) == 0 {
		return out, nil
	}
	rows, err := l.Conn.Query(ctx, p.measureSQL(t, ids, firsts))
	if err != nil {
		return nil, fmt.Errorf("read the events of %d users: %w", len(cands), err)
	}
	defer rows.Close()
	n := len(p.measures)
	counts := make([][]float64, len(cands))
	sums := make([][]float64, len(cands))
	for i := range cands {
		counts[i], sums[i] = make([]float64, n), make([]float64, n)
	}
	sessions := make([][]Session, len(cands))
	for rows.Next() {
		var id, sid string
		var start, end int64
		var events uint64
		ns, ss := make([]float64, n), make([]float64, n)
		dest := []any{&id, &sid, &start, &end, &events}
		for i := 0; i < n; i++ {
			dest = append(dest, &ns[i], &ss[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan events: %w", err)
		}
		u, ok := byID[id]
		if !ok {
			continue
		}
		for i := 0; i < n; i++ {
			counts[u][i] += ns[i]
			sums[u][i] += ss[i]
		}
		if sid == "" {
			continue
		}
		s := Session{ID: sid, Start: time.UnixMilli(start).UTC(), End: time.UnixMilli(end).UTC(), Events: int(events)}
		if n > 0 {
			s.MetricEvents = int(ns[0])
		}
		sessions[u] = append(sessions[u], s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the events of %d users: %w", len(cands), err)
	}
	for i, u := range out {
		u.Converted = p.converted(counts[i])
		u.Value, u.Denominator = p.value(counts[i], sums[i])
		ss := sessions[i]
		sort.Slice(ss, func(a, b int) bool {
			if !ss[a].Start.Equal(ss[b].Start) {
				return ss[a].Start.Before(ss[b].Start)
			}
			return ss[a].ID < ss[b].ID
		})
		if len(ss) > MaxSessions {
			u.MoreSessions = len(ss) - MaxSessions
			ss = ss[:MaxSessions]
		}
		if ss != nil {
			u.Sessions = ss
		}
	}
	return out, nil
}

// segments fills in the users' segment properties of their first exposure.
func (l *Lister) segments(ctx context.Context, p *plan, t tables, us []*User) error {
	for _, u := range us {
		u.Segments = map[string]string{}
	}
	if len(p.props) == 0 || len(us) == 0 {
		return nil
	}
	byID := make(map[string]*User, len(us))
	for _, u := range us {
		byID[u.DistinctID] = u
	}
	for _, ch := range chunks(len(us), func(i int) string { return us[i].DistinctID }) {
		ids := make([]string, 0, ch[1]-ch[0])
		for _, u := range us[ch[0]:ch[1]] {
			ids = append(ids, u.DistinctID)
		}
		if err := l.readSegments(ctx, p, p.segmentsSQL(t, ids), byID); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lister) readSegments(ctx context.Context, p *plan, sql string, byID map[string]*User) error {
	rows, err := l.Conn.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("read segments: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		vals := make([]string, len(p.props))
		dest := []any{&id}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("scan segments: %w", err)
		}
		if u := byID[id]; u != nil {
			for i, prop := range p.props {
				if vals[i] != "" {
					u.Segments[prop] = vals[i]
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read segments: %w", err)
	}
	return nil
}

// formatWindow prints a window the way the monitors file writes it: 7d, 36h, 90m.
func formatWindow(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	for _, suf := range []string{"m0s", "h0m"} {
		if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-len(suf)+1]
		}
	}
	return s
}
