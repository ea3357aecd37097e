// Command demo plays flagwatch's story end to end on the embedded default (make demo).
package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/demo"
)

func main() {
	var o demo.Options
	var dsn, api *string
	var token, webhook *config.Secret
	cli.Main(&cli.Command{
		Name:    "demo",
		Summary: "a synthetic week for three flags through kfake, ingest, the analyzer and the notifier",
		About: `Plays the story of the README on one machine: new-checkout splits by country,
fast-search breaks a guardrail and is rolled back, new-onboarding is an A/A test. It
ends with the Slack messages (posted for real when a Slack token or webhook is set)
and a summary table.`,
		// The services' start-up chatter (migrations) would bury the story.
		LogLevel: slog.LevelWarn,
		Flags: func(fs *flag.FlagSet) {
			dsn = config.ClickHouseDSN(fs)
			fs.StringVar(&o.DataDir, "data-dir", ".demo", "broker data and generated monitors `dir` (wiped at start)")
			fs.IntVar(&o.Users, "users", 30000, "synthetic users")
			fs.IntVar(&o.Days, "days", 8, "days of traffic, ending now")
			token, webhook, api = config.SlackBotToken(fs), config.SlackWebhookURL(fs), config.SlackAPIURL(fs)
		},
		Run: func(ctx context.Context, log *slog.Logger) error {
			o.ClickHouseDSN, o.SlackAPIURL, o.Logger = *dsn, *api, log
			o.SlackToken, o.SlackWebhook = token.Reveal(), webhook.Reveal()
			_, err := demo.Run(ctx, o)
			return err
		},
	})
}
