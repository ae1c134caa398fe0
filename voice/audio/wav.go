package audio

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// ErrUnsupportedWAV reports a well-formed WAV file in an encoding this package does not
// read. The wrapping error names the encoding found.
var ErrUnsupportedWAV = errors.New("audio: wav: unsupported format")

// WAV format tags (the wFormatTag field of the fmt chunk), from Microsoft's mmreg.h.
const (
	wavFormatPCM        = 0x0001
	wavFormatIEEEFloat  = 0x0003
	wavFormatAlaw       = 0x0006
	wavFormatUlaw       = 0x0007
	wavFormatExtensible = 0xFFFE
)

// wavTagNames names the compressed formats a WAV file is likely to hold, for errors.
var wavTagNames = map[uint16]string{
	0x0002: "Microsoft ADPCM",
	0x0011: "IMA ADPCM",
	0x0031: "GSM 6.10",
	0x0055: "MP3",
	0x0064: "G.721 ADPCM",
}

// wavGUIDTail is the fixed tail of a WAVE_FORMAT_EXTENSIBLE SubFormat GUID: the first
// two bytes carry an ordinary format tag, the rest is this constant
// (xxxxxxxx-0000-0010-8000-00AA00389B71).
var wavGUIDTail = []byte{0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71}

// wavHeaderSize is the size of the canonical header WriteWAV writes: RIFF header (12),
// fmt chunk (8 + 16) and data chunk header (8).
const wavHeaderSize = 44

// ReadWAVFile reads a WAV file; see ReadWAV.
func ReadWAVFile(path string) (Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return Frame{}, fmt.Errorf("audio: wav: %w", err)
	}
	defer f.Close()
	fr, err := ReadWAV(f)
	if err != nil {
		return Frame{}, fmt.Errorf("%w (%s)", err, path)
	}
	return fr, nil
}

// ReadWAV reads a whole RIFF WAVE stream into one mono 16-bit Frame. It reads 16-bit
// PCM, 8-bit μ-law and 8-bit A-law, mono or stereo (stereo is averaged to mono), in
// plain or WAVE_FORMAT_EXTENSIBLE headers. Any other encoding (float, 8/24/32-bit
// PCM, ADPCM, GSM, ...) or more than two channels fails with an error wrapping
// ErrUnsupportedWAV.
//
// It tolerates what streaming writers leave behind: a data chunk whose declared size is
// 0 or 0xFFFFFFFF or runs past the end of the file is read up to EOF.
func ReadWAV(r io.Reader) (Frame, error) {
	br := bufio.NewReader(r)
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return Frame{}, fmt.Errorf("audio: wav: reading RIFF header: %w", noEOF(err))
	}
	switch id := string(hdr[0:4]); {
	case id == "RIFX":
		return Frame{}, fmt.Errorf("%w: big-endian RIFX", ErrUnsupportedWAV)
	case id == "RF64":
		return Frame{}, fmt.Errorf("%w: RF64 (files over 4 GiB)", ErrUnsupportedWAV)
	case id != "RIFF" || string(hdr[8:12]) != "WAVE":
		return Frame{}, errors.New("audio: wav: not a RIFF WAVE stream")
	}

	var (
		format  wavFormat
		haveFmt bool
	)
	for {
		var ch [8]byte
		if _, err := io.ReadFull(br, ch[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return Frame{}, errors.New("audio: wav: no data chunk")
			}
			return Frame{}, fmt.Errorf("audio: wav: reading chunk header: %w", noEOF(err))
		}
		id := string(ch[0:4])
		size := binary.LittleEndian.Uint32(ch[4:8])
		switch id {
		case "fmt ":
			if size < 16 || size > 1024 {
				return Frame{}, fmt.Errorf("audio: wav: fmt chunk of %d bytes", size)
			}
			buf := make([]byte, size+size&1)
			if _, err := io.ReadFull(br, buf); err != nil {
				return Frame{}, fmt.Errorf("audio: wav: reading fmt chunk: %w", noEOF(err))
			}
			var err error
			if format, err = parseWAVFormat(buf[:size]); err != nil {
				return Frame{}, err
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return Frame{}, errors.New("audio: wav: data chunk before fmt chunk")
			}
			return format.readData(br, size)
		default:
			// LIST, fact, cue, bext, ...: metadata we have no use for. Chunks are
			// padded to an even length.
			if _, err := br.Discard(int(size) + int(size&1)); err != nil {
				return Frame{}, fmt.Errorf("audio: wav: skipping %q chunk: %w", id, noEOF(err))
			}
		}
	}
}

