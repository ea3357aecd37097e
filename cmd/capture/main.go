// Command capture receives events from unmodified PostHog SDKs and produces them to Kafka.
package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/capture/proxy"
	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

func main() {
	var o capture.Options
	var addr *string
	var tokens, brokers *config.List
	var partitions int
	var corsOrigins config.List
	var webhookSecret *config.Secret
	cli.Main(&cli.Command{
		Name:    "capture",
		Summary: "a PostHog-compatible event endpoint, or PostHog's reverse proxy, that produces to Kafka",
		About: `Point any PostHog SDK's host at it (posthog-node: new PostHog(key, {host:
"http://capture:8000"})). It serves POST /batch/, /e/, /i/v0/e/, /capture/, /track/
(JSON, gzip, base64, form data=), GET with ?data=, /healthz and /metrics, and answers
200 only once every event of the request is acknowledged by Kafka (503 + Retry-After
otherwise, so SDKs retry; at once while Kafka is known to be down). An event ingest
would dead-letter (a time that cannot be placed, JSON nested deeper than 128, a name
over 200 bytes) fails its request with 400 and the reason. Requests beyond the
in-flight memory budget get 503 + Retry-After before their body is decompressed. With
no -capture-tokens, any API key is accepted (logged at start-up).

With -capture-upstream (https://us.i.posthog.com) capture is PostHog's reverse proxy
instead: every request goes to PostHog unchanged (/static/* and /array/* to the assets
host) and PostHog answers; a copy of each event request PostHog accepted is produced to
Kafka in the background, and what cannot be copied is counted, never waited for.
Point posthog-js at it with api_host, and keep ui_host on PostHog.

With -capture-webhook-secret, POST /webhook/posthog takes PostHog's HTTP Webhook
destination (Authorization: Bearer <secret>), for PostHog Cloud projects whose SDKs
stay as they are. docs/posthog.md has the settings.`,
		Flags: func(fs *flag.FlagSet) {
			addr, tokens, brokers = config.CaptureAddr(fs), config.CaptureTokens(fs), config.KafkaBrokers(fs)
			fs.Lookup("capture-tokens").Usage = "project API `keys` capture accepts (in proxy mode: whose events it keeps; PostHog answers all), comma-separated"
			fs.StringVar(&o.Topic, "events-topic", broker.EventsTopic, "Kafka topic for events")
			fs.IntVar(&partitions, "events-topic-partitions", -1, "partitions when creating a missing topic; -1: broker default")
			fs.Int64Var(&o.MaxBodyBytes, "capture-max-body-bytes", capture.DefaultMaxBodyBytes, "request size limit, before and after decompression")
			fs.Int64Var(&o.MaxInFlightBytes, "capture-max-inflight-bytes", 0, "memory all requests in flight may reserve (body, decompressed payload, parse, records); 0: 128 MiB or 4 × the body limit, whichever is larger")
			fs.IntVar(&o.MaxInFlightRequests, "capture-max-inflight-requests", capture.DefaultMaxInFlightRequests, "requests handled at once; more get 503 + Retry-After")
			fs.DurationVar(&o.KafkaCheckInterval, "capture-kafka-check-interval", capture.DefaultKafkaCheckInterval, "how often the brokers are pinged while they answer (every second while they do not)")
			fs.Var(&corsOrigins, "capture-cors-credential-origins", "browser `origins` (https://shop.example, comma-separated) answered with Access-Control-Allow-Credentials; others may send events without credentials")
			fs.StringVar(&o.Upstream, "capture-upstream", "", "PostHog API `url` (https://us.i.posthog.com, https://eu.i.posthog.com, or a self-hosted PostHog): capture becomes PostHog's reverse proxy and keeps a copy of the events; empty: capture answers the SDKs itself")
			fs.StringVar(&o.AssetsUpstream, "capture-assets-upstream", "", "PostHog assets `url` for /static/* and /array/* in proxy mode; empty: https://us-assets.i.posthog.com or https://eu-assets.i.posthog.com for PostHog Cloud, else the upstream")
			fs.Int64Var(&o.ProxyMaxBodyBytes, "capture-proxy-max-body-bytes", proxy.DefaultMaxBodyBytes, "request size limit in proxy mode (PostHog's; session recordings are large); bodies are streamed, only event requests are copied, within -capture-max-body-bytes")
			fs.IntVar(&o.TeeQueue, "capture-tee-queue", capture.DefaultTeeQueue, "copies of proxied event requests that may wait to be decoded; more are dropped and counted, never waited for")
			webhookSecret = config.SecretVar(fs, "capture-webhook-secret", "", "`secret` PostHog's HTTP Webhook destination sends as Authorization: Bearer <secret>; enables POST /webhook/posthog (comma-separated: several, to rotate)")
			fs.DurationVar(&o.ProduceTimeout, "capture-produce-timeout", capture.DefaultProduceTimeout, "wait for Kafka acks before answering 503")
			fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", capture.DefaultShutdownTimeout, "time to finish in-flight requests on SIGTERM")
		},
		Run: func(ctx context.Context, log *slog.Logger) error {
			o.Addr, o.Tokens, o.Brokers, o.TopicPartitions, o.Logger = *addr, *tokens, *brokers, int32(partitions), log
			o.CORSCredentialOrigins = corsOrigins
			o.WebhookSecret = *webhookSecret
			return capture.Run(ctx, o)
		},
	})
}
