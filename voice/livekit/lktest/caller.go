// Package lktest is a caller for tests and benchmarks of agents in LiveKit rooms: a Go
// participant that joins a room like a browser does, speaks recorded audio into its
// microphone track in real time, and listens to the agent, logging when its audio
// arrives and how loud it is.
//
// Times are taken on the caller's side of the room, which is where a person hears the
// agent: latency and barge-in figures measured here include the network, LiveKit's
// forwarding, both Opus codecs and both tracks' queues.
package lktest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/livekit/media-sdk"
	"github.com/livekit/protocol/auth"
	lkproto "github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	lkmedia "github.com/livekit/server-sdk-go/v2/pkg/media"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/parleyhq/parley/voice/audio"
)

// Rate is the caller's audio rate in both directions.
const Rate = 48000

// SpeechDBFS is the level above which a received chunk counts as the agent speaking.
// The agent's silence is digital zeros through Opus (well under -70 dBFS) and speech
// sits around -20 to -30, so -50 separates them with a wide margin on both sides.
const SpeechDBFS = -50

// Token mints a token for a participant in room. agent marks an agent participant.
func Token(apiKey, apiSecret, room, identity string, agent bool) (string, error) {
	at := auth.NewAccessToken(apiKey, apiSecret)
	at.SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room, Agent: agent}).
		SetIdentity(identity).SetName(identity).SetValidFor(time.Hour)
	if agent {
		at.SetKind(lkproto.ParticipantInfo_AGENT)
	}
	return at.ToJWT()
}

// Chunk is a piece of the agent's audio as it arrived.
type Chunk struct {
	At   time.Time
	N    int     // samples
	DBFS float64 // RMS level
}

// Speech reports whether the chunk is agent speech rather than silence.
func (c Chunk) Speech() bool { return c.DBFS > SpeechDBFS }

// Caller is one participant on the caller's side.
type Caller struct {
	room  *lksdk.Room
	track *BoundTrack // the microphone, unless dtx
	// dtx, when set, is the microphone instead: a browser's with Opus DTX, which
	// sends packets only while there is something to say.
	dtx *dtxMic

	mu      sync.Mutex
	chunks  []Chunk
	changed chan struct{}
	remote  *lkmedia.PCMRemoteTrack
	// queuedUntil: when the audio written so far will have been played into the
	// track (the track plays its queue in real time).
	queuedUntil time.Time
}

// Join connects a caller with token and publishes its microphone, which sends audio
// all the time (silence when there is nothing to say).
func Join(ctx context.Context, url, token string) (*Caller, error) {
	return join(ctx, url, token, false)
}

// JoinDTX is Join with a microphone that sends packets only for what Say gives it and
// nothing in between, as a browser's Opus DTX does in silence (or a muted microphone).
func JoinDTX(ctx context.Context, url, token string) (*Caller, error) {
	return join(ctx, url, token, true)
}

func join(ctx context.Context, url, token string, dtx bool) (*Caller, error) {
	c := &Caller{changed: make(chan struct{})}
	var track webrtc.TrackLocal
	var ready <-chan struct{}
	if dtx {
		m, err := newDTXMic()
		if err != nil {
			return nil, err
		}
		c.dtx, track, ready = m, dtxTrack{m.track, m}, m.ready
	} else {
		bt, err := NewBoundTrack(Rate, protoLogger.GetDiscardLogger())
		if err != nil {
			return nil, err
		}
		c.track, track, ready = bt, bt, bt.Ready()
	}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(t *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, p *lksdk.RemoteParticipant) {
		if t.Kind() != webrtc.RTPCodecTypeAudio {
			return
		}
		rt, err := lkmedia.NewPCMRemoteTrack(t, &listener{c: c}, lkmedia.WithTargetSampleRate(Rate))
		if err != nil {
			return
		}
		c.mu.Lock()
		old := c.remote
		c.remote = rt
		c.mu.Unlock()
		if old != nil {
			old.Close()
		}
	}
	room := lksdk.NewRoom(cb)
	room.SetLogger(protoLogger.GetDiscardLogger())
	if err := room.JoinWithContextAndToken(ctx, url, token, lksdk.WithLogger(protoLogger.GetDiscardLogger()),
		lksdk.WithConnectTimeout(20*time.Second)); err != nil {
		c.closeMic()
		return nil, err
	}
	if _, err := room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "microphone", Source: lkproto.TrackSource_MICROPHONE}); err != nil {
		room.Disconnect()
		c.closeMic()
		return nil, err
	}
	c.room = room
	select {
	case <-ready:
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
	return c, nil
}

