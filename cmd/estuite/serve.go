package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/bench"
	"github.com/estuite/estuite/server"
	"github.com/google/uuid"
)

// DefaultAddr is where `estuite serve` listens by default.
const DefaultAddr = "127.0.0.1:2113"

func init() {
	register(command{
		name: "serve",
		summary: "Serve the store over HTTP and run the dispatcher.\n" +
			"With no flags: the embedded store in ./estuite-data, on " + DefaultAddr + ".\n" +
			"With a connection string: Azure Table Storage; several servers may share one account.\n" +
			"SIGTERM or SIGINT stops it cleanly: in-flight requests finish, the dispatcher stops.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			b := backendFlags{serving: true}
			b.register(fs)
			addr := fs.String("addr", DefaultAddr, "address to listen on")
			var token, tokenFile string
			tokenSet := false
			fs.Func("token", "require Authorization: Bearer TOKEN on every endpoint but /healthz; at least 16 characters.\n"+
				"Prefer --token-file or $ESTUITE_TOKEN (the default): a flag shows in the process list", func(v string) error {
				token, tokenSet = v, true
				return nil
			})
			fs.StringVar(&tokenFile, "token-file", "", "read the token from this file (a trailing newline is dropped)")
			sessionKeyFile := fs.String("session-key-file", "", "key the console's sessions and tickets with the bytes of this file (at least 32):\n"+
				"give every server of a store the same file for a session to hold across them and across restarts (default: a random key per process)")
			insecure := fs.Bool("insecure", false, "allow listening on a non-loopback address without a token")
			logFormat := fs.String("log-format", "text", "log format: text or json")
			logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
			shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long to wait for in-flight requests on shutdown")
			var o serveOptions
			fs.Func("allowed-host", "without a token, also answer requests whose Host is NAME (a host name or IP address, any port;\n"+
				"loopback addresses and localhost always are); repeatable. The --addr host is allowed too", func(v string) error {
				o.allowedHosts = append(o.allowedHosts, v)
				return nil
			})
			fs.Func("cors-origin", "let web pages of ORIGIN (scheme://host[:port]) call the API from a browser; repeatable.\n"+
				"Requests from other origins are refused (403), with or without a token", func(v string) error {
				o.corsOrigins = append(o.corsOrigins, v)
				return nil
			})
			fs.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
			fs.StringVar(&o.tlsKey, "tls-key", "", "the private key of --tls-cert (PEM)")
			fs.DurationVar(&o.readTimeout, "read-timeout", DefaultReadTimeout, "the longest a request may take to arrive, its body included")
			fs.DurationVar(&o.writeTimeout, "write-timeout", DefaultWriteTimeout, "the longest an answer may take to send (not /feed/live, which streams until closed)")
			fs.DurationVar(&o.idleTimeout, "idle-timeout", DefaultIdleTimeout, "how long an idle keep-alive connection stays open")
			fs.IntVar(&o.maxConnections, "max-connections", DefaultMaxConnections, "the most connections open at once (live feeds included); further ones wait to be accepted")
			fs.IntVar(&o.maxLiveStreams, "max-live-streams", server.DefaultMaxLiveStreams, "the most /feed/live streams open at once; over it, 503 too_many_live_streams")
			fs.DurationVar(&o.liveWriteTimeout, "live-write-timeout", server.DefaultLiveWriteTimeout, "how long a /feed/live client may take to read one event or keep-alive before it is dropped")
			fs.StringVar(&o.instance, "instance", "", "this server's name in the dispatcher lease: keep it the same across restarts and unique among the servers of one store.\n"+
				"Default: on the embedded store, a random ID kept in DATA/"+instanceFile+" (created on first start);\n"+
				"on Azure, HOSTNAME/ADDR (the host name and --addr, so that two servers on one host differ)")
			fs.DurationVar(&o.leaseDuration, "lease-duration", estuite.DefaultLeaseDuration, "how long the dispatcher lease lasts without renewal (renewed every third of it).\n"+
				"Shorter: another server takes over sooner after this one dies, for more lease requests\n"+
				"(each server reads the lease, and its holder rewrites it, every third of the duration);\n"+
				"it must stay well above the storage latency, or leases flap between servers")
			fs.DurationVar(&o.scavengeInterval, "scavenge-interval", estuite.DefaultScavengeInterval, "how often the server holding the dispatcher lease removes what deletes and retention hid\n"+
				"(a scavenge pass; POST /admin/scavenge runs one at once); negative: never in the background")
			fs.StringVar(&o.pricesFile, "prices", "", "price table (JSON, shaped like `estuite bench --print-prices`) for the web console's cost page;\n"+
				"default: the shipped one")
			fs.DurationVar(&o.linger, "dispatch-linger", estuite.DefaultLinger, "how long the dispatcher, woken by an append to this server, waits for more appends before it\n"+
				"writes them into the feed: longer, fewer and fuller feed writes; shorter, less commit-to-feed lag")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("serve takes no arguments")
				}
				if o.linger < 0 {
					return usagef("--dispatch-linger must not be negative, not %v", o.linger)
				}
				if o.leaseDuration <= 0 {
					return usagef("--lease-duration must be positive, not %v", o.leaseDuration)
				}
				if err := validInstance(o.instance); o.instance != "" && err != nil {
					return usagef("--instance: %v", err)
				}
				for name, d := range map[string]time.Duration{"--read-timeout": o.readTimeout, "--write-timeout": o.writeTimeout, "--idle-timeout": o.idleTimeout} {
					if d <= 0 {
						return usagef("%s must be positive, not %v", name, d)
					}
				}
				if o.maxLiveStreams < 1 {
					return usagef("--max-live-streams must be at least 1, not %d", o.maxLiveStreams)
				}
				if o.liveWriteTimeout <= 0 {
					return usagef("--live-write-timeout must be positive, not %v", o.liveWriteTimeout)
				}
				if o.maxConnections < 1 {
					return usagef("--max-connections must be at least 1, not %d", o.maxConnections)
				}
				if (o.tlsCert == "") != (o.tlsKey == "") {
					return usagef("--tls-cert and --tls-key go together: give both or neither")
				}
				logger, err := newLogger(e, *logFormat, *logLevel)
				if err != nil {
					return err
				}
				if o.token, err = resolveToken(token, tokenSet, tokenFile); err != nil {
					return err
				}
				if *sessionKeyFile != "" {
					if o.sessionKey, err = os.ReadFile(*sessionKeyFile); err != nil {
						return usagef("--session-key-file: %v", err)
					}
					if len(o.sessionKey) < server.MinSessionKeyBytes {
						return usagef("--session-key-file %s holds %d bytes; at least %d random bytes are needed (e.g. head -c 32 /dev/urandom > FILE)",
							*sessionKeyFile, len(o.sessionKey), server.MinSessionKeyBytes)
					}
				}
				if o.token == "" && !*insecure && !isLoopback(*addr) {
					return usagef("refusing to listen on %s without a token: set --token-file (or ESTUITE_TOKEN), or pass --insecure", *addr)
				}
				if o.token == "" && *insecure && !isLoopback(*addr) {
					logger.Warn("INSECURE: serving without a token on a non-loopback address (--insecure): anyone who can reach " + *addr +
						" can read and append to every stream. Set --token-file or ESTUITE_TOKEN.")
				}
				if o.pricesFile != "" {
					p, err := bench.LoadPrices(o.pricesFile)
					if err != nil {
						return err
					}
					o.prices = &p
				}
				o.addr, o.shutdownTimeout = *addr, *shutdownTimeout
				return serve(ctx, logger, &b, o)
			}
		},
	})
}

