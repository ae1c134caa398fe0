package audio

import (
	"fmt"
	"testing"
	"time"

	lkopus "github.com/livekit/media-sdk/opus"
	"github.com/livekit/protocol/logger"
)

// reportPerAudioSecond reports a benchmark whose every iteration processes d of audio
// as CPU nanoseconds per second of audio ("ns/audio-s"), and as how many real-time
// streams one core could run ("streams/core"): the figures capacity planning needs.
func reportPerAudioSecond(b *testing.B, d time.Duration) {
	b.Helper()
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	perSec := perOp * float64(time.Second) / float64(d)
	b.ReportMetric(perSec, "ns/audio-s")
	b.ReportMetric(float64(time.Second)/perSec, "streams/core")
}

var discard = WriterFunc(func(Frame) error { return nil })

// BenchmarkResample converts 20 ms frames of a tone, the engine's unit of work.
func BenchmarkResample(b *testing.B) {
	pairs := []struct{ in, out int }{{48000, 16000}, {16000, 48000}, {8000, 16000}, {24000, 48000}}
	for _, q := range []struct {
		name string
		q    ResampleQuality
	}{{"high", QualityHigh}, {"low", QualityLow}} {
		for _, p := range pairs {
			b.Run(fmt.Sprintf("%s/%dk-%dk", q.name, p.in/1000, p.out/1000), func(b *testing.B) {
				r, err := NewResamplerQuality(p.in, p.out, q.q, discard)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				frame := Frame{Samples: sine(p.in, p.in/50, 440, 8000), Rate: p.in}
				b.ReportAllocs()
				for b.Loop() {
					if err := r.WriteFrame(frame); err != nil {
						b.Fatal(err)
					}
				}
				reportPerAudioSecond(b, 20*time.Millisecond)
			})
		}
	}
}

// BenchmarkG711 codes 20 ms at 8 kHz (160 samples), a telephone packet.
func BenchmarkG711(b *testing.B) {
	pcm := sine(8000, 160, 440, 8000)
	codes := EncodeUlaw(nil, pcm)
	pcmBuf := make([]int16, 0, 160)
	codeBuf := make([]byte, 0, 160)
	benches := []struct {
		name string
		fn   func()
	}{
		{"ulaw-encode", func() { codeBuf = EncodeUlaw(codeBuf[:0], pcm) }},
		{"ulaw-decode", func() { pcmBuf = DecodeUlaw(pcmBuf[:0], codes) }},
		{"alaw-encode", func() { codeBuf = EncodeAlaw(codeBuf[:0], pcm) }},
		{"alaw-decode", func() { pcmBuf = DecodeAlaw(pcmBuf[:0], codes) }},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bb.fn()
			}
			reportPerAudioSecond(b, 20*time.Millisecond)
		})
	}
}

