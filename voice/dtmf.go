package voice

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/parleyhq/parley/voice/llm"
)

// DTMF: the keys of the phone keypad, both ways.
//
// In: the transport hands each key the caller presses to Session.DTMF. The control loop
// collects them into one entry until '#' or a pause of Config.DTMFInterDigit, then
// gives the entry to the model as a caller turn whose text is
//
//	[The caller pressed keys: 1 2 3 #]
//
// the keys in order, separated by spaces (a tokenizer reads "1 2 3" as three keys, but
// "123" as one number, which loses a leading zero's meaning and a '*'), '#' included
// when pressed (the caller confirmed the entry). The same text is the caller's final
// Transcript event and the user message in the history, so a transcript and a replay of
// the conversation show what happened. Keys pressed while the caller is also speaking
// join that turn's text, after the words.
//
// Keys barge in: the first key pressed while the agent talks stops it, as speech that
// interrupts does (an Interruption of kind BargeIn), whatever the agent's interruption
// sensitivity. That is phone-menu practice: a caller who knows the menu presses 2
// before the prompt ends, and a key press is never a cough or a backchannel, so there
// is nothing to judge.
//
// Out: with Config.DTMFOut the model gets the built-in tool send_dtmf {digits}; valid
// digits are emitted as a SendDTMF event for the transport to send, and the model is
// told they were sent.

// maxDTMFKeys bounds one collected entry: 64 keys is more than any account or card
// number with a PIN; a caller (or a stuck key) going on past it is cut into entries.
const maxDTMFKeys = 64

// maxDTMFOut bounds one send_dtmf call: 32 keys covers an account number, a PIN and
// menu choices; a model asking for more is confused, and each key takes about 150 ms
// (a 100 ms tone and a gap) on the line.
const maxDTMFOut = 32

// dtmfPress is a key press on its way to the control loop.
type dtmfPress struct {
	digits string
	at     time.Time
}

// dtmfQueue bounds the key presses waiting for the control loop. The loop takes one in
// microseconds and a person presses a few a second; 64 only fills if the loop is
// stuck, and then presses are dropped rather than block the transport.
const dtmfQueue = 64

// DTMF tells the session the caller pressed keys: each byte of digits is one key, 0-9,
// '*', '#' or A-D (lower case a-d accepted); anything else is ignored. Transports call
// it once per key as the keys arrive (LiveKit SIP and Twilio both report them one by
// one), but a run of keys in one call is fine. Safe from any goroutine; it never
// blocks. Keys before Start wait for it; keys after the end are dropped.
func (s *Session) DTMF(digits string) {
	if digits == "" {
		return
	}
	select {
	case <-s.quit:
		return // ended: nobody to tell
	default:
	}
	select {
	case s.dtmfCh <- dtmfPress{digits: digits, at: s.clock.Now()}:
	default:
		s.log.Warn("voice: DTMF dropped: the session is not taking key presses", "digits", digits)
	}
}

// isDTMF reports whether k (upper case) is one of the sixteen DTMF keys.
func isDTMF(k byte) bool {
	return (k >= '0' && k <= '9') || k == '*' || k == '#' || (k >= 'A' && k <= 'D')
}

// normalizeDigits validates digits for send_dtmf: spaces, commas and dashes a model
// puts between keys are dropped, a-d are upper-cased, anything else is an error.
func normalizeDigits(digits string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(digits); i++ {
		k := digits[i]
		switch {
		case k == ' ' || k == ',' || k == '-':
			continue
		case k >= 'a' && k <= 'd':
			k -= 'a' - 'A'
		}
		if !isDTMF(k) {
			return "", fmt.Errorf("%q is not a phone key: digits must be 0-9, *, # or A-D", digits)
		}
		b.WriteByte(k)
	}
	switch {
	case b.Len() == 0:
		return "", fmt.Errorf("no digits to send")
	case b.Len() > maxDTMFOut:
		return "", fmt.Errorf("%d digits: at most %d in one call", b.Len(), maxDTMFOut)
	}
	return b.String(), nil
}

// keysText is the caller turn the model gets for an entry of keys.
func keysText(keys []byte) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = string(k)
	}
	return "[The caller pressed keys: " + strings.Join(parts, " ") + "]"
}

