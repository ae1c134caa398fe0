// Package providerhttp is the plumbing the voice engine's provider adapters (voice/stt,
// voice/llm and voice/tts) share for talking to remote speech and language services: the
// HTTP client they use when a config names none, a doer that records what a refused
// request said about retrying (its status and Retry-After), and the retry policy that
// decides whether a failed attempt is tried again and after how long.
//
// It knows no provider's wire format: it reads only HTTP statuses and headers, the
// status that go-openai's error types carry and websocket close codes. What differs
// between the adapter packages is which of their own errors are always worth another
// attempt (their attempt timeouts); they name those in Policy.Transient.
package providerhttp

import (
	"net"
	"net/http"
	"time"
)

// NewClient returns the HTTP client an adapter uses when its config names none. It has
// no overall Timeout, because that would cut off an answer that is still streaming;
// instead every phase that can hang before the first byte is bounded: dialing (10 s),
// the TLS handshake (10 s) and the wait for response headers (30 s, long enough for a
// transcription server that only answers once it has finished). Timeouts after that are
// the adapters' own.
//
// Each call returns a client with its own connection pool. The adapter packages each
// keep one (behind a sync.OnceValue), so that a burst of LLM streams cannot take the
// idle connections (16 per host) that STT or TTS would reuse on the same host.
func NewClient() *http.Client {
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
}
