package main

import (
	"context"
	"errors"
	"flag"
	"slices"
	"strings"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
)

func init() {
	register(command{
		name:    "feed",
		summary: "Print the feed — every dispatched event in global order — as JSON lines.\nWith --follow, keep printing events as they are dispatched until interrupted.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
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
					if slices.Contains(typeList, "") {
						return usagef("--types %q names an empty type: want comma-separated event types, e.g. OrderPlaced,OrderPaid", *types)
					}
				}
				if err := checkPosition("after", *after); err != nil {
					return err
				}
				if err := checkNotNegative("limit", int64(*limit)); err != nil {
					return err
				}
				if err := checkNotNegative("shard", int64(*shard)); err != nil {
					return err
				}
				if *follow && *limit > 0 {
					return usagef("--limit is not for --follow")
				}
				t, err := openTarget(ctx, fs, &b, &r, true)
				if err != nil {
					return err
				}
				defer t.close()
				if t.remote != nil {
					return remoteFeed(ctx, e, t.remote, client.FeedOptions{Shard: *shard, After: *after, Types: typeList, Prefix: *prefix}, *limit, *follow)
				}
				store := t.store
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

// followPoll bounds how long `estuite feed --follow --server` waits between two looks at a
// feed it has read to its end: it starts at followPollMin and doubles up to it while nothing comes.
const (
	followPollMin = 50 * time.Millisecond
	followPoll    = time.Second
)

// remoteFeed prints the feed of a server page by page (GET /feed) as the store's loop above does:
// up to limit events (0: all), and with follow, on and on, polling the feed's end with a backoff.
func remoteFeed(ctx context.Context, e *env, c *client.Client, opts client.FeedOptions, limit int, follow bool) error {
	printed, wait := 0, followPollMin
	for limit == 0 || printed < limit {
		opts.Limit = client.MaxPageLimit
		if limit > 0 {
			opts.Limit = min(opts.Limit, limit-printed)
		}
		page, err := c.Feed(ctx, opts)
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, ev := range page.Events {
			if err := writeFeedEvent(e.stdout, ev); err != nil {
				return err
			}
			printed++
		}
		if page.Next != opts.After {
			opts.After, wait = page.Next, followPollMin
			continue
		}
		if !follow {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, followPoll)
	}
	return nil
}
