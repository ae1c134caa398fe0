// Package chunk splits an extracted document into token-sized chunks for embedding and
// retrieval, following the document's structure.
//
// A chunk never spans two sections (the text under different heading paths), packs
// whole blocks (paragraphs, list items, table rows, code) while they fit, and splits a
// block that does not fit at sentence boundaries, a sentence that does not fit at word
// boundaries, and a word that does not fit (a long URL, a base64 blob) at token
// boundaries, so no chunk exceeds MaxTokens as CountTokens counts them. Consecutive
// chunks of one section overlap by a few whole sentences, so that a fact that straddles a
// boundary is retrievable from either side; chunks never overlap across sections.
//
// Headings are not repeated in chunk text: every chunk carries its HeadingPath, which
// the store indexes with high weight and prepends to the text it embeds, so repeating
// the heading would count it twice. A heading that introduces nothing (followed directly
// by a heading of the same or a higher level, as on slides and in outlines) is not a
// section of its own; its words become text of the enclosing section, so they are not
// lost.
//
// Split is deterministic. It costs about 10 µs per chunk on the benchmark document (the
// Go specification and standard library docs, see BenchmarkSplit), a small fraction of
// the 500 µs per chunk that ingestion at 2,000 chunks/s on two cores can spend.
package chunk

import (
	"strings"
	"unicode/utf8"

	"github.com/parleyhq/parley/knowledge/extract"
)

// Defaults for zero Options fields. 256 tokens is about 190 English words: one focused
// passage, which suits both embedding models (whose quality drops on long inputs) and a
// voice answer built from a few retrieved chunks. 32 tokens of overlap is one or two
// sentences. Tails under 24 tokens are too small to be worth a vector of their own.
const (
	DefaultMaxTokens     = 256
	DefaultOverlapTokens = 32
	DefaultMinTokens     = 24
)

// Options sizes chunks. Zero fields take the defaults; a negative OverlapTokens or
// MinTokens disables overlap or tail merging.
type Options struct {
	// MaxTokens caps a chunk's CountTokens (default 256, at least 8).
	MaxTokens int
	// OverlapTokens is how much of the end of a chunk, in whole sentences, the next
	// chunk of the same section starts with (default 32, at most MaxTokens/2).
	OverlapTokens int
	// MinTokens is the smallest last chunk of a section worth keeping alone (default
	// 24, at most MaxTokens/2). A smaller tail merges into the chunk before it: since
	// the two together exceed MaxTokens, the boundary between them moves so that both
	// are of useful size.
	MinTokens int
}

func (o Options) normalized() Options {
	if o.MaxTokens <= 0 {
		o.MaxTokens = DefaultMaxTokens
	}
	o.MaxTokens = max(o.MaxTokens, 8)
	switch {
	case o.OverlapTokens == 0:
		o.OverlapTokens = DefaultOverlapTokens
	case o.OverlapTokens < 0:
		o.OverlapTokens = 0
	}
	switch {
	case o.MinTokens == 0:
		o.MinTokens = DefaultMinTokens
	case o.MinTokens < 0:
		o.MinTokens = 0
	}
	o.OverlapTokens = min(o.OverlapTokens, o.MaxTokens/2)
	o.MinTokens = min(o.MinTokens, o.MaxTokens/2)
	return o
}

// Chunk is one retrievable passage.
type Chunk struct {
	// Text is the passage: blocks rendered as extract.Document.Text renders them,
	// without the headings above it.
	Text string
	// HeadingPath is the stack of headings above the passage, outermost first
	// (["Billing", "Refunds"]); nil before the first heading.
	HeadingPath []string
	// Position is the chunk's 0-based ordinal in the document.
	Position int
	// Tokens is CountTokens(Text).
	Tokens int
}

// Split cuts doc into chunks.
func Split(doc extract.Document, opt Options) []Chunk {
	opt = opt.normalized()
	s := splitter{
		max:     opt.MaxTokens * unit,
		overlap: opt.OverlapTokens * unit,
		min:     opt.MinTokens * unit,
	}
	for _, sec := range sections(doc.Blocks) {
		s.section(sec)
	}
	return s.out
}

// section is a run of blocks under one heading path.
type section struct {
	path   []string
	blocks []extract.Block
}

