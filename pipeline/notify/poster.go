package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/slack-go/slack"
)

// Poster sends messages to Slack.
type Poster interface {
	// Post sends m and returns the channel ID and the message ts Slack assigned (both ""
	// for an incoming webhook, which can neither thread nor update).
	Post(ctx context.Context, m Message) (channel, ts string, err error)
	// Update rewrites the message at (channel ID, ts); errUnsupported when the poster
	// cannot.
	Update(ctx context.Context, channel, ts string, m Message) error
}

// Uploader shares a file in a channel (the digest's chart).
type Uploader interface {
	Upload(ctx context.Context, f File) error
}

// File is an upload.
type File struct {
	Channel  string // channel ID
	ThreadTS string
	Name     string
	Title    string
	Data     []byte
}

var errUnsupported = errors.New("not supported by this Slack connection")

// httpTimeout bounds one Slack call; a claim is always renewed to outlast it.
const httpTimeout = 30 * time.Second

// slackPoster uses the Web API with a bot token.
type slackPoster struct{ api *slack.Client }

func newSlackPoster(token Secret, apiURL string) *slackPoster {
	return &slackPoster{api: slack.New(token.Reveal(), slack.OptionAPIURL(apiURL),
		slack.OptionHTTPClient(&http.Client{Timeout: httpTimeout}))}
}

func msgOptions(m Message) []slack.MsgOption {
	opts := []slack.MsgOption{slack.MsgOptionText(m.Text, false), slack.MsgOptionBlocks(m.Blocks...)}
	if m.ThreadTS != "" {
		opts = append(opts, slack.MsgOptionTS(m.ThreadTS))
		if m.Broadcast {
			opts = append(opts, slack.MsgOptionBroadcast())
		}
	}
	if m.Metadata != nil {
		opts = append(opts, slack.MsgOptionMetadata(*m.Metadata))
	}
	return opts
}

func (p *slackPoster) Post(ctx context.Context, m Message) (string, string, error) {
	ch, ts, err := p.api.PostMessageContext(ctx, m.Channel, msgOptions(m)...)
	if err != nil {
		return "", "", fmt.Errorf("chat.postMessage to %s: %w", m.Channel, err)
	}
	return ch, ts, nil
}

func (p *slackPoster) Update(ctx context.Context, channel, ts string, m Message) error {
	m.ThreadTS, m.Metadata = "", nil
	if _, _, _, err := p.api.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...); err != nil {
		return fmt.Errorf("chat.update %s %s: %w", channel, ts, err)
	}
	return nil
}

// Upload runs Slack's external upload flow: files.getUploadURLExternal, the upload, and
// files.completeUploadExternal sharing the file into the channel (and thread).
func (p *slackPoster) Upload(ctx context.Context, f File) error {
	_, err := p.api.UploadFileContext(ctx, slack.UploadFileParameters{
		Reader: bytes.NewReader(f.Data), FileSize: len(f.Data), Filename: f.Name, Title: f.Title,
		Channel: f.Channel, ThreadTimestamp: f.ThreadTS,
	})
	if err != nil {
		return fmt.Errorf("upload %s to %s: %w", f.Name, f.Channel, err)
	}
	return nil
}

// AuthTest checks the token at start-up.
func (p *slackPoster) AuthTest(ctx context.Context) (string, error) {
	r, err := p.api.AuthTestContext(ctx)
	if err != nil {
		return "", fmt.Errorf("auth.test: %w", err)
	}
	return r.Team + "/" + r.User, nil
}

// webhookPoster posts through an incoming webhook.
type webhookPoster struct {
	url    Secret
	client *http.Client
}

func (p *webhookPoster) Post(ctx context.Context, m Message) (string, string, error) {
	err := slack.PostWebhookCustomHTTPContext(ctx, p.url.Reveal(), p.client, &slack.WebhookMessage{
		Text: m.Text, Blocks: &slack.Blocks{BlockSet: m.Blocks},
	})
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is a secret: never let it reach a log line
		}
		return "", "", fmt.Errorf("incoming webhook: %w", err)
	}
	return "", "", nil
}

