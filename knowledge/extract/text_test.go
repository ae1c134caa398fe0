package extract

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []Block
	}{
		{
			name: "windows line endings, NULs and controls",
			in:   "Opening hours\r\n\r\nWe are open Monday\x00 to Friday,\r\nnine to five.\x07\r\n\r\n\r\nClosed on holidays.\r\n",
			want: []Block{
				{Kind: Paragraph, Text: "Opening hours"},
				{Kind: Paragraph, Text: "We are open Monday to Friday, nine to five."},
				{Kind: Paragraph, Text: "Closed on holidays."},
			},
		},
		{
			name: "hard-wrapped paragraph with a hyphenated word",
			in:   "The agent answers every call within a second and hands over to a hu-\nman when the caller asks for one. Dates such as 2019-\n2020 keep their dash.",
			want: []Block{{Kind: Paragraph, Text: "The agent answers every call within a second and hands over to a human when the caller asks for one. Dates such as 2019- 2020 keep their dash."}},
		},
		{
			name: "lists",
			in:   "You will need:\n- a phone number\n- an agent with\n  a knowledge base\n  * nested item\n\n1. Buy a number\n2. Attach it",
			want: []Block{
				{Kind: Paragraph, Text: "You will need:"},
				{Kind: ListItem, Text: "a phone number"},
				{Kind: ListItem, Text: "an agent with a knowledge base"},
				{Kind: ListItem, Level: 1, Text: "nested item"},
				{Kind: ListItem, Text: "1. Buy a number"},
				{Kind: ListItem, Text: "2. Attach it"},
			},
		},
		{
			name: "old mac line endings and unicode spaces",
			in:   "One\u00a0two\u2003three\rfour\u200bfive\u00adsix\r\rSecond\u2028line",
			want: []Block{
				{Kind: Paragraph, Text: "One two three fourfivesix"},
				{Kind: Paragraph, Text: "Second line"},
			},
		},
		{
			name: "UTF-16 with BOM",
			in:   "\xff\xfeH\x00i\x00 \x00\xe9\x00\n\x00\n\x00B\x00y\x00e\x00",
			want: []Block{{Kind: Paragraph, Text: "Hi é"}, {Kind: Paragraph, Text: "Bye"}},
		},
		{
			name: "windows-1252",
			in:   "Caf\xe9 \x93quoted\x94 \x80 5",
			want: []Block{{Kind: Paragraph, Text: "Café “quoted” € 5"}},
		},
		{
			name: "UTF-8 with damaged bytes",
			in:   "Café \xff ok",
			want: []Block{{Kind: Paragraph, Text: "Café \uFFFD ok"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc, err := Extract(FormatText, []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			assertBlocks(t, doc.Blocks, tc.want)
			assertClean(t, doc)
		})
	}
}

func TestTextEmpty(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", " \r\n\t\x00\x00 \n", "\ufeff"} {
		if _, err := Extract(FormatText, []byte(in)); !errors.Is(err, ErrEmpty) {
			t.Errorf("%q: err = %v, want ErrEmpty", in, err)
		}
	}
}

func TestDocumentText(t *testing.T) {
	t.Parallel()
	doc := Document{Blocks: []Block{
		{Kind: Heading, Level: 1, Text: "Setup"},
		{Kind: Paragraph, Text: "You need:"},
		{Kind: ListItem, Text: "a number"},
		{Kind: ListItem, Level: 1, Text: "2. nested and numbered"},
		{Kind: TableRow, Text: "Plan: Pro"},
		{Kind: TableRow, Text: "Plan: Team"},
		{Kind: Code, Text: "make\n  install"},
	}}
	want := "Setup\n\nYou need:\n\n- a number\n  2. nested and numbered\n\nPlan: Pro\nPlan: Team\n\nmake\n  install"
	if got := doc.Text(); got != want {
		t.Errorf("Text() =\n%s\nwant\n%s", got, want)
	}
}

func TestExtractUnknownFormat(t *testing.T) {
	t.Parallel()
	if _, err := Extract("rtf", []byte("{\\rtf1 hi}")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("err = %v", err)
	}
}

// assertClean checks the package's promise about every string it returns.
func assertClean(t *testing.T, doc Document) {
	t.Helper()
	check := func(what, s string, code bool) {
		if !utf8.ValidString(s) {
			t.Errorf("%s not valid UTF-8: %q", what, s)
		}
		for _, r := range s {
			if r == 0 || (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r <= 0x9f) {
				t.Errorf("%s has control character %U: %q", what, r, s)
				return
			}
			if !code && (r == '\n' || r == '\t') {
				t.Errorf("%s has a line break or tab: %q", what, s)
				return
			}
		}
		if !code && (s != strings.TrimSpace(s) || strings.Contains(s, "  ")) {
			t.Errorf("%s has uncollapsed spaces: %q", what, s)
		}
	}
	check("title", doc.Title, false)
	for i, b := range doc.Blocks {
		if b.Text == "" {
			t.Errorf("block %d is empty", i)
		}
		check(b.Kind.String(), b.Text, b.Kind == Code)
	}
}
