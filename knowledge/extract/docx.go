package extract

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// DOCX is read with archive/zip and encoding/xml directly. The pure-Go DOCX libraries
// that exist are writers or template fillers with thin reading support (no styles, no
// numbering, tables flattened), and what knowledge extraction needs from OOXML is small:
// paragraphs and their runs, heading styles, list numbering and tables.

// maxDOCXBytes caps the uncompressed bytes read from one DOCX. A 20 MiB upload of real
// text inflates to at most a few hundred MiB of XML in the worst case we have seen, but a
// crafted zip can inflate a thousandfold; 100 MiB of XML is already far more text than
// any real document holds.
const maxDOCXBytes = 100 << 20

// maxDOCXParts bounds the number of parts (files) in the archive, another cheap way for
// a hostile file to waste memory.
const maxDOCXParts = 20000

var errDOCXTooLarge = errors.New("uncompressed content exceeds 100 MiB (zip bomb?)")

// OOXML namespaces, transitional and strict.
const (
	nsW       = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
	nsWStrict = "http://purl.oclc.org/ooxml/wordprocessingml/main"
	nsM       = "http://schemas.openxmlformats.org/officeDocument/2006/math"
	nsMStrict = "http://purl.oclc.org/ooxml/officeDocument/math"
	nsMC      = "http://schemas.openxmlformats.org/markup-compatibility/2006"
)

func isW(n xml.Name) bool { return n.Space == nsW || n.Space == nsWStrict }

// docxPackage is the opened archive with a shared budget of bytes to inflate.
type docxPackage struct {
	files  map[string]*zip.File
	budget int64
}

