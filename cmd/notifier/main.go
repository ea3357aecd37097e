// Command notifier posts flagwatch's alerts to Slack and sends the weekly digest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/notify"
)

const usage = `notifier: posts flagwatch alerts (Kafka topic flag_alerts) to Slack, once each,
threaded per flag incident, and sends the weekly growth-review digest.

Usage:
  notifier [run] [flags]      consume alerts and run the digest schedule (default)
  notifier digest --now       send the digest now and exit

Slack credentials: SLACK_BOT_TOKEN (threads, updates, the digest chart) or
SLACK_WEBHOOK_URL, or files named by SLACK_BOT_TOKEN_FILE / SLACK_WEBHOOK_URL_FILE;
neither is needed with --dry-run, which prints each message as a person would read it
(and, with --dry-run-json FILE, writes its Block Kit JSON there). Every flag may also
be set in the environment variable shown with it; a flag on the command line wins.

Flags:
`

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var opts notify.Options
	fs := flag.NewFlagSet("notifier "+cmd, flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	opts.RegisterFlags(fs)
	token, webhook := config.SlackBotToken(fs), config.SlackWebhookURL(fs)
	now := fs.Bool("now", false, "digest: send the digest immediately")
	dryJSON := fs.String("dry-run-json", "", "with --dry-run, also write each message's Block Kit JSON to this `file` (one object per line)")
	if err := config.ParseFlags(fs, args, os.LookupEnv); err != nil {
		fail(err)
	}
	if *dryJSON != "" {
		f, err := os.Create(*dryJSON)
		if err != nil {
			fail(fmt.Errorf("dry-run-json: %w", err))
		}
		defer f.Close()
		opts.DryRunJSON = f
	}
	opts.SlackToken, opts.SlackWebhookURL = *token, *webhook
	opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case cmd == "run":
		err = notify.Run(ctx, opts)
	case cmd == "digest" && *now:
		err = notify.SendDigest(ctx, opts)
	case cmd == "digest":
		err = errors.New("digest: pass --now to send the digest now (the schedule runs inside `notifier run`)")
	default:
		fs.Usage()
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	slog.Error("notifier failed", "err", err)
	os.Exit(1)
}
