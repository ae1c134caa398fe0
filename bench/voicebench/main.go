// Command voicebench measures how many concurrent calls the voice engine carries on this
// machine in real time, and what each costs.
//
// Every call is a voice.Session fed the way a WebRTC transport feeds it: the caller's
// audio arrives as Opus packets (48 kHz, 20 ms), real espeak-ng speech looped with
// silence between turns, and is decoded and handed to the session, which resamples it
// to 16 kHz for the VAD and the recogniser. The agent's replies come out of the session
// at 48 kHz, 20 ms frames paced in real time, and are Opus-encoded. The providers are
// in-process fakes answering at once (voice/voicetest), so the figures are the
// engine's and the audio path's own; -stt-latency, -llm-latency and -tts-latency add
// provider delays.
//
// A step runs N calls for a warm-up and a measurement window and reports: the share of
// output frames that missed their 20 ms deadline (went out more than a frame late, or
// were skipped by the pacer) and of input packets delivered more than a frame late; the
// per-turn platform overhead (end-of-turn decision to first audio frame, minus the
// providers' own time) at p50 and p99; CPU in cores; and memory per call (resident set
// and Go heap above the idle process, divided by N). A step passes when both deadline
// shares are at most 1% and p99 overhead is at most 20 ms. It also reports the CPU that
// other processes used meanwhile ("others"): on a shared machine they take cores from
// the calls, and the sweep re-runs a step that failed while they were busy.
//
//	go run -tags nolibopusfile ./bench/voicebench                 # sweep N = 50, 100, ... to the first failure
//	go run -tags nolibopusfile ./bench/voicebench -n 200          # one step
//	go run -tags nolibopusfile ./bench/voicebench -complexity 10  # Opus at libopus' default complexity
//
// Run it from the repository root (it reads voice/testdata/hello.wav). Each sweep step
// runs in a fresh child process, so memory figures do not carry over between steps.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/sysstat"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/voicetest"
)

type options struct {
	n                                  int
	warmup, window                     time.Duration
	complexity                         int
	sttLatency, llmLatency, ttsLatency time.Duration
	fixture                            string
	cpuProfile                         string
	trace                              string
}

// result is one step's figures; a child prints it as a JSON line.
type result struct {
	N              int     `json:"n"`
	Turns          int     `json:"turns"`
	OutFrames      uint64  `json:"out_frames"`
	OutLate        uint64  `json:"out_late"`
	OutMissed      uint64  `json:"out_missed"`
	OutMissPct     float64 `json:"out_miss_pct"`
	InPackets      uint64  `json:"in_packets"`
	InLate         uint64  `json:"in_late"`
	InMissPct      float64 `json:"in_miss_pct"`
	OverheadP50ms  float64 `json:"overhead_p50_ms"`
	OverheadP99ms  float64 `json:"overhead_p99_ms"`
	OverheadMaxms  float64 `json:"overhead_max_ms"`
	CPUCores       float64 `json:"cpu_cores"`
	RSSPerCallMB   float64 `json:"rss_per_call_mb"`
	HeapPerCallMB  float64 `json:"heap_per_call_mb"`
	OutMaxLateness float64 `json:"out_max_lateness_ms"`
	// MachineCores is the CPU the whole machine used during the window (all
	// processes): the machine is shared, and other load takes cores from the calls.
	MachineCores float64 `json:"machine_cores"`
	// SchedP99ms is the 99th percentile of the time goroutines spent runnable before
	// running (Go's scheduler latency), GCPauseMaxms the longest stop-the-world pause,
	// during the window: they tell a Go-side stall from a starved CPU.
	SchedP99ms   float64 `json:"sched_p99_ms"`
	GCPauseMaxms float64 `json:"gc_pause_max_ms"`
	Goroutines   int     `json:"goroutines"`
	Pass         bool    `json:"pass"`
}

// Pass limits: the criteria.
const (
	maxMissPct      = 1.0
	maxOverheadP99  = 20.0 // ms
	replySentences  = 2
	callerText      = "Hello, I would like to book an appointment for Tuesday."
	agentReply      = "Sure, I can book that for you on Tuesday. What time works best for you?"
	agentSpeechRate = 60 * time.Millisecond // per character, about 165 words a minute
)

