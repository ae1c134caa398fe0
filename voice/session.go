package voice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/vad"
)

var (
	// ErrNotStarted is returned by WriteFrame before Start.
	ErrNotStarted = errors.New("voice: session not started")
	// ErrEnded is returned by WriteFrame after the session ended, and by Start after Stop.
	ErrEnded = errors.New("voice: session ended")
)

// Session holds one spoken conversation between a caller and an agent. The transport
// (a LiveKit room, a Twilio media stream, a test) writes the caller's audio with
// WriteFrame and receives the agent's audio on Config.Output; everything in between —
// voice activity, transcripts, turn-taking, barge-in, the model, tools and speech — is
// the session's.
//
// One goroutine, the control loop, owns the conversation's state; the caller's audio
// is processed (resampled, VAD, fed to STT) on the transport's goroutine inside
// WriteFrame, and the loop only hears about speech. Replies run on two goroutines each
// (model and tools; speech synthesis) and the playout on a pacer per talk spurt.
// Every goroutine exits by the time Stop returns or Done is closed.
type Session struct {
	cfg          Config
	log          *slog.Logger
	clock        audio.Clock
	th           interruptThresholds
	lo, hi       time.Duration
	systemPrompt string
	beginMessage string
	missing      []string
	tools        []llm.Tool
	funcs        map[string]Function
	fillerN      atomic.Uint64

	mu       sync.Mutex
	state    sessionState
	stopCh   chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	quit     chan struct{} // closed when the control loop exits
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  time.Time

	// Input side, guarded by inMu (WriteFrame's goroutine).
	inMu     sync.Mutex
	inOpen   bool
	inEnded  bool
	inRate   int
	inRes    *audio.Resampler
	inFrames *audio.Reframer
	vad      *vad.Detector
	onset    onsetTracker
	stream   stt.Stream
	sttErr   bool

	inCh chan input
	// judging is set while the control loop weighs caller speech over the agent: only
	// then does it need a note on every frame of speech (not just speech start and
	// end), so only then does WriteFrame wake it 50 times a second.
	judging atomic.Bool
	// onsetWatch is set while the agent has the floor and barge-in is on: only then
	// does WriteFrame tell the control loop about speech onsets (onsetTracker).
	onsetWatch atomic.Bool
	notes      chan note
	play       *playout
	// dtmfCh carries the caller's key presses to the control loop (Session.DTMF).
	dtmfCh chan dtmfPress
	// toneWatch is set while voicemail detection listens for a beep; tone is its
	// detector, on the input side (inMu).
	toneWatch atomic.Bool
	tone      *toneDetector
	// vmMessage is Agent.Voicemail.Message with its variables filled.
	vmMessage string

	histMu  sync.Mutex
	history []llm.Message

	loop    loopState
	stats   sessionCounters
	resPool resamplerPool
	// rate is the measured speaking rate of the agent's voice (control loop only).
	rate struct{ runes, samples int64 }
}

type sessionState int

const (
	stateNew sessionState = iota
	stateStarting
	stateRunning
	stateEnded
)

// input is one processed frame of caller audio, as the control loop sees it.
type input struct {
	res   vad.Result
	at    time.Time
	onset onsetKind
	tone  toneEvent // a beep started or ended (voicemail detection only)
}

// onsetKind is what the onset tracker made of a frame.
type onsetKind uint8

const (
	onsetNone onsetKind = iota
	// onsetBegin: the first sign of speech, well before the VAD's SpeechStart.
	onsetBegin
	// onsetFizzle: the onset reported earlier came to nothing: the VAD dropped it, and
	// no SpeechStart will follow from it.
	onsetFizzle
)

// onsetTracker spots the first sign of caller speech in the VAD's per-frame verdicts,
// long before the Detector's SpeechStart (which waits MinSpeech, 200 ms by default, to
// rule out clicks and coughs), so that the agent stops talking over the caller at once;
// and it tells when such an onset has come to nothing, so that the agent can go on.
// Input side only (inMu).
//
// An onset is OnsetFrames frames in a row that the classifier calls speech and that
// are louder than onsetFloorDBFS (see onsetFrames for the numbers). Its end mirrors
// the Detector's own onset logic, which counts the frames the classifier flags (and
// its energy gate lets through), forgives one frame that does not count and starts
// over after two in a row: the tracker reports a fizzle on exactly the frame where the
// Detector starts over. So every onset reported is followed either by SpeechStart or by
// a fizzle, never both, and a fizzle never precedes a SpeechStart of the same sound.
type onsetTracker struct {
	frames int     // the run that makes an onset; 0: never
	floor  float32 // dBFS each frame of the run must reach
	gate   float32 // the Detector's energy gate, in dBFS; 0: none
	run    int     // frames in a row voiced and above floor
	gap    int     // frames in a row the Detector's onset count would not take
	sent   bool    // an onset was reported; neither SpeechStart nor a fizzle followed yet
}

func newOnsetTracker(frames int, vc vad.Config) onsetTracker {
	o := onsetTracker{frames: frames, floor: onsetFloorDBFS, gate: float32(vc.EnergyGateDBFS)}
	if o.gate != 0 {
		// A frame the Detector will not count cannot start speech.
		o.floor = max(o.floor, o.gate)
	}
	return o
}

// step takes the Detector's verdict on the latest frame; watch says whether an onset
// matters now (the agent has the floor). It returns what to tell the control loop.
func (o *onsetTracker) step(res vad.Result, watch bool) onsetKind {
	if o.frames == 0 {
		return onsetNone
	}
	if res.Speech || res.Event == vad.SpeechEnd {
		// In speech (SpeechStart took over any onset), or just out of it: the
		// Detector's onset count starts afresh.
		o.run, o.gap, o.sent = 0, 0, false
		return onsetNone
	}
	if res.FrameSpeech && (o.gate == 0 || res.LevelDBFS >= o.gate) {
		o.gap = 0
	} else {
		o.gap++
	}
	if res.FrameSpeech && res.LevelDBFS >= o.floor {
		o.run++
	} else {
		o.run = 0
	}
	switch {
	case o.sent && o.gap > 1:
		o.sent = false
		return onsetFizzle
	case !o.sent && watch && o.run >= o.frames:
		// watch is read on every frame of the run: a reply that starts mid-onset is
		// paused on the next voiced frame.
		o.sent = true
		return onsetBegin
	}
	return onsetNone
}

