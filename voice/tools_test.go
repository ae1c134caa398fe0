package voice

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCallFunction(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, query, body, ctype, key string
	}
	got := make(chan seen, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.RawQuery, string(b), r.Header.Get("Content-Type"), r.Header.Get("X-Key")}
		io.WriteString(w, `{"ok":1}`)
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { got <- seen{}; w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		got <- seen{}
		http.Error(w, "no such booking", http.StatusNotFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		got <- seen{}
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		got <- seen{}
		io.WriteString(w, strings.Repeat("é", maxToolResult))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name       string
		f          Function
		args       string
		want       seen
		noRequest  bool
		wantResult string
		wantStatus int
		wantErr    string
	}{
		{name: "POST JSON body and headers", f: Function{URL: srv.URL + "/ok", Method: "POST", Headers: map[string]string{"X-Key": "k"}},
			args: `{"city":"Paris","days":3}`, want: seen{"POST", "", `{"city":"Paris","days":3}`, "application/json", "k"},
			wantResult: `{"ok":1}`, wantStatus: 200},
		{name: "default method is POST", f: Function{URL: srv.URL + "/ok"}, args: ``,
			want: seen{"POST", "", `{}`, "application/json", ""}, wantResult: `{"ok":1}`, wantStatus: 200},
		{name: "GET query string", f: Function{URL: srv.URL + "/ok?v=1", Method: "get"},
			args:       `{"city":"São Paulo","n":1.50,"flag":true,"tags":["a","b"],"filter":{"x":1},"none":null}`,
			want:       seen{"GET", "city=S%C3%A3o+Paulo&filter=%7B%22x%22%3A1%7D&flag=true&n=1.50&none=&tags=a&tags=b&v=1", "", "", ""},
			wantResult: `{"ok":1}`, wantStatus: 200},
		{name: "PATCH and DELETE carry a body", f: Function{URL: srv.URL + "/ok", Method: "DELETE"}, args: `{"id":7}`,
			want: seen{"DELETE", "", `{"id":7}`, "application/json", ""}, wantResult: `{"ok":1}`, wantStatus: 200},
		{name: "empty answer", f: Function{URL: srv.URL + "/empty"}, args: `{}`, want: seen{},
			wantResult: `{"ok":true}`, wantStatus: 204},
		{name: "HTTP error", f: Function{URL: srv.URL + "/missing"}, args: `{}`, want: seen{},
			wantResult: `{"body":"no such booking\n","error":"HTTP 404 Not Found"}`, wantStatus: 404, wantErr: "HTTP 404"},
		{name: "timeout", f: Function{URL: srv.URL + "/slow", TimeoutMS: 100}, args: `{}`, want: seen{},
			wantResult: `{"error":"the tool did not answer within 100ms"}`, wantErr: "within 100ms"},
		{name: "bad arguments", f: Function{URL: srv.URL + "/ok"}, args: `{"city":`, noRequest: true,
			wantErr: "not a JSON object"},
		{name: "two objects", f: Function{URL: srv.URL + "/ok"}, args: `{}{}`, noRequest: true,
			wantErr: "not a single JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := callFunction(context.Background(), srv.Client(), tc.f, tc.args, systemClock{})
			if tc.noRequest {
				select {
				case s := <-got:
					t.Fatalf("request sent: %+v", s)
				default:
				}
			} else if s := <-got; s != tc.want {
				t.Errorf("server saw %+v, want %+v", s, tc.want)
			}
			if tc.wantResult != "" && out.result != tc.wantResult {
				t.Errorf("result %q, want %q", out.result, tc.wantResult)
			}
			if !json.Valid([]byte(out.result)) {
				t.Errorf("result is not JSON: %q", out.result)
			}
			if out.status != tc.wantStatus {
				t.Errorf("status %d, want %d", out.status, tc.wantStatus)
			}
			if (tc.wantErr == "") != (out.err == nil) || (out.err != nil && !strings.Contains(out.err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", out.err, tc.wantErr)
			}
		})
	}
	t.Run("large answer is truncated", func(t *testing.T) {
		out := callFunction(context.Background(), srv.Client(), Function{URL: srv.URL + "/big"}, `{}`, systemClock{})
		<-got
		if len(out.result) > maxToolResult+32 || !strings.HasSuffix(out.result, "[truncated]") || !strings.HasPrefix(out.result, "é") {
			t.Errorf("result of %d bytes ends %q", len(out.result), out.result[len(out.result)-20:])
		}
	})
}

func TestBuildTools(t *testing.T) {
	t.Parallel()
	tools := buildTools(Agent{Functions: []Function{{Name: "f", Parameters: json.RawMessage(`{"type":"object"}`)}}})
	if len(tools) != 2 || tools[0].Name != "f" || tools[1].Name != ToolEndCall {
		t.Fatalf("%+v", tools)
	}
	tools = buildTools(Agent{TransferDestinations: []string{"+1555", "sip:desk@example.com"}})
	if len(tools) != 2 || tools[1].Name != ToolTransfer || !strings.Contains(string(tools[1].Parameters), `"enum":["+1555","sip:desk@example.com"]`) {
		t.Fatalf("%+v", tools)
	}
	for _, tl := range tools {
		if !json.Valid(tl.Parameters) {
			t.Errorf("%s: invalid schema %s", tl.Name, tl.Parameters)
		}
	}
}
