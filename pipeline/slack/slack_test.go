package slack

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err    error
		want   Failure
		reason string
		wait   time.Duration
	}{
		{&slackapi.RateLimitedError{RetryAfter: 7 * time.Second}, RateLimited, "rate_limited", 7 * time.Second},
		{&slackapi.RateLimitedError{}, RateLimited, "rate_limited", time.Second},
		{fmt.Errorf("wrapped: %w", slackapi.StatusCodeError{Code: 503}), Retry, "http_503", 0},
		{slackapi.StatusCodeError{Code: 429}, RateLimited, "http_429", time.Second},
		{slackapi.SlackErrorResponse{Err: "channel_not_found"}, Channel, "channel_not_found", 0},
		{slackapi.SlackErrorResponse{Err: "not_in_channel"}, Channel, "not_in_channel", 0},
		{slackapi.SlackErrorResponse{Err: "invalid_auth"}, Auth, "invalid_auth", 0},
		{slackapi.SlackErrorResponse{Err: "invalid_blocks"}, Permanent, "invalid_blocks", 0},
		{slackapi.SlackErrorResponse{Err: "internal_error"}, Retry, "internal_error", 0},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, Retry, "network", 0},
		{slackapi.StatusCodeError{Code: 404}, Auth, "http_404", 0},
		{slackapi.StatusCodeError{Code: 410}, Channel, "http_410", 0},
		{ErrUnsupported, Permanent, "unsupported", 0},
	} {
		f, reason, wait := Classify(c.err)
		require.Equal(t, c.want, f, "%v", c.err)
		require.Equal(t, c.reason, reason, "%v", c.err)
		require.Equal(t, c.wait, wait, "%v", c.err)
	}
}

// What the dry run writes reads back whole, blocks included.
func TestRecordsRoundTrip(t *testing.T) {
	m := Message{Channel: "#growth", ThreadTS: "1.2", Text: "t", Broadcast: true,
		Blocks: []slackapi.Block{slackapi.NewSectionBlock(slackapi.NewTextBlockObject(slackapi.MarkdownType, "*hi*", false, false), nil, nil),
			slackapi.NewDividerBlock()}}
	var buf bytes.Buffer
	require.NoError(t, WriteRecord(&buf, Record{Method: "chat.postMessage", TS: "1.3", Message: m}))
	require.NoError(t, WriteRecord(&buf, Record{Method: "files.upload", Message: Message{Channel: "C1"}, File: &RecordFile{Name: "a.png", Bytes: 3}}))
	recs, err := ReadRecords(&buf)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, "1.3", recs[0].TS)
	require.Equal(t, m.MarshalBody(), recs[0].MarshalBody())
	require.True(t, recs[0].Broadcast)
	require.Equal(t, "a.png", recs[1].File.Name)
	_, err = ReadRecords(bytes.NewBufferString("{not json\n"))
	require.ErrorContains(t, err, "line 1")
}
