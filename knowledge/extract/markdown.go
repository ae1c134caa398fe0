package extract

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	east "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"
	"golang.org/x/net/html"
)

// markdownParser is goldmark (CommonMark-compliant) with the GitHub extensions people
// actually write: tables, strikethrough and task lists. A hand-rolled parser would get
// the corner cases of emphasis, nested lists and lazy continuation lines wrong; goldmark
// is pure Go, has no dependencies and parses a megabyte in milliseconds. The parser is
// safe for concurrent use.
var markdownParser = goldmark.New(goldmark.WithExtensions(extension.Table, extension.Strikethrough, extension.TaskList)).Parser()

// parseMarkdown reads Markdown: ATX and setext headings become Heading blocks, list items
// ListItem blocks (numbered ones keep their number), fenced and indented code Code
// blocks and table rows TableRow blocks; emphasis, links and inline code are reduced to
// their text. YAML or TOML front matter is dropped, except that its title becomes the
// document title.
func parseMarkdown(data []byte) (Document, error) {
	src := []byte(decodeText(data))
	if tooHardForMarkdown(src) {
		// Read it as plain text rather than spend minutes in the parser.
		return parseText(src)
	}
	src, title := stripFrontMatter(src)
	m := mdConv{src: src}
	root := markdownParser.Parse(text.NewReader(src))
	for c := root.FirstChild(); c != nil; c = c.NextSibling() {
		m.block(c, 0)
	}
	m.doc.Title = title
	if m.doc.Title == "" {
		for _, b := range m.doc.Blocks {
			if b.Kind == Heading && b.Level == 1 {
				m.doc.Title = b.Text
				break
			}
		}
	}
	return m.doc, nil
}

// tooHardForMarkdown spots input that sends a CommonMark parser into quadratic time:
// goldmark needs seconds for 20,000 nested block quotes or list markers, tens of
// seconds for a paragraph of 20,000 unclosed link brackets, and minutes for a table
// header with thousands of columns (every row is padded to it). No real document comes
// near the limits below, so such input is read as plain text instead.
func tooHardForMarkdown(src []byte) bool {
	const (
		maxNesting   = 32  // ">" or list markers opening one line
		maxIndent    = 256 // leading spaces, tabs counted as four
		maxPipes     = 256 // table cells in one line
		maxLineBytes = 1 << 20
		// Link parsing costs about the square of the "[" in a paragraph (10 ns each):
		// the sum of squares over paragraphs bounds the time at about a second.
		maxBracketWork = 100_000_000
	)
	brackets, work := 0, 0
	for line := range bytes.SplitSeq(src, []byte("\n")) {
		if len(line) > maxLineBytes {
			return true
		}
		if len(bytes.TrimSpace(line)) == 0 {
			work += brackets * brackets
			brackets = 0
			continue
		}
		indent, nesting := 0, 0
		i := 0
	prefix:
		for i < len(line) {
			switch line[i] {
			case ' ':
				indent++
			case '\t':
				indent += 4
			case '>', '-', '*', '+':
				nesting++
			default:
				break prefix
			}
			i++
		}
		if indent > maxIndent || nesting > maxNesting || bytes.Count(line, []byte("|")) > maxPipes {
			return true
		}
		brackets += bytes.Count(line, []byte("["))
		if work+brackets*brackets > maxBracketWork {
			return true
		}
	}
	return false
}

// stripFrontMatter removes a leading "---" (YAML) or "+++" (TOML) block, which static
// site generators put before the content, and returns its title if it has one.
func stripFrontMatter(src []byte) ([]byte, string) {
	var fence string
	switch {
	case bytes.HasPrefix(src, []byte("---\n")):
		fence = "---"
	case bytes.HasPrefix(src, []byte("+++\n")):
		fence = "+++"
	default:
		return src, ""
	}
	rest := src[4:]
	title := ""
	for i := 0; i < 200 && len(rest) > 0; i++ {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		trimmed := strings.TrimSpace(string(line))
		if trimmed == fence || (fence == "---" && trimmed == "...") {
			return after, title
		}
		if k, v, ok := strings.Cut(trimmed, ":"); ok && fence == "---" && strings.EqualFold(k, "title") {
			title = strings.Trim(strings.TrimSpace(v), `"'`)
		} else if k, v, ok := strings.Cut(trimmed, "="); ok && fence == "+++" && strings.EqualFold(strings.TrimSpace(k), "title") {
			title = strings.Trim(strings.TrimSpace(v), `"'`)
		}
		rest = after
	}
	// No closing fence: it was a thematic break, not front matter.
	return src, ""
}

type mdConv struct {
	src []byte
	doc Document
}

func (m *mdConv) add(kind BlockKind, level int, text string) {
	if kind != Code {
		text = cleanInline(text)
	}
	if strings.TrimSpace(text) != "" {
		m.doc.Blocks = append(m.doc.Blocks, Block{Kind: kind, Level: level, Text: text})
	}
}

