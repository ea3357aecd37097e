package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
)

// Defaults of the connection settings (SPEC §6).
const (
	DefaultKafkaBrokers  = "127.0.0.1:9092"
	DefaultClickHouseDSN = "clickhouse://127.0.0.1:9000/flagwatch"
	DefaultCaptureAddr   = ":8000"
	DefaultSlackAPIURL   = "https://slack.com/api/"
)

// EnvPrefix starts the environment variable of every flag except secrets that name
// their own (SLACK_BOT_TOKEN).
const EnvPrefix = "FLAGWATCH_"

// EnvName is the environment variable for the flag called name:
// "kafka-brokers" → FLAGWATCH_KAFKA_BROKERS.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// Lookup reads an environment variable; os.LookupEnv outside tests.
type Lookup func(name string) (string, bool)

// ParseFlags parses args into fs and then applies the environment (see Env), so a flag on
// the command line beats its environment variable, which beats the default. Before
// parsing it adds each flag's variable to its usage text, so -help lists them.
func ParseFlags(fs *flag.FlagSet, args []string, lookup Lookup) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage += " (env " + EnvOf(f) + ")"
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	return Env(fs, lookup)
}

// Env sets every flag of fs that was not given on the command line from its
// environment variable, EnvName(flag) or a Secret's own; call it after fs.Parse (ParseFlags does). An
// empty variable counts as unset.
func Env(fs *flag.FlagSet, lookup Lookup) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if err := fromEnv(f, lookup); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// EnvOf names the environment variable f is read from, as help texts show it: the
// FLAGWATCH_* name, or for a secret "VAR or VAR_FILE".
func EnvOf(f *flag.Flag) string {
	if s, ok := f.Value.(*Secret); ok {
		return s.env + " or " + s.env + "_FILE"
	}
	return EnvName(f.Name)
}

func fromEnv(f *flag.Flag, lookup Lookup) error {
	if s, ok := f.Value.(*Secret); ok {
		return s.fromEnv(lookup)
	}
	name := EnvName(f.Name)
	v, ok := lookup(name)
	if !ok || v == "" {
		return nil
	}
	if err := f.Value.Set(v); err != nil {
		return fmt.Errorf("%s: invalid value %q for -%s: %w", name, v, f.Name, err)
	}
	return nil
}

// List is a comma-separated flag value ("a:9092,b:9092"). Setting it replaces the
// list.
type List []string

func (l *List) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Set implements flag.Value.
func (l *List) Set(s string) error {
	var out List
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*l = out
	return nil
}

// Secret holds a credential. It is set from the command line, from its environment
// variable, or from the file named by that variable with a _FILE suffix; it prints,
// logs and marshals as "[redacted]" so it cannot leak through fmt, slog or JSON.
// Reveal returns the value.
type Secret struct {
	value string
	env   string
}

const redacted = "[redacted]"

// NewSecret wraps a value already in hand.
func NewSecret(value string) Secret { return Secret{value: value} }

// SecretVar defines a secret flag read from env (and env_FILE) when not given on the
// command line; env "" means EnvName(name).
func SecretVar(fs *flag.FlagSet, name, env, usage string) *Secret {
	if env == "" {
		env = EnvName(name)
	}
	s := &Secret{env: env}
	fs.Var(s, name, usage)
	return s
}

// LookupSecret reads the secret held in environment variable env or in the file named
// by env_FILE. A secret set in neither is not an error: check IsSet.
func LookupSecret(env string, lookup Lookup) (Secret, error) {
	s := Secret{env: env}
	err := s.fromEnv(lookup)
	return s, err
}

func (s *Secret) fromEnv(lookup Lookup) error {
	fileVar := s.env + "_FILE"
	v, hasValue := lookup(s.env)
	file, hasFile := lookup(fileVar)
	hasValue, hasFile = hasValue && v != "", hasFile && file != ""
	switch {
	case hasValue && hasFile:
		return fmt.Errorf("set %s or %s, not both", s.env, fileVar)
	case hasValue:
		s.value = v
	case hasFile:
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read %s: %w", fileVar, err)
		}
		s.value = strings.TrimSpace(string(data))
		if s.value == "" {
			return fmt.Errorf("%s: file %s is empty", fileVar, file)
		}
	}
	return nil
}

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return s.value }

// IsSet reports whether the secret has a value.
func (s Secret) IsSet() bool { return s.value != "" }

// String is "[redacted]", or "" when the secret is unset.
func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return redacted
}

