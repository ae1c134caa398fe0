package chunk

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// abbreviations end with a period that does not end a sentence. Lowercase, without the
// final period; abbreviations with inner periods ("e.g", "u.s") are caught by the inner
// period and need not be listed.
var abbreviations = map[string]bool{
	"mr": true, "mrs": true, "ms": true, "dr": true, "prof": true, "sr": true, "jr": true, "st": true,
	"mt": true, "vs": true, "eg": true, "ie": true, "cf": true, "al": true, "approx": true, "dept": true,
	"no": true, "nos": true, "nr": true, "vol": true, "pp": true, "fig": true, "figs": true,
	"capt": true, "lt": true, "sgt": true, "hon": true, "jan": true, "feb": true, "apr": true,
	"jun": true, "jul": true, "aug": true, "sep": true, "sept": true, "oct": true, "nov": true,
	"dec": true, "ave": true, "blvd": true, "tel": true, "dipl": true, "bzw": true, "ca": true,
	"ggf": true, "usw": true, "vgl": true, "mme": true, "mlle": true,
}

// Words such as "etc.", "Inc." and "max." are left out on purpose: they end sentences
// often enough ("apples, pears, etc. The next...") that a split before a capital is the
// better bet; before a lowercase word there is no split anyway.

// sentences splits a single-line text into sentences, returned as trimmed substrings of
// s. A sentence ends at ".", "!", "?" or "…" (with any closing quotes and brackets)
// followed by a space and a character that can start a sentence, and at the CJK full
// stops, which need no space. It does not end after a known abbreviation ("Dr.",
// "e.g."), after an initial ("J. Smith"), inside a number ("3.5") or before a lowercase
// word ("... and so on").
func sentences(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '。', '！', '？':
			end := i + size
			end = skipClosers(s, end)
			out = appendTrimmed(out, s[start:end])
			start = end
			i = end
			continue
		case '.', '!', '?', '…':
		default:
			i += size
			continue
		}
		end := i + size
		for end < len(s) && (s[end] == '.' || s[end] == '!' || s[end] == '?') {
			end++
		}
		for strings.HasPrefix(s[end:], "…") {
			end += len("…")
		}
		end = skipClosers(s, end)
		if end < len(s) && s[end] != ' ' {
			i = end
			continue // "3.5", "example.com", "e.g."
		}
		next := end
		for next < len(s) && s[next] == ' ' {
			next++
		}
		if next < len(s) && !canStartSentence(s[next:]) {
			i = end
			continue
		}
		if r == '.' && end == i+1 && isAbbreviation(s[start:i]) {
			i = end
			continue
		}
		out = appendTrimmed(out, s[start:end])
		start = end
		i = end
	}
	return appendTrimmed(out, s[start:])
}

func appendTrimmed(out []string, s string) []string {
	if s = strings.TrimSpace(s); s != "" {
		out = append(out, s)
	}
	return out
}

// skipClosers moves past closing quotes and brackets after a sentence end.
func skipClosers(s string, i int) int {
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '"', '\'', ')', ']', '”', '’', '»', '」', '』', '）':
			i += size
		default:
			return i
		}
	}
	return i
}

// canStartSentence reports whether s starts like a sentence: not with a lowercase letter
// (letters of scripts without case count as capitals).
func canStartSentence(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return !unicode.IsLower(r)
}

// isAbbreviation reports whether the text before a period ends with an abbreviation or
// an initial.
func isAbbreviation(before string) bool {
	w := before
	if k := strings.LastIndexAny(before, " (\"'“‘"); k >= 0 {
		w = before[k+1:]
	}
	if w == "" {
		return false
	}
	if strings.Contains(w, ".") {
		// "e.g", "U.S", "Ph.D": short letter groups; "example.com" is not one.
		for part := range strings.SplitSeq(w, ".") {
			if len(part) > 3 || strings.IndexFunc(part, func(r rune) bool { return !unicode.IsLetter(r) }) >= 0 {
				return false
			}
		}
		return true
	}
	if utf8.RuneCountInString(w) == 1 {
		r, _ := utf8.DecodeRuneInString(w)
		return unicode.IsUpper(r) || unicode.IsLower(r) // "J. Smith", "p. 4"
	}
	return abbreviations[strings.ToLower(w)]
}
