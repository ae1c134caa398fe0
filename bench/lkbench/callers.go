package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/sysstat"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// The callers' process of a density step. It talks to the agent process over its
// standard streams: it reads its parameters (callerParams, a JSON line), prints
// "providers <url>" once the scripted providers listen,
// and "joined <i>" (or "failed <i>") as each caller joins its room (or gives up); it
// reads commands, one a line: "window" starts a measurement window, "report" prints
// the window's figures as a JSON line. End of input ends the calls.

// callerParams configure the callers' process. They come on its input rather than as
// arguments, which a shell on the way (ssh) would split again.
type callerParams struct {
	N                                 int
	Run, URL, Key, Secret             string
	Fixture, Transcript, Reply        string
	STTDelay, LLMTTFT, TTSTTFB, Pause time.Duration
	JoinRate                          float64
	Caller, CPUProfile, ProvidersAddr string
}

func (p callerParams) options() options {
	return options{n: p.N, run: p.Run, url: p.URL, key: p.Key, secret: p.Secret,
		fixture: p.Fixture, transcript: p.Transcript, reply: p.Reply,
		sttDelay: p.STTDelay, llmTTFT: p.LLMTTFT, ttsTTFB: p.TTSTTFB, pause: p.Pause,
		joinRate: p.JoinRate, caller: p.Caller, cpuProfile: p.CPUProfile, providersAddr: p.ProvidersAddr}
}

// callerReport is what the callers saw in a window.
type callerReport struct {
	// Turns answered in the window (the answer's first chunk heard in it), and rooms
	// with at least one.
	Turns, RoomsTurned int
	// Timeouts: the caller spoke and heard no answer within 15 s.
	Timeouts int
	// Caller-measured voice-to-voice latency, ms.
	V2VP50ms, V2VP95ms, V2VMaxms float64
	// Joined callers, and joins that failed for good.
	Joined, JoinFailed int
	// HeardRate is the agent audio the callers received, in 10 ms units per caller per
	// second (100 would be an agent talking without a break).
	HeardRate float64
	// MicLate counts microphone packets the light callers sent more than a frame late
	// or skipped: a starved callers' process, not the agent, shortens in-rate then.
	MicLate int64
	// Cores is the CPU the callers' process used (with the scripted providers), in
	// cores: measured here, since the process may run on another machine.
	Cores float64
}

type callerStats struct {
	mu        sync.Mutex
	on        bool
	v2v       []time.Duration
	perRoom   map[int]int
	timeouts  int
	joined    int
	joinFails int
	// heardBy count the agent audio each caller has received, in 10 ms units.
	heardBy []func() int64
	micLate []func() int64
	heard0  int64 // chunks heard when the window started
	late0   int64 // mic packets late when the window started
	cpu0    time.Duration
	from    time.Time // when the window started
}

func sum(fs []func() int64) int64 {
	var n int64
	for _, f := range fs {
		n += f()
	}
	return n
}

func (s *callerStats) turn(room int, v2v time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		s.v2v = append(s.v2v, v2v)
		s.perRoom[room]++
	}
}

func (s *callerStats) timeout() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		s.timeouts++
	}
}

// joinedRoom records a caller's join (heard and late may be nil) and tells the agent
// process.
func (s *callerStats) joinedRoom(i int, ok bool, heard, late func() int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.joinFails++
		fmt.Printf("failed %d\n", i)
		return
	}
	s.joined++
	s.heardBy = append(s.heardBy, heard)
	if late != nil {
		s.micLate = append(s.micLate, late)
	}
	fmt.Printf("joined %d\n", i)
}

func (s *callerStats) startWindow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on, s.from, s.heard0, s.late0, s.cpu0 = true, time.Now(), sum(s.heardBy), sum(s.micLate), sysstat.SelfCPU()
}

func (s *callerStats) report() callerReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on = false
	d := summarise(s.v2v)
	r := callerReport{Turns: len(s.v2v), RoomsTurned: len(s.perRoom), Timeouts: s.timeouts,
		V2VP50ms: msf(d.p50), V2VP95ms: msf(d.p95), V2VMaxms: msf(d.max),
		Joined: s.joined, JoinFailed: s.joinFails, MicLate: sum(s.micLate) - s.late0}
	secs := time.Since(s.from).Seconds()
	if len(s.heardBy) > 0 {
		r.HeardRate = float64(sum(s.heardBy)-s.heard0) / float64(len(s.heardBy)) / secs
	}
	r.Cores = (sysstat.SelfCPU() - s.cpu0).Seconds() / secs
	return r
}

