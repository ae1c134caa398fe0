package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// targetSlack is the platform's budget on top of the providers and the endpointing:
// the transport both ways (two Opus codecs, two jitter buffers, the server's
// forwarding, the caller's track's 10 ms ticks) and the engine's own work.
const targetSlack = 60 * time.Millisecond

// ledgerLog keeps the engine's latency ledgers as they come.
type ledgerLog struct {
	mu   sync.Mutex
	leds []voice.TurnLatency
}

func (l *ledgerLog) HandleEvent(e voice.Event) {
	if t, ok := e.(*voice.TurnLatency); ok {
		l.mu.Lock()
		l.leds = append(l.leds, *t)
		l.mu.Unlock()
	}
}

// find returns the ledger of the reply whose first frame went out in [from, to].
func (l *ledgerLog) find(from, to time.Time) (voice.TurnLatency, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.leds) - 1; i >= 0; i-- {
		if fa := l.leds[i].FirstAudio; !fa.Before(from) && !fa.After(to) {
			return l.leds[i], true
		}
	}
	return voice.TurnLatency{}, false
}

// turnRecord is one measured turn.
type turnRecord struct {
	spoke, heard time.Time // end of the caller's speech as sent; first answer chunk heard
	led          voice.TurnLatency
	hasLed       bool
}

func runLatency(o options) error {
	speech, err := lktest.LoadSpeech(o.fixture)
	if err != nil {
		return fmt.Errorf("%w (run from the repository root, or set -fixture)", err)
	}
	speechLen := time.Duration(len(speech)) * time.Second / lktest.Rate
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	lk, err := startServer(ctx, o)
	if err != nil {
		return err
	}
	defer lk.stop()
	prov, err := openaitest.NewServer(providerConfig(o))
	if err != nil {
		return err
	}
	defer prov.Close()
	p, err := newProviders(prov.URL, o)
	if err != nil {
		return err
	}

	room := roomName(runID(), 0)
	leds := &ledgerLog{}
	a, err := startAgent(ctx, lk, room, p, leds)
	if err != nil {
		return err
	}
	defer a.close()
	tok, err := lktest.Token(lk.key, lk.secret, room, "caller-"+room, false)
	if err != nil {
		return err
	}
	c, err := lktest.Join(ctx, lk.url, tok)
	if err != nil {
		return err
	}
	defer c.Close()

	// The greeting: once it has played the agent is listening.
	joined := time.Now()
	gctx, gcancel := context.WithTimeout(ctx, 30*time.Second)
	g, err := c.WaitSpeech(gctx, joined)
	if err == nil {
		_, err = c.WaitSilence(gctx, g, quiet)
	}
	gcancel()
	if err != nil {
		return fmt.Errorf("the agent's greeting: %w", err)
	}

	fmt.Printf("lkbench latency: %d turns through livekit-server %s; caller speech %v; providers: STT %v, LLM TTFT %v, TTS TTFB %v\n",
		o.turns, lk.url, speechLen.Round(time.Millisecond), o.sttDelay, o.llmTTFT, o.ttsTTFB)
	var recs []turnRecord
	misses := 0
	for i := 0; i < o.turns && ctx.Err() == nil; i++ {
		start := c.Say(speech)
		spoke := start.Add(speechLen)
		tctx, tcancel := context.WithTimeout(ctx, time.Until(spoke)+20*time.Second)
		// From the start of the caller's speech: an answer before its end would be a
		// turn taken too early, and shows as a negative latency.
		heard, err := c.WaitSpeech(tctx, start)
		if err == nil {
			_, err = c.WaitSilence(tctx, heard, quiet)
		}
		tcancel()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			misses++
			fmt.Printf("turn %d: no answer: %v\n", i+1, err)
			continue
		}
		r := turnRecord{spoke: spoke, heard: heard}
		r.led, r.hasLed = leds.find(start, heard)
		recs = append(recs, r)
		sleep(ctx, o.pause)
	}
	if len(recs) == 0 {
		return fmt.Errorf("no turn was answered")
	}
	printLatency(o, recs, misses)
	return nil
}

