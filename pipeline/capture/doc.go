// Package capture is flagwatch's PostHog-compatible ingestion endpoint: unmodified
// PostHog SDKs (posthog-js, posthog-node, posthog-go, …) pointed at it with their host
// setting send events here, and each event becomes one JSON message on the Kafka topic
// "events", keyed by distinct_id, in the PostHog event shape the rest of the pipeline
// decodes (SPEC §2).
//
// The decision that shapes it: a 2xx means the events are in Kafka, and are events
// ingest will store. A request's records are produced with acks=all by an idempotent
// producer and the response waits for every ack; if any record fails, or is not
// acknowledged within ProduceTimeout, the client gets 503 with Retry-After and, as the
// SDKs do on 5xx, sends the request again (a 503 does not promise absence: an idempotent
// producer keeps a batch whose fate it cannot know until the broker answers). Each
// message is decoded before it is produced by the very decoder ingest runs
// (event.AppendDecode), so an event ingest would dead-letter — a time that cannot be
// placed, a name too long — fails its request now, with a 400 that names the event's
// index and the reason, while the client can still see it. A request is accepted or
// rejected whole, and nothing of a rejected one is produced. Delivery is therefore at
// least once; a retried request produces the same uuids (the SDK's, or a deterministic
// one derived from the request when the SDK sent none), so downstream deduplication by
// uuid makes it exactly once in the store.
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
//     Options.Tokens is set, any other key gets 401 — before the body is read when the
//     key is outside it.
//
// Times: capture does not correct them. Each message carries the client's timestamp,
// sent_at (the event's, else the request's, else posthog-js's ?_=) and offset as the
// client sent them, and capture's receive time as "now"; the decoder places the event
// once, by PostHog's rule (event.Place, docs/events.md). Properties reach Kafka byte for
// byte.
//
// Hostile and careless clients: the body is bounded before and after decompression
// (MaxBodyBytes); JSON nested deeper than event.MaxDepth is refused before the
// recursive parser sees it; and all requests in flight share a memory budget
// (MaxInFlightBytes, MaxInFlightRequests) from which each reserves its buffers before
// allocating them — a gzip body's declared size before inflating it — so a flood of
// small bombs gets 503 with Retry-After instead of gigabytes. While Kafka is known to be
// down (a produce not acknowledged, a ping failed) requests get 503 at once, and
// /healthz says so, until a ping succeeds.
//
// Two more ways in for teams on PostHog (docs/posthog.md):
//   - Proxy mode (Options.Upstream): capture is PostHog's reverse proxy. Every request is
//     forwarded unchanged and answered by PostHog (pipeline/capture/proxy); the decision
//     above is turned around, since the client's answer is PostHog's: a copy of each
//     event request PostHog accepted is decoded and produced in the background (tee.go),
//     within the same budget, and what cannot be kept is dropped and counted, never
//     waited for. /healthz is then degraded, not failing, while Kafka is down.
//   - The webhook (WebhookPath): PostHog's HTTP Webhook destination posts each event,
//     authenticated by a secret; the rules are those of the capture endpoints.
package capture