// onsetPause is the tentative pause at the first sign of caller speech over the agent
// (control loop only).
type onsetPause struct {
	on   bool
	at   time.Time // when playback paused
	held bool      // audio was queued: the caller heard the agent stop
	// frameAt and frameOff are the clock time and stream offset of the frame that
	// made the onset: the anchor, closer to the speech than SpeechStart's own frame,
	// from which a SpeechStart that follows dates the speech.
	frameAt  time.Time
	frameOff time.Duration
}

// loopState is owned by the control loop goroutine.
type loopState struct {
	ending   bool
	endedBy  EndReason
	endErr   error
	turn     int
	user     *userTurn
	segs     []*speechSeg // recent speech segments, oldest first
	cur      *speechSeg   // the segment in progress
	reply    *reply
	replyID  uint64
	cand     *candidate
	reprompt bool // the silence reprompt was said and nothing heard since
	onset    onsetPause
	// keys is the DTMF entry being collected since keysAt (dtmf.go).
	keys     []byte
	keysAt   time.Time
	dtmfWait clockTimer
	vm       vmState // voicemail detection (voicemail.go)

	endpoint, silence, maxDur, sttWait clockTimer
}

// segKind says what caller speech was, as far as the engine decided.
type segKind int

const (
	segTurn    segKind = iota // part of a caller turn
	segOverlap                // over the agent, not (yet) an interruption
	segIgnored                // over the agent with barge-in disabled
)

// speechSeg is one stretch of caller speech between a VAD start and end.
type speechSeg struct {
	start, end     time.Duration // stream offsets; end < 0 while speaking
	startAt, endAt time.Time
	kind           segKind
	turn           *userTurn
	finals         int
	text           string
	interim        string
}

// userTurn is the caller's turn being collected.
type userTurn struct {
	id            int
	segs          []*speechSeg
	speaking      bool
	speechEndedAt time.Time
	decided       bool
	decidedAt     time.Time
	delay         time.Duration
	sttFinalAt    time.Time
	// keys are DTMF entries the caller keyed while speaking this turn (keysText).
	keys []string
}

// candidate is caller speech over the agent, not yet judged.
type candidate struct {
	seg      *speechSeg
	pausedAt time.Time
	lastDur  time.Duration
}

type sessionCounters struct {
	turns, bargeIns, falseInterruptions, falseOnsets atomic.Int64
}

// falseOnsetKind labels fizzled onset pauses in the interruptions metric, next to
// BargeIn and FalseInterruption.
const falseOnsetKind = "false_onset"

// NewSession validates cfg and prepares a session. Nothing runs until Start.
func NewSession(cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Session{
		cfg:    cfg,
		log:    cfg.Logger.With("call_id", cfg.CallID, "agent", cfg.Agent.Name),
		clock:  cfg.Clock,
		th:     thresholdsFor(cfg.Agent.InterruptionSensitivity),
		lo:     ms(cfg.Agent.EndpointingMinMS),
		hi:     ms(cfg.Agent.EndpointingMaxMS),
		tools:  buildTools(cfg.Agent),
		funcs:  make(map[string]Function, len(cfg.Agent.Functions)),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
		quit:   make(chan struct{}),
		// inCh: the loop takes a frame in microseconds; 50 frames (1 s) of slack
		// covers any stall short of a bug, and per-frame updates (not events) are
		// dropped rather than block the transport when it is full.
		inCh: make(chan input, 50),
		// notes: a reply produces a handful per sentence.
		notes:  make(chan note, 256),
		dtmfCh: make(chan dtmfPress, dtmfQueue),
	}
	if cfg.DTMFOut {
		s.tools = append(s.tools, sendDTMFTool())
	}
	if s.vmEnabled() {
		s.tone = newToneDetector(inputRate)
	}
	for _, f := range cfg.Agent.Functions {
		s.funcs[f.Name] = f
	}
	s.onset = newOnsetTracker(s.th.OnsetFrames, cfg.VAD)
	var miss1, miss2 []string
	s.systemPrompt, miss1 = substitute(cfg.Agent.SystemPrompt, cfg.Variables)
	s.systemPrompt = strings.TrimSpace(s.systemPrompt) + voiceGuidance
	s.beginMessage, miss2 = substitute(cfg.Agent.BeginMessage, cfg.Variables)
	var miss3 []string
	s.vmMessage, miss3 = substitute(cfg.Agent.Voicemail.Message, cfg.Variables)
	for _, m := range slices.Concat(miss1, miss2, miss3) {
		if !slices.Contains(s.missing, m) {
			s.missing = append(s.missing, m)
		}
	}
	if len(s.missing) > 0 {
		s.log.Warn("voice: prompt variables missing; left empty", "variables", s.missing)
	}
	s.play = newPlayout(tapOutput(cfg.Output, cfg.Tap), cfg.OutputRate, cfg.PlayoutBuffer, cfg.Clock, s.notes, s.quit, &s.wg)
	return s, nil
}

// MissingVariables lists the {{variables}} of the prompt and begin message that
// Config.Variables did not provide (and that had no fallback).
func (s *Session) MissingVariables() []string { return slices.Clone(s.missing) }

// SystemPrompt is the system prompt the model gets, variables filled in.
func (s *Session) SystemPrompt() string { return s.systemPrompt }

