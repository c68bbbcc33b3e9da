package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
	"github.com/estuite/estuite/server"
)

// Consumer groups from the command line: their listing and state, their parked events, and the
// replay or discard of those. Text for people by default; --json prints what the HTTP API answers.

func init() {
	register(command{
		name: "groups",
		summary: "List the store's consumer groups: each one's feed shards and the stream-hash ranges each shard\n" +
			"is split into (its slots are shards × ranges). One query of the group catalog.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			asJSON := fs.Bool("json", false, `print what GET /groups answers: {"groups":[{"group","shards","ranges"}]}`)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("groups takes no arguments, got %d", len(args))
				}
				t, err := openTarget(ctx, fs, &b, &r, true)
				if err != nil {
					return err
				}
				defer t.close()
				store := t.api()
				groups, err := store.Groups(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSONLine(e.stdout)(server.MarshalGroups(groups))
				}
				if len(groups) == 0 {
					_, err := fmt.Fprintln(e.stdout, "no consumer groups")
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GROUP\tSHARDS\tRANGES\tSLOTS")
				for _, g := range groups {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", g.Name, g.Shards, g.Ranges, g.Shards*g.Ranges)
				}
				return tw.Flush()
			}
		},
	})
	register(command{
		name: "group",
		summary: "Print a consumer group's state: its members, each slot's owner, checkpoint position and lag\n" +
			"behind its shard's feed head, and how many events it has parked. Exits 1 for a group that does not\n" +
			"exist. Costs 3 + 2 × feed shards storage requests (more with over 1,000 parked events).",
		usage: "GROUP",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			asJSON := fs.Bool("json", false, "print what GET /groups/{group} answers")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one GROUP, got %d arguments", len(args))
				}
				t, err := openTarget(ctx, fs, &b, &r, true)
				if err != nil {
					return err
				}
				defer t.close()
				store := t.api()
				st, err := store.GroupState(ctx, args[0])
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSONLine(e.stdout)(server.MarshalGroupState(st))
				}
				return printGroupState(e.stdout, st)
			}
		},
	})
	register(command{
		name: "parked",
		summary: "List a consumer group's parked events (the events its handler gave up on, and those waiting\n" +
			"behind them), or replay or discard them:\n" +
			"  estuite parked GROUP                                     list them (also: parked list GROUP)\n" +
			"  estuite parked replay GROUP (--all | SHARD:POSITION ...)  ask the group to handle them again\n" +
			"  estuite parked discard GROUP (--all | SHARD:POSITION ...) delete them unhandled\n" +
			"A replay is done by the member holding the event's slot at its next look at the group (within a third\n" +
			"of its lease duration); an event that fails again stays parked. Naming an event that is not parked\n" +
			"exits 1 and changes nothing. Flags may come anywhere after the command.",
		usage: "[list] GROUP | replay GROUP (--all | SHARD:POSITION ...) | discard GROUP (--all | SHARD:POSITION ...)",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			asJSON := fs.Bool("json", false, "print what the HTTP API answers (GET /groups/{group}/parked, or {\"replayed\": n} / {\"discarded\": n})")
			limit := fs.Int("limit", 0, "list: the most events listed (default: all)")
			all := fs.Bool("all", false, "replay, discard: every parked event of the group")
			return func(ctx context.Context, e *env, args []string) error {
				given := map[string]bool{}
				fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
				action := "list"
				if len(args) > 0 {
					switch args[0] {
					case "list", "replay", "discard":
						if len(args) == 1 {
							return usagef("%s needs a GROUP (to list the parked events of a group named %q: estuite parked list %s)", args[0], args[0], args[0])
						}
						action, args = args[0], args[1:]
					}
				}
				if len(args) == 0 {
					return usagef("want a GROUP")
				}
				group, rest := args[0], args[1:]
				var refs []estuite.ParkedRef
				var err error
				switch action {
				case "list":
					if len(rest) > 0 {
						return usagef("listing takes one GROUP, got %d arguments", len(args))
					}
					if given["all"] {
						return usagef("--all is for replay and discard")
					}
					if *limit < 0 {
						return usagef("--limit must not be negative")
					}
				default:
					if given["limit"] {
						return usagef("--limit is for listing")
					}
					if *all == (len(rest) > 0) {
						return usagef("%s wants --all or SHARD:POSITION references, one of them", action)
					}
					if refs, err = parseParkedRefs(rest); err != nil {
						return err
					}
				}
				t, err := openTarget(ctx, fs, &b, &r, false)
				if err != nil {
					return err
				}
				defer t.close()
				store := t.api()
				if action == "list" {
					n := *limit
					if n == 0 && t.remote != nil {
						n = client.MaxPageLimit // the API has no paging: its most, not its default of 100
					}
					parked, err := store.ParkedEvents(ctx, group, n)
					if err != nil {
						return err
					}
					if *limit == 0 && t.remote != nil && len(parked) == n {
						noteParkedCut(ctx, e, t.remote, group, n)
					}
					if *asJSON {
						return writeJSONLine(e.stdout)(server.MarshalParkedEvents(parked))
					}
					return printParked(e.stdout, group, parked)
				}
				change, member, verb := store.ReplayParked, "replayed", "marked for replay"
				if action == "discard" {
					change, member, verb = store.DiscardParked, "discarded", "discarded"
				}
				n, err := change(ctx, group, refs)
				if err != nil {
					if n > 0 {
						return fmt.Errorf("%s %d parked events, then: %w", verb, n, err)
					}
					return err
				}
				if *asJSON {
					return json.NewEncoder(e.stdout).Encode(map[string]int{member: n})
				}
				_, err = fmt.Fprintf(e.stdout, "%s %d parked %s of group %s\n", verb, n, plural(n, "event", "events"), group)
				return err
			}
		},
	})
}

