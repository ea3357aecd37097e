package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// memSink keeps what it is given, taking a while per batch so that batches pile up in
// flight and the budget, not the sink's speed, decides how much is held.
type memSink struct {
	mu      sync.Mutex
	uuids   map[string]bool
	batches []int64 // decoded bytes per batch
}

func (s *memSink) WriteBatch(ctx context.Context, b store.RawBatch) (int, int, error) {
	select {
	case <-time.After(20 * time.Millisecond):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range b.Events {
		s.uuids[e.UUID.String()] = true
	}
	s.batches = append(s.batches, eventBytes(b.Events))
	return len(b.Events), len(b.Exposures), nil
}

// Large events are batched by bytes as well as by count: what ingest holds at once (the
// batch being filled and those in flight, counted as the bytes of their messages and of
// the decoded events) never exceeds BatchBytes + InFlightBytes, however large the
// events. The bound is checked on the bytes counted, not on timing or RSS.
func TestByteBudgetBoundsWhatIsHeld(t *testing.T) {
	kc := brokertest.Cluster(t, 2, broker.EventsTopic)
	cl := brokertest.Client(t, kc, kgo.ProducerBatchMaxBytes(4<<20))
	blob := strings.Repeat("x", 60_000)
	const n = 300
	var recs []*kgo.Record
	var total int64 // what the events hold once decoded, messages included
	for i := 0; i < n; i++ {
		v := fmt.Sprintf(`{"event":"e","distinct_id":"u%d","timestamp":"2026-11-01T00:00:00Z","properties":{"blob":%q,"i":%d}}`, i%7, blob, i)
		evs, err := event.Decode([]byte(v), time.Now())
		require.NoError(t, err)
		total += int64(len(v)) + eventBytes(evs)
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(v)})
	}
	brokertest.Produce(t, cl, broker.EventsTopic, recs...)

	const batchBytes, inFlight = 1 << 20, 2 << 20
	var peak int64
	sink := &memSink{uuids: map[string]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, Run(ctx, Options{Brokers: kc.Addrs(), Group: "g", Sink: sink, ExitWhenCaughtUp: true,
		BatchSize: 50_000, BatchBytes: batchBytes, InFlightBytes: inFlight, peak: &peak,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))

	require.Len(t, sink.uuids, n, "every event stored")
	require.LessOrEqual(t, peak, int64(batchBytes+inFlight), "held at most a batch and the flights' budget")
	require.Greater(t, peak, int64(batchBytes), "the flights were used (else the bound says nothing)")
	require.GreaterOrEqual(t, int64(len(sink.batches)), total/batchBytes, "batches cut by bytes, not by the 50,000 count")
	for _, b := range sink.batches {
		require.LessOrEqual(t, b, int64(batchBytes))
	}
}
