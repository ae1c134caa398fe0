package embed

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// The retry policy.
//
// Retried: 429 (rate limited), 408 and 409 (OpenAI's "request timeout" and "lock
// timeout", transient by definition), 5xx, timeouts and network errors, and responses cut
// off mid-body. Everything else is the request's own fault and would fail again: 400, 401,
// 403, 404, 422, and 429 for an exhausted quota.
//
// Waits are exponential with full jitter, uniform in [0, min(cap, base·2^attempt)): the
// jitter spreads out the many workers that hit a rate limit at the same moment, so that
// they do not all come back at the same moment too (see "Exponential Backoff And Jitter",
// AWS Architecture Blog). base 500 ms and cap 20 s with the default 5 retries give waits
// of at most 0.5+1+2+4+8 = 15.5 s (7.75 s on average) before giving up: long enough to
// ride out a rate-limit window or a server restart, short enough that a dead endpoint
// fails the ingestion job within a minute (with the default 30 s request timeout, a
// server that hangs takes 6×30 s + 15.5 s; the job's own retries take it from there).
//
// When the server says how long to wait, it wins over a shorter backoff: Retry-After
// (seconds or an HTTP date) and OpenAI's retry-after-ms are taken as given, up to
// maxRetryAfter; x-ratelimit-reset-requests/-tokens (when the window resets, e.g. "6m0s",
// an upper bound on the wait rather than the wait) are capped at the backoff cap.
type backoff struct {
	base, cap time.Duration
}

var defaultBackoff = backoff{base: 500 * time.Millisecond, cap: 20 * time.Second}

// maxRetryAfter is the longest server-requested wait honoured in process. A longer one
// fails the call at once with ErrUnavailable: holding an ingestion worker idle for minutes
// is worse than failing the job and letting the job queue's backoff try again later.
const maxRetryAfter = time.Minute

