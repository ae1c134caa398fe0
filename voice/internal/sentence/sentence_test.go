package sentence

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// split runs text through a Splitter in fragments of the given size (0: all at once)
// and returns every piece, the flushed remainder included.
func split(sp Splitter, text string, fragment int) []string {
	var out []string
	if fragment <= 0 {
		out = append(out, sp.Push(text)...)
	} else {
		for len(text) > 0 {
			n := 0
			for i := 0; i < fragment && n < len(text); i++ {
				_, size := utf8.DecodeRuneInString(text[n:])
				n += size
			}
			out = append(out, sp.Push(text[:n])...)
			text = text[n:]
		}
	}
	return append(out, sp.Flush()...)
}

func TestSplitter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		first bool
		text  string
		want  []string
	}{
		{"two sentences", false, "Hello there. How are you?", []string{"Hello there.", "How are you?"}},
		{"exclamation and question", false, "Great! Is that all? Yes.", []string{"Great!", "Is that all?", "Yes."}},
		{"title abbreviation", false, "Dr. Smith will see you. Mrs. Jones too.", []string{"Dr. Smith will see you.", "Mrs. Jones too."}},
		{"latin abbreviation", false, "Bring an ID, e.g. a passport. Thanks.", []string{"Bring an ID, e.g. a passport.", "Thanks."}},
		{"i.e. before upper case", false, "Use the portal, i.e. Parley Cloud. Then call.", []string{"Use the portal, i.e. Parley Cloud.", "Then call."}},
		{"decimal", false, "It costs 3.5 dollars. Okay?", []string{"It costs 3.5 dollars.", "Okay?"}},
		{"url", false, "Visit www.parley.ai/help today. It is free.", []string{"Visit www.parley.ai/help today.", "It is free."}},
		{"url at sentence end", false, "Go to example.com. Then log in.", []string{"Go to example.com.", "Then log in."}},
		{"initials", false, "Ask J. R. Smith. He knows.", []string{"Ask J. R. Smith.", "He knows."}},
		{"dotted acronym", false, "She moved to the U.S. Army base. Nice.", []string{"She moved to the U.S. Army base.", "Nice."}},
		{"number abbreviation", false, "Room No. 5 is free. Come.", []string{"Room No. 5 is free.", "Come."}},
		{"lower case after period", false, "Bring snacks, drinks etc. and chairs. Done.", []string{"Bring snacks, drinks etc. and chairs.", "Done."}},
		{"ellipsis", false, "Well... Let me think. Okay.", []string{"Well...", "Let me think.", "Okay."}},
		{"ellipsis mid sentence", false, "So... maybe later. Bye.", []string{"So... maybe later.", "Bye."}},
		{"quote after period", false, `He said "yes." Then he left.`, []string{`He said "yes."`, "Then he left."}},
		{"newline list", false, "Options:\n1. Book a flight.\n2. Cancel it.", []string{"Options:", "1. Book a flight.", "2. Cancel it."}},
		{"no terminator", false, "just some words", []string{"just some words"}},
		{"first clause cut", true, "Your appointment on Tuesday, at three in the afternoon, is confirmed. See you.",
			[]string{"Your appointment on Tuesday,", "at three in the afternoon, is confirmed.", "See you."}},
		{"first clause too short", true, "Sure, I can help with that. Anything else?",
			[]string{"Sure, I can help with that.", "Anything else?"}},
		{"clause cut off", false, "Your appointment on Tuesday, at three, is confirmed.",
			[]string{"Your appointment on Tuesday, at three, is confirmed."}},
		{"thousands comma", true, "We have 1,000 seats left in the hall. Hurry.", []string{"We have 1,000 seats left in the hall.", "Hurry."}},
		{"cjk", false, "你好。今天怎么样？", []string{"你好。", "今天怎么样？"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, frag := range []int{0, 1, 3, 7} {
				got := split(Splitter{FirstClause: tc.first}, tc.text, frag)
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("fragment %d:\n got %q\nwant %q", frag, got, tc.want)
				}
			}
		})
	}
}

func TestSplitterWaitsForNextWord(t *testing.T) {
	t.Parallel()
	var sp Splitter
	if got := sp.Push("Call Dr."); got != nil {
		t.Fatalf("cut before seeing the next word: %q", got)
	}
	if got := sp.Push(" "); got != nil {
		t.Fatalf("cut on a bare space: %q", got)
	}
	if got := sp.Push("Smith now. "); got != nil {
		t.Fatalf("cut before the word after the period: %q", got)
	}
	if got := sp.Push("Bye"); !reflect.DeepEqual(got, []string{"Call Dr. Smith now."}) {
		t.Fatalf("got %q", got)
	}
	if got := sp.Flush(); !reflect.DeepEqual(got, []string{"Bye"}) {
		t.Fatalf("flush: %q", got)
	}
}

func TestSplitterForcedCut(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("word ", 40) + "and more, " + strings.Repeat("other ", 20)
	sp := Splitter{MaxChars: 100}
	got := split(sp, long, 5)
	if len(got) < 3 {
		t.Fatalf("run-on text was not cut: %d pieces", len(got))
	}
	for _, p := range got {
		if len(p) > 100 {
			t.Errorf("piece of %d chars exceeds MaxChars", len(p))
		}
	}
	if strings.Join(strings.Fields(strings.Join(got, " ")), " ") != strings.Join(strings.Fields(long), " ") {
		t.Error("forced cuts lost or changed words")
	}
}

func TestSplitterFirstClauseOnlyOnce(t *testing.T) {
	t.Parallel()
	sp := Splitter{FirstClause: true}
	got := split(sp, "One two three four, five. Six seven eight nine, ten.", 2)
	want := []string{"One two three four,", "five.", "Six seven eight nine, ten."}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
	// After Flush the splitter starts a new answer, first clause included.
	got = split(sp, "Alpha beta gamma delta, epsilon.", 0)
	want = []string{"Alpha beta gamma delta,", "epsilon."}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after flush: got %q want %q", got, want)
	}
}

func TestSpeakable(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"Plain text.", "Plain text."},
		{"This is **very** important.", "This is very important."},
		{"- First item", "First item"},
		{"## Opening hours", "Opening hours"},
		{"Run `make` now.", "Run make now."},
		{"A well-known fact.", "A well-known fact."},
		{"__bold__ text", "bold text"},
	}
	for _, tc := range tests {
		if got := Speakable(tc.in); got != tc.want {
			t.Errorf("Speakable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
