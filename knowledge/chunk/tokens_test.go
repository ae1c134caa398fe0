package chunk

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
)

func TestCountTokens(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int // cl100k in the comment where it differs
	}{
		{"", 0},
		{"   \t ", 1},
		{"hello", 1},
		{"hello world", 2},
		{"The refund takes 14 days.", 7},
		{"don't", 2},                   // " don" "'t"
		{"e-mail", 3},                  // 2: "e" "-mail"
		{"3.5", 4},                     // 3: a string's start is priced as after a space
		{"1234567", 4},                 // 3: "123" "456" "7", same reason
		{"https://example.com/a/b", 8}, // 6
		{"退款需要十四天", 7},                 // 6
		{"Привет, мир", 5},             // 6
		{"naïve café", 4},
		{"ResponseWriter", 3},           // 2
		{"**Note:** see `cfg.yaml`", 9}, // 8
	} {
		if got := CountTokens(tc.in); got != tc.want {
			t.Errorf("CountTokens(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
	// Long runs without spaces (hashes, base64) grow with their length.
	if n := CountTokens(strings.Repeat("x", 400)); n < 90 || n > 110 {
		t.Errorf("a 400-letter run counts %d tokens, want about 100", n)
	}
}

// TestCountTokensAdditive checks the property the chunker relies on: joining with a
// space adds nothing, and joining with a line break adds exactly what joinCost says.
func TestCountTokensAdditive(t *testing.T) {
	t.Parallel()
	parts := []string{"Hello there.", "Refunds take 14 days", "ResponseWriter", "“quoted”", "42", "naïve café",
		"退款", "- list item", "    indented code", "\tx := 1", "\t\t \ty", "end;", "Привет мир", "😀 ok", "'s", ".com"}
	for _, a := range parts {
		for _, b := range parts {
			if got, want := cost(a+" "+b), cost(a)+cost(b); got != want {
				t.Errorf("cost(%q + space + %q) = %d, want %d", a, b, got, want)
			}
			for _, sep := range []string{"\n", "\n\n"} {
				if got, want := cost(a+sep+b), cost(a)+cost(b)+joinCost(a, true, b); got != want {
					t.Errorf("cost(%q + %q + %q) = %d, want %d", a, sep, b, got, want)
				}
			}
		}
	}
}

// TestCountTokensMatchesCL100K compares the estimate with cl100k's real counts for the
// passages in testdata/cl100k.json (English help-center prose, Markdown and Go code, and
// the same support text in German, French, Spanish, Russian, Chinese and Japanese),
// counted offline with tiktoken's cl100k_base. It guards the fitted prices against
// regressions; the bounds are what the approximation achieves, with a little slack.
func TestCountTokensMatchesCL100K(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/cl100k.json")
	if err != nil {
		t.Fatal(err)
	}
	var samples []struct {
		Kind   string `json:"kind"`
		Text   string `json:"text"`
		CL100K int    `json:"cl100k"`
	}
	if err := json.Unmarshal(b, &samples); err != nil {
		t.Fatal(err)
	}
	type agg struct{ n, actual, est int }
	kinds := map[string]*agg{}
	// Worst acceptable error of one passage, and of the total, per kind.
	// Short passages (a heading) are allowed an error of two tokens.
	bounds := map[string]struct{ each, total float64 }{
		"english": {0.10, 0.04},
		"markup":  {0.20, 0.08},
		"other":   {0.30, 0.15},
	}
	for _, s := range samples {
		est := CountTokens(s.Text)
		rel := float64(est-s.CL100K) / float64(s.CL100K)
		if math.Abs(rel) > bounds[s.Kind].each && abs(est-s.CL100K) > 2 {
			t.Errorf("%s passage %q...: estimate %d, cl100k %d (%+.0f%%)", s.Kind, s.Text[:min(40, len(s.Text))], est, s.CL100K, 100*rel)
		}
		a := kinds[s.Kind]
		if a == nil {
			a = &agg{}
			kinds[s.Kind] = a
		}
		a.n++
		a.actual += s.CL100K
		a.est += est
	}
	for kind, a := range kinds {
		rel := float64(a.est-a.actual) / float64(a.actual)
		t.Logf("%-8s %2d passages: cl100k %5d, estimate %5d (%+.1f%%)", kind, a.n, a.actual, a.est, 100*rel)
		if math.Abs(rel) > bounds[kind].total {
			t.Errorf("%s: total estimate off by %+.1f%%", kind, 100*rel)
		}
	}
}

func abs(x int) int { return max(x, -x) }

func BenchmarkCountTokens(b *testing.B) {
	text := benchText()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		CountTokens(text)
	}
}
