package extract

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/net/html/charset"
)

// HTML reduces a web page or an HTML file to its readable article text. It parses with
// golang.org/x/net/html (the HTML5 parsing algorithm, so broken markup is repaired the way
// browsers do), honours the page's declared charset, and drops what a reader does not
// read as content: scripts, styles, navigation, page headers and footers, sidebars,
// forms, embedded frames and hidden elements. When the page marks its content with
// <main> or <article>, only that is kept.
func HTML(data []byte) (Document, error) {
	return Extract(FormatHTML, data)
}

func parseHTML(data []byte) (Document, error) {
	// A BOM settles the encoding. Otherwise bytes that are valid UTF-8 are UTF-8, whatever
	// the page declares: the charset package looks at the first KiB only and falls back
	// to Windows-1252 when that is plain ASCII, and mislabeled pages ("iso-8859-1" served
	// as UTF-8) are common. Only invalid UTF-8 is decoded with the declared charset.
	enc, name, certain := charset.DetermineEncoding(data, "")
	if name != "utf-8" && enc != nil && (certain || !utf8.Valid(data)) {
		if dec, err := enc.NewDecoder().Bytes(data); err == nil {
			data = dec
		}
	}
	root, err := html.Parse(bytes.NewReader(data))
	if err != nil {
		// The parser refuses pages nested more than 512 elements deep (thousands of
		// unclosed <font> or <div> tags from broken generators); browsers show them,
		// so read their text with the tokenizer instead.
		return htmlTokens(data), nil
	}
	var doc Document
	if t := findFirst(root, atom.Title); t != nil {
		doc.Title = cleanInline(textContent(t))
	}
	body := findFirst(root, atom.Body)
	if body == nil {
		body = root
	}
	w := htmlWalker{}
	content := contentRoots(body)
	for _, n := range content {
		w.walk(n)
	}
	w.flush()
	// A <main> or <article> that holds only a fraction of the page's text is a teaser
	// or a hero banner, not the content; read the whole body instead.
	if len(content) != 1 || content[0] != body {
		full := htmlWalker{}
		full.walk(body)
		full.flush()
		if textLen(w.doc.Blocks)*4 < textLen(full.doc.Blocks) {
			w = full
		}
	}
	doc.Blocks = w.doc.Blocks
	if doc.Title == "" {
		for _, b := range doc.Blocks {
			if b.Kind == Heading {
				doc.Title = b.Text
				break
			}
		}
	}
	return doc, nil
}

func textLen(blocks []Block) int {
	n := 0
	for _, b := range blocks {
		n += len(b.Text)
	}
	return n
}

