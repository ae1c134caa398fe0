package audio

import (
	"errors"
	"fmt"
	"time"
)

// Reframer cuts a stream of arbitrary-length chunks (TTS audio, resampler output) into
// frames of one fixed size, as codecs, VAD and pacing need. It is an audio Writer stage.
//
// Whole frames inside an incoming chunk are handed to next without copying; only the
// remainder that straddles two chunks is buffered. A Reframer is not safe for
// concurrent use.
type Reframer struct {
	next Writer
	rate int
	size int
	buf  []int16 // pending samples, len < size; cap == size
}

// NewReframer returns a Reframer that emits frames of the given duration at rate Hz to
// next. The frame must hold a whole number of samples (20 ms at 22050 Hz is 441; 10 ms
// at 22050 Hz is 220.5 and is refused).
func NewReframer(rate int, frame time.Duration, next Writer) (*Reframer, error) {
	if rate <= 0 || rate > MaxSampleRate {
		return nil, fmt.Errorf("audio: reframe: rate %d Hz", rate)
	}
	if next == nil {
		return nil, errors.New("audio: reframe: next stage is nil")
	}
	n := int64(rate) * int64(frame)
	if frame <= 0 || n%int64(time.Second) != 0 {
		return nil, fmt.Errorf("audio: reframe: %v at %d Hz is not a whole number of samples", frame, rate)
	}
	size := int(n / int64(time.Second))
	return &Reframer{next: next, rate: rate, size: size, buf: make([]int16, 0, size)}, nil
}

// FrameSize is the number of samples in each emitted frame.
func (r *Reframer) FrameSize() int { return r.size }

// Buffered is the number of samples held back waiting for a full frame.
func (r *Reframer) Buffered() int { return len(r.buf) }

// WriteFrame adds f's samples to the stream and emits every frame it completes.
func (r *Reframer) WriteFrame(f Frame) error {
	if f.Rate != r.rate {
		return fmt.Errorf("audio: reframe: got a %d Hz frame in a %d Hz stream", f.Rate, r.rate)
	}
	s := f.Samples
	if len(r.buf) > 0 {
		n := copy(r.buf[len(r.buf):r.size], s)
		r.buf = r.buf[:len(r.buf)+n]
		s = s[n:]
		if len(r.buf) < r.size {
			return nil
		}
		err := r.next.WriteFrame(Frame{Samples: r.buf, Rate: r.rate})
		r.buf = r.buf[:0]
		if err != nil {
			return err
		}
	}
	for len(s) >= r.size {
		if err := r.next.WriteFrame(Frame{Samples: s[:r.size:r.size], Rate: r.rate}); err != nil {
			return err
		}
		s = s[r.size:]
	}
	r.buf = append(r.buf, s...)
	return nil
}

// Flush emits the buffered remainder, if any, as one last frame: zero-padded to the
// full frame size when pad is true (for consumers that only take whole frames, such as
// Opus), or short when pad is false.
func (r *Reframer) Flush(pad bool) error {
	if len(r.buf) == 0 {
		return nil
	}
	if pad {
		clear(r.buf[len(r.buf):r.size])
		r.buf = r.buf[:r.size]
	}
	err := r.next.WriteFrame(Frame{Samples: r.buf, Rate: r.rate})
	r.buf = r.buf[:0]
	return err
}

// Reset drops the buffered remainder without emitting it.
func (r *Reframer) Reset() { r.buf = r.buf[:0] }
