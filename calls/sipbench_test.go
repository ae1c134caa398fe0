package calls

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/internal/sipbridge"
	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/internal/sysstat"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/livekit/dispatch"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

var sipCallsFlag = flag.String("sipcalls", "", "BenchmarkSIPConcurrentCalls: comma-separated call counts (default $PARLEY_BENCH_SIP_CALLS or 10,20,40)")

const (
	// benchGreeting and benchReply are what the agent says; openaitest's voice takes
	// 60 ms a character, so the phone should hear 1.32 s + 1.62 s of speech.
	benchGreeting = "Hello, this is Parley."
	benchReply    = "Yes, Monday at ten is free."
	// The caller's question is speech8k.ulaw, 4.7 s of speech; but even with one call
	// on an idle machine the engine's recogniser gets only about 3.1 s of it (its
	// 0.7 s to 3.8 s: the turn detection clips both ends). A call's forward path is
	// clean when its one upload carries at least minSTTSpeech of the caller's speech,
	// 80% of that idle figure, with under 1% dropped out (see callResult.sttDropouts).
	minSTTSpeech = 2500 * time.Millisecond

	// A call's return path is clean when it loses under 1% of the agent's audio (as
	// RTP packets, or as holes in its sentences) and the 95th percentile of its
	// interarrival jitter is under 30 ms. 1%: G.711 without packet-loss concealment
	// has a loss robustness Bpl of 4.3 (ITU-T G.113 Appendix I), so in the E-model
	// (G.107) 1% random loss already costs Ie-eff ≈ 18, taking R from 93 to about 75,
	// below the 80 where "some users dissatisfied" begins; 30 ms: the usual planning
	// limit for jitter on a voice path, which a phone's 40-60 ms jitter buffer absorbs
	// without discarding late packets.
	cleanLossPct = 1.0
	cleanJitter  = 30 * time.Millisecond
)

func benchCallCounts() []int {
	spec := *sipCallsFlag
	if spec == "" {
		spec = os.Getenv("PARLEY_BENCH_SIP_CALLS")
	}
	if spec == "" {
		spec = "10,20,40"
	}
	var ns []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err == nil && n > 0 {
			ns = append(ns, n)
		}
	}
	return ns
}

// BenchmarkSIPConcurrentCalls measures how many phone calls this machine holds at once
// through the LiveKit SIP bridge with clean audio both ways (issue 6). Run it with
//
//	CI=true GOFLAGS=-tags=nolibopusfile go test -run '^$' -bench BenchmarkSIPConcurrentCalls -benchtime 1x -timeout 30m ./calls/
//
// and choose the call counts with PARLEY_BENCH_SIP_CALLS="10,20,40" (or -sipcalls
// 10,20,40 after the package); PARLEY_BENCH_SIP_RATE sets sipp's call rate (default 5
// calls/s, up to N/18 for N over 90, so that all N overlap). Each count is a
// sub-benchmark, e.g. -bench 'BenchmarkSIPConcurrentCalls/calls=20$'. Being a
// benchmark, it never runs in a plain `go test`.
//
// One sipp process places the N calls (-r rate, -l N, -m N) from uac_bench.xml, each
// call taking its line of an injection file (-inf): the RTP port of its own Go socket,
// and its own called number, bound to its own agent whose scripted providers are its
// own openaitest server, so that every figure belongs to one call. The stack is the
// harness's (Redis, livekit-server, livekit-sip; the real dispatch worker and Runner
// running the engine), but the benchmark's own, with a media port range wide enough for
// every call of the run (sipbridge.Config.RTPPorts: each call holds a port, and for
// 30 s after it ends).
//
// Per N it reports (b.ReportMetric; a per-call table goes to stderr): calls answered
// and completed as user_hangup, the most held at once (from the records' start and end
// times), and how many were clean each way and both ways; the return path's speech
// heard, RTP loss, holes and jitter; the forward path's audio at the recogniser; the
// CPU of livekit-server, livekit-sip, this process (the worker) and sipp, and of the
// rest of the machine ("others", someone else's load), with the load average.
func BenchmarkSIPConcurrentCalls(b *testing.B) {
	ns := benchCallCounts()
	if len(ns) == 0 {
		b.Fatal("no call counts in -sipcalls / PARLEY_BENCH_SIP_CALLS")
	}
	// Every call of the run holds a port, and keeps it 30 s after it ends: room for all
	// of them, so that one count's drained ports never starve the next.
	ports := 32
	for _, n := range ns {
		ports += n
	}
	stack, dir := startBenchStack(b, min(ports, 5000))
	e := newBenchEnv(b, stack)
	for _, n := range ns {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) {
			for round := range b.N {
				r := e.round(b, n, round)
				r.report(b, dir)
			}
		})
	}
}

