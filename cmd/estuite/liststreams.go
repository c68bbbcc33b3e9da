package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/wire"
)

func init() {
	register(command{
		name: "streams",
		summary: "List the store's streams with their versions, in name order, from the stream catalog: one query\n" +
			"of the catalog and a head read per stream listed. A stream shows once dispatched.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			prefix := fs.String("prefix", "", "list only the streams whose names start with this")
			after := fs.String("after", "", "list the streams after this one (the next of the previous page)")
			limit := fs.Int("limit", estuite.DefaultListStreamsLimit, fmt.Sprintf("the most streams to list, 1 to %d", estuite.MaxListStreamsLimit))
			asJSON := fs.Bool("json", false, `print what GET /streams answers: {"streams":[{"stream","version"}],"next":…}`)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("streams takes no arguments (use --prefix), got %d", len(args))
				}
				if *limit < 1 || *limit > estuite.MaxListStreamsLimit {
					return usagef("--limit must be 1 to %d, not %d", estuite.MaxListStreamsLimit, *limit)
				}
				t, err := openTarget(ctx, fs, &b, &r, true)
				if err != nil {
					return err
				}
				defer t.close()
				list, err := t.api().ListStreams(ctx, &estuite.ListStreamsOptions{Prefix: *prefix, After: *after, Limit: *limit})
				if err != nil {
					return err
				}
				if *asJSON {
					out := wire.FromStreamList(list)
					enc := json.NewEncoder(e.stdout)
					enc.SetEscapeHTML(false) // the bytes the server sends
					return enc.Encode(out)
				}
				if len(list.Streams) == 0 {
					_, err := fmt.Fprintln(e.stdout, "no streams")
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STREAM\tVERSION")
				for _, s := range list.Streams {
					fmt.Fprintf(tw, "%s\t%d\n", s.Name, s.Version)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if list.Next != "" {
					_, err = fmt.Fprintf(e.stdout, "more: --after %q\n", list.Next)
				}
				return err
			}
		},
	})
}
