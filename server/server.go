// Package server serves an Estuite store over HTTP: appends, stream reads, the global feed (paged,
// and live as Server-Sent Events), consumer groups (their state, parked events, waiting for a
// group to handle an event), a health check, Prometheus metrics, the last minutes' statistics
// (GET /admin/stats) and a web console (/ui/, console.go).
//
// The HTTP contract — every route, body, error code and limit — is written down in
// docs/http-api.md; clients rely on it, so a change to it is a change to that document first.
// Its "Security" section says what the handler checks itself (Host without a token, Origin,
// CORS, a JSON Content-Type) and what is left to the http.Server and listener (timeouts — live
// streams clear their write deadline —, TLS, a cap on connections).
//
//	srv, err := server.New(server.Options{Store: store, Token: os.Getenv("ESTUITE_TOKEN")})
//	...
//	d := estuite.NewDispatcher(store, &estuite.DispatcherOptions{OnStep: srv.ObserveDispatch})
//	d.Start(ctx)
//	hs := &http.Server{Addr: ":8080", Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
//		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
//
// To export the dispatcher's health too, create the dispatcher first and pass it as
// Options.Dispatcher (its OnStep can call the server's ObserveDispatch through a variable set
// before Start).
//
//	go hs.ListenAndServe()
//	...
//	srv.Close() // ends live streams, so that Shutdown can finish
//	hs.Shutdown(ctx)
package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/bench"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"
)

// Defaults of Options.
const (
	// DefaultMaxBodyBytes bounds an append's request body. An append batch is at most
	// estuite.MaxAppendBytes (4 MiB) as sent to storage, but its JSON can be larger than that
	// before the store refuses it as too large.
	DefaultMaxBodyBytes = 8 << 20
	// DefaultLiveKeepAlive is how often a live feed stream sends a comment line at the least.
	DefaultLiveKeepAlive = 15 * time.Second
	// DefaultMaxResponseBytes is the byte budget of one feed page (Options.MaxResponseBytes).
	DefaultMaxResponseBytes = 4 << 20
	// DefaultLiveWriteTimeout bounds each write of a live feed stream (Options.LiveWriteTimeout).
	DefaultLiveWriteTimeout = 30 * time.Second
	// DefaultMaxLiveStreams is how many live feed streams may be open at once
	// (Options.MaxLiveStreams).
	DefaultMaxLiveStreams = 256
	// DefaultMaxSubscriptionMetrics is how many durable subscriptions /metrics reports by
	// default (Options.MaxSubscriptionMetrics).
	DefaultMaxSubscriptionMetrics = 100
	// ScrapeStorageTimeout bounds the storage reads of one /metrics scrape (the subscription
	// checkpoints and the feed head); when they fail or time out, the scrape leaves the
	// subscription metrics out and the server logs a warning.
	ScrapeStorageTimeout = 5 * time.Second
)

// Limits of the HTTP API's query parameters.
const (
	// DefaultLimit is how many events a read or a feed page returns when the request does not say.
	DefaultLimit = 100
	// MaxLimit is the largest limit a read or a feed page accepts.
	MaxLimit = 1000
	// MaxFeedTypes is how many type parameters one feed request may repeat.
	MaxFeedTypes = 100
)

