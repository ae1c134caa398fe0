package livekit

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/parleyhq/parley/voice/audio"
)

// VoiceTrack publishes the agent's voice: each 20 ms frame the engine writes is
// Opus-encoded and sent as one RTP packet at once, on the engine's own real-time
// pacing; while the agent is silent nothing is sent.
//
// Why not media.PCMLocalTrack, which the SDK offers for this: measured at 40 rooms
// (bench/lkbench, CPU profile of the agent), it took two thirds of the worker's CPU. It
// runs a 10 ms ticker per room that encodes, silence included, 100 frames a second at
// libopus' default complexity (about 130 µs a frame on this machine), so a room's
// voice cost 12.5 ms of CPU a second whether the agent spoke or not, and 100 rooms
// needed more than a core for it alone. Here an agent's voice costs one complexity-1
// encode per 20 ms of speech (about 40 µs: voice/audio.OpusEncoderConfig tells the
// story), no goroutine and no timer of its own, and nothing in silence, which is most
// of a call. It also has no queue: the engine's playout is the only buffer, so a
// barge-in stops the agent's voice at the next frame without a queue to clear.
//
// Silence is sent the way Opus DTX sends it: packets stop, and the next talk spurt's
// first packet carries the RTP marker bit and a timestamp advanced by the wall-clock
// time that passed, so receivers' jitter buffers play it on time rather than treating
// the gap as delay. Sequence numbers run on without a gap (nothing was lost).
type VoiceTrack struct {
	*webrtc.TrackLocalStaticRTP

	mu       sync.Mutex
	enc      *audio.OpusEncoder
	pkt      rtp.Packet
	started  bool
	lastSent time.Time
	now      func() time.Time
	err      error

	once  sync.Once
	ready chan struct{}
}

// voiceClock is the RTP clock rate of Opus (always 48 kHz on the wire).
const voiceClock = 48000

// samplesPerPacket is one 20 ms frame at the RTP clock.
const samplesPerPacket = voiceClock / 50

// NewVoiceTrack makes the agent's voice track (mono Opus, 48 kHz).
func NewVoiceTrack() (*VoiceTrack, error) {
	tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: voiceClock, Channels: 2,
		SDPFmtpLine: "minptime=10;useinbandfec=1",
	}, "agent-voice", "agent")
	if err != nil {
		return nil, err
	}
	t := &VoiceTrack{TrackLocalStaticRTP: tr, now: time.Now, ready: make(chan struct{})}
	t.pkt.Header = rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32()}
	t.enc, err = audio.NewOpusEncoder(t.send)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Bind implements webrtc.TrackLocal.
func (t *VoiceTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	p, err := t.TrackLocalStaticRTP.Bind(ctx)
	if err == nil {
		t.once.Do(func() { close(t.ready) })
	}
	return p, err
}

// Ready is closed once WebRTC has bound the track to a sender: packets written before
// that go nowhere.
func (t *VoiceTrack) Ready() <-chan struct{} { return t.ready }

// WriteFrame encodes and sends f (48 kHz mono; the engine writes 20 ms frames).
func (t *VoiceTrack) WriteFrame(f audio.Frame) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.enc.WriteFrame(f)
}

// send packetises one encoded 20 ms frame. Called by the encoder with t.mu held.
func (t *VoiceTrack) send(payload []byte) error {
	now := t.now()
	h := &t.pkt.Header
	h.Marker = false
	switch {
	case !t.started:
		t.started, h.Marker = true, true
	default:
		h.SequenceNumber++
		gap := now.Sub(t.lastSent)
		// Within a talk spurt frames come every 20 ms; a gap of more than a frame and
		// a half is silence (or a stall), and the timestamp follows the clock.
		if gap > 30*time.Millisecond {
			frames := uint32((gap + 10*time.Millisecond) / (20 * time.Millisecond))
			h.Timestamp += frames * samplesPerPacket
			h.Marker = true
		} else {
			h.Timestamp += samplesPerPacket
		}
	}
	t.lastSent = now
	t.pkt.Payload = payload
	// WriteRTP fills in each binding's SSRC and payload type; the packet is marshalled
	// before it returns, so the payload buffer may be reused.
	return t.TrackLocalStaticRTP.WriteRTP(&t.pkt)
}

// Close releases the encoder.
func (t *VoiceTrack) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.enc.Close()
}
