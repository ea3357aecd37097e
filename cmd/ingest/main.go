// Command ingest consumes SDK events from Kafka and writes events and flag exposures to
// ClickHouse with at-least-once delivery.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
)

const usage = `ingest: consumes SDK events (PostHog events and envelopes, OpenFeature evaluation
events as OTLP/JSON or flat JSON) from Kafka, decodes and validates them, and writes raw
events and flag exposures to ClickHouse in batches. Offsets are committed only after
ClickHouse acknowledged the batch; replays deduplicate by event uuid. Messages that cannot
be ingested go, unchanged, to the dead-letter topic with the reason in a header.
Run several replicas with the same --group to split partitions. SIGTERM flushes,
commits and exits 0.

Usage:
  ingest [flags]

Every flag may also be set in the environment variable shown with it; a flag on the
command line wins.

Flags:
`

func main() {
	var opts ingest.Options
	fs := flag.NewFlagSet("ingest", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	opts.RegisterFlags(fs)
	if err := config.ParseFlags(fs, os.Args[1:], os.LookupEnv); err != nil {
		fail(err)
	}
	opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(opts.Logger)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := ingest.Run(ctx, opts); err != nil {
		fail(err)
	}
}

func fail(err error) {
	slog.Error("ingest failed", "err", err)
	os.Exit(1)
}
