package embed

import (
	"context"
	"fmt"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Local dimensions. 384 is the default because it is the smallest size with its own HNSW
// index in the kb_chunks migration (384, 768, 1024, 1536, 3072), and because on the
// retrieval check in local_quality_test.go larger sizes buy little: a ~1,200-character
// chunk has ~1,250 distinct features, so at 384 they do collide, but signed hashing turns
// collisions into noise rather than bias, and the MRR on the tuning questions is flat from
// 384 up (0.886 at 384, 0.884 at 1024; held out 0.895 and 0.925). Smaller sizes lose
// quickly (0.856 at 256, 0.716 at 64). Sizes without an index still work, by sequential
// scan.
const (
	DefaultLocalDim = 384
	minLocalDim     = 64   // below this, collisions swamp the signal
	maxLocalDim     = 4096 // the largest size the API lets a knowledge base ask for
)

// localVersion is part of the ID. Any change to what Local computes for a text (the
// normalisation, the stopwords, the features, the weights, the hash) must bump it, since
// stored vectors from the old version would no longer match new query vectors; the golden
// test in local_test.go fails until it is bumped.
const localVersion = "hash-v1"

// localCenteredVersion names the model at sizes that have a reference mean
// (localMeans): the hash-v1 vector, minus the mean direction, renormalised.
const localCenteredVersion = "hash-v2"

// Local is the built-in embedder: no network, no key, deterministic, pure Go.
//
// It is feature hashing ("the hashing trick") of three kinds of features:
//
//   - words, minus a short list of English stopwords;
//   - pairs of consecutive words, skipping the stopwords between them, so that
//     "cancel my subscription" and "cancel the subscription" share "cancel subscription";
//   - character 3-, 4- and 5-grams of each word with boundary markers ("<ref", "fund>"), so
//     that "refund", "refunds" and "refunded" share most of their features, as do a word
//     and its typo.
//
// Each feature is hashed to one of Dim buckets with a sign from another bit of the hash
// (colliding features then cancel in expectation instead of piling up), weighted by its
// kind and by 1+ln(tf), and the sum is L2-normalised. What it cannot do is know that
// "money back" means "refund"; that needs a trained model (see OpenAI).
type Local struct {
	dim int
	id  string
	p   localParams
	// mean is the average hash-v1 vector of a reference corpus at this size, or nil.
	//
	// Every hashed text vector shares a large common component: the n-grams of frequent
	// words ("the", "ing", "ion") land in the same buckets for every text, so two
	// unrelated chunks have a cosine of 0.13 on average, and every vector sits in one
	// narrow cone. Subtracting that mean direction (as "all-but-the-top" does for word
	// embeddings) spreads the vectors out, which is what HNSW's greedy graph walk needs:
	// at 100k chunks, recall@10 at ef_search 400 went from 0.88 to 0.95 (bench/kbbench).
	// It also acts as a corpus-wide IDF, damping features every text has.
	mean []float32
}

// localParams are the knobs of the local model. They are fields rather than constants
// only so that the quality test can search over them; NewLocal always uses
// defaultLocalParams.
type localParams struct {
	word   float32    // a word unigram
	bigram float32    // a pair of consecutive non-stopwords
	char   [3]float32 // a character 3-, 4- and 5-gram of a word
	// stopNgrams makes stopwords contribute character n-grams (they never contribute word
	// features).
	stopNgrams bool
	// salt perturbs every feature hash: always 0 in use (0 leaves hashes alone); the
	// tuning search averages over several salts so that it picks weights that are good,
	// not weights that happen to suit one particular pattern of hash collisions.
	salt uint64
}

// defaultLocalParams were chosen by the search in TestLocalTune (run it with
// PARLEY_TUNE_LOCAL=1): the best MRR on the tuning questions of local_quality_test.go,
// averaged over eight hash salts, among weightings that keep some bigram weight. The
// held-out questions there were not used to choose. What the search found:
//
//   - The top is flat: dozens of weightings score within 0.01 (a third of one question's
//     rank), so the exact numbers matter less than their shape.
//   - Character trigrams carry most of the signal beyond whole words. They are what
//     matches "refunded" to "refund", "allergic" to "allergens", and they survive typos.
//     4- and 5-grams add little on top (they are mostly the whole short word again), and
//     since a word yields a dozen n-grams, weighting them high lets long words drown
//     short ones.
//   - Bigrams barely move this set, whose questions are short; they are kept at a low
//     weight for longer queries and passages, where pairs like "credit card" or "phone
//     number" are exactly the signal.
//   - Stopwords must not contribute n-grams (every top weighting agreed): every English
//     text has "<th", "the", "he>", and those shared features raise the similarity of
//     unrelated texts, compressing the range that ranking needs.
var defaultLocalParams = localParams{
	word:   1.0,
	bigram: 0.25,
	char:   [3]float32{0.7, 0.15, 0.3},
}

// NewLocal returns the local embedder with dim dimensions (64 to 4096;
// DefaultLocalDim recommended).
func NewLocal(dim int) (*Local, error) {
	if dim < minLocalDim || dim > maxLocalDim {
		return nil, fmt.Errorf("embed: local: dimensions must be from %d to %d, not %d", minLocalDim, maxLocalDim, dim)
	}
	return newLocal(dim, defaultLocalParams), nil
}

func newLocal(dim int, p localParams) *Local {
	if mean, ok := localMeans[dim]; ok {
		return &Local{dim: dim, id: fmt.Sprintf("local:%s:%d", localCenteredVersion, dim), p: p, mean: mean[:]}
	}
	return &Local{dim: dim, id: fmt.Sprintf("local:%s:%d", localVersion, dim), p: p}
}

// ID is "local:hash-v2:<dim>" at sizes with a reference mean (384), "local:hash-v1:<dim>"
// at the others.
func (l *Local) ID() string { return l.id }

// Dim is the vector size given to NewLocal.
func (l *Local) Dim() int { return l.dim }

// Embed returns one unit vector per text. It never fails except when ctx is done.
//
// A text with no features (empty, only punctuation, or only stopwords) gets a fixed unit
// vector, the first basis vector, rather than the zero vector: cosine distance to a zero
// vector is undefined (pgvector returns NaN, which sorts unpredictably), while the basis
// vector is merely uninformative. Every such text gets the same vector, so they are
// identical to each other, which they are.
func (l *Local) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embed: local: %w", err)
	}
	out := make([][]float32, len(texts))
	// One allocation for all the vectors; each is capped so that appending to one cannot
	// overwrite the next.
	slab := make([]float32, len(texts)*l.dim)
	s := scratchPool.Get().(*scratch)
	defer s.release()
	for i, t := range texts {
		// A batch of 1,000 long texts takes tens of milliseconds; check now and then so
		// that a cancelled job stops promptly, without paying for it on every text.
		if i%64 == 63 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("embed: local: %w", err)
			}
		}
		v := slab[i*l.dim : (i+1)*l.dim : (i+1)*l.dim]
		l.embed(s, t, v)
		out[i] = v
	}
	return out, nil
}