// noteParkedCut says on stderr that a list of n parked events through a server may be cut: the
// API lists at most n (client.MaxPageLimit), and the group's state counts them all.
func noteParkedCut(ctx context.Context, e *env, c *client.Client, group string, n int) {
	st, err := c.GroupState(ctx, group)
	switch {
	case err != nil:
		fmt.Fprintf(e.stderr, "parked: the server lists at most %d parked events: there may be more (the group's count: %v)\n", n, err)
	case st.Parked > n:
		fmt.Fprintf(e.stderr, "parked: the server lists at most %d parked events: these are the first %d of %d (replay --all and discard --all take every one)\n",
			n, n, st.Parked)
	}
}

// interspersed parses the flags among args and returns the other arguments, so that flags may
// follow them: `estuite read order-1 --limit 5`, `estuite parked replay orders --all`. "--" ends
// the flags. An argument that starts with "-" but names no flag of fs is an argument, not a
// flag, when it cannot be one — a "-" and a digit (`estuite append s T -1`), or the dataAt-th
// argument (1-based; 0: none), which is data (`estuite append --binary s T -AAA`) — and
// otherwise an error that points to "--". Messages show the flags as they were typed. The error
// is flag.ErrHelp for --help.
func interspersed(fs *flag.FlagSet, args []string, dataAt int) ([]string, error) {
	rest := []string{}
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			return append(rest, args[1:]...), nil
		}
		typed, _, hasValue := strings.Cut(a, "=")
		name := strings.TrimPrefix(strings.TrimPrefix(typed, "-"), "-")
		if len(a) < 2 || a[0] != '-' {
			rest, args = append(rest, a), args[1:]
			continue
		}
		f := fs.Lookup(name)
		if f == nil && name != "h" && name != "help" {
			if len(rest)+1 == dataAt || name == "" || !unicode.IsLetter(rune(name[0])) {
				rest, args = append(rest, a), args[1:]
				continue
			}
			return nil, fmt.Errorf("flag provided but not defined: %s (an argument that starts with \"-\" goes after \"--\", "+
				"which ends the flags: estuite %s [flags] -- ARGUMENTS)", typed, strings.TrimPrefix(fs.Name(), "estuite "))
		}
		n := 1 // the flag, and its value when it takes one and has no "=VALUE"
		if f != nil && !hasValue && !isBoolFlag(f) && len(args) > 1 {
			n = 2
		}
		if err := fs.Parse(args[:n]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			// The flag package names the flag with one dash: name it as typed.
			msg := err.Error()
			if i := strings.LastIndex(msg, " -"+name); i >= 0 {
				msg = msg[:i+1] + typed + msg[i+2+len(name):]
			}
			return nil, errors.New(msg)
		}
		args = args[n:]
	}
	return rest, nil
}