// contentRoots returns the elements holding the page's content: the first visible
// <main> (or role=main), else the outermost <article> elements, else the body.
func contentRoots(body *html.Node) []*html.Node {
	var mains, articles []*html.Node
	var visit func(n *html.Node, inArticle bool)
	visit = func(n *html.Node, inArticle bool) {
		if n.Type == html.ElementNode {
			if dropped(n, false) {
				return
			}
			if n.DataAtom == atom.Main || attr(n, "role") == "main" {
				mains = append(mains, n)
				return
			}
			if n.DataAtom == atom.Article && !inArticle {
				articles = append(articles, n)
				inArticle = true
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			visit(c, inArticle)
		}
	}
	visit(body, false)
	switch {
	case len(mains) > 0:
		return mains[:1]
	case len(articles) > 0:
		return articles
	}
	return []*html.Node{body}
}

// dropTags never hold article text.
var dropTags = map[atom.Atom]bool{
	atom.Script: true, atom.Style: true, atom.Noscript: true, atom.Template: true, atom.Svg: true,
	atom.Math: true, atom.Nav: true, atom.Aside: true, atom.Form: true, atom.Iframe: true,
	atom.Frame: true, atom.Frameset: true, atom.Object: true, atom.Embed: true, atom.Canvas: true,
	atom.Video: true, atom.Audio: true, atom.Button: true, atom.Select: true, atom.Textarea: true,
	atom.Input: true, atom.Dialog: true, atom.Head: true, atom.Footer: true, atom.Map: true,
	atom.Img: true, atom.Picture: true, atom.Link: true, atom.Meta: true, atom.Base: true,
}

// dropRoles are ARIA landmarks and widgets that are page chrome.
var dropRoles = map[string]bool{
	"navigation": true, "banner": true, "contentinfo": true, "complementary": true, "search": true,
	"menu": true, "menubar": true, "toolbar": true, "dialog": true, "alertdialog": true, "tablist": true,
}

// noiseClasses are class and id tokens that mark chrome on real sites: screen-reader-only
// helpers ("Skip to content"), cookie banners, share bars, breadcrumbs. The list is short
// on purpose: each entry is near-certain noise, and a false positive deletes content.
var noiseClasses = map[string]bool{
	"sr-only": true, "visually-hidden": true, "screen-reader-text": true, "skip-link": true,
	"skip-to-content": true, "breadcrumb": true, "breadcrumbs": true, "share": true, "sharing": true,
	"social-share": true, "share-buttons": true, "advertisement": true, "ads": true, "ad-container": true,
	"cookie-banner": true, "cookie-consent": true, "cookie-notice": true, "newsletter-signup": true,
	"sidebar": true, "site-header": true, "site-footer": true, "comments": true, "related-posts": true,
}

// dropped reports whether element n is chrome or hidden. inContent is true inside a
// <main> or <article>, where a <header> holds the article's title rather than the site's.
func dropped(n *html.Node, inContent bool) bool {
	if dropTags[n.DataAtom] || n.DataAtom == atom.Header && !inContent {
		return true
	}
	for _, a := range n.Attr {
		switch a.Key {
		case "hidden":
			return true
		case "aria-hidden":
			if strings.EqualFold(strings.TrimSpace(a.Val), "true") {
				return true
			}
		case "style":
			s := strings.ToLower(strings.Join(strings.Fields(a.Val), ""))
			if strings.Contains(s, "display:none") || strings.Contains(s, "visibility:hidden") {
				return true
			}
		case "role":
			if dropRoles[strings.ToLower(strings.TrimSpace(a.Val))] {
				return true
			}
		case "class", "id":
			for _, tok := range strings.Fields(strings.ToLower(a.Val)) {
				if noiseClasses[tok] || strings.Contains(tok, "cookie") {
					return true
				}
			}
		}
	}
	return false
}

// blockTags end the current paragraph before and after them.
var blockTags = map[atom.Atom]bool{
	atom.P: true, atom.Div: true, atom.Section: true, atom.Article: true, atom.Main: true,
	atom.Header: true, atom.Blockquote: true, atom.Dl: true, atom.Dd: true, atom.Dt: true,
	atom.Figure: true, atom.Figcaption: true, atom.Address: true, atom.Details: true,
	atom.Summary: true, atom.Center: true, atom.Fieldset: true, atom.Legend: true,
	atom.Caption: true, atom.Hgroup: true, atom.Body: true, atom.Tr: true, atom.Td: true,
	atom.Th: true, atom.Tbody: true, atom.Thead: true, atom.Tfoot: true, atom.Hr: true,
}

var headingLevels = map[atom.Atom]int{atom.H1: 1, atom.H2: 2, atom.H3: 3, atom.H4: 4, atom.H5: 5, atom.H6: 6}

// brMark stands for a <br> in the pending text; two in a row separate paragraphs (the
// "div soup" way of writing them), one is a space.
const brMark = '\u2029'

type htmlWalker struct {
	doc       Document
	buf       strings.Builder
	kind      BlockKind
	level     int
	prefix    string // "3. " for the pending text of an ordered list item
	listDepth int
	inContent int
}

func (w *htmlWalker) flush() {
	raw := w.buf.String()
	w.buf.Reset()
	prefix := w.prefix
	w.prefix = ""
	for i, part := range splitOnDoubleBreak(raw) {
		t := cleanInline(part)
		if t == "" {
			continue
		}
		kind := w.kind
		if i > 0 && kind == Heading {
			kind = Paragraph
		}
		if kind == ListItem && prefix != "" {
			t = prefix + t
			prefix = ""
		}
		w.doc.Blocks = append(w.doc.Blocks, Block{Kind: kind, Level: w.level, Text: t})
	}
}

// splitOnDoubleBreak splits s at runs of two or more brMarks (spaces between them
// allowed).
func splitOnDoubleBreak(s string) []string {
	if strings.IndexRune(s, brMark) < 0 {
		return []string{s}
	}
	var parts []string
	start, marks, runStart := 0, 0, -1
	for i, r := range s {
		switch {
		case r == brMark:
			if marks == 0 {
				runStart = i
			}
			marks++
		case r == ' ' || r == '\n' || r == '\t' || r == '\r':
		default:
			if marks >= 2 {
				parts = append(parts, s[start:runStart])
				start = i
			}
			marks = 0
		}
	}
	return append(parts, s[start:])
}

func (w *htmlWalker) walk(n *html.Node) {
	switch n.Type {
	case html.TextNode:
		w.buf.WriteString(strings.ReplaceAll(n.Data, string(brMark), " "))
		return
	case html.ElementNode:
	case html.DocumentNode:
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			w.walk(c)
		}
		return
	default:
		return
	}
	if dropped(n, w.inContent > 0) {
		return
	}
	a := n.DataAtom
	if a == atom.Main || a == atom.Article {
		w.inContent++
		defer func() { w.inContent-- }()
	}
	switch {
	case a == atom.Br:
		w.buf.WriteRune(brMark)
	case headingLevels[a] > 0:
		w.flush()
		kind, level := w.kind, w.level
		w.kind, w.level = Heading, headingLevels[a]
		w.children(n)
		w.flush()
		w.kind, w.level = kind, level
	case a == atom.Ul || a == atom.Ol || a == atom.Menu:
		w.flush()
		w.listDepth++
		num := 1
		if s, err := strconv.Atoi(attr(n, "start")); err == nil {
			num = s
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.ElementNode && c.DataAtom == atom.Li {
				prefix := ""
				if a == atom.Ol {
					if v, err := strconv.Atoi(attr(c, "value")); err == nil {
						num = v
					}
					prefix = strconv.Itoa(num) + ". "
					num++
				}
				w.listItem(c, prefix)
				continue
			}
			w.walk(c)
		}
		w.flush()
		w.listDepth--
	case a == atom.Li:
		w.listItem(n, "")
	case a == atom.Pre:
		w.flush()
		var sb strings.Builder
		preText(&sb, n)
		if t := cleanCode(sb.String()); t != "" {
			w.doc.Blocks = append(w.doc.Blocks, Block{Kind: Code, Text: t})
		}
	case a == atom.Table && !layoutTable(n):
		w.flush()
		w.table(n)
	case blockTags[a] || a == atom.Table:
		w.flush()
		w.children(n)
		w.flush()
	default:
		w.children(n)
	}
}

