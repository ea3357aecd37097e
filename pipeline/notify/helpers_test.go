package notify

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/slack/slacktest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// TestMain starts one ClickHouse server for the package's tests unless
// FLAGWATCH_TEST_CLICKHOUSE_DSN names one; each test still gets its own database.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv("FLAGWATCH_TEST_CLICKHOUSE_DSN") != "" || chtest.Embedded() {
		os.Exit(m.Run())
	}
	script, _ := filepath.Abs("../../scripts/clickhouse.sh")
	dirFile := filepath.Join(os.TempDir(), "notify-test-clickhouse-"+randomID(4))
	cmd := exec.Command(script, "start")
	cmd.Env = append(os.Environ(), "CLICKHOUSE_DIR_FILE="+dirFile)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start clickhouse:", err)
		os.Exit(1)
	}
	os.Setenv("FLAGWATCH_TEST_CLICKHOUSE_DSN", strings.TrimSpace(string(out)))
	code := m.Run()
	if dir, err := os.ReadFile(dirFile); err == nil {
		_ = exec.Command(script, "stop", strings.TrimSpace(string(dir))).Run()
	}
	_ = os.Remove(dirFile)
	os.Exit(code)
}

// env is one test's world: kfake, a ClickHouse database, a fake Slack, and the log
// lines of the notifiers it starts.
type env struct {
	t     *testing.T
	kafka *broker.Embedded
	prod  *kgo.Client
	dsn   string
	conn  store.Conn
	slack *slacktest.Server
	logs  *syncBuffer
}

func newEnv(t *testing.T, partitions int32, channels ...string) *env {
	t.Helper()
	if len(channels) == 0 {
		channels = []string{"#growth", "#checkout"}
	}
	e := &env{t: t, kafka: brokertest.Cluster(t, partitions, alert.Topic)}
	e.prod = brokertest.Client(t, e.kafka, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	e.dsn, e.conn = chtest.DB(t)
	e.slack = slacktest.New(t, channels...)
	e.logs = &syncBuffer{}
	return e
}

func (e *env) opts() Options {
	return Options{
		Brokers:        strings.Join(e.kafka.Addrs(), ","),
		Group:          "notifier-test",
		ClickHouseDSN:  e.dsn,
		SlackToken:     config.NewSecret(slacktest.Token),
		SlackAPIURL:    e.slack.APIURL(),
		DefaultChannel: "#growth",
		ReportBaseURL:  "https://flagwatch.example.com",
		ClaimLease:     3 * time.Second,
		Logger:         testLogger(e.t, e.logs),
		BackoffMin:     50 * time.Millisecond,
		BackoffMax:     400 * time.Millisecond,
		PollInterval:   50 * time.Millisecond,
	}
}

// start runs the notifier until the test ends or stop is called; stop returns Run's error.
func (e *env) start(o Options) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, o) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(60 * time.Second):
				err = errors.New("notifier did not stop within 60s")
			}
		})
		return err
	}
	e.t.Cleanup(func() { _ = stop() })
	return stop
}

// produce writes alerts to partition p (key: flag).
func (e *env) produce(p int32, as ...*alert.Alert) {
	e.t.Helper()
	var recs []*kgo.Record
	for _, a := range as {
		b, err := json.Marshal(a)
		require.NoError(e.t, err)
		recs = append(recs, &kgo.Record{Key: []byte(a.Flag), Value: b, Partition: p})
	}
	brokertest.Produce(e.t, e.prod, alert.Topic, recs...)
}

// lag is how many records of the alerts topic the group has not committed yet.
func (e *env) lag(group string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	adm := kadm.NewClient(e.prod)
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return -1
	}
	ends, err := adm.ListEndOffsets(ctx, alert.Topic)
	if err != nil {
		return -1
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		at := int64(0)
		if c, ok := committed.Lookup(alert.Topic, o.Partition); ok && c.Err == nil && c.At >= 0 {
			at = c.At
		}
		total += o.Offset - at
	})
	return total
}

