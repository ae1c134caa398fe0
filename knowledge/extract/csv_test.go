package extract

import (
	"errors"
	"testing"
)

func TestCSV(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []Block
	}{
		{
			name: "European Excel: BOM, semicolons, quotes, ragged rows",
			in: "\ufeffProduct;Price;Notes\r\n" +
				"Starter;19,00 €;\"Includes 1 agent; no SLA\"\r\n" +
				"\"Pro \"\"Plus\"\"\";49,00 €;\"Line one\r\nline two\"\r\n" +
				"Enterprise;;;extra cell\r\n" +
				"Short\r\n" +
				";;\r\n",
			want: []Block{
				{Kind: TableRow, Text: "Product: Starter; Price: 19,00 €; Notes: Includes 1 agent; no SLA"},
				{Kind: TableRow, Text: `Product: Pro "Plus"; Price: 49,00 €; Notes: Line one line two`},
				{Kind: TableRow, Text: "Product: Enterprise; column 4: extra cell"},
				{Kind: TableRow, Text: "Product: Short"},
			},
		},
		{
			name: "commas with quoted commas",
			in:   "name,city,phone\n\"Smith, John\",Berlin,+49 30 1234\nDoe,\"Paris, FR\",\n",
			want: []Block{
				{Kind: TableRow, Text: "name: Smith, John; city: Berlin; phone: +49 30 1234"},
				{Kind: TableRow, Text: "name: Doe; city: Paris, FR"},
			},
		},
		{
			name: "tabs, from a .tsv or Excel Unicode text",
			in:   "Question\tAnswer\nDo you ship abroad?\tYes, to the EU.\n",
			want: []Block{{Kind: TableRow, Text: "Question: Do you ship abroad?; Answer: Yes, to the EU."}},
		},
		{
			name: "UTF-16 with tabs",
			in:   "\xff\xfeQ\x00\t\x00A\x00\n\x00x\x00\t\x00y\x00",
			want: []Block{{Kind: TableRow, Text: "Q: x; A: y"}},
		},
		{
			name: "windows-1252 and an unnamed column",
			in:   "Stadt,\nK\xf6ln,Dom\n",
			want: []Block{{Kind: TableRow, Text: "Stadt: Köln; column 2: Dom"}},
		},
		{
			name: "header only",
			in:   "id,name,email\n",
			want: []Block{{Kind: TableRow, Text: "id | name | email"}},
		},
		{
			name: "stray quote inside a field",
			in:   "size,note\n12\",a 12\" pizza\n",
			want: []Block{{Kind: TableRow, Text: `size: 12"; note: a 12" pizza`}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc, err := Extract(FormatCSV, []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			assertBlocks(t, doc.Blocks, tc.want)
			assertClean(t, doc)
		})
	}
}

func TestCSVEmpty(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "\ufeff", ",,\n,,\n"} {
		if _, err := Extract(FormatCSV, []byte(in)); !errors.Is(err, ErrEmpty) {
			t.Errorf("%q: err = %v, want ErrEmpty", in, err)
		}
	}
}
