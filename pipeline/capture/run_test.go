package capture_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/broker/brokertest"
	"github.com/flagwatch/flagwatch/pipeline/capture"
)

// On shutdown Run stops accepting connections, lets the in-flight request wait for its
// ack and answer 200, and returns nil; the event is in Kafka.
func TestRunFinishesInFlightRequestsOnShutdown(t *testing.T) {
	kafka := brokertest.Cluster(t, 1, broker.EventsTopic)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	kafka.Cluster().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { // hold the first produce until released
			close(entered)
			kafka.Cluster().SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc, runErr := make(chan net.Addr, 1), make(chan error, 1)
	go func() {
		runErr <- capture.Run(ctx, capture.Options{
			Addr: "127.0.0.1:0", Brokers: kafka.Addrs(), Logger: slog.New(slog.DiscardHandler),
			OnListen: func(a net.Addr) { addrc <- a },
		})
	}()
	base := "http://" + (<-addrc).String()
	status := make(chan int, 1)
	go func() {
		res, err := http.Post(base+"/batch/", "application/json", strings.NewReader(oneEvent))
		if err != nil {
			status <- 0
			return
		}
		res.Body.Close()
		status <- res.StatusCode
	}()

	waitFor(t, entered, "the request's produce to reach the broker")
	cancel()
	select {
	case err := <-runErr:
		t.Fatalf("Run returned with a request in flight: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	_, err := (&http.Client{Timeout: time.Second}).Get(base + "/healthz")
	require.Error(t, err, "no new connections during shutdown")
	close(release)

	require.Equal(t, http.StatusOK, <-status)
	require.NoError(t, <-runErr)
	consumer := brokertest.Client(t, kafka, kgo.ConsumeTopics(broker.EventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	recs := (&env{t: t, consumer: consumer}).records(1)
	require.Equal(t, "u", string(recs[0].Key))
}

// In proxy mode, shutdown lets the request in flight finish — PostHog answers it — and
// drains the copies already taken before the producer is flushed: the event is in Kafka
// when Run returns.
func TestRunProxyModeDrainsCopiesOnShutdown(t *testing.T) {
	kafka := brokertest.Cluster(t, 1, broker.EventsTopic)
	ph := newPostHog(t, "k")
	held, release := ph.holdNext()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc, runErr := make(chan net.Addr, 1), make(chan error, 1)
	go func() {
		runErr <- capture.Run(ctx, capture.Options{
			Addr: "127.0.0.1:0", Brokers: kafka.Addrs(), Upstream: ph.url(), Logger: slog.New(slog.DiscardHandler),
			OnListen: func(a net.Addr) { addrc <- a },
		})
	}()
	base := "http://" + (<-addrc).String()
	status := make(chan int, 1)
	go func() {
		res, err := http.Post(base+"/batch/", "application/json", strings.NewReader(oneEvent))
		if err != nil {
			status <- 0
			return
		}
		res.Body.Close()
		status <- res.StatusCode
	}()
	waitFor(t, held, "the request to reach PostHog")
	cancel()
	close(release)
	require.Equal(t, http.StatusOK, <-status, "PostHog's answer")
	require.NoError(t, <-runErr)

	consumer := brokertest.Client(t, kafka, kgo.ConsumeTopics(broker.EventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	recs := (&env{t: t, consumer: consumer}).records(1)
	require.Equal(t, "u", string(recs[0].Key))
}

func TestRunRejectsBadOptions(t *testing.T) {
	err := capture.Run(context.Background(), capture.Options{MaxBodyBytes: -1, Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "max body bytes -1: must be positive")
	err = capture.Run(context.Background(), capture.Options{Addr: "127.0.0.1:-5", Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "listen on 127.0.0.1:-5")
	err = capture.Run(context.Background(), capture.Options{MaxBodyBytes: 64 << 20, MaxInFlightBytes: 128 << 20,
		CORSCredentialOrigins: []string{"https://shop.example", "https://*.example", "https://shop.example/", "shop.example"},
		Logger:                slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "max in-flight bytes 134217728: must be at least 4 × max body bytes (268435456)")
	require.ErrorContains(t, err, `CORS credential origin "https://*.example": must name one host`)
	require.ErrorContains(t, err, `CORS credential origin "https://shop.example/": must be scheme://host[:port] only`)
	require.ErrorContains(t, err, `CORS credential origin "shop.example": must start with https:// or http://`)
	require.NotContains(t, err.Error(), `"https://shop.example":`)
}

func waitFor(t testing.TB, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}
