package extract

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// pdfSpec describes a PDF to write by hand.
type pdfSpec struct {
	pages    []string // content streams
	compress bool     // FlateDecode the content streams
	header   string   // default "%PDF-1.4"
	title    string   // Info /Title
	kids     string   // override the Kids array (for broken page trees)
	form     string   // content of a form XObject /Fm1 every page can draw
}

// buildPDF writes a small but complete PDF: header, catalog, page tree, two standard
// fonts (Helvetica as F1, Helvetica-Bold as F2), one content stream per page, an Info
// dictionary, a cross-reference table with correct offsets and a trailer.
func buildPDF(spec pdfSpec) []byte {
	var b bytes.Buffer
	var offsets []int
	obj := func(body string) {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offsets), body)
	}
	header := spec.header
	if header == "" {
		header = "%PDF-1.4"
	}
	b.WriteString(header + "\n%\xe2\xe3\xcf\xd3\n")
	n := len(spec.pages)
	var kids []string
	for i := range n {
		kids = append(kids, fmt.Sprintf("%d 0 R", 6+2*i))
	}
	kidsArr := "[" + strings.Join(kids, " ") + "]"
	if spec.kids != "" {
		kidsArr = spec.kids
	}
	obj("<< /Type /Catalog /Pages 2 0 R >>")                                                      // 1
	obj(fmt.Sprintf("<< /Type /Pages /Kids %s /Count %d >>", kidsArr, n))                         // 2
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")      // 3
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>") // 4
	obj(fmt.Sprintf("<< /Title (%s) /Producer (extract tests) >>", spec.title))                   // 5
	formObj := 6 + 2*n
	for i, content := range spec.pages {
		obj(fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "+
			"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> /XObject << /Fm1 %d 0 R >> >> /Contents %d 0 R >>", formObj, 7+2*i))
		data := []byte(content)
		filter := ""
		if spec.compress {
			var z bytes.Buffer
			w := zlib.NewWriter(&z)
			w.Write(data)
			w.Close()
			data, filter = z.Bytes(), " /Filter /FlateDecode"
		}
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n<< /Length %d%s >>\nstream\n", len(offsets), len(data), filter)
		b.Write(data)
		b.WriteString("\nendstream\nendobj\n")
	}
	// The form has its own resources, where /F1 is the bold font.
	offsets = append(offsets, b.Len())
	fmt.Fprintf(&b, "%d 0 obj\n<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Matrix [1 0 0 1 0 -200] "+
		"/Resources << /Font << /F1 4 0 R >> >> /Length %d >>\nstream\n%s\nendstream\nendobj\n", len(offsets), len(spec.form), spec.form)
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offsets)+1)
	for _, o := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offsets)+1, xref)
	return b.Bytes()
}

// Two pages as a word processor would draw them: a large bold heading, body lines
// positioned with Td and T*, a TJ array with kerning, a line drawn word by word (spaces
// only visible as gaps), a bullet list and a page number at the bottom.
var twoPages = []string{
	`BT /F2 20 Tf 72 720 Td (Getting started) Tj ET
BT /F1 11 Tf 14 TL 72 690 Td (Parley answers your phone calls with an AI voice agent. Create an) Tj
T* (agent, give it a knowledge base and connect a phone number.) Tj ET
BT /F1 11 Tf 72 650 Td [(Agents speak more than 20 lan) 20 (guages.)] TJ ET
BT /F1 11 Tf 72 636 Td (Each) Tj 30 0 Td (agent) Tj 35 0 Td (has) Tj 25 0 Td (its) Tj 20 0 Td (own) Tj 28 0 Td (voice.) Tj ET
BT /F1 11 Tf 300 40 Td (1) Tj ET`,
	`BT /F2 20 Tf 72 720 Td (Billing & refunds) Tj ET
BT /F1 11 Tf 14 TL 72 690 Td (Refunds are issued within 14 days, e.g. when a card was charged twice.) Tj ET
BT /F1 11 Tf 72 660 Td (\267 Open the dashboard) Tj ET
BT /F1 11 Tf 72 646 Td (\267 Select the invoice) Tj ET
BT /F1 11 Tf 300 40 Td (2) Tj ET`,
}

func TestPDFHandWritten(t *testing.T) {
	t.Parallel()
	want := []Block{
		{Kind: Heading, Level: 1, Text: "Getting started"},
		{Kind: Paragraph, Text: "Parley answers your phone calls with an AI voice agent. Create an agent, give it a knowledge base and connect a phone number."},
		// Short lines that end sentences are separate paragraphs, as a reader sees them.
		{Kind: Paragraph, Text: "Agents speak more than 20 languages."},
		{Kind: Paragraph, Text: "Each agent has its own voice."},
		{Kind: Heading, Level: 1, Text: "Billing & refunds"},
		{Kind: Paragraph, Text: "Refunds are issued within 14 days, e.g. when a card was charged twice."},
		{Kind: ListItem, Text: "Open the dashboard"},
		{Kind: ListItem, Text: "Select the invoice"},
	}
	for _, tc := range []struct {
		name string
		spec pdfSpec
	}{
		{"plain", pdfSpec{pages: twoPages, title: "Parley guide"}},
		{"flate", pdfSpec{pages: twoPages, compress: true, title: "Parley guide"}},
		{"pdf 2.0 header", pdfSpec{pages: twoPages, header: "%PDF-2.0", title: "Parley guide"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc, err := Extract(FormatPDF, buildPDF(tc.spec))
			if err != nil {
				t.Fatal(err)
			}
			if doc.Title != "Parley guide" {
				t.Errorf("title %q", doc.Title)
			}
			assertBlocks(t, doc.Blocks, want)
		})
	}
}

