package audio

import (
	"math"
	"testing"
	"time"
)

func TestClipHelpers(t *testing.T) {
	t.Parallel()
	// 100 ms of silence, then a full-scale-ish 1 kHz tone at 16 kHz.
	in := make([]int16, 3200)
	for i := 1600; i < len(in); i++ {
		in[i] = int16(16384 * math.Sin(2*math.Pi*1000*float64(i)/16000))
	}
	if got := DBFS(in[:1600]); got != -120 {
		t.Errorf("silence: %v dBFS", got)
	}
	// A sine at half scale has an RMS of 0.3536: -9.03 dBFS.
	if got := DBFS(in[1600:]); math.Abs(got+9.03) > 0.1 {
		t.Errorf("tone: %v dBFS, want -9.03", got)
	}
	if on, err := Onset(in, 16000, -50); err != nil || on != 100*time.Millisecond {
		t.Errorf("Onset = %v, %v; want 100ms", on, err)
	}
	if _, err := Onset(in[:1600], 16000, -50); err != ErrNoSpeech {
		t.Errorf("Onset of silence: %v", err)
	}
	out, err := Resample(in, 16000, 48000)
	if err != nil {
		t.Fatal(err)
	}
	if d := len(out) - 3*len(in); d < -48 || d > 48 {
		t.Errorf("resampled %d samples to %d", len(in), len(out))
	}
	if on, err := Onset(out, 48000, -50); err != nil || on < 90*time.Millisecond || on > 110*time.Millisecond {
		t.Errorf("Onset after resampling = %v, %v", on, err)
	}
}
