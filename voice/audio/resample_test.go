package audio

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// resampleAll pushes in through a fresh resampler in chunks of the given sizes (cycled;
// nil means one chunk) and returns everything that comes out, Close included.
func resampleAll(t testing.TB, inRate, outRate int, q ResampleQuality, in []int16, chunks []int) []int16 {
	t.Helper()
	var c collect
	r, err := NewResamplerQuality(inRate, outRate, q, &c)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := 0, 0; i < len(in); k++ {
		n := len(in)
		if len(chunks) > 0 {
			n = chunks[k%len(chunks)]
		}
		n = min(n, len(in)-i)
		// Copy into a scratch buffer that is then scribbled over, as a caller reusing
		// its buffer would: the resampler must not keep the caller's slice.
		buf := slices.Clone(in[i : i+n])
		if err := r.WriteFrame(Frame{Samples: buf, Rate: inRate}); err != nil {
			t.Fatal(err)
		}
		clear(buf)
		i += n
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if c.rate != 0 && c.rate != outRate {
		t.Fatalf("output frames at %d Hz, want %d", c.rate, outRate)
	}
	return c.samples
}

var resamplePairs = []struct{ in, out int }{
	{48000, 16000}, {16000, 48000}, {8000, 16000}, {16000, 8000},
	{24000, 48000}, {48000, 24000}, {22050, 16000}, {16000, 22050},
	{24000, 16000}, {44100, 48000}, {8000, 48000},
}

// TestResampleSine checks that a tone keeps its frequency and amplitude, that the
// output has the right length, and that nothing else appears in the spectrum.
func TestResampleSine(t *testing.T) {
	t.Parallel()
	for _, q := range []ResampleQuality{QualityHigh, QualityLow} {
		for _, p := range resamplePairs {
			name := map[ResampleQuality]string{QualityHigh: "high", QualityLow: "low"}[q]
			t.Run(fmt.Sprintf("%s/%d-%d", name, p.in, p.out), func(t *testing.T) {
				t.Parallel()
				const amp = 10000.0
				const freq = 1000.0 // inside every passband, even LQ's from 8 kHz
				in := sine(p.in, p.in, freq, amp)
				out := resampleAll(t, p.in, p.out, q, in, []int{p.in / 50})

				if want := p.out; abs(len(out)-want) > 1 {
					t.Fatalf("%d samples out, want %d", len(out), want)
				}
				// Measure away from the edges, where the filter starts and stops.
				mid := out[p.out/10 : p.out*9/10]
				a := goertzelAmp(mid, p.out, freq)
				if math.Abs(a-amp)/amp > 0.01 {
					t.Errorf("amplitude at %v Hz is %.0f, want %.0f ±1%%", freq, a, amp)
				}
				// All the power should be in the tone: compare total RMS with the
				// tone's. The rest (noise, images, distortion) must be 80 dB down; a
				// -10 dBFS tone in 16 bits cannot do better than about 88 dB, since
				// rounding to 16 bits alone costs that.
				total := rms(mid)
				resid := math.Sqrt(math.Max(total*total-a*a/2, 0))
				snr := 20 * math.Log10(a/math.Sqrt2/math.Max(resid, 1e-9))
				t.Logf("%d samples, amplitude %.1f, SINAD %.1f dB", len(out), a, snr)
				if snr < 80 {
					t.Errorf("signal to noise+distortion %.1f dB, want >= 80", snr)
				}
				// Frequency: a 3% offset would show as a big drop in the Goertzel bin
				// at 1 kHz and a rise at the offset frequency.
				for _, off := range []float64{freq * 0.97, freq * 1.03} {
					if g := goertzelAmp(mid, p.out, off); g > amp*0.05 {
						t.Errorf("energy at %.0f Hz: %.0f", off, g)
					}
				}
			})
		}
	}
}

// TestResampleAntiAlias feeds a tone above the output's Nyquist frequency into a
// downsampler: it must be filtered out, not folded back as an alias.
func TestResampleAntiAlias(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, out  int
		freq     float64
		q        ResampleQuality
		minRejDB float64
	}{
		// A tone well inside the stopband must vanish: 90 dB is below what 16-bit
		// output can even represent against a -4 dBFS tone.
		{48000, 16000, 10000, QualityHigh, 90},
		{16000, 8000, 5000, QualityHigh, 90},
		{22050, 16000, 9000, QualityHigh, 90},
		{48000, 16000, 10000, QualityLow, 90},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d@%.0f", tt.in, tt.out, tt.freq), func(t *testing.T) {
			t.Parallel()
			const amp = 20000.0
			out := resampleAll(t, tt.in, tt.out, tt.q, sine(tt.in, tt.in, tt.freq, amp), nil)
			mid := out[tt.out/10 : tt.out*9/10]
			alias := float64(tt.out) - tt.freq
			rej := 20 * math.Log10(amp/math.Max(goertzelAmp(mid, tt.out, alias), 1e-9))
			t.Logf("alias %.1f dB down, output RMS %.2f", rej, rms(mid))
			if rej < tt.minRejDB {
				t.Errorf("alias at %.0f Hz only %.1f dB down, want %.0f", alias, rej, tt.minRejDB)
			}
			if r := rms(mid); r > amp*math.Pow(10, -tt.minRejDB/20) {
				t.Errorf("output RMS %.1f: the tone leaked through", r)
			}
		})
	}
}