// Options configure a Server.
type Options struct {
	// Store is the event store served. Required.
	Store *estuite.Store
	// Version and Backend are what GET /healthz reports as the server's version and its
	// storage backend ("embedded", "azure", "memory"…). Optional.
	Version, Backend string
	// Token, when set, is required on every endpoint but /healthz as "Authorization: Bearer
	// <token>" (the scheme in any case). It is compared in constant time.
	Token string
	// SessionKey keys the browser sessions and tickets (POST /auth/session, /auth/ticket): at
	// least MinSessionKeyBytes random bytes. Give every server of a store the same key for a
	// session to hold across them and across restarts; nil means a random key of this process,
	// so that sessions and tickets end when it stops.
	SessionKey []byte
	// AllowedHosts are the host names and IP addresses, besides the loopback addresses and
	// "localhost", that a request's Host header may name when no Token is set (with any port);
	// a request under any other Host is refused with 403 forbidden_host, so that a web page
	// cannot reach a token-less server through DNS rebinding. Entries have no scheme and no
	// port; they match case-insensitively. With a Token, the Host is not checked.
	AllowedHosts []string
	// CORSOrigins are the origins (scheme://host[:port], http or https, no path) of web pages
	// that may call the API from a browser. A request with an Origin header that is neither one
	// of them nor the server's own (the Origin's host and port are the request's Host) is
	// refused with 403 forbidden_origin, with or without a Token. Requests from these origins
	// get CORS headers, and their preflights are answered.
	CORSOrigins []string
	// Logger receives one Debug line per request, and one more line per failed request with its
	// route, stream and error code: Error for 5xx, Info for 4xx (the client's doing, normal in
	// operation), Debug for a request whose client went away before the answer (counted with
	// status 499). nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's metrics and Gatherer is what /metrics serves. When both
	// are nil, the server uses a registry of its own (with the Go and process collectors), so
	// that several servers in one process do not clash. When only Registerer is set, it must
	// also be a prometheus.Gatherer (as *prometheus.Registry is).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// MaxBodyBytes bounds a request body; a larger one is refused with 413 too_large. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// LiveKeepAlive is the longest a live feed stream stays silent: a comment line is sent at
	// least this often. 0 means DefaultLiveKeepAlive.
	LiveKeepAlive time.Duration
	// MaxResponseBytes bounds the memory of one read request by bytes rather than events. A
	// GET /feed page stops after the event that brings its events' stored size (about their data
	// and metadata; binary data grows by 4/3 in its base64 JSON) to MaxResponseBytes: it holds at
	// least one event, may hold fewer than limit, and its next says where to read on. A stream
	// read (GET /streams/{stream}/events) is not cut short, since its clients page by counting
	// events, but is read from storage in pages of about MaxResponseBytes and sent as it is read.
	// 0 means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// LiveWriteTimeout bounds every write of a live feed stream (an event, a keep-alive): a
	// client that does not take the bytes within it is dropped, and what its stream held is
	// released. 0 means DefaultLiveWriteTimeout.
	LiveWriteTimeout time.Duration
	// MaxLiveStreams caps the live feed streams open at once. Over it, GET /feed/live answers
	// 503 too_many_live_streams with Retry-After. 0 means DefaultMaxLiveStreams.
	MaxLiveStreams int
	// Dispatcher, when set, is the dispatcher running in this process: /metrics reports its
	// Health at every scrape (lease held, pending work, time since progress). Its OnStep should
	// still be ObserveDispatch, which feeds the per-step metrics. The seconds since progress are
	// measured with time.Now against the dispatcher's readings: give it the SystemClock (the
	// default). Optional.
	Dispatcher *estuite.Dispatcher
	// ShardDispatchers, for a store of several feed shards, are this process's dispatchers of
	// every shard (a DispatchGroup's), in shard order: /metrics then reports each one's lease,
	// feed head and pending work with a shard label, and /healthz lists the same per shard (also
	// for a store of one shard, given its one dispatcher here). Optional.
	ShardDispatchers []*estuite.Dispatcher
	// MaxSubscriptionMetrics bounds how many durable subscriptions /metrics reports the
	// checkpoint distance of. Each scrape costs one query of the checkpoint partition (one
	// storage request for up to 1000 subscriptions) and, when there is a checkpoint, a read of the
	// feed head (two point reads, usually). 0 means DefaultMaxSubscriptionMetrics; a negative
	// value turns the subscription metrics off, and with them every storage request of a scrape.
	MaxSubscriptionMetrics int
	// Prices are the prices GET /admin/stats puts on the storage requests it counts (the web
	// console's cost page). nil means bench.DefaultPrices(); `estuite serve --prices FILE` loads
	// its own with bench.LoadPrices.
	Prices *bench.Prices
}

