// Command analyzer turns flagwatch's cohort data into decisions and alerts.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/evaluate"
)

const usage = `analyzer: per flag, metric and segment, always-valid sequential tests, CUPED, SRM,
guardrails, segment divergence and staleness over flagwatch's ClickHouse data; results
history in ClickHouse, new findings as alerts on the flag_alerts topic, and the monitor's
rollback action on a guardrail breach.

Usage:
  analyzer run [flags]        passes on a cron schedule (default every 15 minutes)
  analyzer once [flags]       one pass; one JSON object per (flag, metric, segment, variant)
                              on stdout; alerts emitted; exit 0
  analyzer evaluate           sufficient statistics as JSON on stdin (one object per line)
                              → one verdict per line on stdout; invalid input: exit 2

Every flag may also be set in the environment variable shown with it; a flag on the
command line wins.

Flags:
`

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "evaluate" {
		os.Exit(evaluate.Run(os.Stdin, os.Stdout, os.Stderr))
	}
	var opts analyze.Options
	fs := flag.NewFlagSet("analyzer "+cmd, flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	opts.RegisterFlags(fs)
	if err := config.ParseFlags(fs, args, os.LookupEnv); err != nil {
		fail(err)
	}
	opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(opts.Logger)
	switch cmd {
	case "run":
	case "once":
		opts.Once = true
	default:
		fs.Usage()
		fail(fmt.Errorf("unknown command %q", cmd))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := analyze.Run(ctx, opts); err != nil {
		fail(err)
	}
}

func fail(err error) {
	slog.Error("analyzer failed", "err", err)
	os.Exit(1)
}
