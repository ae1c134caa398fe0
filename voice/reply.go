package voice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/internal/sentence"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/tts"
)

// A reply is one stretch of agent speech: the answer to a caller's turn (LLM rounds,
// tools, sentences), or a scripted message (the begin message, a reprompt). Two
// goroutines run it: the generator (the LLM and tools, or the script) writes sentences
// into a bounded channel, and the speaker synthesises them in order into the playout.
// Both report to the control loop through Session.notes; the control loop owns all the
// bookkeeping below and decides what enters the history.

type noteKind int

const (
	noteLLMRequest noteKind = iota + 1
	noteFirstToken
	noteSentence   // idx, round, text, filler: queued for TTS
	noteTTSStart   // idx: Synthesize called
	noteTTSFirst   // idx: first audio back
	noteRoundDone  // round, text, calls
	noteToolResult // round, tool
	noteAction     // action
	noteGenDone    // err
	noteSpeakerDone
	noteSegStarted // idx: first sample played (from the playout)
	noteSegPlayed  // idx, samples: fully played (from the playout)
	noteKnowledge  // wait
	noteDTMF       // text: digits for send_dtmf, validated
)

// note is a message to the control loop. The playout's notes and the reply goroutines'
// share one channel, so causally ordered notes arrive in order.
type note struct {
	kind    noteKind
	reply   uint64
	at      time.Time
	idx     int
	round   int
	text    string
	filler  bool
	calls   []llm.ToolCall
	tool    *ToolCall
	action  *endAction
	err     error
	samples int64
	wait    time.Duration
}

// endAction is an end_call or transfer_call the model made: carried out when the reply
// has finished playing.
type endAction struct {
	reason      EndReason
	destination string
}

// sentenceReq is one piece of text for the speaker.
type sentenceReq struct {
	idx  int
	text string
}

// reply is the control loop's record of a reply in progress.
type reply struct {
	id     uint64
	turn   int
	ctx    context.Context
	cancel context.CancelFunc

	ledger        TurnLatency
	ledgerEmitted bool
	sents         []*sentRec
	rounds        []*roundRec
	genDone       bool
	speakerDone   bool
	nSents        int
	played        int
	action        *endAction
	scripted      bool
}

type sentRec struct {
	text      string
	round     int
	filler    bool
	known     bool // noteSentence arrived
	total     int64
	played    int64
	full      bool // played to the end
	startedAt time.Time
}

type roundRec struct {
	text    string
	calls   []llm.ToolCall
	results map[string]string
	done    bool
}

func (r *reply) sent(idx int) *sentRec {
	for len(r.sents) <= idx {
		r.sents = append(r.sents, &sentRec{})
	}
	return r.sents[idx]
}

func (r *reply) round(i int) *roundRec {
	for len(r.rounds) <= i {
		r.rounds = append(r.rounds, &roundRec{})
	}
	return r.rounds[i]
}

// post sends a note to the control loop unless the reply was cancelled or the session
// ended.
func (s *Session) post(r *reply, n note) bool {
	n.reply = r.id
	select {
	case s.notes <- n:
		return true
	case <-r.ctx.Done():
		return false
	case <-s.quit:
		return false
	}
}

// launch starts the goroutines of r: gen produces the sentences, speak says them.
func (s *Session) launch(r *reply, gen func(out *sentenceOut)) {
	ch := make(chan sentenceReq, maxQueuedSentences)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		out := &sentenceOut{s: s, r: r, ch: ch}
		gen(out)
		close(ch)
	}()
	go func() {
		defer s.wg.Done()
		s.speak(r, ch)
	}()
}

// apology is said (and kept out of the history) when the model fails before saying
// anything, even through its fallback.
const apology = "Sorry, I'm having trouble answering right now. Could you say that again?"

// maxQueuedSentences bounds the sentences waiting for TTS. The model writes far faster
// than speech plays; 32 sentences is minutes of speech, so the bound only matters for
// a runaway model, which then waits instead of piling up text.
const maxQueuedSentences = 32

