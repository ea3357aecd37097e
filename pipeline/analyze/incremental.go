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
// they are inserted, so a pass reads a few thousand cells, not the data. The build of a
// generation is the exception (0050): its rows skip the view, and cellSumsSQL sums them
// into cell_sums in one grouped query after the insert — a build whose sums are missing
// has no watermark yet and is never read. The cells equal those of groupedSQL over the
// same data (TestIncrementalEqualsRecompute).
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
// empty, else, for the touched users, their live rows negated and their new rows.
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
	// A row's segment values are its set and its exposure day. The view that sums rows
	// into cells as they are inserted needs its cells spelled out (spread), so a pass's
	// rows carry them; a build's are many, cost several times the build's query to spell
	// out, and are summed by cellSumsSQL instead: they are marked built, which the view
	// skips, and carry none.
	props, segs := "emptyArrayString()", "emptyArrayString()"
	spelled := func(day string) (string, string) {
		var ps, vs []string
		for i, c := range p.spread() {
			ps = append(ps, quote(c.prop))
			vs = append(vs, p.spelled(c, i == 0, day))
		}
		return "[" + strings.Join(ps, ", ") + "]", "[" + strings.Join(vs, ", ") + "]"
	}
	built := 1
	rows := "(\n" + ps.sql + "\n) AS pr"
	if touched != "" {
		built = 0
		props, segs = spelled("a_day")
		rows += p.joinSetValues("a_set")
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
	// NOT ignore(a_first) names a_first, which 18.16 would otherwise prune from the
	// level below although the measures' lambdas use it.
	fmt.Fprintf(&b, "SELECT toUInt64(%d) AS c_gen, u_id AS c_uh, a_flag AS c_flag, a_variant AS c_variant, %s AS c_props, %s AS c_segs, %s AS c_s, toInt8(1) AS c_sign, toUInt8(%d) AS c_built, %s AS c_set, a_day AS c_day\nFROM %s\nWHERE NOT ignore(a_first)\n",
		gen, props, segs, s, built, set, rows)
	if touched != "" {
		// Every row of these users nets to zero, not only the live ones: a row left at −1
		// (by passes that overlapped despite the lease) is put right too. A row is its
		// (flag, variant, set, day) and terms; the negation spells its values out again,
		// as the rows of this pass do, so the view takes them out of the same cells.
		nprops, nsegs := spelled("day")
		neg := "(\n  SELECT gen, uh, flag, variant, set_id, day, s, sum(sign) AS live FROM contributions\n" +
			fmt.Sprintf("  WHERE gen = %d AND uh IN (SELECT uh FROM %s)\n", gen, touched) +
			"  GROUP BY gen, uh, flag, variant, set_id, day, s HAVING live != 0) AS n" + p.joinSetValues("set_id")
		fmt.Fprintf(&b, "UNION ALL\nSELECT gen, uh, flag, variant, %s, %s, s, toInt8(-live), toUInt8(0), set_id, day FROM %s\n", nprops, nsegs, neg)
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
