package voice

import (
	"errors"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// ClockedInput feeds a session a caller's audio on the wall clock. Transports get
// caller audio in bursts and gaps: a browser's Opus DTX sends a packet every 400 ms in
// silence, a muted microphone sends nothing, packets are lost and networks stall. The
// engine measures pauses in audio, not in time, so without help it would wait seconds
// to hear that the caller stopped talking. A transport writes what it receives with
// Write and calls Fill every FillTick; Fill feeds silence for whatever has not arrived
// by then, beyond FillSlack. Write and Fill are safe to call from different goroutines
// (the session gets them one at a time, in order).
type ClockedInput struct {
	mu    sync.Mutex
	s     *Session
	rate  int
	t0    time.Time
	fed   int64 // samples fed (audio and silence) since t0
	zeros []int16
}

// Timing of ClockedInput.
const (
	// FillTick is how often a transport should call Fill: one engine frame.
	FillTick = 20 * time.Millisecond
	// FillSlack is how far the caller's audio may lag the clock before silence is
	// filled in: more than the jitter of a healthy path (LiveKit's jitter buffer holds
	// up to 60 ms; Twilio sends steady 20 ms chunks), little enough that a gap costs
	// the endpointing at most this much.
	FillSlack = 60 * time.Millisecond
)

// NewClockedInput starts the timeline now, for audio at rate.
func NewClockedInput(s *Session, rate int) *ClockedInput {
	return &ClockedInput{s: s, rate: rate, t0: time.Now(),
		zeros: make([]int16, int64(rate)*int64(frameDuration)/int64(time.Second))}
}

// Write feeds received caller audio. Audio that arrives after Fill covered its time (a
// burst after a gap) is still fed: the words matter more than the timeline, which
// catches up while Fill waits for the clock. A session that has ended is not an error.
func (c *ClockedInput) Write(samples []int16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fed += int64(len(samples))
	if err := c.s.WriteFrame(audio.Frame{Samples: samples, Rate: c.rate}); err != nil && !errors.Is(err, ErrEnded) {
		return err
	}
	return nil
}

// Fill feeds silence, in whole 20 ms frames, for the audio not delivered by now beyond
// FillSlack, and returns how many frames it fed.
func (c *ClockedInput) Fill(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	due := int64(now.Sub(c.t0)) * int64(c.rate) / int64(time.Second)
	slack := int64(FillSlack) * int64(c.rate) / int64(time.Second)
	n := 0
	for due-c.fed > slack {
		c.fed += int64(len(c.zeros))
		n++
		if err := c.s.WriteFrame(audio.Frame{Samples: c.zeros, Rate: c.rate}); err != nil {
			break
		}
	}
	return n
}
