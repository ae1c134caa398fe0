package vad

import (
	"bufio"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// The fixtures in testdata are real speech (espeak-ng) over real noise (sox), made by
// testdata/make.sh, which also writes segments.txt: where each spoken phrase begins and
// ends. The tolerances below allow for the classifier's 10-30 ms frames and for soft
// onsets and endings ("th", "f", trailing breath) that sit at or under the noise: they
// are audible in the fixture but not separable from the noise by any VAD.
const (
	startEarly = 50 * time.Millisecond  // detected start may precede the truth by this
	startLate  = 120 * time.Millisecond // or follow it by this
	endEarly   = 120 * time.Millisecond
	endLate    = 80 * time.Millisecond
)

type segment struct{ start, end time.Duration }

// groundTruth reads testdata/segments.txt: file name -> spoken phrases, in order.
func groundTruth(t *testing.T) map[string][]segment {
	t.Helper()
	f, err := os.Open("testdata/segments.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]segment{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("segments.txt: bad line %q", sc.Text())
		}
		var s [2]time.Duration
		for i, v := range fields[1:] {
			sec, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("segments.txt: %q: %v", sc.Text(), err)
			}
			s[i] = time.Duration(sec * float64(time.Second))
		}
		out[fields[0]] = append(out[fields[0]], segment{s[0], s[1]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// merge joins phrases separated by less than gap: the segments a Detector with that
// hangover should report.
func merge(phrases []segment, gap time.Duration) []segment {
	var out []segment
	for _, p := range phrases {
		if n := len(out); n > 0 && p.start-out[n-1].end < gap {
			out[n-1].end = p.end
			continue
		}
		out = append(out, p)
	}
	return out
}

func fixture(t testing.TB, name string) audio.Frame {
	t.Helper()
	f, err := audio.ReadWAVFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// resampled converts f to rate with the audio package's resampler.
func resampled(t testing.TB, f audio.Frame, rate int) audio.Frame {
	t.Helper()
	if f.Rate == rate {
		return f
	}
	out := audio.Frame{Rate: rate}
	r, err := audio.NewResampler(f.Rate, rate, audio.WriterFunc(func(fr audio.Frame) error {
		out.Samples = append(out.Samples, fr.Samples...)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// detected is one speech segment as a Detector reported it, with the times at which
// it decided.
type detected struct {
	segment
	startDecided, endDecided time.Duration
	ended                    bool
}

// run feeds f through a Detector frame by frame and collects its segments. It checks
// the invariants every Result must keep.
func run(t *testing.T, cfg Config, f audio.Frame) []detected {
	t.Helper()
	cfg.SampleRate = f.Rate
	d, err := NewDetector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n := d.FrameSamples()
	var segs []detected
	for i := 0; i+n <= len(f.Samples); i += n {
		r, err := d.Process(audio.Frame{Samples: f.Samples[i : i+n], Rate: f.Rate})
		if err != nil {
			t.Fatal(err)
		}
		if r.Activity < 0 || r.Activity > 1 {
			t.Fatalf("activity %v", r.Activity)
		}
		switch r.Event {
		case SpeechStart:
			if !r.Speech || (len(segs) > 0 && !segs[len(segs)-1].ended) {
				t.Fatalf("SpeechStart out of order: %+v", r)
			}
			segs = append(segs, detected{segment: segment{start: r.SpeechStartedAt}, startDecided: r.Offset})
		case SpeechEnd:
			if r.Speech || len(segs) == 0 || segs[len(segs)-1].ended {
				t.Fatalf("SpeechEnd out of order: %+v", r)
			}
			s := &segs[len(segs)-1]
			if r.SpeechStartedAt != s.start {
				t.Fatalf("SpeechEnd says the segment began at %v, SpeechStart said %v", r.SpeechStartedAt, s.start)
			}
			s.end, s.endDecided, s.ended = r.SpeechEndedAt, r.Offset, true
		default:
			if len(segs) > 0 && r.Speech != !segs[len(segs)-1].ended {
				t.Fatalf("Speech = %v between events", r.Speech)
			}
		}
	}
	return segs
}

// checkSegments compares detected segments with the truth, within the tolerances, and
// checks that each decision came MinSpeech after the start and Hangover after the end
// (give or take a frame, and a little more when resampling delays the audio).
func checkSegments(t *testing.T, cfg Config, got []detected, want []segment) {
	t.Helper()
	cfg = cfg.withDefaults()
	if len(got) != len(want) {
		t.Fatalf("%d segments %v, want %d %v", len(got), got, len(want), want)
	}
	slack := cfg.FrameDuration
	if !NativeRate(cfg.SampleRate) {
		slack += cfg.FrameDuration
	}
	for i, g := range got {
		w := want[i]
		if g.start < w.start-startEarly || g.start > w.start+startLate {
			t.Errorf("segment %d starts at %v, truth %v", i, g.start, w.start)
		}
		if !g.ended {
			t.Errorf("segment %d never ended (truth %v)", i, w.end)
			continue
		}
		if g.end < w.end-endEarly || g.end > w.end+endLate {
			t.Errorf("segment %d ends at %v, truth %v", i, g.end, w.end)
		}
		if lag := g.startDecided - g.start; lag < cfg.MinSpeech || lag > cfg.MinSpeech+slack {
			t.Errorf("segment %d: start decided %v after it, want MinSpeech %v", i, lag, cfg.MinSpeech)
		}
		if lag := g.endDecided - g.end; lag < cfg.Hangover || lag > cfg.Hangover+slack {
			t.Errorf("segment %d: end decided %v after it, want Hangover %v", i, lag, cfg.Hangover)
		}
	}
}

// TestDetectorSpeech runs the speech fixtures through the Detector at every supported
// frame size, and at rates that take the native and the resampling paths.
func TestDetectorSpeech(t *testing.T) {
	t.Parallel()
	truth := groundTruth(t)
	tests := []struct {
		file  string
		rate  int // 0: the file's own
		frame time.Duration
		mode  Mode
	}{
		{"clean.wav", 0, 20 * time.Millisecond, ModeDefault},
		{"pink20.wav", 0, 20 * time.Millisecond, ModeDefault},
		{"white10.wav", 0, 20 * time.Millisecond, ModeDefault},
		{"pauses.wav", 0, 20 * time.Millisecond, ModeDefault},
		{"phone8k_ulaw.wav", 0, 20 * time.Millisecond, ModeDefault},
		{"pink20.wav", 0, 10 * time.Millisecond, ModeDefault},
		{"pink20.wav", 0, 30 * time.Millisecond, ModeDefault},
		{"white10.wav", 0, 20 * time.Millisecond, ModeVeryAggressive},
		{"clean.wav", 0, 20 * time.Millisecond, ModeQuality},
		{"pink20.wav", 8000, 20 * time.Millisecond, ModeDefault},
		{"pink20.wav", 48000, 30 * time.Millisecond, ModeDefault},
		{"pink20.wav", 24000, 20 * time.Millisecond, ModeDefault},  // resampled inside
		{"pauses.wav", 22050, 20 * time.Millisecond, ModeDefault},  // resampled inside
		{"white10.wav", 44100, 10 * time.Millisecond, ModeDefault}, // resampled inside
	}
	for _, tt := range tests {
		name := tt.file + "/" + strconv.Itoa(tt.rate) + "/" + tt.frame.String() + "/" + tt.mode.String()
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := fixture(t, tt.file)
			if tt.rate != 0 {
				f = resampled(t, f, tt.rate)
			}
			cfg := Config{FrameDuration: tt.frame, Mode: tt.mode}
			got := run(t, cfg, f)
			cfg.SampleRate = f.Rate
			checkSegments(t, cfg, got, merge(truth[tt.file], cfg.withDefaults().Hangover))
		})
	}
}

// TestDetectorHangover checks that the hangover bridges the 250 ms pause between "Yes."
// and "That is correct." but not the 1.3 s before "Thank you very much.", that a
// hangover shorter than the pause splits it, and that a longer one joins everything.
func TestDetectorHangover(t *testing.T) {
	t.Parallel()
	truth := groundTruth(t)["pauses.wav"]
	if len(truth) != 3 {
		t.Fatalf("pauses.wav has %d phrases in segments.txt, want 3", len(truth))
	}
	f := fixture(t, "pauses.wav")
	tests := []struct {
		name     string
		hangover time.Duration
		segments int
	}{
		{"default bridges the pause", 0, 2},
		{"short hangover splits it", 200 * time.Millisecond, 3},
		{"long hangover joins all", 1500 * time.Millisecond, 1},
	}
	// Room after the last phrase for the longest hangover to run out: the fixture's
	// opening 0.8 s (noise alone), three more times.
	lead := f.Samples[:int(truth[0].start)*f.Rate/int(time.Second)]
	padded := audio.Frame{Samples: append(append([]int16(nil), f.Samples...), slices.Repeat(lead, 3)...), Rate: f.Rate}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Hangover: tt.hangover}
			got := run(t, cfg, padded)
			want := merge(truth, cfg.withDefaults().Hangover)
			if len(want) != tt.segments {
				t.Fatalf("test is wrong: %d expected segments for hangover %v", len(want), cfg.Hangover)
			}
			cfg.SampleRate = f.Rate
			checkSegments(t, cfg, got, want)
		})
	}
}

// TestDetectorNoSpeech feeds audio with no speech in it: noise alone, silence, a click
// and a cough-like burst. Nothing may start.
func TestDetectorNoSpeech(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 7))
	hiss := audio.Frame{Samples: make([]int16, 3*16000), Rate: 16000}
	for i := range hiss.Samples {
		hiss.Samples[i] = int16(rng.NormFloat64() * 30) // about -61 dBFS
	}
	tests := []struct {
		name string
		in   audio.Frame
		mode Mode
	}{
		{"pink noise", fixture(t, "noise_pink.wav"), ModeDefault},
		{"brown noise", fixture(t, "noise_brown.wav"), ModeDefault},
		{"pink noise very aggressive", fixture(t, "noise_pink.wav"), ModeVeryAggressive},
		{"digital silence", audio.Frame{Samples: make([]int16, 3*16000), Rate: 16000}, ModeQuality},
		{"faint hiss", hiss, ModeDefault},
		{"click and cough", fixture(t, "bursts.wav"), ModeDefault},
		{"click and cough quality mode", fixture(t, "bursts.wav"), ModeQuality},
		{"click and cough at 8 kHz", resampled(t, fixture(t, "bursts.wav"), 8000), ModeDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := run(t, Config{Mode: tt.mode}, tt.in); len(got) != 0 {
				t.Fatalf("speech detected: %+v", got)
			}
		})
	}
}

