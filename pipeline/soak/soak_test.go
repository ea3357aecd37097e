//go:build soak

// Package soak is the soak test of capture and ingest (make soak; not in CI, and
// compiled only with the build tag soak): the real binaries, as processes, against an
// in-process Kafka broker over TCP and a ClickHouse 18.16 server, under minutes of
// traffic at a bounded rate — every way PostHog's SDKs send events, large batches,
// events ingest must dead-letter, hostile and oversized requests, and messages a service
// produces straight to Kafka — while ingest is SIGKILLed at a third and two thirds of
// the run. At the end it checks, by counting what was sent against what is stored:
//
//   - capture never exited, stayed healthy, and its peak RSS stayed under a stated
//     bound derived from its in-flight memory budget;
//   - every request got an answer; every refused one the 4xx its kind calls for, in
//     PostHog's error shape with a reason (a 503 over the in-flight budget, with
//     Retry-After, is allowed and retried, as the SDKs do);
//   - every event of a 2xx is stored exactly once, or dead-lettered when ingest must
//     (too old); nothing of a refused request is stored or dead-lettered;
//   - every dead-lettered message carries its reason, the one its kind calls for;
//   - each (flag, user, variant)'s first exposure is the first of the events stored.
//
// The decision that shapes it: pass or fail depends on counts, never on the machine's
// speed. The traffic is seeded (the request at index i is the same in every run), the
// waits are generous and end on a condition (the consumer group's lag is 0), and the
// rate only bounds the load.
//
// What "exactly once" means for our storage. events is a ReplacingMergeTree keyed by
// (event, distinct_id, ts_ms, uuid) (schemas/clickhouse/0001): ingest delivers at least
// once, and an ingest killed between storing a batch and committing its offsets stores
// the batch again when the next one replays it. Readers that need exact counts use FINAL
// or aggregate by uuid. So the soak checks that, with FINAL, every acknowledged event
// (found by its own soak_id property, whether it came with a uuid or capture derived
// one) is on exactly one row and no uuid is on two rows; it reports the raw duplicates
// the kills left before a merge; and it checks that they are true replays — the same
// sort key — by merging (OPTIMIZE TABLE events FINAL) and finding no uuid twice. A
// duplicate with another sort key would survive FINAL, and fail the first check.
package soak

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/store/chtest"
)

// config is the run's shape, from the environment.
type config struct {
	duration time.Duration // FLAGWATCH_SOAK_DURATION, default 3m
	rate     float64       // FLAGWATCH_SOAK_RATE, requests a second, default 100
	seed     uint64        // FLAGWATCH_SOAK_SEED, default 1
}

func loadConfig(t *testing.T) config {
	t.Helper()
	c := config{duration: 3 * time.Minute, rate: 100, seed: 1}
	if v := os.Getenv("FLAGWATCH_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("FLAGWATCH_SOAK_DURATION=%q: want a Go duration of at least 10s", v)
		}
		c.duration = d
	}
	if v := os.Getenv("FLAGWATCH_SOAK_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || r > 5000 {
			t.Fatalf("FLAGWATCH_SOAK_RATE=%q: want requests a second, above 0 and at most 5000", v)
		}
		c.rate = r
	}
	if v := os.Getenv("FLAGWATCH_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FLAGWATCH_SOAK_SEED=%q: want an unsigned integer", v)
		}
		c.seed = s
	}
	return c
}

const (
	partitions = 4
	group      = "soak-ingest"
)

// rssBound is the most capture's RSS may reach: three times its in-flight budget
// (-capture-max-inflight-bytes, 128 MiB by default; docs/capture.md). Every buffer a
// request needs is reserved from the budget before it is allocated, so what requests
// hold live is at most the budget; Go's collector lets the heap grow to twice what was
// live at the last collection before it collects again (GOGC=100), so requests account
// for at most two budgets of heap. The third covers capture's own baseline (runtime,
// Kafka client, connections, metrics: the idle RSS the summary prints), the runtime's
// memory outside the heap, and the fragmentation of multi-MiB buffers. Without the
// budget, forty 19 KB gzip bodies took 2 GB (issue 12).
const rssBound = 3 * capture.DefaultMaxInFlightBytes

// run is what the soak observed, for the checks and the summary.
type run struct {
	cfg        config
	start      time.Time // the load's
	outcomes   []*outcome
	sendTook   time.Duration
	catchUp    time.Duration
	ingestRuns []*ingestRun
	ingestErrs []error
	ingestStop error

	captureExitedEarly bool
	captureExit        error
	captureLog         string
	captureHealth      int
	captureStatuses    map[int]float64 // from capture's /metrics
	captureStop        error
	rssIdle            int64
	rssMax, rssHWM     int64
	rssSamples         int

	dlq []*kgo.Record
}

