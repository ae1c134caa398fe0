package chunk

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parleyhq/parley/knowledge/extract"
)

func h(level int, text string) extract.Block {
	return extract.Block{Kind: extract.Heading, Level: level, Text: text}
}
func p(text string) extract.Block { return extract.Block{Kind: extract.Paragraph, Text: text} }
func li(text string) extract.Block {
	return extract.Block{Kind: extract.ListItem, Text: text}
}
func row(text string) extract.Block { return extract.Block{Kind: extract.TableRow, Text: text} }

// prose returns n distinct, deterministic sentences of about 12 words.
func prose(seed uint64, n int) string {
	words := strings.Fields("the agent answers calls about billing refunds invoices numbers trunks voices prompts " +
		"tools webhooks campaigns contacts recordings transcripts latency models languages customers support " +
		"within seconds every day when needed after hours for callers and staff with care")
	r := rand.New(rand.NewPCG(seed, 7))
	var sb strings.Builder
	for i := range n {
		if i > 0 {
			sb.WriteByte(' ')
		}
		k := 8 + r.IntN(9)
		for j := range k {
			w := words[r.IntN(len(words))]
			if j == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			}
			if j > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(w)
		}
		fmt.Fprintf(&sb, " %d.", i) // unique sentences, so overlaps are unambiguous
	}
	return sb.String()
}