// Start connects the recogniser and starts the conversation: the agent says its begin
// message, if it has one, and listens. The session runs until Stop, until ctx ends, or
// until it ends itself (end_call, transfer, silence, max duration, a provider failure);
// Done tells when. Start fails if the recogniser cannot be reached, and after Stop.
func (s *Session) Start(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateStarting, stateRunning:
		s.mu.Unlock()
		return errors.New("voice: session already started")
	case stateEnded:
		s.mu.Unlock()
		return ErrEnded
	}
	s.state = stateStarting
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.mu.Unlock()

	det, err := vad.NewDetector(s.cfg.VAD)
	if err == nil {
		s.vad = det
		s.stream, err = s.cfg.STT.Stream(s.ctx, stt.Options{SampleRate: inputRate, Language: s.cfg.Agent.Language})
		if err != nil {
			err = fmt.Errorf("voice: stt: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopCh:
		if err == nil {
			err = ErrEnded
		}
	default:
	}
	if err != nil {
		s.state = stateEnded
		s.inMu.Lock()
		s.inEnded = true
		s.inMu.Unlock()
		s.cancel()
		if s.stream != nil {
			s.stream.Close()
		}
		if s.vad != nil {
			s.vad.Close()
		}
		close(s.quit)
		close(s.done)
		return err
	}
	s.state = stateRunning
	s.started = s.clock.Now()
	s.inMu.Lock()
	s.inOpen = true
	s.inMu.Unlock()
	go s.run()
	return nil
}

// Stop ends the conversation: the agent stops speaking, work in flight is cancelled,
// the history keeps what was actually said, a CallEnded event (EndStopped) is emitted
// if the session had not ended already, and every goroutine exits before Stop returns.
// It is safe to call more than once, and from any goroutine but an EventSink's.
func (s *Session) Stop() {
	s.stopOnce.Do(func() { close(s.stopCh) })
	s.mu.Lock()
	if s.state == stateNew {
		s.state = stateEnded
		s.inMu.Lock()
		s.inEnded = true
		s.inMu.Unlock()
		close(s.quit)
		close(s.done)
	}
	s.mu.Unlock()
	<-s.done
}

// Done is closed when the session has ended and all its goroutines have exited.
func (s *Session) Done() <-chan struct{} { return s.done }

// EndReason says why the session ended; "" while it runs.
func (s *Session) EndReason() EndReason {
	select {
	case <-s.done:
		return s.loop.endedBy
	default:
		return ""
	}
}

// History returns a copy of the conversation so far (without the system prompt): the
// caller's turns, what the agent actually said, and tool calls with their results.
func (s *Session) History() []llm.Message {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	out := make([]llm.Message, len(s.history))
	for i, m := range s.history {
		m.ToolCalls = slices.Clone(m.ToolCalls)
		out[i] = m
	}
	return out
}

// Stats describe a session's audio output and turn-taking so far.
type Stats struct {
	Playout            PlayoutStats
	Turns              int64
	BargeIns           int64
	FalseInterruptions int64
	// FalseOnsets counts tentative pauses at the first sign of caller speech that the
	// VAD did not confirm (a click, a bump, a breath): the agent stopped for a moment
	// and went on where it paused. Only pauses with agent audio queued count, the ones
	// the caller could hear; an onset the VAD confirms becomes a barge-in or a false
	// interruption and is counted there.
	FalseOnsets int64
}

// Stats returns a snapshot; safe from any goroutine.
func (s *Session) Stats() Stats {
	return Stats{
		Playout:            s.play.Stats(),
		Turns:              s.stats.turns.Load(),
		BargeIns:           s.stats.bargeIns.Load(),
		FalseInterruptions: s.stats.falseInterruptions.Load(),
		FalseOnsets:        s.stats.falseOnsets.Load(),
	}
}

// WriteFrame takes caller audio at any sample rate and in chunks of any length. It is
// resampled to 16 kHz, cut into 20 ms frames, run through the VAD and fed to the
// recogniser, all on the calling goroutine (a few microseconds per frame, no
// allocation once warm). Calls must come from one goroutine at a time, in stream
// order. f.Samples is not retained.
func (s *Session) WriteFrame(f audio.Frame) error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if !s.inOpen {
		if s.inEnded {
			return ErrEnded
		}
		return ErrNotStarted
	}
	if f.Rate <= 0 || f.Rate > audio.MaxSampleRate {
		return fmt.Errorf("voice: frame rate %d Hz", f.Rate)
	}
	if f.Rate != s.inRate {
		if err := s.setInputRate(f.Rate); err != nil {
			return err
		}
	}
	if s.cfg.Tap != nil {
		s.cfg.Tap.CallerAudio(f)
	}
	return s.inRes.WriteFrame(f)
}

// setInputRate builds the resampler for a (new) input rate. A transport that changes
// rate mid-call (a codec renegotiation) gets a fresh filter; the VAD's stream continues.
func (s *Session) setInputRate(rate int) error {
	if s.inFrames == nil {
		fr, err := audio.NewReframer(inputRate, frameDuration, audio.WriterFunc(s.processFrame))
		if err != nil {
			return err
		}
		s.inFrames = fr
	}
	if s.inRes != nil {
		s.inRes.Flush()
		s.inRes.Close()
	}
	res, err := audio.NewResampler(rate, inputRate, s.inFrames)
	if err != nil {
		return fmt.Errorf("voice: %w", err)
	}
	s.inRes, s.inRate = res, rate
	return nil
}

// processFrame runs one 20 ms, 16 kHz frame through the VAD and into the recogniser,
// and tells the control loop about speech. Called with inMu held.
func (s *Session) processFrame(f audio.Frame) error {
	res, err := s.vad.Process(f)
	if err != nil {
		return fmt.Errorf("voice: vad: %w", err)
	}
	if err := s.stream.WriteFrame(f); err != nil && !s.sttErr {
		// The stream's Events channel closes on failure and the control loop ends the
		// call; no need to fail the transport's write as well.
		s.sttErr = true
		s.log.Warn("voice: stt write failed", "err", err)
	}
	switch res.Event {
	case vad.SpeechStart:
		s.stream.SpeechStarted()
	case vad.SpeechEnd:
		if err := s.stream.Flush(); err != nil && !s.sttErr {
			s.sttErr = true
			s.log.Warn("voice: stt flush failed", "err", err)
		}
	}
	kind := s.onset.step(res, s.onsetWatch.Load())
	tone := toneNone
	if s.tone != nil {
		if s.toneWatch.Load() {
			tone = s.tone.step(f.Samples)
		} else {
			s.tone.reset()
		}
	}
	in := input{res: res, at: s.clock.Now(), onset: kind, tone: tone}
	switch {
	case res.Event != vad.EventNone || kind != onsetNone || tone != toneNone:
		// Never dropped: a lost fizzle would leave the agent paused.
		select {
		case s.inCh <- in:
		case <-s.quit:
		}
	case res.Speech && s.judging.Load():
		select {
		case s.inCh <- in:
		default:
		}
	}
	return nil
}

