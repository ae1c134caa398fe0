package chunk

import (
	"unicode"
	"unicode/utf8"
)

// CountTokens estimates how many tokens a BPE tokenizer of the cl100k family (OpenAI's
// text-embedding-3 and GPT-4 models; most other modern tokenizers land within ~10% of
// it) makes of s, without its vocabulary: the real tokenizer needs a 1.7 MB table and
// runs at a few MB/s, while ingestion must chunk thousands of passages per second per
// core. This runs at about 200 MB/s and allocates nothing.
//
// It mimics cl100k's pre-tokenizer (words with their leading space, digit groups of up
// to three, punctuation runs, one mark glued to the word after it, newline runs) and
// prices each piece by what cl100k does with pieces of that shape: a common English
// word is one token whatever its length up to ten letters, rarer long words,
// capitalised names and camel-case identifiers split into more, runs without spaces
// (hashes, base64) cost a token per four letters, accented Latin letters cost extra,
// CJK characters about one token each, Cyrillic, Greek, Arabic and Hebrew letters about
// 0.45 each.
//
// Accuracy against cl100k itself, measured offline with tiktoken's cl100k_base on
// passages of about 250 tokens: on English prose and documentation (licences, the Go
// specification and package docs, READMEs, help-center text) the total is within ±3%
// and the mean absolute error per passage 2-5%, with 90% of passages within ±8-11%;
// Go code is within ±1% (5% mean error); Debian changelogs, dense with e-mail
// addresses and versions, are 9% under. Russian, Chinese and Japanese are within a few
// percent; German is about 25% under (long compounds), French and Spanish 12-16% under.
// testdata/cl100k.json keeps a sample of those passages with their real counts, and
// TestCountTokensMatchesCL100K holds the estimate to them.
//
// Internally the price is additive: the price of a + " " + b is the sum of theirs, and
// a line break between them adds a known amount (see joinCost). The chunker relies on
// that to size chunks from the sizes of their parts.
func CountTokens(s string) int {
	return (cost(s) + unit/2) / unit
}

// unit is the fixed-point scale of costs: piece prices are fractions of a token (an
// average over words of that shape), summed exactly and rounded once.
const unit = 64

// Word prices by length in letters, for a lowercase word after a space (cl100k piece
// " word"), a lowercase word glued to punctuation ("(word", which cl100k's vocabulary
// covers less well), and a capitalised word after a space or glued. Measured averages on
// the corpus described at CountTokens, rounded to a monotonic curve.
var (
	lowerCost   = [...]int{0, 64, 64, 65, 65, 66, 66, 67, 68, 70, 73, 79, 82, 86}
	lowerNoCost = [...]int{0, 64, 66, 70, 71, 75, 78, 86, 96, 108, 116, 128, 136, 150}
	capCost     = [...]int{0, 64, 66, 66, 70, 74, 77, 80, 85, 90, 96, 106, 116, 126}
	capNoCost   = [...]int{0, 64, 68, 72, 76, 78, 88, 91, 96, 106, 115, 125, 135, 145}
)

const (
	longLetterCost = 16 // per letter beyond 13
	upperPerLetter = 20 // extra per letter of ALL-CAPS words beyond three ("HTTP", "NOTICE")
	accentCost     = 56 // extra per accented Latin letter ("é" often becomes its own token)
	digitGroup     = 64 // cl100k splits digit runs into groups of up to three...
	digitSpace     = 56 // ...and never joins the space before them: " 12" is two tokens
	attachCost     = 28 // one mark glued between letters: ".com" is often one piece
	punctFirst     = 64 // a punctuation run: its first character
	punctNext      = 24 // each character after the second (pairs like ")." or "->" are one token)
	cjkCost        = 68 // Han, kana, Hangul: about one token per character
	otherScript    = 28 // per letter of Cyrillic, Greek, Arabic, Hebrew...
	rareScript     = 64 // per letter of Indic, Thai and other scripts cl100k splits bytewise
	symbolCost     = 64 // per non-ASCII symbol or punctuation mark (“ ” — •)
	emojiCost      = 128
	newlineCost    = 64 // a run of line breaks, free after punctuation (".\n\n" is one token)
	indentCost     = 48 // indentation deeper than one tab or four spaces
	tabCost        = 64
)

