package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/safehttp"
)

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// hook is a webhook server that records what it received.
type hook struct {
	srv  *httptest.Server
	reqs chan recorded
}

type recorded struct {
	method, path, query, body string
	header                    http.Header
}

func newHook(t *testing.T) *hook {
	h := &hook{reqs: make(chan recorded, 16)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.reqs <- recorded{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Clone()}
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"booked": true, "slot": "10:00"}`)
		case "/text":
			io.WriteString(w, "thanks, booked")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"error": "db down"}`)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/big":
			io.WriteString(w, `{"data": "`+strings.Repeat("x", 100<<10)+`"}`)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) last(t *testing.T) recorded {
	t.Helper()
	select {
	case r := <-h.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the webhook was not called")
	}
	return recorded{}
}

func TestTestFunction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	h := newHook(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	body, _ := json.Marshal(map[string]any{
		"agent_name": "tools",
		"functions": []map[string]any{
			{"name": "book", "url": h.srv.URL + "/ok", "method": "POST", "headers": map[string]string{"X-Token": "t0k", "Content-Type": "application/vnd.api+json"},
				"parameters": map[string]any{"type": "object", "properties": map[string]any{"day": map[string]any{"type": "string"}}}},
			{"name": "lookup", "url": h.srv.URL + "/ok?fixed=1&day=keep", "method": "GET"},
			{"name": "remove", "url": h.srv.URL + "/ok", "method": "DELETE"},
			{"name": "update", "url": h.srv.URL + "/ok", "method": "PUT"},
			{"name": "text", "url": h.srv.URL + "/text"},
			{"name": "empty", "url": h.srv.URL + "/empty"},
			{"name": "fail", "url": h.srv.URL + "/fail"},
			{"name": "slow", "url": h.srv.URL + "/slow", "timeout_ms": 300},
			{"name": "big", "url": h.srv.URL + "/big"},
			{"name": "refused", "url": closedURL + "/x"},
		},
	})
	a := e.create(t, ten, string(body))

	t.Run("POST with JSON body and headers", func(t *testing.T) {
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "book", json.RawMessage(`{"day": "monday", "n": 2}`))
		if err != nil {
			t.Fatal(err)
		}
		r := h.last(t)
		if r.method != "POST" || r.path != "/ok" || r.body != `{"day": "monday", "n": 2}` {
			t.Errorf("request %+v", r)
		}
		if r.header.Get("X-Token") != "t0k" || r.header.Get("Content-Type") != "application/vnd.api+json" ||
			!strings.HasPrefix(r.header.Get("User-Agent"), "Parley") {
			t.Errorf("headers %v", r.header)
		}
		if !res.Success || res.StatusCode != 200 || string(res.Body) != `{"booked": true, "slot": "10:00"}` || res.Error != "" || res.LatencyMS < 0 {
			t.Errorf("result %s", mustJSON(t, res))
		}
		if got := mustJSON(t, res); !strings.Contains(got, `"body":{"booked":true,"slot":"10:00"}`) {
			t.Errorf("body not embedded as JSON: %s", got)
		}
	})
	t.Run("GET puts arguments in the query", func(t *testing.T) {
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "lookup", json.RawMessage(`{"day": "mon day", "n": 2.5, "ok": true, "tags": ["a", "b"], "none": null}`))
		if err != nil || !res.Success {
			t.Fatal(err, res)
		}
		r := h.last(t)
		if r.method != "GET" || r.body != "" || r.header.Get("Content-Type") != "" {
			t.Errorf("request %+v", r)
		}
		want := "day=mon+day&fixed=1&n=2.5&none=&ok=true&tags=%5B%22a%22%2C%22b%22%5D"
		if r.query != want {
			t.Errorf("query %q, want %q", r.query, want)
		}
	})
	t.Run("DELETE uses the query, PUT the body", func(t *testing.T) {
		if _, err := e.svc.TestFunction(ctx, ten, a.ID, "remove", json.RawMessage(`{"id": 7}`)); err != nil {
			t.Fatal(err)
		}
		if r := h.last(t); r.method != "DELETE" || r.query != "id=7" || r.body != "" {
			t.Errorf("request %+v", r)
		}
		if _, err := e.svc.TestFunction(ctx, ten, a.ID, "update", nil); err != nil {
			t.Fatal(err)
		}
		if r := h.last(t); r.method != "PUT" || r.body != "{}" || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("request %+v", r)
		}
	})
	t.Run("non-JSON body is a string", func(t *testing.T) {
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "text", json.RawMessage(`{}`))
		h.last(t)
		if err != nil || !res.Success || string(res.Body) != `"thanks, booked"` {
			t.Errorf("%v %s", err, mustJSON(t, res))
		}
		res, err = e.svc.TestFunction(ctx, ten, a.ID, "empty", json.RawMessage(`{}`))
		h.last(t)
		if err != nil || !res.Success || res.StatusCode != 204 || res.Body != nil || !strings.Contains(mustJSON(t, res), `"body":null`) {
			t.Errorf("%v %s", err, mustJSON(t, res))
		}
	})
	t.Run("500 is an unsuccessful result", func(t *testing.T) {
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "fail", json.RawMessage(`{}`))
		h.last(t)
		if err != nil {
			t.Fatal(err)
		}
		if res.Success || res.StatusCode != 500 || string(res.Body) != `{"error": "db down"}` || !strings.Contains(res.Error, "500") {
			t.Errorf("%s", mustJSON(t, res))
		}
	})
	t.Run("timeout is an unsuccessful result", func(t *testing.T) {
		start := time.Now()
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "slow", json.RawMessage(`{}`))
		h.last(t)
		if err != nil {
			t.Fatal(err)
		}
		if res.Success || res.StatusCode != 0 || !strings.Contains(res.Error, "timed out after 300ms") {
			t.Errorf("%s", mustJSON(t, res))
		}
		if d := time.Since(start); d > 3*time.Second || res.LatencyMS < 300 {
			t.Errorf("took %v, latency %d", d, res.LatencyMS)
		}
	})
	t.Run("connection refused is an unsuccessful result", func(t *testing.T) {
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "refused", json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if res.Success || res.StatusCode != 0 || !strings.Contains(res.Error, "refused") {
			t.Errorf("%s", mustJSON(t, res))
		}
	})
	t.Run("big body is truncated", func(t *testing.T) {
		res, err := e.svc.TestFunction(ctx, ten, a.ID, "big", json.RawMessage(`{}`))
		h.last(t)
		if err != nil || !res.Success || !res.Truncated {
			t.Fatalf("%v %v %v", err, res.Success, res.Truncated)
		}
		var s string
		if err := json.Unmarshal(res.Body, &s); err != nil || len(s) != maxTestBody {
			t.Errorf("body: %v, %d bytes", err, len(s))
		}
	})
	t.Run("unknown function", func(t *testing.T) {
		_, err := e.svc.TestFunction(ctx, ten, a.ID, "nope", json.RawMessage(`{}`))
		if fe := wantKind(t, err, errs.KindInvalid); fe.Fields["function_name"] == "" {
			t.Errorf("%v", fe.Fields)
		}
	})
	t.Run("arguments must be an object", func(t *testing.T) {
		for _, args := range []string{`[1]`, `"x"`, `5`, `{bad`} {
			_, err := e.svc.TestFunction(ctx, ten, a.ID, "book", json.RawMessage(args))
			if fe := wantKind(t, err, errs.KindInvalid); fe.Fields["arguments"] == "" {
				t.Errorf("%s: %v", args, fe.Fields)
			}
		}
	})
	t.Run("blocked URL is refused before any request", func(t *testing.T) {
		guarded := envOn(t, e.pool, Config{}, refuseAll{})
		guarded.svc.box = e.box
		_, err := guarded.svc.TestFunction(ctx, ten, a.ID, "book", json.RawMessage(`{}`))
		fe := wantKind(t, err, errs.KindInvalid)
		if !strings.Contains(fe.Fields["url"], "not allowed") || !strings.Contains(fe.Fields["url"], "loopback") {
			t.Errorf("%v", fe.Fields)
		}
		select {
		case r := <-h.reqs:
			t.Errorf("the webhook was called: %+v", r)
		default:
		}
	})
	t.Run("the real safehttp guard refuses loopback", func(t *testing.T) {
		guard, err := safehttp.New(safehttp.Config{})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(e.pool, Config{}, e.box, guard, guard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = svc.TestFunction(ctx, ten, a.ID, "book", nil)
		if fe := wantKind(t, err, errs.KindInvalid); !strings.Contains(fe.Fields["url"], "PARLEY_ALLOW_PRIVATE_URLS") {
			t.Errorf("%v", fe.Fields)
		}
		// And refuses to store such a URL in the first place.
		_, err = svc.Create(ctx, ten, []byte(`{"agent_name": "x", "webhook_url": "`+h.srv.URL+`"}`))
		if fe := wantKind(t, err, errs.KindInvalid); !strings.Contains(fe.Fields["webhook_url"], "loopback") {
			t.Errorf("%v", fe.Fields)
		}
	})
	t.Run("a refusal at dial time is Invalid too", func(t *testing.T) {
		svc, err := New(e.pool, Config{}, e.box, e.guard, doerFunc(func(r *http.Request) (*http.Response, error) {
			return nil, &url.Error{Op: "Post", URL: r.URL.String(), Err: fmt.Errorf("%w: url host resolves to 10.0.0.1 (private)", safehttp.ErrBlocked)}
		}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = svc.TestFunction(ctx, ten, a.ID, "book", nil)
		if fe := wantKind(t, err, errs.KindInvalid); !strings.Contains(fe.Fields["url"], "10.0.0.1") {
			t.Errorf("%v", fe.Fields)
		}
	})
	t.Run("unknown agent", func(t *testing.T) {
		if _, err := e.svc.TestFunction(ctx, ten, "agent_nope", "book", nil); err != ErrNotFound {
			t.Errorf("%v", err)
		}
	})
}