// clockTimer is a one-shot timer on the session's clock, usable in a select.
type clockTimer struct {
	t audio.Timer
	c <-chan time.Time
}

func (t *clockTimer) arm(clock audio.Clock, d time.Duration) {
	if t.t == nil {
		t.t = clock.NewTimer(d)
	} else {
		t.t.Stop()
		t.t.Reset(d)
	}
	t.c = t.t.C()
}

func (t *clockTimer) stop() {
	if t.t != nil {
		t.t.Stop()
	}
	t.c = nil
}

// fired marks the timer consumed after its channel delivered.
func (t *clockTimer) fired() { t.c = nil }

func (s *Session) emit(e Event) {
	if s.cfg.Events != nil {
		s.cfg.Events.HandleEvent(e)
	}
}

// run is the control loop. It is not counted in wg: it waits for wg at the end.
func (s *Session) run() {
	l := &s.loop
	if d := ms(s.cfg.Agent.MaxCallDurationMS); d > 0 {
		l.maxDur.arm(s.clock, d)
	}
	switch {
	case s.vmEnabled():
		// An outbound call that may reach a machine: listen first (voicemail.go).
		s.vmStart()
	case strings.TrimSpace(s.beginMessage) != "":
		s.startScripted(s.beginMessage)
	default:
		s.armSilence()
	}
	sttEvents := s.stream.Events()
	for !l.ending {
		select {
		case <-s.stopCh:
			s.end(EndStopped, nil)
		case <-s.ctx.Done():
			s.end(EndStopped, nil)
		case in := <-s.inCh:
			s.onInput(in)
		case ev, ok := <-sttEvents:
			if !ok {
				sttEvents = nil
				if s.ctx.Err() != nil {
					// Start's context ended: the stream closed because of it.
					s.end(EndStopped, nil)
					break
				}
				err := s.stream.Err()
				if err == nil {
					err = errors.New("voice: the recogniser's stream ended")
				}
				s.end(EndError, err)
				break
			}
			s.onTranscript(ev)
		case n := <-s.notes:
			s.onNote(n)
		case <-l.endpoint.c:
			l.endpoint.fired()
			s.decideTurn()
		case <-l.sttWait.c:
			l.sttWait.fired()
			s.onSTTWaitOver()
		case <-l.silence.c:
			l.silence.fired()
			s.onSilence()
		case <-l.maxDur.c:
			l.maxDur.fired()
			s.end(EndMaxDuration, nil)
		case p := <-s.dtmfCh:
			s.onDTMF(p)
		case <-l.dtmfWait.c:
			l.dtmfWait.fired()
			s.flushKeys()
		case <-l.vm.timeout.c:
			l.vm.timeout.fired()
			s.vmTimeout()
		case <-l.vm.long.c:
			l.vm.long.fired()
			if t := l.user; t != nil && l.vm.phase == vmListening {
				s.vmMachineFound("long_greeting", s.turnText(t, true))
			}
		case <-l.vm.quiet.c:
			l.vm.quiet.fired()
			s.vmQuietOver()
		}
	}
	s.shutdown()
}

// shutdown tears the session down after the loop ends.
func (s *Session) shutdown() {
	l := &s.loop
	for _, t := range append([]*clockTimer{&l.endpoint, &l.silence, &l.maxDur, &l.sttWait, &l.dtmfWait}, l.vm.timers()...) {
		t.stop()
	}
	close(s.quit)
	s.cancel()
	s.play.shutdown()
	s.inMu.Lock()
	s.inOpen = false
	s.inEnded = true
	if s.inRes != nil {
		s.inRes.Reset()
		s.inRes.Close()
	}
	s.vad.Close()
	s.inMu.Unlock()
	s.stream.Close()
	s.mu.Lock()
	s.state = stateEnded
	s.mu.Unlock()
	// Reply goroutines, tool calls, lookups and pacers all watch quit or their
	// (cancelled) contexts, so this wait is short.
	s.wg.Wait()
	s.closeResamplers()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.observeEnd(l.endedBy)
	}
	close(s.done)
}

// end finishes the call: what is playing stops, the reply is cut to what was heard, and
// CallEnded is emitted. The loop exits after it.
func (s *Session) end(reason EndReason, err error) {
	l := &s.loop
	if l.ending {
		return
	}
	l.ending = true
	l.endedBy, l.endErr = reason, err
	if l.reply != nil {
		s.interruptReply()
	}
	if err != nil {
		s.log.Warn("voice: call ended on error", "err", err)
	}
	now := s.clock.Now()
	s.emit(&CallEnded{Reason: reason, At: now, Duration: now.Sub(s.started), Err: err})
}

// armSilence starts the silence timer, if the agent has one, when nobody is speaking.
func (s *Session) armSilence() {
	d := ms(s.cfg.Agent.EndCallAfterSilenceMS)
	if d <= 0 {
		return
	}
	s.loop.silence.arm(s.clock, d)
}

func (s *Session) onSilence() {
	l := &s.loop
	if l.reply != nil || l.user != nil || l.cur != nil {
		return
	}
	if !l.reprompt {
		l.reprompt = true
		s.startScripted(s.cfg.Agent.RepromptMessage)
		return
	}
	s.end(EndSilence, nil)
}

