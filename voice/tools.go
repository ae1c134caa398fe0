package voice

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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parleyhq/parley/voice/llm"
)

// maxToolResult bounds the response body given back to the model: 16 KB is about 4000
// tokens, plenty for the JSON a tool returns to a voice agent, and it keeps a tool
// that returns a whole web page from blowing the context window (and the latency of
// the next model call, which grows with the prompt).
const maxToolResult = 16 << 10

// toolError is the result given to the model when a call failed before any answer.
func toolError(msg string) string {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return string(b)
}

// buildTools returns the tools offered to the model: the agent's functions, then the
// built-ins.
func buildTools(a Agent) []llm.Tool {
	tools := make([]llm.Tool, 0, len(a.Functions)+2)
	for _, f := range a.Functions {
		tools = append(tools, llm.Tool{Name: f.Name, Description: f.Description, Parameters: f.Parameters})
	}
	tools = append(tools, llm.Tool{
		Name: ToolEndCall,
		Description: "End the phone call. Call it when the conversation is over (the caller said goodbye " +
			"or has nothing more to ask). Say goodbye in your message text or in the message argument.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"message":{"type":"string",` +
			`"description":"Closing words to say before hanging up (optional)."}}}`),
	})
	if len(a.TransferDestinations) > 0 {
		dest, _ := json.Marshal(a.TransferDestinations)
		tools = append(tools, llm.Tool{
			Name:        ToolTransfer,
			Description: "Transfer the call to a human or another line. Use only when the caller asks for it or the instructions say so.",
			Parameters: json.RawMessage(`{"type":"object","properties":{"destination":{"type":"string","enum":` +
				string(dest) + `,"description":"Where to transfer the call."},"message":{"type":"string",` +
				`"description":"What to tell the caller before transferring (optional)."}},"required":["destination"]}`),
		})
	}
	return tools
}

// toolOutcome is the result of one HTTP tool call.
type toolOutcome struct {
	result   string
	status   int
	err      error
	duration time.Duration
}

// callFunction performs one HTTP tool call and returns what the model is given back.
// Failures are reported to the model as {"error": ...} rather than aborting the turn:
// a model told that the booking system is down can say so, which beats silence.
func callFunction(ctx context.Context, client *http.Client, f Function, arguments string, clock interface{ Now() time.Time }) toolOutcome {
	start := clock.Now()
	out := doCall(ctx, client, f, arguments)
	out.duration = clock.Now().Sub(start)
	if out.err != nil && out.result == "" {
		out.result = toolError(out.err.Error())
	}
	return out
}

func doCall(ctx context.Context, client *http.Client, f Function, arguments string) toolOutcome {
	args, err := parseArguments(arguments)
	if err != nil {
		return toolOutcome{err: err}
	}
	method := strings.ToUpper(f.Method)
	if method == "" {
		method = http.MethodPost
	}
	timeout := defaultToolTimeout
	if f.TimeoutMS > 0 {
		timeout = ms(f.TimeoutMS)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	u, err := url.Parse(f.URL)
	if err != nil {
		return toolOutcome{err: fmt.Errorf("bad function URL: %w", err)}
	}
	var body io.Reader
	if method == http.MethodGet {
		q := u.Query()
		addQuery(q, args)
		u.RawQuery = q.Encode()
	} else {
		b, err := json.Marshal(args)
		if err != nil {
			return toolOutcome{err: err}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(cctx, method, u.String(), body)
	if err != nil {
		return toolOutcome{err: err}
	}
	for k, v := range f.Headers {
		req.Header.Set(k, v)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "Parley-Voice/1")
	}
	resp, err := client.Do(req)
	if err != nil {
		if cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			return toolOutcome{err: fmt.Errorf("the tool did not answer within %s", timeout)}
		}
		return toolOutcome{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxToolResult+1))
	if err != nil {
		return toolOutcome{status: resp.StatusCode, err: fmt.Errorf("reading the response: %w", err)}
	}
	text := string(raw)
	if len(raw) > maxToolResult {
		text = truncateUTF8(text, maxToolResult) + " …[truncated]"
	}
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := json.Marshal(map[string]any{"error": fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode)), "body": text})
		return toolOutcome{result: string(b), status: resp.StatusCode, err: fmt.Errorf("HTTP %d", resp.StatusCode)}
	}
	if strings.TrimSpace(text) == "" {
		text = `{"ok":true}`
	}
	return toolOutcome{result: text, status: resp.StatusCode}
}

// parseArguments reads the model's arguments: a JSON object (numbers kept exact), or
// nothing.
func parseArguments(s string) (map[string]any, error) {
	args := map[string]any{}
	if strings.TrimSpace(s) == "" {
		return args, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&args); err != nil {
		return nil, fmt.Errorf("the arguments are not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("the arguments are not a single JSON object")
	}
	return args, nil
}

// addQuery flattens arguments into a query string: scalars as their text, arrays of
// scalars as repeated keys, anything nested as its JSON.
func addQuery(q url.Values, args map[string]any) {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch v := args[k].(type) {
		case []any:
			for _, e := range v {
				q.Add(k, scalar(e))
			}
		default:
			q.Add(k, scalar(v))
		}
	}
}

func scalar(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// builtinArgs are the arguments of end_call and transfer_call.
type builtinArgs struct {
	Message     string `json:"message"`
	Destination string `json:"destination"`
}
