package extract

import (
	"errors"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets run their seed corpus as ordinary tests; run them for real with
// go test -fuzz=FuzzExtractPDF -fuzztime=20s ./knowledge/extract (not in CI).

// checkFuzzResult asserts the contract every input must honour: an error wraps one of
// the three sentinels, and a document is clean UTF-8 without NULs.
func checkFuzzResult(t *testing.T, doc Document, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if !utf8.ValidString(err.Error()) {
			t.Fatalf("error message not UTF-8: %q", err.Error())
		}
		return
	}
	if len(doc.Blocks) == 0 {
		t.Fatal("no blocks and no error")
	}
	for _, s := range append([]string{doc.Title}, blockTexts(doc)...) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			t.Fatalf("unclean text %q", s)
		}
	}
}

func blockTexts(doc Document) []string {
	out := make([]string, len(doc.Blocks))
	for i, b := range doc.Blocks {
		out[i] = b.Text
	}
	return out
}

func FuzzExtractPDF(f *testing.F) {
	for _, name := range []string{"guide.pdf", "handbook.pdf", "chrome.pdf", "owner-only.pdf", "encrypted.pdf"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(buildPDF(pdfSpec{pages: twoPages}))
	f.Add(buildPDF(pdfSpec{pages: twoPages, compress: true}))
	f.Add(buildPDF(pdfSpec{pages: []string{"BT /F1 11 Tf [(a) -300 (b)] TJ (c) ' 1 2 (d) \" ET BI /W 1 ID x EI /Fm1 Do"}}))
	f.Add([]byte("%PDF-1.7\n1 0 obj << >> endobj\nstartxref\n0\n%%EOF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Extract(FormatPDF, data)
		checkFuzzResult(t, doc, err)
	})
}

func FuzzExtractDOCX(f *testing.F) {
	b, err := os.ReadFile("testdata/handbook.docx")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(buildDOCX(f, map[string]string{
		"word/document.xml":  testDocument(),
		"word/styles.xml":    testStyles,
		"word/numbering.xml": testNumbering,
	}))
	f.Add(buildDOCX(f, map[string]string{"word/document.xml": `<w:document ` + docxNS + `><w:body>` + para("Heading1", "x") + `</w:body></w:document>`}))
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Extract(FormatDOCX, data)
		checkFuzzResult(t, doc, err)
	})
}

// FuzzExtractMarkup covers the text formats and Detect with one corpus.
func FuzzExtractMarkup(f *testing.F) {
	f.Add([]byte(noisyPage))
	f.Add([]byte(sampleMarkdown))
	f.Add([]byte("\ufeffa;b\r\n\"x;y\";2\r\n3"))
	f.Add([]byte("Caf\xe9\r\n\r\n- item\x00\n1. step"))
	f.Add([]byte("\xff\xfeh\x00i\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []Format{FormatText, FormatMarkdown, FormatHTML, FormatCSV} {
			doc, err := Extract(format, data)
			checkFuzzResult(t, doc, err)
		}
		if f, err := Detect("", "", data); err == nil && f == "" {
			t.Fatal("Detect returned no format and no error")
		}
	})
}