// sentenceOut numbers sentences and hands them to the speaker.
type sentenceOut struct {
	s    *Session
	r    *reply
	ch   chan<- sentenceReq
	next int
	sent int // non-filler sentences
}

// emit queues one piece of text. It returns false if the reply was cancelled.
func (o *sentenceOut) emit(text string, round int, filler bool) bool {
	text = strings.TrimSpace(sentence.Speakable(text))
	if text == "" {
		return true
	}
	idx := o.next
	o.next++
	if !filler {
		o.sent++
	}
	if !o.s.post(o.r, note{kind: noteSentence, idx: idx, round: round, text: text, filler: filler}) {
		return false
	}
	select {
	case o.ch <- sentenceReq{idx: idx, text: text}:
		return true
	case <-o.r.ctx.Done():
		return false
	}
}

// scripted returns a generator that says fixed text.
func scripted(text string) func(out *sentenceOut) {
	return func(out *sentenceOut) {
		var sp sentence.Splitter
		for _, p := range append(sp.Push(text), sp.Flush()...) {
			if !out.emit(p, 0, false) {
				return
			}
		}
		out.s.post(out.r, note{kind: noteGenDone})
	}
}

// converse returns the generator of an LLM reply: knowledge lookup, model rounds and
// tool calls. history is the conversation up to and including the caller's turn.
func (s *Session) converse(history []llm.Message, query string) func(out *sentenceOut) {
	return func(out *sentenceOut) {
		err := s.runLLM(out, history, query)
		if err != nil && out.sent == 0 && out.r.ctx.Err() == nil {
			// Silence after the caller spoke reads as a dead line; say something.
			out.emit(apology, 0, true)
		}
		out.s.post(out.r, note{kind: noteGenDone, err: err})
	}
}

func (s *Session) runLLM(out *sentenceOut, history []llm.Message, query string) error {
	r := out.r
	ctx := r.ctx
	// The knowledge lookup runs while the request is assembled.
	var kres chan []Passage
	if s.cfg.Knowledge != nil && strings.TrimSpace(query) != "" {
		kres = make(chan []Passage, 1)
		kctx, kcancel := context.WithCancel(ctx)
		defer kcancel()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			ps, err := s.cfg.Knowledge.Search(kctx, query, s.cfg.KnowledgeTopK)
			if err != nil && kctx.Err() == nil {
				s.log.Warn("voice: knowledge lookup failed", "err", err)
			}
			kres <- ps
		}()
	}
	msgs := make([]llm.Message, 0, len(history)+2)
	msgs = append(msgs, llm.Message{Role: llm.System, Content: s.systemPrompt})
	msgs = append(msgs, history...)
	req := llm.Request{Model: s.cfg.Agent.LLMModel, Messages: msgs, Tools: s.tools, MaxTokens: s.cfg.Agent.MaxTokens}
	if t := s.cfg.Agent.Temperature; t != nil {
		f := float32(*t)
		req.Temperature = &f
	}
	if kres != nil {
		start := s.clock.Now()
		t := s.clock.NewTimer(s.cfg.KnowledgeBudget)
		var ps []Passage
		select {
		case ps = <-kres:
		case <-t.C():
			s.log.Warn("voice: knowledge lookup over budget; answering without it", "budget", s.cfg.KnowledgeBudget)
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		t.Stop()
		if len(ps) > 0 {
			// Just before the caller's latest words.
			last := len(req.Messages) - 1
			req.Messages = append(req.Messages[:last:last], knowledgeMessage(ps), req.Messages[last])
		}
		s.post(r, note{kind: noteKnowledge, wait: s.clock.Now().Sub(start)})
	}
	s.post(r, note{kind: noteLLMRequest, at: s.clock.Now()})

	firstToken := true
	for round := 0; ; round++ {
		if round == s.cfg.MaxToolRounds-1 {
			// The last round allowed: no tools, so the model has to answer in words.
			req.Tools = nil
		}
		text, calls, err := s.llmRound(out, req, round, &firstToken)
		if err != nil || ctx.Err() != nil {
			return err
		}
		if !s.post(r, note{kind: noteRoundDone, round: round, text: text, calls: calls}) {
			return nil
		}
		if len(calls) == 0 {
			return nil
		}
		results, action, ok := s.runTools(out, round, calls, strings.TrimSpace(text) != "")
		if !ok {
			return nil
		}
		if action != nil {
			s.post(r, note{kind: noteAction, action: action})
			return nil
		}
		req.Messages = append(req.Messages, llm.Message{Role: llm.Assistant, Content: text, ToolCalls: calls})
		req.Messages = append(req.Messages, results...)
	}
}

