package ingest

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// 0 on the command line turns the age limit and the exposure cache off, and stays off
// through Defaults (which fills a zero Options field with the default instead).
func TestZeroTurnsOff(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		age   time.Duration
		cache int
	}{
		{nil, DefaultMaxEventAge, DefaultExposureCache},
		{[]string{"-max-event-age", "0", "-exposure-cache", "0"}, -1, -1},
		{[]string{"-max-event-age", "90d", "-exposure-cache", "1000"}, 90 * 24 * time.Hour, 1000},
		{[]string{"-max-event-age", "36h"}, 36 * time.Hour, DefaultExposureCache},
	} {
		var o Options
		fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.RegisterFlags(fs)
		require.NoError(t, fs.Parse(tc.args))
		o.Defaults()
		require.Equal(t, tc.age, o.MaxEventAge, "%v", tc.args)
		require.Equal(t, tc.cache, o.ExposureCache, "%v", tc.args)
	}
	var o Options
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.RegisterFlags(fs)
	require.Error(t, fs.Parse([]string{"-max-event-age", "-1h"}))
	require.Error(t, fs.Parse([]string{"-exposure-cache", "-3"}))
}