// open returns the part's inflated bytes, charging them to the budget.
func (p *docxPackage) read(name string) ([]byte, error) {
	f := p.files[name]
	if f == nil {
		return nil, nil
	}
	if f.UncompressedSize64 > uint64(p.budget) {
		return nil, errDOCXTooLarge
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// The declared size can lie; the limit is what protects us.
	b, err := io.ReadAll(io.LimitReader(rc, p.budget+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > p.budget {
		return nil, errDOCXTooLarge
	}
	p.budget -= int64(len(b))
	return b, nil
}

func parseDOCX(data []byte) (Document, error) {
	if bytes.HasPrefix(data, []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}) {
		return Document{}, corrupt(FormatDOCX, "password-protected or legacy (.doc) Word file; save it as an unprotected .docx")
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return Document{}, corrupt(FormatDOCX, "not a valid zip archive: %v", err)
	}
	if len(zr.File) > maxDOCXParts {
		return Document{}, corrupt(FormatDOCX, "%d parts in the archive", len(zr.File))
	}
	pkg := &docxPackage{files: make(map[string]*zip.File, len(zr.File)), budget: maxDOCXBytes}
	for _, f := range zr.File {
		pkg.files[strings.TrimPrefix(f.Name, "/")] = f
	}
	fail := func(err error) (Document, error) {
		return Document{}, corrupt(FormatDOCX, "%v", err)
	}
	mainPart, err := pkg.mainPart()
	if err != nil {
		return fail(err)
	}
	if pkg.files[mainPart] == nil {
		return Document{}, corrupt(FormatDOCX, "no %s: not a Word document", mainPart)
	}
	dir := path.Dir(mainPart)
	conv := docxConv{numbering: map[string]*docxNum{}, counters: map[string]*[9]int{}}
	if b, err := pkg.read(path.Join(dir, "styles.xml")); err != nil {
		return fail(err)
	} else if b != nil {
		conv.styles = parseDOCXStyles(b)
	}
	if b, err := pkg.read(path.Join(dir, "numbering.xml")); err != nil {
		return fail(err)
	} else if b != nil {
		conv.numbering = parseDOCXNumbering(b)
	}
	var title string
	if b, err := pkg.read("docProps/core.xml"); err != nil {
		return fail(err)
	} else if b != nil {
		title = coreTitle(b)
	}
	body, err := pkg.read(mainPart)
	if err != nil {
		return fail(err)
	}
	if err := conv.document(body); err != nil {
		return fail(err)
	}
	conv.doc.Title = title
	if conv.doc.Title == "" {
		conv.doc.Title = conv.title
	}
	return conv.doc, nil
}

// mainPart finds the main document part through the package relationships; it is
// word/document.xml for every writer we know, but the standard lets it be anything.
func (p *docxPackage) mainPart() (string, error) {
	b, err := p.read("_rels/.rels")
	if err != nil || b == nil {
		return "word/document.xml", err
	}
	var rels struct {
		Rel []struct {
			Type   string `xml:"Type,attr"`
			Target string `xml:"Target,attr"`
		} `xml:"Relationship"`
	}
	if xml.Unmarshal(b, &rels) == nil {
		for _, r := range rels.Rel {
			if strings.HasSuffix(r.Type, "/officeDocument") && r.Target != "" {
				return strings.TrimPrefix(path.Clean("/"+r.Target), "/"), nil
			}
		}
	}
	return "word/document.xml", nil
}

func coreTitle(b []byte) string {
	var core struct {
		Title string `xml:"title"`
	}
	if xml.Unmarshal(b, &core) != nil {
		return ""
	}
	return cleanInline(core.Title)
}

// docxStyle is what matters of a paragraph style.
type docxStyle struct {
	name    string
	basedOn string
	outline int // w:outlineLvl + 1, 0 when absent
	numID   string
	ilvl    int
}

func parseDOCXStyles(b []byte) map[string]*docxStyle {
	styles := map[string]*docxStyle{}
	d := xml.NewDecoder(bytes.NewReader(b))
	var cur *docxStyle
	for {
		tok, err := d.Token()
		if err != nil {
			return styles // a damaged styles part costs us headings, not the text
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if !isW(t.Name) {
				continue
			}
			switch t.Name.Local {
			case "style":
				cur = nil
				if wAttr(t, "type") == "paragraph" || wAttr(t, "type") == "" {
					cur = &docxStyle{}
					styles[wAttr(t, "styleId")] = cur
				}
			case "name":
				if cur != nil {
					cur.name = strings.ToLower(wAttr(t, "val"))
				}
			case "basedOn":
				if cur != nil {
					cur.basedOn = wAttr(t, "val")
				}
			case "outlineLvl":
				if cur != nil {
					if n, err := strconv.Atoi(wAttr(t, "val")); err == nil && n >= 0 && n < 9 {
						cur.outline = n + 1
					}
				}
			case "numId":
				if cur != nil {
					cur.numID = wAttr(t, "val")
				}
			case "ilvl":
				if cur != nil {
					cur.ilvl, _ = strconv.Atoi(wAttr(t, "val"))
				}
			case "rPrChange", "pPrChange":
				d.Skip()
			}
		case xml.EndElement:
			if isW(t.Name) && t.Name.Local == "style" {
				cur = nil
			}
		}
	}
}

// docxNum is one numbering definition: per level, its format, text template and start.
type docxNum struct {
	levels [9]docxLevel
}

type docxLevel struct {
	format string // "bullet", "decimal", "lowerLetter", ...
	text   string // "%1.", "%1.%2."
	start  int
}

func parseDOCXNumbering(b []byte) map[string]*docxNum {
	abstract := map[string]*docxNum{}
	type numRef struct {
		abstract string
		starts   map[int]int
	}
	nums := map[string]*numRef{}
	d := xml.NewDecoder(bytes.NewReader(b))
	var curAbs *docxNum
	var curNum *numRef
	lvl, overrideLvl := -1, -1
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if !isW(t.Name) {
				continue
			}
			switch t.Name.Local {
			case "abstractNum":
				curAbs, curNum = &docxNum{}, nil
				for i := range curAbs.levels {
					curAbs.levels[i].start = 1
				}
				abstract[wAttr(t, "abstractNumId")] = curAbs
			case "num":
				curNum, curAbs = &numRef{starts: map[int]int{}}, nil
				nums[wAttr(t, "numId")] = curNum
			case "abstractNumId":
				if curNum != nil {
					curNum.abstract = wAttr(t, "val")
				}
			case "lvl":
				lvl, _ = strconv.Atoi(wAttr(t, "ilvl"))
				if lvl < 0 || lvl > 8 {
					lvl = -1
				}
			case "lvlOverride":
				overrideLvl, _ = strconv.Atoi(wAttr(t, "ilvl"))
			case "startOverride":
				if curNum != nil && overrideLvl >= 0 && overrideLvl < 9 {
					curNum.starts[overrideLvl], _ = strconv.Atoi(wAttr(t, "val"))
				}
			case "start":
				if curAbs != nil && lvl >= 0 {
					curAbs.levels[lvl].start, _ = strconv.Atoi(wAttr(t, "val"))
				}
			case "numFmt":
				if curAbs != nil && lvl >= 0 {
					curAbs.levels[lvl].format = wAttr(t, "val")
				}
			case "lvlText":
				if curAbs != nil && lvl >= 0 {
					curAbs.levels[lvl].text = wAttr(t, "val")
				}
			}
		case xml.EndElement:
			if isW(t.Name) && t.Name.Local == "lvl" {
				lvl = -1
			}
		}
	}
	out := map[string]*docxNum{}
	for id, n := range nums {
		a := abstract[n.abstract]
		if a == nil {
			continue
		}
		c := *a
		for l, s := range n.starts {
			c.levels[l].start = s
		}
		out[id] = &c
	}
	return out
}

