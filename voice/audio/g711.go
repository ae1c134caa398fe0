package audio

// G.711 (ITU-T Recommendation G.711, 1988) companding: 8-bit μ-law, used by North
// American and Japanese telephony and by Twilio Media Streams, and 8-bit A-law, used by
// European telephony. Both squeeze 16-bit linear PCM into 8 bits with a piecewise-linear
// approximation of a logarithm: 8 segments (chords) of 16 steps each plus a sign bit,
// giving roughly 12-13 bits of dynamic range at 8 bits of cost.
//
// G.711 encodes 14-bit (μ-law) or 13-bit (A-law) uniform PCM. The encoders here round
// a 16-bit sample to that resolution (to nearest, rather than truncating, which would
// bias every sample down by half a step of the coarser grid) and then apply the
// CCITT/Sun reference encoder. That is exactly what sox does, and the tests check it
// against sox for every one of the 65536 inputs. Decoding returns the midpoint of each
// code's step, as every G.711 decoder does. Both directions are table lookups; the
// tables are built once, at package initialization, from the reference algorithm below.

const (
	// ulawBias is added to the 14-bit magnitude before segment search: it makes the
	// segment boundaries powers of two (33 = 0x84 >> 2, the bias in 16-bit terms).
	ulawBias = 0x84
	// ulawClip is the largest 14-bit magnitude μ-law represents (8159 + 33 = 0x1FFF,
	// the top of segment 7).
	ulawClip = 8159
)

var (
	// ulawEncodeTable maps a 14-bit sample (two's complement, as uint16 >> 2) to its
	// code; alawEncodeTable does the same for 13 bits.
	ulawEncodeTable = buildEncodeTable(14, linearToUlawRef)
	alawEncodeTable = buildEncodeTable(13, linearToAlawRef)
	ulawDecodeTable = buildDecodeTable(ulawToLinearRef)
	alawDecodeTable = buildDecodeTable(alawToLinearRef)
)

// LinearToUlaw encodes one 16-bit sample as μ-law.
func LinearToUlaw(s int16) byte { return ulawEncodeTable[ulawIndex(s)] }

// UlawToLinear decodes one μ-law byte to a 16-bit sample (range ±32124).
func UlawToLinear(b byte) int16 { return ulawDecodeTable[b] }

// LinearToAlaw encodes one 16-bit sample as A-law.
func LinearToAlaw(s int16) byte { return alawEncodeTable[alawIndex(s)] }

// ulawIndex rounds s to 14 bits: adding half a 14-bit step (2) before the arithmetic
// shift rounds to nearest; the min keeps the top of the range from wrapping (32766 and
// 32767 round to 8191, the largest 14-bit value). As uint16 >> 2, a negative result
// lands in the upper half of the table, where two's complement puts it.
func ulawIndex(s int16) uint16 { return uint16(min(int32(s)+2, 32767)) >> 2 }

// alawIndex rounds s to 13 bits, as ulawIndex does to 14.
func alawIndex(s int16) uint16 { return uint16(min(int32(s)+4, 32767)) >> 3 }

// AlawToLinear decodes one A-law byte to a 16-bit sample (range ±32256).
func AlawToLinear(b byte) int16 { return alawDecodeTable[b] }

// EncodeUlaw appends the μ-law encoding of src to dst and returns the extended slice.
func EncodeUlaw(dst []byte, src []int16) []byte {
	dst, out := grow(dst, len(src))
	for i, s := range src {
		out[i] = ulawEncodeTable[ulawIndex(s)]
	}
	return dst
}

// DecodeUlaw appends the samples μ-law src decodes to onto dst and returns the
// extended slice.
func DecodeUlaw(dst []int16, src []byte) []int16 {
	dst, out := grow(dst, len(src))
	for i, b := range src {
		out[i] = ulawDecodeTable[b]
	}
	return dst
}

// EncodeAlaw appends the A-law encoding of src to dst and returns the extended slice.
func EncodeAlaw(dst []byte, src []int16) []byte {
	dst, out := grow(dst, len(src))
	for i, s := range src {
		out[i] = alawEncodeTable[alawIndex(s)]
	}
	return dst
}

// DecodeAlaw appends the samples A-law src decodes to onto dst and returns the extended
// slice.
func DecodeAlaw(dst []int16, src []byte) []int16 {
	dst, out := grow(dst, len(src))
	for i, b := range src {
		out[i] = alawDecodeTable[b]
	}
	return dst
}

// grow extends s by n elements, reallocating only when its capacity is short, and
// returns the extended slice and its new tail.
func grow[T any](s []T, n int) ([]T, []T) {
	l := len(s)
	if cap(s)-l < n {
		ns := make([]T, l, l+n+l/4)
		copy(ns, s)
		s = ns
	}
	s = s[:l+n]
	return s, s[l:]
}

func buildEncodeTable(bits int, enc func(int) byte) []byte {
	t := make([]byte, 1<<bits)
	for i := range t {
		// i is the top bits of a two's-complement sample: sign-extend it.
		v := i
		if v >= 1<<(bits-1) {
			v -= 1 << bits
		}
		t[i] = enc(v)
	}
	return t
}

func buildDecodeTable(dec func(byte) int16) *[256]int16 {
	var t [256]int16
	for i := range t {
		t[i] = dec(byte(i))
	}
	return &t
}

// segment returns the index of the first entry in ends that is >= v, or len(ends).
func segment(v int, ends *[8]int) int {
	for i, e := range ends {
		if v <= e {
			return i
		}
	}
	return len(ends)
}

// Segment upper bounds: μ-law on biased 14-bit magnitudes, A-law on 13-bit magnitudes.
var (
	ulawSegEnd = [8]int{0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF}
	alawSegEnd = [8]int{0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF}
)

// linearToUlawRef encodes a 14-bit sample (-8192..8191) per the G.711 reference code.
// Codes are stored inverted (all bits flipped) so that silence, the most common value
// on a line, has many ones: that kept early T1 repeaters synchronized.
func linearToUlawRef(v int) byte {
	mask := 0xFF
	if v < 0 {
		v = -v
		mask = 0x7F
	}
	v = min(v, ulawClip) + ulawBias>>2
	seg := segment(v, &ulawSegEnd)
	if seg >= 8 {
		return byte(0x7F ^ mask)
	}
	return byte(((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask)
}

// ulawToLinearRef decodes a μ-law code to 16-bit linear: the midpoint of its step.
func ulawToLinearRef(b byte) int16 {
	u := ^int(b) & 0xFF
	t := ((u & 0x0F) << 3) + ulawBias
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(ulawBias - t)
	}
	return int16(t - ulawBias)
}

// linearToAlawRef encodes a 13-bit sample (-4096..4095) per the G.711 reference code.
// A-law codes have their even bits inverted (XOR 0x55), for the same line-density
// reason as μ-law's full inversion.
func linearToAlawRef(v int) byte {
	mask := 0xD5 // sign bit set (positive) plus the even-bit inversion
	if v < 0 {
		mask = 0x55
		v = -v - 1
	}
	seg := segment(v, &alawSegEnd)
	if seg >= 8 {
		return byte(0x7F ^ mask)
	}
	a := seg << 4
	if seg < 2 {
		a |= (v >> 1) & 0xF
	} else {
		a |= (v >> seg) & 0xF
	}
	return byte(a ^ mask)
}

// alawToLinearRef decodes an A-law code to 16-bit linear: the midpoint of its step.
func alawToLinearRef(b byte) int16 {
	a := int(b) ^ 0x55
	t := (a & 0x0F) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}
