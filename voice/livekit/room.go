// Package livekit attaches the voice engine to a LiveKit room: the agent joins as a
// participant, hears the caller's microphone track and speaks on a track of its own.
//
// One Room carries one call. The flow:
//
//   - Join connects with the agent's token (from a dispatch job) and publishes the
//     agent's voice, a VoiceTrack: the engine's 20 ms frames Opus-encoded and sent as
//     they come (see VoiceTrack for why not media.PCMLocalTrack). An inbound SIP call is
//     only answered once this track exists, so it is published before anything else.
//   - Run waits for the caller (the first participant that is not an agent and
//     publishes a microphone), starts the session, and pipes the caller's track through a
//     media.PCMRemoteTrack (Opus decoded at 48 kHz) into Session.WriteFrame, which
//     resamples to the engine's 16 kHz.
//   - Barge-in: the engine pauses its playout at the caller's speech onset; the track
//     has no queue of its own, so the agent's voice stops at the next 20 ms frame.
//   - Transcripts go to the room as LiveKit text streams on the lk.transcription topic,
//     the convention LiveKit's client components render as live captions.
//   - DTMF: LiveKit SIP turns the phone's key presses (RFC 4733 events, or in-band
//     tones) into SipDTMF data packets, one per key; those from the caller go to
//     Session.DTMF. The other way, a SendDTMF event from the engine is published as a
//     SipDTMF packet to the caller, which LiveKit SIP plays on the line as RFC 4733
//     events (or tones, if the phone negotiated no telephone-event). Run offers the
//     model send_dtmf (Session.SetDTMFOut) when the caller is a SIP participant: a
//     browser has no keypad to send to.
//   - The call ends when the caller leaves, the room closes or the agent is removed
//     (POST /v1/calls/{id}/end deletes the room), or the session ends itself (end_call,
//     silence, maximum duration); Run reports which.
//
// The caller's audio reaches the engine on the wall clock. A browser's microphone
// sends Opus with DTX (a packet every 400 ms in silence), a muted one sends nothing,
// and packets get lost; the engine measures pauses in audio, so without help it would
// wait seconds to hear that the caller stopped talking. A 20 ms tick fills whatever the
// track has not delivered, beyond a 60 ms allowance for jitter, with silence.
package livekit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/livekit/media-sdk"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	lkmedia "github.com/livekit/server-sdk-go/v2/pkg/media"
	"github.com/pion/webrtc/v4"

	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/audio"
)

// Config configures a Room.
type Config struct {
	// URL of the LiveKit server (ws:// or wss://) and the agent's access token.
	URL, Token string
	// CallerWait bounds the wait for a caller to join and publish a microphone. A
	// browser joins within a second or two of getting its token and a SIP call is in
	// the room before the agent is dispatched, so a minute means nobody is coming.
	// Default 60 s.
	CallerWait time.Duration
	// DisableCaptions stops transcripts from being published to the room.
	DisableCaptions bool
	// OnCaller, if set, is called when the caller has joined and can be heard, just
	// before the session starts (the call record moves to in progress here). An error
	// ends Run with that error, without starting the session.
	OnCaller func(identity, kind string) error
	// Logger; default discards.
	Logger *slog.Logger
}

// Defaults; see Config.
const (
	defaultCallerWait = time.Minute
	// outputRate is the rate of the agent's frames: Opus's own 48 kHz, so the track
	// encodes the engine's frames as they are, with no second resampler.
	outputRate = lkmedia.DefaultOpusSampleRate
	// CaptionTopic is the text-stream topic LiveKit's client components show as live
	// transcriptions.
	CaptionTopic = "lk.transcription"
	// joinTimeout bounds one connection attempt (signalling, ICE, DTLS). The SDK's
	// 5 s default is tight for a server busy with a burst of new rooms.
	joinTimeout  = 15 * time.Second
	joinAttempts = 3
	// subscribeWait bounds the wait for the caller to subscribe to the agent's voice.
	subscribeWait = 5 * time.Second
)