func main() {
	var o options
	n := flag.Int("n", 0, "run one step with this many calls (0: sweep)")
	start := flag.Int("start", 50, "sweep: first N")
	step := flag.Int("step", 50, "sweep: N increment")
	maxN := flag.Int("max", 1000, "sweep: last N")
	retries := flag.Int("retries", 3, "sweep: re-runs of a step that failed while other processes were busy")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "time before measuring (calls are started over 2 s)")
	flag.DurationVar(&o.window, "window", 30*time.Second, "measurement window")
	flag.IntVar(&o.complexity, "complexity", 0, "Opus encoder complexity 0-10 (0: voice/audio's default)")
	flag.DurationVar(&o.sttLatency, "stt-latency", 0, "fake recogniser's delay to a final")
	flag.DurationVar(&o.llmLatency, "llm-latency", 0, "fake model's time to first token")
	flag.DurationVar(&o.ttsLatency, "tts-latency", 0, "fake voice's time to first audio")
	flag.StringVar(&o.fixture, "fixture", "voice/testdata/hello.wav", "caller speech (16 kHz WAV)")
	asJSON := flag.Bool("json", false, "print the step's result as one JSON line (for the sweep)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the measurement window (one step)")
	traceFile := flag.String("trace", "", "write an execution trace of the first 3 s of the window (one step)")
	flag.Parse()
	o.cpuProfile = *cpuProfile
	o.trace = *traceFile

	if *n > 0 {
		o.n = *n
		r, err := runStep(o)
		if err != nil {
			log.Fatal(err)
		}
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(r)
			return
		}
		printHeader()
		printRow(r)
		return
	}
	sweep(o, *start, *step, *maxN, *retries)
}

// sweep raises N step by step, each in a child process, until a step fails. The
// machine may be shared: a step that fails while other processes used more than
// quietCores is run again, up to retries times, and every attempt is printed.
func sweep(o options, start, step, maxN, retries int) {
	fmt.Printf("voicebench: %d CPUs, Opus complexity %s, warm-up %v, window %v per step\n",
		runtime.NumCPU(), complexityName(o.complexity), o.warmup, o.window)
	printHeader()
	best := 0
	for n := start; n <= maxN; n += step {
		var r result
		for attempt := 0; attempt <= retries; attempt++ {
			r = runChild(o, n)
			printRow(r)
			if r.Pass || r.MachineCores-r.CPUCores <= quietCores {
				break
			}
		}
		if !r.Pass {
			if r.MachineCores-r.CPUCores > quietCores {
				fmt.Printf("N=%d failed with %.2f cores used by other processes: inconclusive\n", n, r.MachineCores-r.CPUCores)
			}
			break
		}
		best = n
	}
	fmt.Printf("max N passing (<= %.0f%% frames late, p99 overhead <= %.0f ms): %d\n", maxMissPct, maxOverheadP99, best)
}

// quietCores is how much CPU other processes may use for a failed step to count.
const quietCores = 0.25

func runChild(o options, n int) result {
	args := []string{"-n", strconv.Itoa(n), "-json",
		"-warmup", o.warmup.String(), "-window", o.window.String(),
		"-complexity", strconv.Itoa(o.complexity), "-fixture", o.fixture,
		"-stt-latency", o.sttLatency.String(), "-llm-latency", o.llmLatency.String(),
		"-tts-latency", o.ttsLatency.String()}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		log.Fatalf("step %d: %v", n, err)
	}
	var r result
	if err := json.Unmarshal(lastLine(out), &r); err != nil {
		log.Fatalf("step %d: %v in %q", n, err, out)
	}
	return r
}

func lastLine(b []byte) []byte {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return []byte(lines[len(lines)-1])
}

func complexityName(c int) string {
	if c == 0 {
		return "default"
	}
	return strconv.Itoa(c)
}

