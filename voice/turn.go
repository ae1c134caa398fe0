package voice

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Turn-taking: when is the caller done, and when does caller speech over the agent
// count as an interruption. Everything here is a pure function of text and durations,
// so it is tested on its own; session.go applies it.

// completeness is how finished the caller's transcript sounds.
type completeness int

const (
	// unknownText: no transcript yet. The engine waits for it, up to the maximum
	// delay: deciding sooner would not help, since the model needs the words anyway.
	unknownText completeness = iota
	// completeText ends a sentence: "I'd like to book a table."
	completeText
	// neutralText has no final punctuation and no tell either way: "book a table".
	neutralText
	// incompleteText trails off: "and", "um", "but", a comma, an ellipsis.
	incompleteText
)

func (c completeness) String() string {
	return [...]string{"unknown", "complete", "neutral", "incomplete"}[c]
}

// fillers are hesitation sounds: the caller is thinking, not done, whatever the
// punctuation a recogniser put after them.
var fillers = map[string]bool{
	"um": true, "umm": true, "uh": true, "uhh": true, "er": true, "erm": true, "ah": true,
	"hmm": true, "hm": true, "mm": true, "eh": true,
}

// continuations are words a sentence does not end on. With final punctuation after them
// ("and.") the recogniser guessed wrong; without, the caller is mid-thought. "so" is
// the exception: "I think so." is a complete sentence, so it only counts when unpunctuated
// or followed by a comma.
var continuations = map[string]bool{
	"and": true, "but": true, "or": true, "because": true, "cause": true, "if": true,
	"then": true, "the": true, "a": true, "an": true, "to": true, "of": true, "with": true,
	"my": true, "your": true, "which": true, "that": true, "like": true, "also": true,
}

// classify judges a transcript's completeness.
func classify(text string) completeness {
	t := strings.TrimSpace(text)
	t = strings.TrimRight(t, `"')]}»”’ `)
	if t == "" {
		return unknownText
	}
	last, _ := utf8.DecodeLastRuneInString(t)
	word := strings.ToLower(lastWordOf(t))
	switch {
	case strings.HasSuffix(t, "...") || last == '…':
		return incompleteText
	case last == ',' || last == ';' || last == ':' || last == '-' || last == '—' || last == '–':
		return incompleteText
	case fillers[word]:
		return incompleteText
	case last == '.' || last == '!' || last == '?' || last == '。' || last == '？' || last == '！':
		if continuations[word] {
			return incompleteText
		}
		return completeText
	case continuations[word] || word == "so":
		return incompleteText
	}
	return neutralText
}

// lastWordOf returns the last run of letters (and apostrophes) in t.
func lastWordOf(t string) string {
	end := len(t)
	for end > 0 {
		r, size := utf8.DecodeLastRuneInString(t[:end])
		if unicode.IsLetter(r) || r == '\'' {
			break
		}
		end -= size
	}
	start := end
	for start > 0 {
		r, size := utf8.DecodeLastRuneInString(t[:start])
		if !unicode.IsLetter(r) && r != '\'' {
			break
		}
		start -= size
	}
	return t[start:end]
}

// endpointDelay is how long after the caller's speech ended the turn is considered over:
// the agent's minimum after a complete sentence, its maximum after a trailing word or
// while the transcript is unknown, and halfway between for text without a tell.
func endpointDelay(c completeness, lo, hi time.Duration) time.Duration {
	switch c {
	case completeText:
		return lo
	case neutralText:
		return lo + (hi-lo)/2
	}
	return hi
}

// interruptThresholds are what InterruptionSensitivity maps to.
//
// Caller speech over the agent goes through three gates. The first sign of speech
// (OnsetFrames voiced frames in a row, each louder than onsetFloorDBFS) pauses
// playback at once, tentatively: the agent stops talking over the caller within a
// frame or two of their first sound. If the VAD then drops that onset without
// reporting speech (a click, a bump, a breath: its run of speech frames broke),
// playback resumes where it paused. If the VAD's own onset follows (200 ms of speech
// by default, its MinSpeech), the pause stays and:
//
//   - if the speech goes on for MinSpeech, it is a barge-in: the reply is cancelled and
//     cut to what was played;
//   - if it ends sooner (a cough, "mm-hm", "yeah"), playback resumes where it paused, and
//     the reply goes on;
//   - speech whose transcript is nothing but backchannel words ("okay, yeah, right") gets
//     until BackchannelMax before it counts as a barge-in;
//   - a short utterance whose final transcript has at least MinWords words that are not
//     backchannels ("stop", "no wait") is a barge-in even though it was short.
//
// Sensitivity s in (0, 1] sets MinSpeech = 200 ms + (1-s) × 1000 ms: 1 interrupts at
// the VAD onset itself, the default 0.5 after 700 ms (about two syllables beyond a
// backchannel, which rarely lasts 600 ms), 0.1 after 1.1 s. MinWords is 1 for s ≥ 0.67,
// 2 for s ≥ 0.34, else 3. OnsetFrames does not scale (see onsetFrames): pausing is not
// yielding the floor, only not talking over the caller while deciding whether to, and
// the time budget for it is the same at every sensitivity. Sensitivity 0 turns barge-in
// off: OnsetFrames is 0, the agent never pauses and caller speech while it talks is
// ignored.
type interruptThresholds struct {
	Enabled        bool
	MinSpeech      time.Duration
	BackchannelMax time.Duration
	MinWords       int
	// OnsetFrames is the run of voiced frames that pauses playback; 0 never pauses.
	OnsetFrames int
}

