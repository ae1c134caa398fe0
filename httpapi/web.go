package httpapi

import (
	"io/fs"
	"mime"
	"net/http"
	"path"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/web"
)

// handleCallPage serves the test-call page (web/call): log in, pick an agent, talk to
// it through LiveKit. It uses only the public API.
func (s *Server) handleCallPage(w http.ResponseWriter, r *http.Request) error {
	b, err := fs.ReadFile(web.Dist(), "call.html")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page needs the microphone, and nothing from other origins but LiveKit's
	// websocket and media.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Write(b)
	return nil
}

// handleAsset serves the built browser assets (web/dist), except the HTML pages,
// which have routes of their own.
func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("file")
	if path.Ext(name) == ".html" || !fs.ValidPath(name) {
		return errs.NotFound("asset_not_found", "No such asset")
	}
	b, err := fs.ReadFile(web.Dist(), name)
	if err != nil {
		return errs.NotFound("asset_not_found", "No such asset")
	}
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
	return nil
}
