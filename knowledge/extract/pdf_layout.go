package extract

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The layout pass rebuilds structure from positioned text. The thresholds are in units
// of the font size (em), which makes them independent of page size and zoom:
//
//   - two strings on one baseline are separate words when the gap between them exceeds
//     0.15 em (an inter-word space is about 0.25 em; kerning inside a word stays under
//     0.1 em);
//   - strings belong to one line when their baselines differ by less than half an em
//     (superscripts and subscripts included);
//   - a new paragraph starts where the gap between baselines exceeds 1.4 times the
//     page's usual line spacing, where the font size changes by more than 15%, and after
//     a line that ends a sentence well short of the right margin;
//   - a gap wider than 2 em inside a line separates table cells (or tab stops), and such a
//     line becomes a TableRow "cell | cell";
//   - a heading is a short line set at least 15% larger than the body text (the size
//     carrying most characters), with levels by size rank; a short bold line in a body
//     that is not bold is a heading one level below those.

const (
	wordGapEm       = 0.15
	sameLineEm      = 0.5
	paraGapFactor   = 1.4
	sizeChangeRatio = 0.15
	headingRatio    = 1.15
	cellGapEm       = 2.0
)

// pdfLine is one line of text on a page.
type pdfLine struct {
	x0, x1, y float64
	size      float64
	text      string
	bold      bool
	mono      bool // set in a fixed-pitch font: code
	table     bool // cells separated by wide gaps
}

// buildLines groups spans into lines in drawing order, which for almost all producers
// is reading order (and keeps columns apart). When the order is evidently scrambled
// (many jumps back up the page), spans are sorted top to bottom, left to right instead.
func buildLines(spans []pdfSpan) []pdfLine {
	lines := groupLines(spans)
	up := 0
	for i := 1; i < len(lines); i++ {
		if lines[i].y > lines[i-1].y+lines[i].size {
			up++
		}
	}
	if up > 3 && up*5 > len(lines) {
		sorted := append([]pdfSpan(nil), spans...)
		sort.SliceStable(sorted, func(i, j int) bool {
			a, b := sorted[i], sorted[j]
			if math.Abs(a.y-b.y) > sameLineEm*max(a.size, b.size) {
				return a.y > b.y
			}
			return a.x0 < b.x0
		})
		lines = groupLines(sorted)
	}
	return lines
}

func groupLines(spans []pdfSpan) []pdfLine {
	var lines []pdfLine
	var sb strings.Builder
	var cur pdfLine
	open := false
	var prev pdfSpan
	var weighted, chars float64
	allBold, allMono := true, true
	pendingSpace := false
	closeLine := func() {
		if !open {
			return
		}
		raw := sb.String()
		if strings.IndexByte(raw, '\t') >= 0 {
			var cells []string
			for c := range strings.SplitSeq(raw, "\t") {
				if c = cleanInline(c); c != "" {
					cells = append(cells, c)
				}
			}
			cur.text = strings.Join(cells, " | ")
			cur.table = len(cells) > 1
		} else {
			cur.text = cleanInline(raw)
		}
		cur.text = dropLeaders(cur.text)
		if chars > 0 {
			cur.size = weighted / chars
		}
		cur.bold, cur.mono = allBold, allMono
		if cur.text != "" {
			lines = append(lines, cur)
		}
		sb.Reset()
		open = false
	}
	for _, s := range spans {
		if s.size < 1 {
			s.size = 10 // degenerate matrices: assume a body size
		}
		blank := strings.TrimSpace(s.text) == ""
		if blank {
			if open && math.Abs(s.y-cur.y) <= sameLineEm*max(s.size, cur.size) {
				pendingSpace = true
				cur.x1 = max(cur.x1, s.x1)
			}
			continue
		}
		// Fake bold: the same string drawn twice a fraction of a point apart.
		if open && s.text == prev.text && math.Abs(s.x0-prev.x0) < 1.5 && math.Abs(s.y-prev.y) < 1.5 {
			continue
		}
		em := max(s.size, cur.size)
		if !open || math.Abs(s.y-cur.y) > sameLineEm*em || s.x0 < cur.x1-1.5*em {
			closeLine()
			cur = pdfLine{x0: s.x0, x1: s.x1, y: s.y, size: s.size}
			weighted, chars, allBold, allMono, pendingSpace = 0, 0, true, true, false
			open = true
		} else {
			gap := s.x0 - cur.x1
			text := sb.String()
			switch {
			case gap > cellGapEm*em:
				sb.WriteByte('\t')
			case (pendingSpace || gap > wordGapEm*em) && !strings.HasSuffix(text, " ") && !strings.HasPrefix(s.text, " "):
				sb.WriteByte(' ')
			}
			pendingSpace = false
			cur.x1 = max(cur.x1, s.x1)
		}
		sb.WriteString(s.text)
		n := float64(utf8.RuneCountInString(s.text))
		weighted += s.size * n
		chars += n
		allBold = allBold && s.bold
		allMono = allMono && s.mono
		prev = s
	}
	closeLine()
	return lines
}

