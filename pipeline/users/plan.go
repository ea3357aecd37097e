package users

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// ExposureDay is the pseudo segment property of a user's first-exposure day (UTC date,
// 2006-01-02), as the analyzer's exposure-day cohorts name it.
const ExposureDay = "$exposure_day"

// Multiple is the variant of users who saw two or more variants of a flag: left out of
// every comparison, and out of these lists.
const Multiple = "$multiple"

// measure is one side of a metric: the count of an event per user, or the sum of one of
// its numeric properties.
type measure struct{ event, property string }

// plan is a validated query: what to read and how to page.
type plan struct {
	q      Query
	flag   config.Flag
	metric *config.Metric // nil for a flag without metrics
	// measures are the metric's: one, or a ratio's numerator and denominator.
	measures []measure
	window   time.Duration
	// props are the segment properties a user's row shows: the flag's, then filtered ones.
	props []string
	// after is the keyset cursor (first-exposure orders); offset the value orders'.
	after  *key
	offset int
}

// key is a position in a first-exposure order.
type key struct {
	first int64
	id    string
}

// cursor is what a NextCursor encodes; H ties it to the query it came from.
type cursor struct {
	H  uint64 `json:"h"`
	T  int64  `json:"t,omitempty"`
	ID string `json:"id,omitempty"`
	O  int    `json:"o,omitempty"`
}

// resolve checks q against the monitors and fills in its defaults. extra names a
// segment property the caller may filter on although the flag does not declare it (a
// discovered property an alert names); requests never pass one.
func resolve(mons *config.Monitors, q Query, extra string) (*plan, error) {
	if q.Flag == "" {
		return nil, badf("a flag key is required")
	}
	f := mons.ForFlag(q.Flag, nil)
	if !f.ExposeUsers {
		return nil, offError(q.Flag)
	}
	p := &plan{q: q, flag: f, window: mons.Defaults.Window}
	if p.q.Sort == "" {
		p.q.Sort = NewestFirst
	}
	if !slices.Contains(Sorts, p.q.Sort) {
		return nil, badf("unknown sort %q: want %s", q.Sort, sortNames())
	}
	switch {
	case p.q.Limit == 0:
		p.q.Limit = DefaultLimit
	case p.q.Limit < 0 || p.q.Limit > MaxLimit:
		return nil, badf("limit %d: want 1 to %d", q.Limit, MaxLimit)
	}
	if err := p.resolveVariant(); err != nil {
		return nil, err
	}
	if err := p.resolveMetric(mons); err != nil {
		return nil, err
	}
	if err := p.resolveSegments(extra); err != nil {
		return nil, err
	}
	if err := p.decodeCursor(); err != nil {
		return nil, err
	}
	return p, nil
}

func sortNames() string {
	var ss []string
	for _, s := range Sorts {
		ss = append(ss, string(s))
	}
	return strings.Join(ss, ", ")
}

func (p *plan) resolveVariant() error {
	v := p.q.Variant
	switch {
	case v == "":
		return nil
	case v == Multiple:
		return badf("variant %s: users who saw two or more variants of %s are left out of every comparison, and so out of these lists", Multiple, p.flag.Key)
	case len(p.flag.Split) > 0 && !slices.Contains(p.flag.Split.Variants(), v):
		return badf("unknown variant %q of %s: want %s", v, p.flag.Key, strings.Join(p.flag.Split.Variants(), " or "))
	}
	return nil
}

func (p *plan) resolveMetric(mons *config.Monitors) error {
	name := p.q.Metric
	if name == "" {
		name = mons.PrimaryMetric(p.flag)
	}
	i := slices.IndexFunc(p.flag.Metrics, func(m config.Metric) bool { return m.Name == name })
	if i < 0 {
		if p.q.Metric == "" { // a flag without metrics: users and sessions only
			if p.q.Converted != nil || p.q.Sort.byValue() {
				return badf("%s has no metric to tell converted users or order by value", p.flag.Key)
			}
			return nil
		}
		var names []string
		for _, m := range p.flag.Metrics {
			names = append(names, m.Name)
		}
		return badf("unknown metric %q of %s: want one of %s", p.q.Metric, p.flag.Key, strings.Join(names, ", "))
	}
	m := p.flag.Metrics[i]
	p.metric, p.q.Metric = &m, m.Name
	if m.Window > 0 {
		p.window = m.Window
	}
	switch m.Kind {
	case config.Ratio:
		p.measures = []measure{{m.Numerator.Event, m.Numerator.Property}, {m.Denominator.Event, m.Denominator.Property}}
	case config.Sum:
		p.measures = []measure{{m.Event, m.Property}}
	default:
		p.measures = []measure{{m.Event, ""}}
	}
	return nil
}

func (p *plan) resolveSegments(extra string) error {
	allowed := append(slices.Clone(p.flag.Segments), ExposureDay)
	if extra != "" {
		allowed = append(allowed, extra)
	}
	p.props = slices.Clone(p.flag.Segments)
	seen := map[string]bool{}
	for _, s := range p.q.Segments {
		switch {
		case !slices.Contains(allowed, s.Property):
			return badf("segment %q: %q is not a segment property of %s (want %s)", s.Property+":"+s.Value, s.Property, p.flag.Key, strings.Join(allowed, ", "))
		case seen[s.Property]:
			return badf("segment %q: %s is filtered on twice", s.Property+":"+s.Value, s.Property)
		case s.Property == ExposureDay:
			if _, err := time.Parse(time.DateOnly, s.Value); err != nil {
				return badf("segment %q: an exposure day is a date, 2006-01-02", s.Property+":"+s.Value)
			}
		}
		seen[s.Property] = true
		if s.Property != ExposureDay && !slices.Contains(p.props, s.Property) {
			p.props = append(p.props, s.Property)
		}
	}
	return nil
}

// hash identifies the query a cursor belongs to (everything but the limit and cursor).
func (p *plan) hash() uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00", p.q.Flag, p.q.Variant, p.q.Metric, p.q.Sort)
	for _, s := range p.q.Segments {
		fmt.Fprintf(h, "%s\x01%s\x00", s.Property, s.Value)
	}
	if c := p.q.Converted; c != nil {
		fmt.Fprintf(h, "%t", *c)
	}
	return h.Sum64()
}

func (p *plan) decodeCursor() error {
	if p.q.Cursor == "" {
		return nil
	}
	bad := badf("cursor %q is not a next_cursor of this query (start again without one)", p.q.Cursor)
	b, err := base64.RawURLEncoding.DecodeString(p.q.Cursor)
	if err != nil {
		return bad
	}
	var c cursor
	if json.Unmarshal(b, &c) != nil || c.H != p.hash() || c.O < 0 {
		return bad
	}
	if p.q.Sort.byValue() {
		p.offset = c.O
	} else {
		if c.ID == "" {
			return bad
		}
		p.after = &key{first: c.T, id: c.ID}
	}
	return nil
}

func (p *plan) encodeCursor(c cursor) string {
	c.H = p.hash()
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// converted says whether a user with these measure totals reached the metric.
func (p *plan) converted(counts []float64) bool { return len(counts) > 0 && counts[0] > 0 }

// value is the metric per user from its measures' counts and sums.
func (p *plan) value(counts, sums []float64) (float64, *float64) {
	if p.metric == nil {
		return 0, nil
	}
	side := func(i int) float64 {
		if p.measures[i].property != "" {
			return sums[i]
		}
		return counts[i]
	}
	switch p.metric.Kind {
	case config.Conversion:
		return min(counts[0], 1), nil
	case config.Ratio:
		d := side(1)
		return side(0), &d
	default:
		return side(0), nil
	}
}
