package carrier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/errs"
)

// TestMain checks that no goroutine outlives the tests: every scripted server is closed
// in its test's cleanup, and the Twilio adapter must release each request's context.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// step is one request the scripted carrier expects, in order, and its answer.
type step struct {
	method string
	path   string     // the URL path, exactly
	query  url.Values // the query, exactly (nil: must be empty)
	// form, when non-nil, is the exact urlencoded body expected.
	form url.Values
	// json, when non-empty, is the exact JSON body expected (compared after
	// normalising both sides).
	json string
	// check runs further assertions on the request.
	check  func(t *testing.T, r *http.Request)
	status int
	body   string
	header http.Header
}

// scripted is an httptest server that speaks one carrier's wire format from a script.
// Each request must match the next step's method, path and query; the carrier's auth
// check runs next, and a request with wrong credentials gets the carrier's documented
// 401 body (consuming the step). Requests beyond the script fail the test, and so does
// a script not played to its end.
type scripted struct {
	t        *testing.T
	authOK   func(r *http.Request) bool
	authFail string // the 401 body

	mu    sync.Mutex
	steps []step
	next  int
	srv   *httptest.Server
}

func newScripted(t *testing.T, authOK func(*http.Request) bool, authFail string, steps ...step) *scripted {
	t.Helper()
	s := &scripted{t: t, authOK: authOK, authFail: authFail, steps: steps}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.next != len(s.steps) {
			t.Errorf("scripted carrier: %d of %d steps played; next expected %s %s",
				s.next, len(s.steps), s.steps[s.next].method, s.steps[s.next].path)
		}
	})
	return s
}

func (s *scripted) URL() string          { return s.srv.URL }
func (s *scripted) Client() *http.Client { return s.srv.Client() }

func (s *scripted) serve(w http.ResponseWriter, r *http.Request) {
	t := s.t
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("reading request body: %v", err)
	}
	s.mu.Lock()
	if s.next >= len(s.steps) {
		s.mu.Unlock()
		t.Errorf("scripted carrier: unexpected request %s %s", r.Method, r.URL)
		http.Error(w, "unexpected", http.StatusInternalServerError)
		return
	}
	st := s.steps[s.next]
	s.next++
	n := s.next
	s.mu.Unlock()

	if r.Method != st.method || r.URL.Path != st.path {
		t.Errorf("step %d: got %s %s, want %s %s", n, r.Method, r.URL.Path, st.method, st.path)
	}
	if got, want := canonical(r.URL.Query()), canonical(st.query); got != want {
		t.Errorf("step %d: query\n got %s\nwant %s", n, got, want)
	}
	if !s.authOK(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, s.authFail)
		return
	}
	if st.form != nil {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			t.Errorf("step %d: Content-Type %q, want a form", n, ct)
		}
		got, err := url.ParseQuery(string(body))
		if err != nil {
			t.Errorf("step %d: form body %q: %v", n, body, err)
		}
		if canonical(got) != canonical(st.form) {
			t.Errorf("step %d: form\n got %s\nwant %s", n, canonical(got), canonical(st.form))
		}
	}
	if st.json != "" {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("step %d: Content-Type %q, want application/json", n, ct)
		}
		if got, want := normJSON(t, string(body)), normJSON(t, st.json); got != want {
			t.Errorf("step %d: JSON body\n got %s\nwant %s", n, got, want)
		}
	} else if st.form == nil && len(body) > 0 && st.method != http.MethodPost {
		t.Errorf("step %d: unexpected body %q", n, body)
	}
	if st.check != nil {
		st.check(t, r)
	}
	for k, vs := range st.header {
		w.Header()[k] = vs
	}
	if w.Header().Get("Content-Type") == "" && strings.HasPrefix(strings.TrimSpace(st.body), "{") {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(st.status)
	io.WriteString(w, st.body)
}

// canonical renders url.Values in a stable order (nil and empty are the same).
func canonical(v url.Values) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q ", k, v[k])
	}
	return strings.TrimSpace(b.String())
}

// wantKind fails unless err wraps kind (one of the Err* values, or an *errs.Error kind
// for validation errors).
func wantKind(t *testing.T, err, kind error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("got %v, want kind %v", err, kind)
	}
}

// wantInvalid fails unless err is a 422-kind validation error naming field.
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	e, ok := errs.As(err)
	if !ok || e.Kind != errs.KindInvalid {
		t.Fatalf("got %v, want a validation error", err)
	}
	if _, ok := e.Fields[field]; !ok {
		t.Fatalf("validation error %v does not name %q", err, field)
	}
}

// carrierErr returns the *Error in err's chain.
func carrierErr(t *testing.T, err error) *Error {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %T %v, want a *carrier.Error", err, err)
	}
	return ce
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// normJSON re-encodes a JSON document so that key order and spacing do not matter.
func normJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Errorf("not JSON: %v: %s", err, s)
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
