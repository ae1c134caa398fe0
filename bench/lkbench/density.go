package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parleyhq/parley/internal/sysstat"
	"github.com/parleyhq/parley/voice"
)

// densityResult is one step's figures; a step process prints it as a JSON line.
type densityResult struct {
	N int `json:"n"`
	// Joined agents; Live rooms whose greeting played (the caller was there and the
	// session started); Ended rooms whose call ended before the window did.
	Joined int `json:"joined"`
	Live   int `json:"live"`
	Ended  int `json:"ended"`
	// RoomsTurned answered at least one turn in the window; Turns in all.
	RoomsTurned int `json:"rooms_turned"`
	Turns       int `json:"turns"`

	OutFrames     uint64  `json:"out_frames"`
	OutLate       uint64  `json:"out_late"`
	OutMissed     uint64  `json:"out_missed"`
	OutMissPct    float64 `json:"out_miss_pct"`
	Underruns     uint64  `json:"underruns"`
	MaxLatenessMs float64 `json:"max_lateness_ms"`
	// InPct is the share of the callers' audio the sessions received, and OutPct of
	// the agents' audio the callers received (against the frames the engines wrote),
	// from the audio counted on arrival (the light caller sends 20 ms packets,
	// lktest's track 10 ms).
	// A track that falls behind, or a jitter buffer that drops late packets, shows
	// here, which the engine's own playout counters cannot see.
	InPct  float64 `json:"in_pct"`
	OutPct float64 `json:"out_pct"`

	// The engine's own share of each turn: end-of-turn decision to first frame, minus
	// the model's and the voice's time.
	OverheadP50ms float64 `json:"overhead_p50_ms"`
	OverheadP99ms float64 `json:"overhead_p99_ms"`
	// Voice-to-voice as the callers heard it.
	V2VP50ms float64 `json:"v2v_p50_ms"`
	V2VP95ms float64 `json:"v2v_p95_ms"`
	V2VMaxms float64 `json:"v2v_max_ms"`
	Timeouts int     `json:"timeouts"`
	// MicLate: microphone packets the callers sent late or skipped (their process
	// was starved).
	MicLate   int64 `json:"mic_late"`
	JoinFails int   `json:"join_fails"`

	// CPU in cores over the window: this process, the callers' (with the scripted
	// providers), livekit-server (0 if unknown), and the whole machine.
	AgentCores   float64 `json:"agent_cores"`
	CallerCores  float64 `json:"caller_cores"`
	ServerCores  float64 `json:"server_cores"`
	MachineCores float64 `json:"machine_cores"`
	// Memory per room: the agent process's resident set and Go heap above the idle
	// process, livekit-server's resident set above its idle one.
	RSSPerRoomMB       float64 `json:"rss_per_room_mb"`
	HeapPerRoomMB      float64 `json:"heap_per_room_mb"`
	ServerRSSPerRoomMB float64 `json:"server_rss_per_room_mb"`

	SchedP99ms   float64 `json:"sched_p99_ms"`
	GCPauseMaxms float64 `json:"gc_pause_max_ms"`
	Goroutines   int     `json:"goroutines"`
	Pass         bool    `json:"pass"`
}

// others is the CPU other processes used: they take cores from the rooms.
func (r densityResult) others() float64 {
	return max(0, r.MachineCores-r.AgentCores-r.CallerCores-r.ServerCores)
}

// Pass limits.
const (
	// maxMissPct: the share of output frames late or skipped, voicebench's criterion.
	maxMissPct = 1.0
	// quietCores is how much CPU other processes may use for a failed step to count.
	quietCores = 0.25
)

// collector gathers the engine's figures of all rooms.
type collector struct {
	on       atomic.Bool // in the window
	mu       sync.Mutex
	overhead []time.Duration
}

// benchRoom is one room's agent, and its event sink.
type benchRoom struct {
	col     *collector
	a       *agent
	greeted atomic.Bool
	turns   atomic.Int64 // answered in the window
}