// isBoolFlag reports whether f takes no value (--binary, not --binary=true).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parseParkedRefs parses SHARD:POSITION references to parked events.
func parseParkedRefs(args []string) ([]estuite.ParkedRef, error) {
	refs := make([]estuite.ParkedRef, 0, len(args))
	seen := make(map[estuite.ParkedRef]bool, len(args))
	for _, a := range args {
		s, p, ok := strings.Cut(a, ":")
		shard, err1 := strconv.Atoi(s)
		pos, err2 := strconv.ParseInt(p, 10, 64)
		if !ok || err1 != nil || err2 != nil || shard < 0 || shard >= estuite.MaxFeedShards || pos < 1 || pos > estuite.MaxPosition {
			return nil, usagef("%q is not a parked event: want SHARD:POSITION, e.g. 0:12 (as `estuite parked GROUP` lists them)", a)
		}
		ref := estuite.ParkedRef{Shard: shard, Position: pos}
		if seen[ref] {
			return nil, usagef("%s is named twice", a)
		}
		seen[ref] = true
		refs = append(refs, ref)
	}
	return refs, nil
}

// writeJSONLine returns a function that writes what one of the server's Marshal functions
// returns to w, as a line: writeJSONLine(w)(server.MarshalGroups(groups)).
func writeJSONLine(w io.Writer) func([]byte, error) error {
	return func(b []byte, err error) error {
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
}

func printGroupState(w io.Writer, st estuite.GroupState) error {
	fmt.Fprintf(w, "group %s: %d feed %s × %d %s = %d slots, %d %s, %d parked %s\n", st.Name,
		st.Shards, plural(st.Shards, "shard", "shards"), st.Ranges, plural(st.Ranges, "range", "ranges"), st.Shards*st.Ranges,
		len(st.Members), plural(len(st.Members), "member", "members"), st.Parked, plural(st.Parked, "event", "events"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(st.Members) > 0 {
		fmt.Fprintln(tw, "\nMEMBER\tSLOTS\tUPDATED")
		for _, m := range st.Members {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", m.Name, m.Slots, textTime(m.Updated))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(tw, "\nSLOT\tOWNER\tPOSITION\tLAG\tUPDATED")
	for _, s := range st.Slots {
		owner := s.Owner
		if owner == "" {
			owner = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.GroupSlot, owner, s.Position, s.Lag, textTime(s.Updated))
	}
	return tw.Flush()
}

// maxErrorText is how much of a parked event's error the text listing shows (--json: all of it).
const maxErrorText = 160

func printParked(w io.Writer, group string, parked []estuite.ParkedEvent) error {
	if len(parked) == 0 {
		_, err := fmt.Fprintf(w, "group %s has no parked events\n", group)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tSTREAM@VERSION\tTYPE\tATTEMPTS\tSTATE\tPARKED\tERROR")
	for _, p := range parked {
		state := "parked"
		if p.Waiting {
			state = "waiting"
		}
		if p.Replay {
			state += ", replay asked"
		}
		msg := strings.Join(strings.Fields(p.Error), " ")
		if r := []rune(msg); len(r) > maxErrorText {
			msg = string(r[:maxErrorText]) + "…"
		}
		fmt.Fprintf(tw, "%d:%d\t%s@%d\t%s\t%d\t%s\t%s\t%s\n", p.Shard, p.Position, p.Stream, p.Version, p.Type, p.Attempts, state, textTime(p.Parked), msg)
	}
	return tw.Flush()
}

func textTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
