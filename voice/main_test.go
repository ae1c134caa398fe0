package voice

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The conversation tests spend their time waiting for audio to play in real time
	// (a run of the package uses about 2 s of CPU in 25 s), so running only GOMAXPROCS
	// of them at once (2 on the CI machine) would just make the suite slow. Unless
	// -test.parallel is given, run 6 at once.
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", "6")
	}
	goleak.VerifyTestMain(m) // exits
}
