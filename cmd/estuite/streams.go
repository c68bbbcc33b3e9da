package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
	"github.com/estuite/estuite/server"
	"github.com/google/uuid"
)

func init() {
	register(command{
		name:    "append",
		summary: "Append one event to a stream and print the result as JSON.\nJSON is the event's data (default {}); with --binary it is taken as raw bytes.",
		usage:   "STREAM TYPE [JSON]",
		dataAt:  3,
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			expected := fs.String("expected-version", "any", `expected version: a number, "any", "no_stream" or "exists"`)
			commitID := fs.String("commit-id", "", "commit ID (default: generated); a retry with the same ID is answered as a duplicate")
			metadata := fs.String("metadata", "", "metadata: a JSON object")
			binary := fs.Bool("binary", false, "store the data as binary, not JSON")
			subject := fs.String("subject", "", "the data subject the event is about: its data and metadata are stored encrypted\nwith the subject's key, and estuite forget erases them")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) < 2 || len(args) > 3 {
					return usagef("want STREAM TYPE [JSON], got %d arguments", len(args))
				}
				ev := estuite.EventData{Type: args[1], Data: []byte("{}"), Metadata: json.RawMessage(*metadata), Subject: *subject}
				if len(args) == 3 {
					ev.Data = []byte(args[2])
				}
				if *binary {
					ev.Format = estuite.Binary
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
				// The commit ID is made here when none is given (on the store and through a server
				// alike), so that an append whose outcome is unknown can say which one to retry with.
				id := *commitID
				if id == "" {
					id = uuid.NewString()
				}
				res, err := t.api().Append(ctx, args[0], []estuite.EventData{ev}, &estuite.AppendOptions{Expected: exp, CommitID: id})
				if errors.Is(err, estuite.ErrUnavailable) {
					return fmt.Errorf("%w\nits commit ID is %s: run the same command again with --commit-id %s to learn whether it was "+
						"committed (a commit that was made answers \"duplicate\": true)", err, id, id)
				}
				if err != nil {
					return err
				}
				if t.store != nil && b.embedded() {
					// No other process can dispatch while this one holds the file: do it now.
					if _, err := estuite.NewDispatcher(t.store, nil).Step(ctx); err != nil {
						return fmt.Errorf("appended, but dispatching to the feed failed (the next `estuite serve` will): %w", err)
					}
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{
					"stream": res.Stream, "firstVersion": res.FirstVersion, "lastVersion": res.LastVersion,
					"commitId": res.CommitID, "duplicate": res.Duplicate,
				})
			}
		},
	})
	register(command{
		name: "forget",
		summary: "Erase a data subject: replace its data key with a tombstone, so that every event naming the\n" +
			"subject reads as erased, and refuse new events naming it. Idempotent. Prints the subject's state as JSON.\n" +
			"Other processes on the store stop decrypting the subject within their --key-cache lifetime.",
		usage: "SUBJECT",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one SUBJECT, got %d arguments", len(args))
				}
				t, err := openTarget(ctx, fs, &b, &r, false)
				if err != nil {
					return err
				}
				defer t.close()
				if err := t.api().Forget(ctx, args[0]); err != nil {
					return err
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{"subject": args[0], "forgotten": true})
			}
		},
	})
	register(command{
		name: "rewrap-keys",
		summary: "Rewrap every subject's data key under the master key (--master-key-file or $ESTUITE_MASTER_KEY):\n" +
			"the keys wrapped by a --previous-master-key-file, and those stored before the store had a master key.\n" +
			"Rotating the master key: run every process with the new key and the old one as --previous-master-key-file,\n" +
			"run this, then drop the old key. Scans the key table; prints what it did as JSON; exits 3 when a key\n" +
			"could not be rewrapped (its subject is named).",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if err := r.localOnly("rewrap-keys", "it needs the master keys, which a server never hands out; run it where the store is\n"+
					"(stop an `estuite serve` that holds the embedded store first)"); err != nil {
					return err
				}
				if len(args) != 0 {
					return usagef("takes no arguments, got %d", len(args))
				}
				store, err := b.open(ctx)
				if err != nil {
					return err
				}
				defer store.Close()
				if !b.wrapped {
					return usagef("no master key: give the new one with --master-key-file or $%s", masterKeyEnv)
				}
				res, err := store.RewrapKeys(ctx)
				if err != nil {
					return err
				}
				if err := json.NewEncoder(e.stdout).Encode(map[string]any{"keys": res.Keys, "rewrapped": res.Rewrapped,
					"current": res.Current, "forgotten": res.Forgotten, "failures": res.Failures, "failed": res.Failed}); err != nil {
					return err
				}
				if res.Failures > 0 {
					return exitCode(exitInconsistent)
				}
				return nil
			}
		},
	})
	register(command{
		name:    "read",
		summary: "Print a stream's events as JSON lines.",
		usage:   "STREAM",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			from := fs.Int64("from", 0, "first version (default: the first, or the last with --backward)")
			limit := fs.Int("limit", 0, "most events (default: all)")
			backward := fs.Bool("backward", false, "newest first")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one STREAM, got %d arguments", len(args))
				}
				if err := checkNotNegative("from", *from); err != nil {
					return err
				}
				if err := checkNotNegative("limit", int64(*limit)); err != nil {
					return err
				}
				t, err := openTarget(ctx, fs, &b, &r, true)
				if err != nil {
					return err
				}
				defer t.close()
				var events iter.Seq2[estuite.RecordedEvent, error]
				if t.remote != nil {
					events = t.remote.Read(ctx, args[0], client.ReadOptions{From: *from, Limit: *limit, Backward: *backward})
				} else {
					opts := &estuite.ReadOptions{From: *from, Limit: *limit, PageBytes: readBytes}
					if *backward {
						opts.Direction = estuite.Backward
					}
					read, err := t.store.Read(ctx, args[0], opts)
					if err != nil {
						return err
					}
					events = read.Events
				}
				for ev, err := range events {
					if err != nil {
						return err
					}
					if err := writeEvent(e.stdout, ev); err != nil {
						return err
					}
				}
				return nil
			}
		},
	})
}

// parseExpected reads an expected version as the HTTP API writes it.
func parseExpected(s string) (estuite.ExpectedVersion, error) {
	switch s {
	case "any", "":
		return estuite.Any, nil
	case "no_stream":
		return estuite.NoStream, nil
	case "exists":
		return estuite.StreamExists, nil
	}
	var v int64
	if _, err := fmt.Sscan(s, &v); err != nil || v < 0 || fmt.Sprint(v) != s {
		return estuite.Any, usagef("expected version %q is not a number, any, no_stream or exists", s)
	}
	return estuite.Exactly(v), nil
}

// writeEvent writes one event as a JSON line, in the HTTP API's event form.
func writeEvent(w io.Writer, ev estuite.RecordedEvent) error {
	b, err := server.MarshalEvent(ev)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeFeedEvent writes one feed event as a JSON line, in the HTTP API's feed event form.
func writeFeedEvent(w io.Writer, ev estuite.FeedEvent) error {
	b, err := server.MarshalFeedEvent(ev)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
