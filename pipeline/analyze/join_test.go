package analyze

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// The metrics the join property is checked on: every kind, two windows.
var joinMetrics = []config.Metric{
	{Name: "purchase conversion", Kind: config.Conversion, Event: "purchase", Window: 7 * 24 * time.Hour},
	{Name: "pageviews 1d", Kind: config.Count, Event: "$pageview", Window: 24 * time.Hour},
	{Name: "revenue", Kind: config.Sum, Event: "purchase", Property: "revenue", Window: 7 * 24 * time.Hour},
	{Name: "errors", Kind: config.Count, Event: "$exception", Window: 3 * 24 * time.Hour},
	// Winsorized: a user's value counts at most the cap (in the window and the pre-period).
	{Name: "pageviews 1d capped", Kind: config.Count, Event: "$pageview", Window: 24 * time.Hour, Cap: 2},
	{Name: "revenue capped", Kind: config.Sum, Event: "purchase", Property: "revenue", Window: 7 * 24 * time.Hour, Cap: 50},
}

// capsBound counts, per capped metric, the users whose value the cap lowered in the
// bruteForce runs so far: the capped metrics must test a cap that binds.
var capsBound = map[string]int{}

const prePeriod = 7 * 24 * time.Hour

type stat struct{ n, sum, sumSq, pre float64 }

type statKey struct{ flag, variant, metric string }

// bruteForce recomputes the per-variant statistics from the raw records in Go, exactly
// as SPEC §3 states the attribution: first exposure per (flag, user), users with two or
// more variants excluded, events in [first, first + window), pre-period before first.
func bruteForce(t *testing.T, recs []synth.Record) map[statKey]stat {
	type assign struct {
		first    int64
		variant  string
		variants map[string]bool
	}
	assigns := map[string]map[string]*assign{} // flag → user
	type ev struct {
		name string
		ts   int64
		rev  float64
	}
	events := map[string][]ev{}
	seen := map[string]bool{}
	for _, r := range recs {
		evs, err := event.Decode(r.Value, r.Time)
		require.NoError(t, err)
		for _, e := range evs {
			if seen[e.UUID.String()] {
				continue // a replayed record
			}
			seen[e.UUID.String()] = true
			for _, x := range e.Exposures {
				if assigns[x.Flag] == nil {
					assigns[x.Flag] = map[string]*assign{}
				}
				a := assigns[x.Flag][e.DistinctID]
				if a == nil {
					a = &assign{first: math.MaxInt64, variants: map[string]bool{}}
					assigns[x.Flag][e.DistinctID] = a
				}
				a.variants[x.Variant] = true
				if e.TsMs < a.first {
					a.first, a.variant = e.TsMs, x.Variant
				}
			}
			var rev float64
			fmt.Sscanf(extract(e.Properties, `"revenue":`), "%g", &rev)
			events[e.DistinctID] = append(events[e.DistinctID], ev{e.Name, e.TsMs, rev})
		}
	}
	out := map[statKey]stat{}
	for flag, users := range assigns {
		for user, a := range users {
			if len(a.variants) > 1 {
				k := statKey{flag, Multiple, "users"}
				s := out[k]
				s.n++
				out[k] = s
				continue
			}
			for _, m := range joinMetrics {
				var x, q float64
				for _, e := range events[user] {
					if e.name != m.Event {
						continue
					}
					v := 1.0
					if m.Kind == config.Sum {
						v = e.rev
					}
					if e.ts >= a.first && e.ts < a.first+m.Window.Milliseconds() {
						x += v
					} else if e.ts >= a.first-prePeriod.Milliseconds() && e.ts < a.first {
						q += v
					}
				}
				if m.Kind == config.Conversion {
					x, q = math.Min(x, 1), math.Min(q, 1)
				}
				if m.Cap > 0 {
					if x > m.Cap || q > m.Cap {
						capsBound[m.Name]++
					}
					x, q = math.Min(x, m.Cap), math.Min(q, m.Cap)
				}
				k := statKey{flag, a.variant, m.Name}
				s := out[k]
				s.n++
				s.sum += x
				s.sumSq += x * x
				s.pre += q
				out[k] = s
			}
		}
	}
	return out
}

// extract returns what follows key in props ("" when absent).
func extract(props, key string) string {
	if _, after, ok := strings.Cut(props, key); ok {
		return after
	}
	return ""
}

