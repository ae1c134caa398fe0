package openaitest

import (
	"cmp"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// Upload is one transcription request's audio and fields, as Config.Transcribe sees it.
type Upload struct {
	// Samples is the decoded audio (stereo averaged to mono), at SampleRate.
	Samples    []int16
	SampleRate int
	Duration   time.Duration
	// Model, Language and Prompt are the form fields as sent ("" when absent).
	Model, Language, Prompt string
}

// TranscriptionRecord is what the server saw of one transcription request and when.
type TranscriptionRecord struct {
	Model, Language, Prompt string
	// ResponseFormat is the form field as sent; the voice adapter sends "json".
	ResponseFormat string
	// FileName is the upload's file name ("utterance.wav" from the voice adapter).
	FileName string
	// SampleRate, Samples and Duration describe the uploaded WAV.
	SampleRate int
	Samples    int
	Duration   time.Duration
	// Text is the transcript answered (or scripted, for a failed request).
	Text string
	// Status is the HTTP status answered.
	Status int
	// Started is when the request arrived, Received when the whole upload had been
	// read (STTDelay counts from there), Answered when the answer went out (zero if it
	// did not), Done when the handler finished.
	Started, Received, Answered, Done time.Time
	// Canceled says the client went away, or Close came, before the answer.
	Canceled bool
}

// maxUpload bounds an upload: OpenAI's own limit is 25 MB.
const maxUpload = 25 << 20

func (s *Server) handleTranscription(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	r.Body = http.MaxBytesReader(w, r.Body, maxUpload)
	// Parsing reads the body to its end, after which net/http cancels r.Context() when
	// the client goes away.
	if err := r.ParseMultipartForm(maxUpload); err != nil {
		s.badUpload(w, started, "openaitest: bad multipart upload: "+err.Error())
		return
	}
	defer r.MultipartForm.RemoveAll()
	f, fh, err := r.FormFile("file")
	if err != nil {
		s.badUpload(w, started, "openaitest: no file in the upload: "+err.Error())
		return
	}
	wav, err := audio.ReadWAV(f)
	f.Close()
	if err != nil {
		s.badUpload(w, started, "openaitest: the upload is not a WAV this server reads: "+err.Error())
		return
	}
	format := r.FormValue("response_format")
	switch format {
	case "", "json", "text", "verbose_json":
	default:
		s.badUpload(w, started, fmt.Sprintf("openaitest: response_format %q: this server answers json, text or verbose_json", format))
		return
	}
	received := time.Now()
	up := Upload{Samples: wav.Samples, SampleRate: wav.Rate, Duration: wav.Duration(),
		Model: r.FormValue("model"), Language: r.FormValue("language"), Prompt: r.FormValue("prompt")}

	s.mu.Lock()
	fn := s.transcribe
	var text string
	if fn == nil && len(s.transcripts) > 0 {
		text = s.transcripts[min(s.sttNext, len(s.transcripts)-1)]
		s.sttNext++
	}
	s.mu.Unlock()
	if fn != nil {
		text = fn(up)
	}
	status := cmp.Or(s.cfg.TranscriptionStatus, http.StatusOK)
	var i int
	s.update(func() {
		i = len(s.transcriptions)
		s.transcriptions = append(s.transcriptions, TranscriptionRecord{
			Model: up.Model, Language: up.Language, Prompt: up.Prompt, ResponseFormat: format,
			FileName: fh.Filename, SampleRate: wav.Rate, Samples: len(wav.Samples), Duration: up.Duration,
			Text: text, Status: status, Started: started, Received: received,
		})
	})
	canceled := status == http.StatusOK // until the answer has gone out
	defer func() {
		s.update(func() {
			s.transcriptions[i].Canceled = canceled
			s.transcriptions[i].Done = time.Now()
		})
	}()
	if status != http.StatusOK {
		failure(w, status)
		return
	}
	if !s.sleepUntil(r.Context(), received.Add(s.cfg.STTDelay)) {
		return
	}
	switch format {
	case "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(text + "\n"))
	case "verbose_json":
		writeJSON(w, http.StatusOK, map[string]any{
			"task": "transcribe", "language": cmp.Or(strings.TrimSpace(up.Language), "english"),
			"duration": up.Duration.Seconds(), "text": text, "segments": []any{},
		})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"text": text})
	}
	canceled = false
	s.update(func() { s.transcriptions[i].Answered = time.Now() })
}

// badUpload records and answers a request the server could not read.
func (s *Server) badUpload(w http.ResponseWriter, started time.Time, msg string) {
	s.update(func() {
		s.transcriptions = append(s.transcriptions, TranscriptionRecord{Status: http.StatusBadRequest, Started: started, Done: time.Now()})
	})
	writeError(w, http.StatusBadRequest, "invalid_request_error", msg)
}