// sections groups blocks by heading path.
func sections(blocks []extract.Block) []section {
	var (
		out   []section
		stack []heading
		open  bool // out's last section takes the next content block
	)
	path := func() []string {
		if len(stack) == 0 {
			return nil
		}
		p := make([]string, len(stack))
		for i, h := range stack {
			p[i] = h.text
		}
		return p
	}
	add := func(b extract.Block) {
		if !open {
			out = append(out, section{path: path()})
			open = true
		}
		out[len(out)-1].blocks = append(out[len(out)-1].blocks, b)
	}
	for i, b := range blocks {
		if b.Kind != extract.Heading {
			add(b)
			continue
		}
		for len(stack) > 0 && stack[len(stack)-1].level >= b.Level {
			stack = stack[:len(stack)-1]
		}
		if i+1 == len(blocks) || blocks[i+1].Kind == extract.Heading && blocks[i+1].Level <= b.Level {
			// A heading that introduces nothing: its words belong to the parent.
			if open && !samePath(out[len(out)-1].path, stack) {
				open = false
			}
			add(extract.Block{Kind: extract.Paragraph, Text: b.Text})
			continue
		}
		stack = append(stack, heading{b.Level, b.Text})
		open = false
	}
	return out
}

type heading struct {
	level int
	text  string
}

func samePath(p []string, stack []heading) bool {
	if len(p) != len(stack) {
		return false
	}
	for i := range p {
		if p[i] != stack[i].text {
			return false
		}
	}
	return true
}

// piece is a unit of packing: a whole block, or a sentence, words or a line of one.
type piece struct {
	text  string
	cost  int // in units, see CountTokens
	block int // index of the block in its section
	kind  extract.BlockKind
	whole bool
}

// draft is a chunk being packed: its first nOverlap pieces repeat the previous chunk.
type draft struct {
	pieces   []piece
	nOverlap int
	cost     int
}

// sep is how two adjacent pieces are joined in chunk text: pieces of one block by a
// space (a newline in code), consecutive list items or table rows by a newline, other
// blocks by a blank line.
func sep(a, b piece) string {
	switch {
	case a.block == b.block && a.kind == extract.Code:
		return "\n"
	case a.block == b.block:
		return " "
	case a.kind == b.kind && (a.kind == extract.ListItem || a.kind == extract.TableRow):
		return "\n"
	}
	return "\n\n"
}

func sepCost(a, b piece) int {
	return joinCost(a.text, sep(a, b) != " ", b.text)
}

// addCost is what appending p to d costs.
func (d *draft) addCost(p piece) int {
	if len(d.pieces) == 0 {
		return p.cost
	}
	return sepCost(d.pieces[len(d.pieces)-1], p) + p.cost
}

func (d *draft) add(p piece) {
	d.cost += d.addCost(p)
	d.pieces = append(d.pieces, p)
}

func (d *draft) ownCost() int { return costOf(d.pieces[d.nOverlap:]) }

func (d *draft) text() string {
	var sb strings.Builder
	for i, p := range d.pieces {
		if i > 0 {
			sb.WriteString(sep(d.pieces[i-1], p))
		}
		sb.WriteString(p.text)
	}
	return sb.String()
}

type splitter struct {
	max, overlap, min int // in units
	out               []Chunk
}

func (s *splitter) section(sec section) {
	pieces := s.pieces(sec.blocks)
	if len(pieces) == 0 {
		return
	}
	var drafts []*draft
	cur := &draft{}
	for _, p := range pieces {
		if cur.cost+cur.addCost(p) <= s.max {
			cur.add(p)
			continue
		}
		if len(cur.pieces) > cur.nOverlap {
			drafts = append(drafts, cur)
			cur = s.next(cur, p)
		}
		cur.add(p)
	}
	if len(cur.pieces) > cur.nOverlap {
		drafts = append(drafts, cur)
	}
	drafts = s.fixTail(drafts)
	for _, d := range drafts {
		// Prices are exactly additive, so the draft's cost is CountTokens of its text.
		s.out = append(s.out, Chunk{Text: d.text(), HeadingPath: sec.path, Position: len(s.out), Tokens: (d.cost + unit/2) / unit})
	}
}

