package web

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// ReportOptions configure `analyzer report`.
type ReportOptions struct {
	ClickHouseDSN string
	ConfigPath    string
	Out           string
	Logger        *slog.Logger
}

// RegisterFlags binds the options to flags (also read from FLAGWATCH_* variables).
func (o *ReportOptions) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", config.DefaultClickHouseDSN, "ClickHouse native-protocol DSN")
	fs.StringVar(&o.ConfigPath, "config", config.DefaultPath, "monitors file; if the default is absent, every flag gets the core metrics")
	fs.StringVar(&o.Out, "out", "", "directory to write the pages to (created if missing; required)")
}

// ErrNoOut is the report's missing -out.
var ErrNoOut = errors.New("-out is required: the directory to write the pages to")

// RunReport writes the pages of every flag from the results in ClickHouse to o.Out as
// static HTML (WriteReport).
func RunReport(ctx context.Context, o ReportOptions) error {
	if o.Out == "" {
		return ErrNoOut
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	mons, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	conn, err := store.Open(ctx, o.ClickHouseDSN, store.WithLogger(o.Logger), store.WithMaxWait(30*time.Second))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := WriteReport(ctx, Options{Conn: conn, Monitors: mons, Logger: o.Logger}, o.Out); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