// llmRound streams one model answer, queuing its sentences as they complete.
func (s *Session) llmRound(out *sentenceOut, req llm.Request, round int, firstToken *bool) (string, []llm.ToolCall, error) {
	r := out.r
	stream, err := s.cfg.LLM.Stream(r.ctx, req)
	if err != nil {
		if r.ctx.Err() != nil {
			return "", nil, nil
		}
		return "", nil, fmt.Errorf("voice: llm: %w", err)
	}
	defer stream.Close()
	// The first piece of the whole reply is cut at a clause, so speech starts sooner.
	sp := sentence.Splitter{FirstClause: out.sent == 0}
	var text strings.Builder
	var calls []llm.ToolCall
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return text.String(), nil, nil
			}
			// Speak what arrived; the model's failure ends the round.
			for _, p := range sp.Flush() {
				out.emit(p, round, false)
			}
			return text.String(), nil, fmt.Errorf("voice: llm stream: %w", err)
		}
		if *firstToken && (c.Text != "" || len(c.ToolCalls) > 0) {
			*firstToken = false
			s.post(r, note{kind: noteFirstToken, at: s.clock.Now()})
		}
		if c.Text != "" {
			text.WriteString(c.Text)
			for _, p := range sp.Push(c.Text) {
				if !out.emit(p, round, false) {
					return text.String(), nil, nil
				}
			}
		}
		calls = append(calls, c.ToolCalls...)
	}
	for _, p := range sp.Flush() {
		if !out.emit(p, round, false) {
			return text.String(), nil, nil
		}
	}
	return text.String(), calls, nil
}

