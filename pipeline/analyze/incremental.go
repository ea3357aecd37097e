package analyze

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"
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
	// v2: excluded-value counts after the ratio terms; v3: segment values' exposure-day
	// cohorts, and the discovered properties of each generation after the configured.
	fmt.Fprintf(h, "v3|pre=%d|", p.pre)
	for _, m := range p.measures {
		fmt.Fprintf(h, "m=%s|", m.key())
	}
	for _, s := range p.segments {
		fmt.Fprintf(h, "s=%q|", s)
	}
	for _, r := range ratioPairs {
		fmt.Fprintf(h, "r=%d,%d|", r[0], r[1])
	}
	// Which properties a generation discovers is its own (generation.discovered); how it
	// chooses them is the plan's, so changing a setting rebuilds.
	if d := p.discovery; d.on() {
		fmt.Fprintf(h, "d=%d,%g,%d|", d.values, d.coverage, d.minUsers)
	}
	return h.Sum64() >> 1 // < 2⁶³, so it prints and parses the same everywhere
}

// contributionsSQL inserts generation gen's rows: every (flag, user) when touched is
// empty, else, for the touched users, their live rows negated and their new rows.
func (p *plan) contributionsSQL(ratioPairs [][2]int, gen uint64, touched string) string {
	ps := p.pairs(ratioPairs, touched)
	var props, segs, terms []string
	for _, t := range p.segmentTuples() {
		props = append(props, t[0])
		segs = append(segs, t[1])
	}
	for i := range p.measures {
		terms = append(terms, fmt.Sprintf("m%d", i), fmt.Sprintf("m%d * m%d", i, i), fmt.Sprintf("q%d", i),
			fmt.Sprintf("q%d * q%d", i, i), fmt.Sprintf("m%d * q%d", i, i))
	}
	for i := range ratioPairs {
		terms = append(terms, fmt.Sprintf("r%d", i))
	}
	for i := range p.measures {
		terms = append(terms, fmt.Sprintf("b%d", i))
	}
	arr := func(xs []string, empty string) string {
		if len(xs) == 0 {
			return empty
		}
		return "[" + strings.Join(xs, ", ") + "]"
	}
	// A build's rows are marked built: the view that sums rows into cells as they are
	// inserted skips them, and cellSumsSQL sums them in one grouped query instead.
	built := 0
	if touched == "" {
		built = 1
	}
	var b strings.Builder
	b.WriteString("INSERT INTO contributions (gen, uh, flag, variant, seg_props, segs, s, sign, built)\n")
	// NOT ignore(a_first) names a_first, which 18.16 would otherwise prune from the
	// level below although the measures' lambdas use it.
	fmt.Fprintf(&b, "SELECT toUInt64(%d) AS c_gen, u_id AS c_uh, a_flag AS c_flag, a_variant AS c_variant, %s AS c_props, %s AS c_segs, %s AS c_s, toInt8(1) AS c_sign, toUInt8(%d) AS c_built\nFROM (\n%s\n) WHERE NOT ignore(a_first)\n",
		gen, arr(props, "emptyArrayString()"), arr(segs, "emptyArrayString()"), arr(terms, "emptyArrayFloat64()"), built, ps.sql)
	if touched != "" {
		// Every row of these users nets to zero, not only the live ones: a row left at −1
		// (by passes that overlapped despite the lease) is put right too.
		fmt.Fprintf(&b, "UNION ALL\nSELECT gen, uh, flag, variant, seg_props, segs, s, toInt8(-live), toUInt8(0) FROM (\n"+
			"  SELECT gen, uh, flag, variant, seg_props, segs, s, sum(sign) AS live FROM contributions\n"+
			"  WHERE gen = %d AND uh IN (SELECT uh FROM %s)\n"+
			"  GROUP BY gen, uh, flag, variant, seg_props, segs, s HAVING live != 0)\n", gen, touched)
	}
	fmt.Fprintf(&b, "SETTINGS max_bytes_before_external_group_by = %d, max_block_size = %d", externalGroupByBytes, stateBlockRows)
	return b.String()
}

// cellSumsSQL sums a build's contribution rows into generation gen's cells. The view that
// does it for the rows of later passes spreads every (flag, user) row over its cells (the
// whole flag, each segment value and each value's exposure-day cohort) as it is
// inserted; for a whole generation that costs several times the build's own query. Here
// the users with the same variant and segment values are summed first — far fewer rows
// than users — and only those sums are spread over their cells.
func cellSumsSQL(gen uint64) string {
	return fmt.Sprintf(`INSERT INTO cell_sums (gen, flag, variant, seg_prop, seg_value, n_state, s_state)
SELECT gen, flag, variant, seg.1 AS seg_prop, seg.2 AS seg_value, sumState(toInt64(g_n)) AS n_state, sumForEachState(g_s) AS s_state
FROM (
  SELECT gen, flag, variant, seg_props, segs, sum(sign) AS g_n, sumForEach(arrayMap(v -> v * sign, s)) AS g_s
  FROM contributions WHERE gen = %d AND built = 1
  GROUP BY gen, flag, variant, seg_props, segs
)
ARRAY JOIN arrayConcat([('', '')], arrayMap((p, v) -> (p, v), seg_props, segs)) AS seg
WHERE seg.1 = '' OR seg.2 != ''
GROUP BY gen, flag, variant, seg_prop, seg_value
SETTINGS max_bytes_before_external_group_by = %d`, gen, externalGroupByBytes)
}

// generation is the current generation of a plan.
type generation struct {
	gen       uint64
	builtMs   int64
	watermark time.Time // users touched before it are in the generation's cells
	// discovered are the properties its rows carry besides the plan's segments.
	discovered []discoveredProp
}

func at(xs []float64, i int) float64 {
	if i < len(xs) {
		return xs[i]
	}
	return 0
}