// next starts the chunk after prev, whose first own piece will be p: it opens with as
// much of prev's ending as the overlap allows and p leaves room for.
func (s *splitter) next(prev *draft, p piece) *draft {
	const sepBound = newlineCost + indentCost
	budget := min(s.overlap, s.max-p.cost-sepBound)
	d := &draft{}
	for _, q := range s.tail(prev.pieces, budget) {
		d.add(q)
	}
	d.nOverlap = len(d.pieces)
	if d.cost+d.addCost(p) > s.max { // cannot happen with the bound above; be safe
		d = &draft{}
	}
	return d
}

// tail returns the last whole sentences of pieces that fit in budget (rows, list items
// and code lines count as sentences). When not even the last sentence fits, it returns
// the last words that do, so consecutive chunks still share context.
func (s *splitter) tail(pieces []piece, budget int) []piece {
	if budget <= 0 || len(pieces) == 0 {
		return nil
	}
	var rev []piece
	total := 0
outer:
	for i := len(pieces) - 1; i >= 0; i-- {
		// Sentences are priced from the end and only as far as the budget reaches:
		// a long paragraph contributes its last sentence or two.
		texts := sentenceTexts(pieces[i])
		for j := len(texts) - 1; j >= 0; j-- {
			u := pieces[i]
			if len(texts) > 1 {
				u = piece{text: texts[j], cost: cost(texts[j]), block: u.block, kind: u.kind}
			}
			c := u.cost
			if len(rev) > 0 {
				c += sepCost(u, rev[len(rev)-1])
			}
			if total+c > budget {
				break outer
			}
			total += c
			rev = append(rev, u)
		}
	}
	if len(rev) == 0 {
		// Not even the last sentence fits: share its last words, for running text.
		last := pieces[len(pieces)-1]
		if last.kind != extract.Paragraph && last.kind != extract.ListItem {
			return nil
		}
		texts := sentenceTexts(last)
		t := texts[len(texts)-1]
		return wordTail(piece{text: t, block: last.block, kind: last.kind}, budget)
	}
	out := make([]piece, len(rev))
	for i, p := range rev {
		out[len(rev)-1-i] = p
	}
	return out
}

// wordTail returns the last words of p that fit in budget, as one piece.
func wordTail(p piece, budget int) []piece {
	words := strings.Fields(p.text)
	total, k := 0, len(words)
	for k > 0 {
		c := cost(words[k-1])
		if total+c > budget {
			break
		}
		total += c
		k--
	}
	if k == len(words) {
		return nil
	}
	t := strings.Join(words[k:], " ")
	return []piece{{text: t, cost: cost(t), block: p.block, kind: p.kind}}
}

// sentenceTexts splits a whole paragraph or list item into sentences and a whole code
// block into lines; other pieces are one unit.
func sentenceTexts(p piece) []string {
	if !p.whole {
		return []string{p.text}
	}
	var parts []string
	switch p.kind {
	case extract.Code:
		for line := range strings.SplitSeq(p.text, "\n") {
			if strings.TrimSpace(line) != "" {
				parts = append(parts, line)
			}
		}
	case extract.Paragraph, extract.ListItem:
		parts = sentences(p.text)
	}
	if len(parts) == 0 {
		return []string{p.text}
	}
	return parts
}

// sentencePieces is sentenceTexts as priced pieces.
func (s *splitter) sentencePieces(p piece) []piece {
	texts := sentenceTexts(p)
	if len(texts) == 1 {
		return []piece{p}
	}
	out := make([]piece, len(texts))
	for i, t := range texts {
		out[i] = piece{text: t, cost: cost(t), block: p.block, kind: p.kind}
	}
	return out
}

// pieces turns a section's blocks into packing units: whole blocks when they fit in a
// chunk, else sentences (lines for code), else words, else token-sized slices.
func (s *splitter) pieces(blocks []extract.Block) []piece {
	out := make([]piece, 0, len(blocks))
	for i, b := range blocks {
		text := b.Render()
		if strings.TrimSpace(text) == "" {
			continue
		}
		p := piece{text: text, cost: cost(text), block: i, kind: b.Kind, whole: true}
		if p.cost <= s.max {
			out = append(out, p)
			continue
		}
		for _, sp := range s.sentencePieces(p) {
			if sp.whole {
				sp.whole = false // a block too long to split into sentences
			}
			if sp.cost <= s.max {
				out = append(out, sp)
				continue
			}
			out = append(out, s.words(sp)...)
		}
	}
	return out
}