// runTools carries out one round's tool calls: HTTP functions concurrently, with a
// filler phrase if they take longer than ToolFillerDelay (and the model said nothing
// before calling them), and the built-ins. It returns the tool messages for the next
// round, or an action that ends the call. ok is false if the reply was cancelled.
func (s *Session) runTools(out *sentenceOut, round int, calls []llm.ToolCall, spoke bool) ([]llm.Message, *endAction, bool) {
	r := out.r
	results := make([]string, len(calls))
	events := make([]*ToolCall, len(calls))
	var action *endAction
	var closing []string
	var wg sync.WaitGroup
	pending := 0
	done := make(chan struct{}, len(calls))
	for i, c := range calls {
		ev := &ToolCall{Turn: r.turn, ID: c.ID, Name: c.Name, Arguments: c.Arguments}
		events[i] = ev
		switch c.Name {
		case ToolEndCall, ToolTransfer:
			var a builtinArgs
			if err := json.Unmarshal([]byte(orEmptyObject(c.Arguments)), &a); err != nil {
				results[i] = toolError("the arguments are not a JSON object")
				break
			}
			if c.Name == ToolTransfer {
				dest := strings.TrimSpace(a.Destination)
				if !containsFold(s.cfg.Agent.TransferDestinations, dest) {
					results[i] = toolError(fmt.Sprintf("transfer destination %q is not allowed", dest))
					break
				}
				if action == nil {
					action = &endAction{reason: EndTransfer, destination: dest}
				}
			} else if action == nil {
				action = &endAction{reason: EndCallTool}
			}
			results[i] = `{"ok":true}`
			if m := strings.TrimSpace(a.Message); m != "" {
				closing = append(closing, m)
			}
		case ToolSendDTMF:
			if !s.cfg.DTMFOut {
				results[i] = toolError("this call cannot send keys")
				break
			}
			var a struct {
				Digits string `json:"digits"`
			}
			if err := json.Unmarshal([]byte(orEmptyObject(c.Arguments)), &a); err != nil {
				results[i] = toolError("the arguments are not a JSON object")
				break
			}
			digits, err := normalizeDigits(a.Digits)
			if err != nil {
				results[i] = toolError(err.Error())
				ev.Err = err.Error()
				break
			}
			// Sent now, not after the round: a phone menu waits for the key, and the
			// model's next words may be its answer to what the menu says next.
			if !s.post(r, note{kind: noteDTMF, text: digits}) {
				return nil, nil, false
			}
			b, _ := json.Marshal(map[string]any{"ok": true, "sent": digits})
			results[i] = string(b)
		default:
			f, ok := s.funcs[c.Name]
			if !ok {
				results[i] = toolError(fmt.Sprintf("there is no tool named %q", c.Name))
				break
			}
			pending++
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := callFunction(r.ctx, s.cfg.ToolClient, f, c.Arguments, s.clock)
				results[i] = o.result
				ev.Status, ev.Duration = o.status, o.duration
				if o.err != nil {
					ev.Err = o.err.Error()
				}
				done <- struct{}{}
			}()
		}
	}
	if pending > 0 {
		timer := s.clock.NewTimer(s.cfg.ToolFillerDelay)
		filler := false
	wait:
		for pending > 0 {
			select {
			case <-done:
				pending--
			case <-timer.C():
				if !spoke && !filler {
					filler = true
					phrases := s.cfg.Agent.FillerPhrases
					n := s.fillerN.Add(1) - 1
					out.emit(phrases[n%uint64(len(phrases))], round, true)
				}
			case <-r.ctx.Done():
				break wait
			}
		}
		timer.Stop()
		wg.Wait()
		for i := range events {
			events[i].Filler = filler && events[i].Name != ToolEndCall && events[i].Name != ToolTransfer
		}
	}
	if r.ctx.Err() != nil {
		return nil, nil, false
	}
	msgs := make([]llm.Message, len(calls))
	for i, c := range calls {
		events[i].Result = results[i]
		msgs[i] = llm.Message{Role: llm.ToolRole, ToolCallID: c.ID, Name: c.Name, Content: results[i]}
		if !s.post(r, note{kind: noteToolResult, round: round, tool: events[i]}) {
			return nil, nil, false
		}
	}
	if action != nil {
		for _, m := range closing {
			if !out.emit(m, round, false) {
				return nil, nil, false
			}
		}
	}
	return msgs, action, true
}

func orEmptyObject(s string) string {
	if strings.TrimSpace(s) == "" {
		return "{}"
	}
	return s
}

func containsFold(list []string, v string) bool {
	for _, e := range list {
		if strings.EqualFold(strings.TrimSpace(e), v) {
			return true
		}
	}
	return false
}

// speak synthesises the reply's sentences in order into the playout.
func (s *Session) speak(r *reply, in <-chan sentenceReq) {
	f := &feeder{s: s, ctx: r.ctx}
	defer f.close()
	n := 0
	for {
		var req sentenceReq
		var ok bool
		select {
		case req, ok = <-in:
		case <-r.ctx.Done():
			return
		}
		if !ok {
			s.post(r, note{kind: noteSpeakerDone, idx: n})
			return
		}
		n++
		// Every segment opened is closed, on every path: an open one would hold up
		// the playout's queue.
		f.seg = s.play.open(r.id, req.idx)
		if !s.post(r, note{kind: noteTTSStart, idx: req.idx, at: s.clock.Now()}) {
			s.play.close(f.seg)
			return
		}
		err := f.say(r, req)
		s.play.close(f.seg)
		if err != nil {
			if r.ctx.Err() != nil || errors.Is(err, errCleared) {
				return
			}
			s.log.Warn("voice: tts failed; skipping the sentence", "err", err, "text", req.text)
		}
	}
}

