package analyze

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// chStore is the ClickHouse side of a pass: the reads of passReader and the writes of
// passWriter, as SQL that runs on ClickHouse 18.16 and on current releases (the pass
// query itself is built in query.go and incremental.go).
type chStore struct {
	conn         store.Conn
	claims       claim.Store
	replica      string
	log          *slog.Logger
	recomputeAll bool
	rebuildEvery time.Duration
}

// activity reads every exposed flag's first and last exposure from flag_activity, a
// few rows per flag kept by a materialized view over exposures.
func (s *chStore) activity(ctx context.Context) (map[string]*flagInfo, error) {
	conn := s.conn
	table := store.AllTable(conn, "flag_activity") // every shard's flags, merged
	rows, err := conn.Query(ctx, "SELECT flag, minMerge(first_state), maxMerge(last_state) FROM "+table+" GROUP BY flag")
	if err != nil {
		return nil, fmt.Errorf("query flag activity: %w", err)
	}
	defer rows.Close()
	out := map[string]*flagInfo{}
	for rows.Next() {
		var f string
		fi := &flagInfo{}
		if err := rows.Scan(&f, &fi.firstMs, &fi.lastMs); err != nil {
			return nil, fmt.Errorf("scan flag activity: %w", err)
		}
		out[f] = fi
	}
	return out, rows.Err()
}

