package audio

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// allSamples returns every int16 value, in order, and its raw little-endian bytes.
func allSamples() ([]int16, []byte) {
	s := make([]int16, 1<<16)
	raw := make([]byte, 2<<16)
	for i := range s {
		s[i] = int16(i - 1<<15)
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(s[i]))
	}
	return s, raw
}

// TestG711MatchesSox encodes every 16-bit value and decodes every code, and compares
// with sox byte for byte. sox implements the G.711 reference code; -D stops it from
// dithering on the way down to 8 bits.
func TestG711MatchesSox(t *testing.T) {
	t.Parallel()
	requireTool(t, "sox")
	samples, raw := allSamples()
	dir := t.TempDir()
	in := filepath.Join(dir, "all.s16")
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	codes := make([]byte, 256)
	for i := range codes {
		codes[i] = byte(i)
	}
	codesPath := filepath.Join(dir, "codes.bin")
	if err := os.WriteFile(codesPath, codes, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		encoding string
		encode   func([]byte, []int16) []byte
		decode   func([]int16, []byte) []int16
	}{
		{"ulaw", "mu-law", EncodeUlaw, DecodeUlaw},
		{"alaw", "a-law", EncodeAlaw, DecodeAlaw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := run(t, "sox", "-D", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", in,
				"-t", "raw", "-e", tt.encoding, "-b", "8", "-")
			got := tt.encode(nil, samples)
			if !bytes.Equal(got, want) {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("encode(%d) = %#02x, sox says %#02x", samples[i], got[i], want[i])
					}
				}
				t.Fatalf("length %d, sox %d", len(got), len(want))
			}

			decoded := run(t, "sox", "-t", "raw", "-r", "8000", "-e", tt.encoding, "-b", "8", "-c", "1", codesPath,
				"-t", "raw", "-e", "signed", "-b", "16", "-")
			gotPCM := tt.decode(nil, codes)
			for i, s := range gotPCM {
				if w := int16(binary.LittleEndian.Uint16(decoded[2*i:])); s != w {
					t.Fatalf("decode(%#02x) = %d, sox says %d", i, s, w)
				}
			}
		})
	}
}

func TestG711KnownValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  int
		want int
	}{
		// Silence: μ-law is stored inverted, A-law with even bits inverted.
		{"ulaw(0)", int(LinearToUlaw(0)), 0xFF},
		{"alaw(0)", int(LinearToAlaw(0)), 0xD5},
		// Rounding to 13 bits first: -1 rounds to +0, -5 to -1 (A-law has no zero code).
		{"alaw(-1)", int(LinearToAlaw(-1)), 0xD5},
		{"alaw(-5)", int(LinearToAlaw(-5)), 0x55},
		// Full scale clips to the top code of segment 7.
		{"ulaw(32767)", int(LinearToUlaw(32767)), 0x80},
		{"ulaw(-32768)", int(LinearToUlaw(-32768)), 0x00},
		{"alaw(32767)", int(LinearToAlaw(32767)), 0xAA},
		{"alaw(-32768)", int(LinearToAlaw(-32768)), 0x2A},
		// Decoding gives the midpoint of each step.
		{"ulaw^-1(0xFF)", int(UlawToLinear(0xFF)), 0},
		{"ulaw^-1(0x7F)", int(UlawToLinear(0x7F)), 0},
		{"ulaw^-1(0x80)", int(UlawToLinear(0x80)), 32124},
		{"ulaw^-1(0x00)", int(UlawToLinear(0x00)), -32124},
		{"ulaw^-1(0xFE)", int(UlawToLinear(0xFE)), 8},
		{"alaw^-1(0xD5)", int(AlawToLinear(0xD5)), 8},
		{"alaw^-1(0x55)", int(AlawToLinear(0x55)), -8},
		{"alaw^-1(0xAA)", int(AlawToLinear(0xAA)), 32256},
		{"alaw^-1(0x2A)", int(AlawToLinear(0x2A)), -32256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.got != tt.want {
				t.Errorf("got %d (%#x), want %d (%#x)", tt.got, tt.got, tt.want, tt.want)
			}
		})
	}
}

// TestG711RoundTrip checks that decoding then encoding gives back the code (so a
// G.711 stream survives a trip through linear PCM untouched), and that encoding picks
// one of the two reconstruction levels either side of the sample, within half a step
// plus the rounding to 14 (μ-law) or 13 (A-law) bits.
func TestG711RoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		enc      func(int16) byte
		dec      func(byte) int16
		negZero  int // the one code that does not survive (μ-law has two zeros), or -1
		rounding int // half a step of the encoder's input grid, in 16-bit units
	}{
		{"ulaw", LinearToUlaw, UlawToLinear, 0x7F, 2},
		{"alaw", LinearToAlaw, AlawToLinear, -1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var levels []int
			for c := 0; c < 256; c++ {
				b := byte(c)
				levels = append(levels, int(tt.dec(b)))
				if c == tt.negZero {
					continue
				}
				if got := tt.enc(tt.dec(b)); got != b {
					t.Errorf("enc(dec(%#02x)) = %#02x", b, got)
				}
			}
			slices.Sort(levels)
			levels = slices.Compact(levels)
			samples, _ := allSamples()
			for _, s := range samples {
				x := int(s)
				d := int(tt.dec(tt.enc(s)))
				i, _ := slices.BinarySearch(levels, x) // levels[i-1] < x <= levels[i]
				lo, hi := levels[max(i-1, 0)], levels[min(i, len(levels)-1)]
				if x == hi {
					lo = hi
				}
				if d != lo && d != hi {
					t.Fatalf("dec(enc(%d)) = %d, not one of the neighbouring levels %d, %d", x, d, lo, hi)
				}
				if x < levels[0] || x > levels[len(levels)-1] {
					continue // beyond the outermost level: clipped, checked above
				}
				// The chosen level's step spans at most the larger gap to its
				// neighbours (steps double from one segment to the next, and the
				// decision threshold sits on the segment edge, not mid-gap).
				j, _ := slices.BinarySearch(levels, d)
				step := max(levels[min(j+1, len(levels)-1)]-d, d-levels[max(j-1, 0)])
				if limit := step/2 + tt.rounding; abs(d-x) > limit {
					t.Fatalf("dec(enc(%d)) = %d: error %d > %d", x, d, d-x, limit)
				}
			}
		})
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func TestG711Append(t *testing.T) {
	t.Parallel()
	prefix := []byte{1, 2, 3}
	got := EncodeUlaw(prefix[:3:3], []int16{0, 32767})
	if !bytes.Equal(got, []byte{1, 2, 3, 0xFF, 0x80}) {
		t.Fatalf("EncodeUlaw appended %v", got)
	}
	pcm := DecodeAlaw([]int16{7}, []byte{0xD5, 0x55})
	if len(pcm) != 3 || pcm[0] != 7 || pcm[1] != 8 || pcm[2] != -8 {
		t.Fatalf("DecodeAlaw appended %v", pcm)
	}
}