func (b *benchRoom) HandleEvent(e voice.Event) {
	switch e := e.(type) {
	case *voice.Transcript:
		if e.Speaker == voice.SpeakerAgent {
			b.greeted.Store(true)
		}
	case *voice.TurnLatency:
		if !b.col.on.Load() || e.FirstAudio.IsZero() {
			return
		}
		b.turns.Add(1)
		ovh := e.Response() - e.LLMTimeToFirstToken() - e.TTSTimeToFirstByte()
		b.col.mu.Lock()
		b.col.overhead = append(b.col.overhead, ovh)
		b.col.mu.Unlock()
	}
}

func densityStep(o options) error {
	r, err := runDensity(o)
	if err != nil {
		return err
	}
	if o.asJSON {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	printHeader()
	printRow(r)
	return nil
}

// callersProc is the callers' child process.
type callersProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	// joins reports each caller's join, in the order they complete.
	joins chan join
}

type join struct {
	room int
	ok   bool
}

func startCallers(o options, lk *server, run string) (*callersProc, error) {
	name, args := os.Args[0], []string{"-role", "callers"}
	if f := strings.Fields(o.callersCmd); len(f) > 0 {
		name, args = f[0], append(f[1:], args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	// The callers must not outlive the step, even if it crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	params := callerParams{N: o.n, Run: run, URL: lk.url, Key: lk.key, Secret: lk.secret,
		Fixture: o.fixture, Transcript: o.transcript, Reply: o.reply,
		STTDelay: o.sttDelay, LLMTTFT: o.llmTTFT, TTSTTFB: o.ttsTTFB, Pause: o.pause,
		JoinRate: o.joinRate, Caller: o.caller, CPUProfile: o.callersProfile, ProvidersAddr: o.providersAddr}
	if err := json.NewEncoder(stdin).Encode(params); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	p := &callersProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16), joins: make(chan join, o.n)}
	go func() {
		defer close(p.lines)
		defer close(p.joins)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			if v, ok := strings.CutPrefix(l, "joined "); ok {
				i, _ := strconv.Atoi(v)
				p.joins <- join{i, true}
				continue
			}
			if v, ok := strings.CutPrefix(l, "failed "); ok {
				i, _ := strconv.Atoi(v)
				p.joins <- join{i, false}
				continue
			}
			p.lines <- l
		}
	}()
	return p, nil
}

func (p *callersProc) line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", errors.New("the callers' process exited")
		}
		return l, nil
	case <-time.After(timeout):
		return "", errors.New("the callers' process did not answer")
	}
}

// stop ends the calls and waits for the process, killing it if it hangs.
func (p *callersProc) stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() {
		for range p.lines {
		}
		for range p.joins {
		}
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-done
	}
}

