package httpapi

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/knowledge"
)

// Handlers for /v1/knowledge-base.

var (
	kbDoc     = knowledge.KnowledgeBase{}
	sourceDoc = knowledge.Source{}
)

// kbCreateRequest documents the create body ({name, description, language, embedder}).
type kbCreateRequest struct {
	Name        string                  `json:"name" jsonschema:"required"`
	Description string                  `json:"description,omitempty"`
	Language    string                  `json:"language,omitempty" jsonschema:"description=PostgreSQL text search configuration (english by default)"`
	Embedder    *knowledge.EmbedderSpec `json:"embedder,omitempty"`
}

// sourceRequest is the JSON form of adding a source; files may also come as multipart
// form data with a "file" part.
type sourceRequest struct {
	Type    string `json:"type" jsonschema:"required,enum=text,enum=url,enum=file"`
	Name    string `json:"name,omitempty"`
	Content string `json:"content,omitempty" jsonschema:"description=the text; the URL for type url; base64 file data for type file"`
	URL     string `json:"url,omitempty"`
	// Filename names a base64 file (its extension decides the format).
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type,omitempty"`
}

type queryResponse struct {
	Results []knowledge.Result `json:"results"`
	Query   string             `json:"query"`
	TopK    int                `json:"top_k"`
	Mode    string             `json:"mode"`
	TookMS  float64            `json:"took_ms"`
}

func (s *Server) handleCreateKB(w http.ResponseWriter, r *http.Request) error {
	var in knowledge.KBInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	kb, err := s.deps.Knowledge.CreateKB(r.Context(), principal(r).TenantID, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, kb)
	return nil
}

func (s *Server) handleListKBs(w http.ResponseWriter, r *http.Request) error {
	return writeList(w, r, "knowledge_bases", s.deps.Knowledge.ListKBs)
}

// kbWithSources is GET /v1/knowledge-base/{id}: the KB and all its sources ([] when none).
type kbWithSources struct {
	knowledge.KnowledgeBase
	Sources []knowledge.Source `json:"sources"`
}

func (s *Server) handleGetKB(w http.ResponseWriter, r *http.Request) error {
	kb, err := s.deps.Knowledge.GetKB(r.Context(), principal(r).TenantID, r.PathValue("id"), true)
	if err != nil {
		return err
	}
	out := kbWithSources{KnowledgeBase: kb, Sources: kb.Sources}
	if out.Sources == nil {
		out.Sources = []knowledge.Source{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handlePatchKB(w http.ResponseWriter, r *http.Request) error {
	var in knowledge.KBInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	kb, err := s.deps.Knowledge.PatchKB(r.Context(), principal(r).TenantID, r.PathValue("id"), in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, kb)
	return nil
}

// handleDeleteKB detaches the KB from the tenant's agents first, so no agent is left
// naming a KB that no longer exists.
func (s *Server) handleDeleteKB(w http.ResponseWriter, r *http.Request) error {
	p, id := principal(r), r.PathValue("id")
	if _, err := s.deps.Knowledge.GetKB(r.Context(), p.TenantID, id, false); err != nil {
		return err
	}
	if _, err := s.deps.Agents.DetachKnowledgeBase(r.Context(), p.TenantID, id); err != nil {
		return err
	}
	if err := s.deps.Knowledge.DeleteKB(r.Context(), p.TenantID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleListSources(w http.ResponseWriter, r *http.Request) error {
	kbID := r.PathValue("id")
	return writeList(w, r, "sources", func(ctx context.Context, tenantID string, limit, offset int) ([]knowledge.Source, int, error) {
		return s.deps.Knowledge.ListSources(ctx, tenantID, kbID, limit, offset)
	})
}

func (s *Server) handleGetSource(w http.ResponseWriter, r *http.Request) error {
	src, err := s.deps.Knowledge.GetSource(r.Context(), principal(r).TenantID, r.PathValue("id"), r.PathValue("src"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, src)
	return nil
}

// handleAddSource takes JSON ({type, content, name}) or multipart form data with a "file"
// part (and optional "name"). It answers 202 with the pending source, or 200 with the
// existing one when identical content is already in the KB.
func (s *Server) handleAddSource(w http.ResponseWriter, r *http.Request) error {
	in, err := s.sourceInput(r)
	if err != nil {
		return err
	}
	src, created, err := s.deps.Knowledge.AddSource(r.Context(), principal(r).TenantID, r.PathValue("id"), in)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusAccepted
	}
	writeJSON(w, status, src)
	return nil
}

func (s *Server) sourceInput(r *http.Request) (knowledge.SourceInput, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		// Parts beyond 32 MiB spill to temporary files; the route's body limit bounds it all.
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return knowledge.SourceInput{}, errBodyTooLarge(mbe.Limit)
			}
			return knowledge.SourceInput{}, errs.BadRequest("invalid_multipart", "Malformed multipart body: "+err.Error())
		}
		defer r.MultipartForm.RemoveAll()
		file, hdr, err := r.FormFile("file")
		if err != nil {
			return knowledge.SourceInput{}, errs.Invalid(map[string]string{"file": "a multipart part named \"file\" is required"})
		}
		defer file.Close()
		data, err := io.ReadAll(file)
		if err != nil {
			return knowledge.SourceInput{}, err
		}
		return knowledge.SourceInput{Kind: knowledge.KindFile, Name: r.FormValue("name"), Filename: hdr.Filename,
			ContentType: hdr.Header.Get("Content-Type"), Data: data}, nil
	}
	var req sourceRequest
	if err := decodeJSON(r, &req); err != nil {
		return knowledge.SourceInput{}, err
	}
	in := knowledge.SourceInput{Kind: req.Type, Name: req.Name, Content: req.Content, URL: req.URL,
		Filename: req.Filename, ContentType: req.ContentType}
	if req.Type == knowledge.KindFile {
		data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(req.Content))
		if err != nil {
			return in, errs.Invalid(map[string]string{"content": "must be the file's bytes in base64 for type file"})
		}
		in.Data, in.Content = data, ""
		if in.Filename == "" {
			in.Filename = req.Name
		}
	}
	return in, nil
}

func (s *Server) handleDeleteSource(w http.ResponseWriter, r *http.Request) error {
	if err := s.deps.Knowledge.DeleteSource(r.Context(), principal(r).TenantID, r.PathValue("id"), r.PathValue("src")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleQueryKB(w http.ResponseWriter, r *http.Request) error {
	var q knowledge.Query
	if err := decodeJSON(r, &q); err != nil {
		return err
	}
	start := time.Now()
	res, err := s.deps.Knowledge.QueryKB(r.Context(), principal(r).TenantID, r.PathValue("id"), q)
	if err != nil {
		return err
	}
	mode := q.Mode
	if mode == "" {
		mode = knowledge.ModeHybrid
	}
	topK := q.TopK
	if topK == 0 {
		topK = 5
	}
	writeJSON(w, http.StatusOK, queryResponse{Results: res, Query: q.Query, TopK: topK, Mode: mode,
		TookMS: float64(time.Since(start).Microseconds()) / 1000})
	return nil
}