// run executes the pass query and returns its cells.
func (p *plan) run(ctx context.Context, conn store.Conn, ratioPairs [][2]int) (map[cellKey]*cell, error) {
	if len(p.measures) == 0 {
		return map[cellKey]*cell{}, nil
	}
	rows, err := conn.Query(ctx, p.groupedSQL(ratioPairs))
	if err != nil {
		return nil, fmt.Errorf("query cohort statistics: %w", err)
	}
	defer rows.Close()
	out := map[cellKey]*cell{}
	for rows.Next() {
		var k cellKey
		c := &cell{m: make([]moments, len(p.measures)), ratios: make([]float64, len(ratioPairs)), bad: make([]float64, len(p.measures))}
		dest := []any{&k.flag, &k.variant, &k.segProp, &k.segValue, &c.n}
		for i := range c.m {
			dest = append(dest, &c.m[i].sum, &c.m[i].sumSq, &c.m[i].pre, &c.m[i].preSq, &c.m[i].cross)
		}
		for i := range c.ratios {
			dest = append(dest, &c.ratios[i])
		}
		for i := range c.bad {
			dest = append(dest, &c.bad[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan cohort statistics: %w", err)
		}
		out[k] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read cohort statistics: %w", err)
	}
	p.derive(out)
	return out, nil
}

// history reads alert_log once per pass: latches, dedup and rollbacks from one query.
func (s *chStore) history(ctx context.Context) (*history, error) {
	rows, err := s.conn.Query(ctx, `SELECT dedup_key, subject, argMax(decision, emitted_ms), argMax(severity, emitted_ms),
		max(emitted_ms), max(rollback LIKE '%"status":"ok"%') FROM alert_log GROUP BY dedup_key, subject`)
	if err != nil {
		return nil, fmt.Errorf("read alert log: %w", err)
	}
	defer rows.Close()
	h := &history{latched: map[string]string{}, emitted: map[string]logged{}, rolledBack: map[string]bool{}}
	latchedAt := map[string]int64{}
	for rows.Next() {
		var key, subj, decision, severity string
		var at int64
		var ok uint8
		if err := rows.Scan(&key, &subj, &decision, &severity, &at, &ok); err != nil {
			return nil, fmt.Errorf("scan alert log: %w", err)
		}
		if prev, seen := h.emitted[key]; !seen || at > prev.emittedMs {
			h.emitted[key] = logged{emittedMs: at, severity: severity}
		}
		if latching[decision] && at >= latchedAt[subj] {
			h.latched[subj], latchedAt[subj] = decision, at
		}
		if ok == 1 {
			flag, _, _ := strings.Cut(subj, "|")
			h.rolledBack[flag] = true
		}
	}
	return h, rows.Err()
}

// recordResults appends the pass's rows, and its cohort rows, to the history.
func (s *chStore) recordResults(ctx context.Context, pass *Pass) error {
	if len(pass.Rows)+len(pass.Cohorts)+len(pass.Properties) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO analysis_results (pass_time, pass_id, flag, metric,
		segment_property, segment_value, variant, n, control_n, mean, control_mean, lift, se, ci_low, ci_high,
		p, chance_to_win, cuped, decision, reason, discovered)`)
	if err != nil {
		return fmt.Errorf("prepare results insert: %w", err)
	}
	for _, r := range slices.Concat(pass.Rows, pass.Cohorts, pass.Properties) {
		var sp, sv string
		if r.Segment != nil {
			sp, sv = r.Segment.Property, r.Segment.ValueString()
		}
		var cuped, discovered uint8
		if r.CUPED {
			cuped = 1
		}
		if r.Discovered {
			discovered = 1
		}
		if err := b.Append(pass.Time.UTC(), pass.ID, r.Flag, r.Metric, sp, sv, r.Variant, uint64(max(r.N, 0)),
			uint64(max(r.ControlN, 0)), finite(r.Mean), finite(r.ControlMean), finite(r.Lift), finite(r.SE),
			finite(r.CI[0]), finite(r.CI[1]), finite(r.P), finite(r.ChanceToWin), cuped, r.Decision, r.Reason, discovered); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append result row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert results batch: %w", err)
	}
	return nil
}

func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

// eachShard runs fn on one replica of each shard (on one node: on the node), in shard
// order; the per-user tables are sharded by user, so every statement of a pass runs
// unchanged on each shard and the cells add up (SPEC §8: aggregate per shard, merge).
func (s *chStore) eachShard(ctx context.Context, fn func(context.Context, store.Conn) error) error {
	for i, sh := range store.Shards(s.conn) {
		if err := fn(ctx, sh); err != nil {
			if s.conn.Server().Cluster != "" {
				return fmt.Errorf("shard %d: %w", i+1, err)
			}
			return err
		}
	}
	return nil
}

// recompute runs the pass query on every shard and adds up the cells.
func (s *chStore) recompute(ctx context.Context, p *plan, ratioPairs [][2]int) (map[cellKey]*cell, error) {
	var out map[cellKey]*cell
	err := s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
		cs, err := p.run(ctx, sh, ratioPairs)
		out = mergeCells(out, cs)
		return err
	})
	return out, err
}

// mergeCells adds b's cells into a: cells are sums over disjoint users.
func mergeCells(a, b map[cellKey]*cell) map[cellKey]*cell {
	if a == nil {
		return b
	}
	for k, c := range b {
		if d := a[k]; d != nil {
			d.add(c, 1)
		} else {
			a[k] = c
		}
	}
	return a
}

// recordAlerts appends what the pass emitted to the alert log, one row per finding, after
// the broker acknowledged it: the next pass's history (dedup, latches, rollbacks).
func (s *chStore) recordAlerts(ctx context.Context, pass *Pass, emitted []emittedFinding) error {
	if len(emitted) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO alert_log (dedup_key, subject, decision, severity, emitted_ms, pass_id, rollback)")
	if err != nil {
		return fmt.Errorf("prepare alert log insert: %w", err)
	}
	for _, e := range emitted {
		var rb string
		if e.rollback != nil {
			j, _ := json.Marshal(e.rollback)
			rb = string(j)
		}
		if err := b.Append(e.dedupKey, e.subject, e.decision, e.severity, pass.Time.UnixMilli(), pass.ID, rb); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append alert log: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert alert log: %w", err)
	}
	return nil
}

func currentGeneration(ctx context.Context, conn store.Conn, planID uint64) (*generation, error) {
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT gen, built_ms, max(watermark) AS w, any(discovered) FROM analysis_generations
		WHERE plan = %d GROUP BY gen, built_ms HAVING w > toDateTime(0) ORDER BY built_ms DESC LIMIT 1`, planID))
	if err != nil {
		return nil, fmt.Errorf("read generation: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	g := &generation{}
	var disc string
	if err := rows.Scan(&g.gen, &g.builtMs, &g.watermark, &disc); err != nil {
		return nil, fmt.Errorf("scan generation: %w", err)
	}
	if disc != "" {
		if err := json.Unmarshal([]byte(disc), &g.discovered); err != nil {
			return nil, fmt.Errorf("generation %d: discovered properties %q: %w", g.gen, disc, err)
		}
	}
	return g, rows.Err()
}

func recordGeneration(ctx context.Context, conn store.Conn, planID uint64, g *generation, passID string) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO analysis_generations (plan, gen, built_ms, watermark, pass_id, discovered)")
	if err != nil {
		return fmt.Errorf("prepare generation: %w", err)
	}
	var disc []byte
	if len(g.discovered) > 0 {
		if disc, err = json.Marshal(g.discovered); err != nil {
			return fmt.Errorf("encode discovered properties: %w", err)
		}
	}
	if err := b.Append(planID, g.gen, g.builtMs, g.watermark, passID, string(disc)); err != nil {
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
//
// The plan's discovered properties are chosen (discover) when a pass recomputes
// everything and when a generation is built; the passes in between keep the
// generation's, whose values its rows carry. With -rebuild-every 0 (or longer than
// discoveryRefresh) a generation that old is rebuilt when discovery would choose
// differently, so a new flag's properties are found within a day.
func (s *chStore) cells(ctx context.Context, p *plan, ratioPairs [][2]int, passID string) (map[cellKey]*cell, error) {
	if s.recomputeAll || len(p.measures) == 0 {
		if err := s.discover(ctx, p); err != nil {
			return nil, err
		}
		return s.recompute(ctx, p, ratioPairs)
	}
	planID := p.id(ratioPairs)
	var now time.Time
	if err := s.conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, fmt.Errorf("read server time: %w", err)
	}
	g, err := currentGeneration(ctx, s.conn, planID)
	if err != nil {
		return nil, err
	}
	rebuild := g == nil || (s.rebuildEvery > 0 && now.Sub(time.UnixMilli(g.builtMs)) >= s.rebuildEvery)
	switch {
	case rebuild:
		if err := s.discover(ctx, p); err != nil {
			return nil, err
		}
	case p.discovery.on() && now.Sub(time.UnixMilli(g.builtMs)) >= discoveryRefresh:
		if err := s.discover(ctx, p); err != nil {
			return nil, err
		}
		if rebuild = !sameDiscovered(p.discovered, g.discovered); rebuild {
			s.log.Info("property discovery chose other properties; rebuilding the incremental state", "plan", planID,
				"was", len(g.discovered), "now", len(p.discovered))
		} else {
			p.discovered = g.discovered
		}
	default:
		p.discovered = g.discovered
	}
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
	ok, err := Lease(ctx, s.claims, key, s.replica)
	if err != nil {
		return nil, err
	}
	if !ok {
		s.log.Info("another pass is updating the incremental state; this one recomputes every (flag, user)")
		return s.recompute(ctx, p, ratioPairs)
	}
	if rebuild {
		if g, err = s.buildGeneration(ctx, p, ratioPairs, planID, now, passID); err != nil {
			return nil, err
		}
	} else {
		touched := fmt.Sprintf("touched_users WHERE at >= toDateTime(%d)", g.watermark.Add(-touchMargin).Unix())
		if err := s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
			return sh.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, touched))
		}); err != nil {
			return nil, fmt.Errorf("update contributions: %w", err)
		}
		g.watermark = now
		if err := recordGeneration(ctx, s.conn, planID, g, passID); err != nil {
			return nil, err
		}
	}
	s.trimTouched(ctx, now)
	var out map[cellKey]*cell
	err = s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
		cs, err := readCells(ctx, sh, p, g.gen, len(ratioPairs))
		out = mergeCells(out, cs)
		return err
	})
	return out, err
}

