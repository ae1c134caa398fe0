package extract

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// decodeText turns the bytes of a text-like file (text, Markdown, CSV) into a valid UTF-8
// string with "\n" line endings. Users upload whatever their editor saved: UTF-8 with or
// without a BOM, UTF-16 from Windows Notepad and Excel's "Unicode text", and legacy
// Windows-1252 from older Excel CSV exports. Those are told apart by BOM, then by
// whether the bytes are UTF-8 at all.
func decodeText(data []byte) string {
	var s string
	switch {
	case bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}):
		s = string(data[3:])
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		s = decodeUTF16(data[2:], false)
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		s = decodeUTF16(data[2:], true)
	case utf8.Valid(data):
		s = string(data)
	case looksLikeLegacy8Bit(data):
		s, _ = charmap.Windows1252.NewDecoder().String(string(data))
	default:
		s = strings.ToValidUTF8(string(data), "\uFFFD")
	}
	return normalizeNewlines(s)
}

// looksLikeLegacy8Bit reports whether invalid UTF-8 is better read as Windows-1252: true
// when the data holds no valid multi-byte UTF-8 sequence at all. A file with even one
// correct "é" in UTF-8 is UTF-8 with a few damaged bytes, and decoding it as 1252 would
// turn every accented letter into mojibake.
func looksLikeLegacy8Bit(data []byte) bool {
	for i := 0; i < len(data); {
		if data[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(data[i:])
		if r != utf8.RuneError && n > 1 {
			return false
		}
		i += n
	}
	return true
}

func decodeUTF16(b []byte, bigEndian bool) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		if bigEndian {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			u[i] = uint16(b[2*i+1])<<8 | uint16(b[2*i])
		}
	}
	return string(utf16.Decode(u))
}

// normalizeNewlines turns "\r\n" and lone "\r" (old Mac files) into "\n".
func normalizeNewlines(s string) string {
	if strings.IndexByte(s, '\r') < 0 {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

// runeClass tells the cleaners what to do with a rune.
type runeClass int

const (
	keepRune  runeClass = iota
	dropRune            // control and invisible characters
	spaceRune           // any kind of whitespace
	breakRune           // line and paragraph separators
)

func classify(r rune) runeClass {
	switch {
	case r == '\n' || r == '\u2028' || r == '\u2029':
		return breakRune
	case r == ' ' || r == '\t':
		return spaceRune
	case r < 0x20 || r == 0x7F || (r >= 0x80 && r <= 0x9F):
		// NUL (PostgreSQL cannot store it), other C0 controls, DEL and C1 controls, which
		// only ever appear in text as debris of a wrong decoding.
		return dropRune
	case r == '\u00AD' || r == '\u200B' || r == '\u2060' || r == '\uFEFF' || r == '\uFFFE' || r == '\uFFFF':
		// Soft hyphens and zero-width spaces split words invisibly; the search index would
		// see "recom" and "mendation".
		return dropRune
	case r < utf8.RuneSelf:
		return keepRune
	case unicode.IsSpace(r) || unicode.Is(unicode.Zs, r):
		return spaceRune
	}
	return keepRune
}

// ligatures are the presentation forms PDF fonts like to map text to; search wants the
// letters.
var ligatures = map[rune]string{
	'\uFB00': "ff", '\uFB01': "fi", '\uFB02': "fl", '\uFB03': "ffi", '\uFB04': "ffl", '\uFB05': "st", '\uFB06': "st",
}

// cleanInline makes s a single clean line: valid UTF-8, no control characters, every run
// of whitespace (newlines included) one space, trimmed.
func cleanInline(s string) string {
	// Fast path: already clean ASCII-ish text is common and worth not copying.
	if isCleanLine(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	var sb strings.Builder
	sb.Grow(len(s))
	pendingSpace := false
	for _, r := range s {
		switch classify(r) {
		case dropRune:
			continue
		case spaceRune, breakRune:
			pendingSpace = sb.Len() > 0
			continue
		}
		if pendingSpace {
			sb.WriteByte(' ')
			pendingSpace = false
		}
		if l, ok := ligatures[r]; ok {
			sb.WriteString(l)
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// isCleanLine reports whether s is printable ASCII with single inner spaces and no
// leading or trailing space, which cleanInline would return unchanged.
func isCleanLine(s string) bool {
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7F || (c == ' ' && s[i-1] == ' ') {
			return false
		}
	}
	return true
}

// cleanCode cleans preformatted text: it keeps newlines and indentation (tabs included)
// but drops control characters, trailing spaces and leading and trailing blank lines.
func cleanCode(s string) string {
	s = strings.ToValidUTF8(normalizeNewlines(s), "\uFFFD")
	var sb strings.Builder
	sb.Grow(len(s))
	for _, r := range s {
		switch classify(r) {
		case dropRune:
			continue
		case breakRune:
			sb.WriteByte('\n')
			continue
		case spaceRune:
			if r != '\t' {
				r = ' '
			}
		}
		sb.WriteRune(r)
	}
	lines := strings.Split(sb.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	for len(lines) > 0 && lines[0] == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}

// hasOrdinal reports whether s starts with a list number followed by a space: "1.",
// "2)", "1.2." (Word's multilevel numbering), "a.", "b)" or "iv.". Numbers have at most
// three digits, so a wrapped line starting "2019. The year..." is not a list item.
func hasOrdinal(s string) bool {
	end := strings.IndexByte(s, ' ')
	if end < 2 || end > 12 {
		return false
	}
	word := s[:end]
	last := word[len(word)-1]
	if last != '.' && last != ')' {
		return false
	}
	word = word[:len(word)-1]
	if word == "" {
		return false
	}
	// Dotted decimal numbers: every group 1-3 digits.
	groups := strings.Split(word, ".")
	allDigits := true
	for _, g := range groups {
		if g == "" || len(g) > 3 || strings.Trim(g, "0123456789") != "" {
			allDigits = false
			break
		}
	}
	if allDigits {
		return true
	}
	if len(groups) > 1 {
		return false
	}
	if len(word) == 1 {
		return isASCIILetter(word[0])
	}
	return len(word) <= 6 && strings.Trim(strings.ToLower(word), "ivxlc") == ""
}

func isDigit(c byte) bool       { return c >= '0' && c <= '9' }
func isASCIILetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// bulletPrefix returns the length in bytes of a bullet marker ("•", "-", "*", "◦", "▪",
// and the Symbol-font private-use bullets Word puts in PDFs) plus the space after it at
// the start of s, or 0.
func bulletPrefix(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	switch r {
	case '•', '◦', '▪', '▫', '‣', '●', '○', '■', '□', '➢', '►', '✓', '✔', '–', '-', '*', '+', '·', '\uF0B7', '\uF0A7', '\uF076', '\uF0D8', '\uF0FC':
	default:
		return 0
	}
	if n >= len(s) {
		return 0
	}
	if s[n] != ' ' && s[n] != '\t' {
		// A marker without a space after it is only a bullet in the private-use and
		// dot glyphs; "-5 °C" and "*important*" are not list items.
		if r != '•' && r != '\uF0B7' && r != '●' && r != '▪' {
			return 0
		}
		return n
	}
	return n + 1
}