// Outcome says how a call in a room ended.
type Outcome string

const (
	// CallerLeft: the caller hung up or closed the page.
	CallerLeft Outcome = "caller_left"
	// RoomClosed: the room was deleted (an API end) or the agent removed from it.
	RoomClosed Outcome = "room_closed"
	// Disconnected: the agent lost its connection to LiveKit for good.
	Disconnected Outcome = "disconnected"
	// SessionEnded: the engine ended the call (end_call, transfer, silence, maximum
	// duration, a provider failure); see Result.EndReason.
	SessionEnded Outcome = "session_ended"
	// NoCaller: nobody joined within CallerWait.
	NoCaller Outcome = "no_caller"
	// Cancelled: Run's context ended (the worker is stopping or the job was
	// terminated).
	Cancelled Outcome = "cancelled"
)

// Result reports how Run ended.
type Result struct {
	Outcome Outcome
	// Caller is the identity of the caller, if one joined.
	Caller string
	// CallerKind is "standard" (a browser), "sip" and so on.
	CallerKind string
	// EndReason is the engine's reason (EndStopped unless the session ended itself).
	EndReason voice.EndReason
}

// Room is the agent's presence in one LiveKit room.
type Room struct {
	cfg      Config
	log      *slog.Logger
	room     *lksdk.Room
	track    *VoiceTrack
	trackSID string

	// events receives what LiveKit's callbacks report, for Run's loop.
	events chan roomEvent

	mu       sync.Mutex
	caller   *lksdk.RemoteParticipant
	input    *lkmedia.PCMRemoteTrack
	inputSID string
	session  *voice.Session
	in       *input // the session's input timeline, from the first caller track on

	closeOnce sync.Once
	// heard is closed when someone (the caller) has subscribed to the agent's voice.
	heard     chan struct{}
	heardOnce sync.Once
	stats     Stats
	captions  *captions

	// dtmfQ carries SendDTMF digits to sendDTMF, off the engine's control goroutine;
	// dtmfMu guards it against a send after Close.
	dtmfMu     sync.Mutex
	dtmfQ      chan string
	dtmfClosed bool
	dtmfDone   chan struct{}
}

// Stats counts what happened in the room.
type Stats struct {
	DTMFIn       atomic.Int64 // caller key presses handed to the session
	DTMFOut      atomic.Int64 // SipDTMF packets published (one per SendDTMF)
	Reconnects   atomic.Int64
	InputFrames  atomic.Int64 // caller audio chunks handed to the session
	SilenceFeeds atomic.Int64 // 20 ms frames of silence filled in for missing caller audio
}

type roomEventKind int

const (
	evParticipant roomEventKind = iota // a participant joined or published
	evTrack                            // a track was subscribed
	evParticipantLeft
	evDisconnected
	evPublished
)

type roomEvent struct {
	kind     roomEventKind
	p        *lksdk.RemoteParticipant
	track    *webrtc.TrackRemote
	pub      *lksdk.RemoteTrackPublication
	reason   lksdk.DisconnectionReason
	identity string
}

