// Package cli is the command-line plumbing every flagwatch command shares: one help
// layout, the same logging flags, flags read from the environment, signals, and one
// meaning for exit codes.
//
// The decision that shapes it: a command is data — a Command with a name, a one-line
// summary, its flags and a Run function — and this package alone parses arguments,
// prints help and chooses the exit code, so the binaries cannot drift apart and a main
// only says what its command is. Exit codes:
//
//	0  done (also after SIGINT or SIGTERM, when Run then returns nil)
//	1  a failure at run time
//	2  a usage or configuration error: unknown flag or command, stray argument, missing
//	   command, bad value in a flag or its environment variable, bad ClickHouse DSN,
//	   bad monitors file — reported in plain lines before anything connects where
//	   possible
//
// Every command with a -clickhouse-dsn flag also gets -clickhouse-password (from
// FLAGWATCH_CLICKHOUSE_PASSWORD or the file named by FLAGWATCH_CLICKHOUSE_PASSWORD_FILE),
// and its DSN is checked and given the password before Run, so no service can forget
// either.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Command is a program or one of its subcommands.
type Command struct {
	// Name is the program's name, or the word that selects a subcommand.
	Name string
	// Summary says in one line what the command is; it starts the help text and
	// follows the name in the parent's list of commands.
	Summary string
	// About is more text for the help, in paragraphs; optional.
	About string
	// Usage replaces the synopsis "<name> [flags]" (e.g. to show stdin).
	Usage string
	// Flags registers the command's flags; every flag is also read from its
	// environment variable (config.EnvName, or a secret's own).
	Flags func(fs *flag.FlagSet)
	// Run does the work. ctx ends on SIGINT or SIGTERM; log is the logger chosen by
	// -log-level and -log-format, also installed as slog's default.
	Run func(ctx context.Context, log *slog.Logger) error
	// Args, when set, receives the command's positional arguments (flags may come
	// before or after them) before Run, and returns a usage error (Usagef) when they are
	// wrong; without it any argument is a usage error. Usage should show them.
	Args func(args []string) error
	// Commands are the subcommands; a command with subcommands has no Flags or Run,
	// and without one it prints its help and exits 2.
	Commands []*Command
	// LogLevel is the default of -log-level (the zero value is info).
	LogLevel slog.Level
}

