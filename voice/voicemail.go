package voice

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
)

// Voicemail (answering-machine) detection on outbound calls.
//
// With Config.DetectVoicemail and Agent.Voicemail.Enabled the agent does not greet
// first: it listens to whoever picked up and classifies the first thing it hears.
//
//   - A machine: the transcript holds a voicemail phrase in the agent's language
//     ("leave a message", "after the tone", "not available", "voicemail", "mailbox"…;
//     English is always checked too, carriers' greetings often are), or one run of
//     speech goes on longer than voicemailLongGreeting without the pause a person
//     leaves for an answer, or a beep (a steady tone, see toneDetector) is heard.
//   - A person: a short first utterance ("Hello?", "Yes, speaking") that ends with a
//     pause of voicemailAfterGreeting and has no voicemail words. The agent then says
//     its begin message (or, without one, answers the utterance), and the call goes on
//     as usual. A key press is a person too.
//   - No decision within Voicemail.Timeout (silence, noise): a person is assumed, since
//     hanging up on a person is worse than talking to a machine.
//
// For a machine the agent waits for the greeting to end, since words said over it are
// not recorded: the end of a beep (voicemailBeepGap after the tone stops), or
// voicemailQuiet of silence after the last words when no beep comes. Then "leave_message" speaks Voicemail.Message ({{variables}}
// filled) and hangs up; "hangup" hangs up at once, without waiting. Either way the
// session ends with EndVoicemail, after a VoicemailDetection event.

// VoicemailAction is what the agent does when a machine answers.
type VoicemailAction string

const (
	// VoicemailHangup ends the call at once.
	VoicemailHangup VoicemailAction = "hangup"
	// VoicemailLeaveMessage waits for the greeting (and the beep) to end, says
	// Voicemail.Message and ends the call.
	VoicemailLeaveMessage VoicemailAction = "leave_message"
)

// VoicemailConfig is an agent's voicemail setting (agents' enable_voicemail_detection,
// voicemail_action, voicemail_message and voicemail_detection_timeout_ms).
type VoicemailConfig struct {
	// Enabled turns detection on, for calls whose transport sets
	// Config.DetectVoicemail.
	Enabled bool
	// Action is "hangup" or "leave_message". Empty: leave_message when Message is set,
	// hangup otherwise (the agents default).
	Action VoicemailAction
	// Message is said to the machine ({{variables}} allowed). leave_message with an
	// empty message hangs up.
	Message string
	// Timeout bounds detection: with no decision by then, a person is assumed. 0
	// selects 30 s (the agents default): machine greetings run 5 to 20 s, and a person
	// who says nothing for 30 s is not going to.
	Timeout time.Duration
}

const (
	defaultVoicemailTimeout = 30 * time.Second
	maxVoicemailTimeout     = 2 * time.Minute

	// voicemailLongGreeting: people answer the phone with one to three words ("Hello?",
	// "Yes?", "This is Anna") in under 1.5 s and wait; answering-machine greetings are
	// whole sentences, 5 to 20 s long. Asterisk's AMD calls anything over 1.5 s a
	// machine, which misfiles the chatty "Hello, Anna speaking, who's calling?" (about
	// 2.5 s); 4 s is past any person's hello and short of almost every greeting, and a
	// greeting short enough to slip under it nearly always says "leave a message".
	voicemailLongGreeting = 4 * time.Second
	// voicemailAfterGreeting: while detecting, the first utterance is only over after
	// 800 ms of silence (Asterisk AMD's after-greeting silence), instead of the
	// endpointer's 400 ms: a greeting pauses between its sentences ("Hi, this is
	// John. … Please leave a message."), and ending the utterance in that pause would
	// take the first sentence for a person's hello.
	voicemailAfterGreeting = 800 * time.Millisecond
	// voicemailQuiet: a machine recognised, no beep heard: the greeting is over after
	// 2 s of silence. Greetings pause 0.3-1 s between sentences, and the beep comes
	// 0.5-1.5 s after the last one; 2 s clears both, and if a beep comes anyway its
	// end starts the message at once.
	voicemailQuiet = 2 * time.Second
	// voicemailBeepGap: after a beep the message starts once the tone has been gone
	// for 200 ms. A beep can lose a frame or two on its way (a lost packet, a jitter gap
	// the transport fills with silence), which ends it for the tone detector; if it
	// comes back within 200 ms it is the same beep, and the agent has not yet spoken
	// over it. Machines record from the end of the beep, and 200 ms is also the pause
	// a person leaves before talking.
	voicemailBeepGap = 200 * time.Millisecond
)