// sendDTMFTool is the send_dtmf tool as the model sees it.
func sendDTMFTool() llm.Tool {
	return llm.Tool{
		Name: ToolSendDTMF,
		Description: "Press keys on the phone keypad (DTMF tones): to choose an option in an automated phone " +
			"menu or enter a number it asks for. The keys are sent at once; the call goes on.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"digits":{"type":"string",` +
			`"pattern":"^[0-9*#A-Da-d]{1,32}$","description":"The keys to press, in order: 0-9, * and #, ` +
			`e.g. \"1\" or \"4321#\"."}},"required":["digits"]}`),
	}
}

// SetDTMFOut turns the send_dtmf tool on or off, for a transport that learns whether
// it can send keys only once the caller is known (LiveKit: a SIP participant can, a
// browser cannot). It overrides Config.DTMFOut and must be called before Start.
func (s *Session) SetDTMFOut(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		return fmt.Errorf("voice: SetDTMFOut after Start")
	}
	s.cfg.DTMFOut = on
	s.tools = buildTools(s.cfg.Agent)
	if on {
		s.tools = append(s.tools, sendDTMFTool())
	}
	return nil
}

// onDTMF takes key presses into the entry being collected (control loop).
func (s *Session) onDTMF(p dtmfPress) {
	l := &s.loop
	for i := 0; i < len(p.digits); i++ {
		k := p.digits[i]
		if k >= 'a' && k <= 'd' {
			k -= 'a' - 'A'
		}
		if !isDTMF(k) {
			continue
		}
		switch l.vm.phase {
		case vmListening:
			// Machines do not press keys.
			s.vmHuman(nil, "", "dtmf")
		case vmMachine, vmLeaving:
			// A fax or a machine's own tones: nobody is listening to a menu.
			continue
		}
		if len(l.keys) == 0 {
			l.keysAt = p.at
		}
		if l.reply != nil {
			s.keyBargeIn(p.at)
		}
		l.silence.stop()
		l.reprompt = false
		l.keys = append(l.keys, k)
		if k == '#' || len(l.keys) >= maxDTMFKeys {
			s.flushKeys()
		}
	}
	if len(l.keys) > 0 {
		l.dtmfWait.arm(s.clock, s.cfg.DTMFInterDigit)
	}
}

// keyBargeIn: a key pressed while the agent talks stops it, like speech that
// interrupts (see the top of this file).
func (s *Session) keyBargeIn(at time.Time) {
	l := &s.loop
	now := s.clock.Now()
	played := s.interruptReply()
	s.stats.bargeIns.Add(1)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.interruptions.WithLabelValues(string(BargeIn)).Inc()
	}
	s.emit(&Interruption{Kind: BargeIn, Turn: l.turn, At: now, SpeechStarted: at, PausedAt: now, Played: played})
}

// flushKeys ends the entry being collected and answers it (control loop).
func (s *Session) flushKeys() {
	l := &s.loop
	l.dtmfWait.stop()
	if len(l.keys) == 0 {
		return
	}
	text := keysText(l.keys)
	at := l.keysAt
	l.keys = l.keys[:0]
	now := s.clock.Now()
	if t := l.user; t != nil {
		// The caller is also speaking: the keys belong to that turn, after its words.
		t.keys = append(t.keys, text)
		s.emit(&Transcript{Speaker: SpeakerUser, Turn: t.id, Text: text, Final: true, Start: at, End: now})
		if !t.speaking && !t.decided {
			s.scheduleEndpoint()
		}
		return
	}
	if l.reply != nil {
		// A reply began between the first key and the last (to speech before them):
		// the keys are the newer word.
		s.keyBargeIn(at)
	}
	l.turn++
	s.stats.turns.Add(1)
	s.emit(&Transcript{Speaker: SpeakerUser, Turn: l.turn, Text: text, Final: true, Start: at, End: now})
	l.reprompt = false
	s.appendUser(text)
	r := s.newReply(l.turn)
	r.ledger = TurnLatency{Turn: l.turn, EndOfTurn: now}
	// No knowledge lookup: key presses are no query.
	s.launch(r, s.converse(s.History(), ""))
}
