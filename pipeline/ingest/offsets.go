package ingest

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// endOffsets are the topics' end offsets: what -exit-when-caught-up consumes to.
func endOffsets(ctx context.Context, cl *kgo.Client, topics []string) (map[string]map[int32]int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	out := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out, nil
}

// caughtUp reports whether the group's committed offsets reached target everywhere.
func caughtUp(ctx context.Context, cl *kgo.Client, group string, target map[string]map[int32]int64) (bool, error) {
	committed, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return false, fmt.Errorf("fetch committed offsets: %w", err)
	}
	for topic, parts := range target {
		for p, end := range parts {
			if end == 0 {
				continue
			}
			o, ok := committed.Lookup(topic, p)
			if !ok || o.At < end {
				return false, nil
			}
		}
	}
	return true, nil
}
