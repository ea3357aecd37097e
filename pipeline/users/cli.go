package users

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/cli"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// CLIOptions are the flags of `analyzer users`.
type CLIOptions struct {
	ClickHouseDSN string
	ConfigPath    string
	// Flag is the flag key, the command's argument (Args).
	Flag      string
	Variant   string
	Segments  segmentFlags
	Metric    string
	Converted optionalBool
	Sort      string
	// Limit is how many users to print; 0 prints every user of the cell, a page of
	// MaxLimit at a time.
	Limit  int
	Cursor string
	Format string // jsonl or csv
	// ConnectWait bounds the wait for ClickHouse.
	ConnectWait time.Duration
	Stdout      io.Writer
	Stderr      io.Writer
	Logger      *slog.Logger
}

// Args takes the command's one positional argument, the flag key.
func (o *CLIOptions) Args(args []string) error {
	if len(args) != 1 {
		return cli.Usagef("want one flag key (analyzer users <flag> [flags]), got %d arguments", len(args))
	}
	o.Flag = args[0]
	return nil
}

// RegisterFlags binds the options to flags (also read from FLAGWATCH_* variables).
func (o *CLIOptions) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", config.DefaultClickHouseDSN, "ClickHouse native-protocol DSN")
	fs.StringVar(&o.ConfigPath, "config", config.DefaultPath, "monitors file; the flag (or the defaults) must have expose_users: true")
	fs.StringVar(&o.Variant, "variant", "", "only users assigned this `variant` (default: every variant; $multiple users are never listed)")
	fs.Var(&o.Segments, "segment", "only users whose first exposure has `property:value` (e.g. $geoip_country_code:GB); repeat for several")
	fs.StringVar(&o.Metric, "metric", "", "the `metric` that converted and value refer to (default: the flag's primary metric)")
	fs.Var(&o.Converted, "converted", "only users who reached the metric in its window (-converted) or did not (-converted=false)")
	fs.StringVar(&o.Sort, "sort", string(NewestFirst), "order: -first_exposure, first_exposure, -value or value")
	fs.IntVar(&o.Limit, "limit", DefaultLimit, "print at most this many users; 0: every user of the cell")
	fs.StringVar(&o.Cursor, "cursor", "", "continue after the users an earlier run printed (the cursor it gave)")
	fs.StringVar(&o.Format, "format", "jsonl", "output: jsonl (one JSON object per user) or csv")
	fs.DurationVar(&o.ConnectWait, "connect-wait", 2*time.Minute, "give up if ClickHouse does not answer within this long")
}

// RunCLI prints the users of the cell the options describe. A bad option, and a flag
// whose users are not exposed, are usage errors (exit 2) with the reason.
func RunCLI(ctx context.Context, o CLIOptions) error {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Flag == "" {
		return cli.Usagef("a flag key is required: analyzer users <flag> [flags]")
	}
	if o.Format != "jsonl" && o.Format != "csv" {
		return cli.Usagef("-format %q: want jsonl or csv", o.Format)
	}
	if o.Limit < 0 {
		return cli.Usagef("-limit %d: want 0 (every user) or more", o.Limit)
	}
	mons, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	q := Query{Flag: o.Flag, Variant: o.Variant, Metric: o.Metric, Converted: o.Converted.v, Sort: Sort(o.Sort), Cursor: o.Cursor}
	for _, s := range o.Segments {
		prop, val, ok := strings.Cut(s, ":")
		if !ok || prop == "" {
			return cli.Usagef("-segment %q: want property:value, e.g. $geoip_country_code:GB", s)
		}
		q.Segments = append(q.Segments, Segment{Property: prop, Value: val})
	}
	// Checked before connecting, so a mistake is reported at once.
	if _, err := resolve(mons, withLimit(q, 1), ""); err != nil {
		return usage(err)
	}
	conn, err := store.Open(ctx, o.ClickHouseDSN, store.WithLogger(o.Logger), store.WithMaxWait(o.ConnectWait))
	if err != nil {
		return err
	}
	defer conn.Close()
	l := &Lister{Conn: conn, Monitors: mons}
	printed := 0
	for first := true; ; first = false {
		limit := MaxLimit
		if o.Limit > 0 {
			limit = min(MaxLimit, o.Limit-printed)
		}
		p, err := l.List(ctx, withLimit(q, limit))
		if err != nil {
			return usage(err)
		}
		if err := write(o.Stdout, o.Format, p, first); err != nil {
			return fmt.Errorf("write users: %w", err)
		}
		printed += len(p.Users)
		if p.NextCursor == "" {
			return nil
		}
		if o.Limit > 0 && printed >= o.Limit {
			fmt.Fprintf(o.Stderr, "analyzer users: more users after these; continue with -cursor %s\n", p.NextCursor)
			return nil
		}
		q.Cursor = p.NextCursor
	}
}

func withLimit(q Query, n int) Query { q.Limit = n; return q }

func usage(err error) error {
	if IsBadQuery(err) || errors.Is(err, ErrOff) {
		return cli.Usagef("%v", err)
	}
	return err
}

func write(w io.Writer, format string, p *Page, header bool) error {
	if format == "csv" {
		return writeCSV(w, p, header)
	}
	for _, u := range p.Users {
		b, err := json.Marshal(u)
		if err != nil {
			return err
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// segmentFlags collects repeated -segment flags.
type segmentFlags []string

func (s *segmentFlags) String() string { return strings.Join(*s, " ") }
func (s *segmentFlags) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// optionalBool is a boolean flag that may be absent: -converted, -converted=false, or
// neither.
type optionalBool struct{ v *bool }

func (b *optionalBool) IsBoolFlag() bool { return true }
func (b *optionalBool) String() string {
	if b == nil || b.v == nil {
		return ""
	}
	return strconv.FormatBool(*b.v)
}
func (b *optionalBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	b.v = &v
	return nil
}