func runDensity(o options) (densityResult, error) {
	r := densityResult{N: o.n}
	if o.order != "caller-first" && o.order != "agent-first" {
		return r, fmt.Errorf("-order %q: want caller-first or agent-first", o.order)
	}
	if o.caller != "light" && o.caller != "lktest" {
		return r, fmt.Errorf("-caller %q: want light or lktest", o.caller)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	lk, err := startServer(ctx, o)
	if err != nil {
		return r, err
	}
	defer lk.stop()
	run := runID()
	cp, err := startCallers(o, lk, run)
	if err != nil {
		return r, err
	}
	defer cp.stop()
	first, err := cp.line(30 * time.Second)
	if err != nil {
		return r, err
	}
	provURL, ok := strings.CutPrefix(first, "providers ")
	if !ok {
		return r, fmt.Errorf("callers' process: unexpected %q", first)
	}
	p, err := newProviders(provURL, o)
	if err != nil {
		return r, err
	}

	runtime.GC()
	rss0, heap0, srvRSS0 := sysstat.RSS("self"), sysstat.HeapBytes(), sysstat.RSS(strconv.Itoa(lk.pid))

	col := &collector{}
	rooms := make([]*benchRoom, o.n)
	for i := range rooms {
		rooms[i] = &benchRoom{col: col}
	}
	var joinErrs atomic.Int64
	var joinErr error // the callers' process died
	var wg sync.WaitGroup
	startOne := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := startAgent(ctx, lk, roomName(run, i), p, rooms[i])
			if err != nil {
				if joinErrs.Add(1) <= 3 {
					log.Printf("room %d: %v", i, err)
				}
				return
			}
			rooms[i].a = a
		}()
	}
	if o.order == "agent-first" {
		// The agents join on their own schedule, the callers on theirs.
		tick := time.NewTicker(time.Duration(float64(time.Second) / o.joinRate))
		for i := range rooms {
			if i > 0 {
				<-tick.C
			}
			startOne(i)
		}
		tick.Stop()
	} else {
		// Each agent joins once its caller is in the room (the callers' process joins
		// them at -join-rate), as an agent dispatched to a SIP call does.
		started := make([]bool, len(rooms))
	joins:
		for range rooms {
			select {
			case j, ok := <-cp.joins:
				if !ok {
					joinErr = errors.New("the callers' process exited")
					break joins
				}
				if j.ok && j.room >= 0 && j.room < len(rooms) && !started[j.room] {
					started[j.room] = true
					startOne(j.room)
				}
			case <-time.After(2 * time.Minute):
				log.Printf("callers stopped joining")
				break joins
			}
		}
	}
	wg.Wait()
	var agents []*benchRoom
	for _, br := range rooms {
		if br.a != nil {
			agents = append(agents, br)
		}
	}
	defer func() {
		var cw sync.WaitGroup
		for _, br := range agents {
			cw.Add(1)
			go func() { defer cw.Done(); br.a.close() }()
		}
		cw.Wait()
	}()
	r.Joined = len(agents)
	if joinErr != nil {
		return r, joinErr
	}

	// The greetings: each plays once its caller is there.
	live := func() int {
		n := 0
		for _, br := range agents {
			if br.greeted.Load() {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(time.Minute); live() < len(agents) && time.Now().Before(deadline); {
		sleep(ctx, 200*time.Millisecond)
	}
	sleep(ctx, o.warmup)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	r.Live = live()
	for i, br := range rooms {
		if br.a != nil && !br.greeted.Load() {
			log.Printf("room %d: the greeting never played (caller audio chunks received: %d)", i, br.a.room.Stats().InputFrames.Load())
		}
	}

	sum := func() (voice.PlayoutStats, int64) {
		var s voice.PlayoutStats
		var in int64
		for _, br := range agents {
			st := br.a.sess.Stats().Playout
			s.Frames += st.Frames
			s.LateFrames += st.LateFrames
			s.MissedDeadlines += st.MissedDeadlines
			s.Underruns += st.Underruns
			s.MaxLateness = max(s.MaxLateness, st.MaxLateness)
			in += br.a.room.Stats().InputFrames.Load()
		}
		return s, in
	}
	stats0, in0 := sum()
	self0, srv0 := sysstat.SelfCPU(), sysstat.ProcCPU(lk.pid)
	busy0, total0 := sysstat.MachineCPU()
	rm0 := sysstat.ReadRuntimeMetrics()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
	}
	if _, err := fmt.Fprintln(cp.stdin, "window"); err != nil {
		return r, err
	}
	col.on.Store(true)
	t0 := time.Now()
	sleep(ctx, o.window)
	elapsed := time.Since(t0)
	col.on.Store(false)
	self1, srv1 := sysstat.SelfCPU(), sysstat.ProcCPU(lk.pid)
	busy1, total1 := sysstat.MachineCPU()
	rm1 := sysstat.ReadRuntimeMetrics()
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	stats1, in1 := sum()
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if _, err := fmt.Fprintln(cp.stdin, "report"); err != nil {
		return r, err
	}
	line, err := cp.line(30 * time.Second)
	if err != nil {
		return r, err
	}
	var cr callerReport
	if err := json.Unmarshal([]byte(line), &cr); err != nil {
		return r, fmt.Errorf("callers' report %q: %w", line, err)
	}
	runtime.GC()
	rss1, heap1, srvRSS1 := sysstat.RSS("self"), sysstat.HeapBytes(), sysstat.RSS(strconv.Itoa(lk.pid))

	for i, br := range rooms {
		if br.a == nil {
			continue
		}
		if br.turns.Load() > 0 {
			r.RoomsTurned++
		} else {
			log.Printf("room %d: no turn answered in the window (greeted %v, caller audio chunks received %d)",
				i, br.greeted.Load(), br.a.room.Stats().InputFrames.Load())
		}
		select {
		case <-br.a.done:
			r.Ended++
		default:
		}
	}
	r.OutFrames = stats1.Frames - stats0.Frames
	r.OutLate = stats1.LateFrames - stats0.LateFrames
	r.OutMissed = stats1.MissedDeadlines - stats0.MissedDeadlines
	if r.OutFrames+r.OutMissed > 0 {
		r.OutMissPct = 100 * float64(r.OutLate+r.OutMissed) / float64(r.OutFrames+r.OutMissed)
	}
	r.Underruns = stats1.Underruns - stats0.Underruns
	r.MaxLatenessMs = msf(stats1.MaxLateness)
	if len(agents) > 0 {
		perSec := 100.0 // lktest's caller: PCMLocalTrack's 10 ms packets
		if o.caller == "light" {
			perSec = float64(time.Second / micFrame)
		}
		r.InPct = 100 * float64(in1-in0) / float64(len(agents)) / elapsed.Seconds() / perSec
	}
	col.mu.Lock()
	ovh := summarise(col.overhead)
	col.mu.Unlock()
	r.Turns = ovh.n
	r.OverheadP50ms, r.OverheadP99ms = msf(ovh.p50), msf(ovh.p99)
	r.V2VP50ms, r.V2VP95ms, r.V2VMaxms = cr.V2VP50ms, cr.V2VP95ms, cr.V2VMaxms
	r.Timeouts, r.JoinFails = cr.Timeouts, cr.JoinFailed
	// The agents send only while they speak (silence sends nothing, as Opus DTX does), so
	// what the callers heard is compared with what the engines wrote: 20 ms frames,
	// two 10 ms units each.
	if r.OutFrames > 0 {
		r.OutPct = min(100, 100*cr.HeardRate*float64(o.n)*elapsed.Seconds()/(2*float64(r.OutFrames)))
	}
	r.MicLate = cr.MicLate

	secs := elapsed.Seconds()
	r.AgentCores = (self1 - self0).Seconds() / secs
	r.CallerCores = cr.Cores
	r.ServerCores = (srv1 - srv0).Seconds() / secs
	if total1 > total0 {
		r.MachineCores = float64(runtime.NumCPU()) * float64(busy1-busy0) / float64(total1-total0)
	}
	r.RSSPerRoomMB = float64(int64(rss1)-int64(rss0)) / float64(o.n) / (1 << 20)
	r.HeapPerRoomMB = float64(int64(heap1)-int64(heap0)) / float64(o.n) / (1 << 20)
	if lk.pid > 0 {
		r.ServerRSSPerRoomMB = float64(int64(srvRSS1)-int64(srvRSS0)) / float64(o.n) / (1 << 20)
	}
	r.SchedP99ms = 1000 * sysstat.QuantileDelta(rm0[0].Value.Float64Histogram(), rm1[0].Value.Float64Histogram(), 0.99)
	r.GCPauseMaxms = 1000 * sysstat.QuantileDelta(rm0[1].Value.Float64Histogram(), rm1[1].Value.Float64Histogram(), 1)
	r.Goroutines = runtime.NumGoroutine()
	r.Pass = r.Joined == o.n && r.RoomsTurned == o.n && r.Ended == 0 && r.OutMissPct <= maxMissPct &&
		r.InPct >= 100-maxMissPct && r.OutPct >= 100-maxMissPct
	return r, nil
}

// sweep raises N step by step, each in a child process, until a step fails. The
// machine may be shared: a step that fails while other processes used more than
// quietCores is run again, up to retries times, and every attempt is printed.
func sweep(o options) {
	fmt.Printf("lkbench density: %d CPUs, warm-up %v, window %v, %.0f joins/s; providers: STT %v, LLM TTFT %v, TTS TTFB %v\n",
		runtime.NumCPU(), o.warmup, o.window, o.joinRate, o.sttDelay, o.llmTTFT, o.ttsTTFB)
	printHeader()
	best := 0
	for n := o.start; n <= o.maxN; n += o.step {
		var r densityResult
		for attempt := 0; attempt <= o.retries; attempt++ {
			r = runStepChild(n)
			printRow(r)
			if r.Pass || r.others() <= quietCores {
				break
			}
		}
		if !r.Pass {
			if r.others() > quietCores {
				fmt.Printf("N=%d failed with %.2f cores used by other processes: inconclusive\n", n, r.others())
			}
			break
		}
		best = n
	}
	fmt.Printf("max N passing (<= %.0f%% output frames late, >= %.0f%% of the audio delivered both ways, every room answering): %d\n",
		maxMissPct, 100-maxMissPct, best)
}

// runStepChild runs one step in a fresh process with this one's flags.
func runStepChild(n int) densityResult {
	args := []string{"-mode", "density", "-n", strconv.Itoa(n), "-json"}
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "mode", "n", "json", "start", "step", "max", "retries", "cpuprofile", "callers-cpuprofile":
		default:
			args = append(args, "-"+f.Name+"="+f.Value.String())
		}
	})
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		log.Fatalf("step %d: %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r densityResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		log.Fatalf("step %d: %v in %q", n, err, out)
	}
	return r
}

