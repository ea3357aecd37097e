package slack

import (
	"bufio"
	"fmt"
	"io"

	"github.com/segmentio/encoding/json"
	slackapi "github.com/slack-go/slack"
)

// Record is one Slack call as the notifier's dry run writes it (one JSON object per
// line): the method, the ts the call gave the message, the message, and for an upload
// the file's name, title and size.
type Record struct {
	Method string `json:"method"` // chat.postMessage, chat.update, files.upload
	TS     string `json:"ts,omitempty"`
	Message
	File *RecordFile `json:"file,omitempty"`
}

// RecordFile describes an uploaded file in a Record.
type RecordFile struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	Bytes int    `json:"bytes"`
}

// WriteRecord writes r as one JSON line.
func WriteRecord(w io.Writer, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode %s record: %w", r.Method, err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadRecords reads the JSON lines WriteRecord wrote.
func ReadRecords(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		// Blocks are an interface type: decode them through slack-go's Blocks.
		var rec struct {
			Record
			Blocks slackapi.Blocks `json:"blocks"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return out, fmt.Errorf("line %d: %w", n, err)
		}
		rec.Record.Blocks = rec.Blocks.BlockSet
		out = append(out, rec.Record)
	}
	return out, sc.Err()
}