// cohortStats is what the analyzer reads: the pass query over the assignment state.
func cohortStats(t *testing.T, conn store.Conn) map[statKey]stat {
	p := newPlan(prePeriod)
	idx := make([]int, len(joinMetrics))
	for i, m := range joinMetrics {
		idx[i], _ = p.metricMeasures(m, 7*24*time.Hour)
	}
	cells, err := p.run(context.Background(), conn, nil)
	require.NoError(t, err)
	out := map[statKey]stat{}
	for k, c := range cells {
		if k.segProp != "" {
			continue
		}
		if k.variant == Multiple {
			out[statKey{k.flag, Multiple, "users"}] = stat{n: float64(c.n)}
			continue
		}
		for i, m := range joinMetrics {
			mm := c.m[idx[i]]
			out[statKey{k.flag, k.variant, m.Name}] = stat{float64(c.n), mm.sum, mm.sumSq, mm.pre}
		}
	}
	return out
}

// referenceStats is the query-time join over the raw tables, independent of the
// assignment state the materialized view maintains.
func referenceStats(t *testing.T, conn store.Conn, flags []string) map[statKey]stat {
	out := map[statKey]stat{}
	ctx := context.Background()
	for _, flag := range flags {
		var multiple uint64
		require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf(`SELECT count() FROM (
			SELECT distinct_id, uniqExact(variant) AS nv FROM exposures FINAL WHERE flag = '%s' GROUP BY distinct_id HAVING nv > 1)`, flag)).Scan(&multiple))
		if multiple > 0 {
			out[statKey{flag, Multiple, "users"}] = stat{n: float64(multiple)}
		}
		for _, m := range joinMetrics {
			val := "1"
			if m.Kind == config.Sum {
				val = "visitParamExtractFloat(properties, 'revenue')"
			}
			in := fmt.Sprintf("event = '%s' AND ts_ms >= first AND ts_ms < first + %d", m.Event, m.Window.Milliseconds())
			pre := fmt.Sprintf("event = '%s' AND ts_ms >= first - %d AND ts_ms < first", m.Event, prePeriod.Milliseconds())
			x, q := fmt.Sprintf("sumIf(%s, %s)", val, in), fmt.Sprintf("sumIf(%s, %s)", val, pre)
			if m.Kind == config.Conversion {
				x, q = fmt.Sprintf("toFloat64(countIf(%s) > 0)", in), fmt.Sprintf("toFloat64(countIf(%s) > 0)", pre)
			}
			if m.Cap > 0 {
				x, q = fmt.Sprintf("least(%s, %g)", x, m.Cap), fmt.Sprintf("least(%s, %g)", q, m.Cap)
			}
			rows, err := conn.Query(ctx, fmt.Sprintf(`
				SELECT v0, toFloat64(count()), sum(x), sum(x * x), sum(q) FROM (
					SELECT distinct_id, v0, toFloat64(%s) AS x, toFloat64(%s) AS q
					FROM (
						SELECT distinct_id, argMin(variant, ts_ms) AS v0, min(ts_ms) AS first, uniqExact(variant) AS nv
						FROM exposures FINAL WHERE flag = '%s' GROUP BY distinct_id HAVING nv = 1
					) AS x ALL LEFT JOIN (SELECT distinct_id, event, ts_ms, properties FROM events FINAL) AS e USING distinct_id
					GROUP BY distinct_id, v0
				) GROUP BY v0`, x, q, flag))
			require.NoError(t, err)
			for rows.Next() {
				var v string
				var s stat
				require.NoError(t, rows.Scan(&v, &s.n, &s.sum, &s.sumSq, &s.pre))
				out[statKey{flag, v, m.Name}] = s
			}
			rows.Close()
		}
	}
	return out
}

func requireSame(t *testing.T, what string, want, got map[statKey]stat) {
	t.Helper()
	require.Equal(t, len(want), len(got), "%s: same cells", what)
	for k, w := range want {
		g, ok := got[k]
		require.True(t, ok, "%s: missing %v", what, k)
		require.Equal(t, w.n, g.n, "%s %v: users", what, k)
		for _, pair := range [][2]float64{{w.sum, g.sum}, {w.sumSq, g.sumSq}, {w.pre, g.pre}} {
			require.InDelta(t, pair[0], pair[1], 1e-9*math.Max(1, math.Abs(pair[0])), "%s %v: %+v vs %+v", what, k, w, g)
		}
	}
}

