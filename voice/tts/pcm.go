package tts

import (
	"encoding/binary"
	"io"

	"github.com/parleyhq/parley/voice/audio"
)

// pcmDecoder turns a byte stream of 16-bit little-endian samples into samples. Network
// reads split the stream anywhere, so an odd trailing byte is carried to the next call.
type pcmDecoder struct {
	carry    byte
	hasCarry bool
}

// decode returns the whole samples in b (with any carried byte in front) as a new slice.
func (d *pcmDecoder) decode(b []byte) []int16 {
	n := len(b)
	if d.hasCarry {
		n++
	}
	out := make([]int16, 0, n/2)
	i := 0
	if d.hasCarry && len(b) > 0 {
		out = append(out, int16(uint16(d.carry)|uint16(b[0])<<8))
		d.hasCarry = false
		i = 1
	}
	for ; i+1 < len(b); i += 2 {
		out = append(out, int16(binary.LittleEndian.Uint16(b[i:])))
	}
	if i < len(b) {
		d.carry, d.hasCarry = b[i], true
	}
	return out
}

// emptyStream is the stream of a request with nothing to say.
type emptyStream struct{}

func (emptyStream) Recv() (audio.Frame, error) { return audio.Frame{}, io.EOF }
func (emptyStream) Close() error               { return nil }
