package rollout_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/analyze"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/rollback/posthogtest"
	"github.com/flagwatch/flagwatch/pipeline/rollout"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// analyzer once, wired as cmd/analyzer wires it: the controller is built once ClickHouse
// and Kafka are connected, the pass starts the plan in PostHog, and the plan's row is
// printed after the result rows.
func TestAnalyzerOncePrintsTheRolloutRow(t *testing.T) {
	dsn, _ := chtest.DB(t)
	kafka := brokertest.Cluster(t, 1, broker.AlertsTopic)
	ph := posthogtest.New(t, "1", "phx_key")
	ph.Add(flagJSON)
	cfg := filepath.Join(t.TempDir(), "flagwatch.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(monitors,
		fmt.Sprintf(`posthog: {host: %q, project_id: 1, flag_id: 42, api_key_env: POSTHOG_API_KEY}`, ph.URL))), 0o600))

	var out bytes.Buffer
	now := time.Now().UTC()
	o := analyze.Options{Brokers: kafka.Addrs(), ClickHouseDSN: dsn, ConfigPath: cfg, Once: true, Stdout: &out,
		Logger: quiet(), Replica: "once-test", Lookup: lookup, Now: func() time.Time { return now }, ConnectWait: time.Minute}
	o.NewObservers = rollout.NewObservers(rollout.Options{Replica: o.Replica, Logger: quiet(), Lookup: o.Lookup, HTTP: fastHTTP()})
	require.NoError(t, analyze.Run(context.Background(), o))

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var last analyze.Row
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last))
	require.Equal(t, analyze.Row{Flag: "new-checkout", Decision: alert.Rollout,
		Reason: "new-checkout rollout started at 1% (stage 1 of 3): 1% → 10% → 100%"}, last)
	require.Equal(t, 1.0, posthogtest.Rollout(ph.Flag(42)))
}
