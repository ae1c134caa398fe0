package tts

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestElevenLabsStreamsOverWebsocket(t *testing.T) {
	t.Parallel()
	want := tone(8000, 16000) // 0.5 s
	es := newElevenServer(t, elevenScript{samples: want, gap: 2 * time.Millisecond})
	p := newTestElevenLabs(t, es, func(c *ElevenLabsConfig) { c.VoiceID = "voice123" })
	s, err := p.Synthesize(context.Background(), Request{Text: "Hello there.", Speed: 1.1})
	if err != nil {
		t.Fatal(err)
	}
	got, frames, err := readAll(t, s, 16000)
	s.Close()
	if !isEOF(err) {
		t.Fatalf("end: %v", err)
	}
	if !equalSamples(got, want) {
		t.Fatalf("got %d samples, want %d identical", len(got), len(want))
	}
	if frames < 3 {
		t.Errorf("%d frames", frames)
	}

	sess := es.session(0)
	if sess.path != "/v1/text-to-speech/voice123/stream-input" {
		t.Errorf("path %s", sess.path)
	}
	q, _ := url.ParseQuery(sess.query)
	if q.Get("model_id") != "eleven_flash_v2_5" || q.Get("output_format") != "pcm_16000" {
		t.Errorf("query %s", sess.query)
	}
	if sess.key != "xi-test-key" {
		t.Errorf("xi-api-key %q", sess.key)
	}
	vs, _ := sess.init["voice_settings"].(map[string]any)
	if sess.init["text"] != " " || vs["stability"] != 0.5 || vs["similarity_boost"] != 0.75 || vs["speed"] != 1.1 {
		t.Errorf("opening message %v", sess.init)
	}
	if len(sess.texts) != 2 || sess.texts[0]["text"] != "Hello there. " || sess.texts[0]["try_trigger_generation"] != true || sess.texts[1]["text"] != "" {
		t.Errorf("text messages %v", sess.texts)
	}
	if p.SampleRate() != 16000 {
		t.Errorf("rate %d", p.SampleRate())
	}
}

func TestElevenLabsOutputFormatSetsRate(t *testing.T) {
	t.Parallel()
	want := tone(2205, 22050)
	es := newElevenServer(t, elevenScript{samples: want})
	p := newTestElevenLabs(t, es, func(c *ElevenLabsConfig) { c.OutputFormat = "pcm_22050" })
	s, err := p.Synthesize(context.Background(), Request{Text: "Hi."})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := readAll(t, s, 22050)
	s.Close()
	if !isEOF(err) || !equalSamples(got, want) {
		t.Errorf("%d samples, %v", len(got), err)
	}
}

func TestElevenLabsFailures(t *testing.T) {
	t.Parallel()
	audio := tone(1600, 16000)
	ok := elevenScript{samples: audio}
	tests := []struct {
		name     string
		scripts  []elevenScript
		mod      func(*ElevenLabsConfig)
		wantErr  error
		wantMsg  string
		attempts int
		minTime  time.Duration
	}{
		{
			name:     "handshake 429 with Retry-After",
			scripts:  []elevenScript{{status: 429, header: map[string]string{"Retry-After": "1"}}, ok},
			attempts: 2, minTime: time.Second,
		},
		{
			name:     "server error close before audio",
			scripts:  []elevenScript{{messages: []string{}, closeCode: websocket.StatusInternalError}, ok},
			attempts: 2,
		},
		{
			name:     "slow first audio",
			scripts:  []elevenScript{{firstDelay: time.Hour, samples: audio}, ok},
			mod:      func(c *ElevenLabsConfig) { c.FirstByteTimeout = 200 * time.Millisecond },
			attempts: 2, minTime: 200 * time.Millisecond,
		},
		{
			name: "invalid key is final",
			scripts: []elevenScript{{
				messages:  []string{`{"message":"Invalid API key","error":"invalid_api_key","code":1008}`},
				closeCode: websocket.StatusPolicyViolation,
			}, ok},
			wantMsg:  "Invalid API key",
			attempts: 1,
		},
		{
			name:     "handshake 401 is final",
			scripts:  []elevenScript{{status: 401}, ok},
			wantMsg:  "401",
			attempts: 1,
		},
		{
			name:     "final without audio",
			scripts:  []elevenScript{{messages: []string{`{"isFinal":true}`}}},
			mod:      func(c *ElevenLabsConfig) { c.MaxRetries = -1 },
			wantErr:  ErrNoAudio,
			attempts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			es := newElevenServer(t, tt.scripts...)
			p := newTestElevenLabs(t, es, tt.mod)
			start := time.Now()
			s, err := p.Synthesize(context.Background(), Request{Text: "Hi."})
			if tt.wantErr != nil || tt.wantMsg != "" {
				if err == nil {
					s.Close()
					t.Fatal("want an error")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("err = %v, want %q in it", err, tt.wantMsg)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := readAll(t, s, 16000)
				s.Close()
				if !isEOF(err) || !equalSamples(got, audio) {
					t.Errorf("%d samples, %v", len(got), err)
				}
			}
			if n := es.count(); n != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
			if el := time.Since(start); el < tt.minTime {
				t.Errorf("took %s, want at least %s", el, tt.minTime)
			}
		})
	}
}

func TestElevenLabsStallAndClose(t *testing.T) {
	t.Parallel()
	es := newElevenServer(t, elevenScript{
		messages: []string{`{"audio":"AAABAAIA","isFinal":null}`},
		hang:     true,
	})
	p := newTestElevenLabs(t, es, func(c *ElevenLabsConfig) { c.StallTimeout = 200 * time.Millisecond })
	s, err := p.Synthesize(context.Background(), Request{Text: "Hi."})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := readAll(t, s, 16000)
	if !errors.Is(err, ErrStalled) || !equalSamples(got, []int16{0, 1, 2}) {
		t.Errorf("samples %v, err %v", got, err)
	}
	s.Close()
	s.Close()
	if es.count() != 1 {
		t.Errorf("%d attempts", es.count())
	}
}

func TestElevenLabsConfigValidation(t *testing.T) {
	t.Parallel()
	bad := ptr(1.5)
	for _, cfg := range []ElevenLabsConfig{
		{},
		{APIKey: "k", OutputFormat: "mp3_44100_128"},
		{APIKey: "k", BaseURL: "ftp://x"},
		{APIKey: "k", Stability: bad},
	} {
		if _, err := NewElevenLabs(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	p, err := NewElevenLabs(ElevenLabsConfig{APIKey: "k"})
	if err != nil || p.SampleRate() != 16000 || p.Name() != "elevenlabs" {
		t.Errorf("%v %+v", err, p)
	}
	if _, err := p.Synthesize(context.Background(), Request{Text: "x", Voice: "../admin"}); err == nil {
		t.Error("voice id with a slash accepted")
	}
}