func TestPDFTrailingGarbage(t *testing.T) {
	t.Parallel()
	data := append(buildPDF(pdfSpec{pages: twoPages}), []byte("\r\n--boundary--\r\n")...)
	doc, err := Extract(FormatPDF, append([]byte("junk\n"), data...))
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Blocks) != 8 {
		t.Errorf("got %d blocks", len(doc.Blocks))
	}
	// A tool title is not a title: the first heading is.
	if doc.Title != "Getting started" {
		t.Errorf("title %q", doc.Title)
	}
}

func TestPDFFixtures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file  string
		title string
		want  []Block // must appear in this order (other blocks may sit between)
	}{
		{"guide.pdf", "Getting started with Parley", []Block{
			{Kind: Heading, Level: 1, Text: "Getting started with Parley"},
			{Kind: Paragraph, Text: "Parley answers your phone calls with an AI voice agent. Create an agent, give it a knowledge base and connect a phone number. The whole setup takes about ten minutes."},
			{Kind: Paragraph, Text: "Agents speak more than 20 languages. Each agent has its own voice, prompt and tools."},
			{Kind: Heading, Level: 1, Text: "Connecting a phone number"},
			{Kind: Paragraph, Text: "Buy a number in the dashboard or bring your own SIP trunk. Calls to the number are answered by the agent within a second."},
		}},
		{"chrome.pdf", "Parley FAQ", []Block{
			{Kind: Heading, Level: 1, Text: "Frequently asked questions"},
			{Kind: Heading, Level: 2, Text: "How fast does the agent answer?"},
			{Kind: Paragraph, Text: "Within about a second. Parley streams speech recognition, the language model and speech synthesis, so the agent starts speaking while the rest of the answer is still being generated. Latency depends on the model you choose and the region of your speech provider."},
			{Kind: Heading, Level: 2, Text: "Which languages are supported?"},
			{Kind: Paragraph, Text: "Automatic language detection is available on Pro plans."},
		}},
		{"owner-only.pdf", "Getting started with Parley", []Block{
			{Kind: Heading, Level: 1, Text: "Getting started with Parley"},
			{Kind: Heading, Level: 1, Text: "Connecting a phone number"},
		}},
		{"handbook.pdf", "Acme Support Handbook", []Block{
			{Kind: Heading, Level: 1, Text: "Acme Support Handbook"},
			{Kind: Heading, Level: 2, Text: "Billing"},
			{Kind: Heading, Level: 3, Text: "Refunds"},
			{Kind: Paragraph, Text: "Refunds are issued within 14 days of a request, e.g. when a customer was charged twice. Dr. Smith’s team reviews every refund above $500. The average refund takes 3.5 business days to reach the card."},
			{Kind: ListItem, Text: "1. Open the dashboard and go to Billing."},
			{Kind: ListItem, Text: "3. Click Request refund and describe the reason."},
			{Kind: ListItem, Text: "Credit cards (Visa, Mastercard, American Express)"},
			{Kind: TableRow, Text: "Plan | Price per month | Agents"},
			{Kind: TableRow, Text: "Pro | $49 | 10"},
			{Kind: Heading, Level: 3, Text: "Calls drop after 30 seconds"},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			doc, err := Extract(FormatPDF, readFixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if doc.Title != tc.title {
				t.Errorf("title %q, want %q", doc.Title, tc.title)
			}
			assertContainsInOrder(t, doc.Blocks, tc.want)
			for _, w := range []string{"Rückerstattung", "Возврат"} {
				if tc.file == "chrome.pdf" && !strings.Contains(doc.Text(), w) {
					t.Errorf("%q not decoded", w)
				}
			}
			if strings.Contains(doc.Text(), "\n1\n") || strings.HasSuffix(doc.Text(), "\n2") {
				t.Errorf("page numbers kept:\n%s", doc.Text())
			}
		})
	}
}

