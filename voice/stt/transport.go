package stt

// The HTTP plumbing of this package's adapters (default client, Retry-After capture,
// retry policy) is voice/internal/providerhttp, shared with the other provider packages.
// What stays here is stt's own part: its client (so its connection pool is its own)
// and the errors its retry policy always retries.

import (
	"sync"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// defaultHTTPClient is used when a config names no client: see providerhttp.NewClient.
// The package keeps its own, so its connection pool is its own.
var defaultHTTPClient = sync.OnceValue(providerhttp.NewClient)

// transientErrs are stt's errors that are always worth another attempt: an attempt cut
// off by its own timeout (a slow server or connection may do better the next time).
var transientErrs = []error{errAttemptTimeout}