// BenchmarkOpus encodes and decodes real speech at 48 kHz, 20 ms per packet. The
// encoder runs with the default OpusEncoderConfig ("encode/default"), at every
// complexity from 0 to 10 with the default bitrate, and as LiveKit's media SDK sets it
// up ("encode/livekit-sdk": libopus' defaults, which OpusEncoder replaced), so that one
// run on one machine shows what the complexity knob buys. Encoding is the engine's
// costliest per-call audio stage: every call encodes its agent's voice.
func BenchmarkOpus(b *testing.B) {
	speech := speech16k(b)
	var up collect
	r, err := NewResampler(16000, OpusRate, &up)
	if err != nil {
		b.Fatal(err)
	}
	_ = r.WriteFrame(speech)
	_ = r.Close()
	pcm := up.samples[:len(up.samples)/OpusFrameSamples*OpusFrameSamples]
	frames := len(pcm) / OpusFrameSamples

	var packets [][]byte
	enc, err := NewOpusEncoder(func(p []byte) error {
		packets = append(packets, append([]byte(nil), p...))
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = enc.WriteFrame(Frame{Samples: pcm, Rate: OpusRate})

	// encode feeds the clip to w one 20 ms frame per iteration, looping over it.
	encode := func(b *testing.B, w Writer) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f := pcm[i*OpusFrameSamples : (i+1)*OpusFrameSamples]
			if err := w.WriteFrame(Frame{Samples: f, Rate: OpusRate}); err != nil {
				b.Fatal(err)
			}
			i = (i + 1) % frames
		}
		reportPerAudioSecond(b, OpusFrameDuration)
	}
	nop := func([]byte) error { return nil }
	b.Run("encode/default", func(b *testing.B) {
		e, err := NewOpusEncoder(nop)
		if err != nil {
			b.Fatal(err)
		}
		encode(b, e)
	})
	for c := 0; c <= 10; c++ {
		b.Run(fmt.Sprintf("encode/complexity=%d", c), func(b *testing.B) {
			cfg := OpusEncoderConfig{Complexity: c}
			if c == 0 {
				cfg.Complexity = -1 // zero would select the default
			}
			e, err := NewOpusEncoderConfig(cfg, nop)
			if err != nil {
				b.Fatal(err)
			}
			encode(b, e)
		})
	}
	b.Run("encode/livekit-sdk", func(b *testing.B) {
		e, err := lkopus.Encode(lkPacketSink{}, 1, logger.GetDiscardLogger())
		if err != nil {
			b.Fatal(err)
		}
		encode(b, WriterFunc(func(f Frame) error { return e.WriteSample(f.Samples) }))
	})
	b.Run("decode", func(b *testing.B) {
		d, err := NewOpusDecoder(discard)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := d.Decode(packets[i]); err != nil {
				b.Fatal(err)
			}
			i = (i + 1) % len(packets)
		}
		reportPerAudioSecond(b, OpusFrameDuration)
	})
}

// lkPacketSink discards the packets of the media SDK's encoder.
type lkPacketSink struct{}

func (lkPacketSink) String() string                  { return "discard" }
func (lkPacketSink) SampleRate() int                 { return OpusRate }
func (lkPacketSink) WriteSample(lkopus.Sample) error { return nil }
func (lkPacketSink) Close() error                    { return nil }

// TestSteadyStateAllocs checks that the per-frame paths allocate nothing once warm:
// the engine runs them 50 times a second for every call. Not parallel: AllocsPerRun
// counts the whole process's allocations.
func TestSteadyStateAllocs(t *testing.T) {
	pcm8k := sine(8000, 160, 440, 8000)
	codes := EncodeUlaw(nil, pcm8k)
	pcmBuf := make([]int16, 0, 160)
	codeBuf := make([]byte, 0, 160)

	res, err := NewResampler(8000, 16000, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	ref, err := NewReframer(16000, 20*time.Millisecond, discard)
	if err != nil {
		t.Fatal(err)
	}
	odd := make([]int16, 333)
	enc, err := NewOpusEncoder(func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	pcm48 := Frame{Samples: sine(OpusRate, OpusFrameSamples, 440, 8000), Rate: OpusRate}
	var packet []byte
	_ = (func() error {
		e, _ := NewOpusEncoder(func(p []byte) error { packet = append([]byte(nil), p...); return nil })
		return e.WriteFrame(pcm48)
	})()
	dec, err := NewOpusDecoder(discard)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		fn   func()
	}{
		{"ulaw decode", func() { pcmBuf = DecodeUlaw(pcmBuf[:0], codes) }},
		{"ulaw encode", func() { codeBuf = EncodeUlaw(codeBuf[:0], pcm8k) }},
		{"resample", func() { _ = res.WriteFrame(Frame{Samples: pcm8k, Rate: 8000}) }},
		{"reframe", func() { _ = ref.WriteFrame(Frame{Samples: odd, Rate: 16000}) }},
		{"opus encode", func() { _ = enc.WriteFrame(pcm48) }},
		{"opus decode", func() { _ = dec.Decode(packet) }},
	}
	for _, tt := range tests {
		for range 20 { // warm up: buffers grow to their steady size
			tt.fn()
		}
		if n := testing.AllocsPerRun(200, tt.fn); n != 0 {
			t.Errorf("%s: %.1f allocations per frame", tt.name, n)
		}
	}
}