// Join connects to the room and publishes the agent's voice track.
func Join(ctx context.Context, cfg Config) (*Room, error) {
	if cfg.URL == "" || cfg.Token == "" {
		return nil, errors.New("livekit: URL and token are required")
	}
	if cfg.CallerWait == 0 {
		cfg.CallerWait = defaultCallerWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Room{cfg: cfg, log: cfg.Logger, events: make(chan roomEvent, 64), heard: make(chan struct{})}
	lkLog := protoLogger.LogRLogger(logr.FromSlogHandler(cfg.Logger.Handler()))

	track, err := NewVoiceTrack()
	if err != nil {
		return nil, fmt.Errorf("livekit: agent track: %w", err)
	}
	r.track = track

	cb := lksdk.NewRoomCallback()
	cb.OnParticipantConnected = func(p *lksdk.RemoteParticipant) { r.post(roomEvent{kind: evParticipant, p: p}) }
	cb.OnParticipantDisconnected = func(p *lksdk.RemoteParticipant) {
		r.post(roomEvent{kind: evParticipantLeft, p: p, identity: p.Identity()})
	}
	cb.OnTrackPublished = func(pub *lksdk.RemoteTrackPublication, p *lksdk.RemoteParticipant) {
		// Auto-subscribe is off: a microphone published after we saw its participant
		// must be subscribed to explicitly.
		r.post(roomEvent{kind: evPublished, p: p, pub: pub})
	}
	cb.OnTrackSubscribed = func(t *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, p *lksdk.RemoteParticipant) {
		r.post(roomEvent{kind: evTrack, p: p, track: t, pub: pub})
	}
	cb.OnLocalTrackSubscribed = func(pub *lksdk.LocalTrackPublication, lp *lksdk.LocalParticipant) {
		r.heardOnce.Do(func() { close(r.heard) })
	}
	cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		if d, ok := data.(*livekit.SipDTMF); ok {
			r.dtmfIn(d, params.SenderIdentity)
		}
	}
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		r.post(roomEvent{kind: evDisconnected, reason: reason})
	}
	cb.OnReconnecting = func() {
		r.log.Warn("livekit: connection lost, reconnecting")
	}
	cb.OnReconnected = func() {
		r.stats.Reconnects.Add(1)
		r.log.Info("livekit: reconnected")
	}

	// Joining can fail on a busy server or network (a signalling race, an ICE
	// timeout); the job's token stays valid for an hour, so a couple of retries cost
	// the caller a second or two instead of the call.
	var room *lksdk.Room
	for attempt := 1; ; attempt++ {
		room = lksdk.NewRoom(cb)
		room.SetLogger(lkLog)
		err = room.JoinWithContextAndToken(ctx, cfg.URL, cfg.Token,
			lksdk.WithAutoSubscribe(false),
			lksdk.WithLogger(lkLog),
			lksdk.WithConnectTimeout(joinTimeout),
		)
		if err == nil {
			break
		}
		room.Disconnect()
		if attempt == joinAttempts || ctx.Err() != nil {
			track.Close()
			return nil, fmt.Errorf("livekit: join: %w", err)
		}
		r.log.Warn("livekit: join failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	// The agent's voice goes up at once: an inbound SIP call is answered only once
	// the agent has a track.
	pub, err := room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "agent-voice", Source: livekit.TrackSource_MICROPHONE})
	if err != nil {
		room.Disconnect()
		track.Close()
		return nil, fmt.Errorf("livekit: publish: %w", err)
	}
	r.trackSID = pub.SID()
	r.room = room
	// sendDTMF: digits are few and LiveKit's reliable data channel keeps them in order;
	// 16 pending SendDTMF events is more than a model makes in a turn.
	r.dtmfQ, r.dtmfDone = make(chan string, 16), make(chan struct{})
	go r.sendDTMF()
	return r, nil
}

// rfc4733Keys maps an RFC 4733 event code (SipDTMF.Code) to its key.
const rfc4733Keys = "0123456789*#ABCD"

// dtmfIn hands a key press from the caller to the session. LiveKit SIP sends one
// packet per key, with both the key and its RFC 4733 code; the code is the fallback
// for a sender that sets only it.
func (r *Room) dtmfIn(d *livekit.SipDTMF, sender string) {
	r.mu.Lock()
	s, caller := r.session, r.caller
	r.mu.Unlock()
	if s == nil || caller == nil || caller.Identity() != sender {
		return // only the caller's keys; never our own or a supervisor's
	}
	digits := d.GetDigit()
	if digits == "" && d.GetCode() < uint32(len(rfc4733Keys)) {
		digits = string(rfc4733Keys[d.GetCode()])
	}
	if digits == "" {
		return
	}
	r.stats.DTMFIn.Add(1)
	s.DTMF(digits)
}

