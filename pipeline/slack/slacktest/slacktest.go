// Package slacktest is a fake Slack for tests: an httptest server that speaks the Web API
// methods and the incoming-webhook endpoint the notifier uses, and checks each request the
// way Slack does (token, required fields, Block Kit limits) so a payload Slack would reject
// fails the test instead of passing silently. It keeps the channels' messages and threads,
// records every call, and can be scripted to answer 429s, 5xx or Slack errors.
package slacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Token is the bot token the server accepts unless New is given another.
const Token = "xoxb-test-token"

// WebhookPath is the incoming-webhook path; the webhook posts to the channel named by
// WebhookChannel.
const (
	WebhookPath    = "/services/T000/B000/XXXXXXXX"
	WebhookChannel = "#growth"
)

// Call is one request the server received.
type Call struct {
	Method string // "chat.postMessage", "webhook", "upload", …
	At     time.Time
	Token  string
	Form   url.Values
	// Body is the JSON body of a webhook call.
	Body map[string]any
	// Blocks are the decoded blocks of the call, if any.
	Blocks []map[string]any
	// Status and Error are what the server answered ("" when ok).
	Status int
	Error  string
}

// Message is a message as Slack stores it.
type Message struct {
	Channel   string
	TS        string
	ThreadTS  string
	Text      string
	Blocks    []map[string]any
	Broadcast bool
	Metadata  map[string]any
	Updated   int
}

// File is an uploaded file.
type File struct {
	ID, Name, Title, Channel, ThreadTS string
	// Length is the size announced to files.getUploadURLExternal.
	Length    int
	Data      []byte
	Completed bool
}

// Response is a scripted answer; Status 0 means 200.
type Response struct {
	Status int
	Header http.Header
	// Error, when set, answers {"ok": false, "error": Error}; otherwise Body is written.
	Error string
	Body  string
}

// Server is the fake Slack.
type Server struct {
	t      testing.TB
	srv    *httptest.Server
	token  string
	mu     sync.Mutex
	chans  map[string]string // name ("#growth", "growth") → ID, and ID → ID
	calls  []Call
	msgs   []*Message
	files  map[string]*File
	next   int
	script map[string][]Response
}

// New starts a server with the channels given by name ("#growth"); each gets an ID. It
// is closed when the test ends.
func New(t testing.TB, channels ...string) *Server {
	s := &Server{t: t, token: Token, chans: map[string]string{}, files: map[string]*File{}, script: map[string][]Response{}}
	for i, c := range channels {
		s.AddChannel(c, fmt.Sprintf("C%07d", i+1))
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// AddChannel makes a channel exist.
func (s *Server) AddChannel(name, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chans[name] = id
	s.chans[strings.TrimPrefix(name, "#")] = id
	s.chans[id] = id
}

// ChannelID returns the ID of a channel by name.
func (s *Server) ChannelID(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chans[name]
}

// APIURL is the value for slack.OptionAPIURL (ends in "/api/").
func (s *Server) APIURL() string { return s.srv.URL + "/api/" }

// WebhookURL is the incoming-webhook URL.
func (s *Server) WebhookURL() string { return s.srv.URL + WebhookPath }

// Script queues answers for method: the next len(rs) calls get them, in order, instead of
// the normal handling.
func (s *Server) Script(method string, rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script[method] = append(s.script[method], rs...)
}

// Reset drops the scripted answers still queued for method.
func (s *Server) Reset(method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.script, method)
}

// Calls returns the calls of method ("" for all) so far.
func (s *Server) Calls(method string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Messages returns the stored messages (top-level and replies) in posting order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = *m
	}
	return out
}

// Files returns the uploaded files.
func (s *Server) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []File
	for _, f := range s.files {
		out = append(out, *f)
	}
	return out
}

type reply struct {
	status int
	header http.Header
	body   any
}

