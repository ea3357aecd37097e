package rollback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/retry"
)

// userAgent identifies flagwatch to the endpoints it calls.
const userAgent = "flagwatch-rollback/1"

// sender sends one logical request with the retry policy and turns the result into an
// Outcome.
type sender struct {
	action string // Outcome.Action
	target string // Outcome.Target: the URL without user info or query
	opts   Options
}

func newSender(action, rawURL string, opts Options) sender {
	return sender{action: action, target: redactURL(rawURL), opts: opts.withDefaults()}
}

// result is one attempt's classification.
type result struct {
	ok         bool
	retry      bool
	retryAfter time.Duration
	detail     string
	body       []byte // the response body, up to maxBody, on success
	code       int    // the HTTP status, 0 without an answer
}

const (
	maxBody   = 1 << 20 // response bytes read (a PostHog flag with its payloads fits)
	maxDetail = 200     // response bytes quoted in a failure detail
)

// send calls build and sends its request until it succeeds, fails permanently, or the
// policy gives up. On success it also returns the response body.
func (s sender) send(ctx context.Context, flag string, build func(context.Context) (*http.Request, error)) (Outcome, []byte) {
	out, body, _ := s.sendCode(ctx, flag, build)
	return out, body
}

// sendCode is send that also returns the HTTP status of the last answer (0 when there
// was none), for callers that treat one status apart (409 Conflict). Retries go through
// pipeline/retry: network errors, 429 and 5xx are retried with backoff (a Retry-After
// honoured), anything else is final, within the policy's attempts and time budget.
func (s sender) sendCode(ctx context.Context, flag string, build func(context.Context) (*http.Request, error)) (Outcome, []byte, int) {
	p := s.opts.Retry
	var last result
	calls := 0
	err := retry.Do(ctx, s.opts.Logger.With("action", s.action, "target", s.target, "flag", flag), s.action+" call",
		retry.Policy{Initial: p.Base, Max: p.Max, Attempts: p.Attempts, Elapsed: p.Budget, Exact: true, Now: s.opts.Now, Sleep: s.opts.Sleep},
		func(ctx context.Context) error {
			calls++
			last = s.try(ctx, build)
			switch {
			case last.ok:
				return nil
			case !last.retry:
				return retry.Permanent(errors.New(last.detail))
			case last.retryAfter > 0:
				return retry.After(errors.New(last.detail), last.retryAfter)
			}
			return errors.New(last.detail)
		})
	if err == nil {
		return s.outcome(StatusOK, withAttempts(last.detail, calls)), last.body, last.code
	}
	if !last.retry {
		return s.outcome(StatusFailed, withAttempts(last.detail, calls)), nil, last.code
	}
	// Retryable, but the policy or the context ended it: say why.
	switch stop, why := retry.Stopped(err); stop {
	case retry.StopContext:
		return s.outcome(StatusFailed, fmt.Sprintf("%s; stopped after %s: %s", last.detail, attempts(calls), why)), nil, last.code
	case retry.StopElapsed:
		return s.outcome(StatusFailed, fmt.Sprintf("%s; gave up after %s: %s", last.detail, attempts(calls), why)), nil, last.code
	}
	return s.outcome(StatusFailed, fmt.Sprintf("%s; gave up after %s", last.detail, attempts(calls))), nil, last.code
}

// try makes one attempt and classifies it: 2xx succeeds; network errors, 429 and 5xx
// are retried; anything else (other 4xx, a bad request) is final.
func (s sender) try(ctx context.Context, build func(context.Context) (*http.Request, error)) result {
	req, err := build(ctx)
	if err != nil {
		return result{detail: fmt.Sprintf("build request: %v", err)}
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		// The *url.Error would repeat the URL, query included; Target already names it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return result{retry: ctx.Err() == nil, detail: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	res := result{detail: "HTTP " + resp.Status, code: resp.StatusCode}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		res.ok, res.body = true, body
		return res
	case code == http.StatusTooManyRequests || code >= 500:
		res.retry = true
		res.retryAfter = retryAfter(resp.Header.Get("Retry-After"), s.opts.Now())
	}
	if snippet := oneLine(body); snippet != "" {
		res.detail += ": " + snippet
	}
	return res
}

func (s sender) outcome(status, detail string) Outcome {
	return Outcome{Action: s.action, Target: s.target, Status: status, Detail: detail, At: s.opts.Now().UTC()}
}

func withAttempts(detail string, n int) string {
	if n == 1 {
		return detail
	}
	return detail + " after " + attempts(n)
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

// backoff is the wait after failed attempt n (1-based): Base·2^(n−1), capped at Max.
func backoff(p Retry, n int) time.Duration {
	d := p.Base
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(strings.TrimSpace(h), 10, 32); err == nil {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// oneLine shortens a response body for an outcome detail.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > maxDetail {
		s = strings.ToValidUTF8(s[:maxDetail], "") + "…"
	}
	return s
}

// redactURL drops user info, query and fragment, which may carry credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// headerValue makes s safe as an HTTP header value: control characters, which an
// event property in a segment value could carry, become '_'.
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}