func TestSplitHeadingPaths(t *testing.T) {
	t.Parallel()
	doc := extract.Document{Blocks: []extract.Block{
		p("Preamble before any heading."),
		h(1, "Billing"),
		p("How billing works."),
		h(2, "Refunds"),
		p("Refunds take 14 days."),
		h(2, "Invoices"),
		p("Invoices are monthly."),
		h(4, "Old invoices"), // skipped level 3
		p("Kept for ten years."),
		h(1, "Support"),
		h(2, "Hours"), // parent of content: a real section
		p("Nine to five."),
		h(2, "Phone"), // introduces nothing: its words go to Support
		h(1, "Empty at the end"),
	}}
	got := Split(doc, Options{})
	want := []struct {
		path []string
		text string
	}{
		{nil, "Preamble before any heading."},
		{[]string{"Billing"}, "How billing works."},
		{[]string{"Billing", "Refunds"}, "Refunds take 14 days."},
		{[]string{"Billing", "Invoices"}, "Invoices are monthly."},
		{[]string{"Billing", "Invoices", "Old invoices"}, "Kept for ten years."},
		{[]string{"Support", "Hours"}, "Nine to five."},
		{[]string{"Support"}, "Phone"},
		{nil, "Empty at the end"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d chunks, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if !reflect.DeepEqual(got[i].HeadingPath, w.path) || got[i].Text != w.text || got[i].Position != i {
			t.Errorf("chunk %d = %q %q #%d, want %q %q", i, got[i].HeadingPath, got[i].Text, got[i].Position, w.path, w.text)
		}
	}
}

func TestSplitPacksBlocks(t *testing.T) {
	t.Parallel()
	doc := extract.Document{Blocks: []extract.Block{
		h(1, "Plans"),
		p("We offer three plans."),
		li("Starter for one agent"),
		li("Pro for teams"),
		{Kind: extract.ListItem, Level: 1, Text: "2. with ten agents"},
		row("Plan: Starter; Price: $19"),
		row("Plan: Pro; Price: $49"),
		{Kind: extract.Code, Text: "curl https://api.example/plans\n  -H 'Accept: json'"},
		p("Prices exclude VAT."),
	}}
	got := Split(doc, Options{})
	want := "We offer three plans.\n\n- Starter for one agent\n- Pro for teams\n  2. with ten agents\n\n" +
		"Plan: Starter; Price: $19\nPlan: Pro; Price: $49\n\ncurl https://api.example/plans\n  -H 'Accept: json'\n\nPrices exclude VAT."
	if len(got) != 1 || got[0].Text != want {
		t.Fatalf("got %+v\nwant one chunk:\n%s", got, want)
	}
	if got[0].Tokens != CountTokens(want) {
		t.Errorf("Tokens = %d, want %d", got[0].Tokens, CountTokens(want))
	}
}

// checkChunks asserts the invariants every split must satisfy.
func checkChunks(t *testing.T, chunks []Chunk, opt Options) {
	t.Helper()
	opt = opt.normalized()
	for i, c := range chunks {
		if c.Position != i {
			t.Errorf("chunk %d has position %d", i, c.Position)
		}
		// Leading spaces are code indentation; nothing else pads a chunk.
		if strings.TrimSpace(c.Text) == "" || c.Text != strings.TrimRight(strings.TrimLeft(c.Text, "\n"), " \n") {
			t.Errorf("chunk %d text %q is empty or padded", i, c.Text)
		}
		if !utf8.ValidString(c.Text) {
			t.Errorf("chunk %d is not UTF-8", i)
		}
		if c.Tokens != CountTokens(c.Text) {
			t.Errorf("chunk %d: Tokens %d, CountTokens %d", i, c.Tokens, CountTokens(c.Text))
		}
		if c.Tokens > opt.MaxTokens {
			t.Errorf("chunk %d has %d tokens > max %d: %q", i, c.Tokens, opt.MaxTokens, c.Text)
		}
	}
}

// overlapWords returns how many leading words of next repeat the end of prev.
func overlapWords(prev, next string) int {
	pw, nw := strings.Fields(prev), strings.Fields(next)
	for k := min(len(pw), len(nw)-1); k > 0; k-- {
		if slices.Equal(pw[len(pw)-k:], nw[:k]) {
			return k
		}
	}
	return 0
}

func TestSplitLongSectionOverlap(t *testing.T) {
	t.Parallel()
	text := prose(1, 60) // one paragraph of ~900 tokens
	doc := extract.Document{Blocks: []extract.Block{h(1, "A"), p(text), p(prose(2, 3)), h(1, "B"), p(prose(3, 30))}}
	opt := Options{MaxTokens: 120, OverlapTokens: 30}
	chunks := Split(doc, opt)
	checkChunks(t, chunks, opt)
	// Within a section every chunk starts with whole sentences from the end of the one
	// before, up to the overlap budget; the rest is new text, in order.
	var rebuilt []string
	for i, c := range chunks {
		words := strings.Fields(c.Text)
		sameSection := i > 0 && reflect.DeepEqual(chunks[i-1].HeadingPath, c.HeadingPath)
		k := 0
		if sameSection {
			k = overlapWords(chunks[i-1].Text, c.Text)
			if k == 0 {
				t.Errorf("chunk %d does not overlap chunk %d", i, i-1)
			}
			ov := strings.Join(words[:k], " ")
			if n := CountTokens(ov); n > opt.OverlapTokens {
				t.Errorf("chunk %d overlap has %d tokens > %d", i, n, opt.OverlapTokens)
			}
			if !strings.HasSuffix(ov, ".") {
				t.Errorf("chunk %d overlap %q is not whole sentences", i, ov)
			}
		} else if i > 0 && overlapWords(chunks[i-1].Text, c.Text) > 0 {
			t.Errorf("chunk %d overlaps across sections", i)
		}
		if c.HeadingPath[0] == "A" {
			rebuilt = append(rebuilt, words[k:]...)
		}
	}
	want := strings.Fields(text + " " + prose(2, 3))
	if !slices.Equal(rebuilt, want) {
		t.Errorf("section A text not preserved in order:\n got %q\nwant %q", rebuilt, want)
	}
}

func TestSplitLongSentenceAndWord(t *testing.T) {
	t.Parallel()
	sentence := strings.TrimSuffix(strings.Repeat("agents answer calls quickly and politely, ", 80), ", ") + "."
	blob := strings.Repeat("QmFzZTY0IGRhdGEgdGhhdCBuZXZlciBlbmRz", 60) // one 2,160-character "word"
	doc := extract.Document{Blocks: []extract.Block{p(sentence), p(blob), p("Short closing sentence of the section.")}}
	opt := Options{MaxTokens: 64, OverlapTokens: 8, MinTokens: -1}
	chunks := Split(doc, opt)
	checkChunks(t, chunks, opt)
	var all strings.Builder
	for _, c := range chunks {
		all.WriteString(c.Text)
	}
	// Every piece of the blob survives, cut only at token boundaries.
	joined := strings.ReplaceAll(strings.ReplaceAll(all.String(), " ", ""), "\n", "")
	if !strings.Contains(joined, blob) {
		t.Error("the long word was not kept whole across chunks")
	}
	if len(chunks) < 10 {
		t.Errorf("only %d chunks for ~600 tokens at max 64", len(chunks))
	}
}

func TestSplitHugeWordIsLinear(t *testing.T) {
	t.Parallel()
	blob := strings.Repeat("QmFzZTY0IGRhdGEgdGhhdCBuZXZlciBlbmRz", 30000) // ~1 MB, no spaces
	start := time.Now()
	chunks := Split(extract.Document{Blocks: []extract.Block{p(blob)}}, Options{})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	checkChunks(t, chunks, Options{})
	var sb strings.Builder
	for i, c := range chunks {
		if i > 0 && !strings.HasPrefix(blob[sb.Len():], c.Text) {
			t.Fatalf("chunk %d does not continue the word", i)
		}
		sb.WriteString(c.Text)
	}
	if sb.String() != blob {
		t.Error("the word was not kept whole across chunks")
	}
}

func TestSplitTinyTail(t *testing.T) {
	t.Parallel()
	opt := Options{MaxTokens: 100, OverlapTokens: 16, MinTokens: 24}
	noMerge := opt
	noMerge.MinTokens = -1
	// Find inputs (sentences in one paragraph, or short list items) whose greedy split
	// ends with a tiny tail, and check that merging fixes every one of them.
	found := 0
	for n := 5; n < 40; n++ {
		for _, blocks := range [][]extract.Block{
			{p(prose(uint64(n), n))},
			func() []extract.Block {
				var items []extract.Block
				for i := range n {
					items = append(items, li(prose(uint64(100+i), 1)))
				}
				return items
			}(),
		} {
			doc := extract.Document{Blocks: blocks}
			plain := Split(doc, noMerge)
			k := len(plain)
			if k < 2 {
				continue
			}
			if tail := ownTokens(plain[k-2], plain[k-1]); tail >= opt.MinTokens {
				continue
			}
			found++
			merged := Split(doc, opt)
			checkChunks(t, merged, opt)
			m := len(merged)
			if m >= 2 && ownTokens(merged[m-2], merged[m-1]) < opt.MinTokens {
				t.Errorf("n=%d: tail still has %d new tokens: %q", n, ownTokens(merged[m-2], merged[m-1]), merged[m-1].Text)
			}
			if got, want := newWords(merged), newWords(plain); !slices.Equal(got, want) {
				t.Errorf("n=%d: merging changed the text:\n got %q\nwant %q", n, got, want)
			}
		}
	}
	if found < 5 {
		t.Errorf("only %d inputs with tiny tails; the test lost its teeth", found)
	}
}

// ownTokens counts the tokens of next that do not repeat prev.
func ownTokens(prev, next Chunk) int {
	return CountTokens(strings.Join(strings.Fields(next.Text)[overlapWords(prev.Text, next.Text):], " "))
}

// newWords returns the words of chunks with overlaps removed.
func newWords(chunks []Chunk) []string {
	var out []string
	for i, c := range chunks {
		w := strings.Fields(c.Text)
		if i > 0 {
			w = w[overlapWords(chunks[i-1].Text, c.Text):]
		}
		out = append(out, w...)
	}
	return out
}

func TestSplitEdgeCases(t *testing.T) {
	t.Parallel()
	if got := Split(extract.Document{}, Options{}); got != nil {
		t.Errorf("empty document: %+v", got)
	}
	// Only headings (slides): the text survives as chunks.
	got := Split(extract.Document{Blocks: []extract.Block{h(1, "Q3 review"), h(2, "Revenue up"), h(2, "Churn down")}}, Options{})
	if len(got) != 1 || got[0].Text != "Revenue up\n\nChurn down" || !reflect.DeepEqual(got[0].HeadingPath, []string{"Q3 review"}) {
		t.Errorf("headings only: %+v", got)
	}
	// Code too long for one chunk is cut at line boundaries.
	var code strings.Builder
	for i := range 60 {
		fmt.Fprintf(&code, "    step%d := compute(input, %d)\n", i, i)
	}
	opt := Options{MaxTokens: 64}
	chunks := Split(extract.Document{Blocks: []extract.Block{{Kind: extract.Code, Text: strings.TrimRight(code.String(), "\n")}}}, opt)
	checkChunks(t, chunks, opt)
	for _, c := range chunks {
		for line := range strings.SplitSeq(c.Text, "\n") {
			if !strings.HasPrefix(line, "    step") {
				t.Errorf("code cut inside a line: %q", line)
			}
		}
	}
}

func TestOptionsNormalized(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want Options }{
		{Options{}, Options{256, 32, 24}},
		{Options{MaxTokens: 512}, Options{512, 32, 24}},
		{Options{MaxTokens: 40}, Options{40, 20, 20}},
		{Options{MaxTokens: 3, OverlapTokens: -1, MinTokens: -5}, Options{8, 0, 0}},
		{Options{MaxTokens: 100, OverlapTokens: 10, MinTokens: 5}, Options{100, 10, 5}},
	} {
		if got := tc.in.normalized(); got != tc.want {
			t.Errorf("%+v.normalized() = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestSplitDeterministic(t *testing.T) {
	t.Parallel()
	doc := benchDoc()
	a := Split(doc, Options{})
	b := Split(doc, Options{})
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two splits of the same document differ")
	}
	checkChunks(t, a, Options{})
}

func FuzzSplit(f *testing.F) {
	f.Add("# Title\n\nSome text. More text!\n\n- item\n- item 2\n\n| a | b |\n|---|---|\n| 1 | 2 |", 64, 16, 8)
	f.Add(prose(9, 40), 32, 8, 8)
	f.Add(strings.Repeat("x", 3000)+" 退款需要十四天。请联系我们！", 16, 4, 4)
	f.Add("```\ncode\n\tindented\n```\n\n## H\n\nDr. Who? e.g. 3.5... ok", 8, 100, 100)
	f.Fuzz(func(t *testing.T, md string, maxTokens, overlap, minTokens int) {
		opt := Options{MaxTokens: maxTokens % 2048, OverlapTokens: overlap % 2048, MinTokens: minTokens % 2048}
		doc, err := extract.Extract(extract.FormatMarkdown, []byte(md))
		if err != nil {
			return
		}
		chunks := Split(doc, opt)
		checkChunks(t, chunks, opt)
	})
}

var benchOnce = sync.OnceValue(loadBenchDoc)

func benchDoc() extract.Document { return benchOnce() }

// loadBenchDoc builds a realistic long document from the Go distribution's own docs:
// the language specification and memory model (HTML, with sections, lists and code) and
// the package documentation of the standard library (doc.go files). Without a Go tree
// it falls back to generated prose with headings.
func loadBenchDoc() extract.Document {
	var doc extract.Document
	root := os.Getenv("GOROOT")
	if root == "" {
		if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
			root = strings.TrimSpace(string(out))
		}
	}
	for _, name := range []string{"go_spec.html", "go_mem.html"} {
		b, err := os.ReadFile(filepath.Join(root, "doc", name))
		if err != nil {
			continue
		}
		if sub, err := extract.HTML(b); err == nil {
			doc.Blocks = append(doc.Blocks, sub.Blocks...)
		}
	}
	files, _ := filepath.Glob(filepath.Join(root, "src", "*", "doc.go"))
	more, _ := filepath.Glob(filepath.Join(root, "src", "*", "*", "doc.go"))
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// The package comment, as Markdown-ish text: "// " and /* */ comments.
		var md strings.Builder
		inBlock := false
		for line := range strings.SplitSeq(string(b), "\n") {
			switch {
			case strings.HasPrefix(line, "/*"):
				inBlock = true
				continue
			case inBlock && strings.HasPrefix(line, "*/"):
				inBlock = false
				continue
			case inBlock:
				md.WriteString(line)
			case strings.HasPrefix(line, "// "):
				md.WriteString(line[3:])
			case strings.HasPrefix(line, "//\t"):
				md.WriteString("    " + line[3:])
			case line == "//":
			default:
				continue
			}
			md.WriteByte('\n')
		}
		sub, err := extract.Extract(extract.FormatMarkdown, []byte(md.String()))
		if err != nil {
			continue
		}
		doc.Blocks = append(doc.Blocks, h(1, filepath.Base(filepath.Dir(f))))
		for _, b := range sub.Blocks {
			if b.Kind == extract.Heading {
				b.Level = min(b.Level+1, 6)
			}
			doc.Blocks = append(doc.Blocks, b)
		}
	}
	if len(doc.Blocks) < 100 {
		doc.Blocks = nil
		for i := range 200 {
			doc.Blocks = append(doc.Blocks, h(1+i%3, fmt.Sprintf("Section %d", i)))
			for j := range 4 {
				doc.Blocks = append(doc.Blocks, p(prose(uint64(i*10+j), 3+j*3)))
			}
		}
	}
	return doc
}

func benchText() string {
	var sb strings.Builder
	for _, b := range benchDoc().Blocks {
		sb.WriteString(b.Text)
		sb.WriteString("\n\n")
		if sb.Len() > 1<<20 {
			break
		}
	}
	return sb.String()
}

// BenchmarkSplit reports the cost per chunk at the default options; ingestion needs it
// far under 100 µs.
func BenchmarkSplit(b *testing.B) {
	doc := benchDoc()
	bytes := 0
	for _, bl := range doc.Blocks {
		bytes += len(bl.Text)
	}
	b.SetBytes(int64(bytes))
	b.ReportAllocs()
	chunks := 0
	for b.Loop() {
		chunks = len(Split(doc, Options{}))
	}
	b.ReportMetric(float64(chunks), "chunks/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(chunks), "ns/chunk")
}