// noEOF turns a bare EOF inside a structure into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

type wavFormat struct {
	tag      uint16 // after resolving WAVE_FORMAT_EXTENSIBLE
	channels int
	rate     int
	bits     int
}

func parseWAVFormat(b []byte) (wavFormat, error) {
	f := wavFormat{
		tag:      binary.LittleEndian.Uint16(b[0:2]),
		channels: int(binary.LittleEndian.Uint16(b[2:4])),
		rate:     int(binary.LittleEndian.Uint32(b[4:8])),
		bits:     int(binary.LittleEndian.Uint16(b[14:16])),
	}
	if f.tag == wavFormatExtensible {
		// cbSize (2) + wValidBitsPerSample (2) + dwChannelMask (4) + SubFormat (16).
		if len(b) < 40 {
			return f, fmt.Errorf("audio: wav: WAVE_FORMAT_EXTENSIBLE fmt chunk of %d bytes, want 40", len(b))
		}
		guid := b[24:40]
		if !bytes.Equal(guid[2:], wavGUIDTail) {
			return f, fmt.Errorf("%w: extensible sub-format %x", ErrUnsupportedWAV, guid)
		}
		f.tag = binary.LittleEndian.Uint16(guid[0:2])
	}
	var want int
	switch f.tag {
	case wavFormatPCM:
		want = 16
	case wavFormatUlaw, wavFormatAlaw:
		want = 8
	case wavFormatIEEEFloat:
		return f, fmt.Errorf("%w: %d-bit IEEE float (16-bit PCM, μ-law and A-law are read)", ErrUnsupportedWAV, f.bits)
	default:
		name := wavTagNames[f.tag]
		if name == "" {
			name = "unknown codec"
		}
		return f, fmt.Errorf("%w: format tag %#04x, %s (16-bit PCM, μ-law and A-law are read)", ErrUnsupportedWAV, f.tag, name)
	}
	if f.bits != want {
		return f, fmt.Errorf("%w: %d-bit %s (16-bit PCM, μ-law and A-law are read)", ErrUnsupportedWAV, f.bits, f.name())
	}
	if f.channels != 1 && f.channels != 2 {
		return f, fmt.Errorf("%w: %d channels (mono and stereo are read)", ErrUnsupportedWAV, f.channels)
	}
	if f.rate <= 0 || f.rate > MaxSampleRate {
		return f, fmt.Errorf("audio: wav: sample rate %d Hz", f.rate)
	}
	return f, nil
}

func (f wavFormat) name() string {
	switch f.tag {
	case wavFormatUlaw:
		return "μ-law"
	case wavFormatAlaw:
		return "A-law"
	default:
		return "PCM"
	}
}

// readData reads the data chunk. size is the declared size; the header is not trusted
// for allocation, so a lying header costs nothing until the bytes really arrive.
func (f wavFormat) readData(r io.Reader, size uint32) (Frame, error) {
	var src io.Reader = r
	if size != 0 && size != math.MaxUint32 {
		src = io.LimitReader(r, int64(size))
	}
	data, err := io.ReadAll(src)
	if err != nil {
		return Frame{}, fmt.Errorf("audio: wav: reading data: %w", err)
	}
	block := f.channels * f.bits / 8
	frames := len(data) / block // a torn final block is dropped
	out := make([]int16, frames)
	for i := range out {
		b := data[i*block : (i+1)*block]
		var sum int
		for c := 0; c < f.channels; c++ {
			switch f.tag {
			case wavFormatPCM:
				sum += int(int16(binary.LittleEndian.Uint16(b[2*c:])))
			case wavFormatUlaw:
				sum += int(UlawToLinear(b[c]))
			case wavFormatAlaw:
				sum += int(AlawToLinear(b[c]))
			}
		}
		// Averaging two channels cannot overflow int16; >>1 rounds toward -inf,
		// which biases by half an LSB, far below audibility.
		out[i] = int16(sum >> (f.channels - 1))
	}
	return Frame{Samples: out, Rate: f.rate}, nil
}