// embed writes the unit vector of text into v (zeroed, of length l.dim).
func (l *Local) embed(s *scratch, text string, v []float32) {
	s.tokenize(text)
	s.features(&l.p)
	if len(s.tab.used) == 0 {
		v[0] = 1
		return
	}
	dim := uint64(l.dim)
	for _, i := range s.tab.used {
		sl := &s.tab.slots[i]
		tf := min(sl.count, uint32(len(tfWeight)-1))
		// The explicit conversion rounds the product before the addition below, so the
		// compiler cannot fuse them into one FMA (it may on arm64): the vectors must be
		// the same bits on every machine.
		w := float32(sl.weight * tfWeight[tf])
		// Bucket from the high 32 bits by multiply-shift (uniform for any dim, unlike a
		// modulo by a non-power of two), sign from the lowest bit.
		b := (sl.key >> 32) * dim >> 32
		if sl.key&1 == 0 {
			v[b] += w
		} else {
			v[b] -= w
		}
	}
	if l.mean != nil && normalize(v) {
		for i, m := range l.mean {
			v[i] -= m
		}
	}
	if !normalize(v) {
		// Everything cancelled out (signed collisions can, in principle). Fall back like
		// an empty text rather than return a zero vector.
		clear(v)
		v[0] = 1
	}
}

