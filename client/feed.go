package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/estuite/estuite"
)

// FeedOptions say which feed page to read (GET /feed).
type FeedOptions struct {
	// Shard is the feed shard read (0 in a store of one).
	Shard int
	// After is the last position already seen: the page starts after it.
	After int64
	// Limit is the most events; 0 means the server's default (100), at most MaxPageLimit.
	Limit int
	// Types keeps the events of these types (at most 100); none means all.
	Types []string
	// Prefix keeps the events of streams whose names start with it; "" means all.
	Prefix string
	// IncludeRedacted returns the entries of events a scavenger removed too.
	IncludeRedacted bool
}

// FeedPage is one page of the feed.
type FeedPage struct {
	// Events are in position order. The page may hold fewer than the limit before the end of the
	// feed (a byte budget, a filter): read on while Next < Head.
	Events []estuite.FeedEvent
	// Next is the position to pass as After next time; it equals After when nothing was looked at.
	Next int64
	// Head is the shard's highest position when the server answered.
	Head int64
}

// Feed reads one page of the feed (GET /feed).
func (c *Client) Feed(ctx context.Context, opts FeedOptions) (FeedPage, error) {
	q := url.Values{}
	if opts.Shard != 0 {
		q.Set("shard", strconv.Itoa(opts.Shard))
	}
	if opts.After != 0 {
		q.Set("after", strconv.FormatInt(opts.After, 10))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	for _, t := range opts.Types {
		q.Add("type", t)
	}
	if opts.Prefix != "" {
		q.Set("prefix", opts.Prefix)
	}
	if opts.IncludeRedacted {
		q.Set("redacted", "true")
	}
	var out struct {
		Events []feedEventJSON `json:"events"`
		Next   int64           `json:"next"`
		Head   int64           `json:"head"`
	}
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: "/feed", query: q}, &out); err != nil {
		return FeedPage{}, err
	}
	page := FeedPage{Next: out.Next, Head: out.Head, Events: make([]estuite.FeedEvent, 0, len(out.Events))}
	for i := range out.Events {
		ev, err := out.Events[i].feed()
		if err != nil {
			return FeedPage{}, err
		}
		ev.Shard = opts.Shard
		page.Events = append(page.Events, ev)
	}
	return page, nil
}
