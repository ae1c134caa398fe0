package knowledge_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/knowledge"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	svc  *knowledge.Service
}

// newEnv is a knowledge service on a fresh database with a real River worker.
func newEnv(t *testing.T, allowPrivate bool) *env {
	t.Helper()
	return newEnvConfig(t, allowPrivate, knowledge.Config{})
}

// newEnvConfig is newEnv with a service configuration (its Logger is set here).
func newEnvConfig(t *testing.T, allowPrivate bool, cfg knowledge.Config) *env {
	t.Helper()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: allowPrivate})
	if err != nil {
		t.Fatal(err)
	}
	box, _ := crypt.New(crypt.GenerateKey())
	log := slog.New(slog.DiscardHandler)
	cfg.Logger = log
	svc, err := knowledge.New(pool, cfg, box, guard)
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	svc.AddWorkers(workers)
	jc, err := jobs.New(pool, jobs.Config{Work: true, MaxWorkers: 4}, workers, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetJobs(jc.Client)
	if err := jc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jc.Stop)
	return &env{t: t, pool: pool, svc: svc}
}

func (e *env) tenant() string {
	e.t.Helper()
	id := "ten_" + strings.ToLower(rand.Text())
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO tenants (id, name) VALUES ($1, 'T')`, id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func ptr[T any](v T) *T { return &v }

func (e *env) kb(tenant string, in knowledge.KBInput) knowledge.KnowledgeBase {
	e.t.Helper()
	if in.Name == nil {
		in.Name = ptr("Support")
	}
	kb, err := e.svc.CreateKB(context.Background(), tenant, in)
	if err != nil {
		e.t.Fatal(err)
	}
	return kb
}

// add adds a source and waits until its ingestion has ended (ready or error).
func (e *env) add(tenant, kbID string, in knowledge.SourceInput) knowledge.Source {
	e.t.Helper()
	src, _, err := e.svc.AddSource(context.Background(), tenant, kbID, in)
	if err != nil {
		e.t.Fatalf("add source: %v", err)
	}
	return e.wait(tenant, kbID, src.ID)
}

func (e *env) wait(tenant, kbID, id string) knowledge.Source {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		src, err := e.svc.GetSource(context.Background(), tenant, kbID, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if src.Status == knowledge.StatusReady || src.Status == knowledge.StatusError {
			return src
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("source %s still %s after 60s (%s)", id, src.Status, src.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) query(tenant, kbID string, q knowledge.Query) []knowledge.Result {
	e.t.Helper()
	res, err := e.svc.QueryKB(context.Background(), tenant, kbID, q)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

const handbook = `# Acme Dental handbook

## Opening hours

The clinic is open Monday to Friday from 8 am to 6 pm, and on Saturdays from 9 am to 1 pm.
We are closed on Sundays and public holidays.

## Billing

### Refunds

If you cancel an appointment more than 24 hours ahead, we refund your deposit in full within
five working days. Late cancellations forfeit the deposit.

### Insurance

We accept most major dental insurance plans. Bring your insurance card to your first visit.

## Parking

Free parking is available behind the building; the entrance is on Elm Street.
`

func TestTextSourceIngestsAndIsFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	src := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "handbook.md", Content: handbook})
	if src.Status != knowledge.StatusReady || src.ChunkCount == 0 || src.ChunksDone != src.ChunksTotal || src.SizeBytes != int64(len(handbook)) {
		t.Fatalf("source: %+v", src)
	}
	if !strings.HasPrefix(src.ContentHash, "sha256:") || src.Format != "markdown" {
		t.Fatalf("hash/format: %+v", src)
	}
	for _, mode := range []string{knowledge.ModeHybrid, knowledge.ModeVector, knowledge.ModeText} {
		res := e.query(ten, kb.ID, knowledge.Query{Query: "Can I get my deposit refunded if I cancel?", TopK: 3, Mode: mode})
		if len(res) == 0 {
			t.Fatalf("%s: no results", mode)
		}
		top := res[0]
		if !strings.Contains(top.Text, "refund your deposit") || !slices.Equal(top.HeadingPath, []string{"Acme Dental handbook", "Billing", "Refunds"}) {
			t.Errorf("%s: top result %+v", mode, top)
		}
		if top.SourceID != src.ID || top.SourceName != "handbook.md" || top.KBID != kb.ID || top.Score <= 0 {
			t.Errorf("%s: result fields %+v", mode, top)
		}
	}
	// Search, the voice engine's call, across KBs, ignoring unknown IDs.
	res, err := e.svc.Search(context.Background(), ten, []string{kb.ID, "kb_missing"}, "where do I park my car", 2)
	if err != nil || len(res) == 0 || !strings.Contains(res[0].Text, "parking") {
		t.Fatalf("Search: %v %+v", err, res)
	}
	got, _ := e.svc.GetKB(context.Background(), ten, kb.ID, true)
	if got.SourceCount != 1 || got.ChunkCount != src.ChunkCount || len(got.Sources) != 1 {
		t.Fatalf("kb counts: %+v", got)
	}
}

func TestIdenticalContentIsNotDuplicated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	a := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: handbook})
	b, created, err := e.svc.AddSource(context.Background(), ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: handbook, Name: "again"})
	if err != nil || created || b.ID != a.ID {
		t.Fatalf("re-add: created=%v id=%s vs %s err=%v", created, b.ID, a.ID, err)
	}
	var sources, chunks int
	e.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM kb_sources), (SELECT count(*) FROM kb_chunks)`).Scan(&sources, &chunks)
	if sources != 1 || chunks != a.ChunkCount {
		t.Fatalf("%d sources, %d chunks after re-adding", sources, chunks)
	}
	// The same content in another KB is a separate source.
	kb2 := e.kb(ten, knowledge.KBInput{Name: ptr("Other")})
	if _, created, _ := e.svc.AddSource(context.Background(), ten, kb2.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: handbook}); !created {
		t.Fatal("content in another KB was treated as a duplicate")
	}
}

