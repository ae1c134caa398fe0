package audio

import (
	"errors"
	"fmt"
	"time"

	media "github.com/livekit/media-sdk"
	lkopus "github.com/livekit/media-sdk/opus"
	"github.com/livekit/protocol/logger"
	libopus "gopkg.in/hraban/opus.v2"
)

// Opus as WebRTC (and so LiveKit) carries it: 48 kHz, one 20 ms frame per packet.
const (
	// OpusRate is the sample rate Opus runs at here. Opus codes internally at 48 kHz
	// whatever the input rate, and WebRTC negotiates opus/48000, so the engine
	// resamples to 48 kHz before encoding and from 48 kHz after decoding.
	OpusRate = 48000
	// OpusFrameDuration is the audio in one packet: 20 ms, WebRTC's default ptime, the
	// best trade between packet overhead (50 packets/s) and delay.
	OpusFrameDuration = 20 * time.Millisecond
	// OpusFrameSamples is OpusFrameDuration at OpusRate (960).
	OpusFrameSamples = OpusRate / 50
)

// OpusEncoderConfig configures an OpusEncoder. The zero value of each field selects its
// default. The defaults are chosen for the engine's case: speech (mostly synthesized,
// from TTS at 16-24 kHz) sent to WebRTC and SIP callers, by a worker that must carry
// 200 calls on 2 cores while encoding every one of them.
//
// The numbers below were measured with libopus 1.3.1 (Debian 12) on a 2-core AMD EPYC
// VM, encoding espeak-ng speech resampled to 48 kHz, as thread CPU time per 20 ms frame
// (BenchmarkOpus measures the same in wall time). At 32 kbit/s with in-band FEC and a
// 10% loss hint:
//
//	complexity    0    1    2    3    4    5    6    7    8    9   10
//	µs/frame     63   69  131  137  175  175  240  247  324  331  329
//
// LiveKit's media SDK, which leaves libopus' defaults (complexity 9, about 46 kbit/s on
// speech, no FEC), takes 260 µs. Part of the step from 1 to 2 is the mode: at this
// bitrate libopus codes complexity 0 and 1 as wideband SILK (audio up to 8 kHz) and 2
// and up as the SILK+CELT hybrid up to 20 kHz, because it rates a bitrate as worth less
// at low complexity. Complexities 4 and 5, and 8 to 10, code identically in libopus 1.3.
//
// A 2-core worker has 40 ms of CPU per 20 ms of audio; at 200 calls that is 200 µs per
// call per frame for everything a call costs: decoding the caller's Opus (about 20 µs),
// resampling and VAD (about 10 µs), RTP and SRTP, the STT stream, the Go runtime, and
// encoding. Encoding at complexity 5 would take 175 µs of it, at the SDK's settings 260
// µs; at complexity 1 it takes 70 µs (0.7 of the 2 cores for 200 calls).
type OpusEncoderConfig struct {
	// Bitrate is the target bitrate in bit/s, from 6000 to 510000 (libopus' range); the
	// encoder runs in VBR, so packets vary around it. Default 32000. With the default
	// complexity, FEC and loss hint, libopus codes speech as wideband SILK (audio up to
	// 8 kHz, the "HD voice" of G.722 and AMR-WB, and twice what a G.711 phone leg
	// carries) and spends about 27 kbit/s: measured on speech, waveform correlation
	// 0.95 with the input and a level within 0.7 dB (TestOpusRoundTripSpeech holds it to
	// 0.9 and 1 dB). Below 32 kbit/s libopus narrows further to make room for FEC (at
	// 24 kbit/s to mediumband, 6 kHz, which sounds muffled); at 40000 it keeps the
	// hybrid full band for 25% more CPU (86 µs/frame at complexity 1).
	Bitrate int
	// Complexity trades encoder CPU for quality at a given bitrate, from 0 to 10.
	// Default 1. Because zero selects the default, a negative value selects complexity 0.
	// The table above gives the cost; the quality lost against complexity 5 at the same
	// bandwidth is small (log-spectral distance 0.4-0.7 dB worse, correlation 0.95 both),
	// against the 2.5 times the CPU that complexity 5 costs. Raise it where a worker
	// carries fewer calls than it has CPU for.
	Complexity int
	// PacketLossPercent is the packet loss the encoder should expect, from 0 to 100. With
	// in-band FEC on, it makes libopus add to each packet a coarse copy of the previous
	// frame's speech, which the receiver's decoder uses when a packet is lost. Default 10:
	// mobile and Wi-Fi callers see a few percent, with bursts well above that. It must
	// be above 5: at 5 or less libopus drops FEC rather than narrow the bandwidth to fit
	// it (measured: at 5%, 32 kbit/s, no FEC data at all). Measured with every tenth
	// packet lost, the frames FEC recovers correlate 0.89 with the input, where the
	// decoder's concealment alone reaches 0.68. Because zero selects the default, a
	// negative value selects 0 (no FEC data is sent then).
	PacketLossPercent int
	// DisableFEC turns in-band forward error correction off; it is on by default. FEC
	// costs bitrate (it comes out of Bitrate, not on top of it) and some CPU (at
	// complexity 1 about 10 µs/frame), and it is the only thing that repairs a lost
	// packet of speech: WebRTC receivers, LiveKit's included, negotiate useinbandfec=1
	// and use it. LiveKit forwards our packets as they are, so they protect the hop from
	// the SFU to the caller too.
	DisableFEC bool
	// DTX enables discontinuous transmission: in silence the encoder emits packets of
	// 1 or 2 bytes that mean "nothing", and a refresh every 400 ms. It is off by default:
	// it saves bandwidth, not much CPU (the encoder still analyses every frame: measured,
	// digital silence costs 60% of what speech does), the engine's output is mostly
	// speech, and a sink would have to learn to drop the empty packets.
	DTX bool
}

