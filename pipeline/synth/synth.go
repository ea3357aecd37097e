// Package synth generates a realistic, seeded stream of PostHog-shaped events for the
// demo, benchmarks and end-to-end tests: users in countries and plans, page views,
// purchases with revenue, exceptions, and flag exposures whose variants change behaviour
// by planted effects (per event, per variant, optionally per segment).
//
// The decision that shapes it: effects are planted as multipliers on per-user event
// rates after the user's first exposure, so every test knows the true answer (a +40% lift
// in the US, a 60% rise of errors) without hard-coding the statistics' output.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Effect multiplies the rate of Event for users in Variant (and, when Segment is set,
// only for users whose segment property has that value).
type Effect struct {
	Event      string
	Variant    string
	Property   string // "" = everyone; else "$geoip_country_code" or "plan"
	Value      string
	Multiplier float64
	// FromDay, when set, limits the effect to users first exposed on or after that day
	// (a behaviour shift: later cohorts react differently).
	FromDay int
}

// Flag is one feature flag in the stream.
type Flag struct {
	Key      string
	Variants []string
	// Split is the true assignment probability per variant (an SRM flag sets one that
	// differs from the configured split).
	Split []float64
	// ExposedFrac of active users reach the flag (default 1).
	ExposedFrac float64
	// LaunchDay and EndDay bound the days exposures happen (EndDay 0 = to the end).
	LaunchDay, EndDay int
	// ReassignFrac of re-evaluations report a different variant (a flag-evaluation bug
	// that makes users $multiple).
	ReassignFrac float64
	Effects      []Effect
}

// Config describes the stream.
type Config struct {
	Seed  uint64
	Users int
	Start time.Time
	Days  int
	Flags []Flag
	// UserPrefix keeps streams of different tests apart.
	UserPrefix string
	// FeatureProps adds $feature/<key> properties to post-exposure events (as
	// posthog-js does), which are exposures too.
	FeatureProps bool
}

// Base rates per active user-day.
const (
	pageviewsPerDay  = 4.0
	purchaseProb     = 0.08
	exceptionsPerDay = 0.15
	activeProb       = 0.55
)

var (
	countries       = []string{"US", "IN", "GB", "DE", "BR"}
	countryWeights  = []float64{0.40, 0.20, 0.20, 0.10, 0.10}
	plans           = []string{"free", "pro"}
	planWeights     = []float64{0.7, 0.3}
	browsers        = []string{"Chrome", "Safari", "Firefox", "Edge"}
	oses            = []string{"Mac OS X", "Windows", "iOS", "Android"}
	pages           = []string{"/", "/pricing", "/products", "/cart", "/checkout", "/blog/launch"}
	defaultVariants = []string{"control", "test"}
)

type kv struct {
	k string
	v any
}

// Record is one generated Kafka message.
type Record struct {
	Key   string
	Value []byte
	Time  time.Time
}

type user struct {
	id, country, plan, browser, os string
	session                        string
	variants                       map[string]string // flag → variant after exposure
	exposedAt                      map[string]time.Time
}

func pick(r *rand.Rand, xs []string, w []float64) string {
	u := r.Float64()
	for i, p := range w {
		if u < p {
			return xs[i]
		}
		u -= p
	}
	return xs[len(xs)-1]
}