func TestURLSource(t *testing.T) {
	t.Parallel()
	page := `<!doctype html><html><head><title>Returns policy</title><style>.x{color:red}</style></head><body>
<nav><a href="/">Home</a> <a href="/shop">Shop the spring sale now</a></nav>
<main><h1>Returns</h1><p>Unworn shoes can be returned within 30 days for a full refund to the original card.</p>
<h2>Exchanges</h2><p>Exchanges for another size ship free of charge.</p></main>
<script>trackVisitor("spring sale")</script><footer>Copyright Shoe Co</footer></body></html>`
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path == "/gone" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	defer srv.Close()
	e := newEnv(t, true)
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	src := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindURL, URL: srv.URL + "/returns"})
	if src.Status != knowledge.StatusReady || src.Format != "html" {
		t.Fatalf("url source: %+v", src)
	}
	res := e.query(ten, kb.ID, knowledge.Query{Query: "how long do I have to return shoes", TopK: 5})
	if len(res) == 0 || !strings.Contains(res[0].Text, "30 days") {
		t.Fatalf("results %+v", res)
	}
	for _, r := range res {
		if strings.Contains(r.Text, "trackVisitor") || strings.Contains(r.Text, "spring sale") || strings.Contains(r.Text, "Copyright") {
			t.Fatalf("page noise indexed: %q", r.Text)
		}
	}
	// A page that answers 404 ends in error with the reason.
	bad := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindURL, Content: srv.URL + "/gone"})
	if bad.Status != knowledge.StatusError || !strings.Contains(bad.Error, "404") {
		t.Fatalf("404 page: %+v", bad)
	}
}

func TestPrivateURLRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	for _, u := range []string{"http://127.0.0.1:8080/admin", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://10.1.2.3/x"} {
		_, _, err := e.svc.AddSource(context.Background(), ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindURL, URL: u})
		if errs.KindOf(err) != errs.KindInvalid {
			t.Errorf("%s: err %v", u, err)
		}
	}
	var n int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM kb_sources`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d sources written", n)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	ten, other := e.tenant(), e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	cases := []struct {
		name string
		in   knowledge.SourceInput
		kind errs.Kind
	}{
		{"empty text", knowledge.SourceInput{Kind: knowledge.KindText, Content: "  \n "}, errs.KindInvalid},
		{"empty file", knowledge.SourceInput{Kind: knowledge.KindFile, Filename: "a.pdf"}, errs.KindInvalid},
		{"oversize file", knowledge.SourceInput{Kind: knowledge.KindFile, Filename: "a.txt", Data: make([]byte, 20<<20+1)}, errs.KindTooLarge},
		{"unsupported type", knowledge.SourceInput{Kind: knowledge.KindFile, Filename: "photo.png", Data: []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")}, errs.KindUnsupported},
		{"bad kind", knowledge.SourceInput{Kind: "video", Content: "x"}, errs.KindInvalid},
		{"bad url", knowledge.SourceInput{Kind: knowledge.KindURL, URL: "ftp://example.com/a"}, errs.KindInvalid},
	}
	for _, c := range cases {
		_, _, err := e.svc.AddSource(ctx, ten, kb.ID, c.in)
		if errs.KindOf(err) != c.kind {
			t.Errorf("%s: got %v (kind %v), want kind %v", c.name, err, errs.KindOf(err), c.kind)
		}
	}
	// Another tenant's KB is not found, for every operation.
	if _, _, err := e.svc.AddSource(ctx, other, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: "x"}); !errors.Is(err, knowledge.ErrNotFound) {
		t.Errorf("add to foreign KB: %v", err)
	}
	if _, err := e.svc.QueryKB(ctx, other, kb.ID, knowledge.Query{Query: "hours"}); !errors.Is(err, knowledge.ErrNotFound) {
		t.Errorf("query foreign KB: %v", err)
	}
	if _, err := e.svc.GetKB(ctx, other, kb.ID, true); !errors.Is(err, knowledge.ErrNotFound) {
		t.Errorf("get foreign KB: %v", err)
	}
	if err := e.svc.DeleteKB(ctx, other, kb.ID); !errors.Is(err, knowledge.ErrNotFound) {
		t.Errorf("delete foreign KB: %v", err)
	}
	if res, err := e.svc.Search(ctx, other, []string{kb.ID}, "hours", 3); err != nil || len(res) != 0 {
		t.Errorf("Search of a foreign KB returned %v %v", res, err)
	}
	// Empty query: 422. A KB with no sources: empty results, no error.
	if _, err := e.svc.QueryKB(ctx, ten, kb.ID, knowledge.Query{Query: "   "}); errs.KindOf(err) != errs.KindInvalid {
		t.Errorf("empty query: %v", err)
	}
	if res, err := e.svc.QueryKB(ctx, ten, kb.ID, knowledge.Query{Query: "opening hours"}); err != nil || len(res) != 0 {
		t.Errorf("empty KB: %v %v", res, err)
	}
	for _, q := range []knowledge.Query{{Query: "x", TopK: 51}, {Query: "x", Mode: "magic"}, {Query: "x", MMR: true, MMRLambda: 1.5}} {
		if _, err := e.svc.QueryKB(ctx, ten, kb.ID, q); errs.KindOf(err) != errs.KindInvalid {
			t.Errorf("%+v: %v", q, err)
		}
	}
	// KB validation.
	for _, in := range []knowledge.KBInput{{Name: ptr("")}, {Name: ptr("x"), Language: ptr("klingon")},
		{Name: ptr("x"), Embedder: &knowledge.EmbedderSpec{Provider: "cohere"}},
		{Name: ptr("x"), Embedder: &knowledge.EmbedderSpec{Provider: "local", Dimensions: 10}}} {
		if _, err := e.svc.CreateKB(ctx, ten, in); errs.KindOf(err) != errs.KindInvalid {
			t.Errorf("%+v: %v", in, err)
		}
	}
}

func TestDeleteSourceRemovesChunks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	a := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: handbook})
	e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: "Our dog-friendly policy: well-behaved dogs are welcome in the waiting room."})
	if err := e.svc.DeleteSource(ctx, ten, kb.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteSource(ctx, ten, kb.ID, a.ID); !errors.Is(err, knowledge.ErrSourceNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	for _, r := range e.query(ten, kb.ID, knowledge.Query{Query: "refund deposit parking hours", TopK: 10}) {
		if r.SourceID == a.ID {
			t.Fatalf("deleted source still found: %+v", r)
		}
	}
}

// Changing the embedder re-embeds every chunk in the background; search keeps working.
func TestChangeEmbedderReembeds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	src := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: handbook})
	got, err := e.svc.PatchKB(ctx, ten, kb.ID, knowledge.KBInput{Embedder: &knowledge.EmbedderSpec{Provider: "local", Dimensions: 256}})
	if err != nil {
		t.Fatal(err)
	}
	if got.EmbedderID == kb.EmbedderID || got.Dimensions != 256 {
		t.Fatalf("patched: %+v", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ = e.svc.GetKB(ctx, ten, kb.ID, false)
		if got.Status == "ready" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s: %+v", got.Status, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var stale int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM kb_chunks WHERE kb_id = $1 AND (dim <> 256 OR embedder_id <> $2)`, kb.ID, got.EmbedderID).Scan(&stale)
	if stale != 0 || got.ReembedDone != src.ChunkCount {
		t.Fatalf("%d stale chunks; reembed %d/%d", stale, got.ReembedDone, got.ReembedTotal)
	}
	res := e.query(ten, kb.ID, knowledge.Query{Query: "deposit refund after cancelling", Mode: knowledge.ModeVector, TopK: 1})
	if len(res) != 1 || !strings.Contains(res[0].Text, "refund") {
		t.Fatalf("vector search after re-embedding: %+v", res)
	}
}

