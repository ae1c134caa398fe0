package openaitest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/tts"
)

func newTTS(t *testing.T, srv *Server) *tts.OpenAI {
	t.Helper()
	p, err := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: srv.URL, APIKey: "sk-test", HTTPClient: srv.Client(), Voice: "nova"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// speak synthesises req and returns its audio and how many reads it took.
func speak(t *testing.T, p *tts.OpenAI, req tts.Request) ([]int16, int) {
	t.Helper()
	s, err := p.Synthesize(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []int16
	reads := 0
	for {
		f, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, reads
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Rate != SampleRate {
			t.Fatalf("frame at %d Hz", f.Rate)
		}
		out = append(out, f.Samples...)
		reads++
	}
}

func rms(s []int16) float64 {
	var sum float64
	for _, v := range s {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(max(1, len(s))))
}

// minFrameRMS is the RMS level of the quietest 20 ms of s.
func minFrameRMS(s []int16) float64 {
	lowest := math.Inf(1)
	for off := 0; off+480 <= len(s); off += 480 {
		lowest = min(lowest, rms(s[off:off+480]))
	}
	return lowest
}

func TestSpeechStreamsThePCMAfterTTFB(t *testing.T) {
	t.Parallel()
	const ttfb = 150 * time.Millisecond
	const text = "Hello there, this is Parley Dental."
	srv := New(t, Config{TTSTTFB: ttfb})
	p := newTTS(t, srv)

	start := time.Now()
	s, err := p.Synthesize(context.Background(), tts.Request{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	// Synthesize returns once the first audio has arrived.
	if el := time.Since(start); el < ttfb {
		t.Errorf("first audio after %v, want at least the TTFB of %v", el, ttfb)
	}
	s.Close()

	got, reads := speak(t, p, tts.Request{Text: text})
	want := SpeechAudio(text, 0)
	if n := SpeechSamples(text, 0); len(want) != n || n != len(text)*1440 {
		t.Fatalf("SpeechAudio made %d samples, SpeechSamples says %d; want 60 ms a character", len(want), n)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("received %d samples, want the %d of SpeechAudio, identical", len(got), len(want))
	}
	if reads < 2 {
		t.Errorf("the audio came in %d reads; it should stream", reads)
	}
	if lo := minFrameRMS(got); lo < 2000 {
		t.Errorf("quietest 20 ms at RMS %.0f; the voice must be loud throughout", lo)
	}

	recs := srv.Speeches()
	if len(recs) != 2 {
		t.Fatalf("%d speech records, want 2", len(recs))
	}
	r := recs[1]
	if r.Text != text || r.Voice != "nova" || r.Model != "tts-1" || r.Format != "pcm" || r.Status != 200 {
		t.Errorf("record %+v", r)
	}
	if r.Samples != len(want) || r.Sent != len(want) || r.Canceled || r.TTFB() < ttfb || r.Done.IsZero() {
		t.Errorf("record: %d samples, %d sent, canceled %v, TTFB %v", r.Samples, r.Sent, r.Canceled, r.TTFB())
	}
}

func TestSpeechPaceAndSpeed(t *testing.T) {
	t.Parallel()
	const text = "See you on Tuesday." // 19 characters: 1.14 s of audio, 12 chunks
	srv := New(t, Config{TTSPace: 5})
	p := newTTS(t, srv)

	got, _ := speak(t, p, tts.Request{Text: text})
	if len(got) != SpeechSamples(text, 0) {
		t.Errorf("%d samples, want %d", len(got), SpeechSamples(text, 0))
	}
	// Twelve 100 ms chunks at five times real time: the last goes out 11 × 20 ms after
	// the first.
	r := srv.Speeches()[0]
	if d := r.Done.Sub(r.FirstByte); d < 200*time.Millisecond {
		t.Errorf("streamed in %v; at 5x real time it takes 220 ms", d)
	}

	// Speed 2 says it in half the time.
	got, _ = speak(t, p, tts.Request{Text: text, Speed: 2})
	if want := SpeechSamples(text, DefaultCharDuration/2); len(got) != want {
		t.Errorf("at speed 2: %d samples, want %d", len(got), want)
	}
	if r := srv.Speeches()[1]; r.Speed != 2 {
		t.Errorf("speed recorded %v", r.Speed)
	}
}

func TestSpeechFailure(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{SpeechStatus: 401})
	_, err := newTTS(t, srv).Synthesize(context.Background(), tts.Request{Text: "Hello."})
	if err == nil {
		t.Fatal("no error")
	}
	if recs := srv.Speeches(); len(recs) != 1 || recs[0].Status != 401 || recs[0].Sent != 0 {
		t.Errorf("records %+v", recs)
	}
}

func TestSpeechAudio(t *testing.T) {
	t.Parallel()
	pitches := map[float64]bool{}
	for i := range 40 {
		text := fmt.Sprintf("Sentence number %d.", i)
		a := SpeechAudio(text, 0)
		if !slices.Equal(a, SpeechAudio(text, 0)) {
			t.Fatal("not deterministic")
		}
		if lo := minFrameRMS(a); lo < 2000 {
			t.Errorf("%q: quietest 20 ms at RMS %.0f", text, lo)
		}
		p := SpeechPitch(text)
		if p < 110 || p > 250 {
			t.Errorf("%q: pitch %v", text, p)
		}
		pitches[p] = true
	}
	if len(pitches) < 20 {
		t.Errorf("40 texts have only %d pitches; the pitch should tell texts apart", len(pitches))
	}
	if n := SpeechSamples("abc", 20*time.Millisecond); n != 3*480 {
		t.Errorf("3 characters at 20 ms: %d samples", n)
	}
}