// cost returns the price of s in units. It is a single pass over the bytes with an ASCII
// fast path; non-ASCII runes are classified with the unicode tables. The start of s
// counts as following a space, which keeps the price additive over whitespace joins.
func cost(s string) int {
	c := 0
	spaceBefore := true
	for i := 0; i < len(s); {
		b := s[i]
		switch {
		case b == ' ':
			i++
			spaceBefore = true
			continue
		case b == '\n' || b == '\r':
			c += newlineRun(s, &i, &spaceBefore)
			continue
		case b == '\t':
			for i < len(s) && s[i] == '\t' {
				i++
			}
			c += tabCost
			spaceBefore = true
			continue
		case b < utf8.RuneSelf && isLetter(b):
			i, c = word(s, i, c, spaceBefore)
		case b >= '0' && b <= '9':
			n := 0
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
				n++
			}
			c += (n + 2) / 3 * digitGroup
			if spaceBefore {
				c += digitSpace
			}
		case b == '\'' && contraction(s[i+1:]) > 0:
			// cl100k has pieces for 's 't 're 've 'm 'll 'd: "don't" is " don" + "'t".
			i += 1 + contraction(s[i+1:])
			c += unit
		case b < utf8.RuneSelf:
			// ASCII punctuation and control characters.
			n := 0
			for i < len(s) && s[i] < utf8.RuneSelf && !isLetter(s[i]) && !(s[i] >= '0' && s[i] <= '9') && s[i] > ' ' {
				i++
				n++
			}
			if n == 0 { // other control characters
				i++
				continue
			}
			if n == 1 && !spaceBefore && i < len(s) && isLetter(s[i]) {
				// One mark between a word and letters joins the word that follows
				// (".com", "/docs", "-mail"): cl100k has pieces for many of them.
				c += attachCost
				continue
			}
			c += punctFirst + max(0, n-2)*punctNext
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case isCJK(r):
				c += cjkCost
				i += size
			case unicode.IsLetter(r) || unicode.Is(unicode.Mn, r):
				i, c = word(s, i, c, spaceBefore)
			case unicode.IsSpace(r):
				i += size
				spaceBefore = true
				continue
			case r >= 0x1F000 || (r >= 0x2600 && r <= 0x27BF):
				c += emojiCost
				i += size
			default:
				c += symbolCost
				i += size
			}
		}
		spaceBefore = false
	}
	return c
}

// newlineRun prices the line breaks at s[*i] and the indentation after them. A break
// right after ASCII punctuation merges into the punctuation's token (".\n\n", " {\n").
func newlineRun(s string, i *int, spaceBefore *bool) int {
	c := newlineCost
	if *i > 0 && isPunct(s[*i-1]) {
		c = 0
	}
	indent := 0
	for *i < len(s) {
		switch s[*i] {
		case '\n', '\r':
			indent = 0
		case ' ':
			indent++
		case '\t':
			indent += 4
		default:
			goto done
		}
		*i++
	}
done:
	if indent > 4 {
		c += indentCost
	}
	*spaceBefore = true
	return c
}

// isPunct reports ASCII punctuation.
func isPunct(b byte) bool {
	return b > ' ' && b < utf8.RuneSelf && !isLetter(b) && !(b >= '0' && b <= '9')
}

// joinCost is what joining prev and next with a line break adds to their prices: the
// break itself, free after punctuation, plus the price of deep indentation at the start
// of next, minus the tab runs next alone pays for (after a break they are part of the
// break's run). Joining with a space adds nothing. With it, prices stay exactly
// additive, which the chunker relies on.
func joinCost(prev string, newline bool, next string) int {
	if !newline {
		return 0
	}
	c := newlineCost
	if prev != "" && isPunct(prev[len(prev)-1]) {
		c = 0
	}
	indent := 0
	for k := 0; k < len(next) && (next[k] == ' ' || next[k] == '\t'); k++ {
		if next[k] == '\t' {
			indent += 4
			if k == 0 || next[k-1] != '\t' {
				c -= tabCost
			}
		} else {
			indent++
		}
	}
	if indent > 4 {
		c += indentCost
	}
	return c
}

