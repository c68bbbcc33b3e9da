package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

// command is one subcommand: its flags, its help and what it does.
type command struct {
	name    string
	summary string
	usage   string // arguments after the command name
	// dataAt is the argument (1-based; 0: none) that is data, which may start with "-" (see
	// interspersed).
	dataAt int
	// setup declares the command's flags on fs and returns the function that runs it.
	setup func(fs *flag.FlagSet) func(ctx context.Context, env *env, args []string) error
}

// env is what a command runs with.
type env struct {
	stdout, stderr io.Writer
}

// usageError is a mistake in the command line: it is reported with the command's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// run runs the command line args and returns the process exit code: 0 on success, 1 on failure,
// 2 on a usage error, and what a command asks for (verify: 3 when the store is inconsistent).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "estuite: unknown command %q\n\n", args[0])
		printUsage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("estuite "+c.name, flag.ContinueOnError)
	// The flag package's own messages name flags with one dash: they are swallowed, and the
	// error is printed below with the flag's name as the help writes it (--limit).
	fs.SetOutput(io.Discard)
	do := c.setup(fs)
	usage := func() {
		fmt.Fprintf(stderr, "usage: estuite %s [flags] %s\n\n%s\n\nflags (before or after the arguments; -- ends them):\n", c.name, c.usage, c.summary)
		printFlags(stderr, fs)
	}
	fs.Usage = func() {}
	rest, err := interspersed(fs, args[1:], c.dataAt)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return 0
		}
		fmt.Fprintf(stderr, "estuite %s: %v\n", c.name, err)
		usage()
		return 2
	}
	fs.Usage = usage
	err = do(ctx, &env{stdout: stdout, stderr: stderr}, rest)
	var ue usageError
	var ec exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "estuite %s: %v\n", c.name, err)
		fs.Usage()
		return 2
	case errors.As(err, &ec):
		return int(ec)
	default:
		fmt.Fprintf(stderr, "estuite %s: %v\n", c.name, err)
		return 1
	}
}

// exitCode ends a command with a given exit code, after it reported why itself.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit code %d", int(c)) }

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "estuite — an event store on Azure Table Storage, with an embedded default\n\nusage: estuite COMMAND [flags] [arguments]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-8s %s\n", n, firstLine(c.summary))
	}
	fmt.Fprintln(w, "\nRun 'estuite COMMAND --help' for a command's flags.")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// versionLine says which build this is: the module's version (a tagged release, or "(devel)"),
// the commit it was built from when the build recorded one, and the Go release.
func versionLine() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "estuite (unknown build) " + runtime.Version()
	}
	line := "estuite " + info.Main.Version
	for _, set := range info.Settings {
		switch set.Key {
		case "vcs.revision":
			line += " commit " + set.Value[:min(12, len(set.Value))]
		case "vcs.modified":
			if set.Value == "true" {
				line += " (modified)"
			}
		}
	}
	return line + " " + info.GoVersion
}

// printFlags lists fs's flags as --name, with their help and default.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		help = strings.ReplaceAll(help, "\n", "\n    \t")
		switch def := f.DefValue; {
		case def == "" || def == "0" || def == "false" || def == "0s":
		case fmt.Sprintf("%T", f.Value) == "*flag.stringValue":
			help += fmt.Sprintf(" (default %q)", def)
		default:
			help += " (default " + def + ")"
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, help)
	})
}
