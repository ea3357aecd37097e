package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// connectKafka creates the consumer's client and waits until a broker answers, telling
// /healthz what it waits for; wait > 0 gives up after that long (a one-shot backfill
// must not hang on a broker that never comes), 0 waits until ctx ends.
func (c *consumer) connectKafka(ctx context.Context, wait time.Duration) (*kgo.Client, error) {
	brokers := strings.Join(c.o.Brokers, ",")
	c.health.Waiting(componentKafka, "connecting to Kafka at "+brokers)
	cl, err := kgo.NewClient(c.kafkaOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	err = retry.Do(ctx, c.log, "connect to Kafka", retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Elapsed: wait},
		func(ctx context.Context) error {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err := cl.Ping(pctx)
			if err != nil {
				c.health.Waiting(componentKafka, fmt.Sprintf("Kafka at %s: %v", brokers, err))
			}
			return err
		})
	if err != nil {
		cl.Close()
		if wait > 0 && ctx.Err() == nil {
			return nil, fmt.Errorf("kafka at %s not reachable within %s (-startup-wait): %w", brokers, wait, err)
		}
		return nil, fmt.Errorf("kafka at %s not reachable: %w", brokers, err)
	}
	c.health.Report(componentKafka, nil)
	maxBytes := strconv.Itoa(int(dlqMaxBytes(c.o)))
	if err := broker.EnsureTopicsWithConfig(ctx, cl, 1, map[string]*string{"max.message.bytes": &maxBytes}, c.o.DLQTopic); err != nil {
		c.log.Warn("could not ensure DLQ topic; relying on auto-creation", "topic", c.o.DLQTopic, "err", err)
	}
	return cl, nil
}
