package stt

// The HTTP plumbing of this package's adapters (default client, Retry-After capture,
// retry policy) lives in voice/internal/providerhttp, shared with llm and tts. What stays
// here is stt's own part of it, the errors its retry policy always retries, and thin
// wrappers under the unexported names the adapters are written against (attemptInfo with
// its lowercase fields, retryPolicy, recordingDoer, sleepCtx). New code may as well
// use providerhttp directly.

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// defaultHTTPClient is used when a config names no client: see providerhttp.NewClient.
// The package keeps its own, so its connection pool is its own.
var defaultHTTPClient = sync.OnceValue(providerhttp.NewClient)

// transientErrs are stt's errors that are always worth another attempt: an attempt cut
// off by its own timeout (a slow server or connection may do better the next time).
var transientErrs = []error{errAttemptTimeout}

// retryPolicy is providerhttp.Policy with stt's transient errors.
type retryPolicy struct {
	maxRetries    int
	maxRetryAfter time.Duration
}

func (p retryPolicy) next(failures int, err error, info *attemptInfo) (time.Duration, bool) {
	pp := providerhttp.Policy{MaxRetries: p.maxRetries, MaxRetryAfter: p.maxRetryAfter, Transient: transientErrs}
	return pp.Next(failures, err, info.attempt())
}

// attemptInfo is a providerhttp.Attempt that recordingDoer fills (see withAttemptInfo).
type attemptInfo struct {
	status        int
	retryAfter    time.Duration
	hasRetryAfter bool
}

func (i *attemptInfo) RecordAttempt(a providerhttp.Attempt) {
	i.status, i.retryAfter, i.hasRetryAfter = a.Status, a.RetryAfter, a.HasRetryAfter
}

func (i *attemptInfo) attempt() providerhttp.Attempt {
	if i == nil {
		return providerhttp.Attempt{}
	}
	return providerhttp.Attempt{Status: i.status, RetryAfter: i.retryAfter, HasRetryAfter: i.hasRetryAfter}
}

// withAttemptInfo returns a context under which recordingDoer fills info.
func withAttemptInfo(ctx context.Context, info *attemptInfo) context.Context {
	return providerhttp.WithRecorder(ctx, info)
}

// handshakeInfo extracts the status and Retry-After of a refused websocket handshake.
func handshakeInfo(resp *http.Response) *attemptInfo {
	info := &attemptInfo{}
	info.RecordAttempt(providerhttp.HandshakeAttempt(resp))
	return info
}

// recordingDoer is providerhttp.RecordingDoer: it records failed attempts into their
// attemptInfo and closes error bodies that go-openai would leave open.
type recordingDoer struct{ c *http.Client }

func (d recordingDoer) Do(req *http.Request) (*http.Response, error) {
	return providerhttp.RecordingDoer{Client: d.c}.Do(req)
}

// sleepCtx waits d or until ctx ends.
var sleepCtx = providerhttp.Sleep
