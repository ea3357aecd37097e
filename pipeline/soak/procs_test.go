//go:build soak

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The services under test run as the real binaries, in processes of their own, so
// that SIGKILL is a real crash and capture's RSS is its own.

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// buildServices builds cmd/capture and cmd/ingest into a temporary directory.
func buildServices(t *testing.T) (capture, ingest string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", dir+string(os.PathSeparator), "./cmd/capture", "./cmd/ingest")
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/capture ./cmd/ingest: %v\n%s", err, out)
	}
	return filepath.Join(dir, "capture"), filepath.Join(dir, "ingest")
}

// proc is a running service.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{} // closed when the process has exited
	exitErr error         // cmd.Wait's, once done
	exited  time.Time
}

// serviceEnv is this process's environment without any FLAGWATCH_* variable (the
// services read their flags from them), plus env.
func serviceEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLAGWATCH_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// startProc starts bin with its output in a log file under dir; the process is killed
// at the test's end if it still runs. Safe to call from any goroutine.
func startProc(t *testing.T, dir, name, bin string, env []string, args ...string) (*proc, error) {
	f, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	logPath := f.Name()
	cmd := exec.Command(bin, args...)
	cmd.Env = serviceEnv(env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		p.exited = time.Now()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.hasExited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p, nil
}

func (p *proc) hasExited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for the exit; the error is the exit's.
func (p *proc) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitErr
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, timeout)
	}
}

// peakRSS is the kernel's high-water mark of the exited process's RSS (wait4's
// ru_maxrss), 0 if unknown.
func (p *proc) peakRSS() int64 {
	if p.cmd.ProcessState == nil {
		return 0
	}
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10 // KiB on Linux
	}
	return 0
}

// tail is the end of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// logged returns attribute attr of the first JSON log line whose msg is msg, waiting up
// to wait for it.
func (p *proc) logged(msg, attr string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile(p.logPath)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
				return fmt.Sprint(line[attr]), nil
			}
		}
		if p.hasExited() {
			return "", fmt.Errorf("%s exited (%v) before logging %q", p.name, p.exitErr, msg)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not log %q within %s", p.name, msg, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countLogged counts the JSON log lines at level lvl, by message.
func (p *proc) countLogged(lvl string) map[string]int {
	out := map[string]int{}
	b, _ := os.ReadFile(p.logPath)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Level == lvl {
			out[line.Msg]++
		}
	}
	return out
}

// rssSampler reads a process's VmRSS and VmHWM from /proc/<pid>/status.
type rssSampler struct {
	mu      sync.Mutex
	max     int64 // largest VmRSS sampled
	hwm     int64 // the kernel's high-water mark, as last read
	samples int
	last    int64
}

func readStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: %q", pid, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("no VmRSS or VmHWM in /proc/<pid>/status")
	}
	return rss, hwm, nil
}

