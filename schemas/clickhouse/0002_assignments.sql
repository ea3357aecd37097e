-- Assignment state: per (flag, user) the first exposure time, the variant of that first
-- exposure, every variant seen (two or more = $multiple), and the first exposure's
-- properties (segments). Kept as aggregate states fed by a materialized view: min, argMin
-- and groupUniqArray are commutative and idempotent, so the state is the same whatever
-- the arrival order, lateness or replays of exposures, and it survives restarts and
-- consumer rebalances because it lives in ClickHouse, not in a consumer's memory.
CREATE TABLE IF NOT EXISTS assignments (
    flag        {{.Str}},
    distinct_id String,
    first_ms    AggregateFunction(min, Int64),
    variant     AggregateFunction(argMin, String, Int64),
    variants    AggregateFunction(groupUniqArray, String),
    properties  AggregateFunction(argMin, String, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (flag, distinct_id);

-- The inner SELECT renames the source columns: ClickHouse resolves an alias before a
-- column of the same name, so "argMinState(variant, ts_ms) AS variant" followed by
-- "groupUniqArrayState(variant)" would nest one aggregate in another.
CREATE MATERIALIZED VIEW IF NOT EXISTS assignments_mv TO assignments AS
SELECT
    flag,
    distinct_id,
    minState(t)                 AS first_ms,
    argMinState(v, t)           AS variant,
    groupUniqArrayState(v)      AS variants,
    argMinState(p, t)           AS properties
FROM (SELECT flag, distinct_id, ts_ms AS t, variant AS v, properties AS p FROM exposures)
GROUP BY flag, distinct_id;
