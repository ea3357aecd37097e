package analyze

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Incremental passes (schemas/clickhouse/0040_incremental.sql). A generation is the
// per-(flag, user) contributions of one plan, built once from every (flag, user) and
// then kept current: each pass recomputes the users with new events or exposures since
// the last pass (touched_users) and inserts, in one INSERT, their live contribution rows
// with the opposite sign and their new rows. A view sums those rows into cell_sums as
// they are inserted, so a pass reads a few thousand cells, not the data. The cells equal
// those of groupedSQL over the same data (TestIncrementalEqualsRecompute).
//
// Why it holds under failure: a row is live while its signs sum to a positive count, and
// a pass nets every row of the users it recomputes to zero before adding their new rows.
// A pass that fails after inserting part or all of its rows, before recording its
// watermark, is followed by one that recomputes the same users from what was inserted,
// which nets out. Passes that write take a lease, one at a time. What would drift — a server
// crash between a contributions part and its view's part — is bounded by rebuilding the
// generation every RebuildEvery.

// touchMargin is how far before the last watermark a pass looks for touched users: an
// insert stamps its rows when it starts and they become visible when it ends, so a
// pass must look back over the longest insert. Users seen twice are recomputed twice,
// which changes nothing.
var touchMargin = 5 * time.Minute

// id identifies the layout of a plan's contribution rows: its measures, segments,
// pre-period and ratio pairs. A new layout needs a new generation.
func (p *plan) id(ratioPairs [][2]int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "v1|pre=%d|", p.pre)
	for _, m := range p.measures {
		fmt.Fprintf(h, "m=%s|", m.key())
	}
	for _, s := range p.segments {
		fmt.Fprintf(h, "s=%q|", s)
	}
	for _, r := range ratioPairs {
		fmt.Fprintf(h, "r=%d,%d|", r[0], r[1])
	}
	return h.Sum64() >> 1 // < 2⁶³, so it prints and parses the same everywhere
}

// contributionsSQL inserts generation gen's rows: every (flag, user) when touched is
// empty, else, for the touched users, their live rows negated and their new rows.
func (p *plan) contributionsSQL(ratioPairs [][2]int, gen uint64, touched string) string {
	ps := p.pairs(ratioPairs, touched)
	var props, segs, terms []string
	for i, s := range p.segments {
		props = append(props, quote(s))
		if s == ExposureDay {
			segs = append(segs, fmt.Sprintf("toString(a_s%d)", i))
		} else {
			segs = append(segs, fmt.Sprintf("a_s%d", i))
		}
	}
	for i := range p.measures {
		terms = append(terms, fmt.Sprintf("m%d", i), fmt.Sprintf("m%d * m%d", i, i), fmt.Sprintf("q%d", i),
			fmt.Sprintf("q%d * q%d", i, i), fmt.Sprintf("m%d * q%d", i, i))
	}
	for i := range ratioPairs {
		terms = append(terms, fmt.Sprintf("r%d", i))
	}
	arr := func(xs []string, empty string) string {
		if len(xs) == 0 {
			return empty
		}
		return "[" + strings.Join(xs, ", ") + "]"
	}
	var b strings.Builder
	b.WriteString("INSERT INTO contributions (gen, uh, flag, variant, seg_props, segs, s, sign)\n")
	// NOT ignore(a_first) names a_first, which 18.16 would otherwise prune from the
	// level below although the measures' lambdas use it.
	fmt.Fprintf(&b, "SELECT toUInt64(%d) AS c_gen, u_id AS c_uh, a_flag AS c_flag, a_variant AS c_variant, %s AS c_props, %s AS c_segs, %s AS c_s, toInt8(1) AS c_sign\nFROM (\n%s\n) WHERE NOT ignore(a_first)\n",
		gen, arr(props, "emptyArrayString()"), arr(segs, "emptyArrayString()"), arr(terms, "emptyArrayFloat64()"), ps.sql)
	if touched != "" {
		// Every row of these users nets to zero, not only the live ones: a row left at −1
		// (by passes that overlapped despite the lease) is put right too.
		fmt.Fprintf(&b, "UNION ALL\nSELECT gen, uh, flag, variant, seg_props, segs, s, toInt8(-live) FROM (\n"+
			"  SELECT gen, uh, flag, variant, seg_props, segs, s, sum(sign) AS live FROM contributions\n"+
			"  WHERE gen = %d AND uh IN (SELECT uh FROM %s)\n"+
			"  GROUP BY gen, uh, flag, variant, seg_props, segs, s HAVING live != 0)\n", gen, touched)
	}
	fmt.Fprintf(&b, "SETTINGS max_bytes_before_external_group_by = %d, max_block_size = %d", externalGroupByBytes, stateBlockRows)
	return b.String()
}

