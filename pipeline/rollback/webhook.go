package rollback

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Webhook headers. The signature is "sha256=" and the hex HMAC-SHA256 of the raw body
// with the shared secret (GitHub's scheme); the timestamp is the attempt's Unix time in
// seconds. The body's "time" (when the finding was made) and the Idempotency-Key (the
// alert's dedup key) let a receiver reject replays and duplicates: a retry sends the
// same body, signature and key.
const (
	SignatureHeader   = "X-Flagwatch-Signature"
	TimestampHeader   = "X-Flagwatch-Timestamp"
	IdempotencyHeader = "Idempotency-Key"
)

// Webhook POSTs the Request as JSON to a URL, signed with a shared secret.
type Webhook struct {
	url    string
	secret config.Secret
	sender sender
}

// NewWebhook returns the action that calls url signing with secret.
func NewWebhook(url string, secret config.Secret, opts Options) *Webhook {
	return &Webhook{url: url, secret: secret, sender: newSender("webhook", url, opts)}
}

// Do implements Action.
func (w *Webhook) Do(ctx context.Context, r Request) Outcome {
	body, err := json.Marshal(r)
	if err != nil {
		return w.sender.outcome(StatusFailed, fmt.Sprintf("encode request: %v", err))
	}
	return w.Post(ctx, r.Flag, r.DedupKey, body)
}

// Post sends body (JSON) signed, with key as its Idempotency-Key, retrying like Do: a
// retry sends the same body, signature and key. Progressive rollout sends its stage
// changes with it.
func (w *Webhook) Post(ctx context.Context, flag, key string, body []byte) Outcome {
	sig := Sign([]byte(w.secret.Reveal()), body)
	out, _ := w.sender.send(ctx, flag, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(SignatureHeader, sig)
		req.Header.Set(TimestampHeader, strconv.FormatInt(w.sender.opts.Now().Unix(), 10))
		if key != "" {
			req.Header.Set(IdempotencyHeader, headerValue(key))
		}
		return req, nil
	})
	return out
}

// Sign returns the X-Flagwatch-Signature value for body.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether signature is body's X-Flagwatch-Signature under secret, in
// constant time. Receivers written in Go can use it.
func Verify(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}
