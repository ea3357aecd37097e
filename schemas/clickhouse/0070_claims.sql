-- Claims (pipeline/claim): the first value inserted under a key holds, and every reader
-- agrees which — a Join(ANY, LEFT) table keeps the first row per key and serialises
-- inserts under its lock. Analyzer pass leases, the incremental writers' leases, the
-- notifier's post claims and rollout stage changes all claim here on one node; a
-- cluster claims in ZooKeeper instead (a Join table lives on one server).
CREATE TABLE IF NOT EXISTS claims (
    key   String,
    value String
) ENGINE = Join(ANY, LEFT, key);