// Room is the caller's room.
func (c *Caller) Room() *lksdk.Room { return c.room }

// Say queues samples (mono, at Rate) on the microphone. The track plays them in real
// time; Say returns at once with the moment the first sample goes out, which is the
// moment the agent could first hear it.
func (c *Caller) Say(samples []int16) time.Time {
	now := time.Now()
	c.mu.Lock()
	start := now
	if c.queuedUntil.After(now) {
		start = c.queuedUntil
	}
	c.queuedUntil = start.Add(time.Duration(len(samples)) * time.Second / Rate)
	c.mu.Unlock()
	if c.dtx != nil {
		c.dtx.say(samples, start)
		return start
	}
	// WriteSample copies; the track sends 10 ms per tick.
	c.track.WriteSample(samples)
	return start
}

// SpeakingUntil is when the audio queued by Say will have been sent.
func (c *Caller) SpeakingUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queuedUntil
}

// Chunks returns a copy of everything heard so far.
func (c *Caller) Chunks() []Chunk {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Chunk(nil), c.chunks...)
}

// FirstSpeech returns the arrival time of the first speech chunk at or after from.
func (c *Caller) FirstSpeech(from time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.chunks {
		if !ch.At.Before(from) && ch.Speech() {
			return ch.At, true
		}
	}
	return time.Time{}, false
}

// SpeechEnd returns when the agent's speech at or after from stopped, once it has
// stayed stopped for at least quiet: the arrival of the last speech chunk before the
// silence plus its length. Silence is the absence of speech chunks, whether silent
// chunks arrive or nothing does (an agent sends nothing while it is silent, as Opus
// DTX does). Until speech has come at or after from, it has not ended.
func (c *Caller) SpeechEnd(from time.Time, quiet time.Duration) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var end time.Time
	for _, ch := range c.chunks {
		if ch.At.Before(from) || !ch.Speech() {
			continue
		}
		if !end.IsZero() && ch.At.Sub(end) >= quiet {
			return end, true // a silence of quiet before this chunk
		}
		end = ch.At.Add(time.Duration(ch.N) * time.Second / Rate)
	}
	if !end.IsZero() && time.Since(end) >= quiet {
		return end, true
	}
	return time.Time{}, false
}

// WaitSpeech waits until speech arrives at or after from, and returns when.
func (c *Caller) WaitSpeech(ctx context.Context, from time.Time) (time.Time, error) {
	return c.wait(ctx, func() (time.Time, bool) { return c.FirstSpeech(from) })
}

// WaitSilence waits until the agent has been silent for quiet after from, and returns
// when the silence began.
func (c *Caller) WaitSilence(ctx context.Context, from time.Time, quiet time.Duration) (time.Time, error) {
	return c.wait(ctx, func() (time.Time, bool) { return c.SpeechEnd(from, quiet) })
}

func (c *Caller) wait(ctx context.Context, cond func() (time.Time, bool)) (time.Time, error) {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if t, ok := cond(); ok {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("lktest: %w", ctx.Err())
		case <-ch:
		case <-time.After(10 * time.Millisecond): // silence sends no chunks
		}
	}
}

// Close leaves the room.
func (c *Caller) Close() {
	c.mu.Lock()
	rt := c.remote
	c.remote = nil
	c.mu.Unlock()
	if rt != nil {
		rt.Close()
	}
	if c.room != nil {
		c.room.Disconnect()
	}
	c.closeMic()
}

