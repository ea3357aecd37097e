-- Raw product events, one row per event. ReplacingMergeTree on a key that ends in the
-- event uuid: a replayed batch (at-least-once delivery) collapses to one row on merge, and
-- readers that need exact counts use FINAL or aggregate by uuid.
-- Timestamps are Int64 milliseconds: 18.16 has no DateTime64, and attribution compares
-- exposure and event times at sub-second precision.
CREATE TABLE IF NOT EXISTS events (
    uuid        UUID,
    event       {{.Str}},
    distinct_id String,
    ts_ms       Int64,
    timestamp   DateTime,
    properties  String,
    source      {{.Str}},
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (event, distinct_id, ts_ms, uuid);

-- Flag exposures: $feature_flag_called, OpenFeature evaluations, and $feature/<key>
-- properties carried by any event. properties are the exposure's (segment values such as
-- $geoip_country_code are read from the first exposure).
CREATE TABLE IF NOT EXISTS exposures (
    uuid        UUID,
    flag        {{.Str}},
    variant     String,
    distinct_id String,
    ts_ms       Int64,
    timestamp   DateTime,
    properties  String,
    source      {{.Str}},
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (flag, distinct_id, ts_ms, uuid);
