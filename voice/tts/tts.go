// Package tts turns the agent's words into speech: the Provider interface the voice engine
// uses, and adapters for OpenAI-compatible speech servers, ElevenLabs streaming and a local
// espeak-ng, the keyless default.
package tts

import (
	"context"

	"github.com/parleyhq/parley/voice/audio"
)

// Provider synthesises text. The engine calls Synthesize once per sentence, as the LLM
// writes them, so the first clause is playing while the rest is still being written.
type Provider interface {
	Name() string
	// SampleRate of the frames the provider's streams yield.
	SampleRate() int
	// Synthesize starts speaking text. Cancelling ctx aborts it (barge-in does this).
	Synthesize(ctx context.Context, req Request) (Stream, error)
}

// Request is one piece of text to speak.
type Request struct {
	Text string
	// Voice is the provider's voice ID ("alloy", an ElevenLabs voice ID, "en-us").
	Voice string
	// Speed is a rate multiplier; 0 means the provider's default.
	Speed float64
	// Language is a BCP-47 tag, for providers that take one.
	Language string
}

// Stream yields PCM as it is synthesised, in chunks of any length at the provider's
// SampleRate. Recv returns io.EOF after the last chunk.
type Stream interface {
	Recv() (audio.Frame, error)
	Close() error
}