func (v VoicemailConfig) withDefaults() VoicemailConfig {
	v.Action = VoicemailAction(strings.ToLower(strings.TrimSpace(string(v.Action))))
	if v.Action == "" {
		v.Action = VoicemailHangup
		if strings.TrimSpace(v.Message) != "" {
			v.Action = VoicemailLeaveMessage
		}
	}
	if v.Timeout == 0 {
		v.Timeout = defaultVoicemailTimeout
	}
	return v
}

func (v VoicemailConfig) validate() error {
	if v.Action != VoicemailHangup && v.Action != VoicemailLeaveMessage {
		return fmt.Errorf("voicemail action %q: want %q or %q", v.Action, VoicemailHangup, VoicemailLeaveMessage)
	}
	if v.Timeout < time.Second || v.Timeout > maxVoicemailTimeout {
		return fmt.Errorf("voicemail detection timeout %v: want 1s..%v", v.Timeout, maxVoicemailTimeout)
	}
	return nil
}

// voicemailPhrases are what greetings say, by language (the base of Agent.Language),
// normalised as normalizeText does. English is always checked as well.
var voicemailPhrases = map[string][]string{
	"en": {
		"leave a message", "leave your message", "leave me a message", "leave a brief message",
		"leave your name", "after the tone", "after the beep", "at the tone", "at the beep",
		"not available", "unavailable", "can't take your call", "cannot take your call",
		"can't come to the phone", "cannot come to the phone", "can't answer", "voicemail",
		"voice mail", "mailbox", "message bank", "you have reached", "you've reached",
		"record your message", "return your call", "is not in service",
		// Not "call you back" or "get back to you": a person picking up in a hurry says
		// "Can I call you back?", and hanging up on them is the worse mistake.
	},
	"es": {"deje su mensaje", "deja tu mensaje", "deje un mensaje", "despues del tono", "después del tono",
		"buzon de voz", "buzón de voz", "no esta disponible", "no está disponible", "no puedo atender"},
	"fr": {"laissez un message", "laissez-moi un message", "laisser un message", "apres le bip", "après le bip",
		"messagerie", "boite vocale", "boîte vocale", "n'est pas disponible", "absent pour le moment"},
	"de": {"nachricht hinterlassen", "nach dem signalton", "nach dem piepton", "mailbox",
		"nicht erreichbar", "nicht verfügbar", "sprachnachricht", "anrufbeantworter"},
	"it": {"lasciate un messaggio", "lascia un messaggio", "dopo il segnale", "dopo il bip",
		"segreteria", "non è disponibile", "non e disponibile", "casella vocale"},
	"pt": {"deixe sua mensagem", "deixe a sua mensagem", "deixe uma mensagem", "após o sinal", "apos o sinal",
		"caixa postal", "caixa de correio", "não está disponível", "nao esta disponivel"},
	"nl": {"laat een bericht achter", "spreek een bericht in", "na de piep", "na de toon",
		"voicemail", "niet bereikbaar", "niet beschikbaar"},
}

// normalizeText lower-cases text and turns every run of characters that are not
// letters, digits or apostrophes into one space, so "Leave a message, after the
// tone." matches "leave a message" and "after the tone".
func normalizeText(text string) string {
	var b strings.Builder
	space := true
	for _, r := range strings.ToLower(text) {
		if r == '’' {
			r = '\''
		}
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '\'' {
			b.WriteRune(r)
			space = false
			continue
		}
		if r == '-' && !space {
			b.WriteRune(r)
			continue
		}
		if !space {
			b.WriteByte(' ')
			space = true
		}
	}
	return " " + strings.TrimSpace(b.String()) + " "
}

