package tts

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newTestEspeak(t *testing.T, mod func(*EspeakConfig)) *Espeak {
	t.Helper()
	var cfg EspeakConfig
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewEspeak(cfg)
	if err != nil {
		t.Fatal(err) // CI installs espeak-ng; a missing binary is a failure, not a skip
	}
	return p
}

func rms(s []int16) float64 {
	var sum float64
	for _, v := range s {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(max(len(s), 1)))
}

func TestEspeakSpeaks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		req        Request
		minS, maxS float64
	}{
		// About 1.5 s at 175 wpm; espeak adds a little silence at the end.
		{"default", Request{Text: "Hello, thank you for calling. How can I help?"}, 1.5, 5},
		{"faster", Request{Text: "Hello, thank you for calling. How can I help?", Speed: 2}, 0.8, 3},
		{"language as voice", Request{Text: "Merhaba, nasılsınız?", Language: "tr"}, 0.5, 4},
		{"leading dash is text", Request{Text: "-v is not an option here"}, 0.5, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestEspeak(t, nil)
			s, err := p.Synthesize(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, frames, err := readAll(t, s, EspeakSampleRate)
			if !isEOF(err) {
				t.Fatalf("end: %v", err)
			}
			secs := float64(len(got)) / EspeakSampleRate
			if secs < tt.minS || secs > tt.maxS {
				t.Errorf("%.2f s of audio, want %.1f to %.1f", secs, tt.minS, tt.maxS)
			}
			if r := rms(got); r < 300 {
				t.Errorf("RMS %.0f: audio is (nearly) silent", r)
			}
			if frames < 5 {
				t.Errorf("%d frames; audio should come in pieces", frames)
			}
		})
	}
	// Speed really changes the rate: twice as fast is clearly shorter.
	p := newTestEspeak(t, nil)
	length := func(speed float64) int {
		s, err := p.Synthesize(context.Background(), Request{Text: "One two three four five six seven eight nine ten.", Speed: speed})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got, _, _ := readAll(t, s, EspeakSampleRate)
		return len(got)
	}
	if slow, fast := length(1), length(2); float64(fast) > 0.7*float64(slow) {
		t.Errorf("speed 2 gave %d samples, speed 1 %d", fast, slow)
	}
}

// processGone reports whether pid no longer exists (reaped, not a zombie).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestEspeakAbortKillsAndReaps(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("This sentence is long and keeps espeak busy for a while. ", 200)
	for _, viaClose := range []bool{false, true} {
		t.Run(map[bool]string{false: "cancel", true: "close"}[viaClose], func(t *testing.T) {
			t.Parallel()
			p := newTestEspeak(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := p.Synthesize(ctx, Request{Text: long})
			if err != nil {
				t.Fatal(err)
			}
			s := st.(*espeakStream)
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
			pid := s.cmd.Process.Pid
			if processGone(pid) {
				t.Fatal("espeak-ng already finished; the test text is too short")
			}
			start := time.Now()
			if viaClose {
				s.Close()
			} else {
				cancel()
			}
			// Recv ends with an error, not io.EOF: the audio is cut short.
			var rerr error
			for rerr == nil {
				_, rerr = s.Recv()
			}
			if isEOF(rerr) {
				t.Errorf("Recv after abort = io.EOF")
			}
			if !viaClose {
				s.Close()
			}
			if el := time.Since(start); el > time.Second {
				t.Errorf("abort took %s", el)
			}
			if !processGone(pid) {
				t.Errorf("espeak-ng pid %d still exists after Close (zombie or running)", pid)
			}
		})
	}
}

func TestEspeakRejectsBadInput(t *testing.T) {
	t.Parallel()
	p := newTestEspeak(t, nil)
	for _, voice := range []string{"-x", "../etc/passwd", "en us", "en;rm"} {
		if _, err := p.Synthesize(context.Background(), Request{Text: "hi", Voice: voice}); err == nil {
			t.Errorf("voice %q accepted", voice)
		}
	}
	s, err := p.Synthesize(context.Background(), Request{Text: " \n "})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !isEOF(err) {
		t.Errorf("empty text: %v", err)
	}
	s.Close()
	for _, cfg := range []EspeakConfig{{Path: "/nonexistent/espeak-ng"}, {WordsPerMinute: 10}, {Voice: "-q"}, {Pitch: 120}} {
		if _, err := NewEspeak(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	// An unknown voice makes espeak-ng fail; the error says so.
	s, err = p.Synthesize(context.Background(), Request{Text: "hi", Voice: "zz-nosuchvoice"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := readAll(t, s, EspeakSampleRate); err == nil || isEOF(err) {
		t.Errorf("unknown voice: %v", err)
	}
}

func TestReadWAVHeader(t *testing.T) {
	t.Parallel()
	header := func(format, channels, bits uint16, rate uint32, extra string) []byte {
		var b bytes.Buffer
		b.WriteString("RIFF")
		binary.Write(&b, binary.LittleEndian, uint32(0x7ffff024)) // espeak's placeholder
		b.WriteString("WAVE")
		b.WriteString(extra)
		b.WriteString("fmt ")
		binary.Write(&b, binary.LittleEndian, uint32(16))
		binary.Write(&b, binary.LittleEndian, format)
		binary.Write(&b, binary.LittleEndian, channels)
		binary.Write(&b, binary.LittleEndian, rate)
		binary.Write(&b, binary.LittleEndian, rate*uint32(channels)*uint32(bits)/8)
		binary.Write(&b, binary.LittleEndian, channels*bits/8)
		binary.Write(&b, binary.LittleEndian, bits)
		b.WriteString("data")
		binary.Write(&b, binary.LittleEndian, uint32(0xffffffff))
		b.Write([]byte{1, 0, 2, 0})
		return b.Bytes()
	}
	tests := []struct {
		name    string
		in      []byte
		rate    int
		wantErr bool
	}{
		{"espeak", header(1, 1, 16, 22050, ""), 22050, false},
		{"extra chunk", header(1, 1, 16, 16000, "LIST\x04\x00\x00\x00abcd"), 16000, false},
		{"stereo", header(1, 2, 16, 22050, ""), 0, true},
		{"float", header(3, 1, 32, 22050, ""), 0, true},
		{"not wav", []byte("ID3\x04 mp3 file, nothing like a wav"), 0, true},
		{"truncated", header(1, 1, 16, 22050, "")[:20], 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bytes.NewReader(tt.in)
			rate, err := readWAVHeader(r)
			if (err != nil) != tt.wantErr || rate != tt.rate {
				t.Fatalf("rate %d, err %v", rate, err)
			}
			if err == nil && r.Len() != 4 {
				t.Errorf("header reader left %d bytes, want the 4 data bytes", r.Len())
			}
		})
	}
}
