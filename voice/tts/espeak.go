package tts

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// EspeakSampleRate is the rate espeak-ng's own voices speak at.
const EspeakSampleRate = 22050

// EspeakConfig configures the local espeak-ng adapter, the keyless default voice.
type EspeakConfig struct {
	// Name identifies the provider in logs and metrics. Default "espeak".
	Name string
	// Path of the espeak-ng binary. Default: "espeak-ng" found on PATH.
	Path string
	// Voice is used when the request names neither a voice nor a language. Default "en-us".
	Voice string
	// WordsPerMinute is the rate at Request.Speed 1. Default 175, espeak-ng's own.
	// Speeds are clamped to the 80 to 450 wpm espeak-ng supports.
	WordsPerMinute int
	// Pitch is 0 to 99; 0 leaves espeak-ng's default (50).
	Pitch int
	// FrameSamples is the most samples one Recv returns. Default 2205 (100 ms): espeak
	// synthesises far faster than real time, so frames are full.
	FrameSamples int
}

func (c EspeakConfig) withDefaults() EspeakConfig {
	if c.Name == "" {
		c.Name = "espeak"
	}
	if c.Path == "" {
		c.Path = "espeak-ng"
	}
	if c.Voice == "" {
		c.Voice = "en-us"
	}
	if c.WordsPerMinute == 0 {
		c.WordsPerMinute = 175
	}
	if c.FrameSamples == 0 {
		c.FrameSamples = EspeakSampleRate / 10
	}
	return c
}

