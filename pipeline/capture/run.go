package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
)

// producerLinger is how long the producer waits to fill a batch; short, because every
// request waits for its acks.
const producerLinger = 5 * time.Millisecond

// NewProducer returns the Kafka client capture produces with: idempotent, acks=all,
// lz4-compressed batches, records failed after opts.ProduceTimeout.
func NewProducer(opts Options) (*kgo.Client, error) {
	opts = opts.withDefaults()
	kopts := []kgo.Opt{
		kgo.SeedBrokers(opts.Brokers...),
		kgo.DefaultProduceTopic(opts.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(producerLinger),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.SnappyCompression(), kgo.NoCompression()),
		kgo.RecordDeliveryTimeout(opts.ProduceTimeout),
	}
	cl, err := kgo.NewClient(append(kopts, opts.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("create kafka producer: %w", err)
	}
	return cl, nil
}

// Run serves capture on opts.Addr until ctx ends, then shuts down gracefully: it stops
// accepting connections, lets in-flight requests finish (each waits for its Kafka acks),
// flushes the producer and returns nil.
func Run(ctx context.Context, opts Options) error {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return fmt.Errorf("capture options: %w", err)
	}
	log := opts.Logger
	switch {
	case len(opts.Tokens) > 0:
	case opts.Upstream != "":
		log.Info("No API tokens configured: keeping the events of every PostHog project that goes through the proxy; set FLAGWATCH_CAPTURE_TOKENS to keep some")
	default:
		log.Warn("No API tokens configured: accepting events with any API key or none; set FLAGWATCH_CAPTURE_TOKENS")
	}
	opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cl, err := NewProducer(opts)
	if err != nil {
		return err
	}
	defer cl.Close()

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.Addr, err)
	}
	h, err := NewHandler(cl, opts)
	if err != nil {
		return err
	}
	readTimeout := time.Minute
	if h.tee == nil {
		opts.Health.Waiting(kafkaComponent, "no broker of "+strings.Join(opts.Brokers, ",")+" has answered yet")
	} else {
		// A 64 MB recording from a slow connection takes a while.
		readTimeout = 5 * time.Minute
	}
	go h.WatchKafka(ctx)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       readTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go prepareTopic(ctx, cl, opts)
	if opts.OnListen != nil {
		opts.OnListen(ln.Addr())
	}
	attrs := []any{"addr", ln.Addr().String(), "brokers", opts.Brokers, "topic", opts.Topic,
		"tokens", len(opts.Tokens), "max_body_bytes", opts.MaxBodyBytes, "max_inflight_bytes", opts.MaxInFlightBytes,
		"max_inflight_requests", opts.MaxInFlightRequests, "webhook", h.webhook.enabled()}
	if h.tee != nil {
		api, assets, _ := opts.upstreams()
		log.Info("Capture listening as PostHog's reverse proxy", append(attrs, "upstream", api.Redacted(),
			"assets_upstream", assets.Redacted(), "tee_queue", opts.TeeQueue)...)
	} else {
		log.Info("Capture listening", attrs...)
	}
	return serve(ctx, srv, ln, cl, h, opts)
}

func serve(ctx context.Context, srv *http.Server, ln net.Listener, cl *kgo.Client, h *Handler, opts Options) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	opts.Logger.Info("Capture shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down http server: %w", err))
	}
	if err := h.Close(sctx); err != nil {
		errs = append(errs, err)
	}
	if err := cl.Flush(sctx); err != nil {
		errs = append(errs, fmt.Errorf("flush kafka producer: %w", err))
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("serve http: %w", err))
	}
	if len(errs) == 0 {
		opts.Logger.Info("Capture stopped")
	}
	return errors.Join(errs...)
}

// prepareTopic waits for Kafka and creates the events topic if it is missing; a broker
// still booting is waited for, and a failure is logged, not fatal (requests then get
// 503 until the topic exists).
func prepareTopic(ctx context.Context, cl *kgo.Client, opts Options) {
	if err := broker.WaitReachable(ctx, cl); err != nil {
		if ctx.Err() == nil {
			opts.Logger.Warn("Kafka not reachable", "brokers", opts.Brokers, "err", err)
		}
		return
	}
	if err := broker.EnsureTopics(ctx, cl, opts.TopicPartitions, opts.Topic); err != nil {
		opts.Logger.Warn("Cannot create events topic; expecting it to exist", "topic", opts.Topic, "err", err)
		return
	}
	opts.Logger.Info("Kafka reachable", "brokers", opts.Brokers, "topic", opts.Topic)
}
