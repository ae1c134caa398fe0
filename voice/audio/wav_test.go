package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// soxRaw decodes any file sox reads to raw 16-bit mono-or-not samples at its own rate.
func soxRaw(t *testing.T, path string) []int16 {
	t.Helper()
	raw := run(t, "sox", "-D", path, "-t", "raw", "-e", "signed", "-b", "16", "-")
	s := make([]int16, len(raw)/2)
	for i := range s {
		s[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
	}
	return s
}

// TestReadWAVFromSox reads files sox wrote in every accepted encoding and compares the
// samples with sox's own decoding of the same file.
func TestReadWAVFromSox(t *testing.T) {
	t.Parallel()
	requireTool(t, "sox")
	tests := []struct {
		name string
		rate int
		args []string // sox output options, before the file name
		// synth describes the signal: one tone per channel.
		synth []string
		// downmix: sox's raw output is stereo, and the reader must average it.
		downmix bool
	}{
		{"pcm16 mono 16k", 16000, []string{"-c", "1", "-b", "16"}, []string{"sine", "440"}, false},
		{"pcm16 mono 8k", 8000, []string{"-c", "1", "-b", "16"}, []string{"sine", "1000"}, false},
		{"pcm16 stereo 48k", 48000, []string{"-c", "2", "-b", "16"}, []string{"sine", "440", "sine", "1000"}, true},
		{"ulaw mono 8k", 8000, []string{"-c", "1", "-e", "mu-law"}, []string{"sine", "440"}, false},
		{"alaw mono 8k", 8000, []string{"-c", "1", "-e", "a-law"}, []string{"sine", "440"}, false},
		{"ulaw stereo 8k", 8000, []string{"-c", "2", "-e", "mu-law"}, []string{"sine", "300", "sine", "2000"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "in.wav")
			args := append([]string{"-D", "-n", "-r", strconv.Itoa(tt.rate)}, tt.args...)
			args = append(args, path, "synth", "0.5")
			args = append(args, tt.synth...)
			args = append(args, "gain", "-3")
			run(t, "sox", args...)

			got, err := ReadWAVFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Rate != tt.rate {
				t.Fatalf("rate %d, want %d", got.Rate, tt.rate)
			}
			want := soxRaw(t, path)
			if tt.downmix {
				mono := make([]int16, len(want)/2)
				for i := range mono {
					mono[i] = int16((int(want[2*i]) + int(want[2*i+1])) >> 1)
				}
				want = mono
			}
			if len(got.Samples) != tt.rate/2 || len(want) != len(got.Samples) {
				t.Fatalf("%d samples, sox %d, want %d", len(got.Samples), len(want), tt.rate/2)
			}
			if !slices16Equal(got.Samples, want) {
				t.Fatal("samples differ from sox's decoding")
			}
		})
	}
}

