package vad

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// Event is a change of speech state reported by a Detector.
type Event uint8

const (
	// EventNone: no change on this frame.
	EventNone Event = iota
	// SpeechStart: the caller has started speaking. Result.SpeechStartedAt says where
	// the speech began, MinSpeech or more before the frame that decided it.
	SpeechStart
	// SpeechEnd: the caller has stopped speaking. Result.SpeechEndedAt says where the
	// speech ended, Hangover before the frame that decided it.
	SpeechEnd
)

// String names the event.
func (e Event) String() string {
	switch e {
	case EventNone:
		return "none"
	case SpeechStart:
		return "speech-start"
	case SpeechEnd:
		return "speech-end"
	}
	return fmt.Sprintf("Event(%d)", uint8(e))
}

// Config configures a Detector. The zero value of each field selects its default.
type Config struct {
	// SampleRate is the rate of the frames given to Process. Default 16000. At 8, 16,
	// 32 and 48 kHz the classifier runs on the frames as they are; any other rate
	// (22.05 or 24 kHz TTS, 44.1 kHz files) is resampled to 16 kHz first.
	SampleRate int
	// FrameDuration is the length of the frames given to Process: 10, 20 or 30 ms, the
	// classifier's frame sizes. Default 20 ms, the engine's frame. Longer frames cost
	// less per second of audio and decide in coarser steps.
	FrameDuration time.Duration
	// Mode is the classifier's aggressiveness. Default ModeAggressive.
	Mode Mode
	// MinSpeech is how much speech must accumulate before SpeechStart: the guard
	// against clicks, coughs and door slams. It is rounded up to whole frames.
	// Default 200 ms. The classifier holds its
	// speech flag for 60-150 ms after any sound it takes for speech (its "overhang"),
	// so an 80 ms cough reads as 140-160 ms of speech; 200 ms clears that while still
	// answering well inside a syllable and a half of real speech. A single non-speech
	// frame inside the onset does not restart the count (the classifier flickers on
	// weak consonants); two in a row do.
	MinSpeech time.Duration
	// Hangover is how long speech must have ended before SpeechEnd is reported: the
	// bridge over pauses between words. Default 400 ms: pauses inside a sentence
	// (between words, at commas) are mostly under 250 ms and rarely reach 350 ms,
	// while a caller who has finished usually stays silent far longer. This is not
	// end-of-turn detection, which sits on top and may wait longer; SpeechEndedAt lets
	// it measure silence from where speech really ended. Hangover counts from that
	// end, and the classifier only admits silence after its overhang, so a Hangover
	// shorter than the overhang plus a frame (120 ms at 20 ms in the default mode)
	// acts as that.
	Hangover time.Duration
	// EnergyGateDBFS, when set, is the level (RMS, in dB relative to full scale) a
	// frame must reach to count towards MinSpeech: quieter frames cannot start speech,
	// however speech-like, which keeps distant voices and TV murmur out. It does not
	// end speech already under way. Zero disables it. Speech on a phone line sits
	// around -20 to -30 dBFS; -50 is a cautious gate. Allowed: -90 to -1.
	EnergyGateDBFS float64
}

// Defaults; see the Config fields for why.
const (
	DefaultSampleRate    = 16000
	DefaultFrameDuration = 20 * time.Millisecond
	DefaultMinSpeech     = 200 * time.Millisecond
	DefaultHangover      = 400 * time.Millisecond
)

// maxDuration bounds MinSpeech and Hangover: anything longer is a unit mistake
// (seconds given as milliseconds), not a tuning choice.
const maxDuration = 10 * time.Second

func (c Config) withDefaults() Config {
	if c.SampleRate == 0 {
		c.SampleRate = DefaultSampleRate
	}
	if c.FrameDuration == 0 {
		c.FrameDuration = DefaultFrameDuration
	}
	if c.Mode == ModeDefault {
		c.Mode = ModeAggressive
	}
	if c.MinSpeech == 0 {
		c.MinSpeech = DefaultMinSpeech
	}
	if c.Hangover == 0 {
		c.Hangover = DefaultHangover
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.SampleRate < 0 || c.SampleRate > audio.MaxSampleRate:
		return fmt.Errorf("vad: sample rate %d Hz", c.SampleRate)
	case !ValidFrameDuration(c.FrameDuration):
		return fmt.Errorf("vad: frame duration %v: want 10, 20 or 30 ms", c.FrameDuration)
	case int64(c.SampleRate)*int64(c.FrameDuration)%int64(time.Second) != 0:
		return fmt.Errorf("vad: %v at %d Hz is not a whole number of samples", c.FrameDuration, c.SampleRate)
	case !c.Mode.valid():
		return fmt.Errorf("vad: mode %d", int(c.Mode))
	case c.MinSpeech < c.FrameDuration || c.MinSpeech > maxDuration:
		return fmt.Errorf("vad: min speech %v: want %v to %v", c.MinSpeech, c.FrameDuration, maxDuration)
	case c.Hangover < c.FrameDuration || c.Hangover > maxDuration:
		return fmt.Errorf("vad: hangover %v: want %v to %v", c.Hangover, c.FrameDuration, maxDuration)
	case c.EnergyGateDBFS != 0 && (c.EnergyGateDBFS < -90 || c.EnergyGateDBFS > -1):
		return fmt.Errorf("vad: energy gate %v dBFS: want -90 to -1, or 0 for none", c.EnergyGateDBFS)
	}
	return nil
}

