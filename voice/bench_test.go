package voice

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest"
)

// BenchmarkTurnOverhead measures the platform's own overhead per turn: from the
// end-of-turn decision to the first audio frame handed to the output, with providers
// that answer instantly (in-process fakes: any provider latency would hide the
// engine's). The endpointing delay comes before the decision and is not counted.
//
// Each iteration is one turn: a second of espeak-ng speech and 600 ms of silence are
// written as fast as the session takes them (the VAD and the recogniser are driven by
// the audio, not the clock), the engine decides, answers "Sure." through the LLM,
// sentence splitter, TTS, resampler (24 to 48 kHz) and playout, and the 40 ms reply
// plays in real time before the next turn. It reports the p50, p99 and max of the
// per-turn figure; run it with a fixed count for stable percentiles:
//
//	go test -run '^$' -bench TurnOverhead -benchtime 1000x ./voice/
func BenchmarkTurnOverhead(b *testing.B) {
	speech := fixture(b, "hello")[:16000]
	silence := make([]int16, 320)
	ledgers := make(chan TurnLatency, 4)
	played := make(chan struct{}, 4)
	sink := EventSinkFunc(func(e Event) {
		switch e := e.(type) {
		case *TurnLatency:
			ledgers <- *e
		case *Transcript:
			if e.Speaker == SpeakerAgent && e.Final {
				played <- struct{}{}
			}
		}
	})
	reply := make([]int16, 960) // 40 ms at 24 kHz
	for i := range reply {
		reply[i] = int16(4000 * math.Sin(2*math.Pi*300*float64(i)/24000))
	}
	s, err := NewSession(Config{
		Agent: Agent{
			SystemPrompt:            "You are a test.",
			EndpointingMinMS:        20,
			EndpointingMaxMS:        20,
			InterruptionSensitivity: 0.5,
			EndCallAfterSilenceMS:   -1,
			MaxCallDurationMS:       -1,
		},
		STT:        &voicetest.STT{Text: "Hello, I would like to book an appointment."},
		LLM:        &voicetest.LLM{Reply: "Sure."},
		TTS:        &voicetest.TTS{Rate: 24000, Audio: reply},
		Output:     audio.WriterFunc(func(audio.Frame) error { return nil }),
		OutputRate: 48000,
		Events:     sink,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	write := func(samples []int16) {
		for len(samples) > 0 {
			n := min(320, len(samples))
			if err := s.WriteFrame(audio.Frame{Samples: samples[:n], Rate: 16000}); err != nil {
				b.Fatal(err)
			}
			samples = samples[n:]
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		write(speech)
		for j := 0; j < 30; j++ {
			write(silence)
		}
		var led TurnLatency
		select {
		case led = <-ledgers:
		case <-time.After(10 * time.Second):
			b.Fatalf("turn %d: no reply", i)
		}
		select {
		case <-played:
		case <-time.After(10 * time.Second):
			b.Fatalf("turn %d: reply not played", i)
		}
		lat = append(lat, led.Response())
		// The next turn comes 30 ms after the reply's last frame (in a real call it is
		// seconds): the playout sends no frame sooner than 20 ms after the previous
		// one, and the control loop files the finished reply before the caller's next
		// words (which would otherwise be speech over the agent).
		time.Sleep(30 * time.Millisecond)
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
	b.ReportMetric(0, "ns/op")
}