// Defaults of the timeouts of `estuite serve`.
const (
	// DefaultReadTimeout bounds how long a request may take to arrive, its body included.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds how long an answer may take to send (live feeds excepted).
	DefaultWriteTimeout = 60 * time.Second
	// DefaultIdleTimeout is how long an idle keep-alive connection stays open.
	DefaultIdleTimeout = 120 * time.Second
	// maxReadHeaderTimeout bounds how long a request's headers may take to arrive.
	maxReadHeaderTimeout = 10 * time.Second
)

// MinTokenLength is the fewest characters a token may have.
const MinTokenLength = 16

// serveOptions are the settings of `estuite serve` besides its backend and logging.
type serveOptions struct {
	addr, token     string
	sessionKey      []byte // --session-key-file's contents
	shutdownTimeout time.Duration
	instance        string // "" means the default: see defaultInstance
	leaseDuration   time.Duration
	linger          time.Duration
	// scavengeInterval is DispatcherOptions.ScavengeInterval.
	scavengeInterval time.Duration

	allowedHosts, corsOrigins              []string
	tlsCert, tlsKey                        string
	readTimeout, writeTimeout, idleTimeout time.Duration
	maxConnections                         int
	maxLiveStreams                         int
	liveWriteTimeout                       time.Duration
	pricesFile                             string
	prices                                 *bench.Prices // loaded from pricesFile; nil: the shipped table
	// flushTraces shuts the tracer provider down, sending the spans not yet exported (nil:
	// tracing off).
	flushTraces func()
}