// groupMembers is the number of group members that have partitions assigned.
func groupMembers(t *testing.T, e *env, group string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gs, err := kadm.NewClient(e.prod).DescribeGroups(ctx, group)
	if err != nil {
		return 0
	}
	g, ok := gs[group]
	if !ok || g.Err != nil || g.State != "Stable" {
		return 0
	}
	n := 0
	for _, m := range g.Members {
		if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
			n++
		}
	}
	return n
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogger writes JSON log lines to capture (tests assert the notifier's logged
// decisions: retries, their reasons and waits) and, with -v, to stderr.
func testLogger(t *testing.T, capture io.Writer) *slog.Logger {
	w := capture
	if testing.Verbose() {
		w = io.MultiWriter(capture, os.Stderr)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// logLines returns the captured log lines whose message starts with msg, decoded.
func (e *env) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && strings.HasPrefix(fmt.Sprint(m["msg"]), msg) {
			out = append(out, m)
		}
	}
	return out
}

// plain is a stored Slack message as a reader sees it: every text of its blocks.
func plain(m slacktest.Message) string {
	var b strings.Builder
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if s, ok := x["text"].(string); ok {
				b.WriteString(s + "\n")
			}
			for k, e := range x {
				if k != "text" || !isString(e) {
					walk(e)
				}
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	for _, blk := range m.Blocks {
		walk(map[string]any(blk))
	}
	return b.String()
}

func isString(v any) bool { _, ok := v.(string); return ok }

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var detected = time.Date(2024, 6, 3, 8, 15, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// lossAlert is the canonical finding: new-checkout loses UK purchases, and the analyzer
// rolled it back.
func lossAlert(flag string) *alert.Alert {
	seg := &alert.Segment{Property: "$geoip_country_code", Value: ptr("GB")}
	a := &alert.Alert{
		Flag: flag, Metric: "purchase conversion", Segment: seg, Variant: "test",
		Decision: alert.Loss, Severity: alert.Critical,
		Summary: flag + " is losing 35% of UK purchases",
		Reason:  "sequential 95% interval excludes zero after 12,034 users (Waudby-Smith, N*=5000)",
		Numbers: alert.Numbers{Control: "control", ControlN: 6012, VariantN: 6022, ControlMean: 0.1, VariantMean: 0.065,
			Lift: -0.35, CI: [2]float64{-0.501, -0.199}, P: 0.0004, ChanceToWin: 0.002, CUPED: true, Correction: "holm",
			Segments: []alert.SegmentEffect{
				{Property: "$geoip_country_code", Value: "GB", N: 12034, Lift: -0.35, CI: [2]float64{-0.501, -0.199}, Decision: alert.Loss},
				{Property: "plan", Value: "free", N: 8000, Lift: -0.12, CI: [2]float64{-0.2, -0.04}},
			}},
		Rollback:     &alert.Rollback{Action: "webhook", Target: "https://hooks.example.com/flagwatch", Status: "ok", Detail: "HTTP 200", At: detected.Add(time.Minute)},
		SlackChannel: "#checkout",
		DetectedAt:   detected,
	}
	a.DedupKey = alert.DedupKey(a.Flag, a.Metric, a.Segment, a.Decision)
	return a
}

func guardrailAlert(flag string) *alert.Alert {
	a := &alert.Alert{
		Flag: flag, Metric: "errors per user", Variant: "test", Decision: alert.GuardrailBreach, Severity: alert.Critical,
		Summary:      flag + ": errors per user up 41% (limit +30%)",
		Numbers:      alert.Numbers{ControlN: 6012, VariantN: 6022, Lift: 0.41, CI: [2]float64{0.31, 0.52}, P: 0.0001},
		SlackChannel: "#checkout", DetectedAt: detected,
	}
	a.DedupKey = alert.DedupKey(a.Flag, a.Metric, a.Segment, a.Decision)
	return a
}

func resolvedAlert(of *alert.Alert) *alert.Alert {
	a := &alert.Alert{Flag: of.Flag, Metric: of.Metric, Segment: of.Segment, Variant: of.Variant,
		Decision: alert.Resolved, Severity: alert.Info, Summary: of.Metric + " is back within bounds",
		SlackChannel: of.SlackChannel, DetectedAt: detected.Add(time.Hour)}
	a.DedupKey = alert.DedupKey(a.Flag, a.Metric, a.Segment, a.Decision)
	return a
}

// logRows reads the notification log.
func logRows(t *testing.T, conn store.Conn) []nflog.Entry {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT op, flag, kind, dedup_key, status, channel, ts, thread_ts, error
FROM notification_log ORDER BY posted_ms, op`)
	require.NoError(t, err)
	defer rows.Close()
	var out []nflog.Entry
	for rows.Next() {
		var e nflog.Entry
		require.NoError(t, rows.Scan(&e.Op, &e.Flag, &e.Kind, &e.DedupKey, &e.Status, &e.Channel, &e.TS, &e.ThreadTS, &e.Error))
		out = append(out, e)
	}
	return out
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
