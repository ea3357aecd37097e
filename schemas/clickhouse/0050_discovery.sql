-- Property discovery (SPEC §10). Rows of the results history say whether their segment
-- property was discovered rather than configured.
ALTER TABLE analysis_results ADD COLUMN {{.IfNotExists}}discovered UInt8 DEFAULT 0;

-- The discovered properties of a generation (0040), as JSON: a generation's
-- contribution rows carry those properties' values, so the passes that keep it current
-- use the same list until the next build chooses again.
ALTER TABLE analysis_generations ADD COLUMN {{.IfNotExists}}discovered String DEFAULT '';

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
