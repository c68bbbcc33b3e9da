// Package client is a Go client of the Estuite HTTP API (docs/http-api.md): appends, stream reads,
// the feed, deletes and metadata, subjects, consumer groups, scavenging and verification.
//
//	c, err := client.New("http://127.0.0.1:2113", &client.Options{Token: os.Getenv("ESTUITE_TOKEN")})
//	res, err := c.Append(ctx, "order-42", []estuite.EventData{{Type: "OrderPlaced", Data: []byte(`{}`)}}, nil)
//	if errors.Is(err, estuite.ErrWrongExpectedVersion) { ... }
//
// Errors the server answers with its JSON error body are *Error values; those with a counterpart
// in package estuite match its sentinel errors with errors.Is (a wrong expected version is
// estuite.ErrWrongExpectedVersion, an unknown stream estuite.ErrStreamNotFound, …). Every answer
// is read to at most Options.MaxResponseBytes, so a misbehaving server cannot make the client
// hold more than that. Redirects are never followed (a 3xx answer is a *RedirectError), and an
// append whose outcome is unknown is an *UnknownOutcomeError (estuite.ErrUnavailable) holding
// the commit ID to retry with. Inputs the store refuses before any storage request — an empty
// name, JSON null or non-object metadata — the client refuses before sending, with the same
// *estuite.InvalidInputError.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/estuite/estuite"
)

// DefaultMaxResponseBytes bounds an answer's body by default (Options.MaxResponseBytes): above
// the server's largest page (a feed page of its default 4 MiB budget holds at least one event of
// up to about 1 MB, which JSON and base64 can make a few times larger).
const DefaultMaxResponseBytes = 64 << 20

// Options configure a Client. nil means defaults.
type Options struct {
	// Token is sent as "Authorization: Bearer <token>" when set.
	Token string
	// HTTPClient makes the requests; nil means a client with a 60 s timeout per request.
	// Redirects are never followed, whatever its CheckRedirect: a 3xx answer is a *RedirectError.
	HTTPClient *http.Client
	// MaxResponseBytes bounds the body of every answer; a larger one fails the call with
	// ErrResponseTooLarge. 0 means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// UserAgent, when set, is sent as the User-Agent header.
	UserAgent string
}

// Client calls one Estuite server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	hc        *http.Client
	maxBytes  int64
	userAgent string
}

// ErrResponseTooLarge is returned when an answer's body is larger than Options.MaxResponseBytes.
var ErrResponseTooLarge = errors.New("client: the server's answer is larger than Options.MaxResponseBytes")

// New returns a client of the server at baseURL (http or https, e.g. "http://127.0.0.1:2113";
// a path, if any, is the prefix of every route). opts may be nil.
func New(baseURL string, opts *Options) (*Client, error) {
	// The messages never show the URL's user, password, query or fragment: they may be secrets.
	u, err := url.Parse(baseURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return nil, fmt.Errorf("client: the server URL is not a URL: %w", err)
	}
	shown := *u
	shown.User, shown.RawQuery, shown.ForceQuery, shown.Fragment, shown.RawFragment = nil, "", false, "", ""
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: the server URL %q must be http://HOST[:PORT] or https://HOST[:PORT]", shown.String())
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: the server URL %q must have no query, fragment, user or password", shown.String())
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	hc := http.Client{Timeout: 60 * time.Second}
	c := &Client{base: u, maxBytes: DefaultMaxResponseBytes}
	if opts != nil {
		c.token, c.userAgent = opts.Token, opts.UserAgent
		if opts.HTTPClient != nil {
			hc = *opts.HTTPClient // a copy: the caller's client is left as it is
		}
		if opts.MaxResponseBytes < 0 {
			return nil, errors.New("client: Options.MaxResponseBytes is negative")
		}
		if opts.MaxResponseBytes > 0 {
			c.maxBytes = opts.MaxResponseBytes
		}
	}
	// A redirect is never followed: Go's client would turn a POST or a DELETE into a GET, whose
	// answer reads as a success. do refuses a 3xx answer instead (a *RedirectError).
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	return c, nil
}