// block converts one block node; depth is the list nesting depth.
func (m *mdConv) block(n ast.Node, depth int) {
	switch n := n.(type) {
	case *ast.Heading:
		m.add(Heading, n.Level, m.inline(n))
	case *ast.Paragraph, *ast.TextBlock:
		m.add(Paragraph, 0, m.inline(n))
	case *ast.List:
		i := 0
		for c := n.FirstChild(); c != nil; c = c.NextSibling() {
			m.listItem(c, n, i, depth)
			i++
		}
	case *ast.FencedCodeBlock:
		m.add(Code, 0, m.lines(n.Lines()))
	case *ast.CodeBlock:
		m.add(Code, 0, m.lines(n.Lines()))
	case *ast.HTMLBlock:
		m.add(Paragraph, 0, htmlFragmentText(m.lines(n.Lines())))
	case *ast.ThematicBreak:
	case *east.Table:
		m.table(n)
	default:
		for c := n.FirstChild(); c != nil; c = c.NextSibling() {
			m.block(c, depth)
		}
	}
}

// listItem emits the item's leading paragraphs as one ListItem and its other children
// (nested lists, code) after it.
func (m *mdConv) listItem(item ast.Node, list *ast.List, index, depth int) {
	var parts []string
	c := item.FirstChild()
	for ; c != nil; c = c.NextSibling() {
		if c.Kind() != ast.KindParagraph && c.Kind() != ast.KindTextBlock {
			break
		}
		parts = append(parts, m.inline(c))
	}
	txt := cleanInline(strings.Join(parts, " "))
	if list.IsOrdered() && txt != "" {
		txt = strconv.Itoa(list.Start+index) + ". " + txt
	}
	m.add(ListItem, depth, txt)
	for ; c != nil; c = c.NextSibling() {
		m.block(c, depth+1)
	}
}

func (m *mdConv) table(t *east.Table) {
	var header []string
	for r := t.FirstChild(); r != nil; r = r.NextSibling() {
		var cells []string
		for c := r.FirstChild(); c != nil; c = c.NextSibling() {
			cells = append(cells, cleanInline(m.inline(c)))
		}
		if r.Kind() == east.KindTableHeader {
			header = cells
			continue
		}
		m.add(TableRow, 0, tableRowText(header, cells))
	}
	if len(header) > 0 && t.ChildCount() == 1 {
		// A table with a header and no rows still says something.
		m.add(TableRow, 0, tableRowText(nil, header))
	}
}

// inline returns the readable text of n's inline content: emphasis and link syntax
// dropped, link text kept, images dropped (their alt text is mostly "logo" or
// "screenshot"), code spans kept verbatim.
func (m *mdConv) inline(n ast.Node) string {
	var sb strings.Builder
	m.inlineTo(&sb, n)
	return sb.String()
}

func (m *mdConv) inlineTo(sb *strings.Builder, n ast.Node) {
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		switch c := c.(type) {
		case *ast.Text:
			v := c.Value(m.src)
			if !c.IsRaw() {
				v = util.ResolveEntityNames(util.ResolveNumericReferences(util.UnescapePunctuations(v)))
			}
			sb.Write(v)
			if c.SoftLineBreak() || c.HardLineBreak() {
				sb.WriteByte(' ')
			}
		case *ast.String:
			sb.Write(c.Value)
		case *ast.AutoLink:
			sb.Write(c.URL(m.src))
		case *ast.Image, *ast.RawHTML, *east.TaskCheckBox:
		default:
			m.inlineTo(sb, c)
		}
	}
}

func (m *mdConv) lines(segs *text.Segments) string {
	var sb strings.Builder
	for i := 0; i < segs.Len(); i++ {
		seg := segs.At(i)
		sb.Write(seg.Value(m.src))
	}
	return sb.String()
}

// htmlFragmentText returns the text of a raw HTML block inside Markdown, without tags
// and without the contents of script and style elements.
func htmlFragmentText(s string) string {
	z := html.NewTokenizer(strings.NewReader(s))
	var sb strings.Builder
	skip := 0
	for {
		switch z.Next() {
		case html.ErrorToken:
			return sb.String()
		case html.TextToken:
			if skip == 0 {
				sb.Write(z.Text())
				sb.WriteByte(' ')
			}
		case html.StartTagToken:
			if name, _ := z.TagName(); string(name) == "script" || string(name) == "style" {
				skip++
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); (string(name) == "script" || string(name) == "style") && skip > 0 {
				skip--
			}
		}
	}
}

// tableRowText formats a table row. With a header, cells become "header: value" pairs
// so a row retrieved on its own still says what its numbers mean; empty cells are left
// out. Without a header, cells are joined with " | ".
func tableRowText(header, cells []string) string {
	var parts []string
	keyed := false
	for i, c := range cells {
		c = cleanInline(c)
		if c == "" {
			continue
		}
		if i < len(header) && header[i] != "" {
			parts = append(parts, header[i]+": "+c)
			keyed = true
		} else {
			parts = append(parts, c)
		}
	}
	if keyed {
		return strings.Join(parts, "; ")
	}
	return strings.Join(parts, " | ")
}
