package audio

import (
	"errors"
	"math"
	"time"
)

// Whole-clip helpers for recordings (test fixtures, benchmark media), as opposed to the
// streaming Writer chain.

// Resample converts a whole clip from one rate to another (soxr, as Resampler does).
// The result never shares memory with in.
func Resample(in []int16, from, to int) ([]int16, error) {
	if from == to {
		return append([]int16(nil), in...), nil
	}
	var out []int16
	r, err := NewResampler(from, to, WriterFunc(func(f Frame) error {
		out = append(out, f.Samples...)
		return nil
	}))
	if err != nil {
		return nil, err
	}
	if err := r.WriteFrame(Frame{Samples: in, Rate: from}); err != nil {
		return nil, err
	}
	return out, r.Close()
}

// ReadWAVFileAt reads a WAV file and converts it to rate.
func ReadWAVFileAt(path string, rate int) ([]int16, error) {
	f, err := ReadWAVFile(path)
	if err != nil {
		return nil, err
	}
	return Resample(f.Samples, f.Rate, rate)
}

// DBFS is the RMS level of samples relative to full scale; -120 for digital silence
// or no samples.
func DBFS(samples []int16) float64 {
	if len(samples) == 0 {
		return -120
	}
	var sum float64
	for _, s := range samples {
		v := float64(s)
		sum += v * v
	}
	rms := math.Sqrt(sum/float64(len(samples))) / 32768
	if rms == 0 {
		return -120
	}
	return max(20*math.Log10(rms), -120)
}

// ErrNoSpeech: Onset found nothing above the level.
var ErrNoSpeech = errors.New("audio: no speech in the recording")

// Onset returns the offset of the first 10 ms block of samples (at rate) louder than
// dbfs: where the speech in a recording begins.
func Onset(samples []int16, rate int, dbfs float64) (time.Duration, error) {
	n := rate / 100
	for i := 0; i+n <= len(samples); i += n {
		if DBFS(samples[i:i+n]) > dbfs {
			return time.Duration(i) * time.Second / time.Duration(rate), nil
		}
	}
	return 0, ErrNoSpeech
}
