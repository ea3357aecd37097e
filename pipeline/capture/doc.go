// Package capture is flagwatch's PostHog-compatible ingestion endpoint: unmodified
// PostHog SDKs (posthog-js, posthog-node, posthog-go, …) pointed at it with their host
// setting send events here, and each event becomes one JSON message on the Kafka topic
// "events", keyed by distinct_id, in the PostHog event shape the rest of the pipeline
// decodes (SPEC §2).
//
// The decision that shapes it: a 2xx means the events are in Kafka. A request's
// records are produced with acks=all by an idempotent producer and the response waits
// for every ack; if any record fails, or is not acknowledged within ProduceTimeout, the
// client gets 503 with Retry-After and, as the SDKs do on 5xx, sends the request again
// (a 503 does not promise absence: an idempotent producer keeps a batch whose fate it
// cannot know until the broker answers). A request is accepted or rejected whole:
// one malformed event fails the request with a 400 naming its index, and nothing of it
// is produced. Delivery is therefore at least once; a retried request produces the same
// uuids (the SDK's, or a deterministic one derived from the request when the SDK sent
// none), so downstream deduplication by uuid makes it exactly once in the store.
//
// Accepted requests (what PostHog's own capture accepts on /batch/, /e/, /i/v0/e/,
// /capture/ and /track/):
//   - bodies: a single event, a JSON array of events, or {api_key|token, batch: […],
//     sent_at}; gzip by Content-Encoding, by ?compression=gzip|gzip-js, or detected by
//     its magic bytes; base64 (?compression=base64, or detected); a legacy
//     application/x-www-form-urlencoded body whose data= field holds the payload; or,
//     for GET (the pixel), ?data=.
//   - the project API key from the body (api_key, token), an event (token, $token,
//     api_key, properties.token), ?token= / ?api_key=, or Authorization: Bearer. When
//     Options.Tokens is set, any other key gets 401.
//
// Each message keeps the event's properties byte for byte. Its timestamp is corrected
// for client clock skew as PostHog does: with sent_at (event, batch, or the ?_= query
// parameter in ms) and a timestamp, now + (timestamp − sent_at); with an offset in ms,
// now − offset; with a timestamp alone, that timestamp; otherwise now; anything more
// than 23 h in the future becomes now. The envelope also carries "now" (the server's
// receive time) and "sent_at" (the client's, normalised), so the client's own timestamp
// stays recoverable (timestamp − now + sent_at) without touching the properties.
package capture
