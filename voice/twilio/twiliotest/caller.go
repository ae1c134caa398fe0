// Package twiliotest plays Twilio's side of a bidirectional Media Stream for tests: a
// Caller connects to a WebSocket server, sends "connected" and "start" as Twilio does,
// streams the caller's audio as 20 ms μ-law "media" messages on the wall clock
// (silence when it has nothing to say, as a phone line does), and plays out what the
// server sends back in real time: it honours "clear" and echoes each "mark" once the
// audio before it has played, as Twilio's documentation describes.
//
// The message shapes are Twilio's documented ones
// (https://www.twilio.com/docs/voice/media-streams/websocket-messages).
package twiliotest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/voice/audio"
)

// Rate is the line's sample rate.
const Rate = 8000

const frame = Rate / 50 // 20 ms

// SpeechDBFS: a heard chunk louder than this is speech (the fake TTS voice and
// espeak-ng sit far above it; μ-law silence decodes to a few LSBs).
const SpeechDBFS = -50.0

// Options are what the Caller's "start" message says.
type Options struct {
	AccountSID, CallSID, StreamSID string
	CustomParameters               map[string]string
}

// Chunk is agent audio as the caller heard it.
type Chunk struct {
	At   time.Time // when it began to play
	N    int       // samples
	DBFS float64
}

// Speech says whether the chunk is loud enough to be speech.
func (c Chunk) Speech() bool { return c.DBFS > SpeechDBFS }

// Caller is Twilio's end of one Media Stream.
type Caller struct {
	conn *websocket.Conn
	sid  string
	opts Options

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// writeMu serialises the sender's and the test's messages, and numbers them.
	writeMu sync.Mutex
	seq     int

	mu       sync.Mutex
	say      []int16   // caller audio not yet sent
	mute     time.Time // from this time on (if set), no media is sent
	sayAt    time.Time // when the audio queued so far will have been sent
	t0       time.Time
	chunks   []Chunk
	playEnd  time.Time // when the audio received so far will have played
	marks    []pendingMark
	clears   []time.Time
	events   []string // every event the server sent, in order
	echoed   int
	errs     []error
	closed   bool
	readErr  error
	readDone chan struct{}
}

type pendingMark struct {
	name string
	at   time.Time
}

type msg struct {
	Event          string         `json:"event"`
	SequenceNumber string         `json:"sequenceNumber,omitempty"`
	StreamSID      string         `json:"streamSid,omitempty"`
	Protocol       string         `json:"protocol,omitempty"`
	Version        string         `json:"version,omitempty"`
	Start          map[string]any `json:"start,omitempty"`
	Media          *struct {
		Track     string `json:"track,omitempty"`
		Chunk     string `json:"chunk,omitempty"`
		Timestamp string `json:"timestamp,omitempty"`
		Payload   string `json:"payload"`
	} `json:"media,omitempty"`
	Mark *struct {
		Name string `json:"name"`
	} `json:"mark,omitempty"`
	DTMF map[string]string `json:"dtmf,omitempty"`
	Stop map[string]string `json:"stop,omitempty"`
}

// Dial opens the socket and sends nothing: for tests of malformed openings. Send raw
// messages with SendRaw.
func Dial(ctx context.Context, url string) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, url, nil)
	return conn, err
}