// tfWeight[tf] is 1+ln(tf), the sublinear term-frequency weight: a feature seen twice
// counts 1.69 times, not twice, so a chunk that repeats a word is not pulled towards every
// query with that word. It stops growing at 64 occurrences (a word repeated that often
// in a 250-token chunk is a table or spam, not emphasis).
//
// It is a literal rather than computed with math.Log because math.Log is assembly on amd64
// and Go elsewhere, and may differ in the last bit; stored vectors must not depend on the
// machine. TestTFWeight checks the values.
var tfWeight = [65]float32{
	0, 1, 1.6931472, 2.0986123, 2.3862944, 2.609438, 2.7917595, 2.9459102,
	3.0794415, 3.1972246, 3.3025851, 3.3978953, 3.4849067, 3.5649493, 3.6390574, 3.7080503,
	3.7725887, 3.8332133, 3.8903718, 3.944439, 3.9957323, 4.0445223, 4.0910425, 4.135494,
	4.178054, 4.218876, 4.2580967, 4.295837, 4.3322043, 4.3672957, 4.4011974, 4.433987,
	4.465736, 4.4965076, 4.5263605, 4.555348, 4.583519, 4.610918, 4.637586, 4.663562,
	4.6888795, 4.713572, 4.7376695, 4.7612, 4.7841897, 4.8066626, 4.8286414, 4.8501477,
	4.871201, 4.8918204, 4.912023, 4.9318256, 4.951244, 4.970292, 4.988984, 5.0073333,
	5.0253515, 5.0430512, 5.060443, 5.0775375, 5.0943446, 5.1108737, 5.1271343, 5.1431346,
	5.158883,
}

// maxNgramRunes: longer "words" (hashes, base64, URLs run together, chemical names) get
// a word feature but no character n-grams. Their pieces would be noise, and there would be
// many of them: a word of n runes yields about 3n n-grams.
const maxNgramRunes = 32

// Hashing. FNV-1a is simple, fast on short keys and fixed forever (the vectors are stored,
// so the hash must never change with the Go version or the process, which rules out
// hash/maphash and map iteration). Its low bits mix poorly, so every feature hash goes
// through murmur3's 64-bit finaliser before its bits are used. Each kind of feature starts
// from its own state, so the word "ing" and the trigram "ing" are different features.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

var (
	seedWord   = fnvByte(fnvOffset, 'w')
	seedBigram = fnvByte(fnvOffset, 'b')
	seedChar   = fnvByte(fnvOffset, 'c')
)

func fnvByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * fnvPrime }

func fnvBytes(h uint64, p []byte) uint64 {
	for _, b := range p {
		h = (h ^ uint64(b)) * fnvPrime
	}
	return h
}

func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// scratch is the per-call working memory of Local.Embed, pooled so that embedding a chunk
// allocates nothing but its vector.
type scratch struct {
	norm  []byte // the text after NFKD, for non-ASCII texts
	iter  norm.Iter
	text  []byte   // the words, lowercased and concatenated
	words []span   // where each word is in text
	mark  []byte   // "<word>"
	roff  []int32  // rune offsets in mark, for non-ASCII words
	tab   features // the distinct features and their counts
}

type span struct {
	start, end int32
	runes      int32
	stop       bool
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// release returns s to the pool unless a huge text made it huge: one 10 MB upload must
// not pin tens of megabytes in every P's pool forever.
func (s *scratch) release() {
	const maxKeep = 1 << 20 // bytes of text; ~800 times a typical chunk
	if cap(s.text) > maxKeep || cap(s.norm) > maxKeep || len(s.tab.slots) > 1<<17 {
		return
	}
	scratchPool.Put(s)
}

// asciiClass classifies bytes for the ASCII fast path.
var asciiClass = func() (c [128]byte) {
	for b := range c {
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
			c[b] = clsKeep
		case b >= 'A' && b <= 'Z':
			c[b] = clsUpper
		case b == '\'':
			c[b] = clsApos
		}
	}
	return c
}()

