package llm

// HTTP plumbing shared by this package's adapters: the default client, the doer that
// remembers Retry-After, and the retry policy. llm, stt and tts each carry a copy of
// this file (they differ in their timeout sentinel, and stt and tts add websocket
// helpers): the three packages have no shared parent of their own, and the code is small.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// defaultHTTPClient is used when a config names no client. It has no overall Timeout,
// because that would cut off an answer that is still streaming; instead every phase that
// can hang before the first byte is bounded: dialing (10 s), the TLS handshake (10 s) and
// the wait for response headers (30 s, long enough for a transcription server that only
// answers once it has finished). Timeouts after that are the adapters' own.
var defaultHTTPClient = sync.OnceValue(func() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}}
})

// maxErrorBody bounds how much of an error response we keep for the error message.
const maxErrorBody = 64 << 10

// attemptInfo records what the server said about a failed attempt that go-openai's error
// types do not carry: the status and the Retry-After header.
type attemptInfo struct {
	status        int
	retryAfter    time.Duration
	hasRetryAfter bool
}

type attemptKey struct{}

// withAttemptInfo returns a context under which recordingDoer fills info.
func withAttemptInfo(ctx context.Context, info *attemptInfo) context.Context {
	return context.WithValue(ctx, attemptKey{}, info)
}

// recordingDoer wraps the caller's client for go-openai. On an error status it records the
// status and Retry-After into the request's attemptInfo, and it buffers and closes the
// error body: go-openai reads error bodies on its streaming and raw paths but never closes
// them, which would pin the connection.
type recordingDoer struct{ c *http.Client }

func (d recordingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.c.Do(req)
	if err != nil || resp.StatusCode < http.StatusBadRequest {
		return resp, err
	}
	if info, ok := req.Context().Value(attemptKey{}).(*attemptInfo); ok {
		info.status = resp.StatusCode
		info.retryAfter, info.hasRetryAfter = parseRetryAfter(resp.Header, time.Now())
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// parseRetryAfter reads Retry-After (delta-seconds or an HTTP date) and OpenAI's more
// precise retry-after-ms, preferring the latter.
func parseRetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
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

// retryPolicy decides whether a failed attempt may be tried again. Adapters only consult
// it before any output reached the caller: a retry after that would repeat words.
type retryPolicy struct {
	// maxRetries is how many retries follow the first attempt.
	maxRetries int
	// maxRetryAfter is the longest Retry-After we are willing to wait. In a live call a
	// longer wait is worse than failing (and letting a fallback provider answer).
	maxRetryAfter time.Duration
}

// Backoff between retries when the server gives no Retry-After: 250 ms doubling to at
// most 2 s, with jitter so that many calls hit by the same outage do not retry in step.
const (
	backoffBase = 250 * time.Millisecond
	backoffCap  = 2 * time.Second
)

// next reports how long to wait before retrying after the failures-th failed attempt
// (counting from 1), or false if err is final.
func (p retryPolicy) next(failures int, err error, info *attemptInfo) (time.Duration, bool) {
	if failures > p.maxRetries || !retryable(err, info) {
		return 0, false
	}
	if info != nil && info.hasRetryAfter {
		if info.retryAfter > p.maxRetryAfter {
			return 0, false
		}
		return info.retryAfter, true
	}
	d := backoffBase << (failures - 1)
	if d <= 0 || d > backoffCap {
		d = backoffCap
	}
	return d/2 + rand.N(d/2+1), true
}

// retryable says whether err is worth another attempt: overload and server errors,
// dropped connections and our own first-token timeout are; client errors (bad key, bad
// request, unknown model) are not.
func retryable(err error, info *attemptInfo) bool {
	if errors.Is(err, ErrFirstTokenTimeout) {
		return true
	}
	status := 0
	if info != nil {
		status = info.status
	}
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr) && apiErr.HTTPStatusCode != 0:
		status = apiErr.HTTPStatusCode
	case errors.As(err, &reqErr) && reqErr.HTTPStatusCode != 0:
		status = reqErr.HTTPStatusCode
	}
	if status != 0 {
		return retryableStatus(status)
	}
	return transientNetError(err)
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooEarly,
		http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// transientNetError recognises failures of the connection itself, as opposed to
// configuration mistakes (bad scheme, bad certificate, unknown host).
func transientNetError(err error) bool {
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
