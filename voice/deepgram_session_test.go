package voice

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// dgSpeechServer is a scripted Deepgram live endpoint that listens to the audio it gets:
// a 20 ms chunk louder than -45 dBFS is speech. While the caller speaks it sends
// interim Results revealing the scripted transcript a word per 250 ms of speech; on
// Finalize it sends the final Result (from_finalize) spanning the speech, with
// Deepgram's start and duration in seconds.
type dgSpeechServer struct {
	*httptest.Server
	transcript    string
	finalizeDelay time.Duration
	mu            sync.Mutex
	interims      int
	finals        int
	wg            sync.WaitGroup
}

func newDGSpeechServer(t *testing.T, transcript string) *dgSpeechServer {
	ds := &dgSpeechServer{transcript: transcript}
	ds.Server = httptest.NewServer(http.HandlerFunc(ds.handle))
	t.Cleanup(func() {
		ds.Server.Close()
		ds.wg.Wait()
	})
	return ds
}

func (ds *dgSpeechServer) handle(w http.ResponseWriter, r *http.Request) {
	ds.wg.Add(1)
	defer ds.wg.Done()
	if r.Header.Get("Authorization") != "Token dg-key" || r.URL.Query().Get("encoding") != "linear16" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	rate := 16000.0
	words := strings.Fields(ds.transcript)
	var (
		samples       int64
		speechStart   = int64(-1)
		speechEnd     int64
		chunkSum      float64
		chunkN, shown int
	)
	send := func(text string, final bool, start, end int64) {
		b, _ := json.Marshal(map[string]any{
			"type": "Results", "channel_index": []int{0, 1},
			"start": float64(start) / rate, "duration": float64(end-start) / rate,
			"is_final": final, "speech_final": final, "from_finalize": final,
			"channel": map[string]any{"alternatives": []any{map[string]any{"transcript": text, "confidence": 0.97}}},
		})
		c.Write(ctx, websocket.MessageText, b)
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageText {
			var m struct{ Type string }
			json.Unmarshal(data, &m)
			switch m.Type {
			case "Finalize":
				ds.mu.Lock()
				ds.finals++
				ds.mu.Unlock()
				// Deepgram takes a moment to finalise; the interim is in hand meanwhile.
				select {
				case <-time.After(ds.finalizeDelay):
				case <-ctx.Done():
					return
				}
				if speechStart >= 0 {
					send(ds.transcript, true, speechStart, speechEnd)
					speechStart, shown = -1, 0
				} else {
					send("", true, samples, samples)
				}
			case "CloseStream":
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
			continue
		}
		for i := 0; i+1 < len(data); i += 2 {
			v := float64(int16(binary.LittleEndian.Uint16(data[i:])))
			chunkSum += v * v
			chunkN++
			samples++
			if chunkN < 320 {
				continue
			}
			loud := 10*math.Log10(chunkSum/float64(chunkN)/(32768*32768)) > -45
			chunkSum, chunkN = 0, 0
			if loud {
				if speechStart < 0 {
					speechStart = samples - 320
				}
				speechEnd = samples
				if n := min(len(words), 1+int((samples-speechStart)/4000)); n > shown {
					shown = n
					ds.mu.Lock()
					ds.interims++
					ds.mu.Unlock()
					send(strings.Join(words[:n], " "), false, speechStart, samples)
				}
			}
		}
	}
}

// TestStreamingRecogniser: a turn through the Deepgram streaming adapter. Interim
// transcripts arrive while the caller speaks and are passed on; the one in hand when
// the caller stops already reads as a complete sentence, so the shortest endpointing
// delay applies and the turn is decided before the (slow) final arrives; the final
// answers the engine's Flush and is attributed to the caller's speech by its offsets.
func TestStreamingRecogniser(t *testing.T) {
	t.Parallel()
	const question = "Hello, I would like to book an appointment for Tuesday."
	dg := newDGSpeechServer(t, question)
	dg.finalizeDelay = 800 * time.Millisecond
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: "Sure, what time?"}}})
	e := newEnv(t, srv, func(c *Config) {
		p, err := stt.NewDeepgram(stt.DeepgramConfig{BaseURL: "ws" + strings.TrimPrefix(dg.URL, "http"), APIKey: "dg-key", HTTPClient: dg.Client()})
		if err != nil {
			t.Fatal(err)
		}
		c.STT = p
	})
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))
	e.rec.waitFor(t, timeout, "answer", agentSaid("Sure, what time?"))

	iInterim := e.rec.index(func(ev Event) bool {
		tr, ok := ev.(*Transcript)
		return ok && tr.Speaker == SpeakerUser && !tr.Final && strings.HasPrefix(question, tr.Text)
	})
	iFinal := e.rec.index(func(ev Event) bool {
		tr, ok := ev.(*Transcript)
		return ok && tr.Speaker == SpeakerUser && tr.Final && tr.Text == question
	})
	if iInterim < 0 || iFinal < 0 || iInterim > iFinal {
		t.Errorf("interim at %d, final at %d:\n%s", iInterim, iFinal, describe(e.rec.all()))
	}
	led := e.rec.waitFor(t, timeout, "ledger", isKind[*TurnLatency]).(*TurnLatency)
	if led.EndpointingDelay != defaultEndpointingMin {
		t.Errorf("endpointing delay %v, want %v (the interim was a complete sentence)", led.EndpointingDelay, defaultEndpointingMin)
	}
	// The turn was decided on the interim, before the final came; the model was asked
	// once the final was in.
	if !led.EndOfTurn.Before(led.STTFinal) || led.LLMRequest.Before(led.STTFinal) {
		t.Errorf("decided %v, final %v, model asked %v", led.EndOfTurn, led.STTFinal, led.LLMRequest)
	}
	if h := e.waitHistory(t, 2); len(h) != 2 || h[0].Content != question {
		t.Errorf("history %+v", h)
	}
	dg.mu.Lock()
	defer dg.mu.Unlock()
	if dg.interims < 3 || dg.finals < 1 {
		t.Errorf("server sent %d interims and answered %d Finalizes", dg.interims, dg.finals)
	}
}