func runCallers() error {
	sc := bufio.NewScanner(os.Stdin)
	if !sc.Scan() {
		return fmt.Errorf("callers: no parameters on the input: %v", sc.Err())
	}
	var params callerParams
	if err := json.Unmarshal(sc.Bytes(), &params); err != nil {
		return fmt.Errorf("callers: parameters: %w", err)
	}
	o := params.options()
	speech, err := lktest.LoadSpeech(o.fixture)
	if err != nil {
		return err
	}
	var mic *micAudio
	switch o.caller {
	case "light":
		if mic, err = encodeMic(speech); err != nil {
			return err
		}
	case "lktest":
	default:
		return fmt.Errorf("-caller %q: want light or lktest", o.caller)
	}
	pc := providerConfig(o)
	pc.Addr = o.providersAddr
	prov, err := openaitest.NewServer(pc)
	if err != nil {
		return err
	}
	defer prov.Close()
	fmt.Printf("providers %s\n", prov.URL)

	ctx, cancel := context.WithCancel(context.Background())
	st := &callerStats{perRoom: map[int]int{}}
	var wg sync.WaitGroup
	// End of input, or a failed report: the calls end either way.
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Join gradually, as the agents do.
		tick := time.NewTicker(time.Duration(float64(time.Second) / o.joinRate))
		defer tick.Stop()
		for i := range o.n {
			if i > 0 {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if mic != nil {
					lightCall(ctx, o, i, mic, st)
				} else {
					lktestCall(ctx, o, i, speech, st)
				}
			}()
		}
	}()

	for sc.Scan() {
		switch sc.Text() {
		case "window":
			st.startWindow()
			if o.cpuProfile != "" {
				f, err := os.Create(o.cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
			}
		case "report":
			if o.cpuProfile != "" {
				pprof.StopCPUProfile()
			}
			if err := json.NewEncoder(os.Stdout).Encode(st.report()); err != nil {
				return err
			}
		}
	}
	return nil
}

// lktestCall is one lktest caller: it joins room i, waits for the greeting, then
// speaks, waits for the answer and its end, pauses and speaks again, until ctx ends.
func lktestCall(ctx context.Context, o options, i int, speech []int16, st *callerStats) {
	room := roomName(o.run, i)
	tok, err := lktest.Token(o.key, o.secret, room, "caller-"+room, false)
	if err != nil {
		st.joinedRoom(i, false, nil, nil)
		return
	}
	var c *lktest.Caller
	for attempt := 0; attempt < 3; attempt++ {
		jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
		c, err = lktest.Join(jctx, o.url, tok)
		jcancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		sleep(ctx, time.Second)
	}
	if err != nil {
		st.joinedRoom(i, false, nil, nil)
		return
	}
	defer c.Close()
	st.joinedRoom(i, true, func() int64 {
		var n int64
		for _, ch := range c.Chunks() {
			n += int64(ch.N / (lktest.Rate / 100)) // in 10 ms units
		}
		return n
	}, nil)

	speechLen := time.Duration(len(speech)) * time.Second / lktest.Rate
	joined := time.Now()
	// The greeting (see greeted).
	poll(ctx, time.Minute, func() (time.Time, bool) {
		now := time.Now()
		var opened, first, last time.Time
		if chunks := c.Chunks(); len(chunks) > 0 {
			opened = chunks[0].At
			for _, ch := range chunks {
				if ch.Speech() {
					if first.IsZero() {
						first = ch.At
					}
					last = ch.At
				}
			}
		}
		return now, greeted(now, joined, opened, first, last)
	})
	for ctx.Err() == nil {
		start := c.Say(speech)
		spoke := start.Add(speechLen)
		heard, ok := poll(ctx, time.Until(spoke)+15*time.Second, func() (time.Time, bool) { return c.FirstSpeech(start) })
		if !ok {
			if ctx.Err() == nil {
				st.timeout()
				sleep(ctx, o.pause)
			}
			continue
		}
		st.turn(i, heard.Sub(spoke))
		poll(ctx, 30*time.Second, func() (time.Time, bool) { return c.SpeechEnd(heard, quiet) })
		sleep(ctx, o.pause)
	}
}

// poll checks cond every 50 ms until it holds, d passes or ctx ends. The times cond
// returns are the chunks' arrival times, so the polling period does not blur them;
// lktest's Wait methods would wake on every 10 ms chunk and rescan the whole log,
// which across many callers costs more than the calls.
func poll(ctx context.Context, d time.Duration, cond func() (time.Time, bool)) (time.Time, bool) {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if t, ok := cond(); ok {
			return t, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}