// Defaults of OpusEncoderConfig; see its fields for why.
const (
	defaultOpusBitrate           = 32000
	defaultOpusComplexity        = 1
	defaultOpusPacketLossPercent = 10
)

func (c OpusEncoderConfig) withDefaults() OpusEncoderConfig {
	if c.Bitrate == 0 {
		c.Bitrate = defaultOpusBitrate
	}
	if c.Complexity == 0 {
		c.Complexity = defaultOpusComplexity
	} else if c.Complexity < 0 {
		c.Complexity = 0
	}
	if c.PacketLossPercent == 0 {
		c.PacketLossPercent = defaultOpusPacketLossPercent
	} else if c.PacketLossPercent < 0 {
		c.PacketLossPercent = 0
	}
	return c
}

func (c OpusEncoderConfig) validate() error {
	switch {
	case c.Bitrate < 6000 || c.Bitrate > 510000:
		return fmt.Errorf("audio: opus: bitrate %d bit/s is outside 6000..510000", c.Bitrate)
	case c.Complexity > 10:
		return fmt.Errorf("audio: opus: complexity %d is outside 0..10", c.Complexity)
	case c.PacketLossPercent > 100:
		return fmt.Errorf("audio: opus: packet loss %d%% is outside 0..100", c.PacketLossPercent)
	}
	return nil
}

// opusMaxPacket is the largest packet one Opus frame can take (RFC 6716, 3.2.1).
const opusMaxPacket = 1275

// OpusEncoder encodes 48 kHz mono audio into Opus packets of 20 ms each, with libopus
// in its VoIP mode (speech-tuned: it favours SILK and high-pass filters the input)
// and the settings of an OpusEncoderConfig. It is an audio Writer stage: frames of any
// length go in, and every complete 20 ms frame comes out as one packet passed to the
// sink. It is not safe for concurrent use.
//
// It drives libopus directly (through gopkg.in/hraban/opus.v2, the binding LiveKit's
// media SDK uses) because the SDK's encoder fixes every setting, complexity included.
type OpusEncoder struct {
	enc    *libopus.Encoder
	sink   func(packet []byte) error
	packet []byte
	frames *Reframer
	closed bool
}

// NewOpusEncoder returns an encoder with the default OpusEncoderConfig that hands each
// packet to sink. The packet is only valid during the call: sink must copy it to keep
// it.
func NewOpusEncoder(sink func(packet []byte) error) (*OpusEncoder, error) {
	return NewOpusEncoderConfig(OpusEncoderConfig{}, sink)
}