// sample reads the process's memory every interval until ctx ends.
func (s *rssSampler) sample(ctx context.Context, pid int, every time.Duration) {
	for {
		if rss, hwm, err := readStatus(pid); err == nil {
			s.mu.Lock()
			s.max, s.hwm, s.last = max(s.max, rss), max(s.hwm, hwm), rss
			s.samples++
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (s *rssSampler) read() (maxRSS, hwm, last int64, samples int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max, s.hwm, s.last, s.samples
}

// lag is how many records of topic the group has not committed yet.
func lag(ctx context.Context, adm *kadm.Client, group, topic string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return 0, fmt.Errorf("list end offsets: %w", err)
	}
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	var total int64
	ends.Each(func(e kadm.ListedOffset) {
		var committed int64
		if c, ok := offs.Lookup(topic, e.Partition); ok && c.Err == nil && c.At > 0 {
			committed = c.At
		}
		total += e.Offset - committed
	})
	return total, nil
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// supervisor keeps one ingest running: the soak kills it, and it starts the next at
// once; an exit the soak did not cause is recorded (and ingest started again).
type supervisor struct {
	t    *testing.T
	dir  string
	bin  string
	args []string

	mu       sync.Mutex
	runs     []*ingestRun
	stopping bool
	errs     []error
}

// ingestRun is one ingest process.
type ingestRun struct {
	p       *proc
	metrics string // its /metrics URL
	// rows is the event rows ClickHouse acknowledged to it
	// (flagwatch_ingest_rows_inserted_total), read right before it was killed or
	// stopped: an insert the kill cut short may be stored without being counted.
	rows      float64
	killed    bool
	aimed     bool // killed right after ClickHouse acknowledged a batch
	lagAtKill int64
	// unexpected: it exited without being killed or stopped.
	unexpected bool
}

func (s *supervisor) start() error {
	if err := s.startOne(); err != nil {
		return err
	}
	go s.watch()
	return nil
}

func (s *supervisor) startOne() error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := startProc(s.t, s.dir, "ingest", s.bin, nil, append(s.args, "-listen", addr)...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.runs = append(s.runs, &ingestRun{p: p, metrics: "http://" + addr + "/metrics"})
	s.mu.Unlock()
	return nil
}

func (s *supervisor) current() *ingestRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[len(s.runs)-1]
}

// watch starts ingest again whenever it exits, until stop.
func (s *supervisor) watch() {
	for {
		r := s.current()
		<-r.p.done
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		r.unexpected = !r.killed
		s.mu.Unlock()
		if r.unexpected {
			time.Sleep(time.Second) // not a hot loop if it keeps failing
		}
		if err := s.startOne(); err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, err)
			s.mu.Unlock()
			return
		}
	}
}

// kill SIGKILLs the running ingest, recording the lag it leaves, and returns once the
// next one has started. It aims: it watches the process's count of rows ClickHouse
// acknowledged and kills right after it grows, within aim — when a batch is stored and
// most likely not committed yet, the moment a crash makes ingest store something
// twice. Whether it hit does not change a check, only how much the run proves.
func (s *supervisor) kill(lag int64, aim time.Duration) (aimed bool) {
	r := s.current()
	rows := metricSum(r.metrics, rowsInserted)
	for deadline := time.Now().Add(aim); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if n := metricSum(r.metrics, rowsInserted); n > rows {
			rows, aimed = n, true
			break
		}
	}
	s.mu.Lock()
	r.killed, r.aimed, r.lagAtKill, r.rows = true, aimed, lag, rows
	s.mu.Unlock()
	r.p.kill()
	for deadline := time.Now().Add(time.Minute); s.current() == r && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return aimed
}

// stop SIGTERMs the running ingest and returns its exit.
func (s *supervisor) stop(timeout time.Duration) error {
	s.mu.Lock()
	s.stopping = true
	r := s.runs[len(s.runs)-1]
	s.mu.Unlock()
	r.rows = metricSum(r.metrics, rowsInserted)
	return r.p.stop(timeout)
}

func (s *supervisor) all() ([]*ingestRun, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*ingestRun{}, s.runs...), append([]error{}, s.errs...)
}

// rowsInserted is ingest's count of the event rows ClickHouse acknowledged.
const rowsInserted = `flagwatch_ingest_rows_inserted_total{table="events"}`

// freeAddr is a loopback address with a free port below Linux's ephemeral range
// (32768 and up), so that no outgoing connection takes it before the service binds it.
func freeAddr() (string, error) {
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(22000))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr, nil
		}
	}
	return "", errors.New("no free port found")
}

// metricLines reads a Prometheus text page.
func metricLines(url string) ([]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return strings.Split(string(b), "\n"), nil
}

// metricSum sums the samples whose name and labels start with prefix; 0 when the page
// cannot be read.
func metricSum(url, prefix string) float64 {
	lines, err := metricLines(url)
	if err != nil {
		return 0
	}
	var sum float64
	for _, line := range lines {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			if i := strings.LastIndexByte(rest, ' '); i >= 0 {
				if f, err := strconv.ParseFloat(rest[i+1:], 64); err == nil {
					sum += f
				}
			}
		}
	}
	return sum
}
