package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flagwatch/flagwatch/pipeline/broker"
	"github.com/flagwatch/flagwatch/pipeline/capture/proxy"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/ops"
)

// Defaults of Options.
const (
	DefaultAddr         = config.DefaultCaptureAddr
	DefaultBrokers      = config.DefaultKafkaBrokers
	DefaultMaxBodyBytes = 20 << 20
	// DefaultMaxInFlightBytes holds about two requests at the body limit, gzip'd, at
	// once (each reserves its body, the payload and twice the payload to parse it), or
	// thousands of SDK-sized ones.
	DefaultMaxInFlightBytes    = 128 << 20
	DefaultMaxInFlightRequests = 1024
	DefaultKafkaCheckInterval  = 5 * time.Second
	DefaultProduceTimeout      = 10 * time.Second
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultRetryAfter          = 5 * time.Second
	// DefaultTeeQueue is how many copies of proxied event requests may wait to be
	// decoded; more are dropped (and counted), never waited for.
	DefaultTeeQueue = 1024
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
	// MaxInFlightBytes bounds the memory all requests in flight may reserve: bodies,
	// decompressed payloads, parsing and records (default 128 MiB). A request that does
	// not fit while others hold the budget gets 503 with Retry-After, before it is read
	// further or decompressed. At least 4 × MaxBodyBytes, so that a request at the body
	// limit fits when alone.
	MaxInFlightBytes int64
	// MaxInFlightRequests bounds the requests handled at once (default 1024); more get
	// 503 with Retry-After.
	MaxInFlightRequests int
	// KafkaCheckInterval is how often the brokers are pinged while they answer (default
	// 5 s; every second while they do not). While Kafka is known to be down, requests
	// are answered 503 at once.
	KafkaCheckInterval time.Duration
	// CORSCredentialOrigins are the browser origins (https://shop.example) answered
	// with Access-Control-Allow-Credentials; any other origin may send events without
	// credentials.
	CORSCredentialOrigins []string
	// Health is where capture reports Kafka's state and what /healthz serves (default:
	// a new one).
	Health *ops.Health
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
	// Upstream, when set (https://us.i.posthog.com), makes capture PostHog's reverse
	// proxy: every request is forwarded to PostHog unchanged and answered by PostHog,
	// and a copy of each event request PostHog accepted is produced to Kafka in the
	// background (see tee.go). Events are then kept only when their project key is in
	// Tokens (or all, when Tokens is empty); the forwarded request is never refused
	// for flagwatch's reasons.
	Upstream string
	// AssetsUpstream receives /static/* and /array/* in proxy mode (default: PostHog
	// Cloud's assets host for its API hosts, https://us-assets.i.posthog.com, else
	// Upstream).
	AssetsUpstream string
	// ProxyMaxBodyBytes bounds a proxied request body (default 64 MiB, PostHog's);
	// only the copies of event requests are held in memory, within MaxBodyBytes and
	// the in-flight budget.
	ProxyMaxBodyBytes int64
	// TeeQueue is how many copies may wait to be decoded (default 1024); TeeWorkers
	// how many goroutines decode them (default GOMAXPROCS).
	TeeQueue   int
	TeeWorkers int
	// WebhookSecret enables POST /webhook/posthog, PostHog's "HTTP Webhook"
	// destination, for requests carrying Authorization: Bearer <secret>; several
	// secrets, comma-separated, are all accepted (to rotate one). Unset: the webhook
	// answers 404.
	WebhookSecret config.Secret
	// KafkaOpts are appended to the producer's options (TLS, SASL, tests).
	KafkaOpts []kgo.Opt
	// OnListen, when set, is called by Run with the bound address before serving.
	OnListen func(net.Addr)
}

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
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
	if o.MaxInFlightBytes == 0 {
		o.MaxInFlightBytes = max(DefaultMaxInFlightBytes, 4*o.MaxBodyBytes)
	}
	if o.MaxInFlightRequests == 0 {
		o.MaxInFlightRequests = DefaultMaxInFlightRequests
	}
	if o.KafkaCheckInterval == 0 {
		o.KafkaCheckInterval = DefaultKafkaCheckInterval
	}
	if o.Health == nil {
		o.Health = &ops.Health{Now: o.Now}
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
	if o.ProxyMaxBodyBytes == 0 {
		o.ProxyMaxBodyBytes = proxy.DefaultMaxBodyBytes
	}
	if o.TeeQueue == 0 {
		o.TeeQueue = DefaultTeeQueue
	}
	if o.TeeWorkers == 0 {
		o.TeeWorkers = runtime.GOMAXPROCS(0)
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
	if o.MaxInFlightBytes < 4*o.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("max in-flight bytes %d: must be at least 4 × max body bytes (%d), so that a request at the body limit fits", o.MaxInFlightBytes, 4*o.MaxBodyBytes))
	}
	if o.MaxInFlightRequests < 0 {
		errs = append(errs, fmt.Errorf("max in-flight requests %d: must be positive", o.MaxInFlightRequests))
	}
	if o.KafkaCheckInterval < 0 {
		errs = append(errs, fmt.Errorf("kafka check interval %s: must be positive", o.KafkaCheckInterval))
	}
	for _, origin := range o.CORSCredentialOrigins {
		if err := checkOrigin(origin); err != nil {
			errs = append(errs, fmt.Errorf("CORS credential origin %q: %w", origin, err))
		}
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
	if _, _, err := o.upstreams(); err != nil {
		errs = append(errs, err)
	}
	if o.ProxyMaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("proxy max body bytes %d: must be positive", o.ProxyMaxBodyBytes))
	}
	if o.TeeQueue < 0 || o.TeeWorkers < 0 {
		errs = append(errs, fmt.Errorf("tee queue %d, workers %d: must be positive", o.TeeQueue, o.TeeWorkers))
	}
	return errors.Join(errs...)
}

// upstreams parses Upstream and AssetsUpstream; api is nil outside proxy mode.
func (o Options) upstreams() (api, assets *url.URL, err error) {
	if o.Upstream == "" {
		if o.AssetsUpstream != "" {
			return nil, nil, errors.New("assets upstream: set only with an upstream (the PostHog API host)")
		}
		return nil, nil, nil
	}
	if api, err = parseUpstream(o.Upstream); err != nil {
		return nil, nil, fmt.Errorf("upstream: %w", err)
	}
	if o.AssetsUpstream == "" {
		if assets = proxy.AssetsHost(api); assets == nil {
			assets = api
		}
		return api, assets, nil
	}
	if assets, err = parseUpstream(o.AssetsUpstream); err != nil {
		return nil, nil, fmt.Errorf("assets upstream: %w", err)
	}
	return api, assets, nil
}

func parseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	if err != nil {
		return nil, err
	}
	return u, proxy.CheckUpstream(u)
}

// checkOrigin accepts a browser origin as browsers send it: scheme://host[:port], no
// path, no wildcard.
func checkOrigin(origin string) error {
	u, err := url.Parse(origin)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must start with https:// or http://")
	case u.Host == "" || strings.Contains(u.Host, "*"):
		return errors.New("must name one host")
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return errors.New("must be scheme://host[:port] only, as a browser sends it")
	}
	return nil
}