const (
	clsSep   = iota // ends a word
	clsKeep         // part of a word as is
	clsUpper        // part of a word, lowercased
	clsApos         // an apostrophe: dropped inside a word ("don't" → "dont"), else a separator
)

// tokenize fills s.text and s.words with the words of text: lowercased, with accents and
// other combining marks removed (after NFKD, so "Café" is "cafe" and "ﬁ" is "fi"), split on
// anything that is not a letter or digit. Han, hiragana and katakana characters are words
// of one character each, since those scripts put no spaces between words; the word pairs
// then give the character bigrams such text is usually indexed by.
func (s *scratch) tokenize(text string) {
	s.text = s.text[:0]
	s.words = s.words[:0]
	ascii := true
	for i := 0; i < len(text); i++ {
		if text[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		s.tokenizeASCII(text)
	} else {
		// norm.Iter in the pooled scratch rather than NFKD.AppendString, which allocates
		// its working buffer on every call.
		s.norm = s.norm[:0]
		s.iter.InitString(norm.NFKD, text)
		for !s.iter.Done() {
			s.norm = append(s.norm, s.iter.Next()...)
		}
		s.tokenizeUnicode(s.norm)
	}
}

func (s *scratch) tokenizeASCII(text string) {
	start := -1 // start of the current word in s.text, or -1 between words
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch asciiClass[c] {
		case clsKeep:
		case clsUpper:
			c += 'a' - 'A'
		case clsApos:
			if start >= 0 && i+1 < len(text) {
				if next := asciiClass[text[i+1]]; next == clsKeep || next == clsUpper {
					continue
				}
			}
			fallthrough
		default:
			if start >= 0 {
				s.endWord(start, len(s.text)-start)
				start = -1
			}
			continue
		}
		if start < 0 {
			start = len(s.text)
		}
		s.text = append(s.text, c)
	}
	if start >= 0 {
		s.endWord(start, len(s.text)-start)
	}
}

func (s *scratch) tokenizeUnicode(p []byte) {
	start, runes := -1, 0
	end := func() {
		if start >= 0 {
			s.endWord(start, runes)
			start, runes = -1, 0
		}
	}
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		i += n
		if r < utf8.RuneSelf {
			switch asciiClass[r] {
			case clsKeep:
			case clsUpper:
				r += 'a' - 'A'
			case clsApos:
				if start >= 0 && i < len(p) && isWordRune(p[i:]) {
					continue
				}
				end()
				continue
			default:
				end()
				continue
			}
		} else {
			switch {
			case unicode.Is(unicode.Mn, r):
				continue // a combining mark: "e" + U+0301 is "e"
			case r == '\u2019' || r == '\u02bc': // typographic apostrophes
				if start >= 0 && i < len(p) && isWordRune(p[i:]) {
					continue
				}
				end()
				continue
			case unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana):
				end()
				w := len(s.text)
				s.text = utf8.AppendRune(s.text, r)
				s.endWord(w, 1)
				continue
			case unicode.IsLetter(r) || unicode.IsDigit(r):
				r = unicode.ToLower(r)
			default:
				end()
				continue
			}
		}
		if start < 0 {
			start = len(s.text)
		}
		s.text = utf8.AppendRune(s.text, r)
		runes++
	}
	end()
}