func TestSoak(t *testing.T) {
	chtest.ServerOnly(t, "ingest runs as a process of its own, beside the test's queries")
	cfg := loadConfig(t)
	t.Logf("soak: %s at %g requests/s, seed %d; capture's RSS bound %s", cfg.duration, cfg.rate, cfg.seed, mib(rssBound))
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+30*time.Minute) // a guard, not a pass criterion
	defer cancel()

	captureBin, ingestBin := buildServices(t)
	dsn, conn := chtest.DB(t)
	kc, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir(), partitions, broker.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	seeds := strings.Join(kc.Addrs(), ",")
	kcl, err := kgo.NewClient(kgo.SeedBrokers(kc.Addrs()...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kcl.Close)
	adm := kadm.NewClient(kcl)
	logs := t.TempDir()

	// capture, with the project key in its environment as an operator would set it.
	capt, err := startProc(t, logs, "capture", captureBin, []string{"FLAGWATCH_CAPTURE_TOKENS=" + token},
		"-capture-addr", "127.0.0.1:0", "-kafka-brokers", seeds, "-events-topic-partitions", strconv.Itoa(partitions))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := capt.logged("Capture listening", "addr", time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, capt.tail(4000))
	}
	base := "http://" + addr
	waitHealthy(t, base, capt)
	r := &run{cfg: cfg}
	if r.rssIdle, _, err = readStatus(capt.cmd.Process.Pid); err != nil {
		t.Fatalf("capture's RSS: %v", err)
	}
	rss := &rssSampler{}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go rss.sample(sampleCtx, capt.cmd.Process.Pid, 50*time.Millisecond)

	sup := &supervisor{t: t, dir: logs, bin: ingestBin,
		args: []string{"-kafka-brokers", seeds, "-clickhouse-dsn", dsn, "-group", group}}
	if err := sup.start(); err != nil {
		t.Fatal(err)
	}

	loadStart := time.Now()
	r.start = loadStart
	killsDone := make(chan struct{})
	go func() {
		defer close(killsDone)
		for _, frac := range []float64{1.0 / 3, 2.0 / 3} {
			select {
			case <-time.After(time.Until(loadStart.Add(time.Duration(frac * float64(cfg.duration))))):
			case <-ctx.Done():
				return
			}
			l, _ := lag(ctx, adm, group, broker.EventsTopic)
			sup.kill(l, 15*time.Second)
		}
	}()
	s := newSender(base, cfg.seed, kcl)
	r.outcomes, r.sendTook = s.run(ctx, cfg.rate, cfg.duration)
	<-killsDone
	t.Logf("load done: %d requests in %s; waiting for ingest to catch up", len(r.outcomes), r.sendTook.Round(time.Second))

	// Caught up: the group has committed every record of the events topic, so
	// everything is stored or dead-lettered.
	catchStart := time.Now()
	for {
		l, err := lag(ctx, adm, group, broker.EventsTopic)
		if err == nil && l == 0 {
			break
		}
		if time.Since(catchStart) > 15*time.Minute {
			t.Fatalf("ingest did not catch up within 15 minutes (lag %d, %v)\n%s", l, err, sup.current().p.tail(4000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.catchUp = time.Since(catchStart)
	r.ingestStop = sup.stop(time.Minute)
	r.ingestRuns, r.ingestErrs = sup.all()

	// capture: still the first process, healthy, and its own count of answers.
	r.captureExitedEarly = capt.hasExited()
	r.captureHealth = status(base + "/healthz")
	r.captureStatuses = captureStatuses(base + "/metrics")
	r.rssMax, r.rssHWM, _, r.rssSamples = rss.read()
	if !r.captureExitedEarly {
		if _, hwm, err := readStatus(capt.cmd.Process.Pid); err == nil {
			r.rssHWM = max(r.rssHWM, hwm)
		}
	}
	stopSampling()
	r.captureStop = capt.stop(time.Minute)
	r.rssHWM = max(r.rssHWM, capt.peakRSS())
	r.captureExit = capt.exitErr
	r.captureLog = capt.tail(4000)

	if r.dlq, err = readTopic(ctx, kc.Addrs(), broker.DLQTopic); err != nil {
		t.Fatalf("read the dead-letter topic: %v", err)
	}
	v := verify(t, ctx, conn, r)
	t.Log("\n" + v.summary(r))
	for _, f := range v.failures {
		t.Error(f)
	}
	if t.Failed() {
		t.Logf("capture log (tail):\n%s", r.captureLog)
		for i, ir := range r.ingestRuns {
			t.Logf("ingest run %d log (tail):\n%s", i+1, ir.p.tail(3000))
		}
	}
}

func waitHealthy(t *testing.T, base string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for status(base+"/healthz") != http.StatusOK {
		if p.hasExited() || time.Now().After(deadline) {
			t.Fatalf("capture not healthy within 2 minutes\n%s", p.tail(4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// captureStatuses is capture's count of its answers by status
// (flagwatch_capture_requests_total), nil when /metrics cannot be read.
func captureStatuses(url string) map[int]float64 {
	lines, err := metricLines(url)
	if err != nil {
		return nil
	}
	out := map[int]float64{}
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, "flagwatch_capture_requests_total{")
		if !ok {
			continue
		}
		_, rest, _ = strings.Cut(rest, `status="`)
		code, rest, _ := strings.Cut(rest, `"`)
		_, val, _ := strings.Cut(rest, "} ")
		c, err1 := strconv.Atoi(code)
		f, err2 := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err1 == nil && err2 == nil {
			out[c] += f
		}
	}
	return out
}

// readTopic reads every record of topic from its start to the end offsets it has now.
func readTopic(ctx context.Context, seeds []string, topic string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := ends.Error(); err != nil {
		return nil, err
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	var recs []*kgo.Record
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for len(want) > 0 {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return nil, fmt.Errorf("%d partitions not read to their end: %w", len(want), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return recs, nil
}