// onInput handles one frame's VAD verdict.
func (s *Session) onInput(in input) {
	l := &s.loop
	res := in.res
	if in.tone != toneNone {
		s.vmTone(in.tone)
		if l.ending {
			return
		}
	}
	switch in.onset {
	case onsetBegin:
		s.pauseAtOnset(in)
		return
	case onsetFizzle:
		s.onsetFizzled()
		return
	}
	switch res.Event {
	case vad.SpeechStart:
		// The VAD reports where the speech began; translate to the clock, from the
		// onset's frame if it paused the agent (so the speech is dated before the pause
		// however the frames since were delivered).
		o := l.onset
		l.onset = onsetPause{}
		at, off := in.at, res.Offset
		if o.on {
			at, off = o.frameAt, o.frameOff
		}
		seg := &speechSeg{start: res.SpeechStartedAt, end: -1, startAt: at.Add(res.SpeechStartedAt - off)}
		s.addSeg(seg)
		l.silence.stop()
		s.vmSpeech(true)
		if l.reply != nil {
			if !s.th.Enabled || l.vm.phase == vmLeaving {
				// With barge-in off, or a machine recording the agent's message.
				seg.kind = segIgnored
				return
			}
			// Caller speech over the agent: stop talking over them (if the onset pause
			// has not already), then judge.
			seg.kind = segOverlap
			pausedAt := o.at
			if !o.on {
				pausedAt = s.clock.Now()
				s.play.pause()
			}
			s.setCand(&candidate{seg: seg, pausedAt: pausedAt})
			s.judge(in.at, res.Offset-res.SpeechStartedAt, res.FrameSpeech)
			return
		}
		if o.on {
			// Not reached (finishReply resumes), but a pause must never outlive its reply.
			s.play.resume()
		}
		s.joinTurn(seg)
	case vad.SpeechEnd:
		seg := l.cur
		l.cur = nil
		if seg == nil {
			return
		}
		s.vmSpeech(false)
		seg.end = res.SpeechEndedAt
		seg.endAt = in.at.Add(res.SpeechEndedAt - res.Offset)
		switch seg.kind {
		case segOverlap:
			if l.cand != nil && l.cand.seg == seg {
				s.falseInterruption(in.at)
			}
		case segTurn:
			if t := seg.turn; t != nil && t == l.user {
				t.speaking = false
				t.speechEndedAt = seg.endAt
				s.scheduleEndpoint()
			}
		case segIgnored:
			if l.reply == nil && l.user == nil {
				s.armSilence()
			}
		}
	default:
		if l.cand != nil && res.Speech {
			s.judge(in.at, res.Offset-res.SpeechStartedAt, res.FrameSpeech)
		}
	}
}

// pauseAtOnset: the first sign of caller speech while the agent has the floor. The
// agent stops talking over them now, tentatively; a SpeechStart that follows judges
// from this pause, a fizzle lifts it.
func (s *Session) pauseAtOnset(in input) {
	l := &s.loop
	if s.th.OnsetFrames == 0 || l.reply == nil || l.cand != nil || l.onset.on || l.vm.phase == vmLeaving {
		return
	}
	l.onset = onsetPause{on: true, at: s.clock.Now(), frameAt: in.at, frameOff: in.res.Offset}
	l.onset.held = s.play.pause()
}

// onsetFizzled: the VAD dropped the onset without reporting speech. Playback resumes
// where it paused. Only pauses the caller could hear (audio was queued) are counted,
// in Stats.FalseOnsets and in the interruptions metric (kind "false_onset"), and no
// event is emitted: a click is not part of the conversation, a call from a noisy
// place would produce dozens, and what a dashboard wants is their rate, next to the
// barge-ins and false interruptions.
func (s *Session) onsetFizzled() {
	l := &s.loop
	o := l.onset
	if !o.on {
		return
	}
	l.onset = onsetPause{}
	s.play.resume()
	if o.held {
		s.stats.falseOnsets.Add(1)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.interruptions.WithLabelValues(falseOnsetKind).Inc()
		}
	}
}

// addSeg records a new segment, keeping the last few for attributing transcripts.
func (s *Session) addSeg(seg *speechSeg) {
	l := &s.loop
	l.cur = seg
	// 16 segments reach back well over the few seconds a recogniser lags.
	if len(l.segs) >= 16 {
		copy(l.segs, l.segs[1:])
		l.segs = l.segs[:len(l.segs)-1]
	}
	l.segs = append(l.segs, seg)
}

// joinTurn makes seg part of the caller's current turn, starting one if needed.
func (s *Session) joinTurn(seg *speechSeg) {
	l := &s.loop
	seg.kind = segTurn
	t := l.user
	if t == nil {
		l.turn++
		s.stats.turns.Add(1)
		t = &userTurn{id: l.turn}
		l.user = t
	}
	// The caller went on: whatever was decided is undone.
	t.decided = false
	l.endpoint.stop()
	l.sttWait.stop()
	seg.turn = t
	t.segs = append(t.segs, seg)
	t.speaking = seg.end < 0
	s.vmTurnStarted(t)
	if l.user != t {
		return // a machine's greeting (voicemail detection took it)
	}
	if !t.speaking {
		t.speechEndedAt = seg.endAt
		s.scheduleEndpoint()
	}
}

// setReply sets (or clears) the reply that has the floor, and with it whether the
// input side reports speech onsets.
func (s *Session) setReply(r *reply) {
	s.loop.reply = r
	s.onsetWatch.Store(r != nil && s.th.OnsetFrames > 0 && s.loop.vm.phase != vmLeaving)
}

// setCand sets (or clears) the speech over the agent being judged.
func (s *Session) setCand(c *candidate) {
	s.loop.cand = c
	s.judging.Store(c != nil)
}