// layout turns the pages' lines into blocks.
func (ex *pdfExtractor) layout() Document {
	pages := dropRunningLines(ex.pages)
	st := docStats(pages)
	var doc Document
	for _, lines := range pages {
		blocks := st.pageBlocks(lines)
		if len(blocks) == 0 {
			continue
		}
		// A paragraph cut by a page break continues on the next page.
		if n := len(doc.Blocks); n > 0 && doc.Blocks[n-1].Kind == Paragraph && blocks[0].Kind == Paragraph &&
			!endsSentence(doc.Blocks[n-1].Text) && startsLower(blocks[0].Text) {
			doc.Blocks[n-1].Text = joinLines([]string{doc.Blocks[n-1].Text, blocks[0].Text})
			blocks = blocks[1:]
		}
		doc.Blocks = append(doc.Blocks, blocks...)
	}
	return doc
}

// dropRunningLines removes page furniture from the two highest and two lowest lines of
// each page: bare page numbers; lines that repeat at the edge of most pages (running
// titles, "Confidential"; digits compared as wildcards so "Page 3" matches "Page 4"),
// or of a few pages with a number in them; and running heads that carry the page
// number ("Chapter 3: Setup | 14"), recognised by a leading or trailing number that
// grows with the page index by a constant offset.
func dropRunningLines(pages [][]pdfLine) [][]pdfLine {
	counts := map[string]int{}
	offsets := map[int]int{}
	edges := make([]map[int]string, len(pages))
	for p, lines := range pages {
		edges[p] = edgeLines(lines)
		seen := map[string]bool{}
		seenOff := map[int]bool{}
		for i, k := range edges[p] {
			if !seen[k] {
				counts[k]++
				seen[k] = true
			}
			if n, ok := edgeNumber(lines[i].text); ok && !seenOff[n-p] {
				offsets[n-p]++
				seenOff[n-p] = true
			}
		}
	}
	offset, best := 0, 0
	for o, n := range offsets {
		if n > best || n == best && o < offset {
			offset, best = o, n
		}
	}
	numbered := best >= 3 || best >= 2 && best*2 >= len(pages)
	// Running heads are set at body size or smaller; a large "1 Introduction" at the top
	// of page 1 is a chapter heading, whatever its number.
	body := docStats(pages).body
	out := make([][]pdfLine, len(pages))
	for p, lines := range pages {
		kept := lines[:0:0]
		for i, l := range lines {
			if k, ok := edges[p][i]; ok {
				repeated := counts[k] >= 3 && (counts[k]*2 >= len(pages) || strings.Contains(k, "#"))
				n, hasNum := edgeNumber(l.text)
				pageNum := numbered && hasNum && n == p+offset && len(l.text) <= 120 && l.size < body*headingRatio
				if isPageNumber(l.text) || repeated || pageNum {
					continue
				}
			}
			kept = append(kept, l)
		}
		out[p] = kept
	}
	return out
}

// edgeLines returns the indexes of the two highest and two lowest lines of a page with
// their furniture keys.
func edgeLines(lines []pdfLine) map[int]string {
	idx := make([]int, len(lines))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return lines[idx[a]].y > lines[idx[b]].y })
	out := map[int]string{}
	for k, i := range idx {
		if k < 2 || k >= len(idx)-2 {
			out[i] = furnitureKey(lines[i].text)
		}
	}
	return out
}

// edgeNumber returns the number a line starts or ends with ("14 Chapter 3", "Setup | 14").
func edgeNumber(s string) (int, bool) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, false
	}
	for _, w := range []string{f[len(f)-1], f[0]} {
		if n, err := strconv.Atoi(w); err == nil && n >= 0 && n < 100000 {
			return n, true
		}
	}
	return 0, false
}

