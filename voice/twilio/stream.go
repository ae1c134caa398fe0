// Package twilio attaches the voice engine to a Twilio Media Stream: the bidirectional
// WebSocket Twilio opens for <Connect><Stream url="wss://..."/>, carrying the call's
// audio both ways as base64 G.711 μ-law at 8 kHz in JSON text messages.
//
// One Stream carries one call. The flow:
//
//   - Accept reads Twilio's "connected" and "start" messages and checks the media
//     format. Start exposes the stream and call SIDs and the <Parameter>s the TwiML
//     passed (Parley puts call_id and agent_id there), so the caller can look the call
//     up and build a voice.Session with Output() and OutputRate().
//   - Run starts the session and holds the call: inbound "media" (20 ms of μ-law) is
//     decoded and written to Session.WriteFrame; the engine's 20 ms frames are encoded
//     and sent as "media" messages as they come. Twilio buffers what it is sent and
//     plays it out; the engine already paces in real time, so the buffer stays short.
//   - Marks: every markEvery of audio the stream sends a "mark"; Twilio echoes it when
//     the audio before it has played. The difference between audio sent and audio
//     confirmed played is Twilio's queue (Stats.Unplayed), and at the end of a call the
//     stream waits for the last mark so that a goodbye is not cut off by the hang-up.
//   - Barge-in: the engine calls Flush when the caller talks over the agent; the stream
//     drops what it has not sent yet and sends "clear", which makes Twilio discard its
//     buffer (and echo the marks in it at once).
//   - DTMF digits go to the session (Session.DTMF, which gives them to the model) and
//     to Config.OnDTMF. The other way is closed: a Media Stream cannot send DTMF (Twilio
//     has no such message; keys would need the REST API's <Play digits>, which ends
//     the stream), so the engine's DTMFOut stays false and the model gets no send_dtmf.
//   - The call ends on "stop" (the caller hung up, or the call was redirected), when
//     the socket closes, or when the session ends itself; Run reports which and closes
//     the socket.
//
// The caller's audio reaches the engine on the wall clock. Twilio sends a chunk every
// 20 ms for the whole call, silence included, but a congested path delivers them in
// bursts with gaps; the engine measures pauses in audio, so a gap would delay the end
// of the caller's turn by its length. As in the LiveKit transport, a 20 ms tick fills
// whatever has not arrived, beyond a 60 ms allowance for jitter, with silence.
package twilio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/audio"
)

// Config configures a Stream.
type Config struct {
	// StartTimeout bounds the wait for Twilio's "connected" and "start" messages after
	// the socket opens. Twilio sends both at once; a few seconds means the peer is not
	// Twilio. Default 10 s.
	StartTimeout time.Duration
	// OnDTMF, if set, also receives each key the caller presses ("0"-"9", "*", "#"),
	// after the session has (Session.DTMF). It is called from the stream's reading
	// goroutine and must return quickly.
	OnDTMF func(digit string)
	// DrainTimeout bounds the wait, when the session ends itself (end_call, silence,
	// transfer), for Twilio to confirm it has played the agent's last words before the
	// socket is closed; closing it ends the call and would cut them off. Default 3 s.
	DrainTimeout time.Duration
	// Logger; default discards.
	Logger *slog.Logger
}

// Defaults and protocol constants.
const (
	defaultStartTimeout = 10 * time.Second
	defaultDrainTimeout = 3 * time.Second
	// Rate is the rate of a Media Stream's audio, both ways: G.711's 8 kHz.
	Rate = 8000
	// Encoding is the only mediaFormat.encoding a bidirectional stream carries.
	Encoding = "audio/x-mulaw"
	// frameSamples is one 20 ms frame at 8 kHz.
	frameSamples = Rate / 50
	// markEvery: a mark after every 200 ms of agent audio. Each costs a small message
	// each way; 200 ms keeps Stats.Unplayed accurate to well under a syllable.
	markEvery = 10 * frameSamples
	// writeTimeout bounds one socket write. Twilio reads promptly; a write stuck this
	// long means the connection is gone.
	writeTimeout = 5 * time.Second
	// sendQueue bounds the messages waiting for the socket: 5 s of audio. The engine
	// writes in real time, so the queue only fills if the socket stalls, and then
	// dropping (and logging) beats growing without bound.
	sendQueue = 256
)

