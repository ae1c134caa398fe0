package openaitest

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"sync"
	"time"
)

// SampleRate is the rate of the speech the server streams: OpenAI's "pcm" format is
// 16-bit little-endian mono at 24 kHz, without a header.
const SampleRate = 24000

// DefaultCharDuration is how long the fake voice takes per character of text: 60 ms,
// about 165 words a minute, like a person speaking calmly. It is a whole number of
// 20 ms frames at every rate the engine uses (8, 16, 24 and 48 kHz), so each sentence's
// audio is whole frames.
const DefaultCharDuration = 60 * time.Millisecond

// speechChunk is how much audio one write carries: 100 ms, 4800 bytes, what the TTS
// adapter reads at a time by default.
const speechChunk = SampleRate / 10

// SpeechPitch is the fundamental frequency of the fake voice saying text: between 110
// and 250 Hz (a low male to a high female voice), fixed by a hash of the text, so that
// a receiver can tell which sentence it hears.
func SpeechPitch(text string) float64 {
	h := fnv.New32a()
	io.WriteString(h, text)
	return 110 + float64(h.Sum32()%141)
}

// SpeechSamples is how many samples at SampleRate the fake voice takes to say text at
// perChar per character (0: DefaultCharDuration).
func SpeechSamples(text string, perChar time.Duration) int {
	if perChar <= 0 {
		perChar = DefaultCharDuration
	}
	return int(int64(len([]rune(text))) * int64(perChar) * SampleRate / int64(time.Second))
}

// SpeechAudio is what the fake voice says for text, at SampleRate: SpeechSamples of a
// voiced sound, a fundamental at SpeechPitch(text) with its second and third harmonics,
// its loudness swelling and fading four times a second like syllables. It is
// deterministic, and loud throughout: every 20 ms has an RMS level above 2000 (about
// -24 dBFS), far above any silence or noise floor, so a receiver can detect it by energy
// alone.
func SpeechAudio(text string, perChar time.Duration) []int16 {
	out := make([]int16, SpeechSamples(text, perChar))
	w := 2 * math.Pi * SpeechPitch(text) / SampleRate
	const syllable = 2 * math.Pi * 4 / SampleRate
	for i := range out {
		t := float64(i)
		// The envelope stays between 0.4 and 1: syllables, never a pause.
		env := 0.7 + 0.3*math.Sin(syllable*t)
		v := math.Sin(w*t) + 0.5*math.Sin(2*w*t) + 0.25*math.Sin(3*w*t)
		out[i] = int16(7000 * env * v)
	}
	return out
}

// SpeechRecord is what the server saw of one speech request and when.
type SpeechRecord struct {
	Model, Text, Voice, Instructions string
	// Format is the response_format sent: "pcm" from the voice adapter.
	Format string
	// Speed is the speed sent (0: none); the audio is that much shorter.
	Speed float64
	// Samples is the length of the audio for Text, Sent how many of its samples went
	// out.
	Samples, Sent int
	// Status is the HTTP status answered.
	Status int
	// Received is when the request arrived, FirstByte when its first audio went out
	// (zero if none did), Done when the handler finished.
	Received, FirstByte, Done time.Time
	// Canceled says the audio did not all go out: the client went away or Close came.
	Canceled bool
}

// TTFB is the time from Received to FirstByte, or 0 if no audio went out.
func (r SpeechRecord) TTFB() time.Duration {
	if r.FirstByte.IsZero() {
		return 0
	}
	return r.FirstByte.Sub(r.Received)
}

