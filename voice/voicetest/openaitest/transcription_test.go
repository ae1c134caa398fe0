package openaitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/stt"
)

func newSTT(t *testing.T, srv *Server) *stt.OpenAI {
	t.Helper()
	p, err := stt.NewOpenAI(stt.OpenAIConfig{BaseURL: srv.URL, APIKey: "sk-test", HTTPClient: srv.Client(), Language: "en"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tone is d of a loud 300 Hz tone at rate; quiet is near silence.
func tone(d time.Duration, rate int, loud bool) audio.Frame {
	s := make([]int16, int(int64(d)*int64(rate)/int64(time.Second)))
	for i := range s {
		if loud {
			s[i] = int16(6000 * math.Sin(2*math.Pi*300*float64(i)/float64(rate)))
		} else {
			s[i] = int16(i%3 - 1)
		}
	}
	return audio.Frame{Samples: s, Rate: rate}
}

// utterance writes 500 ms of near silence, then speech of the given length, and
// flushes. The adapter uploads the speech with its 300 ms pre-roll.
func utterance(t *testing.T, s stt.Stream, rate int, speech time.Duration) {
	t.Helper()
	if err := s.WriteFrame(tone(500*time.Millisecond, rate, false)); err != nil {
		t.Fatal(err)
	}
	s.SpeechStarted()
	if err := s.WriteFrame(tone(speech, rate, true)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
}

func final(t *testing.T, s stt.Stream) stt.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("events closed: %v", s.Err())
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no transcript")
	}
	return stt.Event{}
}

func TestTranscriptionAnswersTheScriptAfterDelay(t *testing.T) {
	t.Parallel()
	const delay = 200 * time.Millisecond
	srv := New(t, Config{STTDelay: delay, Transcripts: []string{"I would like to book an appointment.", "Tuesday."}})
	s, err := newSTT(t, srv).Stream(context.Background(), stt.Options{SampleRate: 16000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for i, want := range []string{"I would like to book an appointment.", "Tuesday.", "Tuesday."} {
		flushed := time.Now()
		utterance(t, s, 16000, time.Second)
		ev := final(t, s)
		if ev.Type != stt.Final || ev.Text != want {
			t.Errorf("transcript %d: %+v, want %q", i, ev, want)
		}
		if el := ev.At.Sub(flushed); el < delay {
			t.Errorf("transcript %d after %v, want at least the delay of %v", i, el, delay)
		}
	}
	recs := srv.Transcriptions()
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	r := recs[0]
	// One second of speech and the adapter's 300 ms pre-roll, at 16 kHz.
	if r.SampleRate != 16000 || r.Samples != 20800 || r.Duration != 1300*time.Millisecond {
		t.Errorf("upload of %d samples at %d Hz (%v), want 20800 at 16000 Hz (1.3 s)", r.Samples, r.SampleRate, r.Duration)
	}
	if r.Model != "whisper-1" || r.ResponseFormat != "json" || r.Language != "en" || r.FileName != "utterance.wav" || r.Status != 200 {
		t.Errorf("record %+v", r)
	}
	if r.Answered.Sub(r.Received) < delay || r.Canceled {
		t.Errorf("answered %v after the upload was read, canceled %v", r.Answered.Sub(r.Received), r.Canceled)
	}
}

func TestTranscribeFunction(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{Transcribe: func(u Upload) string {
		loud := 0
		for _, v := range u.Samples {
			if v > 3000 {
				loud++
			}
		}
		return fmt.Sprintf("%d ms at %d Hz, %d loud samples", u.Duration.Milliseconds(), u.SampleRate, loud)
	}})
	s, err := newSTT(t, srv).Stream(context.Background(), stt.Options{SampleRate: 8000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	utterance(t, s, 8000, 700*time.Millisecond)
	ev := final(t, s)
	if !strings.HasPrefix(ev.Text, "1000 ms at 8000 Hz, ") || strings.HasSuffix(ev.Text, " 0 loud samples") {
		t.Errorf("transcript %q", ev.Text)
	}
}

// upload posts a WAV the way OpenAI's clients do, asking for format.
func upload(t *testing.T, srv *Server, format string, wav []byte) (int, string) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write(wav)
	mw.WriteField("model", "whisper-1")
	mw.WriteField("response_format", format)
	mw.Close()
	resp, err := srv.Client().Post(srv.URL+"/audio/transcriptions", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTranscriptionFormats(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{Transcripts: []string{"Hello."}})
	var wav bytes.Buffer
	if err := audio.WriteWAV(&wav, tone(time.Second, 16000, true)); err != nil {
		t.Fatal(err)
	}
	if st, body := upload(t, srv, "text", wav.Bytes()); st != 200 || body != "Hello.\n" {
		t.Errorf("text: %d %q", st, body)
	}
	st, body := upload(t, srv, "verbose_json", wav.Bytes())
	var v struct {
		Text     string  `json:"text"`
		Duration float64 `json:"duration"`
	}
	if err := json.Unmarshal([]byte(body), &v); st != 200 || err != nil || v.Text != "Hello." || v.Duration != 1 {
		t.Errorf("verbose_json: %d %s", st, body)
	}
	if st, body := upload(t, srv, "srt", wav.Bytes()); st != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
		t.Errorf("srt: %d %s", st, body)
	}
	if st, _ := upload(t, srv, "json", []byte("not a wav")); st != http.StatusBadRequest {
		t.Errorf("garbage: %d", st)
	}
}
