package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// inProcess is an `estuite serve` run in the test's process.
type inProcess struct {
	addr   string
	logs   *syncBuffer
	client *http.Client
	scheme string
	cancel context.CancelFunc
	code   chan int
}

// serveInProcess runs `estuite serve --addr ADDR args...` in this process and waits until its
// /healthz answers (over HTTPS when args have --tls-cert; client then trusts pool).
func serveInProcess(t *testing.T, pool *x509.CertPool, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{addr: freePort(t), logs: &syncBuffer{}, cancel: cancel, code: make(chan int, 1), scheme: "http",
		client: &http.Client{Timeout: 10 * time.Second}}
	if pool != nil {
		p.scheme = "https"
		p.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	go func() { p.code <- run(ctx, append([]string{"serve", "--addr", p.addr}, args...), io.Discard, p.logs) }()
	t.Cleanup(func() {
		if p.stop() != 0 || t.Failed() {
			t.Logf("server logs:\n%s", p.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := p.client.Get(p.url("/healthz"))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return p
			}
		}
		select {
		case code := <-p.code:
			p.code <- code
			t.Fatalf("serve exited with %d:\n%s", code, p.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up (%v):\n%s", err, p.logs.String())
		}
	}
}

func (p *inProcess) url(path string) string { return p.scheme + "://" + p.addr + path }

// stop stops the server as SIGTERM would and returns its exit code.
func (p *inProcess) stop() int {
	p.cancel()
	code := <-p.code
	p.code <- code
	return code
}

// runServe runs `estuite serve args...` in this process until it exits or 5 s pass (then it is
// stopped), and returns its exit code and output.
func runServe(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out syncBuffer
	code := run(ctx, append([]string{"serve"}, args...), &out, &out)
	return code, out.String()
}

// TestServeTokenSources checks where the token comes from — --token, --token-file (without its
// trailing newline) or ESTUITE_TOKEN — and that a short or unusable one is a usage error.
func TestServeTokenSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "0123456789abcdef"
	t.Setenv("ESTUITE_TOKEN", "from-the-environment")
	for _, c := range []struct {
		token   string
		set     bool
		file    string
		want    string
		problem string
	}{
		{want: "from-the-environment"},
		{token: good, set: true, want: good},
		{file: write("lf", good+"\n"), want: good},
		{file: write("crlf", good+"\r\n"), want: good},
		{file: write("none", good), want: good},
		{token: good, set: true, file: write("both", good), problem: "choose one"},
		{token: "short", set: true, problem: "at least 16"},
		{token: "", set: true, want: ""}, // --token "" turns the environment's off
		{file: write("short", "fifteen-chars!!\n"), problem: "at least 16"},
		{file: write("empty", "\n"), problem: "empty"},
		{file: write("two-lines", good+"\n"+good+"\n"), problem: "control character"},
		{file: filepath.Join(dir, "missing"), problem: "reading the token"},
	} {
		got, err := resolveToken(c.token, c.set, c.file)
		switch {
		case c.problem == "" && (err != nil || got != c.want):
			t.Errorf("%+v: %q, %v; want %q", c, got, err, c.want)
		case c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)):
			t.Errorf("%+v: %q, %v; want an error about %q", c, got, err, c.problem)
		}
	}
	code, out := runServe(t, nil, "--data", t.TempDir(), "--addr", freePort(t), "--token", "short")
	if code != 2 || !strings.Contains(out, "at least 16") {
		t.Fatalf("serve --token short: exit %d\n%s", code, out)
	}
}

// TestServeHelpShowsNoSecrets checks that --help does not print the token or the connection
// string taken from the environment as flag defaults.
func TestServeHelpShowsNoSecrets(t *testing.T) {
	const token, key = "secret-token-0123456789", "AccountKey=c2VjcmV0LWtleQ=="
	code, out := runServe(t, map[string]string{"ESTUITE_TOKEN": token, "AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;" + key}, "--help")
	if code != 0 || strings.Contains(out, token) || strings.Contains(out, key) {
		t.Fatalf("serve --help: exit %d, shows a secret:\n%s", code, out)
	}
}

