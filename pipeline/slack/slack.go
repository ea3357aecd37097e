// Package slack is the notifier's Slack transport: the Web API with a bot token
// (chat.postMessage, chat.update, the external file upload), an incoming webhook, and a
// dry run that prints instead of posting; and the classification of Slack's failures.
//
// The decision that shapes it: every failure is classified in one place (Classify), into
// what the caller's retry loop needs — retry with back-off (5xx, network errors,
// timeouts), wait exactly Retry-After (429), keep the alert and retry slowly (the
// credentials are rejected: every post would fail alike, and dropping alerts because a
// token was rotated would lose them), give up on this channel only (channel_not_found,
// not_in_channel, archived), or give up on this message (Slack rejects it as malformed).
// Alertmanager's Slack notifier does not retry 429s and ignores Retry-After; this one
// honours it. Messages are sent exactly as rendered: the renderer escapes every piece of
// text that came from an alert, so the transport never asks Slack to escape (which would
// also break the renderer's own links).
package slack

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
	"time"

	"github.com/segmentio/encoding/json"
	slackapi "github.com/slack-go/slack"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Message is one Slack message to post or to write over an earlier one.
type Message struct {
	// Channel is a name ("#growth") or an ID; chat.update needs the ID.
	Channel string `json:"channel"`
	// ThreadTS makes the message a reply in that thread.
	ThreadTS string `json:"thread_ts,omitempty"`
	// Broadcast also shows a thread reply in the channel.
	Broadcast bool `json:"reply_broadcast,omitempty"`
	// Text is the notification and fallback text (mrkdwn, already escaped).
	Text     string                  `json:"text"`
	Blocks   []slackapi.Block        `json:"blocks"`
	Metadata *slackapi.SlackMetadata `json:"metadata,omitempty"`
}

// Body is what the notification log keeps of a message: enough to rewrite it later.
type Body struct {
	Text   string          `json:"text"`
	Blocks slackapi.Blocks `json:"blocks"`
}

// MarshalBody encodes m's text and blocks for the log.
func (m Message) MarshalBody() string {
	b, err := json.Marshal(Body{Text: m.Text, Blocks: slackapi.Blocks{BlockSet: m.Blocks}})
	if err != nil {
		return ""
	}
	return string(b)
}

// UnmarshalBody decodes what MarshalBody wrote.
func UnmarshalBody(s string) (Body, error) {
	var b Body
	err := json.Unmarshal([]byte(s), &b)
	return b, err
}

// File is an upload into a channel (the digest's chart).
type File struct {
	Channel  string // channel ID
	ThreadTS string
	Name     string
	Title    string // plain text, escaped by the caller
	Data     []byte
}

// ErrUnsupported is returned by a connection that cannot do what was asked (an incoming
// webhook cannot update a message).
var ErrUnsupported = errors.New("not supported by this Slack connection")

// Timeout bounds one Slack call; the notifier's claim on a post always outlasts it.
const Timeout = 30 * time.Second

// Client uses the Web API with a bot token.
type Client struct{ api *slackapi.Client }

// NewClient returns a client for the Web API at apiURL ("https://slack.com/api/").
func NewClient(token config.Secret, apiURL string) *Client {
	return &Client{api: slackapi.New(token.Reveal(), slackapi.OptionAPIURL(apiURL),
		slackapi.OptionHTTPClient(&http.Client{Timeout: Timeout}))}
}

func msgOptions(m Message) []slackapi.MsgOption {
	// escape=false: the text is escaped by the renderer, which also writes deliberate links.
	opts := []slackapi.MsgOption{slackapi.MsgOptionText(m.Text, false), slackapi.MsgOptionBlocks(m.Blocks...)}
	if m.ThreadTS != "" {
		opts = append(opts, slackapi.MsgOptionTS(m.ThreadTS))
		if m.Broadcast {
			opts = append(opts, slackapi.MsgOptionBroadcast())
		}
	}
	if m.Metadata != nil {
		opts = append(opts, slackapi.MsgOptionMetadata(*m.Metadata))
	}
	return opts
}

// Post sends m and returns the channel ID and the message ts Slack assigned.
func (c *Client) Post(ctx context.Context, m Message) (channel, ts string, err error) {
	ch, ts, err := c.api.PostMessageContext(ctx, m.Channel, msgOptions(m)...)
	if err != nil {
		return "", "", fmt.Errorf("chat.postMessage to %s: %w", m.Channel, err)
	}
	return ch, ts, nil
}

// Update rewrites the message at (channel ID, ts).
func (c *Client) Update(ctx context.Context, channel, ts string, m Message) error {
	m.ThreadTS, m.Metadata = "", nil
	if _, _, _, err := c.api.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...); err != nil {
		return fmt.Errorf("chat.update %s %s: %w", channel, ts, err)
	}
	return nil
}

