package main

import (
	"context"
	"encoding/json"
	"flag"
	"strconv"
	"time"

	"github.com/estuite/estuite"
)

func init() {
	register(command{
		name: "delete",
		summary: "Delete a stream. Soft by default: the stream reads as not found, and an append expecting\n" +
			"no stream (or any version) recreates it, its versions going on after the last one. With --hard\n" +
			"it is deleted for good: never read or written again. Prints the stream and its last version as JSON.",
		usage: "STREAM",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			expected := fs.String("expected-version", "any", `expected version: a number, "any", "no_stream" or "exists"`)
			hard := fs.Bool("hard", false, "delete for good (a tombstone)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one STREAM, got %d arguments", len(args))
				}
				exp, err := parseExpected(*expected)
				if err != nil {
					return err
				}
				t, err := openTarget(ctx, fs, &b, &r, false)
				if err != nil {
					return err
				}
				defer t.close()
				res, err := t.api().Delete(ctx, args[0], &estuite.DeleteOptions{Expected: exp, Hard: *hard})
				if err != nil {
					return err
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{"stream": res.Stream, "version": res.Version, "hard": *hard})
			}
		},
	})
	register(command{
		name: "metadata",
		summary: "Print a stream's metadata as JSON, or with --set replace it: --max-age, --max-count,\n" +
			"--truncate-before and --custom (a JSON object); what is not given is cleared. Retention applies\n" +
			"to reads at once.",
		usage: "STREAM",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			set := fs.Bool("set", false, "replace the metadata")
			expected := fs.String("expected-metadata-version", "any", `with --set: the metadata version it must be at, or "any"`)
			maxAge := fs.Duration("max-age", 0, "with --set: hide events older than this (whole seconds, e.g. 720h)")
			maxCount := fs.Int64("max-count", -1, "with --set: keep only the last N events visible")
			truncate := fs.Int64("truncate-before", 0, "with --set: hide the events below this version")
			custom := fs.String("custom", "", "with --set: a JSON object stored with the metadata")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one STREAM, got %d arguments", len(args))
				}
				given := map[string]bool{}
				fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
				if !*set {
					for _, name := range []string{"max-age", "max-count", "truncate-before", "custom", "expected-metadata-version"} {
						if given[name] {
							return usagef("--%s needs --set", name)
						}
					}
				}
				var md estuite.StreamMetadata
				if given["max-age"] {
					md.MaxAge = maxAge
				}
				if given["max-count"] {
					md.MaxCount = maxCount
				}
				if given["truncate-before"] {
					md.TruncateBefore = truncate
				}
				if given["custom"] {
					md.Custom = json.RawMessage(*custom)
				}
				exp := estuite.AnyMetadataVersion
				if *expected != "any" {
					v, err := strconv.ParseInt(*expected, 10, 64)
					if err != nil || v < 0 {
						return usagef(`--expected-metadata-version must be a non-negative number or "any", not %q`, *expected)
					}
					exp = estuite.MetadataExpected(v)
				}
				t, err := openTarget(ctx, fs, &b, &r, false)
				if err != nil {
					return err
				}
				defer t.close()
				if *set {
					md, err = t.api().SetMetadata(ctx, args[0], md, exp)
				} else {
					md, err = t.api().Metadata(ctx, args[0])
				}
				if err != nil {
					return err
				}
				return json.NewEncoder(e.stdout).Encode(metadataView(args[0], md))
			}
		},
	})
}

func init() {
	register(command{
		name: "scavenge",
		summary: "Run one scavenge pass now: remove from both tables what deletes and retention hid, leaving\n" +
			"redacted entries at their feed positions. Prints what it did as JSON. (The server holding the\n" +
			"dispatcher lease does this every --scavenge-interval.)",
		usage: "",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("want no arguments, got %d", len(args))
				}
				t, err := openTarget(ctx, fs, &b, &r, false)
				if err != nil {
					return err
				}
				defer t.close()
				st, err := t.api().Scavenge(ctx)
				if err != nil {
					return err
				}
				return json.NewEncoder(e.stdout).Encode(map[string]int{"streams": st.Streams, "removed": st.Removed, "redacted": st.Redacted, "waiting": st.Waiting})
			}
		},
	})
}

// metadataView is a stream's metadata as the HTTP API shows it (docs/http-api.md).
func metadataView(stream string, md estuite.StreamMetadata) map[string]any {
	out := map[string]any{"stream": stream, "metadataVersion": md.MetadataVersion, "maxAge": nil, "maxCount": nil, "truncateBefore": nil, "custom": nil}
	if md.MaxAge != nil {
		out["maxAge"] = int64(*md.MaxAge / time.Second)
	}
	if md.MaxCount != nil {
		out["maxCount"] = *md.MaxCount
	}
	if md.TruncateBefore != nil {
		out["truncateBefore"] = *md.TruncateBefore
	}
	if md.Custom != nil {
		out["custom"] = md.Custom
	}
	return out
}