// wAttr returns the value of the attribute with the given local name (w:val, w:styleId).
func wAttr(t xml.StartElement, local string) string {
	for _, a := range t.Attr {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// docxPara is a paragraph being read.
type docxPara struct {
	style   string
	numID   string
	ilvl    int
	hasNum  bool
	outline int
	text    strings.Builder
}

// docxTable is a table being read; cells hold blocks so that a one-column "callout box"
// table can be emitted as ordinary paragraphs.
type docxTable struct {
	rows      [][][]Block
	header    []bool
	row       [][]Block
	rowHeader bool
	cell      []Block
	inCell    bool
	span      int // columns the current cell spans
}

type docxConv struct {
	styles    map[string]*docxStyle
	numbering map[string]*docxNum
	counters  map[string]*[9]int
	doc       Document
	title     string
	paras     []*docxPara
	tables    []*docxTable
}

// document walks the main part. Text comes from w:t inside runs; deleted text
// (w:del, w:delText, w:moveFrom), field instructions (w:instrText), tracked property
// changes and the VML fallback of text boxes (which repeats the text of mc:Choice) are
// skipped. Text boxes are read where they stand.
func (c *docxConv) document(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	inRun := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("document.xml: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space == nsMC && t.Name.Local == "Fallback" {
				if err := d.Skip(); err != nil {
					return fmt.Errorf("document.xml: %v", err)
				}
				continue
			}
			if t.Name.Local == "t" && (t.Name.Space == nsM || t.Name.Space == nsMStrict) {
				c.charData(d)
				continue
			}
			if !isW(t.Name) {
				continue
			}
			switch t.Name.Local {
			case "del", "delText", "moveFrom", "instrText", "pPrChange", "rPrChange", "tblPrChange",
				"trPrChange", "tcPrChange", "sectPrChange", "numberingChange", "tabs":
				if err := d.Skip(); err != nil {
					return fmt.Errorf("document.xml: %v", err)
				}
			case "p":
				c.paras = append(c.paras, &docxPara{})
			case "pStyle":
				if p := c.para(); p != nil {
					p.style = wAttr(t, "val")
				}
			case "numId":
				if p := c.para(); p != nil {
					p.numID, p.hasNum = wAttr(t, "val"), true
				}
			case "ilvl":
				if p := c.para(); p != nil {
					p.ilvl, _ = strconv.Atoi(wAttr(t, "val"))
				}
			case "outlineLvl":
				if p := c.para(); p != nil {
					if n, err := strconv.Atoi(wAttr(t, "val")); err == nil && n >= 0 && n < 9 {
						p.outline = n + 1
					}
				}
			case "r":
				inRun++
			case "t":
				c.charData(d)
			case "tab", "ptab":
				if inRun > 0 {
					c.write(" ")
				}
			case "br", "cr":
				if inRun > 0 {
					c.write(" ")
				}
			case "noBreakHyphen":
				c.write("-")
			case "tbl":
				c.tables = append(c.tables, &docxTable{})
			case "tr":
				if tb := c.table(); tb != nil {
					tb.row, tb.rowHeader = nil, false
				}
			case "tblHeader":
				if tb := c.table(); tb != nil && wAttr(t, "val") != "0" && wAttr(t, "val") != "false" {
					tb.rowHeader = true
				}
			case "tc":
				if tb := c.table(); tb != nil {
					tb.cell, tb.inCell = nil, true
				}
			case "gridSpan":
				// Repeat spanned cells as empty cells so values stay under their headers.
				if tb := c.table(); tb != nil && tb.inCell {
					if n, err := strconv.Atoi(wAttr(t, "val")); err == nil && n > 1 {
						tb.span = min(n, 64)
					}
				}
			}
		case xml.EndElement:
			if !isW(t.Name) {
				continue
			}
			switch t.Name.Local {
			case "r":
				inRun = max(inRun-1, 0)
			case "p":
				c.endPara()
			case "tc":
				if tb := c.table(); tb != nil && tb.inCell {
					tb.row = append(tb.row, tb.cell)
					for i := 1; i < tb.span; i++ {
						tb.row = append(tb.row, nil)
					}
					tb.cell, tb.inCell, tb.span = nil, false, 0
				}
			case "tr":
				if tb := c.table(); tb != nil {
					tb.rows = append(tb.rows, tb.row)
					tb.header = append(tb.header, tb.rowHeader)
					tb.row = nil
				}
			case "tbl":
				c.endTable()
			}
		}
	}
	return nil
}

