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

// Handler serves the explorer's files below Prefix (GET and HEAD only).
// Mount it at Prefix.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		// The page changes only with the binary; revalidate so that an
		// upgrade is seen at once.
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, r.Method+" is not allowed on "+Prefix+"; use GET", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	})
}
