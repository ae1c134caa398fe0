package extract

import "testing"

func TestHasOrdinal(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"1. Open": true, "12) Close": true, "1.2. Nested": true, "a. Letter": true, "B) Upper": true,
		"iv. Roman": true, "2019. The year": false, "1.2 No dot": false, "Mr. Smith": false,
		"e.g. this": false, "1.": false, "10.000 people": false, "-1. no": false,
	} {
		if got := hasOrdinal(in); got != want {
			t.Errorf("hasOrdinal(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestBulletPrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		"• item": len("• "), "•item": len("•"), "- item": 2, "* item": 2, "\uF0B7 item": len("\uF0B7 "),
		"-5 °C": 0, "*important*": 0, "item": 0, "-": 0,
	} {
		if got := bulletPrefix(in); got != want {
			t.Errorf("bulletPrefix(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestIsPageNumber(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"7": true, "- 7 -": true, "Page 7": true, "Page 7 of 12": true, "7/12": true, "vii": true, "[3]": true,
		"Seite 4 von 9": true, "Introduction": false, "7 Introduction": false, "2024 Annual Report": false,
	} {
		if got := isPageNumber(in); got != want {
			t.Errorf("isPageNumber(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestDropLeaders(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"1 Introduction : : : : : : : 1":   "1 Introduction 1",
		"Setup .................... 4":     "Setup 4",
		"Billing . . . . . . . 12":         "Billing 12",
		"Wait... what? e.g. 3.5 and so on": "Wait... what? e.g. 3.5 and so on",
	} {
		if got := dropLeaders(in); got != want {
			t.Errorf("dropLeaders(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestListNumbers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n      int
		format string
		want   string
	}{
		{3, "decimal", "3"}, {3, "lowerLetter", "c"}, {28, "upperLetter", "BB"}, {4, "lowerRoman", "iv"},
		{1994, "upperRoman", "MCMXCIV"}, {0, "lowerLetter", "0"}, {5, "chineseCounting", "5"},
	} {
		if got := formatNumber(tc.n, tc.format); got != tc.want {
			t.Errorf("formatNumber(%d, %s) = %q, want %q", tc.n, tc.format, got, tc.want)
		}
	}
}
