package notify

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/slack-go/slack"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/notify/slacktest"
)

// blocksOf decodes a message's blocks the way Slack receives them.
func blocksOf(t *testing.T, m Message) []map[string]any {
	t.Helper()
	b, err := json.Marshal(m.Blocks)
	require.NoError(t, err)
	var out []map[string]any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// The alert message, block by block: header with flag and decision, the numbers with
// their interval, the segments, what to do, the rollback, the report link.
func TestRenderAlertGolden(t *testing.T) {
	m := renderAlert(lossAlert("new-checkout"), renderFirst, "https://flagwatch.example.com", detected)
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
	golden(t, "alert_loss.golden.json", prettyJSON(t, m))

	bs := blocksOf(t, m)
	require.Equal(t, "header", bs[0]["type"])
	require.Equal(t, ":red_circle: new-checkout: loss", bs[0]["text"].(map[string]any)["text"])
	all := string(prettyJSON(t, m))
	for _, want := range []string{"-35.0% [-50.1%, -19.9%]", "control 6,012 · test 6,022", "$geoip_country_code = GB",
		"Roll back", "webhook", "https://flagwatch.example.com/flags/new-checkout", "chance to win &lt;1%"} {
		require.Contains(t, all, want)
	}
}

func TestRenderNextSteps(t *testing.T) {
	for decision, want := range map[string]string{
		alert.Win:  "Ship it",
		alert.Loss: "Roll back",
		alert.SRM:  "Check your flag-evaluation code",
	} {
		a := &alert.Alert{Flag: "f", Decision: decision, Severity: alert.Warning}
		m := renderAlert(a, renderFirst, "", detected)
		require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
		require.Contains(t, string(prettyJSON(t, m)), "*What to do:* "+want, decision)
	}
}

// Slack's limits hold whatever the analyzer sends: a 400-character flag name, a huge
// summary, 30 segments.
func TestRenderRespectsBlockKitLimits(t *testing.T) {
	a := lossAlert(strings.Repeat("very-long-flag-", 30))
	a.Summary = strings.Repeat("summary ", 1000)
	a.Reason = strings.Repeat("reason ", 1000)
	for i := 0; i < 30; i++ {
		a.Numbers.Segments = append(a.Numbers.Segments, alert.SegmentEffect{Property: "country", Value: fmt.Sprint(i), N: 10})
	}
	for _, kind := range []renderKind{renderFirst, renderUpdate, renderRepeat} {
		m := renderAlert(a, kind, "https://x.example", detected)
		require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, m)))
		require.LessOrEqual(t, len(m.Text), maxTextChars*4)
	}
	r := markResolved(body{Text: "t", Blocks: slack.Blocks{BlockSet: renderAlert(a, renderFirst, "", detected).Blocks}}, a, detected)
	require.NoError(t, slacktest.ValidateBlocks(blocksOf(t, r)))
	require.Contains(t, blocksOf(t, r)[0]["text"].(map[string]any)["text"], "Resolved")
}

func TestFormatting(t *testing.T) {
	require.Equal(t, "+12.3%", pct(0.1234))
	require.Equal(t, "-35.0%", pct(-0.35))
	require.Equal(t, "0.0%", pct(-0.00001))
	require.Equal(t, "10,012", count(10012))
	require.Equal(t, "1,000,000", count(1000000))
	require.Equal(t, "999", count(999))
	require.Equal(t, "p &lt; 0.001", pValue("p", 0.0004))
	require.Equal(t, "p = 0.0012", pValue("p", 0.00123))
	require.Equal(t, "ab…", truncate("abcdef", 3))
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want failure
		wait time.Duration
	}{
		{&slack.RateLimitedError{RetryAfter: 7 * time.Second}, failRateLimited, 7 * time.Second},
		{fmt.Errorf("wrapped: %w", slack.StatusCodeError{Code: 503}), failRetry, 0},
		{slack.SlackErrorResponse{Err: "channel_not_found"}, failChannel, 0},
		{slack.SlackErrorResponse{Err: "not_in_channel"}, failChannel, 0},
		{slack.SlackErrorResponse{Err: "invalid_auth"}, failAuth, 0},
		{slack.SlackErrorResponse{Err: "invalid_blocks"}, failPermanent, 0},
		{slack.SlackErrorResponse{Err: "internal_error"}, failRetry, 0},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, failRetry, 0},
		{slack.StatusCodeError{Code: 404}, failAuth, 0},
	} {
		f, _, wait := classify(c.err)
		require.Equal(t, c.want, f, "%v", c.err)
		require.Equal(t, c.wait, wait, "%v", c.err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	o := Options{SlackToken: "xoxb-secret", SlackWebhookURL: "https://hooks.slack.com/services/SECRET"}
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o)} {
		require.NotContains(t, s, "SECRET")
		require.NotContains(t, s, "xoxb-secret")
	}
	b, err := json.Marshal(o)
	require.NoError(t, err)
	require.NotContains(t, string(b), "secret")
}