// Server is an HTTP front end to one store. Create it with New, serve Handler, pass
// ObserveDispatch to the dispatcher as DispatcherOptions.OnStep, and call Close before
// http.Server.Shutdown.
type Server struct {
	store      *estuite.Store
	version    string // Options.Version
	backend    string // Options.Backend
	tokenHash  [sha256.Size]byte
	sessionKey []byte // Options.SessionKey, or random
	auth       bool

	allowedHosts map[string]bool // lower case, IPv6 without brackets
	corsOrigins  map[string]bool // normalized: see normalizeOrigin

	log       *slog.Logger
	maxBody   int64
	keepAlive time.Duration
	maxResp   int64         // Options.MaxResponseBytes
	liveWrite time.Duration // Options.LiveWriteTimeout
	maxLive   int           // Options.MaxLiveStreams
	metrics   *metrics
	handler   http.Handler

	dispatcher *estuite.Dispatcher   // nil when not given
	shardDisps []*estuite.Dispatcher // Options.ShardDispatchers
	maxSubs    int                   // subscriptions reported; 0: none

	closing   chan struct{}
	closeOnce sync.Once

	liveMu    sync.Mutex
	live      map[*liveConn]struct{}
	liveSlots int // live streams admitted and not yet ended (≤ maxLive); some not yet in live

	stats  *stats     // GET /admin/stats: sampled by a goroutine that Close stops
	verify verifyJobs // POST /admin/verify and its jobs (verify.go)
}

// New returns a server for opts.Store.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("server: Options.Store is required")
	}
	if opts.MaxBodyBytes < 0 {
		return nil, errors.New("server: Options.MaxBodyBytes is negative")
	}
	if opts.LiveKeepAlive < 0 {
		return nil, errors.New("server: Options.LiveKeepAlive is negative")
	}
	allowedHosts, err := parseAllowedHosts(opts.AllowedHosts)
	if err != nil {
		return nil, err
	}
	corsOrigins, err := parseCORSOrigins(opts.CORSOrigins)
	if err != nil {
		return nil, err
	}
	if opts.MaxResponseBytes < 0 || opts.LiveWriteTimeout < 0 || opts.MaxLiveStreams < 0 {
		return nil, errors.New("server: Options.MaxResponseBytes, LiveWriteTimeout and MaxLiveStreams must not be negative")
	}
	maxSubs := opts.MaxSubscriptionMetrics
	switch {
	case maxSubs == 0:
		maxSubs = DefaultMaxSubscriptionMetrics
	case maxSubs < 0:
		maxSubs = 0
	}
	s := &Server{
		store:     opts.Store,
		version:   opts.Version,
		backend:   opts.Backend,
		auth:      opts.Token != "",
		tokenHash: sha256.Sum256([]byte(opts.Token)),

		allowedHosts: allowedHosts,
		corsOrigins:  corsOrigins,

		log:       opts.Logger,
		maxBody:   opts.MaxBodyBytes,
		keepAlive: opts.LiveKeepAlive,
		closing:   make(chan struct{}),
		live:      make(map[*liveConn]struct{}),

		dispatcher: opts.Dispatcher,
		shardDisps: opts.ShardDispatchers,
		maxSubs:    maxSubs,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	switch n := len(opts.SessionKey); {
	case n == 0:
		s.sessionKey = make([]byte, MinSessionKeyBytes)
		_, _ = rand.Read(s.sessionKey)
	case n < MinSessionKeyBytes:
		return nil, fmt.Errorf("server: Options.SessionKey has %d bytes, at least %d are needed", n, MinSessionKeyBytes)
	default:
		s.sessionKey = bytes.Clone(opts.SessionKey)
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.keepAlive == 0 {
		s.keepAlive = DefaultLiveKeepAlive
	}
	s.maxResp = cmp.Or(opts.MaxResponseBytes, DefaultMaxResponseBytes)
	s.liveWrite = cmp.Or(opts.LiveWriteTimeout, DefaultLiveWriteTimeout)
	s.maxLive = cmp.Or(opts.MaxLiveStreams, DefaultMaxLiveStreams)
	reg, gat := opts.Registerer, opts.Gatherer
	switch {
	case reg == nil && gat == nil:
		r := prometheus.NewRegistry()
		if err := r.Register(collectors.NewGoCollector()); err != nil {
			return nil, err
		}
		if err := r.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return nil, err
		}
		reg, gat = r, r
	case reg == nil:
		return nil, errors.New("server: Options.Gatherer is set but Registerer is not")
	case gat == nil:
		g, ok := reg.(prometheus.Gatherer)
		if !ok {
			return nil, errors.New("server: Options.Registerer is not a prometheus.Gatherer; set Options.Gatherer")
		}
		gat = g
	}
	m, err := newMetrics(s, reg)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	prices := bench.DefaultPrices()
	if opts.Prices != nil {
		prices = *opts.Prices
	}
	s.stats = newStats(s, prices, time.Now())
	go s.stats.run(s.closing)
	s.handler = s.routes(promhttp.HandlerFor(gat, promhttp.HandlerOpts{}))
	return s, nil
}

