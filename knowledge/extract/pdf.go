package extract

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/ledongthuc/pdf"
)

// PDF reading is split in two. github.com/ledongthuc/pdf (a maintained fork of
// rsc.io/pdf, pure Go, no dependencies) reads the file structure: cross-reference tables
// and streams, object streams, stream filters, standard-security decryption with an
// empty user password, and fonts' encodings and ToUnicode maps. On top of it we run our
// own content-stream interpreter that records every piece of text with its position,
// size and font, and a layout pass that rebuilds lines, paragraphs, list items and
// headings from those positions. The library's own text functions return either
// unstructured runs of characters or one record per glyph without word spacing, which is
// not enough to rebuild paragraphs.
//
// The library signals malformed input by panicking; parsePDF recovers, per page where it
// can (a bad page costs that page) and for the whole file otherwise (ErrCorrupt).

// Work limits. A 20 MiB upload can inflate to gigabytes through stream filters; these
// caps keep one hostile file from holding a worker for minutes.
const (
	maxPDFPages        = 5000
	maxPDFPageBytes    = 32 << 20  // inflated content of one page, forms included
	maxPDFTotalBytes   = 256 << 20 // inflated content of the whole file
	maxPDFPageNodes    = 100000    // page-tree nodes visited (guards against cycles)
	maxPDFFormDepth    = 8         // nested form XObjects
	maxPDFSpansPerPage = 200000
)

func parsePDF(data []byte) (doc Document, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = Document{}, corrupt(FormatPDF, "%s", shortReason(fmt.Sprint(r)))
		}
	}()
	data, err = normalizePDF(data)
	if err != nil {
		return Document{}, err
	}
	r, err := pdf.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "encrypt") || strings.Contains(err.Error(), "password") {
			return Document{}, corrupt(FormatPDF, "encrypted PDF (password-protected); upload an unprotected copy")
		}
		return Document{}, corrupt(FormatPDF, "%s", shortReason(err.Error()))
	}
	root := r.Trailer().Key("Root")
	var pages []pdf.Value
	visited := 0
	collectPDFPages(root.Key("Pages"), 0, &visited, &pages)
	if len(pages) == 0 {
		return Document{}, corrupt(FormatPDF, "no pages")
	}
	ex := pdfExtractor{budget: maxPDFTotalBytes}
	var firstErr error
	for i, p := range pages {
		lines, perr := ex.page(p)
		if perr != nil && firstErr == nil {
			firstErr = fmt.Errorf("page %d: %s", i+1, shortReason(perr.Error()))
		}
		ex.pages = append(ex.pages, lines)
	}
	doc = ex.layout()
	if len(doc.Blocks) == 0 && firstErr != nil {
		return Document{}, corrupt(FormatPDF, "%v", firstErr)
	}
	doc.Title = pdfTitle(r.Trailer().Key("Info").Key("Title").Text())
	if doc.Title == "" {
		for _, b := range doc.Blocks {
			if b.Kind == Heading && b.Level == 1 {
				doc.Title = b.Text
				break
			}
		}
	}
	return doc, nil
}

// pdfTitle returns the Info title unless it is a file name or a tool's label, which is
// what most "titles" in the wild are ("Microsoft Word - draft3.docx", "untitled").
func pdfTitle(t string) string {
	t = cleanInline(t)
	lower := strings.ToLower(t)
	if strings.HasPrefix(lower, "microsoft word - ") || lower == "untitled" || strings.HasPrefix(lower, "untitled") {
		return ""
	}
	for _, ext := range []string{".doc", ".docx", ".pdf", ".odt", ".rtf", ".txt", ".indd", ".ppt", ".pptx", ".xls", ".xlsx", ".tex", ".dvi", ".html"} {
		if strings.HasSuffix(lower, ext) {
			return ""
		}
	}
	return t
}

// normalizePDF works around two strict checks of the library that real files fail:
// PDF 2.0 headers (it accepts only 1.0-1.7; the syntax we read is the same) and bytes
// after the last %%EOF (appended by some upload tools and mail gateways). It also drops
// junk before the header, which readers tolerate.
func normalizePDF(data []byte) ([]byte, error) {
	start := bytes.Index(data[:min(len(data), 1024)], []byte("%PDF-"))
	if start < 0 {
		return nil, corrupt(FormatPDF, "no %%PDF header")
	}
	data = data[start:]
	end := bytes.LastIndex(data, []byte("%%EOF"))
	if end < 0 {
		return nil, corrupt(FormatPDF, "truncated file (no %%%%EOF marker)")
	}
	data = data[:end+5]
	if len(data) < 10 {
		return nil, corrupt(FormatPDF, "truncated file")
	}
	if !bytes.HasPrefix(data, []byte("%PDF-1.")) || data[7] < '0' || data[7] > '7' || (data[8] != '\r' && data[8] != '\n') {
		patched := make([]byte, len(data))
		copy(patched, data)
		copy(patched, "%PDF-1.7")
		if patched[8] != '\r' && patched[8] != '\n' {
			patched[8] = '\n'
		}
		data = patched
	}
	return data, nil
}

