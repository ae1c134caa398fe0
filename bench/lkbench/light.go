package main

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/media-sdk"
	lkproto "github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	lkmedia "github.com/livekit/server-sdk-go/v2/pkg/media"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/livekit/lktest"
)

// The light caller is the density mode's default. lktest's caller publishes a
// PCMLocalTrack, which Opus-encodes every 10 ms of every call at libopus' default
// complexity: on a 2-core machine a hundred of them take most of a core, and the
// callers would measure themselves as much as the agents. A light caller sends Opus
// packets encoded once at start-up (the recording, then a -70 dBFS noise floor, 20 ms
// packets as a browser sends), and only decodes what it hears, to find where the
// agent's answers start and end, as lktest does: a chunk louder than lktest.SpeechDBFS
// is speech. What the agent receives is the same kind of stream either way.

// micAudio is the callers' microphone, shared and never written.
type micAudio struct {
	speech, silence [][]byte
	// speechLen is the recording's length: speech ends there (the fixtures are trimmed).
	speechLen time.Duration
}

const micFrame = 20 * time.Millisecond

func encodeMic(speech []int16) (*micAudio, error) {
	m := &micAudio{speechLen: time.Duration(len(speech)) * time.Second / lktest.Rate}
	var err error
	if m.speech, err = encodeOpus(speech); err != nil {
		return nil, err
	}
	noise := make([]int16, lktest.Rate) // 1 s
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = int16(rng.IntN(21) - 10) // about -70 dBFS, a quiet room through a microphone
	}
	m.silence, err = encodeOpus(noise)
	return m, err
}