func (w *htmlWalker) children(n *html.Node) {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		w.walk(c)
	}
}

func (w *htmlWalker) listItem(n *html.Node, prefix string) {
	if dropped(n, w.inContent > 0) {
		return
	}
	w.flush()
	kind, level := w.kind, w.level
	w.kind, w.level, w.prefix = ListItem, max(w.listDepth-1, 0), prefix
	w.children(n)
	w.flush()
	w.kind, w.level = kind, level
}

// layoutTable reports whether a table arranges the page rather than holding data: it
// says so (role=presentation), or it nests tables or headings.
func layoutTable(t *html.Node) bool {
	if r := attr(t, "role"); r == "presentation" || r == "none" {
		return true
	}
	var found bool
	var visit func(n *html.Node)
	visit = func(n *html.Node) {
		for c := n.FirstChild; c != nil && !found; c = c.NextSibling {
			if c.Type == html.ElementNode && (c.DataAtom == atom.Table || headingLevels[c.DataAtom] > 0) {
				found = true
				return
			}
			visit(c)
		}
	}
	visit(t)
	return found
}

// table emits one TableRow per row. The header is the <thead> row or a first row made
// only of <th> cells.
func (w *htmlWalker) table(t *html.Node) {
	var rows []*html.Node
	var headerRow *html.Node
	var collect func(n *html.Node, inHead bool)
	collect = func(n *html.Node, inHead bool) {
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if c.Type != html.ElementNode || dropped(c, true) {
				continue
			}
			switch c.DataAtom {
			case atom.Thead:
				collect(c, true)
			case atom.Tbody, atom.Tfoot:
				collect(c, false)
			case atom.Tr:
				if inHead && headerRow == nil {
					headerRow = c
				} else {
					rows = append(rows, c)
				}
			case atom.Caption:
				if t := cleanInline(textContent(c)); t != "" {
					w.doc.Blocks = append(w.doc.Blocks, Block{Kind: Paragraph, Text: t})
				}
			}
		}
	}
	collect(t, false)
	if headerRow == nil && len(rows) > 1 && allHeaderCells(rows[0]) {
		headerRow, rows = rows[0], rows[1:]
	}
	var header []string
	if headerRow != nil {
		header = rowCells(headerRow)
	}
	for _, r := range rows {
		if t := tableRowText(header, rowCells(r)); t != "" {
			w.doc.Blocks = append(w.doc.Blocks, Block{Kind: TableRow, Text: t})
		}
	}
	if len(rows) == 0 && header != nil {
		if t := tableRowText(nil, header); t != "" {
			w.doc.Blocks = append(w.doc.Blocks, Block{Kind: TableRow, Text: t})
		}
	}
}