// collectPDFPages walks the page tree. Kids lists can be cyclic in broken files, so the
// walk is bounded by depth and by nodes visited.
func collectPDFPages(n pdf.Value, depth int, visited *int, out *[]pdf.Value) {
	if depth > 64 || *visited >= maxPDFPageNodes || len(*out) >= maxPDFPages || n.Kind() != pdf.Dict {
		return
	}
	*visited++
	kids := n.Key("Kids")
	if n.Key("Type").Name() == "Page" || kids.Kind() != pdf.Array {
		if n.Key("Type").Name() == "Page" || !n.Key("Contents").IsNull() {
			*out = append(*out, n)
		}
		return
	}
	for i := 0; i < kids.Len(); i++ {
		collectPDFPages(kids.Index(i), depth+1, visited, out)
	}
}

// inherited looks a page attribute up through the page tree (Resources is inherited).
func inherited(page pdf.Value, key string) pdf.Value {
	v := page
	for i := 0; i < 32 && v.Kind() == pdf.Dict; i++ {
		if r := v.Key(key); !r.IsNull() {
			return r
		}
		v = v.Key("Parent")
	}
	return pdf.Value{}
}

// matrix is a PDF transformation matrix [a b c d e f].
type matrix [6]float64

var identity = matrix{1, 0, 0, 1, 0, 0}

