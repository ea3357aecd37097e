package cli

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// envNote opens every list of flags, so a reader knows where else a value may come from.
const envNote = `Every flag can also be set in the environment variable shown with it; the command
line wins over the environment, which wins over the default.`

// groups sorts flags into sections by name, so that the same flag sits in the same
// section in every command; the command's own flags come first, under "Flags".
var groups = []struct {
	title string
	match func(name string) bool
}{
	{"Kafka", func(n string) bool {
		return n == "kafka-brokers" || n == "group" || n == "topic" || n == "topics" ||
			strings.HasSuffix(n, "-topic") || strings.Contains(n, "-topic-")
	}},
	{"ClickHouse", func(n string) bool { return strings.HasPrefix(n, "clickhouse-") || n == "zookeeper" }},
	{"Slack", func(n string) bool { return strings.HasPrefix(n, "slack-") }},
	{"Logging", func(n string) bool { return n == "log-level" || n == "log-format" }},
}

// writeHelp prints the help of cmd, called path on the command line; fs holds its
// flags (nil for a command with subcommands).
//
// The layout, the same for every command:
//
//	<path> — <summary>
//
//	<about>
//
//	Usage:
//	  <path> [flags]            (or: <path> COMMAND [flags])
//
//	Commands:                   (a command with subcommands)
//	  <name>  <summary>
//
//	<envNote>                   (a command with flags)
//
//	Flags:                      (then Kafka:, ClickHouse:, Slack:, Logging:)
//	  -<name> <value>
//	      <usage>
//	      default <default> · env <VARIABLE>
func writeHelp(w io.Writer, cmd *Command, path string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "%s — %s\n", path, cmd.Summary)
	if cmd.About != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.About))
	}
	fmt.Fprintf(w, "\nUsage:\n")
	switch {
	case cmd.Usage != "":
		fmt.Fprintf(w, "  %s\n", cmd.Usage)
	case len(cmd.Commands) > 0:
		fmt.Fprintf(w, "  %s COMMAND [flags]\n", path)
	default:
		fmt.Fprintf(w, "  %s [flags]\n", path)
	}
	if len(cmd.Commands) > 0 {
		fmt.Fprintf(w, "\nCommands:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, c := range cmd.Commands {
			fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Summary)
		}
		_ = tw.Flush()
		fmt.Fprintf(w, "\nRun %q for the flags of a command.\n", path+" COMMAND --help")
		return
	}
	fmt.Fprintf(w, "\n%s\n", envNote)
	sections := make([][]*flag.Flag, len(groups)+1)
	fs.VisitAll(func(f *flag.Flag) { // VisitAll goes in name order
		i := 0
		for g := range groups {
			if groups[g].match(f.Name) {
				i = g + 1
				break
			}
		}
		sections[i] = append(sections[i], f)
	})
	for i, flags := range sections {
		if len(flags) == 0 {
			continue
		}
		title := "Flags"
		if i > 0 {
			title = groups[i-1].title
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, f := range flags {
			writeFlag(w, f)
		}
	}
}

func writeFlag(w io.Writer, f *flag.Flag) {
	name, usage := flag.UnquoteUsage(f)
	switch f.Value.(type) {
	case *config.List:
		if name == "value" {
			name = "list"
		}
	case *config.Secret:
		if name == "value" {
			name = "secret"
		}
	}
	fmt.Fprintf(w, "  -%s", f.Name)
	if name != "" {
		fmt.Fprintf(w, " %s", name)
	}
	fmt.Fprintf(w, "\n      %s\n      ", usage)
	if def := defaultText(f); def != "" {
		fmt.Fprintf(w, "default %s · ", def)
	}
	fmt.Fprintf(w, "env %s\n", config.EnvOf(f))
}

// defaultText is f's default as help shows it: "" for a zero value, durations without
// zero units ("4h", not "4h0m0s"), strings with spaces quoted.
func defaultText(f *flag.Flag) string {
	if g, ok := f.Value.(flag.Getter); ok {
		if _, ok := g.Get().(time.Duration); ok {
			// The value may have been set already; the default is in DefValue.
			d, err := time.ParseDuration(f.DefValue)
			if err != nil || d == 0 {
				return ""
			}
			return shortDuration(d)
		}
	}
	switch f.DefValue {
	case "", "0", "false":
		return ""
	}
	if strings.ContainsAny(f.DefValue, " \t") {
		return strconv.Quote(f.DefValue)
	}
	return f.DefValue
}

// shortDuration drops zero minutes and seconds: 4h0m0s → 4h, 15m0s → 15m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
