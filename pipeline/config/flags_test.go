package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func env(vars map[string]string) Lookup {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func TestEnvName(t *testing.T) {
	require.Equal(t, "FLAGWATCH_KAFKA_BROKERS", EnvName("kafka-brokers"))
	require.Equal(t, "FLAGWATCH_CONFIG", EnvName("config"))
	require.Equal(t, "FLAGWATCH_SLACK_API_URL", EnvName("slack-api-url"))
}

// TestFlagBeatsEnvBeatsDefault checks the precedence of SPEC §6 settings.
func TestFlagBeatsEnvBeatsDefault(t *testing.T) {
	fs := newFlagSet()
	brokers := KafkaBrokers(fs)
	dsn := ClickHouseDSN(fs)
	cfg := MonitorsFile(fs)
	addr := CaptureAddr(fs)
	tokens := CaptureTokens(fs)
	api := SlackAPIURL(fs)
	interval := fs.Duration("interval", 0, "")

	err := ParseFlags(fs, []string{"-config", "/etc/fw.yaml", "-capture-addr=:9000"}, env(map[string]string{
		"FLAGWATCH_CONFIG":         "/from/env.yaml", // loses to the flag
		"FLAGWATCH_KAFKA_BROKERS":  "k1:9092, k2:9092",
		"FLAGWATCH_CAPTURE_TOKENS": "phc_a,phc_b",
		"FLAGWATCH_INTERVAL":       "15m",
		"FLAGWATCH_SLACK_API_URL":  "", // empty counts as unset
	}))
	require.NoError(t, err)
	require.Equal(t, "/etc/fw.yaml", *cfg)
	require.Equal(t, ":9000", *addr)
	require.Equal(t, List{"k1:9092", "k2:9092"}, *brokers)
	require.Equal(t, List{"phc_a", "phc_b"}, *tokens)
	require.Equal(t, "15m0s", interval.String())
	require.Equal(t, DefaultClickHouseDSN, *dsn)
	require.Equal(t, DefaultSlackAPIURL, *api)

	fs = newFlagSet()
	brokers = KafkaBrokers(fs)
	require.NoError(t, ParseFlags(fs, nil, env(nil)))
	require.Equal(t, List{DefaultKafkaBrokers}, *brokers)
}

func TestEnvInvalidValue(t *testing.T) {
	fs := newFlagSet()
	fs.Int("workers", 4, "")
	err := ParseFlags(fs, nil, env(map[string]string{"FLAGWATCH_WORKERS": "many"}))
	require.EqualError(t, err, `FLAGWATCH_WORKERS: invalid value "many" for -workers: parse error`)
}

func TestUsageNamesEnvVars(t *testing.T) {
	fs := newFlagSet()
	KafkaBrokers(fs)
	SlackBotToken(fs)
	var out bytes.Buffer
	fs.SetOutput(&out)
	require.ErrorIs(t, ParseFlags(fs, []string{"-help"}, env(nil)), flag.ErrHelp)
	require.Contains(t, out.String(), "(env FLAGWATCH_KAFKA_BROKERS)")
	require.Contains(t, out.String(), "-kafka-brokers brokers")
	require.Contains(t, out.String(), "(default 127.0.0.1:9092)")
	require.Contains(t, out.String(), "(env SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_FILE)")
}

func TestSecretSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(file, []byte("xoxb-from-file\n"), 0o600))

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
		err  string
	}{
		{name: "unset"},
		{name: "env", env: map[string]string{"SLACK_BOT_TOKEN": "xoxb-env"}, want: "xoxb-env"},
		{name: "file", env: map[string]string{"SLACK_BOT_TOKEN_FILE": file}, want: "xoxb-from-file"},
		{name: "flag beats env", args: []string{"-slack-bot-token", "xoxb-flag"},
			env: map[string]string{"SLACK_BOT_TOKEN_FILE": file}, want: "xoxb-flag"},
		{name: "both", env: map[string]string{"SLACK_BOT_TOKEN": "a", "SLACK_BOT_TOKEN_FILE": file},
			err: "set SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_FILE, not both"},
		{name: "missing file", env: map[string]string{"SLACK_BOT_TOKEN_FILE": filepath.Join(dir, "nope")},
			err: "read SLACK_BOT_TOKEN_FILE: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet()
			tok := SlackBotToken(fs)
			err := ParseFlags(fs, tc.args, env(tc.env))
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, tok.Reveal())
			require.Equal(t, tc.want != "", tok.IsSet())
		})
	}
}

func TestLookupSecretPrefixedName(t *testing.T) {
	fs := newFlagSet()
	pw := ClickHousePassword(fs)
	require.NoError(t, ParseFlags(fs, nil, env(map[string]string{"FLAGWATCH_CLICKHOUSE_PASSWORD": "pw"})))
	require.Equal(t, "pw", pw.Reveal())

	s, err := LookupSecret("ROLLBACK_HMAC_SECRET", env(map[string]string{"ROLLBACK_HMAC_SECRET": "k"}))
	require.NoError(t, err)
	require.Equal(t, "k", s.Reveal())
	s, err = LookupSecret("ROLLBACK_HMAC_SECRET", env(nil))
	require.NoError(t, err)
	require.False(t, s.IsSet())

	_, err = RequireSecret("ROLLBACK_HMAC_SECRET", env(nil))
	require.EqualError(t, err, "environment variable ROLLBACK_HMAC_SECRET (or ROLLBACK_HMAC_SECRET_FILE) is not set")
	s, err = RequireSecret("ROLLBACK_HMAC_SECRET", env(map[string]string{"ROLLBACK_HMAC_SECRET": "k"}))
	require.NoError(t, err)
	require.Equal(t, "k", s.Reveal())
}

func TestSecretNeverPrinted(t *testing.T) {
	const value = "xoxb-very-secret"
	s := NewSecret(value)
	type opts struct {
		Token  Secret
		TokenP *Secret
	}
	o := opts{Token: s, TokenP: &s}

	var logs bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&logs, nil))
	l.Info("starting", "token", s, "ptr", &s, "opts", o)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("starting", "token", s)

	js, err := json.Marshal(o)
	require.NoError(t, err)

	outputs := []string{
		logs.String(), string(js),
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %d", s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", o, o, &o), fmt.Sprint(&s),
	}
	for _, out := range outputs {
		require.NotContains(t, out, value)
		require.NotContains(t, out, fmt.Sprintf("%x", value))
	}
	require.Equal(t, "[redacted]", s.String())
	require.Contains(t, logs.String(), `"token":"[redacted]"`)
	require.Equal(t, "", Secret{}.String())
	require.Equal(t, value, s.Reveal())
}

func TestRedactURL(t *testing.T) {
	require.Equal(t, "clickhouse://default:xxxxx@ch:9000/flagwatch", RedactURL("clickhouse://default:hunter2@ch:9000/flagwatch"))
	require.Equal(t, DefaultClickHouseDSN, RedactURL(DefaultClickHouseDSN))
	require.False(t, strings.Contains(RedactURL("://bad:pw@x"), "pw"))
}
