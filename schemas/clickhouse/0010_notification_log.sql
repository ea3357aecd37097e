-- The notifier's notification log (pipeline/notify): one row per effect on Slack, written
-- right after the post succeeded (or failed for good), before the Kafka offset is
-- committed. op is the identity of the effect ("post|new-checkout#1|<dedup key>|0"); a
-- notifier that finds its op here does not post again, which is what makes a restart, a
-- redelivered alert or a second replica harmless. Plain MergeTree: rows are appended and
-- never updated, so 18.16 needs nothing it lacks (no TTL: a year of alerts is a few MB).
-- posted_ms orders the rows of one incident at millisecond precision (no DateTime64).
CREATE TABLE IF NOT EXISTS notification_log (
    op          String,
    flag        {{.Str}},
    incident    String,
    kind        {{.Str}},
    dedup_key   String,
    decision    {{.Str}},
    severity    {{.Str}},
    status      {{.Str}},
    channel     String,
    ts          String,
    thread_ts   String,
    error       String,
    message     String,
    replica     String,
    posted_ms   Int64,
    posted_at   DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMM(posted_at)
ORDER BY (flag, incident, posted_ms, op);

-- Claims: before an effect, a notifier inserts (op#epoch, its replica id, lease) here and
-- reads the key back. A Join(ANY, LEFT) table keeps the first row inserted for a key and
-- inserts are serialised by the table lock, so the read-back names the same winner to
-- every reader: a compare-and-set that 18.16 can do without transactions. Caveats (see
-- the package doc of pipeline/notify): the table lives on one server, and a server restart
-- reloads its files in directory order, which can change the winner of a key that two
-- replicas raced for; the notifier re-checks its claim right before posting.
CREATE TABLE IF NOT EXISTS notification_claims (
    claim       String,
    replica     String,
    claimed_ms  Int64,
    expires_ms  Int64
) ENGINE = Join(ANY, LEFT, claim);
