// Package errs defines the kinds of failure that domain packages report and that the
// HTTP layer maps to statuses. Domain packages declare sentinel *Error values
// (agents.ErrNotFound) and wrap them with context; httpapi finds them with errors.As.
package errs

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Kind classifies an error for the transport layer.
type Kind int

const (
	KindInternal     Kind = iota
	KindBadRequest        // malformed input: bad JSON, wrong type (400)
	KindUnauthorized      // no or bad credentials (401)
	KindForbidden         // authenticated but not allowed (403): only for the caller's own objects
	KindNotFound          // unknown, or another tenant's (404)
	KindConflict          // state conflict, e.g. duplicate email (409)
	KindInvalid           // validation failure (422)
	KindTooLarge          // body or upload too large (413)
	KindUnsupported       // unsupported media type (415)
	KindRateLimited       // 429
	KindUnavailable       // a dependency is down (503)
)

// Error is a classified error with a human-readable detail and a stable code.
type Error struct {
	Kind   Kind
	Code   string            // stable machine-readable code, e.g. "agent_not_found"
	Detail string            // human-readable, safe to show to the caller
	Fields map[string]string // per-field validation messages (KindInvalid, KindBadRequest)
}

func (e *Error) Error() string {
	if len(e.Fields) == 0 {
		return e.Detail
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + e.Fields[k]
	}
	return e.Detail + " (" + strings.Join(parts, "; ") + ")"
}

// New returns an *Error of the given kind.
func New(kind Kind, code, detail string) *Error {
	return &Error{Kind: kind, Code: code, Detail: detail}
}

// NotFound returns a 404-kind error.
func NotFound(code, detail string) *Error { return New(KindNotFound, code, detail) }

// Unauthorized returns a 401-kind error.
func Unauthorized(code, detail string) *Error { return New(KindUnauthorized, code, detail) }

// Forbidden returns a 403-kind error.
func Forbidden(code, detail string) *Error { return New(KindForbidden, code, detail) }

// Conflict returns a 409-kind error.
func Conflict(code, detail string) *Error { return New(KindConflict, code, detail) }

// BadRequest returns a 400-kind error.
func BadRequest(code, detail string) *Error { return New(KindBadRequest, code, detail) }

// Invalid returns a 422-kind validation error carrying per-field messages.
func Invalid(fields map[string]string) *Error {
	detail := "Validation failed"
	if len(fields) == 1 {
		for k, v := range fields {
			detail = "Validation failed: " + k + ": " + v
		}
	}
	return &Error{Kind: KindInvalid, Code: "validation_error", Detail: detail, Fields: fields}
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// KindOf returns the kind of err, KindInternal when it carries none.
func KindOf(err error) Kind {
	if e, ok := As(err); ok {
		return e.Kind
	}
	return KindInternal
}

// Fields collects validation messages; its Err is nil when nothing was added.
type Fields map[string]string

// Add records msg for field unless the field already has a message.
func (f Fields) Add(field, format string, args ...any) {
	if _, ok := f[field]; !ok {
		f[field] = fmt.Sprintf(format, args...)
	}
}

// Err returns an Invalid error, or nil when there are no messages.
func (f Fields) Err() error {
	if len(f) == 0 {
		return nil
	}
	return Invalid(map[string]string(f))
}