// Handler returns the server's HTTP handler. It is safe to call more than once; every call
// returns the same handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Close ends every live feed stream and consumer group wait (GET /groups/{group}/wait), and
// refuses new ones (503 unavailable); it cancels a running verification (POST /admin/verify) and
// waits until it has stopped, so that http.Server.Shutdown, which waits for running
// requests, can finish (a stream whose client has stopped reading ends within
// Options.LiveWriteTimeout). It stops the sampling of GET /admin/stats too. Other requests are
// served as before. Close does not close the store.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.verify.close()
}

// Route names: the label of the HTTP metrics and the "route" of the request logs.
const (
	routeStreams   = "GET /streams"
	routeAppend    = "POST /streams/{stream}"
	routeStream    = "GET /streams/{stream}"
	routeEvents    = "GET /streams/{stream}/events"
	routeDelete    = "DELETE /streams/{stream}"
	routeGetMeta   = "GET /streams/{stream}/metadata"
	routePutMeta   = "PUT /streams/{stream}/metadata"
	routeScavenge  = "POST /admin/scavenge"
	routeVerify    = "POST /admin/verify"
	routeVerifyGet = "GET /admin/verify"
	routeVerifyJob = "GET /admin/verify/{id}"
	routeVerifyDel = "DELETE /admin/verify/{id}"
	routeFeed      = "GET /feed"
	routeLive      = "GET /feed/live"
	routeFeedAll   = "GET /feed/all"
	routeSubject   = "GET /subjects/{subject}"
	routeForget    = "DELETE /subjects/{subject}"
	routeGroups    = "GET /groups"
	routeGroup     = "GET /groups/{group}"
	routeParked    = "GET /groups/{group}/parked"
	routeReplay    = "POST /groups/{group}/parked/replay"
	routeDiscard   = "POST /groups/{group}/parked/discard"
	routeGroupWait = "GET /groups/{group}/wait"
	routeHealth    = "GET /healthz"
	routeSession   = "GET /auth/session"
	routeLogin     = "POST /auth/session"
	routeLogout    = "DELETE /auth/session"
	routeTicket    = "POST /auth/ticket"
	routeMetrics   = "GET /metrics"
	routeConsole   = "GET /ui/"
	routeUnmatched = "unmatched"
)

// traceContext reads the W3C traceparent and tracestate headers of requests.
var traceContext propagation.TraceContext