// Upload runs Slack's external upload flow: files.getUploadURLExternal, the upload, and
// files.completeUploadExternal sharing the file into the channel (and thread).
func (c *Client) Upload(ctx context.Context, f File) error {
	_, err := c.api.UploadFileContext(ctx, slackapi.UploadFileParameters{
		Reader: bytes.NewReader(f.Data), FileSize: len(f.Data), Filename: f.Name, Title: f.Title,
		Channel: f.Channel, ThreadTimestamp: f.ThreadTS,
	})
	if err != nil {
		return fmt.Errorf("upload %s to %s: %w", f.Name, f.Channel, err)
	}
	return nil
}

// AuthTest checks the token; it returns "team/user".
func (c *Client) AuthTest(ctx context.Context) (string, error) {
	r, err := c.api.AuthTestContext(ctx)
	if err != nil {
		return "", fmt.Errorf("auth.test: %w", err)
	}
	return r.Team + "/" + r.User, nil
}

// Webhook posts through an incoming webhook: one fixed channel, no threads, no updates,
// no files.
type Webhook struct {
	url    config.Secret
	client *http.Client
}

// NewWebhook returns a poster for the incoming webhook at u.
func NewWebhook(u config.Secret) *Webhook {
	return &Webhook{url: u, client: &http.Client{Timeout: Timeout}}
}

// Post sends m; a webhook assigns no channel ID or ts.
func (w *Webhook) Post(ctx context.Context, m Message) (string, string, error) {
	err := slackapi.PostWebhookCustomHTTPContext(ctx, w.url.Reveal(), w.client, &slackapi.WebhookMessage{
		Text: m.Text, Blocks: &slackapi.Blocks{BlockSet: m.Blocks},
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

// Update is not possible through a webhook.
func (w *Webhook) Update(context.Context, string, string, Message) error { return ErrUnsupported }

// Failure is what a failed Slack call means for the caller.
type Failure int

const (
	// Retry: 5xx, network errors, timeouts: back off and try again.
	Retry Failure = iota
	// RateLimited: 429: wait as long as Retry-After says.
	RateLimited
	// Auth: the token or webhook is rejected. Every post would fail the same way, so the
	// alert is kept and retried slowly; /healthz reports it.
	Auth
	// Channel: this channel cannot be posted to; other channels can.
	Channel
	// Permanent: Slack rejects the message itself; retrying cannot help.
	Permanent
)

func (f Failure) String() string {
	return [...]string{"retry", "rate_limited", "auth", "channel", "permanent"}[f]
}

// Classify says what a failed call means, a short reason for logs and metrics
// ("rate_limited", "http_503", "channel_not_found", "network"), and, for a 429, how long
// Slack asked to wait.
func Classify(err error) (f Failure, reason string, retryAfter time.Duration) {
	var rl *slackapi.RateLimitedError
	if errors.As(err, &rl) {
		return RateLimited, "rate_limited", max(rl.RetryAfter, time.Second)
	}
	var sc slackapi.StatusCodeError
	if errors.As(err, &sc) {
		reason := "http_" + strconv.Itoa(sc.Code)
		switch {
		case sc.Code == http.StatusTooManyRequests:
			return RateLimited, reason, time.Second
		case sc.Code >= 500:
			return Retry, reason, 0
		case sc.Code == http.StatusUnauthorized || sc.Code == http.StatusForbidden || sc.Code == http.StatusNotFound:
			return Auth, reason, 0 // webhooks: invalid_token, action_prohibited, no_service
		case sc.Code == http.StatusGone:
			return Channel, reason, 0 // webhooks: channel_is_archived
		case sc.Code >= 400:
			return Permanent, reason, 0
		}
		return Retry, reason, 0
	}
	var se slackapi.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "ratelimited":
			return RateLimited, se.Err, time.Second
		case "internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org":
			return Retry, se.Err, 0
		case "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
			"no_permission", "missing_scope", "not_allowed_token_type", "org_login_required", "access_denied":
			return Auth, se.Err, 0
		case "channel_not_found", "not_in_channel", "is_archived", "channel_is_archived",
			"restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
			"restricted_action_non_threadable_channel", "team_access_not_granted", "ekm_access_denied",
			"invalid_channel":
			return Channel, se.Err, 0
		default:
			return Permanent, se.Err, 0
		}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Retry, "network", 0
	}
	if errors.Is(err, ErrUnsupported) {
		return Permanent, "unsupported", 0
	}
	return Retry, "unknown", 0
}
