// Command lkbench measures the voice engine through a real LiveKit room: what a caller
// hears (voice-to-voice latency, end to end) and how many rooms one agent process
// carries in real time, with what CPU and memory per room.
//
// Everything goes through a real livekit-server on loopback, started by the command
// (or an external one with -url, -key and -secret). The agent side is what a worker
// runs: a livekit.Room and a voice.Session per call, the real OpenAI adapters of
// voice/stt, voice/llm and voice/tts talking HTTP to a scripted OpenAI-compatible
// server (voice/voicetest/openaitest) that answers after fixed provider delays
// (-stt-delay, -llm-ttft, -tts-ttfb; 150, 250 and 100 ms by default) with a short
// reply. The scripted voice's samples are replaced with espeak-ng speech of the reply
// (voice.go says why: libopus codes the scripted tone several times more cheaply than
// speech; -agent-voice tone keeps the tone). The callers' microphones carry Opus at
// 48 kHz all the time, silence included, as a browser's does; the agent's voice track
// (livekit.VoiceTrack) sends 20 ms packets while the agent speaks and nothing in
// silence, as Opus DTX does. A chunk of received audio louder than lktest.SpeechDBFS is
// speech.
//
// Latency mode (the default): one room, one caller (voice/livekit/lktest). Each turn
// the caller says voice/testdata/hello.wav, then stays silent until the agent's answer
// has played out and 0.7 s more. Voice-to-voice latency is measured at the caller: the
// arrival of the first audible chunk of the answer minus the end of the caller's
// speech as sent (Say's start plus the recording's length; the fixtures are trimmed, so
// their end is the end of speech). The report gives p50, p95, min and max of it and of
// the engine's latency ledger for the same turns (voice.TurnLatency: the endpointing
// delay chosen, the wait from the end of speech to the end-of-turn decision, STT delay,
// model time to first token, voice time to first byte, the engine's own
// voice-to-voice), the transport's share each way (caller's speech end to the VAD's
// speech end; the engine's first frame to its arrival at the caller), and the platform
// overhead, the caller's wait beyond the providers and the endpointing, computed two
// ways: caller − (STT + LLM + TTS + endpointing), and caller − (end-of-turn wait + LLM
// + TTS). The recogniser only gets the utterance at the VAD's speech end, a 400 ms
// hangover after the words, so STT runs during the endpointing wait and the first
// formula counts that overlap twice (it comes out negative); the second is the
// platform's share. The target printed is the sum of the provider delays, plus the
// endpointing delay, plus at most 60 ms.
//
// Density mode: N rooms, each with an agent in this process (the worker being
// measured) and a caller in a child process, so that the worker's CPU and memory are
// its own; the child also runs the scripted providers. The callers are light (light.go:
// pre-encoded microphone packets; -caller lktest uses lktest's caller, which encodes
// every 10 ms and costs the machine as much as the agents). Callers join at -join-rate
// a second and each agent joins once its caller is in the room (-order agent-first
// joins the agents on their own schedule), so the server never faces a thundering
// herd. Every caller loops: it speaks, waits for the answer and its end, pauses 0.7 s
// and speaks again, so the agents keep answering with speech. After a warm-up, a window
// (30 s) measures: the engine's playout counters summed over sessions (frames that went
// out more than a frame late or were skipped by the pacer, underruns, the worst
// lateness), the share of each direction's audio packets that arrived (in: caller to
// session; out: agent track to caller, against the frames the engines wrote), the
// engine's per-turn overhead (end-of-turn
// decision to first frame, minus model and voice time), the caller-measured
// voice-to-voice latency, CPU in cores of the agent process, of the callers' process and
// of livekit-server separately (and of other processes: the machine may be shared), and
// the agent process's resident set and Go heap per room, and the server's resident set
// per room. A step passes when at most 1% of the output frames were late or skipped
// (voicebench's criterion), at least 99% of the audio arrived each way, and every room
// answered at least one turn in the window. Without -n, density mode sweeps N upwards
// (-start, -step, -max), each step in a fresh process with a fresh livekit-server, to
// the first failure, and re-runs a step that failed while other processes were busy.
//
//	go run -tags nolibopusfile ./bench/lkbench -mode latency                 # 50 turns
//	go run -tags nolibopusfile ./bench/lkbench -mode latency -turns 10 -llm-ttft 500ms
//	go run -tags nolibopusfile ./bench/lkbench -mode density -n 100          # one step
//	go run -tags nolibopusfile ./bench/lkbench -mode density                 # sweep 20, 40, ...
//	go run -tags nolibopusfile ./bench/lkbench -mode density -n 40 -cpuprofile agent.pprof
//
// Run it from the repository root (it reads voice/testdata/hello.wav); it needs
// livekit-server (scripts/setup) and espeak-ng. The agents, the callers and
// livekit-server share the machine unless told otherwise: read the CPU columns
// separately, and on a small machine remember that the callers and the server take
// cores the agents would have in production. To measure the agents alone, put the
// server and the callers on another machine:
//
//	go run -tags nolibopusfile ./bench/lkbench -mode density -n 100 \
//	    -url ws://10.0.0.2:7880 -key K -secret S \
//	    -callers-cmd 'ssh 10.0.0.2 cd parley && ./lkbench' -providers-addr 10.0.0.2:8089
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