func (c *docxConv) para() *docxPara {
	if len(c.paras) == 0 {
		return nil
	}
	return c.paras[len(c.paras)-1]
}

func (c *docxConv) table() *docxTable {
	if len(c.tables) == 0 {
		return nil
	}
	return c.tables[len(c.tables)-1]
}

func (c *docxConv) write(s string) {
	if p := c.para(); p != nil && p.text.Len() < maxDOCXBytes {
		p.text.WriteString(s)
	}
}

// charData appends the text content of the element just opened.
func (c *docxConv) charData(d *xml.Decoder) {
	for {
		tok, err := d.Token()
		if err != nil {
			return
		}
		switch t := tok.(type) {
		case xml.CharData:
			c.write(string(t))
		case xml.EndElement:
			return
		case xml.StartElement:
			d.Skip()
		}
	}
}

// emit adds a block to the innermost open table cell, or to the document.
func (c *docxConv) emit(b Block) {
	if tb := c.table(); tb != nil && tb.inCell {
		tb.cell = append(tb.cell, b)
		return
	}
	c.doc.Blocks = append(c.doc.Blocks, b)
}

func (c *docxConv) endPara() {
	if len(c.paras) == 0 {
		return
	}
	p := c.paras[len(c.paras)-1]
	c.paras = c.paras[:len(c.paras)-1]
	text := cleanInline(p.text.String())
	if text == "" {
		return
	}
	level, isTitle, styleNum, styleIlvl := c.styleInfo(p.style)
	if p.outline > 0 {
		level = p.outline
	}
	if level > 0 && level <= 6 && len(text) <= 300 {
		if isTitle {
			if c.title == "" {
				c.title = text
			}
		} else if c.title != "" {
			// Below a Title paragraph, "Heading 1" is the second level: the title
			// heads the whole document's heading paths.
			level = min(level+1, 6)
		}
		c.emit(Block{Kind: Heading, Level: level, Text: text})
		return
	}
	numID, ilvl := p.numID, p.ilvl
	if !p.hasNum && styleNum != "" {
		numID, ilvl = styleNum, styleIlvl
	}
	if numID != "" && numID != "0" {
		c.emit(Block{Kind: ListItem, Level: ilvl, Text: c.listPrefix(numID, ilvl) + text})
		return
	}
	if st := c.styles[p.style]; st != nil && strings.HasPrefix(st.name, "list") {
		c.emit(Block{Kind: ListItem, Text: text})
		return
	}
	c.emit(Block{Kind: Paragraph, Text: text})
}

// styleInfo resolves a paragraph style through its basedOn chain: its heading level
// (from the built-in "heading N" and "title" names, which Word stores in English even in
// localized documents, or from an outline level) and its numbering.
func (c *docxConv) styleInfo(id string) (level int, isTitle bool, numID string, ilvl int) {
	if id == "" {
		return 0, false, "", 0
	}
	if c.styles == nil {
		// No styles part: fall back on the IDs Word uses in English documents.
		lower := strings.ToLower(id)
		if lower == "title" {
			return 1, true, "", 0
		}
		if n, ok := headingNumber(lower); ok {
			return n, false, "", 0
		}
		return 0, false, "", 0
	}
	numSet := false
	for i := 0; i < 10 && id != ""; i++ {
		st := c.styles[id]
		if st == nil {
			break
		}
		if !numSet && st.numID != "" {
			numID, ilvl, numSet = st.numID, st.ilvl, true
		}
		if level == 0 {
			switch {
			case st.name == "title":
				level, isTitle = 1, true
			case st.outline > 0:
				level = st.outline
			default:
				if n, ok := headingNumber(st.name); ok {
					level = n
				}
			}
		}
		id = st.basedOn
	}
	return level, isTitle, numID, ilvl
}