// backchannelMax: nobody says "mm-hm" for a second and a half; past that the caller
// is talking, whatever the recogniser heard so far.
const backchannelMax = 1500 * time.Millisecond

// The onset pause. The requirement is that the agent's audio stops within 150 ms of the
// caller's first sound, measured at the caller through a WebRTC room, and the network
// and the jitter buffers on the way in and out take 30-60 ms of that. The engine's part
// is: the frame in which speech begins (up to 20 ms, since the sound may start anywhere
// in it), OnsetFrames frames to decide, then the one frame that may already be on its
// way out (20 ms; the Output is flushed after it, see audio.Flusher).
const (
	// onsetFrames: 2 frames, 40 ms of voice. With it the engine's part is 60-80 ms, which
	// leaves 70-90 ms for the network: enough at the top of its range. 3 frames would
	// leave 50-70 ms, too little on a slow path. 1 frame would pause on every click:
	// WebRTC's classifier flags single frames of noise readily, and holds its flag for
	// its overhang (60 ms or more) after each, so one frame says little. 40 ms of loud,
	// voiced sound is shorter than any syllable's onset but longer than a click, a key or
	// a pop (5-20 ms).
	onsetFrames = 2
	// onsetFloorDBFS: each frame of the run must reach -45 dBFS RMS. Speech on a phone
	// or WebRTC line sits around -20 to -30 dBFS and the first 20 ms of a word reaches
	// -30 to -42 (measured on the test fixtures, whose levels are set like a phone's);
	// a floor 20 dB under speech admits every real onset in its first frame or two,
	// while it keeps out what the classifier calls speech but is not loud: the silent
	// frames of its overhang after a click (so a one-frame click cannot make a run of
	// two), distant voices, a TV in the next room, residual echo. The VAD's own energy
	// gate, if higher, applies instead: a frame it will not count cannot start speech.
	onsetFloorDBFS = -45
)

func thresholdsFor(s float64) interruptThresholds {
	if s <= 0 {
		return interruptThresholds{}
	}
	s = min(s, 1)
	th := interruptThresholds{
		Enabled:        true,
		MinSpeech:      200*time.Millisecond + time.Duration((1-s)*float64(time.Second)),
		BackchannelMax: backchannelMax,
		MinWords:       3,
		OnsetFrames:    onsetFrames,
	}
	switch {
	case s >= 0.67:
		th.MinWords = 1
	case s >= 0.34:
		th.MinWords = 2
	}
	// Round to whole frames: the decision is taken frame by frame.
	th.MinSpeech = th.MinSpeech.Round(frameDuration)
	return th
}

// backchannels are what a listener says to show they are listening, not to take the
// floor. Multi-word forms are matched word by word ("uh huh" is "uh" + "huh").
var backchannels = map[string]bool{
	"mm": true, "mhm": true, "mmhmm": true, "hmm": true, "hm": true, "mm-hm": true,
	"mm-hmm": true, "uh-huh": true, "uh": true, "huh": true, "um": true, "yeah": true,
	"yes": true, "yep": true, "yup": true, "ok": true, "okay": true, "right": true,
	"sure": true, "alright": true, "i": true, "see": true, "got": true, "it": true,
	"ah": true, "oh": true, "aha": true, "cool": true, "great": true, "fine": true,
	"good": true, "correct": true, "exactly": true, "indeed": true,
}

// substantiveWords counts the words of text that are not backchannels. Text in which
// every word is a backchannel ("Mm-hm.", "Okay, yeah.", "I see.") counts zero.
func substantiveWords(text string) int {
	n := 0
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && r != '-' && r != '\''
	}) {
		w = strings.Trim(w, "-'")
		if w == "" || backchannels[w] {
			continue
		}
		n++
	}
	return n
}

// cutAtWord returns the prefix of text a listener heard when frac of its audio played:
// the words that end at or before frac of the text's length, measured in runes. Speech
// runs at a roughly even rate through a sentence, so the audio fraction maps onto the
// text; rounding down to a word keeps only words that were (nearly) fully spoken.
func cutAtWord(text string, frac float64) string {
	if frac >= 1 {
		return text
	}
	if frac <= 0 {
		return ""
	}
	runes := []rune(text)
	limit := int(frac*float64(len(runes)) + 0.5)
	end := 0
	for i := 0; i < len(runes); {
		for i < len(runes) && unicode.IsSpace(runes[i]) {
			i++
		}
		j := i
		for j < len(runes) && !unicode.IsSpace(runes[j]) {
			j++
		}
		if j == i || j > limit {
			break
		}
		end = j
		i = j
	}
	return strings.TrimSpace(string(runes[:end]))
}