// BaseURL returns the server's URL as given to New, without a trailing slash.
func (c *Client) BaseURL() string { return c.base.String() }

// PathSegment encodes a name (a stream, a subject, a consumer group) as one path segment, as the
// API wants it: percent-encoded, "/" as %2F, and the names "." and ".." as %2E and %2E%2E.
func PathSegment(name string) string {
	switch name {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(name)
}

// request is one call: its method, its escaped path (segments already encoded), query and body.
type request struct {
	method string
	path   string // escaped, from the route's root: "/streams/" + PathSegment(name)
	query  url.Values
	body   any // encoded as JSON when not nil (see encodeJSON)
	// field and name are the name the path holds ("stream", "group", "subject") and its value,
	// which must not be empty.
	field, name string
}

// named returns req for the name (of kind field) that its path holds.
func (req request) named(field, name string) request {
	req.field, req.name = field, name
	return req
}

// do sends req and returns the answer's status, headers and body (at most c.maxBytes), or the
// server's error body as an *Error for a status of 400 and above.
func (c *Client) do(ctx context.Context, req request) (int, http.Header, []byte, error) {
	if req.field != "" && req.name == "" {
		return 0, nil, nil, &estuite.InvalidInputError{Field: req.field, Reason: "must not be empty"}
	}
	u := *c.base
	u.RawPath = c.base.EscapedPath() + req.path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("client: the path %q: %w", u.RawPath, err)
	}
	u.Path = p
	if len(req.query) > 0 {
		u.RawQuery = req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		b, err := encodeJSON(req.body)
		if err != nil {
			return 0, nil, nil, err
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return 0, nil, nil, err
	}
	hr.URL = &u // keep the path's encoding exactly as built
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.userAgent != "" {
		hr.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return resp.StatusCode, resp.Header, nil, fmt.Errorf("client: reading the answer to %s %s: %w", req.method, req.path, err)
	}
	if int64(len(data)) > c.maxBytes {
		return resp.StatusCode, resp.Header, nil, fmt.Errorf("%w (%s %s)", ErrResponseTooLarge, req.method, req.path)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return resp.StatusCode, resp.Header, data, &RedirectError{Status: resp.StatusCode, Method: req.method, Path: req.path,
			Location: resp.Header.Get("Location")}
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, resp.Header, data, errorFrom(resp, data)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// call sends req and decodes a successful answer's JSON body into out (when out is not nil).
func (c *Client) call(ctx context.Context, req request, out any) (int, http.Header, error) {
	status, h, data, err := c.do(ctx, req)
	if err != nil || out == nil {
		return status, h, err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return status, h, fmt.Errorf("client: the answer to %s %s is not what the API says (%v)", req.method, req.path, err)
	}
	return status, h, nil
}

// streamPath is the escaped path of a stream's route: /streams/{stream}, then suffix.
func streamPath(stream, suffix string) string { return "/streams/" + PathSegment(stream) + suffix }

// parseInt reads a decimal header value; ok is false when it is absent or malformed.
func parseInt(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// object is a JSON object whose members encodeJSON writes in order.
type object []member

// member is one member of an object.
type member struct {
	key   string
	value any
}

// encodeJSON encodes v as JSON without HTML escapes (<, > and & as they are), and writes every
// json.RawMessage in an object or a []object — a caller's data, metadata or custom object — byte
// for byte, where encoding/json would compact it: the server gets, and stores, the caller's bytes
// (a commit retried through the client is then the same commit as one sent by any other means).
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	err := writeJSON(&b, v)
	return b.Bytes(), err
}

func writeJSON(b *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case json.RawMessage:
		b.Write(v)
	case object:
		b.WriteByte('{')
		for i, m := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, m.key); err != nil {
				return err
			}
			b.WriteByte(':')
			if err := writeJSON(b, m.value); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case []object:
		b.WriteByte('[')
		for i, o := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, o); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	default:
		enc := json.NewEncoder(b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1) // Encode's newline
	}
	return nil
}