// routes builds the request multiplexer inside the middleware that counts, logs, guards (Host,
// Origin, CORS: see guard) and authenticates requests.
func (s *Server) routes(metricsHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	handle := func(route string, open bool, h http.HandlerFunc) {
		mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
			info := requestInfoOf(r)
			info.route = route
			if !open && !s.authorized(w, r) {
				return
			}
			switch route {
			case routeAppend, routePutMeta, routeReplay, routeDiscard, routeLogin:
				if !s.jsonBody(w, r) {
					return
				}
			case routeMetrics:
				w.Header().Set("Cache-Control", "no-store")
			}
			if r.Header.Get("Traceparent") != "" {
				// The client's W3C trace context: a traced store's spans (an append's) continue
				// its trace (docs/http-api.md, "Tracing").
				r = r.WithContext(traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
			}
			h(w, r)
		})
	}
	handle(routeStreams, false, s.handleListStreams)
	handle(routeAppend, false, s.handleAppend)
	handle(routeStream, false, s.handleStream)
	handle(routeEvents, false, s.handleEvents)
	handle(routeDelete, false, s.handleDelete)
	handle(routeGetMeta, false, s.handleGetMetadata)
	handle(routePutMeta, false, s.handlePutMetadata)
	handle(routeScavenge, false, s.handleScavenge)
	handle(routeVerify, false, s.handleVerifyStart)
	handle(routeVerifyGet, false, s.handleVerifyJob)
	handle(routeVerifyJob, false, s.handleVerifyJob)
	handle(routeVerifyDel, false, s.handleVerifyCancel)
	handle(routeFeed, false, s.handleFeed)
	handle(routeLive, false, s.handleLive)
	handle(routeFeedAll, false, s.handleFeedAll)
	handle(routeSubject, false, s.handleSubject)
	handle(routeForget, false, s.handleForget)
	handle(routeGroups, false, s.handleGroups)
	handle(routeGroup, false, s.handleGroup)
	handle(routeParked, false, s.handleParked)
	handle(routeReplay, false, s.handleReplay)
	handle(routeDiscard, false, s.handleDiscard)
	handle(routeGroupWait, false, s.handleGroupWait)
	handle(routeHealth, true, s.handleHealth)
	handle(routeSession, true, s.handleGetSession)
	handle(routeLogin, true, s.handleCreateSession)
	handle(routeLogout, true, s.handleDeleteSession)
	handle(routeTicket, false, s.handleTicket)
	handle(routeMetrics, false, metricsHandler.ServeHTTP)
	handle(routeStats, false, s.handleStats)
	handle(routeSubscriptions, false, s.handleSubscriptions)
	// The console's static files hold no data: they need no token (their API calls do).
	handle(routeConsole, true, s.handleConsole)
	handle("GET /ui", true, s.handleConsoleRedirect)
	// The same paths without a method answer 405; any other path 404. Both after authentication,
	// so that a client without the token learns nothing about the routes. Only a 404 (a path no
	// route matches, whatever the method) gets the %2F hint: a 405's path is a route.
	allowed := map[string]string{
		"/streams":                       "GET, HEAD",
		"/streams/{stream}":              "GET, HEAD, POST, DELETE",
		"/streams/{stream}/events":       "GET, HEAD",
		"/streams/{stream}/metadata":     "GET, HEAD, PUT",
		"/feed":                          "GET, HEAD",
		"/feed/live":                     "GET, HEAD",
		"/feed/all":                      "GET, HEAD",
		"/subjects/{subject}":            "GET, HEAD, DELETE",
		"/admin/scavenge":                "POST",
		"/admin/verify":                  "GET, HEAD, POST",
		"/admin/verify/{id}":             "GET, HEAD, DELETE",
		"/groups":                        "GET, HEAD",
		"/groups/{group}":                "GET, HEAD",
		"/groups/{group}/parked":         "GET, HEAD",
		"/groups/{group}/parked/replay":  "POST",
		"/groups/{group}/parked/discard": "POST",
		"/groups/{group}/wait":           "GET, HEAD",
		"/healthz":                       "GET, HEAD",
		"/auth/session":                  "GET, HEAD, POST, DELETE",
		"/auth/ticket":                   "POST",
		"/metrics":                       "GET, HEAD",
		"/admin/stats":                   "GET, HEAD",
		"/subscriptions":                 "GET, HEAD",
		"/ui/":                           "GET, HEAD",
		"/ui":                            "GET, HEAD",
	}
	for p, methods := range allowed {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			open := p == "/healthz" || p == "/auth/session" || p == "/ui/" || p == "/ui"
			if !open && !s.authorized(w, r) {
				return
			}
			w.Header().Set("Allow", methods)
			s.writeError(w, r, &apiError{Status: http.StatusMethodNotAllowed, Code: codeMethodNotAllowed,
				Message: "method " + r.Method + " is not allowed here; allowed: " + methods,
				quiet:   open}) // anyone may cause it: not worth a line at Info
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(w, r) {
			return
		}
		s.writeError(w, r, &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: "no route for " + r.URL.EscapedPath() + slashHint(r.URL.EscapedPath())})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{route: routeUnmatched}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		rw := &responseWriter{ResponseWriter: w, http1: r.ProtoMajor == 1}
		if r.Body != nil && r.Body != http.NoBody {
			rw.body = &trackedBody{ReadCloser: r.Body}
			r.Body = rw.body
		}
		defer func() {
			if rw.unread {
				// The body was refused unread, and the connection closes after the answer: do not
				// wait for a body that may never come (the server would read it before closing).
				_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			}
			s.finish(rw, r, info, time.Since(start))
		}()
		// Every answer, errors included, is to be taken for what its Content-Type says.
		rw.Header().Set("X-Content-Type-Options", "nosniff")
		if !s.guard(rw, r) {
			return
		}
		s.takeTicket(r, info)
		if msg := uncleanPath(r.URL.EscapedPath()); msg != "" {
			// ServeMux would redirect to the cleaned path: answer in JSON instead.
			if s.authorized(rw, r) {
				s.writeError(rw, r, &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: msg})
			}
			return
		}
		mux.ServeHTTP(rw, r)
	})
}

