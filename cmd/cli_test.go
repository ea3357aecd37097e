// Package cmd_test runs the built commands the way a user does: their help texts
// (golden files, and the flag reference in docs/configuration.md generated from them),
// their exit codes, and what they print on the mistakes people make.
package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

var update = flag.Bool("update", false, "rewrite testdata/help/*.txt and the flag reference in docs/configuration.md")

// bin holds the commands, built once for every test.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "flagwatch-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := exec.Command("go", "build", "-o", dir+"/", "./...").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/...: %v\n%s", err, out)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type run struct {
	code           int
	stdout, stderr string
	pid            int
}

// cmd runs a built command with a clean FLAGWATCH_* environment plus env, and a
// deadline: none of these runs may wait for anything.
func cmd(t *testing.T, env []string, args ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(bin, args[0]), args[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLAGWATCH_") && !strings.HasPrefix(kv, "SLACK_") {
			c.Env = append(c.Env, kv)
		}
	}
	c.Env = append(c.Env, env...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%v: %v", args, err)
	}
	require.NoError(t, ctx.Err(), "%v did not finish", args)
	return run{code: c.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String(), pid: c.Process.Pid}
}

// helps are the commands whose help is golden and documented, in the order of the docs.
var helps = [][]string{
	{"capture"},
	{"ingest"},
	{"analyzer"}, {"analyzer", "run"}, {"analyzer", "once"}, {"analyzer", "report"}, {"analyzer", "users"}, {"analyzer", "evaluate"},
	{"analyzer", "rollout"}, {"analyzer", "rollout", "status"}, {"analyzer", "rollout", "resume"},
	{"notifier"}, {"notifier", "run"}, {"notifier", "digest"},
	{"demo"},
}

// replicaDefault is the analyzer's default replica id, the host name and the pid.
var replicaDefault = regexp.MustCompile(`(?m)^( {6}default )\S+-\d+( · env FLAGWATCH_REPLICA_ID)$`)

func helpText(t *testing.T, args []string) string {
	t.Helper()
	r := cmd(t, nil, append(args, "--help")...)
	require.Equal(t, 0, r.code, "%v --help: %s", args, r.stderr)
	require.Empty(t, r.stderr)
	host, _ := os.Hostname()
	require.NotContains(t, strings.ReplaceAll(r.stdout, fmt.Sprintf("%s-%d", host, r.pid), ""), host+"-",
		"the only machine-dependent default is the replica id")
	return replicaDefault.ReplaceAllString(r.stdout, "${1}<host>-<pid>${2}")
}

func TestHelpIsGolden(t *testing.T) {
	for _, args := range helps {
		name := strings.Join(args, "_")
		t.Run(name, func(t *testing.T) {
			got := helpText(t, args)
			path := filepath.Join("testdata", "help", name+".txt")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "go test ./cmd -update writes it")
			require.Equal(t, string(want), got, "help changed; if on purpose: go test ./cmd -update")

			// The layout every command shares.
			first, _, _ := strings.Cut(got, "\n")
			require.Regexp(t, `^`+regexp.QuoteMeta(strings.Join(args, " "))+` — \S.*[^.]$`, first, "one line of what it is")
			require.Contains(t, got, "\nUsage:\n  "+strings.Join(args, " ")+" ")
			if name == "analyzer" || name == "notifier" || name == "analyzer_rollout" {
				require.Contains(t, got, "\nCommands:\n")
				return
			}
			require.Contains(t, got, "\nLogging:\n  -log-format format\n")
			require.Contains(t, got, "default json · env FLAGWATCH_LOG_FORMAT\n  -log-level level\n")
		})
	}
}

// Every command that talks to ClickHouse takes the password from the environment or a
// file, beside the DSN.
func TestClickHouseCommandsTakeThePassword(t *testing.T) {
	for _, args := range [][]string{{"ingest"}, {"analyzer", "run"}, {"analyzer", "once"}, {"analyzer", "rollout", "status"}, {"analyzer", "rollout", "resume"}, {"notifier", "run"}, {"notifier", "digest"}, {"demo"}} {
		require.Contains(t, helpText(t, args), `  -clickhouse-password password
      ClickHouse password (overrides the DSN's)
      env FLAGWATCH_CLICKHOUSE_PASSWORD or FLAGWATCH_CLICKHOUSE_PASSWORD_FILE
`, args)
	}
}

