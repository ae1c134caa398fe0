package providerhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/coder/websocket"
	openai "github.com/sashabaranov/go-openai"
)

// Policy decides whether a failed attempt may be tried again. Adapters only consult it
// before any output reached the caller: a retry after that would repeat words or audio.
type Policy struct {
	// MaxRetries is how many retries follow the first attempt.
	MaxRetries int
	// MaxRetryAfter is the longest Retry-After we are willing to wait. In a live call a
	// longer wait is worse than failing (and letting a fallback provider answer).
	MaxRetryAfter time.Duration
	// Transient lists the adapter's own errors that are always worth another attempt,
	// matched with errors.Is: its attempt or first-byte timeouts, an empty answer.
	Transient []error
}

// Backoff between retries when the server gives no Retry-After: 250 ms doubling to at
// most 2 s, with jitter so that many calls hit by the same outage do not retry in step.
const (
	backoffBase = 250 * time.Millisecond
	backoffCap  = 2 * time.Second
)

// Next reports how long to wait before retrying after the failures-th failed attempt
// (counting from 1), or false if err is final. a is what the server said about that
// attempt; a Retry-After in it is honoured exactly, or makes err final when it is longer
// than MaxRetryAfter.
func (p Policy) Next(failures int, err error, a Attempt) (time.Duration, bool) {
	if failures > p.MaxRetries || !p.Retryable(err, a) {
		return 0, false
	}
	if a.HasRetryAfter {
		if a.RetryAfter > p.MaxRetryAfter {
			return 0, false
		}
		return a.RetryAfter, true
	}
	d := backoffBase << (failures - 1)
	if d <= 0 || d > backoffCap {
		d = backoffCap
	}
	return d/2 + rand.N(d/2+1), true
}

// Retryable says whether err is worth another attempt: overload and server errors,
// dropped connections, a websocket the server closed to shed load, and p.Transient are;
// client errors (bad key, bad request, unknown model) and configuration mistakes are
// not. The status comes from go-openai's error types when they carry one, else from a.
func (p Policy) Retryable(err error, a Attempt) bool {
	for _, t := range p.Transient {
		if errors.Is(err, t) {
			return true
		}
	}
	status := a.Status
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
	if code := websocket.CloseStatus(err); code != -1 {
		return retryableClose(code)
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

// retryableClose says whether a websocket closed with code before any output is worth
// another attempt: the server going away or asking us to come back later is; a policy
// violation (ElevenLabs and Deepgram use it for bad keys and bad parameters) is not.
func retryableClose(code websocket.StatusCode) bool {
	switch code {
	case websocket.StatusGoingAway, websocket.StatusAbnormalClosure, websocket.StatusInternalError,
		websocket.StatusServiceRestart, websocket.StatusTryAgainLater, websocket.StatusBadGateway:
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

// Sleep waits d or until ctx ends, and returns ctx's error if it ended first (or had
// already ended when d is not positive).
func Sleep(ctx context.Context, d time.Duration) error {
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
