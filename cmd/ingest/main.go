// Command ingest consumes SDK events from Kafka and writes events and flag exposures to
// ClickHouse with at-least-once delivery.
package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
)

func main() {
	var opts ingest.Options
	cli.Main(&cli.Command{
		Name:    "ingest",
		Summary: "consumes SDK events from Kafka and writes events and flag exposures to ClickHouse",
		About: `Accepts PostHog events and envelopes and OpenFeature evaluation events (OTLP/JSON or
flat JSON), decodes and validates them, and inserts raw events and flag exposures in
batches. Offsets are committed only after ClickHouse acknowledged the batch; a replay
deduplicates by event uuid. A message that cannot be ingested goes, unchanged, to the
dead-letter topic with the reason in a header, and so does one ClickHouse refuses as bad
data; an error no retry can fix (credentials, a missing table) stops ingest with exit
code 1. An exposure is written only when it can change a user's assignment (its flag,
user and variant not written earlier), so 20–50 flags per event cost little. Run
several replicas with the same -group to split the partitions. SIGTERM flushes, commits
and exits 0. More in docs/ingest.md.`,
		Flags: func(fs *flag.FlagSet) { opts.RegisterFlags(fs) },
		Run: func(ctx context.Context, log *slog.Logger) error {
			opts.Logger = log
			return ingest.Run(ctx, opts)
		},
	})
}
