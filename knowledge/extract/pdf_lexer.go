package extract

import (
	"bytes"
	"strconv"
)

// pdfLexer tokenizes a page content stream. We tokenize content ourselves rather than
// through the PDF library's PostScript interpreter because content streams hold inline
// images (binary data between ID and EI that the library's interpreter would read as
// tokens), because we want a hard cap on work per page, and because a malformed token
// here should cost one operand, not the page.
type pdfLexer struct {
	b []byte
	i int
}

// operand kinds
const (
	opNumber byte = 'n'
	opString byte = 's'
	opName   byte = '/'
	opArray  byte = 'a'
	opOther  byte = 'o' // dictionaries, booleans, null: present but unused
)

type operand struct {
	kind byte
	num  float64
	str  string // raw string bytes, or the name without its slash
	arr  []operand
}

func isPDFSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == 0
}

func isPDFDelim(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '[', ']', '{', '}', '/', '%':
		return true
	}
	return false
}

func (l *pdfLexer) skipSpace() {
	for l.i < len(l.b) {
		c := l.b[l.i]
		if isPDFSpace(c) {
			l.i++
			continue
		}
		if c == '%' {
			for l.i < len(l.b) && l.b[l.i] != '\n' && l.b[l.i] != '\r' {
				l.i++
			}
			continue
		}
		return
	}
}

// next returns the next operand, or an operator (isOp) in op. ok is false at the end.
func (l *pdfLexer) next() (v operand, op string, isOp, ok bool) {
	l.skipSpace()
	if l.i >= len(l.b) {
		return v, "", false, false
	}
	c := l.b[l.i]
	switch {
	case c == '(':
		return operand{kind: opString, str: l.literalString()}, "", false, true
	case c == '<' && l.i+1 < len(l.b) && l.b[l.i+1] == '<':
		l.i += 2
		l.skipDict()
		return operand{kind: opOther}, "", false, true
	case c == '<':
		return operand{kind: opString, str: l.hexString()}, "", false, true
	case c == '/':
		l.i++
		return operand{kind: opName, str: l.regular()}, "", false, true
	case c == '[':
		l.i++
		return operand{kind: opArray, arr: l.array(0)}, "", false, true
	case c == ']' || c == '>' || c == ')' || c == '{' || c == '}':
		l.i++ // stray delimiter: skip it
		return operand{kind: opOther}, "", false, true
	case c == '+' || c == '-' || c == '.' || (c >= '0' && c <= '9'):
		return operand{kind: opNumber, num: parsePDFNumber(l.regular())}, "", false, true
	}
	w := l.regular()
	if w == "" {
		l.i++
		return operand{kind: opOther}, "", false, true
	}
	switch w {
	case "true", "false", "null":
		return operand{kind: opOther}, "", false, true
	}
	return v, w, true, true
}

// regular reads a run of regular characters.
func (l *pdfLexer) regular() string {
	start := l.i
	for l.i < len(l.b) && !isPDFSpace(l.b[l.i]) && !isPDFDelim(l.b[l.i]) {
		l.i++
	}
	return string(l.b[start:l.i])
}

func parsePDFNumber(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		// Producers write "--5" and "5-" now and then; be forgiving, then give up.
		f, err = strconv.ParseFloat(trimNumber(s), 64)
		if err != nil {
			return 0
		}
	}
	if f != f || f > 1e9 || f < -1e9 {
		return 0
	}
	return f
}

func trimNumber(s string) string {
	for len(s) > 1 && (s[0] == '-' || s[0] == '+') && (s[1] == '-' || s[1] == '+') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == '-' || s[len(s)-1] == '+') {
		s = s[:len(s)-1]
	}
	return s
}

// maxArrayDepth bounds nested arrays in content streams (TJ arrays are flat; nesting is
// only ever garbage). Deeper arrays are skipped without recursion, so that "[[[[..."
// cannot exhaust the stack.
const maxArrayDepth = 8

