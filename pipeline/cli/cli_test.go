package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// tool is a command like the services: subcommands, shared connection flags, own flags.
func tool(t *testing.T, got *string, runErr error) *Command {
	var dsn string
	var every time.Duration
	leaf := func(name string) *Command {
		return &Command{
			Name:    name,
			Summary: name + " the things",
			Flags: func(fs *flag.FlagSet) {
				config.KafkaBrokers(fs)
				fs.StringVar(&dsn, "clickhouse-dsn", config.DefaultClickHouseDSN, "overridden by cli")
				fs.DurationVar(&every, "every", 4*time.Hour, "how often")
				fs.String("schedule", "*/15 * * * *", "cron `spec`")
				fs.Bool("dry-run", false, "print instead of posting")
				config.SlackBotToken(fs)
			},
			Run: func(ctx context.Context, log *slog.Logger) error {
				require.NotNil(t, ctx)
				require.Same(t, log, slog.Default(), "the command's logger is slog's default")
				*got = dsn
				log.Info("pass done", "took", 1500*time.Millisecond, "every", every)
				return runErr
			},
		}
	}
	return &Command{
		Name:     "tool",
		Summary:  "does things to flags",
		About:    "A longer story\nin two lines.",
		Commands: []*Command{leaf("run"), leaf("once")},
	}
}

type result struct {
	code           int
	stdout, stderr string
	dsn            string
}

func execute(t *testing.T, runErr error, env map[string]string, args ...string) result {
	t.Helper()
	var r result
	var out, errOut bytes.Buffer
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	r.code = Execute(context.Background(), tool(t, &r.dsn, runErr), args, &out, &errOut, lookup)
	r.stdout, r.stderr = out.String(), errOut.String()
	return r
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "go test ./pipeline/cli -update writes it")
	require.Equal(t, string(want), got, "help changed; if on purpose: go test ./pipeline/cli -update")
}

func TestHelpLayout(t *testing.T) {
	r := execute(t, nil, nil, "--help")
	require.Equal(t, ExitOK, r.code)
	require.Empty(t, r.stderr)
	golden(t, "parent.golden", r.stdout)

	r = execute(t, nil, nil, "once", "-h")
	require.Equal(t, ExitOK, r.code)
	golden(t, "leaf.golden", r.stdout)
	require.Empty(t, r.dsn, "help runs nothing")

	for _, args := range [][]string{{"help", "once"}, {"once", "--help"}, {"once", "-help"}} {
		require.Equal(t, r.stdout, execute(t, nil, nil, args...).stdout, args)
	}
	require.Equal(t, execute(t, nil, nil, "-h").stdout, execute(t, nil, nil, "help").stdout)
}

func TestUsageErrorsExitTwoWithOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"once", "-nope"}, want: "tool once: flag provided but not defined: -nope; see tool once --help"},
		{args: []string{"once", "-evrey", "1h"}, want: "tool once: flag provided but not defined: -evrey (did you mean -every?); see tool once --help"},
		{args: []string{"once", "--kafka-broker=k:9092"}, want: "tool once: flag provided but not defined: -kafka-broker (did you mean -kafka-brokers?); see tool once --help"},
		{args: []string{"once", "--every", "soon"}, want: `tool once: invalid value "soon" for flag -every: parse error; see tool once --help`},
		{args: []string{"once", "extra", "-every", "1h"}, want: `tool once: unexpected argument "extra"; see tool once --help`},
		{args: []string{"twice"}, want: `tool: unknown command "twice": want run or once; see tool --help`},
		{args: []string{"-every", "1h"}, want: "tool: a command must come before -every: run or once; see tool --help"},
		{args: []string{"run", "-log-level", "loud"}, want: `tool run: invalid value "loud" for flag -log-level: want debug, info, warn or error; see tool run --help`},
		{args: []string{"run", "-log-format", "xml"}, want: `tool run: invalid value "xml" for flag -log-format: want json or text; see tool run --help`},
		{args: []string{"run"}, env: map[string]string{"FLAGWATCH_EVERY": "soon"},
			want: `tool run: FLAGWATCH_EVERY: invalid value "soon" for -every: parse error`},
		{args: []string{"run", "-clickhouse-dsn", "clickhous://u:hunter2@ch:9000/db"},
			want: `tool run: invalid -clickhouse-dsn clickhous://u:xxxxx@ch:9000/db: unknown scheme "clickhous"; want clickhouse://host:9000/database, tcp://host:9000/database or chdb:///path/to/dir`},
		{args: []string{"run"}, env: map[string]string{"FLAGWATCH_CLICKHOUSE_DSN": "http://ch:8123/db"},
			want: `tool run: invalid -clickhouse-dsn http://ch:8123/db: flagwatch speaks ClickHouse's native protocol (port 9000), not HTTP; want clickhouse://host:9000/database, tcp://host:9000/database or chdb:///path/to/dir`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := execute(t, nil, tc.env, tc.args...)
			require.Equal(t, ExitUsage, r.code)
			require.Equal(t, tc.want+"\n", r.stderr)
			require.Empty(t, r.stdout)
			require.Empty(t, r.dsn, "nothing ran")
			require.NotContains(t, r.stderr, "hunter2")
		})
	}
}

func TestBareCommandPrintsHelpAndExitsTwo(t *testing.T) {
	r := execute(t, nil, nil)
	require.Equal(t, ExitUsage, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, execute(t, nil, nil, "--help").stdout, r.stderr)
}

func TestPasswordFromFileIsAppliedAndNeverLogged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(file, []byte("s3cr:t@pw\n"), 0o600))
	env := map[string]string{"FLAGWATCH_CLICKHOUSE_PASSWORD_FILE": file, "FLAGWATCH_CLICKHOUSE_DSN": "clickhouse://fw@ch:9000/db"}
	r := execute(t, errors.New("connect to clickhouse: refused"), env, "run", "-log-level", "debug")
	require.Equal(t, ExitFailure, r.code)
	require.Equal(t, "clickhouse://fw:s3cr%3At%40pw@ch:9000/db", r.dsn, "Run sees the DSN with the password")
	require.NotContains(t, r.stderr, "s3cr")

	r = execute(t, nil, map[string]string{"FLAGWATCH_CLICKHOUSE_PASSWORD": "a", "FLAGWATCH_CLICKHOUSE_PASSWORD_FILE": file}, "run")
	require.Equal(t, ExitUsage, r.code)
	require.Equal(t, "tool run: set FLAGWATCH_CLICKHOUSE_PASSWORD or FLAGWATCH_CLICKHOUSE_PASSWORD_FILE, not both\n", r.stderr)
}

func TestRunOutcomes(t *testing.T) {
	_, cfgErr := config.Parse([]byte("flags: [{key: a, evnt: x}, {key: a}]"), "fw.yaml")
	require.Error(t, cfgErr)
	for _, tc := range []struct {
		name   string
		err    error
		code   int
		stderr func(t *testing.T, s string)
	}{
		{"ok", nil, ExitOK, func(t *testing.T, s string) {
			require.Contains(t, s, `"msg":"pass done","took":"1.5s","every":"4h0m0s"`, "durations as text")
		}},
		{"failure", errors.New("connect to clickhouse: refused"), ExitFailure, func(t *testing.T, s string) {
			lines := strings.Split(strings.TrimSpace(s), "\n")
			var last map[string]any
			require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last))
			require.Equal(t, "ERROR", last["level"])
			require.Equal(t, "tool run failed", last["msg"])
			require.Equal(t, "connect to clickhouse: refused", last["err"])
		}},
		{"bad monitors file", cfgErr, ExitUsage, func(t *testing.T, s string) {
			require.True(t, strings.HasSuffix(s, `tool run: fw.yaml:1: flags[0]: unknown key "evnt"
tool run: fw.yaml:1: flags[1].key: duplicate flag "a" (first at line 1)
`), s)
		}},
		{"exit code chosen by Run", Exit(3), 3, func(t *testing.T, s string) {
			require.NotContains(t, s, "failed")
		}},
		{"usage error found by Run", Usagef("digest: pass --now"), ExitUsage, func(t *testing.T, s string) {
			require.True(t, strings.HasSuffix(s, "tool run: digest: pass --now; see tool run --help\n"), s)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := execute(t, tc.err, nil, "run")
			require.Equal(t, tc.code, r.code)
			require.Equal(t, config.DefaultClickHouseDSN, r.dsn)
			tc.stderr(t, r.stderr)
		})
	}
	require.NoError(t, Exit(ExitOK))
}

