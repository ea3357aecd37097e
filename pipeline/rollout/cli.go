package rollout

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/claim"
	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/store"
)

// CLI are the options of analyzer rollout status and analyzer rollout resume.
type CLI struct {
	ClickHouseDSN string
	ConfigPath    string
	// Flag is the flag key argument ("" with status: every plan).
	Flag string
	// By names the person resuming (default: the user and host).
	By     string
	Stdout io.Writer
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// RegisterFlags binds the options to flags; resume adds -by.
func (o *CLI) RegisterFlags(fs *flag.FlagSet, resume bool) {
	fs.StringVar(&o.ClickHouseDSN, "clickhouse-dsn", config.DefaultClickHouseDSN, "ClickHouse native-protocol DSN")
	fs.StringVar(&o.ConfigPath, "config", config.DefaultPath, "monitors file with the rollout plans")
	if resume {
		fs.StringVar(&o.By, "by", "", "who hands the rollout back, recorded with it (default: user@host)")
	}
}

func (o *CLI) defaults() {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.By == "" {
		who := "someone"
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
		host, _ := os.Hostname()
		o.By = who + "@" + host
	}
}

// open loads the monitors (checking the flag argument against them before anything
// connects) and connects to ClickHouse.
func (o *CLI) open(ctx context.Context) (*config.Monitors, store.Conn, error) {
	mons, err := config.Load(o.ConfigPath)
	if err != nil {
		return nil, nil, err
	}
	if o.Flag != "" {
		if _, err := plansFor(mons, o.Flag); err != nil {
			return nil, nil, err
		}
	}
	conn, err := store.Open(ctx, o.ClickHouseDSN, store.WithMaxWait(30*time.Second))
	if err != nil {
		return nil, nil, err
	}
	if err := store.Migrate(ctx, conn); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("migrate clickhouse: %w", err)
	}
	return mons, conn, nil
}

// RunStatus prints every plan's (or o.Flag's) stage, time in it, what it waits for,
// its guardrails and its last change.
func RunStatus(ctx context.Context, o CLI) error {
	o.defaults()
	mons, conn, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	sts, err := Statuses(ctx, conn, mons, o.Flag, o.Now())
	if err != nil {
		return err
	}
	if len(sts) == 0 {
		file := mons.File
		if file == "" {
			file = config.DefaultPath
		}
		_, err := fmt.Fprintf(o.Stdout, "no flag in %s has a rollout plan\n", file)
		return err
	}
	WriteStatus(o.Stdout, sts)
	return nil
}

// RunResume hands o.Flag's stopped, rolled-back or completed rollout back to flagwatch.
func RunResume(ctx context.Context, o CLI) error {
	o.defaults()
	mons, conn, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	claims, closeClaims, err := claim.Open(conn, slog.Default())
	if err != nil {
		return err
	}
	defer closeClaims()
	if err := Resume(ctx, conn, claims, mons, o.Flag, o.By, o.Now()); err != nil {
		return err
	}
	_, err = fmt.Fprintf(o.Stdout, "%s: handed back to flagwatch by %s; the next pass continues from the flag as it is now\n", o.Flag, o.By)
	return err
}