type options struct {
	mode string
	// The LiveKit server; empty url starts one.
	url, key, secret string
	serverPID        int

	sttDelay, llmTTFT, ttsTTFB time.Duration
	fixture                    string
	transcript, reply          string
	pause                      time.Duration
	agentVoice                 string

	// latency
	turns int

	// density
	n                 int
	start, step, maxN int
	retries           int
	warmup, window    time.Duration
	joinRate          float64
	order             string
	caller            string
	cpuProfile        string
	callersProfile    string
	callersCmd        string
	providersAddr     string
	asJSON            bool
	role, run         string // run: the density step's room name prefix
}

const (
	// greeting is the agent's first words: a caller starts talking once it has heard
	// them, so the agent is listening (its session started) before the first turn.
	greeting = "Hello."
	// quiet is how long the agent must be silent for its answer to count as over:
	// longer than any gap between two of its sentences (the next one is synthesised
	// while the first plays).
	quiet = 300 * time.Millisecond
)

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "latency", "latency or density")
	flag.StringVar(&o.url, "url", "", "LiveKit server ws URL (empty: start a livekit-server on loopback)")
	flag.StringVar(&o.key, "key", lkserver.DevKey, "API key of the -url server")
	flag.StringVar(&o.secret, "secret", lkserver.DevSecret, "API secret of the -url server")
	flag.IntVar(&o.serverPID, "server-pid", 0, "process ID of the -url server, to report its CPU (0: not reported)")
	flag.DurationVar(&o.sttDelay, "stt-delay", 150*time.Millisecond, "scripted recogniser's time from the whole upload to its answer")
	flag.DurationVar(&o.llmTTFT, "llm-ttft", 250*time.Millisecond, "scripted model's time to first token")
	flag.DurationVar(&o.ttsTTFB, "tts-ttfb", 100*time.Millisecond, "scripted voice's time to first audio byte")
	flag.StringVar(&o.fixture, "fixture", "voice/testdata/hello.wav", "caller speech (a trimmed WAV)")
	flag.StringVar(&o.transcript, "transcript", "Hello, I would like to book an appointment for Tuesday.", "what the scripted recogniser hears")
	flag.StringVar(&o.reply, "reply", "Tuesday works for us.", "the scripted model's answer (short: turns stay quick)")
	flag.StringVar(&o.agentVoice, "agent-voice", "speech", "what the agent's voice sounds like: speech (espeak-ng, in the scripted voice's stream) or tone (the scripted voice as is)")
	flag.DurationVar(&o.pause, "pause", 700*time.Millisecond, "caller's pause after the agent's answer before speaking again")
	flag.IntVar(&o.turns, "turns", 50, "latency: turns to measure")
	flag.IntVar(&o.n, "n", 0, "density: run one step with this many rooms (0: sweep)")
	flag.IntVar(&o.start, "start", 20, "density sweep: first N")
	flag.IntVar(&o.step, "step", 20, "density sweep: N increment")
	flag.IntVar(&o.maxN, "max", 400, "density sweep: last N")
	flag.IntVar(&o.retries, "retries", 3, "density sweep: re-runs of a step that failed while other processes were busy")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "density: time after the last room joined before measuring")
	flag.DurationVar(&o.window, "window", 30*time.Second, "density: measurement window (longer than a turn, about 7 s, or rooms fail for want of one)")
	flag.Float64Var(&o.joinRate, "join-rate", 10, "density: rooms joined per second (agents and callers each)")
	flag.StringVar(&o.caller, "caller", "light", "density: light (pre-encoded microphone packets) or lktest (lktest.Caller, which Opus-encodes every 10 ms)")
	flag.StringVar(&o.order, "order", "caller-first", "density: caller-first (each agent joins once its caller is in the room) or agent-first")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "density: write a CPU profile of the agent process over the window (one step)")
	flag.StringVar(&o.callersProfile, "callers-cpuprofile", "", "density: write a CPU profile of the callers' process over the window (one step)")
	flag.StringVar(&o.callersCmd, "callers-cmd", "", "density: command starting the callers' process, this binary's arguments appended (default: this binary); e.g. 'ssh box /opt/lkbench' puts the callers on another machine, with -url a server both reach and -providers-addr")
	flag.StringVar(&o.providersAddr, "providers-addr", "127.0.0.1:0", "density: where the callers' process's scripted providers listen (with -callers-cmd on another machine, an address the agents reach)")
	flag.BoolVar(&o.asJSON, "json", false, "density: print the step's result as one JSON line (for the sweep)")
	// Internal: the density step's caller process.
	flag.StringVar(&o.role, "role", "", "internal: 'callers' runs the callers of a density step (parameters on the input)")
	flag.Parse()

	// The SDK logs every ICE and DTLS state change; the figures are what matter here.
	livekit.SetSDKLogger(slog.New(slog.DiscardHandler))

	var err error
	switch {
	case o.role == "callers":
		err = runCallers()
	case o.mode == "latency":
		err = runLatency(o)
	case o.mode == "density" && o.n > 0:
		err = densityStep(o)
	case o.mode == "density":
		sweep(o)
	default:
		err = fmt.Errorf("unknown mode %q: want latency or density", o.mode)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// server is the LiveKit server the rooms use.
type server struct {
	url, key, secret string
	pid              int // 0: unknown (an external server without -server-pid)
	stop             func()
}

// startServer starts a livekit-server on loopback, or describes the -url one.
func startServer(ctx context.Context, o options) (*server, error) {
	if o.url != "" {
		return &server{url: o.url, key: o.key, secret: o.secret, pid: o.serverPID, stop: func() {}}, nil
	}
	dir, err := os.MkdirTemp("", "lkbench-")
	if err != nil {
		return nil, err
	}
	lk, err := lkserver.Start(ctx, lkserver.Config{WorkDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &server{url: lk.URL(), key: lkserver.DevKey, secret: lkserver.DevSecret, pid: lk.PID(),
		stop: func() { lk.Stop(); os.RemoveAll(dir) }}, nil
}

// providerConfig is the scripted providers' behaviour: every utterance is heard as
// the transcript and answered with the reply.
func providerConfig(o options) openaitest.Config {
	return openaitest.Config{
		STTDelay:     o.sttDelay,
		LLMTTFT:      o.llmTTFT,
		TTSTTFB:      o.ttsTTFB,
		Transcripts:  []string{o.transcript},
		Replies:      []openaitest.Reply{{Text: o.reply}},
		DropMessages: true, // long runs: keep the records light
	}
}

// providers are the real OpenAI adapters pointed at the scripted server. One set
// serves every session, as in a worker.
type providers struct {
	stt stt.Provider
	llm llm.Provider
	tts tts.Provider
}

func newProviders(baseURL string, o options) (providers, error) {
	var p providers
	var err error
	if p.stt, err = stt.NewOpenAI(stt.OpenAIConfig{BaseURL: baseURL, APIKey: "k"}); err != nil {
		return p, err
	}
	if p.llm, err = llm.NewOpenAI(llm.OpenAIConfig{BaseURL: baseURL, APIKey: "k"}); err != nil {
		return p, err
	}
	voice, err := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: baseURL, APIKey: "k"})
	if err != nil {
		return p, err
	}
	p.tts = voice
	switch o.agentVoice {
	case "speech":
		p.tts, err = newSpeechVoice(voice, o.reply)
	case "tone":
	default:
		err = fmt.Errorf("-agent-voice %q: want speech or tone", o.agentVoice)
	}
	return p, err
}

// agent is one agent in one room, as a worker runs it.
type agent struct {
	room   *livekit.Room
	sess   *voice.Session
	cancel context.CancelFunc
	done   chan struct{}
	res    livekit.Result
	err    error
}

// startAgent joins roomName and runs a session in it until close.
func startAgent(ctx context.Context, lk *server, roomName string, p providers, sink voice.EventSink) (*agent, error) {
	tok, err := lktest.Token(lk.key, lk.secret, roomName, "agent-"+roomName, true)
	if err != nil {
		return nil, err
	}
	jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
	defer jcancel()
	r, err := livekit.Join(jctx, livekit.Config{URL: lk.url, Token: tok, CallerWait: 2 * time.Minute})
	if err != nil {
		return nil, err
	}
	s, err := voice.NewSession(voice.Config{
		CallID: roomName,
		Agent: voice.Agent{
			Name:                    "lkbench",
			SystemPrompt:            "You are the booking assistant of a dental clinic.",
			BeginMessage:            greeting,
			InterruptionSensitivity: 0.5,
			// The caller speaks again soon after each answer: no silence timeout, no
			// duration limit in a benchmark.
			EndCallAfterSilenceMS: -1,
			MaxCallDurationMS:     -1,
		},
		STT: p.stt, LLM: p.llm, TTS: p.tts,
		Output:     r.Output(),
		OutputRate: r.OutputRate(),
		Events:     r.Events(sink),
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	a := &agent{room: r, sess: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.res, a.err = r.Run(rctx, s)
	}()
	return a, nil
}

// close ends the call and leaves the room.
func (a *agent) close() {
	a.cancel()
	<-a.done
	a.room.Close()
}

func runID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func roomName(run string, i int) string { return fmt.Sprintf("lkbench-%s-%d", run, i) }
