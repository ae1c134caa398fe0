package calls

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/voice"
)

func TestLatencyTurnOf(t *testing.T) {
	t.Parallel()
	l := voice.TurnLatency{Turn: 3, SpeechEnded: at(1), EndOfTurn: at(1.25), EndpointingDelay: 240 * time.Millisecond,
		STTFinal: at(1.1), LLMRequest: at(1.3), LLMFirstToken: at(1.5004), FirstSentence: at(1.55), TTSFirstByte: at(1.7),
		FirstAudio: at(1.72), KnowledgeWait: 30 * time.Millisecond}
	got := LatencyTurnOf(l)
	want := map[string]int64{"e2e": 720, "response": 470, "endpointing": 250, "endpointing_delay": 240, "asr": 100,
		"llm": 200, "tts": 150, "knowledge_base": 30}
	for name, p := range map[string]*int64{"e2e": got.E2E, "response": got.Response, "endpointing": got.Endpointing,
		"endpointing_delay": got.EndpointingDelay, "asr": got.ASR, "llm": got.LLM, "tts": got.TTS, "knowledge_base": got.KnowledgeBase} {
		if p == nil || *p != want[name] {
			t.Errorf("%s = %v, want %d", name, p, want[name])
		}
	}
	// An interrupted reply with no audio and no model: those stages are absent, not 0.
	cut := LatencyTurnOf(voice.TurnLatency{Turn: 4, SpeechEnded: at(1), EndOfTurn: at(1.2), STTFinal: at(1.1)})
	if cut.E2E != nil || cut.Response != nil || cut.LLM != nil || cut.TTS != nil || cut.KnowledgeBase != nil ||
		cut.ASR == nil || *cut.ASR != 100 || cut.Turn != 4 {
		t.Fatalf("partial ledger: %s", jsonOf(t, cut))
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	var turns []LatencyTurn
	for i := range 10 {
		v := int64((10 - i) * 100) // 1000, 900, …, 100: unsorted input
		turns = append(turns, LatencyTurn{Turn: i + 1, E2E: &v})
	}
	l := Summarize(turns)
	s := l.E2E
	if s.Num != 10 || s.Min != 100 || s.Max != 1000 || s.P50 != 550 || s.P90 != 910 || s.P95 != 955 || s.P99 != 991 {
		t.Fatalf("summary %s", jsonOf(t, s))
	}
	if s.Values[0] != 1000 || s.Values[9] != 100 {
		t.Fatalf("values must keep turn order: %v", s.Values)
	}
	if l.LLM != nil || l.ASR != nil {
		t.Fatal("a metric no turn has must have no summary")
	}
	one := int64(420)
	if s := Summarize([]LatencyTurn{{E2E: &one}}).E2E; s.P50 != 420 || s.P99 != 420 || s.Num != 1 {
		t.Fatalf("single value: %s", jsonOf(t, s))
	}
	empty := Summarize(nil)
	if got := jsonOf(t, empty); got != `{"turns":[]}` {
		t.Fatalf("empty latency = %s", got)
	}
}