// dropLeaders removes dot leaders (". . . . ." and TeX's ": : : :") that tables of
// contents put between a title and its page number.
func dropLeaders(s string) string {
	if !strings.Contains(s, "....") && !strings.Contains(s, ". . . .") && !strings.Contains(s, ": : : :") {
		return s
	}
	var out []string
	run := 0
	for _, w := range strings.Fields(s) {
		if strings.Trim(w, ".:·…") == "" {
			run++
			continue
		}
		if run > 0 && len(out) > 0 && strings.Trim(out[len(out)-1], ".:") == "" {
			out = out[:len(out)-1]
		}
		run = 0
		if strings.HasSuffix(w, "....") {
			w = strings.TrimRight(w, ".")
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

func furnitureKey(s string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(s) {
		if unicode.IsDigit(r) {
			r = '#'
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// isPageNumber matches "7", "- 7 -", "Page 7", "Page 7 of 12", "7/12", "vii".
func isPageNumber(s string) bool {
	s = strings.ToLower(s)
	for _, w := range []string{"page", "seite", "página", "pagina", "p.", "of", "von", "de"} {
		s = strings.ReplaceAll(s, w, " ")
	}
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '–', '—', '/', '|', '(', ')', '[', ']', '.':
			return -1
		}
		return r
	}, s)
	if s == "" || len(s) > 8 {
		return false
	}
	if strings.Trim(s, "0123456789") == "" {
		return true
	}
	return len(s) <= 5 && strings.Trim(s, "ivxlc") == ""
}

// pdfStats are document-wide measures the block builder uses.
type pdfStats struct {
	body         float64
	levels       map[int]int // heading size (half points) → level
	boldLevel    int         // level of bold body-size headings, 0 when not used
	headingRatio float64
}

func sizeKey(size float64) int { return int(math.Round(size * 2)) }

func docStats(pages [][]pdfLine) pdfStats {
	bySize := map[int]int{}
	total, boldChars := 0, 0
	for _, lines := range pages {
		for _, l := range lines {
			n := utf8.RuneCountInString(l.text)
			bySize[sizeKey(l.size)] += n
			total += n
			if l.bold {
				boldChars += n
			}
		}
	}
	st := pdfStats{levels: map[int]int{}, headingRatio: headingRatio}
	best := 0
	for k, n := range bySize {
		if n > best || n == best && k < sizeKey(st.body) {
			best, st.body = n, float64(k)/2
		}
	}
	if st.body == 0 {
		return st
	}
	// Headings must stay a minority of the text; if "headings" carry too much of it
	// (slides, posters, forms), only clearly larger sizes count, or none.
	for _, ratio := range []float64{headingRatio, 1.5, math.Inf(1)} {
		st.headingRatio = ratio
		headingChars := 0
		for _, lines := range pages {
			for _, l := range lines {
				if st.isHeadingSize(l) {
					headingChars += utf8.RuneCountInString(l.text)
				}
			}
		}
		if headingChars*5 <= total*2 {
			break
		}
	}
	var sizes []int
	seen := map[int]bool{}
	for _, lines := range pages {
		for _, l := range lines {
			if k := sizeKey(l.size); st.isHeadingSize(l) && !seen[k] {
				seen[k] = true
				sizes = append(sizes, k)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(sizes)))
	for i, k := range sizes {
		st.levels[k] = min(i+1, 6)
	}
	if boldChars*2 < total {
		st.boldLevel = min(len(sizes)+1, 6)
	}
	return st
}

func (st pdfStats) isHeadingSize(l pdfLine) bool {
	return l.size >= st.body*st.headingRatio && len(l.text) <= 200 && strings.IndexFunc(l.text, unicode.IsLetter) >= 0
}

// headingLevel returns the line's heading level, or 0.
func (st pdfStats) headingLevel(l pdfLine) int {
	if st.isHeadingSize(l) {
		return st.levels[sizeKey(l.size)]
	}
	if st.boldLevel > 0 && l.bold && math.Abs(l.size-st.body) <= st.body*sizeChangeRatio && len(l.text) <= 80 {
		r, _ := utf8.DecodeRuneInString(l.text)
		last := l.text[len(l.text)-1]
		if (unicode.IsUpper(r) || unicode.IsDigit(r)) && !strings.ContainsRune(".,;", rune(last)) {
			return st.boldLevel
		}
	}
	return 0
}

// pageBlocks groups a page's lines into blocks.
func (st pdfStats) pageBlocks(lines []pdfLine) []Block {
	if len(lines) == 0 {
		return nil
	}
	leading := usualLeading(lines)
	right := rightMargin(lines)
	var blocks []Block
	var cur []string
	kind, level := Paragraph, 0
	itemX0 := 0.0 // where the current list item's first line starts
	codeX0 := 0.0 // the left edge of the current code block
	flush := func() {
		if len(cur) > 0 {
			text := ""
			if kind == Code {
				text = strings.Join(cur, "\n")
			} else {
				text = joinLines(cur)
			}
			blocks = append(blocks, Block{Kind: kind, Level: level, Text: text})
			cur = cur[:0]
		}
	}
	for i, l := range lines {
		hl := st.headingLevel(l)
		bullet := bulletPrefix(l.text)
		if bullet == 0 && strings.HasPrefix(l.text, "\uFFFD ") {
			// A bullet glyph from a symbol font without a Unicode mapping.
			bullet = len("\uFFFD ")
		}
		code := l.mono && hl == 0 && !l.table
		ordinal := bullet == 0 && hl == 0 && hasOrdinal(l.text)
		if hl == st.boldLevel && hl > 0 && !st.isHeadingSize(l) && i+1 < len(lines) && lines[i+1].bold &&
			math.Abs(lines[i+1].y-l.y) < 1.5*l.size {
			// A bold line followed by more bold lines is emphasis, not a heading.
			hl = 0
		}
		var prev pdfLine
		if i > 0 {
			prev = lines[i-1]
		}
		start := false
		switch {
		case i == 0:
			start = true
		case hl > 0:
			// Consecutive lines of one heading (a title wrapped over two lines) stay
			// together.
			start = kind != Heading || level != hl || prev.y-l.y > 2*l.size
		case kind == Heading:
			start = true
		case code:
			start = kind != Code || (leading > 0 && prev.y-l.y > 2*leading)
		case kind == Code:
			start = true
		case bullet > 0 || ordinal || l.table || kind == TableRow:
			start = true
		default:
			start = newParagraph(prev, l, leading, right)
			if !start && kind == ListItem && l.x0 <= itemX0+0.5*l.size {
				// Continuation lines of an item hang indented past its marker; a line
				// back at the marker's margin is the text after the list.
				start = true
			}
		}
		if start {
			flush()
			switch {
			case hl > 0:
				kind, level = Heading, hl
			case code:
				kind, level, codeX0 = Code, 0, l.x0
			case bullet > 0 || ordinal:
				kind, level, itemX0 = ListItem, 0, l.x0
			case l.table:
				kind, level = TableRow, 0
			default:
				kind, level = Paragraph, 0
			}
		}
		text := l.text
		switch {
		case code:
			// Rebuild indentation from the position, a fixed-pitch character being
			// about 0.6 em wide.
			indent := int(math.Round((l.x0 - codeX0) / (0.6 * l.size)))
			text = strings.Repeat(" ", max(0, min(indent, 40))) + text
		case bullet > 0:
			text = strings.TrimSpace(text[bullet:])
		}
		cur = append(cur, text)
	}
	flush()
	return blocks
}

func newParagraph(prev, l pdfLine, leading, right float64) bool {
	em := max(prev.size, l.size)
	dy := prev.y - l.y
	switch {
	case dy < -sameLineEm*em: // back up the page: a new column or box
		return true
	case math.Abs(prev.size-l.size) > sizeChangeRatio*em:
		return true
	case leading > 0 && dy > leading*paraGapFactor+0.5:
		return true
	case leading == 0 && dy > 2*em:
		return true
	case endsSentence(prev.text) && prev.x1 < right-3*em:
		return true // the previous line ended a sentence well short of the margin
	case endsSentence(prev.text) && l.x0 > prev.x0+1.5*em:
		return true // first-line indent
	}
	return false
}

// usualLeading is the median distance between consecutive baselines of same-size lines.
func usualLeading(lines []pdfLine) float64 {
	var d []float64
	for i := 1; i < len(lines); i++ {
		a, b := lines[i-1], lines[i]
		dy := a.y - b.y
		if dy > 0 && dy < 3*b.size && math.Abs(a.size-b.size) <= sizeChangeRatio*b.size {
			d = append(d, dy)
		}
	}
	if len(d) < 2 {
		return 0
	}
	sort.Float64s(d)
	return d[len(d)/2]
}

// rightMargin is where full lines end: the 80th percentile of line ends.
func rightMargin(lines []pdfLine) float64 {
	xs := make([]float64, 0, len(lines))
	for _, l := range lines {
		xs = append(xs, l.x1)
	}
	sort.Float64s(xs)
	return xs[len(xs)*8/10]
}

func endsSentence(s string) bool {
	s = strings.TrimRight(s, `"'”’)]`)
	if s == "" {
		return false
	}
	r, _ := utf8.DecodeLastRuneInString(s)
	return strings.ContainsRune(".!?:;。！？", r)
}

func startsLower(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsLower(r)
}
