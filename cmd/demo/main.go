// Command demo plays flagwatch's story end to end on the embedded default (make demo).
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
	"github.com/flagwatch/flagwatch/pipeline/demo"
)

func main() {
	var o demo.Options
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "demo: a synthetic week for three flags through kfake, ingest, the analyzer and the notifier.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	dsn := config.ClickHouseDSN(fs)
	fs.StringVar(&o.DataDir, "data-dir", ".demo", "broker data and generated monitors file (wiped at start)")
	fs.IntVar(&o.Users, "users", 30000, "synthetic users")
	fs.IntVar(&o.Days, "days", 8, "days of traffic, ending now")
	token, webhook := config.SlackBotToken(fs), config.SlackWebhookURL(fs)
	api := config.SlackAPIURL(fs)
	if err := config.ParseFlags(fs, os.Args[1:], os.LookupEnv); err != nil {
		slog.Error("demo", "err", err)
		os.Exit(2)
	}
	o.ClickHouseDSN, o.SlackToken, o.SlackWebhook, o.SlackAPIURL = *dsn, token.Reveal(), webhook.Reveal(), *api
	// The services' start-up chatter (migrations) would bury the story.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if _, err := demo.Run(ctx, o); err != nil {
		slog.Error("demo failed", "err", err)
		os.Exit(1)
	}
}
