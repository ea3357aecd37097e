-- An exposure's segment properties (event.SegmentProps: its string members, less
-- per-event identifiers and long values), written by ingest. Users share a handful of
-- these where whole properties objects (session ids, URLs, times) are all distinct.
-- The default is the same rule in SQL, for rows from before this migration (computed
-- when read) and inserts that do not name the column; ingest's writer computes it in
-- Go, since ClickHouse 18.16's extractAll costs ~2 µs a row on the insert path and Go's
-- scanner 0.4 µs, off ClickHouse. TestSegmentsDefaultMatchesGo keeps them equal.
ALTER TABLE exposures ADD COLUMN {{.IfNotExists}}segments String DEFAULT
concat('{', arrayStringConcat(arrayFilter(kv -> NOT has(['"$session_id"', '"$window_id"', '"$insert_id"', '"$pageview_id"', '"$device_id"', '"$anon_distinct_id"', '"distinct_id"', '"$user_id"', '"uuid"', '"token"', '"$time"', '"$timestamp"', '"$sent_at"', '"$feature_flag"', '"$feature_flag_response"', '"$feature_flag_payload"'], substring(kv, 1, position(kv, '":"'))), extractAll(properties, '"(?:[^"\\\\]|\\\\.){1,100}":"(?:[^"\\\\]|\\\\.){0,100}"')), ','), '}');

-- Lean assignment state, replacing 0002's `assignments`. Per (flag, user): the first
-- exposure time, its variant, the least and greatest hash of a variant seen (they differ
-- exactly when the user saw two or more: $multiple) and the id of the first exposure's
-- segment properties. 0002 kept every variant (groupUniqArray), the whole properties
-- object and the distinct_id string per (flag, user); merging those in a pass's FINAL
-- read, and joining on the string, cost twice as much as these fixed-size states keyed by
-- a 64-bit hash of the user (measured at 30 M pairs), and every (flag, user) carried its
-- own copy of properties that users share. The pass joins events on the same hash; two
-- users colliding in 64 bits is a chance of about n²/2⁶⁵ (3·10⁻⁸ at a million users).
-- Keyed by user first, in small granules: an incremental pass (0040) looks up the users
-- with new data, and their rows must sit together for the sparse index to skip the rest.
-- All five aggregates are commutative and idempotent, as before: arrival order,
-- lateness, replays and rebalances give the same state.
CREATE TABLE IF NOT EXISTS assignment_state (
    flag           {{.Str}},
    uh             UInt64,
    first_state    AggregateFunction(min, Int64),
    variant_state  AggregateFunction(argMin, String, Int64),
    low_state      AggregateFunction(min, UInt64),
    high_state     AggregateFunction(max, UInt64),
    segments_state AggregateFunction(argMin, UInt64, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (uh, flag)
SETTINGS index_granularity = 256;

-- Segment property sets by id (cityHash64 of the set): a pass joins (flag, user) rows to
-- their segment values through this small table. Duplicates collapse on merge and are
-- harmless before (every copy of an id holds the same set).
CREATE TABLE IF NOT EXISTS segment_sets (
    id       UInt64,
    segments String
) ENGINE = ReplacingMergeTree
ORDER BY id;

-- Per flag: first and last exposure, so a pass learns which flags exist, how old they
-- are and whether their exposures stopped (stale) without reading per-user state.
CREATE TABLE IF NOT EXISTS flag_activity (
    flag        {{.Str}},
    first_state AggregateFunction(min, Int64),
    last_state  AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY flag;

-- The views go in before the backfills below: an exposure inserted in between lands
-- through both, and the aggregates (and the ReplacingMergeTree) absorb the duplicate.
CREATE MATERIALIZED VIEW IF NOT EXISTS assignment_state_mv TO assignment_state AS
SELECT
    flag,
    cityHash64(distinct_id)                                     AS uh,
    minState(ts_ms)                                             AS first_state,
    argMinState(variant, ts_ms)                                 AS variant_state,
    minState(cityHash64(variant))                               AS low_state,
    maxState(cityHash64(variant))                               AS high_state,
    argMinState(cityHash64(segments), ts_ms)                    AS segments_state
FROM exposures
GROUP BY flag, uh;

CREATE MATERIALIZED VIEW IF NOT EXISTS segment_sets_mv TO segment_sets AS
SELECT cityHash64(segments) AS id, segments
FROM exposures
GROUP BY segments;

CREATE MATERIALIZED VIEW IF NOT EXISTS flag_activity_mv TO flag_activity AS
SELECT flag, minState(ts_ms) AS first_state, maxState(ts_ms) AS last_state
FROM exposures
GROUP BY flag;

-- Backfill from the raw exposures of a database created before this migration (a no-op
-- on a new one). The GROUP BY may spill to disk rather than fail on a large table.
INSERT INTO assignment_state
SELECT flag, cityHash64(distinct_id) AS uh, minState(ts_ms), argMinState(variant, ts_ms),
       minState(cityHash64(variant)), maxState(cityHash64(variant)),
       argMinState(cityHash64(segments), ts_ms)
FROM exposures
GROUP BY flag, uh
SETTINGS max_bytes_before_external_group_by = 2000000000;

INSERT INTO segment_sets
SELECT cityHash64(segments) AS id, segments
FROM exposures
GROUP BY segments
SETTINGS max_bytes_before_external_group_by = 2000000000;

INSERT INTO flag_activity
SELECT flag, minState(ts_ms), maxState(ts_ms)
FROM exposures
GROUP BY flag;

DROP TABLE IF EXISTS assignments_mv;
DROP TABLE IF EXISTS assignments;
