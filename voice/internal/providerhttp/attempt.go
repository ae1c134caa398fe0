package providerhttp

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxErrorBody bounds how much of an error response RecordingDoer keeps for the error
// message.
const maxErrorBody = 64 << 10

// Attempt is what the server said about a failed attempt that go-openai's error types
// and a refused websocket handshake do not carry: the status and the Retry-After
// header. The zero value means the server said nothing (the attempt failed before an
// answer, or succeeded).
type Attempt struct {
	// Status is the HTTP status of the refusal, or 0.
	Status int
	// RetryAfter is how long the server asked us to wait; it is meaningful only when
	// HasRetryAfter is set, because "retry after 0 s" is an answer too.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// RecordAttempt sets *a to got, so that an *Attempt can be handed to WithRecorder.
func (a *Attempt) RecordAttempt(got Attempt) { *a = got }

// A Recorder is told what the server said about a failed attempt.
type Recorder interface {
	RecordAttempt(Attempt)
}

type recorderKey struct{}

// WithRecorder returns a context under which RecordingDoer tells r about an error
// response to a request made with that context.
func WithRecorder(ctx context.Context, r Recorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, r)
}

// RecordingDoer wraps a client for go-openai (it satisfies openai.HTTPDoer). On an error
// status it tells the request's Recorder (see WithRecorder) the status and Retry-After,
// and it buffers and closes the error body: go-openai reads error bodies on its
// streaming and raw paths but never closes them, which would pin the connection.
type RecordingDoer struct {
	Client *http.Client
}

// Do sends req through d.Client.
func (d RecordingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.Client.Do(req)
	if err != nil || resp.StatusCode < http.StatusBadRequest {
		return resp, err
	}
	if r, ok := req.Context().Value(recorderKey{}).(Recorder); ok {
		r.RecordAttempt(responseAttempt(resp))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// HandshakeAttempt extracts the status and Retry-After of a refused websocket handshake
// from the response the dialer returned (nil when there was none).
func HandshakeAttempt(resp *http.Response) Attempt {
	if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return Attempt{}
	}
	return responseAttempt(resp)
}

func responseAttempt(resp *http.Response) Attempt {
	a := Attempt{Status: resp.StatusCode}
	a.RetryAfter, a.HasRetryAfter = ParseRetryAfter(resp.Header, time.Now())
	return a
}

// ParseRetryAfter reads Retry-After (delta-seconds or an HTTP date, relative to now) and
// OpenAI's more precise retry-after-ms, preferring the latter. It reports false when
// neither is present and valid.
func ParseRetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// Of returns *a, or the zero Attempt when a is nil (an attempt that failed before any
// server answered).
func Of(a *Attempt) Attempt {
	if a == nil {
		return Attempt{}
	}
	return *a
}
