// Package explorer serves the transparency explorer: a static page at
// /explorer/ that reads tkms's public API (the log's checkpoint and tiles,
// /v1/log proofs, /v1/keys?all=true, the governance reads) and verifies in
// the browser, with WebCrypto, what it shows: the checkpoint's signature
// against a log key the user pins (C2SP signed-note, Ed25519), the RFC 6962
// inclusion of every entry it displays, and consistency with the last
// checkpoint it saw (docs/explorer.md).
//
// The files are embedded in the binary; there is no build step. Every
// answer carries a Content-Security-Policy that lets the page load and
// fetch only from its own origin.
package explorer

import (
	"embed"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
)

//go:embed static
var static embed.FS

// Prefix is the path below which Handler serves the explorer.
const Prefix = "/explorer/"

// CSP is the Content-Security-Policy of every explorer answer: scripts,
// styles, images and fetches from the page's own origin only; no inline
// script, no frames, no forms, no plugins.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the explorer's files below Prefix (mount it at Prefix),
// to GET and HEAD. Anything else — another method, a name that is not one
// of its files — is handed to fail with the status to answer (405 or 404)
// and a message, so that the server answers it in its own error shape.
func Handler(fail func(w http.ResponseWriter, r *http.Request, status int, msg string)) http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			fail(w, r, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+Prefix+"; use GET")
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		if fi, err := fs.Stat(files, name); !ok || r.URL.RawPath != "" || !fs.ValidPath(name) || err != nil || fi.IsDir() {
			fail(w, r, http.StatusNotFound, "the explorer has no file "+strconv.Quote(truncate(r.URL.Path, 100))+"; open "+Prefix)
			return
		}
		// The page changes only with the binary; revalidate so that an
		// upgrade is seen at once.
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, files, name)
	})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
