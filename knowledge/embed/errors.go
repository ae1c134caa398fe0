package embed

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Errors from OpenAI.Embed and Probe wrap one of these (or context.Canceled /
// context.DeadlineExceeded); test with errors.Is. Their messages are written for the
// person who configured the embedder, name the model and the endpoint, and never contain
// the API key, so a caller may show err.Error() as it is.
var (
	// ErrInvalidAPIKey: HTTP 401. Never retried.
	ErrInvalidAPIKey = errors.New("embed: invalid API key")
	// ErrPermissionDenied: HTTP 403, the key may not use the model. Never retried.
	ErrPermissionDenied = errors.New("embed: permission denied")
	// ErrModelNotFound: HTTP 404 with an API error body: the server has no such model
	// (not pulled into Ollama, a typo, no access). Never retried.
	ErrModelNotFound = errors.New("embed: embedding model not found")
	// ErrEndpointNotFound: HTTP 404 without an API error body: nothing serves
	// <base URL>/embeddings, usually a base URL missing its "/v1". Never retried.
	ErrEndpointNotFound = errors.New("embed: embeddings endpoint not found")
	// ErrRejected: HTTP 400 and other client errors: the server refused the request
	// itself, e.g. an input over the model's token limit or a dimensions value the model
	// does not support. Never retried.
	ErrRejected = errors.New("embed: request rejected")
	// ErrQuotaExceeded: HTTP 429 with code insufficient_quota, OpenAI's "out of credit".
	// Retrying cannot help, so it is not retried.
	ErrQuotaExceeded = errors.New("embed: quota exceeded")
	// ErrUnavailable: rate limits (429), server errors (5xx), timeouts or network errors
	// that outlasted the retries, or a Retry-After longer than this embedder will wait.
	// Trying again later may work; an ingestion job may let its own retry policy do so.
	ErrUnavailable = errors.New("embed: embedding service unavailable")
	// ErrBadResponse: the server answered 200 with something that is not a valid set of
	// embeddings (not JSON, wrong count, wrong or repeated index, wrong size, NaN).
	// Never retried: a server that answers nonsense once will do so again.
	ErrBadResponse = errors.New("embed: bad response from embedding service")
)

// embedError carries a message safe to show users and the errors it wraps (a sentinel
// above, a context error, or a network error for errors.As). It never wraps the
// go-openai error, whose text includes the raw response body.
type embedError struct {
	msg  string
	errs []error
}

func (e *embedError) Error() string   { return e.msg }
func (e *embedError) Unwrap() []error { return e.errs }

// wrap makes an error for sentinel with a message prefixed by the model and endpoint.
func (o *OpenAI) wrap(sentinel error, format string, args ...any) error {
	return o.errorf([]error{sentinel}, format, args...)
}

// fail wraps a context error.
func (o *OpenAI) fail(cause error) error {
	return o.errorf([]error{cause}, "%s", cause.Error())
}

func (o *OpenAI) errorf(errs []error, format string, args ...any) error {
	msg := fmt.Sprintf("embed: %s at %s: %s", o.model, o.endpoint, fmt.Sprintf(format, args...))
	return &embedError{msg: o.redact(msg), errs: errs}
}

// redact removes the API key from s. Messages are built from our own text plus what the
// server and the network stack said; any of those could echo the key (a proxy that
// reflects headers, a misconfigured server), and a message goes to users and logs.
func (o *OpenAI) redact(s string) string {
	if len(o.apiKey) >= 4 { // shorter "keys" are not secrets and would mangle the text
		s = strings.ReplaceAll(s, o.apiKey, "[redacted]")
	}
	return s
}

// serverMessage tidies a message taken from a response: one line, at most 300 bytes (it
// goes into a UI and a log line), valid UTF-8.
func serverMessage(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "")), " ")
	const maxLen = 300
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
