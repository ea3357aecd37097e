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
	// discovered are the properties its rows carry besides the plan's segments.
	discovered []discoveredProp
}

func at(xs []float64, i int) float64 {
	if i < len(xs) {
		return xs[i]
	}
	return 0
}
