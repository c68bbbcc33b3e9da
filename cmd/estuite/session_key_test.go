package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// With --session-key-file, a console session outlives a restart of the server; without it, it
// ends with the process. A key file too short is a usage error.
func TestServeSessionKeyFileKeepsSessionsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	tokenFile, keyFile := filepath.Join(dir, "token"), filepath.Join(dir, "key")
	const token = "0123456789abcdef-token"
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	login := func(p *inProcess) string {
		res, err := p.client.Post(p.url("/auth/session"), "application/json", bytes.NewReader([]byte(`{"token":"`+token+`"}`)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent || len(res.Cookies()) != 1 {
			t.Fatalf("POST /auth/session: %d, %v", res.StatusCode, res.Cookies())
		}
		return res.Cookies()[0].Name + "=" + res.Cookies()[0].Value
	}
	feedWith := func(p *inProcess, cookie string) int {
		req, _ := http.NewRequest("GET", p.url("/feed"), nil)
		req.Header.Set("Cookie", cookie)
		res, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		args []string
		want int
	}{{[]string{"--session-key-file", keyFile}, http.StatusOK}, {nil, http.StatusUnauthorized}} {
		p := serveInProcess(t, nil, append([]string{"--data", data, "--token-file", tokenFile}, c.args...)...)
		cookie := login(p)
		if got := feedWith(p, cookie); got != http.StatusOK {
			t.Fatalf("%v: the session before the restart: %d", c.args, got)
		}
		p.stop()
		p = serveInProcess(t, nil, append([]string{"--data", data, "--token-file", tokenFile}, c.args...)...)
		if got := feedWith(p, cookie); got != c.want {
			t.Fatalf("%v: the session after a restart: %d, want %d", c.args, got, c.want)
		}
		p.stop()
	}
	if err := os.WriteFile(keyFile, key[:16], 0o600); err != nil {
		t.Fatal(err)
	}
	if code := run(t.Context(), []string{"serve", "--data", data, "--addr", freePort(t), "--token-file", tokenFile, "--session-key-file", keyFile}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("a 16-byte key file: exit %d, want 2", code)
	}
}