// voicemailPhrase returns the voicemail phrase text holds, in lang or English, or "".
func voicemailPhrase(text, lang string) string {
	t := normalizeText(text)
	base := strings.ToLower(lang)
	if i := strings.IndexAny(base, "-_"); i >= 0 {
		base = base[:i]
	}
	langs := []string{"en"}
	if base != "" && base != "en" {
		langs = append(langs, base)
	}
	for _, l := range langs {
		for _, p := range voicemailPhrases[l] {
			if strings.Contains(t, normalizeText(p)) {
				return p
			}
		}
	}
	return ""
}

// A voicemail beep is a steady sine tone, usually 1 kHz (some systems use 440-1400 Hz),
// 100 ms to a second long, after the greeting. toneDetector finds one in the caller's
// 16 kHz, 20 ms frames with the Goertzel algorithm: it measures the energy at each
// probe frequency, and a frame is tonal when one frequency holds most of its energy
// and it is loud enough.
//
// The numbers:
//   - toneMinHz..toneMaxHz in steps of toneStepHz: the range beeps use. A 20 ms frame
//     resolves 50 Hz; probes 25 Hz apart put every tone within a quarter bin of one,
//     where it keeps 80% of its energy (sinc² of 0.25).
//   - toneRatio: 60% of the frame's energy at one probe. Speech spreads its energy over
//     many harmonics and formants (a vowel's strongest harmonic holds 20-40%), noise
//     over everything; a pure tone gives 80-100%.
//   - toneFloorDBFS: a beep is played at speech level; a tone far below it is line
//     hum or leakage.
//   - toneMinFrames: 5 frames (100 ms) of the same frequency (within a probe) in a
//     row: the shortest beeps last 150 ms, while a sung or drawn-out vowel glides in
//     pitch within that time.
//   - toneEndFrames: 2 frames without the tone end it: one frame can straddle the
//     tone's end (half tone, half silence) and still be tonal, or not.
const (
	toneMinHz     = 400
	toneMaxHz     = 2000
	toneStepHz    = 25
	toneRatio     = 0.6
	toneFloorDBFS = -40
	toneMinFrames = 5
	toneEndFrames = 2
)

// toneEvent is what the tone detector made of a frame.
type toneEvent uint8

const (
	toneNone toneEvent = iota
	toneStart
	toneEnd
)

type toneDetector struct {
	coeffs []float64 // 2·cos(2πf/fs) per probe
	run    int       // tonal frames in a row at about the same probe
	probe  int       // the probe of the run
	on     bool      // a tone was reported and has not ended
	off    int       // frames without the tone since it was reported
}

func newToneDetector(rate int) *toneDetector {
	d := &toneDetector{}
	for f := toneMinHz; f <= toneMaxHz; f += toneStepHz {
		d.coeffs = append(d.coeffs, 2*math.Cos(2*math.Pi*float64(f)/float64(rate)))
	}
	return d
}

// probeHz is the frequency of probe i.
func probeHz(i int) int { return toneMinHz + i*toneStepHz }

// tonal returns the probe holding most of the frame's energy, if it holds more than
// toneRatio of it and the frame is loud enough; else -1.
func (d *toneDetector) tonal(x []int16) int {
	n := len(x)
	if n == 0 {
		return -1
	}
	var energy float64
	for _, v := range x {
		f := float64(v)
		energy += f * f
	}
	// RMS in dBFS.
	if 10*math.Log10(energy/float64(n)/(32768*32768)+1e-20) < toneFloorDBFS {
		return -1
	}
	best, bestP := -1, 0.0
	for i, c := range d.coeffs {
		var s1, s2 float64
		for _, v := range x {
			s0 := float64(v) + c*s1 - s2
			s2, s1 = s1, s0
		}
		p := s1*s1 + s2*s2 - c*s1*s2
		if p > bestP {
			best, bestP = i, p
		}
	}
	// A sine of amplitude A on a probe gives p = (A·n/2)², and energy A²·n/2: the
	// ratio below is 1 for a pure tone.
	if best < 0 || 2*bestP/(float64(n)*energy) < toneRatio {
		return -1
	}
	return best
}

