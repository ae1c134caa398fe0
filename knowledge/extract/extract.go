// Package extract turns what users upload or link into a knowledge base (plain text,
// Markdown, HTML pages, PDF, DOCX and CSV files) into clean structured text: a Document of
// headings, paragraphs, list items, table rows and code blocks, ready for the chunker.
//
// Everything here is pure Go and works on bytes already in memory; it never touches the
// network or the disk. Every string it returns is valid UTF-8 without NUL bytes or other
// control characters, because the text ends up in PostgreSQL (which rejects NULs) and in
// embedding requests (which choke on invalid UTF-8).
//
// Errors wrap one of three sentinels so the caller can map them without parsing messages:
// ErrUnsupported (a type we do not read: the API answers 415), ErrEmpty (readable but no
// text, e.g. a scanned PDF without an OCR layer) and ErrCorrupt (a file we cannot parse;
// the message says why).
package extract

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Format is a supported input format. The values are stored with a source, so they must
// not change.
type Format string

// The supported formats.
const (
	FormatText     Format = "text"
	FormatMarkdown Format = "markdown"
	FormatHTML     Format = "html"
	FormatPDF      Format = "pdf"
	FormatDOCX     Format = "docx"
	FormatCSV      Format = "csv"
)

var (
	// ErrUnsupported means the input is of a type extract does not read.
	ErrUnsupported = errors.New("extract: unsupported file type")
	// ErrEmpty means the input was read but holds no extractable text.
	ErrEmpty = errors.New("extract: no extractable text")
	// ErrCorrupt means the input claims a supported format but cannot be parsed.
	ErrCorrupt = errors.New("extract: corrupt or unreadable file")
)

// corrupt wraps ErrCorrupt with a reason a user can act on ("encrypted PDF"). Reasons
// often quote the broken input, so they are cleaned and shortened: they end up in the
// source's status in the database and in API responses.
func corrupt(format Format, reason string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, format, shortReason(fmt.Sprintf(reason, args...)))
}

// shortReason makes s a clean line of at most 200 bytes.
func shortReason(s string) string {
	s = cleanInline(s)
	if len(s) <= 200 {
		return s
	}
	cut := 200
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// BlockKind is the structural role of a Block.
type BlockKind int

// The block kinds.
const (
	// Paragraph is running text.
	Paragraph BlockKind = iota
	// Heading starts a section; its Level is 1 (top) to 6.
	Heading
	// ListItem is one item of a bulleted or numbered list. Numbered items keep their
	// number in Text ("2. Restart the router") because steps are often referred to by it;
	// bullets are dropped. Level is the nesting depth, 0 for a top-level item.
	ListItem
	// TableRow is one row of a table: "cell | cell", or "header: value; header: value"
	// when the table has a header row, so that a row retrieved alone still says what
	// each value means.
	TableRow
	// Code is preformatted text; it is the only kind whose Text keeps newlines and
	// indentation.
	Code
)

var kindNames = [...]string{"Paragraph", "Heading", "ListItem", "TableRow", "Code"}

func (k BlockKind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("BlockKind(%d)", int(k))
}

// Block is one structural unit of a document. Text is trimmed, non-empty, valid UTF-8,
// and a single line with collapsed spaces for every kind except Code.
type Block struct {
	Kind BlockKind
	// Level is the heading level (1-6) for a Heading and the nesting depth for a
	// ListItem; it is 0 otherwise.
	Level int
	Text  string
}

// Render returns the block as plain text the way Document.Text shows it: list items get
// a "- " bullet (numbered ones keep their number instead) and are indented by depth.
func (b Block) Render() string {
	if b.Kind != ListItem {
		return b.Text
	}
	indent := strings.Repeat("  ", min(b.Level, 8))
	if hasOrdinal(b.Text) {
		return indent + b.Text
	}
	return indent + "- " + b.Text
}

// Document is the structured text of one input.
type Document struct {
	// Title is the document's own title when it has one (HTML <title>, PDF and DOCX
	// metadata, a DOCX "Title" paragraph); it may be empty.
	Title  string
	Blocks []Block
}

// Text returns the document as plain text: blocks separated by blank lines, except that
// consecutive list items and consecutive table rows sit on adjacent lines.
func (d Document) Text() string {
	var sb strings.Builder
	for i, b := range d.Blocks {
		if i > 0 {
			prev := d.Blocks[i-1].Kind
			if prev == b.Kind && (b.Kind == ListItem || b.Kind == TableRow) {
				sb.WriteByte('\n')
			} else {
				sb.WriteString("\n\n")
			}
		}
		sb.WriteString(b.Render())
	}
	return sb.String()
}

// Extract reads data in format f. Data must be the whole file: the formats here are
// either tiny (text) or need random access (PDF, DOCX).
func Extract(f Format, data []byte) (Document, error) {
	var (
		doc Document
		err error
	)
	switch f {
	case FormatText:
		doc, err = parseText(data)
	case FormatMarkdown:
		doc, err = parseMarkdown(data)
	case FormatHTML:
		doc, err = parseHTML(data)
	case FormatPDF:
		doc, err = parsePDF(data)
	case FormatDOCX:
		doc, err = parseDOCX(data)
	case FormatCSV:
		doc, err = parseCSV(data)
	default:
		return Document{}, fmt.Errorf("%w: format %q", ErrUnsupported, f)
	}
	if err != nil {
		return Document{}, err
	}
	return finish(f, doc)
}

// finish is the last line of defence every format goes through: it re-cleans every
// string (so a format-specific slip cannot put a NUL or invalid UTF-8 into the database),
// drops blocks that cleaned away to nothing and clamps levels.
func finish(f Format, doc Document) (Document, error) {
	doc.Title = cleanInline(doc.Title)
	if len([]rune(doc.Title)) > 500 {
		doc.Title = string([]rune(doc.Title)[:500])
	}
	out := doc.Blocks[:0]
	for _, b := range doc.Blocks {
		if b.Kind == Code {
			b.Text = cleanCode(b.Text)
		} else {
			b.Text = cleanInline(b.Text)
		}
		if b.Text == "" {
			continue
		}
		switch b.Kind {
		case Heading:
			b.Level = max(1, min(b.Level, 6))
		case ListItem:
			b.Level = max(0, min(b.Level, 8))
		default:
			b.Level = 0
		}
		out = append(out, b)
	}
	doc.Blocks = out
	if len(doc.Blocks) == 0 {
		return Document{}, fmt.Errorf("%w: %s", ErrEmpty, f)
	}
	return doc, nil
}
