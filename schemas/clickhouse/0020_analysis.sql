-- Results history: every pass appends one row per (flag, metric, segment, variant) and one
-- per whole-flag or whole-segment finding (metric or variant empty). The notifier's
-- digest and the behaviour-shift detector read it.
CREATE TABLE IF NOT EXISTS analysis_results (
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
    reason           String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(pass_time)
ORDER BY (flag, metric, segment_property, segment_value, variant, pass_time);

-- Alerts the analyzer emitted to flag_alerts, written after Kafka acknowledged them: a
-- finding is emitted once (and a critical one again after the repeat interval), and the
-- latched sequential decision of a subject (flag|metric|segment|variant) is read back
-- from here, so a restart neither re-emits nor forgets a latch.
CREATE TABLE IF NOT EXISTS alert_log (
    dedup_key  String,
    subject    String,
    decision   {{.Str}},
    severity   {{.Str}},
    emitted_ms Int64,
    pass_id    String,
    rollback   String
) ENGINE = MergeTree
ORDER BY (dedup_key, emitted_ms);

-- Pass leases: a replica inserts (slot, replica) and reads the slot back; a Join(ANY)
-- table keeps the first row per key, so exactly one replica runs each scheduled pass.
CREATE TABLE IF NOT EXISTS analyzer_leases (
    slot      String,
    replica   String,
    leased_ms Int64
) ENGINE = Join(ANY, LEFT, slot);
