package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"
)

func TestResolveClickHouseDSN(t *testing.T) {
	const forms = "want clickhouse://host:9000/database, tcp://host:9000/database or chdb:///path/to/dir"
	for _, tc := range []struct {
		dsn, password, want, err string
	}{
		{dsn: DefaultClickHouseDSN, want: DefaultClickHouseDSN},
		{dsn: "tcp://ch:9000/flagwatch?dial_timeout=2s", want: "tcp://ch:9000/flagwatch?dial_timeout=2s"},
		{dsn: "clickhouse://ch1:9000,ch2:9000/flagwatch", want: "clickhouse://ch1:9000,ch2:9000/flagwatch"},
		{dsn: "chdb:///var/lib/flagwatch", want: "chdb:///var/lib/flagwatch"},
		{dsn: "chdb://data/chdb", want: "chdb://data/chdb"},
		{dsn: "clickhouse://ch:9000/flagwatch", password: "p@ss:/w#rd",
			want: "clickhouse://default:p%40ss%3A%2Fw%23rd@ch:9000/flagwatch"},
		{dsn: "clickhouse://flagwatch:old@ch1:9000,ch2:9000/flagwatch?secure=true", password: "new",
			want: "clickhouse://flagwatch:new@ch1:9000,ch2:9000/flagwatch?secure=true"},
		{dsn: "clickhous://127.0.0.1:9000/flagwatch",
			err: `invalid -clickhouse-dsn clickhous://127.0.0.1:9000/flagwatch: unknown scheme "clickhous"; ` + forms},
		{dsn: "clickhous://u:hunter2@127.0.0.1:9000/flagwatch",
			err: `invalid -clickhouse-dsn clickhous://u:xxxxx@127.0.0.1:9000/flagwatch: unknown scheme "clickhous"; ` + forms},
		{dsn: "http://ch:8123/flagwatch",
			err: "invalid -clickhouse-dsn http://ch:8123/flagwatch: flagwatch speaks ClickHouse's native protocol (port 9000), not HTTP; " + forms},
		{dsn: "ch:9000", err: "invalid -clickhouse-dsn [redacted]: not a URL"},
		{dsn: "u:hunter2@ch:9000", err: "invalid -clickhouse-dsn [redacted]: not a URL"},
		{dsn: "clickhouse://u:hun@ter2@ch:9000/db", password: "x",
			want: "clickhouse://u:x@ch:9000/db"},
		{dsn: "clickhous://u:hun@hunter2@ch:9000/db",
			err: `invalid -clickhouse-dsn clickhous://u:xxxxx@ch:9000/db: unknown scheme "clickhous"; ` + forms},
		{dsn: "clickhouse:///flagwatch", err: "invalid -clickhouse-dsn clickhouse:///flagwatch: no host; " + forms},
		{dsn: "chdb://", err: "invalid -clickhouse-dsn chdb://: the embedded engine needs a directory (chdb:///absolute/dir or chdb://relative/dir)"},
		{dsn: "chdb:///", err: "invalid -clickhouse-dsn chdb:///: the embedded engine needs a directory (chdb:///absolute/dir or chdb://relative/dir)"},
		{dsn: "chdb:///data", password: "x", err: "-clickhouse-password: the embedded engine (chdb://) takes no password"},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			got, err := ResolveClickHouseDSN(tc.dsn, NewSecret(tc.password))
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				require.NotContains(t, err.Error(), "hunter2")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			if tc.password == "" || tc.dsn[:4] == "chdb" {
				return
			}
			// The driver reads back exactly the password that was put in.
			opts, err := clickhouse.ParseDSN(got)
			require.NoError(t, err)
			require.Equal(t, tc.password, opts.Auth.Password)
		})
	}
}

func TestIsInvalid(t *testing.T) {
	_, err := Load("testdata/many_errors.yaml")
	require.True(t, IsInvalid(err))
	_, err = Load("testdata/nope.yaml")
	require.True(t, IsInvalid(err))
	require.True(t, IsInvalid(fmt.Errorf("load monitors: %w", err)))
	require.False(t, IsInvalid(errors.New("connect to clickhouse: refused")))
	require.False(t, IsInvalid(nil))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestSuggest(t *testing.T) {
	fields := fieldsOf(reflect.TypeFor[Metric]())
	for key, want := range map[string]string{
		"evnt":    ` (did you mean "event"?)`,
		"widow":   ` (did you mean "window"?)`,
		"Kind":    ` (did you mean "kind"?)`,
		"owner":   "",
		"x":       "",
		"guardrl": ` (did you mean "guardrail"?)`,
	} {
		require.Equal(t, want, suggest(key, fields), key)
	}
	require.Equal(t, 3, editDistance("kitten", "sitting"))
	require.Equal(t, 0, editDistance("", ""))
	require.Equal(t, 4, editDistance("", "flag"))
}