// WriteWAVFile writes f to path as a 16-bit PCM mono WAV file.
func WriteWAVFile(path string, f Frame) error {
	file, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	if err := WriteWAV(file, f); err != nil {
		_ = file.Close()
		return err
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	return nil
}

// WriteWAV writes f as a canonical 44-byte-header, 16-bit PCM mono WAV stream.
func WriteWAV(w io.Writer, f Frame) error {
	if f.Rate <= 0 || f.Rate > MaxSampleRate {
		return fmt.Errorf("audio: wav: sample rate %d Hz", f.Rate)
	}
	dataLen := 2 * len(f.Samples)
	if dataLen > math.MaxUint32-wavHeaderSize {
		return errors.New("audio: wav: over 4 GiB of audio")
	}
	buf := make([]byte, wavHeaderSize+dataLen)
	putWAVHeader(buf, f.Rate, uint32(dataLen))
	putPCM16(buf[wavHeaderSize:], f.Samples)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	return nil
}

func putWAVHeader(b []byte, rate int, dataLen uint32) {
	le := binary.LittleEndian
	copy(b[0:], "RIFF")
	le.PutUint32(b[4:], wavHeaderSize-8+dataLen)
	copy(b[8:], "WAVE")
	copy(b[12:], "fmt ")
	le.PutUint32(b[16:], 16)
	le.PutUint16(b[20:], wavFormatPCM)
	le.PutUint16(b[22:], 1)              // channels
	le.PutUint32(b[24:], uint32(rate))   // sample rate
	le.PutUint32(b[28:], uint32(rate)*2) // byte rate
	le.PutUint16(b[32:], 2)              // block align
	le.PutUint16(b[34:], 16)             // bits per sample
	copy(b[36:], "data")
	le.PutUint32(b[40:], dataLen)
}

func putPCM16(b []byte, s []int16) {
	for i, v := range s {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
}

// WAVWriter streams frames into a 16-bit PCM mono WAV file, for recordings whose length
// is not known up front. It is an audio Writer stage. The header's sizes are patched on
// Close, so the destination must be seekable.
type WAVWriter struct {
	w       io.WriteSeeker
	rate    int
	dataLen uint64
	buf     []byte
	closed  bool
}

// NewWAVWriter writes a WAV header to w and returns a writer for frames at rate.
func NewWAVWriter(w io.WriteSeeker, rate int) (*WAVWriter, error) {
	if rate <= 0 || rate > MaxSampleRate {
		return nil, fmt.Errorf("audio: wav: sample rate %d Hz", rate)
	}
	var hdr [wavHeaderSize]byte
	putWAVHeader(hdr[:], rate, 0)
	if _, err := w.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("audio: wav: %w", err)
	}
	return &WAVWriter{w: w, rate: rate}, nil
}

// WriteFrame appends f's samples. f.Rate must match the writer's rate.
func (ww *WAVWriter) WriteFrame(f Frame) error {
	if ww.closed {
		return ErrClosed
	}
	if f.Rate != ww.rate {
		return fmt.Errorf("audio: wav: got a %d Hz frame for a %d Hz file", f.Rate, ww.rate)
	}
	n := 2 * len(f.Samples)
	if ww.dataLen+uint64(n) > math.MaxUint32-wavHeaderSize {
		return errors.New("audio: wav: over 4 GiB of audio")
	}
	if cap(ww.buf) < n {
		ww.buf = make([]byte, n)
	}
	b := ww.buf[:n]
	putPCM16(b, f.Samples)
	if _, err := ww.w.Write(b); err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	ww.dataLen += uint64(n)
	return nil
}

// Close patches the header with the final sizes and leaves the stream positioned at its
// end. It does not close the underlying writer. Calling it again does nothing.
func (ww *WAVWriter) Close() error {
	if ww.closed {
		return nil
	}
	ww.closed = true
	var hdr [wavHeaderSize]byte
	putWAVHeader(hdr[:], ww.rate, uint32(ww.dataLen))
	if _, err := ww.w.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	if _, err := ww.w.Write(hdr[:]); err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	if _, err := ww.w.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("audio: wav: %w", err)
	}
	return nil
}
