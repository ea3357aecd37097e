// Package notify is flagwatch's notifier process: it consumes the analyzer's alerts from
// the flag_alerts topic, decides what each one means for the flag's Slack thread, and
// posts it exactly once; it also runs the weekly growth-review digest. cmd/notifier is a
// thin main around Run and SendDigest, so tests and `make demo` run the notifier
// in-process. The parts it composes live in their own packages: the notification log and
// claims (pipeline/nflog), the Slack transport and its failure classification
// (pipeline/slack), the messages (pipeline/render), the digest's content
// (pipeline/digest) and its chart (pipeline/chart).
//
// The decision that shapes it: every effect on Slack has an op, a deterministic function
// of the alert and the notification log ("open|new-checkout#2|0",
// "reply|new-checkout#2|<hash of the findings it reports>|0"), the log is written per
// post before the Kafka offset is committed, and an op found in the log is never
// performed again. The pipeline for one alert is:
//
//	read the flag's log → decide (open the incident / reply with what is new, due again
//	or resolved / nothing) → claim the op → read the log again → post (rate limit,
//	retries) → write the log → commit the offset
//
// A redelivered Kafka message, a restart after a crash before the commit, and a second
// replica all arrive at "the op is in the log" and post nothing.
//
// An alert is one flag's incident in one pass (pipeline/alert): its findings in priority
// order, headline first. The first alert of an incident opens a thread showing every
// current finding; later alerts reply in that thread with only the findings the thread
// has not reported yet, the unresolved critical ones again once Options.RepeatInterval
// has passed since they were last posted (the analyzer re-sends its findings every pass,
// so no timer of our own is needed), and resolutions; once nothing is open, the first
// message is rewritten as resolved and the next finding opens a new incident. What the
// thread has reported is read from the log, not from the alert's New marks, so a replayed
// or re-sent alert cannot post a finding twice.
//
// Two replicas share the consumer group, so normally each alert has one owner; during a
// rebalance a partition's old owner finishes or abandons its alert (at a safe point,
// never between post and log) before the partition moves. For the cases that remain (a
// member that stalled past its session timeout and still works, or alerts of one flag on
// two partitions) each op is claimed first (nflog.Claims, a lease renewed before each
// Slack call and through each back-off).
//
// What is left, honestly:
//   - A crash after Slack accepted a post and before the log row is written (a few
//     milliseconds, or longer if ClickHouse is down at that moment: the notifier keeps
//     retrying the write for 30 s after shutdown begins) posts that message again after
//     the restart. Each message carries its op in Slack message metadata, so it can be
//     found.
//   - A network error after Slack received a post (a timeout reading the answer) is
//     retried and can post twice: chat.postMessage has no idempotency key.
//   - A claim holder frozen longer than its lease (GC pause, SIGSTOP, clock jump, clock
//     skew between replicas close to the lease) can post alongside the notifier that
//     took over; the claims' own caveats are in pipeline/nflog.
//
// Slack failures are classified in one place (slack.Classify) and retried through
// pipeline/retry, every retry logged with its reason: a 429 waits exactly its
// Retry-After; 5xx, network errors and timeouts back off exponentially
// (Options.BackoffMin … BackoffMax); in both cases the alert stays uncommitted until it
// is posted, so nothing is lost while Slack is down. Rejected credentials also keep the
// alert and back off (every post would fail the same way, and dropping alerts because a
// token was rotated would lose them). channel_not_found, not_in_channel and archived
// channels concern one channel only: the incident is opened in the default channel with
// a note, and if that fails too it is recorded in the log as failed, counted
// (flagwatch_notifier_alerts_failed_total) and committed, so it does not block other
// channels; the next detection after the repeat interval tries again. Messages Slack
// rejects as malformed are recorded as failed the same way.
//
// /healthz (pipeline/ops) is served before anything is connected and names what the
// notifier waits for (ClickHouse, Kafka); it turns unhealthy when Slack posts or
// ClickHouse calls (claims, log) have kept failing for longer than
// Options.UnhealthyAfter, so one retry does not look like an outage.
//
// At most Options.RateLimit messages go to one channel per Options.RateWindow; the rest
// wait their turn (a queue, not a drop). Partitions are processed concurrently, each in
// order, so a flag's alerts (keyed by flag) keep their order, and a channel that is being
// throttled holds up only the partition it is on.
//
// With an incoming webhook instead of a bot token there are no threads, no updates of
// the first message and no chart upload; replies become messages of their own. With
// DryRun the messages are printed as plain text (and, with DryRunJSON, as Block Kit JSON
// lines) and the log still applies.
package notify