// judge decides whether caller speech over the agent is a barge-in. dur is how long
// ago the speech began; voiced says the latest frame is speech. Only voiced frames
// count: during the VAD's hangover (silence after a cough, before it reports the end)
// the caller is not speaking, however long ago they started.
func (s *Session) judge(now time.Time, dur time.Duration, voiced bool) {
	l := &s.loop
	c := l.cand
	if c == nil {
		return
	}
	if voiced {
		c.lastDur = dur
	}
	if !voiced || dur < s.th.MinSpeech {
		return
	}
	text := strings.TrimSpace(c.seg.text + " " + c.seg.interim)
	if text != "" && substantiveWords(text) == 0 && dur < s.th.BackchannelMax {
		// "Okay, yeah, right…": still a backchannel, however long.
		return
	}
	s.bargeIn(now)
}

// bargeIn: the caller takes the floor. Playback stops now; the reply is cancelled and
// cut to what was played; the caller's speech starts a new turn.
func (s *Session) bargeIn(now time.Time) {
	l := &s.loop
	c := l.cand
	s.setCand(nil)
	played := s.interruptReply()
	s.stats.bargeIns.Add(1)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.interruptions.WithLabelValues(string(BargeIn)).Inc()
	}
	s.emit(&Interruption{Kind: BargeIn, Turn: l.turn, At: now, SpeechStarted: c.seg.startAt, PausedAt: c.pausedAt, Played: played})
	s.joinTurn(c.seg)
}

// falseInterruption: the speech over the agent ended too soon to count; playback
// resumes where it paused.
func (s *Session) falseInterruption(now time.Time) {
	l := &s.loop
	c := l.cand
	s.setCand(nil)
	s.play.resume()
	s.stats.falseInterruptions.Add(1)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.interruptions.WithLabelValues(string(FalseInterruption)).Inc()
	}
	s.emit(&Interruption{Kind: FalseInterruption, Turn: l.turn, At: now, SpeechStarted: c.seg.startAt, PausedAt: c.pausedAt, Paused: now.Sub(c.pausedAt)})
}

// interruptReply cancels the current reply, clears the playout and commits to the
// history what was heard. It returns that text.
func (s *Session) interruptReply() string {
	l := &s.loop
	r := l.reply
	if r == nil {
		return ""
	}
	segs := s.play.clear(r.id)
	r.cancel()
	for _, p := range segs {
		if p.reply != r.id {
			continue
		}
		sr := r.sent(p.idx)
		sr.played = p.played
		if p.done {
			sr.total = p.total
		} else {
			// Still being synthesised: the length is unknown. Estimate it from the text
			// at the session's measured speaking rate, and never below what arrived.
			sr.total = max(p.total, s.estimateSamples(sr.text))
		}
	}
	s.setReply(nil)
	l.onset = onsetPause{} // clear lifted it
	s.setCand(nil)
	return s.commit(r, true)
}

// estimateSamples guesses the length of text's audio, at the output rate, from the
// speaking rate measured on the sentences played so far (control loop only).
func (s *Session) estimateSamples(text string) int64 {
	n := int64(len([]rune(text)))
	if s.rate.runes > 0 {
		return n * s.rate.samples / s.rate.runes
	}
	// 14 characters per second is a typical TTS speaking rate (about 165 words a
	// minute), used until a sentence has been measured.
	return n * int64(s.cfg.OutputRate) / 14
}

// scheduleEndpoint sets (or resets) the end-of-turn deadline from the transcript so far.
func (s *Session) scheduleEndpoint() {
	l := &s.loop
	t := l.user
	if t == nil || t.speaking || t.decided {
		return
	}
	c := unknownText
	if text := s.turnText(t, true); text != "" {
		c = classify(text)
	}
	t.delay = endpointDelay(c, s.lo, s.hi)
	if s.loop.vm.phase == vmListening {
		t.delay = max(t.delay, voicemailAfterGreeting)
	}
	wait := t.speechEndedAt.Add(t.delay).Sub(s.clock.Now())
	if wait <= 0 {
		l.endpoint.stop()
		s.decideTurn()
		return
	}
	l.endpoint.arm(s.clock, wait)
}

// turnText joins the turn's finals, and with interim the latest hypothesis.
func (s *Session) turnText(t *userTurn, interim bool) string {
	var parts []string
	for _, seg := range t.segs {
		if seg.text != "" {
			parts = append(parts, seg.text)
		}
		if interim && seg.interim != "" {
			parts = append(parts, seg.interim)
		}
	}
	parts = append(parts, t.keys...)
	return strings.TrimSpace(strings.Join(parts, " "))
}

// transcribed: the turn's last segment has its final transcript. Recognisers finalise
// in stream order (the per-utterance adapter emits Finals in Flush order; a streaming
// one finalises as it goes, and one of its finals may span two of the VAD's segments),
// so the last segment's final means the whole turn is in.
func transcribed(t *userTurn) bool {
	if len(t.segs) == 0 {
		return true
	}
	last := t.segs[len(t.segs)-1]
	return last.end >= 0 && last.finals > 0
}

// decideTurn ends the caller's turn and answers, as soon as the transcript is in.
func (s *Session) decideTurn() {
	l := &s.loop
	t := l.user
	if t == nil || t.speaking || t.decided {
		return
	}
	t.decided = true
	t.decidedAt = s.clock.Now()
	if l.vm.phase == vmListening {
		// The utterance ended before it grew into a long greeting.
		l.vm.long.stop()
	}
	if transcribed(t) {
		s.answer(t)
		return
	}
	l.sttWait.arm(s.clock, s.cfg.STTFinalTimeout)
}

func (s *Session) onSTTWaitOver() {
	t := s.loop.user
	if t == nil || !t.decided {
		return
	}
	s.log.Warn("voice: no final transcript in time; answering with what there is", "timeout", s.cfg.STTFinalTimeout)
	s.answer(t)
}

