-- Progressive rollout (pipeline/rollout). rollout_log is every change of every flag's
-- rollout, in the order the flag went through them: seq numbers a flag's changes (its
-- 1st, 2nd, …). A change is written twice: its intent (status 'pending', flag_state the
-- state it will set) before the flag system is called, and its outcome ('ok', 'failed'
-- or 'refused', flag_state the flag as the system returned it) after; a row with change
-- 'alerted' marks a change whose alert Kafka acknowledged. Who decided (decided_by:
-- replica or person, pass_id) and the numbers behind it (numbers, users) are kept with
-- it. Plain MergeTree, append-only, read per flag: a flag has a few dozen rows. Before
-- a change, a replica claims its number in pipeline/claim (the claims table of 0070 on
-- one node, ZooKeeper on a cluster), so one replica makes each change.
-- Times are Int64 milliseconds of the analyzer's clock (the pass time), so a replayed
-- or simulated week orders the same as a live one.
CREATE TABLE IF NOT EXISTS rollout_log (
    flag        {{.Str}},
    seq         Int64,
    change      {{.Str}},
    status      {{.Str}},
    from_stage  Int64,
    to_stage    Int64,
    stages      Int64,
    from_label  String,
    to_label    String,
    reason      String,
    numbers     String,
    users       String,
    action      {{.Str}},
    target      String,
    detail      String,
    flag_state  String,
    decided_by  String,
    pass_id     String,
    at_ms       Int64,
    done_ms     Int64,
    logged_at   DateTime DEFAULT now()
) ENGINE = MergeTree
ORDER BY (flag, seq, done_ms);