func okBody(kv ...any) map[string]any {
	m := map[string]any{"ok": true}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func slackErr(code string) reply { return reply{body: map[string]any{"ok": false, "error": code}} }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	method := ""
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/"):
		method = strings.TrimPrefix(r.URL.Path, "/api/")
	case r.URL.Path == WebhookPath:
		method = "webhook"
	case strings.HasPrefix(r.URL.Path, "/upload/"):
		method = "upload"
	default:
		http.NotFound(w, r)
		return
	}
	call := Call{Method: method, At: time.Now()}
	var rep reply
	s.mu.Lock()
	if q := s.script[method]; len(q) > 0 {
		s.script[method] = q[1:]
		sc := q[0]
		_, _ = io.Copy(io.Discard, r.Body)
		rep = reply{status: sc.Status, header: sc.Header, body: sc.Body}
		if sc.Error != "" {
			rep.body = map[string]any{"ok": false, "error": sc.Error}
		}
	} else {
		rep = s.handle(r, method, &call)
	}
	if rep.status == 0 {
		rep.status = http.StatusOK
	}
	call.Status = rep.status
	if m, ok := rep.body.(map[string]any); ok && m["ok"] == false {
		call.Error, _ = m["error"].(string)
	} else if rep.status != http.StatusOK {
		call.Error = fmt.Sprint(rep.body)
	}
	s.calls = append(s.calls, call)
	s.mu.Unlock()

	for k, vs := range rep.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	switch b := rep.body.(type) {
	case string:
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, b)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rep.status)
		_ = json.NewEncoder(w).Encode(b)
	}
}

// handle runs with s.mu held.
func (s *Server) handle(r *http.Request, method string, call *Call) reply {
	if method == "webhook" {
		return s.webhook(r, call)
	}
	if r.Method != http.MethodPost {
		return reply{status: http.StatusMethodNotAllowed, body: "method not allowed"}
	}
	call.Token = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if method == "upload" {
		return s.upload(r, call)
	}
	if err := r.ParseForm(); err != nil {
		return slackErr("invalid_form_data")
	}
	call.Form = r.PostForm
	if call.Token == "" {
		call.Token = r.PostForm.Get("token")
	}
	if call.Token == "" {
		return slackErr("not_authed")
	}
	if call.Token != s.token {
		return slackErr("invalid_auth")
	}
	switch method {
	case "auth.test":
		return reply{body: okBody("url", "https://flagwatch-test.slack.com/", "team", "flagwatch", "user", "flagwatch", "team_id", "T000", "user_id", "U000", "bot_id", "B000")}
	case "chat.postMessage":
		return s.postMessage(call)
	case "chat.update":
		return s.update(call)
	case "files.getUploadURLExternal":
		return s.getUploadURL(call)
	case "files.completeUploadExternal":
		return s.completeUpload(call)
	default:
		return slackErr("unknown_method")
	}
}

func (s *Server) channel(name string) (string, bool) {
	id, ok := s.chans[name]
	return id, ok
}

func (s *Server) newTS() string {
	s.next++
	return fmt.Sprintf("1700000000.%06d", s.next)
}

func (s *Server) find(channel, ts string) *Message {
	for _, m := range s.msgs {
		if m.Channel == channel && m.TS == ts {
			return m
		}
	}
	return nil
}

func (s *Server) decodeBlocks(raw string, call *Call) (string, bool) {
	if raw == "" {
		return "", true
	}
	var blocks []map[string]any
	if err := json.Unmarshal([]byte(raw), &blocks); err != nil {
		return "invalid_blocks_format", false
	}
	call.Blocks = blocks
	if e := ValidateBlocks(blocks); e != nil {
		s.t.Errorf("slacktest: %s: invalid blocks: %v", call.Method, e)
		return "invalid_blocks", false
	}
	return "", true
}

