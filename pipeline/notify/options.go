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
	DefaultDigestSchedule = "0 9 * * MON"
	DefaultDigestTimeZone = "UTC"
	DefaultListenAddr     = ":9103"
	DefaultClaimLease     = time.Minute
)

// Secret is a credential. It prints, logs and marshals as "[redacted]", so an Options
// value can be logged whole without leaking the Slack token or webhook URL.
type Secret string

// String implements fmt.Stringer.
func (Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return `"[redacted]"` }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

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
	SlackToken Secret
	// SlackWebhookURL is an incoming webhook, used when there is no token: no threads, no
	// updates, no files, one fixed channel.
	SlackWebhookURL Secret
	// SlackAPIURL is the Web API base ("https://slack.com/api/"), for Slack-compatible
	// servers and tests.
	SlackAPIURL string
	// DefaultChannel receives alerts without a channel of their own, the digest, and
	// alerts whose own channel Slack rejects (channel_not_found, not_in_channel).
	DefaultChannel string
	// ReportBaseURL, when set, adds a link to <base>/flags/<flag> to every message.
	ReportBaseURL string

	// RepeatInterval is the least time between two posts of the same unresolved critical
	// finding.
	RepeatInterval time.Duration
	// RateLimit is the most messages posted to one channel per minute; more wait their turn.
	RateLimit int

	// DigestSchedule is the weekly digest's cron spec ("" disables it in run).
	DigestSchedule string
	// DigestTimeZone is the IANA zone the schedule is read in.
	DigestTimeZone string

	// DryRun prints each message's Block Kit JSON to Stdout instead of posting it. The
	// notification log is still used, so a dry run shows what would really be posted.
	DryRun bool
	// Stdout receives dry-run output (os.Stdout when nil).
	Stdout io.Writer

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

	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// Results overrides the digest's data source (default: analysis_results in ClickHouse).
	Results ResultsSource

	test testHooks
}

// testHooks are seams for this package's tests.
type testHooks struct {
	now          func() time.Time
	rateWindow   time.Duration
	backoffMin   time.Duration
	backoffMax   time.Duration
	pollInterval time.Duration
	// afterLog is called once an effect is in the log, before its offset is committed;
	// returning true simulates a crash there (Run returns errCrashed, nothing committed).
	afterLog func(op string) bool
	// listening receives the metrics server's address.
	listening func(addr string)
}

// RegisterFlags binds o's fields to flags on fs, with the defaults as flag defaults. The
// secrets are not among them: the caller reads them (cmd/notifier uses pipeline/config,
// which takes SLACK_BOT_TOKEN / SLACK_WEBHOOK_URL or their _FILE variants) and sets
// SlackToken and SlackWebhookURL.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Brokers, "kafka-brokers", DefaultBrokers, "comma-separated Kafka seed brokers")
	fs.StringVar(&o.Topic, "topic", alert.Topic, "alerts topic to consume")
	fs.StringVar(&o.Group, "group", DefaultGroup, "Kafka consumer group (replicas share it)")
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", store.DefaultDSN, "ClickHouse DSN (notification log, analysis results)")
	fs.StringVar(&o.SlackAPIURL, "slack-api-url", DefaultSlackAPIURL, "Slack Web API base URL")
	fs.StringVar(&o.DefaultChannel, "default-channel", DefaultChannel, "channel for alerts without one, the digest, and fallbacks")
	fs.StringVar(&o.ReportBaseURL, "report-base-url", "", "base URL of flag reports; messages link to <base>/flags/<flag>")
	fs.DurationVar(&o.RepeatInterval, "repeat-interval", DefaultRepeatInterval, "least time between repeats of an unresolved critical alert")
	fs.IntVar(&o.RateLimit, "rate-limit", DefaultRateLimit, "most messages per channel per minute (more are queued)")
	fs.StringVar(&o.DigestSchedule, "digest-schedule", DefaultDigestSchedule, `weekly digest cron spec ("" disables)`)
	fs.StringVar(&o.DigestTimeZone, "digest-tz", DefaultDigestTimeZone, "time zone of the digest schedule (IANA name)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print Block Kit JSON to stdout instead of posting")
	fs.StringVar(&o.ListenAddr, "listen", DefaultListenAddr, `address for /metrics and /healthz ("" disables)`)
	fs.StringVar(&o.ReplicaID, "replica-id", "", "unique name of this replica (default: host name + random suffix)")
	fs.DurationVar(&o.ClaimLease, "claim-lease", DefaultClaimLease, "validity of a replica's claim on a post before another replica may take over")
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Brokers == "" {
		c.Brokers = DefaultBrokers
	}
	if c.Topic == "" {
		c.Topic = alert.Topic
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.ClickHouseDSN == "" {
		c.ClickHouseDSN = store.DefaultDSN
	}
	if c.SlackAPIURL == "" {
		c.SlackAPIURL = DefaultSlackAPIURL
	}
	if !strings.HasSuffix(c.SlackAPIURL, "/") {
		c.SlackAPIURL += "/"
	}
	if c.DefaultChannel == "" {
		c.DefaultChannel = DefaultChannel
	}
	if c.RepeatInterval <= 0 {
		c.RepeatInterval = DefaultRepeatInterval
	}
	if c.RateLimit <= 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.DigestTimeZone == "" {
		c.DigestTimeZone = DefaultDigestTimeZone
	}
	if c.ClaimLease <= 0 {
		c.ClaimLease = DefaultClaimLease
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
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
	if c.test.now == nil {
		c.test.now = time.Now
	}
	if c.test.rateWindow <= 0 {
		c.test.rateWindow = time.Minute
	}
	if c.test.backoffMin <= 0 {
		c.test.backoffMin = 500 * time.Millisecond
	}
	if c.test.backoffMax <= 0 {
		c.test.backoffMax = time.Minute
	}
	if c.test.pollInterval <= 0 {
		c.test.pollInterval = 2 * time.Second
	}
	if !c.DryRun && c.SlackToken == "" && c.SlackWebhookURL == "" {
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
