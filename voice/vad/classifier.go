// Package vad detects speech in a caller's audio: it owns voice activity detection for
// the voice engine (turn-taking, barge-in and endpointing build on its events).
//
// Classifier is the raw per-frame decision: WebRTC's VAD, a Gaussian mixture model
// over six sub-band energies, compiled in through cgo. Detector turns those noisy
// per-frame flags into speech segments: it debounces the start (so clicks and coughs do
// not count), bridges short pauses (hangover) and reports, with each SpeechStart and
// SpeechEnd, where in the stream the speech really began and ended, as opposed to when
// the detector could tell.
package vad

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	webrtcvad "github.com/maxhawkins/go-webrtcvad"
)

// Mode is the classifier's aggressiveness: how readily it calls a frame non-speech.
// Higher modes reject more noise and also more quiet speech.
type Mode int

const (
	// ModeDefault selects ModeAggressive.
	ModeDefault Mode = iota
	// ModeQuality is WebRTC mode 0: the most speech kept, the most noise let through.
	// Suits clean wideband audio.
	ModeQuality
	// ModeLowBitrate is WebRTC mode 1.
	ModeLowBitrate
	// ModeAggressive is WebRTC mode 2, the default: on noisy telephone audio it keeps
	// nearly all speech while noise-only frames mostly read as silence; the Detector's
	// minimum speech duration takes care of the rest.
	ModeAggressive
	// ModeVeryAggressive is WebRTC mode 3: for very noisy lines, at the cost of
	// clipping soft word onsets and endings.
	ModeVeryAggressive
)

func (m Mode) webrtc() int {
	if m == ModeDefault {
		m = ModeAggressive
	}
	return int(m) - 1
}

func (m Mode) valid() bool { return m >= ModeDefault && m <= ModeVeryAggressive }

// String names the mode.
func (m Mode) String() string {
	switch m {
	case ModeDefault:
		return "default"
	case ModeQuality:
		return "quality"
	case ModeLowBitrate:
		return "low-bitrate"
	case ModeAggressive:
		return "aggressive"
	case ModeVeryAggressive:
		return "very-aggressive"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// NativeRate reports whether the WebRTC VAD classifies rate directly: 8, 16, 32 and
// 48 kHz. (Internally it works at 8 kHz, decimating the others with fixed filters.)
func NativeRate(rate int) bool {
	switch rate {
	case 8000, 16000, 32000, 48000:
		return true
	}
	return false
}

// ValidFrameDuration reports whether the WebRTC VAD takes frames of d: 10, 20 or 30 ms.
func ValidFrameDuration(d time.Duration) bool {
	return d == 10*time.Millisecond || d == 20*time.Millisecond || d == 30*time.Millisecond
}

// Classifier is WebRTC's per-frame speech/non-speech classifier. It adapts its noise
// model as it goes, so one Classifier must see one stream, in order. It is not safe for
// concurrent use. Its C state (about 1 KB) is freed by the garbage collector.
type Classifier struct {
	v            *webrtcvad.VAD
	rate         int
	frameSamples int
}

// NewClassifier returns a classifier for frames of the given duration (10, 20 or 30 ms)
// at rate (8, 16, 32 or 48 kHz).
func NewClassifier(mode Mode, rate int, frame time.Duration) (*Classifier, error) {
	if !mode.valid() {
		return nil, fmt.Errorf("vad: mode %d", int(mode))
	}
	if !NativeRate(rate) {
		return nil, fmt.Errorf("vad: classifier rate %d Hz: want 8000, 16000, 32000 or 48000", rate)
	}
	if !ValidFrameDuration(frame) {
		return nil, fmt.Errorf("vad: frame of %v: want 10, 20 or 30 ms", frame)
	}
	v, err := webrtcvad.New()
	if err != nil {
		return nil, fmt.Errorf("vad: %w", err)
	}
	if err := v.SetMode(mode.webrtc()); err != nil {
		return nil, fmt.Errorf("vad: %w", err)
	}
	n := rate * int(frame/time.Millisecond) / 1000
	if !v.ValidRateAndFrameLength(rate, n) {
		return nil, fmt.Errorf("vad: WebRTC VAD refuses %d samples at %d Hz", n, rate)
	}
	return &Classifier{v: v, rate: rate, frameSamples: n}, nil
}

// FrameSamples is the number of samples IsSpeech takes.
func (c *Classifier) FrameSamples() int { return c.frameSamples }

// Rate is the sample rate IsSpeech expects.
func (c *Classifier) Rate() int { return c.rate }

var errFrameSize = errors.New("vad: wrong frame size")

// IsSpeech classifies one frame of exactly FrameSamples samples.
func (c *Classifier) IsSpeech(frame []int16) (bool, error) {
	if len(frame) != c.frameSamples {
		return false, fmt.Errorf("%w: %d samples, want %d", errFrameSize, len(frame), c.frameSamples)
	}
	// The C code reads the samples as int16_t in native byte order, which is what a
	// []int16 holds: view it as bytes without copying.
	b := unsafe.Slice((*byte)(unsafe.Pointer(&frame[0])), 2*len(frame))
	ok, err := c.v.Process(c.rate, b)
	if err != nil {
		return false, fmt.Errorf("vad: %w", err)
	}
	return ok, nil
}