// TestDetectorMinSpeechMatters is the control for the burst test: with a minimum speech
// shorter than the cough-like burst, the burst does start speech, so the fixture really
// does look like speech to the classifier and MinSpeech is what rejects it.
func TestDetectorMinSpeechMatters(t *testing.T) {
	t.Parallel()
	got := run(t, Config{MinSpeech: 60 * time.Millisecond}, fixture(t, "bursts.wav"))
	if len(got) == 0 {
		t.Fatal("a 60 ms minimum did not catch the 80 ms burst: the fixture tests nothing")
	}
	for _, g := range got {
		if g.start < 950*time.Millisecond {
			t.Errorf("segment at %v: before the click at 1 s", g.start)
		}
	}
}

// TestDetectorEnergyGate checks that the gate stops speech quieter than it from
// starting, and leaves louder speech alone.
func TestDetectorEnergyGate(t *testing.T) {
	t.Parallel()
	truth := groundTruth(t)["pink20.wav"]
	f := fixture(t, "pink20.wav")
	tests := []struct {
		name     string
		gate     float64
		segments int
	}{
		{"gate under the speech", -45, 1},
		{"gate over the speech", -10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{EnergyGateDBFS: tt.gate}
			got := run(t, cfg, f)
			if len(got) != tt.segments {
				t.Fatalf("%d segments, want %d", len(got), tt.segments)
			}
			if tt.segments > 0 {
				cfg.SampleRate = f.Rate
				checkSegments(t, cfg, got, merge(truth, DefaultHangover))
			}
		})
	}
}