// TestServeWarnsWhenInsecure checks the warning of --insecure: it is logged before anything
// else happens (here the store cannot be opened, so the server never listens).
func TestServeWarnsWhenInsecure(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runServe(t, map[string]string{"ESTUITE_TOKEN": ""}, "--data", filepath.Join(notADir, "data"), "--addr", "0.0.0.0:0", "--insecure")
	if code != 1 || !strings.Contains(out, "level=WARN") || !strings.Contains(out, "INSECURE") {
		t.Fatalf("serve --insecure on 0.0.0.0: exit %d\n%s", code, out)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key into dir, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "estuite test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// TestServeOverTLS serves HTTPS with --tls-cert and --tls-key: appends and reads work, a failed
// handshake is not worth a warning, and the two flags go together.
func TestServeOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	p := serveInProcess(t, pool, "--data", filepath.Join(dir, "data"), "--tls-cert", certFile, "--tls-key", keyFile)
	req, _ := http.NewRequest("POST", p.url("/streams/s"), strings.NewReader(`{"events": [{"type": "A"}]}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 || res.TLS == nil {
		t.Fatalf("append over HTTPS: %d, TLS %v", res.StatusCode, res.TLS != nil)
	}
	// A client that does not trust the certificate fails its handshake; the server logs that at Debug.
	if _, err := http.Get(p.url("/healthz")); err == nil {
		t.Fatal("a client without the certificate in its pool connected")
	}
	if conn, err := net.Dial("tcp", p.addr); err == nil {
		io.WriteString(conn, "\x16\x03\x01\x00\x05garbage")
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, conn)
		conn.Close()
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	if logs := p.logs.String(); strings.Contains(logs, "level=WARN") {
		t.Errorf("failed handshakes logged at WARN:\n%s", logs)
	}

	code, out := runServe(t, nil, "--data", t.TempDir(), "--addr", freePort(t), "--tls-cert", certFile)
	if code != 2 || !strings.Contains(out, "go together") {
		t.Fatalf("--tls-cert without --tls-key: exit %d\n%s", code, out)
	}
}

// TestServeRefusesAWritableDataFolder checks that the embedded store is refused when its folder or
// its file is writable by group or others, and opens once it is private again.
func TestServeRefusesAWritableDataFolder(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var out syncBuffer
	if code := run(context.Background(), []string{"append", "--data", data, "s", "A"}, io.Discard, &out); code != 0 {
		t.Fatalf("append on a new store: exit %d\n%s", code, out.String())
	}
	db := filepath.Join(data, "estuite.db")
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{data, 0o777}, {data, 0o720}, {data, 0o702}, {db, 0o666}, {db, 0o620}} {
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
		code, msg := runServe(t, nil, "--data", data, "--addr", freePort(t))
		if code != 1 || !strings.Contains(msg, "writable by its group or others") || !strings.Contains(msg, "chmod go-w "+c.path) {
			t.Errorf("%s at %04o: exit %d\n%s", c.path, c.mode, code, msg)
		}
		os.Chmod(data, 0o700)
		os.Chmod(db, 0o600)
	}
	if code := run(context.Background(), []string{"read", "--data", data, "s"}, io.Discard, &out); code != 0 {
		t.Fatalf("read once private again: exit %d\n%s", code, out.String())
	}
}

// TestServeHostAndOriginFlags checks --allowed-host and --cors-origin: without a token, a request
// under an unknown Host is refused, one under an allowed host served; a configured origin gets
// CORS headers, another is refused.
func TestServeHostAndOriginFlags(t *testing.T) {
	t.Setenv("ESTUITE_TOKEN", "")
	p := serveInProcess(t, nil, "--data", t.TempDir(), "--allowed-host", "estuite.test", "--cors-origin", "https://app.example")
	get := func(header ...string) *http.Response {
		req, _ := http.NewRequest("GET", p.url("/feed"), nil)
		for i := 0; i+1 < len(header); i += 2 {
			if header[i] == "Host" {
				req.Host = header[i+1]
			} else {
				req.Header.Set(header[i], header[i+1])
			}
		}
		res, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	for _, c := range []struct {
		header []string
		status int
		acao   string
	}{
		{[]string{"Host", "estuite.test:2113"}, 200, ""},
		{[]string{"Host", "attacker.example:2113"}, 403, ""},
		{[]string{"Origin", "https://app.example"}, 200, "https://app.example"},
		{[]string{"Origin", "https://attacker.example"}, 403, ""},
	} {
		res := get(c.header...)
		if res.StatusCode != c.status || res.Header.Get("Access-Control-Allow-Origin") != c.acao {
			t.Errorf("%q: %d, Access-Control-Allow-Origin %q; want %d, %q", c.header, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"), c.status, c.acao)
		}
	}
	code, out := runServe(t, nil, "--data", t.TempDir(), "--addr", freePort(t), "--cors-origin", "https://app.example/")
	if code == 0 || !strings.Contains(out, "https://app.example/") {
		t.Errorf("--cors-origin with a path: exit %d\n%s", code, out)
	}
}

// TestServeClosesIdleAndSlowConnections checks --idle-timeout (an idle keep-alive connection is
// closed) and --read-timeout (a body that never completes does not hold its connection).
func TestServeClosesIdleAndSlowConnections(t *testing.T) {
	t.Setenv("ESTUITE_TOKEN", "")
	p := serveInProcess(t, nil, "--data", t.TempDir(), "--idle-timeout", "300ms", "--read-timeout", "500ms")
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 || res.Close {
		t.Fatalf("healthz on a kept connection: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("an idle connection: read %d bytes, %v; want it closed by the server within 5 s", n, err)
	}

	slow, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "POST /streams/s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"events\"")
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	sbr := bufio.NewReader(slow)
	res, err = http.ReadResponse(sbr, nil)
	if err != nil || res.StatusCode != http.StatusBadRequest || !res.Close {
		t.Fatalf("a body that never completes: %v %v; want 400 and the connection closed within 5 s", res, err)
	}
	io.Copy(io.Discard, res.Body)
	if n, err := sbr.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after a body that never completed: read %d bytes, %v; want the connection closed", n, err)
	}
}

// TestServeCapsConnections checks --max-connections: while the cap is reached, a new connection
// waits, and is served once another closes.
func TestServeCapsConnections(t *testing.T) {
	t.Setenv("ESTUITE_TOKEN", "")
	p := serveInProcess(t, nil, "--data", t.TempDir(), "--max-connections", "2")
	p.client.CloseIdleConnections() // the start-up check's connection
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A request answered on each shows that the server accepted it.
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", len(held), res, err)
		}
		held = append(held, c)
	}
	answered := make(chan error, 1)
	go func() {
		res, err := (&http.Client{Timeout: 10 * time.Second}).Get(p.url("/healthz"))
		if err == nil {
			res.Body.Close()
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was served while two were open (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	if err := <-answered; err != nil {
		t.Fatalf("the third connection, once one closed: %v", err)
	}
	if !strings.Contains(p.logs.String(), "connection limit reached") {
		t.Errorf("no warning that the connection limit was reached:\n%s", p.logs.String())
	}
}

// TestServeCapsLiveStreams checks --max-live-streams (over it, 503 too_many_live_streams) and
// that bad values of it and of --live-write-timeout are usage errors.
func TestServeCapsLiveStreams(t *testing.T) {
	t.Setenv("ESTUITE_TOKEN", "")
	for _, args := range [][]string{{"--max-live-streams", "0"}, {"--live-write-timeout", "0s"}, {"--live-write-timeout", "-1s"}} {
		if code, out := runServe(t, nil, append([]string{"--data", t.TempDir(), "--addr", freePort(t)}, args...)...); code != 2 || !strings.Contains(out, args[0]) {
			t.Errorf("serve %v: exit %d, want a usage error naming the flag\n%s", args, code, out)
		}
	}
	p := serveInProcess(t, nil, "--data", t.TempDir(), "--max-live-streams", "1", "--live-write-timeout", "5s")
	res, err := (&http.Client{}).Get(p.url("/feed/live"))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the first live stream: %v %v", res, err)
	}
	defer res.Body.Close()
	second, err := p.client.Get(p.url("/feed/live"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(second.Body)
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "too_many_live_streams") {
		t.Fatalf("a second live stream over --max-live-streams 1: %d %s", second.StatusCode, body)
	}
}
