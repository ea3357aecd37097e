// Package brokertest starts a kfake cluster on a loopback TCP port for a test and stops
// it when the test ends, so integration tests reach it through franz-go exactly as they
// would reach Kafka.
package brokertest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
)

// Cluster starts a broker with the given topics (partitions each) and returns it.
func Cluster(t testing.TB, partitions int32, topics ...string) *broker.Embedded {
	t.Helper()
	e, err := broker.StartEmbedded("127.0.0.1:0", "", partitions, topics...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// Client returns a franz-go client for the cluster, closed when the test ends.
func Client(t testing.TB, e *broker.Embedded, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Produce writes values to topic, each keyed by its key (nil keys allowed), and waits for
// the acks.
func Produce(t testing.TB, cl *kgo.Client, topic string, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, r := range recs {
		if r.Topic == "" {
			r.Topic = topic
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}