func (c *Caller) closeMic() {
	if c.dtx != nil {
		c.dtx.close()
	} else {
		c.track.Close()
	}
}

// dtxMic sends Opus packets (20 ms, complexity 1) paced in real time for the audio it
// is given, and nothing otherwise.
type dtxMic struct {
	track *webrtc.TrackLocalStaticSample
	ready chan struct{}
	once  sync.Once
	mu    sync.Mutex // one utterance at a time, in order
	quit  chan struct{}
	wg    sync.WaitGroup
}

func newDTXMic() (*dtxMic, error) {
	tr, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "microphone", "caller")
	if err != nil {
		return nil, err
	}
	return &dtxMic{track: tr, ready: make(chan struct{}), quit: make(chan struct{})}, nil
}

// dtxTrack is the published microphone: it reports when WebRTC binds it.
type dtxTrack struct {
	*webrtc.TrackLocalStaticSample
	m *dtxMic
}

func (t dtxTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	p, err := t.TrackLocalStaticSample.Bind(ctx)
	if err == nil {
		t.m.once.Do(func() { close(t.m.ready) })
	}
	return p, err
}

// say encodes samples and sends the packets from start on, 20 ms apart.
func (m *dtxMic) say(samples []int16, start time.Time) {
	var packets [][]byte
	enc, err := audio.NewOpusEncoder(func(p []byte) error {
		packets = append(packets, append([]byte(nil), p...))
		return nil
	})
	if err != nil {
		return
	}
	enc.WriteFrame(audio.Frame{Samples: samples, Rate: Rate})
	enc.Close()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, p := range packets {
			select {
			case <-time.After(time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond))):
			case <-m.quit:
				return
			}
			m.track.WriteSample(pionmedia.Sample{Data: p, Duration: 20 * time.Millisecond})
		}
	}()
}

func (m *dtxMic) close() {
	select {
	case <-m.quit:
	default:
		close(m.quit)
	}
	m.wg.Wait()
}

// listener logs the agent's audio as it arrives.
type listener struct{ c *Caller }

func (l *listener) WriteSample(pcm media.PCM16Sample) error {
	ch := Chunk{At: time.Now(), N: len(pcm), DBFS: DBFS(pcm)}
	l.c.mu.Lock()
	l.c.chunks = append(l.c.chunks, ch)
	close(l.c.changed)
	l.c.changed = make(chan struct{})
	l.c.mu.Unlock()
	return nil
}

func (l *listener) Close() error { return nil }

// DBFS is audio.DBFS, the level a chunk is judged by.
func DBFS(samples []int16) float64 { return audio.DBFS(samples) }

// LoadSpeech reads a WAV recording at the caller's rate.
func LoadSpeech(path string) ([]int16, error) { return audio.ReadWAVFileAt(path, Rate) }

// Silence is d of digital silence at the caller's rate.
func Silence(d time.Duration) []int16 { return make([]int16, int(int64(d)*Rate/int64(time.Second))) }

// BoundTrack is a media.PCMLocalTrack that says when WebRTC has bound it to a sender:
// before that, PCMLocalTrack silently drops whatever is written to it, so a caller that
// started talking too early would lose its first words.
type BoundTrack struct {
	*lkmedia.PCMLocalTrack
	once  sync.Once
	ready chan struct{}
}

// NewBoundTrack makes a mono PCM track taking samples at rate.
func NewBoundTrack(rate int, log protoLogger.Logger) (*BoundTrack, error) {
	t, err := lkmedia.NewPCMLocalTrack(rate, 1, log)
	if err != nil {
		return nil, err
	}
	return &BoundTrack{PCMLocalTrack: t, ready: make(chan struct{})}, nil
}

// Bind implements webrtc.TrackLocal.
func (t *BoundTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	p, err := t.PCMLocalTrack.Bind(ctx)
	if err == nil {
		t.once.Do(func() { close(t.ready) })
	}
	return p, err
}

// Ready is closed once the track is bound and written samples are sent.
func (t *BoundTrack) Ready() <-chan struct{} { return t.ready }