// Start is what Twilio's "start" message says about the stream.
type Start struct {
	StreamSID  string
	AccountSID string
	CallSID    string
	// Tracks are the media flows Twilio sends: "inbound" for <Connect><Stream>.
	Tracks []string
	// CustomParameters are the <Parameter name= value=> elements of the <Stream>.
	CustomParameters map[string]string
}

// Outcome says how a call on a stream ended.
type Outcome string

const (
	// CallerHungUp: Twilio sent "stop": the caller hung up, or the call was redirected
	// or ended through Twilio's API.
	CallerHungUp Outcome = "caller_hung_up"
	// Disconnected: the socket closed or failed without a "stop".
	Disconnected Outcome = "disconnected"
	// SessionEnded: the engine ended the call (end_call, transfer, silence, maximum
	// duration, a provider failure); see Result.EndReason.
	SessionEnded Outcome = "session_ended"
	// Cancelled: Run's context ended.
	Cancelled Outcome = "cancelled"
)

// Result reports how Run ended.
type Result struct {
	Outcome Outcome
	// EndReason is the engine's reason (EndStopped unless the session ended itself).
	EndReason voice.EndReason
}

// Stats counts what happened on the stream.
type Stats struct {
	MediaIn      atomic.Int64 // inbound media messages
	SilenceFeeds atomic.Int64 // 20 ms frames of silence filled in for missing caller audio
	MediaOut     atomic.Int64 // media messages sent (one per engine frame)
	Dropped      atomic.Int64 // outbound messages dropped because the socket stalled
	MarksSent    atomic.Int64
	MarksEchoed  atomic.Int64
	Clears       atomic.Int64
	DTMF         atomic.Int64
	// sent and played count agent samples: queued for sending, and confirmed played by
	// a mark's echo (or discarded by a clear).
	sent, played atomic.Int64
}

// Unplayed is how much agent audio the stream has sent (or queued) that Twilio has not
// yet confirmed played, to the precision of one mark.
func (s *Stats) Unplayed() time.Duration {
	return time.Duration(s.sent.Load()-s.played.Load()) * time.Second / Rate
}