// answer starts the reply to turn t.
func (s *Session) answer(t *userTurn) {
	l := &s.loop
	l.user = nil
	l.sttWait.stop()
	text := s.turnText(t, false)
	if l.vm.phase != vmOff && s.vmTurn(t, text) {
		return
	}
	if text == "" {
		// A cough, a door: nothing to answer.
		s.armSilence()
		return
	}
	l.reprompt = false
	s.appendUser(text)
	r := s.newReply(t.id)
	r.ledger = TurnLatency{
		Turn:             t.id,
		SpeechEnded:      t.speechEndedAt,
		EndOfTurn:        t.decidedAt,
		EndpointingDelay: t.delay,
		STTFinal:         t.sttFinalAt,
	}
	s.launch(r, s.converse(s.History(), text))
}

func (s *Session) newReply(turn int) *reply {
	l := &s.loop
	l.replyID++
	ctx, cancel := context.WithCancel(s.ctx)
	r := &reply{id: l.replyID, turn: turn, ctx: ctx, cancel: cancel}
	s.setReply(r)
	l.silence.stop()
	return r
}

// startScripted says fixed text (begin message, reprompt).
func (s *Session) startScripted(text string) {
	r := s.newReply(s.loop.turn)
	r.scripted = true
	r.ledger.Turn = s.loop.turn
	s.launch(r, scripted(text))
}

// appendUser adds the caller's words to the history, merging with a caller message
// that got no answer (the caller went on after the agent had started thinking).
func (s *Session) appendUser(text string) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if n := len(s.history); n > 0 && s.history[n-1].Role == llm.User {
		s.history[n-1].Content += " " + text
		return
	}
	s.history = append(s.history, llm.Message{Role: llm.User, Content: text})
}

// onTranscript handles a recogniser event.
func (s *Session) onTranscript(ev stt.Event) {
	l := &s.loop
	now := s.clock.Now()
	seg := s.attribute(ev)
	text := strings.TrimSpace(ev.Text)
	if seg == nil {
		if text != "" {
			s.log.Debug("voice: transcript with no speech segment", "text", text)
		}
		return
	}
	tr := &Transcript{Speaker: SpeakerUser, Text: text, Final: ev.Type == stt.Final,
		Backchannel: seg.kind != segTurn, Start: seg.startAt}
	if seg.turn != nil {
		tr.Turn = seg.turn.id
	}
	if ev.Type != stt.Final {
		seg.interim = text
		if text != "" {
			s.emit(tr)
		}
		s.afterTranscript(seg, now)
		return
	}
	seg.finals++
	seg.interim = ""
	if text != "" {
		seg.text = strings.TrimSpace(seg.text + " " + text)
		if seg.end >= 0 {
			tr.End = seg.endAt
		}
		s.emit(tr)
	}
	if seg.kind == segTurn && seg.turn != nil {
		t := seg.turn
		if t == l.user {
			t.sttFinalAt = now
		} else if text != "" && t.id == l.turn {
			// Late words of a turn already answered: they belong to its message.
			s.appendLate(text)
		}
	}
	s.afterTranscript(seg, now)
}

// afterTranscript reacts to new words on seg.
func (s *Session) afterTranscript(seg *speechSeg, now time.Time) {
	l := &s.loop
	s.vmTranscript(seg)
	if l.ending {
		return
	}
	switch seg.kind {
	case segTurn:
		t := seg.turn
		if t == nil || t != l.user {
			return
		}
		if t.decided {
			if transcribed(t) {
				s.answer(t)
			}
			return
		}
		s.scheduleEndpoint()
	case segOverlap:
		text := strings.TrimSpace(seg.text + " " + seg.interim)
		words := substantiveWords(text)
		if l.cand != nil && l.cand.seg == seg {
			// Still speaking: words can settle it before the duration does.
			if words >= s.th.MinWords && l.cand.lastDur >= s.th.MinSpeech/2 {
				s.bargeIn(now)
				return
			}
			s.judge(now, l.cand.lastDur, true)
			return
		}
		// Short, but said something ("Stop!", "No, wait"): an interruption after all.
		if seg.end >= 0 && seg.finals > 0 && l.reply != nil && words >= s.th.MinWords {
			pausedAt := l.onset.at
			if !l.onset.on {
				pausedAt = s.clock.Now()
				s.play.pause()
			}
			s.setCand(&candidate{seg: seg, pausedAt: pausedAt})
			s.bargeIn(now)
		}
	}
}

// appendLate adds words that arrived after the reply to their turn started.
func (s *Session) appendLate(text string) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	for i := len(s.history) - 1; i >= 0; i-- {
		if s.history[i].Role == llm.User {
			s.history[i].Content = strings.TrimSpace(s.history[i].Content + " " + text)
			return
		}
	}
}

// attribute finds the speech segment a transcript belongs to: by time overlap when the
// recogniser reports offsets (they count the same 16 kHz stream the VAD sees), else the
// oldest segment still waiting for a final (finals answer Flushes in order), else the
// latest segment.
func (s *Session) attribute(ev stt.Event) *speechSeg {
	l := &s.loop
	if len(l.segs) == 0 {
		return nil
	}
	if ev.End > 0 {
		var best *speechSeg
		bestOverlap := time.Duration(0)
		for _, seg := range l.segs {
			end := seg.end
			if end < 0 {
				end = 1<<62 - 1
			}
			o := min(ev.End, end) - max(ev.Start, seg.start)
			if o > bestOverlap {
				best, bestOverlap = seg, o
			}
		}
		if best != nil {
			return best
		}
		// No overlap (a recogniser's notion of the utterance differs): the latest
		// segment that began before the transcript ended.
		for i := len(l.segs) - 1; i >= 0; i-- {
			if l.segs[i].start <= ev.End {
				return l.segs[i]
			}
		}
		return l.segs[0]
	}
	if ev.Type == stt.Final {
		for _, seg := range l.segs {
			if seg.end >= 0 && seg.finals == 0 {
				return seg
			}
		}
	}
	if l.cur != nil {
		return l.cur
	}
	return l.segs[len(l.segs)-1]
}

