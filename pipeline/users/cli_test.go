package users_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/users"
)

// runCLI runs `analyzer users` with args against the fixture.
func runCLI(t *testing.T, f *fixture, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "flagwatch.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(monitorsYAML), 0o644))
	var o users.CLIOptions
	fs := flag.NewFlagSet("analyzer users", flag.ContinueOnError)
	o.RegisterFlags(fs)
	require.NoError(t, fs.Parse(append([]string{"-clickhouse-dsn", f.dsn, "-config", cfg}, args...)))
	var out, errb bytes.Buffer
	o.Stdout, o.Stderr, o.Logger = &out, &errb, quiet
	err = users.RunCLI(context.Background(), o)
	return out.String(), errb.String(), err
}

// analyzer users prints the cell the API lists — every user with -limit 0, as CSV —
// or a few JSON lines and the cursor to go on with; mistakes are one line.
func testCLI(t *testing.T, f *fixture) {
	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	q := users.Query{Flag: "new-checkout", Variant: "test", Segments: []users.Segment{{Property: "$geoip_country_code", Value: "GB"}},
		Converted: ptr(false), Limit: users.MaxLimit}
	want := all(t, l, q)

	out, stderr, err := runCLI(t, f, "-flag", "new-checkout", "-variant", "test", "-segment", "$geoip_country_code:GB",
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

	out, stderr, err = runCLI(t, f, "-flag", "new-checkout", "-variant", "test", "-segment", "$geoip_country_code:GB", "-converted=false", "-limit", "3")
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
	out, _, err = runCLI(t, f, "-flag", "new-checkout", "-variant", "test", "-segment", "$geoip_country_code:GB", "-converted=false", "-limit", "2", "-cursor", cur)
	require.NoError(t, err)
	var u users.User
	require.NoError(t, json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &u))
	require.Equal(t, want[3].DistinctID, u.DistinctID, "the cursor goes on after the third")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-flag is required"},
		{[]string{"-flag", "new-onboarding"}, `listing users is off for flag "new-onboarding": set expose_users: true`},
		{[]string{"-flag", "new-checkout", "-segment", "GB"}, `-segment "GB": want property:value`},
		{[]string{"-flag", "new-checkout", "-metric", "nope"}, `unknown metric "nope" of new-checkout`},
		{[]string{"-flag", "new-checkout", "-format", "xml"}, `-format "xml": want jsonl or csv`},
	} {
		_, _, err := runCLI(t, f, tc.args...)
		require.ErrorContains(t, err, tc.want)
	}
}
