package knowledge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
	"golang.org/x/sync/errgroup"

	"github.com/parleyhq/parley/internal/errs"
)

// Retrieval.
//
// Hybrid search asks two retrievers for candidates and fuses their rankings:
//   - vector: pgvector HNSW cosine search over the KB's embedder's vectors;
//   - text: PostgreSQL full-text search with the KB's language (stemming, stop words),
//     the query's words OR-ed so partial matches count, ranked by ts_rank_cd.
//
// Reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009) scores a chunk
// Σ 1/(rrfK + rank) over the retrievers that found it. It needs no score calibration
// between cosine distances and text ranks, which live on unrelated scales, and k = 60 is
// the constant from that paper: it damps the difference between the first few ranks so
// one retriever's top hit cannot drown agreement between both.
const rrfK = 60

// candidatesFor is how many candidates each retriever contributes for top k: fusion
// needs depth beyond k so a chunk ranked 12th by one retriever and 3rd by the other can
// still win.
func candidatesFor(k int) int { return max(4*k, 20) }

// MaxTopK bounds top_k.
const MaxTopK = 50

// Search is the voice engine's retrieval call: hybrid search over several knowledge bases
// of a tenant. Unknown or foreign KB IDs are ignored (an agent may still name a deleted
// KB). It is fast enough for the conversation path: one embedding of the query and one
// database round trip per embedder.
func (s *Service) Search(ctx context.Context, tenantID string, kbIDs []string, query string, k int) ([]Result, error) {
	return s.search(ctx, tenantID, kbIDs, Query{Query: query, TopK: k}, false)
}

// QueryKB runs a query against one knowledge base (the API's query route).
func (s *Service) QueryKB(ctx context.Context, tenantID, kbID string, q Query) ([]Result, error) {
	return s.search(ctx, tenantID, []string{kbID}, q, true)
}

func (q *Query) normalize() error {
	q.Query = strings.TrimSpace(q.Query)
	f := errs.Fields{}
	if q.Query == "" {
		return ErrEmptyQuery
	}
	if strings.ContainsRune(q.Query, 0) {
		f.Add("query", "must not contain NUL characters")
	}
	if len(q.Query) > 4000 {
		f.Add("query", "must be at most 4000 bytes")
	}
	if q.TopK == 0 {
		q.TopK = 5
	}
	if q.TopK < 1 || q.TopK > MaxTopK {
		f.Add("top_k", "must be from 1 to %d", MaxTopK)
	}
	switch q.Mode {
	case "":
		q.Mode = ModeHybrid
	case ModeHybrid, ModeVector, ModeText:
	default:
		f.Add("mode", "must be hybrid, vector or text")
	}
	if q.MMRLambda == 0 {
		q.MMRLambda = 0.7
	}
	if q.MMRLambda < 0 || q.MMRLambda > 1 {
		f.Add("mmr_lambda", "must be from 0 to 1")
	}
	return f.Err()
}

type kbInfo struct {
	id, lang, embedderID string
	dim                  int
	spec                 EmbedderSpec
}

type hit struct {
	id    int64
	score float64 // cosine similarity (vector) or ts_rank_cd (text)
}