// queueDTMF hands digits of a SendDTMF event to sendDTMF; it never blocks the
// engine's control goroutine.
func (r *Room) queueDTMF(digits string) {
	r.dtmfMu.Lock()
	defer r.dtmfMu.Unlock()
	if r.dtmfClosed {
		return
	}
	select {
	case r.dtmfQ <- digits:
	default:
		r.log.Warn("livekit: DTMF dropped: too many pending", "digits", digits)
	}
}

// sendDTMF publishes the agent's key presses to the caller as SipDTMF packets, which
// LiveKit SIP sends on the line (RFC 4733).
func (r *Room) sendDTMF() {
	defer close(r.dtmfDone)
	for digits := range r.dtmfQ {
		r.mu.Lock()
		caller := r.caller
		r.mu.Unlock()
		if caller == nil {
			continue
		}
		err := r.room.LocalParticipant.PublishDataPacket(&livekit.SipDTMF{Digit: digits},
			lksdk.WithDataPublishReliable(true),
			lksdk.WithDataPublishDestination([]string{caller.Identity()}))
		if err != nil {
			r.log.Warn("livekit: send DTMF", "digits", digits, "err", err)
			continue
		}
		r.stats.DTMFOut.Add(1)
	}
}

// post hands an SDK callback to Run's loop. Callbacks come from the SDK's goroutines
// and must not block it; the buffer holds far more than a call produces between two
// turns of the loop, and a full buffer drops a mute flip rather than stall signalling.
func (r *Room) post(e roomEvent) {
	select {
	case r.events <- e:
	default:
		r.log.Warn("livekit: room event dropped", "kind", int(e.kind))
	}
}

// Output is where the engine writes the agent's voice (Config.Output).
func (r *Room) Output() audio.Writer { return r.track }

// OutputRate is the rate the engine must write at (Config.OutputRate).
func (r *Room) OutputRate() int { return outputRate }

// RoomName is the name of the room.
func (r *Room) RoomName() string { return r.room.Name() }

// Identity is the agent's participant identity.
func (r *Room) Identity() string { return r.room.LocalParticipant.Identity() }

// Stats returns the room's counters.
func (r *Room) Stats() *Stats { return &r.stats }