// NewOpusEncoderConfig is NewOpusEncoder with the settings of cfg.
func NewOpusEncoderConfig(cfg OpusEncoderConfig, sink func(packet []byte) error) (*OpusEncoder, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, errors.New("audio: opus: nil sink")
	}
	enc, err := libopus.NewEncoder(OpusRate, 1, libopus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("audio: opus: new encoder: %w", err)
	}
	if err := errors.Join(
		enc.SetBitrate(cfg.Bitrate),
		enc.SetComplexity(cfg.Complexity),
		enc.SetInBandFEC(!cfg.DisableFEC),
		enc.SetPacketLossPerc(cfg.PacketLossPercent),
		enc.SetDTX(cfg.DTX),
	); err != nil {
		return nil, fmt.Errorf("audio: opus: configure encoder: %w", err)
	}
	e := &OpusEncoder{enc: enc, sink: sink, packet: make([]byte, opusMaxPacket)}
	e.frames, err = NewReframer(OpusRate, OpusFrameDuration, WriterFunc(e.encode))
	if err != nil {
		return nil, err
	}
	return e, nil
}

// encode codes one 20 ms frame and hands the packet to the sink.
func (e *OpusEncoder) encode(f Frame) error {
	n, err := e.enc.Encode(f.Samples, e.packet)
	if err != nil {
		return fmt.Errorf("audio: opus: encode: %w", err)
	}
	return e.sink(e.packet[:n])
}

// WriteFrame buffers f and encodes every complete 20 ms frame. f.Rate must be OpusRate.
func (e *OpusEncoder) WriteFrame(f Frame) error {
	if e.closed {
		return ErrClosed
	}
	if f.Rate != OpusRate {
		return fmt.Errorf("audio: opus: got a %d Hz frame, want %d Hz", f.Rate, OpusRate)
	}
	return e.frames.WriteFrame(f)
}

// Flush encodes the buffered remainder, padded with silence to a full frame.
func (e *OpusEncoder) Flush() error {
	if e.closed {
		return ErrClosed
	}
	return e.frames.Flush(true)
}

// Close flushes and releases the encoder. Calling it again does nothing.
func (e *OpusEncoder) Close() error {
	if e.closed {
		return nil
	}
	err := e.Flush()
	e.closed = true
	e.enc = nil // its state lives on the Go heap; nothing to free
	return err
}

// OpusDecoder decodes Opus packets into 48 kHz mono frames for the next stage, through
// LiveKit's media SDK. Stereo packets are downmixed. Packets must carry at most 20 ms
// of audio (the media SDK sizes its buffer for that, which is what WebRTC sends). It is
// not safe for concurrent use.
//
// Like the SDK, it drops a corrupt packet silently unless it is the sixth bad one in a
// row (concatenated Opus streams produce the odd spurious error); then it fails.
type OpusDecoder struct {
	dec    lkopus.Writer
	closed bool
}

// NewOpusDecoder returns a decoder that writes decoded audio to next.
func NewOpusDecoder(next Writer) (*OpusDecoder, error) {
	if next == nil {
		return nil, errors.New("audio: opus: next stage is nil")
	}
	dec, err := lkopus.Decode(pcmSink{next}, 1, logger.GetDiscardLogger())
	if err != nil {
		return nil, fmt.Errorf("audio: opus: new decoder: %w", err)
	}
	return &OpusDecoder{dec: dec}, nil
}

// Decode decodes one packet and writes its audio to next. An empty packet is ignored.
func (d *OpusDecoder) Decode(packet []byte) error {
	if d.closed {
		return ErrClosed
	}
	if err := d.dec.WriteSample(packet); err != nil {
		return fmt.Errorf("audio: opus: decode: %w", err)
	}
	return nil
}

// Close releases the decoder. It does not close next. Calling it again does nothing.
func (d *OpusDecoder) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	return d.dec.Close()
}

// pcmSink adapts an audio Writer to the media SDK's PCM writer.
type pcmSink struct{ next Writer }

func (s pcmSink) String() string  { return "parley/audio.OpusDecoder" }
func (s pcmSink) SampleRate() int { return OpusRate }
func (s pcmSink) WriteSample(pcm media.PCM16Sample) error {
	return s.next.WriteFrame(Frame{Samples: pcm, Rate: OpusRate})
}
func (s pcmSink) Close() error { return nil }