// headingNumber parses "heading 2" or "heading2".
func headingNumber(s string) (int, bool) {
	rest, ok := strings.CutPrefix(s, "heading")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(rest))
	if err != nil || n < 1 || n > 9 {
		return 0, false
	}
	return n, true
}

// listPrefix advances the list counters and returns the item's number ("3. ", "1.2. ",
// "b) "), or "" for bullets.
func (c *docxConv) listPrefix(numID string, ilvl int) string {
	ilvl = max(0, min(ilvl, 8))
	def := c.numbering[numID]
	if def == nil {
		return ""
	}
	cnt := c.counters[numID]
	if cnt == nil {
		cnt = &[9]int{}
		for i := range cnt {
			cnt[i] = def.levels[i].start - 1
		}
		c.counters[numID] = cnt
	}
	cnt[ilvl]++
	for i := ilvl + 1; i < 9; i++ {
		cnt[i] = def.levels[i].start - 1
	}
	lv := def.levels[ilvl]
	if lv.format == "bullet" || lv.format == "none" || lv.text == "" {
		return ""
	}
	out := lv.text
	for i := 0; i < 9; i++ {
		ph := "%" + strconv.Itoa(i+1)
		if strings.Contains(out, ph) {
			out = strings.ReplaceAll(out, ph, formatNumber(max(cnt[i], def.levels[i].start), def.levels[i].format))
		}
	}
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	return out + " "
}

func formatNumber(n int, format string) string {
	switch format {
	case "lowerLetter":
		return letters(n, 'a')
	case "upperLetter":
		return letters(n, 'A')
	case "lowerRoman":
		return strings.ToLower(roman(n))
	case "upperRoman":
		return roman(n)
	}
	return strconv.Itoa(n)
}

// letters numbers like Word: a..z, then aa..zz.
func letters(n int, base byte) string {
	if n < 1 {
		return strconv.Itoa(n)
	}
	return strings.Repeat(string(rune(base)+rune((n-1)%26)), (n-1)/26+1)
}

func roman(n int) string {
	if n < 1 || n > 3999 {
		return strconv.Itoa(n)
	}
	vals := []int{1000, 900, 500, 400, 100, 90, 50, 40, 10, 9, 5, 4, 1}
	syms := []string{"M", "CM", "D", "CD", "C", "XC", "L", "XL", "X", "IX", "V", "IV", "I"}
	var sb strings.Builder
	for i, v := range vals {
		for n >= v {
			sb.WriteString(syms[i])
			n -= v
		}
	}
	return sb.String()
}

// endTable emits a finished table. A table with one column is a layout device (a
// callout box, a framed note) and its content is emitted as ordinary blocks; otherwise
// each row becomes a TableRow, keyed by the header row when Word marks one ("repeat as
// header row"). A table nested in another table's cell is flattened into that cell.
func (c *docxConv) endTable() {
	if len(c.tables) == 0 {
		return
	}
	tb := c.tables[len(c.tables)-1]
	c.tables = c.tables[:len(c.tables)-1]
	cols := 0
	for _, r := range tb.rows {
		cols = max(cols, len(r))
	}
	if cols <= 1 {
		for _, r := range tb.rows {
			for _, cell := range r {
				for _, b := range cell {
					c.emit(b)
				}
			}
		}
		return
	}
	var header []string
	for i, r := range tb.rows {
		cells := make([]string, len(r))
		for j, cell := range r {
			cells[j] = cellText(cell)
		}
		if i == 0 && tb.header[0] && len(tb.rows) > 1 {
			header = cells
			continue
		}
		if t := tableRowText(header, cells); t != "" {
			c.emit(Block{Kind: TableRow, Text: t})
		}
	}
}

func cellText(blocks []Block) string {
	parts := make([]string, 0, len(blocks))
	for _, b := range blocks {
		parts = append(parts, b.Text)
	}
	return strings.Join(parts, " ")
}
