package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Defaults of Options.
const (
	DefaultAddr            = config.DefaultCaptureAddr
	DefaultBrokers         = config.DefaultKafkaBrokers
	DefaultMaxBodyBytes    = 20 << 20
	DefaultProduceTimeout  = 10 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultRetryAfter      = 5 * time.Second
)

// Options configure capture. The zero value of each field means its default.
type Options struct {
	// Addr is the HTTP listen address (default ":8000").
	Addr string
	// Brokers are the Kafka seed brokers (default 127.0.0.1:9092).
	Brokers []string
	// Topic receives the events (default "events").
	Topic string
	// TopicPartitions is used when Run creates a missing topic; -1 or 0 means the
	// broker's default.
	TopicPartitions int32
	// Tokens are the accepted project API keys. Empty accepts every key (and no key),
	// which Run logs as a warning.
	Tokens []string
	// MaxBodyBytes limits a request body, before and after decompression (default
	// 20 MiB); larger requests get 413.
	MaxBodyBytes int64
	// ProduceTimeout bounds the wait for Kafka's acks; a request whose records are not
	// acknowledged by then gets 503 (default 10 s).
	ProduceTimeout time.Duration
	// RetryAfter is the Retry-After sent with a 503 (default 5 s).
	RetryAfter time.Duration
	// ShutdownTimeout bounds the graceful shutdown: finishing in-flight requests and
	// flushing the producer (default 30 s).
	ShutdownTimeout time.Duration
	// Now is the clock used for clock-skew correction (default time.Now).
	Now func() time.Time
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
	// Registry receives the metrics and is served on /metrics. NewHandler registers its
	// collectors on it, so give each handler its own. Nil: a new registry (Run adds the
	// Go and process collectors).
	Registry *prometheus.Registry
	// KafkaOpts are appended to the producer's options (TLS, SASL, tests).
	KafkaOpts []kgo.Opt
	// OnListen, when set, is called by Run with the bound address before serving.
	OnListen func(net.Addr)
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if len(o.Brokers) == 0 {
		o.Brokers = broker.Seeds(DefaultBrokers)
	}
	if o.Topic == "" {
		o.Topic = broker.EventsTopic
	}
	if o.TopicPartitions == 0 {
		o.TopicPartitions = -1
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.ProduceTimeout == 0 {
		o.ProduceTimeout = DefaultProduceTimeout
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max body bytes %d: must be positive", o.MaxBodyBytes))
	}
	if o.ProduceTimeout < 0 {
		errs = append(errs, fmt.Errorf("produce timeout %s: must be positive", o.ProduceTimeout))
	}
	if o.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %s: must be positive", o.ShutdownTimeout))
	}
	for _, t := range o.Tokens {
		if t == "" {
			errs = append(errs, errors.New("tokens: empty API key"))
		}
	}
	return errors.Join(errs...)
}