func (b backoff) delay(attempt int) time.Duration {
	ceil := b.cap
	if attempt < 32 {
		ceil = min(b.cap, b.base<<attempt)
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// verdict is what to do about a failed attempt.
type verdict struct {
	retry         bool
	hint          time.Duration // the server's requested wait, 0 if none
	authoritative bool          // hint came from Retry-After, not from a rate-limit reset time
	msg           string        // what went wrong, safe to show, without the model/endpoint prefix
	errs          []error       // what the error wraps: a sentinel, maybe a network error
}

func permanent(sentinel error, format string, args ...any) verdict {
	return verdict{msg: fmt.Sprintf(format, args...), errs: []error{sentinel}}
}

func transient(sentinel error, format string, args ...any) verdict {
	v := permanent(sentinel, format, args...)
	v.retry = true
	return v
}

// classify turns a failed attempt into a verdict.
func (o *OpenAI) classify(err error, obs *observation) verdict {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	status, msg, code := 0, "", ""
	switch {
	case errors.As(err, &apiErr):
		status, msg = apiErr.HTTPStatusCode, apiErr.Message
		code = fmt.Sprint(apiErr.Code) + " " + apiErr.Type
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
		msg = bodyMessage(reqErr.Body)
	}
	if status == 0 {
		return o.classifyTransport(err, obs)
	}
	msg = serverMessage(msg)
	detail := fmt.Sprintf("HTTP %d", status)
	if msg != "" {
		detail += ": " + msg
	}

	switch {
	case status == http.StatusUnauthorized:
		if o.apiKey == "" {
			return permanent(ErrInvalidAPIKey, "the server requires an API key (HTTP 401)")
		}
		// The server's message is left out: OpenAI's repeats part of the key.
		return permanent(ErrInvalidAPIKey, "the server rejected the API key (HTTP 401)")
	case status == http.StatusForbidden:
		return permanent(ErrPermissionDenied, "the API key may not use this model (%s)", detail)
	case status == http.StatusNotFound && (apiErr != nil || strings.Contains(strings.ToLower(msg), "model")):
		return permanent(ErrModelNotFound, "embedding model %q not found (%s)", o.model, detail)
	case status == http.StatusNotFound:
		return permanent(ErrEndpointNotFound, "no embeddings endpoint at this URL (%s); the base URL usually ends in /v1", detail)
	case status == http.StatusTooManyRequests && strings.Contains(code, "insufficient_quota"):
		return permanent(ErrQuotaExceeded, "the account is out of quota (%s)", detail)
	case status == http.StatusTooManyRequests, status == http.StatusRequestTimeout,
		status == http.StatusConflict, status >= 500:
		v := transient(ErrUnavailable, "%s", detail)
		v.hint, v.authoritative = retryHint(obs.header, status, o.backoff.cap)
		return v
	default:
		return permanent(ErrRejected, "the server rejected the request (%s)", detail)
	}
}

// classifyTransport handles an attempt that got no HTTP error status: the request never got
// an answer, or a 2xx answer could not be read.
func (o *OpenAI) classifyTransport(err error, obs *observation) verdict {
	switch {
	case obs.timedOut:
		return transient(ErrUnavailable, "no response within %s", o.timeout)
	case errors.Is(err, errResponseTooLarge):
		return permanent(ErrBadResponse, "the response is larger than %d bytes", obs.limit)
	case obs.status == 0:
		// No response: refused, reset, DNS, TLS, the SSRF guard. The guard's refusals
		// will refuse again, but they are rare and cheap to retry, and telling them apart
		// would tie this package to the guard's errors.
		v := transient(ErrUnavailable, "request failed: %s", err.Error())
		v.errs = append(v.errs, err)
		return v
	case isCutOff(err):
		return transient(ErrUnavailable, "the response was cut off (HTTP %d)", obs.status)
	default:
		return permanent(ErrBadResponse, "the response (HTTP %d) is not an embeddings response; check the base URL", obs.status)
	}
}

// isCutOff reports whether reading a response failed for the network's sake rather than
// because of what the response said.
func isCutOff(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne)
}

// bodyMessage is what an error body not in OpenAI's envelope says, worth quoting: the
// message of servers with their own shapes (vLLM's top-level "message", FastAPI's
// "detail", TEI's "error" string), or short plain text, but not an HTML page.
func bodyMessage(b []byte) string {
	var shaped struct {
		Message, Detail, Error any
	}
	if json.Unmarshal(b, &shaped) == nil {
		for _, f := range []any{shaped.Message, shaped.Detail, shaped.Error} {
			if m, ok := f.(string); ok && m != "" {
				return m
			}
		}
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 500 || strings.HasPrefix(s, "<") {
		return ""
	}
	return s
}

// retryHint reads how long the server asked us to wait. authoritative is true for
// Retry-After and retry-after-ms, which are the wait; the rate-limit reset headers say
// when a window resets, so they are capped at limit (the backoff cap).
func retryHint(h http.Header, status int, limit time.Duration) (d time.Duration, authoritative bool) {
	if h == nil {
		return 0, false
	}
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms < 1e9 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if d, ok := parseWait(v); ok {
			return d, true
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(0, time.Until(t)), true
		}
	}
	if status != http.StatusTooManyRequests {
		return 0, false
	}
	// Of the two windows, wait for the one that is exhausted (remaining 0), or for both
	// when the server does not say which.
	for _, kind := range []string{"requests", "tokens"} {
		if r := h.Get("X-Ratelimit-Remaining-" + kind); r != "" && r != "0" {
			continue
		}
		if w, ok := parseWait(h.Get("X-Ratelimit-Reset-" + kind)); ok {
			d = max(d, w)
		}
	}
	return min(d, limit), false
}

// parseWait reads a wait as OpenAI and others write it: a Go-style duration ("1s",
// "6m0s", "120ms"), or a number of seconds, or (numbers above 1e9) a Unix time.
func parseWait(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		switch {
		case f < 0:
			return 0, false
		case f > 1e9:
			return max(0, time.Until(time.Unix(int64(f), 0))), true
		default:
			return time.Duration(f * float64(time.Second)), true
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return d, true
	}
	return 0, false
}

// observation is what the transport saw of one attempt. go-openai turns a failed
// response into an error without its headers, and we need Retry-After from them; so a
// wrapper around the caller's HTTPDoer records them here, found through the request's
// context.
type observation struct {
	status   int
	header   http.Header
	limit    int64 // the response body limit
	timedOut bool  // the per-attempt timeout fired
}

type observationKey struct{}

// observingDoer records each response into the request's observation and limits the
// response body. The limit matters because base URLs are typed by users: a hostile or
// broken server must not make us decode gigabytes.
type observingDoer struct {
	next HTTPDoer
}

func (d *observingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.next.Do(req)
	obs, _ := req.Context().Value(observationKey{}).(*observation)
	if resp == nil || obs == nil {
		return resp, err
	}
	obs.status, obs.header = resp.StatusCode, resp.Header
	resp.Body = &limitedBody{rc: resp.Body, left: obs.limit}
	return resp, err
}

var errResponseTooLarge = errors.New("response too large")

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// At the limit: fine if the body ends here, too large if it does not.
		var one [1]byte
		if n, err := b.rc.Read(one[:]); n == 0 && err != nil {
			return 0, err
		}
		return 0, errResponseTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
