package audio

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// opusRoundTrip encodes in (48 kHz) in chunks of chunk samples, decodes every packet
// and returns the decoded audio and the packets' sizes.
func opusRoundTrip(t *testing.T, in []int16, chunk int) ([]int16, []int) {
	t.Helper()
	var out collect
	dec, err := NewOpusDecoder(&out)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	enc, err := NewOpusEncoder(func(p []byte) error {
		sizes = append(sizes, len(p))
		return dec.Decode(p)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(in); i += chunk {
		if err := enc.WriteFrame(Frame{Samples: in[i:min(i+chunk, len(in))], Rate: OpusRate}); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dec.Close(); err != nil {
		t.Fatal(err)
	}
	if out.rate != OpusRate {
		t.Fatalf("decoded at %d Hz", out.rate)
	}
	return out.samples, sizes
}

// align finds the lag (0..maxLag samples) at which b best matches a, judged on the
// window a[from:to], and returns the normalized correlation of all of a with b there.
func align(a, b []int16, from, to, maxLag int) (lag int, corr float64) {
	best := -2.0
	for l := 0; l <= maxLag; l++ {
		if c := correlation(a[from:to], b[from+l:]); c > best {
			best, lag = c, l
		}
	}
	return lag, correlation(a, b[lag:])
}

// correlation is the normalized cross-correlation of a and b at lag 0, over the length
// of the shorter.
func correlation(a, b []int16) float64 {
	n := min(len(a), len(b))
	var ab, aa, bb float64
	for i := 0; i < n; i++ {
		x, y := float64(a[i]), float64(b[i])
		ab += x * y
		aa += x * x
		bb += y * y
	}
	return ab / math.Sqrt(aa*bb+1e-9)
}

// TestOpusRoundTripSpeech codes real speech and checks it survives: same energy, the
// same waveform (Opus at its default bitrate for 48 kHz mono speech is close to
// transparent), delayed by the codec's fixed lookahead.
func TestOpusRoundTripSpeech(t *testing.T) {
	t.Parallel()
	speech := speech16k(t)
	var up collect
	r, err := NewResampler(16000, OpusRate, &up)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFrame(speech); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	in := up.samples

	tests := []struct {
		name  string
		chunk int
	}{
		{"20 ms frames", OpusFrameSamples},
		{"odd chunks", 700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, sizes := opusRoundTrip(t, in, tt.chunk)
			wantPackets := (len(in) + OpusFrameSamples - 1) / OpusFrameSamples
			if len(sizes) != wantPackets {
				t.Fatalf("%d packets for %d samples, want %d", len(sizes), len(in), wantPackets)
			}
			if len(out) != wantPackets*OpusFrameSamples {
				t.Fatalf("decoded %d samples, want %d", len(out), wantPackets*OpusFrameSamples)
			}
			var bytes int
			for _, s := range sizes {
				bytes += s
			}
			kbps := float64(bytes*8) / (float64(len(sizes)) * 0.02) / 1000
			// Opus' lookahead is 6.5 ms (312 samples at 48 kHz) in VoIP mode; search
			// up to 20 ms, on a quarter second of speech.
			lag, corr := align(in, out, OpusRate/2, OpusRate*3/4, 960)
			eIn, eOut := rms(in), rms(out[lag:lag+len(in)-lag])
			gain := 20 * math.Log10(eOut/eIn)
			t.Logf("%d packets, %.1f kbit/s, lag %d samples, correlation %.3f, gain %.2f dB", len(sizes), kbps, lag, corr, gain)
			if corr < 0.9 {
				t.Errorf("correlation %.3f with the input, want >= 0.9", corr)
			}
			if math.Abs(gain) > 1 {
				t.Errorf("energy changed by %.2f dB, want within 1 dB", gain)
			}
			if lag < 100 || lag > 600 {
				t.Errorf("lag %d samples: not Opus' 6.5 ms lookahead", lag)
			}
		})
	}
}

// TestOpusTone checks a 1 kHz tone keeps its pitch and level.
func TestOpusTone(t *testing.T) {
	t.Parallel()
	in := sine(OpusRate, OpusRate, 1000, 8000)
	out, _ := opusRoundTrip(t, in, OpusFrameSamples)
	mid := out[OpusRate/10 : OpusRate*9/10]
	a := goertzelAmp(mid, OpusRate, 1000)
	if math.Abs(20*math.Log10(a/8000)) > 0.5 {
		t.Errorf("tone amplitude %.0f, want 8000 ±0.5 dB", a)
	}
}

func TestOpusErrors(t *testing.T) {
	t.Parallel()
	if _, err := NewOpusEncoder(nil); err == nil {
		t.Error("nil sink accepted")
	}
	if _, err := NewOpusDecoder(nil); err == nil {
		t.Error("nil next accepted")
	}
	boom := errors.New("boom")
	enc, err := NewOpusEncoder(func([]byte) error { return boom })
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.WriteFrame(Frame{Samples: make([]int16, 320), Rate: 16000}); err == nil {
		t.Error("16 kHz frame accepted")
	}
	if err := enc.WriteFrame(Frame{Samples: make([]int16, 960), Rate: OpusRate}); !errors.Is(err, boom) {
		t.Errorf("sink error not returned: %v", err)
	}
	_ = enc.Close()
	if err := enc.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := enc.WriteFrame(Frame{Samples: make([]int16, 960), Rate: OpusRate}); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteFrame after Close = %v", err)
	}

	var out collect
	dec, _ := NewOpusDecoder(&out)
	if err := dec.Decode(nil); err != nil {
		t.Errorf("empty packet: %v", err)
	}
	// Garbage is tolerated a few times in a row (see OpusDecoder), then fails.
	garbage := slices.Repeat([]byte{0xFF}, 40)
	var derr error
	for i := 0; i < 10 && derr == nil; i++ {
		derr = dec.Decode(garbage)
	}
	if derr == nil {
		t.Error("ten corrupt packets in a row decoded without error")
	}
	_ = dec.Close()
	if err := dec.Decode(garbage); !errors.Is(err, ErrClosed) {
		t.Errorf("Decode after Close = %v", err)
	}
}