// resolveToken returns the token the server requires: --token when given, else the contents of
// --token-file when given, else $ESTUITE_TOKEN; "" for none. A token must be long enough to
// resist guessing and fit an HTTP header.
func resolveToken(flagToken string, flagSet bool, file string) (string, error) {
	token, from := os.Getenv("ESTUITE_TOKEN"), "ESTUITE_TOKEN"
	switch {
	case flagSet && file != "":
		return "", usagef("--token and --token-file are two ways to give one token: choose one")
	case flagSet:
		token, from = flagToken, "--token"
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the token: %w", err)
		}
		token, from = strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r"), "--token-file "+file
		if token == "" {
			return "", usagef("%s: the file is empty", from)
		}
	}
	switch {
	case token == "":
		return "", nil
	case strings.ContainsFunc(token, unicode.IsControl):
		return "", usagef("%s: the token has a control character (a line break?)", from)
	case utf8.RuneCountInString(token) < MinTokenLength:
		return "", usagef("%s: the token is %d characters long; use at least %d, for instance `openssl rand -hex 32`",
			from, utf8.RuneCountInString(token), MinTokenLength)
	}
	return token, nil
}

// instanceFile is the file in the embedded store's directory that keeps the server's default
// instance name.
const instanceFile = "instance-id"

// maxInstanceLength bounds an instance name, in bytes.
const maxInstanceLength = 256

func validInstance(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errors.New("the instance name is empty")
	case len(name) > maxInstanceLength:
		return fmt.Errorf("the instance name is %d bytes long, at most %d are allowed", len(name), maxInstanceLength)
	case strings.ContainsFunc(name, unicode.IsControl):
		return errors.New("the instance name has a control character")
	}
	return nil
}

// defaultInstance returns the name this server gives itself in the dispatcher lease when
// --instance is not set. It must be the same after a restart — so that a server restarted after a
// crash takes its own, still unexpired, lease back at once instead of waiting for it to expire —
// and differ between the servers of one store, which may each hold the lease in turn.
//
// The embedded store is one process at a time (its file is locked): a random ID kept in the data
// directory, created on the first start. On Azure, many servers share one account: the host name
// and the listen address, since two servers on one host cannot listen on the same address (with
// port 0 the port is the one chosen, which differs at every start).
func defaultInstance(b *backendFlags, ln net.Listener, addr string) (string, error) {
	if b.embedded() {
		return embeddedInstance(filepath.Join(b.dir(), instanceFile))
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("naming this server's instance (set --instance): %w", err)
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		addr = ln.Addr().String()
	}
	return host + "/" + addr, nil
}

// embeddedInstance reads the instance ID kept in path, creating it when there is none yet. The
// embedded store's lock is held, so no other server of this store runs at the same time.
func embeddedInstance(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(data))
		if err := validInstance(id); err != nil {
			return "", fmt.Errorf("%s: %w (delete the file to make a new one, or set --instance)", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading this server's instance ID: %w", err)
	}
	id := uuid.NewString()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("keeping this server's instance ID: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("keeping this server's instance ID: %w", err)
	}
	return id, nil
}