func TestMistakesExitTwoWithOneLine(t *testing.T) {
	const dsnForms = "want clickhouse://host:9000/database, tcp://host:9000/database or chdb:///path/to/dir"
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{args: []string{"ingest", "-no-such-flag"}, want: "ingest: flag provided but not defined: -no-such-flag; see ingest --help"},
		{args: []string{"capture", "--no-such-flag=1"}, want: "capture: flag provided but not defined: -no-such-flag; see capture --help"},
		{args: []string{"demo", "-no-such-flag"}, want: "demo: flag provided but not defined: -no-such-flag; see demo --help"},
		{args: []string{"analyzer", "once", "-no-such-flag"}, want: "analyzer once: flag provided but not defined: -no-such-flag; see analyzer once --help"},
		{args: []string{"analyzer", "evaluate", "-no-such-flag"}, want: "analyzer evaluate: flag provided but not defined: -no-such-flag; see analyzer evaluate --help"},
		{args: []string{"ingest", "-batch-sise", "500"}, want: "ingest: flag provided but not defined: -batch-sise (did you mean -batch-size?); see ingest --help"},
		{args: []string{"ingest", "events"}, want: `ingest: unexpected argument "events"; see ingest --help`},
		{args: []string{"analyzer", "run", "now"}, want: `analyzer run: unexpected argument "now"; see analyzer run --help`},
		{args: []string{"analyzer", "report"}, want: "analyzer report: -out is required: the directory to write the pages to; see analyzer report --help"},
		{args: []string{"analyzer", "users"}, want: "analyzer users: want one flag key (analyzer users <flag> [flags]), got 0 arguments; see analyzer users --help"},
		{args: []string{"analyzer", "evaluate", "in.jsonl"}, want: `analyzer evaluate: unexpected argument "in.jsonl"; see analyzer evaluate --help`},
		{args: []string{"analyzer", "run", "-schedule", "every 5 minutes"},
			want: `analyzer run: invalid -schedule "every 5 minutes": expected exactly 5 fields, found 3: [every 5 minutes]; see analyzer run --help`},
		{args: []string{"analyzer", "rnu"}, want: `analyzer: unknown command "rnu": want run, once, report, users, evaluate or rollout; see analyzer --help`},
		{args: []string{"analyzer", "-schedule", "@hourly"}, want: "analyzer: a command must come before -schedule: run, once, report, users, evaluate or rollout; see analyzer --help"},
		{args: []string{"capture", "-log-level", "verbose"}, want: `capture: invalid value "verbose" for flag -log-level: want debug, info, warn or error; see capture --help`},
		{args: []string{"ingest"}, env: []string{"FLAGWATCH_LOG_FORMAT=logfmt"}, want: `ingest: FLAGWATCH_LOG_FORMAT: invalid value "logfmt" for -log-format: want json or text`},
		{args: []string{"ingest", "-clickhouse-dsn", "clickhous://127.0.0.1:9000/flagwatch"},
			want: `ingest: invalid -clickhouse-dsn clickhous://127.0.0.1:9000/flagwatch: unknown scheme "clickhous"; ` + dsnForms},
		{args: []string{"analyzer", "once"}, env: []string{"FLAGWATCH_CLICKHOUSE_DSN=clickhous://fw:hunter2@ch:9000/flagwatch"},
			want: `analyzer once: invalid -clickhouse-dsn clickhous://fw:xxxxx@ch:9000/flagwatch: unknown scheme "clickhous"; ` + dsnForms},
		{args: []string{"demo", "-clickhouse-dsn", "http://127.0.0.1:8123/"},
			want: `demo: invalid -clickhouse-dsn http://127.0.0.1:8123/: flagwatch speaks ClickHouse's native protocol (port 9000), not HTTP; ` + dsnForms},
		{args: []string{"analyzer", "run", "-clickhouse-dsn", "chdb://"},
			want: "analyzer run: invalid -clickhouse-dsn chdb://: the embedded engine needs a directory (chdb:///absolute/dir or chdb://relative/dir)"},
		{args: []string{"notifier", "run", "-no-such-flag"}, want: "notifier run: flag provided but not defined: -no-such-flag; see notifier run --help"},
		{args: []string{"notifier", "digest"}, want: "notifier digest: pass -now to send the digest now (the schedule runs inside notifier run); see notifier digest --help"},
		{args: []string{"notifier", "-dry-run"}, want: "notifier: a command must come before -dry-run: run or digest; see notifier --help"},
		{args: []string{"notifier", "run"}, env: []string{"FLAGWATCH_CLICKHOUSE_PASSWORD=a", "FLAGWATCH_CLICKHOUSE_PASSWORD_FILE=/dev/null"},
			want: "notifier run: set FLAGWATCH_CLICKHOUSE_PASSWORD or FLAGWATCH_CLICKHOUSE_PASSWORD_FILE, not both"},
		{args: []string{"analyzer", "rollout", "resume"}, want: "analyzer rollout resume: want the key of the flag to resume; see analyzer rollout resume --help"},
		{args: []string{"analyzer", "rollout", "status", "a", "b"},
			want: "analyzer rollout status: want at most one flag key, got 2 arguments; see analyzer rollout status --help"},
		{args: []string{"analyzer", "rollout", "status", "nope", "-config", "../pipeline/config/testdata/templates.yaml"},
			want: `analyzer rollout status: no rollout plan for flag "nope" in ../pipeline/config/testdata/templates.yaml (flags with a plan: new-checkout, fast-search); see analyzer rollout status --help`},
		{args: []string{"analyzer", "rollout", "status", "-config", "missing.yaml"},
			want: "analyzer rollout status: read config missing.yaml: open missing.yaml: no such file or directory"},
		{args: []string{"analyzer", "once", "-config", "missing.yaml"},
			want: "analyzer once: read config missing.yaml: open missing.yaml: no such file or directory"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cmd(t, tc.env, tc.args...)
			require.Equal(t, 2, r.code, r.stderr)
			require.Equal(t, tc.want+"\n", r.stderr)
			require.Empty(t, r.stdout)
		})
	}
}