func slices16Equal(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReadWAVRejects checks that unsupported encodings fail clearly, naming what was
// found, and that broken streams fail without panicking.
func TestReadWAVRejects(t *testing.T) {
	t.Parallel()
	requireTool(t, "sox")
	tests := []struct {
		name        string
		args        []string // sox output options; nil for a hand-made stream
		raw         []byte
		unsupported bool
		contains    string
	}{
		{name: "float32", args: []string{"-c", "1", "-e", "floating-point", "-b", "32"}, unsupported: true, contains: "32-bit IEEE float"},
		{name: "pcm24 (extensible)", args: []string{"-c", "1", "-b", "24"}, unsupported: true, contains: "24-bit PCM"},
		{name: "pcm8", args: []string{"-c", "1", "-b", "8", "-e", "unsigned"}, unsupported: true, contains: "8-bit PCM"},
		{name: "4 channels", args: []string{"-c", "4", "-b", "16"}, unsupported: true, contains: "4 channels"},
		{name: "ima adpcm", args: []string{"-c", "1", "-e", "ima-adpcm"}, unsupported: true, contains: "0x0011, IMA ADPCM"},
		{name: "not riff", raw: []byte("OggS this is not a wav file at all"), contains: "not a RIFF WAVE"},
		{name: "rifx", raw: []byte("RIFX\x00\x00\x00\x00WAVE"), unsupported: true, contains: "RIFX"},
		{name: "empty", raw: nil, contains: "unexpected EOF"},
		{name: "no fmt", raw: []byte("RIFF\x0c\x00\x00\x00WAVEdata\x00\x00\x00\x00"), contains: "before fmt"},
		{name: "no data", raw: canonicalHeader(16000, 0)[:36], contains: "no data chunk"},
		{name: "truncated fmt", raw: canonicalHeader(16000, 0)[:30], contains: "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw := tt.raw
			if tt.args != nil {
				path := filepath.Join(t.TempDir(), "in.wav")
				args := append([]string{"-D", "-n", "-r", "16000"}, tt.args...)
				args = append(args, path, "synth", "0.1", "sine", "440")
				run(t, "sox", args...)
				var err error
				if raw, err = os.ReadFile(path); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ReadWAV(bytes.NewReader(raw))
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrUnsupportedWAV) != tt.unsupported {
				t.Errorf("errors.Is(ErrUnsupportedWAV) = %v, want %v: %v", !tt.unsupported, tt.unsupported, err)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}

func canonicalHeader(rate int, dataLen uint32) []byte {
	b := make([]byte, wavHeaderSize)
	putWAVHeader(b, rate, dataLen)
	return b
}

// TestReadWAVOddStreams covers headers that real writers produce: a streamed header
// with a bogus data size, extra chunks (with odd-length padding) before the data, a
// WAVE_FORMAT_EXTENSIBLE header for 16-bit PCM, and a torn final sample.
func TestReadWAVOddStreams(t *testing.T) {
	t.Parallel()
	samples := []int16{0, 1, -1, 32767, -32768, 1234}
	pcm := make([]byte, 2*len(samples))
	putPCM16(pcm, samples)

	extensibleFmt := func() []byte {
		b := make([]byte, 8+40)
		le := binary.LittleEndian
		copy(b, "fmt ")
		le.PutUint32(b[4:], 40)
		le.PutUint16(b[8:], wavFormatExtensible)
		le.PutUint16(b[10:], 1)
		le.PutUint32(b[12:], 16000)
		le.PutUint32(b[16:], 32000)
		le.PutUint16(b[20:], 2)
		le.PutUint16(b[22:], 16)
		le.PutUint16(b[24:], 22) // cbSize
		le.PutUint16(b[26:], 16) // valid bits
		le.PutUint32(b[28:], 4)  // channel mask: front centre
		le.PutUint16(b[32:], wavFormatPCM)
		copy(b[34:], wavGUIDTail)
		return b
	}
	riff := func(chunks ...[]byte) []byte {
		body := bytes.Join(chunks, nil)
		b := append([]byte("RIFF\x00\x00\x00\x00WAVE"), body...)
		binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
		return b
	}
	dataChunk := func(size uint32, payload []byte) []byte {
		b := []byte("data\x00\x00\x00\x00")
		binary.LittleEndian.PutUint32(b[4:], size)
		return append(b, payload...)
	}
	fmtChunk := canonicalHeader(16000, 0)[12:36]

	tests := []struct {
		name string
		in   []byte
		want []int16
	}{
		{"streamed size 0xFFFFFFFF", riff(fmtChunk, dataChunk(0xFFFFFFFF, pcm)), samples},
		{"streamed size 0", riff(fmtChunk, dataChunk(0, pcm)), samples},
		{"size past EOF", riff(fmtChunk, dataChunk(1000, pcm)), samples},
		{"size shorter than payload", riff(fmtChunk, dataChunk(4, pcm)), samples[:2]},
		{"odd LIST chunk first", riff([]byte("LIST\x03\x00\x00\x00abc\x00"), fmtChunk, dataChunk(uint32(len(pcm)), pcm)), samples},
		{"extensible pcm16", riff(extensibleFmt(), dataChunk(uint32(len(pcm)), pcm)), samples},
		{"torn last sample", riff(fmtChunk, dataChunk(uint32(len(pcm)+1), append(append([]byte{}, pcm...), 7))), samples},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ReadWAV(bytes.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got.Rate != 16000 || !slices16Equal(got.Samples, tt.want) {
				t.Fatalf("got %d Hz %v, want 16000 Hz %v", got.Rate, got.Samples, tt.want)
			}
		})
	}
}

// TestWriteWAV writes files and has sox read them back.
func TestWriteWAV(t *testing.T) {
	t.Parallel()
	requireTool(t, "sox")
	tests := []struct {
		name   string
		rate   int
		stream bool // through WAVWriter in 20 ms frames instead of WriteWAVFile
	}{
		{"whole 16k", 16000, false},
		{"whole 8k", 8000, false},
		{"streamed 48k", 48000, true},
		{"streamed 24k", 24000, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := sine(tt.rate, tt.rate*3/4, 440, 12000)
			path := filepath.Join(t.TempDir(), "out.wav")
			if tt.stream {
				f, err := os.Create(path)
				if err != nil {
					t.Fatal(err)
				}
				w, err := NewWAVWriter(f, tt.rate)
				if err != nil {
					t.Fatal(err)
				}
				step := tt.rate / 50
				for i := 0; i < len(want); i += step {
					if err := w.WriteFrame(Frame{Samples: want[i:min(i+step, len(want))], Rate: tt.rate}); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.WriteFrame(Frame{Samples: want[:1], Rate: tt.rate + 1}); err == nil {
					t.Error("WriteFrame accepted a frame at another rate")
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				if err := w.WriteFrame(Frame{Samples: want[:1], Rate: tt.rate}); !errors.Is(err, ErrClosed) {
					t.Errorf("WriteFrame after Close = %v, want ErrClosed", err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			} else if err := WriteWAVFile(path, Frame{Samples: want, Rate: tt.rate}); err != nil {
				t.Fatal(err)
			}

			info := string(run(t, "sox", "--i", path))
			for _, s := range []string{"Channels       : 1", "Sample Rate    : " + strconv.Itoa(tt.rate), "16-bit Signed Integer PCM"} {
				if !strings.Contains(info, s) {
					t.Errorf("sox --i does not say %q:\n%s", s, info)
				}
			}
			if got := soxRaw(t, path); !slices16Equal(got, want) {
				t.Errorf("sox read %d samples that differ from the %d written", len(got), len(want))
			}
			back, err := ReadWAVFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if back.Rate != tt.rate || !slices16Equal(back.Samples, want) {
				t.Error("ReadWAVFile does not give back what was written")
			}
		})
	}
}