// Result is the Detector's verdict on one frame.
type Result struct {
	// Speech is whether the caller is speaking, as the events reported so far say:
	// true from a SpeechStart up to the next SpeechEnd.
	Speech bool
	// FrameSpeech is the classifier's raw flag for the latest frame classified (false
	// during the classifier's warm-up).
	FrameSpeech bool
	// Activity is a smoothed speech likelihood in [0, 1]: an exponential average of
	// FrameSpeech with a 100 ms time constant. It is not a calibrated probability
	// (WebRTC's classifier only says yes or no) but rises and falls with speech, for
	// meters, logs and soft decisions.
	Activity float32
	// LevelDBFS is the RMS level of the latest frame, in dB relative to full scale
	// (-inf for digital silence).
	LevelDBFS float32
	// Event is what changed, if anything.
	Event Event
	// SpeechStartedAt is where the current (or, with SpeechEnd, the finished) segment
	// of speech began, as an offset from the start of the stream. Set while Speech is
	// true and with SpeechEnd.
	SpeechStartedAt time.Duration
	// SpeechEndedAt is where the segment ended. Set with SpeechEnd only. The
	// classifier's overhang (the 60-150 ms it holds its flag after speech) is taken
	// out, so this is where the words stopped, give or take a frame or two.
	SpeechEndedAt time.Duration
	// Offset is how much of the stream has been classified: the decision time.
	Offset time.Duration
}

// warmup is how long the classifier's flags are ignored at the start of a stream. With
// background noise present, every mode flags its first 70-150 ms as speech, whatever
// the audio, while its noise model settles (measured on this package's fixtures at all
// frame sizes). The classifier still sees those frames, so it adapts.
const warmup = 150 * time.Millisecond

// activityTau is the time constant of Result.Activity.
const activityTau = 100 * time.Millisecond

// WebRTC's overhang: after a run of frames its model calls speech, the classifier keeps
// reporting speech for a few more frames, more after a long run (over kMaxSpeechFrames
// = 6 frames) than after a short one. Values from common_audio/vad/vad_core.c
// (kOverHangMax1*/kOverHangMax2*), the same in the sources the Go module bundles and in
// WebRTC's 2025 sources, indexed by WebRTC mode and by frame size 10, 20, 30 ms.
var overhangFrames = [4][3]struct{ short, long int }{
	{{8, 14}, {4, 7}, {3, 5}}, // quality
	{{8, 14}, {4, 7}, {3, 5}}, // low bitrate
	{{6, 9}, {3, 5}, {2, 3}},  // aggressive
	{{6, 9}, {3, 5}, {2, 3}},  // very aggressive
}

const webrtcMaxSpeechFrames = 6

// pendingCap bounds events waiting to be reported. Each Process call reports at most
// one event and classifies one frame (only the resampling path could ever classify
// two), and consecutive events are at least a frame apart, so the queue holds one
// event at most; four is headroom.
const pendingCap = 4

type pending struct {
	event      Event
	start, end time.Duration
}

// Detector finds speech segments in a stream of fixed-size frames. Give it every
// frame of the stream, in order, through Process. It is cheap (a few microseconds per
// 20 ms frame), allocates nothing per frame, and is not safe for concurrent use: one
// Detector per stream.
type Detector struct {
	cfg      Config
	cls      *Classifier
	res      *audio.Resampler // non-nil when SampleRate is not native
	inN      int              // samples per input frame
	frameN   int              // samples per classifier frame
	frameDur time.Duration
	fifo     []int16 // resampled audio awaiting classification (resampling path)

	warmupFrames   int64
	minFrames      int
	overhangShort  int // frames
	overhangLong   int // frames
	gateSumSquares float64
	alpha          float32

	frames      int64 // frames classified so far
	inSpeech    bool
	candStart   int64 // first frame of the onset being counted, or -1
	candFrames  int
	candGap     int
	segStart    int64
	lastSpeech  int64 // last flagged frame of the segment
	runStart    int64 // first frame of the latest unbroken run of flags
	prevFlag    bool
	activity    float32
	frameSpeech bool
	level       float32

	queue    [pendingCap]pending
	qHead    int
	qLen     int
	reported bool // Speech as the delivered events say
	repStart time.Duration
}