// mul returns m × n: first m, then n.
func (m matrix) mul(n matrix) matrix {
	return matrix{
		m[0]*n[0] + m[1]*n[2], m[0]*n[1] + m[1]*n[3],
		m[2]*n[0] + m[3]*n[2], m[2]*n[1] + m[3]*n[3],
		m[4]*n[0] + m[5]*n[2] + n[4], m[4]*n[1] + m[5]*n[3] + n[5],
	}
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// pdfFont is a font as the text interpreter needs it.
type pdfFont struct {
	enc       pdf.TextEncoding
	twoByte   bool // composite (Type0) font: codes are two bytes
	widths    map[int]float64
	first     int
	simpleW   []float64
	defaultW  float64
	std       *[95]uint16 // standard-14 metrics when the font lists no widths
	monospace bool
	scale     float64        // glyph units to text space (Type3 FontMatrix); 0.001 normally
	cache     map[int]string // decoded codes
	bold      bool
	mono      bool // fixed pitch: code, in technical documents
}

// width returns the advance of one code in text-space units per unit font size.
func (f *pdfFont) width(code int) float64 {
	var w float64
	switch {
	case f.twoByte:
		var ok bool
		if w, ok = f.widths[code]; !ok {
			w = f.defaultW
		}
	case code >= f.first && code-f.first < len(f.simpleW):
		w = f.simpleW[code-f.first]
	case f.std != nil && code >= 32 && code <= 126:
		w = float64(f.std[code-32])
	case f.monospace:
		w = 600
	case code == 32:
		w = 250
	default:
		w = f.defaultW
	}
	if w <= 0 && !f.twoByte && len(f.simpleW) > 0 {
		// A zero width for a visible character is a broken Widths array; an
		// average width keeps word gaps detectable.
		w = 500
	}
	return w * f.scale
}

// decode maps a shown string to Unicode, code by code through a cache: the library's
// ToUnicode and Differences decoders scan their whole table for every code, which for a
// CJK font with thousands of mappings would make a long document take minutes.
func (f *pdfFont) decode(raw string) string {
	if f.enc == nil {
		return raw
	}
	step := 1
	if f.twoByte {
		step = 2
	}
	if f.cache == nil {
		f.cache = map[int]string{}
	}
	var sb strings.Builder
	for i := 0; i < len(raw); i += step {
		end := min(i+step, len(raw))
		code := int(raw[i])
		if end-i == 2 {
			code = code<<8 | int(raw[i+1])
		} else if step == 2 {
			code |= 1 << 20 // a trailing odd byte: not the same code as a full one
		}
		t, ok := f.cache[code]
		if !ok {
			t = f.safeDecode(raw[i:end])
			f.cache[code] = t
		}
		sb.WriteString(t)
	}
	return sb.String()
}

// safeDecode runs the library's decoder, which may panic on a malformed map.
func (f *pdfFont) safeDecode(code string) (s string) {
	defer func() {
		if recover() != nil {
			s = "\uFFFD"
		}
	}()
	return f.enc.Decode(code)
}

// loadFont builds a pdfFont from a font dictionary. Each step is guarded: a font whose
// ToUnicode map is broken still gives us widths, and its text as raw bytes.
func loadFont(v pdf.Value) *pdfFont {
	f := &pdfFont{scale: 0.001, defaultW: 500}
	base := v.Key("BaseFont").Name()
	lower := strings.ToLower(base)
	f.bold = strings.Contains(lower, "bold") || strings.Contains(lower, "black") || strings.Contains(lower, "heavy") || strings.Contains(lower, "semibold")
	f.mono = v.Key("FontDescriptor").Key("Flags").Int64()&1 != 0 || v.Key("DescendantFonts").Index(0).Key("FontDescriptor").Key("Flags").Int64()&1 != 0
	for _, m := range []string{"mono", "courier", "consol", "cmtt", "sftt", "menlo", "inconsolata", "lmtt"} {
		f.mono = f.mono || strings.Contains(lower, m)
	}
	func() {
		defer func() {
			if recover() != nil {
				f.enc = nil
			}
		}()
		font := pdf.Font{V: v}
		f.enc = font.Encoder()
	}()
	if v.Key("Subtype").Name() == "Type0" {
		f.twoByte = true
		f.defaultW = 1000
		desc := v.Key("DescendantFonts").Index(0)
		if dw := desc.Key("DW"); dw.Kind() == pdf.Integer || dw.Kind() == pdf.Real {
			f.defaultW = dw.Float64()
		}
		f.widths = cidWidths(desc.Key("W"))
		return f
	}
	if v.Key("Subtype").Name() == "Type3" {
		if fm := v.Key("FontMatrix"); fm.Len() == 6 {
			if s := math.Abs(fm.Index(0).Float64()); s > 0 && s < 10 {
				f.scale = s
			}
		}
	}
	f.first = int(v.Key("FirstChar").Int64())
	ws := v.Key("Widths")
	for i := 0; i < ws.Len() && i < 256; i++ {
		f.simpleW = append(f.simpleW, ws.Index(i).Float64())
	}
	if mw := v.Key("FontDescriptor").Key("MissingWidth"); mw.Kind() == pdf.Integer || mw.Kind() == pdf.Real {
		if w := mw.Float64(); w > 0 {
			f.defaultW = w
		}
	}
	if len(f.simpleW) == 0 {
		name := strings.TrimPrefix(lower, strings.SplitN(lower, "+", 2)[0]+"+")
		switch {
		case strings.HasPrefix(name, "courier"):
			f.monospace = true
		case strings.HasPrefix(name, "helvetica") || strings.HasPrefix(name, "arial"):
			f.std = &helveticaWidths
			if f.bold {
				f.std = &helveticaBoldWidths
			}
		case strings.HasPrefix(name, "times"):
			f.std = &timesWidths
			if f.bold {
				f.std = &timesBoldWidths
			}
		default:
			f.std = &helveticaWidths
		}
	}
	return f
}

// cidWidths parses a CIDFont W array: "c [w1 w2 ...]" and "cfirst clast w" entries.
func cidWidths(w pdf.Value) map[int]float64 {
	out := map[int]float64{}
	n := w.Len()
	for i := 0; i < n && len(out) < 1<<16; {
		c := int(w.Index(i).Int64())
		if i+1 >= n {
			break
		}
		next := w.Index(i + 1)
		if next.Kind() == pdf.Array {
			for j := 0; j < next.Len() && len(out) < 1<<16; j++ {
				out[c+j] = next.Index(j).Float64()
			}
			i += 2
			continue
		}
		if i+2 >= n {
			break
		}
		last := int(next.Int64())
		wv := w.Index(i + 2).Float64()
		for k := c; k <= last && k-c < 1<<16 && len(out) < 1<<16; k++ {
			out[k] = wv
		}
		i += 3
	}
	return out
}

// pdfSpan is one string drawn on a page, in device space.
type pdfSpan struct {
	x0, x1, y float64
	size      float64
	text      string
	bold      bool
	mono      bool
	artifact  bool
}

// textState is the part of the graphics state text operators use.
type textState struct {
	ctm                      matrix
	tc, tw, th, tl, rise, fs float64
	font                     *pdfFont
}

type pdfExtractor struct {
	budget int
	pages  [][]pdfLine
}

// pageRun is the interpreter for one page (and the forms it draws).
type pageRun struct {
	ex       *pdfExtractor
	err      error // the first stream that could not be read
	spans    []pdfSpan
	used     int // inflated bytes read for this page
	fonts    map[string]*pdfFont
	artifact int // depth inside /Artifact marked content
}

func (ex *pdfExtractor) page(p pdf.Value) (lines []pdfLine, err error) {
	run := &pageRun{ex: ex, fonts: map[string]*pdfFont{}}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
		// Whatever was read before a failure is kept.
		lines = buildLines(chooseSpans(run.spans))
	}()
	content := run.read(p.Key("Contents"))
	run.interpret(content, inherited(p, "Resources"), "", identity, 0)
	return nil, run.err
}