// step takes one frame and reports a tone's start and end.
func (d *toneDetector) step(x []int16) toneEvent {
	p := d.tonal(x)
	if d.on {
		if p >= 0 && abs(p-d.probe) <= 1 {
			d.off = 0
			return toneNone
		}
		d.off++
		if d.off >= toneEndFrames {
			d.on, d.run, d.off = false, 0, 0
			return toneEnd
		}
		return toneNone
	}
	switch {
	case p < 0:
		d.run = 0
	case d.run > 0 && abs(p-d.probe) <= 1:
		d.run++
	default:
		d.run, d.probe = 1, p
	}
	if d.run >= toneMinFrames {
		d.on, d.off = true, 0
		return toneStart
	}
	return toneNone
}

func (d *toneDetector) reset() { d.run, d.on, d.off = 0, false, 0 }

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// vmPhase is where voicemail detection is (control loop).
type vmPhase int

const (
	vmOff       vmPhase = iota // not detecting (a person, or detection off)
	vmListening                // listening to whoever answered
	vmMachine                  // a machine: waiting for its greeting to end
	vmLeaving                  // saying the message to the machine
)

// vmState is voicemail detection's part of loopState.
type vmState struct {
	phase   vmPhase
	beeping bool // a tone is playing
	beeped  bool // a tone was heard: its end, not the speech around it, ends the greeting
	text    string
	// timeout bounds the whole detection; long fires when the first utterance has
	// gone on for voicemailLongGreeting; quiet when a machine's greeting has been
	// silent for voicemailQuiet, or its beep gone for voicemailBeepGap.
	timeout, long, quiet clockTimer
}

func (v *vmState) timers() []*clockTimer { return []*clockTimer{&v.timeout, &v.long, &v.quiet} }

// vmEnabled says whether this session starts by listening for a machine.
func (s *Session) vmEnabled() bool {
	return s.cfg.DetectVoicemail && s.cfg.Agent.Voicemail.Enabled
}

// vmStart begins detection, instead of the begin message (control loop).
func (s *Session) vmStart() {
	l := &s.loop
	l.vm.phase = vmListening
	l.vm.timeout.arm(s.clock, s.cfg.Agent.Voicemail.Timeout)
	s.toneWatch.Store(true)
}

// vmTurnStarted: the callee's speech (re)opened a turn while listening; the long
// greeting clock runs from the turn's first sound.
func (s *Session) vmTurnStarted(t *userTurn) {
	l := &s.loop
	if l.vm.phase != vmListening || len(t.segs) == 0 {
		return
	}
	left := t.segs[0].startAt.Add(voicemailLongGreeting).Sub(s.clock.Now())
	if left <= 0 {
		s.vmMachineFound("long_greeting", s.turnText(t, true))
		return
	}
	l.vm.long.arm(s.clock, left)
}

// vmTurn handles a callee's turn while detection runs, in place of answering it. It
// reports false when the turn should be answered as usual (a person, and the agent has
// no begin message).
func (s *Session) vmTurn(t *userTurn, text string) bool {
	l := &s.loop
	switch l.vm.phase {
	case vmListening:
	case vmOff:
		return false
	default:
		return true // the machine's words: nobody to answer
	}
	l.vm.long.stop()
	if text == "" {
		// A cough, a click, a line noise: no words to judge; keep listening.
		return true
	}
	if p := voicemailPhrase(text, s.cfg.Agent.Language); p != "" {
		s.vmMachineFound("phrase", text)
		return true
	}
	if n := len(t.segs); n > 0 && t.segs[n-1].endAt.Sub(t.segs[0].startAt) >= voicemailLongGreeting {
		s.vmMachineFound("long_greeting", text)
		return true
	}
	return s.vmHuman(t, text, "short_greeting")
}

// vmTranscript: new words from the callee while listening; a voicemail phrase settles
// it at once, without waiting for the end of the greeting.
func (s *Session) vmTranscript(seg *speechSeg) {
	if s.loop.vm.phase != vmListening {
		return
	}
	text := strings.TrimSpace(seg.text + " " + seg.interim)
	if t := seg.turn; t != nil {
		text = s.turnText(t, true)
	}
	if voicemailPhrase(text, s.cfg.Agent.Language) != "" {
		s.vmMachineFound("phrase", text)
	}
}