// NewDetector returns a Detector for cfg.
func NewDetector(cfg Config) (*Detector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, frameDur: cfg.FrameDuration, candStart: -1}
	d.inN = int(int64(cfg.SampleRate) * int64(cfg.FrameDuration) / int64(time.Second))
	rate := cfg.SampleRate
	if !NativeRate(rate) {
		// Low quality is plenty here: it is flat to 5.6 kHz at 16 kHz, and the
		// classifier looks at nothing above 4 kHz; it also adds the least delay.
		rate = 16000
		var err error
		d.res, err = audio.NewResamplerQuality(cfg.SampleRate, rate, audio.QualityLow, audio.WriterFunc(d.push))
		if err != nil {
			return nil, fmt.Errorf("vad: %w", err)
		}
	}
	cls, err := NewClassifier(cfg.Mode, rate, cfg.FrameDuration)
	if err != nil {
		return nil, err
	}
	d.cls = cls
	d.frameN = cls.FrameSamples()
	if d.res != nil {
		// Room for a few frames: soxr hands back roughly one frame per frame in.
		d.fifo = make([]int16, 0, 4*d.frameN)
	}

	d.warmupFrames = int64((warmup + d.frameDur - 1) / d.frameDur)
	d.minFrames = int((cfg.MinSpeech + d.frameDur - 1) / d.frameDur)
	oh := overhangFrames[cfg.Mode.webrtc()][int(d.frameDur/(10*time.Millisecond))-1]
	d.overhangShort, d.overhangLong = oh.short, oh.long
	if cfg.EnergyGateDBFS != 0 {
		// Compare sums of squares, not decibels: no logarithm on the hot path.
		amp := 32768 * math.Pow(10, cfg.EnergyGateDBFS/20)
		d.gateSumSquares = amp * amp * float64(d.frameN)
	}
	d.alpha = float32(float64(d.frameDur) / float64(d.frameDur+activityTau))
	return d, nil
}

// Config returns the Detector's configuration, defaults filled in.
func (d *Detector) Config() Config { return d.cfg }

// FrameSamples is the number of samples Process takes: FrameDuration at SampleRate.
func (d *Detector) FrameSamples() int { return d.inN }

// ErrFrameSize is returned by Process for a frame of the wrong length or rate.
var ErrFrameSize = errors.New("vad: frame is not one FrameDuration at SampleRate")

// Process classifies one frame: exactly FrameSamples samples at SampleRate. Frames
// must come in stream order with none missing, since offsets count them.
//
// When SampleRate is resampled, the resampler holds back a millisecond or two of audio,
// so the first call classifies nothing and each later call classifies the frame before
// it: decisions (Result.Offset) trail the input by one frame, while the speech offsets
// stay exact. Should a call ever classify two frames with an event each, the second
// event is reported by the next call.
func (d *Detector) Process(f audio.Frame) (Result, error) {
	if f.Rate != d.cfg.SampleRate || len(f.Samples) != d.inN {
		return d.result(EventNone, pending{}), fmt.Errorf("%w: %d samples at %d Hz, want %d at %d Hz",
			ErrFrameSize, len(f.Samples), f.Rate, d.inN, d.cfg.SampleRate)
	}
	if d.res == nil {
		if err := d.classify(f.Samples); err != nil {
			return d.result(EventNone, pending{}), err
		}
	} else {
		if err := d.res.WriteFrame(f); err != nil {
			return d.result(EventNone, pending{}), fmt.Errorf("vad: %w", err)
		}
		n := 0
		for ; n+d.frameN <= len(d.fifo); n += d.frameN {
			if err := d.classify(d.fifo[n : n+d.frameN]); err != nil {
				return d.result(EventNone, pending{}), err
			}
		}
		d.fifo = d.fifo[:copy(d.fifo, d.fifo[n:])]
	}
	if d.qLen == 0 {
		return d.result(EventNone, pending{}), nil
	}
	p := d.queue[d.qHead]
	d.qHead = (d.qHead + 1) % pendingCap
	d.qLen--
	return d.result(p.event, p), nil
}

// push collects resampled audio for classification.
func (d *Detector) push(f audio.Frame) error {
	d.fifo = append(d.fifo, f.Samples...)
	return nil
}

