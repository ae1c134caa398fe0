package audio

import (
	"errors"
	"math"
	"slices"
	"testing"

	libopus "gopkg.in/hraban/opus.v2"
)

// opusRoundTrip encodes in (48 kHz) in chunks of chunk samples with the settings of cfg,
// decodes every packet and returns the decoded audio and the packets' sizes.
func opusRoundTrip(t *testing.T, cfg OpusEncoderConfig, in []int16, chunk int) ([]int16, []int) {
	t.Helper()
	var out collect
	dec, err := NewOpusDecoder(&out)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	enc, err := NewOpusEncoderConfig(cfg, func(p []byte) error {
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

// speech48k returns the speech fixture resampled to OpusRate.
func speech48k(t *testing.T) []int16 {
	t.Helper()
	var up collect
	r, err := NewResampler(16000, OpusRate, &up)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFrame(speech16k(t)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return up.samples
}

// TestOpusRoundTripSpeech codes real speech and checks it survives: about the same
// energy, about the same waveform, delayed by the codec's fixed lookahead. Opus is a
// perceptual codec, so the waveform is not kept exactly, but SILK (which codes speech
// up to 8 kHz, and all of this 16 kHz fixture) follows it closely: a correlation under
// 0.9 or a level off by more than 1 dB means audibly damaged speech. The default
// settings (see OpusEncoderConfig) measure 0.95 and -0.6 dB; the cases after them
// check that the other ends of the knobs stay acceptable too.
func TestOpusRoundTripSpeech(t *testing.T) {
	t.Parallel()
	in := speech48k(t)
	tests := []struct {
		name           string
		cfg            OpusEncoderConfig
		chunk          int
		minKbps, maxKb float64 // bounds on the bitrate spent, 0 for none
	}{
		// VBR on speech with FEC spends a little under the target (measured: 27.5).
		{"default/20 ms frames", OpusEncoderConfig{}, OpusFrameSamples, 22, 34},
		{"default/odd chunks", OpusEncoderConfig{}, 700, 22, 34},
		{"complexity 0", OpusEncoderConfig{Complexity: -1}, OpusFrameSamples, 0, 0},
		{"complexity 10", OpusEncoderConfig{Complexity: 10}, OpusFrameSamples, 0, 0},
		{"no FEC", OpusEncoderConfig{DisableFEC: true}, OpusFrameSamples, 0, 0},
		{"24 kbit/s", OpusEncoderConfig{Bitrate: 24000}, OpusFrameSamples, 16, 26},
		{"64 kbit/s", OpusEncoderConfig{Bitrate: 64000}, OpusFrameSamples, 48, 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, sizes := opusRoundTrip(t, tt.cfg, in, tt.chunk)
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
			if tt.maxKb > 0 && (kbps < tt.minKbps || kbps > tt.maxKb) {
				t.Errorf("%.1f kbit/s, want %.0f to %.0f: the bitrate setting did not take", kbps, tt.minKbps, tt.maxKb)
			}
		})
	}
}

// TestOpusFEC loses every tenth packet of real speech and recovers it the way a WebRTC
// receiver does: from the in-band FEC data in the next packet, else by concealment.
// With the default settings FEC must bring the lost frames back (measured: correlation
// 0.89 with the input, concealment alone 0.68); with FEC disabled, or with a loss hint
// of 5% or less (see OpusEncoderConfig.PacketLossPercent), there is nothing to recover
// from and the lost frames sound as concealment makes them.
func TestOpusFEC(t *testing.T) {
	t.Parallel()
	in := speech48k(t)
	lostCorr := func(t *testing.T, cfg OpusEncoderConfig, useFEC bool) float64 {
		t.Helper()
		var packets [][]byte
		enc, err := NewOpusEncoderConfig(cfg, func(p []byte) error {
			packets = append(packets, append([]byte(nil), p...))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := enc.WriteFrame(Frame{Samples: in, Rate: OpusRate}); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		dec, err := libopus.NewDecoder(OpusRate, 1)
		if err != nil {
			t.Fatal(err)
		}
		var out []int16
		var lost []int // the first output sample of each lost frame
		pcm := make([]int16, OpusFrameSamples)
		for i, p := range packets {
			if i%10 == 5 && i+1 < len(packets) {
				lost = append(lost, len(out))
				if useFEC {
					err = dec.DecodeFEC(packets[i+1], pcm)
				} else {
					err = dec.DecodePLC(pcm)
				}
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, pcm...)
				continue
			}
			n, err := dec.Decode(p, pcm)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pcm[:n]...)
		}
		lag, _ := align(in, out, OpusRate/2, OpusRate*3/4, 960)
		var a, b []int16
		for _, start := range lost {
			if start >= lag {
				a = append(a, in[start-lag:start-lag+OpusFrameSamples]...)
				b = append(b, out[start:start+OpusFrameSamples]...)
			}
		}
		return correlation(a, b)
	}
	fec, plc := lostCorr(t, OpusEncoderConfig{}, true), lostCorr(t, OpusEncoderConfig{}, false)
	t.Logf("lost frames: correlation %.3f recovered by FEC, %.3f by concealment", fec, plc)
	if fec < 0.8 || fec < plc+0.1 {
		t.Errorf("FEC recovered lost frames to correlation %.3f (concealment %.3f), want >= 0.8 and well above", fec, plc)
	}
	for _, cfg := range []OpusEncoderConfig{{DisableFEC: true}, {PacketLossPercent: 5}} {
		if c := lostCorr(t, cfg, true); c > plc+0.05 {
			t.Errorf("%+v: lost frames recovered to %.3f: FEC data where none was expected", cfg, c)
		}
	}
}

// TestOpusDTX checks that DTX, off by default, turns silence into the empty packets
// that mean "nothing to play".
func TestOpusDTX(t *testing.T) {
	t.Parallel()
	silence := make([]int16, OpusRate) // 1 s
	for _, dtx := range []bool{false, true} {
		_, sizes := opusRoundTrip(t, OpusEncoderConfig{DTX: dtx}, silence, OpusFrameSamples)
		empty := 0
		for _, s := range sizes {
			if s <= 2 {
				empty++
			}
		}
		if dtx && empty < len(sizes)/2 || !dtx && empty > 0 {
			t.Errorf("DTX %v: %d of %d packets of silence empty", dtx, empty, len(sizes))
		}
	}
}

func TestOpusEncoderConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     OpusEncoderConfig
		want    OpusEncoderConfig // after withDefaults
		wantErr bool
	}{
		{"defaults", OpusEncoderConfig{}, OpusEncoderConfig{Bitrate: 32000, Complexity: 1, PacketLossPercent: 10}, false},
		{"negative means zero", OpusEncoderConfig{Complexity: -1, PacketLossPercent: -1}, OpusEncoderConfig{Bitrate: 32000, PacketLossPercent: 0}, false},
		{"explicit", OpusEncoderConfig{Bitrate: 64000, Complexity: 10, PacketLossPercent: 30, DisableFEC: true, DTX: true},
			OpusEncoderConfig{Bitrate: 64000, Complexity: 10, PacketLossPercent: 30, DisableFEC: true, DTX: true}, false},
		{"bitrate too low", OpusEncoderConfig{Bitrate: 5999}, OpusEncoderConfig{}, true},
		{"bitrate too high", OpusEncoderConfig{Bitrate: 510001}, OpusEncoderConfig{}, true},
		{"complexity 11", OpusEncoderConfig{Complexity: 11}, OpusEncoderConfig{}, true},
		{"loss over 100%", OpusEncoderConfig{PacketLossPercent: 101}, OpusEncoderConfig{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := NewOpusEncoderConfig(tt.cfg, func([]byte) error { return nil })
			if tt.wantErr {
				if err == nil {
					t.Error("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.cfg.withDefaults(); got != tt.want {
				t.Errorf("withDefaults = %+v, want %+v", got, tt.want)
			}
			// The settings must reach libopus.
			bitrate, err1 := e.enc.Bitrate()
			complexity, err2 := e.enc.Complexity()
			loss, err3 := e.enc.PacketLossPerc()
			fec, err4 := e.enc.InBandFEC()
			dtx, err5 := e.enc.DTX()
			if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
				t.Fatal(err)
			}
			got := OpusEncoderConfig{Bitrate: bitrate, Complexity: complexity, PacketLossPercent: loss, DisableFEC: !fec, DTX: dtx}
			if got != tt.want {
				t.Errorf("libopus runs with %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestOpusTone checks a 1 kHz tone keeps its pitch and level.
func TestOpusTone(t *testing.T) {
	t.Parallel()
	in := sine(OpusRate, OpusRate, 1000, 8000)
	out, _ := opusRoundTrip(t, OpusEncoderConfig{}, in, OpusFrameSamples)
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