// Main runs the program described by root with the process's arguments, environment and
// signals, and exits with its code.
func Main(root *Command) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// After the first signal, a second one kills the process the default way.
	go func() { <-ctx.Done(); stop() }()
	code := Execute(ctx, root, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

// Execute runs root with args and returns the exit code. Help asked for goes to stdout;
// everything else (errors, logs, help after a usage error) to stderr.
func Execute(ctx context.Context, root *Command, args []string, stdout, stderr io.Writer, lookup config.Lookup) int {
	cmd, path := root, root.Name
	for len(cmd.Commands) > 0 {
		if len(args) == 0 {
			writeHelp(stderr, cmd, path, nil)
			return ExitUsage
		}
		word := args[0]
		switch {
		case isHelp(word):
			writeHelp(stdout, cmd, path, nil)
			return ExitOK
		case word == "help":
			if len(args) == 1 {
				writeHelp(stdout, cmd, path, nil)
				return ExitOK
			}
			args = []string{args[1], "--help"} // "analyzer help once" is "analyzer once --help"
			continue
		case strings.HasPrefix(word, "-"):
			fmt.Fprintf(stderr, "%s: a command must come before %s: %s; see %s --help\n", path, word, names(cmd), path)
			return ExitUsage
		}
		i := slices.IndexFunc(cmd.Commands, func(c *Command) bool { return c.Name == word })
		if i < 0 {
			fmt.Fprintf(stderr, "%s: unknown command %q: want %s; see %s --help\n", path, word, names(cmd), path)
			return ExitUsage
		}
		cmd, path, args = cmd.Commands[i], path+" "+word, args[1:]
	}
	return run(ctx, cmd, path, args, stdout, stderr, lookup)
}

func run(ctx context.Context, cmd *Command, path string, args []string, stdout, stderr io.Writer, lookup config.Lookup) int {
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed below, in one line
	fs.Usage = func() {}
	if cmd.Flags != nil {
		cmd.Flags(fs)
	}
	// The connection flags read the same in every command, whoever registered them.
	for name, usage := range sharedUsage {
		if f := fs.Lookup(name); f != nil {
			f.Usage = usage
		}
	}
	if fs.Lookup(dsnFlag) != nil && fs.Lookup(passwordFlag) == nil {
		config.ClickHousePassword(fs)
	}
	if fs.Lookup(dsnFlag) != nil && fs.Lookup(clusterFlag) == nil {
		config.ClickHouseCluster(fs)
		config.ZooKeeper(fs)
	}
	logFlags := registerLogFlags(fs, cmd.LogLevel)

	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s; see %s --help\n", path, fmt.Sprintf(format, a...), path)
		return ExitUsage
	}
	parseErr := func(err error) int {
		if errors.Is(err, flag.ErrHelp) {
			writeHelp(stdout, cmd, path, fs)
			return ExitOK
		}
		return usageErr("%v%s", err, didYouMean(fs, err))
	}
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	var positional []string
	for cmd.Args != nil && fs.NArg() > 0 {
		// flag stops at the first argument that is not a flag: take it, parse the rest.
		positional = append(positional, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return parseErr(err)
		}
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	if cmd.Args != nil {
		if err := cmd.Args(positional); err != nil {
			var usage *usageError
			if errors.As(err, &usage) {
				return usageErr("%s", usage.msg)
			}
			return usageErr("%v", err)
		}
	}
	if err := config.Env(fs, lookup); err != nil {
		printLines(stderr, path, err)
		return ExitUsage
	}
	if err := resolveDSN(fs); err != nil {
		printLines(stderr, path, err)
		return ExitUsage
	}

	log := logFlags.logger(stderr)
	slog.SetDefault(log)
	return exitCode(cmd.Run(ctx, log), path, stderr, log)
}

const (
	dsnFlag       = "clickhouse-dsn"
	passwordFlag  = "clickhouse-password"
	clusterFlag   = "clickhouse-cluster"
	zookeeperFlag = "zookeeper"
)

var sharedUsage = map[string]string{
	dsnFlag:         config.ClickHouseDSNUsage,
	"kafka-brokers": config.KafkaBrokersUsage,
}

// resolveDSN checks -clickhouse-dsn and puts -clickhouse-password, and a cluster with
// its ZooKeeper, into it: every service gets them without a field of its own.
func resolveDSN(fs *flag.FlagSet) error {
	f := fs.Lookup(dsnFlag)
	if f == nil {
		return nil
	}
	var pw config.Secret
	if p, ok := fs.Lookup(passwordFlag).Value.(*config.Secret); ok {
		pw = *p
	}
	var cluster string
	var zk []string
	if c := fs.Lookup(clusterFlag); c != nil {
		cluster = c.Value.String()
	}
	if z := fs.Lookup(zookeeperFlag); z != nil {
		if l, ok := z.Value.(*config.List); ok {
			zk = *l
		}
	}
	dsn, err := config.ResolveClickHouseDSNCluster(f.Value.String(), pw, cluster, zk)
	if err != nil {
		return err
	}
	return f.Value.Set(dsn)
}

// exitCode reports err the way its kind asks for and returns the code.
func exitCode(err error, path string, stderr io.Writer, log *slog.Logger) int {
	var exit *exitError
	var usage *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &exit):
		return exit.code
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: %s; see %s --help\n", path, usage.msg, path)
		return ExitUsage
	case config.IsInvalid(err):
		printLines(stderr, path, err)
		return ExitUsage
	default:
		log.Error(path+" failed", "err", err)
		return ExitFailure
	}
}

// didYouMean suggests the defined flag nearest to an undefined one.
func didYouMean(fs *flag.FlagSet, err error) string {
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return ""
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if best, ok := config.Closest(strings.TrimPrefix(name, "-"), names); ok {
		return " (did you mean -" + best + "?)"
	}
	return ""
}

// printLines writes err one line per line, each prefixed with the command, so that the
// monitors file's problems read as a compiler's do.
func printLines(w io.Writer, path string, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", path, line)
	}
}

type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Exit makes Run's command exit with code, printing nothing more: for a Run that has
// already said what went wrong (analyzer evaluate's line on stderr).
func Exit(code int) error {
	if code == ExitOK {
		return nil
	}
	return &exitError{code: code}
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Usagef is a usage error found by Run (a flag that needs another): one line on stderr
// and exit 2.
func Usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// names lists cmd's subcommands: "run, once or evaluate".
func names(cmd *Command) string {
	var ns []string
	for _, c := range cmd.Commands {
		ns = append(ns, c.Name)
	}
	if len(ns) < 2 {
		return strings.Join(ns, "")
	}
	return strings.Join(ns[:len(ns)-1], ", ") + " or " + ns[len(ns)-1]
}