func printLatency(o options, recs []turnRecord, misses int) {
	var caller, engine, endpoint, wait, sttD, llmD, ttsD, resp, in, out, ovhSum, ovhWait []time.Duration
	providersSum := o.sttDelay + o.llmTTFT + o.ttsTTFB
	within := 0
	for _, r := range recs {
		v := r.heard.Sub(r.spoke)
		caller = append(caller, v)
		if !r.hasLed {
			continue
		}
		l := r.led
		engine = append(engine, l.VoiceToVoice())
		endpoint = append(endpoint, l.EndpointingDelay)
		w := l.EndOfTurn.Sub(l.SpeechEnded)
		wait = append(wait, w)
		sttD = append(sttD, l.STTDelay())
		llmD = append(llmD, l.LLMTimeToFirstToken())
		ttsD = append(ttsD, l.TTSTimeToFirstByte())
		resp = append(resp, l.Response()-l.LLMTimeToFirstToken()-l.TTSTimeToFirstByte())
		in = append(in, l.SpeechEnded.Sub(r.spoke))
		out = append(out, r.heard.Sub(l.FirstAudio))
		ovhSum = append(ovhSum, v-(l.STTDelay()+l.LLMTimeToFirstToken()+l.TTSTimeToFirstByte()+l.EndpointingDelay))
		ovhWait = append(ovhWait, v-(w+l.LLMTimeToFirstToken()+l.TTSTimeToFirstByte()))
		if v <= providersSum+l.EndpointingDelay+targetSlack {
			within++
		}
	}
	fmt.Printf("\n%d turns answered (%d with the engine's ledger), %d unanswered\n\n", len(recs), len(wait), misses)
	fmt.Printf("%-62s %8s %8s %8s %8s\n", "ms", "p50", "p95", "min", "max")
	row := func(name string, ds []time.Duration) {
		d := summarise(ds)
		if d.n == 0 {
			fmt.Printf("%-62s %8s\n", name, "-")
			return
		}
		fmt.Printf("%-62s %8.1f %8.1f %8.1f %8.1f\n", name, msf(d.p50), msf(d.p95), msf(d.min), msf(d.max))
	}
	row("voice-to-voice, at the caller", caller)
	row("voice-to-voice, the engine's (VAD speech end to first frame)", engine)
	row("  endpointing delay chosen", endpoint)
	row("  end-of-turn wait (speech end to decision)", wait)
	row("  STT delay (speech end to final transcript)", sttD)
	row("  LLM time to first token", llmD)
	row("  TTS time to first byte", ttsD)
	row("  engine's own (decision to first frame - LLM - TTS)", resp)
	row("transport in (speech end sent to VAD speech end)", in)
	row("transport out (first frame to first chunk heard)", out)
	row("platform overhead: caller - (STT + LLM + TTS + endpointing)", ovhSum)
	row("platform overhead: caller - (end-of-turn wait + LLM + TTS)", ovhWait)

	fmt.Println("(the recogniser gets the utterance at the VAD's speech end, a hangover after the words, so STT runs\n" +
		" during the endpointing wait: the first overhead line counts that overlap twice, the second does not)")

	ep := summarise(endpoint).p50
	target := providersSum + ep + targetSlack
	cd := summarise(caller)
	verdict := func(d time.Duration) string {
		if d <= target {
			return "within"
		}
		return "OVER"
	}
	fmt.Printf("\ntarget: providers %v + endpointing %v + %v = %v; caller p50 %.1f ms %s, p95 %.1f ms %s; %d/%d turns within their own target\n",
		providersSum, ep, targetSlack, target, msf(cd.p50), verdict(cd.p50), msf(cd.p95), verdict(cd.p95), within, len(wait))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