// Run waits for the caller, starts s and holds the call until it ends. s must be
// configured with Output() and OutputRate(), and not yet started. Run stops s before
// returning; it does not leave the room (Close does).
func (r *Room) Run(ctx context.Context, s *voice.Session) (res Result, err error) {
	r.mu.Lock()
	r.session = s
	r.mu.Unlock()
	defer func() {
		s.Stop()
		r.detachInput()
		if res.EndReason == "" {
			res.EndReason = s.EndReason()
		}
	}()

	// Participants already in the room (a SIP caller is there before the agent).
	for _, p := range r.room.GetRemoteParticipants() {
		r.post(roomEvent{kind: evParticipant, p: p})
	}
	wait := time.NewTimer(r.cfg.CallerWait)
	defer wait.Stop()
	started := false
	// tick fills gaps in the caller's audio once the conversation has started.
	var tick <-chan time.Time

	for {
		var done <-chan struct{}
		if started {
			done = s.Done()
		}
		select {
		case <-ctx.Done():
			res.Outcome = Cancelled
			return res, nil
		case <-wait.C:
			if !started {
				res.Outcome = NoCaller
				return res, nil
			}
		case <-done:
			res.Outcome = SessionEnded
			return res, nil
		case now := <-tick:
			r.in.fill(now)
		case e := <-r.events:
			switch e.kind {
			case evParticipant:
				if r.adopt(e.p) {
					res.Caller, res.CallerKind = e.p.Identity(), kindName(e.p.Kind())
				}
			case evTrack:
				if !r.isCaller(e.p) {
					if e.track.Kind() != webrtc.RTPCodecTypeAudio || !r.adopt(e.p) {
						continue
					}
					res.Caller, res.CallerKind = e.p.Identity(), kindName(e.p.Kind())
				}
				if e.track.Kind() != webrtc.RTPCodecTypeAudio {
					continue
				}
				if !started {
					// Wait for our track to be bound, so the greeting is not dropped.
					select {
					case <-r.track.Ready():
					case <-time.After(10 * time.Second):
						return res, errors.New("livekit: the agent's track was never bound")
					case <-ctx.Done():
						res.Outcome = Cancelled
						return res, nil
					}
					// And for the caller to be subscribed to it: audio sent before
					// that is lost, and a greeting would be cut or missed entirely.
					// A browser subscribes within a few hundred milliseconds of
					// publishing; past subscribeWait we talk anyway.
					select {
					case <-r.heard:
					case <-time.After(subscribeWait):
						r.log.Warn("livekit: the caller has not subscribed to the agent's voice; starting anyway")
					case <-ctx.Done():
						res.Outcome = Cancelled
						return res, nil
					}
					if r.cfg.OnCaller != nil {
						if err := r.cfg.OnCaller(res.Caller, res.CallerKind); err != nil {
							return res, err
						}
					}
					if res.CallerKind == "sip" {
						// A phone line: the agent can press keys on it.
						if err := s.SetDTMFOut(true); err != nil {
							r.log.Warn("livekit: enable send_dtmf", "err", err)
						}
					}
					// The caller can hear us and we can hear them: start talking.
					if err := s.Start(ctx); err != nil {
						return res, fmt.Errorf("livekit: start session: %w", err)
					}
					started = true
					r.mu.Lock()
					r.in = newInput(s, &r.stats)
					r.mu.Unlock()
					ticker := time.NewTicker(voice.FillTick)
					defer ticker.Stop()
					tick = ticker.C
				}
				if err := r.attachInput(e.track, e.pub); err != nil {
					r.log.Warn("livekit: caller track", "err", err)
					continue
				}
			case evPublished:
				if r.isCaller(e.p) {
					r.subscribeMic(e.p)
				} else if r.adopt(e.p) {
					res.Caller, res.CallerKind = e.p.Identity(), kindName(e.p.Kind())
				}
			case evParticipantLeft:
				if r.isCaller(e.p) {
					res.Outcome = CallerLeft
					// A deleted room disconnects everyone; the caller's departure may
					// be reported before our own.
					switch e.p.DisconnectReason() {
					case livekit.DisconnectReason_ROOM_DELETED, livekit.DisconnectReason_ROOM_CLOSED:
						res.Outcome = RoomClosed
					}
					return res, nil
				}
			case evDisconnected:
				// The SDK names only some of the server's reasons (a deleted room is
				// "other reasons"); anything but a failed connection means the server
				// closed the room or removed the agent on purpose.
				res.Outcome = RoomClosed
				if e.reason == lksdk.Failed {
					res.Outcome = Disconnected
				}
				return res, nil
			}
		}
	}
}

// adopt makes p the caller if there is none yet and p is not an agent, and subscribes
// to its microphone. It reports whether p became the caller.
func (r *Room) adopt(p *lksdk.RemoteParticipant) bool {
	if p == nil || p.Kind() == lksdk.ParticipantAgent {
		return false
	}
	r.mu.Lock()
	if r.caller != nil {
		r.mu.Unlock()
		return false
	}
	r.caller = p
	r.mu.Unlock()
	r.subscribeMic(p)
	return true
}

// subscribeMic subscribes to p's microphone (auto-subscribe is off: the agent hears
// only its caller, not other agents or a supervisor's track).
func (r *Room) subscribeMic(p *lksdk.RemoteParticipant) {
	for _, pub := range p.TrackPublications() {
		rp, ok := pub.(*lksdk.RemoteTrackPublication)
		if !ok || rp.Kind() != lksdk.TrackKindAudio {
			continue
		}
		if src := rp.Source(); src != livekit.TrackSource_MICROPHONE && src != livekit.TrackSource_UNKNOWN {
			continue
		}
		if !rp.IsSubscribed() {
			if err := rp.SetSubscribed(true); err != nil {
				r.log.Warn("livekit: subscribe", "track", rp.SID(), "err", err)
			}
		}
	}
}

