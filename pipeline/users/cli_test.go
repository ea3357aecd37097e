package users_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/users"
)

// runCLI runs `analyzer users` with args against the fixture, through the command line
// package as the analyzer does: stdout, the hints on stderr, and the error (a usage
// error as the line the command printed).
func runCLI(t *testing.T, f *fixture, args ...string) (stdout, hints string, err error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "flagwatch.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(monitorsYAML), 0o644))
	var o users.CLIOptions
	var out, hint, errb bytes.Buffer
	cmd := &cli.Command{Name: "analyzer", Commands: []*cli.Command{{Name: "users",
		Flags: func(fs *flag.FlagSet) { o.RegisterFlags(fs) }, Args: o.Args,
		Run: func(ctx context.Context, _ *slog.Logger) error {
			o.Stdout, o.Stderr, o.Logger = &out, &hint, quiet
			return users.RunCLI(ctx, o)
		}}}}
	code := cli.Execute(context.Background(), cmd, append([]string{"users", "-clickhouse-dsn", f.dsn, "-config", cfg}, args...),
		&out, &errb, func(string) (string, bool) { return "", false })
	if code != cli.ExitOK {
		err = fmt.Errorf("exit %d: %s", code, errb.String())
	}
	return out.String(), hint.String(), err
}

// analyzer users prints the cell the API lists — every user with -limit 0, as CSV —
// or a few JSON lines and the cursor to go on with; mistakes are one line.
func testCLI(t *testing.T, f *fixture) {
	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	q := users.Query{Flag: "new-checkout", Variant: "test", Segments: []users.Segment{{Property: "$geoip_country_code", Value: "GB"}},
		Converted: ptr(false), Limit: users.MaxLimit}
	want := all(t, l, q)

	out, stderr, err := runCLI(t, f, "new-checkout", "-variant", "test", "-segment", "$geoip_country_code:GB",
		"-converted=false", "-limit", "0", "-format", "csv")
	require.NoError(t, err)
	require.Empty(t, stderr)
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, "distinct_id", recs[0][0])
	require.Len(t, recs, len(want)+1, "one header, then every user of the cell")
	for i, u := range want {
		require.Equal(t, u.DistinctID, recs[i+1][0])
	}

	out, stderr, err = runCLI(t, f, "-variant", "test", "-segment", "$geoip_country_code:GB", "-converted=false", "new-checkout", "-limit", "3")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	for i, line := range lines {
		var u users.User
		require.NoError(t, json.Unmarshal([]byte(line), &u))
		require.Equal(t, want[i].DistinctID, u.DistinctID)
		require.Equal(t, want[i].Sessions, u.Sessions)
	}
	_, cur, ok := strings.Cut(strings.TrimSpace(stderr), "continue with -cursor ")
	require.True(t, ok, stderr)
	out, _, err = runCLI(t, f, "new-checkout", "-variant", "test", "-segment", "$geoip_country_code:GB", "-converted=false", "-limit", "2", "-cursor", cur)
	require.NoError(t, err)
	var u users.User
	require.NoError(t, json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &u))
	require.Equal(t, want[3].DistinctID, u.DistinctID, "the cursor goes on after the third")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "exit 2: analyzer users: want one flag key (analyzer users <flag> [flags]), got 0 arguments; see analyzer users --help"},
		{[]string{"new-checkout", "fast-search"}, "got 2 arguments"},
		{[]string{"new-onboarding"}, `exit 2: analyzer users: listing users is off for flag "new-onboarding": set expose_users: true`},
		{[]string{"new-checkout", "-segment", "GB"}, `-segment "GB": want property:value`},
		{[]string{"new-checkout", "-metric", "nope"}, `unknown metric "nope" of new-checkout`},
		{[]string{"new-checkout", "-format", "xml"}, `-format "xml": want jsonl or csv`},
	} {
		_, _, err := runCLI(t, f, tc.args...)
		require.ErrorContains(t, err, tc.want)
	}
}
