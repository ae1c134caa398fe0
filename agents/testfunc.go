package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/errs"
)

// maxTestBody caps the response body a test-function result carries: enough to show
// what the webhook said, small enough for a dashboard to render.
const maxTestBody = 64 << 10

// TestResult is what calling a function's webhook produced. A webhook that is down,
// slow or answers non-2xx is a result with Success false, not an error: the point of
// the test is to see that.
type TestResult struct {
	Success    bool `json:"success"`
	StatusCode int  `json:"status_code"` // 0 when no response arrived
	// Body is the response body: its JSON when it parses, else a JSON string (invalid
	// UTF-8 replaced), truncated to 64 KiB; null when empty.
	Body      json.RawMessage `json:"body"`
	Truncated bool            `json:"truncated,omitempty"`
	LatencyMS int64           `json:"latency_ms"`
	Error     string          `json:"error,omitempty"`
}

// TestFunction calls the named function's webhook with args as the LLM would: a JSON
// body for POST, PUT and PATCH, a query string for GET and DELETE, with the function's
// headers and timeout. An unknown function or non-object args are Invalid, and so is a
// URL the SSRF guard refuses.
func (s *Service) TestFunction(ctx context.Context, tenantID, id, name string, args json.RawMessage) (TestResult, error) {
	r, err := s.load(ctx, tenantID, id)
	if err != nil {
		return TestResult{}, err
	}
	i := slices.IndexFunc(r.def.Functions, func(f Function) bool { return f.Name == name })
	if i < 0 {
		return TestResult{}, errs.Invalid(map[string]string{"function_name": fmt.Sprintf("the agent has no function named %q", name)})
	}
	fn := r.def.Functions[i]
	obj, err := argsObject(args)
	if err != nil {
		return TestResult{}, err
	}
	// The URL passed the guard when it was saved, but DNS and policy may have changed.
	if err := s.checker.CheckURL(ctx, fn.URL); err != nil {
		if refused(err) {
			return TestResult{}, blockedURL(fn.URL, err)
		}
		if ctx.Err() != nil {
			return TestResult{}, ctx.Err()
		}
		// The guard could not decide (DNS trouble): the test ran and failed.
		return TestResult{Error: "could not check the URL: " + err.Error()}, nil
	}
	req, err := s.functionRequest(ctx, fn, args, obj)
	if err != nil {
		return TestResult{}, err
	}
	timeout := time.Duration(fn.TimeoutMS) * time.Millisecond
	if fn.TimeoutMS <= 0 {
		timeout = defaultFunctionTimeoutMS * time.Millisecond
	}
	timeout = min(timeout, maxFunctionTimeoutMS*time.Millisecond)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req = req.WithContext(cctx)

	start := time.Now()
	res := TestResult{}
	resp, err := s.doer.Do(req)
	if err != nil {
		res.LatencyMS = time.Since(start).Milliseconds()
		if ctx.Err() != nil {
			return TestResult{}, ctx.Err() // our caller went away; there is no one to tell
		}
		if refused(err) {
			// The guard refused at dial time: DNS changed since CheckURL, or a redirect
			// pointed somewhere internal. Still the URL's fault, so still Invalid.
			return TestResult{}, blockedURL(fn.URL, unwrapURLError(err))
		}
		res.Error = describe(cctx, err, timeout)
		return res, nil
	}
	defer resp.Body.Close()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxTestBody+1))
	res.LatencyMS = time.Since(start).Milliseconds()
	res.StatusCode = resp.StatusCode
	if len(body) > maxTestBody {
		body, res.Truncated = body[:maxTestBody], true
	}
	res.Body = bodyJSON(body, res.Truncated)
	res.Success = resp.StatusCode >= 200 && resp.StatusCode < 300
	switch {
	case readErr != nil:
		res.Success = false
		res.Error = "reading the response: " + describe(cctx, readErr, timeout)
	case !res.Success:
		res.Error = fmt.Sprintf("the webhook answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return res, nil
}

// argsObject decodes the arguments, which must be a JSON object (empty means {}).
func argsObject(args json.RawMessage) (map[string]any, error) {
	if len(bytes.TrimSpace(args)) == 0 || string(bytes.TrimSpace(args)) == "null" {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, errs.Invalid(map[string]string{"arguments": "must be a JSON object"})
	}
	return obj, nil
}

// functionRequest builds the webhook request for fn.
func (s *Service) functionRequest(ctx context.Context, fn Function, raw json.RawMessage, args map[string]any) (*http.Request, error) {
	u, err := url.Parse(fn.URL)
	if err != nil {
		return nil, errs.Invalid(map[string]string{"url": "is not a valid URL"})
	}
	var body io.Reader
	switch fn.Method {
	case http.MethodGet, http.MethodDelete:
		q := u.Query()
		keys := make([]string, 0, len(args))
		for k := range args {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			q.Set(k, queryValue(args[k]))
		}
		u.RawQuery = q.Encode()
	default:
		b := bytes.TrimSpace(raw)
		if len(b) == 0 || string(b) == "null" {
			b = []byte("{}")
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, fn.Method, u.String(), body)
	if err != nil {
		return nil, errs.Invalid(map[string]string{"url": "is not a valid URL"})
	}
	req.Header.Set("User-Agent", s.cfg.UserAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range fn.Headers {
		req.Header.Set(k, v) // the function's own headers win, Content-Type included
	}
	return req, nil
}

// queryValue renders one argument for a query string: strings as they are, numbers and
// booleans as their JSON text, objects and arrays as compact JSON.
func queryValue(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case json.Number:
		return t.String()
	case bool:
		if t {
			return "true"
		}
		return "false"
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// bodyJSON returns the body as JSON when it is complete valid JSON, else as a string.
func bodyJSON(b []byte, truncated bool) json.RawMessage {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil
	}
	if !truncated && json.Valid(t) {
		return json.RawMessage(t)
	}
	// A rune cut in half by truncation becomes one U+FFFD, like any invalid byte.
	s, _ := json.Marshal(strings.ToValidUTF8(string(b), "\uFFFD"))
	return s
}

// blockedURL is the Invalid error for a function URL the SSRF guard refuses.
func blockedURL(u string, err error) error {
	return errs.Invalid(map[string]string{"url": fmt.Sprintf("%s is not allowed: %v", u, err)})
}

// describe explains a transport error without Go's "Post \"url\":" prefix.
func describe(ctx context.Context, err error, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("timed out after %s", timeout)
	}
	err = unwrapURLError(err)
	if te, ok := err.(interface{ Timeout() bool }); ok && te.Timeout() {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
