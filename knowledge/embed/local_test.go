package embed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
)

func newTestLocal(t testing.TB, dim int) *Local {
	t.Helper()
	l, err := NewLocal(dim)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func embedOne(t testing.TB, e Embedder, text string) []float32 {
	t.Helper()
	v, err := e.Embed(context.Background(), []string{text})
	if err != nil {
		t.Fatal(err)
	}
	return v[0]
}

func TestNewLocal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dim    int
		wantID string
		ok     bool
	}{
		{384, "local:hash-v2:384", true}, // centred (localMeans has 384)
		{64, "local:hash-v1:64", true},
		{768, "local:hash-v1:768", true},
		{4096, "local:hash-v1:4096", true},
		{63, "", false},
		{4097, "", false},
		{0, "", false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.dim), func(t *testing.T) {
			t.Parallel()
			l, err := NewLocal(tc.dim)
			if !tc.ok {
				if err == nil {
					t.Fatalf("NewLocal(%d) succeeded", tc.dim)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.ID() != tc.wantID || l.Dim() != tc.dim {
				t.Errorf("ID, Dim = %q, %d; want %q, %d", l.ID(), l.Dim(), tc.wantID, tc.dim)
			}
			if v := embedOne(t, l, "hello world"); len(v) != tc.dim {
				t.Errorf("len = %d, want %d", len(v), tc.dim)
			}
		})
	}
}

