package audio

import (
	"errors"
	"fmt"
	"time"

	media "github.com/livekit/media-sdk"
	lkopus "github.com/livekit/media-sdk/opus"
	"github.com/livekit/protocol/logger"
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

// OpusEncoder encodes 48 kHz mono audio into Opus packets of 20 ms each, through
// LiveKit's media SDK. The SDK fixes libopus' settings: application VoIP, default
// bitrate (measured: 46 kbit/s on mono speech) and default complexity (10, the
// costliest; see BenchmarkOpus). It is an audio Writer stage: frames of any length go
// in, and every complete 20 ms frame comes out as one packet passed to the sink. It is
// not safe for concurrent use.
type OpusEncoder struct {
	enc    media.PCM16Writer
	frames *Reframer
	closed bool
}

// NewOpusEncoder returns an encoder that hands each packet to sink. The packet is only
// valid during the call: sink must copy it to keep it.
func NewOpusEncoder(sink func(packet []byte) error) (*OpusEncoder, error) {
	if sink == nil {
		return nil, errors.New("audio: opus: nil sink")
	}
	enc, err := lkopus.Encode(packetSink(sink), 1, logger.GetDiscardLogger())
	if err != nil {
		return nil, fmt.Errorf("audio: opus: new encoder: %w", err)
	}
	e := &OpusEncoder{enc: enc}
	e.frames, err = NewReframer(OpusRate, OpusFrameDuration, WriterFunc(func(f Frame) error {
		if err := enc.WriteSample(f.Samples); err != nil {
			return fmt.Errorf("audio: opus: encode: %w", err)
		}
		return nil
	}))
	if err != nil {
		return nil, err
	}
	return e, nil
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
	return errors.Join(err, e.enc.Close())
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

// packetSink adapts a packet callback to the media SDK's Opus sample writer.
type packetSink func(packet []byte) error

func (s packetSink) String() string                         { return "parley/audio.OpusEncoder" }
func (s packetSink) SampleRate() int                        { return OpusRate }
func (s packetSink) WriteSample(packet lkopus.Sample) error { return s(packet) }
func (s packetSink) Close() error                           { return nil }

// pcmSink adapts an audio Writer to the media SDK's PCM writer.
type pcmSink struct{ next Writer }

func (s pcmSink) String() string  { return "parley/audio.OpusDecoder" }
func (s pcmSink) SampleRate() int { return OpusRate }
func (s pcmSink) WriteSample(pcm media.PCM16Sample) error {
	return s.next.WriteFrame(Frame{Samples: pcm, Rate: OpusRate})
}
func (s pcmSink) Close() error { return nil }
