// Package notify is flagwatch's notifier: it consumes the analyzer's alerts from the
// flag_alerts topic and posts them to Slack (Block Kit, one thread per flag incident,
// resolutions, repeats of unresolved critical findings), and sends the weekly
// growth-review digest with a lift chart. cmd/notifier is a thin main around Run and
// SendDigest, so tests and `make demo` run the notifier in-process.
//
// The decision that shapes it: the notification log is written per post, in ClickHouse,
// before the Kafka offset is committed, so a restart never reposts. (Alertmanager's
// nflog snapshots every 15 minutes, so a crash can re-notify; ours cannot, except in the
// window named below.) Every effect on Slack has an op, a deterministic function of the
// alert and the log ("open|new-checkout#2|0", "post|new-checkout#2|<dedup key>|1"); an op
// found in the log is never performed again. The pipeline for one alert is:
//
//	read the flag's log → decide (open / thread reply / repeat / resolve / nothing)
//	→ claim the op → read the log again → post (rate limit, retries) → write the log
//	→ commit the offset
//
// A redelivered Kafka message, a restart after a crash before the commit, and a second
// replica all arrive at "the op is in the log" and post nothing.
//
// Two replicas share the consumer group, so normally each alert has one owner; during a
// rebalance a partition's old owner finishes or abandons its alert (at a safe point,
// never between post and log) before the partition moves. For the cases that remain (a
// member that stalled past its session timeout and still works, or alerts of one flag
// on two partitions) each op is claimed first. The claim table is a ClickHouse
// Join(ANY, LEFT) table: it keeps the first row inserted for a key, and inserts are
// serialised by its lock, so "insert my claim, read the key back" is a compare-and-set
// that names one winner to every reader, with no transactions and on 18.16. (An
// "earliest claimed_at wins" rule on a MergeTree is not safe: client clocks skew, and
// server-side now() has one-second ties that a later inserter can win after an earlier
// one already read itself back as the winner.) Claims are leases: the holder renews
// before each Slack call and through each back-off, and another notifier takes over
// only after the lease (Options.ClaimLease) expired.
//
// What is left, honestly:
//   - A crash after Slack accepted a post and before the log row is written (a few
//     milliseconds, or longer if ClickHouse is down at that moment: the notifier keeps
//     retrying the write for 30 s after shutdown begins) posts that message again
//     after the restart. Each message carries its op in Slack message metadata, so it
//     can be found.
//   - A network error after Slack received a post (a timeout reading the answer) is
//     retried and can post twice: chat.postMessage has no idempotency key.
//   - A claim holder frozen longer than its lease (GC pause, SIGSTOP, clock jump, clock
//     skew between replicas close to the lease) can post alongside the notifier that
//     took over.
//   - The Join table lives on one server; with a ClickHouse cluster all notifiers must
//     use the same server. A server restart reloads the table's files in directory
//     order, so a key that two notifiers raced for can change winner; the holder
//     re-checks its claim before every call, which leaves a window of one Slack call.
//
// Slack failures are classified in one place (classify): a 429 waits exactly its
// Retry-After; 5xx, network errors and timeouts back off exponentially; in both cases the
// alert stays uncommitted until it is posted, so nothing is lost while Slack is down.
// invalid_auth and other credential errors also keep the alert and back off (every post
// would fail the same way, and dropping alerts because a token was rotated would lose
// them); /healthz reports it. channel_not_found, not_in_channel and archived channels
// concern one channel only: the alert is posted to the default channel with a note, and
// if that fails too it is recorded in the log as failed, counted
// (flagwatch_notifier_alerts_failed_total) and committed, so it does not block other
// channels; the next detection of the finding after the repeat interval tries again.
// Messages Slack rejects as malformed are recorded as failed the same way.
//
// At most Options.RateLimit messages go to one channel per minute; the rest wait their
// turn (a queue, not a drop). Partitions are processed concurrently, each in order, so a
// flag's alerts (keyed by flag) keep their order, and a channel that is being throttled
// holds up only the partition it is on. An unresolved critical finding is posted again,
// as a thread reply also sent to the channel, when the analyzer re-detects it at least
// Options.RepeatInterval after the last post; the analyzer re-sends findings every pass,
// so no timer of our own is needed.
//
// With an incoming webhook instead of a bot token there are no threads, no updates of
// the first message and no chart upload; replies and resolutions become messages of
// their own. With DryRun the messages are printed as JSON lines and the log still
// applies.
package notify
