package notify

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/render"
	"github.com/flagwatch/flagwatch/pipeline/slack"
)

// dryRun prints each call instead of making it: the message as a person would read it
// to text, and the Block Kit payload as one JSON line to json (when set).
type dryRun struct {
	mu    sync.Mutex
	text  io.Writer
	json  io.Writer
	files string // directory for uploads ("": not kept)
	seq   int
	now   func() time.Time
}

func (d *dryRun) emit(r slack.Record) error {
	var b strings.Builder
	where := r.Channel
	if r.ThreadTS != "" {
		where += " · reply in thread " + r.ThreadTS
	}
	if r.Method == "chat.update" {
		where += " · rewrites " + r.TS
	}
	b.WriteString("── " + where + " ──\n")
	if r.File != nil {
		b.WriteString("📎 " + r.File.Name + " (" + strconv.Itoa(r.File.Bytes) + " bytes)\n")
		if d.files != "" {
			b.WriteString("   written to " + filepath.Join(d.files, r.File.Name) + "\n")
		}
	} else {
		for _, l := range render.MessageLines(r.Message) {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("\n")
	if _, err := io.WriteString(d.text, b.String()); err != nil {
		return fmt.Errorf("dry run: %w", err)
	}
	if d.json != nil {
		return slack.WriteRecord(d.json, r)
	}
	return nil
}

func (d *dryRun) Post(_ context.Context, m slack.Message) (string, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	ts := strconv.FormatInt(d.now().Unix(), 10) + "." + fmt.Sprintf("%06d", d.seq)
	return m.Channel, ts, d.emit(slack.Record{Method: "chat.postMessage", TS: ts, Message: m})
}

func (d *dryRun) Update(_ context.Context, channel, ts string, m slack.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m.Channel = channel
	return d.emit(slack.Record{Method: "chat.update", TS: ts, Message: m})
}

func (d *dryRun) Upload(_ context.Context, f slack.File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.files != "" {
		if err := os.WriteFile(filepath.Join(d.files, filepath.Base(f.Name)), f.Data, 0o644); err != nil {
			return fmt.Errorf("dry run: keep %s: %w", f.Name, err)
		}
	}
	return d.emit(slack.Record{Method: "files.upload", Message: slack.Message{Channel: f.Channel, ThreadTS: f.ThreadTS},
		File: &slack.RecordFile{Name: f.Name, Title: f.Title, Bytes: len(f.Data)}})
}
