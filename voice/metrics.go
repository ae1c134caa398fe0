package voice

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's Prometheus series, shared by every session of a process:
// create one with NewMetrics and put it in each Config.
//
// parley_voice_turn_latency_seconds{stage} is a histogram per stage of the latency
// ledger, from which dashboards read p50 and p95 with histogram_quantile:
//
//   - endpointing: caller's speech end → end-of-turn decision
//   - stt: caller's speech end → final transcript
//   - llm_first_token: model request → first token
//   - tts_first_byte: first sentence to TTS → first audio
//   - response: end-of-turn decision → first audio frame out
//   - voice_to_voice: caller's speech end → first audio frame out
type Metrics struct {
	latency       *prometheus.HistogramVec
	interruptions *prometheus.CounterVec
	calls         *prometheus.CounterVec
}

// latencyBuckets run from 5 ms to 10 s in steps of about 30%, fine enough that an
// interpolated p50 or p95 is within ±15% anywhere in the range that matters for
// conversation (100 ms to 3 s).
var latencyBuckets = prometheus.ExponentialBucketsRange(0.005, 10, 30)

// NewMetrics creates the series and registers them on reg (nil: not registered, for
// tests that read them directly).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_voice_turn_latency_seconds",
			Help:    "Latency of each stage of a conversational turn.",
			Buckets: latencyBuckets,
		}, []string{"stage"}),
		interruptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_voice_interruptions_total",
			Help: "Caller speech over the agent, by outcome: barge_in, false_interruption (paused, then resumed), false_onset (paused at a sound that never became speech).",
		}, []string{"kind"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_voice_calls_ended_total",
			Help: "Voice sessions ended, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.interruptions, m.calls} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Collectors returns the series, for registering them elsewhere or reading them in tests.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.latency, m.interruptions, m.calls}
}

func (m *Metrics) observe(l TurnLatency) {
	obs := func(stage string, d time.Duration) {
		if d > 0 {
			m.latency.WithLabelValues(stage).Observe(d.Seconds())
		}
	}
	obs("endpointing", since(l.SpeechEnded, l.EndOfTurn))
	obs("stt", l.STTDelay())
	obs("llm_first_token", l.LLMTimeToFirstToken())
	obs("tts_first_byte", l.TTSTimeToFirstByte())
	obs("response", l.Response())
	obs("voice_to_voice", l.VoiceToVoice())
}

func (m *Metrics) observeEnd(reason EndReason) {
	m.calls.WithLabelValues(string(reason)).Inc()
}