func (r *Room) isCaller(p *lksdk.RemoteParticipant) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return p != nil && r.caller != nil && r.caller.Identity() == p.Identity()
}

// attachInput pipes the caller's track into the session, replacing any earlier track.
func (r *Room) attachInput(t *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication) error {
	r.mu.Lock()
	if r.inputSID == pub.SID() && r.input != nil {
		r.mu.Unlock()
		return nil
	}
	old := r.input
	r.input, r.inputSID = nil, ""
	w := r.in
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	in, err := lkmedia.NewPCMRemoteTrack(t, w, lkmedia.WithTargetSampleRate(outputRate),
		lkmedia.WithLogger(protoLogger.LogRLogger(logr.FromSlogHandler(r.log.Handler()))))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.input, r.inputSID = in, pub.SID()
	r.mu.Unlock()
	return nil
}

func (r *Room) detachInput() {
	r.mu.Lock()
	in := r.input
	r.input, r.inputSID = nil, ""
	r.mu.Unlock()
	if in != nil {
		in.Close()
	}
}

// input is the caller's track into the session's clocked input (voice.ClockedInput):
// the PCMRemoteTrack writes decoded 48 kHz chunks, one per Opus packet.
type input struct {
	c     *voice.ClockedInput
	stats *Stats
}

func newInput(s *voice.Session, stats *Stats) *input {
	return &input{c: voice.NewClockedInput(s, outputRate), stats: stats}
}

// WriteSample implements the PCMRemoteTrack writer.
func (in *input) WriteSample(pcm media.PCM16Sample) error {
	in.stats.InputFrames.Add(1)
	return in.c.Write(pcm)
}

func (in *input) Close() error { return nil }

// fill feeds silence for what the track has not delivered (see voice.ClockedInput).
func (in *input) fill(now time.Time) {
	if in != nil {
		in.stats.SilenceFeeds.Add(int64(in.c.Fill(now)))
	}
}

// Events wraps next (may be nil) with the room's side of the engine's events: every
// final transcript, and the caller's interim ones, go to the room as text streams
// (unless DisableCaptions), and SendDTMF events go to the caller as SipDTMF packets.
func (r *Room) Events(next voice.EventSink) voice.EventSink {
	next = &dtmfOut{r: r, next: next}
	if r.cfg.DisableCaptions {
		return next
	}
	c := &captions{r: r, next: next, queue: make(chan caption, 256), done: make(chan struct{})}
	r.mu.Lock()
	r.captions = c
	r.mu.Unlock()
	go c.run()
	return c
}

// dtmfOut sends SendDTMF events to the caller and passes every event on.
type dtmfOut struct {
	r    *Room
	next voice.EventSink
}

func (d *dtmfOut) HandleEvent(e voice.Event) {
	if k, ok := e.(*voice.SendDTMF); ok {
		d.r.queueDTMF(k.Digits)
	}
	if d.next != nil {
		d.next.HandleEvent(e)
	}
}

type caption struct {
	speaker voice.Speaker
	text    string
	final   bool
	segment string
}

// captions publishes transcripts off the engine's control goroutine: HandleEvent only
// queues, run sends.
type captions struct {
	r     *Room
	next  voice.EventSink
	queue chan caption
	seq   int
	once  sync.Once
	// mu guards queue against a send after close: the session may emit a last
	// transcript while the room is closing.
	mu     sync.Mutex
	closed bool
	// done is closed when run has sent (or given up on) the last caption.
	done chan struct{}
}

