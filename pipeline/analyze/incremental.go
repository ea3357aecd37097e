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
// the last pass (touched_users) and inserts, in one INSERT, the difference between
// their new rows and their live ones: the live rows that changed with the opposite
// sign, the changed rows with sign +1, nothing for a row that did not change. A view
// sums those rows into cell_sums as they are inserted, so a pass reads a few thousand
// cells, not the data. The build of a generation is the exception (0050): its rows skip
// the view, and cellSumsSQL sums them into cell_sums in one grouped query after the
// insert — a build whose sums are missing has no watermark yet and is never read. The
// cells equal those of groupedSQL over the same data (TestIncrementalEqualsRecompute).
//
// Why it holds under failure: a row is live while its signs sum to a positive count, and
// a pass brings every row of the users it recomputes to its new count (1 for a row it
// computes, 0 for one it does not). A pass that fails after inserting part or all of its
// rows, before recording its watermark, is followed by one that recomputes the same
// users from what was inserted, which completes it. Passes that write take a lease, one
// at a time. What would drift — a server crash between a contributions part and its
// view's part — is bounded by rebuilding the generation every RebuildEvery.

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
	// cohorts, and the discovered properties of each generation after the configured;
	// v4: rows keyed by segment property set and exposure day (set_id, day); v5: the
	// whole flag's and segment values' cells derived from the exposure-day ones (derive).
	fmt.Fprintf(h, "v5|pre=%d|", p.pre)
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
// empty, else, for the touched users, what changed since their live rows.
func (p *plan) contributionsSQL(ratioPairs [][2]int, gen uint64, touched string) string {
	ps := p.pairs(ratioPairs, touched)
	var terms []string
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
	s := "emptyArrayFloat64()"
	if len(terms) > 0 {
		s = "[" + strings.Join(terms, ", ") + "]"
	}
	// A plan without segment properties does not key its rows by set (pairs): set 0.
	set := "a_set"
	if !p.hasSetValues() {
		set = "toUInt64(0)"
	}
	var b strings.Builder
	b.WriteString("INSERT INTO contributions (gen, uh, flag, variant, seg_props, segs, s, sign, built, set_id, day)\n")
	rows := "(\n" + ps + "\n) AS pr"
	if touched == "" {
		// A build's rows are many; spelling out their cells for the view below would cost
		// several times the build's query. They are marked built, which the view skips,
		// carry no cells, and are summed by cellSumsSQL instead.
		// NOT ignore(a_first) names a_first, which 18.16 would otherwise prune from the
		// level below although the measures' lambdas use it.
		fmt.Fprintf(&b, "SELECT toUInt64(%d) AS c_gen, u_id AS c_uh, a_flag AS c_flag, a_variant AS c_variant, emptyArrayString() AS c_props, emptyArrayString() AS c_segs, %s AS c_s, toInt8(1) AS c_sign, toUInt8(1) AS c_built, %s AS c_set, a_day AS c_day\nFROM %s\nWHERE NOT ignore(a_first)\n",
			gen, s, set, rows)
	} else {
		// A pass inserts, per (user, flag, variant, set, day, terms), the new count less the
		// live one: each user's new rows (+1) and every row it has (its signs, negated),
		// summed. A row a pass computes again unchanged — most of them: a user's new event
		// falls outside most of its flags' windows, a new exposure concerns one flag of
		// many — nets to nothing and is not inserted, so the view below spreads only what
		// changed. Every row of these users is counted, not only the live ones: a row left
		// at −1 (by passes that overlapped despite the lease) is put right too. Terms
		// computed again in another order (a float sum) differ in their last bits: such a
		// row is replaced, as it would be if it had changed. (Flag keys are LowCardinality
		// on servers that have it; both branches read them as String so the union agrees.)
		diff := "(\n  SELECT uh, flag, variant, set_id, day, s, sum(d_sign) AS d FROM (\n" +
			fmt.Sprintf("    SELECT u_id AS uh, toString(a_flag) AS flag, a_variant AS variant, %s AS set_id, a_day AS day, %s AS s, toInt64(1) AS d_sign\n", set, s) +
			"    FROM " + rows + "\n    WHERE NOT ignore(a_first)\n  UNION ALL\n" +
			fmt.Sprintf("    SELECT uh, toString(flag), variant, set_id, day, s, -toInt64(sign) FROM contributions WHERE gen = %d AND uh IN (SELECT uh FROM %s)\n", gen, touched) +
			"  ) GROUP BY uh, flag, variant, set_id, day, s HAVING d != 0) AS n" + p.joinSetValues("set_id")
		// The view that sums rows into cells as they are inserted needs its cells spelled
		// out: a row's exposure day and each of its set's values' exposure-day cohort.
		var props, segs []string
		for i, c := range p.spread() {
			props = append(props, quote(c.prop))
			segs = append(segs, p.spelled(c, i == 0, "day"))
		}
		fmt.Fprintf(&b, "SELECT toUInt64(%d), uh, flag, variant, [%s], [%s], s, toInt8(d), toUInt8(0), set_id, day FROM %s\n",
			gen, strings.Join(props, ", "), strings.Join(segs, ", "), diff)
	}
	fmt.Fprintf(&b, "SETTINGS max_bytes_before_external_group_by = %d, max_block_size = %d", externalGroupByBytes, stateBlockRows)
	return b.String()
}

// cellSumsSQL sums a build's contribution rows into generation gen's cells: the rows
// summed per (flag, variant, set, day) — far fewer groups than rows — then joined to
// their set's values and spread over their cells, as groupedSQL does.
func (p *plan) cellSumsSQL(gen uint64) string {
	keys := "day"
	if p.hasSetValues() {
		keys = "set_id, day"
	}
	rows := fmt.Sprintf(`(
  SELECT gen, cityHash64(flag, variant) AS fv, any(flag) AS c_flag, any(variant) AS c_variant, %s,
    sum(sign) AS g_n, sumForEach(arrayMap(v -> v * sign, s)) AS g_s
  FROM contributions WHERE gen = %d AND built = 1
  GROUP BY gen, fv, %s
) AS g`, keys, gen, keys)
	rows += p.joinSetValues("set_id")
	sp := p.spreadSQL("day")
	return fmt.Sprintf(`INSERT INTO cell_sums (gen, flag, variant, seg_prop, seg_value, n_state, s_state)
SELECT gen, any(c_flag), any(c_variant), %s, %s, sumState(toInt64(g_n)), sumForEachState(g_s)
FROM (SELECT * FROM %s)
%s
WHERE %s
GROUP BY gen, fv, %s
SETTINGS max_bytes_before_external_group_by = %d`, sp.prop, sp.value, rows, sp.arrayJoin, sp.where, sp.keys, externalGroupByBytes)
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