// feeder resamples TTS audio to the output rate and writes it into the playout.
type feeder struct {
	s   *Session
	ctx context.Context
	seg *pseg
	res *pooledResampler
}

func (f *feeder) WriteFrame(fr audio.Frame) error {
	return f.s.play.write(f.ctx, f.seg, fr.Samples)
}

func (f *feeder) say(r *reply, req sentenceReq) error {
	s := f.s
	stream, err := s.cfg.TTS.Synthesize(r.ctx, tts.Request{Text: req.text, Voice: s.cfg.Agent.Voice, Language: s.cfg.Agent.Language})
	if err != nil {
		return err
	}
	defer stream.Close()
	first := true
	for {
		fr, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.flush()
			return err
		}
		if len(fr.Samples) == 0 {
			continue
		}
		if first {
			first = false
			s.post(r, note{kind: noteTTSFirst, idx: req.idx, at: s.clock.Now()})
		}
		if fr.Rate <= 0 {
			fr.Rate = s.cfg.TTS.SampleRate()
		}
		if f.res == nil || f.res.res.InRate() != fr.Rate {
			// A fallback voice may speak at another rate than the primary.
			f.flush()
			f.closeRes()
			f.res, err = s.takeResampler(fr.Rate, f)
			if err != nil {
				return err
			}
		}
		if err := f.res.res.WriteFrame(fr); err != nil {
			f.res.res.Reset()
			return err
		}
	}
	return f.flush()
}

// flush drains the resampler's tail into the current segment: each sentence is its own
// stream of audio.
func (f *feeder) flush() error {
	if f.res == nil {
		return nil
	}
	err := f.res.res.Flush()
	if err != nil {
		f.res.res.Reset()
	}
	return err
}

func (f *feeder) closeRes() {
	if f.res != nil {
		f.s.putResampler(f.res)
		f.res = nil
	}
}

func (f *feeder) close() { f.closeRes() }

// resamplerPool keeps a session's TTS resamplers between replies: creating a soxr
// filter costs 0.3-0.5 ms, a quarter of the engine's whole per-turn budget. A session
// needs one per voice rate, so a couple are kept.
type resamplerPool struct {
	mu     sync.Mutex
	free   []*pooledResampler
	closed bool
}

// pooledResampler is a filter whose output goes to whichever feeder holds it.
type pooledResampler struct {
	res  *audio.Resampler
	next audio.Writer
}

func (p *pooledResampler) WriteFrame(fr audio.Frame) error { return p.next.WriteFrame(fr) }

// takeResampler returns a clean resampler from rate to the output rate, writing to next.
func (s *Session) takeResampler(rate int, next audio.Writer) (*pooledResampler, error) {
	s.resPool.mu.Lock()
	for i, p := range s.resPool.free {
		if p.res.InRate() == rate {
			s.resPool.free = append(s.resPool.free[:i], s.resPool.free[i+1:]...)
			s.resPool.mu.Unlock()
			p.next = next
			return p, nil
		}
	}
	s.resPool.mu.Unlock()
	p := &pooledResampler{next: next}
	res, err := audio.NewResampler(rate, s.cfg.OutputRate, p)
	if err != nil {
		return nil, err
	}
	p.res = res
	return p, nil
}

// putResampler resets a resampler and returns it to the pool, or frees it if the pool
// is full or the session over.
func (s *Session) putResampler(p *pooledResampler) {
	p.res.Reset()
	p.next = discard
	s.resPool.mu.Lock()
	defer s.resPool.mu.Unlock()
	if s.resPool.closed || len(s.resPool.free) >= 2 {
		p.res.Close()
		return
	}
	s.resPool.free = append(s.resPool.free, p)
}

// closeResamplers frees the pooled resamplers (at the end of the session, once every
// feeder has returned its own).
func (s *Session) closeResamplers() {
	s.resPool.mu.Lock()
	defer s.resPool.mu.Unlock()
	s.resPool.closed = true
	for _, p := range s.resPool.free {
		p.res.Close()
	}
	s.resPool.free = nil
}

var discard = audio.WriterFunc(func(audio.Frame) error { return nil })