// startBenchStack starts Redis, livekit-server and livekit-sip (with rtpPorts media
// ports) in a temporary directory, as sipbridge.StartStack does.
func startBenchStack(b *testing.B, rtpPorts int) (*sipbridge.Stack, string) {
	var missing []string
	if _, err := lkserver.FindBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := sipbridge.FindBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := sipbridge.FindRedis(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := exec.LookPath("sipp"); err != nil {
		missing = append(missing, "sipp not found (run scripts/setup)")
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "" {
			b.Skipf("no SIP stack: %s", strings.Join(missing, "; "))
		}
		b.Fatal(strings.Join(missing, "; "))
	}
	dir := b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := &sipbridge.Stack{}
	b.Cleanup(s.Stop)
	var err error
	if s.Redis, err = sipbridge.StartRedis(ctx, filepath.Join(dir, "redis")); err != nil {
		b.Fatal(err)
	}
	if s.Server, err = lkserver.Start(ctx, lkserver.Config{WorkDir: filepath.Join(dir, "livekit"), RedisAddr: s.Redis.Addr()}); err != nil {
		b.Fatal(err)
	}
	if s.Bridge, err = sipbridge.Start(ctx, sipbridge.Config{WorkDir: filepath.Join(dir, "sip"), RedisAddr: s.Redis.Addr(),
		LiveKitURL: s.Server.URL(), RTPPorts: rtpPorts}); err != nil {
		b.Fatal(err)
	}
	return s, dir
}

// benchEnv is newSIPEnv's worker for a benchmark: the dispatch worker and Runner on the
// benchmark's stack, with no job limit of its own (the worker's MaxJobs of 100 would
// otherwise cap the calls; its Load is 0, so it never refuses for CPU either).
type benchEnv struct {
	*env
	agents    *agents.Service
	stack     *sipbridge.Stack
	lines     *testLines
	sc        *lksdk.SIPClient
	agentName string
}

func newBenchEnv(b *testing.B, stack *sipbridge.Stack) *benchEnv {
	name := fmt.Sprintf("parley-sipbench-%d", time.Now().UnixNano())
	lkc := LiveKitConfig{URL: stack.Server.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret, AgentName: name}
	rooms, err := NewLiveKit(lkc)
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(b, func(c *Config) { c.Rooms = rooms })
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		b.Fatal(err)
	}
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: true, Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	ag, err := agents.New(e.pool, agents.Config{}, box, guard, guard)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() && os.Getenv("PARLEY_BENCH_SIP_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	lines := &testLines{routes: map[string]telephony.Route{}}
	sip, err := NewSIP(e.svc, SIPConfig{LiveKit: lkc, Lines: lines, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	runner := &Runner{
		Calls:      e.svc,
		Engine:     &Engine{Agents: ag, HTTPClient: guard.HTTPClient(), Logger: log},
		CallerWait: 20 * time.Second,
		Lines:      lines,
		SIP:        sip,
		Logger:     log,
	}
	w, err := dispatch.New(dispatch.Config{
		URL: stack.Server.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret,
		AgentName: name, MaxJobs: 10000, Load: func() float64 { return 0 }, Logger: log,
	}, runner.HandleJob)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		w.Stop()
		guard.CloseIdleConnections()
	})
	return &benchEnv{env: e, agents: ag, stack: stack, lines: lines, agentName: name,
		sc: lksdk.NewSIPClient(stack.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)}
}

// benchCall is one of a round's calls: its number, scripted providers and phone socket.
type benchCall struct {
	called, caller string
	srv            *openaitest.Server
	sink           *statsSink
	// heard is the speech in the recogniser's uploads (20 ms frames over -45 dBFS), and
	// envelope the last upload drawn a character a frame: '#' speech, '.' quieter.
	mu       sync.Mutex
	heard    time.Duration
	envelope string
	upload   openaitest.Upload // the last one
}

// transcribe answers every upload with the caller's question and notes how much of
// the caller's speech it carried.
func (c *benchCall) transcribe(u openaitest.Upload) string {
	frame := u.SampleRate / 50
	var env strings.Builder
	var heard time.Duration
	for i := 0; frame > 0 && i+frame <= len(u.Samples); i += frame {
		if audio.DBFS(u.Samples[i:i+frame]) > -45 {
			env.WriteByte('#')
			heard += 20 * time.Millisecond
		} else {
			env.WriteByte('.')
		}
	}
	c.mu.Lock()
	c.heard += heard
	c.envelope = env.String()
	c.upload = u
	c.mu.Unlock()
	return "Can I book a cleaning on Monday?"
}

// bindNumber is sipEnv.bindNumber for a benchmark: a trunk for number, a dispatch rule
// sending its calls to the worker with {"phone_number": number}, and a route to the
// agent in Lines.
func (e *benchEnv) bindNumber(b *testing.B, ctx context.Context, number, tenantID, agentID string) {
	meta, _ := json.Marshal(DispatchMetadata{PhoneNumber: number})
	trunk, rule := siptest.RouteNumber(b, ctx, e.sc, "bench "+number, number,
		&livekit.RoomConfiguration{Agents: []*livekit.RoomAgentDispatch{{AgentName: e.agentName, Metadata: string(meta)}}})
	b.Cleanup(func() {
		e.sc.DeleteSIPDispatchRule(context.Background(), &livekit.DeleteSIPDispatchRuleRequest{SipDispatchRuleId: rule.SipDispatchRuleId})
		e.sc.DeleteSIPTrunk(context.Background(), &livekit.DeleteSIPTrunkRequest{SipTrunkId: trunk.SipTrunkId})
	})
	e.lines.mu.Lock()
	e.lines.routes[number] = telephony.Route{TenantID: tenantID, AgentID: agentID, NumberID: "num_" + number[1:], Number: number}
	e.lines.mu.Unlock()
}

// benchRound is what one round measured.
type benchRound struct {
	n          int
	rate       float64
	calls      []*benchCall
	records    map[string]Call // by called number
	sippErr    error
	sippOut    string
	wall       time.Duration
	load       [2]float64 // 1-minute load average before and after
	cpu        map[string]time.Duration
	machineCPU float64 // the machine's busy share over the round, 0-1 (of all cores)
	// otherCPU is the CPU the rest of the machine used over the round, in % of a core:
	// the load that was not the benchmark's (other tests, other work).
	otherCPU float64
	// idleBefore is the machine's CPU use, in % of a core, over the 5 s before the
	// round, when the benchmark's own processes were idle: see waitQuiet.
	idleBefore float64
	start      time.Time // when sipp started: call i's INVITE goes out about i/rate later
	hold       time.Duration
}

// round places n concurrent calls and collects what they measured.
func (e *benchEnv) round(b *testing.B, n, round int) *benchRound {
	b.StopTimer()
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	tenant := e.tenant(b)
	// Each call holds the line 3 s + hold after the answer, and sipp's caller sends RTP
	// only while it speaks (3 s to 7.7 s): livekit-sip hangs up a call whose caller has
	// been silent for 15 s (its media timeout), so the hold is at most 17 s. For all n
	// calls to overlap, the last (invited n/rate after the first, answered ~2 s later)
	// must come before the first hangs up: 5 calls/s up to 90 calls, faster beyond.
	rate := max(5, float64(n)/18)
	if v, err := strconv.ParseFloat(os.Getenv("PARLEY_BENCH_SIP_RATE"), 64); err == nil && v > 0 {
		rate = v
	}
	hold := min(max(14*time.Second, time.Duration(float64(n)/rate*float64(time.Second))+2*time.Second), 17*time.Second)
	r := &benchRound{n: n, rate: rate, hold: hold, records: map[string]Call{}, cpu: map[string]time.Duration{}}
	var csv strings.Builder
	csv.WriteString("SEQUENTIAL\n")
	for i := range n {
		// +1 556 NNN RR III: unique across counts and rounds.
		c := &benchCall{called: fmt.Sprintf("+1556%03d%02d%03d", n%1000, round%100, i), caller: fmt.Sprintf("+1557%03d%02d%03d", n%1000, round%100, i),
			sink: newStatsSink(b)}
		srv := openaitest.New(b, openaitest.Config{Transcribe: c.transcribe, Replies: []openaitest.Reply{{Text: benchReply}}})
		c.srv = srv
		p := fmt.Sprintf(`{"provider":"openai","base_url":%q,"api_key":"test-key"}`, srv.URL)
		a, err := e.agents.Create(ctx, tenant, []byte(`{"agent_name":"Front desk","begin_message":`+strconv.Quote(benchGreeting)+`,
			"response_engine":{"system_prompt":"You are the front desk of a dental practice."},
			"llm":`+p+`,"stt":`+p+`,"tts":`+p+`}`))
		if err != nil {
			b.Fatal(err)
		}
		e.bindNumber(b, ctx, c.called, tenant, a.ID)
		r.calls = append(r.calls, c)
		fmt.Fprintf(&csv, "%d;%s;%s;\n", c.sink.port(), c.called, c.caller)
	}
	tmp := b.TempDir()
	inf := filepath.Join(tmp, "calls.csv")
	if err := os.WriteFile(inf, []byte(csv.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	sipPort, err := pgcluster.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	mediaPort, err := freeUDPPort()
	if err != nil {
		b.Fatal(err)
	}
	scenario, err := filepath.Abs(filepath.Join("testdata", "uac_bench.xml"))
	if err != nil {
		b.Fatal(err)
	}
	// The last call starts n/rate s in and lasts 3 s + hold after its answer.
	timeout := time.Duration(float64(n)/rate*float64(time.Second)) + hold + 120*time.Second
	cmd := exec.CommandContext(ctx, "sipp", "-sf", scenario, "-inf", inf, "-t", "u1", "-i", "127.0.0.1",
		"-p", strconv.Itoa(sipPort), "-mi", "127.0.0.1", "-mp", strconv.Itoa(mediaPort),
		"-r", strconv.FormatFloat(rate, 'f', -1, 64), "-l", strconv.Itoa(n), "-m", strconv.Itoa(n), "-d", strconv.Itoa(int(hold.Milliseconds())),
		"-nostdin", "-timeout", fmt.Sprintf("%ds", int(timeout.Seconds())), "-timeout_error",
		"-trace_err", "-error_file", filepath.Join(tmp, "sipp-errors.log"),
		e.stack.Bridge.SIPAddr())
	cmd.Dir = "testdata" // rtp_stream's file is relative to it
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out

	pids := map[string]int{"livekit-server": e.stack.Server.PID(), "livekit-sip": sysstat.ChildPID("livekit-sip.yaml"), "redis": sysstat.ChildPID("redis-server")}
	cpu0 := map[string]time.Duration{"test": sysstat.SelfCPU()}
	for name, pid := range pids {
		cpu0[name] = sysstat.ProcCPU(pid)
	}
	r.idleBefore = waitQuiet(b)
	busy0, total0 := sysstat.MachineCPU()
	r.load[0] = sysstat.LoadAvg()
	start := time.Now()
	r.start = start
	b.StartTimer()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r.sippErr = cmd.Wait()
	// The records: every call that reached the worker ends as the bridge reports the
	// BYE; give the last ones time to be written.
	deadline := time.Now().Add(60 * time.Second)
	for {
		recs, err := e.allCalls(ctx, tenant)
		live := 0
		for _, c := range recs {
			if c.Live() {
				live++
			}
		}
		if err == nil && ((len(recs) == n && live == 0) || time.Now().After(deadline)) {
			for _, c := range recs {
				r.records[c.ToNumber] = c
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.StopTimer()
	r.wall = time.Since(start)
	r.load[1] = sysstat.LoadAvg()
	busy1, total1 := sysstat.MachineCPU()
	if total1 > total0 {
		r.machineCPU = float64(busy1-busy0) / float64(total1-total0)
	}
	r.cpu["test"] = sysstat.SelfCPU() - cpu0["test"]
	for name, pid := range pids {
		r.cpu[name] = sysstat.ProcCPU(pid) - cpu0[name]
	}
	if cmd.ProcessState != nil {
		r.cpu["sipp"] = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	var ours time.Duration
	for _, d := range r.cpu {
		ours += d
	}
	r.otherCPU = max(pct(time.Duration(busy1-busy0)*10*time.Millisecond-ours, r.wall), 0)
	r.sippOut = out.String()
	if errs, err := os.ReadFile(filepath.Join(tmp, "sipp-errors.log")); err == nil {
		r.sippOut += "\n--- sipp errors ---\n" + tail(string(errs))
	}
	for _, c := range r.calls {
		c.sink.close()
	}
	return r
}

// waitQuiet waits, up to $PARLEY_BENCH_SIP_QUIET_WAIT (default 3m), until the machine
// used under 30% of a core over 5 s (the benchmark's processes are idle between rounds,
// so this is everyone else's load: on a shared machine, other tests running at the
// same time change the result more than anything measured here), and returns the last
// figure. The 1-minute load average cannot serve: the previous round keeps it up.
func waitQuiet(b *testing.B) float64 {
	wait := 3 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("PARLEY_BENCH_SIP_QUIET_WAIT")); err == nil {
		wait = d
	}
	deadline := time.Now().Add(wait)
	for {
		busy0, total0 := sysstat.MachineCPU()
		time.Sleep(5 * time.Second)
		busy1, total1 := sysstat.MachineCPU()
		var used float64
		if total1 > total0 {
			// busy jiffies are 10 ms of one core each.
			used = pct(time.Duration(busy1-busy0)*10*time.Millisecond, 5*time.Second)
		}
		if used < 30 || time.Now().After(deadline) {
			if used >= 30 {
				b.Logf("the machine is still busy (%.0f%% of a core) after %v: measuring anyway", used, wait)
			}
			return used
		}
	}
}

// allCalls lists every call of the tenant.
func (e *benchEnv) allCalls(ctx context.Context, tenant string) ([]Call, error) {
	var all []Call
	for {
		page, total, err := e.svc.List(ctx, tenant, ListParams{Limit: 100, Offset: len(all)})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) == 0 || len(all) >= total {
			return all, nil
		}
	}
}

// callResult is one call's figures.
type callResult struct {
	status, reason string
	ret            pathStats
	sttRequests    int
	sttAudio       time.Duration // the audio of all transcription requests
	sttSpeech      time.Duration // the speech in it
	// sttDropouts is the caller's clear speech (over -35 dBFS in the utterance) that
	// reached the recogniser as near-silence (under -50 dBFS): audio the forward path
	// lost, whatever the RTP said.
	sttDropouts time.Duration
	// sttFrom and sttTo place the last upload in the utterance; sttCorr is how well its
	// loudness envelope matches the utterance's there (1: the same shape). It is shown,
	// not judged: one quiet 10 ms frame moves it by 0.1, so sttDropouts is the test.
	sttFrom, sttTo time.Duration
	sttCorr        float64
	userTurns      int
	retClean       bool
	fwdClean       bool
}

func (r *benchRound) report(b *testing.B, dir string) {
	src, err := os.ReadFile(filepath.Join("..", "internal", "sipbridge", "testdata", "speech8k.ulaw"))
	if err != nil {
		b.Fatal(err)
	}
	srcPCM := audio.DecodeUlaw(nil, src)
	results := make([]callResult, len(r.calls))
	var answered, completed, retClean, fwdClean, clean, oneTurn int
	var speech, stt, sttSpeech, sttCorr, lossPct, retGaps, fwdDrops []float64
	var jitP95, jitMax time.Duration
	var rfcJitterMax float64
	var spanRecv, spanExp int
	expectedSpeech := time.Duration(len(benchGreeting)+len(benchReply)) * openaitest.DefaultCharDuration
	var spans [][2]time.Time
	var answerDelay []float64
	for i, c := range r.calls {
		res := &results[i]
		rec, ok := r.records[c.called]
		if ok {
			res.status, res.reason = rec.CallStatus, rec.DisconnectionReason
			if rec.StartTimestamp != nil {
				answered++
				// sipp paces the calls at the rate, in the injection file's order, so
				// this is the time from the INVITE to the answer (to within sipp's
				// scheduling, a few ms).
				invited := r.start.Add(time.Duration(float64(i) / r.rate * float64(time.Second)))
				answerDelay = append(answerDelay, float64(rec.StartTimestamp.Sub(invited).Milliseconds()))
				end := time.Now()
				if rec.EndTimestamp != nil {
					end = *rec.EndTimestamp
				}
				spans = append(spans, [2]time.Time{*rec.StartTimestamp, end})
			}
			if rec.CallStatus == StatusCompleted && rec.DisconnectionReason == ReasonUserHangup {
				completed++
			}
			for _, t := range rec.TranscriptObject {
				if t.Role == "user" {
					res.userTurns++
				}
			}
		}
		res.ret = c.sink.stats()
		for _, t := range c.srv.Transcriptions() {
			res.sttRequests++
			res.sttAudio += t.Duration
		}
		c.mu.Lock()
		res.sttSpeech = c.heard
		res.sttFrom, res.sttTo, res.sttCorr, res.sttDropouts = alignUpload(srcPCM, c.upload)
		c.mu.Unlock()
		// The return path: the call was completed by the caller, who heard at least 90% of
		// the agent's speech, with under 1% lost either as RTP packets or as holes in
		// the sentences (the bridge keeps sending RTP through a gap in the room's audio,
		// so a frame the agent's side dropped shows up as silence, not as a lost packet).
		res.retClean = ok && res.status == StatusCompleted && res.reason == ReasonUserHangup &&
			res.ret.speech >= expectedSpeech*9/10 && res.ret.lossPct < cleanLossPct &&
			float64(res.ret.gaps)*100 < float64(expectedSpeech)*cleanLossPct && res.ret.jitterP95 < cleanJitter
		// The recogniser got the caller's question as one utterance, with at least
		// minSTTSpeech of it, and under 1% of its clear speech dropped out (the return
		// path's loss bar: a dropped 20 ms frame is what a lost packet does).
		res.fwdClean = res.userTurns == 1 && res.sttRequests == 1 && res.sttSpeech >= minSTTSpeech &&
			float64(res.sttDropouts)*100 < float64(res.sttSpeech)*cleanLossPct
		if res.retClean {
			retClean++
		}
		if res.fwdClean {
			fwdClean++
		}
		if res.retClean && res.fwdClean {
			clean++
		}
		if res.userTurns == 1 {
			oneTurn++
		}
		speech = append(speech, float64(res.ret.speech.Milliseconds()))
		lossPct = append(lossPct, res.ret.lossPct)
		if res.sttRequests > 0 {
			stt = append(stt, float64(res.sttAudio.Milliseconds())/float64(res.sttRequests))
		}
		sttSpeech = append(sttSpeech, float64(res.sttSpeech.Milliseconds()))
		sttCorr = append(sttCorr, res.sttCorr)
		retGaps = append(retGaps, float64(res.ret.gaps.Milliseconds()))
		fwdDrops = append(fwdDrops, float64(res.sttDropouts.Milliseconds()))
		jitP95 = max(jitP95, res.ret.jitterP95)
		jitMax = max(jitMax, res.ret.jitterMax)
		rfcJitterMax = max(rfcJitterMax, res.ret.rfcJitterMS)
		spanRecv += res.ret.spanRecv
		spanExp += res.ret.spanExpected
	}
	held := maxOverlap(spans)

	// The per-call table goes to stderr: a benchmark's log is cut to 10 lines.
	w := os.Stderr
	fmt.Fprintf(w, "\n=== %s: N=%d rate=%g/s hold=3s+%v wall=%v load1 %.2f→%.2f machine CPU %.0f%% (of all cores), others %.0f%% of a core (%.0f%% just before); sipp: %v\n",
		b.Name(), r.n, r.rate, r.hold, r.wall.Round(time.Second), r.load[0], r.load[1], 100*r.machineCPU, r.otherCPU, r.idleBefore, r.sippErr)
	fmt.Fprintf(w, "%-4s %-10s %-12s %7s %6s %5s %4s %6s %7s %7s %7s %3s %8s %8s %6s %-17s %4s %5s %s\n", "call", "status", "reason",
		"speech", "rgaps", "pkts", "lost", "loss%", "jit95", "jitmax", "rfcJ", "stt", "sttaudio", "sttspch", "fdrop", "stt_in_utterance", "corr", "turns", "clean(ret/fwd)")
	for i, res := range results {
		fmt.Fprintf(w, "%-4d %-10s %-12s %5dms %4dms %5d %4d %6.2f %7v %7v %5.1fms %3d %8v %8v %4dms %-17s %4.2f %5d %v/%v\n", i, res.status, res.reason,
			res.ret.speech.Milliseconds(), res.ret.gaps.Milliseconds(), res.ret.packets, res.ret.lost, res.ret.lossPct,
			res.ret.jitterP95.Round(100*time.Microsecond), res.ret.jitterMax.Round(100*time.Microsecond), res.ret.rfcJitterMS,
			res.sttRequests, res.sttAudio.Round(time.Millisecond), res.sttSpeech, res.sttDropouts.Milliseconds(), fmt.Sprintf("%v-%v", res.sttFrom, res.sttTo),
			res.sttCorr, res.userTurns, res.retClean, res.fwdClean)
	}
	shown := 0
	for i, c := range r.calls {
		if i == 0 || !results[i].fwdClean && shown < 5 {
			shown++
			c.mu.Lock()
			fmt.Fprintf(w, "call %d's last upload to the recogniser, a 20 ms frame a character ('#' speech): %s\n", i, c.envelope)
			c.mu.Unlock()
		}
	}
	var cpuLine []string
	for _, name := range []string{"livekit-server", "livekit-sip", "test", "sipp", "redis"} {
		cpuLine = append(cpuLine, fmt.Sprintf("%s %v (%.0f%% of a core)", name, r.cpu[name].Round(10*time.Millisecond), pct(r.cpu[name], r.wall)))
	}
	fmt.Fprintf(w, "CPU over %v: %s\n", r.wall.Round(time.Second), strings.Join(cpuLine, ", "))
	if r.sippErr != nil || completed < r.n {
		fmt.Fprintf(w, "sipp output:\n%s\n", tail(r.sippOut))
		if log, err := os.ReadFile(filepath.Join(dir, "sip", "livekit-sip.log")); err == nil {
			fmt.Fprintf(w, "livekit-sip log (tail):\n%s\n", tail(string(log)))
		}
	}
	b.Logf("N=%d rate=%g/s: %d answered (INVITE to answer p50 %.0f ms, max %.0f ms), %d completed, %d held at once, %d clean both ways (return %d, forward %d); load1 %.2f→%.2f",
		r.n, r.rate, answered, quantile(answerDelay, 0.5), quantile(answerDelay, 1), completed, held, clean, retClean, fwdClean, r.load[0], r.load[1])

	b.ReportMetric(float64(r.n), "calls")
	b.ReportMetric(float64(answered), "answered")
	b.ReportMetric(float64(completed), "completed")
	b.ReportMetric(float64(held), "max_concurrent")
	b.ReportMetric(quantile(answerDelay, 0.5), "answer_p50_ms")
	b.ReportMetric(quantile(answerDelay, 1), "answer_max_ms")
	b.ReportMetric(float64(clean), "clean_both_ways")
	b.ReportMetric(float64(retClean), "clean_return")
	b.ReportMetric(float64(fwdClean), "clean_forward")
	b.ReportMetric(float64(oneTurn), "one_user_turn")
	b.ReportMetric(quantile(speech, 0), "speech_heard_min_ms")
	b.ReportMetric(quantile(speech, 0.5), "speech_heard_p50_ms")
	if spanExp > 0 {
		b.ReportMetric(float64(spanRecv)/float64(spanExp)*100, "speech_pkts_recv_%")
	}
	b.ReportMetric(quantile(lossPct, 0.5), "loss_p50_%")
	b.ReportMetric(quantile(lossPct, 1), "loss_max_%")
	b.ReportMetric(float64(jitP95.Microseconds())/1000, "jitter_p95_worst_ms")
	b.ReportMetric(float64(jitMax.Microseconds())/1000, "jitter_max_ms")
	b.ReportMetric(rfcJitterMax, "rfc3550_jitter_max_ms")
	b.ReportMetric(quantile(stt, 0), "stt_audio_min_ms")
	b.ReportMetric(quantile(stt, 0.5), "stt_audio_p50_ms")
	b.ReportMetric(quantile(stt, 1), "stt_audio_max_ms")
	b.ReportMetric(quantile(sttSpeech, 0), "stt_speech_min_ms")
	b.ReportMetric(quantile(sttSpeech, 0.5), "stt_speech_p50_ms")
	b.ReportMetric(quantile(sttCorr, 0), "stt_envelope_corr_min")
	b.ReportMetric(quantile(retGaps, 1), "return_gaps_max_ms")
	b.ReportMetric(quantile(fwdDrops, 1), "stt_dropouts_max_ms")
	for _, name := range []string{"livekit-server", "livekit-sip", "test", "sipp"} {
		b.ReportMetric(pct(r.cpu[name], r.wall), "cpu_"+name+"_%")
	}
	b.ReportMetric(100*r.machineCPU, "machine_busy_%")
	b.ReportMetric(r.otherCPU, "cpu_others_%")
	b.ReportMetric(r.idleBefore, "cpu_before_%")
	b.ReportMetric(r.load[0], "load1_before")
	b.ReportMetric(r.load[1], "load1_after")
}

func pct(d, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(d) / float64(wall)
}

// alignUpload finds where in the caller's utterance (8 kHz) an upload to the
// recogniser lies, by the best correlation of their 10 ms loudness envelopes: from and
// to are offsets into the utterance (from < 0: the upload starts before it); dropouts
// is the clear speech there that came through as near-silence.
func alignUpload(src []int16, u openaitest.Upload) (from, to time.Duration, corr float64, dropouts time.Duration) {
	if len(u.Samples) == 0 || u.SampleRate == 0 {
		return 0, 0, 0, 0
	}
	up, err := audio.Resample(u.Samples, u.SampleRate, 8000)
	if err != nil {
		return 0, 0, 0, 0
	}
	env := func(pcm []int16) []float64 {
		var out []float64
		for i := 0; i+80 <= len(pcm); i += 80 {
			out = append(out, math.Max(audio.DBFS(pcm[i:i+80]), -70))
		}
		return out
	}
	a, e := env(src), env(up)
	best, bestLag := -2.0, 0
	for lag := -len(e) + 100; lag < len(a)-100; lag++ { // at least 1 s of overlap
		var xs, ys []float64
		for j := range e {
			if k := lag + j; k >= 0 && k < len(a) {
				xs, ys = append(xs, a[k]), append(ys, e[j])
			}
		}
		if c := pearson(xs, ys); c > best {
			best, bestLag = c, lag
		}
	}
	for j := range e {
		if k := bestLag + j; k >= 0 && k < len(a) && a[k] > -35 && e[j] < -50 {
			dropouts += 10 * time.Millisecond
		}
	}
	from = time.Duration(bestLag) * 10 * time.Millisecond
	return from, from + time.Duration(len(e))*10*time.Millisecond, best, dropouts
}

func pearson(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, syy, sxy float64
	for i := range xs {
		sx, sy = sx+xs[i], sy+ys[i]
		sxx, syy, sxy = sxx+xs[i]*xs[i], syy+ys[i]*ys[i], sxy+xs[i]*ys[i]
	}
	d := math.Sqrt((sxx - sx*sx/n) * (syy - sy*sy/n))
	if d == 0 {
		return 0
	}
	return (sxy - sx*sy/n) / d
}

// maxOverlap is the most of spans that were open at one instant.
func maxOverlap(spans [][2]time.Time) int {
	type ev struct {
		at time.Time
		d  int
	}
	var evs []ev
	for _, s := range spans {
		evs = append(evs, ev{s[0], 1}, ev{s[1], -1})
	}
	// Ends before starts at the same instant: touching calls do not overlap.
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d
	})
	var cur, best int
	for _, e := range evs {
		cur += e.d
		best = max(best, cur)
	}
	return best
}

// quantile is the q-quantile (nearest rank) of xs; 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// statsSink is a phone's media socket, like rtpSink, that keeps every RTP packet's
// arrival time, sequence number and timestamp, and whether it carried speech, for the
// return path's loss and jitter.
type statsSink struct {
	conn *net.UDPConn
	pkts []rtpArrival
	done chan struct{}
	once atomic.Bool
}

type rtpArrival struct {
	at     time.Time
	seq    uint16
	ts     uint32
	speech bool
}

func newStatsSink(b *testing.B) *statsSink {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	// Room for a burst: with many calls the reader goroutines wait for a core too.
	c.SetReadBuffer(1 << 20)
	s := &statsSink{conn: c, done: make(chan struct{}), pkts: make([]rtpArrival, 0, 1500)}
	go s.run()
	b.Cleanup(s.close)
	return s
}

func (s *statsSink) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

func (s *statsSink) close() {
	if s.once.CompareAndSwap(false, true) {
		s.conn.Close()
	}
	<-s.done
}

func (s *statsSink) run() {
	defer close(s.done)
	buf := make([]byte, 2048)
	var pcm []int16
	for {
		n, err := s.conn.Read(buf)
		at := time.Now()
		if err != nil {
			return
		}
		// PCMU RTP with a 12-byte header, as rtpSink reads it.
		if n <= 12 || buf[0]>>6 != 2 || buf[1]&0x7f != 0 {
			continue
		}
		pcm = audio.DecodeUlaw(pcm[:0], buf[12:n])
		s.pkts = append(s.pkts, rtpArrival{at: at, seq: uint16(buf[2])<<8 | uint16(buf[3]),
			ts: uint32(buf[4])<<24 | uint32(buf[5])<<16 | uint32(buf[6])<<8 | uint32(buf[7]), speech: audio.DBFS(pcm) > -45})
	}
}

// pathStats is one call's return path.
type pathStats struct {
	packets int
	speech  time.Duration // 20 ms packets with speech
	// gaps is the quiet packets in runs under 300 ms between two speech packets: holes
	// in a sentence (the agent's voice never pauses within one), not the silence
	// between the greeting and the answer.
	gaps time.Duration
	// expected is the packets the sequence numbers say were sent, first to last; lost
	// those that never came.
	expected, lost int
	lossPct        float64
	// spanRecv of spanExpected packets arrived between the first and the last packet
	// with speech (the agent's greeting to the end of its answer), by sequence number.
	spanRecv, spanExpected int
	// jitterP95 and jitterMax are of |D|, the change in transit time between
	// consecutive packets (RFC 3550 §6.4.1's D(i-1,i): the arrival gap less the RTP
	// timestamp gap, 20 ms for back-to-back PCMU packets); rfcJitterMS is RFC 3550's
	// smoothed J at its largest.
	jitterP95, jitterMax time.Duration
	rfcJitterMS          float64
}

// stats is read after close.
func (s *statsSink) stats() pathStats {
	var p pathStats
	p.packets = len(s.pkts)
	if p.packets == 0 {
		return p
	}
	// Extend the 16-bit sequence numbers across wraps.
	ext := make([]int64, len(s.pkts))
	var cycles int64
	last := s.pkts[0].seq
	for i, a := range s.pkts {
		if i > 0 {
			d := int16(a.seq - last)
			if d > 0 && a.seq < last {
				cycles += 1 << 16
			} else if d < 0 && a.seq > last {
				cycles -= 1 << 16
			}
			last = a.seq
		}
		ext[i] = cycles + int64(a.seq)
	}
	lo, hi := slices.Min(ext), slices.Max(ext)
	p.expected = int(hi - lo + 1)
	seen := map[int64]bool{}
	for _, x := range ext {
		seen[x] = true
	}
	p.lost = max(p.expected-len(seen), 0)
	p.lossPct = 100 * float64(p.lost) / float64(p.expected)

	first, lastSpeech := -1, -1
	for i, a := range s.pkts {
		if a.speech {
			p.speech += 20 * time.Millisecond
			if first < 0 {
				first = i
			}
			lastSpeech = i
		}
	}
	quiet := 0
	for i := first + 1; first >= 0 && i <= lastSpeech; i++ {
		if !s.pkts[i].speech {
			quiet++
			continue
		}
		if quiet > 0 && quiet < 15 {
			p.gaps += time.Duration(quiet) * 20 * time.Millisecond
		}
		quiet = 0
	}
	if first >= 0 {
		a, z := ext[first], ext[lastSpeech]
		if a > z {
			a, z = z, a
		}
		p.spanExpected = int(z - a + 1)
		for x := range seen {
			if x >= a && x <= z {
				p.spanRecv++
			}
		}
	}

	var ds []time.Duration
	var j float64 // RFC 3550 J, in ms
	for i := 1; i < len(s.pkts); i++ {
		if ext[i]-ext[i-1] != 1 {
			continue // a loss or reordering: no transit comparison across it
		}
		tsGap := time.Duration(int32(s.pkts[i].ts-s.pkts[i-1].ts)) * time.Second / 8000
		d := s.pkts[i].at.Sub(s.pkts[i-1].at) - tsGap
		if d < 0 {
			d = -d
		}
		ds = append(ds, d)
		j += (float64(d.Microseconds())/1000 - j) / 16
		p.rfcJitterMS = max(p.rfcJitterMS, j)
	}
	if len(ds) > 0 {
		slices.Sort(ds)
		p.jitterP95 = ds[min(int(math.Ceil(0.95*float64(len(ds))))-1, len(ds)-1)]
		p.jitterMax = ds[len(ds)-1]
	}
	return p
}

// freeUDPPort is a free loopback UDP port, and the next one (sipp's media port and its
// RTCP).
func freeUDPPort() (int, error) {
	for range 20 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if c2, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p+2)); err == nil {
			c2.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free UDP port pair")
}
