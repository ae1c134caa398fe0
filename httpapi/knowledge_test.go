package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/knowledge"
)

// kbUploadLimit is the file limit the knowledge tests run with: small, so that the 413
// test need not send megabytes, and above every fixture (handbook.pdf is 38 KiB).
const kbUploadLimit = 64 << 10

// kbEnv is a testEnv whose server also serves the knowledge routes, with a River client
// that works the ingestion jobs.
type kbEnv struct {
	*testEnv
	svc *knowledge.Service
}

// newKBTestEnv builds what newTestEnv builds plus a knowledge service and a working River
// client, and points e.srv at a second server (on the same pool and services) that has
// Deps.Knowledge set. Both the HTTP layer and the service get kbUploadLimit, so they agree
// on what is too large. allowPrivate=false turns the SSRF guard on for URL sources.
func newKBTestEnv(t *testing.T, allowPrivate bool) *kbEnv {
	t.Helper()
	e := newTestEnv(t, func(c *Config, s *safehttp.Config) {
		c.MaxUploadBytes = kbUploadLimit
		s.AllowPrivate = allowPrivate
	})
	log := slog.New(slog.DiscardHandler)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: allowPrivate})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := knowledge.New(e.pool, knowledge.Config{MaxUploadBytes: kbUploadLimit, Logger: log}, box, guard)
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	svc.AddWorkers(workers)
	jc, err := jobs.New(e.pool, jobs.Config{Work: true, MaxWorkers: 4}, workers, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetJobs(jc.Client)
	if err := jc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jc.Stop)
	cfg := Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1", MaxUploadBytes: kbUploadLimit}
	api, err := New(cfg, Deps{Logger: log, Accounts: e.accounts, Agents: e.agents, Knowledge: svc, Limiter: e.limiter, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv, e.api = srv, api
	return &kbEnv{testEnv: e, svc: svc}
}

// fixture reads a file from the extract package's real-producer fixtures.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "knowledge", "extract", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// createKB creates a knowledge base named name and returns its ID.
func (e *kbEnv) createKB(token, name string) string {
	e.t.Helper()
	r := e.do("POST", "/v1/knowledge-base", token, map[string]any{"name": name}).wantStatus(e.t, 201)
	id, _ := r.JSON["knowledge_base_id"].(string)
	if !ids.HasPrefix(id, "kb") {
		e.t.Fatalf("created KB without an id: %s", r.Body)
	}
	return id
}

// multipartBody builds a multipart form with a "file" part (when filename is not "-")
// and extra form fields given as name, value pairs. It returns the body and its
// Content-Type.
func multipartBody(t *testing.T, filename, contentType string, data []byte, fields ...string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	if filename != "-" {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, filename))
		if contentType == "" {
			contentType = "application/octet-stream"
		}
		h.Set("Content-Type", contentType)
		part, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		part.Write(data)
	}
	mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

// upload posts a file to a KB as multipart form data.
func (e *kbEnv) upload(token, kbID, filename, contentType string, data []byte, fields ...string) response {
	e.t.Helper()
	body, ct := multipartBody(e.t, filename, contentType, data, fields...)
	return e.do("POST", "/v1/knowledge-base/"+kbID+"/sources", token, body, "Content-Type", ct)
}