// TestLocalGolden pins the vectors. Stored vectors are compared with query vectors made
// later, by another process, maybe on another machine or Go version: if this test fails,
// the model changed, and localVersion must be bumped (which re-embeds every local
// knowledge base) before updating the golden values.
func TestLocalGolden(t *testing.T) {
	t.Parallel()
	// The first six non-zero components (index:float32 bits) and the sum of all: exact,
	// not approximate, since the vectors are meant to be bit-for-bit reproducible.
	// hash-v1 (uncentred, as at sizes without a reference mean, and the input of
	// centring) and hash-v2 (centred, the default 384).
	cases := []struct {
		model, name, text, want string
	}{
		{"v1", "sentence", "Refunds are issued within 5 business days.",
			"2:0xbce79cb5 9:0xbce79cb5 11:0x3ce79cb5 12:0x3e071b69 15:0x3e071b69 20:0xbce79cb5 sum:0xbfd7ee15"},
		{"v1", "unicode", "Café Ünïcödé ﬁle — don't PANIC!",
			"0:0x3d1a507b 4:0xbd1a507b 14:0x3d9a507b 16:0x3e809866 20:0x3e34088e 24:0x3d9a507b sum:0x3d8834de"},
		{"v1", "cjk", "東京の天気",
			"34:0xbeb88312 51:0x3e81288c 66:0x3eb88312 92:0x3eb88312 136:0x3e81288c 151:0xbe81288c sum:0x3fd43055"},
		{"v1", "chunk", benchChunk,
			"1:0xbd040d4a 2:0x3c3a6d1d 3:0x3bba6d1d 4:0x3c3a6d1d 5:0x3c8bd1d6 6:0xbc439e41 sum:0xbde333e1"},
		{"v1", "empty", "", "0:0x3f800000 sum:0x3f800000"},
		{"v2", "sentence", "Refunds are issued within 5 business days.",
			"0:0x3d087c5a 1:0xbbce48aa 2:0xbce7b259 3:0xbc724ac1 4:0xbba5225e 5:0x3be30376 sum:0xbffcd17f"},
		{"v2", "unicode", "Café Ünïcödé ﬁle — don't PANIC!",
			"0:0x3d8da3ca 1:0xbbc985a9 2:0xb925c85a 3:0xbc6cb2f8 4:0xbd2a1c15 5:0x3bddc5f6 sum:0xbe6729ba"},
		{"v2", "cjk", "東京の天気",
			"0:0x3cf2cd56 1:0xbbb77c23 2:0xb916f1bc 3:0xbc57836c 4:0xbb92e21d 5:0x3bc9ec6a sum:0x3f99e29d"},
		{"v2", "chunk", benchChunk,
			"0:0x3d16cd47 1:0xbd2d9c77 2:0x3c49f274 3:0xbc254493 4:0x3be34c57 5:0x3cd85d27 sum:0xbee69108"},
		{"v2", "empty", "", "0:0x3f800000 sum:0x3f800000"},
	}
	models := map[string][2]*Local{
		// a second instance of each: no state may leak into vectors
		"v1": {{dim: DefaultLocalDim, p: defaultLocalParams}, {dim: DefaultLocalDim, p: defaultLocalParams}},
		"v2": {newTestLocal(t, DefaultLocalDim), newTestLocal(t, DefaultLocalDim)},
	}
	for _, tc := range cases {
		a, b := models[tc.model][0], models[tc.model][1]
		t.Run(tc.model+"/"+tc.name, func(t *testing.T) {
			t.Parallel()
			va, vb := embedOne(t, a, tc.text), embedOne(t, b, tc.text)
			var parts []string
			var sum float32
			for i, x := range va {
				if x != 0 && len(parts) < 6 {
					parts = append(parts, fmt.Sprintf("%d:%#x", i, math.Float32bits(x)))
				}
				sum += x
				if math.Float32bits(x) != math.Float32bits(vb[i]) {
					t.Fatalf("component %d differs between instances: %v vs %v", i, x, vb[i])
				}
			}
			got := strings.Join(append(parts, fmt.Sprintf("sum:%#x", math.Float32bits(sum))), " ")
			if got != tc.want {
				t.Errorf("vector changed (bump localVersion if that is intended):\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestTFWeight(t *testing.T) {
	t.Parallel()
	if tfWeight[0] != 0 {
		t.Errorf("tfWeight[0] = %v", tfWeight[0])
	}
	for tf := 1; tf < len(tfWeight); tf++ {
		want := float32(1 + math.Log(float64(tf)))
		if tfWeight[tf] != want {
			t.Errorf("tfWeight[%d] = %v, want %v", tf, tfWeight[tf], want)
		}
	}
}

func TestLocalUnitNorm(t *testing.T) {
	t.Parallel()
	texts := []string{
		"short",
		"How do I get a refund for an order that arrived damaged?",
		strings.Repeat("the quick brown fox jumps over the lazy dog ", 200),
		strings.Repeat("spam ", 10_000), // one feature, tf far past the cap
		"Ελληνικά, русский, العربية, हिन्दी",
		"the and of to", // stopwords only
		"!!! ... ???",   // no words
		"",
	}
	for _, dim := range []int{64, 384, 1536} {
		l := newTestLocal(t, dim)
		vs, err := l.Embed(context.Background(), texts)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			var ss float64
			for _, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					t.Fatalf("dim %d, text %d: non-finite component", dim, i)
				}
				ss += float64(x) * float64(x)
			}
			if math.Abs(ss-1) > 1e-5 {
				t.Errorf("dim %d, text %d: |v|² = %v", dim, i, ss)
			}
		}
	}
}

// TestLocalSimilarity checks the orderings the model exists for: a text is closer to its
// paraphrase with shared word stems, or its misspelling, than to an unrelated text.
func TestLocalSimilarity(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, a, near, far string
	}{
		{"morphology", "refund", "refunds refunded refunding", "opening hours"},
		{"morphology in sentences", "How can I get my order refunded?", "Refunds are paid to the original card.", "Our stores open at 10am."},
		{"typo", "password reset", "pasword rest", "delivery address"},
		{"accents", "café menu", "Cafe Menu", "battery replacement"},
		{"case and punctuation", "Two-Factor Authentication", "two factor authentication", "gift cards"},
		{"word order", "cancel subscription membership", "membership subscription cancel", "cancel a pre-order"},
		{"stopwords do not count", "the refund of an order", "refund order", "the of an"},
		{"bigram", "credit card payment", "pay by credit card", "card games and credit ratings"},
		{"cjk", "東京の天気", "東京の天気予報", "大阪の地図"},
	}
	l := newTestLocal(t, DefaultLocalDim)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, near, far := embedOne(t, l, tc.a), embedOne(t, l, tc.near), embedOne(t, l, tc.far)
			sn, sf := dot(a, near), dot(a, far)
			if sn <= sf {
				t.Errorf("cos(%q, %q) = %.3f is not above cos(%q, %q) = %.3f", tc.a, tc.near, sn, tc.a, tc.far, sf)
			}
		})
	}
}

func TestLocalMorphologicalVariantsClose(t *testing.T) {
	t.Parallel()
	l := newTestLocal(t, DefaultLocalDim)
	groups := [][]string{
		{"refund", "refunds", "refunded", "refunding"},
		{"deliver", "delivery", "delivered", "deliveries"},
		{"configure", "configured", "configuration"},
	}
	for _, g := range groups {
		base := embedOne(t, l, g[0])
		for _, w := range g[1:] {
			// Single words share only n-grams (no word feature), so 0.3 is a high bar:
			// unrelated single words score around 0 ± 0.1.
			if s := dot(base, embedOne(t, l, w)); s < 0.3 {
				t.Errorf("cos(%q, %q) = %.3f, want ≥ 0.3", g[0], w, s)
			}
		}
	}
}

