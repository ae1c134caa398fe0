// Package sentence cuts a stream of LLM text into pieces a TTS voice can speak one at a
// time: whole sentences, and, for the first piece of an answer, a leading clause, so that
// speech can start before the model has written a full sentence.
//
// The splitter sees text in arbitrary fragments (tokens), so it never decides on a
// boundary until it has seen what follows it: a period is only a sentence end once the
// next word has begun and shows it is not "Dr. Smith", "e.g. apples" or "3.5".
package sentence

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Defaults of Splitter; see the fields for why.
const (
	// DefaultMinClauseWords: a first clause shorter than four words ("Sure,", "Well, I")
	// is not worth a TTS request of its own: it saves little time and a voice cut there
	// sounds choppy. Four words take a TTS voice about a second to say, which covers the
	// time-to-first-byte of the next request.
	DefaultMinClauseWords = 4
	// DefaultMaxChars: a run-on sentence of more than 250 characters (about 15 s of speech)
	// is cut at its last clause boundary, or failing that its last space, so TTS is
	// never starved waiting for a period that may never come.
	DefaultMaxChars = 250
)

// Splitter accumulates streamed text and returns speakable pieces. The zero value is
// ready to use with the defaults and no first-clause cut. It is not safe for concurrent
// use.
type Splitter struct {
	// FirstClause cuts the first piece at a clause boundary (a comma, semicolon, colon
	// or dash followed by a space) once it holds MinClauseWords words.
	FirstClause bool
	// MinClauseWords; 0 means DefaultMinClauseWords.
	MinClauseWords int
	// MaxChars; 0 means DefaultMaxChars.
	MaxChars int

	buf     string
	scan    int // bytes of buf already examined for boundaries
	emitted int // pieces returned so far
}

// Push adds text and returns the pieces it completed, in order, trimmed. It returns nil
// when nothing is complete yet.
func (s *Splitter) Push(text string) []string {
	if text == "" {
		return nil
	}
	s.buf += text
	var out []string
	for {
		piece, ok := s.next(false)
		if !ok {
			return out
		}
		if piece != "" {
			out = append(out, piece)
		}
	}
}

// Flush returns whatever text remains as a last piece ("" if none) and resets the
// splitter for a new answer.
func (s *Splitter) Flush() []string {
	var out []string
	for {
		piece, ok := s.next(true)
		if !ok {
			break
		}
		if piece != "" {
			out = append(out, piece)
		}
	}
	if rest := strings.TrimSpace(s.buf); rest != "" {
		out = append(out, rest)
	}
	s.buf, s.scan, s.emitted = "", 0, 0
	return out
}

// next finds the first boundary in buf and cuts there. final means no more text comes,
// so a boundary at the very end counts.
func (s *Splitter) next(final bool) (string, bool) {
	cut := s.findBoundary(final)
	if cut < 0 {
		cut = s.forcedCut()
		if cut < 0 {
			return "", false
		}
	}
	piece := strings.TrimSpace(s.buf[:cut])
	s.buf = s.buf[cut:]
	s.scan = 0
	if piece != "" {
		s.emitted++
	}
	return piece, true
}

func (s *Splitter) minClauseWords() int {
	if s.MinClauseWords > 0 {
		return s.MinClauseWords
	}
	return DefaultMinClauseWords
}

func (s *Splitter) maxChars() int {
	if s.MaxChars > 0 {
		return s.MaxChars
	}
	return DefaultMaxChars
}

// findBoundary returns the byte offset just after a boundary in buf, or -1. Offsets
// before s.scan were examined before and found undecidable only if they needed more
// text; to keep this simple and correct the scan restarts at the earliest undecided
// position.
func (s *Splitter) findBoundary(final bool) int {
	b := s.buf
	firstClause := s.FirstClause && s.emitted == 0
	undecided := -1
	for i := s.scan; i < len(b); {
		r, size := utf8.DecodeRuneInString(b[i:])
		end := i + size
		switch {
		case r == '\n':
			if strings.TrimSpace(b[:i]) != "" {
				return end
			}
		case r == '。' || r == '！' || r == '？':
			// CJK full stops need no following space.
			return end
		case r == '.' || r == '!' || r == '?' || r == '…':
			d := s.sentenceEnd(i, r, final)
			switch d {
			case yes:
				return skipClosers(b, end)
			case needMore:
				if undecided < 0 {
					undecided = i
				}
			}
		case firstClause && (r == ',' || r == ';' || r == ':' || r == '—' || r == '–'):
			d := clauseEnd(b, end, final)
			if d == needMore && undecided < 0 {
				undecided = i
			}
			if d == yes && wordCount(b[:i]) >= s.minClauseWords() {
				return end
			}
		}
		i = end
	}
	if undecided >= 0 {
		s.scan = undecided
	} else {
		s.scan = len(b)
	}
	return -1
}

// forcedCut cuts a run-on piece longer than MaxChars at its last clause boundary or
// space, or returns -1.
func (s *Splitter) forcedCut() int {
	max := s.maxChars()
	if len(s.buf) <= max {
		return -1
	}
	head := s.buf[:max]
	if i := strings.LastIndexAny(head, ",;:"); i > max/3 {
		s.scan = 0
		return i + 1
	}
	if i := strings.LastIndexAny(head, " \t"); i > 0 {
		s.scan = 0
		return i + 1
	}
	s.scan = 0
	return max
}

type decision int

const (
	no decision = iota
	yes
	needMore
)

