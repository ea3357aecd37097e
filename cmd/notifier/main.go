// Command notifier posts flagwatch's alerts to Slack and sends the weekly digest.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/notify"
)

func main() {
	var opts notify.Options
	var token, webhook *config.Secret
	var now bool
	var dryJSON string
	flags := func(fs *flag.FlagSet) {
		opts.RegisterFlags(fs)
		token, webhook = config.SlackBotToken(fs), config.SlackWebhookURL(fs)
		fs.StringVar(&dryJSON, "dry-run-json", "", "with -dry-run, also write each message's Block Kit JSON to this `file` (one object per line)")
	}
	withSecrets := func(log *slog.Logger) (notify.Options, func(), error) {
		opts.SlackToken, opts.SlackWebhookURL = *token, *webhook
		opts.Logger = log
		if dryJSON == "" {
			return opts, func() {}, nil
		}
		f, err := os.Create(dryJSON)
		if err != nil {
			return opts, nil, fmt.Errorf("dry-run-json: %w", err)
		}
		opts.DryRunJSON = f
		return opts, func() { f.Close() }, nil
	}
	cli.Main(&cli.Command{
		Name:    "notifier",
		Summary: "posts flagwatch's alerts to Slack, once each, threaded per flag incident, and sends the weekly digest",
		About: `Slack credentials: a bot token (threads, updates, the digest chart) or an incoming
webhook; neither is needed with -dry-run, which prints each message as a person would
read it (and, with -dry-run-json FILE, writes its Block Kit JSON there).`,
		Commands: []*cli.Command{{
			Name:    "run",
			Summary: "consume alerts from the flag_alerts topic and run the digest schedule",
			Flags:   flags,
			Run: func(ctx context.Context, log *slog.Logger) error {
				o, done, err := withSecrets(log)
				if err != nil {
					return err
				}
				defer done()
				return notify.Run(ctx, o)
			},
		}, {
			Name:    "digest",
			Summary: "send the weekly digest now (with -now) and exit",
			Flags: func(fs *flag.FlagSet) {
				flags(fs)
				fs.BoolVar(&now, "now", false, "send the digest now (required: the schedule runs inside notifier run)")
			},
			Run: func(ctx context.Context, log *slog.Logger) error {
				if !now {
					return cli.Usagef("pass -now to send the digest now (the schedule runs inside notifier run)")
				}
				o, done, err := withSecrets(log)
				if err != nil {
					return err
				}
				defer done()
				return notify.SendDigest(ctx, o)
			},
		}},
	})
}