// TestResampleChunkingIsSeamless checks that cutting the input into chunks of odd,
// random sizes gives exactly the output of resampling it in one go: no clicks, no
// dropped or repeated samples at chunk boundaries.
func TestResampleChunkingIsSeamless(t *testing.T) {
	t.Parallel()
	speech := speech16k(t)
	for _, p := range resamplePairs {
		t.Run(fmt.Sprintf("%d-%d", p.in, p.out), func(t *testing.T) {
			t.Parallel()
			// Real speech at the input rate (sox-quality conversion of the fixture).
			in := resampleAll(t, 16000, p.in, QualityHigh, speech.Samples, nil)
			whole := resampleAll(t, p.in, p.out, QualityHigh, in, nil)
			rng := rand.New(rand.NewPCG(1, uint64(p.in)))
			chunks := make([]int, 64)
			for i := range chunks {
				chunks[i] = 1 + rng.IntN(p.in/25) // 1 sample to 40 ms
			}
			chunked := resampleAll(t, p.in, p.out, QualityHigh, in, chunks)
			framed := resampleAll(t, p.in, p.out, QualityHigh, in, []int{p.in / 50})
			if !slices.Equal(whole, chunked) {
				t.Errorf("random chunks: %d samples, one-shot %d; first difference at %d",
					len(chunked), len(whole), firstDiff(whole, chunked))
			}
			if !slices.Equal(whole, framed) {
				t.Errorf("20 ms frames: %d samples, one-shot %d; first difference at %d",
					len(framed), len(whole), firstDiff(whole, framed))
			}
		})
	}
}

