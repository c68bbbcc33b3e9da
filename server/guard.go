package server

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// Error codes of the checks that come before authentication and routing (docs/http-api.md,
// "Security").
const (
	codeForbiddenHost        = "forbidden_host"
	codeForbiddenOrigin      = "forbidden_origin"
	codeUnsupportedMediaType = "unsupported_media_type"
)

// CORS answers: what a preflight allows.
const (
	corsAllowMethods  = "GET, HEAD, POST, DELETE"
	corsAllowHeaders  = "Authorization, Content-Type, Last-Event-ID"
	corsExposeHeaders = "Retry-After, WWW-Authenticate"
	corsMaxAge        = "600"
)

// routePreflight labels the metrics and logs of a CORS preflight the server answered.
const routePreflight = "OPTIONS (CORS preflight)"

// parseAllowedHosts checks and normalizes Options.AllowedHosts: host names or IP addresses,
// without a scheme or port, matched case-insensitively.
func parseAllowedHosts(hosts []string) (map[string]bool, error) {
	set := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		name := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
		switch {
		case name == "":
			return nil, errors.New("server: an allowed host is empty")
		case strings.ContainsAny(name, "/*@?# \t") || strings.ContainsFunc(name, isControl):
			return nil, fmt.Errorf("server: allowed host %q: want a host name or an IP address, without a scheme, path or wildcard", h)
		case strings.Contains(name, ":") && net.ParseIP(name) == nil:
			return nil, fmt.Errorf("server: allowed host %q: want a host name or an IP address, without a port (every port is allowed)", h)
		}
		set[name] = true
	}
	return set, nil
}

// parseCORSOrigins checks and normalizes Options.CORSOrigins.
func parseCORSOrigins(origins []string) (map[string]bool, error) {
	set := make(map[string]bool, len(origins))
	for _, o := range origins {
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("server: CORS origin %q: %v", o, err)
		}
		set[n] = true
	}
	return set, nil
}

// normalizeOrigin returns an origin (RFC 6454: scheme://host[:port], nothing more) in the form
// it is compared in: scheme and host in lower case, the scheme's default port left out.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return "", errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New("want scheme://host[:port] with the scheme http or https")
	case u.Host == "" || u.Opaque != "":
		return "", errors.New("want scheme://host[:port]: the host is missing")
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(o, "#"):
		return "", errors.New("want scheme://host[:port], without user, path (not even \"/\"), query or fragment")
	}
	host, port := splitHostPort(u.Host)
	if host == "" {
		return "", errors.New("want scheme://host[:port]: the host is missing")
	}
	if port == defaultPort(u.Scheme) {
		port = ""
	}
	return u.Scheme + "://" + joinHostPort(host, port), nil
}

// splitHostPort splits a Host header or URL authority into its host (lower case, IPv6 without
// brackets) and port ("" when absent).
func splitHostPort(hostport string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return strings.ToLower(h), p
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")), ""
}

func joinHostPort(host, port string) string {
	if port == "" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// hostAllowed reports whether a request's Host header names this server as a browser cannot be
// tricked into naming it: a loopback address, "localhost", or one of Options.AllowedHosts. A
// DNS-rebinding page reaches the server under a name its attacker controls, and its requests
// carry that name.
func (s *Server) hostAllowed(hostport string) bool {
	host, _ := splitHostPort(hostport)
	if host == "" {
		return false
	}
	if host == "localhost" || s.allowedHosts[host] {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// originAllowed reports whether a request from a page of origin may be served: a configured
// CORS origin (cors true), or the server's own origin — the page was served under the very
// host the request names.
func (s *Server) originAllowed(origin, requestHost string) (ok, cors bool) {
	n, err := normalizeOrigin(origin)
	if err != nil {
		return false, false
	}
	if s.corsOrigins[n] {
		return true, true
	}
	scheme, hostport, _ := strings.Cut(n, "://")
	oh, op := splitHostPort(hostport)
	if op == "" {
		op = defaultPort(scheme)
	}
	rh, rp := splitHostPort(requestHost)
	if rp == "" {
		rp = defaultPort(scheme)
	}
	return oh != "" && oh == rh && op == rp, false
}

// guard runs the checks that come before authentication and routing: the Host header (without a
// token), the Origin header, and CORS preflights. It answers the request and returns false when
// the request is refused or was a preflight.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) bool {
	if len(s.corsOrigins) > 0 {
		w.Header().Add("Vary", "Origin")
	}
	// /healthz answers under any Host, as it needs no token: it writes nothing and tells no data
	// (numbers: leases, heads, pending counts; names and errors only under an allowed Host), and
	// probes (a load balancer's, Kubernetes') name the server by an address of their own.
	if !s.auth && r.URL.Path != "/healthz" && !s.hostAllowed(r.Host) {
		s.writeError(w, r, &apiError{Status: http.StatusForbidden, Code: codeForbiddenHost,
			Message: fmt.Sprintf("the Host %q is not allowed: without a token, the server answers only to loopback addresses, \"localhost\" and its allowed hosts", r.Host)})
		return false
	}
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return true
	}
	ok, cors := false, false
	if len(origins) == 1 {
		ok, cors = s.originAllowed(origins[0], r.Host)
	}
	if !ok {
		s.writeError(w, r, &apiError{Status: http.StatusForbidden, Code: codeForbiddenOrigin,
			Message: fmt.Sprintf("requests from the origin %q are not allowed", strings.Join(origins, ", "))})
		return false
	}
	h := w.Header()
	if cors {
		h.Set("Access-Control-Allow-Origin", origins[0])
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		requestInfoOf(r).route = routePreflight
		h.Set("Access-Control-Allow-Origin", origins[0])
		h.Del("Access-Control-Expose-Headers")
		h.Set("Access-Control-Allow-Methods", corsAllowMethods)
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", corsMaxAge)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// jsonBody checks that a request's body is declared as JSON, answering 415 when it is not. A
// page of any origin may POST a text/plain or form body without asking first (a CORS "simple"
// request); a JSON body needs a preflight, which the Origin check answers.
func (s *Server) jsonBody(w http.ResponseWriter, r *http.Request) bool {
	cts := r.Header.Values("Content-Type")
	msg := ""
	switch {
	case len(cts) == 0:
		msg = "the request body must be JSON, sent with Content-Type: application/json; the Content-Type header is missing"
	case len(cts) > 1:
		msg = "the request has more than one Content-Type header"
	default:
		mt, params, err := mime.ParseMediaType(cts[0])
		switch {
		case err != nil:
			msg = fmt.Sprintf("the Content-Type %q is malformed: %v", cts[0], err)
		case mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")):
			msg = fmt.Sprintf("the request body must be JSON, sent with Content-Type: application/json, not %q", cts[0])
		case params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8"):
			msg = fmt.Sprintf("the request body must be UTF-8, not %q", params["charset"])
		}
	}
	if msg == "" {
		return true
	}
	s.writeError(w, r, &apiError{Status: http.StatusUnsupportedMediaType, Code: codeUnsupportedMediaType, Message: msg})
	return false
}

// trackedBody is a request body that records whether it was read to its end.
type trackedBody struct {
	io.ReadCloser
	eof atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}