// Caption sending is bounded in time: a text stream's chunks wait for the data channel
// to drain, and a caption still being written when the room disconnects would wait for
// ever (the SDK's writer loops on the closed channel's buffer while holding the lock
// its own close needs). So each caption is written synchronously, and Close lets the
// last ones finish before it disconnects.
const (
	// captionSendTimeout: a caption is a few hundred bytes; on a live connection it
	// leaves in milliseconds. Past a second the data channel is stalled, and a caption
	// is not worth holding the conversation's goroutine.
	captionSendTimeout = time.Second
	// captionDrainTimeout bounds how long Close waits for queued captions.
	captionDrainTimeout = 2 * time.Second
)

func (c *captions) HandleEvent(e voice.Event) {
	if t, ok := e.(*voice.Transcript); ok && !t.Backchannel && t.Text != "" {
		// One segment per user turn (interims update it, the final closes it) and one
		// per agent sentence.
		seg := "user-" + strconv.Itoa(t.Turn)
		if t.Speaker == voice.SpeakerAgent {
			c.seq++
			seg = "agent-" + strconv.Itoa(t.Turn) + "-" + strconv.Itoa(c.seq)
		}
		c.mu.Lock()
		if !c.closed {
			select {
			case c.queue <- caption{speaker: t.Speaker, text: t.Text, final: t.Final || t.Speaker == voice.SpeakerAgent, segment: seg}:
			default: // a stalled data channel must not stall the conversation
			}
		}
		c.mu.Unlock()
	}
	if _, ok := e.(*voice.CallEnded); ok {
		c.close()
	}
	if c.next != nil {
		c.next.HandleEvent(e)
	}
}

// close ends run; captions after it are dropped.
func (c *captions) close() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.queue)
		c.mu.Unlock()
	})
}

func (c *captions) run() {
	defer close(c.done)
	lp := c.r.room.LocalParticipant
	for cp := range c.queue {
		attrs := map[string]string{
			"lk.segment_id":          cp.segment,
			"lk.transcription_final": strconv.FormatBool(cp.final),
			"parley.speaker":         string(cp.speaker),
		}
		if cp.speaker == voice.SpeakerAgent {
			attrs["lk.transcribed_track_id"] = c.r.trackSID
		}
		// SendText's steps, with a wait: one stream per caption, closed once its text
		// is written.
		w := lp.StreamText(lksdk.StreamTextOptions{Topic: CaptionTopic, Attributes: attrs, TotalSize: uint64(len(cp.text))})
		sent := make(chan struct{})
		onDone := func() {
			w.Close()
			close(sent)
		}
		w.Write(cp.text, &onDone)
		t := time.NewTimer(captionSendTimeout)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
}

// Close leaves the room and releases the tracks. Safe to call twice.
func (r *Room) Close() {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		c := r.captions
		r.mu.Unlock()
		if c != nil {
			c.close()
			t := time.NewTimer(captionDrainTimeout)
			select {
			case <-c.done:
			case <-t.C:
			}
			t.Stop()
		}
		r.detachInput()
		r.dtmfMu.Lock()
		r.dtmfClosed = true
		close(r.dtmfQ)
		r.dtmfMu.Unlock()
		<-r.dtmfDone
		r.room.Disconnect()
		r.track.Close()
	})
}

func kindName(k lksdk.ParticipantKind) string {
	switch k {
	case lksdk.ParticipantSIP:
		return "sip"
	case lksdk.ParticipantAgent:
		return "agent"
	case lksdk.ParticipantIngress:
		return "ingress"
	case lksdk.ParticipantEgress:
		return "egress"
	}
	return "standard"
}

// SetSDKLogger routes the LiveKit SDK's own logging (signalling, and pion's WebRTC
// stack, which logs every ICE and DTLS state change at info level) to l. The SDK's
// default writes to stderr, so a process should call this once at start-up, usually
// with a handler at warn level.
func SetSDKLogger(l *slog.Logger) {
	lksdk.SetLogger(protoLogger.LogRLogger(logr.FromSlogHandler(l.Handler())))
}