// ErrProtocol wraps every error caused by a message that breaks the Media Streams
// protocol (bad JSON, an unexpected event, an unsupported media format).
var ErrProtocol = errors.New("twilio: protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// Stream is one Twilio Media Stream.
type Stream struct {
	cfg   Config
	log   *slog.Logger
	conn  *websocket.Conn
	start Start
	stats Stats
	out   *output

	// ctx ends when the stream is closed; socket operations use it, since cancelling a
	// coder/websocket operation's context closes the connection.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	writerEnd chan struct{}

	marksMu sync.Mutex
	marks   map[string]int64 // outstanding mark name → agent samples sent before it
	markSeq int
	drained chan struct{} // closed when the marks all come back, once awaited
}

// message is any Media Streams message, either way; unused parts stay nil.
type message struct {
	Event          string          `json:"event"`
	SequenceNumber string          `json:"sequenceNumber,omitempty"`
	StreamSID      string          `json:"streamSid,omitempty"`
	Protocol       string          `json:"protocol,omitempty"`
	Version        string          `json:"version,omitempty"`
	Start          *startBody      `json:"start,omitempty"`
	Media          *mediaBody      `json:"media,omitempty"`
	Mark           *markBody       `json:"mark,omitempty"`
	DTMF           *dtmfBody       `json:"dtmf,omitempty"`
	Stop           json.RawMessage `json:"stop,omitempty"`
}

type startBody struct {
	AccountSID       string            `json:"accountSid"`
	StreamSID        string            `json:"streamSid"`
	CallSID          string            `json:"callSid"`
	Tracks           []string          `json:"tracks"`
	CustomParameters map[string]string `json:"customParameters"`
	MediaFormat      struct {
		Encoding   string `json:"encoding"`
		SampleRate int    `json:"sampleRate"`
		Channels   int    `json:"channels"`
	} `json:"mediaFormat"`
}

type mediaBody struct {
	Track     string `json:"track,omitempty"`
	Chunk     string `json:"chunk,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	Payload   string `json:"payload"`
}

type markBody struct {
	Name string `json:"name"`
}

type dtmfBody struct {
	Track string `json:"track"`
	Digit string `json:"digit"`
}

// AcceptHTTP upgrades a request to a WebSocket and accepts the stream on it. On error
// the response has been written or the socket closed.
func AcceptHTTP(w http.ResponseWriter, r *http.Request, cfg Config) (*Stream, error) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil, fmt.Errorf("twilio: upgrade: %w", err)
	}
	return Accept(r.Context(), conn, cfg)
}

// Accept reads the stream's "connected" and "start" messages from conn and checks that
// the audio is 8 kHz mono μ-law. On error it closes conn (a protocol error with
// StatusPolicyViolation). The stream owns conn from here: Close closes it.
func Accept(ctx context.Context, conn *websocket.Conn, cfg Config) (*Stream, error) {
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = defaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := readStart(ctx, conn, cfg.StartTimeout)
	if err != nil {
		code := websocket.StatusInternalError
		if errors.Is(err, ErrProtocol) {
			code = websocket.StatusPolicyViolation
		}
		conn.Close(code, "")
		return nil, err
	}
	s := &Stream{
		cfg: cfg, log: cfg.Logger.With("stream_sid", st.StreamSID, "call_sid", st.CallSID),
		conn: conn, start: st, marks: map[string]int64{},
		writerEnd: make(chan struct{}),
	}
	// The socket lives as long as the stream, not as long as ctx (the HTTP request's,
	// usually, which is fine, but Accept's caller may pass a shorter one).
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.out = newOutput(s)
	go s.out.run()
	return s, nil
}

// readStart reads up to the "start" message. "connected" comes first from Twilio, but
// says nothing the stream needs, so a peer that omits it is not refused.
func readStart(ctx context.Context, conn *websocket.Conn, timeout time.Duration) (Start, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i := 0; i < 2; i++ {
		m, err := readMessage(ctx, conn)
		if err != nil {
			return Start{}, err
		}
		switch m.Event {
		case "connected":
			if i > 0 {
				return Start{}, protoErr("a second connected message")
			}
			if m.Protocol != "" && m.Protocol != "Call" {
				return Start{}, protoErr("protocol %q, want Call", m.Protocol)
			}
		case "start":
			return parseStart(m)
		default:
			return Start{}, protoErr("%q message before start", m.Event)
		}
	}
	return Start{}, protoErr("no start message")
}

func parseStart(m message) (Start, error) {
	b := m.Start
	if b == nil {
		return Start{}, protoErr("start message without a start object")
	}
	sid := b.StreamSID
	if sid == "" {
		sid = m.StreamSID
	}
	if sid == "" {
		return Start{}, protoErr("start message without a streamSid")
	}
	if m.StreamSID != "" && b.StreamSID != "" && m.StreamSID != b.StreamSID {
		return Start{}, protoErr("start message names two streams, %q and %q", m.StreamSID, b.StreamSID)
	}
	f := b.MediaFormat
	if f.Encoding != Encoding || f.SampleRate != Rate || f.Channels != 1 {
		return Start{}, protoErr("media format %s/%d/%d channel(s), want %s/%d/1", f.Encoding, f.SampleRate, f.Channels, Encoding, Rate)
	}
	return Start{
		StreamSID: sid, AccountSID: b.AccountSID, CallSID: b.CallSID,
		Tracks: b.Tracks, CustomParameters: b.CustomParameters,
	}, nil
}

// readMessage reads one JSON text message.
func readMessage(ctx context.Context, conn *websocket.Conn) (message, error) {
	typ, data, err := conn.Read(ctx)
	if err != nil {
		return message{}, fmt.Errorf("twilio: read: %w", err)
	}
	if typ != websocket.MessageText {
		return message{}, protoErr("a binary message")
	}
	var m message
	if err := json.Unmarshal(data, &m); err != nil {
		return message{}, protoErr("bad JSON: %v", err)
	}
	if m.Event == "" {
		return message{}, protoErr("a message without an event")
	}
	return m, nil
}

// Start returns what the "start" message said.
func (s *Stream) Start() Start { return s.start }

// Output is where the engine writes the agent's voice (voice.Config.Output).
func (s *Stream) Output() audio.Writer { return s.out }

// OutputRate is the rate the engine must write at (voice.Config.OutputRate).
func (s *Stream) OutputRate() int { return Rate }

// Stats returns the stream's counters.
func (s *Stream) Stats() *Stats { return &s.stats }

// readerEvent is how the reading goroutine tells Run the stream is over.
type readerEvent struct {
	stop bool
	err  error
}

// Run starts s and holds the call until Twilio stops the stream, the socket closes, the
// session ends or ctx ends. s must be configured with Output() and OutputRate(), and
// not yet started. Run stops s and closes the socket before returning. A protocol
// error during the call ends it with an error wrapping ErrProtocol.
func (s *Stream) Run(ctx context.Context, sess *voice.Session) (res Result, err error) {
	readerExit := make(chan struct{})
	reading := false
	defer func() {
		sess.Stop()
		if res.EndReason == "" {
			res.EndReason = sess.EndReason()
		}
		code, reason := websocket.StatusNormalClosure, ""
		if errors.Is(err, ErrProtocol) {
			code, reason = websocket.StatusPolicyViolation, "protocol error"
		}
		s.close(code, reason) // which ends the reader too
		if reading {
			<-readerExit
		}
	}()
	if err := sess.Start(ctx); err != nil {
		return res, fmt.Errorf("twilio: start session: %w", err)
	}
	in := newInput(sess, &s.stats)
	readerDone := make(chan readerEvent, 1)
	reading = true
	go func() {
		defer close(readerExit)
		readerDone <- s.read(in)
	}()
	tick := time.NewTicker(voice.FillTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			res.Outcome = Cancelled
			return res, nil
		case <-sess.Done():
			res.Outcome = SessionEnded
			// The engine has written the agent's last words; let Twilio play them
			// before the hang-up (unless the caller has gone already).
			s.drain(readerDone)
			return res, nil
		case now := <-tick.C:
			in.fill(now)
		case ev := <-readerDone:
			if ev.stop {
				res.Outcome = CallerHungUp
				return res, nil
			}
			res.Outcome = Disconnected
			if errors.Is(ev.err, ErrProtocol) {
				return res, ev.err
			}
			s.log.Info("twilio: socket closed without a stop", "err", ev.err)
			return res, nil
		}
	}
}

// read handles Twilio's messages until "stop" or an error.
func (s *Stream) read(in *input) readerEvent {
	var pcm []int16
	for {
		m, err := readMessage(s.ctx, s.conn)
		if err != nil {
			return readerEvent{err: err}
		}
		if m.StreamSID != "" && m.StreamSID != s.start.StreamSID {
			return readerEvent{err: protoErr("%s message for stream %q, want %q", m.Event, m.StreamSID, s.start.StreamSID)}
		}
		switch m.Event {
		case "media":
			if m.Media == nil {
				return readerEvent{err: protoErr("media message without media")}
			}
			if m.Media.Track != "" && m.Media.Track != "inbound" {
				continue // only the caller's side feeds the engine
			}
			raw, err := base64.StdEncoding.DecodeString(m.Media.Payload)
			if err != nil {
				return readerEvent{err: protoErr("media payload: %v", err)}
			}
			s.stats.MediaIn.Add(1)
			pcm = audio.DecodeUlaw(pcm[:0], raw)
			if err := in.write(pcm); err != nil {
				return readerEvent{err: err}
			}
		case "mark":
			if m.Mark == nil {
				return readerEvent{err: protoErr("mark message without a mark")}
			}
			s.markPlayed(m.Mark.Name)
		case "dtmf":
			if m.DTMF == nil {
				return readerEvent{err: protoErr("dtmf message without a digit")}
			}
			s.stats.DTMF.Add(1)
			in.sess.DTMF(m.DTMF.Digit)
			if s.cfg.OnDTMF != nil {
				s.cfg.OnDTMF(m.DTMF.Digit)
			}
		case "stop":
			return readerEvent{stop: true}
		case "connected", "start":
			return readerEvent{err: protoErr("a second %s message", m.Event)}
		default:
			// Twilio may add events; an unknown one is no reason to drop a call.
			s.log.Debug("twilio: unknown event", "event", m.Event)
		}
	}
}

// sendMark queues a mark after the audio queued so far.
func (s *Stream) sendMark() (string, bool) {
	s.marksMu.Lock()
	s.markSeq++
	name := "m" + strconv.Itoa(s.markSeq)
	s.marks[name] = s.stats.sent.Load()
	s.marksMu.Unlock()
	ok := s.out.enqueue(outMsg{mark: name})
	if ok {
		s.stats.MarksSent.Add(1)
	} else {
		s.marksMu.Lock()
		delete(s.marks, name)
		s.marksMu.Unlock()
	}
	return name, ok
}

// markPlayed records Twilio's echo of a mark: the audio before it has played (or was
// cleared).
func (s *Stream) markPlayed(name string) {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	at, ok := s.marks[name]
	if !ok {
		s.log.Debug("twilio: echo of an unknown mark", "mark", name)
		return
	}
	delete(s.marks, name)
	s.stats.MarksEchoed.Add(1)
	if at > s.stats.played.Load() {
		s.stats.played.Store(at)
	}
	if len(s.marks) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// drain waits, up to DrainTimeout, for Twilio to echo every outstanding mark, a final
// one included: then the agent's last words have been played.
func (s *Stream) drain(readerDone <-chan readerEvent) {
	if _, ok := s.sendMark(); !ok {
		return
	}
	s.marksMu.Lock()
	done := make(chan struct{})
	if len(s.marks) == 0 {
		close(done)
	} else {
		s.drained = done
	}
	s.marksMu.Unlock()
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-readerDone: // the caller hung up or the socket went: nothing to wait for
	case <-t.C:
		s.log.Warn("twilio: the agent's last audio was not confirmed played", "unplayed", s.stats.Unplayed())
	}
}

// Close closes the socket and stops the stream's goroutines. Run calls it; call it
// yourself only for a stream that is never Run. Safe to call twice.
func (s *Stream) Close() { s.close(websocket.StatusNormalClosure, "") }

func (s *Stream) close(code websocket.StatusCode, reason string) {
	s.closeOnce.Do(func() {
		// Let what is queued (the last mark, say) go out first, briefly.
		s.out.shutdown()
		select {
		case <-s.writerEnd:
		case <-time.After(time.Second):
		}
		s.conn.Close(code, reason)
		s.cancel()
		<-s.writerEnd
	})
}

// outMsg is one queued outbound message: a frame of μ-law audio, a mark or a clear.
type outMsg struct {
	ulaw  []byte
	mark  string
	clear bool
}

// output is the engine's Output: it encodes frames and queues them for a writing
// goroutine, so WriteFrame never waits on the network.
type output struct {
	s       *Stream
	mu      sync.Mutex
	queue   []outMsg
	wake    chan struct{}
	closing bool
	pending int // samples since the last mark
	enc     []byte
	pool    [][]byte
	buf     []int16 // a partial frame carried to the next write
}

func newOutput(s *Stream) *output {
	return &output{s: s, wake: make(chan struct{}, 1)}
}

// WriteFrame implements audio.Writer: 8 kHz frames from the engine.
func (o *output) WriteFrame(f audio.Frame) error {
	if f.Rate != Rate {
		return fmt.Errorf("twilio: output frame at %d Hz, want %d", f.Rate, Rate)
	}
	if len(f.Samples) == 0 {
		return nil
	}
	o.mu.Lock()
	var b []byte
	if n := len(o.pool); n > 0 {
		b, o.pool = o.pool[n-1][:0], o.pool[:n-1]
	}
	o.mu.Unlock()
	b = audio.EncodeUlaw(b, f.Samples)
	if !o.enqueue(outMsg{ulaw: b}) {
		return nil
	}
	o.s.stats.sent.Add(int64(len(f.Samples)))
	o.pending += len(f.Samples)
	if o.pending >= markEvery {
		o.pending = 0
		o.s.sendMark()
	}
	return nil
}

// Flush implements audio.Flusher: the caller barged in. What is still queued here is
// dropped, and "clear" tells Twilio to drop what it has buffered.
func (o *output) Flush() {
	o.mu.Lock()
	kept := o.queue[:0]
	for _, m := range o.queue {
		if m.ulaw != nil {
			o.pool = append(o.pool, m.ulaw)
			continue
		}
		kept = append(kept, m) // marks stay, so their echoes still come back
	}
	o.queue = kept
	o.mu.Unlock()
	// Everything sent so far is now played, dropped here or about to be discarded by
	// Twilio (which echoes the marks in its buffer at once).
	o.s.marksMu.Lock()
	o.s.stats.played.Store(o.s.stats.sent.Load())
	o.s.marksMu.Unlock()
	o.s.stats.Clears.Add(1)
	o.enqueue(outMsg{clear: true})
	o.pending = 0
}

func (o *output) enqueue(m outMsg) bool {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return false
	}
	if len(o.queue) >= sendQueue && !m.clear {
		o.mu.Unlock()
		o.s.stats.Dropped.Add(1)
		return false
	}
	o.queue = append(o.queue, m)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

// shutdown lets the writer send what is queued and exit.
func (o *output) shutdown() {
	o.mu.Lock()
	o.closing = true
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run sends queued messages until shutdown, or until the socket fails.
func (o *output) run() {
	s := o.s
	defer close(s.writerEnd)
	sid := s.start.StreamSID
	var js []byte
	for {
		o.mu.Lock()
		if len(o.queue) == 0 {
			closing := o.closing
			o.mu.Unlock()
			if closing {
				return
			}
			select {
			case <-o.wake:
			case <-s.ctx.Done():
				return
			}
			continue
		}
		m := o.queue[0]
		o.queue[0] = outMsg{}
		o.queue = o.queue[1:]
		o.mu.Unlock()

		var msg message
		switch {
		case m.clear:
			msg = message{Event: "clear", StreamSID: sid}
		case m.mark != "":
			msg = message{Event: "mark", StreamSID: sid, Mark: &markBody{Name: m.mark}}
		default:
			o.enc = base64.StdEncoding.AppendEncode(o.enc[:0], m.ulaw)
			msg = message{Event: "media", StreamSID: sid, Media: &mediaBody{Payload: string(o.enc)}}
			s.stats.MediaOut.Add(1)
			o.mu.Lock()
			o.pool = append(o.pool, m.ulaw)
			o.mu.Unlock()
		}
		js, _ = json.Marshal(msg)
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		err := s.conn.Write(ctx, websocket.MessageText, js)
		cancel()
		if err != nil {
			s.log.Debug("twilio: write", "err", err)
			o.mu.Lock()
			o.closing = true
			o.queue = nil
			o.mu.Unlock()
			return
		}
	}
}

// input is Twilio's 20 ms chunks into the session's clocked input (see
// voice.ClockedInput).
type input struct {
	c     *voice.ClockedInput
	sess  *voice.Session
	stats *Stats
}

func newInput(s *voice.Session, stats *Stats) *input {
	return &input{c: voice.NewClockedInput(s, Rate), sess: s, stats: stats}
}

func (in *input) write(pcm []int16) error { return in.c.Write(pcm) }

// fill feeds silence for the audio Twilio has not delivered (see voice.ClockedInput).
func (in *input) fill(now time.Time) { in.stats.SilenceFeeds.Add(int64(in.c.Fill(now))) }