// encodeOpus encodes 48 kHz audio at complexity 10, as a browser does, in 20 ms packets.
func encodeOpus(pcm []int16) ([][]byte, error) {
	var packets [][]byte
	enc, err := audio.NewOpusEncoderConfig(audio.OpusEncoderConfig{Complexity: 10}, func(p []byte) error {
		packets = append(packets, slices.Clone(p))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := enc.WriteFrame(audio.Frame{Samples: pcm, Rate: lktest.Rate}); err != nil {
		return nil, err
	}
	return packets, enc.Close()
}

// ear listens to the agent: it notes when speech arrives.
type ear struct {
	chunks atomic.Int64 // agent audio heard, in 10 ms units

	mu     sync.Mutex
	opened time.Time // the first chunk of all
	from   time.Time // listening for an answer from here
	first  time.Time // the first speech chunk at or after from
	last   time.Time // the latest speech chunk
}

func (e *ear) WriteSample(pcm media.PCM16Sample) error {
	e.chunks.Add(int64(len(pcm) / (lktest.Rate / 100))) // in 10 ms units
	speech := lktest.DBFS(pcm) > lktest.SpeechDBFS
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.opened.IsZero() {
		e.opened = now
	}
	if !speech {
		return nil
	}
	e.last = now
	if e.first.IsZero() && !now.Before(e.from) {
		e.first = now
	}
	return nil
}

func (e *ear) Close() error { return nil }

// listen starts looking for an answer from t.
func (e *ear) listen(t time.Time) {
	e.mu.Lock()
	e.from, e.first = t, time.Time{}
	e.mu.Unlock()
}

func (e *ear) heard() (opened, first, last time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.opened, e.first, e.last
}

// lightCall is one light caller in room i, until ctx ends.
func lightCall(ctx context.Context, o options, i int, mic *micAudio, st *callerStats) {
	room := roomName(o.run, i)
	tok, err := lktest.Token(o.key, o.secret, room, "caller-"+room, false)
	if err != nil {
		st.joinedRoom(i, false, nil, nil)
		return
	}
	discard := protoLogger.GetDiscardLogger()
	e := &ear{}
	var (
		remoteMu sync.Mutex
		remote   *lkmedia.PCMRemoteTrack
	)
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(t *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		if t.Kind() != webrtc.RTPCodecTypeAudio {
			return
		}
		rt, err := lkmedia.NewPCMRemoteTrack(t, e, lkmedia.WithTargetSampleRate(lktest.Rate), lkmedia.WithLogger(discard))
		if err != nil {
			return
		}
		remoteMu.Lock()
		old := remote
		remote = rt
		remoteMu.Unlock()
		if old != nil {
			old.Close()
		}
	}
	var (
		r     *lksdk.Room
		track *webrtc.TrackLocalStaticSample
	)
	for attempt := 0; attempt < 3; attempt++ {
		track, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "microphone", "caller")
		if err != nil {
			break
		}
		r = lksdk.NewRoom(cb)
		r.SetLogger(discard)
		jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
		err = r.JoinWithContextAndToken(jctx, o.url, tok, lksdk.WithSinglePeerConnection(), lksdk.WithLogger(discard),
			lksdk.WithTrack(track, &lksdk.TrackPublicationOptions{Name: "microphone", Source: lkproto.TrackSource_MICROPHONE}))
		jcancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		sleep(ctx, time.Second)
	}
	if err != nil {
		st.joinedRoom(i, false, nil, nil)
		return
	}
	defer func() {
		remoteMu.Lock()
		rt := remote
		remoteMu.Unlock()
		if rt != nil {
			rt.Close()
		}
		r.Disconnect()
	}()
	var late atomic.Int64
	st.joinedRoom(i, true, e.chunks.Load, late.Load)

	// One packet every 20 ms, in real time: the greeting is awaited in silence, then
	// the recording, silence until the answer has started and ended and the pause has
	// passed, and the recording again. A packet sent more than a frame late counts as
	// late; more than three frames behind, the caller skips ahead (the skipped packets
	// count as late), as a browser's capture would drop audio it could not send.
	const (
		awaitGreeting = iota
		speaking
		answering
	)
	phase := awaitGreeting
	joined := time.Now()
	e.listen(joined)
	var (
		pos, sil    int
		speechStart time.Time
		spoke       time.Time // end of the caller's speech as sent
		recorded    bool      // this turn's latency is taken
		pauseUntil  time.Time
		start       = time.Now()
		k           int64
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		due := start.Add(time.Duration(k) * micFrame)
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		if behind := now.Sub(due); behind > 3*micFrame {
			skip := int64(behind / micFrame)
			late.Add(skip)
			k += skip
			continue
		} else if behind > micFrame {
			late.Add(1)
		}
		var pkt []byte
		if phase == speaking {
			if pos == 0 {
				speechStart = now
				// From the start of the speech: an answer before its end would be a turn
				// taken too early, and shows as a negative latency.
				e.listen(speechStart)
			}
			pkt = mic.speech[pos]
			if pos++; pos == len(mic.speech) {
				pos, phase, recorded, pauseUntil = 0, answering, false, time.Time{}
				spoke = speechStart.Add(mic.speechLen)
			}
		} else {
			pkt = mic.silence[sil%len(mic.silence)]
			sil++
			opened, first, last := e.heard()
			switch {
			case phase == awaitGreeting:
				if greeted(now, joined, opened, first, last) {
					phase = speaking
				}
			case first.IsZero():
				if now.Sub(spoke) > 15*time.Second {
					st.timeout()
					phase = speaking
				}
			default:
				if !recorded {
					st.turn(i, first.Sub(spoke))
					recorded = true
				}
				if pauseUntil.IsZero() && now.Sub(last) > quiet {
					pauseUntil = now.Add(o.pause)
				}
				if !pauseUntil.IsZero() && now.After(pauseUntil) {
					phase = speaking
				}
			}
		}
		if err := track.WriteSample(pionmedia.Sample{Data: pkt, Duration: micFrame}); err != nil && ctx.Err() == nil {
			return
		}
		k++
	}
}

// greeted says whether a caller that joined at joined may start talking: once the
// greeting has played the agent is listening. A greeting that played before the
// caller heard the agent's track (a short one, while the subscription was still being
// set up) is never heard, so the caller also starts after hearing the track for
// greetWait without speech, and in any case a minute after joining.
func greeted(now, joined, opened, first, last time.Time) bool {
	switch {
	case !first.IsZero():
		return now.Sub(last) > quiet
	case !opened.IsZero():
		return now.Sub(opened) > greetWait
	}
	return now.Sub(joined) > time.Minute
}

// greetWait: an agent starts its session, and greets, within a second or two of
// hearing its caller's track.
const greetWait = 5 * time.Second