func TestLogFlags(t *testing.T) {
	r := execute(t, nil, map[string]string{"FLAGWATCH_LOG_FORMAT": "text"}, "run")
	require.Contains(t, r.stderr, `msg="pass done" took=1.5s every=4h0m0s`)
	r = execute(t, nil, nil, "run", "-log-level", "warn")
	require.Empty(t, r.stderr, "info is below warn")
}

func TestReplaceAttrInGroups(t *testing.T) {
	var buf bytes.Buffer
	NewLogger(&buf, slog.LevelInfo, "json").WithGroup("retry").Info("x", "backoff", 5*time.Second,
		slog.Group("next", "in", 250*time.Millisecond), "n", 3)
	require.Contains(t, buf.String(), `"retry":{"backoff":"5s","next":{"in":"250ms"},"n":3}`)
}

func TestDefaultText(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Duration("a", 90*time.Second, "")
	fs.Duration("b", 15*time.Minute, "")
	fs.Duration("c", 0, "")
	fs.Duration("d", 26*time.Hour+30*time.Second, "")
	fs.String("e", "", "")
	fs.String("f", "a b", "")
	fs.Int("g", -1, "")
	want := map[string]string{"a": "1m30s", "b": "15m", "c": "", "d": "26h0m30s", "e": "", "f": `"a b"`, "g": "-1"}
	fs.VisitAll(func(f *flag.Flag) { require.Equal(t, want[f.Name], defaultText(f), f.Name) })
}

// A command with Args takes positional arguments before or after its flags; Args says
// when they are wrong, as a usage error.
func TestPositionalArguments(t *testing.T) {
	var got []string
	var verbose bool
	cmd := &Command{Name: "tool", Summary: "does things", Commands: []*Command{{
		Name: "status", Summary: "shows things", Usage: "tool status [flags] [flag]",
		Flags: func(fs *flag.FlagSet) { fs.BoolVar(&verbose, "verbose", false, "more") },
		Args: func(args []string) error {
			if len(args) > 1 {
				return Usagef("want at most one flag key, got %d arguments", len(args))
			}
			got = args
			return nil
		},
		Run: func(context.Context, *slog.Logger) error { return nil },
	}}}
	run := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), cmd, args, &out, &errOut, func(string) (string, bool) { return "", false })
		return code, errOut.String()
	}
	for _, args := range [][]string{{"status", "new-checkout", "-verbose"}, {"status", "-verbose", "new-checkout"}} {
		got, verbose = nil, false
		code, stderr := run(args...)
		require.Equal(t, ExitOK, code, stderr)
		require.Equal(t, []string{"new-checkout"}, got)
		require.True(t, verbose)
	}
	code, _ := run("status")
	require.Equal(t, ExitOK, code)
	require.Empty(t, got)
	code, stderr := run("status", "a", "b")
	require.Equal(t, ExitUsage, code)
	require.Equal(t, "tool status: want at most one flag key, got 2 arguments; see tool status --help\n", stderr)
	code, stderr = run("status", "a", "-nope")
	require.Equal(t, ExitUsage, code)
	require.Equal(t, "tool status: flag provided but not defined: -nope; see tool status --help\n", stderr)
}