func TestCommandsWithoutSubcommandPrintHelp(t *testing.T) {
	for _, name := range []string{"analyzer", "notifier"} {
		r := cmd(t, nil, name)
		require.Equal(t, 2, r.code)
		require.Empty(t, r.stdout)
		require.Equal(t, helpText(t, []string{name}), r.stderr)
	}
}

func TestEvaluateExitCodes(t *testing.T) {
	in := `{"metric": {"name": "purchase", "kind": "conversion"}, "variants": [
 {"name": "control", "n": 10000, "sum": 1000, "sum_sq": 1000}, {"name": "test", "n": 10000, "sum": 1100, "sum_sq": 1100}]}`
	c := exec.Command(filepath.Join(bin, "analyzer"), "evaluate")
	c.Stdin = strings.NewReader(in + "\n" + `{"metric": {"name": "x", "kind": "conversion"}, "variants": [{"name": "a", "n": 5}]}`)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	require.Error(t, err)
	require.Equal(t, 2, c.ProcessState.ExitCode())
	require.Equal(t, 1, strings.Count(stdout.String(), "\n"), "the valid input's verdict was written")
	require.Equal(t, "line 3: variants: need at least 2 (control and a test variant), got 1\n", stderr.String())
}

// The monitors file's problems, all of them, one per line, exit 2 — before anything
// connects.
func TestBadMonitorsFileExitsTwoWithEveryError(t *testing.T) {
	file := filepath.Join("..", "pipeline", "config", "testdata", "many_errors.yaml")
	r := cmd(t, nil, "analyzer", "once", "-config", file, "-clickhouse-dsn", "clickhouse://127.0.0.1:1/none")
	require.Equal(t, 2, r.code, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	require.Len(t, lines, 12, r.stderr)
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, "analyzer once: "+file+":"), l)
	}
	require.Contains(t, r.stderr, "analyzer once: "+file+`:14: flags[0].metrics[2]: unknown key "evnt" (did you mean "event"?)`)
}

