package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/estuite/estuite"
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
			var b backendFlags
			b.register(fs)
			addr := fs.String("addr", DefaultAddr, "address to listen on")
			token := fs.String("token", os.Getenv("ESTUITE_TOKEN"), "require Authorization: Bearer TOKEN on every endpoint but /healthz (default $ESTUITE_TOKEN)")
			insecure := fs.Bool("insecure", false, "allow listening on a non-loopback address without a token")
			logFormat := fs.String("log-format", "text", "log format: text or json")
			logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
			shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long to wait for in-flight requests on shutdown")
			var o serveOptions
			fs.StringVar(&o.instance, "instance", "", "this server's name in the dispatcher lease: keep it the same across restarts and unique among the servers of one store.\n"+
				"Default: on the embedded store, a random ID kept in DATA/"+instanceFile+" (created on first start);\n"+
				"on Azure, HOSTNAME/ADDR (the host name and --addr, so that two servers on one host differ)")
			fs.DurationVar(&o.leaseDuration, "lease-duration", estuite.DefaultLeaseDuration, "how long the dispatcher lease lasts without renewal (renewed every third of it).\n"+
				"Shorter: another server takes over sooner after this one dies, for more lease requests\n"+
				"(each server reads the lease, and its holder rewrites it, every third of the duration);\n"+
				"it must stay well above the storage latency, or leases flap between servers")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("serve takes no arguments")
				}
				if o.leaseDuration <= 0 {
					return usagef("--lease-duration must be positive, not %v", o.leaseDuration)
				}
				if err := validInstance(o.instance); o.instance != "" && err != nil {
					return usagef("--instance: %v", err)
				}
				logger, err := newLogger(e, *logFormat, *logLevel)
				if err != nil {
					return err
				}
				if *token == "" && !*insecure && !isLoopback(*addr) {
					return usagef("refusing to listen on %s without a token: set --token (or ESTUITE_TOKEN), or pass --insecure", *addr)
				}
				o.addr, o.token, o.shutdownTimeout = *addr, *token, *shutdownTimeout
				return serve(ctx, logger, &b, o)
			}
		},
	})
}

// serveOptions are the settings of `estuite serve` besides its backend and logging.
type serveOptions struct {
	addr, token     string
	shutdownTimeout time.Duration
	instance        string // "" means the default: see defaultInstance
	leaseDuration   time.Duration
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
	store, err := b.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	instance := o.instance
	if instance == "" {
		if instance, err = defaultInstance(b, ln, o.addr); err != nil {
			return err
		}
	}
	var srv *server.Server
	dispatcher := estuite.NewDispatcher(store, &estuite.DispatcherOptions{
		Owner:         instance,
		LeaseDuration: o.leaseDuration,
		OnStep: func(st estuite.DispatchStats, err error) {
			srv.ObserveDispatch(st, err)
			if err != nil && ctx.Err() == nil {
				logger.Warn("dispatch step failed", "error", err)
			}
		},
	})
	srv, err = server.New(server.Options{Store: store, Token: o.token, Logger: logger, Dispatcher: dispatcher})
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	if err := dispatcher.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()
	logger.Info("estuite serving", "addr", ln.Addr().String(), "backend", b.describe(), "auth", o.token != "",
		"instance", instance, "lease_duration", o.leaseDuration)

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
	if derr := dispatcher.Stop(); derr != nil && err == nil {
		err = fmt.Errorf("stopping the dispatcher: %w", derr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	logger.Info("stopped", "error", err)
	return err
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
