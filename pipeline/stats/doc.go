// Package stats is flagwatch's statistics engine: pure functions that turn
// per-variant sufficient statistics into lifts, intervals, p-values and
// decisions.
//
// The decision that shapes it: every method works on sufficient statistics
// (per variant n, Σx, Σx², and where needed the pre-period Σy, Σy², Σxy or a
// ratio denominator's Σd, Σd², Σxd), never on per-user rows. ClickHouse
// computes those sums in one pass over any number of users, and everything
// here is then O(variants) arithmetic — so the analyzer can afford to re-run
// the full evaluation for every flag × metric × segment every few minutes.
// The methods are the ones GrowthBook's gbstats uses (delta-method relative
// lift, Welch t, the Waudby-Smith et al. asymptotic confidence sequence,
// Gaussian posterior, pooled-θ CUPED, Pearson χ² SRM), so a user can
// cross-check our numbers against GrowthBook; the package tests pin them to
// gbstats' own test values.
//
// Sequential (always-valid) inference drives decisions: its p-value and
// interval stay valid however often the analyzer looks, so a decision is
// taken at the first crossing and then latched (see Latch). The fixed-horizon
// Welch results are reported for reference only.
//
// Nothing here does I/O or keeps state between calls; callers own persistence
// (the latched decision, the results history for DetectShift).
package stats