func (s *Server) handleSpeech(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	var body struct {
		Model          string  `json:"model"`
		Input          string  `json:"input"`
		Voice          string  `json:"voice"`
		Instructions   string  `json:"instructions"`
		ResponseFormat string  `json:"response_format"`
		Speed          float64 `json:"speed"`
	}
	// Reading the body to its end lets net/http cancel r.Context() when the client goes
	// away.
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(raw, &body)
	}
	switch {
	case err != nil:
		err = fmt.Errorf("bad JSON: %w", err)
	case body.Input == "":
		err = fmt.Errorf("input: must not be empty")
	case body.ResponseFormat != "pcm" && body.ResponseFormat != "wav":
		// OpenAI's default is mp3, which this server cannot encode.
		err = fmt.Errorf("response_format %q: this server speaks pcm and wav", body.ResponseFormat)
	case body.Speed != 0 && (body.Speed < 0.25 || body.Speed > 4):
		err = fmt.Errorf("speed %v: want 0.25 to 4", body.Speed)
	}
	rec := SpeechRecord{Model: body.Model, Text: body.Input, Voice: body.Voice, Instructions: body.Instructions,
		Format: body.ResponseFormat, Speed: body.Speed, Status: cmp.Or(s.cfg.SpeechStatus, http.StatusOK), Received: received}
	if err != nil {
		rec.Status = http.StatusBadRequest
	}
	perChar := s.cfg.CharDuration
	if body.Speed > 0 {
		perChar = time.Duration(float64(perChar) / body.Speed)
	}
	var pcm []byte
	if rec.Status == http.StatusOK {
		pcm = s.voice.pcm(body.Input, perChar)
		rec.Samples = len(pcm) / 2
	}
	var i int
	s.update(func() {
		i = len(s.speeches)
		s.speeches = append(s.speeches, rec)
	})
	sent, canceled := 0, rec.Status == http.StatusOK
	defer func() {
		s.update(func() {
			s.speeches[i].Sent = sent
			s.speeches[i].Canceled = canceled
			s.speeches[i].Done = time.Now()
		})
	}()
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "openaitest: "+err.Error())
		return
	case rec.Status != http.StatusOK:
		failure(w, rec.Status)
		return
	}

	if body.ResponseFormat == "wav" {
		w.Header().Set("Content-Type", "audio/wav")
	} else {
		w.Header().Set("Content-Type", "audio/pcm")
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	first := received.Add(s.cfg.TTSTTFB)
	for k := 0; sent*2 < len(pcm); k++ {
		due := first
		if s.cfg.TTSPace > 0 {
			due = first.Add(time.Duration(float64(k) * float64(100*time.Millisecond) / s.cfg.TTSPace))
		}
		if !s.sleepUntil(r.Context(), due) {
			return
		}
		if k == 0 {
			// Recorded before it goes out, so a client holding it finds it recorded.
			s.update(func() { s.speeches[i].FirstByte = time.Now() })
		}
		if k == 0 && body.ResponseFormat == "wav" {
			if _, err := w.Write(wavHeader(len(pcm))); err != nil {
				return
			}
		}
		n := min(speechChunk, len(pcm)/2-sent)
		if _, err := w.Write(pcm[2*sent : 2*(sent+n)]); err != nil || rc.Flush() != nil {
			return
		}
		sent += n
	}
	canceled = false
}

// wavHeader is the canonical 44-byte header of 16-bit mono PCM at SampleRate.
func wavHeader(dataLen int) []byte {
	b := make([]byte, 44)
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+dataLen))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], SampleRate)
	binary.LittleEndian.PutUint32(b[28:], SampleRate*2)
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(dataLen))
	return b
}

// voiceCache keeps the encoded audio of recent texts. A load benchmark has a hundred
// sessions saying the same few sentences; synthesising each anew (three sines per
// sample) would put the fake server's CPU in the engine's figures.
type voiceCache struct {
	mu sync.Mutex
	m  map[voiceKey][]byte
}

type voiceKey struct {
	text    string
	perChar time.Duration
}

// maxVoiceCache bounds the cache; past it the cache starts over. A sentence of 60
// characters is 170 KB, so this is at most tens of MB.
const maxVoiceCache = 256

// pcm returns the little-endian bytes of SpeechAudio(text, perChar). The slice is
// shared: callers only read it.
func (c *voiceCache) pcm(text string, perChar time.Duration) []byte {
	k := voiceKey{text, perChar}
	c.mu.Lock()
	b, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return b
	}
	samples := SpeechAudio(text, perChar)
	b = make([]byte, 2*len(samples))
	for j, v := range samples {
		binary.LittleEndian.PutUint16(b[2*j:], uint16(v))
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxVoiceCache {
		c.m = make(map[voiceKey][]byte)
	}
	c.m[k] = b
	c.mu.Unlock()
	return b
}