// waitSource polls GET .../sources/{src} until ingestion has ended (ready or error).
func (e *kbEnv) waitSource(token, kbID, srcID string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := e.do("GET", "/v1/knowledge-base/"+kbID+"/sources/"+srcID, token, nil).wantStatus(e.t, 200)
		switch r.JSON["status"] {
		case knowledge.StatusReady, knowledge.StatusError:
			return r.JSON
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("source %s not done after 90s: %s", srcID, r.Body)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// query posts a query and returns the response (status unchecked).
func (e *kbEnv) query(token, kbID string, q any) response {
	e.t.Helper()
	return e.do("POST", "/v1/knowledge-base/"+kbID+"/query", token, q)
}

// kbCounts is everything the knowledge routes write for a tenant, to show that a refused
// request wrote nothing (no KB, source, stored upload, chunk or ingestion job).
type kbCounts struct{ KBs, Sources, Blobs, Chunks, Jobs int }

func (e *kbEnv) counts(tenantID string) kbCounts {
	e.t.Helper()
	var c kbCounts
	err := e.pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM knowledge_bases WHERE tenant_id = $1),
		(SELECT count(*) FROM kb_sources WHERE tenant_id = $1),
		(SELECT count(*) FROM kb_source_blobs WHERE tenant_id = $1),
		(SELECT count(*) FROM kb_chunks WHERE tenant_id = $1),
		(SELECT count(*) FROM river_job WHERE kind = 'knowledge.ingest' AND args->>'tenant_id' = $1)`, tenantID).
		Scan(&c.KBs, &c.Sources, &c.Blobs, &c.Chunks, &c.Jobs)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// results returns a query response's results as objects.
func results(t *testing.T, r response) []map[string]any {
	t.Helper()
	raw, ok := r.JSON["results"].([]any)
	if !ok {
		t.Fatalf("no results array: %s", r.Body)
	}
	out := make([]map[string]any, len(raw))
	for i, x := range raw {
		out[i] = x.(map[string]any)
	}
	return out
}

// squash collapses runs of whitespace, so a phrase is found in a chunk whatever line
// breaks extraction kept.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

// sourceIDs lists the source_id of each result.
func sourceIDs(rs []map[string]any) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r["source_id"].(string))
	}
	return out
}

// The whole life of a knowledge base over HTTP: create, list, get, patch; every way of
// adding a source and every file format; ingestion to ready; queries that find each
// source; idempotent re-adds; deleting a source and the KB.
func TestKBRoutesHappyPath(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()

	created := e.do("POST", "/v1/knowledge-base", u.Token, map[string]any{"name": "Support", "description": "Answers for callers"}).wantStatus(t, 201)
	kb := created.JSON["knowledge_base_id"].(string)
	emb, _ := created.JSON["embedder"].(map[string]any)
	if !ids.HasPrefix(kb, "kb") || created.JSON["name"] != "Support" || created.JSON["description"] != "Answers for callers" ||
		created.JSON["language"] != "english" || created.JSON["status"] != "ready" || created.JSON["source_count"] != 0.0 ||
		emb["provider"] != "local" || created.JSON["dimensions"] != 384.0 {
		t.Fatalf("created: %s", created.Body)
	}

	list := e.do("GET", "/v1/knowledge-base", u.Token, nil).wantStatus(t, 200)
	items, _ := list.JSON["knowledge_bases"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["knowledge_base_id"] != kb || list.JSON["total"] != 1.0 || list.JSON["has_more"] != false {
		t.Fatalf("list: %s", list.Body)
	}
	// The API key sees the same list as the JWT.
	if r := e.do("GET", "/v1/knowledge-base", u.APIKey, nil).wantStatus(t, 200); string(r.Body) != string(list.Body) {
		t.Fatalf("API key list differs:\n%s\n%s", r.Body, list.Body)
	}

	// PATCH changes only what it names.
	patched := e.do("PATCH", "/v1/knowledge-base/"+kb, u.Token, map[string]any{"name": "  Front desk  ", "language": "simple"}).wantStatus(t, 200)
	if patched.JSON["name"] != "Front desk" || patched.JSON["language"] != "simple" || patched.JSON["description"] != "Answers for callers" {
		t.Fatalf("patched: %s", patched.Body)
	}
	if g := e.do("GET", "/v1/knowledge-base/"+kb, u.Token, nil).wantStatus(t, 200); g.JSON["name"] != "Front desk" || g.JSON["language"] != "simple" {
		t.Fatalf("GET after PATCH: %s", g.Body)
	}
	e.do("PATCH", "/v1/knowledge-base/"+kb, u.Token, map[string]any{"language": "english"}).wantStatus(t, 200)

	// Every way in, each with a phrase only it contains (the three handbook files share
	// their text, so their phrase is checked per source).
	handbookMD, handbookDOCX, handbookPDF, guidePDF := fixture(t, "handbook.md"), fixture(t, "handbook.docx"), fixture(t, "handbook.pdf"), fixture(t, "guide.pdf")
	type added struct {
		label, name, kind, format, phrase string
		resp                              response
	}
	var sources []added
	add := func(label, name, kind, format, phrase string, r response) {
		t.Helper()
		r.wantStatus(t, 202)
		if !ids.HasPrefix(fmt.Sprint(r.JSON["source_id"]), "src") || r.JSON["knowledge_base_id"] != kb || r.JSON["type"] != kind || r.JSON["name"] != name {
			t.Fatalf("%s: added %s", label, r.Body)
		}
		// Ingestion is asynchronous: the answer is the queued source (a fast worker may
		// already have picked it up).
		if st := r.JSON["status"]; st != "pending" && st != "processing" && st != "ready" {
			t.Fatalf("%s: status %v", label, st)
		}
		sources = append(sources, added{label, name, kind, format, phrase, r})
	}
	textContent := "Loyalty programme\n\nEvery espresso earns one stamp, and ten stamps earn a free almond croissant."
	add("json text", "Loyalty", "text", "text", "ten stamps earn a free almond croissant",
		e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "text", "name": "Loyalty", "content": textContent}))
	add(".txt", "shipping.txt", "file", "text", "warehouse in Rotterdam ships orders every Tuesday",
		e.upload(u.Token, kb, "shipping.txt", "text/plain", []byte("Our warehouse in Rotterdam ships orders every Tuesday and Thursday before noon.\n")))
	add(".md", "Handbook (markdown)", "file", "markdown", "SEPA direct debit",
		e.upload(u.Token, kb, "handbook.md", "text/markdown", handbookMD, "name", "Handbook (markdown)"))
	add(".html", "warranty.html", "file", "html", "seven-year warranty against limescale",
		e.upload(u.Token, kb, "warranty.html", "text/html", []byte(`<!doctype html><html><head><title>Warranty</title></head>
<body><h1>Kettle warranty</h1><p>Every kettle carries a seven-year warranty against limescale damage.</p></body></html>`)))
	add(".pdf", "handbook.pdf", "file", "pdf", "SEPA direct debit", e.upload(u.Token, kb, "handbook.pdf", "application/pdf", handbookPDF))
	add(".docx", "handbook.docx", "file", "docx", "SEPA direct debit", e.upload(u.Token, kb, "handbook.docx", "", handbookDOCX))
	add(".csv", "plans.csv", "file", "csv", "Galaxy Unlimited",
		e.upload(u.Token, kb, "plans.csv", "text/csv", []byte("plan,price,seats\nStarter,19,1\nGalaxy Unlimited,999,500\n")))
	add("json base64 file", "guide.pdf", "file", "pdf", "bring your own SIP trunk",
		e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "file", "filename": "guide.pdf",
			"content": base64.StdEncoding.EncodeToString(guidePDF)}))

	totalChunks := 0.0
	for _, s := range sources {
		id := s.resp.JSON["source_id"].(string)
		got := e.waitSource(u.Token, kb, id)
		if got["status"] != "ready" || got["error"] != nil || got["format"] != s.format || got["chunk_count"].(float64) < 1 ||
			got["chunks_done"] != got["chunks_total"] || !strings.HasPrefix(got["content_hash"].(string), "sha256:") {
			t.Fatalf("%s: ingested %v", s.label, got)
		}
		totalChunks += got["chunk_count"].(float64)
	}

	// Each source was one ingestion job; a ready source no longer keeps its upload.
	if c := e.counts(u.TenantID); c.Sources != len(sources) || c.Jobs != len(sources) || c.Blobs != 0 || float64(c.Chunks) != totalChunks {
		t.Fatalf("rows after ingestion: %+v (%d sources, %v chunks)", c, len(sources), totalChunks)
	}
	// A source is addressed through its own KB only, even within the tenant.
	other := e.createKB(u.Token, "Other")
	firstID := sources[0].resp.JSON["source_id"].(string)
	e.do("GET", "/v1/knowledge-base/"+other+"/sources/"+firstID, u.Token, nil).wantError(t, 404)
	e.do("DELETE", "/v1/knowledge-base/"+other+"/sources/"+firstID, u.Token, nil).wantError(t, 404)
	e.do("DELETE", "/v1/knowledge-base/"+other, u.Token, nil).wantStatus(t, 204)

	// GET includes the sources; the list of sources is the same set.
	g := e.do("GET", "/v1/knowledge-base/"+kb, u.Token, nil).wantStatus(t, 200)
	if ss, _ := g.JSON["sources"].([]any); len(ss) != len(sources) || g.JSON["source_count"] != float64(len(sources)) || g.JSON["chunk_count"] != totalChunks {
		t.Fatalf("GET with sources: %s", g.Body)
	}
	ls := e.do("GET", "/v1/knowledge-base/"+kb+"/sources", u.Token, nil).wantStatus(t, 200)
	if ss, _ := ls.JSON["sources"].([]any); len(ss) != len(sources) || ls.JSON["total"] != float64(len(sources)) {
		t.Fatalf("list sources: %s", ls.Body)
	}
	if page := e.do("GET", "/v1/knowledge-base/"+kb+"/sources?limit=3&offset=3", u.Token, nil).wantStatus(t, 200); len(page.JSON["sources"].([]any)) != 3 || page.JSON["has_more"] != true {
		t.Fatalf("sources page: %s", page.Body)
	}

	// A query finds each source's phrase in a chunk of that source, with the documented
	// fields.
	for _, s := range sources {
		id := s.resp.JSON["source_id"].(string)
		r := e.query(u.Token, kb, map[string]any{"query": s.phrase, "top_k": 50}).wantStatus(t, 200)
		if r.JSON["query"] != s.phrase || r.JSON["top_k"] != 50.0 || r.JSON["mode"] != "hybrid" {
			t.Fatalf("%s: query echo: %s", s.label, r.Body)
		}
		if ms, ok := r.JSON["took_ms"].(float64); !ok || ms < 0 {
			t.Fatalf("%s: took_ms: %s", s.label, r.Body)
		}
		var hit map[string]any
		for _, res := range results(t, r) {
			if res["source_id"] == id && strings.Contains(squash(res["text"].(string)), s.phrase) {
				hit = res
				break
			}
		}
		if hit == nil {
			t.Errorf("%s: %q not found in its source %s: %s", s.label, s.phrase, id, r.Body)
			continue
		}
		if score, _ := hit["score"].(float64); score <= 0 || hit["source_name"] != s.name || hit["knowledge_base_id"] != kb {
			t.Errorf("%s: result fields %v", s.label, hit)
		}
		if _, ok := hit["heading_path"].([]any); !ok {
			t.Errorf("%s: heading_path is not an array: %v", s.label, hit)
		}
	}
	// Headings reach the results: the Markdown chunk about payment methods says where it
	// sits, and the HTML chunk sits under its <h1>.
	r := e.query(u.Token, kb, map[string]any{"query": "seven-year warranty against limescale", "top_k": 1, "mode": "text"}).wantStatus(t, 200)
	if rs := results(t, r); len(rs) != 1 || !slices.Contains(rs[0]["heading_path"].([]any), any("Kettle warranty")) || r.JSON["mode"] != "text" || r.JSON["top_k"] != 1.0 {
		t.Errorf("html heading path: %s", r.Body)
	}
	mdID := sources[2].resp.JSON["source_id"].(string)
	r = e.query(u.Token, kb, map[string]any{"query": "SEPA direct debit", "top_k": 50}).wantStatus(t, 200)
	for _, res := range results(t, r) {
		if res["source_id"] == mdID && strings.Contains(res["text"].(string), "SEPA") && !slices.Contains(res["heading_path"].([]any), any("Payment methods")) {
			t.Errorf("markdown heading path: %v", res)
		}
	}
	// The default top_k is 5; vector mode answers too.
	if r := e.query(u.Token, kb, map[string]any{"query": "refund", "mode": "vector"}).wantStatus(t, 200); r.JSON["top_k"] != 5.0 || len(results(t, r)) != 5 {
		t.Errorf("default top_k: %s", r.Body)
	}

	// Re-adding identical content is not a new source: 200 with the same source_id.
	before := e.counts(u.TenantID)
	again := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "text", "name": "Loyalty again", "content": textContent}).wantStatus(t, 200)
	if again.JSON["source_id"] != sources[0].resp.JSON["source_id"] || again.JSON["status"] != "ready" {
		t.Fatalf("re-added text: %s", again.Body)
	}
	again = e.upload(u.Token, kb, "copy-of-handbook.md", "", handbookMD).wantStatus(t, 200)
	if again.JSON["source_id"] != mdID {
		t.Fatalf("re-uploaded file: %s", again.Body)
	}
	if after := e.counts(u.TenantID); after != before {
		t.Fatalf("re-adding wrote: %+v -> %+v", before, after)
	}

	// Deleting a source removes it and its chunks from search.
	txtID := sources[1].resp.JSON["source_id"].(string)
	e.do("DELETE", "/v1/knowledge-base/"+kb+"/sources/"+txtID, u.Token, nil).wantStatus(t, 204)
	e.do("GET", "/v1/knowledge-base/"+kb+"/sources/"+txtID, u.Token, nil).wantError(t, 404)
	e.do("DELETE", "/v1/knowledge-base/"+kb+"/sources/"+txtID, u.Token, nil).wantError(t, 404)
	r = e.query(u.Token, kb, map[string]any{"query": sources[1].phrase, "top_k": 50}).wantStatus(t, 200)
	if slices.Contains(sourceIDs(results(t, r)), txtID) {
		t.Fatalf("deleted source still found: %s", r.Body)
	}

	// Deleting the KB removes everything it held.
	e.do("DELETE", "/v1/knowledge-base/"+kb, u.Token, nil).wantStatus(t, 204)
	e.do("GET", "/v1/knowledge-base/"+kb, u.Token, nil).wantError(t, 404)
	e.do("DELETE", "/v1/knowledge-base/"+kb, u.Token, nil).wantError(t, 404)
	if l := e.do("GET", "/v1/knowledge-base", u.Token, nil).wantStatus(t, 200); l.JSON["total"] != 0.0 || len(l.JSON["knowledge_bases"].([]any)) != 0 {
		t.Fatalf("list after delete: %s", l.Body)
	}
	if c := e.counts(u.TenantID); c.KBs != 0 || c.Sources != 0 || c.Blobs != 0 || c.Chunks != 0 {
		t.Fatalf("left behind after delete: %+v", c)
	}
}

// Bad input is refused with the right status, a detail (and the offending fields for
// validation errors), and nothing is written: no KB change, source, upload, chunk or job.
func TestKBBadInput(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, false) // the SSRF guard is on
	u := e.newUser()
	kb := e.createKB(u.Token, "Support")
	unknownKB := ids.New("kb")
	base := "/v1/knowledge-base/" + kb
	src := base + "/sources"

	mp := func(filename, contentType string, data []byte, fields ...string) (any, []string) {
		body, ct := multipartBody(t, filename, contentType, data, fields...)
		return body, []string{"Content-Type", ct}
	}
	b64 := func(filename string, data []byte) map[string]any {
		return map[string]any{"type": "file", "filename": filename, "content": base64.StdEncoding.EncodeToString(data)}
	}
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
	elf := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 120)...)
	oversize := bytes.Repeat([]byte("lorem ipsum "), (kbUploadLimit+1024)/12+1) // 65 KiB of text

	type tc struct {
		name    string
		method  string
		path    string
		body    any
		headers []string
		status  int
		fields  []string
	}
	cases := []tc{
		// Create and patch.
		{name: "create malformed json", method: "POST", path: "/v1/knowledge-base", body: `{"name": `, status: 400},
		{name: "create not an object", method: "POST", path: "/v1/knowledge-base", body: `["x"]`, status: 400},
		{name: "create empty body", method: "POST", path: "/v1/knowledge-base", body: "", status: 400},
		{name: "create name wrong type", method: "POST", path: "/v1/knowledge-base", body: `{"name": 5}`, status: 400, fields: []string{"name"}},
		{name: "create missing name", method: "POST", path: "/v1/knowledge-base", body: `{}`, status: 422, fields: []string{"name"}},
		{name: "create blank name", method: "POST", path: "/v1/knowledge-base", body: `{"name": "   "}`, status: 422, fields: []string{"name"}},
		{name: "create name too long", method: "POST", path: "/v1/knowledge-base", body: map[string]any{"name": strings.Repeat("n", 201)}, status: 422, fields: []string{"name"}},
		{name: "create unknown language", method: "POST", path: "/v1/knowledge-base", body: `{"name": "x", "language": "klingon"}`, status: 422, fields: []string{"language"}},
		{name: "create unknown embedder", method: "POST", path: "/v1/knowledge-base", body: `{"name": "x", "embedder": {"provider": "cohere"}}`, status: 422, fields: []string{"embedder.provider"}},
		{name: "create embedder base_url private", method: "POST", path: "/v1/knowledge-base", body: `{"name": "x", "embedder": {"provider": "openai", "base_url": "http://127.0.0.1:11434/v1"}}`, status: 422, fields: []string{"embedder.base_url"}},
		{name: "patch malformed json", method: "PATCH", path: base, body: `{"name": "x",}`, status: 400},
		{name: "patch description wrong type", method: "PATCH", path: base, body: `{"description": ["x"]}`, status: 400, fields: []string{"description"}},
		{name: "patch blank name", method: "PATCH", path: base, body: `{"name": ""}`, status: 422, fields: []string{"name"}},
		{name: "patch unknown language", method: "PATCH", path: base, body: `{"language": "klingon"}`, status: 422, fields: []string{"language"}},
		{name: "list bad limit", method: "GET", path: "/v1/knowledge-base?limit=0", status: 422, fields: []string{"limit"}},
		{name: "list sources bad offset", method: "GET", path: src + "?offset=-1", status: 422, fields: []string{"offset"}},

		// Sources as JSON.
		{name: "source malformed json", method: "POST", path: src, body: `{"type": "text", "content": "x"`, status: 400},
		{name: "source content wrong type", method: "POST", path: src, body: `{"type": "text", "content": 42}`, status: 400, fields: []string{"content"}},
		{name: "source type wrong type", method: "POST", path: src, body: `{"type": ["text"], "content": "x"}`, status: 400, fields: []string{"type"}},
		{name: "source empty body", method: "POST", path: src, body: "", status: 400},
		{name: "source empty text", method: "POST", path: src, body: `{"type": "text", "content": "  \n\t "}`, status: 422, fields: []string{"content"}},
		{name: "source missing text", method: "POST", path: src, body: `{"type": "text"}`, status: 422, fields: []string{"content"}},
		{name: "source unknown type", method: "POST", path: src, body: `{"type": "video", "content": "x"}`, status: 422, fields: []string{"type"}},
		{name: "source missing type", method: "POST", path: src, body: `{"content": "x"}`, status: 422, fields: []string{"type"}},
		{name: "source name too long", method: "POST", path: src, body: map[string]any{"type": "text", "content": "x", "name": strings.Repeat("n", 501)}, status: 422, fields: []string{"name"}},
		{name: "source file bad base64", method: "POST", path: src, body: `{"type": "file", "filename": "a.txt", "content": "%%% not base64"}`, status: 422, fields: []string{"content"}},
		{name: "source file empty base64", method: "POST", path: src, body: `{"type": "file", "filename": "a.txt", "content": ""}`, status: 422, fields: []string{"file"}},
		{name: "source file oversize base64", method: "POST", path: src, body: b64("big.txt", oversize), status: 413},
		{name: "source file png base64", method: "POST", path: src, body: b64("photo.png", png), status: 415},
		{name: "source url missing", method: "POST", path: src, body: `{"type": "url"}`, status: 422, fields: []string{"url"}},
		{name: "source url bad scheme", method: "POST", path: src, body: `{"type": "url", "url": "ftp://example.com/faq"}`, status: 422, fields: []string{"url"}},
		{name: "source url loopback", method: "POST", path: src, body: `{"type": "url", "url": "http://127.0.0.1:8080/admin"}`, status: 422, fields: []string{"url"}},
		{name: "source url metadata", method: "POST", path: src, body: `{"type": "url", "url": "http://169.254.169.254/latest/meta-data/"}`, status: 422, fields: []string{"url"}},
		{name: "source url ipv6 loopback", method: "POST", path: src, body: `{"type": "url", "url": "http://[::1]/"}`, status: 422, fields: []string{"url"}},
		{name: "source url private in content", method: "POST", path: src, body: `{"type": "url", "content": "http://10.1.2.3/faq"}`, status: 422, fields: []string{"url"}},
		{name: "source to unknown kb", method: "POST", path: "/v1/knowledge-base/" + unknownKB + "/sources", body: `{"type": "text", "content": "hello"}`, status: 404},
	}
	// Sources as multipart uploads.
	for _, m := range []struct {
		name, filename, ct string
		data               []byte
		fields             []string
		status             int
		errFields          []string
	}{
		{"upload empty file", "empty.txt", "text/plain", nil, nil, 422, []string{"file"}},
		{"upload without file part", "-", "", nil, []string{"name", "x"}, 422, []string{"file"}},
		{"upload oversize", "big.txt", "text/plain", oversize, nil, 413, nil},
		{"upload png", "photo.png", "image/png", png, nil, 415, nil},
		{"upload elf", "agent", "application/octet-stream", elf, nil, 415, nil},
		{"upload elf named txt", "notes.txt", "text/plain", elf, nil, 415, nil},
		{"upload legacy doc", "letter.doc", "application/msword", []byte("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + strings.Repeat("\x00", 64)), nil, 415, nil},
	} {
		body, h := mp(m.filename, m.ct, m.data, m.fields...)
		cases = append(cases, tc{name: m.name, method: "POST", path: src, body: body, headers: h, status: m.status, fields: m.errFields})
	}
	cases = append(cases,
		tc{name: "upload malformed multipart", method: "POST", path: src, body: "--nope\r\ngarbage", headers: []string{"Content-Type", "multipart/form-data; boundary=x"}, status: 400},
		// Over the route's body limit (file limit × 4/3 + 1 MiB): refused before it is read.
		tc{name: "upload over body limit", method: "POST", path: src, body: bytes.Repeat([]byte("x"), int(kbUploadLimit*4/3+1<<20+1)), headers: []string{"Content-Type", "multipart/form-data; boundary=x"}, status: 413},
	)
	// Queries.
	q := base + "/query"
	cases = append(cases, []tc{
		{name: "query malformed json", method: "POST", path: q, body: `{"query": "hours"`, status: 400},
		{name: "query wrong type", method: "POST", path: q, body: `{"query": "hours", "top_k": "five"}`, status: 400, fields: []string{"top_k"}},
		{name: "query empty body", method: "POST", path: q, body: "", status: 400},
		{name: "query empty", method: "POST", path: q, body: `{"query": ""}`, status: 422, fields: []string{"query"}},
		{name: "query blank", method: "POST", path: q, body: `{"query": " \n "}`, status: 422, fields: []string{"query"}},
		{name: "query missing", method: "POST", path: q, body: `{"top_k": 3}`, status: 422, fields: []string{"query"}},
		{name: "query too long", method: "POST", path: q, body: map[string]any{"query": strings.Repeat("a", 4001)}, status: 422, fields: []string{"query"}},
		{name: "query top_k 51", method: "POST", path: q, body: `{"query": "hours", "top_k": 51}`, status: 422, fields: []string{"top_k"}},
		{name: "query top_k negative", method: "POST", path: q, body: `{"query": "hours", "top_k": -1}`, status: 422, fields: []string{"top_k"}},
		{name: "query unknown mode", method: "POST", path: q, body: `{"query": "hours", "mode": "magic"}`, status: 422, fields: []string{"mode"}},
		{name: "query mmr_lambda out of range", method: "POST", path: q, body: `{"query": "hours", "mmr": true, "mmr_lambda": 1.5}`, status: 422, fields: []string{"mmr_lambda"}},
		{name: "query unknown kb", method: "POST", path: "/v1/knowledge-base/" + unknownKB + "/query", body: `{"query": "hours"}`, status: 404},
	}...)

	before := e.counts(u.TenantID)
	kbBefore := e.do("GET", base, u.Token, nil).wantStatus(t, 200).Body
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.method, c.path, u.Token, c.body, c.headers...)
			r.wantError(t, c.status, c.fields...)
			if c.status == 422 && len(c.fields) > 0 {
				if fm, _ := r.JSON["fields"].(map[string]any); len(fm) == 0 {
					t.Fatalf("validation error without fields: %s", r.Body)
				}
			}
			if after := e.counts(u.TenantID); after != before {
				t.Fatalf("wrote something: %+v -> %+v", before, after)
			}
		})
	}
	if after := e.do("GET", base, u.Token, nil).wantStatus(t, 200).Body; string(after) != string(kbBefore) {
		t.Fatalf("the KB changed:\n%s\n%s", kbBefore, after)
	}
	// The 415 says what was refused; the 413 what the limit is.
	r := e.upload(u.Token, kb, "photo.png", "image/png", png)
	if d, _ := r.JSON["detail"].(string); r.Status != 415 || !strings.Contains(d, "photo.png") {
		t.Errorf("415 detail: %s", r.Body)
	}
	r = e.upload(u.Token, kb, "big.txt", "text/plain", oversize)
	if d, _ := r.JSON["detail"].(string); r.Status != 413 || !strings.Contains(d, "64 KiB") {
		t.Errorf("413 detail: %s", r.Body)
	}

	// A file at exactly the limit is accepted: the limits of the HTTP layer and of the
	// service agree.
	atLimit := append(oversize[:kbUploadLimit-1:kbUploadLimit-1], '\n')
	e.upload(u.Token, kb, "limit.txt", "text/plain", atLimit).wantStatus(t, 202)

	// A KB with no ready sources answers an empty list, not null, in every mode.
	empty := e.createKB(u.Token, "Empty")
	for _, mode := range []string{"", "hybrid", "vector", "text"} {
		r := e.query(u.Token, empty, map[string]any{"query": "opening hours", "mode": mode}).wantStatus(t, 200)
		if !bytes.Contains(r.Body, []byte(`"results":[]`)) {
			t.Errorf("mode %q: empty KB: %s", mode, r.Body)
		}
	}
}

// A PDF that cannot be read is accepted (detection only looks at the header) and ends in
// status "error" with the reason, without holding up a good source in the same KB.
// Re-adding the failed file queues it again under the same source.
func TestKBCorruptPDFEndsInError(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	kb := e.createKB(u.Token, "Support")
	corrupt := []byte("%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nthis is not really a PDF\n%%EOF\n")

	bad := e.upload(u.Token, kb, "broken.pdf", "application/pdf", corrupt).wantStatus(t, 202).JSON["source_id"].(string)
	enc := e.upload(u.Token, kb, "encrypted.pdf", "application/pdf", fixture(t, "encrypted.pdf")).wantStatus(t, 202).JSON["source_id"].(string)
	good := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token,
		map[string]any{"type": "text", "content": "The clinic is open Monday to Friday from 8 am to 6 pm."}).wantStatus(t, 202).JSON["source_id"].(string)

	for _, id := range []string{bad, enc} {
		got := e.waitSource(u.Token, kb, id)
		if msg, _ := got["error"].(string); got["status"] != "error" || msg == "" || got["chunk_count"] != 0.0 {
			t.Fatalf("corrupt source %s: %v", id, got)
		}
	}
	if got := e.waitSource(u.Token, kb, enc); !strings.Contains(got["error"].(string), "encrypted") {
		t.Errorf("encrypted PDF error: %v", got)
	}
	if got := e.waitSource(u.Token, kb, good); got["status"] != "ready" {
		t.Fatalf("good source: %v", got)
	}
	r := e.query(u.Token, kb, map[string]any{"query": "when is the clinic open", "top_k": 10}).wantStatus(t, 200)
	if found := sourceIDs(results(t, r)); len(found) == 0 || slices.ContainsFunc(found, func(id string) bool { return id != good }) {
		t.Fatalf("results: %s", r.Body)
	}

	// The same bytes again: 200, the same source, queued again (and failing again).
	again := e.upload(u.Token, kb, "broken-again.pdf", "application/pdf", corrupt).wantStatus(t, 200)
	if again.JSON["source_id"] != bad {
		t.Fatalf("re-added corrupt file: %s", again.Body)
	}
	if got := e.waitSource(u.Token, kb, bad); got["status"] != "error" || got["error"] == "" {
		t.Fatalf("re-queued corrupt source: %v", got)
	}
}

// Another tenant's knowledge base is invisible on every route: the answer is the 404 an
// unknown ID gets, byte for byte, and nothing changes.
func TestKBRoutesCrossTenant(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	owner, intruder := e.newUser(), e.newUser()
	kb := e.createKB(owner.Token, "Owner's KB")
	src := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", owner.Token,
		map[string]any{"type": "text", "content": "The vault code is kept by the night manager."}).wantStatus(t, 202).JSON["source_id"].(string)
	e.waitSource(owner.Token, kb, src)
	before := e.do("GET", "/v1/knowledge-base/"+kb, owner.Token, nil).wantStatus(t, 200).Body
	ownerCounts := e.counts(owner.TenantID)

	unknownKB, unknownSrc := ids.New("kb"), ids.New("src")
	upload, uploadCT := multipartBody(t, "notes.txt", "text/plain", []byte("intruder notes"))
	routes := []struct {
		method, path string
		body         any
		headers      []string
	}{
		{"GET", "/v1/knowledge-base/" + kb, nil, nil},
		{"PATCH", "/v1/knowledge-base/" + kb, `{"name": "pwned", "language": "simple"}`, nil},
		{"DELETE", "/v1/knowledge-base/" + kb, nil, nil},
		{"GET", "/v1/knowledge-base/" + kb + "/sources", nil, nil},
		{"POST", "/v1/knowledge-base/" + kb + "/sources", `{"type": "text", "content": "injected by the intruder"}`, nil},
		{"POST", "/v1/knowledge-base/" + kb + "/sources", upload, []string{"Content-Type", uploadCT}},
		{"GET", "/v1/knowledge-base/" + kb + "/sources/" + src, nil, nil},
		{"DELETE", "/v1/knowledge-base/" + kb + "/sources/" + src, nil, nil},
		{"POST", "/v1/knowledge-base/" + kb + "/query", `{"query": "vault code"}`, nil},
	}
	for _, rt := range routes {
		for _, token := range []string{intruder.Token, intruder.APIKey} {
			r := e.do(rt.method, rt.path, token, rt.body, rt.headers...)
			r.wantError(t, 404)
			u := e.do(rt.method, strings.Replace(rt.path, kb, unknownKB, 1), token, rt.body, rt.headers...)
			if string(r.Body) != string(u.Body) {
				t.Errorf("%s %s: another tenant's KB answers %s, an unknown one %s", rt.method, rt.path, r.Body, u.Body)
			}
		}
	}
	// The owner's source addressed through the intruder's own KB is an unknown source.
	mine := e.createKB(intruder.Token, "Intruder's KB")
	for _, method := range []string{"GET", "DELETE"} {
		r := e.do(method, "/v1/knowledge-base/"+mine+"/sources/"+src, intruder.Token, nil)
		r.wantError(t, 404)
		u := e.do(method, "/v1/knowledge-base/"+mine+"/sources/"+unknownSrc, intruder.Token, nil)
		if string(r.Body) != string(u.Body) || r.JSON["code"] != "source_not_found" {
			t.Errorf("%s another tenant's source: %s, an unknown one: %s", method, r.Body, u.Body)
		}
	}
	// The intruder's list and queries do not show it.
	if r := e.do("GET", "/v1/knowledge-base", intruder.Token, nil).wantStatus(t, 200); r.JSON["total"] != 1.0 {
		t.Errorf("intruder's list: %s", r.Body)
	}
	if r := e.query(intruder.Token, mine, map[string]any{"query": "vault code night manager"}).wantStatus(t, 200); len(results(t, r)) != 0 {
		t.Errorf("intruder's query found the owner's chunks: %s", r.Body)
	}

	if after := e.do("GET", "/v1/knowledge-base/"+kb, owner.Token, nil).wantStatus(t, 200).Body; string(after) != string(before) {
		t.Fatalf("the owner's KB changed:\n%s\n%s", before, after)
	}
	if c := e.counts(owner.TenantID); c != ownerCounts {
		t.Fatalf("the owner's rows changed: %+v -> %+v", ownerCounts, c)
	}
	if c := e.counts(intruder.TenantID); c.Sources != 0 || c.Jobs != 0 || c.KBs != 1 {
		t.Fatalf("the intruder's tenant holds %+v", c)
	}
}

// API-key scopes: knowledge:read may list, get and query, but not create, change, add or
// delete; knowledge:write does both; another resource's scope does neither.
func TestKBScopes(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	key := func(scopes ...string) string {
		p, err := e.accounts.Authenticate(context.Background(), u.Token)
		if err != nil {
			t.Fatal(err)
		}
		_, secret, err := e.accounts.CreateAPIKey(context.Background(), p, accounts.CreateKeyInput{Name: "scoped", Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	read, write, other := key("knowledge:read"), key("knowledge:write"), key("agents:read")
	kb := e.createKB(u.Token, "Support")
	src := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "text", "content": "Parking is free behind the building."}).wantStatus(t, 202).JSON["source_id"].(string)
	e.waitSource(u.Token, kb, src)

	reads := []struct{ method, path, body string }{
		{"GET", "/v1/knowledge-base", ""},
		{"GET", "/v1/knowledge-base/" + kb, ""},
		{"GET", "/v1/knowledge-base/" + kb + "/sources", ""},
		{"GET", "/v1/knowledge-base/" + kb + "/sources/" + src, ""},
		{"POST", "/v1/knowledge-base/" + kb + "/query", `{"query": "where can I park"}`},
	}
	writes := []struct{ method, path, body string }{
		{"POST", "/v1/knowledge-base", `{"name": "new"}`},
		{"PATCH", "/v1/knowledge-base/" + kb, `{"name": "renamed"}`},
		{"POST", "/v1/knowledge-base/" + kb + "/sources", `{"type": "text", "content": "from a read-only key"}`},
		{"DELETE", "/v1/knowledge-base/" + kb + "/sources/" + src, ""},
		{"DELETE", "/v1/knowledge-base/" + kb, ""},
	}
	body := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	for _, rt := range reads {
		e.do(rt.method, rt.path, read, body(rt.body)).wantStatus(t, 200)
		e.do(rt.method, rt.path, write, body(rt.body)).wantStatus(t, 200) // write implies read
		e.do(rt.method, rt.path, other, body(rt.body)).wantError(t, 403)
	}
	before := e.counts(u.TenantID)
	for _, rt := range writes {
		for _, k := range []string{read, other} {
			r := e.do(rt.method, rt.path, k, body(rt.body))
			r.wantError(t, 403)
			if r.JSON["code"] != "insufficient_scope" {
				t.Errorf("%s %s: %s", rt.method, rt.path, r.Body)
			}
		}
	}
	// A multipart upload is refused the same way.
	e.upload(read, kb, "notes.txt", "text/plain", []byte("read-only upload")).wantError(t, 403)
	if after := e.counts(u.TenantID); after != before {
		t.Fatalf("a key without knowledge:write wrote: %+v -> %+v", before, after)
	}
	if r := e.do("GET", "/v1/knowledge-base/"+kb, read, nil); r.JSON["name"] != "Support" {
		t.Fatalf("a read-only key changed the KB: %s", r.Body)
	}
	// knowledge:write does everything.
	e.do("POST", "/v1/knowledge-base", write, `{"name": "by write key"}`).wantStatus(t, 201)
	e.do("PATCH", "/v1/knowledge-base/"+kb, write, `{"name": "renamed"}`).wantStatus(t, 200)
	e.do("DELETE", "/v1/knowledge-base/"+kb+"/sources/"+src, write, nil).wantStatus(t, 204)
	e.do("DELETE", "/v1/knowledge-base/"+kb, write, nil).wantStatus(t, 204)
}

// Deleting a KB that agents name detaches it from them: the agents no longer list it and
// stay editable (their saved knowledge_base_ids do not name a missing KB).
func TestKBDeleteDetachesFromAgents(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	gone, kept := e.createKB(u.Token, "Old FAQ"), e.createKB(u.Token, "Pricing")
	agent := func(kbs ...string) string {
		r := e.do("POST", "/v1/agents", u.Token, map[string]any{"agent_name": "Front desk", "knowledge_base_ids": kbs}).wantStatus(t, 201)
		return r.JSON["agent_id"].(string)
	}
	both, only := agent(gone, kept), agent(gone)
	untouched := agent(kept)
	untouchedBefore := e.do("GET", "/v1/agents/"+untouched, u.Token, nil).wantStatus(t, 200).Body

	e.do("DELETE", "/v1/knowledge-base/"+gone, u.Token, nil).wantStatus(t, 204)

	for id, want := range map[string][]any{both: {kept}, only: {}} {
		g := e.do("GET", "/v1/agents/"+id, u.Token, nil).wantStatus(t, 200)
		if got, _ := g.JSON["knowledge_base_ids"].([]any); !slices.Equal(got, want) {
			t.Errorf("agent %s lists %v, want %v", id, g.JSON["knowledge_base_ids"], want)
		}
		// Still editable: a PATCH that does not touch knowledge_base_ids is accepted.
		p := e.do("PATCH", "/v1/agents/"+id, u.Token, map[string]any{"agent_name": "Front desk v2"}).wantStatus(t, 200)
		if p.JSON["agent_name"] != "Front desk v2" {
			t.Errorf("patched agent: %s", p.Body)
		}
	}
	if after := e.do("GET", "/v1/agents/"+untouched, u.Token, nil).wantStatus(t, 200).Body; string(after) != string(untouchedBefore) {
		t.Errorf("an agent not naming the KB changed:\n%s\n%s", untouchedBefore, after)
	}
	// The deleted KB cannot be attached again.
	e.do("PATCH", "/v1/agents/"+only, u.Token, map[string]any{"knowledge_base_ids": []string{gone}}).wantError(t, 422, "knowledge_base_ids")
	e.do("PATCH", "/v1/agents/"+only, u.Token, map[string]any{"knowledge_base_ids": []string{kept}}).wantStatus(t, 200)
}

// Strings that look like SQL or NoSQL injection are data: stored and echoed verbatim in KB
// and source names, searchable as content, harmless as queries and as path IDs.
func TestKBInjectionStringsVerbatim(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	hostile := []string{`'); DROP TABLE kb_chunks;--`, `{"$gt":""}`, `' OR '1'='1`, `<script>alert("x")</script>`, `a & b | !c <-> d:*`}
	for _, s := range hostile {
		r := e.do("POST", "/v1/knowledge-base", u.Token, map[string]any{"name": s, "description": s}).wantStatus(t, 201)
		kb := r.JSON["knowledge_base_id"].(string)
		if g := e.do("GET", "/v1/knowledge-base/"+kb, u.Token, nil).wantStatus(t, 200); g.JSON["name"] != s || g.JSON["description"] != s {
			t.Errorf("KB %q not stored verbatim: %s", s, g.Body)
		}
		content := "Discount code " + s + " gives ten percent off gift vouchers."
		sr := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "text", "name": s, "content": content}).wantStatus(t, 202)
		src := sr.JSON["source_id"].(string)
		if got := e.waitSource(u.Token, kb, src); got["name"] != s || got["status"] != "ready" {
			t.Errorf("source %q: %v", s, got)
		}
		// The string as a query, in each mode: 200, echoed verbatim.
		for _, mode := range []string{"hybrid", "vector", "text"} {
			q := e.query(u.Token, kb, map[string]any{"query": s, "mode": mode}).wantStatus(t, 200)
			if q.JSON["query"] != s {
				t.Errorf("query %q (%s) echoed as %v", s, mode, q.JSON["query"])
			}
		}
		// The content is found, and names its source verbatim.
		q := e.query(u.Token, kb, map[string]any{"query": "discount code gift vouchers"}).wantStatus(t, 200)
		rs := results(t, q)
		if len(rs) == 0 || rs[0]["source_name"] != s || !strings.Contains(rs[0]["text"].(string), s) {
			t.Errorf("content with %q: %s", s, q.Body)
		}
	}
	// Hostile IDs in the path are unknown KBs.
	for _, id := range []string{"'%20OR%20'1'='1", "%7B%22$gt%22:%22%22%7D", "kb_x%27;DROP%20TABLE%20kb_chunks;--"} {
		e.do("GET", "/v1/knowledge-base/"+id, u.Token, nil).wantError(t, 404)
		e.query(u.Token, id, `{"query": "x"}`).wantError(t, 404)
		e.do("GET", "/v1/knowledge-base/"+id+"/sources/"+id, u.Token, nil).wantError(t, 404)
	}
	// Everything is still there.
	if r := e.do("GET", "/v1/knowledge-base", u.Token, nil).wantStatus(t, 200); r.JSON["total"] != float64(len(hostile)) {
		t.Fatalf("list after injection strings: %s", r.Body)
	}
	if c := e.counts(u.TenantID); c.Chunks < len(hostile) {
		t.Fatalf("chunks after injection strings: %+v", c)
	}
}

// Identical uploads racing each other make one source and one ingestion job: one request
// gets 202, the others 200 with the same source_id.
func TestKBConcurrentIdenticalUploads(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	kb := e.createKB(u.Token, "Support")
	body, ct := multipartBody(t, "same.txt", "text/plain", []byte("Identical upload body for the race."))
	const n = 8
	type answer struct {
		status int
		id     string
	}
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			// e.do fails the test with t.Fatal, which must not run off the test goroutine.
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/knowledge-base/"+kb+"/sources", bytes.NewReader(body))
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer "+u.Token)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var m map[string]any
			json.NewDecoder(resp.Body).Decode(&m)
			answers <- answer{resp.StatusCode, fmt.Sprint(m["source_id"])}
		})
	}
	wg.Wait()
	close(answers)
	statuses, sourceIDs := map[int]int{}, map[string]bool{}
	for a := range answers {
		statuses[a.status]++
		sourceIDs[a.id] = true
	}
	if statuses[202] != 1 || statuses[200] != n-1 || len(sourceIDs) != 1 {
		t.Fatalf("statuses %v, source ids %v", statuses, sourceIDs)
	}
	if c := e.counts(u.TenantID); c.Sources != 1 || c.Jobs != 1 {
		t.Fatalf("after %d identical uploads: %+v", n, c)
	}
}

