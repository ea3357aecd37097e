package web

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/segmentio/encoding/json"
)

// WriteReport writes the pages as static files under dir: index.html (the flags list),
// flags.json, and per flag flags/<key>.html with its .json and .csv beside it. Every
// page carries its style and charts inline and links relatively, so the directory can
// be opened from disk, zipped or served by anything. Files are written whole (to a
// temporary name, then renamed), so a reader never sees half a page.
func WriteReport(ctx context.Context, o Options, dir string) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "flags"), 0o755); err != nil {
		return fmt.Errorf("create report dir: %w", err)
	}
	lp, err := List(ctx, o)
	if err != nil {
		return err
	}
	if err := writePage(filepath.Join(dir, "index.html"), "list.html",
		listData{ListPage: *lp, Links: links{static: true}, Static: true}); err != nil {
		return err
	}
	if err := writeJSONFile(filepath.Join(dir, "flags.json"), lp); err != nil {
		return err
	}
	for _, f := range lp.Flags {
		p, err := Flag(ctx, o, f.Key)
		if err != nil {
			return fmt.Errorf("report %s: %w", f.Key, err)
		}
		base := filepath.Join(dir, "flags", fileName(f.Key))
		if err := writePage(base+".html", "flag.html",
			flagData{FlagPage: p, Links: links{static: true, prefix: "../"}, Static: true, Now: o.Now()}); err != nil {
			return err
		}
		if err := writeJSONFile(base+".json", p); err != nil {
			return err
		}
		d, err := o.Reader.Flag(ctx, f.Key)
		if err != nil {
			return fmt.Errorf("report %s: %w", f.Key, err)
		}
		var b bytes.Buffer
		if err := WriteCSV(&b, d.Latest); err != nil {
			return fmt.Errorf("report %s csv: %w", f.Key, err)
		}
		if err := writeFile(base+".csv", b.Bytes()); err != nil {
			return err
		}
	}
	o.Logger.Info("report written", "dir", dir, "flags", len(lp.Flags))
	return nil
}

func writePage(path, tmpl string, data any) error {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, tmpl, data); err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	return writeFile(path, b.Bytes())
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeFile(path, append(b, '\n'))
}

func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