// trimTouched drops the days of touched_users before yesterday: passes read it back to
// their last watermark minus touchMargin, minutes ago. Dropping a partition is a metadata
// change, cheap enough for every pass.
func (s *chStore) trimTouched(ctx context.Context, now time.Time) {
	_ = s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
		s.trimTouchedOn(ctx, sh, now)
		return nil
	})
}

func (s *chStore) trimTouchedOn(ctx context.Context, conn store.Conn, now time.Time) {
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT DISTINCT partition FROM system.parts
		WHERE database = currentDatabase() AND table = 'touched_users' AND active AND partition < '%s'`,
		now.UTC().Add(-48*time.Hour).Format("20060102")))
	if err != nil {
		s.log.Warn("list touched_users partitions", "err", err)
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
		if err := conn.Exec(ctx, "ALTER TABLE touched_users DROP PARTITION "+p); err != nil {
			s.log.Warn("drop a touched_users partition", "partition", p, "err", err) // space, not correctness
		}
	}
}

// buildGeneration makes a new generation from every (flag, user) and drops the plan's older ones.
// Its watermark is the server time before the build read anything, so the next pass
// recomputes whoever the build might have missed.
func (s *chStore) buildGeneration(ctx context.Context, p *plan, ratioPairs [][2]int, planID uint64, now time.Time, passID string) (*generation, error) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%d|%s", planID, now.UnixNano(), s.replica)
	g := &generation{gen: h.Sum64() >> 1, builtMs: now.UnixMilli(), watermark: time.Unix(0, 0), discovered: p.discovered}
	// Recorded with a zero watermark first: a build that dies half-way is known, and
	// the next build drops its partition.
	if err := recordGeneration(ctx, s.conn, planID, g, passID); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
		return sh.Exec(ctx, p.contributionsSQL(ratioPairs, g.gen, ""))
	}); err != nil {
		return nil, fmt.Errorf("build contributions: %w", err)
	}
	if err := s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
		return sh.Exec(ctx, p.cellSumsSQL(g.gen))
	}); err != nil {
		return nil, fmt.Errorf("sum the built contributions into cells: %w", err)
	}
	g.watermark = now
	if err := recordGeneration(ctx, s.conn, planID, g, passID); err != nil {
		return nil, err
	}
	s.log.Info("built a new generation of contributions", "plan", planID, "gen", g.gen, "took", time.Since(start).Round(time.Millisecond))
	rows, err := s.conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT gen FROM analysis_generations WHERE plan = %d AND gen != %d AND built_ms <= %d",
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
			if err := s.eachShard(ctx, func(ctx context.Context, sh store.Conn) error {
				return sh.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP PARTITION %d", t, x))
			}); err != nil {
				// Space, not correctness: the old rows are never read again.
				s.log.Warn("drop an old generation", "table", t, "gen", x, "err", err)
			}
		}
	}
	return g, nil
}

// readCells reads generation gen's cells, with those derive adds; each cell's summed
// terms are, per measure, Σx, Σx², Σq, Σq², Σx·q, then each ratio pair's Σx·y, then each
// measure's count of values left out (see contributionsSQL). The terms come back as columns rather than one array
// per cell: a pass reads tens of thousands of cells, and scanning an array allocates.
func readCells(ctx context.Context, conn store.Conn, p *plan, gen uint64, ratios int) (map[cellKey]*cell, error) {
	measures := len(p.measures)
	terms := 5*measures + ratios + measures
	cols := make([]string, terms)
	for i := range cols {
		cols[i] = fmt.Sprintf("s[%d]", i+1) // 0 past the end, as for a generation with fewer
	}
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT flag, variant, seg_prop, seg_value, n, %s FROM (
		SELECT flag, variant, seg_prop, seg_value, sumMerge(n_state) AS n, sumForEachMerge(s_state) AS s
		FROM cell_sums WHERE gen = %d GROUP BY flag, variant, seg_prop, seg_value HAVING n > 0)`, strings.Join(cols, ", "), gen))
	if err != nil {
		return nil, fmt.Errorf("query cells: %w", err)
	}
	defer rows.Close()
	out := map[cellKey]*cell{}
	vals := make([]float64, terms)
	var k cellKey
	var n int64
	dest := []any{&k.flag, &k.variant, &k.segProp, &k.segValue, &n}
	for i := range vals {
		dest = append(dest, &vals[i])
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan cells: %w", err)
		}
		c := &cell{n: uint64(n), m: make([]moments, measures), ratios: make([]float64, ratios), bad: make([]float64, measures)}
		for i := range c.m {
			c.m[i] = moments{sum: vals[5*i], sumSq: vals[5*i+1], pre: vals[5*i+2], preSq: vals[5*i+3], cross: vals[5*i+4]}
		}
		copy(c.ratios, vals[5*measures:])
		copy(c.bad, vals[5*measures+ratios:])
		out[k] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read cells: %w", err)
	}
	p.derive(out)
	return out, nil
}

