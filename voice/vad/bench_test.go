package vad

import (
	"fmt"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// reportPerAudioSecond reports CPU nanoseconds per second of audio ("ns/audio-s") and
// how many real-time streams one core could run ("streams/core"), for a benchmark
// whose every iteration processes d of audio.
func reportPerAudioSecond(b *testing.B, d time.Duration) {
	b.Helper()
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	perSec := perOp * float64(time.Second) / float64(d)
	b.ReportMetric(perSec, "ns/audio-s")
	b.ReportMetric(float64(time.Second)/perSec, "streams/core")
}

// BenchmarkDetector runs real speech in noise (pink20.wav, looped) through a Detector.
func BenchmarkDetector(b *testing.B) {
	src := fixture(b, "pink20.wav")
	tests := []struct {
		rate  int
		frame time.Duration
	}{
		{16000, 20 * time.Millisecond},
		{16000, 10 * time.Millisecond},
		{16000, 30 * time.Millisecond},
		{8000, 20 * time.Millisecond},
		{48000, 20 * time.Millisecond},
		{24000, 20 * time.Millisecond}, // resampled to 16 kHz inside
	}
	for _, tt := range tests {
		b.Run(fmt.Sprintf("%dk/%v", tt.rate/1000, tt.frame), func(b *testing.B) {
			f := resampled(b, src, tt.rate)
			d, err := NewDetector(Config{SampleRate: tt.rate, FrameDuration: tt.frame})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			n := d.FrameSamples()
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if i+n > len(f.Samples) {
					i = 0
				}
				if _, err := d.Process(audio.Frame{Samples: f.Samples[i : i+n], Rate: tt.rate}); err != nil {
					b.Fatal(err)
				}
				i += n
			}
			reportPerAudioSecond(b, tt.frame)
		})
	}
}
