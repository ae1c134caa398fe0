package calls

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	libopus "gopkg.in/hraban/opus.v2"

	"github.com/parleyhq/parley/calls/recstore"
	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// clip reads a speech fixture at rate.
func recClip(t testing.TB, name string, rate int) []int16 {
	t.Helper()
	s, err := audio.ReadWAVFileAt(filepath.Join("..", "voice", "testdata", name), rate)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// correlation is the normalised cross-correlation of a and b at lag 0 (over the
// shorter length).
func xcorr(a, b []int16) float64 {
	n := min(len(a), len(b))
	var ab, aa, bb float64
	for i := range n {
		x, y := float64(a[i]), float64(b[i])
		ab += x * y
		aa += x * x
		bb += y * y
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}

// bestLag is the lag of b within a (in samples, in -maxLag..maxLag) where the two
// correlate best: 0 when b sits exactly at the start of a.
func xcorrLag(a, b []int16, maxLag int) (int, float64) {
	best, bestC := 0, -2.0
	for lag := -maxLag; lag <= maxLag; lag++ {
		var c float64
		if lag >= 0 {
			if lag >= len(a) {
				continue
			}
			c = xcorr(a[lag:], b)
		} else {
			if -lag >= len(b) {
				continue
			}
			c = xcorr(a, b[-lag:])
		}
		if c > bestC {
			best, bestC = lag, c
		}
	}
	return best, bestC
}

func nSamples(d time.Duration, rate int) int { return int(int64(d) * int64(rate) / int64(time.Second)) }

// TestMixerTiming lays real speech on both sides: the caller's through a continuous
// 48 kHz timeline (as voice.ClockedInput delivers it), the agent's as 20 ms frames
// stamped with jittery write times, two utterances with a pause between. Each must
// come out of the 16 kHz mix at its wall-clock offset, intact (contiguous despite the
// jitter), and the mix must last exactly as long as the call.
func TestMixerTiming(t *testing.T) {
	t.Parallel()
	const in, rate = 48000, 16000
	hello, agentSpeech := recClip(t, "hello.wav", in), recClip(t, "interrupt.wav", in)
	hello16 := recClip(t, "hello.wav", rate)
	yeah := recClip(t, "yeah.wav", in)

	var out []int16
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m, err := newMixer(rate, t0, audio.WriterFunc(func(f audio.Frame) error {
		if f.Rate != rate {
			return fmt.Errorf("mixer wrote %d Hz", f.Rate)
		}
		out = append(out, f.Samples...)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	// The call: 12 s. Caller: hello at 0.5 s. Agent: interrupt.wav written from 4.0 s,
	// then yeah.wav from 9.0 s.
	const total = 12 * time.Second
	callerAt, agent1At, agent2At := 500*time.Millisecond, 4*time.Second, 9*time.Second
	caller := make([]int16, nSamples(total, in))
	copy(caller[nSamples(callerAt, in):], hello)
	type agentFrame struct {
		at      time.Duration
		samples []int16
	}
	var agent []agentFrame
	for _, u := range []struct {
		at time.Duration
		s  []int16
	}{{agent1At, agentSpeech}, {agent2At, yeah}} {
		for i := 0; i < len(u.s); i += 960 {
			f := make([]int16, 960)
			copy(f, u.s[i:])
			// Scheduling jitter: up to ±9 ms either way, deterministic.
			j := time.Duration((i/960*7919)%19-9) * time.Millisecond
			agent = append(agent, agentFrame{u.at + time.Duration(i/960)*20*time.Millisecond + j, f})
		}
	}
	// Feed in arrival order: the caller's 20 ms chunks as the clock reaches their end,
	// agent frames as their write time passes (they reach the mixer a little late, as
	// through the tap's queue).
	next := 0
	for k := 0; k*960 < len(caller); k++ {
		now := time.Duration(k+1) * 20 * time.Millisecond
		if err := m.addCaller(audio.Frame{Samples: caller[k*960 : (k+1)*960], Rate: in}, t0.Add(now)); err != nil {
			t.Fatal(err)
		}
		for next < len(agent) && agent[next].at < now {
			if err := m.addAgent(audio.Frame{Samples: agent[next].samples, Rate: in}, t0.Add(agent[next].at)); err != nil {
				t.Fatal(err)
			}
			next++
		}
		if err := m.advance(t0.Add(now)); err != nil {
			t.Fatal(err)
		}
		// Memory stays bounded: nothing older than the settle time is held back.
		if held := m.hi - m.base; held > int64(nSamples(mixSettle+100*time.Millisecond, rate)) {
			t.Fatalf("at %v the mixer holds %d samples", now, held)
		}
	}
	if err := m.close(); err != nil {
		t.Fatal(err)
	}
	if want := nSamples(total, rate); len(out) < want-320 || len(out) > want+320 {
		t.Fatalf("mix is %d samples, want %d (12 s)", len(out), want)
	}
	// Each side where it was said, and intact: the mixed stretch correlates with the
	// clip as the mixer's resampler would produce it, at lag 0.
	at := func(d time.Duration) []int16 { return out[nSamples(d, rate):] }
	// agent1At is the write time of its first frame, whose jitter (frame 0: -9 ms)
	// sets where the stretch starts.
	agent1 := recClip(t, "interrupt.wav", rate)
	for _, c := range []struct {
		name string
		at   time.Duration
		want []int16
	}{
		{"caller", callerAt, hello16},
		{"agent, first utterance", agent1At - 9*time.Millisecond, agent1},
		{"agent, second utterance", agent2At - 9*time.Millisecond, recClip(t, "yeah.wav", rate)},
	} {
		lag, corr := xcorrLag(at(c.at), c.want, nSamples(30*time.Millisecond, rate))
		t.Logf("%s: best lag %d samples, correlation %.3f", c.name, lag, corr)
		if iabs(lag) > 16 || corr < 0.95 {
			t.Errorf("%s: best lag %d samples (want within 1 ms), correlation %.3f (want > 0.95)", c.name, lag, corr)
		}
	}
	// And silence between: nothing leaked or was smeared across the pause.
	if db := audio.DBFS(out[nSamples(7800*time.Millisecond, rate):nSamples(8900*time.Millisecond, rate)]); db > -60 {
		t.Errorf("pause between the agent's utterances at %.1f dBFS", db)
	}
}

// feedClocked plays a caller's audio into m as a LiveKit or Twilio transport feeds a
// session through voice.ClockedInput: frame k of said (20 ms at in Hz) is written
// when it arrives (arrive[k], from t0), and every 20 ms a frame of digital silence is
// fed for as long as the audio fed lags the clock by more than ClockedInput's slack.
// It returns the mix at rate.
func feedClocked(t *testing.T, said []int16, in, rate int, arrive []time.Duration) []int16 {
	t.Helper()
	var out []int16
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m, err := newMixer(rate, t0, audio.WriterFunc(func(f audio.Frame) error {
		out = append(out, f.Samples...)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	frames := len(said) / (in / 50)
	fed, next, zeros := 0, 0, make([]int16, in/50)
	slack := nSamples(60*time.Millisecond, in)
	for tick := 20 * time.Millisecond; next < frames; tick += 20 * time.Millisecond {
		at := t0.Add(tick)
		for next < frames && arrive[next] <= tick {
			if err := m.addCaller(audio.Frame{Samples: said[next*in/50 : (next+1)*in/50], Rate: in}, at); err != nil {
				t.Fatal(err)
			}
			fed += in / 50
			next++
		}
		for nSamples(tick, in)-fed > slack {
			if err := m.addCaller(audio.Frame{Samples: zeros, Rate: in}, at); err != nil {
				t.Fatal(err)
			}
			fed += in / 50
		}
		if err := m.advance(at); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// speechAt checks that clip (at rate) is in out within a frame or so after at.
func speechAt(t *testing.T, name string, out, clip []int16, rate int, at time.Duration) {
	t.Helper()
	// Search from 0.5 s before to 0.5 s after where it was said.
	from := nSamples(at-500*time.Millisecond, rate)
	lag, corr := xcorrLag(out[from:], clip, nSamples(time.Second, rate))
	off := time.Duration(lag)*time.Second/time.Duration(rate) - 500*time.Millisecond
	t.Logf("%s: %v from where it was said (correlation %.3f)", name, off, corr)
	if off < -20*time.Millisecond || off > 40*time.Millisecond || corr < 0.9 {
		t.Errorf("%s lands %v from where it was said (correlation %.3f); want within a frame or two", name, off, corr)
	}
}

// noisy is a microphone's noise floor added to s: a caller is never digital silence
// (espeak-ng's pauses between words are).
func noisy(s []int16) []int16 {
	for i := range s {
		s[i] += int16(i%5 - 2)
	}
	return s
}

// TestMixerCallerBurst: the network stalls the caller's audio twice for 400 ms, and
// each time delivers it in a burst; meanwhile voice.ClockedInput fed silence, so the
// caller's stream runs ahead of the clock. The mixer puts the late speech back where
// it was said: both utterances land at their wall-clock offsets (within a frame),
// where uncorrected each stall would push the rest of the caller's side a third of a
// second later, out of step with the agent.
func TestMixerCallerBurst(t *testing.T) {
	t.Parallel()
	const in, rate = 48000, 16000
	// What the caller says: hello at 1.0 s, yeah at 6.0 s, in 10 s.
	said := make([]int16, 10*in)
	copy(said[in:], recClip(t, "hello.wav", in))
	copy(said[6*in:], recClip(t, "yeah.wav", in))
	noisy(said)
	// When each 20 ms frame reaches the worker: on time, except the frames said in
	// [0.9 s, 1.3 s) and [5.9 s, 6.3 s), which all arrive together at the end of their
	// stall.
	arrive := make([]time.Duration, len(said)/960)
	for k := range arrive {
		end := time.Duration(k+1) * 20 * time.Millisecond
		arrive[k] = end
		for _, st := range []time.Duration{900 * time.Millisecond, 5900 * time.Millisecond} {
			if end > st && end <= st+400*time.Millisecond {
				arrive[k] = st + 400*time.Millisecond
			}
		}
	}
	out := feedClocked(t, said, in, rate, arrive)
	speechAt(t, "first utterance", out, recClip(t, "hello.wav", rate), rate, time.Second)
	speechAt(t, "second utterance", out, recClip(t, "yeah.wav", rate), rate, 6*time.Second)
}

// TestMixerCallerBacklog: when the conversation starts, the transport hands over
// half a second it had buffered while the session was set up, at once. That audio was
// said before the recording began; the caller's side must start in step with the
// clock, not half a second late for the whole call.
func TestMixerCallerBacklog(t *testing.T) {
	t.Parallel()
	const in, rate = 48000, 16000
	// The caller's audio from 0.5 s before the start: hello at 1.0 s after it.
	said := make([]int16, 6*in)
	copy(said[3*in/2:], recClip(t, "hello.wav", in))
	noisy(said)
	arrive := make([]time.Duration, len(said)/960)
	for k := range arrive {
		arrive[k] = max(time.Duration(k+1)*20*time.Millisecond-500*time.Millisecond, 20*time.Millisecond)
	}
	out := feedClocked(t, said, in, rate, arrive)
	speechAt(t, "speech after the backlog", out, recClip(t, "hello.wav", rate), rate, time.Second)
}

func iabs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// TestLimit: the sum passes untouched up to the knee and bends smoothly, monotonically
// and within int16 above it, never wrapping around.
func TestLimit(t *testing.T) {
	t.Parallel()
	for _, v := range []int32{0, 1, -1, 1000, -24576, 24576} {
		if got := limit(v); int32(got) != v {
			t.Errorf("limit(%d) = %d, want it unchanged", v, got)
		}
	}
	prev := limit(limitKnee)
	for v := int32(limitKnee + 1); v <= 2*65536; v += 7 {
		got := limit(v)
		if got < prev || got > 32767 || limit(-v) != -got {
			t.Fatalf("limit(%d) = %d after %d; limit(-v) = %d", v, got, prev, limit(-v))
		}
		prev = got
	}
	if prev < 32700 {
		t.Errorf("limit of twice full scale is %d: the limiter wastes headroom", prev)
	}
}

// --- Ogg Opus ---

// oggPage is one parsed page.
type oggPage struct {
	flags   byte
	granule int64
	serial  uint32
	seq     uint32
	packets [][]byte
}

// crcBitwise is Ogg's CRC computed bit by bit from the RFC 3533 definition, apart
// from the table the writer uses.
func crcBitwise(b []byte) uint32 {
	var crc uint32
	for _, v := range b {
		crc ^= uint32(v) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// parseOgg reads an Ogg stream page by page, checking the capture pattern, version
// and every page's CRC, and reassembles packets across pages.
func parseOgg(t *testing.T, data []byte) []oggPage {
	t.Helper()
	var pages []oggPage
	var partial []byte
	for len(data) > 0 {
		if len(data) < 27 || string(data[:4]) != "OggS" || data[4] != 0 {
			t.Fatalf("page %d: no Ogg page header", len(pages))
		}
		nseg := int(data[26])
		if len(data) < 27+nseg {
			t.Fatalf("page %d: truncated segment table", len(pages))
		}
		segs := data[27 : 27+nseg]
		size := 0
		for _, s := range segs {
			size += int(s)
		}
		end := 27 + nseg + size
		if len(data) < end {
			t.Fatalf("page %d: truncated body", len(pages))
		}
		page := append([]byte(nil), data[:end]...)
		want := binary.LittleEndian.Uint32(page[22:])
		binary.LittleEndian.PutUint32(page[22:], 0)
		if got := crcBitwise(page); got != want {
			t.Fatalf("page %d: CRC %08x, header says %08x", len(pages), got, want)
		}
		p := oggPage{flags: data[5], granule: int64(binary.LittleEndian.Uint64(data[6:])),
			serial: binary.LittleEndian.Uint32(data[14:]), seq: binary.LittleEndian.Uint32(data[18:])}
		body := data[27+nseg : end]
		for _, s := range segs {
			partial = append(partial, body[:s]...)
			body = body[s:]
			if s < 255 {
				p.packets = append(p.packets, partial)
				partial = nil
			}
		}
		pages = append(pages, p)
		data = data[end:]
	}
	if len(partial) > 0 {
		t.Fatal("stream ends inside a packet")
	}
	return pages
}

// decodeOggOpus checks an Ogg Opus stream against RFC 7845 (header pages, flags,
// sequence numbers, granule positions) and decodes it with libopus, returning the
// audio at 48 kHz with pre-skip and end trimming applied, and OpusHead's input rate.
func decodeOggOpus(t *testing.T, data []byte) ([]int16, int) {
	t.Helper()
	pages := parseOgg(t, data)
	if len(pages) < 3 {
		t.Fatalf("%d pages: want OpusHead, OpusTags and audio", len(pages))
	}
	for i, p := range pages {
		if p.seq != uint32(i) || p.serial != pages[0].serial {
			t.Fatalf("page %d: sequence %d, serial %x", i, p.seq, p.serial)
		}
		if bos := p.flags&oggBOS != 0; bos != (i == 0) {
			t.Fatalf("page %d: BOS flag %v", i, bos)
		}
		if eos := p.flags&oggEOS != 0; eos != (i == len(pages)-1) {
			t.Fatalf("page %d: EOS flag %v", i, eos)
		}
	}
	head := pages[0].packets
	if len(head) != 1 || len(head[0]) != 19 || string(head[0][:8]) != "OpusHead" || head[0][8] != 1 || head[0][9] != 1 || head[0][18] != 0 {
		t.Fatalf("OpusHead page: %q", head)
	}
	preSkip := int(binary.LittleEndian.Uint16(head[0][10:]))
	inRate := int(binary.LittleEndian.Uint32(head[0][12:]))
	if pages[0].granule != 0 || pages[1].granule != 0 {
		t.Fatal("header pages must have granule position 0")
	}
	tags := pages[1].packets
	if len(tags) != 1 || !strings.HasPrefix(string(tags[0]), "OpusTags") {
		t.Fatalf("OpusTags page: %q", tags)
	}
	dec, err := libopus.NewDecoder(48000, 1)
	if err != nil {
		t.Fatal(err)
	}
	var pcm []int16
	buf := make([]int16, 5760)
	decoded := int64(0)
	prev := int64(0)
	for i, p := range pages[2:] {
		for _, pkt := range p.packets {
			n, err := dec.Decode(pkt, buf)
			if err != nil {
				t.Fatalf("page %d: decode: %v", i+2, err)
			}
			pcm = append(pcm, buf[:n]...)
			decoded += int64(n)
		}
		last := i == len(pages)-3
		// A page's granule position is the samples decoded through its last packet;
		// the last page's may be less (end trimming), but not below the previous page's.
		if (!last && p.granule != decoded) || (last && (p.granule > decoded || p.granule < prev)) {
			t.Fatalf("page %d: granule %d, %d samples decoded (previous page %d)", i+2, p.granule, decoded, prev)
		}
		prev = p.granule
	}
	final := pages[len(pages)-1].granule
	return pcm[preSkip:final], inRate
}

// TestOggOpus: the writer's stream is valid Ogg Opus (every page's CRC, the header
// pages, granule positions) that libopus decodes to the input: the same length to the
// sample once pre-skip and end trimming are applied, and aligned (pre-skip is right:
// the decoded speech starts where the input's does).
func TestOggOpus(t *testing.T) {
	t.Parallel()
	for _, rate := range []int{8000, 16000, 48000} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			t.Parallel()
			speech := recClip(t, "hello.wav", rate)
			// 0.3 s of silence, speech, and an odd tail that is not a whole frame.
			in := append(make([]int16, nSamples(300*time.Millisecond, rate)), speech...)
			in = append(in, make([]int16, 123)...)
			var b bytes.Buffer
			w, err := newOggOpusWriter(&b, rate, 24000)
			if err != nil {
				t.Fatal(err)
			}
			// In uneven chunks, as the mixer commits them.
			for i := 0; i < len(in); i += 777 {
				if err := w.WriteFrame(audio.Frame{Samples: in[i:min(i+777, len(in))], Rate: rate}); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			pcm, inRate := decodeOggOpus(t, b.Bytes())
			if inRate != rate {
				t.Errorf("OpusHead input rate %d, want %d", inRate, rate)
			}
			if want := len(in) * 48000 / rate; len(pcm) != want {
				t.Errorf("decoded %d samples at 48 kHz, want %d", len(pcm), want)
			}
			ref, err := audio.Resample(in, rate, 48000)
			if err != nil {
				t.Fatal(err)
			}
			lag, corr := xcorrLag(pcm, ref, 96)
			t.Logf("%d Hz: %d bytes for %.2f s; lag %d, correlation %.3f", rate, b.Len(),
				float64(len(in))/float64(rate), lag, corr)
			if iabs(lag) > 24 || corr < 0.8 {
				t.Errorf("decoded audio: lag %d samples at 48 kHz (want within 0.5 ms), correlation %.3f", lag, corr)
			}
		})
	}
}

// --- recordings on a database ---

// newRecordings returns recordings of e's calls in format, stored under a temporary
// directory.
func newRecordings(t *testing.T, e *env, format string) (*Recordings, *recstore.Local) {
	t.Helper()
	store, err := recstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	r, err := NewRecordings(e.svc, RecordingConfig{Store: store, Format: format, TempDir: tmp, PublicURL: "https://parley.example/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Nothing of a recording is left in the temporary directory once it is done.
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("temporary files left: %v", left)
		}
	})
	return r, store
}

// readRecording decodes a stored recording to 16 kHz samples.
func readRecording(t *testing.T, obj *recstore.Object) []int16 {
	t.Helper()
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != obj.Size {
		t.Fatalf("read %d bytes of %d", len(data), obj.Size)
	}
	switch obj.ContentType {
	case "audio/wav":
		f, err := audio.ReadWAV(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if f.Rate != 16000 {
			t.Fatalf("WAV at %d Hz", f.Rate)
		}
		return f.Samples
	case "audio/ogg":
		pcm, _ := decodeOggOpus(t, data)
		s, err := audio.Resample(pcm, 48000, 16000)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatalf("content type %q", obj.ContentType)
	return nil
}

// TestCallRecording drives a CallRecording as a session would, in real time: the
// caller's speech as a continuous 20 ms stream, the agent's frames while it talks.
// The stored file (WAV and Ogg) lasts as long as the call, has each side where it
// was said, and is served to the call's tenant only; the call row gets its URL.
func TestCallRecording(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, format := range []string{FormatWAV, FormatOgg} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			recs, _ := newRecordings(t, e, format)
			tenant, other := e.tenant(t), e.tenant(t)
			c := e.call(t, tenant)
			ctx := t.Context()
			if _, err := e.svc.Begin(ctx, c.CallID, time.Now()); err != nil {
				t.Fatal(err)
			}
			rec, err := recs.Prepare(c.CallID)
			if err != nil {
				t.Fatal(err)
			}
			// Caller: speech from 0.2 s at 48 kHz. Agent: "yeah" at 8 kHz (a phone
			// leg's output rate) from 1.6 s. The call lasts 2.4 s.
			caller := append(make([]int16, 9600), recClip(t, "hello.wav", 48000)[:48000]...)
			caller = append(caller, make([]int16, 48000*2)...)
			yeah := recClip(t, "yeah.wav", 8000)
			start := time.Now()
			rec.Begin(start)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			var agentStart time.Time
			for k := 0; k < 120; k++ {
				<-tick.C
				rec.CallerAudio(audio.Frame{Samples: caller[k*960 : (k+1)*960], Rate: 48000})
				if i := (k - 80) * 160; k >= 80 && i < len(yeah) {
					if agentStart.IsZero() {
						agentStart = time.Now()
					}
					f := make([]int16, 160)
					copy(f, yeah[i:])
					rec.AgentAudio(audio.Frame{Samples: f, Rate: 8000})
				}
			}
			callLen := time.Since(start)
			if _, err := recs.Open(ctx, tenant, c.CallID); !errors.Is(err, ErrRecordingNotFound) {
				t.Fatalf("open while live: %v", err)
			}
			url, err := rec.Finish(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rec.Discard() // after Finish: nothing
			if want := "https://parley.example/v1/calls/" + c.CallID + "/recording"; url != want {
				t.Errorf("url %q, want %q", url, want)
			}
			if err := e.svc.Finish(ctx, c.CallID, Finish{Status: StatusCompleted, Reason: ReasonUserHangup}); err != nil {
				t.Fatal(err)
			}
			got, err := e.svc.Get(ctx, tenant, c.CallID)
			if err != nil || got.RecordingURL != url {
				t.Fatalf("call's recording_url %q (%v)", got.RecordingURL, err)
			}
			// Tenancy: another tenant cannot even tell the call exists.
			if _, err := recs.Open(ctx, other, c.CallID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("open from another tenant: %v, want ErrNotFound", err)
			}
			obj, err := recs.Open(ctx, tenant, c.CallID)
			if err != nil {
				t.Fatal(err)
			}
			defer obj.Close()
			wantType := map[string]string{FormatWAV: "audio/wav", FormatOgg: "audio/ogg"}[format]
			if obj.ContentType != wantType {
				t.Errorf("content type %q, want %q", obj.ContentType, wantType)
			}
			s := readRecording(t, obj)
			dur := time.Duration(len(s)) * time.Second / 16000
			t.Logf("%s: %d bytes, %v of audio for a %v call", format, obj.Size, dur, callLen)
			if d := dur - callLen; d < -100*time.Millisecond || d > 100*time.Millisecond {
				t.Errorf("recording lasts %v, the call %v", dur, callLen)
			}
			// The caller's speech at 0.2 s, the agent's where it was written.
			callerOn, err := audio.Onset(s, 16000, -40)
			if err != nil || callerOn < 150*time.Millisecond || callerOn > 400*time.Millisecond {
				t.Errorf("caller speech starts at %v (%v), want about 0.2 s + the clip's own lead-in", callerOn, err)
			}
			from := agentStart.Sub(start) - 80*time.Millisecond
			agentOn, err := audio.Onset(s[nSamples(from, 16000):], 16000, -40)
			if err != nil || agentOn > 150*time.Millisecond {
				t.Errorf("agent speech starts %v after %v (%v), want within the first frames", agentOn, from, err)
			}
		})
	}
}

// TestSweepTemp: recordings in progress left by a dead worker are removed once old
// enough; a live one, and other files, are not.
func TestSweepTemp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	store, err := recstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := NewRecordings(e.svc, RecordingConfig{Store: store, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	live, err := recs.Prepare("call_live")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Discard()
	old := filepath.Join(dir, tempPrefix+"call_dead-123.ogg")
	other := filepath.Join(dir, "unrelated.ogg")
	for _, p := range []string{old, other} {
		if err := os.WriteFile(p, []byte("OggS"), 0o600); err != nil {
			t.Fatal(err)
		}
		long := time.Now().Add(-3 * time.Hour)
		if err := os.Chtimes(p, long, long); err != nil {
			t.Fatal(err)
		}
	}
	n, err := recs.SweepTemp(2 * time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want 1", n, err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the dead worker's file is still there: %v", err)
	}
	for _, p := range []string{other, live.file.Name()} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	os.Remove(other)
}

// recordingRunnerEnv is newRunnerEnv (runner_test.go) with recordings in format: a
// dispatch.Worker on the real livekit-server running calls with a Runner that records.
func recordingRunnerEnv(t *testing.T, srv *openaitest.Server, format string) (*runnerEnv, *Recordings) {
	t.Helper()
	var recs *Recordings
	e := startRunnerEnv(t, srv, "parley-rec-test", func(e *env, r *Runner) {
		recs, _ = newRecordings(t, e, format)
		r.CallerWait = 15 * time.Second
		r.Recordings = recs
	})
	return e, recs
}

// TestRunnerRecording records a real call: a caller joins a LiveKit room through
// the real server, hears the greeting, asks a question in espeak-ng speech and hears
// the answer, then hangs up. The stored Ogg file has the agent's voice where the
// caller heard it and the caller's where it was said, and silence around them: both
// sides, on one timeline. A second agent with recording_enabled off gets no recording.
func TestRunnerRecording(t *testing.T) {
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Can I book a cleaning on Monday?"},
		Replies:     []openaitest.Reply{{Text: "Yes, Monday at ten is free."}},
	})
	e, recs := recordingRunnerEnv(t, srv, FormatOgg)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	wc, err := e.svc.StartWeb(ctx, tenant, agentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	caller, err := lktest.Join(ctx, e.lk.URL(), wc.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	joined := time.Now()
	greeting, err := caller.WaitSpeech(ctx, joined)
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	greetingEnd, err := caller.WaitSilence(ctx, greeting, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	q := recClip(t, "hello.wav", lktest.Rate)
	caller.Say(lktest.Silence(500 * time.Millisecond))
	asked := caller.Say(q)
	qEnd := asked.Add(time.Duration(len(q)) * time.Second / lktest.Rate)
	caller.Say(lktest.Silence(2 * time.Second))
	answer, err := caller.WaitSpeech(ctx, qEnd)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	answerEnd, err := caller.WaitSilence(ctx, answer, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	caller.Close()
	var done Call
	eventually(t, "the call to complete", func() bool {
		done, err = e.svc.Get(ctx, tenant, wc.CallID)
		return err == nil && done.CallStatus == StatusCompleted
	})
	if want := "https://parley.example" + RecordingPath(wc.CallID); done.RecordingURL != want {
		t.Fatalf("recording_url %q, want %q", done.RecordingURL, want)
	}
	obj, err := recs.Open(ctx, tenant, wc.CallID)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	s := readRecording(t, obj)
	start := *done.StartTimestamp
	rel := func(at time.Time) time.Duration { return at.Sub(start) }
	dur := time.Duration(len(s)) * time.Second / 16000
	t.Logf("recording: %d bytes, %v; call %d ms; greeting %v..%v, question %v..%v, answer %v..%v",
		obj.Size, dur, done.DurationMS, rel(greeting), rel(greetingEnd), rel(asked), rel(qEnd), rel(answer), rel(answerEnd))
	if d := dur - time.Duration(done.DurationMS)*time.Millisecond; d < -time.Second || d > time.Second {
		t.Errorf("recording lasts %v, the call %d ms", dur, done.DurationMS)
	}
	// level of the recording over [from, to) relative to the call's start, in 100 ms
	// blocks: the share of blocks with speech in them.
	speechShare := func(from, to time.Duration) float64 {
		n, loud := 0, 0
		for at := from; at+100*time.Millisecond <= to; at += 100 * time.Millisecond {
			i, j := nSamples(at, 16000), nSamples(at+100*time.Millisecond, 16000)
			if i < 0 || j > len(s) {
				continue
			}
			n++
			if audio.DBFS(s[i:j]) > -45 {
				loud++
			}
		}
		if n == 0 {
			return -1
		}
		return float64(loud) / float64(n)
	}
	// The windows are taken a little inside the edges: the agent's voice reaches the
	// caller some tens of milliseconds after it was written, and the caller's reaches
	// the session as late.
	margin := 150 * time.Millisecond
	for _, w := range []struct {
		name     string
		from, to time.Time
		min, max float64
	}{
		{"agent's greeting", greeting.Add(margin), greetingEnd.Add(-margin - 300*time.Millisecond), 0.6, 1},
		{"caller's question", asked.Add(margin), qEnd.Add(-margin), 0.6, 1},
		{"agent's answer", answer.Add(margin), answerEnd.Add(-margin - 300*time.Millisecond), 0.6, 1},
		// Before the question: the pause the caller left after the greeting.
		{"silence before the question", greetingEnd.Add(margin), asked.Add(-margin), 0, 0.2},
	} {
		share := speechShare(rel(w.from), rel(w.to))
		t.Logf("%s (%v..%v): speech in %.0f%% of 100 ms blocks", w.name, rel(w.from), rel(w.to), 100*share)
		if share < w.min || share > w.max {
			t.Errorf("%s: speech in %.0f%% of the window, want %.0f%%..%.0f%%", w.name, 100*share, 100*w.min, 100*w.max)
		}
	}
	// The agent's side where the agent said it: its greeting starts in the recording
	// when it was written to the room, a network path ahead of when the caller heard it.
	if on, err := audio.Onset(s, 16000, -45); err != nil || on > rel(greeting)+20*time.Millisecond || on < rel(greeting)-300*time.Millisecond {
		t.Errorf("the greeting starts at %v in the recording (%v); the caller heard it at %v", on, err, rel(greeting))
	} else {
		t.Logf("greeting in the recording at %v; heard by the caller at %v", on, rel(greeting))
	}
	// The caller's side is the caller's voice: the recording correlates with the
	// question at its place, within the path's delay (the question reaches the worker
	// after it was sent, through Opus and WebRTC both ways).
	q16 := recClip(t, "hello.wav", 16000)
	if qi := nSamples(rel(asked)-100*time.Millisecond, 16000); qi > 0 && qi+len(q16) < len(s) {
		lag, corr := xcorrLag(s[qi:], q16, nSamples(500*time.Millisecond, 16000))
		off := time.Duration(lag)*time.Second/16000 - 100*time.Millisecond
		t.Logf("question in the recording: %v after it was sent, correlation %.3f", off, corr)
		if off < 0 || off > 300*time.Millisecond || corr < 0.6 {
			t.Errorf("the caller's question is not in the recording at its place: %v after it was sent (correlation %.3f)", off, corr)
		}
	}

	// An agent with recording off: the call runs, nothing is stored.
	offID := e.newAgent(t, tenant, `,"recording_enabled":false`)
	if a, err := e.agents.Resolve(ctx, tenant, offID); err != nil || a.RecordingEnabled {
		t.Fatalf("agent with recording off: %+v, %v", a.RecordingEnabled, err)
	}
	wc2, err := e.svc.StartWeb(ctx, tenant, offID, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := lktest.Join(ctx, e.lk.URL(), wc2.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	g2, err := c2.WaitSpeech(ctx, time.Now())
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if _, err := c2.WaitSilence(ctx, g2, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	eventually(t, "the second call to complete", func() bool {
		done, err = e.svc.Get(ctx, tenant, wc2.CallID)
		return err == nil && !done.Live()
	})
	if done.RecordingURL != "" {
		t.Errorf("recording off: recording_url %q", done.RecordingURL)
	}
	if _, err := recs.Open(ctx, tenant, wc2.CallID); !errors.Is(err, ErrRecordingNotFound) {
		t.Errorf("recording off: open: %v, want ErrRecordingNotFound", err)
	}
	eventually(t, "the worker to be idle", func() bool { return e.worker.Running() == 0 })
}