// generation is the current generation of a plan.
type generation struct {
	gen       uint64
	builtMs   int64
	watermark time.Time // users touched before it are in the generation's cells
}

func currentGeneration(ctx context.Context, conn store.Conn, planID uint64) (*generation, error) {
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT gen, built_ms, max(watermark) AS w FROM analysis_generations
		WHERE plan = %d GROUP BY gen, built_ms HAVING w > toDateTime(0) ORDER BY built_ms DESC LIMIT 1`, planID))
	if err != nil {
		return nil, fmt.Errorf("read generation: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	g := &generation{}
	if err := rows.Scan(&g.gen, &g.builtMs, &g.watermark); err != nil {
		return nil, fmt.Errorf("scan generation: %w", err)
	}
	return g, rows.Err()
}

func recordGeneration(ctx context.Context, conn store.Conn, planID uint64, g *generation, passID string) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO analysis_generations (plan, gen, built_ms, watermark, pass_id)")
	if err != nil {
		return fmt.Errorf("prepare generation: %w", err)
	}
	if err := b.Append(planID, g.gen, g.builtMs, g.watermark, passID); err != nil {
		return fmt.Errorf("append generation: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record generation: %w", err)
	}
	return nil
}

// cells returns a pass's cells: recomputed from every (flag, user) when the analyzer is
// set to, else from the plan's generation, built if there is none (or it is older than
// RebuildEvery) and otherwise brought up to date with the users touched since its
// watermark.
func (a *Analyzer) cells(ctx context.Context, p *plan, ratioPairs [][2]int, passID string) (map[cellKey]*cell, error) {
	if a.RecomputeAll || len(p.measures) == 0 {
		return p.run(ctx, a.Conn, ratioPairs)
	}
	planID := p.id(ratioPairs)
	var now time.Time
	if err := a.Conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, fmt.Errorf("read server time: %w", err)
	}
	g, err := currentGeneration(ctx, a.Conn, planID)
	if err != nil {
		return nil, err
	}
	rebuild := g == nil || (a.RebuildEvery > 0 && now.Sub(time.UnixMilli(g.builtMs)) >= a.RebuildEvery)
	// One writer at a time: two passes applying the same users' rows would count them
	// twice until those users are touched again. The scheduled passes already hold a
	// slot lease; this one also covers `analyzer once` and a pass that outlives its slot.
	// The key expires with its ten-minute bucket, so a writer that died does not block
	// the next. A pass that loses it recomputes from scratch rather than read cells
	// mid-update.
	key := fmt.Sprintf("contributions-%d-%d", planID, now.Unix()/600)
	if !rebuild {
		key = fmt.Sprintf("contributions-%d-%d-%d", g.gen, g.watermark.Unix(), now.Unix()/600)
	}
	ok, err := Lease(ctx, a.Conn, key, a.Replica, now)
	if err != nil {
		return nil, err
	}
	if !ok {
		a.log().Info("another pass is updating the incremental state; this one recomputes every (flag, user)")
		return p.run(ctx, a.Conn, ratioPairs)
	}
	if rebuild {
		if g, err = a.buildGeneration(ctx, p, ratioPairs, planID, now, passID); err != nil {
			return nil, err
		}
	} else {
		touched := fmt.Sprintf("touched_users WHERE at >= toDateTime(%d)", g.watermark.Add(-touchMargin).Unix())
		if err := a.Conn.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, touched)); err != nil {
			return nil, fmt.Errorf("update contributions: %w", err)
		}
		g.watermark = now
		if err := recordGeneration(ctx, a.Conn, planID, g, passID); err != nil {
			return nil, err
		}
	}
	a.trimTouched(ctx, now)
	return readCells(ctx, a.Conn, g.gen, len(p.measures), len(ratioPairs))
}

// trimTouched drops the days of touched_users before yesterday: passes read it back to
// their last watermark minus touchMargin, minutes ago. Dropping a partition is a metadata
// change, cheap enough for every pass.
func (a *Analyzer) trimTouched(ctx context.Context, now time.Time) {
	rows, err := a.Conn.Query(ctx, fmt.Sprintf(`SELECT DISTINCT partition FROM system.parts
		WHERE database = currentDatabase() AND table = 'touched_users' AND active AND partition < '%s'`,
		now.UTC().Add(-48*time.Hour).Format("20060102")))
	if err != nil {
		a.log().Warn("list touched_users partitions", "err", err)
		return
	}
	var old []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err == nil {
			old = append(old, p)
		}
	}
	rows.Close()
	for _, p := range old {
		if err := a.Conn.Exec(ctx, "ALTER TABLE touched_users DROP PARTITION "+p); err != nil {
			a.log().Warn("drop a touched_users partition", "partition", p, "err", err) // space, not correctness
		}
	}
}

// buildGeneration makes a new generation from every (flag, user) and drops the plan's older ones.
// Its watermark is the server time before the build read anything, so the next pass
// recomputes whoever the build might have missed.
func (a *Analyzer) buildGeneration(ctx context.Context, p *plan, ratioPairs [][2]int, planID uint64, now time.Time, passID string) (*generation, error) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%d|%s", planID, now.UnixNano(), a.Replica)
	g := &generation{gen: h.Sum64() >> 1, builtMs: now.UnixMilli(), watermark: time.Unix(0, 0)}
	// Recorded with a zero watermark first: a build that dies half-way is known, and
	// the next build drops its partition.
	if err := recordGeneration(ctx, a.Conn, planID, g, passID); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := a.Conn.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, "")); err != nil {
		return nil, fmt.Errorf("build contributions: %w", err)
	}
	g.watermark = now
	if err := recordGeneration(ctx, a.Conn, planID, g, passID); err != nil {
		return nil, err
	}
	a.log().Info("built a new generation of contributions", "plan", planID, "gen", g.gen, "took", time.Since(start).Round(time.Millisecond))
	rows, err := a.Conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT gen FROM analysis_generations WHERE plan = %d AND gen != %d AND built_ms <= %d",
		planID, g.gen, g.builtMs))
	if err != nil {
		return nil, fmt.Errorf("list old generations: %w", err)
	}
	var old []uint64
	for rows.Next() {
		var x uint64
		if err := rows.Scan(&x); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan old generations: %w", err)
		}
		old = append(old, x)
	}
	rows.Close()
	for _, x := range old {
		for _, t := range []string{"contributions", "cell_sums"} {
			if err := a.Conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP PARTITION %d", t, x)); err != nil {
				// Space, not correctness: the old rows are never read again.
				a.log().Warn("drop an old generation", "table", t, "gen", x, "err", err)
			}
		}
	}
	return g, nil
}

// readCells reads generation gen's cells; each cell's summed terms are, per measure, Σx,
// Σx², Σq, Σq², Σx·q, then each ratio pair's Σx·y (see contributionsSQL).
func readCells(ctx context.Context, conn store.Conn, gen uint64, measures, ratios int) (map[cellKey]*cell, error) {
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT flag, variant, seg_prop, seg_value, sumMerge(n_state) AS n, sumForEachMerge(s_state)
		FROM cell_sums WHERE gen = %d GROUP BY flag, variant, seg_prop, seg_value HAVING n > 0`, gen))
	if err != nil {
		return nil, fmt.Errorf("query cells: %w", err)
	}
	defer rows.Close()
	out := map[cellKey]*cell{}
	for rows.Next() {
		var k cellKey
		var n int64
		var s []float64
		if err := rows.Scan(&k.flag, &k.variant, &k.segProp, &k.segValue, &n, &s); err != nil {
			return nil, fmt.Errorf("scan cells: %w", err)
		}
		c := &cell{n: uint64(n), m: make([]moments, measures), ratios: make([]float64, ratios)}
		for i := range c.m {
			c.m[i] = moments{sum: at(s, 5*i), sumSq: at(s, 5*i+1), pre: at(s, 5*i+2), preSq: at(s, 5*i+3), cross: at(s, 5*i+4)}
		}
		for i := range c.ratios {
			c.ratios[i] = at(s, 5*measures+i)
		}
		out[k] = c
	}
	return out, rows.Err()
}

func at(xs []float64, i int) float64 {
	if i < len(xs) {
		return xs[i]
	}
	return 0
}