func serve(ctx context.Context, logger *slog.Logger, b *backendFlags, o serveOptions) error {
	tp, tracingEndpoint, err := newTracerProvider(ctx)
	if err != nil {
		return err
	}
	if tp != nil {
		b.tracerProvider = tp
		flushed := false
		flush := func() {
			if flushed {
				return
			}
			flushed = true
			// Sends the spans not yet exported, within the shutdown timeout.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
			defer cancel()
			if ferr := tp.Shutdown(fctx); ferr != nil {
				logger.Warn("tracing: flushing spans failed", "error", ferr)
			}
		}
		defer flush()
		o.flushTraces = flush
	}
	store, err := b.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	var tlsConfig *tls.Config
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("loading --tls-cert and --tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	tcp, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	ln := newLimitListener(tcp, o.maxConnections, logger)
	defer ln.Close()
	instance := o.instance
	if instance == "" {
		if instance, err = defaultInstance(b, ln, o.addr); err != nil {
			return err
		}
	}
	var srv *server.Server
	dispatchOpts := estuite.DispatcherOptions{
		Owner:            instance,
		LeaseDuration:    o.leaseDuration,
		Linger:           o.linger,
		ScavengeInterval: o.scavengeInterval,
		OnScavenge: func(st estuite.ScavengeStats, err error) {
			switch {
			case err != nil && ctx.Err() == nil:
				logger.Warn("scavenge pass failed", "error", err)
			case st.Removed > 0 || st.Redacted > 0:
				logger.Info("scavenged", "streams", st.Streams, "removed", st.Removed, "redacted", st.Redacted, "waiting", st.Waiting)
			}
		},
		OnStep: func(st estuite.DispatchStats, err error) {
			if st.Shard == 0 {
				srv.ObserveDispatch(st, err) // /metrics and /healthz report shard 0's dispatcher
			} else {
				srv.ObserveShardStep(st, err) // GET /admin/stats counts every shard's
			}
			if err != nil && ctx.Err() == nil {
				logger.Warn("dispatch step failed", "shard", st.Shard, "error", err)
			}
		},
	}
	// One dispatcher per feed shard, in a dispatch group that spreads the shards' leases over the
	// servers of the store (with one shard, one dispatcher, as ever).
	var group *estuite.DispatchGroup
	var dispatchers []*estuite.Dispatcher
	if store.FeedShards() > 1 {
		group = estuite.NewDispatchGroup(store, &dispatchOpts)
		dispatchers = group.Dispatchers()
	} else {
		dispatchers = []*estuite.Dispatcher{estuite.NewDispatcher(store, &dispatchOpts)}
	}
	dispatcher := dispatchers[0]
	backendName := "azure"
	if b.embedded() {
		backendName = "embedded"
	}
	srv, err = server.New(server.Options{Store: store, Version: versionLine(), Backend: backendName,
		Token: o.token, SessionKey: o.sessionKey, Logger: logger, Dispatcher: dispatcher, ShardDispatchers: dispatchers,
		AllowedHosts: append(addrHost(o.addr), o.allowedHosts...), CORSOrigins: o.corsOrigins,
		MaxLiveStreams: o.maxLiveStreams, LiveWriteTimeout: o.liveWriteTimeout, Prices: o.prices})
	if err != nil {
		return err
	}
	httpServer := &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: min(maxReadHeaderTimeout, o.readTimeout),
		ReadTimeout:       o.readTimeout,
		WriteTimeout:      o.writeTimeout, // live feeds clear it for their connection
		IdleTimeout:       o.idleTimeout,
		ErrorLog:          httpErrorLog(logger),
	}
	if group != nil {
		if err := group.Start(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	} else if err := dispatcher.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			served <- httpServer.ServeTLS(ln, "", "")
		} else {
			served <- httpServer.Serve(ln)
		}
	}()
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	logger.Info("estuite serving", "addr", ln.Addr().String(), "console", scheme+"://"+ln.Addr().String()+"/ui/",
		"tls", tlsConfig != nil, "backend", b.describe(), "auth", o.token != "",
		"instance", instance, "lease_duration", o.leaseDuration, "max_connections", o.maxConnections,
		"master_key", b.wrapped, "key_cache", b.keyCache, "tracing", tracingEndpoint)

	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	srv.Close() // end live feeds, so that Shutdown need not wait for them
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
	defer cancel()
	if serr := httpServer.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("shutting down the HTTP server: %w", serr)
	}
	stop := dispatcher.Stop
	if group != nil {
		stop = group.Stop
	}
	if derr := stop(); derr != nil && err == nil {
		err = fmt.Errorf("stopping the dispatcher: %w", derr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if o.flushTraces != nil {
		o.flushTraces()
	}
	logger.Info("stopped", "error", err)
	return err
}

// addrHost returns the host of the listen address addr when requests may name it in their Host
// header: a host name or a specific IP address (not a loopback one, always allowed, nor
// 0.0.0.0 or ::, which no client sends).
func addrHost(addr string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" || isLoopback(addr) {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil
	}
	return []string{host}
}

// httpErrorLog is the http.Server's error log: Warn, except for the lines any client can cause
// at will (a failed TLS handshake, a broken HTTP/2 connection), which are Debug so that a scanner
// cannot fill the log at the default level.
func httpErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(errorLogWriter{logger}, "", 0)
}

type errorLogWriter struct{ log *slog.Logger }

// clientCaused are the prefixes of the http.Server's log lines that a client causes.
var clientCaused = []string{
	"http: TLS handshake error", "http2: server: error reading preface", "http2: server connection error",
	"http2: received GOAWAY", "timeout waiting for",
}

func (w errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelWarn
	for _, prefix := range clientCaused {
		if strings.HasPrefix(msg, prefix) {
			level = slog.LevelDebug
		}
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// isLoopback reports whether addr (host:port) listens on loopback addresses only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func newLogger(e *env, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log level %q: %v", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, usagef("log format %q: want text or json", format)
}
