package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/tts"
)

// The scripted voice (openaitest.SpeechAudio) is a harmonic tone, and libopus codes a
// tone and the digital silence after it far more cheaply than speech and the silence
// after speech: measured on this repository's libopus 1.3.1 at LiveKit's settings
// (VoIP, default complexity, 10 ms frames), about 25 µs a frame after the tone against
// 110-145 µs after espeak-ng speech, and the gap holds at the agent track's complexity
// 1, so a worker benchmarked with the tone would look cheaper than one speaking with a
// real voice. speechVoice keeps the real adapter's
// stream, with its timing, length and HTTP traffic, and replaces its samples with
// espeak-ng speech of the reply, looped.

// speechVoice is a tts.Provider whose streams carry recorded speech.
type speechVoice struct {
	tts.Provider
	speech []int16 // at the provider's rate, trimmed at both ends
}

// newSpeechVoice wraps p with espeak-ng saying text.
func newSpeechVoice(p tts.Provider, text string) (*speechVoice, error) {
	es, err := tts.NewEspeak(tts.EspeakConfig{})
	if err != nil {
		return nil, fmt.Errorf("%w (-agent-voice tone does without espeak-ng)", err)
	}
	st, err := es.Synthesize(context.Background(), tts.Request{Text: text})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var raw []int16
	for {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		raw = append(raw, f.Samples...)
	}
	var out []int16
	r, err := audio.NewResampler(es.SampleRate(), p.SampleRate(), audio.WriterFunc(func(f audio.Frame) error {
		out = append(out, f.Samples...)
		return nil
	}))
	if err != nil {
		return nil, err
	}
	if err := r.WriteFrame(audio.Frame{Samples: raw, Rate: es.SampleRate()}); err != nil {
		return nil, err
	}
	if err := r.Close(); err != nil {
		return nil, err
	}
	out = trim(out, p.SampleRate())
	if len(out) == 0 {
		return nil, errors.New("espeak-ng said nothing")
	}
	return &speechVoice{Provider: p, speech: out}, nil
}

// trim cuts the quiet (under lktest.SpeechDBFS, in 10 ms blocks) off both ends, so
// the first audio the caller hears of an answer is speech, as with the scripted
// voice, and the loop has no gap a caller would take for the end of the answer.
func trim(s []int16, rate int) []int16 {
	n := rate / 100
	loud := func(i int) bool { return lktest.DBFS(s[i:min(i+n, len(s))]) > lktest.SpeechDBFS }
	start := 0
	for start < len(s) && !loud(start) {
		start += n
	}
	end := len(s)
	for end > start && !loud(max(end-n, start)) {
		end -= n
	}
	return s[start:max(end, start)]
}

func (v *speechVoice) Synthesize(ctx context.Context, req tts.Request) (tts.Stream, error) {
	st, err := v.Provider.Synthesize(ctx, req)
	if err != nil {
		return nil, err
	}
	return &speechStream{Stream: st, speech: v.speech}, nil
}

type speechStream struct {
	tts.Stream
	speech []int16
	pos    int
}

func (s *speechStream) Recv() (audio.Frame, error) {
	f, err := s.Stream.Recv()
	if err != nil {
		return f, err
	}
	// A fresh slice: the adapter may reuse its own.
	out := make([]int16, len(f.Samples))
	for i := range out {
		out[i] = s.speech[s.pos]
		if s.pos++; s.pos == len(s.speech) {
			s.pos = 0
		}
	}
	f.Samples = out
	return f, nil
}