func printHeader() {
	fmt.Printf("%5s %6s %9s %8s %8s %8s %8s %8s %7s %7s %9s %9s %9s %8s %s\n",
		"N", "turns", "out-frm", "out-miss", "in-late", "ovh-p50", "ovh-p99", "ovh-max", "cores", "others", "rss/call", "heap/call", "sched-p99", "gc-max", "pass")
}

func printRow(r result) {
	fmt.Printf("%5d %6d %9d %7.3f%% %7.3f%% %6.2fms %6.2fms %6.2fms %7.2f %7.2f %7.2fMB %7.2fMB %7.2fms %6.2fms %v\n",
		r.N, r.Turns, r.OutFrames, r.OutMissPct, r.InMissPct, r.OverheadP50ms, r.OverheadP99ms, r.OverheadMaxms,
		r.CPUCores, max(0, r.MachineCores-r.CPUCores), r.RSSPerCallMB, r.HeapPerCallMB, r.SchedP99ms, r.GCPauseMaxms, r.Pass)
}

// media is the audio every call shares: read once, never written.
type media struct {
	speech  [][]byte // the caller's utterance, Opus packets
	silence [][]byte // caller silence (a faint noise floor), Opus packets
	reply   []int16  // the agent's voice, espeak-ng at 22.05 kHz
}

func prepare(o options) (*media, error) {
	f, err := audio.ReadWAVFile(o.fixture)
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root, or set -fixture)", err)
	}
	up, err := audio.Resample(f.Samples, f.Rate, audio.OpusRate)
	if err != nil {
		return nil, err
	}
	m := &media{}
	if m.speech, err = encode(up, o.complexity); err != nil {
		return nil, err
	}
	noise := make([]int16, audio.OpusRate) // 1 s
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = int16(rng.IntN(21) - 10) // about -70 dBFS
	}
	if m.silence, err = encode(noise, o.complexity); err != nil {
		return nil, err
	}
	es, err := tts.NewEspeak(tts.EspeakConfig{})
	if err != nil {
		return nil, err
	}
	st, err := es.Synthesize(context.Background(), tts.Request{Text: agentReply})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	for {
		fr, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		m.reply = append(m.reply, fr.Samples...)
	}
	return m, nil
}