// The password from FLAGWATCH_CLICKHOUSE_PASSWORD_FILE reaches the server (which refuses
// it: the test server's default user has none) and appears in no log line.
func TestClickHousePasswordFileIsUsedAndNeverLogged(t *testing.T) {
	chtest.ServerOnly(t, "passwords are a server's; the embedded engine refuses one")
	dsn, _ := chtest.DB(t)
	const password = "hunter2-not-the-password"
	file := filepath.Join(t.TempDir(), "password")
	require.NoError(t, os.WriteFile(file, []byte(password+"\n"), 0o600))
	cfg := filepath.Join(t.TempDir(), "flagwatch.yaml")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(bin, "analyzer"), "once", "-clickhouse-dsn", dsn, "-config", cfg,
		"-kafka-brokers", "127.0.0.1:1", "-log-level", "debug")
	c.Env = append(os.Environ(), "FLAGWATCH_CLICKHOUSE_PASSWORD_FILE="+file)
	var stderr syncBuffer
	c.Stderr = &stderr
	require.NoError(t, c.Start())
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	refused := regexp.MustCompile(`(?i)wrong password|password is incorrect|authentication failed`)
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true
		default:
			return refused.MatchString(stderr.String())
		}
	}, 50*time.Second, 20*time.Millisecond, "the server never refused the password: %s", stderr.String())
	_ = c.Process.Kill()
	<-done
	require.Regexp(t, refused, stderr.String())
	require.NotContains(t, stderr.String(), "hunter2")
	require.NotRegexp(t, `"(backoff|delay|wait|after)":\d`, stderr.String(), "durations are logged as text")
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const (
	docsFile  = "../docs/configuration.md"
	beginDocs = "<!-- BEGIN GENERATED FLAGS: go test ./cmd -update -->\n"
	endDocs   = "<!-- END GENERATED FLAGS -->\n"
)

// The flag reference in docs/configuration.md is the help of every command, so the
// documentation cannot drift from the binaries.
func TestDocsFlagReferenceIsTheHelp(t *testing.T) {
	var b strings.Builder
	for _, args := range helps {
		fmt.Fprintf(&b, "\n### `%s`\n\n```text\n%s```\n", strings.Join(args, " "), helpText(t, args))
	}
	generated := b.String() + "\n"
	doc, err := os.ReadFile(docsFile)
	require.NoError(t, err)
	head, rest, ok := strings.Cut(string(doc), beginDocs)
	require.True(t, ok, "%s lacks %q", docsFile, beginDocs)
	_, tail, ok := strings.Cut(rest, endDocs)
	require.True(t, ok, "%s lacks %q", docsFile, endDocs)
	if *update {
		require.NoError(t, os.WriteFile(docsFile, []byte(head+beginDocs+generated+endDocs+tail), 0o644))
		return
	}
	got, _, _ := strings.Cut(rest, endDocs)
	require.Equal(t, generated, got, "the flag reference in docs/configuration.md is stale: go test ./cmd -update")
}

// The worked example in docs/statistics.md is what `analyzer evaluate` prints.
func TestDocsStatisticsExample(t *testing.T) {
	const file = "../docs/statistics.md"
	doc, err := os.ReadFile(file)
	require.NoError(t, err)
	block := func(s, marker string) (before, body, after string) {
		before, rest, ok := strings.Cut(s, marker)
		require.True(t, ok, "%s lacks %q", file, marker)
		open := strings.Index(rest, "```")
		nl := strings.Index(rest[open:], "\n")
		start := open + nl + 1
		end := strings.Index(rest[start:], "```") + start
		return before + marker + rest[:start], rest[start:end], rest[end:]
	}
	_, cmdLine, _ := block(string(doc), "<!-- example input: checked by go test ./cmd -->")
	in := regexp.MustCompile(`(?s)^echo '(.*)' \| analyzer evaluate\n$`).FindStringSubmatch(cmdLine)
	require.NotNil(t, in, "the example is echo '<json>' | analyzer evaluate")

	c := exec.Command(filepath.Join(bin, "analyzer"), "evaluate")
	c.Stdin = strings.NewReader(in[1] + "\n")
	out, err := c.Output()
	require.NoError(t, err)
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, bytes.TrimSpace(out), "", "  "))
	pretty.WriteString("\n")

	head, got, tail := block(string(doc), "<!-- example output: checked by go test ./cmd -->")
	if *update {
		require.NoError(t, os.WriteFile(file, []byte(head+pretty.String()+tail), 0o644))
		return
	}
	require.Equal(t, pretty.String(), got, "docs/statistics.md's example output is stale: go test ./cmd -update")
}
