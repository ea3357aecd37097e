-- The latest result of every (flag, metric, segment, variant): what the flags list and
-- the top of a flag's page show. analysis_results is ordered for a flag's history, so
-- "the latest pass of every flag" there means reading every row of every pass (15 M rows
-- for a month of 15-minute passes of 50 flags); here it is one row per key, kept by a
-- view in the same INSERT as the history. ReplacingMergeTree keeps the row of the newest
-- pass (pass_time) per key; readers use FINAL (the table is small) and keep, per flag,
-- the rows of its newest pass, which drops keys that a later pass no longer reports.
-- The view names its columns, so a column added to analysis_results later stays out of
-- here until a migration adds it to both. discovered (property discovery, 0050) is added
-- to the history here already, so that the view copies it from the start. The key takes
-- the decision: a pass writes several rows per (flag, metric, segment, variant) — a
-- segment value's result, its correlation and its own behaviour shift; a property's
-- divergence and its heterogeneity test — which one row per key would collapse; the
-- rows of an older pass's decisions stay, and readers skip them with the older pass.
ALTER TABLE analysis_results ADD COLUMN {{.IfNotExists}}discovered UInt8 DEFAULT 0;

CREATE TABLE IF NOT EXISTS analysis_latest (
    pass_time        DateTime,
    pass_id          String,
    flag             {{.Str}},
    metric           String,
    segment_property String,
    segment_value    String,
    variant          String,
    n                UInt64,
    control_n        UInt64,
    mean             Float64,
    control_mean     Float64,
    lift             Float64,
    se               Float64,
    ci_low           Float64,
    ci_high          Float64,
    p                Float64,
    chance_to_win    Float64,
    cuped            UInt8,
    decision         {{.Str}},
    reason           String,
    discovered       UInt8 DEFAULT 0
) ENGINE = ReplacingMergeTree(pass_time)
ORDER BY (flag, metric, segment_property, segment_value, variant, decision);

CREATE MATERIALIZED VIEW IF NOT EXISTS analysis_latest_mv TO analysis_latest AS
SELECT pass_time, pass_id, flag, metric, segment_property, segment_value, variant, n, control_n, mean,
       control_mean, lift, se, ci_low, ci_high, p, chance_to_win, cuped, decision, reason, discovered
FROM analysis_results;

-- Backfill from the history of a database created before this migration (a no-op on a
-- new one): the newest row per key. A pass inserting meanwhile lands through the view
-- as well, and the engine keeps the newer row. The insert names its columns: a crash or
-- a concurrent start may repeat it after 0050 has added one.
INSERT INTO analysis_latest (pass_time, pass_id, flag, metric, segment_property, segment_value, variant, n,
       control_n, mean, control_mean, lift, se, ci_low, ci_high, p, chance_to_win, cuped, decision, reason, discovered)
SELECT max(pass_time), argMax(pass_id, pass_time), flag, metric, segment_property, segment_value, variant,
       argMax(n, pass_time), argMax(control_n, pass_time), argMax(mean, pass_time), argMax(control_mean, pass_time),
       argMax(lift, pass_time), argMax(se, pass_time), argMax(ci_low, pass_time), argMax(ci_high, pass_time),
       argMax(p, pass_time), argMax(chance_to_win, pass_time), argMax(cuped, pass_time), decision,
       argMax(reason, pass_time), argMax(discovered, pass_time)
FROM analysis_results
GROUP BY flag, metric, segment_property, segment_value, variant, decision
SETTINGS max_bytes_before_external_group_by = 2000000000;
