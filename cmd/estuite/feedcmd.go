package main

import (
	"context"
	"errors"
	"flag"
	"strings"

	"github.com/estuite/estuite"
)

func init() {
	register(command{
		name:    "feed",
		summary: "Print the feed — every dispatched event in global order — as JSON lines.\nWith --follow, keep printing events as they are dispatched until interrupted.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			after := fs.Int64("after", 0, "start after this position")
			limit := fs.Int("limit", 0, "most events (default: all; not with --follow)")
			follow := fs.Bool("follow", false, "keep following the feed")
			types := fs.String("types", "", "comma-separated event types to keep")
			prefix := fs.String("prefix", "", "keep only streams whose names start with this")
			shard := fs.Int("shard", 0, "the feed shard to read (a store with several; positions are the shard's)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("feed takes no arguments")
				}
				var typeList []string
				if *types != "" {
					typeList = strings.Split(*types, ",")
				}
				store, err := b.openExisting(ctx)
				if err != nil {
					return err
				}
				defer store.Close()
				if *follow {
					return followFeed(ctx, e, store, *shard, *after, typeList, *prefix)
				}
				printed := 0
				for pos := *after; *limit == 0 || printed < *limit; {
					page, err := store.ReadFeed(ctx, &estuite.FeedOptions{Shard: *shard, After: pos, Types: typeList, StreamPrefix: *prefix, MaxBytes: readBytes})
					if err != nil {
						return err
					}
					for _, ev := range page.Events {
						if *limit > 0 && printed == *limit {
							break
						}
						if err := writeFeedEvent(e.stdout, ev); err != nil {
							return err
						}
						printed++
					}
					if page.Next == pos {
						break
					}
					pos = page.Next
				}
				return nil
			}
		},
	})
}

// readBytes bounds what the read commands hold at once, however large the events: about this
// many bytes of events per feed page or storage request.
const readBytes = 4 << 20

func followFeed(ctx context.Context, e *env, store *estuite.Store, shard int, after int64, types []string, prefix string) error {
	sub, err := store.Subscribe(ctx, estuite.SubscriptionOptions{
		Shard: shard, After: after, Types: types, StreamPrefix: prefix, MaxBatchBytes: readBytes,
		Handler: func(_ context.Context, ev estuite.FeedEvent) error {
			return writeFeedEvent(e.stdout, ev)
		},
	})
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		if err := sub.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	case <-sub.Done():
		return sub.Err()
	}
}
