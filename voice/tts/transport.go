package tts

// The HTTP plumbing of this package's adapters (default client, Retry-After capture,
// retry policy) is voice/internal/providerhttp, shared with the other provider packages.
// What stays here is tts's own part: its client (so its connection pool is its own)
// and the errors its retry policy always retries.

import (
	"sync"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// defaultHTTPClient is used when a config names no client: see providerhttp.NewClient.
// The package keeps its own, so its connection pool is its own.
var defaultHTTPClient = sync.OnceValue(providerhttp.NewClient)

// transientErrs are tts's errors that are always worth another attempt: a server that
// accepted the request but sent no audio in time, or none at all, may well answer the
// next one.
var transientErrs = []error{ErrFirstByteTimeout, ErrNoAudio}