// uncleanPath explains why ServeMux would redirect the escaped path p elsewhere, or returns "".
func uncleanPath(p string) string {
	if p == "" || p[0] != '/' {
		return "the request path must start with /"
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	if c != p {
		return "the request path has an empty, \".\" or \"..\" segment; a stream name \".\" or \"..\" must be sent percent-encoded (%2E)"
	}
	return ""
}

// authorized checks the bearer token, answering 401 when it is missing or wrong.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	// The scheme is case-insensitive (RFC 9110 §11.1); the token is compared, as a hash so that
	// not even its length shows, in constant time (credentialsOK). A browser may instead send a
	// session cookie, or a ticket on a GET (auth.go).
	if s.credentialsOK(r) {
		return true
	}
	got := r.Header.Get("Authorization")
	msg, challenge := "this endpoint needs \"Authorization: Bearer <token>\" (or, from a browser, a session or ticket: see /auth/session)", `Bearer realm="estuite"`
	switch {
	case got != "":
		msg, challenge = "the bearer token is not valid", `Bearer realm="estuite", error="invalid_token"`
	case requestInfoOf(r).ticketSent:
		msg, challenge = "the ticket is not valid or has expired: get a new one with POST /auth/ticket", `Bearer realm="estuite", error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	s.writeError(w, r, &apiError{Status: http.StatusUnauthorized, Code: codeUnauthorized, Message: msg})
	return false
}

// requestInfo is what the handlers tell the middleware about a request, for metrics and logs.
type requestInfo struct {
	route  string
	stream string
	group  string    // the consumer group of a /groups/{group} route
	err    *apiError // the error answered, if any

	ticketSent, ticketValid, ticketBad bool // the ?ticket= of a GET: see takeTicket
}

type requestInfoKey struct{}

func requestInfoOf(r *http.Request) *requestInfo {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{} // not reached through Handler: record nothing
}

// responseWriter records the status and size of a response. Unwrap lets http.ResponseController
// reach the connection's Flush and deadlines.
//
// An error answered over HTTP/1 before the request's body was read to its end (a 401, 403, 413 or
// 415 refusal) closes the connection ("Connection: close"): otherwise the server would read the
// rest of the body before sending the answer, and a client that announced a body and never sends
// it would wait for ever.
type responseWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	http1  bool         // the request is HTTP/1.x
	body   *trackedBody // the request's body; nil when it has none
	unread bool         // an error was answered with the body not read to its end
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		if code >= 400 && w.http1 && w.body != nil && !w.body.eof.Load() {
			w.unread = true
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish counts and logs a request once it has been answered.
func (s *Server) finish(w *responseWriter, r *http.Request, info *requestInfo, took time.Duration) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	s.metrics.observeRequest(info.route, status)
	ctx := r.Context()
	s.log.LogAttrs(ctx, slog.LevelDebug, "http request",
		slog.String("method", r.Method), slog.String("route", info.route), slog.String("path", r.URL.EscapedPath()),
		slog.Int("status", status), slog.Int64("bytes", w.bytes), slog.Duration("took", took))
	if e := info.err; e != nil {
		attrs := []slog.Attr{slog.String("route", info.route), slog.Int("status", e.Status), slog.String("code", e.Code),
			slog.String("message", e.Message)}
		if info.stream != "" {
			attrs = append(attrs, slog.String("stream", info.stream))
		}
		if info.group != "" {
			attrs = append(attrs, slog.String("group", info.group))
		}
		if e.Err != nil {
			attrs = append(attrs, slog.String("err", e.Err.Error()))
		}
		s.log.LogAttrs(ctx, e.logLevel(), "http request failed", attrs...)
	}
}