// Connect dials url, sends "connected" and "start", and starts streaming silence.
func Connect(ctx context.Context, url string, o Options) (*Caller, error) {
	if o.StreamSID == "" {
		o.StreamSID = "MZ00000000000000000000000000000001"
	}
	if o.CallSID == "" {
		o.CallSID = "CA00000000000000000000000000000001"
	}
	if o.AccountSID == "" {
		o.AccountSID = "AC00000000000000000000000000000001"
	}
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	c := &Caller{conn: conn, sid: o.StreamSID, opts: o, readDone: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	params := map[string]any{}
	for k, v := range o.CustomParameters {
		params[k] = v
	}
	if err := c.send(msg{Event: "connected", Protocol: "Call", Version: "1.0.0"}, false); err != nil {
		c.abort()
		return nil, err
	}
	err = c.send(msg{Event: "start", StreamSID: o.StreamSID, Start: map[string]any{
		"accountSid": o.AccountSID, "streamSid": o.StreamSID, "callSid": o.CallSID,
		"tracks": []string{"inbound"}, "customParameters": params,
		"mediaFormat": map[string]any{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
	}}, true)
	if err != nil {
		c.abort()
		return nil, err
	}
	c.t0 = time.Now()
	c.sayAt = c.t0
	c.wg.Add(3)
	go c.sender()
	go c.reader()
	go c.player()
	return c, nil
}

func (c *Caller) abort() {
	c.conn.Close(websocket.StatusInternalError, "")
	c.cancel()
}

// send writes m, numbering it as Twilio does (every message after "connected").
func (c *Caller) send(m msg, numbered bool) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if numbered {
		c.seq++
		m.SequenceNumber = strconv.Itoa(c.seq)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return c.conn.Write(c.ctx, websocket.MessageText, b)
}

// SendRaw writes a text message as is.
func (c *Caller) SendRaw(s string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.conn.Write(c.ctx, websocket.MessageText, []byte(s))
}

// sender sends a media chunk every 20 ms on the wall clock: what Say queued, or
// silence, as a phone line does.
func (c *Caller) sender() {
	defer c.wg.Done()
	chunk := 0
	enc := make([]byte, 0, frame)
	pcm := make([]int16, frame)
	next := c.t0
	for {
		next = next.Add(20 * time.Millisecond)
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		c.mu.Lock()
		clear(pcm)
		n := copy(pcm, c.say)
		c.say = c.say[n:]
		muted := !c.mute.IsZero() && !next.Before(c.mute)
		c.mu.Unlock()
		chunk++
		if muted {
			continue // lost on the way: Twilio's numbering goes on
		}
		enc = audio.EncodeUlaw(enc[:0], pcm)
		m := msg{Event: "media", StreamSID: c.sid}
		m.Media = &struct {
			Track     string `json:"track,omitempty"`
			Chunk     string `json:"chunk,omitempty"`
			Timestamp string `json:"timestamp,omitempty"`
			Payload   string `json:"payload"`
		}{Track: "inbound", Chunk: strconv.Itoa(chunk), Timestamp: strconv.Itoa((chunk - 1) * 20), Payload: base64.StdEncoding.EncodeToString(enc)}
		if err := c.send(m, true); err != nil {
			return
		}
	}
}

// Say queues samples (8 kHz) to be sent after what is already queued, and returns when
// they start going out.
func (c *Caller) Say(samples []int16) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	// The sender's clock: what is queued goes out 20 ms at a time from the next tick.
	if c.sayAt.Before(now) {
		c.sayAt = now
	}
	at := c.sayAt
	c.say = append(c.say, samples...)
	c.sayAt = at.Add(time.Duration(len(samples)) * time.Second / Rate)
	return at
}

// MuteFrom stops the media from at on, as a network outage between Twilio and the
// server would (Twilio itself sends a chunk every 20 ms for the whole call).
func (c *Caller) MuteFrom(at time.Time) {
	c.mu.Lock()
	c.mute = at
	c.mu.Unlock()
}

// DTMF sends a key press.
func (c *Caller) DTMF(digit string) error {
	return c.send(msg{Event: "dtmf", StreamSID: c.sid, DTMF: map[string]string{"track": "inbound_track", "digit": digit}}, true)
}

// Stop sends "stop" (the caller hung up) and closes the socket, as Twilio does.
func (c *Caller) Stop() error {
	err := c.send(msg{Event: "stop", StreamSID: c.sid, Stop: map[string]string{"accountSid": c.opts.AccountSID, "callSid": c.opts.CallSID}}, true)
	c.Close()
	return err
}

// reader takes the server's messages: media is queued to play, marks are echoed when
// the audio before them has played, clear drops what has not.
func (c *Caller) reader() {
	defer c.wg.Done()
	defer close(c.readDone)
	for {
		typ, data, err := c.conn.Read(c.ctx)
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		var m msg
		if typ != websocket.MessageText || json.Unmarshal(data, &m) != nil {
			c.fail(fmt.Errorf("twiliotest: server sent a malformed message: %q", data))
			continue
		}
		if m.StreamSID != c.sid {
			c.fail(fmt.Errorf("twiliotest: %s message for stream %q, want %q", m.Event, m.StreamSID, c.sid))
		}
		now := time.Now()
		c.mu.Lock()
		c.events = append(c.events, m.Event)
		c.mu.Unlock()
		switch m.Event {
		case "media":
			raw, err := base64.StdEncoding.DecodeString(payload(m))
			if err != nil || len(raw) == 0 {
				c.fail(fmt.Errorf("twiliotest: media payload %q", payload(m)))
				continue
			}
			pcm := audio.DecodeUlaw(nil, raw)
			c.mu.Lock()
			at := c.playEnd
			if at.Before(now) {
				at = now
			}
			c.playEnd = at.Add(time.Duration(len(pcm)) * time.Second / Rate)
			c.chunks = append(c.chunks, Chunk{At: at, N: len(pcm), DBFS: DBFS(pcm)})
			c.mu.Unlock()
		case "mark":
			if m.Mark == nil || m.Mark.Name == "" {
				c.fail(errors.New("twiliotest: mark without a name"))
				continue
			}
			c.mu.Lock()
			at := c.playEnd
			if at.Before(now) {
				at = now
			}
			c.marks = append(c.marks, pendingMark{name: m.Mark.Name, at: at})
			c.mu.Unlock()
		case "clear":
			// Twilio discards its buffer and sends back the marks in it.
			c.mu.Lock()
			kept := c.chunks[:0]
			for _, ch := range c.chunks {
				if !ch.At.After(now) {
					kept = append(kept, ch)
				}
			}
			c.chunks = kept
			c.playEnd = now
			c.clears = append(c.clears, now)
			for i := range c.marks {
				c.marks[i].at = now
			}
			c.mu.Unlock()
		default:
			c.fail(fmt.Errorf("twiliotest: server sent event %q", m.Event))
		}
	}
}

func payload(m msg) string {
	if m.Media == nil {
		return ""
	}
	return m.Media.Payload
}

// player echoes marks when their time comes.
func (c *Caller) player() {
	defer c.wg.Done()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			var due []string
			for len(c.marks) > 0 && !c.marks[0].at.After(now) {
				due = append(due, c.marks[0].name)
				c.marks = c.marks[1:]
			}
			c.echoed += len(due)
			c.mu.Unlock()
			for _, name := range due {
				m := msg{Event: "mark", StreamSID: c.sid}
				m.Mark = &struct {
					Name string `json:"name"`
				}{Name: name}
				if c.send(m, true) != nil {
					return
				}
			}
		}
	}
}

