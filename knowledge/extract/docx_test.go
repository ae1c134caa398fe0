package extract

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"sync"
	"testing"
)

const docxNS = `xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" ` +
	`xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" ` +
	`xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" ` +
	`xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math"`

// buildDOCX writes a DOCX package with the given parts; the content types and package
// relationships are added unless overridden.
func buildDOCX(t testing.TB, parts map[string]string) []byte {
	t.Helper()
	all := map[string]string{
		"[Content_Types].xml": `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>`,
		"_rels/.rels": `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>
</Relationships>`,
	}
	for k, v := range parts {
		all[k] = v
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	// Stable order: [Content_Types].xml first, as Word writes it.
	names := []string{"[Content_Types].xml", "_rels/.rels"}
	for k := range all {
		if k != names[0] && k != names[1] {
			names = append(names, k)
		}
	}
	for _, name := range names {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, all[name])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func para(style, text string) string {
	ppr := ""
	if style != "" {
		ppr = `<w:pPr><w:pStyle w:val="` + style + `"/></w:pPr>`
	}
	return `<w:p>` + ppr + `<w:r><w:t xml:space="preserve">` + text + `</w:t></w:r></w:p>`
}

func listPara(numID, ilvl, text string) string {
	return `<w:p><w:pPr><w:pStyle w:val="ListParagraph"/><w:numPr><w:ilvl w:val="` + ilvl + `"/><w:numId w:val="` + numID +
		`"/></w:numPr></w:pPr><w:r><w:t>` + text + `</w:t></w:r></w:p>`
}

func cell(text string) string { return `<w:tc><w:p><w:r><w:t>` + text + `</w:t></w:r></w:p></w:tc>` }

// The styles are localized the way German Word writes them: the IDs are German, the
// built-in names stay English.
const testStyles = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles ` + docxNS + `>
<w:style w:type="paragraph" w:styleId="Titel"><w:name w:val="Title"/></w:style>
<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/><w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style>
<w:style w:type="paragraph" w:styleId="berschrift2"><w:name w:val="heading 2"/><w:basedOn w:val="berschrift1"/><w:pPr><w:outlineLvl w:val="1"/></w:pPr></w:style>
<w:style w:type="paragraph" w:styleId="FAQQuestion"><w:name w:val="FAQ Question"/><w:basedOn w:val="berschrift2"/></w:style>
<w:style w:type="paragraph" w:styleId="ListParagraph"><w:name w:val="List Paragraph"/></w:style>
<w:style w:type="paragraph" w:styleId="Aufzhlung"><w:name w:val="List Bullet"/><w:pPr><w:numPr><w:numId w:val="2"/></w:numPr></w:pPr></w:style>
<w:style w:type="character" w:styleId="Strong"><w:name w:val="Strong"/></w:style>
</w:styles>`

const testNumbering = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:numbering ` + docxNS + `>
<w:abstractNum w:abstractNumId="0">
  <w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="decimal"/><w:lvlText w:val="%1."/></w:lvl>
  <w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="lowerLetter"/><w:lvlText w:val="%2)"/></w:lvl>
</w:abstractNum>
<w:abstractNum w:abstractNumId="1">
  <w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="bullet"/><w:lvlText w:val="•"/></w:lvl>
</w:abstractNum>
<w:num w:numId="1"><w:abstractNumId w:val="0"/></w:num>
<w:num w:numId="2"><w:abstractNumId w:val="1"/></w:num>
</w:numbering>`

func testDocument() string {
	body := para("Titel", "Acme Help Center") +
		para("berschrift1", "Billing") +
		`<w:p><w:r><w:t xml:space="preserve">Invoices are sent </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>monthly</w:t></w:r>` +
		`<w:r><w:tab/><w:t>by</w:t></w:r><w:r><w:br/><w:t>e-mail</w:t></w:r>` +
		`<w:del><w:r><w:delText>weekly</w:delText></w:r></w:del><w:ins><w:r><w:t xml:space="preserve"> and post.</w:t></w:r></w:ins>` +
		`<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>PAGE \* MERGEFORMAT</w:instrText></w:r></w:p>` +
		para("berschrift2", "Refunds") +
		para("", "To request a refund:") +
		listPara("1", "0", "Open the dashboard.") +
		listPara("1", "1", "Choose Billing.") +
		listPara("1", "1", "Choose Invoices.") +
		listPara("1", "0", "Click Refund.") +
		para("Aufzhlung", "Card refunds take 5 days.") +
		`<w:tbl><w:tblPr/>` +
		`<w:tr><w:trPr><w:tblHeader/></w:trPr>` + cell("Plan") + cell("Price") + cell("Agents") + `</w:tr>` +
		`<w:tr>` + cell("Starter") + cell("$19") + cell("1") + `</w:tr>` +
		`<w:tr>` + cell("Pro") + `<w:tc><w:tcPr><w:gridSpan w:val="2"/></w:tcPr><w:p><w:r><w:t>on request</w:t></w:r></w:p></w:tc></w:tr>` +
		`</w:tbl>` +
		// A one-column "callout" table holds ordinary paragraphs.
		`<w:tbl><w:tr><w:tc>` + para("", "Note: refunds are final.") + para("", "Contact billing@acme.example.") + `</w:tc></w:tr></w:tbl>` +
		para("FAQQuestion", "Can I pay by invoice?") +
		// A text box: the DrawingML choice and its VML fallback hold the same text.
		`<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wps:txbx><w:txbxContent>` +
		para("", "Yes, on annual plans.") + `</w:txbxContent></wps:txbx></w:drawing></mc:Choice>` +
		`<mc:Fallback><w:pict><w:txbxContent>` + para("", "Yes, on annual plans.") + `</w:txbxContent></w:pict></mc:Fallback>` +
		`</mc:AlternateContent></w:r></w:p>` +
		`<w:p><m:oMathPara><m:oMath><m:r><m:t>x=2</m:t></m:r></m:oMath></m:oMathPara></w:p>` +
		`<w:sectPr><w:pgSz w:w="12240" w:h="15840"/></w:sectPr>`
	return `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document ` + docxNS + `><w:body>` + body + `</w:body></w:document>`
}

func TestDOCXBuilt(t *testing.T) {
	t.Parallel()
	data := buildDOCX(t, map[string]string{
		"word/document.xml":  testDocument(),
		"word/styles.xml":    testStyles,
		"word/numbering.xml": testNumbering,
	})
	doc, err := Extract(FormatDOCX, data)
	if err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Acme Help Center" {
		t.Errorf("title %q", doc.Title)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Acme Help Center"},
		{Kind: Heading, Level: 2, Text: "Billing"},
		{Kind: Paragraph, Text: "Invoices are sent monthly by e-mail and post."},
		{Kind: Heading, Level: 3, Text: "Refunds"},
		{Kind: Paragraph, Text: "To request a refund:"},
		{Kind: ListItem, Text: "1. Open the dashboard."},
		{Kind: ListItem, Level: 1, Text: "a) Choose Billing."},
		{Kind: ListItem, Level: 1, Text: "b) Choose Invoices."},
		{Kind: ListItem, Text: "2. Click Refund."},
		{Kind: ListItem, Text: "Card refunds take 5 days."},
		{Kind: TableRow, Text: "Plan: Starter; Price: $19; Agents: 1"},
		{Kind: TableRow, Text: "Plan: Pro; Price: on request"},
		{Kind: Paragraph, Text: "Note: refunds are final."},
		{Kind: Paragraph, Text: "Contact billing@acme.example."},
		{Kind: Heading, Level: 3, Text: "Can I pay by invoice?"},
		{Kind: Paragraph, Text: "Yes, on annual plans."},
		{Kind: Paragraph, Text: "x=2"},
	})
}

