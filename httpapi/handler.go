package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/internal/errs"
)

// handlerFunc is the shape of every handler: it writes a success response itself and
// returns an error for everything else, which the adapter turns into JSON.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type authMode int

const (
	authUser   authMode = iota // JWT or API key; per-user rate limit
	authPublic                 // no token; per-IP rate limit
	authSystem                 // no token, no rate limit: health, metrics, docs
)

// route is one row of the route table.
type route struct {
	Method  string
	Path    string // a Go 1.22 ServeMux path pattern, e.g. /v1/agents/{id}
	Auth    authMode
	Scope   string // API-key scope required, e.g. "agents:read"; empty: any authenticated caller
	Handle  handlerFunc
	Tag     string
	Summary string
	// Request and Response are zero values of the body types, for OpenAPI.
	Request  any
	Response any
	// Status is the success status (default 200).
	Status int
	// MaxBody overrides Config.MaxBodyBytes for this route (uploads).
	MaxBody int64
	// Errors selects the error envelope (default: {"detail","code","fields"}).
	Errors errorStyle
	// List marks list routes: they take limit and offset.
	List bool
	// Query documents other query parameters: name -> description.
	Query map[string]string
}

// listOf documents a list envelope {"<name>": [item...], "total", ...} in OpenAPI.
type listOf struct {
	Name string
	Item any
}

type errorStyle int

const (
	errorsV1 errorStyle = iota
	errorsCall24x7
)

// wrap composes the per-route middleware: metrics, body limit, auth, rate limit, and the
// error adapter.
func (s *Server) wrap(rt route) http.Handler {
	pattern := rt.Method + " " + rt.Path
	limit := rt.MaxBody
	if limit == 0 {
		limit = s.cfg.MaxBodyBytes
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		p, err := s.serveRoute(sw, r, rt, limit)
		if err != nil {
			s.writeError(sw, r, rt, err)
		}
		s.observe(r, pattern, sw.status, start)
		if p.APIKeyID != "" {
			s.deps.Accounts.RecordUse(p, sw.status >= 400)
		}
	})
}

// serveRoute runs the route's checks and handler; it returns the authenticated principal
// (zero for public routes) so the caller can account the request to an API key.
func (s *Server) serveRoute(w *statusWriter, r *http.Request, rt route, limit int64) (p accounts.Principal, err error) {
	if r.ContentLength > limit {
		return p, errBodyTooLarge(limit)
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	switch rt.Auth {
	case authUser:
		if p, err = s.authenticate(r); err != nil {
			// Failed authentications count against the client IP's public budget, so a
			// client cycling through random tokens cannot turn each into a database read.
			if lerr := s.rateLimit(w, r, "authfail:"+s.clientIP(r).String(), s.cfg.RateLimitIP); lerr != nil {
				return p, lerr
			}
			return p, err
		}
		r = r.WithContext(withPrincipal(r.Context(), p))
		if err := s.rateLimit(w, r, "user:"+p.UserID, s.cfg.RateLimitUser); err != nil {
			return p, err
		}
		if rt.Scope != "" {
			if err := p.Require(rt.Scope); err != nil {
				return p, err
			}
		}
	case authPublic:
		if err := s.rateLimit(w, r, "ip:"+s.clientIP(r).String(), s.cfg.RateLimitIP); err != nil {
			return p, err
		}
	}
	return p, rt.Handle(w, r)
}

func (s *Server) authenticate(r *http.Request) (accounts.Principal, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" {
		return accounts.Principal{}, errs.Unauthorized("missing_token", "Missing Authorization: Bearer <token> header")
	}
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return accounts.Principal{}, errs.Unauthorized("invalid_token", "Authorization header must be 'Bearer <token>'")
	}
	return s.deps.Accounts.Authenticate(r.Context(), strings.TrimSpace(token))
}

// statusWriter records the status for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.wroteHeader = true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets streaming handlers (SSE) flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// errorBody is the JSON error envelope of /v1.
type errorBody struct {
	Detail string            `json:"detail"`
	Code   string            `json:"code"`
	Fields map[string]string `json:"fields,omitempty"`
}

