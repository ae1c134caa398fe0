package httpapi

import (
	"net/http"
	"path"

	"github.com/parleyhq/parley/internal/errs"
)

var errRecordingsAbsent = errs.New(errs.KindUnavailable, "recordings_unavailable", "Recordings are not available on this server")

// handleCallRecording streams a call's recording (GET /v1/calls/{id}/recording) to the
// call's tenant: audio/ogg or audio/wav, with Content-Length and Range support (seeking
// in a player, resuming a download), from either store. Another tenant's call is a 404,
// as is a call without a recording (recording_not_found).
func (s *Server) handleCallRecording(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.callsService(); err != nil {
		return err
	}
	if s.deps.Recordings == nil {
		return errRecordingsAbsent
	}
	id := r.PathValue("id")
	obj, err := s.deps.Recordings.Open(r.Context(), principal(r).TenantID, id)
	if err != nil {
		return err
	}
	defer obj.Close()
	h := w.Header()
	h.Set("Content-Type", obj.ContentType)
	// A recording is personal data: no shared cache may keep it.
	h.Set("Cache-Control", "private, no-store")
	ext := ".ogg"
	if obj.ContentType == "audio/wav" {
		ext = ".wav"
	}
	h.Set("Content-Disposition", `inline; filename="`+path.Base(id)+ext+`"`)
	// ServeContent answers Range and If-Range/If-Modified-Since requests and sets
	// Content-Length; both stores' objects seek (an S3 object issues a ranged GET from
	// where it was sought), so a range costs only its bytes.
	http.ServeContent(w, r, "", obj.ModTime, obj)
	return nil
}