// isWordRune reports whether p starts with a letter or digit (an apostrophe before one
// is inside a word).
func isWordRune(p []byte) bool {
	r, _ := utf8.DecodeRune(p)
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

func (s *scratch) endWord(start, runes int) {
	w := s.text[start:]
	_, stop := stopwords[string(w)] // no allocation: the compiler special-cases this
	s.words = append(s.words, span{start: int32(start), end: int32(len(s.text)), runes: int32(runes), stop: stop})
}

// features fills s.tab with the distinct features of s.words.
func (s *scratch) features(p *localParams) {
	// An upper bound on the number of features: per word one unigram, one bigram and at
	// most three n-grams per position of "<word>".
	bound := 8*len(s.words) + 3*len(s.text)
	s.tab.reset(bound)
	s.tab.salt = p.salt
	prev := -1
	for i, w := range s.words {
		word := s.text[w.start:w.end]
		if w.stop {
			if p.stopNgrams {
				s.ngrams(word, w.runes, p)
			}
			continue
		}
		s.tab.add(fmix64(fnvBytes(seedWord, word)), p.word)
		if prev >= 0 {
			pw := s.words[prev]
			h := fnvBytes(seedBigram, s.text[pw.start:pw.end])
			h = fnvByte(h, ' ')
			s.tab.add(fmix64(fnvBytes(h, word)), p.bigram)
		}
		prev = i
		s.ngrams(word, w.runes, p)
	}
}

// ngrams adds the character 3-, 4- and 5-grams of "<word>".
func (s *scratch) ngrams(word []byte, runes int32, p *localParams) {
	if runes > maxNgramRunes {
		return
	}
	s.mark = append(append(append(s.mark[:0], '<'), word...), '>')
	m := s.mark
	if int(runes) == len(word) { // ASCII: runes are bytes
		for i := 0; i+3 <= len(m); i++ {
			h := fnvBytes(seedChar, m[i:i+3])
			s.tab.add(fmix64(h), p.char[0])
			if i+4 <= len(m) {
				h = fnvByte(h, m[i+3])
				s.tab.add(fmix64(h), p.char[1])
				if i+5 <= len(m) {
					h = fnvByte(h, m[i+4])
					s.tab.add(fmix64(h), p.char[2])
				}
			}
		}
		return
	}
	s.roff = s.roff[:0]
	for i := range string(m) {
		s.roff = append(s.roff, int32(i))
	}
	s.roff = append(s.roff, int32(len(m)))
	o := s.roff
	nr := len(o) - 1
	for i := 0; i+3 <= nr; i++ {
		h := fnvBytes(seedChar, m[o[i]:o[i+3]])
		s.tab.add(fmix64(h), p.char[0])
		if i+4 <= nr {
			h = fnvBytes(h, m[o[i+3]:o[i+4]])
			s.tab.add(fmix64(h), p.char[1])
			if i+5 <= nr {
				h = fnvBytes(h, m[o[i+4]:o[i+5]])
				s.tab.add(fmix64(h), p.char[2])
			}
		}
	}
}

// features is an open-addressing hash table from feature hash to count: counting the
// distinct features of a text without a Go map (whose allocation and hashing would cost
// more than the rest of Embed). Keys are already well-mixed hashes, so slot = low bits.
// Zero marks an empty slot; a feature whose hash is zero (one in 2^64) is taken as 1.
type features struct {
	slots []slot
	used  []int32 // occupied slots in order of first insertion: the summation order
	mask  uint64
	salt  uint64 // localParams.salt
}

type slot struct {
	key    uint64
	count  uint32
	weight float32
}

// reset empties the table and makes room for n features at a load factor of at most
// 2/3, where linear probing stays short.
func (t *features) reset(n int) {
	for _, i := range t.used {
		t.slots[i].key = 0
	}
	t.used = t.used[:0]
	size := 256
	for size < n+n/2 {
		size <<= 1
	}
	if size > len(t.slots) {
		t.slots = make([]slot, size)
	}
	// Use only as much of a big table as this text needs: a small table stays in cache.
	t.mask = uint64(size - 1)
}

func (t *features) add(h uint64, w float32) {
	if t.salt != 0 {
		// Re-mixed, not just XORed: an XOR of the final hash only permutes buckets and
		// flips signs, which leaves every cosine as it was.
		h = fmix64(h ^ t.salt)
	}
	if h == 0 {
		h = 1
	}
	i := h & t.mask
	for {
		sl := &t.slots[i]
		switch sl.key {
		case h:
			sl.count++
			return
		case 0:
			*sl = slot{key: h, count: 1, weight: w}
			t.used = append(t.used, int32(i))
			return
		}
		i = (i + 1) & t.mask
	}
}
