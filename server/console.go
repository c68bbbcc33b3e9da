package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// The web console: static files embedded in the binary, served under /ui/ without a token (they
// hold no data; every API call they make needs one, or the session cookie). docs/operations.md,
// "Web console", says what each page shows and costs.

//go:embed ui
var consoleFS embed.FS

// consoleCSP allows the console's own files and nothing else: no inline script or style, no other
// origin, no framing.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// consoleTypes are the Content-Types of the console's files, by extension.
var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

type consoleFile struct {
	body  []byte
	ctype string
	etag  string
}

// consoleFiles are the console's files by their path under /ui/, read once.
var consoleFiles = func() map[string]consoleFile {
	files := make(map[string]consoleFile)
	err := fs.WalkDir(consoleFS, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := consoleTypes[path.Ext(p)]
		if !ok {
			return nil // not served
		}
		body, err := consoleFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[strings.TrimPrefix(p, "ui/")] = consoleFile{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("server: reading the embedded console: " + err.Error())
	}
	return files
}()

// handleConsole serves GET /ui/ and the files under it. The files change only with the binary:
// browsers revalidate them (Cache-Control: no-cache) against their ETag, a hash of the content,
// and get a 304 while it is the same.
func (s *Server) handleConsole(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "" {
		name = "index.html"
	}
	f, ok := consoleFiles[name]
	if !ok {
		s.writeError(w, r, &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: "the console has no file " + r.URL.EscapedPath(), quiet: true})
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}

// handleConsoleRedirect sends GET /ui to /ui/.
func (s *Server) handleConsoleRedirect(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
}
