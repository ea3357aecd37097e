package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/event"
	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// The dead-letter topic: a message ingest cannot store goes there whole and unchanged,
// with the reason and where it came from in headers, and its offset is committed only
// once the copy is acknowledged. Nothing is dropped silently, and one bad message never
// blocks its partition.

// deadLetter counts r's rejection, logs the first of each reason, and returns its copy
// for the dead-letter topic.
func (c *consumer) deadLetter(r *kgo.Record, e *event.Error) *kgo.Record {
	c.m.dlq.WithLabelValues(e.Reason).Inc()
	c.logReason(r, e)
	headers := append([]kgo.RecordHeader{}, r.Headers...)
	headers = append(headers,
		kgo.RecordHeader{Key: "flagwatch-dlq-reason", Value: []byte(e.Reason)},
		kgo.RecordHeader{Key: "flagwatch-dlq-detail", Value: []byte(e.Detail)},
		kgo.RecordHeader{Key: "flagwatch-source-topic", Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: "flagwatch-source-partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: "flagwatch-source-offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	return &kgo.Record{Topic: c.o.DLQTopic, Key: r.Key, Value: r.Value, Headers: headers, Timestamp: r.Timestamp}
}

// logReason logs the first message of each reason: a poison stream must not flood the
// logs (the counter has them all). Flights dead-letter concurrently with the loop, so it
// takes the lock the loop holds only briefly here.
func (c *consumer) logReason(r *kgo.Record, e *event.Error) {
	c.dlqMu.Lock()
	seen := c.dlqSeen[e.Reason]
	c.dlqSeen[e.Reason] = true
	c.dlqMu.Unlock()
	if !seen {
		c.log.Warn("dead-lettering message", "reason", e.Reason, "detail", e.Detail,
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
	}
}

// flushDLQ produces the poll's dead letters.
func (c *consumer) flushDLQ(ctx context.Context) error {
	if len(c.dlq) == 0 {
		return nil
	}
	err := c.produceDLQ(ctx, c.dlq...)
	clear(c.dlq)
	c.dlq = c.dlq[:0]
	return err
}

// produceDLQ waits for the dead-letter acks — a record's offset may only be committed
// once its copy is safe in the DLQ — retrying while Kafka may recover. A refusal that
// cannot pass (the topic refuses the size, no authorisation) stops ingest: skipping the
// message would lose it.
func (c *consumer) produceDLQ(ctx context.Context, recs ...*kgo.Record) error {
	err := retry.Do(ctx, c.log, "produce to the dead-letter topic", retry.Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second,
		Retryable: func(err error) bool {
			var ke *kerr.Error
			return !errors.As(err, &ke) || ke.Retriable
		}},
		func(ctx context.Context) error { return c.cl.ProduceSync(ctx, recs...).FirstErr() })
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("produce to dead-letter topic %s: %w", c.o.DLQTopic, err)
	}
	return &fatalError{fmt.Errorf("dead-letter topic %s refuses messages (check that it exists, its max.message.bytes and the ACLs): %w", c.o.DLQTopic, err)}
}
