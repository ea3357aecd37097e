package capture

import (
	"errors"
	"fmt"
	"sync"
)

// budget bounds what the requests in flight may hold: how many there are, and the bytes
// each has read, decompressed, decoded and built into records. Without it, forty 19 KB
// gzip bodies that each inflate to the 20 MiB limit held 2 GB at once. A request
// reserves its bytes before it allocates them — the body's Content-Length before
// reading, a gzip member's declared size before inflating, base64's decoded length
// before decoding, the parse and the records before parsing — so a request the budget
// cannot hold is refused before it costs anything, and the refusal does not depend on
// timing. It is a mutex and two counters rather than a weighted semaphore
// (golang.org/x/sync/semaphore): a request grows its reservation stage by stage, and a
// refusal must tell "busy now, retry" (503) from "larger than the whole budget" (413).
type budget struct {
	maxBytes int64
	maxReqs  int
	m        *metrics

	mu    sync.Mutex
	bytes int64
	reqs  int
}

var (
	// errBusy: the budget is held by other requests; the client should retry.
	errBusy = errors.New("capture is at its in-flight limit")
	// errOverBudget: the request alone needs more than the whole budget.
	errOverBudget = errors.New("request needs more memory than capture holds for all requests in flight")
)

func newBudget(maxBytes int64, maxReqs int, m *metrics) *budget {
	return &budget{maxBytes: maxBytes, maxReqs: maxReqs, m: m}
}

// reservation is one request's share of the budget.
type reservation struct {
	b     *budget
	n     int64
	parse int64 // of n, what is set aside for parsing the payload (parseCost)
}

// admit takes a request slot, or fails with errBusy when all are taken.
func (b *budget) admit() (*reservation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reqs >= b.maxReqs {
		b.m.overload.WithLabelValues("requests").Inc()
		return nil, fmt.Errorf("%d requests in flight: %w", b.reqs, errBusy)
	}
	b.reqs++
	b.m.inflightReqs.Set(float64(b.reqs))
	return &reservation{b: b}, nil
}

// grow reserves n more bytes for the request: errOverBudget when the request alone
// would exceed the budget, errBusy when the others leave too little.
func (r *reservation) grow(n int64) error {
	b := r.b
	if n <= 0 {
		return nil
	}
	if r.n+n > b.maxBytes {
		return fmt.Errorf("%d bytes: %w (%d bytes)", r.n+n, errOverBudget, b.maxBytes)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bytes+n > b.maxBytes {
		b.m.overload.WithLabelValues("bytes").Inc()
		return fmt.Errorf("%d of %d bytes held by requests in flight, this one needs %d more: %w", b.bytes, b.maxBytes, n, errBusy)
	}
	b.bytes += n
	r.n += n
	b.m.inflightBytes.Set(float64(b.bytes))
	return nil
}

// growForParse makes sure the reservation covers parsing a payload of n bytes, on top
// of what it holds. Stages that learn the payload's size early (a Content-Length, a gzip
// trailer) call it together with their own buffer, extra, in one step: a request then
// holds either almost nothing or all it will need, so which of several competing
// requests fit does not depend on how their stages interleave.
func (r *reservation) growForParse(n int, extra int64) error {
	need := max(parseCost(n)-r.parse, 0)
	if err := r.grow(extra + need); err != nil {
		return err
	}
	r.parse += need
	return nil
}

// release returns the request's slot and bytes.
func (r *reservation) release() {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bytes -= r.n
	b.reqs--
	r.n = 0
	b.m.inflightBytes.Set(float64(b.bytes))
	b.m.inflightReqs.Set(float64(b.reqs))
}