func (s *Server) postMessage(call *Call) reply {
	f := call.Form
	id, ok := s.channel(f.Get("channel"))
	if f.Get("channel") == "" {
		return slackErr("channel_not_found")
	}
	if !ok {
		return slackErr("channel_not_found")
	}
	if code, ok := s.decodeBlocks(f.Get("blocks"), call); !ok {
		return slackErr(code)
	}
	text := f.Get("text")
	if text == "" && len(call.Blocks) == 0 {
		return slackErr("no_text")
	}
	if len(call.Blocks) > 0 && text == "" {
		s.t.Errorf("slacktest: chat.postMessage with blocks but no fallback text")
	}
	if len(text) > 40000 {
		return slackErr("msg_too_long")
	}
	m := &Message{Channel: id, TS: s.newTS(), ThreadTS: f.Get("thread_ts"), Text: text, Blocks: call.Blocks,
		Broadcast: f.Get("reply_broadcast") == "true"}
	if m.ThreadTS != "" {
		parent := s.find(id, m.ThreadTS)
		if parent == nil || parent.ThreadTS != "" {
			return slackErr("thread_not_found")
		}
	}
	if md := f.Get("metadata"); md != "" {
		if err := json.Unmarshal([]byte(md), &m.Metadata); err != nil || m.Metadata["event_type"] == nil {
			return slackErr("invalid_metadata_format")
		}
	}
	s.msgs = append(s.msgs, m)
	return reply{body: okBody("channel", id, "ts", m.TS, "message", map[string]any{"text": text, "ts": m.TS})}
}

func (s *Server) update(call *Call) reply {
	f := call.Form
	ch := f.Get("channel")
	if ch == "" || s.chans[ch] != ch { // chat.update needs the channel ID, not a name
		return slackErr("channel_not_found")
	}
	m := s.find(ch, f.Get("ts"))
	if m == nil {
		return slackErr("message_not_found")
	}
	if code, ok := s.decodeBlocks(f.Get("blocks"), call); !ok {
		return slackErr(code)
	}
	if f.Get("text") == "" && len(call.Blocks) == 0 {
		return slackErr("no_text")
	}
	m.Text, m.Blocks = f.Get("text"), call.Blocks
	m.Updated++
	return reply{body: okBody("channel", ch, "ts", m.TS, "text", m.Text)}
}

func (s *Server) getUploadURL(call *Call) reply {
	f := call.Form
	name := f.Get("filename")
	n, err := strconv.Atoi(f.Get("length"))
	if name == "" || err != nil || n <= 0 {
		return slackErr("invalid_arguments")
	}
	s.next++
	id := fmt.Sprintf("F%07d", s.next)
	s.files[id] = &File{ID: id, Name: name, Length: n}
	return reply{body: okBody("upload_url", s.srv.URL+"/upload/"+id, "file_id", id)}
}

func (s *Server) upload(r *http.Request, call *Call) reply {
	id := strings.TrimPrefix(r.URL.Path, "/upload/")
	f := s.files[id]
	if f == nil {
		return reply{status: http.StatusNotFound, body: "no such upload"}
	}
	if call.Token != s.token {
		return reply{status: http.StatusUnauthorized, body: "bad token"}
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return reply{status: http.StatusBadRequest, body: "want multipart/form-data"}
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return reply{status: http.StatusBadRequest, body: err.Error()}
		}
		if p.FormName() == "file" {
			var b bytes.Buffer
			_, _ = io.Copy(&b, p)
			f.Data = b.Bytes()
		}
	}
	if len(f.Data) != f.Length {
		return reply{status: http.StatusBadRequest, body: fmt.Sprintf("uploaded %d bytes, announced %d", len(f.Data), f.Length)}
	}
	return reply{body: "OK - " + strconv.Itoa(len(f.Data))}
}

func (s *Server) completeUpload(call *Call) reply {
	f := call.Form
	var files []struct{ ID, Title string }
	if err := json.Unmarshal([]byte(f.Get("files")), &files); err != nil || len(files) == 0 {
		return slackErr("invalid_arguments")
	}
	ch := f.Get("channel_id")
	if ch != "" && s.chans[ch] != ch {
		return slackErr("invalid_channel")
	}
	if ts := f.Get("thread_ts"); ts != "" && s.find(ch, ts) == nil {
		return slackErr("invalid_thread_ts")
	}
	var out []map[string]any
	for _, x := range files {
		file := s.files[x.ID]
		if file == nil || len(file.Data) == 0 {
			return slackErr("file_not_found")
		}
		file.Title, file.Channel, file.ThreadTS, file.Completed = x.Title, ch, f.Get("thread_ts"), true
		out = append(out, map[string]any{"id": x.ID, "title": x.Title})
	}
	return reply{body: okBody("files", out)}
}