// vmHuman: a person answered (or nobody could tell in time). Detection ends; the agent
// says its begin message, with the person's first words in the history before it. It
// reports whether t was taken care of: false asks for it to be answered as usual (no
// begin message).
func (s *Session) vmHuman(t *userTurn, text, cue string) bool {
	l := &s.loop
	s.vmStop()
	s.emit(&VoicemailDetection{Result: VoicemailHuman, Cue: cue, Text: text, At: s.clock.Now()})
	if cue == "dtmf" {
		// The key entry is the callee's turn; the model answers it.
		return true
	}
	if strings.TrimSpace(s.beginMessage) == "" {
		if t != nil {
			return false
		}
		if l.user == nil && l.reply == nil {
			s.armSilence()
		}
		return true
	}
	if l.user != nil && l.user != t {
		// Timed out mid-utterance: that turn will be answered by the model.
		return true
	}
	if text != "" {
		s.appendUser(text)
	}
	s.startScripted(s.beginMessage)
	return true
}

// vmMachineFound: a machine answered.
func (s *Session) vmMachineFound(cue, text string) {
	l := &s.loop
	if l.vm.phase != vmListening {
		return
	}
	l.vm.phase = vmMachine
	l.vm.long.stop()
	l.vm.text = text
	// The greeting is no caller turn: nothing of it is answered.
	l.user = nil
	l.endpoint.stop()
	l.sttWait.stop()
	s.emit(&VoicemailDetection{Result: VoicemailMachine, Cue: cue, Text: text, At: s.clock.Now()})
	vm := s.cfg.Agent.Voicemail
	if vm.Action == VoicemailHangup || strings.TrimSpace(s.vmMessage) == "" {
		s.vmStop()
		s.end(EndVoicemail, nil)
		return
	}
	if cue != "beep" && !l.vm.beeping && l.cur == nil {
		l.vm.quiet.arm(s.clock, voicemailQuiet)
	}
}

// vmSpeech: the callee's speech started or ended (control loop, any phase).
func (s *Session) vmSpeech(started bool) {
	l := &s.loop
	if l.vm.phase != vmMachine || l.vm.beeped {
		// After a beep, the VAD's view (which may take the beep for speech) does not
		// matter: the tone's end does.
		return
	}
	if started {
		l.vm.quiet.stop()
	} else if !l.vm.beeping {
		l.vm.quiet.arm(s.clock, voicemailQuiet)
	}
}

// vmTone: the input side heard a beep start or end.
func (s *Session) vmTone(ev toneEvent) {
	l := &s.loop
	switch ev {
	case toneStart:
		l.vm.beeping, l.vm.beeped = true, true
		l.vm.quiet.stop()
		if l.vm.phase == vmListening {
			s.vmMachineFound("beep", l.vm.text)
		}
	case toneEnd:
		l.vm.beeping = false
		if l.vm.phase == vmMachine {
			// The machine records from here, unless the tone comes back.
			l.vm.quiet.arm(s.clock, voicemailBeepGap)
		}
	}
}

// vmTimeout: detection's time is up.
func (s *Session) vmTimeout() {
	switch s.loop.vm.phase {
	case vmListening:
		s.vmHuman(nil, "", "timeout")
	case vmMachine:
		// A greeting that never seemed to end (noise, music): leave the message now.
		s.vmLeave()
	}
}

// vmQuietOver: the machine's greeting has been silent long enough.
func (s *Session) vmQuietOver() {
	if s.loop.vm.phase == vmMachine && !s.loop.vm.beeping {
		s.vmLeave()
	}
}

// vmLeave says the message to the machine; the session ends when it has played.
func (s *Session) vmLeave() {
	l := &s.loop
	s.vmStop()
	l.vm.phase = vmLeaving
	l.user = nil
	l.endpoint.stop()
	l.sttWait.stop()
	r := s.newReply(l.turn)
	r.scripted = true
	r.ledger.Turn = l.turn
	r.action = &endAction{reason: EndVoicemail}
	s.launch(r, scripted(s.vmMessage))
}

// vmStop ends detection's timers and the tone detector.
func (s *Session) vmStop() {
	l := &s.loop
	l.vm.phase = vmOff
	l.vm.beeping = false
	for _, t := range l.vm.timers() {
		t.stop()
	}
	s.toneWatch.Store(false)
}
