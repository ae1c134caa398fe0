package audio

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// testTmp holds files shared by the tests of one run (the speech fixture); TestMain
// removes it.
var testTmp string

func TestMain(m *testing.M) {
	var err error
	if testTmp, err = os.MkdirTemp("", "parley-audio-test-"); err != nil {
		panic(err)
	}
	// The Pacer starts a goroutine; every test must leave none behind.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(testTmp)
		os.Exit(code)
	}))
}

// requireTool fails the test when an external program the test relies on is missing.
// scripts/setup installs them (sox, espeak-ng); CI runs it, so a missing tool is a
// broken machine, not a reason to skip.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run scripts/setup", name)
	}
	return p
}

// run runs a command and fails the test with its output if it fails.
func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	requireTool(t, name)
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

var (
	speechOnce sync.Once
	speechPath string
	speechErr  string
)

// speech16k returns about 2.5 s of real speech (espeak-ng, resampled by sox to 16 kHz
// mono). It is made once per test binary; each call reads a fresh copy.
func speech16k(t testing.TB) Frame {
	t.Helper()
	speechOnce.Do(func() {
		dir := testTmp
		if _, err := exec.LookPath("espeak-ng"); err != nil {
			speechErr = "espeak-ng is not installed: run scripts/setup"
			return
		}
		if _, err := exec.LookPath("sox"); err != nil {
			speechErr = "sox is not installed: run scripts/setup"
			return
		}
		raw := filepath.Join(dir, "espeak.wav")
		out := filepath.Join(dir, "speech16k.wav")
		if b, err := exec.Command("espeak-ng", "-v", "en-us", "-s", "160", "-w", raw,
			"Thank you for calling. How can I help you today?").CombinedOutput(); err != nil {
			speechErr = "espeak-ng: " + err.Error() + ": " + string(b)
			return
		}
		if b, err := exec.Command("sox", raw, "-r", "16000", "-c", "1", "-b", "16", out).CombinedOutput(); err != nil {
			speechErr = "sox: " + err.Error() + ": " + string(b)
			return
		}
		speechPath = out
	})
	if speechErr != "" {
		t.Fatal(speechErr)
	}
	f, err := ReadWAVFile(speechPath)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sine returns n samples of a sine of the given frequency and peak amplitude.
func sine(rate, n int, freq, amp float64) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(math.Round(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate))))
	}
	return s
}

// goertzelAmp returns the amplitude of the component of s at freq (Goertzel algorithm).
// For a pure sine of peak A at exactly freq it returns about A.
func goertzelAmp(s []int16, rate int, freq float64) float64 {
	w := 2 * math.Pi * freq / float64(rate)
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, x := range s {
		s0 := float64(x) + c*s1 - s2
		s2, s1 = s1, s0
	}
	power := s1*s1 + s2*s2 - c*s1*s2
	return 2 * math.Sqrt(math.Max(power, 0)) / float64(len(s))
}

// rms returns the root mean square of s.
func rms(s []int16) float64 {
	if len(s) == 0 {
		return 0
	}
	var e float64
	for _, x := range s {
		e += float64(x) * float64(x)
	}
	return math.Sqrt(e / float64(len(s)))
}

// collect is a Writer that copies every frame it receives.
type collect struct {
	samples []int16
	sizes   []int
	rate    int
}

func (c *collect) WriteFrame(f Frame) error {
	c.samples = append(c.samples, f.Samples...)
	c.sizes = append(c.sizes, len(f.Samples))
	c.rate = f.Rate
	return nil
}