func encode(pcm []int16, complexity int) ([][]byte, error) {
	var packets [][]byte
	enc, err := audio.NewOpusEncoderConfig(audio.OpusEncoderConfig{Complexity: complexity}, func(p []byte) error {
		packets = append(packets, slices.Clone(p))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := enc.WriteFrame(audio.Frame{Samples: pcm, Rate: audio.OpusRate}); err != nil {
		return nil, err
	}
	return packets, enc.Close()
}

// collector gathers the figures of all calls.
type collector struct {
	mu       sync.Mutex
	overhead []time.Duration
	on       atomic.Bool // recording (after warm-up)
	inLate   atomic.Uint64
	inTotal  atomic.Uint64
	outBytes atomic.Uint64
}

func (c *collector) turn(l *voice.TurnLatency) {
	if !c.on.Load() || l.FirstAudio.IsZero() {
		return
	}
	// The engine's own share: everything after the decision that is not a provider
	// working (time to first token, time to first audio).
	ovh := l.Response() - l.LLMTimeToFirstToken() - l.TTSTimeToFirstByte()
	c.mu.Lock()
	c.overhead = append(c.overhead, ovh)
	c.mu.Unlock()
}

// call is one simulated call.
type call struct {
	s       *voice.Session
	dec     *audio.OpusDecoder
	enc     *audio.OpusEncoder
	replies atomic.Int64 // agent sentences played
}

func runStep(o options) (result, error) {
	m, err := prepare(o)
	if err != nil {
		return result{}, err
	}
	runtime.GC()
	rss0, heap0 := sysstat.RSS("self"), sysstat.HeapBytes()

	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := make([]*call, o.n)
	var wg sync.WaitGroup
	for i := range calls {
		c, err := newCall(o, m, col)
		if err != nil {
			return result{}, err
		}
		calls[i] = c
		if err := c.s.Start(ctx); err != nil {
			return result{}, err
		}
		wg.Add(1)
		// Calls start spread over 2 s, as they would arrive.
		delay := time.Duration(i) * 2 * time.Second / time.Duration(o.n)
		go func() {
			defer wg.Done()
			c.feed(ctx, m, col, delay)
		}()
	}

	time.Sleep(o.warmup)
	stats0 := sumStats(calls)
	ru0 := sysstat.SelfCPU()
	busy0, total0 := sysstat.MachineCPU()
	rm0 := sysstat.ReadRuntimeMetrics()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return result{}, err
		}
	}
	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err != nil {
			return result{}, err
		}
		if err := trace.Start(f); err != nil {
			return result{}, err
		}
		time.AfterFunc(3*time.Second, func() {
			trace.Stop()
			f.Close()
		})
	}
	col.on.Store(true)
	col.inLate.Store(0)
	col.inTotal.Store(0)
	t0 := time.Now()
	time.Sleep(o.window)
	elapsed := time.Since(t0)
	col.on.Store(false)
	ru1 := sysstat.SelfCPU()
	busy1, total1 := sysstat.MachineCPU()
	rm1 := sysstat.ReadRuntimeMetrics()
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	stats1 := sumStats(calls)
	runtime.GC()
	rss1, heap1 := sysstat.RSS("self"), sysstat.HeapBytes()

	cancel()
	wg.Wait()
	for _, c := range calls {
		c.s.Stop()
		c.dec.Close()
		c.enc.Close()
	}

	r := result{N: o.n}
	r.OutFrames = stats1.Frames - stats0.Frames
	r.OutLate = stats1.LateFrames - stats0.LateFrames
	r.OutMissed = stats1.MissedDeadlines - stats0.MissedDeadlines
	if r.OutFrames+r.OutMissed > 0 {
		r.OutMissPct = 100 * float64(r.OutLate+r.OutMissed) / float64(r.OutFrames+r.OutMissed)
	}
	r.OutMaxLateness = float64(stats1.MaxLateness) / float64(time.Millisecond)
	r.InPackets, r.InLate = col.inTotal.Load(), col.inLate.Load()
	if r.InPackets > 0 {
		r.InMissPct = 100 * float64(r.InLate) / float64(r.InPackets)
	}
	col.mu.Lock()
	ovh := slices.Clone(col.overhead)
	col.mu.Unlock()
	slices.Sort(ovh)
	r.Turns = len(ovh)
	if len(ovh) > 0 {
		pct := func(p float64) float64 {
			return float64(ovh[min(len(ovh)-1, int(p*float64(len(ovh))))]) / float64(time.Millisecond)
		}
		r.OverheadP50ms, r.OverheadP99ms = pct(0.5), pct(0.99)
		r.OverheadMaxms = float64(ovh[len(ovh)-1]) / float64(time.Millisecond)
	}
	r.CPUCores = (ru1 - ru0).Seconds() / elapsed.Seconds()
	if total1 > total0 {
		r.MachineCores = float64(runtime.NumCPU()) * float64(busy1-busy0) / float64(total1-total0)
	}
	r.RSSPerCallMB = float64(int64(rss1)-int64(rss0)) / float64(o.n) / (1 << 20)
	r.HeapPerCallMB = float64(int64(heap1)-int64(heap0)) / float64(o.n) / (1 << 20)
	r.SchedP99ms = 1000 * sysstat.QuantileDelta(rm0[0].Value.Float64Histogram(), rm1[0].Value.Float64Histogram(), 0.99)
	r.GCPauseMaxms = 1000 * sysstat.QuantileDelta(rm0[1].Value.Float64Histogram(), rm1[1].Value.Float64Histogram(), 1)
	r.Goroutines = runtime.NumGoroutine()
	r.Pass = r.Turns > 0 && r.OutMissPct <= maxMissPct && r.InMissPct <= maxMissPct && r.OverheadP99ms <= maxOverheadP99
	return r, nil
}

