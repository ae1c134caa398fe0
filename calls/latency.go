package calls

import (
	"math"
	"slices"
	"time"

	"github.com/parleyhq/parley/voice"
)

// Latency is a call's latency: one entry per answered caller turn, and for each metric
// a summary over the call in Retell's shape (latency.e2e.{p50,p90,p95,p99,min,max,num,
// values}). All figures are milliseconds. A metric is absent from a turn when its stage
// did not happen (a scripted reply has no model, an interrupted reply may have no
// audio), and its summary is absent when no turn has it: a missing stage is not a zero.
//
// The metrics (the engine's latency ledger, voice.TurnLatency):
//
//   - e2e: voice to voice, from the end of the caller's words to the agent's first audio
//   - response: from the end-of-turn decision to the agent's first audio
//   - endpointing: from the end of the caller's words to the end-of-turn decision
//   - asr: from the end of the caller's words to the turn's final transcript
//   - llm: the model's time to first token
//   - tts: the voice's time to first audio of the first sentence
//   - knowledge_base: how long the knowledge lookup held up the model request
type Latency struct {
	E2E           *LatencySummary `json:"e2e,omitempty"`
	Response      *LatencySummary `json:"response,omitempty"`
	Endpointing   *LatencySummary `json:"endpointing,omitempty"`
	ASR           *LatencySummary `json:"asr,omitempty"`
	LLM           *LatencySummary `json:"llm,omitempty"`
	TTS           *LatencySummary `json:"tts,omitempty"`
	KnowledgeBase *LatencySummary `json:"knowledge_base,omitempty"`
	Turns         []LatencyTurn   `json:"turns"`
}

// LatencySummary summarises one metric over a call. Percentiles interpolate linearly
// between the two nearest values (numpy's default), so p50 of [100, 200] is 150.
type LatencySummary struct {
	P50    int64   `json:"p50"`
	P90    int64   `json:"p90"`
	P95    int64   `json:"p95"`
	P99    int64   `json:"p99"`
	Min    int64   `json:"min"`
	Max    int64   `json:"max"`
	Num    int     `json:"num"`
	Values []int64 `json:"values"` // in turn order
}

// LatencyTurn is the latency of one reply, in milliseconds; nil means the stage did not
// happen. EndpointingDelay is the end-of-turn delay the adaptive endpointer chose (what
// it waited for; endpointing is what the wait actually came to).
type LatencyTurn struct {
	Turn             int    `json:"turn"`
	E2E              *int64 `json:"e2e,omitempty"`
	Response         *int64 `json:"response,omitempty"`
	Endpointing      *int64 `json:"endpointing,omitempty"`
	EndpointingDelay *int64 `json:"endpointing_delay,omitempty"`
	ASR              *int64 `json:"asr,omitempty"`
	LLM              *int64 `json:"llm,omitempty"`
	TTS              *int64 `json:"tts,omitempty"`
	KnowledgeBase    *int64 `json:"knowledge_base,omitempty"`
}

// LatencyTurnOf converts the engine's ledger of one reply.
func LatencyTurnOf(l voice.TurnLatency) LatencyTurn {
	var endpointing time.Duration
	if !l.SpeechEnded.IsZero() && !l.EndOfTurn.IsZero() {
		endpointing = l.EndOfTurn.Sub(l.SpeechEnded)
	}
	return LatencyTurn{
		Turn:             l.Turn,
		E2E:              msOf(l.VoiceToVoice()),
		Response:         msOf(l.Response()),
		Endpointing:      msOf(endpointing),
		EndpointingDelay: msOf(l.EndpointingDelay),
		ASR:              msOf(l.STTDelay()),
		LLM:              msOf(l.LLMTimeToFirstToken()),
		TTS:              msOf(l.TTSTimeToFirstByte()),
		KnowledgeBase:    msOf(l.KnowledgeWait),
	}
}

// msOf is d in whole milliseconds (rounded), or nil when the stage did not happen: the
// ledger reports a missing stage as 0, and a negative span can only come from a
// stage that did not happen in the usual order.
func msOf(d time.Duration) *int64 {
	if d <= 0 {
		return nil
	}
	ms := d.Round(time.Millisecond).Milliseconds()
	return &ms
}

// Summarize builds the call's Latency from its turns (kept as given).
func Summarize(turns []LatencyTurn) Latency {
	l := Latency{Turns: turns}
	if l.Turns == nil {
		l.Turns = []LatencyTurn{}
	}
	pick := func(f func(LatencyTurn) *int64) *LatencySummary {
		var vals []int64
		for _, t := range turns {
			if v := f(t); v != nil {
				vals = append(vals, *v)
			}
		}
		return summarize(vals)
	}
	l.E2E = pick(func(t LatencyTurn) *int64 { return t.E2E })
	l.Response = pick(func(t LatencyTurn) *int64 { return t.Response })
	l.Endpointing = pick(func(t LatencyTurn) *int64 { return t.Endpointing })
	l.ASR = pick(func(t LatencyTurn) *int64 { return t.ASR })
	l.LLM = pick(func(t LatencyTurn) *int64 { return t.LLM })
	l.TTS = pick(func(t LatencyTurn) *int64 { return t.TTS })
	l.KnowledgeBase = pick(func(t LatencyTurn) *int64 { return t.KnowledgeBase })
	return l
}

func summarize(vals []int64) *LatencySummary {
	if len(vals) == 0 {
		return nil
	}
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	return &LatencySummary{
		P50: percentile(sorted, 0.50), P90: percentile(sorted, 0.90),
		P95: percentile(sorted, 0.95), P99: percentile(sorted, 0.99),
		Min: sorted[0], Max: sorted[len(sorted)-1],
		Num: len(vals), Values: vals,
	}
}

// percentile interpolates linearly between the closest ranks of sorted (non-empty).
func percentile(sorted []int64, p float64) int64 {
	rank := p * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	v := float64(sorted[lo]) + (float64(sorted[hi])-float64(sorted[lo]))*(rank-float64(lo))
	return int64(math.Round(v))
}