func (d *Detector) result(ev Event, p pending) Result {
	switch ev {
	case SpeechStart:
		d.reported, d.repStart = true, p.start
	case SpeechEnd:
		d.reported = false
	}
	r := Result{
		Speech:      d.reported,
		FrameSpeech: d.frameSpeech,
		Activity:    d.activity,
		LevelDBFS:   d.level,
		Event:       ev,
		Offset:      d.offset(d.frames),
	}
	if d.reported {
		r.SpeechStartedAt = d.repStart
	}
	if ev == SpeechEnd {
		r.SpeechStartedAt, r.SpeechEndedAt = p.start, p.end
	}
	return r
}

func (d *Detector) offset(frame int64) time.Duration { return time.Duration(frame) * d.frameDur }

// classify runs one classifier frame through the state machine.
func (d *Detector) classify(frame []int16) error {
	flag, err := d.cls.IsSpeech(frame)
	if err != nil {
		return err
	}
	var sum float64
	for _, s := range frame {
		v := float64(s)
		sum += v * v
	}
	d.level = float32(10 * math.Log10(sum/float64(len(frame))/(32768*32768)))
	k := d.frames
	d.frames++
	if k < d.warmupFrames {
		flag = false
	}
	d.frameSpeech = flag
	var x float32
	if flag {
		x = 1
	}
	d.activity += d.alpha * (x - d.activity)

	if flag && !d.prevFlag {
		d.runStart = k
	}
	d.prevFlag = flag

	if !d.inSpeech {
		if flag && (d.gateSumSquares == 0 || sum >= d.gateSumSquares) {
			if d.candStart < 0 {
				d.candStart, d.candFrames = k, 0
			}
			d.candFrames++
			d.candGap = 0
			if d.candFrames >= d.minFrames {
				d.inSpeech = true
				d.segStart, d.lastSpeech = d.candStart, k
				d.candStart = -1
				return d.enqueue(pending{event: SpeechStart, start: d.offset(d.segStart)})
			}
		} else if d.candStart >= 0 {
			d.candGap++
			if d.candGap > 1 {
				d.candStart = -1
			}
		}
		return nil
	}

	if flag {
		d.lastSpeech = k
		return nil
	}
	// Where did the words stop? The classifier's flags ran on for its overhang after
	// its model last heard speech: a long overhang if that run of flags is longer than
	// a short run plus a short overhang could make, a short one otherwise.
	oh := d.overhangShort
	if int(d.lastSpeech-d.runStart+1) > webrtcMaxSpeechFrames+d.overhangShort {
		oh = d.overhangLong
	}
	end := d.offset(max(d.lastSpeech+1-int64(oh), d.segStart+1))
	if d.offset(k+1)-end < d.cfg.Hangover {
		return nil
	}
	d.inSpeech = false
	return d.enqueue(pending{event: SpeechEnd, start: d.offset(d.segStart), end: end})
}

func (d *Detector) enqueue(p pending) error {
	if d.qLen == pendingCap {
		return errors.New("vad: event backlog full")
	}
	d.queue[(d.qHead+d.qLen)%pendingCap] = p
	d.qLen++
	return nil
}

// Reset readies the Detector for a new, unrelated stream: offsets restart from zero and
// the classifier relearns the noise. Events not yet reported are dropped.
func (d *Detector) Reset() error {
	cls, err := NewClassifier(d.cfg.Mode, d.cls.Rate(), d.cfg.FrameDuration)
	if err != nil {
		return err
	}
	res, fifo := d.res, d.fifo[:0]
	if res != nil {
		res.Reset()
	}
	*d = Detector{
		cfg: d.cfg, cls: cls, res: res, inN: d.inN, frameN: d.frameN, frameDur: d.frameDur, fifo: fifo,
		warmupFrames: d.warmupFrames, minFrames: d.minFrames,
		overhangShort: d.overhangShort, overhangLong: d.overhangLong,
		gateSumSquares: d.gateSumSquares, alpha: d.alpha, candStart: -1,
	}
	return nil
}

// Close releases the resampler's C memory, if the Detector has one. Calling it again
// does nothing; the Detector must not be used afterwards.
func (d *Detector) Close() error {
	if d.res != nil {
		d.res.Reset()
		err := d.res.Close()
		d.res = nil
		return err
	}
	return nil
}

// Writer adapts the Detector to an audio Writer stage for streams of any chunk size:
// chunks are cut into FrameDuration frames (the tail waits for the next chunk), each is
// processed, and onResult receives every Result.
func (d *Detector) Writer(onResult func(Result)) (audio.Writer, error) {
	if onResult == nil {
		return nil, errors.New("vad: nil result callback")
	}
	return audio.NewReframer(d.cfg.SampleRate, d.cfg.FrameDuration, audio.WriterFunc(func(f audio.Frame) error {
		r, err := d.Process(f)
		if err != nil {
			return err
		}
		onResult(r)
		return nil
	}))
}