// espeakVoice is what we let through to -v: voice and language names with an optional
// +variant ("en-us", "en-gb-x-rp", "en-us+f3", "mb-en1"). Nothing that could be read as
// an option or a path.
var espeakVoice = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*(\+[A-Za-z0-9_-]+)?$`)

func (c EspeakConfig) validate() error {
	if !espeakVoice.MatchString(c.Voice) {
		return fmt.Errorf("tts: espeak: bad voice %q", c.Voice)
	}
	if c.WordsPerMinute < 80 || c.WordsPerMinute > 450 {
		return fmt.Errorf("tts: espeak: %d words per minute is outside 80 to 450", c.WordsPerMinute)
	}
	if c.Pitch < 0 || c.Pitch > 99 {
		return fmt.Errorf("tts: espeak: pitch %d is outside 0 to 99", c.Pitch)
	}
	if c.FrameSamples < 1 {
		return errors.New("tts: espeak: frame samples must be positive")
	}
	return nil
}

// Espeak speaks with a local espeak-ng process, one per Synthesize call, streaming the
// WAV it writes to stdout as it is written.
type Espeak struct {
	cfg  EspeakConfig
	path string
}

var _ Provider = (*Espeak)(nil)

// NewEspeak returns an adapter for cfg. It fails if the binary cannot be found.
func NewEspeak(cfg EspeakConfig) (*Espeak, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("tts: espeak: %w", err)
	}
	return &Espeak{cfg: cfg, path: path}, nil
}

// Name implements Provider.
func (p *Espeak) Name() string { return p.cfg.Name }

// SampleRate implements Provider: 22050 Hz. (MBROLA voices speak at 16 kHz; their
// frames say so in Frame.Rate.)
func (p *Espeak) SampleRate() int { return EspeakSampleRate }

// Synthesize implements Provider. The process is killed when ctx ends or the stream is
// closed, and always reaped.
func (p *Espeak) Synthesize(ctx context.Context, req Request) (Stream, error) {
	text := strings.TrimSpace(req.Text)
	if text == "" {
		return emptyStream{}, nil
	}
	voice := req.Voice
	if voice == "" && req.Language != "" {
		voice = strings.ToLower(req.Language) // espeak-ng names voices by language: "en-us", "tr"
	}
	if voice == "" {
		voice = p.cfg.Voice
	}
	if !espeakVoice.MatchString(voice) {
		return nil, fmt.Errorf("tts: espeak: bad voice %q", voice)
	}
	wpm := p.cfg.WordsPerMinute
	if req.Speed > 0 {
		wpm = int(math.Round(float64(wpm) * req.Speed))
	}
	wpm = min(max(wpm, 80), 450)
	// The text goes in on stdin, never as an argument, so it can't be taken for an option.
	args := []string{"--stdout", "--stdin", "-b", "1", "-v", voice, "-s", strconv.Itoa(wpm)}
	if p.cfg.Pitch > 0 {
		args = append(args, "-p", strconv.Itoa(p.cfg.Pitch))
	}

	sctx, cancel := context.WithCancelCause(ctx)
	cmd := exec.CommandContext(sctx, p.path, args...)
	cmd.Stdin = strings.NewReader(text + "\n")
	stderr := &limitedBuffer{max: 4 << 10}
	cmd.Stderr = stderr
	// After a kill, don't wait long for the pipes: espeak-ng has no children to hold them.
	cmd.WaitDelay = 2 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("tts: espeak: %w", err)
	}
	if err := cmd.Start(); err != nil {
		cancel(nil)
		return nil, fmt.Errorf("tts: espeak: start %s: %w", p.path, err)
	}
	s := &espeakStream{
		ctx: sctx, cancel: cancel, cmd: cmd, stderr: stderr,
		frameSamples: p.cfg.FrameSamples,
		out:          make(chan espeakItem, 8),
		finished:     make(chan struct{}),
	}
	go s.run(stdout)
	return s, nil
}

type espeakItem struct {
	f   audio.Frame
	err error // io.EOF at the end
}

// espeakStream hands on the frames a goroutine reads from the process. The goroutine
// ends when the process's stdout does, which a kill guarantees, and then reaps it.
type espeakStream struct {
	ctx          context.Context
	cancel       context.CancelCauseFunc
	cmd          *exec.Cmd
	stderr       *limitedBuffer
	frameSamples int
	out          chan espeakItem
	finished     chan struct{}
	closeOnce    sync.Once
	err          error // what Recv returns from now on
}

func (s *espeakStream) Recv() (audio.Frame, error) {
	if s.err != nil {
		return audio.Frame{}, s.err
	}
	it, ok := <-s.out
	if !ok {
		// The goroutine gave up sending because the stream was aborted.
		s.err = context.Cause(s.ctx)
		if s.err == nil {
			s.err = io.EOF
		}
		return audio.Frame{}, s.err
	}
	if it.err != nil {
		s.err = it.err
		return audio.Frame{}, it.err
	}
	return it.f, nil
}

// Close kills the process if it still runs and waits until it is reaped.
func (s *espeakStream) Close() error {
	s.closeOnce.Do(func() { s.cancel(ErrClosed) })
	<-s.finished
	return nil
}

func (s *espeakStream) run(stdout io.Reader) {
	defer close(s.finished)
	defer close(s.out)
	readErr := s.pump(stdout)
	if readErr != nil {
		// Stop a process whose output we cannot use, so Wait returns.
		s.cmd.Process.Kill()
	}
	waitErr := s.cmd.Wait()
	var final error
	switch {
	case s.ctx.Err() != nil:
		final = context.Cause(s.ctx) // killed on purpose: Close or the caller's context
	case waitErr != nil && (readErr == nil || errors.Is(readErr, io.EOF) || errors.Is(readErr, io.ErrUnexpectedEOF)):
		// It exited early on its own (unknown voice, bad option): say why.
		final = fmt.Errorf("tts: espeak: %w: %s", waitErr, strings.TrimSpace(s.stderr.String()))
	case readErr != nil:
		final = fmt.Errorf("tts: espeak: %w", readErr)
	default:
		final = io.EOF
	}
	s.send(espeakItem{err: final})
	s.cancel(nil)
}

func (s *espeakStream) send(it espeakItem) bool {
	select {
	case s.out <- it:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// pump parses the WAV espeak-ng writes and sends its samples as frames.
func (s *espeakStream) pump(stdout io.Reader) error {
	r := bufio.NewReaderSize(stdout, 8<<10)
	rate, err := readWAVHeader(r)
	if errors.Is(err, io.EOF) && s.ctx.Err() != nil {
		return nil // killed before it wrote anything
	}
	if err != nil {
		return err
	}
	buf := make([]byte, 2*s.frameSamples)
	var dec pcmDecoder
	for {
		n, err := r.Read(buf)
		if samples := dec.decode(buf[:n]); len(samples) > 0 {
			if !s.send(espeakItem{f: audio.Frame{Samples: samples, Rate: rate}}) {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// readWAVHeader reads a RIFF/WAVE header up to the start of the samples and returns the
// sample rate. espeak-ng writes its header before it knows the length, so the RIFF and
// data sizes are placeholders (0x7ffff000 and thereabouts): they are ignored, and the
// data runs to the end of the stream. Only 16-bit mono PCM is accepted.
func readWAVHeader(r io.Reader) (rate int, err error) {
	var riff [12]byte
	if _, err := io.ReadFull(r, riff[:]); err != nil {
		return 0, fmt.Errorf("wav header: %w", err)
	}
	if string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WAVE" {
		return 0, fmt.Errorf("wav header: not RIFF/WAVE (% x)", riff[:])
	}
	haveFmt := false
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return 0, fmt.Errorf("wav header: %w", err)
		}
		id, size := string(hdr[0:4]), binary.LittleEndian.Uint32(hdr[4:8])
		switch id {
		case "fmt ":
			if size < 16 || size > 1024 {
				return 0, fmt.Errorf("wav header: fmt chunk of %d bytes", size)
			}
			b := make([]byte, size+size%2)
			if _, err := io.ReadFull(r, b); err != nil {
				return 0, fmt.Errorf("wav header: %w", err)
			}
			format := binary.LittleEndian.Uint16(b[0:2])
			channels := binary.LittleEndian.Uint16(b[2:4])
			rate = int(binary.LittleEndian.Uint32(b[4:8]))
			bits := binary.LittleEndian.Uint16(b[14:16])
			if format != 1 || channels != 1 || bits != 16 || rate <= 0 {
				return 0, fmt.Errorf("wav header: want 16-bit mono PCM, got format %d, %d channels, %d bits, %d Hz", format, channels, bits, rate)
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return 0, errors.New("wav header: data before fmt")
			}
			return rate, nil
		default:
			// An extra chunk (LIST, fact): skip it. Its size is real, unlike RIFF's and
			// data's, but bound it so a corrupt one cannot make us read forever.
			if size > 1<<20 {
				return 0, fmt.Errorf("wav header: %q chunk of %d bytes", id, size)
			}
			if _, err := io.CopyN(io.Discard, r, int64(size+size%2)); err != nil {
				return 0, fmt.Errorf("wav header: %w", err)
			}
		}
	}
}

// limitedBuffer keeps the first max bytes written to it (a process's stderr, for the
// error message) and drops the rest.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
