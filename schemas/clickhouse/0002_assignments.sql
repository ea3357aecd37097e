-- Superseded by 0030_assignment_state.sql, which drops these two objects; kept so that
-- databases migrated before it replay the same history.
-- Assignment state: per (flag, user) the first exposure time, the variant of that first
-- exposure, every variant seen (two or more = $multiple), and the first exposure's
-- properties (segments). Kept as aggregate states fed by a materialized view: min, argMin
-- and groupUniqArray are commutative and idempotent, so the state is the same whatever
-- the arrival order, lateness or replays of exposures, and it survives restarts and
-- consumer rebalances because it lives in ClickHouse, not in a consumer's memory.
-- The state columns carry a _state suffix: ClickHouse resolves an alias before a column of
-- the same name, so "argMinState(variant, ts_ms) AS variant" would feed the next
-- aggregate its own result (and 18.16 cannot push into a view over a subquery).
CREATE TABLE IF NOT EXISTS assignments (
    flag           {{.Str}},
    distinct_id    String,
    first_state    AggregateFunction(min, Int64),
    variant_state  AggregateFunction(argMin, String, Int64),
    variants_state AggregateFunction(groupUniqArray, String),
    props_state    AggregateFunction(argMin, String, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (flag, distinct_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS assignments_mv TO assignments AS
SELECT
    flag,
    distinct_id,
    minState(ts_ms)                AS first_state,
    argMinState(variant, ts_ms)    AS variant_state,
    groupUniqArrayState(variant)   AS variants_state,
    argMinState(properties, ts_ms) AS props_state
FROM exposures
GROUP BY flag, distinct_id;
