package voice

import (
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want completeness
	}{
		{"", unknownText},
		{"   ", unknownText},
		{"I'd like to book a table.", completeText},
		{"Can you help me?", completeText},
		{"That's great!", completeText},
		{`He said "yes."`, completeText},
		{"I think so.", completeText},
		{"book a table", neutralText},
		{"Tuesday at three", neutralText},
		{"I want to book a table and", incompleteText},
		{"I want to book a table and.", incompleteText},
		{"I was thinking, um", incompleteText},
		{"I was thinking, um.", incompleteText},
		{"Uh...", incompleteText},
		{"Let me see…", incompleteText},
		{"My number is,", incompleteText},
		{"It's for my wife but", incompleteText},
		{"It's late so", incompleteText},
		{"It's late, so,", incompleteText},
		{"I need it because", incompleteText},
		{"the reason is -", incompleteText},
	}
	for _, tc := range tests {
		if got := classify(tc.text); got != tc.want {
			t.Errorf("classify(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
}

func TestEndpointDelay(t *testing.T) {
	t.Parallel()
	lo, hi := 300*time.Millisecond, 1500*time.Millisecond
	tests := []struct {
		c    completeness
		want time.Duration
	}{
		{completeText, lo},
		{neutralText, 900 * time.Millisecond},
		{incompleteText, hi},
		{unknownText, hi},
	}
	for _, tc := range tests {
		if got := endpointDelay(tc.c, lo, hi); got != tc.want {
			t.Errorf("endpointDelay(%v) = %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestThresholds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s         float64
		enabled   bool
		minSpeech time.Duration
		minWords  int
	}{
		{0, false, 0, 0},
		{0.1, true, 1100 * time.Millisecond, 3},
		{0.5, true, 700 * time.Millisecond, 2},
		{0.8, true, 400 * time.Millisecond, 1},
		{1, true, 200 * time.Millisecond, 1},
	}
	for _, tc := range tests {
		th := thresholdsFor(tc.s)
		if th.Enabled != tc.enabled || th.MinSpeech != tc.minSpeech || th.MinWords != tc.minWords {
			t.Errorf("thresholdsFor(%v) = %+v, want enabled %v min speech %v min words %d", tc.s, th, tc.enabled, tc.minSpeech, tc.minWords)
		}
	}
}

func TestSubstantiveWords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want int
	}{
		{"", 0},
		{"Mm-hm.", 0},
		{"Uh-huh, yeah.", 0},
		{"Okay, right, I see.", 0},
		{"Got it.", 0},
		{"Stop!", 1},
		{"No, wait.", 2},
		{"Yeah, but what about Friday?", 4},
	}
	for _, tc := range tests {
		if got := substantiveWords(tc.text); got != tc.want {
			t.Errorf("substantiveWords(%q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

func TestCutAtWord(t *testing.T) {
	t.Parallel()
	const s = "Our clinic is open from nine until six."
	tests := []struct {
		frac float64
		want string
	}{
		{0, ""},
		{0.05, ""},          // 2 of 39 runes: not even "Our"
		{0.08, "Our"},       // 3 runes: "Our" just ends
		{0.3, "Our clinic"}, // 12 runes: "is" not finished
		{0.5, "Our clinic is open"},
		{0.99, "Our clinic is open from nine until six."},
		{1, s},
		{1.5, s},
	}
	for _, tc := range tests {
		if got := cutAtWord(s, tc.frac); got != tc.want {
			t.Errorf("cutAtWord(%v) = %q, want %q", tc.frac, got, tc.want)
		}
	}
	if got := cutAtWord("Grüße aus München, bis bald.", 0.7); got != "Grüße aus München," {
		t.Errorf("runes: got %q", got)
	}
}