func (s *Server) webhook(r *http.Request, call *Call) reply {
	if r.Method != http.MethodPost {
		return reply{status: http.StatusMethodNotAllowed, body: "invalid_method"}
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return reply{status: http.StatusBadRequest, body: "invalid_payload"}
	}
	if err := json.NewDecoder(r.Body).Decode(&call.Body); err != nil {
		return reply{status: http.StatusBadRequest, body: "invalid_payload"}
	}
	text, _ := call.Body["text"].(string)
	if raw, ok := call.Body["blocks"]; ok {
		b, _ := json.Marshal(raw)
		if code, ok := s.decodeBlocks(string(b), call); !ok {
			return reply{status: http.StatusBadRequest, body: code}
		}
	}
	if text == "" && len(call.Blocks) == 0 {
		return reply{status: http.StatusBadRequest, body: "no_text"}
	}
	id := s.chans[WebhookChannel]
	s.msgs = append(s.msgs, &Message{Channel: id, TS: s.newTS(), Text: text, Blocks: call.Blocks})
	return reply{body: "ok"}
}

// ValidateBlocks checks the Block Kit rules Slack enforces for the block types the
// notifier uses; it returns the first violation.
func ValidateBlocks(blocks []map[string]any) error {
	if len(blocks) == 0 {
		return fmt.Errorf("no blocks")
	}
	if len(blocks) > 50 {
		return fmt.Errorf("%d blocks, at most 50", len(blocks))
	}
	for i, b := range blocks {
		typ, _ := b["type"].(string)
		switch typ {
		case "header":
			if err := textObject(b["text"], "plain_text", 150); err != nil {
				return fmt.Errorf("block %d header: %w", i, err)
			}
		case "section":
			_, hasText := b["text"]
			fields, _ := b["fields"].([]any)
			if !hasText && len(fields) == 0 {
				return fmt.Errorf("block %d section: needs text or fields", i)
			}
			if hasText {
				if err := textObject(b["text"], "", 3000); err != nil {
					return fmt.Errorf("block %d section: %w", i, err)
				}
			}
			if len(fields) > 10 {
				return fmt.Errorf("block %d section: %d fields, at most 10", i, len(fields))
			}
			for j, f := range fields {
				if err := textObject(f, "", 2000); err != nil {
					return fmt.Errorf("block %d field %d: %w", i, j, err)
				}
			}
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) == 0 || len(els) > 10 {
				return fmt.Errorf("block %d context: %d elements, want 1..10", i, len(els))
			}
			for j, e := range els {
				if err := textObject(e, "", 3000); err != nil {
					return fmt.Errorf("block %d context element %d: %w", i, j, err)
				}
			}
		case "divider":
		case "image":
			if u, _ := b["image_url"].(string); u == "" {
				return fmt.Errorf("block %d image: no image_url", i)
			}
			if a, _ := b["alt_text"].(string); a == "" {
				return fmt.Errorf("block %d image: no alt_text", i)
			}
		default:
			return fmt.Errorf("block %d: unexpected type %q", i, typ)
		}
		if id, ok := b["block_id"].(string); ok && len(id) > 255 {
			return fmt.Errorf("block %d: block_id longer than 255", i)
		}
	}
	return nil
}

func textObject(v any, wantType string, max int) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("not a text object")
	}
	typ, _ := m["type"].(string)
	if typ != "plain_text" && typ != "mrkdwn" {
		return fmt.Errorf("text type %q", typ)
	}
	if wantType != "" && typ != wantType {
		return fmt.Errorf("text type %q, want %q", typ, wantType)
	}
	if _, ok := m["emoji"]; ok && typ == "mrkdwn" {
		return fmt.Errorf("emoji is only valid on plain_text")
	}
	text, _ := m["text"].(string)
	if text == "" {
		return fmt.Errorf("empty text")
	}
	if n := len([]rune(text)); n > max {
		return fmt.Errorf("text is %d characters, at most %d", n, max)
	}
	return nil
}
