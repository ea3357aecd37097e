-- Property discovery (SPEC §10). Rows of the results history say whether their segment
-- property was discovered rather than configured.
ALTER TABLE analysis_results ADD COLUMN {{.IfNotExists}}discovered UInt8 DEFAULT 0;

-- The latest results (0045) carry it too (the flags list and a flag's page tag a
-- discovered property's rows); 0045 now creates analysis_latest with it, its view
-- copying it and the decision in its key. A database that an earlier build migrated
-- through 0045 gets the column and the view here; its key stays without the decision
-- (ClickHouse cannot change it in place), so there a value's correlation row and its
-- result, or a property's heterogeneity and divergence rows, share one latest row until
-- analysis_latest is dropped and 0045 and 0050 are re-run (docs/operations.md).
ALTER TABLE analysis_latest ADD COLUMN {{.IfNotExists}}discovered UInt8 DEFAULT 0;

DROP TABLE IF EXISTS analysis_latest_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS analysis_latest_mv TO analysis_latest AS
SELECT pass_time, pass_id, flag, metric, segment_property, segment_value, variant, n, control_n, mean,
       control_mean, lift, se, ci_low, ci_high, p, chance_to_win, cuped, decision, reason, discovered
FROM analysis_results;

-- The discovered properties of a generation (0040), as JSON: a generation's
-- contribution rows carry those properties' values, so the passes that keep it current
-- use the same list until the next build chooses again.
ALTER TABLE analysis_generations ADD COLUMN {{.IfNotExists}}discovered String DEFAULT '';

-- A build (0040) writes a whole generation's contribution rows at once. Spreading each
-- row over its cells as it is inserted — the whole flag, each segment value and each
-- value's exposure-day cohort — costs several times the build's own query, so a build
-- marks its rows built = 1, which the view skips, and sums them into cell_sums in one
-- grouped query (the analyzer's cellSumsSQL). Later passes' rows go through the view as
-- before.
ALTER TABLE contributions ADD COLUMN {{.IfNotExists}}built UInt8 DEFAULT 0;

-- A row's segment values as keys: the first exposure's segment property set and its day.
-- The values themselves are read from segment_sets per set, so a build's rows carry no
-- strings (spelling every row's values out cost a build several times its own query).
ALTER TABLE contributions ADD COLUMN {{.IfNotExists}}set_id UInt64 DEFAULT 0;
ALTER TABLE contributions ADD COLUMN {{.IfNotExists}}day Date DEFAULT toDate(0);

DROP TABLE IF EXISTS cell_sums_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS cell_sums_mv TO cell_sums AS
SELECT
    gen, flag, variant, seg.1 AS seg_prop, seg.2 AS seg_value,
    sumState(toInt64(sign))                     AS n_state,
    sumForEachState(arrayMap(v -> v * sign, s)) AS s_state
FROM contributions
ARRAY JOIN arrayConcat([('', '')], arrayMap((p, v) -> (p, v), seg_props, segs)) AS seg
WHERE built = 0 AND (seg.1 = '' OR seg.2 != '')
GROUP BY gen, flag, variant, seg_prop, seg_value;

-- Exposures per (flag, segment property set): what a build reads to choose candidate
-- properties per flag — how many of a flag's exposures set each property and to which
-- values — without reading the per-user assignment state. Far fewer rows than exposures:
-- users share their sets (0030).
CREATE TABLE IF NOT EXISTS flag_segment_sets (
    flag      {{.Str}},
    id        UInt64,
    exposures UInt64
) ENGINE = SummingMergeTree
ORDER BY (flag, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS flag_segment_sets_mv TO flag_segment_sets AS
SELECT flag, cityHash64(segments) AS id, count() AS exposures
FROM exposures
GROUP BY flag, id;

-- Backfill from the exposures of a database created before this migration. Exposures
-- inserted while it runs may be counted twice: the counts only rank candidates, and the
-- pass measures the properties it chose exactly.
INSERT INTO flag_segment_sets
SELECT flag, cityHash64(segments) AS id, count()
FROM exposures
GROUP BY flag, id
SETTINGS max_bytes_before_external_group_by = 2000000000;