// sentenceEnd decides whether the terminator r at byte i of buf ends a sentence.
func (s *Splitter) sentenceEnd(i int, r rune, final bool) decision {
	b := s.buf
	end := i + utf8.RuneLen(r)
	// A run of terminators ("?!", "...") is decided at its last one.
	if end < len(b) {
		if n, _ := utf8.DecodeRuneInString(b[end:]); n == '.' || n == '!' || n == '?' || n == '…' {
			return no
		}
	}
	j := skipClosers(b, end)
	if j == len(b) {
		if final {
			return yes
		}
		return needMore
	}
	n, _ := utf8.DecodeRuneInString(b[j:])
	if !unicode.IsSpace(n) {
		// "3.5", "example.com", "e.g.," and the like.
		return no
	}
	// What does the next word start with?
	k := j
	for k < len(b) {
		c, size := utf8.DecodeRuneInString(b[k:])
		if !unicode.IsSpace(c) {
			break
		}
		if c == '\n' {
			// A line break after a terminator ends the sentence whatever follows.
			return yes
		}
		k += size
	}
	if k == len(b) {
		if final {
			return yes
		}
		return needMore
	}
	next, _ := utf8.DecodeRuneInString(b[k:])
	if r == '!' || r == '?' {
		return yes
	}
	if unicode.IsLower(next) {
		// "e.g. apples", "approx. five", "etc. and so on": no sentence starts in lower case.
		return no
	}
	if r == '.' {
		word := lastWord(b[:i])
		if isAbbreviation(word) {
			return no
		}
		if isDigits(word) && atLineStart(b[:i-len(word)]) {
			// A numbered list item: "1. Book the flight".
			return no
		}
		if unicode.IsDigit(next) && isShortAlpha(word) {
			// "No. 5", "Vol. 2", "Jan. 3".
			return no
		}
	}
	return yes
}

// clauseEnd decides whether a clause mark ending at byte end is followed by a space.
func clauseEnd(b string, end int, final bool) decision {
	if end == len(b) {
		if final {
			return no // the piece ends here anyway
		}
		return needMore
	}
	n, _ := utf8.DecodeRuneInString(b[end:])
	if unicode.IsSpace(n) {
		return yes
	}
	return no
}

// skipClosers moves past closing quotes and brackets after a terminator.
func skipClosers(b string, i int) int {
	for i < len(b) {
		r, size := utf8.DecodeRuneInString(b[i:])
		switch r {
		case '"', '\'', ')', ']', '}', '»', '”', '’':
			i += size
		default:
			return i
		}
	}
	return i
}

// lastWord returns the token before the end of b (after the last space), without
// opening quotes or brackets.
func lastWord(b string) string {
	i := strings.LastIndexFunc(b, unicode.IsSpace)
	w := b[i+1:]
	return strings.TrimLeft(w, "\"'([{«“‘")
}

// abbreviations end in a period without ending a sentence. Only titles and Latin forms
// that are virtually never the last word of a sentence are listed: "etc." and "p.m."
// often are, and a lower-case next word already keeps those together.
var abbreviations = map[string]bool{
	"mr": true, "mrs": true, "ms": true, "mx": true, "dr": true, "prof": true, "sr": true,
	"jr": true, "st": true, "mt": true, "ft": true, "rev": true, "hon": true, "gen": true,
	"col": true, "capt": true, "lt": true, "sgt": true, "gov": true, "sen": true, "rep": true,
	"vs": true, "e.g": true, "i.e": true, "cf": true, "approx": true, "dept": true, "fig": true,
}

func isAbbreviation(word string) bool {
	lw := strings.ToLower(word)
	if abbreviations[lw] {
		return true
	}
	letters := 0
	for _, r := range word {
		if unicode.IsLetter(r) {
			letters++
		}
	}
	if letters == 1 && utf8.RuneCountInString(word) == 1 && unicode.IsUpper([]rune(word)[0]) {
		return true // an initial: "J. Smith"
	}
	// Dotted acronyms: "U.S", "a.m", "Ph.D".
	if strings.Contains(word, ".") {
		for _, part := range strings.Split(word, ".") {
			if utf8.RuneCountInString(part) > 2 {
				return false
			}
		}
		return true
	}
	return false
}

func isShortAlpha(word string) bool {
	n := 0
	for _, r := range word {
		if !unicode.IsLetter(r) {
			return false
		}
		n++
	}
	return n > 0 && n <= 4
}

func isDigits(word string) bool {
	if word == "" {
		return false
	}
	for _, r := range word {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// atLineStart reports whether only spaces separate the end of b from a line start.
func atLineStart(b string) bool {
	t := strings.TrimRight(b, " \t")
	return t == "" || strings.HasSuffix(t, "\n")
}

func wordCount(b string) int { return len(strings.Fields(b)) }

// Speakable removes the markup a chat model likes to write and a voice would read out
// or stumble on: Markdown emphasis and code marks, heading hashes and list bullets. It
// keeps the words.
func Speakable(s string) string {
	if !strings.ContainsAny(s, "*_`#•-") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, line := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		trimmed := strings.TrimLeft(line, " \t")
		if strings.HasPrefix(trimmed, "#") {
			trimmed = strings.TrimLeft(trimmed, "# ")
			line = trimmed
		}
		for _, bullet := range []string{"- ", "* ", "• "} {
			if strings.HasPrefix(trimmed, bullet) {
				line = trimmed[len(bullet):]
				break
			}
		}
		for _, r := range line {
			if r == '*' || r == '`' {
				continue
			}
			b.WriteRune(r)
		}
	}
	return strings.ReplaceAll(b.String(), "__", "")
}