func (c *Caller) fail(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

// Errors are the protocol violations the server committed.
func (c *Caller) Errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// Chunks is the agent audio that has played so far.
func (c *Caller) Chunks() []Chunk {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var out []Chunk
	for _, ch := range c.chunks {
		if !ch.At.After(now) {
			out = append(out, ch)
		}
	}
	return out
}

// Clears is when each "clear" arrived.
func (c *Caller) Clears() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.clears...)
}

// MarksEchoed is how many marks the caller has sent back.
func (c *Caller) MarksEchoed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.echoed
}

// Events are the events of every message the server sent, in order.
func (c *Caller) Events() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...)
}

// FirstSpeech is the start of the first played speech chunk at or after from.
func (c *Caller) FirstSpeech(from time.Time) (time.Time, bool) {
	for _, ch := range c.Chunks() {
		if !ch.At.Before(from) && ch.Speech() {
			return ch.At, true
		}
	}
	return time.Time{}, false
}

// SpeechEnd is the end of the last speech chunk after from, once quiet has passed
// without any.
func (c *Caller) SpeechEnd(from time.Time, quiet time.Duration) (time.Time, bool) {
	var last time.Time
	for _, ch := range c.Chunks() {
		if !ch.At.Before(from) && ch.Speech() {
			last = ch.At.Add(time.Duration(ch.N) * time.Second / Rate)
		}
	}
	if last.IsZero() {
		last = from
	}
	if time.Since(last) < quiet {
		return time.Time{}, false
	}
	return last, true
}

// WaitSpeech waits for agent speech to play, at or after from.
func (c *Caller) WaitSpeech(ctx context.Context, from time.Time) (time.Time, error) {
	return c.wait(ctx, func() (time.Time, bool) { return c.FirstSpeech(from) })
}

// WaitSilence waits for quiet of agent speech after from, and returns when the speech
// before it ended.
func (c *Caller) WaitSilence(ctx context.Context, from time.Time, quiet time.Duration) (time.Time, error) {
	return c.wait(ctx, func() (time.Time, bool) { return c.SpeechEnd(from, quiet) })
}

func (c *Caller) wait(ctx context.Context, cond func() (time.Time, bool)) (time.Time, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if at, ok := cond(); ok {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
}

// Closed is closed when the server has closed the socket (or Close was called).
func (c *Caller) Closed() <-chan struct{} { return c.readDone }

// CloseStatus is the status the socket closed with, -1 if it has not closed or closed
// without one.
func (c *Caller) CloseStatus() websocket.StatusCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return websocket.CloseStatus(c.readErr)
}

// Close closes the socket without a "stop" (a dropped connection, as far as the
// server can tell) and stops the caller's goroutines. Safe to call twice.
func (c *Caller) Close() {
	c.mu.Lock()
	closed := c.closed
	c.closed = true
	c.mu.Unlock()
	if closed {
		return
	}
	c.conn.Close(websocket.StatusNormalClosure, "")
	c.cancel()
	c.wg.Wait()
}

// DBFS is audio.DBFS, the level a chunk is judged by.
func DBFS(samples []int16) float64 { return audio.DBFS(samples) }

// LoadSpeech reads a WAV recording at 8 kHz.
func LoadSpeech(path string) ([]int16, error) { return audio.ReadWAVFileAt(path, Rate) }

// Silence is d of silence at 8 kHz.
func Silence(d time.Duration) []int16 { return make([]int16, int(int64(d)*Rate/int64(time.Second))) }

// Onset returns the offset of the first 10 ms block of samples (8 kHz) louder than
// dbfs.
func Onset(samples []int16, dbfs float64) (time.Duration, error) {
	return audio.Onset(samples, Rate, dbfs)
}
