// Command notifier posts flagwatch's alerts to Slack and sends the weekly digest.
package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/notify"
)

func main() {
	var opts notify.Options
	var token, webhook *config.Secret
	var now bool
	flags := func(fs *flag.FlagSet) {
		opts.RegisterFlags(fs)
		token, webhook = config.SlackBotToken(fs), config.SlackWebhookURL(fs)
	}
	withSecrets := func(log *slog.Logger) notify.Options {
		opts.SlackToken, opts.SlackWebhookURL = notify.Secret(token.Reveal()), notify.Secret(webhook.Reveal())
		opts.Logger = log
		return opts
	}
	cli.Main(&cli.Command{
		Name:    "notifier",
		Summary: "posts flagwatch's alerts to Slack, once each, threaded per flag incident, and sends the weekly digest",
		About: `Slack credentials: a bot token (threads, updates, the digest chart) or an incoming
webhook; neither is needed with -dry-run.`,
		Commands: []*cli.Command{{
			Name:    "run",
			Summary: "consume alerts from the flag_alerts topic and run the digest schedule",
			Flags:   flags,
			Run: func(ctx context.Context, log *slog.Logger) error {
				return notify.Run(ctx, withSecrets(log))
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
				return notify.SendDigest(ctx, withSecrets(log))
			},
		}},
	})
}