// words packs the words of an oversized sentence into pieces of at most max, cutting
// single words that exceed it at token boundaries.
func (s *splitter) words(p piece) []piece {
	var out []piece
	var cur []string
	curCost := 0
	flush := func() {
		if len(cur) > 0 {
			t := strings.Join(cur, " ")
			out = append(out, piece{text: t, cost: cost(t), block: p.block, kind: p.kind})
			cur, curCost = cur[:0], 0
		}
	}
	for _, w := range strings.Fields(p.text) {
		c := cost(w)
		if c > s.max {
			flush()
			for _, part := range splitWord(w, s.max) {
				out = append(out, piece{text: part, cost: cost(part), block: p.block, kind: p.kind})
			}
			continue
		}
		if curCost+c > s.max {
			flush()
		}
		cur = append(cur, w)
		curCost += c
	}
	flush()
	return out
}

// splitWord cuts a word costing more than limit into prefixes that each fit, at rune
// boundaries (at least one rune each). Prices only grow as a word grows, so a binary
// search over the rune boundaries finds each cut. The search looks at a window of 8
// bytes per token of limit, more than any piece that fits can span (the cheapest runs,
// long letter runs, cost a token per four bytes), so a megabyte of base64 is cut in
// linear time.
func splitWord(w string, limit int) []string {
	window := limit/unit*8 + 16
	var out []string
	for w != "" {
		head := w
		if len(head) > window {
			head = head[:window]
			for len(head) > 1 && !utf8.RuneStart(w[len(head)]) {
				head = head[:len(head)-1]
			}
		}
		if len(head) == len(w) && cost(w) <= limit {
			return append(out, w)
		}
		var cuts []int // byte offsets after each rune of head
		for i := range head {
			if i > 0 {
				cuts = append(cuts, i)
			}
		}
		cuts = append(cuts, len(head))
		lo, hi, best := 0, len(cuts)-1, cuts[0]
		for lo <= hi {
			mid := (lo + hi) / 2
			if cost(head[:cuts[mid]]) <= limit {
				best, lo = cuts[mid], mid+1
			} else {
				hi = mid - 1
			}
		}
		out = append(out, w[:best])
		w = w[best:]
	}
	return out
}

// fixTail deals with a section's last chunk when its own text (overlap aside) is under
// the minimum. Packing is greedy, so that tail did not fit into the chunk before it; the
// tail is merged by moving the boundary instead: the two chunks are re-split at the
// sentence boundary that balances them best (the one maximising the smaller side), which
// may move sentences or whole blocks from the previous chunk into the last. If no split
// is better (the previous chunk is one unsplittable piece), the chunks stay as they are.
func (s *splitter) fixTail(drafts []*draft) []*draft {
	n := len(drafts)
	if n < 2 || s.min == 0 || drafts[n-1].ownCost() >= s.min {
		return drafts
	}
	prev, last := drafts[n-2], drafts[n-1]
	var fine []piece
	for _, p := range append(append([]piece(nil), prev.pieces[prev.nOverlap:]...), last.pieces[last.nOverlap:]...) {
		fine = append(fine, s.sentencePieces(p)...)
	}
	bestScore := last.ownCost()
	var bestLeft, bestRight *draft
	for k := 1; k < len(fine); k++ {
		left := &draft{nOverlap: prev.nOverlap}
		ok := true
		for _, p := range append(prev.pieces[:prev.nOverlap:prev.nOverlap], fine[:k]...) {
			if left.cost+left.addCost(p) > s.max {
				ok = false
				break
			}
			left.add(p)
		}
		if !ok {
			break // the left part only grows with k
		}
		right := s.next(left, fine[k])
		for _, p := range fine[k:] {
			if right.cost+right.addCost(p) > s.max {
				ok = false
				break
			}
			right.add(p)
		}
		if !ok {
			continue
		}
		if score := min(left.ownCost(), right.ownCost()); score > bestScore {
			bestScore, bestLeft, bestRight = score, left, right
		}
	}
	if bestLeft == nil {
		return drafts
	}
	return append(drafts[:n-2], bestLeft, bestRight)
}

// costOf prices pieces joined as in a chunk.
func costOf(pieces []piece) int {
	c := 0
	for i, p := range pieces {
		if i > 0 {
			c += sepCost(pieces[i-1], p)
		}
		c += p.cost
	}
	return c
}
