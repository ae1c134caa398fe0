package tts

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOpenAIStreamsPCMAcrossOddBoundaries(t *testing.T) {
	t.Parallel()
	want := tone(12000, OpenAISampleRate) // 0.5 s
	srv := newSpeechServer(t, speechReply{samples: want, gap: 3 * time.Millisecond})
	p := newTestOpenAI(t, srv, nil)

	s, err := p.Synthesize(context.Background(), Request{Text: "  Hello there.  ", Speed: 1.25})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.Recv()
	if err != nil || len(first.Samples) == 0 {
		t.Fatalf("first frame: %d samples, %v", len(first.Samples), err)
	}
	select {
	case <-srv.done:
		t.Error("the whole body was written before the first frame came out; nothing streamed")
	default:
	}
	rest, frames, err := readAll(t, s, OpenAISampleRate)
	if !isEOF(err) {
		t.Fatalf("end: %v", err)
	}
	got := append(first.Samples, rest...)
	if !equalSamples(got, want) {
		t.Fatalf("got %d samples, want %d identical ones", len(got), len(want))
	}
	if frames < 3 {
		t.Errorf("%d frames; audio should arrive in pieces", frames+1)
	}

	body := srv.body(0)
	if body["input"] != "Hello there." || body["voice"] != "alloy" || body["model"] != "tts-1" || body["speed"] != 1.25 || body["response_format"] != "pcm" {
		t.Errorf("request = %v", body)
	}
}

func TestOpenAIRetriesBeforeFirstAudio(t *testing.T) {
	t.Parallel()
	audio := tone(2400, OpenAISampleRate)
	ok := speechReply{samples: audio}
	tests := []struct {
		name     string
		replies  []speechReply
		mod      func(*OpenAIConfig)
		wantErr  error
		wantMsg  string
		requests int
		minTime  time.Duration
	}{
		{
			name:     "429 with Retry-After",
			replies:  []speechReply{{status: 429, header: map[string]string{"Retry-After": "1"}, errBody: `{"error":{"message":"Rate limit reached","type":"requests"}}`}, ok},
			requests: 2, minTime: time.Second,
		},
		{
			name:     "500 then ok",
			replies:  []speechReply{{status: 500, errBody: `{"error":{"message":"server error","type":"server_error"}}`}, ok},
			requests: 2,
		},
		{
			name:     "slow first byte",
			replies:  []speechReply{{firstDelay: time.Hour, samples: audio}, ok},
			mod:      func(c *OpenAIConfig) { c.FirstByteTimeout = 200 * time.Millisecond },
			requests: 2, minTime: 200 * time.Millisecond,
		},
		{
			name:     "empty body",
			replies:  []speechReply{{samples: nil}, ok},
			requests: 2,
		},
		{
			name:     "400 is final",
			replies:  []speechReply{{status: 400, errBody: `{"error":{"message":"Invalid voice","type":"invalid_request_error"}}`}, ok},
			wantMsg:  "Invalid voice",
			requests: 1,
		},
		{
			name:     "never any audio",
			replies:  []speechReply{{firstDelay: time.Hour}},
			mod:      func(c *OpenAIConfig) { c.FirstByteTimeout = 100 * time.Millisecond; c.MaxRetries = 1 },
			wantErr:  ErrFirstByteTimeout,
			requests: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newSpeechServer(t, tt.replies...)
			p := newTestOpenAI(t, srv, tt.mod)
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
				got, _, err := readAll(t, s, OpenAISampleRate)
				s.Close()
				if !isEOF(err) || !equalSamples(got, audio) {
					t.Errorf("%d samples, %v", len(got), err)
				}
			}
			if n := srv.requests(); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			if el := time.Since(start); el < tt.minTime {
				t.Errorf("took %s, want at least %s", el, tt.minTime)
			}
		})
	}
}

func TestOpenAIStallAfterAudioIsNotRetried(t *testing.T) {
	t.Parallel()
	srv := newSpeechServer(t, speechReply{samples: tone(24000, OpenAISampleRate), hangAfter: 3}, speechReply{samples: tone(10, OpenAISampleRate)})
	p := newTestOpenAI(t, srv, func(c *OpenAIConfig) { c.StallTimeout = 200 * time.Millisecond })
	s, err := p.Synthesize(context.Background(), Request{Text: "Hi."})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _, err := readAll(t, s, OpenAISampleRate)
	if !errors.Is(err, ErrStalled) {
		t.Errorf("err = %v, want ErrStalled", err)
	}
	if len(got) == 0 {
		t.Error("no audio before the stall")
	}
	if n := srv.requests(); n != 1 {
		t.Errorf("%d requests; started audio must not be retried", n)
	}
}

func TestOpenAICloseAndCancelMidStream(t *testing.T) {
	t.Parallel()
	for _, viaClose := range []bool{false, true} {
		t.Run(map[bool]string{false: "cancel", true: "close"}[viaClose], func(t *testing.T) {
			t.Parallel()
			srv := newSpeechServer(t, speechReply{samples: tone(24000, OpenAISampleRate), hangAfter: 2})
			p := newTestOpenAI(t, srv, func(c *OpenAIConfig) { c.StallTimeout = time.Minute })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := p.Synthesize(ctx, Request{Text: "Hi."})
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				_, _, err := readAll(t, s, OpenAISampleRate)
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond)
			if viaClose {
				s.Close()
			} else {
				cancel()
			}
			select {
			case err := <-errc:
				if err == nil || isEOF(err) {
					t.Errorf("err = %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Recv did not return")
			}
			s.Close()
		})
	}
}

func TestOpenAIEmptyTextAndConfig(t *testing.T) {
	t.Parallel()
	srv := newSpeechServer(t, speechReply{samples: tone(10, OpenAISampleRate)})
	p := newTestOpenAI(t, srv, nil)
	s, err := p.Synthesize(context.Background(), Request{Text: "   "})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !isEOF(err) {
		t.Errorf("empty text: %v", err)
	}
	s.Close()
	if srv.requests() != 0 {
		t.Error("empty text reached the server")
	}
	if p.SampleRate() != 24000 || p.Name() != "openai" {
		t.Errorf("rate %d name %q", p.SampleRate(), p.Name())
	}
	for _, cfg := range []OpenAIConfig{{BaseURL: "ws://x"}, {ReadSize: 1}, {StallTimeout: -1}} {
		if _, err := NewOpenAI(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

func TestPCMDecoderCarriesOddBytes(t *testing.T) {
	t.Parallel()
	want := tone(1000, 16000)
	b := pcmBytes(want)
	for _, step := range []int{1, 2, 3, 7, 999, 2000} {
		var d pcmDecoder
		var got []int16
		for i := 0; i < len(b); i += step {
			got = append(got, d.decode(b[i:min(i+step, len(b))])...)
		}
		if !equalSamples(got, want) {
			t.Errorf("step %d: decoded %d samples wrongly", step, len(got))
		}
	}
}