// word prices the letter run starting at s[i] and returns the index after it and the
// new running cost. A run stops at anything that is not a letter (or a combining
// mark), and at CJK characters, which are priced one by one. A camel-case identifier
// ("ResponseWriter") is priced as its humps.
func word(s string, i, c int, spaceBefore bool) (next, total int) {
	upper, lower, accents, other, rare := 0, 0, 0, 0, 0
	segUpper, segLen := false, 0 // the current camel-case hump
	humps := 0
	price := func() {
		if segLen == 0 {
			return
		}
		table := lowerCost[:]
		switch {
		case segUpper && spaceBefore:
			table = capCost[:]
		case segUpper:
			table = capNoCost[:]
		case !spaceBefore:
			table = lowerNoCost[:]
		}
		c += tablePrice(table, segLen)
		humps++
		spaceBefore = true // later humps are whole words in the vocabulary
	}
	for i < len(s) {
		b := s[i]
		if b < utf8.RuneSelf {
			if !isLetter(b) {
				break
			}
			if b <= 'Z' {
				// A capital after a lowercase letter starts a new hump.
				if segLen > 0 && lower > 0 && s[i-1] >= 'a' {
					price()
					segLen = 0
				}
				if segLen == 0 {
					segUpper = true
				}
				upper++
			} else {
				if segLen == 0 {
					segUpper = false
				}
				lower++
			}
			segLen++
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if isCJK(r) || !(unicode.IsLetter(r) || unicode.Is(unicode.Mn, r)) {
			break
		}
		switch {
		case r < 0x250: // Latin-1 supplement and Latin Extended-A/B
			accents++
			if segLen == 0 {
				segUpper = unicode.IsUpper(r)
			}
			segLen++
		case r < 0x530 || (r >= 0x590 && r < 0x700) || (r >= 0x1E00 && r < 0x2000):
			// Greek, Cyrillic, Armenian, Hebrew, Arabic, Latin/Greek extended
			other++
		default:
			rare++
		}
		i += size
	}
	price()
	if upper > 3 && lower == 0 {
		c += (upper - 3) * upperPerLetter
	}
	c += accents*accentCost + other*otherScript + rare*rareScript
	if humps == 0 && other > 0 {
		c += 16 // a word's first piece in another script rarely merges with its space
	}
	return i, c
}

// tablePrice prices a hump of n letters. Past the tables' 13 letters few runs are
// dictionary words: long compounds, identifiers, hashes and base64 cost about a token
// per four letters.
func tablePrice(table []int, n int) int {
	if n < len(table) {
		return table[n]
	}
	last := len(table) - 1
	return table[last] + (n-last)*longLetterCost
}

// contraction returns the length of an English contraction suffix (s, t, re, ve, m, ll,
// d) at the start of s when it is a whole word, or 0.
func contraction(s string) int {
	n := 0
	for n < len(s) && n < 3 && isLetter(s[n]) {
		n++
	}
	if n == 0 || n == 3 || (n < len(s) && isLetter(s[n])) {
		return 0
	}
	switch s[:n] {
	case "s", "t", "re", "ve", "m", "ll", "d", "S", "T", "RE", "VE", "M", "LL", "D":
		return n
	}
	return 0
}

func isLetter(b byte) bool { return (b|0x20) >= 'a' && (b|0x20) <= 'z' }

// isCJK reports Han ideographs, kana, Hangul and CJK punctuation, which cl100k prices
// per character rather than per word (the scripts have no spaces).
func isCJK(r rune) bool {
	return (r >= 0x2E80 && r <= 0x9FFF) || (r >= 0xAC00 && r <= 0xD7AF) || (r >= 0xF900 && r <= 0xFAFF) ||
		(r >= 0xFF00 && r <= 0xFFEF) || (r >= 0x20000 && r <= 0x3FFFF)
}