func printHeader() {
	fmt.Printf("%5s %5s %6s %6s %8s %8s %8s %7s %7s %8s %8s %8s %8s %6s %7s %6s %6s %9s %9s %9s %8s %s\n",
		"N", "live", "turned", "turns", "out-miss", "underrun", "max-late", "in", "out", "ovh-p50", "ovh-p99",
		"v2v-p50", "v2v-p95", "agent", "callers", "server", "others",
		"rss/room", "heap/room", "srv/room", "sched99", "pass")
}

func printRow(r densityResult) {
	fmt.Printf("%5d %5d %6d %6d %7.3f%% %8d %6.1fms %6.1f%% %6.1f%% %6.2fms %6.2fms %6.0fms %6.0fms %6.2f %7.2f %6.2f %6.2f %7.2fMB %7.2fMB %7.2fMB %6.2fms %v\n",
		r.N, r.Live, r.RoomsTurned, r.Turns, r.OutMissPct, r.Underruns, r.MaxLatenessMs, r.InPct, r.OutPct,
		r.OverheadP50ms, r.OverheadP99ms, r.V2VP50ms, r.V2VP95ms,
		r.AgentCores, r.CallerCores, r.ServerCores, r.others(),
		r.RSSPerRoomMB, r.HeapPerRoomMB, r.ServerRSSPerRoomMB, r.SchedP99ms, r.Pass)
	if r.Joined != r.N || r.Ended > 0 || r.Timeouts > 0 || r.JoinFails > 0 || r.MicLate > 0 {
		fmt.Printf("      joined %d/%d agents, %d calls ended early, %d caller joins failed, %d turns unanswered in 15 s, %d caller packets late\n",
			r.Joined, r.N, r.Ended, r.JoinFails, r.Timeouts, r.MicLate)
	}
}
