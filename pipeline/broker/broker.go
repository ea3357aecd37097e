// Package broker connects flagwatch to a Kafka-protocol cluster through franz-go and
// provides the embedded single-process broker (kfake with a data dir) that the demo and a
// one-machine install use. The decision that shapes it: every service talks Kafka over
// TCP even when the broker is in-process, so the embedded default and tests exercise the
// same code path as Apache Kafka, Redpanda or MSK.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/ops"
	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// Default topics.
const (
	EventsTopic = "events"
	DLQTopic    = "events_dlq"
	AlertsTopic = "flag_alerts"
)

// Seeds splits a comma-separated broker list ("a:9092,b:9092").
func Seeds(brokers string) []string {
	var out []string
	for _, s := range strings.Split(brokers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// EnsureTopics creates the topics that do not exist yet (partitions each, replication
// factor left to the broker's default). An existing topic is not an error.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, topics ...string) error {
	return EnsureTopicsWithConfig(ctx, cl, partitions, nil, topics...)
}

// EnsureTopicsWithConfig is EnsureTopics with topic configs for the topics it creates
// (e.g. max.message.bytes for a dead-letter topic that must take the largest message
// ingest accepts, plus its reason headers).
func EnsureTopicsWithConfig(ctx context.Context, cl *kgo.Client, partitions int32, configs map[string]*string, topics ...string) error {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, -1, configs, topics...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// Embedded is an in-process Kafka-protocol broker listening on TCP.
type Embedded struct {
	cluster *kfake.Cluster
}

// StartEmbedded starts kfake on addr's port (":9092", "127.0.0.1:0" for any free port).
// With dataDir set, topics, records and committed offsets survive a restart.
func StartEmbedded(addr, dataDir string, partitions int32, topics ...string) (*Embedded, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker port %q: %w", portStr, err)
	}
	opts := []kfake.Opt{
		kfake.Ports(port),
		kfake.DefaultNumPartitions(int(partitions)),
		kfake.AllowAutoTopicCreation(),
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	return &Embedded{cluster: c}, nil
}

// Addrs are the broker's listen addresses, usable as seeds.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Cluster exposes kfake for fault injection in tests.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the broker, persisting its state when it has a data dir.
func (e *Embedded) Close() { e.cluster.Close() }

// WaitReachable pings seeds until a metadata request succeeds or ctx ends; services call
// it at start-up so a broker that is still booting is waited for, not reported as fatal.
func WaitReachable(ctx context.Context, cl *kgo.Client) error {
	return Wait(ctx, cl, WaitOptions{})
}

// WaitOptions say how Wait reports and how long it waits.
type WaitOptions struct {
	// Log gets one line per failed attempt, with the reason and the next wait.
	Log *slog.Logger
	// Health, when set, says "kafka: waiting: …" until the broker answers.
	Health *ops.Health
	// Max gives up after this long (0: only ctx ends the wait).
	Max time.Duration
	// Brokers name the seeds in logs and health.
	Brokers []string
}

// HealthComponent is the name Wait reports under in an ops.Health.
const HealthComponent = "kafka"

// Wait pings the seeds until a metadata request succeeds, logging every failed attempt
// and reporting the wait to Health, until ctx ends or Max has passed.
func Wait(ctx context.Context, cl *kgo.Client, o WaitOptions) error {
	where := "Kafka"
	if len(o.Brokers) > 0 {
		where = "Kafka at " + strings.Join(o.Brokers, ",")
	}
	err := retry.Do(ctx, o.Log, "connecting to "+where, retry.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Elapsed: o.Max},
		func(ctx context.Context) error {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			err := cl.Ping(pctx)
			if err != nil && o.Health != nil {
				o.Health.Waiting(HealthComponent, fmt.Sprintf("%s: %v", where, err))
			}
			return err
		})
	if err != nil {
		return fmt.Errorf("%s not reachable: %w", where, err)
	}
	if o.Health != nil {
		o.Health.Report(HealthComponent, nil)
	}
	return nil
}
