// Package stt turns the caller's speech into text: the Provider interface the voice engine
// uses, and adapters for OpenAI-compatible transcription servers and Deepgram streaming.
package stt

import (
	"context"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// Provider opens one recognition stream per call.
type Provider interface {
	// Name identifies the provider in logs and metrics, e.g. "deepgram" or "openai".
	Name() string
	// Stream starts recognising. The stream lives until Close or ctx ends.
	Stream(ctx context.Context, opts Options) (Stream, error)
}

// Options configure one stream.
type Options struct {
	// SampleRate of the frames the engine will write (16000 by default).
	SampleRate int
	// Language is a BCP-47 tag ("en", "en-US", "tr"); empty lets the provider detect it.
	Language string
	// Keywords boost recognition of names and jargon, where the provider supports it.
	Keywords []string
}

// Stream takes the caller's audio and emits transcripts.
//
// The engine writes every frame of the call (streaming providers need the silence too, to
// endpoint) and calls Flush when its VAD decides an utterance ended. Per-utterance
// providers (whisper-style servers) buffer audio between the VAD's speech start and Flush
// and transcribe it then; streaming providers finalise what they have.
type Stream interface {
	audio.Writer
	// SpeechStarted tells the stream that the VAD heard speech begin, so per-utterance
	// providers know where an utterance starts (they keep a short pre-roll before it).
	SpeechStarted()
	// Flush asks for the final transcript of the current utterance. It does not block:
	// the Final event arrives on Events.
	Flush() error
	// Events delivers interim and final transcripts in order. It is closed after Close,
	// or when the stream fails (then Err says why).
	Events() <-chan Event
	Err() error
	Close() error
}

// EventType says whether a transcript can still change.
type EventType int

const (
	// Interim is a hypothesis that later audio may revise.
	Interim EventType = iota + 1
	// Final will not change; it covers the audio since the previous Final.
	Final
)

// Event is one transcript.
type Event struct {
	Type       EventType
	Text       string
	Confidence float64
	// Start and End are the utterance's offsets from the start of the stream's audio,
	// when the provider reports them.
	Start, End time.Duration
	// At is when the event was received (monotonic clock), for the latency ledger.
	At time.Time
}