func firstDiff(a, b []int16) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestResampleStreams checks Flush (end a stream, start an unrelated one), Reset, Delay
// and the pass-through case.
func TestResampleStreams(t *testing.T) {
	t.Parallel()
	a := sine(48000, 4800, 440, 8000)
	b := sine(48000, 4800, 700, 8000)
	freshB := resampleAll(t, 48000, 16000, QualityHigh, b, nil)

	t.Run("flush starts a fresh stream", func(t *testing.T) {
		t.Parallel()
		var c collect
		r, err := NewResampler(48000, 16000, &c)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		_ = r.WriteFrame(Frame{Samples: a, Rate: 48000})
		if r.Delay() <= 0 || r.Delay() > 50*time.Millisecond {
			t.Errorf("delay while streaming %v, want (0, 50ms]", r.Delay())
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		if len(c.samples) != 1600 {
			t.Fatalf("first stream gave %d samples after Flush, want 1600", len(c.samples))
		}
		if r.Delay() != 0 {
			t.Errorf("delay after Flush %v", r.Delay())
		}
		c.samples = nil
		_ = r.WriteFrame(Frame{Samples: b, Rate: 48000})
		_ = r.Flush()
		if !slices.Equal(c.samples, freshB) {
			t.Fatal("the stream after Flush differs from a fresh resampler's output")
		}
	})
	t.Run("reset drops the tail", func(t *testing.T) {
		t.Parallel()
		var c collect
		r, _ := NewResampler(48000, 16000, &c)
		defer r.Close()
		_ = r.WriteFrame(Frame{Samples: a, Rate: 48000})
		n := len(c.samples)
		if n >= 1600 {
			t.Fatalf("nothing held back (%d samples out)", n)
		}
		r.Reset()
		_ = r.WriteFrame(Frame{Samples: b, Rate: 48000})
		_ = r.Flush()
		if !slices.Equal(c.samples[n:], freshB) {
			t.Fatal("the stream after Reset differs from a fresh resampler's output")
		}
	})
	t.Run("pass-through", func(t *testing.T) {
		t.Parallel()
		var got []Frame
		r, err := NewResampler(16000, 16000, WriterFunc(func(f Frame) error { got = append(got, f); return nil }))
		if err != nil {
			t.Fatal(err)
		}
		in := []int16{1, 2, 3}
		_ = r.WriteFrame(Frame{Samples: in, Rate: 16000})
		if len(got) != 1 || &got[0].Samples[0] != &in[0] || r.Delay() != 0 {
			t.Fatal("equal rates did not pass through")
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestResampleErrors(t *testing.T) {
	t.Parallel()
	sink := WriterFunc(func(Frame) error { return nil })
	for _, tt := range []struct {
		name    string
		in, out int
		next    Writer
	}{
		{"zero in", 0, 16000, sink},
		{"negative out", 16000, -1, sink},
		{"absurd rate", 16000, 10_000_000, sink},
		{"nil next", 16000, 8000, nil},
	} {
		if _, err := NewResampler(tt.in, tt.out, tt.next); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}

	boom := errors.New("boom")
	r, err := NewResampler(8000, 16000, WriterFunc(func(Frame) error { return boom }))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFrame(Frame{Samples: make([]int16, 160), Rate: 16000}); err == nil {
		t.Error("a frame at the wrong rate was accepted")
	}
	if err := r.WriteFrame(Frame{Rate: 8000}); err != nil {
		t.Errorf("empty frame: %v", err)
	}
	var werr error
	for i := 0; i < 10 && werr == nil; i++ {
		werr = r.WriteFrame(Frame{Samples: make([]int16, 160), Rate: 8000})
	}
	if !errors.Is(werr, boom) {
		t.Errorf("next's error not returned: %v", werr)
	}
	if err := r.Close(); !errors.Is(err, boom) {
		t.Errorf("Close flushing into a failing next = %v, want boom", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := r.WriteFrame(Frame{Samples: make([]int16, 160), Rate: 8000}); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteFrame after Close = %v", err)
	}
	if err := r.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v", err)
	}
	r.Reset() // harmless after Close
}

// TestResampleTimeline checks that resampling does not shift audio in time: soxr holds
// back its filter delay and trims it, so a burst at 500 ms of input is at 500 ms of
// output. Offsets computed downstream (VAD speech boundaries) rely on it.
func TestResampleTimeline(t *testing.T) {
	t.Parallel()
	for _, q := range []ResampleQuality{QualityHigh, QualityLow} {
		for _, p := range resamplePairs {
			t.Run(fmt.Sprintf("%d/%d-%d", q, p.in, p.out), func(t *testing.T) {
				t.Parallel()
				// A 20 ms parabolic bump centred at 500 ms.
				in := make([]int16, p.in)
				half := p.in / 100
				for i := -half; i < half; i++ {
					x := float64(i) / float64(half)
					in[p.in/2+i] = int16(10000 * (1 - x*x))
				}
				out := resampleAll(t, p.in, p.out, q, in, []int{p.in / 50})
				var num, den float64
				for i, s := range out {
					e := float64(s) * float64(s)
					num += e * float64(i)
					den += e
				}
				at := time.Duration(num / den * float64(time.Second) / float64(p.out))
				if d := at - 500*time.Millisecond; d < -500*time.Microsecond || d > 500*time.Microsecond {
					t.Errorf("burst centred at %v, want 500ms ±0.5ms", at)
				}
			})
		}
	}
}