func TestLocalTokenize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want string // words joined by "|", stopwords marked with "*"
	}{
		{"Hello, World!", "hello|world"},
		{"don't STOP", "dont*|stop"},
		{"customer's order", "customers|order"},
		{"customer’s order", "customers|order"},
		{"'quoted' words", "quoted|words"},
		{"Café naïve Ångström", "cafe|naive|angstrom"},
		{"ﬁle ＡＢＣ ½", "file|abc|1|2"},
		{"e-mail v2.0 #42", "e|mail|v2|0|42"},
		{"東京の天気", "東|京|の|天|気"},
		{"Straße", "straße"},
		{"Привет мир", "привет|мир"},
		{"", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			s := &scratch{}
			s.tokenize(tc.in)
			var got []string
			for _, w := range s.words {
				word := string(s.text[w.start:w.end])
				if w.stop {
					word += "*"
				}
				got = append(got, word)
			}
			if g := strings.Join(got, "|"); g != tc.want {
				t.Errorf("tokenize(%q) = %q, want %q", tc.in, g, tc.want)
			}
		})
	}
}

func TestLocalEmptyInput(t *testing.T) {
	t.Parallel()
	l := newTestLocal(t, DefaultLocalDim)
	got, err := l.Embed(context.Background(), nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("Embed(nil) = %v, %v", got, err)
	}
	e1, e2 := embedOne(t, l, ""), embedOne(t, l, "the of and !!!")
	if e1[0] != 1 || dot(e1, e1) != 1 || dot(e1, e2) != 1 {
		t.Errorf("empty texts should all map to the first basis vector")
	}
}

func TestLocalCancelled(t *testing.T) {
	t.Parallel()
	l := newTestLocal(t, DefaultLocalDim)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Embed(ctx, []string{"x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestLocalConcurrent runs with -race: the pooled scratch must never be shared.
func TestLocalConcurrent(t *testing.T) {
	t.Parallel()
	l := newTestLocal(t, DefaultLocalDim)
	texts := make([]string, 50)
	for i := range texts {
		texts[i] = fmt.Sprintf("Passage %d about refunds, deliveries and naïve cafés number %d", i, i*i)
	}
	want, err := l.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 20 {
				i := g % len(texts)
				got, err := l.Embed(context.Background(), texts[i:])
				if err != nil {
					t.Error(err)
					return
				}
				for j := range got {
					for k := range got[j] {
						if got[j][k] != want[i+j][k] {
							t.Errorf("text %d differs when embedded concurrently", i+j)
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
}

// benchChunk is a ~1,200-character chunk (about 250 tokens), the size the chunker makes.
const benchChunk = `Billing > Refunds
If you are not happy with your purchase, you can request a refund within 30 days of delivery. ` +
	`Refunds are issued to the original payment method once we have received and inspected the returned item, ` +
	`usually within 5 to 7 business days. Shipping fees are refunded only if the item arrived faulty or damaged. ` +
	`To start a return, open Account > Orders, choose the order and select "Return items". Print the prepaid label, ` +
	`attach it to the parcel and drop it at any post office or parcel locker. You can follow the progress of your ` +
	`return on the same page. Items must be unused, in their original packaging and with all tags attached. ` +
	`Personalised products, gift cards, opened software and perishable goods cannot be returned unless faulty. ` +
	`If you paid with a gift card, the refund is issued as a new gift card. If you paid in instalments with Klarna, ` +
	`Klarna adjusts your remaining payments. For orders delivered outside the UK, customs duties are not refundable. ` +
	`If your refund has not arrived after ten business days, contact our customer service team by phone or chat.`

func BenchmarkLocalEmbed(b *testing.B) {
	l := newTestLocal(b, DefaultLocalDim)
	ctx := context.Background()
	for _, n := range []int{1, 64} {
		texts := make([]string, n)
		for i := range texts {
			texts[i] = fmt.Sprintf("%d %s", i, benchChunk) // distinct texts
		}
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n * len(benchChunk)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.Embed(ctx, texts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/chunk")
		})
	}
	b.Run("unicode", func(b *testing.B) {
		text := strings.NewReplacer("e", "é", "a", "ä").Replace(benchChunk)
		b.SetBytes(int64(len(text)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Embed(ctx, []string{text}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