// array reads up to the closing bracket.
func (l *pdfLexer) array(depth int) []operand {
	var out []operand
	for {
		l.skipSpace()
		if l.i >= len(l.b) {
			return out
		}
		if l.b[l.i] == ']' {
			l.i++
			return out
		}
		if l.b[l.i] == '[' {
			l.i++
			if depth >= maxArrayDepth {
				l.skipArray()
				continue
			}
			out = append(out, operand{kind: opArray, arr: l.array(depth + 1)})
			continue
		}
		v, _, isOp, ok := l.next()
		if !ok {
			return out
		}
		if isOp {
			// An operator inside an array is malformed; arrays in content streams
			// only hold operands, so the array ended without its bracket.
			return out
		}
		if len(out) < 1<<16 {
			out = append(out, v)
		}
	}
}

// skipArray skips to the bracket closing an array whose "[" was just read.
func (l *pdfLexer) skipArray() {
	depth := 1
	for l.i < len(l.b) && depth > 0 {
		switch c := l.b[l.i]; {
		case c == '(':
			l.literalString()
			continue
		case c == '[':
			depth++
		case c == ']':
			depth--
		}
		l.i++
	}
}

// skipDict skips an inline dictionary (marked-content properties) up to its ">>".
func (l *pdfLexer) skipDict() {
	depth := 1
	for l.i < len(l.b) && depth > 0 {
		c := l.b[l.i]
		switch {
		case c == '(':
			l.literalString()
			continue
		case c == '<' && l.i+1 < len(l.b) && l.b[l.i+1] == '<':
			depth++
			l.i += 2
			continue
		case c == '>' && l.i+1 < len(l.b) && l.b[l.i+1] == '>':
			depth--
			l.i += 2
			continue
		case c == '<':
			l.hexString()
			continue
		}
		l.i++
	}
}

func (l *pdfLexer) literalString() string {
	l.i++ // (
	var out []byte
	depth := 1
	for l.i < len(l.b) {
		c := l.b[l.i]
		l.i++
		switch c {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return string(out)
			}
		case '\\':
			if l.i >= len(l.b) {
				return string(out)
			}
			e := l.b[l.i]
			l.i++
			switch e {
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case '\r':
				if l.i < len(l.b) && l.b[l.i] == '\n' {
					l.i++
				}
				continue
			case '\n':
				continue
			default:
				if e >= '0' && e <= '7' {
					n := int(e - '0')
					for k := 0; k < 2 && l.i < len(l.b) && l.b[l.i] >= '0' && l.b[l.i] <= '7'; k++ {
						n = n*8 + int(l.b[l.i]-'0')
						l.i++
					}
					c = byte(n)
				} else {
					c = e
				}
			}
		}
		out = append(out, c)
	}
	return string(out)
}

func (l *pdfLexer) hexString() string {
	l.i++ // <
	end := bytes.IndexByte(l.b[l.i:], '>')
	var hex []byte
	if end < 0 {
		hex = l.b[l.i:]
		l.i = len(l.b)
	} else {
		hex = l.b[l.i : l.i+end]
		l.i += end + 1
	}
	out := make([]byte, 0, len(hex)/2+1)
	var cur byte
	half := false
	for _, c := range hex {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			continue
		}
		if half {
			out = append(out, cur<<4|v)
			half = false
		} else {
			cur, half = v, true
		}
	}
	if half {
		out = append(out, cur<<4)
	}
	return string(out)
}

// skipInlineImage moves past the binary data of an inline image, which starts after
// the ID operator and one white-space byte and ends at an EI operator.
func (l *pdfLexer) skipInlineImage() {
	if l.i < len(l.b) && isPDFSpace(l.b[l.i]) {
		l.i++
	}
	for {
		k := bytes.Index(l.b[l.i:], []byte("EI"))
		if k < 0 {
			l.i = len(l.b)
			return
		}
		at := l.i + k
		l.i = at + 2
		before := at == 0 || isPDFSpace(l.b[at-1])
		after := l.i >= len(l.b) || isPDFSpace(l.b[l.i])
		if before && after {
			return
		}
	}
}
