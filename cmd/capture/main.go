// Command capture receives events from unmodified PostHog SDKs and produces them to Kafka.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/capture"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

const about = `capture: a PostHog-compatible event endpoint for flagwatch.

Point any PostHog SDK's host at it (posthog-node: new PostHog(key, {host: "http://capture:8000"})).
It serves POST /batch/, /e/, /i/v0/e/, /capture/, /track/ (JSON, gzip, base64, form data=),
GET with ?data=, /healthz and /metrics, and answers 200 only once every event of the request
is acknowledged by Kafka (503 + Retry-After otherwise, so SDKs retry).

Every flag can also be set through the environment variable shown with it; a flag on
the command line wins. With no -capture-tokens, any API key is accepted (logged at start-up).

`

func main() {
	fs := flag.NewFlagSet("capture", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), about); fs.PrintDefaults() }
	addr, tokens, brokers := config.CaptureAddr(fs), config.CaptureTokens(fs), config.KafkaBrokers(fs)
	topic := fs.String("events-topic", broker.EventsTopic, "Kafka topic for events")
	partitions := fs.Int("events-topic-partitions", -1, "partitions when creating a missing topic; -1: broker default")
	maxBody := fs.Int64("capture-max-body-bytes", capture.DefaultMaxBodyBytes, "request size limit, before and after decompression")
	produceTimeout := fs.Duration("capture-produce-timeout", capture.DefaultProduceTimeout, "wait for Kafka acks before answering 503")
	shutdownTimeout := fs.Duration("shutdown-timeout", capture.DefaultShutdownTimeout, "time to finish in-flight requests on SIGTERM")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := config.ParseFlags(fs, os.Args[1:], os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(2)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "capture: -log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := capture.Run(ctx, capture.Options{
		Addr:            *addr,
		Brokers:         *brokers,
		Topic:           *topic,
		TopicPartitions: int32(*partitions),
		Tokens:          *tokens,
		MaxBodyBytes:    *maxBody,
		ProduceTimeout:  *produceTimeout,
		ShutdownTimeout: *shutdownTimeout,
		Logger:          logger,
	})
	if err != nil {
		logger.Error("Capture failed", "err", err)
		os.Exit(1)
	}
}