func newCall(o options, m *media, col *collector) (*call, error) {
	c := &call{}
	var err error
	c.enc, err = audio.NewOpusEncoderConfig(audio.OpusEncoderConfig{Complexity: o.complexity}, func(p []byte) error {
		col.outBytes.Add(uint64(len(p)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.s, err = voice.NewSession(voice.Config{
		Agent: voice.Agent{
			Name:                    "bench",
			SystemPrompt:            "You are the booking assistant of a dental clinic.",
			InterruptionSensitivity: 0.5,
			// The caller speaks again 0.7 s after each reply: no silence timeout, no
			// duration limit in a benchmark.
			EndCallAfterSilenceMS: -1,
			MaxCallDurationMS:     -1,
		},
		STT:        &voicetest.STT{Text: callerText, Latency: o.sttLatency},
		LLM:        &voicetest.LLM{Reply: agentReply, Latency: o.llmLatency},
		TTS:        &voicetest.TTS{Rate: tts.EspeakSampleRate, Audio: m.reply, PerChar: agentSpeechRate, Latency: o.ttsLatency},
		Output:     c.enc,
		OutputRate: audio.OpusRate,
		Events: voice.EventSinkFunc(func(e voice.Event) {
			switch e := e.(type) {
			case *voice.TurnLatency:
				col.turn(e)
			case *voice.Transcript:
				if e.Speaker == voice.SpeakerAgent && e.Final {
					c.replies.Add(1)
				}
			}
		}),
	})
	if err != nil {
		return nil, err
	}
	c.dec, err = audio.NewOpusDecoder(c.s)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// feed plays the caller's side in real time: the utterance, then silence until the
// agent's reply has played and 0.7 s more, and again, one packet every 20 ms. A packet
// delivered more than a frame late counts as late; when the feeder falls more than 3
// frames behind it skips ahead, as a receiver drops audio it can no longer play in
// time (the skipped packets count as late).
func (c *call) feed(ctx context.Context, m *media, col *collector, delay time.Duration) {
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return
	}
	const frame = 20 * time.Millisecond
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var (
		k         int64 // packets due so far
		speaking  = true
		pos, sil  int
		target    = int64(replySentences) // agent sentences played when the reply is over
		spokeAt   time.Time               // end of the caller's utterance
		repliedAt time.Time               // end of the agent's reply
	)
	for {
		due := start.Add(time.Duration(k) * frame)
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		late := time.Since(due)
		if late > 3*frame {
			skip := int64(late / frame)
			col.inTotal.Add(uint64(skip))
			col.inLate.Add(uint64(skip))
			k += skip
			continue
		}
		col.inTotal.Add(1)
		if late > frame {
			col.inLate.Add(1)
		}
		var pkt []byte
		if speaking {
			pkt = m.speech[pos]
			if pos++; pos == len(m.speech) {
				speaking, pos, spokeAt, repliedAt = false, 0, time.Now(), time.Time{}
			}
		} else {
			pkt = m.silence[sil%len(m.silence)]
			sil++
			now := time.Now()
			if repliedAt.IsZero() && c.replies.Load() >= target {
				repliedAt = now
			}
			// Speak again 0.7 s after the reply (or 15 s after speaking with no reply, so a
			// lost turn cannot stall the call).
			if (!repliedAt.IsZero() && now.Sub(repliedAt) > 700*time.Millisecond) || now.Sub(spokeAt) > 15*time.Second {
				speaking = true
				target = c.replies.Load() + replySentences
			}
		}
		if err := c.dec.Decode(pkt); err != nil {
			if ctx.Err() == nil {
				log.Printf("decode: %v", err)
			}
			return
		}
		k++
	}
}

func sumStats(calls []*call) voice.PlayoutStats {
	var s voice.PlayoutStats
	for _, c := range calls {
		st := c.s.Stats().Playout
		s.Frames += st.Frames
		s.LateFrames += st.LateFrames
		s.MissedDeadlines += st.MissedDeadlines
		s.MaxLateness = max(s.MaxLateness, st.MaxLateness)
	}
	return s
}
