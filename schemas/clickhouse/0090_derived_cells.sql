-- A pass spreads each contribution row over the cells that partition a flag's users
-- finely: its exposure day and each segment value's exposure-day cohort. The whole flag
-- (the sum of its days) and each segment value (the sum of its cohorts) are added up by
-- the analyzer when it reads the cells, so the view no longer adds every row to the
-- whole flag's cell: half the cells per row. A row spells every cell it adds to,
-- the whole flag's ('', '') included when its plan has no exposure-day cohorts.
-- Analyzers from before this migration keep their generations' whole-flag cells
-- current only through this view: stop them before migrating (docs/operations.md).
DROP TABLE IF EXISTS cell_sums_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS cell_sums_mv TO cell_sums AS
SELECT
    gen, flag, variant, seg.1 AS seg_prop, seg.2 AS seg_value,
    sumState(toInt64(sign))                     AS n_state,
    sumForEachState(arrayMap(v -> v * sign, s)) AS s_state
FROM contributions
ARRAY JOIN arrayMap((p, v) -> (p, v), seg_props, segs) AS seg
WHERE built = 0 AND (seg.1 = '' OR seg.2 != '')
GROUP BY gen, flag, variant, seg_prop, seg_value;
