package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Rebalances. With BlockRebalanceOnPoll the callbacks run only between polls, so every
// record polled is in the current batch or in flight when they do.

// onAssigned starts the assigned partitions' exposure caches empty: what this process
// remembers of a partition it owned before says nothing of what its owner since wrote.
func (c *consumer) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range assigned {
		for _, p := range ps {
			c.dedup.drop(topicPartition{topic, p})
		}
	}
}

// onRevoked stores and commits everything polled, so the partitions are handed over
// cleanly. If that fails within the rebalance's time, the revoked partitions are left
// uncommitted for their next owner to re-read, and the other partitions' records stay
// where they are: polled, to be stored and committed as usual.
func (c *consumer) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.sink == nil {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.storeAll(fctx); err != nil {
		if isFatal(err) {
			c.fatal = err
		}
		c.log.Warn("store on revoke failed; the new owner will re-read the revoked partitions' uncommitted records", "err", err)
		c.forget(revoked)
		return
	}
	if err := cl.CommitUncommittedOffsets(fctx); err != nil {
		c.log.Warn("commit on revoke failed", "err", err)
	}
	c.forget(revoked)
	c.log.Info("partitions revoked", "partitions", fmt.Sprint(revoked))
}

// onLost: the group moved on without us, so we may not commit these partitions; their
// new owner re-reads what we did not commit.
func (c *consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forget(lost)
	c.log.Warn("partitions lost; their uncommitted records are left to the next owner", "partitions", fmt.Sprint(lost))
}
