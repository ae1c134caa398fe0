package audio

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestReframer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		rate   int
		frame  time.Duration
		chunks []int // input chunk sizes
		pad    bool
		want   []int // emitted frame sizes, Flush included
	}{
		{"aligned", 16000, 20 * time.Millisecond, []int{320, 320, 640}, true, []int{320, 320, 320, 320}},
		{"small chunks", 16000, 20 * time.Millisecond, []int{100, 100, 100, 100, 100, 100, 100}, false, []int{320, 320, 60}},
		{"pad remainder", 16000, 20 * time.Millisecond, []int{100, 100, 100, 100, 100, 100, 100}, true, []int{320, 320, 320}},
		{"big chunk", 8000, 20 * time.Millisecond, []int{1000}, false, []int{160, 160, 160, 160, 160, 160, 40}},
		{"straddling", 48000, 20 * time.Millisecond, []int{500, 1000, 1380}, false, []int{960, 960, 960}},
		{"22.05k 20ms", 22050, 20 * time.Millisecond, []int{1000}, true, []int{441, 441, 441}},
		{"10ms frames", 16000, 10 * time.Millisecond, []int{7, 500, 13}, false, []int{160, 160, 160, 40}},
		{"empty chunks", 16000, 20 * time.Millisecond, []int{0, 320, 0}, true, []int{320}},
		{"nothing to flush", 16000, 20 * time.Millisecond, nil, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c collect
			r, err := NewReframer(tt.rate, tt.frame, &c)
			if err != nil {
				t.Fatal(err)
			}
			var in []int16
			next := int16(1)
			for _, n := range tt.chunks {
				chunk := make([]int16, n)
				for i := range chunk {
					chunk[i] = next
					next++
				}
				in = append(in, chunk...)
				if err := r.WriteFrame(Frame{Samples: chunk, Rate: tt.rate}); err != nil {
					t.Fatal(err)
				}
				// The caller may reuse its buffer: the Reframer must have copied what
				// it kept.
				clear(chunk)
			}
			if err := r.Flush(tt.pad); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.sizes, tt.want) {
				t.Fatalf("frame sizes %v, want %v", c.sizes, tt.want)
			}
			if c.rate != 0 && c.rate != tt.rate {
				t.Fatalf("rate %d", c.rate)
			}
			want := in
			if pad := len(c.samples) - len(in); pad > 0 {
				want = append(want, make([]int16, pad)...)
			}
			if !slices.Equal(c.samples, want) {
				t.Fatalf("samples reordered or lost:\n got %v\nwant %v", c.samples, want)
			}
			if r.Buffered() != 0 {
				t.Fatalf("%d samples left after Flush", r.Buffered())
			}
		})
	}
}

func TestReframerErrors(t *testing.T) {
	t.Parallel()
	sink := WriterFunc(func(Frame) error { return nil })
	bad := []struct {
		name  string
		rate  int
		frame time.Duration
		next  Writer
	}{
		{"fractional samples", 22050, 10 * time.Millisecond, sink},
		{"zero frame", 16000, 0, sink},
		{"zero rate", 0, 20 * time.Millisecond, sink},
		{"nil next", 16000, 20 * time.Millisecond, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewReframer(tt.rate, tt.frame, tt.next); err == nil {
				t.Fatal("no error")
			}
		})
	}

	t.Run("rate mismatch", func(t *testing.T) {
		t.Parallel()
		r, _ := NewReframer(16000, 20*time.Millisecond, sink)
		if err := r.WriteFrame(Frame{Samples: make([]int16, 10), Rate: 8000}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("next fails", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		r, _ := NewReframer(16000, 20*time.Millisecond, WriterFunc(func(Frame) error { return boom }))
		if err := r.WriteFrame(Frame{Samples: make([]int16, 100), Rate: 16000}); err != nil {
			t.Fatalf("nothing was emitted yet, got %v", err)
		}
		if err := r.WriteFrame(Frame{Samples: make([]int16, 300), Rate: 16000}); !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
		if err := r.Flush(true); err != nil && !errors.Is(err, boom) {
			t.Fatal(err)
		}
	})
	t.Run("reset drops remainder", func(t *testing.T) {
		t.Parallel()
		var c collect
		r, _ := NewReframer(16000, 20*time.Millisecond, &c)
		_ = r.WriteFrame(Frame{Samples: make([]int16, 100), Rate: 16000})
		r.Reset()
		if err := r.Flush(true); err != nil || len(c.sizes) != 0 {
			t.Fatalf("flush after reset emitted %v (%v)", c.sizes, err)
		}
	})
}

// TestReframerZeroCopy checks that aligned input goes through without a copy.
func TestReframerZeroCopy(t *testing.T) {
	t.Parallel()
	in := make([]int16, 640)
	var got [][]int16
	r, _ := NewReframer(16000, 20*time.Millisecond, WriterFunc(func(f Frame) error {
		got = append(got, f.Samples)
		return nil
	}))
	if err := r.WriteFrame(Frame{Samples: in, Rate: 16000}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || &got[0][0] != &in[0] || &got[1][0] != &in[320] {
		t.Fatal("aligned frames were copied")
	}
	if cap(got[0]) != 320 {
		t.Fatalf("emitted frame has cap %d: next could append into the caller's buffer", cap(got[0]))
	}
}