func TestDOCXWithoutStyles(t *testing.T) {
	t.Parallel()
	// No styles part (some generators): English style IDs still mean headings, and a
	// table without a header row is "cell | cell".
	body := para("Heading1", "Setup") + para("", "Plug it in.") + para("Heading2", "Wi-Fi") + para("", "Join the network.") +
		`<w:tbl><w:tr>` + cell("SSID") + cell("acme-guest") + `</w:tr><w:tr>` + cell("Band") + cell("5 GHz") + `</w:tr></w:tbl>`
	data := buildDOCX(t, map[string]string{"word/document.xml": `<w:document ` + docxNS + `><w:body>` + body + `</w:body></w:document>`})
	doc, err := Extract(FormatDOCX, data)
	if err != nil {
		t.Fatal(err)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Setup"},
		{Kind: Paragraph, Text: "Plug it in."},
		{Kind: Heading, Level: 2, Text: "Wi-Fi"},
		{Kind: Paragraph, Text: "Join the network."},
		{Kind: TableRow, Text: "SSID | acme-guest"},
		{Kind: TableRow, Text: "Band | 5 GHz"},
	})
}

func TestDOCXFixture(t *testing.T) {
	t.Parallel()
	doc, err := Extract(FormatDOCX, readFixture(t, "handbook.docx"))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Title != "Acme Support Handbook" {
		t.Errorf("title %q", doc.Title)
	}
	assertBlocks(t, doc.Blocks, []Block{
		{Kind: Heading, Level: 1, Text: "Acme Support Handbook"},
		{Kind: Heading, Level: 2, Text: "Billing"},
		{Kind: Paragraph, Text: "Acme bills every workspace monthly, on the day the workspace was created. Invoices are sent by e-mail to the billing contact and are also available in the dashboard under Settings."},
		{Kind: Heading, Level: 3, Text: "Refunds"},
		{Kind: Paragraph, Text: "Refunds are issued within 14 days of a request, e.g. when a customer was charged twice. Dr. Smith’s team reviews every refund above $500. The average refund takes 3.5 business days to reach the card."},
		{Kind: Paragraph, Text: "To request a refund:"},
		{Kind: ListItem, Text: "1. Open the dashboard and go to Billing."},
		{Kind: ListItem, Text: "2. Select the invoice you want refunded."},
		{Kind: ListItem, Text: "3. Click Request refund and describe the reason."},
		{Kind: Heading, Level: 3, Text: "Payment methods"},
		{Kind: Paragraph, Text: "We accept the following payment methods:"},
		{Kind: ListItem, Text: "Credit cards (Visa, Mastercard, American Express)"},
		{Kind: ListItem, Text: "SEPA direct debit for customers in the euro area"},
		{Kind: ListItem, Text: "Bank transfer for annual plans"},
		{Kind: TableRow, Text: "Plan: Starter; Price per month: $19; Agents: 1"},
		{Kind: TableRow, Text: "Plan: Pro; Price per month: $49; Agents: 10"},
		{Kind: TableRow, Text: "Plan: Enterprise; Price per month: Custom; Agents: Unlimited"},
		{Kind: Heading, Level: 2, Text: "Troubleshooting"},
		{Kind: Heading, Level: 3, Text: "Calls drop after 30 seconds"},
		{Kind: Paragraph, Text: "This usually means a firewall closes idle UDP ports. Open the RTP port range 10000-20000 on your SIP trunk provider’s side and retry the call."},
	})
}