// TestDetectorResults checks the per-frame fields on real speech.
func TestDetectorResults(t *testing.T) {
	t.Parallel()
	f := fixture(t, "pink20.wav")
	d, err := NewDetector(Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := d.FrameSamples()
	var speechAct, noiseAct, speechLevel []float64
	for i := 0; i+n <= len(f.Samples); i += n {
		r, err := d.Process(audio.Frame{Samples: f.Samples[i : i+n], Rate: f.Rate})
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Duration(i+n) * time.Second / 16000; r.Offset != want {
			t.Fatalf("offset %v, want %v", r.Offset, want)
		}
		at := r.Offset
		switch {
		case at > 1500*time.Millisecond && at < 3500*time.Millisecond:
			speechAct = append(speechAct, float64(r.Activity))
			speechLevel = append(speechLevel, float64(r.LevelDBFS))
		case at > 4500*time.Millisecond:
			noiseAct = append(noiseAct, float64(r.Activity))
		}
	}
	if m := mean(speechAct); m < 0.7 {
		t.Errorf("mean activity during speech %.2f, want >= 0.7", m)
	}
	if m := mean(noiseAct); m > 0.1 {
		t.Errorf("mean activity in noise %.2f, want <= 0.1", m)
	}
	// The fixture's speech is at -23 dBFS RMS, with pauses and peaks around it.
	if m := mean(speechLevel); m < -35 || m > -18 {
		t.Errorf("mean level during speech %.1f dBFS", m)
	}

	r, err := d.Process(audio.Frame{Samples: make([]int16, n), Rate: 16000})
	if err != nil || !math.IsInf(float64(r.LevelDBFS), -1) {
		t.Errorf("digital silence: level %v, err %v", r.LevelDBFS, err)
	}
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// TestDetectorReset checks that a reset Detector behaves like a new one.
func TestDetectorReset(t *testing.T) {
	t.Parallel()
	for _, rate := range []int{16000, 24000} {
		t.Run(strconv.Itoa(rate), func(t *testing.T) {
			t.Parallel()
			f := resampled(t, fixture(t, "pauses.wav"), rate)
			d, err := NewDetector(Config{SampleRate: rate})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			n := d.FrameSamples()
			pass := func() []Result {
				var out []Result
				for i := 0; i+n <= len(f.Samples); i += n {
					r, err := d.Process(audio.Frame{Samples: f.Samples[i : i+n], Rate: rate})
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, r)
				}
				return out
			}
			first := pass()
			if err := d.Reset(); err != nil {
				t.Fatal(err)
			}
			second := pass()
			if len(first) != len(second) {
				t.Fatalf("%d results, then %d", len(first), len(second))
			}
			for i := range first {
				if first[i] != second[i] {
					t.Fatalf("frame %d: %+v after Reset, %+v before", i, second[i], first[i])
				}
			}
		})
	}
}

// TestDetectorWriter checks the Writer adapter against frame-by-frame Process.
func TestDetectorWriter(t *testing.T) {
	t.Parallel()
	f := fixture(t, "pauses.wav")
	want := run(t, Config{}, f)

	d, err := NewDetector(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var got []Event
	w, err := d.Writer(func(r Result) {
		if r.Event != EventNone {
			got = append(got, r.Event)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(f.Samples); i += 777 {
		if err := w.WriteFrame(audio.Frame{Samples: f.Samples[i:min(i+777, len(f.Samples))], Rate: 16000}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2*len(want) {
		t.Fatalf("events %v through the Writer, want %d segments", got, len(want))
	}
	if _, err := d.Writer(nil); err == nil {
		t.Error("nil callback accepted")
	}
}

func TestDetectorConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"8k 10ms", Config{SampleRate: 8000, FrameDuration: 10 * time.Millisecond}, true},
		{"22.05k 20ms", Config{SampleRate: 22050}, true},
		{"22.05k 10ms", Config{SampleRate: 22050, FrameDuration: 10 * time.Millisecond}, false},
		{"15 ms frames", Config{FrameDuration: 15 * time.Millisecond}, false},
		{"negative rate", Config{SampleRate: -1}, false},
		{"mode out of range", Config{Mode: 9}, false},
		{"min speech under a frame", Config{MinSpeech: 5 * time.Millisecond}, false},
		{"hangover in seconds by mistake", Config{Hangover: 400 * time.Second}, false},
		{"gate positive", Config{EnergyGateDBFS: 3}, false},
		{"gate -50", Config{EnergyGateDBFS: -50}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := NewDetector(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v", err)
			}
			if d != nil {
				_ = d.Close()
				_ = d.Close()
			}
		})
	}
	d, _ := NewDetector(Config{})
	c := d.Config()
	if c.SampleRate != 16000 || c.FrameDuration != 20*time.Millisecond || c.Mode != ModeAggressive ||
		c.MinSpeech != 200*time.Millisecond || c.Hangover != 400*time.Millisecond || c.EnergyGateDBFS != 0 {
		t.Errorf("defaults %+v", c)
	}
}

func TestDetectorProcessErrors(t *testing.T) {
	t.Parallel()
	d, err := NewDetector(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []audio.Frame{
		{Samples: make([]int16, 319), Rate: 16000},
		{Samples: make([]int16, 320), Rate: 8000},
		{Rate: 16000},
	} {
		if _, err := d.Process(f); !errors.Is(err, ErrFrameSize) {
			t.Errorf("%d samples at %d Hz: %v", len(f.Samples), f.Rate, err)
		}
	}
}

func TestClassifier(t *testing.T) {
	t.Parallel()
	if _, err := NewClassifier(ModeDefault, 22050, 20*time.Millisecond); err == nil {
		t.Error("22.05 kHz accepted")
	}
	if _, err := NewClassifier(ModeDefault, 16000, 25*time.Millisecond); err == nil {
		t.Error("25 ms accepted")
	}
	if _, err := NewClassifier(Mode(-1), 16000, 20*time.Millisecond); err == nil {
		t.Error("mode -1 accepted")
	}
	c, err := NewClassifier(ModeDefault, 48000, 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if c.FrameSamples() != 1440 || c.Rate() != 48000 {
		t.Fatalf("%d samples at %d Hz", c.FrameSamples(), c.Rate())
	}
	if _, err := c.IsSpeech(make([]int16, 1439)); err == nil {
		t.Error("short frame accepted")
	}
	// Speech, once the noise model has had a moment: the middle of a fixture.
	f := resampled(t, fixture(t, "clean.wav"), 48000)
	var speech int
	for i := 0; i+1440 <= len(f.Samples); i += 1440 {
		ok, err := c.IsSpeech(f.Samples[i : i+1440])
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			speech++
		}
	}
	if speech == 0 {
		t.Fatal("no frame of clean speech classified as speech")
	}
}

// TestDetectorAllocs checks that Process allocates nothing per frame, on the native and
// the resampling path. Not parallel: AllocsPerRun counts the whole process.
func TestDetectorAllocs(t *testing.T) {
	for _, rate := range []int{16000, 8000, 24000} {
		f := resampled(t, fixture(t, "pink20.wav"), rate)
		d, err := NewDetector(Config{SampleRate: rate})
		if err != nil {
			t.Fatal(err)
		}
		n := d.FrameSamples()
		i := 0
		step := func() {
			if i+n > len(f.Samples) {
				i = 0
			}
			if _, err := d.Process(audio.Frame{Samples: f.Samples[i : i+n], Rate: rate}); err != nil {
				t.Fatal(err)
			}
			i += n
		}
		for range 50 {
			step()
		}
		if a := testing.AllocsPerRun(500, step); a != 0 {
			t.Errorf("%d Hz: %.2f allocations per frame", rate, a)
		}
		_ = d.Close()
	}
}
