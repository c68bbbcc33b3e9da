package throttle

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Server is a Proxy listening on a loopback port.
type Server struct {
	// Proxy is the proxy served; read its Stats.
	*Proxy
	// URL is the proxy's base URL, "http://127.0.0.1:PORT".
	URL string
	// ConnectionString is the connection string given to Front with its TableEndpoint pointed at
	// the proxy (the account path kept); empty for a Server from Start.
	ConnectionString string

	srv *http.Server
	ln  net.Listener
}

// Start serves p on 127.0.0.1 at a port the system picks, until Close.
func (p *Proxy) Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Proxy: p, URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: p}, ln: ln}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server and closes its connections.
func (s *Server) Close() error { return s.srv.Close() }

// Front starts a proxy with limits l in front of the table service that connectionString names
// by its TableEndpoint (Azurite's connection strings do), and returns it with a connection
// string that reaches the same account through it.
func Front(connectionString string, l Limits) (*Server, error) {
	parts := strings.Split(connectionString, ";")
	at := -1
	var endpoint *url.URL
	for i, kv := range parts {
		k, v, _ := strings.Cut(kv, "=")
		if strings.EqualFold(strings.TrimSpace(k), "TableEndpoint") {
			u, err := url.Parse(strings.TrimSpace(v))
			if err != nil || u.Host == "" {
				return nil, errors.New("throttle: the connection string's TableEndpoint is not a URL")
			}
			at, endpoint = i, u
		}
	}
	if at < 0 {
		return nil, errors.New("throttle: the connection string has no TableEndpoint")
	}
	s, err := New(endpoint, l).Start()
	if err != nil {
		return nil, err
	}
	proxied := *endpoint
	proxied.Scheme, proxied.Host = "http", strings.TrimPrefix(s.URL, "http://")
	parts[at] = "TableEndpoint=" + proxied.String()
	s.ConnectionString = strings.Join(parts, ";")
	return s, nil
}