var (
	bombOnce sync.Once
	bombData []byte // 101 MiB of XML deflated, about 100 KiB
	bombCRC  uint32
)

// deflatedBomb returns the deflated bytes of a document.xml just over the 100 MiB cap.
func deflatedBomb() ([]byte, uint32) {
	bombOnce.Do(func() {
		var buf bytes.Buffer
		fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
		crc := crc32.NewIEEE()
		w := io.MultiWriter(fw, crc)
		io.WriteString(w, `<w:document `+docxNS+`><w:body><w:p><w:r><w:t>`)
		block := bytes.Repeat([]byte("a"), 1<<20)
		for range 101 {
			w.Write(block)
		}
		io.WriteString(w, `</w:t></w:r></w:p></w:body></w:document>`)
		fw.Close()
		bombData, bombCRC = buf.Bytes(), crc.Sum32()
	})
	return bombData, bombCRC
}

func TestDOCXCorrupt(t *testing.T) {
	t.Parallel()
	good := buildDOCX(t, map[string]string{"word/document.xml": testDocument(), "word/styles.xml": testStyles})
	bomb, crc := deflatedBomb()
	rawPart := func(declared uint64) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.CreateRaw(&zip.FileHeader{
			Name: "word/document.xml", Method: zip.Deflate, CRC32: crc,
			CompressedSize64: uint64(len(bomb)), UncompressedSize64: declared,
		})
		w.Write(bomb)
		zw.Close()
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"not a zip", []byte("PK\x03\x04 but nothing else"), ErrCorrupt, "zip"},
		{"truncated", good[:len(good)/2], ErrCorrupt, "zip"},
		{"legacy doc", append([]byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}, make([]byte, 512)...), ErrCorrupt, "legacy"},
		{"no document part", buildDOCX(t, map[string]string{"xl/workbook.xml": "<workbook/>"}), ErrCorrupt, "document.xml"},
		{"broken xml", buildDOCX(t, map[string]string{"word/document.xml": `<w:document ` + docxNS + `><w:body><w:p><w:r><w:t>hi</w:p>`}), ErrCorrupt, "document.xml"},
		{"empty body", buildDOCX(t, map[string]string{"word/document.xml": `<w:document ` + docxNS + `><w:body><w:p/></w:body></w:document>`}), ErrEmpty, ""},
		{"zip bomb, honest size", rawPart(101 << 20), ErrCorrupt, "zip bomb"},
		// archive/zip stops reading at the declared size itself; our cap is the second
		// line of defence.
		{"zip bomb, lying size", rawPart(1000), ErrCorrupt, "zip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Extract(FormatDOCX, tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want it to mention %q", err, tc.msg)
			}
		})
	}
}