func poisson(r *rand.Rand, lambda float64) int {
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// Each generates the stream user by user (each user's events in time order) and calls
// emit for every record; it stops at the first error emit returns.
func (c Config) Each(emit func(Record) error) error {
	r := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	for i := 0; i < c.Users; i++ {
		u := &user{
			id:        c.UserPrefix + "user-" + strconv.Itoa(i),
			country:   pick(r, countries, countryWeights),
			plan:      pick(r, plans, planWeights),
			browser:   browsers[r.IntN(len(browsers))],
			os:        oses[r.IntN(len(oses))],
			variants:  map[string]string{},
			exposedAt: map[string]time.Time{},
		}
		first := r.IntN(max(1, c.Days*6/10))
		for day := first; day < c.Days; day++ {
			if day > first && r.Float64() > activeProb {
				continue
			}
			if err := c.userDay(r, u, day, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c Config) userDay(r *rand.Rand, u *user, day int, emit func(Record) error) error {
	t := c.Start.Add(time.Duration(day)*24*time.Hour + time.Duration(8+r.IntN(12))*time.Hour +
		time.Duration(r.IntN(3600))*time.Second)
	u.session = randUUID(r).String()
	// Exposures at the start of the session, for flags that are live today.
	for fi := range c.Flags {
		f := &c.Flags[fi]
		if _, ok := u.variants[f.Key]; ok || day < f.LaunchDay || (f.EndDay > 0 && day >= f.EndDay) {
			if ok && (f.EndDay == 0 || day < f.EndDay) && r.Float64() < 0.3 {
				// Re-evaluations: SDKs report the flag again on later sessions; a buggy
				// evaluation sometimes reports another variant ($multiple users).
				v := u.variants[f.Key]
				if f.ReassignFrac > 0 && r.Float64() < f.ReassignFrac {
					v = otherVariant(f, v)
				}
				if err := emit(c.exposure(r, u, f, v, t)); err != nil {
					return err
				}
			}
			continue
		}
		frac := f.ExposedFrac
		if frac == 0 {
			frac = 1
		}
		if r.Float64() > frac {
			continue
		}
		vs := f.Variants
		if len(vs) == 0 {
			vs = defaultVariants
		}
		split := f.Split
		if len(split) == 0 {
			split = make([]float64, len(vs))
			for i := range split {
				split[i] = 1 / float64(len(vs))
			}
		}
		v := pick(r, vs, split)
		u.variants[f.Key], u.exposedAt[f.Key] = v, t
		if err := emit(c.exposure(r, u, f, v, t)); err != nil {
			return err
		}
	}
	t = t.Add(time.Second)
	n := 1 + poisson(r, pageviewsPerDay-1)
	for k := 0; k < n; k++ {
		t = t.Add(time.Duration(5+r.IntN(120)) * time.Second)
		if err := emit(c.event(r, u, "$pageview", t, nil)); err != nil {
			return err
		}
	}
	if r.Float64() < purchaseProb*c.multiplier(u, "purchase", t) {
		t = t.Add(time.Duration(30+r.IntN(300)) * time.Second)
		revenue := math.Round(math.Exp(3.4+0.6*r.NormFloat64())*100) / 100
		if err := emit(c.event(r, u, "purchase", t, []kv{{"revenue", revenue}, {"currency", "USD"}})); err != nil {
			return err
		}
	}
	for k := poisson(r, exceptionsPerDay*c.multiplier(u, "$exception", t)); k > 0; k-- {
		t = t.Add(time.Duration(1+r.IntN(60)) * time.Second)
		if err := emit(c.event(r, u, "$exception", t, []kv{{"$exception_type", "TypeError"},
			{"$exception_message", "Cannot read properties of undefined (reading 'id')"}})); err != nil {
			return err
		}
	}
	return nil
}

// multiplier is the product of the planted effects that apply to u's event at t.
func (c Config) multiplier(u *user, ev string, t time.Time) float64 {
	m := 1.0
	for _, f := range c.Flags {
		v, ok := u.variants[f.Key]
		if !ok || t.Before(u.exposedAt[f.Key]) {
			continue
		}
		for _, e := range f.Effects {
			if e.Event != ev || e.Variant != v {
				continue
			}
			if e.Property != "" && u.segment(e.Property) != e.Value {
				continue
			}
			if e.FromDay > 0 && u.exposedAt[f.Key].Before(c.Start.Add(time.Duration(e.FromDay)*24*time.Hour)) {
				continue
			}
			m *= e.Multiplier
		}
	}
	return m
}

func (u *user) segment(p string) string {
	switch p {
	case "$geoip_country_code":
		return u.country
	case "plan":
		return u.plan
	}
	return ""
}

func otherVariant(f *Flag, v string) string {
	vs := f.Variants
	if len(vs) == 0 {
		vs = defaultVariants
	}
	for _, x := range vs {
		if x != v {
			return x
		}
	}
	return v
}

func (c Config) exposure(r *rand.Rand, u *user, f *Flag, v string, t time.Time) Record {
	return c.event(r, u, "$feature_flag_called", t, []kv{{"$feature_flag", f.Key}, {"$feature_flag_response", v}})
}

func (c Config) event(r *rand.Rand, u *user, name string, t time.Time, extra []kv) Record {
	b := make([]byte, 0, 512)
	id := randUUID(r)
	b = fmt.Appendf(b, `{"uuid":%q,"event":%q,"distinct_id":%q,"timestamp":%q,"properties":{`,
		id.String(), name, u.id, t.UTC().Format("2006-01-02T15:04:05.000Z"))
	b = fmt.Appendf(b, `"$lib":"web","$lib_version":"1.200.0","$browser":%q,"$os":%q,"$device_type":"Desktop",`+
		`"$current_url":"https://shop.example.com%s","$session_id":%q,"$geoip_country_code":%q,"plan":%q,`+
		`"$set":{"plan":%q,"$geoip_country_code":%q}`,
		u.browser, u.os, pages[r.IntN(len(pages))], u.session, u.country, u.plan, u.plan, u.country)
	for _, p := range extra {
		b = fmt.Appendf(b, `,%q:`, p.k)
		switch x := p.v.(type) {
		case string:
			b = strconv.AppendQuote(b, x)
		case float64:
			b = strconv.AppendFloat(b, x, 'f', -1, 64)
		}
	}
	if c.FeatureProps {
		for _, f := range c.Flags {
			if v, ok := u.variants[f.Key]; ok && !t.Before(u.exposedAt[f.Key]) {
				b = fmt.Appendf(b, `,"$feature/%s":%q`, f.Key, v)
			}
		}
	}
	b = append(b, "}}"...)
	return Record{Key: u.id, Value: b, Time: t}
}

// randUUID draws a version-4 uuid from r, so the stream is reproducible from its seed.
func randUUID(r *rand.Rand) uuid.UUID {
	var id uuid.UUID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	id[6] = (id[6] & 0x0f) | 0x40
	id[8] = (id[8] & 0x3f) | 0x80
	return id
}
