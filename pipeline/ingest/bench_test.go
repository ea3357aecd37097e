package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/ingest"
	"github.com/flagwatch/flagwatch/pipeline/store"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
	"github.com/flagwatch/flagwatch/pipeline/synth"
)

// Benchmark knobs, read from the environment so that `make bench-ingest` needs no flags.
const (
	envEvents    = "FLAGWATCH_BENCH_EVENTS"     // events to produce (default 1,000,000)
	envBatch     = "FLAGWATCH_BENCH_BATCH"      // ingest --batch-size (default: ingest's own)
	envInProcess = "FLAGWATCH_BENCH_INPROCESS"  // 1: run ingest in this process (for -cpuprofile)
	envRuns      = "FLAGWATCH_BENCH_RUNS"       // interleaved runs per system, best reported (default 3)
	envIngestEnv = "FLAGWATCH_BENCH_INGEST_ENV" // extra environment for cmd/ingest, e.g. "GOGC=50 GOMEMLIMIT=400MiB"
	benchTopic   = broker.EventsTopic
	benchParts   = 4
)

// BenchmarkIngest is issue 2's ingest benchmark, run once (-benchtime 1x): it starts
// kfake and a private ClickHouse, produces N synthetic PostHog events (nested
// properties, LZ4-compressed batches as capture writes them) into a 4-partition topic,
// and then, one after the other on the same topic:
//
//   - reads it with a plain franz-go consumer (the broker's ceiling);
//   - runs cmd/ingest as a subprocess (fresh group, fresh database, --exit-when-caught-up)
//     with the materialized views (the join and the analyzer's touched users) and without them, timing the
//     process from start to exit and reading its peak RSS from wait4's rusage;
//   - lets ClickHouse's own Kafka engine + a materialized view read it into an equivalent
//     MergeTree, timed from CREATE MATERIALIZED VIEW until count() = N, in two forms:
//     JSONEachRow (top-level fields only; nested properties are skipped, not stored) and a
//     raw line with properties extracted as a string (what flagwatch stores).
//
// It prints a table and reports every number with b.ReportMetric.
func BenchmarkIngest(b *testing.B) {
	if testing.Short() {
		b.Skip("heavy end-to-end benchmark; run without -short")
	}
	n := envInt(b, envEvents, 1_000_000)
	batch := envInt(b, envBatch, 0)
	runs := max(1, envInt(b, envRuns, 3))
	inProcess := os.Getenv(envInProcess) == "1"
	start := time.Now()
	// Migrations of the per-run databases log through the default logger; keep the
	// report readable (FLAGWATCH_TEST_LOG=1 shows everything, ingest's logs included).
	prev := slog.Default()
	slog.SetDefault(quiet)
	b.Cleanup(func() { slog.SetDefault(prev) })

	kc := brokertest.Cluster(b, benchParts, benchTopic)
	ch := chtest.Start(b)
	seeds := kc.Addrs()
	cpu := newCPUMeter(b, ch.Dir)

	var bin string
	if !inProcess {
		bin = buildIngest(b)
	}

	prod := produceSynth(b, seeds, n)
	b.Logf("produced %d events (%d exposures, %.0f bytes/event avg) in %s",
		n, prod.exposures, float64(prod.bytes)/float64(n), prod.dur.Round(time.Millisecond))

	rawDur := rawConsume(b, seeds, n)

	run := func(label string, join, stats bool) ingestResult {
		dsn, conn := chtest.NewDB(b, ch.DSN)
		if !join {
			// Every view: the assignment state, segment sets (and their counts per flag), flag activity and the
			// touched users of incremental passes are all the join's work at insert.
			for _, mv := range []string{"assignment_state_mv", "segment_sets_mv", "flag_activity_mv", "touched_events_mv", "touched_exposures_mv", "flag_segment_sets_mv"} {
				mustExec(b, conn, "DROP TABLE "+mv)
			}
		}
		var r ingestResult
		c0 := cpu.sample()
		stop := make(chan struct{})
		var landed landing
		var watchErr error
		watched := make(chan struct{})
		t0 := time.Now()
		group := fmt.Sprintf("bench-%s-%d", label, t0.UnixNano())
		go func() {
			defer close(watched)
			landed, watchErr = watch(conn, "events", n, t0, stop)
		}()
		if inProcess {
			r = runIngestInProcess(b, seeds, dsn, group, batch)
		} else {
			r = runIngestProcess(b, bin, seeds, dsn, group, batch)
		}
		close(stop)
		<-watched
		if watchErr != nil {
			b.Fatal(watchErr)
		}
		r.landed = landed
		r.cpu = cpu.sample().sub(c0)
		checkCounts(b, conn, n, prod.exposures)
		if stats {
			r.tables = tableStats(b, conn, dsn, "events", "exposures", "assignment_state", "segment_sets", "flag_activity", "touched_users")
		}
		// Dropping the database now stops its merges before the next run.
		mustExec(b, conn, "DROP DATABASE "+dbName(b, dsn))
		return r
	}
	// The runs interleave, so a noisy neighbour on this shared box hits every system alike,
	// and each system is reported by its best run.
	var joinRuns, noJoinRuns []ingestResult
	var jsonRuns, rawRuns []engineResult
	for i := range runs {
		joinRuns = append(joinRuns, run("join", true, i == 0))
		noJoinRuns = append(noJoinRuns, run("nojoin", false, false))
		jsonRuns = append(jsonRuns, kafkaEngine(b, ch.DSN, cpu, seeds[0], n, engineJSONEachRow, false))
		rawRuns = append(rawRuns, kafkaEngine(b, ch.DSN, cpu, seeds[0], n, engineRawLine, i == 0))
	}
	withJoin, noJoin := bestIngest(joinRuns), bestIngest(noJoinRuns)
	engineJSON, engineRaw := bestEngine(jsonRuns), bestEngine(rawRuns)
	stats := joinRuns[0].tables

	// The report.
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	stored := stats.total()
	assign := stats["assignment_state"]
	pairs := float64(max(assign.rows, 1))
	ratioJSON := rate(withJoin.dur) / rate(engineJSON.dur)
	ratioRaw := rate(withJoin.dur) / rate(engineRaw.dur)

	var out bytes.Buffer
	fmt.Fprintf(&out, "\ningest benchmark: %d synthetic PostHog events (%.0f B avg, nested properties; %d exposures) in %d partitions, LZ4 batches;\n",
		n, float64(prod.bytes)/float64(n), prod.exposures, benchParts)
	fmt.Fprintf(&out, "kfake in this process, ClickHouse %s private server, %d CPUs shared; best of %d interleaved runs each\n",
		serverVersion(b, ch.DSN), runtime.NumCPU(), runs)
	tw := tabwriter.NewWriter(&out, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tevents/s\twall\tfirst row\tall rows\tCPU ingest\tCPU ClickHouse\tpeak RSS\tevents/s of each run\t")
	fmt.Fprintf(tw, "produce (synth → kfake)\t%.0f\t%s\t\t\t\t\t\t\t\n", rate(prod.dur), sec(prod.dur))
	fmt.Fprintf(tw, "raw franz-go consume (ceiling)\t%.0f\t%s\t\t\t\t\t\t\t\n", rate(rawDur), sec(rawDur))
	for _, x := range []struct {
		what string
		r    ingestResult
		all  []ingestResult
	}{{"flagwatch ingest, with join", withJoin, joinRuns}, {"flagwatch ingest, without join", noJoin, noJoinRuns}} {
		var each []string
		for _, r := range x.all {
			each = append(each, fmt.Sprintf("%.0f", rate(r.dur)))
		}
		rss := "-"
		if x.r.maxRSS > 0 {
			rss = fmt.Sprintf("%.0f MB", float64(x.r.maxRSS)/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.what, rate(x.r.dur), sec(x.r.dur),
			sec(x.r.landed.first), sec(x.r.landed.all), sec(x.r.ingestCPU), sec(x.r.cpu.ch), rss, strings.Join(each, " "))
	}
	for _, x := range []struct {
		e   engineResult
		all []engineResult
	}{{engineJSON, jsonRuns}, {engineRaw, rawRuns}} {
		var each []string
		for _, e := range x.all {
			each = append(each, fmt.Sprintf("%.0f", rate(e.dur)))
		}
		fmt.Fprintf(tw, "ClickHouse Kafka engine, %s\t%.0f\t%s\t%s\t%s\t\t%s\t\t%s\t\n", x.e.variant.name,
			rate(x.e.dur), sec(x.e.dur), sec(x.e.landed.first), sec(x.e.landed.all), sec(x.e.cpu.ch), strings.Join(each, " "))
	}
	tw.Flush()
	fmt.Fprintf(&out, "(wall: flagwatch from exec to exit after committing; Kafka engine from CREATE MATERIALIZED VIEW to count() = N.\n"+
		" Kafka engine %s: %s. %s: %s.)\n", engineJSON.variant.name, engineJSON.variant.stores, engineRaw.variant.name, engineRaw.variant.stores)
	fmt.Fprintf(&out, "ratio flagwatch with join / Kafka engine: %.2fx vs %s, %.2fx vs %s (target ≥ 2x)\n",
		ratioJSON, engineJSON.variant.name, ratioRaw, engineRaw.variant.name)
	fmt.Fprintf(&out, "join cost: %.0f events/s without, %.0f with (%+.0f%%)\n", rate(noJoin.dur), rate(withJoin.dur),
		100*(rate(withJoin.dur)/rate(noJoin.dur)-1))
	// CPU time is steadier than wall time on a shared box: it is what each design costs.
	perM := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(n) }
	fmt.Fprintf(&out, "CPU-seconds per million events (best runs; kfake's serving not counted): flagwatch with join %.1f (ingest %.1f + ClickHouse %.1f), without %.1f; Kafka engine %s %.1f, %s %.1f\n",
		perM(withJoin.ingestCPU+withJoin.cpu.ch), perM(withJoin.ingestCPU), perM(withJoin.cpu.ch), perM(noJoin.ingestCPU+noJoin.cpu.ch),
		engineJSON.variant.name, perM(engineJSON.cpu.ch), engineRaw.variant.name, perM(engineRaw.cpu.ch))
	fmt.Fprintf(&out, "stored (compressed, after OPTIMIZE FINAL): %.1f bytes/event =", float64(stored.compressed)/float64(n))
	for i, t := range []string{"events", "exposures", "assignment_state", "segment_sets", "flag_activity", "touched_users"} {
		sep := " +"
		if i == 0 {
			sep = ""
		}
		st := stats[t]
		fmt.Fprintf(&out, "%s %s %.1f (%d rows)", sep, t, float64(st.compressed)/float64(n), st.rows)
	}
	fmt.Fprintf(&out, "; the Kafka engine's %s table: %.1f bytes/event\n", engineRaw.variant.name,
		float64(rawRuns[0].table.compressed)/float64(n))
	fmt.Fprintf(&out, "assignment state lives in ClickHouse (ingest holds none): %d (flag, user) pairs; per million pairs %.1f MB on disk, %.1f MB uncompressed\n",
		assign.rows, float64(assign.onDisk)/pairs, float64(assign.uncompressed)/pairs)
	fmt.Fprintf(&out, "bench wall time: %s\n", time.Since(start).Round(time.Second))
	fmt.Print(out.String())

	b.ReportMetric(rate(withJoin.dur), "ingest_events/s")
	b.ReportMetric(rate(noJoin.dur), "ingest_nojoin_events/s")
	b.ReportMetric(rate(engineJSON.dur), "chkafka_json_events/s")
	b.ReportMetric(rate(engineRaw.dur), "chkafka_raw_events/s")
	b.ReportMetric(ratioJSON, "ratio_vs_chkafka_json")
	b.ReportMetric(ratioRaw, "ratio_vs_chkafka_raw")
	b.ReportMetric(rate(rawDur), "raw_consume_events/s")
	b.ReportMetric(float64(withJoin.maxRSS)/(1<<20), "ingest_peak_rss_MB")
	b.ReportMetric(float64(stored.compressed)/float64(n), "stored_bytes/event")
	b.ReportMetric(float64(assign.onDisk)/pairs, "assign_MB_disk/Mpairs")
	b.ReportMetric(0, "ns/op") // the wall times above are the measurement
}

func bestIngest(rs []ingestResult) ingestResult {
	best := rs[0]
	for _, r := range rs[1:] {
		if r.dur < best.dur {
			best = r
		}
	}
	return best
}

func bestEngine(rs []engineResult) engineResult {
	best := rs[0]
	for _, r := range rs[1:] {
		if r.dur < best.dur {
			best = r
		}
	}
	return best
}

func serverVersion(b *testing.B, dsn string) string {
	_, conn := chtest.NewDB(b, dsn)
	var v string
	if err := conn.QueryRow(context.Background(), "SELECT version()").Scan(&v); err != nil {
		b.Fatal(err)
	}
	return v
}

func sec(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func envInt(b *testing.B, name string, def int) int {
	s := strings.ReplaceAll(os.Getenv(name), ",", "")
	s = strings.ReplaceAll(s, "_", "")
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		b.Fatalf("%s=%q: want a non-negative integer", name, os.Getenv(name))
	}
	return v
}

func mustExec(b *testing.B, conn store.Conn, q string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := conn.Exec(ctx, q); err != nil {
		b.Fatalf("%s: %v", q, err)
	}
}

func dbName(b *testing.B, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		b.Fatalf("parse dsn: %v", err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// ---- CPU accounting ----

// cpuMeter reads the CPU time used so far by the ClickHouse server, so each run can say
// where its cycles went (ingest's own comes from its rusage).
type cpuMeter struct{ chPid int }

type cpuSample struct{ ch time.Duration }

func newCPUMeter(b *testing.B, dir string) cpuMeter {
	pid, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		b.Fatalf("clickhouse pid: %v", err)
	}
	p, err := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err != nil {
		b.Fatalf("clickhouse pid %q: %v", pid, err)
	}
	return cpuMeter{chPid: p}
}

func (m cpuMeter) sample() cpuSample {
	var s cpuSample
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.chPid)); err == nil {
		// Fields after the parenthesised command: state is field 3, utime 14, stime 15.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 {
			f := strings.Fields(string(stat[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				s.ch = time.Duration(ut+st) * time.Second / 100 // USER_HZ
			}
		}
	}
	return s
}

func (s cpuSample) sub(o cpuSample) cpuSample {
	return cpuSample{ch: s.ch - o.ch}
}

// ---- producing ----

type produced struct {
	bytes     int64
	exposures int
	dur       time.Duration
}

// benchStream is the synthetic stream: three flags as in the demo, 14 days, users in
// order; produceSynth stops after n events.
func benchStream(n int) synth.Config {
	return synth.Config{Seed: 42, Users: n/10 + 100, Start: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Days: 14,
		Flags: []synth.Flag{
			{Key: "new-checkout", Effects: []synth.Effect{{Event: "purchase", Variant: "test", Multiplier: 1.2}}},
			{Key: "fast-search", Effects: []synth.Effect{{Event: "$exception", Variant: "test", Multiplier: 1.6}}},
			{Key: "new-onboarding"},
		}}
}

var errEnough = errors.New("enough events")

func produceSynth(b *testing.B, seeds []string, n int) produced {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(benchTopic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(200_000),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var (
		p        produced
		count    int
		mu       sync.Mutex
		firstErr error
	)
	exposure := []byte(`"event":"` + event.ExposureEvent + `"`)
	t0 := time.Now()
	err = benchStream(n).Each(func(r synth.Record) error {
		if count == n {
			return errEnough
		}
		count++
		p.bytes += int64(len(r.Value))
		if bytes.Contains(r.Value, exposure) {
			p.exposures++
		}
		cl.Produce(ctx, &kgo.Record{Key: []byte(r.Key), Value: r.Value, Timestamp: r.Time}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		b.Fatal(err)
	}
	if count < n {
		b.Fatalf("synthetic stream ended after %d of %d events", count, n)
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if firstErr != nil {
		b.Fatalf("produce: %v", firstErr)
	}
	p.dur = time.Since(t0)
	return p
}

// rawConsume reads n records with a plain franz-go consumer (no group, no decode): the
// rate at which kfake can serve this topic to one client on this box.
func rawConsume(b *testing.B, seeds []string, n int) time.Duration {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(benchTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(8<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	var got int
	for got < n {
		fs := cl.PollRecords(ctx, 100_000)
		if err := ctx.Err(); err != nil {
			b.Fatalf("raw consume: %d of %d records: %v", got, n, err)
		}
		got += fs.NumRecords()
	}
	return time.Since(t0)
}

// ---- flagwatch ingest ----

type ingestResult struct {
	dur    time.Duration
	maxRSS int64 // bytes
	// ingestCPU is the ingest process's own CPU time (subprocess mode); cpu is
	// ClickHouse's during the run.
	ingestCPU time.Duration
	cpu       cpuSample
	landed    landing
	tables    tables
}

func buildIngest(b *testing.B) string {
	b.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(b.TempDir(), "ingest")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/flagwatch/flagwatch/cmd/ingest")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/ingest: %v\n%s", err, out)
	}
	return bin
}

// runIngestProcess runs cmd/ingest to the end offsets and times it from exec to exit; its
// peak RSS is wait4's ru_maxrss (the kernel's VmHWM at exit).
func runIngestProcess(b *testing.B, bin string, seeds []string, dsn, group string, batch int, extra ...string) ingestResult {
	b.Helper()
	args := append([]string{"--kafka-brokers", strings.Join(seeds, ","), "--clickhouse-dsn", dsn, "--group", group,
		"--exit-when-caught-up", "--listen="}, extra...)
	if batch > 0 {
		args = append(args, "--batch-size", strconv.Itoa(batch))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), strings.Fields(os.Getenv(envIngestEnv))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	dur := time.Since(t0)
	if err != nil {
		b.Fatalf("ingest %v: %v\n%s", args, err, tail(stderr.String(), 4000))
	}
	if os.Getenv("FLAGWATCH_TEST_LOG") != "" {
		b.Logf("ingest %s log:\n%s", group, tail(stderr.String(), 8000))
	}
	r := ingestResult{dur: dur}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	r.ingestCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r
}

func runIngestInProcess(b *testing.B, seeds []string, dsn, group string, batch int) ingestResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t0 := time.Now()
	err := ingest.Run(ctx, ingest.Options{Brokers: seeds, ClickHouseDSN: dsn, Group: group, BatchSize: batch,
		ExitWhenCaughtUp: true, Logger: quiet})
	if err != nil {
		b.Fatalf("ingest: %v", err)
	}
	return ingestResult{dur: time.Since(t0)}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func checkCounts(b *testing.B, conn store.Conn, n, exposures int) {
	b.Helper()
	ctx := context.Background()
	var evs, uniq, exps uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(uuid) FROM events").Scan(&evs, &uniq); err != nil {
		b.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM exposures").Scan(&exps); err != nil {
		b.Fatal(err)
	}
	// The exposure cache writes only the exposures that can change an assignment: at
	// least one per (flag, user), at most every one.
	if evs != uint64(n) || uniq != uint64(n) || exps == 0 || exps > uint64(exposures) {
		b.Fatalf("stored %d events (%d distinct) and %d exposures; want %d and 1 to %d", evs, uniq, exps, n, exposures)
	}
}

// ---- watching rows land ----

// landing is when rows became visible in a table, relative to the start of a run.
type landing struct {
	first, all time.Duration // first row; count() = n (0: never)
}

// watch polls count() of table every 50 ms from t0 until it reaches n or stop is closed.
func watch(conn store.Conn, table string, n int, t0 time.Time, stop <-chan struct{}) (landing, error) {
	var l landing
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var c uint64
		if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+table).Scan(&c); err != nil {
			return l, fmt.Errorf("count %s: %w", table, err)
		}
		now := time.Since(t0)
		if c > 0 && l.first == 0 {
			l.first = now
		}
		if c >= uint64(n) {
			l.all = now
			return l, nil
		}
		select {
		case <-stop:
			// One last look: the run ended, so its rows are all there or never will be.
			if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+table).Scan(&c); err != nil {
				return l, fmt.Errorf("count %s: %w", table, err)
			}
			now := time.Since(t0)
			if c > 0 && l.first == 0 {
				l.first = now
			}
			if c >= uint64(n) {
				l.all = now
			}
			return l, nil
		case <-tick.C:
		}
	}
}

// ---- storage ----

type partStats struct{ rows, compressed, uncompressed, onDisk uint64 }

type tables map[string]partStats

func (t tables) total() partStats {
	var s partStats
	for _, p := range t {
		s.rows += p.rows
		s.compressed += p.compressed
		s.uncompressed += p.uncompressed
		s.onDisk += p.onDisk
	}
	return s
}

// tableStats merges the tables fully (so the numbers are what the data settles to, and
// no background merge runs into the next measurement) and reads their active parts.
func tableStats(b *testing.B, conn store.Conn, dsn string, names ...string) tables {
	b.Helper()
	for _, t := range names {
		mustExec(b, conn, "OPTIMIZE TABLE "+t+" FINAL")
	}
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(bytes_on_disk)
		FROM system.parts WHERE database = `+store.Quote(dbName(b, dsn))+` AND active GROUP BY table`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	out := tables{}
	for rows.Next() {
		var name string
		var s partStats
		if err := rows.Scan(&name, &s.rows, &s.compressed, &s.uncompressed, &s.onDisk); err != nil {
			b.Fatal(err)
		}
		out[name] = s
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

// ---- ClickHouse's Kafka engine ----

type engineVariant struct {
	name   string
	stores string
	// columns and format define the Kafka table; view is the SELECT the materialized
	// view runs over it.
	columns, format, view string
}

var (
	engineJSONEachRow = engineVariant{
		name:    "JSONEachRow",
		stores:  "top-level fields only, properties skipped",
		columns: "uuid String, event String, distinct_id String, timestamp String",
		format:  "kafka_format = 'JSONEachRow'",
		view: `SELECT toUUID(uuid) AS uuid, event, distinct_id, parseDateTimeBestEffort(timestamp) AS timestamp,
			'' AS properties FROM kq`,
	}
	// Each message as one TabSeparated line: the synthetic events contain no tabs or
	// backslashes, so the line is the JSON unchanged, and visitParam* (18.16 has no
	// JSONExtract) pulls the fields and the raw properties object out of it.
	engineRawLine = engineVariant{
		name:    "raw line + visitParam",
		stores:  "properties extracted as a string",
		columns: "raw String",
		format:  `kafka_format = 'TabSeparated', kafka_row_delimiter = '\n'`,
		view: `SELECT toUUID(visitParamExtractString(raw, 'uuid')) AS uuid, visitParamExtractString(raw, 'event') AS event,
			visitParamExtractString(raw, 'distinct_id') AS distinct_id,
			parseDateTimeBestEffort(visitParamExtractString(raw, 'timestamp')) AS timestamp,
			visitParamExtractRaw(raw, 'properties') AS properties FROM kq`,
	}
)

type engineResult struct {
	variant engineVariant
	dur     time.Duration
	landed  landing
	cpu     cpuSample
	table   partStats
}

// kafkaEngine lets the server's Kafka engine (librdkafka) read the topic through a
// materialized view into a MergeTree shaped like flagwatch's events table, and times it
// from the moment the view is created (consumption starts) until count() = n.
func kafkaEngine(b *testing.B, base string, cpu cpuMeter, seed string, n int, v engineVariant, stats bool) engineResult {
	return kafkaEngineOn(b, base, cpu, seed, benchTopic, n, v, stats)
}

// kafkaEngineOn is kafkaEngine on topic.
func kafkaEngineOn(b *testing.B, base string, cpu cpuMeter, seed, topic string, n int, v engineVariant, stats bool) engineResult {
	b.Helper()
	dsn, conn := chtest.NewDB(b, base)
	group := fmt.Sprintf("chbench-%d", time.Now().UnixNano())
	mustExec(b, conn, `CREATE TABLE kevents (uuid UUID, event String, distinct_id String, timestamp DateTime, properties String)
		ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (event, distinct_id, timestamp, uuid)`)
	mustExec(b, conn, fmt.Sprintf(`CREATE TABLE kq (%s) ENGINE = Kafka SETTINGS
		kafka_broker_list = '%s', kafka_topic_list = '%s', kafka_group_name = '%s', %s, kafka_num_consumers = 2`,
		v.columns, seed, topic, group, v.format))
	// librdkafka aborts the server on shutdown while a Kafka table is attached, so it is
	// dropped however this function ends (the database is dropped on success).
	dropped := false
	defer func() {
		if !dropped {
			_ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS kmv")
			_ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS kq")
		}
	}()
	t0, c0 := time.Now(), cpu.sample()
	mustExec(b, conn, "CREATE MATERIALIZED VIEW kmv TO kevents AS "+v.view)

	stop := make(chan struct{})
	timeout := time.AfterFunc(10*time.Minute, func() { close(stop) })
	l, err := watch(conn, "kevents", n, t0, stop)
	timeout.Stop()
	if err != nil {
		b.Fatal(err)
	}
	if l.all == 0 {
		b.Fatalf("Kafka engine (%s): fewer than %d rows after 10 minutes", v.name, n)
	}
	r := engineResult{variant: v, dur: l.all, landed: l, cpu: cpu.sample().sub(c0)}
	mustExec(b, conn, "DROP TABLE kmv")
	mustExec(b, conn, "DROP TABLE kq")
	dropped = true
	if stats {
		r.table = tableStats(b, conn, dsn, "kevents")["kevents"]
	}
	mustExec(b, conn, "DROP DATABASE "+dbName(b, dsn))
	return r
}
