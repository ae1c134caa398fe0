package extract

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// parseText reads plain text. Paragraphs are separated by blank lines; the lines inside
// one are re-joined because plain text is usually hard-wrapped at 72-80 columns, and a
// newline in the middle of a sentence would otherwise reach the chunker as a boundary.
// Lines that start with a bullet or a number become list items.
func parseText(data []byte) (Document, error) {
	s := decodeText(data)
	var doc Document
	var para []string
	flush := func() {
		if len(para) > 0 {
			doc.Blocks = append(doc.Blocks, linesToBlocks(para)...)
			para = para[:0]
		}
	}
	for line := range strings.SplitSeq(s, "\n") {
		if strings.TrimFunc(line, isBlank) == "" {
			flush()
			continue
		}
		para = append(para, line)
	}
	flush()
	return doc, nil
}

func isBlank(r rune) bool {
	c := classify(r)
	return c == spaceRune || c == dropRune || c == breakRune
}

// linesToBlocks turns the lines of one paragraph into a Paragraph, or into list items
// when lines start with markers. A line without a marker continues the item above it
// (hard-wrapped items), and leading lines before the first marker form a paragraph
// ("You will need:" followed by the list).
func linesToBlocks(lines []string) []Block {
	var out []Block
	var cur []string
	kind, level := Paragraph, 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, Block{Kind: kind, Level: level, Text: joinLines(cur)})
			cur = cur[:0]
		}
	}
	for _, raw := range lines {
		indent := leadingIndent(raw)
		line := strings.TrimSpace(raw)
		if n := bulletPrefix(line); n > 0 {
			flush()
			kind, level = ListItem, indent/2
			cur = append(cur, line[n:])
			continue
		}
		if hasOrdinal(line) && (kind == ListItem || len(cur) == 0 || startsWithDigit(line)) {
			flush()
			kind, level = ListItem, indent/2
			cur = append(cur, line)
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return out
}

func startsWithDigit(s string) bool { return s != "" && isDigit(s[0]) }

// leadingIndent counts leading spaces, a tab counting as four.
func leadingIndent(s string) int {
	n := 0
	for _, r := range s {
		switch r {
		case ' ':
			n++
		case '\t':
			n += 4
		default:
			return n
		}
	}
	return n
}

// joinLines joins hard-wrapped lines into one line. A word hyphenated across a line
// break ("recom-" / "mendation") is re-joined when the next line starts in lower case;
// a dash after a space or digit ("2019-" / "2020") is kept.
func joinLines(lines []string) string {
	var b []byte
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if len(b) > 0 {
			if dehyphenate(b, l) {
				b = b[:len(b)-1]
			} else {
				b = append(b, ' ')
			}
		}
		b = append(b, l...)
	}
	return string(b)
}

// dehyphenate reports whether prev ends with a word broken by a hyphen that next
// continues.
func dehyphenate(prev []byte, next string) bool {
	if len(prev) < 3 || prev[len(prev)-1] != '-' {
		return false
	}
	before, _ := utf8.DecodeLastRune(prev[:len(prev)-1])
	after, _ := utf8.DecodeRuneInString(next)
	return unicode.IsLetter(before) && unicode.IsLower(after)
}