// deliver sends recs through kfake and ingest into a fresh database and returns it.
func deliver(t *testing.T, base string, recs []synth.Record, twoConsumers bool) store.Conn {
	dsn, conn := chtest.NewDB(t, base)
	if !twoConsumers {
		ingestInto(t, dsn, recs, "join")
		return conn
	}
	kc := brokertest.Cluster(t, 4, broker.EventsTopic)
	cl := brokertest.Client(t, kc, kgo.ProducerLinger(5*time.Millisecond))
	krecs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		krecs[i] = &kgo.Record{Key: []byte(r.Key), Value: r.Value, Timestamp: r.Time}
	}
	o := ingest.Options{Brokers: kc.Addrs(), ClickHouseDSN: dsn, Group: "join", Logger: quietLogger(),
		BatchSize: 20000, BatchInterval: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	startConsumer := func() {
		wg.Add(1)
		go func() { defer wg.Done(); require.NoError(t, ingest.Run(ctx, o)) }()
	}
	startConsumer()
	half := len(krecs) / 2
	brokertest.Produce(t, cl, broker.EventsTopic, krecs[:half]...)
	startConsumer() // a second replica joins: partitions are rebalanced mid-stream
	brokertest.Produce(t, cl, broker.EventsTopic, krecs[half:]...)
	want := uniqueEvents(recs)
	require.Eventually(t, func() bool {
		var n uint64
		_ = conn.QueryRow(ctx, "SELECT uniqExact(uuid) FROM events").Scan(&n)
		return n == want
	}, 2*time.Minute, 100*time.Millisecond)
	cancel()
	wg.Wait()
	return conn
}

func uniqueEvents(recs []synth.Record) uint64 {
	seen := map[string]bool{}
	for _, r := range recs {
		seen[string(r.Value)] = true
	}
	return uint64(len(seen))
}

// SPEC §3's property: the analyzer-facing cohort statistics equal the reference
// query-time join over the raw tables and a brute-force recomputation in Go, for every
// flag and metric, whatever the delivery: in order, shuffled within the 24 h lateness
// bound, exposures delayed after their events, replayed twice, and split across two
// consumers with a rebalance in the middle.
func TestJoinExactUnderAnyDelivery(t *testing.T) {
	base := chtest.Base(t)
	cfg := synth.Config{Seed: 11, Users: 12000, Days: 10, FeatureProps: true,
		Start: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
		Flags: []synth.Flag{
			{Key: "checkout", LaunchDay: 2, ReassignFrac: 0.05, Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 1.3}}},
			{Key: "search", LaunchDay: 3, ExposedFrac: 0.6, Variants: []string{"a", "b", "c"}},
			{Key: "banner", LaunchDay: 1, EndDay: 6},
		}}
	var inOrder []synth.Record
	require.NoError(t, cfg.Each(func(r synth.Record) error { inOrder = append(inOrder, r); return nil }))
	sort.SliceStable(inOrder, func(i, j int) bool { return inOrder[i].Time.Before(inOrder[j].Time) })
	t.Logf("%d events", len(inOrder))
	want := bruteForce(t, inOrder)
	require.NotEmpty(t, want)
	for _, m := range joinMetrics {
		if m.Cap > 0 {
			require.Positive(t, capsBound[m.Name], "%s: the cap binds for some users", m.Name)
		}
	}

	rnd := rand.New(rand.NewPCG(1, 2))
	shuffled := append([]synth.Record(nil), inOrder...)
	jitter := make(map[int]time.Duration, len(shuffled))
	for i := range shuffled {
		jitter[i] = time.Duration(rnd.Int64N(int64(24 * time.Hour)))
	}
	idx := make([]int, len(shuffled))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		return inOrder[idx[a]].Time.Add(jitter[idx[a]]).Before(inOrder[idx[b]].Time.Add(jitter[idx[b]]))
	})
	for i, j := range idx {
		shuffled[i] = inOrder[j]
	}
	var delayed, exposures []synth.Record
	for _, r := range inOrder {
		if strings.Contains(string(r.Value), `"event":"$feature_flag_called"`) {
			exposures = append(exposures, r)
		} else {
			delayed = append(delayed, r)
		}
	}
	delayed = append(delayed, exposures...)
	replayed := append(append([]synth.Record(nil), inOrder...), inOrder...)

	flags := []string{"checkout", "search", "banner"}
	for _, sc := range []struct {
		name string
		recs []synth.Record
		two  bool
	}{
		{"in order", inOrder, false},
		{"shuffled within 24h", shuffled, false},
		{"exposures after their events", delayed, false},
		{"replayed twice", replayed, false},
		{"two consumers with a rebalance", shuffled, true},
	} {
		t.Run(sc.name, func(t *testing.T) {
			conn := deliver(t, base, sc.recs, sc.two)
			var multiple uint64
			require.NoError(t, conn.QueryRow(context.Background(), `SELECT countIf(lo != hi) FROM (
				SELECT minMerge(low_state) AS lo, maxMerge(high_state) AS hi FROM assignment_state GROUP BY flag, uh)`).Scan(&multiple))
			require.Positive(t, multiple, "the stream has $multiple users, who must be excluded")
			requireSame(t, "cohort vs brute force", want, cohortStats(t, conn))
			requireSame(t, "reference query vs brute force", want, referenceStats(t, conn, flags))
		})
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