func (s *Service) search(ctx context.Context, tenantID string, kbIDs []string, q Query, strict bool) ([]Result, error) {
	if err := q.normalize(); err != nil {
		return nil, err
	}
	kbs, err := s.loadKBs(ctx, tenantID, kbIDs)
	if err != nil {
		return nil, err
	}
	if strict && len(kbs) < len(kbIDs) {
		return nil, fmt.Errorf("knowledge: query: %w", ErrNotFound)
	}
	if len(kbs) == 0 {
		return []Result{}, nil
	}
	n := candidatesFor(q.TopK)

	// Group KBs by embedder (vector search) and by language (text search).
	byEmb := map[string][]kbInfo{}
	byLang := map[string][]string{}
	for _, kb := range kbs {
		byEmb[kb.embedderID] = append(byEmb[kb.embedderID], kb)
		byLang[kb.lang] = append(byLang[kb.lang], kb.id)
	}
	// The two retrievers run at once on two connections, so hybrid latency is the slower
	// of the two rather than their sum.
	var vecLists, textLists [][]hit
	qvecs := map[string]pgvector.Vector{} // the query's vector per embedder
	g, gctx := errgroup.WithContext(ctx)
	if q.Mode != ModeText {
		g.Go(func() (err error) {
			vecLists, err = s.vectorSearch(gctx, tenantID, byEmb, q.Query, n, qvecs)
			return err
		})
	}
	if q.Mode != ModeVector {
		g.Go(func() (err error) {
			// Text contributes 2k candidates, not 4k: its tiers already put the chunks
			// sharing the most words first, and every candidate beyond them costs a rank
			// computation on a detoasted tsvector. On bench/kbbench at 100k chunks this left
			// MRR@10 unchanged (text 0.752, hybrid 0.787) and cut hybrid p95 from 40.6 to
			// 33.4 ms (one run each, quiet machine).
			textLists, err = s.textSearch(gctx, tenantID, byLang, q.Query, max(2*q.TopK, 10))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	vec := mergeByScore(vecLists)
	txt := mergeByScore(textLists)
	weight := s.cfg.LocalVectorWeight
	for _, kb := range kbs {
		if kb.spec.Provider != ProviderLocal {
			weight = 1
		}
	}
	if q.Mode == ModeHybrid {
		weight *= agreement(vec, txt)
		// Text candidates the graph walk did not return get their exact vector score, so
		// the vector ranking that fusion sees covers every candidate, not just those HNSW
		// happened to reach (its recall on lexical vectors is about 0.95, and lower on
		// short questions).
		extra, err := s.rescore(ctx, tenantID, byEmb, qvecs, vec, txt)
		if err != nil {
			return nil, err
		}
		vec = mergeByScore([][]hit{vec, extra})
	}
	ranked := fuse(q.Mode, vec, txt, weight)
	depth := q.TopK
	if q.MMR {
		depth = min(len(ranked), n)
	}
	if len(ranked) > depth {
		ranked = ranked[:depth]
	}
	kbIDs = kbIDs[:0:0]
	for _, kb := range kbs {
		kbIDs = append(kbIDs, kb.id)
	}
	results, embs, err := s.loadChunks(ctx, tenantID, kbIDs, ranked, q.MMR)
	if err != nil {
		return nil, err
	}
	if q.MMR {
		results = mmr(results, embs, q.MMRLambda, q.TopK)
	}
	return results, nil
}

// vectorSearch runs one nearest-neighbour query per embedder group in one round trip.
// It records the query's vector for each embedder in qvecs.
func (s *Service) vectorSearch(ctx context.Context, tenantID string, byEmb map[string][]kbInfo, query string, n int, qvecs map[string]pgvector.Vector) ([][]hit, error) {
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN READ ONLY`)
	batch.Queue(`SET LOCAL hnsw.ef_search = ` + strconv.Itoa(max(s.cfg.EFSearch, n)))
	// Iterative index scans (pgvector 0.8) keep walking the graph until enough rows pass
	// the tenant/KB filter, so a small KB inside a large table still gets its top k.
	batch.Queue(`SET LOCAL hnsw.iterative_scan = relaxed_order`)
	for embID, group := range byEmb {
		emb, err := s.embedder(group[0].spec)
		if err != nil {
			return nil, err
		}
		vecs, err := emb.Embed(ctx, []string{query})
		if err != nil {
			return nil, fmt.Errorf("knowledge: embed query: %w", err)
		}
		ids := make([]string, len(group))
		for i, kb := range group {
			ids[i] = kb.id
		}
		qvecs[embID] = pgvector.NewVector(vecs[0])
		batch.Queue(vectorSQL(group[0].dim), qvecs[embID], tenantID, ids, embID, n)
	}
	batch.Queue(`COMMIT`)
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()
	for range 3 {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("knowledge: vector search: %w", err)
		}
	}
	lists := make([][]hit, 0, len(byEmb))
	for range byEmb {
		l, err := readHits(br)
		if err != nil {
			return nil, fmt.Errorf("knowledge: vector search: %w", err)
		}
		lists = append(lists, l)
	}
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("knowledge: vector search: %w", err)
	}
	return lists, br.Close()
}

// rescore returns the exact vector similarity of the text candidates missing from the
// vector candidates, one query per embedder group in one round trip (a primary-key
// lookup of a few dozen rows).
func (s *Service) rescore(ctx context.Context, tenantID string, byEmb map[string][]kbInfo, qvecs map[string]pgvector.Vector, vec, txt []hit) ([]hit, error) {
	seen := make(map[int64]bool, len(vec))
	for _, h := range vec {
		seen[h.id] = true
	}
	var missing []int64
	for _, h := range txt {
		if !seen[h.id] {
			missing = append(missing, h.id)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	batch := &pgx.Batch{}
	for embID, group := range byEmb {
		ids := make([]string, len(group))
		for i, kb := range group {
			ids[i] = kb.id
		}
		cast := vectorType(group[0].dim)
		batch.Queue(fmt.Sprintf(`SELECT c.id, 1 - (c.embedding::%[1]s <=> $1::%[1]s) FROM kb_chunks c
			WHERE c.tenant_id = $2 AND c.kb_id = ANY($3) AND c.id = ANY($4) AND c.dim = %[2]d AND c.embedder_id = $5`, cast, group[0].dim),
			qvecs[embID], tenantID, ids, missing, embID)
	}
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()
	var out []hit
	for range byEmb {
		l, err := readHits(br)
		if err != nil {
			return nil, fmt.Errorf("knowledge: rescore: %w", err)
		}
		out = append(out, l...)
	}
	return out, br.Close()
}

// textSearch runs one full-text query per language group in one round trip.
func (s *Service) textSearch(ctx context.Context, tenantID string, byLang map[string][]string, query string, n int) ([][]hit, error) {
	batch := &pgx.Batch{}
	for lang, ids := range byLang {
		batch.Queue(textSQL, lang, query, tenantID, ids, n, s.cfg.TextRankLimit)
	}
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()
	lists := make([][]hit, 0, len(byLang))
	for range byLang {
		l, err := readHits(br)
		if err != nil {
			return nil, fmt.Errorf("knowledge: text search: %w", err)
		}
		lists = append(lists, l)
	}
	return lists, br.Close()
}

// vectorSQL is the nearest-neighbour query for one vector size. kb_id = ANY($3) limits it
// to the KBs' partitions; its ORDER BY expression and dim predicate match a partition's
// HNSW index (index.go), which the planner uses where one exists. A partition without one
// (a small KB, or one still being loaded) is scanned and sorted exactly.
func vectorSQL(dim int) string {
	cast := vectorType(dim)
	return fmt.Sprintf(`SELECT c.id, 1 - (c.embedding::%[1]s <=> $1::%[1]s) FROM kb_chunks c
		WHERE c.dim = %[2]d AND c.tenant_id = $2 AND c.kb_id = ANY($3) AND c.embedder_id = $4
		ORDER BY c.embedding::%[1]s <=> $1::%[1]s LIMIT $5`, cast, dim)
}

// textSQL ranks chunks by full-text relevance. The question's lexemes come from the
// KB's text search configuration (stemming, stop words). Requiring every lexeme (AND) is
// too strict for natural questions, and accepting any one (OR) makes a question with one
// common word rank most of the KB, which is slow and noisy. So matches are taken in tiers
// of coordination level, each an OR of ANDs that the GIN index answers directly:
//
//  1. chunks sharing at least three of the question's six rarest lexemes;
//  2. then chunks sharing two of its eight rarest;
//  3. then, only when those found fewer than the candidates wanted, chunks sharing one.
//
// Rarity comes from the partitions' ANALYZE statistics (most common elements). Rare words
// carry the question's meaning, and they keep the GIN scan cheap: an OR of ANDs has no
// required entry, so GIN walks every listed lexeme's posting list and evaluates the whole
// query per item. With the common words of a changelog phrase in a 56-clause triple query
// that took 45 ms at 100k chunks.
//
// Append under the final LIMIT stops pulling once it has enough, so a later tier often
// never runs. Within a tier, ts_rank_cd (cover density, normalised by length, flag 32, so
// below 1) orders the matches; the tier is added to the score, so scores stay comparable
// across queries merged by mergeByScore. Ranking reads each match's tsvector, so each tier
// ranks at most $6 matches (TextRankLimit), in table order: tiering is what keeps the
// answer inside that budget when a question's words are common, since a chunk matching
// three of them is far rarer than one matching two. (With pairs alone, a common pair
// filled the budget with arbitrary chunks: on the benchmark, text MRR@10 fell from 0.78
// to 0.69 when the labelled answers were ingested last instead of first.)
const textSQL = `WITH words AS (
		SELECT DISTINCT l FROM unnest(tsvector_to_array(to_tsvector($1::regconfig, $2))) AS l),
	-- How common each lexeme is in these KBs, from ANALYZE's most-common-elements
	-- statistics of their partitions (a lexeme not listed there is rare).
	freq AS (SELECT u.e, max(u.f) AS f FROM pg_stats st,
			unnest(st.most_common_elems::text::text[], st.most_common_elem_freqs) AS u(e, f)
		WHERE st.schemaname = current_schema() AND st.attname = 'tsv'
			AND st.tablename = ANY (SELECT 'kb_chunks_' || k FROM unnest($4::text[]) AS k)
		GROUP BY u.e),
	lex AS (SELECT w.l, row_number() OVER (ORDER BY coalesce(freq.f, 0), w.l) AS n
		FROM words w LEFT JOIN freq ON freq.e = w.l ORDER BY n LIMIT 12),
	q AS (SELECT
		(SELECT string_agg(quote_literal(l), ' | ') FROM lex)::tsquery AS any_q,
		coalesce((SELECT string_agg('(' || quote_literal(a.l) || ' & ' || quote_literal(b.l) || ')', ' | ')
			FROM lex a JOIN lex b ON a.l < b.l WHERE a.n <= 8 AND b.n <= 8), (SELECT string_agg(quote_literal(l), ' | ') FROM lex))::tsquery AS pair_q,
		(SELECT string_agg('(' || quote_literal(a.l) || ' & ' || quote_literal(b.l) || ' & ' || quote_literal(c.l) || ')', ' | ')
			FROM lex a JOIN lex b ON a.l < b.l JOIN lex c ON b.l < c.l WHERE a.n <= 6 AND b.n <= 6 AND c.n <= 6)::tsquery AS tri_q)
	(SELECT m.id, 2 + ts_rank_cd(m.tsv, q.any_q, 32) AS r FROM q, LATERAL (
			SELECT c.id, c.tsv FROM kb_chunks c
			WHERE q.tri_q IS NOT NULL AND c.tenant_id = $3 AND c.kb_id = ANY($4) AND c.tsv @@ q.tri_q LIMIT $6) m
		ORDER BY r DESC, m.id LIMIT $5)
	UNION ALL
	(SELECT m.id, 1 + ts_rank_cd(m.tsv, q.any_q, 32) AS r FROM q, LATERAL (
			SELECT c.id, c.tsv FROM kb_chunks c
			WHERE c.tenant_id = $3 AND c.kb_id = ANY($4) AND c.tsv @@ q.pair_q
				AND (q.tri_q IS NULL OR NOT c.tsv @@ q.tri_q) LIMIT $6) m
		ORDER BY r DESC, m.id LIMIT $5)
	UNION ALL
	(SELECT m.id, ts_rank_cd(m.tsv, q.any_q, 32) AS r FROM q, LATERAL (
			SELECT c.id, c.tsv FROM kb_chunks c
			WHERE c.tenant_id = $3 AND c.kb_id = ANY($4) AND c.tsv @@ q.any_q AND NOT c.tsv @@ q.pair_q LIMIT $6) m
		ORDER BY r DESC, m.id LIMIT $5)
	LIMIT $5`

func readHits(br pgx.BatchResults) ([]hit, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []hit
	for rows.Next() {
		var h hit
		var score float64
		if err := rows.Scan(&h.id, &score); err != nil {
			return nil, err
		}
		h.score = score
		out = append(out, h)
	}
	return out, rows.Err()
}

// mergeByScore merges per-group lists of one retriever into one ranking. Scores of one
// retriever are comparable across groups (cosine similarity; ts_rank_cd).
// Vector lists are re-sorted too: relaxed_order iterative scans may return rows slightly
// out of order.
func mergeByScore(lists [][]hit) []hit {
	var all []hit
	for _, l := range lists {
		all = append(all, l...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].score > all[j].score })
	return all
}

type ranked struct {
	id                int64
	score             float64
	vecRank, textRank int
}

// fuse ranks candidates for the mode: RRF for hybrid, the retriever's own score otherwise.
func fuse(mode string, vec, txt []hit, vecWeight float64) []ranked {
	by := map[int64]*ranked{}
	var order []*ranked
	get := func(id int64) *ranked {
		r := by[id]
		if r == nil {
			r = &ranked{id: id}
			by[id] = r
			order = append(order, r)
		}
		return r
	}
	for i, h := range vec {
		r := get(h.id)
		r.vecRank = i + 1
		if mode == ModeVector {
			r.score = h.score
		}
	}
	for i, h := range txt {
		r := get(h.id)
		r.textRank = i + 1
		if mode == ModeText {
			r.score = h.score
		}
	}
	if mode == ModeHybrid {
		for _, r := range order {
			if r.vecRank > 0 {
				r.score += vecWeight / float64(rrfK+r.vecRank)
			}
			if r.textRank > 0 {
				r.score += 1 / float64(rrfK+r.textRank)
			}
		}
	}
	out := make([]ranked, len(order))
	for i, r := range order {
		out[i] = *r
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].score != out[j].score {
			return out[i].score > out[j].score
		}
		return out[i].id < out[j].id
	})
	return out
}

// agreement scales the vector vote by how much the two retrievers agree on this query:
// the share of the smaller candidate list that the other list also found, floored at a
// quarter. When the graph walk's candidates share nothing with a confident text ranking
// they are most likely noise (the lexical local embedder among many distractors), and
// RRF with k = 60 compresses the text ranks so much that even a light vote would reorder
// them; when they agree, the vector ranking corroborates and breaks ties. It is measured
// on the HNSW candidates before rescoring adds the text candidates' exact scores.
func agreement(vec, txt []hit) float64 {
	if len(vec) == 0 || len(txt) == 0 {
		return 1
	}
	in := make(map[int64]bool, len(txt))
	for _, h := range txt {
		in[h.id] = true
	}
	shared := 0
	for _, h := range vec {
		if in[h.id] {
			shared++
		}
	}
	return max(0.25, float64(shared)/float64(min(len(vec), len(txt))))
}

// loadChunks fetches the texts (and, for MMR, the vectors) of ranked chunks, in order.
func (s *Service) loadChunks(ctx context.Context, tenantID string, kbIDs []string, rs []ranked, withVectors bool) ([]Result, [][]float32, error) {
	if len(rs) == 0 {
		return []Result{}, nil, nil
	}
	idList := make([]int64, len(rs))
	for i, r := range rs {
		idList[i] = r.id
	}
	vecCol := "NULL::vector"
	if withVectors {
		vecCol = "c.embedding"
	}
	rows, err := s.pool.Query(ctx, `SELECT c.id, c.kb_id, c.source_id, src.name, c.heading_path, c.position, c.content, `+vecCol+`
		FROM kb_chunks c JOIN kb_sources src ON src.id = c.source_id
		WHERE c.tenant_id = $1 AND c.kb_id = ANY($3) AND c.id = ANY($2)`, tenantID, idList, kbIDs)
	if err != nil {
		return nil, nil, fmt.Errorf("knowledge: load chunks: %w", err)
	}
	defer rows.Close()
	type row struct {
		res Result
		vec []float32
	}
	got := map[int64]row{}
	for rows.Next() {
		var r row
		var v *pgvector.Vector
		if err := rows.Scan(&r.res.ChunkID, &r.res.KBID, &r.res.SourceID, &r.res.SourceName, &r.res.HeadingPath,
			&r.res.Position, &r.res.Text, &v); err != nil {
			return nil, nil, err
		}
		if v != nil {
			r.vec = v.Slice()
		}
		got[r.res.ChunkID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	out := make([]Result, 0, len(rs))
	var vecs [][]float32
	for _, rk := range rs {
		r, ok := got[rk.id]
		if !ok {
			continue // deleted between the two queries
		}
		r.res.Score = round(rk.score)
		r.res.VectorRank, r.res.TextRank = rk.vecRank, rk.textRank
		if r.res.HeadingPath == nil {
			r.res.HeadingPath = []string{}
		}
		out = append(out, r.res)
		vecs = append(vecs, r.vec)
	}
	return out, vecs, nil
}

func round(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// mmr greedily picks k results maximising λ·relevance − (1−λ)·max similarity to those
// already picked (Carbonell & Goldstein, 1998). Relevance is the fused score divided by
// the best one, so it lies in (0, 1] like cosine similarity.
func mmr(rs []Result, vecs [][]float32, lambda float64, k int) []Result {
	if len(rs) <= 1 {
		return rs
	}
	best := rs[0].Score
	for _, r := range rs {
		best = math.Max(best, r.Score)
	}
	rel := func(i int) float64 {
		if best <= 0 {
			return 1
		}
		return rs[i].Score / best
	}
	picked := []int{}
	used := make([]bool, len(rs))
	for len(picked) < k && len(picked) < len(rs) {
		best, bestVal := -1, math.Inf(-1)
		for i := range rs {
			if used[i] {
				continue
			}
			sim := 0.0
			for _, j := range picked {
				sim = math.Max(sim, cosine(vecs[i], vecs[j]))
			}
			if v := lambda*rel(i) - (1-lambda)*sim; v > bestVal {
				best, bestVal = i, v
			}
		}
		used[best] = true
		picked = append(picked, best)
	}
	out := make([]Result, len(picked))
	for i, j := range picked {
		out[i] = rs[j]
	}
	return out
}

func cosine(a, b []float32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

func (s *Service) loadKBs(ctx context.Context, tenantID string, kbIDs []string) ([]kbInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, language::text, embedder_id, dim, embedder FROM knowledge_bases
		WHERE tenant_id = $1 AND id = ANY($2)`, tenantID, kbIDs)
	if err != nil {
		return nil, fmt.Errorf("knowledge: load kbs: %w", err)
	}
	defer rows.Close()
	var out []kbInfo
	for rows.Next() {
		var kb kbInfo
		var raw []byte
		if err := rows.Scan(&kb.id, &kb.lang, &kb.embedderID, &kb.dim, &raw); err != nil {
			return nil, err
		}
		var stored EmbedderSpec
		json.Unmarshal(raw, &stored)
		if kb.spec, err = s.openSpec(stored); err != nil {
			return nil, err
		}
		out = append(out, kb)
	}
	return out, rows.Err()
}