func (p *webhookPoster) Update(context.Context, string, string, Message) error {
	return errUnsupported
}

// dryRun prints each call as one JSON object per line.
type dryRun struct {
	mu  sync.Mutex
	w   io.Writer
	seq int
	now func() time.Time
}

type dryRunLine struct {
	Method string `json:"method"`
	TS     string `json:"ts,omitempty"`
	Message
	File *dryRunFile `json:"file,omitempty"`
}

type dryRunFile struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	Bytes int    `json:"bytes"`
}

func (d *dryRun) write(l dryRunLine) error {
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("dry run: encode message: %w", err)
	}
	_, err = d.w.Write(append(b, '\n'))
	return err
}

func (d *dryRun) Post(_ context.Context, m Message) (string, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	ts := strconv.FormatInt(d.now().Unix(), 10) + "." + fmt.Sprintf("%06d", d.seq)
	return m.Channel, ts, d.write(dryRunLine{Method: "chat.postMessage", TS: ts, Message: m})
}

func (d *dryRun) Update(_ context.Context, channel, ts string, m Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m.Channel = channel
	return d.write(dryRunLine{Method: "chat.update", TS: ts, Message: m})
}

func (d *dryRun) Upload(_ context.Context, f File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.write(dryRunLine{Method: "files.upload", Message: Message{Channel: f.Channel, ThreadTS: f.ThreadTS},
		File: &dryRunFile{Name: f.Name, Title: f.Title, Bytes: len(f.Data)}})
}

// failure classifies a failed Slack call, in one place.
type failure int

const (
	// failRetry: 5xx, network errors, timeouts: back off and try again.
	failRetry failure = iota
	// failRateLimited: 429: wait as long as Retry-After says.
	failRateLimited
	// failAuth: the token or webhook is rejected. Every post would fail the same way,
	// so the alert is kept (not committed) and retried slowly; /healthz reports it.
	failAuth
	// failChannel: this channel cannot be posted to; other channels can.
	failChannel
	// failPermanent: Slack rejects the message itself; retrying cannot help.
	failPermanent
)

func (f failure) String() string {
	return [...]string{"retry", "rate_limited", "auth", "channel", "permanent"}[f]
}

// classify says what a failed call means and, for a 429, how long Slack asked to wait.
func classify(err error) (failure, string, time.Duration) {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return failRateLimited, "rate_limited", max(rl.RetryAfter, time.Second)
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) {
		reason := "http_" + strconv.Itoa(sc.Code)
		switch {
		case sc.Code == http.StatusTooManyRequests:
			return failRateLimited, reason, 0
		case sc.Code >= 500:
			return failRetry, reason, 0
		case sc.Code == http.StatusUnauthorized || sc.Code == http.StatusForbidden || sc.Code == http.StatusNotFound:
			return failAuth, reason, 0 // webhooks: invalid_token, action_prohibited, no_service
		case sc.Code == http.StatusGone:
			return failChannel, reason, 0 // webhooks: channel_is_archived
		case sc.Code >= 400:
			return failPermanent, reason, 0
		}
		return failRetry, reason, 0
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "ratelimited":
			return failRateLimited, se.Err, 0
		case "internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org":
			return failRetry, se.Err, 0
		case "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
			"no_permission", "missing_scope", "not_allowed_token_type", "org_login_required", "access_denied":
			return failAuth, se.Err, 0
		case "channel_not_found", "not_in_channel", "is_archived", "channel_is_archived",
			"restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
			"restricted_action_non_threadable_channel", "team_access_not_granted", "ekm_access_denied",
			"invalid_channel":
			return failChannel, se.Err, 0
		default:
			return failPermanent, se.Err, 0
		}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) {
		return failRetry, "network", 0
	}
	if errors.Is(err, errUnsupported) {
		return failPermanent, "unsupported", 0
	}
	return failRetry, "unknown", 0
}
