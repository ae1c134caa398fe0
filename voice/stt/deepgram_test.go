package stt

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestDeepgramStreamsAndFinalizes(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t, dgScript{finalizeText: "How are you?"})
	p := newTestDeepgram(t, ds, func(c *DeepgramConfig) { c.Language = "en-US" })
	s, err := p.Stream(context.Background(), Options{SampleRate: testRate, Keywords: []string{"Parley"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	write(t, s, frames(1200*time.Millisecond, true))
	ev, ok := nextEvent(t, s, 3*time.Second)
	if !ok || ev.Type != Interim || ev.Text != "hello" || ev.Confidence != 0.98 {
		t.Fatalf("first event %+v %v (err %v)", ev, ok, s.Err())
	}
	ev, _ = nextEvent(t, s, 3*time.Second)
	if ev.Type != Final || ev.Text != "Hello there." || ev.Start != 0 || ev.End != time.Second {
		t.Fatalf("second event %+v", ev)
	}
	write(t, s, frames(800*time.Millisecond, true))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	ev, _ = nextEvent(t, s, 3*time.Second)
	if ev.Type != Final || ev.Text != "How are you?" || ev.Start != time.Second || ev.End != 2*time.Second {
		t.Fatalf("flush event %+v", ev)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-s.Events(); ok {
		t.Error("events still open after Close")
	}
	if s.Err() != nil {
		t.Errorf("Err after a clean close: %v", s.Err())
	}

	c := ds.conn(0)
	if c.auth != "Token dg-key" {
		t.Errorf("auth %q", c.auth)
	}
	if c.audioBytes != 2*testRate*2 {
		t.Errorf("server got %d audio bytes, want %d", c.audioBytes, 2*testRate*2)
	}
	if c.finalizes != 1 || !c.closeStream {
		t.Errorf("finalizes %d, close stream %v", c.finalizes, c.closeStream)
	}
	q, _ := url.ParseQuery(c.query)
	want := map[string]string{
		"encoding": "linear16", "sample_rate": "16000", "channels": "1", "interim_results": "true",
		"punctuate": "true", "smart_format": "true", "endpointing": "300", "model": "nova-2",
		"language": "en-US", "keywords": "Parley",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("query %s = %q, want %q (%s)", k, q.Get(k), v, c.query)
		}
	}
}

func TestDeepgramKeepAlive(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t)
	p := newTestDeepgram(t, ds, func(c *DeepgramConfig) { c.KeepAliveInterval = 100 * time.Millisecond })
	s, err := p.Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Audio keeps the connection alive by itself…
	for range 15 {
		write(t, s, frames(20*time.Millisecond, false))
		time.Sleep(20 * time.Millisecond)
	}
	// …and without audio, keep-alives do.
	time.Sleep(450 * time.Millisecond)
	s.Close()
	c := ds.conn(0)
	if c.keepAlives < 2 || c.keepAlives > 8 {
		t.Errorf("%d keep-alives in 450 ms of silence at a 100 ms interval", c.keepAlives)
	}
}

func TestDeepgramFinalizeTimeout(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t, dgScript{ignoreFinalize: true})
	p := newTestDeepgram(t, ds, func(c *DeepgramConfig) { c.FinalizeTimeout = 200 * time.Millisecond })
	s, err := p.Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write(t, s, frames(200*time.Millisecond, true))
	start := time.Now()
	s.Flush()
	ev, ok := nextEvent(t, s, 2*time.Second)
	if !ok || ev.Type != Final || ev.Text != "" {
		t.Errorf("event %+v %v; want an empty Final standing in", ev, ok)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("stand-in after %s, before the timeout", el)
	}
}

func TestDeepgramEmptyFinalizeAnswerIsEmitted(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t, dgScript{finalizeText: ""})
	s, err := newTestDeepgram(t, ds, nil).Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write(t, s, frames(200*time.Millisecond, false))
	start := time.Now()
	s.Flush()
	ev, ok := nextEvent(t, s, 2*time.Second)
	if !ok || ev.Type != Final || ev.Text != "" {
		t.Errorf("event %+v %v", ev, ok)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("the answer to Finalize took %s; it should not wait for the stand-in timer", el)
	}
}

func TestDeepgramConnectRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		scripts []dgScript
		mod     func(*DeepgramConfig)
		wantErr string
		dials   int
		minTime time.Duration
	}{
		{
			name:    "429 with Retry-After",
			scripts: []dgScript{{status: 429, header: map[string]string{"Retry-After": "1"}, body: `{"err_code":"TOO_MANY_REQUESTS","err_msg":"Too many requests."}`}, {}},
			dials:   2, minTime: time.Second,
		},
		{
			name:    "503 then ok",
			scripts: []dgScript{{status: 503}, {}},
			dials:   2,
		},
		{
			name:    "slow handshake times out and is retried",
			scripts: []dgScript{{acceptDelay: time.Hour}, {}},
			mod:     func(c *DeepgramConfig) { c.ConnectTimeout = 200 * time.Millisecond },
			dials:   2, minTime: 200 * time.Millisecond,
		},
		{
			name:    "bad key is final",
			scripts: []dgScript{{}},
			mod:     func(c *DeepgramConfig) { c.APIKey = "wrong" },
			wantErr: "Invalid credentials",
			dials:   1,
		},
		{
			name:    "retries run out",
			scripts: []dgScript{{status: 500}},
			mod:     func(c *DeepgramConfig) { c.MaxRetries = 1 },
			wantErr: "connect after 2 attempts",
			dials:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ds := newDeepgramServer(t, tt.scripts...)
			p := newTestDeepgram(t, ds, tt.mod)
			start := time.Now()
			s, err := p.Stream(context.Background(), Options{})
			if tt.wantErr != "" {
				if err == nil {
					s.Close()
					t.Fatal("want an error")
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err %v, want %q", err, tt.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				write(t, s, frames(1100*time.Millisecond, true))
				if ev, ok := nextEvent(t, s, 2*time.Second); !ok || ev.Text != "hello" {
					t.Errorf("event %+v %v", ev, ok)
				}
				s.Close()
			}
			if n := ds.dialCount(); n != tt.dials {
				t.Errorf("%d dials, want %d", n, tt.dials)
			}
			if el := time.Since(start); el < tt.minTime {
				t.Errorf("took %s", el)
			}
		})
	}
}

func TestDeepgramFailsMidStream(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t, dgScript{failAfter: 3200, failCode: websocket.StatusInternalError}, dgScript{})
	s, err := newTestDeepgram(t, ds, nil).Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write(t, s, frames(100*time.Millisecond, true))
	for range s.Events() {
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "NET-0000") {
		t.Errorf("Err = %v", err)
	}
	if err := s.WriteFrame(frames(20*time.Millisecond, true)[0]); err == nil {
		t.Error("WriteFrame after failure succeeded")
	}
	if n := ds.dialCount(); n != 1 {
		t.Errorf("%d dials; a started stream must not be re-opened", n)
	}
}

func TestDeepgramCancel(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := newTestDeepgram(t, ds, nil).Stream(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write(t, s, frames(100*time.Millisecond, true))
	cancel()
	if _, ok := nextEvent(t, s, 2*time.Second); ok {
		t.Error("event after cancel")
	}
	if !errors.Is(s.Err(), context.Canceled) {
		t.Errorf("Err = %v", s.Err())
	}
}

func TestDeepgramCloseWhenServerIgnoresCloseStream(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t, dgScript{silent: true})
	s, err := newTestDeepgram(t, ds, func(c *DeepgramConfig) { c.CloseTimeout = 200 * time.Millisecond }).Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Close()
	if el := time.Since(start); el < 200*time.Millisecond || el > time.Second {
		t.Errorf("Close took %s", el)
	}
	if s.Err() != nil {
		t.Errorf("Err = %v", s.Err())
	}
	if !ds.conn(0).closeStream {
		t.Error("CloseStream not sent")
	}
}

func TestDeepgramConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []DeepgramConfig{{}, {APIKey: "k", BaseURL: "ftp://x"}, {APIKey: "k", SendQueue: -1}} {
		if _, err := NewDeepgram(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	p, err := NewDeepgram(DeepgramConfig{APIKey: "k", Model: "nova-3", Endpointing: -1, ExtraParams: url.Values{"utterance_end_ms": {"1000"}}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(p.listenURL(8000, Options{Keywords: []string{"Parley", " "}}))
	q := u.Query()
	if u.Host != "api.deepgram.com" || q.Get("endpointing") != "false" || q.Get("keyterm") != "Parley" || len(q["keyterm"]) != 1 ||
		q.Get("sample_rate") != "8000" || q.Get("utterance_end_ms") != "1000" || q.Has("language") {
		t.Errorf("url %s", u)
	}
}
