package notify

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// Defaults.
const (
	DefaultBrokers        = config.DefaultKafkaBrokers
	DefaultGroup          = "flagwatch-notifier"
	DefaultSlackAPIURL    = config.DefaultSlackAPIURL
	DefaultChannel        = "#growth"
	DefaultRepeatInterval = 4 * time.Hour
	// DefaultRateLimit is Slack's guidance for chat.postMessage: about one message per
	// second per channel, with short bursts allowed.
	DefaultRateLimit      = 20
	DefaultRateWindow     = time.Minute
	DefaultDigestSchedule = "0 9 * * MON"
	DefaultDigestTimeZone = "UTC"
	DefaultListenAddr     = ":9103"
	DefaultClaimLease     = time.Minute
	// DefaultBackoffMin and DefaultBackoffMax bound the waits between retries of a
	// Slack or ClickHouse call (doubling, with jitter); a 429 waits its Retry-After.
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = time.Minute
	// DefaultPollInterval is how often a notifier waiting for another one's claim looks
	// whether the post is done.
	DefaultPollInterval = 2 * time.Second
	// DefaultUnhealthyAfter is how long Slack or ClickHouse calls may keep failing before
	// /healthz says unhealthy (a single retry must not look like an outage).
	DefaultUnhealthyAfter = 2 * time.Minute
)

// Options configure the notifier. The zero value of a field means its default.
type Options struct {
	// Brokers is a comma-separated list of Kafka seed brokers.
	Brokers string
	// Topic is the alerts topic (alert.Topic).
	Topic string
	// Group is the Kafka consumer group; replicas share it.
	Group string
	// ClickHouseDSN holds the notification log and the analysis results.
	ClickHouseDSN string

	// SlackToken is the bot token (chat:write, files:write). With it, alerts are threaded
	// and resolved incidents update their first message.
	SlackToken config.Secret
	// SlackWebhookURL is an incoming webhook, used when there is no token: no threads, no
	// updates, no files, one fixed channel.
	SlackWebhookURL config.Secret
	// SlackAPIURL is the Web API base ("https://slack.com/api/"), for Slack-compatible
	// servers and tests.
	SlackAPIURL string
	// DefaultChannel receives alerts without a channel of their own, the digest, and
	// alerts whose own channel Slack rejects (channel_not_found, not_in_channel).
	DefaultChannel string
	// ReportBaseURL, when set, links <base>/flags/<flag> from messages whose alert has no
	// page URL of its own, and from the digest.
	ReportBaseURL string

	// RepeatInterval is the least time between two posts of the same unresolved critical
	// finding (default 4h).
	RepeatInterval time.Duration
	// RateLimit is the most messages posted to one channel per RateWindow; more wait their
	// turn (default 20 per minute).
	RateLimit  int
	RateWindow time.Duration

	// BackoffMin and BackoffMax bound the exponential back-off between retries of Slack
	// and ClickHouse calls (defaults 500ms and 1m); a 429 waits exactly its Retry-After.
	BackoffMin, BackoffMax time.Duration
	// PollInterval is how often a notifier that lost a claim checks whether the holder
	// has posted (default 2s).
	PollInterval time.Duration
	// UnhealthyAfter is how long Slack posts, claims or log writes may keep failing
	// before /healthz reports unhealthy (default 2m).
	UnhealthyAfter time.Duration

	// DigestSchedule is the weekly digest's cron spec ("" disables it in Run).
	DigestSchedule string
	// DigestTimeZone is the IANA zone the schedule is read in.
	DigestTimeZone string

	// DryRun renders each message as plain text to DryRunText instead of posting it, and,
	// when DryRunJSON is set, writes the Block Kit payload there as one JSON object per
	// line. The notification log is still used, so a dry run shows what would really be
	// posted.
	DryRun     bool
	DryRunText io.Writer // default os.Stdout
	DryRunJSON io.Writer // default none
	// DryRunFiles is a directory where a dry run keeps what it would upload (the
	// digest's chart PNG); "" keeps nothing.
	DryRunFiles string

	// ListenAddr serves /metrics and /healthz ("" disables).
	ListenAddr string
	// ReplicaID names this process in claims and log rows; it must be unique among the
	// running replicas. Default: host name and a random suffix.
	ReplicaID string
	// ClaimLease is how long a claim on a post stays valid without renewal; a replica
	// that dies while holding one delays that post by at most this long. It must exceed
	// one Slack call (30 s timeout) plus a log write; the holder renews it before each
	// call and through each back-off.
	ClaimLease time.Duration

	// Now is the clock for repeat intervals, log times and claims (default time.Now).
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// Results overrides the digest's data source (default: analysis_results in ClickHouse).
	Results digest.Source

	test testHooks
}

// testHooks are seams for this package's tests that production has no use for.
type testHooks struct {
	// afterLog is called once an effect is in the log, before its offset is committed;
	// returning true simulates a crash there (Run returns errCrashed, nothing committed).
	afterLog func(op string) bool
	// listening receives the ops server's address.
	listening func(addr string)
}

