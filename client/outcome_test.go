package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
)

// TestAppendOutcomeByStatus: a 5xx answer to an append leaves its outcome unknown (an
// *UnknownOutcomeError holding the commit ID sent, matching estuite.ErrUnavailable); a 4xx is a
// refusal; a 3xx a *RedirectError naming the Location; a read's 5xx is a plain *Error.
func TestAppendOutcomeByStatus(t *testing.T) {
	var status int
	var body string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 1<<10)
		n, _ := r.Body.Read(b)
		body = string(b[:n])
		if status/100 == 3 {
			w.Header().Set("Location", "https://elsewhere.example/streams/s")
		}
		w.WriteHeader(status)
	}))
	defer ts.Close()
	c, err := client.New(ts.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev := []estuite.EventData{{Type: "T", Data: []byte(`{"a": "<&>"}`)}}
	for _, status = range []int{500, 502, 503, 504} {
		_, err := c.Append(ctx, "s", ev, nil)
		var u *client.UnknownOutcomeError
		if !errors.Is(err, estuite.ErrUnavailable) || !errors.As(err, &u) || !strings.Contains(body, `"commitId":"`+u.CommitID+`"`) {
			t.Errorf("%d: %v; sent %s", status, err, body)
		}
		if strings.HasPrefix(err.Error(), "client: estuite:") || !strings.Contains(body, `{"a": "<&>"}`) {
			t.Errorf("%d: %q; sent %s", status, err, body)
		}
		if _, err := c.Version(ctx, "s"); err == nil || errors.As(err, &u) {
			t.Errorf("a read's %d: %v", status, err)
		}
	}
	for _, status = range []int{400, 409} {
		if _, err := c.Append(ctx, "s", ev, nil); err == nil || errors.Is(err, estuite.ErrUnavailable) {
			t.Errorf("%d: %v", status, err)
		}
	}
	for _, status = range []int{301, 307, 308} {
		_, err := c.Append(ctx, "s", ev, nil)
		var r *client.RedirectError
		if !errors.As(err, &r) || r.Status != status || r.Location != "https://elsewhere.example/streams/s" || errors.Is(err, estuite.ErrUnavailable) {
			t.Errorf("%d: %v", status, err)
		}
	}
}

// TestNewHidesURLSecrets: New refuses a URL with a user, password or query without echoing them.
func TestNewHidesURLSecrets(t *testing.T) {
	for _, u := range []string{"http://u:s3cret@127.0.0.1:1", "http://127.0.0.1:1/?token=s3cret", "ftp://u:s3cret@h", "http://h/#s3cret", "http://u:s3cret@h:x/"} {
		if _, err := client.New(u, nil); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("New(%q) = %v", u, err)
		}
	}
}

// TestAppendThatCannotConnect: a connection refused means the request was never sent: a plain
// failure, not an unknown outcome.
func TestAppendThatCannotConnect(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	c, err := client.New(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Append(context.Background(), "s", []estuite.EventData{{Type: "T"}}, nil)
	var u *client.UnknownOutcomeError
	if err == nil || errors.As(err, &u) || errors.Is(err, estuite.ErrUnavailable) {
		t.Errorf("Append to a closed port = %v", err)
	}
}
