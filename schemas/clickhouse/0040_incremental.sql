-- Incremental passes. A pass does not recompute every (flag, user): it recomputes the
-- users with new events or exposures since the last pass and applies the difference to
-- per-cell sums that ClickHouse keeps. Cost then follows the new data, not all data.

-- Who got new data, when: one row per user per insert block, by insertion time.
CREATE TABLE IF NOT EXISTS touched_users (
    at          DateTime,
    uh          UInt64,
    distinct_id String
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(at)
ORDER BY (at, uh);

CREATE MATERIALIZED VIEW IF NOT EXISTS touched_events_mv TO touched_users AS
SELECT now() AS at, cityHash64(distinct_id) AS uh, distinct_id
FROM events
GROUP BY distinct_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS touched_exposures_mv TO touched_users AS
SELECT now() AS at, cityHash64(distinct_id) AS uh, distinct_id
FROM exposures
GROUP BY distinct_id;

-- What each (flag, user) adds to its cells under one generation (gen: a plan — measures,
-- segments, pre-period — built at one time). A pass inserts, in one INSERT, for each user
-- it recomputes, every row it finds with the opposite of its summed sign (netting it to
-- zero) and the new rows with sign +1; a row is live while its signs sum to a positive
-- count. A pass that fails half-way leaves rows that the next pass, recomputing the same
-- users, nets out. Rows accumulate until the next generation replaces the partition.
CREATE TABLE IF NOT EXISTS contributions (
    gen       UInt64,
    uh        UInt64,
    flag      {{.Str}},
    variant   String,
    seg_props Array(String),
    segs      Array(String),
    -- per measure x, x², q, q², x·q (x in the window, q in the pre-period), then each
    -- ratio pair's product: the row's terms of its cells' sums, so the view below sums
    -- one array instead of computing them for every cell the row lands in.
    s         Array(Float64),
    sign      Int8
) ENGINE = MergeTree
PARTITION BY gen
ORDER BY (gen, uh, flag)
SETTINGS index_granularity = 256;

-- The cells: per (flag, variant, segment property, value) — '' for the whole flag — the
-- signed sums of n and of the contribution terms, kept by a view in the same INSERT as
-- the contributions, so the two cannot drift apart through a pass.
CREATE TABLE IF NOT EXISTS cell_sums (
    gen       UInt64,
    flag      {{.Str}},
    variant   String,
    seg_prop  String,
    seg_value String,
    n_state   AggregateFunction(sum, Int64),
    s_state   AggregateFunction(sumForEach, Array(Float64))
) ENGINE = AggregatingMergeTree
PARTITION BY gen
ORDER BY (gen, flag, variant, seg_prop, seg_value);

CREATE MATERIALIZED VIEW IF NOT EXISTS cell_sums_mv TO cell_sums AS
SELECT
    gen, flag, variant, seg.1 AS seg_prop, seg.2 AS seg_value,
    sumState(toInt64(sign))                     AS n_state,
    sumForEachState(arrayMap(v -> v * sign, s)) AS s_state
FROM contributions
ARRAY JOIN arrayConcat([('', '')], arrayMap((p, v) -> (p, v), seg_props, segs)) AS seg
WHERE seg.1 = '' OR seg.2 != ''
GROUP BY gen, flag, variant, seg_prop, seg_value;

-- Generations and their watermarks: a row per pass; the newest row of a plan says which
-- generation is current and up to when its users were recomputed.
CREATE TABLE IF NOT EXISTS analysis_generations (
    plan      UInt64,
    gen       UInt64,
    built_ms  Int64,
    watermark DateTime,
    pass_id   String
) ENGINE = MergeTree
ORDER BY (plan, built_ms, watermark);