func statusOf(kind errs.Kind) int {
	switch kind {
	case errs.KindBadRequest:
		return http.StatusBadRequest
	case errs.KindUnauthorized:
		return http.StatusUnauthorized
	case errs.KindForbidden:
		return http.StatusForbidden
	case errs.KindNotFound:
		return http.StatusNotFound
	case errs.KindConflict:
		return http.StatusConflict
	case errs.KindInvalid:
		return http.StatusUnprocessableEntity
	case errs.KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case errs.KindUnsupported:
		return http.StatusUnsupportedMediaType
	case errs.KindRateLimited:
		return http.StatusTooManyRequests
	case errs.KindUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError maps err to a status and the route's error envelope. Unclassified errors are
// 500s: logged with the request ID, and never shown to the client.
func (s *Server) writeError(w *statusWriter, r *http.Request, rt route, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = errBodyTooLarge(mbe.Limit)
	}
	e, ok := errs.As(err)
	if !ok {
		s.log.ErrorContext(r.Context(), "request failed", "request_id", requestID(r.Context()),
			"method", r.Method, "path", r.URL.Path, "err", err)
		e = &errs.Error{Kind: errs.KindInternal, Code: "internal_error",
			Detail: "Internal server error (request " + requestID(r.Context()) + ")"}
	} else if e.Kind == errs.KindInternal || e.Kind == errs.KindUnavailable {
		s.log.ErrorContext(r.Context(), "request failed", "request_id", requestID(r.Context()), "err", err)
	}
	if w.wroteHeader {
		return // the handler already started its response; nothing sensible to add
	}
	status := statusOf(e.Kind)
	if rt.Errors == errorsCall24x7 {
		writeJSON(w, status, call24x7Error(e))
		return
	}
	writeJSON(w, status, errorBody{Detail: e.Detail, Code: e.Code, Fields: e.Fields})
}

func errBodyTooLarge(limit int64) error {
	return errs.New(errs.KindTooLarge, "body_too_large", fmt.Sprintf("Request body exceeds the limit of %d bytes", limit))
}

// call24x7Error renders an error in Call24x7's envelope.
func call24x7Error(e *errs.Error) map[string]any {
	code := "INTERNAL_ERROR"
	switch e.Kind {
	case errs.KindUnauthorized, errs.KindForbidden:
		code = "UNAUTHORIZED"
	case errs.KindBadRequest, errs.KindInvalid, errs.KindTooLarge:
		code = "MISSING_PARAMS"
	case errs.KindNotFound:
		code = strings.ToUpper(e.Code)
	case errs.KindRateLimited:
		code = "RATE_LIMITED"
	}
	return map[string]any{"success": false, "message": e.Detail, "error_code": code}
}

// writeJSON writes v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// decodeJSON reads the request body into v. Malformed JSON and wrong types are 400s that
// name the offending field; unknown fields are ignored so that SDKs sending extra fields
// keep working.
func decodeJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return unmarshalBody(body, v)
}

// readBody reads the whole (size-limited) body; an empty body is a 400.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, errs.BadRequest("empty_body", "Request body is required")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errBodyTooLarge(mbe.Limit)
		}
		return nil, errs.BadRequest("unreadable_body", "Could not read request body")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, errs.BadRequest("empty_body", "Request body is required")
	}
	return body, nil
}

// unmarshalBody decodes JSON with precise errors.
func unmarshalBody(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return errs.BadRequest("invalid_json", "Request body must be a single JSON value")
	}
	return nil
}

// jsonError turns an encoding/json error into a 400 with detail and fields.
func jsonError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errBodyTooLarge(mbe.Limit)
	}
	return errs.FromJSON(err, nil)
}

// listParams reads limit (default 20, max 100) and offset (default 0).
func listParams(r *http.Request) (limit, offset int, err error) {
	f := errs.Fields{}
	limit, offset = 20, 0
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, e := strconv.Atoi(v)
		if e != nil || n < 1 || n > 100 {
			f.Add("limit", "must be an integer from 1 to 100")
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, e := strconv.Atoi(v)
		if e != nil || n < 0 {
			f.Add("offset", "must be a non-negative integer")
		}
		offset = n
	}
	return limit, offset, f.Err()
}

// intParam reads an optional integer query parameter within [min, max].
func intParam(r *http.Request, name string, def, min, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, errs.Invalid(map[string]string{name: fmt.Sprintf("must be an integer from %d to %d", min, max)})
	}
	return n, nil
}

// writeList answers a list route: it reads limit and offset, runs list for the caller's
// tenant, and writes the envelope under name.
func writeList[T any](w http.ResponseWriter, r *http.Request, name string,
	list func(ctx context.Context, tenantID string, limit, offset int) ([]T, int, error)) error {
	limit, offset, err := listParams(r)
	if err != nil {
		return err
	}
	items, total, err := list(r.Context(), principal(r).TenantID, limit, offset)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listBody(name, items, total, limit, offset))
	return nil
}

// listBody is the list envelope: {"<plural>": [...], "total", "limit", "offset", "has_more"}.
func listBody(name string, items any, total, limit, offset int) map[string]any {
	if v := reflect.ValueOf(items); v.Kind() == reflect.Slice && v.IsNil() {
		items = []any{} // an empty list is [], never null
	}
	return map[string]any{
		name:       items,
		"total":    total,
		"limit":    limit,
		"offset":   offset,
		"has_more": offset+limit < total,
	}
}
