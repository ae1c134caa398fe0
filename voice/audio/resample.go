package audio

/*
#cgo pkg-config: soxr
#include <stdlib.h>
#include <soxr.h>

// parley_soxr_new wraps soxr_create so that Go does not have to build the spec structs
// field by field. quality is a SOXR_*Q recipe.
static soxr_t parley_soxr_new(double in_rate, double out_rate, unsigned long quality,
                              soxr_error_t *err) {
	soxr_io_spec_t io = soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I);
	// No dither: the output must be a pure function of the input so that chunked and
	// one-shot resampling agree sample for sample, and so that tests are reproducible.
	// At 16 bits the truncation noise dither would mask is ~-98 dBFS, far below any
	// telephone or WebRTC noise floor.
	io.flags |= SOXR_NO_DITHER;
	// Minimum phase puts the filter's energy at the front of its impulse response, so
	// output follows input with the least delay: measured at 20 ms frames, HQ 48k->16k
	// holds back 4.7 ms on average against 10.7 ms for linear phase. Its phase shift is
	// inaudible on speech and irrelevant to STT and VAD, and it costs no more. Every
	// millisecond here adds to the agent's response time, so latency wins.
	soxr_quality_spec_t q = soxr_quality_spec(quality | SOXR_MINIMUM_PHASE, 0);
	// One thread: the engine runs hundreds of resamplers side by side, one per stream;
	// OpenMP threads per stream would only add contention.
	soxr_runtime_spec_t rt = soxr_runtime_spec(1);
	// soxr filters in blocks of at least 2^log2_min_dft_size samples and emits nothing
	// until a block is full. Its defaults (2^10, 2^17) suit file conversion; for 20 ms
	// frames they add a block of buffering: HQ 8k->16k lags 52 ms on average (104 ms at
	// worst) with them and 20 ms (40 ms) with 2^8, the smallest soxr allows, at no
	// measurable extra CPU.
	rt.log2_min_dft_size = 8;
	rt.log2_large_dft_size = 8;
	return soxr_create(in_rate, out_rate, 1, err, &io, &q, &rt);
}

// parley_soxr_result carries soxr_process's outputs back by value: handing Go pointers
// to locals to C would make them escape to the heap, one allocation per frame.
typedef struct {
	const char *err;
	size_t idone, odone;
} parley_soxr_result;

// parley_soxr_process runs soxr_process on Go-owned buffers. in == NULL flushes.
static parley_soxr_result parley_soxr_process(soxr_t s, const short *in, size_t ilen,
                                              short *out, size_t olen) {
	parley_soxr_result r = {0, 0, 0};
	r.err = soxr_process(s, in, ilen, in ? &r.idone : NULL, out, olen, &r.odone);
	return r;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"
)

// ErrClosed is returned by stages used after Close.
var ErrClosed = errors.New("audio: stage is closed")

// ResampleQuality selects the soxr filter recipe. Both recipes are band-limited (no
// aliasing, no imaging); they trade passband width against latency.
//
// Latency figures below are the average audio held back when 20 ms frames stream
// through, as measured on libsoxr 0.1.3 (see Resampler.Delay); "narrow Nyquist" is half
// the lower of the two rates.
type ResampleQuality int

const (
	// QualityDefault is QualityHigh.
	QualityDefault ResampleQuality = iota
	// QualityLow is soxr's "LQ" recipe, the one LiveKit's media SDK uses: flat to 70% of
	// the narrow Nyquist, -2 dB at 80%, -20 dB at 90%. On 8 kHz telephone audio that is
	// flat to 2.8 kHz, which clips the top of the telephone band (3.4 kHz). It holds back
	// 1.5 ms at 48k<->16k and 6 ms at 8k<->16k: pick it where latency is all that counts.
	QualityLow
	// QualityHigh is soxr's "HQ" recipe: 20-bit precision (more than 16-bit samples
	// carry) and flat within 0.01 dB to 90% of the narrow Nyquist (3.6 kHz from 8 kHz
	// telephone audio). It holds back 4.7 ms at 48k<->16k and 20 ms at 8k<->16k, where
	// the steep filter needed just under a 4 kHz Nyquist is long. soxr's "MQ" recipe was
	// measured too and left out: no cheaper than HQ, and it holds back more.
	QualityHigh
)

func (q ResampleQuality) soxr() C.ulong {
	if q == QualityLow {
		return C.SOXR_LQ
	}
	return C.SOXR_HQ
}

// MaxSampleRate bounds the rates a Resampler accepts. 384 kHz is the highest rate any
// audio interface ships; anything above it is a bug upstream (a byte count passed as a
// rate, say), not audio.
const MaxSampleRate = 384000

// Resampler is a streaming sample-rate converter backed by libsoxr. It is an audio
// Writer stage: frames at the input rate go in, frames at the output rate come out of
// next. Output chunks do not match input chunks one for one (the filter holds back a few
// milliseconds of history, see Delay); put a Reframer after it when the next stage needs
// fixed-size frames.
//
// The filter state carries across WriteFrame calls, so cutting a stream into chunks
// does not create clicks at chunk boundaries: the output is the same, sample for
// sample, as resampling the whole stream at once.
//
// A Resampler is not safe for concurrent use. It owns C memory: call Close when done
// (a finalizer frees it as a last resort, but it is no substitute).
type Resampler struct {
	in, out int
	next    Writer
	s       C.soxr_t // nil when in == out (pass-through) or after Close
	cleanup runtime.Cleanup
	buf     []int16 // output scratch, reused across calls
	closed  bool
}

// NewResampler returns a high-quality (QualityHigh) resampler from inRate to outRate
// that writes to next. When the rates are equal it passes frames through untouched.
func NewResampler(inRate, outRate int, next Writer) (*Resampler, error) {
	return NewResamplerQuality(inRate, outRate, QualityDefault, next)
}

// NewResamplerQuality is NewResampler with a chosen filter quality.
func NewResamplerQuality(inRate, outRate int, q ResampleQuality, next Writer) (*Resampler, error) {
	if inRate <= 0 || inRate > MaxSampleRate || outRate <= 0 || outRate > MaxSampleRate {
		return nil, fmt.Errorf("audio: resample %d -> %d Hz: rates must be in 1..%d", inRate, outRate, MaxSampleRate)
	}
	if next == nil {
		return nil, errors.New("audio: resample: next stage is nil")
	}
	r := &Resampler{in: inRate, out: outRate, next: next}
	if inRate == outRate {
		return r, nil
	}
	var cerr C.soxr_error_t
	s := C.parley_soxr_new(C.double(inRate), C.double(outRate), q.soxr(), &cerr)
	if cerr != nil {
		// soxr errors are static strings: never free them.
		return nil, fmt.Errorf("audio: resample %d -> %d Hz: %s", inRate, outRate, C.GoString(cerr))
	}
	r.s = s
	r.cleanup = runtime.AddCleanup(r, func(s C.soxr_t) { C.soxr_delete(s) }, s)
	return r, nil
}

// InRate is the rate WriteFrame expects.
func (r *Resampler) InRate() int { return r.in }

// OutRate is the rate of the frames handed to next.
func (r *Resampler) OutRate() int { return r.out }

// Delay is how much audio the filter currently holds back: the input written so far
// that has not yet come out of next. It moves between calls as soxr fills and empties
// its blocks (see QualityHigh for typical figures). The output timeline itself is not
// shifted: output sample n is the input signal at time n/OutRate.
func (r *Resampler) Delay() time.Duration {
	if r.s == nil {
		return 0
	}
	return time.Duration(float64(C.soxr_delay(r.s)) * float64(time.Second) / float64(r.out))
}

// WriteFrame resamples f and hands whatever output is ready to next. f.Rate must equal
// the input rate.
func (r *Resampler) WriteFrame(f Frame) error {
	if r.closed {
		return ErrClosed
	}
	if f.Rate != r.in {
		return fmt.Errorf("audio: resample %d -> %d Hz: got a %d Hz frame", r.in, r.out, f.Rate)
	}
	if len(f.Samples) == 0 {
		return nil
	}
	if r.s == nil {
		return r.next.WriteFrame(f)
	}
	in := f.Samples
	// Feed soxr at most 100 ms at a time, so that a long TTS chunk does not grow the
	// output buffer to its whole length.
	maxIn := max(r.in/10, 1)
	for {
		chunk := in[:min(len(in), maxIn)]
		// The output room is the exact ratio plus headroom for samples soxr held back
		// on the previous call; it doubles if soxr ever fills it.
		want := len(chunk)*r.out/r.in + 64
		if cap(r.buf) < want {
			r.buf = make([]int16, want)
		}
		out := r.buf[:cap(r.buf)]
		var inPtr *C.short
		if len(chunk) > 0 {
			inPtr = (*C.short)(unsafe.Pointer(&chunk[0]))
		} else {
			// soxr treats a NULL input as end of stream; pass a valid pointer with zero
			// length to drain pending output without ending the stream.
			inPtr = (*C.short)(unsafe.Pointer(&f.Samples[0]))
		}
		res := C.parley_soxr_process(r.s, inPtr, C.size_t(len(chunk)),
			(*C.short)(unsafe.Pointer(&out[0])), C.size_t(len(out)))
		if res.err != nil {
			return fmt.Errorf("audio: resample %d -> %d Hz: %s", r.in, r.out, C.GoString(res.err))
		}
		idone, odone := int(res.idone), int(res.odone)
		if idone == 0 && odone == 0 && len(chunk) > 0 {
			// soxr always takes input into its own FIFO; refuse to spin if it ever
			// does not.
			return fmt.Errorf("audio: resample %d -> %d Hz: soxr made no progress", r.in, r.out)
		}
		in = in[idone:]
		if odone > 0 {
			if err := r.next.WriteFrame(Frame{Samples: out[:odone], Rate: r.out}); err != nil {
				return err
			}
		}
		if len(in) == 0 && odone < len(out) {
			return nil
		}
		if odone == len(out) {
			r.buf = make([]int16, 2*cap(r.buf))
		}
	}
}

// Flush ends the current stream: it drains the audio the filter still holds (about
// Delay of it) to next, then readies the resampler for a fresh, unrelated stream. Call
// it at the end of an utterance; do not call it between chunks of one stream, as the
// restart would put a seam in the audio.
func (r *Resampler) Flush() error {
	if r.closed {
		return ErrClosed
	}
	if r.s == nil {
		return nil
	}
	if cap(r.buf) < 1024 {
		r.buf = make([]int16, 1024)
	}
	out := r.buf[:cap(r.buf)]
	var err error
	for {
		res := C.parley_soxr_process(r.s, nil, 0, (*C.short)(unsafe.Pointer(&out[0])), C.size_t(len(out)))
		if res.err != nil {
			err = fmt.Errorf("audio: resample %d -> %d Hz: flush: %s", r.in, r.out, C.GoString(res.err))
			break
		}
		odone := int(res.odone)
		if odone == 0 {
			break
		}
		if werr := r.next.WriteFrame(Frame{Samples: out[:odone], Rate: r.out}); werr != nil {
			err = werr
			break
		}
	}
	r.reset()
	return err
}

// Reset drops the audio the filter holds without emitting it and readies the resampler
// for a fresh stream: use it when playback is cut off (barge-in) and the tail is unwanted.
func (r *Resampler) Reset() {
	if r.closed || r.s == nil {
		return
	}
	r.reset()
}

func (r *Resampler) reset() {
	// soxr_clear only fails on a NULL resampler, which r.s is not here.
	C.soxr_clear(r.s)
}

// Close flushes the stream to next (see Flush) and frees the resampler. It does not
// close next. Calling Close again does nothing and returns nil.
func (r *Resampler) Close() error {
	if r.closed {
		return nil
	}
	err := r.Flush()
	r.closed = true
	if r.s != nil {
		r.cleanup.Stop()
		C.soxr_delete(r.s)
		r.s = nil
	}
	return err
}