// chooseSpans drops text marked as an artifact (running headers and footers, page
// numbers, watermarks in tagged PDFs) unless that is all the page has.
func chooseSpans(spans []pdfSpan) []pdfSpan {
	out := spans[:0:0]
	for _, s := range spans {
		if !s.artifact {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return spans
	}
	return out
}

// read inflates a content stream (or an array of them), within the page and file
// budgets. A stream that fails halfway (bad zlib data, a wrong Length) gives what was
// read before the failure.
func (run *pageRun) read(v pdf.Value) []byte {
	if v.Kind() == pdf.Array {
		var all []byte
		for i := 0; i < v.Len() && i < 1000; i++ {
			all = append(all, run.read(v.Index(i))...)
			all = append(all, '\n')
		}
		return all
	}
	if v.Kind() != pdf.Stream {
		return nil
	}
	limit := min(maxPDFPageBytes-run.used, run.ex.budget)
	if limit <= 0 {
		return nil
	}
	var b []byte
	func() {
		defer func() {
			if r := recover(); r != nil && run.err == nil { // an unsupported filter
				run.err = fmt.Errorf("content stream: %v", r)
			}
		}()
		rc := v.Reader()
		defer rc.Close()
		var err error
		b, err = io.ReadAll(io.LimitReader(rc, int64(limit)))
		if err != nil && run.err == nil {
			run.err = fmt.Errorf("content stream: %v", err)
		}
	}()
	run.used += len(b)
	run.ex.budget -= len(b)
	return b
}

func (run *pageRun) font(res pdf.Value, scope, name string) *pdfFont {
	// Fonts are cached by scope (the page, or the chain of forms with their own
	// resources) and name: a form may use the page's font names for other fonts.
	key := scope + "\x00" + name
	if f, ok := run.fonts[key]; ok {
		return f
	}
	f := loadFont(res.Key("Font").Key(name))
	run.fonts[key] = f
	return f
}

// interpret runs the text-relevant operators of a content stream.
func (run *pageRun) interpret(content []byte, res pdf.Value, scope string, ctm matrix, depth int) {
	lx := pdfLexer{b: content}
	var stack []operand
	gs := textState{ctm: ctm, th: 1}
	var gstack []textState
	tm, tlm := identity, identity
	num := func(i int) float64 {
		if i < len(stack) && stack[i].kind == opNumber {
			return stack[i].num
		}
		return 0
	}
	for {
		v, op, isOp, ok := lx.next()
		if !ok {
			return
		}
		if !isOp {
			if len(stack) < 64 {
				stack = append(stack, v)
			}
			continue
		}
		switch op {
		case "q":
			if len(gstack) < 256 {
				gstack = append(gstack, gs)
			}
		case "Q":
			if n := len(gstack); n > 0 {
				gs = gstack[n-1]
				gstack = gstack[:n-1]
			}
		case "cm":
			if len(stack) >= 6 {
				gs.ctm = matrix{num(0), num(1), num(2), num(3), num(4), num(5)}.mul(gs.ctm)
			}
		case "BT":
			tm, tlm = identity, identity
		case "Tf":
			if len(stack) >= 2 && stack[0].kind == opName {
				gs.font = run.font(res, scope, stack[0].str)
				gs.fs = num(1)
			}
		case "Tc":
			gs.tc = num(0)
		case "Tw":
			gs.tw = num(0)
		case "Tz":
			gs.th = num(0) / 100
		case "TL":
			gs.tl = num(0)
		case "Ts":
			gs.rise = num(0)
		case "Td", "TD":
			if len(stack) >= 2 {
				if op == "TD" {
					gs.tl = -num(1)
				}
				tlm = matrix{1, 0, 0, 1, num(0), num(1)}.mul(tlm)
				tm = tlm
			}
		case "Tm":
			if len(stack) >= 6 {
				tlm = matrix{num(0), num(1), num(2), num(3), num(4), num(5)}
				tm = tlm
			}
		case "T*":
			tlm = matrix{1, 0, 0, 1, 0, -gs.tl}.mul(tlm)
			tm = tlm
		case "Tj", "'", "\"":
			if op != "Tj" {
				tlm = matrix{1, 0, 0, 1, 0, -gs.tl}.mul(tlm)
				tm = tlm
			}
			if op == "\"" && len(stack) >= 3 {
				gs.tw, gs.tc = num(0), num(1)
			}
			if n := len(stack); n > 0 && stack[n-1].kind == opString {
				tm = run.show(stack[n-1].str, &gs, tm)
			}
		case "TJ":
			if n := len(stack); n > 0 && stack[n-1].kind == opArray {
				for _, e := range stack[n-1].arr {
					switch e.kind {
					case opString:
						tm = run.show(e.str, &gs, tm)
					case opNumber:
						tx := -e.num / 1000 * gs.fs * gs.th
						tm = matrix{1, 0, 0, 1, finite(tx), 0}.mul(tm)
					}
				}
			}
		case "BMC", "BDC":
			if run.artifact > 0 || (len(stack) > 0 && stack[0].kind == opName && stack[0].str == "Artifact") {
				run.artifact++
			}
		case "EMC":
			if run.artifact > 0 {
				run.artifact--
			}
		case "ID":
			lx.skipInlineImage()
		case "Do":
			if depth < maxPDFFormDepth && len(stack) > 0 && stack[0].kind == opName {
				run.form(res, scope, stack[0].str, gs.ctm, depth)
			}
		}
		stack = stack[:0]
		if len(run.spans) >= maxPDFSpansPerPage {
			return
		}
	}
}

// form draws a form XObject: its own content, with its own resources (falling back to
// the caller's) and matrix.
func (run *pageRun) form(res pdf.Value, scope, name string, ctm matrix, depth int) {
	x := res.Key("XObject").Key(name)
	if x.Kind() != pdf.Stream || x.Key("Subtype").Name() != "Form" {
		return
	}
	m := identity
	if fm := x.Key("Matrix"); fm.Len() == 6 {
		for i := range m {
			m[i] = finite(fm.Index(i).Float64())
		}
	}
	fres := x.Key("Resources")
	if fres.Kind() == pdf.Dict {
		scope += "/" + name
	} else {
		fres = res
	}
	run.interpret(run.read(x), fres, scope, m.mul(ctm), depth+1)
}

// show records a string drawn with the current font and returns the text matrix
// advanced past it.
func (run *pageRun) show(raw string, gs *textState, tm matrix) matrix {
	f := gs.font
	if f == nil {
		f = &pdfFont{scale: 0.001, defaultW: 500, std: &helveticaWidths}
		gs.font = f
	}
	trm := matrix{gs.fs * gs.th, 0, 0, gs.fs, 0, gs.rise}.mul(tm).mul(gs.ctm)
	x0, y := finite(trm[4]), finite(trm[5])
	size := finite(math.Hypot(trm[2], trm[3]))
	adv := 0.0
	step := 1
	if f.twoByte {
		step = 2
	}
	for i := 0; i+step <= len(raw); i += step {
		code := int(raw[i])
		if step == 2 {
			code = code<<8 | int(raw[i+1])
		}
		w := f.width(code)*gs.fs + gs.tc
		if step == 1 && code == 32 {
			w += gs.tw
		}
		adv += w * gs.th
	}
	tm = matrix{1, 0, 0, 1, finite(adv), 0}.mul(tm)
	end := matrix{1, 0, 0, 1, 0, gs.rise}.mul(tm).mul(gs.ctm)
	text := f.decode(raw)
	if text == "" {
		return tm
	}
	run.spans = append(run.spans, pdfSpan{
		x0: x0, x1: finite(end[4]), y: y, size: size, text: text, bold: f.bold, mono: f.mono, artifact: run.artifact > 0,
	})
	return tm
}
