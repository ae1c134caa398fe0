// Package audio is the voice engine's audio toolkit: 16-bit mono PCM frames, resampling,
// G.711 μ-law and A-law, WAV files, Opus (through LiveKit's media SDK) and a frame clock.
//
// Audio moves through the engine as a chain of small writers (see Writer): each stage
// (decode, resample, VAD, STT feed) takes frames and hands them on.
package audio

import "time"

// Frame is a block of 16-bit signed, mono, little-endian-in-memory PCM samples at Rate Hz.
// The engine works in 20 ms frames (320 samples at 16 kHz), but a Frame may hold any
// number of samples; providers deliver TTS audio in arbitrary chunks.
type Frame struct {
	Samples []int16
	Rate    int
}

// Duration is how long the frame plays.
func (f Frame) Duration() time.Duration {
	if f.Rate <= 0 {
		return 0
	}
	return time.Duration(len(f.Samples)) * time.Second / time.Duration(f.Rate)
}

// Writer is one stage of an audio chain. WriteFrame must not retain f.Samples after it
// returns unless it copies them: callers reuse their buffers.
type Writer interface {
	WriteFrame(f Frame) error
}

// WriterFunc adapts a function to Writer.
type WriterFunc func(f Frame) error

func (fn WriterFunc) WriteFrame(f Frame) error { return fn(f) }

// Flusher is implemented by writers that queue audio downstream of the engine, such as
// a WebRTC track's send queue. Flush drops whatever is queued and not yet sent.
//
// A queue between the engine and the wire holds audio the engine already counts as
// played: when the agent must stop talking (the caller barged in, the call ended),
// flushing it is what makes the stop audible at once rather than a queue-length later.
// Flush must return promptly, and must not call back into the writer's source.
type Flusher interface{ Flush() }