// onNote handles a note from a reply or the playout.
func (s *Session) onNote(n note) {
	l := &s.loop
	r := l.reply
	if r == nil || n.reply != r.id {
		return // from a reply already cancelled
	}
	switch n.kind {
	case noteKnowledge:
		r.ledger.KnowledgeWait = n.wait
	case noteLLMRequest:
		r.ledger.LLMRequest = n.at
	case noteFirstToken:
		r.ledger.LLMFirstToken = n.at
	case noteSentence:
		sr := r.sent(n.idx)
		sr.text, sr.round, sr.filler, sr.known = n.text, n.round, n.filler, true
	case noteTTSStart:
		if r.ledger.FirstSentence.IsZero() {
			r.ledger.FirstSentence = n.at
		}
	case noteTTSFirst:
		if r.ledger.TTSFirstByte.IsZero() {
			r.ledger.TTSFirstByte = n.at
		}
	case noteRoundDone:
		rd := r.round(n.round)
		rd.text, rd.calls, rd.done = n.text, n.calls, true
	case noteToolResult:
		rd := r.round(n.round)
		if rd.results == nil {
			rd.results = map[string]string{}
		}
		rd.results[n.tool.ID] = n.tool.Result
		s.emit(n.tool)
	case noteAction:
		r.action = n.action
	case noteDTMF:
		s.emit(&SendDTMF{Digits: n.text, Turn: r.turn})
	case noteGenDone:
		r.genDone = true
		if n.err != nil {
			s.log.Warn("voice: reply failed", "err", n.err)
		}
	case noteSpeakerDone:
		r.speakerDone, r.nSents = true, n.idx
	case noteSegStarted:
		sr := r.sent(n.idx)
		if sr.startedAt.IsZero() {
			sr.startedAt = n.at
		}
		if r.ledger.FirstAudio.IsZero() {
			r.ledger.FirstAudio = n.at
			s.emitLedger(r)
		}
	case noteSegPlayed:
		sr := r.sent(n.idx)
		sr.total, sr.played, sr.full = n.samples, n.samples, true
		if sr.startedAt.IsZero() {
			sr.startedAt = n.at
		}
		r.played++
		if n.samples > 0 {
			s.rate.runes += int64(len([]rune(sr.text)))
			s.rate.samples += n.samples
		}
		if sr.text != "" && n.samples > 0 {
			s.emit(&Transcript{Speaker: SpeakerAgent, Turn: r.turn, Text: sr.text, Final: true,
				Filler: sr.filler, Start: sr.startedAt, End: n.at})
		}
	}
	if r.genDone && r.speakerDone && r.played >= r.nSents {
		s.finishReply(r)
	}
}

// emitLedger reports a reply's latency figures, once.
func (s *Session) emitLedger(r *reply) {
	if r.ledgerEmitted || r.scripted {
		return
	}
	r.ledgerEmitted = true
	led := r.ledger
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.observe(led)
	}
	s.emit(&led)
}

// finishReply: the reply has been said in full.
func (s *Session) finishReply(r *reply) {
	l := &s.loop
	s.setReply(nil)
	if l.onset.on {
		// Paused at an onset with nothing left to play (the reply ended without
		// audio): the next reply must not start paused.
		l.onset = onsetPause{}
		s.play.resume()
	}
	r.cancel()
	s.commit(r, false)
	s.emitLedger(r)
	if a := r.action; a != nil {
		if a.reason == EndTransfer {
			s.emit(&Transfer{Destination: a.destination, Turn: r.turn})
		}
		s.end(a.reason, nil)
		return
	}
	if l.cand != nil {
		// Caller speech over the reply's last words, still undecided: nothing left to
		// interrupt, so it simply starts the caller's turn.
		c := l.cand
		s.setCand(nil)
		s.play.resume()
		s.joinTurn(c.seg)
		return
	}
	if l.cur != nil && l.cur.kind == segIgnored {
		// With barge-in off the agent talked on; the caller is still talking now that
		// it is done, so their words (those over the agent too) make the next turn.
		s.joinTurn(l.cur)
		return
	}
	if l.user == nil && l.cur == nil {
		s.armSilence()
	}
}

// commit writes what the reply actually said to the history and returns that text.
// With interrupted, it also reports the sentence cut short.
func (s *Session) commit(r *reply, interrupted bool) string {
	nRounds := len(r.rounds)
	for _, sr := range r.sents {
		nRounds = max(nRounds, sr.round+1)
	}
	roundText := make([][]string, nRounds)
	var heard []string
	for _, sr := range r.sents {
		if !sr.known || sr.played == 0 {
			continue
		}
		text := sr.text
		if !sr.full {
			frac := 0.0
			if sr.total > 0 {
				frac = float64(sr.played) / float64(sr.total)
			}
			text = cutAtWord(sr.text, frac)
			if interrupted && text != "" {
				s.emit(&Transcript{Speaker: SpeakerAgent, Turn: r.turn, Text: text, Final: true,
					Interrupted: true, Filler: sr.filler, Start: sr.startedAt, End: s.clock.Now()})
			}
		}
		if text == "" || sr.filler {
			continue
		}
		roundText[sr.round] = append(roundText[sr.round], text)
		heard = append(heard, text)
	}
	var msgs []llm.Message
	for i := 0; i < nRounds; i++ {
		text := strings.Join(roundText[i], " ")
		var rd *roundRec
		if i < len(r.rounds) {
			rd = r.rounds[i]
		}
		if rd != nil && rd.done && len(rd.calls) > 0 {
			msgs = append(msgs, llm.Message{Role: llm.Assistant, Content: text, ToolCalls: rd.calls})
			for _, c := range rd.calls {
				res, ok := rd.results[c.ID]
				if !ok {
					res = toolError("not completed: the caller interrupted")
				}
				msgs = append(msgs, llm.Message{Role: llm.ToolRole, ToolCallID: c.ID, Name: c.Name, Content: res})
			}
			continue
		}
		if text != "" {
			msgs = append(msgs, llm.Message{Role: llm.Assistant, Content: text})
		}
	}
	s.histMu.Lock()
	s.history = append(s.history, msgs...)
	s.histMu.Unlock()
	return strings.Join(heard, " ")
}
