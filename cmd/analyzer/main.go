// Command analyzer turns flagwatch's cohort data into decisions and alerts.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"

	"github.com/robfig/cron/v3"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/evaluate"
	"github.com/flagwatch/flagwatch/pipeline/rollout"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/users"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

// usage makes a rollout request that cannot be served as asked a usage error (exit 2).
func usage(err error) error {
	var ae *rollout.ArgError
	if errors.As(err, &ae) {
		return cli.Usagef("%s", ae)
	}
	return err
}

func main() {
	var opts analyze.Options
	var uiToken *config.Secret
	pass := func(once bool) func(context.Context, *slog.Logger) error {
		return func(ctx context.Context, log *slog.Logger) error {
			if _, err := cron.ParseStandard(opts.Schedule); !once && err != nil {
				return cli.Usagef("invalid -schedule %q: %v", opts.Schedule, err)
			}
			opts.Once, opts.Logger = once, log
			// The flag pages beside /metrics and /healthz (run only), with the users
			// behind the results (off unless the monitors say expose_users).
			opts.Mount = func(mux *http.ServeMux, conn store.Conn, mons *config.Monitors) {
				lister := &users.Lister{Conn: conn, Monitors: mons}
				mux.Handle("/", web.Handler(web.Options{Conn: conn, Monitors: mons, Token: uiToken.Reveal(), Users: lister, Logger: log}))
				api := web.Secure(uiToken.Reveal(), users.Handler(lister, log))
				for _, p := range users.Patterns {
					mux.Handle(p, api)
				}
			}
			opts.Sessions = func(conn store.Conn, mons *config.Monitors) func(context.Context, string, alert.Finding) *alert.Watch {
				return users.Watcher(conn, mons, log)
			}
			opts.NewObservers = rollout.NewObservers(rollout.Options{Replica: opts.Replica, Logger: log,
				Lookup: opts.Lookup, PublicURL: opts.PublicURL})
			return analyze.Run(ctx, opts)
		}
	}
	flags := func(fs *flag.FlagSet) {
		opts.RegisterFlags(fs)
		uiToken = config.SecretVar(fs, "ui-token", "", "run: require this `token` (bearer, or basic-auth password) for the flag pages and their API")
	}
	var report web.ReportOptions
	var ro rollout.CLI
	var list users.CLIOptions
	cli.Main(&cli.Command{
		Name:    "analyzer",
		Summary: "turns flagwatch's ClickHouse data into decisions per flag, metric and segment, and alerts",
		About: `Always-valid sequential tests, CUPED, SRM, guardrails, segment divergence, behaviour
shift and staleness; results history in ClickHouse, new findings as alerts on the
flag_alerts topic, the monitor's rollback action on a guardrail breach, and each flag's
progressive rollout plan moved a stage at a time.`,
		Commands: []*cli.Command{{
			Name:    "run",
			Summary: "passes on a cron schedule (default every 15 minutes), with /metrics and /healthz",
			Flags:   flags, Run: pass(false),
		}, {
			Name:    "once",
			Summary: "one pass: one JSON object per (flag, metric, segment, variant) and per rollout plan on stdout; alerts emitted",
			Flags:   flags, Run: pass(true),
		}, {
			Name:    "report",
			Summary: "writes the flags list and every flag's page as static HTML files to -out",
			About: `The same pages the analyzer serves — verdict, what to do, metrics, lift over time,
segments, exposures and SRM, alerts — read from the results in ClickHouse, written as
self-contained files (index.html, flags/<key>.html with .json and .csv beside it).`,
			Flags: func(fs *flag.FlagSet) { report.RegisterFlags(fs) },
			Run: func(ctx context.Context, log *slog.Logger) error {
				if report.Out == "" {
					return cli.Usagef("%v", web.ErrNoOut)
				}
				report.Logger = log
				return web.RunReport(ctx, report)
			},
		}, {
			Name:    "users",
			Summary: "lists the users behind a result: first exposure, converted, sessions and recording links",
			About: `One cell's users (flag, variant, segments, converted or not) as JSON lines or CSV, with
their $session_ids in the metric's window and recordings_url links. Off unless the flag
has expose_users: true. For example:

  analyzer users new-checkout -variant test -segment '$geoip_country_code:GB' -converted=false`,
			Usage: "analyzer users [flags] <flag>",
			Flags: func(fs *flag.FlagSet) { list.RegisterFlags(fs) },
			Args:  list.Args,
			Run: func(ctx context.Context, log *slog.Logger) error {
				list.Logger = log
				return users.RunCLI(ctx, list)
			},
		}, {
			Name:    "evaluate",
			Summary: "the statistics alone: sufficient statistics as JSON on stdin, one verdict per line on stdout",
			About: `Each input object (one per line, or pretty-printed) gives one verdict line, in order.
Invalid input: one line on stderr naming the input's line and the field, exit 2.`,
			Usage: "analyzer evaluate [flags] < statistics.jsonl",
			Run: func(context.Context, *slog.Logger) error {
				return cli.Exit(evaluate.Run(os.Stdin, os.Stdout, os.Stderr))
			},
		}, {
			Name:    "rollout",
			Summary: "the progressive rollout plans: where each flag is, and handing one back to flagwatch",
			Commands: []*cli.Command{{
				Name:    "status",
				Summary: "each plan's stages, current stage, time in it, what it waits for, guardrails and last change",
				About: `Reads the rollout log and the latest analysis pass from ClickHouse; changes nothing.
With a flag key, only that flag's plan.`,
				Usage: "analyzer rollout status [flags] [flag]",
				Flags: func(fs *flag.FlagSet) { ro.RegisterFlags(fs, false) },
				Args: func(args []string) error {
					if len(args) > 1 {
						return cli.Usagef("want at most one flag key, got %d arguments", len(args))
					}
					if len(args) == 1 {
						ro.Flag = args[0]
					}
					return nil
				},
				Run: func(ctx context.Context, _ *slog.Logger) error { return usage(rollout.RunStatus(ctx, ro)) },
			}, {
				Name:    "resume",
				Summary: "hand a stopped, rolled-back or completed rollout back to flagwatch",
				About: `The next pass reads the flag as it is now (a person's change stands) and continues
from the first stage at or above it. Recorded in the rollout log with who resumed it.`,
				Usage: "analyzer rollout resume [flags] flag",
				Flags: func(fs *flag.FlagSet) { ro.RegisterFlags(fs, true) },
				Args: func(args []string) error {
					if len(args) != 1 {
						return cli.Usagef("want the key of the flag to resume")
					}
					ro.Flag = args[0]
					return nil
				},
				Run: func(ctx context.Context, _ *slog.Logger) error { return usage(rollout.RunResume(ctx, ro)) },
			}},
		}},
	})
}