func allHeaderCells(tr *html.Node) bool {
	n := 0
	for c := tr.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode {
			if c.DataAtom != atom.Th {
				return false
			}
			n++
		}
	}
	return n > 0
}

// rowCells returns the text of a row's cells, repeating a cell that spans columns so
// that values stay under their headers.
func rowCells(tr *html.Node) []string {
	var cells []string
	for c := tr.FirstChild; c != nil; c = c.NextSibling {
		if c.Type != html.ElementNode || (c.DataAtom != atom.Td && c.DataAtom != atom.Th) {
			continue
		}
		t := ""
		if !dropped(c, true) {
			t = cleanInline(textContent(c))
		}
		span, _ := strconv.Atoi(attr(c, "colspan"))
		cells = append(cells, t)
		for i := 1; i < min(span, 50); i++ {
			cells = append(cells, "")
		}
	}
	return cells
}

// textContent returns the visible text under n with block boundaries as spaces.
func textContent(n *html.Node) string {
	var sb strings.Builder
	var visit func(n *html.Node)
	visit = func(n *html.Node) {
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			switch c.Type {
			case html.TextNode:
				sb.WriteString(c.Data)
			case html.ElementNode:
				if c.DataAtom != atom.Title && dropped(c, true) {
					continue
				}
				if blockTags[c.DataAtom] || c.DataAtom == atom.Br || c.DataAtom == atom.Li {
					sb.WriteByte(' ')
				}
				visit(c)
				if blockTags[c.DataAtom] || c.DataAtom == atom.Li {
					sb.WriteByte(' ')
				}
			}
		}
	}
	visit(n)
	return sb.String()
}

// preText collects preformatted text verbatim, turning <br> into newlines.
func preText(sb *strings.Builder, n *html.Node) {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		switch c.Type {
		case html.TextNode:
			sb.WriteString(c.Data)
		case html.ElementNode:
			if c.DataAtom == atom.Br {
				sb.WriteByte('\n')
				continue
			}
			if dropped(c, true) {
				continue
			}
			preText(sb, c)
		}
	}
}

// htmlTokens is the fallback reader: a single pass over the tokens, paragraphs broken
// at block tags, headings kept, chrome and scripts skipped by counting their tags.
func htmlTokens(data []byte) Document {
	var doc Document
	z := html.NewTokenizer(bytes.NewReader(data))
	var buf strings.Builder
	kind, level := Paragraph, 0
	skip := map[atom.Atom]int{}
	skipping := 0
	inTitle := false
	flush := func() {
		if t := cleanInline(buf.String()); t != "" {
			doc.Blocks = append(doc.Blocks, Block{Kind: kind, Level: level, Text: t})
		}
		buf.Reset()
		kind, level = Paragraph, 0
	}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			flush()
			return doc
		case html.TextToken:
			switch {
			case inTitle && doc.Title == "":
				doc.Title = cleanInline(string(z.Text()))
			case skipping == 0 && !inTitle:
				buf.Write(z.Text())
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			a := atom.Lookup(name)
			if a == atom.Title {
				inTitle = tt == html.StartTagToken
				continue
			}
			if dropTags[a] && a != atom.Img && a != atom.Input && a != atom.Link && a != atom.Meta && a != atom.Base {
				switch {
				case tt == html.StartTagToken:
					skip[a]++
					skipping++
				case tt == html.EndTagToken && skip[a] > 0:
					skip[a]--
					skipping--
				}
				continue
			}
			if blockTags[a] || headingLevels[a] > 0 || a == atom.Li || a == atom.Br || a == atom.Pre || a == atom.Table {
				flush()
				if l := headingLevels[a]; l > 0 && tt == html.StartTagToken {
					kind, level = Heading, l
				}
			}
		}
	}
}

func findFirst(n *html.Node, a atom.Atom) *html.Node {
	if n.Type == html.ElementNode && n.DataAtom == a {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if f := findFirst(c, a); f != nil {
			return f
		}
	}
	return nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}