// RegisterFlags binds o's fields to flags on fs, with the defaults as flag defaults. The
// secrets are not among them: the caller registers them with pipeline/config
// (SLACK_BOT_TOKEN / SLACK_WEBHOOK_URL or their _FILE variants) and sets SlackToken and
// SlackWebhookURL.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Brokers, "kafka-brokers", DefaultBrokers, "comma-separated Kafka seed brokers")
	fs.StringVar(&o.Topic, "topic", alert.Topic, "alerts topic to consume")
	fs.StringVar(&o.Group, "group", DefaultGroup, "Kafka consumer group (replicas share it)")
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", store.DefaultDSN, "ClickHouse DSN (notification log, analysis results)")
	fs.StringVar(&o.SlackAPIURL, "slack-api-url", DefaultSlackAPIURL, "Slack Web API base URL")
	fs.StringVar(&o.DefaultChannel, "default-channel", DefaultChannel, "channel for alerts without one, the digest, and fallbacks")
	fs.StringVar(&o.ReportBaseURL, "report-base-url", "", "base URL of flag pages; messages without a page link of their own link <base>/flags/<flag>")
	fs.DurationVar(&o.RepeatInterval, "repeat-interval", DefaultRepeatInterval, "least time between repeats of an unresolved critical finding")
	fs.IntVar(&o.RateLimit, "rate-limit", DefaultRateLimit, "most messages per channel per rate window (more are queued)")
	fs.DurationVar(&o.RateWindow, "rate-window", DefaultRateWindow, "the rate limit's window")
	fs.DurationVar(&o.BackoffMin, "backoff-min", DefaultBackoffMin, "first wait before retrying a failed Slack or ClickHouse call (doubles per attempt)")
	fs.DurationVar(&o.BackoffMax, "backoff-max", DefaultBackoffMax, "longest wait between retries (a 429 waits its Retry-After)")
	fs.DurationVar(&o.PollInterval, "poll-interval", DefaultPollInterval, "how often to check on a post another replica claimed")
	fs.DurationVar(&o.UnhealthyAfter, "unhealthy-after", DefaultUnhealthyAfter, "how long Slack or ClickHouse calls may keep failing before /healthz says unhealthy")
	fs.StringVar(&o.DigestSchedule, "digest-schedule", DefaultDigestSchedule, `weekly digest cron spec ("" disables)`)
	fs.StringVar(&o.DigestTimeZone, "digest-tz", DefaultDigestTimeZone, "time zone of the digest schedule (IANA name)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print messages as text to stdout instead of posting (see --dry-run-json)")
	fs.StringVar(&o.DryRunFiles, "dry-run-files", "", "with --dry-run, keep what would be uploaded (the digest chart) in this directory")
	fs.StringVar(&o.ListenAddr, "listen", DefaultListenAddr, `address for /metrics and /healthz ("" disables)`)
	fs.StringVar(&o.ReplicaID, "replica-id", "", "unique name of this replica (default: host name + random suffix)")
	fs.DurationVar(&o.ClaimLease, "claim-lease", DefaultClaimLease, "validity of a replica's claim on a post before another replica may take over")
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	setDefault(&c.Brokers, DefaultBrokers)
	setDefault(&c.Topic, alert.Topic)
	setDefault(&c.Group, DefaultGroup)
	setDefault(&c.ClickHouseDSN, store.DefaultDSN)
	setDefault(&c.SlackAPIURL, DefaultSlackAPIURL)
	if !strings.HasSuffix(c.SlackAPIURL, "/") {
		c.SlackAPIURL += "/"
	}
	setDefault(&c.DefaultChannel, DefaultChannel)
	setDefault(&c.DigestTimeZone, DefaultDigestTimeZone)
	setDefault(&c.RepeatInterval, DefaultRepeatInterval)
	setDefault(&c.RateLimit, DefaultRateLimit)
	setDefault(&c.RateWindow, DefaultRateWindow)
	setDefault(&c.ClaimLease, DefaultClaimLease)
	setDefault(&c.BackoffMin, DefaultBackoffMin)
	setDefault(&c.BackoffMax, DefaultBackoffMax)
	setDefault(&c.PollInterval, DefaultPollInterval)
	setDefault(&c.UnhealthyAfter, DefaultUnhealthyAfter)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.DryRunText == nil {
		c.DryRunText = os.Stdout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ReplicaID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "notifier"
		}
		c.ReplicaID = host + "-" + randomID(4)
	}
	if !c.DryRun && !c.SlackToken.IsSet() && !c.SlackWebhookURL.IsSet() {
		return c, errors.New("no Slack credentials: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL (or their _FILE variants), or use --dry-run")
	}
	if _, err := time.LoadLocation(c.DigestTimeZone); err != nil {
		return c, fmt.Errorf("digest time zone %q: %w", c.DigestTimeZone, err)
	}
	if c.DigestSchedule != "" {
		if _, err := cron.ParseStandard(c.DigestSchedule); err != nil {
			return c, fmt.Errorf("digest schedule %q: %w", c.DigestSchedule, err)
		}
	}
	return c, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
