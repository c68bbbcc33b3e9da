package main

import (
	"context"
	"flag"
	"net/url"
	"strconv"
	"strings"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
)

// Commands against a running server: with --server URL, a command goes through the server's HTTP
// API (package client) instead of opening the store itself, and prints what it prints on the
// store. That is how to reach an embedded store that a running `estuite serve` holds open.

// remoteFlags are --server, --token and --token-file.
type remoteFlags struct {
	server    string
	serverSet bool // --server was given, even as ""
	token     string
	tokenSet  bool
	tokenFile string
}

func (r *remoteFlags) register(fs *flag.FlagSet) {
	fs.Func("server", "go through the estuite serve at this `URL` (e.g. http://"+DefaultAddr+") instead of opening\n"+
		"the store: for an embedded store that a running server holds open, or a store only a server may reach", func(v string) error {
		r.server, r.serverSet = v, true
		return nil
	})
	fs.Func("token", "with --server: the server's bearer token (default $ESTUITE_TOKEN); prefer --token-file or\n"+
		"$ESTUITE_TOKEN: a flag shows in the process list", func(v string) error {
		r.token, r.tokenSet = v, true
		return nil
	})
	fs.StringVar(&r.tokenFile, "token-file", "", "with --server: read the token from this `file` (a trailing newline is dropped)")
}

// localOnlyFlags are the flags that say how to open a store: meaningless with --server.
var localOnlyFlags = []string{"data", "azure-connection-string", "table-prefix", "master-key-file", "previous-master-key-file", "feed-shards", "key-cache"}

// client returns the client of --server, refusing the flags of a local store beside it.
func (r *remoteFlags) client(fs *flag.FlagSet) (*client.Client, error) {
	var bad string
	fs.Visit(func(f *flag.Flag) {
		for _, name := range localOnlyFlags {
			if f.Name == name && bad == "" {
				bad = name
			}
		}
	})
	if bad != "" {
		return nil, usagef("--%s says how to open a store; with --server the command goes through the server, which has its own: drop one", bad)
	}
	u, err := url.Parse(r.server)
	switch {
	case r.server == "":
		return nil, usagef("--server is empty: want the server's URL, http://HOST:PORT or https://HOST:PORT (e.g. http://%s)", DefaultAddr)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, usagef("--server %s: want the server's URL, http://HOST:PORT or https://HOST:PORT (e.g. http://%s)", shownURL(r.server), DefaultAddr)
	case u.User != nil:
		return nil, usagef("--server %s: the URL has a user or password, which the server does not take: give the token with --token-file or $ESTUITE_TOKEN", shownURL(r.server))
	case u.RawQuery != "" || u.Fragment != "":
		return nil, usagef("--server %s: the URL has a query or fragment, which the server does not take (the token goes in --token-file or $ESTUITE_TOKEN)", shownURL(r.server))
	}
	token, err := resolveToken(r.token, r.tokenSet, r.tokenFile)
	if err != nil {
		return nil, err
	}
	c, err := client.New(r.server, &client.Options{Token: token, UserAgent: "estuite-cli"})
	if err != nil {
		return nil, usagef("--server: %v", err)
	}
	return c, nil
}

// shownURL is a --server URL as a message shows it: quoted, without the user, password, query
// and fragment, which may hold a secret (a URL that does not parse is not shown when it may).
func shownURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if strings.ContainsAny(raw, "@?#") {
			return "(not shown: it may hold a secret)"
		}
		return strconv.Quote(raw)
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return strconv.Quote(u.String())
}

// tokenWithoutServer refuses --token and --token-file without --server.
func (r *remoteFlags) tokenWithoutServer() error {
	if !r.serverSet && (r.tokenSet || r.tokenFile != "") {
		return usagef("--token and --token-file are for --server")
	}
	return nil
}

// localOnly is the usage error of a command that works on the store itself when given --server.
func (r *remoteFlags) localOnly(command, why string) error {
	if !r.serverSet && !r.tokenSet && r.tokenFile == "" {
		return nil
	}
	return usagef("%s works on the store itself, never through a server (--server, --token): %s", command, why)
}

// storeAPI is what most commands need of a store: an *estuite.Store, or a *client.Client of a
// server (the client's methods have the store's signatures).
type storeAPI interface {
	Append(ctx context.Context, stream string, events []estuite.EventData, opts *estuite.AppendOptions) (estuite.AppendResult, error)
	Delete(ctx context.Context, stream string, opts *estuite.DeleteOptions) (estuite.DeleteResult, error)
	Metadata(ctx context.Context, stream string) (estuite.StreamMetadata, error)
	SetMetadata(ctx context.Context, stream string, md estuite.StreamMetadata, expected estuite.MetadataExpected) (estuite.StreamMetadata, error)
	Scavenge(ctx context.Context) (estuite.ScavengeStats, error)
	Forget(ctx context.Context, subject string) error
	Groups(ctx context.Context) ([]estuite.GroupInfo, error)
	GroupState(ctx context.Context, group string) (estuite.GroupState, error)
	ParkedEvents(ctx context.Context, group string, limit int) ([]estuite.ParkedEvent, error)
	ReplayParked(ctx context.Context, group string, refs []estuite.ParkedRef) (int, error)
	DiscardParked(ctx context.Context, group string, refs []estuite.ParkedRef) (int, error)
	ListStreams(ctx context.Context, opts *estuite.ListStreamsOptions) (estuite.StreamList, error)
}

var (
	_ storeAPI = (*estuite.Store)(nil)
	_ storeAPI = (*client.Client)(nil)
)

// target is where a command works: the store it opened (store set), or a server (remote set).
type target struct {
	store  *estuite.Store
	remote *client.Client
}

func (t target) api() storeAPI {
	if t.remote != nil {
		return t.remote
	}
	return t.store
}

func (t target) close() {
	if t.store != nil {
		t.store.Close()
	}
}

// openTarget opens what the flags select: the server of --server, else the store (an existing
// one when existing is true, see backendFlags.openExisting).
func openTarget(ctx context.Context, fs *flag.FlagSet, b *backendFlags, r *remoteFlags, existing bool) (target, error) {
	if r.serverSet {
		c, err := r.client(fs)
		return target{remote: c}, err
	}
	if err := r.tokenWithoutServer(); err != nil {
		return target{}, err
	}
	open := b.open
	if existing {
		open = b.openExisting
	}
	s, err := open(ctx)
	if err != nil {
		return target{}, err
	}
	return target{store: s}, nil
}

// checkPosition checks a position flag: 0 to estuite.MaxPosition.
func checkPosition(name string, v int64) error {
	if v < 0 || v > estuite.MaxPosition {
		return usagef("--%s must be a position from 0 to %d, not %d", name, int64(estuite.MaxPosition), v)
	}
	return nil
}

// checkNotNegative checks a count flag.
func checkNotNegative(name string, v int64) error {
	if v < 0 {
		return usagef("--%s must not be negative, not %d", name, v)
	}
	return nil
}