// The KB's language drives stemming: with "simple" (no stemming) "refunds" does not
// match "refund"; with "english" it does.
func TestLanguageChangeReindexes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{Language: ptr("simple")})
	e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Content: "We refund deposits within five days."})
	text := knowledge.Query{Query: "refunds", Mode: knowledge.ModeText}
	if res := e.query(ten, kb.ID, text); len(res) != 0 {
		t.Fatalf("simple config stemmed: %+v", res)
	}
	if _, err := e.svc.PatchKB(ctx, ten, kb.ID, knowledge.KBInput{Language: ptr("english")}); err != nil {
		t.Fatal(err)
	}
	if res := e.query(ten, kb.ID, text); len(res) != 1 {
		t.Fatalf("english config did not stem: %+v", res)
	}
}

// MMR drops near-duplicate chunks in favour of a different one.
func TestMMRDiversifies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	same := "Our clinic opens at 8 am on weekdays and closes at 6 pm."
	e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "a", Content: same})
	e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "b", Content: same + " "})
	e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "c", Content: "On Saturdays the clinic opens at 9 am and closes at 1 pm."})
	q := knowledge.Query{Query: "when does the clinic open", TopK: 2}
	q.MMR, q.MMRLambda = true, 0.5
	div := e.query(ten, kb.ID, q)
	if len(div) != 2 {
		t.Fatalf("mmr returned %d", len(div))
	}
	if div[0].Text == div[1].Text || !strings.Contains(div[0].Text+div[1].Text, "Saturdays") {
		t.Fatalf("MMR kept both duplicates or dropped the distinct chunk: %+v", div)
	}
}