// discoveryRefresh is how old a generation may get before a pass checks whether property
// discovery would choose other properties, when rebuilds are rarer than that.
const discoveryRefresh = 24 * time.Hour

// segmentSetsRE matches the "key":"value" members of a segment property set (the rule
// of event.SegmentProps and of 0030's column default).
const segmentSetsRE = `'"(?:[^"\\\\]|\\\\.){1,100}":"(?:[^"\\\\]|\\\\.){0,100}"'`

// discover sets p's discovered properties from flag_segment_sets (preselect), for the
// flags with discovery on. It reads exposures per (flag, property set), never the
// per-user state, so it costs a pass little.
func (s *chStore) discover(ctx context.Context, p *plan) error {
	p.discovered = nil
	if !p.discovery.on() {
		return nil
	}
	flags := make([]string, 0, len(p.discovery.caps))
	for f := range p.discovery.caps {
		flags = append(flags, f)
	}
	sort.Strings(flags)
	// Per (flag, property, value), exposures: the sets' members joined to the sets'
	// counts. A set names a property once per place it appears; arrayDistinct keeps a
	// value counted once per set. On a cluster both tables are per shard (a shard's
	// exposures feed its own flag_segment_sets and segment_sets), so the query reads
	// flag_segment_sets_all and joins each shard's rows to that shard's sets; the
	// initiator merges the sums, and the thresholds below apply to the whole flag, as
	// on one node. The joined table is named with its database: a shard runs the
	// query in the database its connection names, which need not be ours.
	sets := store.QuoteIdent(s.conn.Server().Database) + ".segment_sets"
	fss := store.AllTable(s.conn, "flag_segment_sets")
	values := `SELECT flag, k, v, sum(exposures) AS c
	FROM ` + fss + ` ALL INNER JOIN (
		SELECT id, substring(kv, 2, position(kv, '":"') - 2) AS k,
			substring(kv, position(kv, '":"') + 3, length(kv) - position(kv, '":"') - 3) AS v
		FROM (SELECT id, arrayDistinct(extractAll(any(segments), ` + segmentSetsRE + `)) AS kvs FROM ` + sets + ` GROUP BY id) AS s0
		ARRAY JOIN kvs AS kv
	) AS s USING id
	WHERE flag IN ` + inList(flags) + `
	GROUP BY flag, k, v`
	st := setStats{total: map[string]float64{}, byProp: map[string]map[string]float64{}, values: map[string]map[string][]valueCount{}}
	rows, err := s.conn.Query(ctx, `SELECT flag, k, sum(c) FROM (`+values+`) GROUP BY flag, k
	UNION ALL SELECT flag, '', sum(exposures) FROM `+fss+` WHERE flag IN `+inList(flags)+` GROUP BY flag`)
	if err != nil {
		return fmt.Errorf("query segment properties per flag: %w", err)
	}
	for rows.Next() {
		var flag, k string
		var n uint64
		if err := rows.Scan(&flag, &k, &n); err != nil {
			rows.Close()
			return fmt.Errorf("scan segment properties per flag: %w", err)
		}
		if k == "" {
			st.total[flag] = float64(n)
			continue
		}
		if st.byProp[flag] == nil {
			st.byProp[flag] = map[string]float64{}
		}
		st.byProp[flag][k] = float64(n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read segment properties per flag: %w", err)
	}
	rows, err = s.conn.Query(ctx, fmt.Sprintf(`SELECT flag, k, v, c FROM (%s) WHERE c >= %d
	ORDER BY flag, k, c DESC, v LIMIT %d BY flag, k`, values, 2*p.discovery.minUsers, 2*p.discovery.values+1))
	if err != nil {
		return fmt.Errorf("query segment values per flag: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var flag, k, v string
		var n uint64
		if err := rows.Scan(&flag, &k, &v, &n); err != nil {
			return fmt.Errorf("scan segment values per flag: %w", err)
		}
		// The set keeps the JSON text of a value; the pass compares it with
		// visitParamExtractString's, unescaped.
		var plain string
		if err := json.Unmarshal([]byte(`"`+v+`"`), &plain); err != nil {
			continue
		}
		if st.values[flag] == nil {
			st.values[flag] = map[string][]valueCount{}
		}
		st.values[flag][k] = append(st.values[flag][k], valueCount{plain, float64(n)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read segment values per flag: %w", err)
	}
	p.discovered = preselect(st, p.discovery, p.segments)
	return nil
}

// inList renders xs as the right side of IN: ('a', 'b').
func inList(xs []string) string {
	l := store.QuoteList(xs)
	return "(" + l[1:len(l)-1] + ")"
}

// sameDiscovered reports whether two plans extract the same discovered properties.
func sameDiscovered(a, b []discoveredProp) bool {
	return slices.EqualFunc(a, b, func(x, y discoveredProp) bool { return x.Name == y.Name && slices.Equal(x.Values, y.Values) })
}

// Lease claims a pass slot (or the incremental state's writer slot) for this replica;
// false means another replica has it. The claim is the analyzer's Claims: a Join table on
// one node, ZooKeeper on a cluster (pipeline/claim).
func Lease(ctx context.Context, claims claim.Store, slot, replica string) (bool, error) {
	holder, err := claims.Claim(ctx, "analyzer|"+slot, replica)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", slot, err)
	}
	return holder == replica, nil
}