func TestPDFCorrupt(t *testing.T) {
	t.Parallel()
	good := buildPDF(pdfSpec{pages: twoPages, compress: true})
	fixture := readFixture(t, "handbook.pdf")
	// Same length, so the cross-reference offsets stay right; the zlib data is broken.
	badStream := buildPDF(pdfSpec{pages: []string{"BT /F1 11 Tf 72 700 Td (hello) Tj ET"}, compress: true})
	at := bytes.Index(badStream, []byte("stream\n")) + len("stream\n")
	copy(badStream[at:], "\x78\x9c\xff\xff\xff\xff\xff\xff")
	for _, tc := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"truncated", good[:len(good)*6/10], ErrCorrupt, "EOF"},
		{"truncated real file", fixture[:len(fixture)/2], ErrCorrupt, ""},
		{"header only", []byte("%PDF-1.7\n"), ErrCorrupt, ""},
		{"garbage", append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte{0x8f, 0x13, 'x', '(', '<'}, 400)...), ErrCorrupt, ""},
		{"garbage with eof", append(append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte("obj << [ ( \\"), 100)...), []byte("\nstartxref\n9\n%%EOF")...), ErrCorrupt, ""},
		{"no header", []byte("this is not a pdf at all\n%%EOF"), ErrCorrupt, "header"},
		{"wrong xref offset", bytes.Replace(good, []byte("startxref\n"), []byte("startxref\n1"), 1), ErrCorrupt, ""},
		{"cyclic page tree", buildPDF(pdfSpec{pages: twoPages, kids: "[2 0 R 2 0 R]"}), ErrCorrupt, "no pages"},
		{"undecodable stream", badStream, ErrCorrupt, "content stream"},
		{"deeply nested arrays", buildPDF(pdfSpec{pages: []string{strings.Repeat("[", 1<<20) + " TJ"}}), ErrEmpty, ""},
		{"no text", buildPDF(pdfSpec{pages: []string{"0 0 m 100 100 l S", "q 1 0 0 1 0 0 cm Q"}}), ErrEmpty, ""},
		{"encrypted", readFixture(t, "encrypted.pdf"), ErrCorrupt, "encrypted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc, err := Extract(FormatPDF, tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v (doc %+v)", err, tc.want, doc)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want it to mention %q", err, tc.msg)
			}
		})
	}
}

// TestPDFContentOperators covers the interpreter on operators the fixtures do not use:
// forms, inline images, artifacts, q/Q with cm, the ' and " operators, hex strings,
// scrambled drawing order and code set in a fixed-pitch font.
func TestPDFContentOperators(t *testing.T) {
	t.Parallel()
	page := `q 1 0 0 1 0 0 cm
BT /F2 18 Tf 72 740 Td <48656c6c6f20776f726c64> Tj ET
BI /W 4 /H 4 /BPC 8 /CS /G ID ` + "\x00\xffEI\x10(junk) Tj\xfe" + ` EI
/Artifact <</Type /Pagination>> BDC BT /F1 9 Tf 72 760 Td (Confidential draft) Tj ET EMC
BT /F1 11 Tf 12 TL 72 700 Td (First line of the body,) Tj (and the second line.) ' ET
Q
BT /F1 11 Tf 72 640 Td (Last) Tj ET
q /Fm1 Do Q /Missing Do`
	// The form is drawn 200 points lower by its matrix, in its own font: its /F1 is
	// bold, which makes its first, short line a heading below the 18-point one.
	form := `BT /F1 11 Tf 72 700 Td [(From the) -250 (form)] TJ 0 -30 Td 1.0 0.5 (\(spaced\) \101\102C\
continued) " ET`
	doc, err := Extract(FormatPDF, buildPDF(pdfSpec{pages: []string{page}, form: form}))
	if err != nil {
		t.Fatal(err)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Hello world"},
		{Kind: Paragraph, Text: "First line of the body, and the second line."},
		{Kind: Paragraph, Text: "Last"},
		{Kind: Heading, Level: 2, Text: "From the form"},
		{Kind: Paragraph, Text: "(spaced) ABCcontinued"},
	})
}

func TestPDFScrambledOrder(t *testing.T) {
	t.Parallel()
	// Lines drawn bottom-up, as some generators do: reading order comes from positions.
	var sb strings.Builder
	for i := 9; i >= 0; i-- {
		fmt.Fprintf(&sb, "BT /F1 11 Tf 72 %d Td (Line %d of the text) Tj ET\n", 700-14*i, i)
	}
	doc, err := Extract(FormatPDF, buildPDF(pdfSpec{pages: []string{sb.String()}}))
	if err != nil {
		t.Fatal(err)
	}
	text := doc.Text()
	if !strings.HasPrefix(text, "Line 0 of the text Line 1 of the text") {
		t.Errorf("order not restored: %q", text)
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func assertBlocks(t *testing.T, got, want []Block) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d blocks, want %d", len(got), len(want))
	}
	for i := range max(len(got), len(want)) {
		var g, w Block
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("block %d:\n got %s %d %q\nwant %s %d %q", i, g.Kind, g.Level, g.Text, w.Kind, w.Level, w.Text)
		}
	}
}

func assertContainsInOrder(t *testing.T, got, want []Block) {
	t.Helper()
	j := 0
	for _, g := range got {
		if j < len(want) && g == want[j] {
			j++
		}
	}
	if j < len(want) {
		var sb strings.Builder
		for _, g := range got {
			fmt.Fprintf(&sb, "  %s %d %q\n", g.Kind, g.Level, g.Text)
		}
		t.Errorf("missing block %s %d %q (in order) among:\n%s", want[j].Kind, want[j].Level, want[j].Text, sb.String())
	}
}
