package extract

import (
	"encoding/csv"
	"errors"
	"io"
	"strconv"
	"strings"
)

// parseCSV reads a CSV (or TSV) file whose first row is the header. Each data row becomes
// one TableRow "header: value; header: value", so that every row can be retrieved on its
// own and still say what its values are (a price list row "Pro; 49; 10" means nothing
// without "Plan", "Price" and "Agents"). The delimiter is sniffed because European Excel
// writes semicolons and "Unicode text" exports use tabs; rows may be ragged.
func parseCSV(data []byte) (Document, error) {
	s := decodeText(data)
	r := csv.NewReader(strings.NewReader(s))
	r.Comma = sniffDelimiter(s)
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = true
	var header []string
	var doc Document
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Document{}, corrupt(FormatCSV, "%v", err)
		}
		if header == nil {
			header = make([]string, len(rec))
			for i, h := range rec {
				header[i] = cleanInline(h)
			}
			continue
		}
		if t := csvRowText(header, rec); t != "" {
			doc.Blocks = append(doc.Blocks, Block{Kind: TableRow, Text: t})
		}
	}
	if len(doc.Blocks) == 0 && header != nil {
		// A header and nothing else is still text someone may search for.
		if t := tableRowText(nil, header); t != "" {
			doc.Blocks = append(doc.Blocks, Block{Kind: TableRow, Text: t})
		}
	}
	return doc, nil
}

// csvRowText pairs values with their column names; cells past the header (ragged rows)
// are named "column N", and empty cells are left out.
func csvRowText(header, rec []string) string {
	var sb strings.Builder
	for i, v := range rec {
		v = cleanInline(v)
		if v == "" {
			continue
		}
		name := ""
		if i < len(header) {
			name = header[i]
		}
		if name == "" {
			name = "column " + strconv.Itoa(i+1)
		}
		if sb.Len() > 0 {
			sb.WriteString("; ")
		}
		sb.WriteString(name)
		sb.WriteString(": ")
		sb.WriteString(v)
	}
	return sb.String()
}

// sniffDelimiter picks the delimiter among comma, semicolon, tab and pipe that splits the
// first lines most consistently: the same non-zero number of fields on most lines, and
// more of them on a tie. Quoted sections are skipped so "Smith, John" does not count.
func sniffDelimiter(s string) rune {
	lines := make([]string, 0, 20)
	for line := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		lines = append(lines, line)
		if len(lines) == 20 {
			break
		}
	}
	best, bestScore := ',', -1
	for _, d := range []rune{',', ';', '\t', '|'} {
		counts := map[int]int{}
		for _, l := range lines {
			counts[countOutsideQuotes(l, d)]++
		}
		mode, modeLines := 0, 0
		for c, n := range counts {
			if c > 0 && (n > modeLines || n == modeLines && c > mode) {
				mode, modeLines = c, n
			}
		}
		if mode == 0 {
			continue
		}
		// Consistency first (lines agreeing on the count), then the number of fields.
		score := modeLines*1000 + min(mode, 999)
		if score > bestScore {
			best, bestScore = d, score
		}
	}
	return best
}

func countOutsideQuotes(line string, d rune) int {
	n, quoted := 0, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
		case r == d && !quoted:
			n++
		}
	}
	return n
}