// Set implements flag.Value.
func (s *Secret) Set(v string) error {
	s.value = v
	return nil
}

// Format prints String for every verb, so %v, %+v, %#v, %s, %q and %x cannot leak.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// RedactURL returns s with any password in its user info replaced, for logging a DSN.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return redacted
	}
	return u.Redacted()
}

// The shared settings. Each service registers those it uses, so a setting has the same
// flag and environment variable everywhere.

// KafkaBrokersUsage describes -kafka-brokers.
const KafkaBrokersUsage = "Kafka bootstrap `brokers`, comma-separated host:port"

// KafkaBrokers registers -kafka-brokers (FLAGWATCH_KAFKA_BROKERS).
func KafkaBrokers(fs *flag.FlagSet) *List {
	l := &List{DefaultKafkaBrokers}
	fs.Var(l, "kafka-brokers", KafkaBrokersUsage)
	return l
}

// ClickHouseDSNUsage describes -clickhouse-dsn.
const ClickHouseDSNUsage = "`dsn` of the ClickHouse to use: clickhouse://[user@]host:9000/database (native protocol; tcp:// too) or chdb:///path/to/dir (embedded)"

// ClickHouseDSN registers -clickhouse-dsn (FLAGWATCH_CLICKHOUSE_DSN).
func ClickHouseDSN(fs *flag.FlagSet) *string {
	return fs.String("clickhouse-dsn", DefaultClickHouseDSN, ClickHouseDSNUsage)
}

// ClickHousePassword registers -clickhouse-password (FLAGWATCH_CLICKHOUSE_PASSWORD or
// FLAGWATCH_CLICKHOUSE_PASSWORD_FILE); it overrides a password in the DSN.
func ClickHousePassword(fs *flag.FlagSet) *Secret {
	return SecretVar(fs, "clickhouse-password", "", "ClickHouse `password` (overrides the DSN's)")
}

// ClickHouseCluster registers -clickhouse-cluster (FLAGWATCH_CLICKHOUSE_CLUSTER).
func ClickHouseCluster(fs *flag.FlagSet) *string {
	return fs.String("clickhouse-cluster", "", "run on this ClickHouse `cluster` (a name from the servers' remote_servers): per-user tables sharded by user and replicated; empty: one server")
}

// ZooKeeper registers -zookeeper (FLAGWATCH_ZOOKEEPER).
func ZooKeeper(fs *flag.FlagSet) *List {
	l := new(List)
	fs.Var(l, "zookeeper", "ZooKeeper or ClickHouse Keeper `servers` (host:port, comma-separated) the cluster uses; -clickhouse-cluster needs them for leases and claims")
	return l
}

// MonitorsFile registers -config (FLAGWATCH_CONFIG), the monitors file.
func MonitorsFile(fs *flag.FlagSet) *string {
	return fs.String("config", DefaultPath, "monitors `file`; if the default is absent, every flag gets the core metrics")
}

// CaptureAddr registers -capture-addr (FLAGWATCH_CAPTURE_ADDR).
func CaptureAddr(fs *flag.FlagSet) *string {
	return fs.String("capture-addr", DefaultCaptureAddr, "`address` the capture HTTP server listens on")
}

// CaptureTokens registers -capture-tokens (FLAGWATCH_CAPTURE_TOKENS).
func CaptureTokens(fs *flag.FlagSet) *List {
	l := &List{}
	fs.Var(l, "capture-tokens", "project API `keys` capture accepts, comma-separated")
	return l
}

// SlackBotToken registers -slack-bot-token (SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_FILE).
func SlackBotToken(fs *flag.FlagSet) *Secret {
	return SecretVar(fs, "slack-bot-token", "SLACK_BOT_TOKEN", "Slack bot `token` (xoxb-…)")
}

// SlackWebhookURL registers -slack-webhook-url (SLACK_WEBHOOK_URL or
// SLACK_WEBHOOK_URL_FILE); an incoming-webhook URL is a credential.
func SlackWebhookURL(fs *flag.FlagSet) *Secret {
	return SecretVar(fs, "slack-webhook-url", "SLACK_WEBHOOK_URL", "Slack incoming-webhook `url`")
}

// SlackAPIURL registers -slack-api-url (FLAGWATCH_SLACK_API_URL).
func SlackAPIURL(fs *flag.FlagSet) *string {
	return fs.String("slack-api-url", DefaultSlackAPIURL, "Slack Web API base `url`, for Slack-compatible servers and tests")
}