// A NUL character cannot be stored in PostgreSQL text, so every field that reaches a
// text column or a text parameter must refuse it as a validation error of that field,
// never fail with a 500 or blame another field.
func TestKBNULCharactersAreValidationErrorsOfTheirField(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	kb := e.createKB(u.Token, "Support")
	src := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "text", "content": "Parking is free behind the building."}).wantStatus(t, 202).JSON["source_id"].(string)
	e.waitSource(u.Token, kb, src)
	cases := []struct {
		name, method, path string
		body               map[string]any
		field              string
	}{
		{"kb name", "POST", "/v1/knowledge-base", map[string]any{"name": "a\x00b"}, "name"},
		{"kb description on create", "POST", "/v1/knowledge-base", map[string]any{"name": "x", "description": "a\x00b"}, "description"},
		{"kb description on patch", "PATCH", "/v1/knowledge-base/" + kb, map[string]any{"description": "a\x00b"}, "description"},
		{"source name", "POST", "/v1/knowledge-base/" + kb + "/sources", map[string]any{"type": "text", "name": "a\x00b", "content": "x"}, "name"},
		{"query hybrid", "POST", "/v1/knowledge-base/" + kb + "/query", map[string]any{"query": "park\x00ing"}, "query"},
		{"query text", "POST", "/v1/knowledge-base/" + kb + "/query", map[string]any{"query": "park\x00ing", "mode": "text"}, "query"},
		{"query vector", "POST", "/v1/knowledge-base/" + kb + "/query", map[string]any{"query": "park\x00ing", "mode": "vector"}, "query"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.counts(u.TenantID)
			r := e.do(c.method, c.path, u.Token, c.body)
			r.wantError(t, 422, c.field)
			if fm := r.JSON["fields"].(map[string]any); len(fm) != 1 {
				t.Errorf("blames other fields too: %s", r.Body)
			}
			if after := e.counts(u.TenantID); after != before {
				t.Errorf("wrote something: %+v -> %+v", before, after)
			}
		})
	}
}

// Text content with a NUL and no name: the name is derived from the content's first
// words, and the request must not be refused for a "name" the caller never sent. Either
// the content is accepted (extraction drops control characters) under a clean derived
// name, or it is refused as invalid content.
func TestKBTextWithNULIsNotBlamedOnName(t *testing.T) {
	t.Parallel()
	e := newKBTestEnv(t, true)
	u := e.newUser()
	kb := e.createKB(u.Token, "Support")
	r := e.do("POST", "/v1/knowledge-base/"+kb+"/sources", u.Token, map[string]any{"type": "text", "content": "Opening\x00hours are nine to five."})
	switch r.Status {
	case 202:
		if name, _ := r.JSON["name"].(string); strings.ContainsRune(name, 0) {
			t.Fatalf("derived name keeps the NUL: %s", r.Body)
		}
		if got := e.waitSource(u.Token, kb, r.JSON["source_id"].(string)); got["status"] != "ready" {
			t.Fatalf("ingested: %v", got)
		}
	case 422:
		r.wantError(t, 422, "content")
		if _, blamesName := r.JSON["fields"].(map[string]any)["name"]; blamesName {
			t.Fatalf("refused for a name the caller did not send: %s", r.Body)
		}
	default:
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
}
