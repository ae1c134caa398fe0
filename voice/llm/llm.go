// Package llm streams chat completions for the voice engine: the Provider interface and an
// adapter for OpenAI-compatible servers (OpenAI, Groq, Ollama, vLLM…) through go-openai.
package llm

import (
	"context"
	"encoding/json"
)

// Provider streams one completion per request.
type Provider interface {
	Name() string
	// Stream starts a completion. Cancelling ctx aborts it (barge-in does this).
	Stream(ctx context.Context, req Request) (Stream, error)
}

// Role of a message in the conversation.
type Role string

const (
	System    Role = "system"
	User      Role = "user"
	Assistant Role = "assistant"
	ToolRole  Role = "tool"
)

// Message is one turn of the history.
type Message struct {
	Role    Role
	Content string
	// ToolCalls are the calls an assistant message made.
	ToolCalls []ToolCall
	// ToolCallID links a tool message to the call it answers.
	ToolCallID string
	// Name is the tool's name on a tool message.
	Name string
}

// Tool is a function the model may call.
type Tool struct {
	Name        string
	Description string
	// Parameters is a JSON Schema object.
	Parameters json.RawMessage
}

// ToolCall is one complete call, assembled from the stream's deltas.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // JSON text, as the model wrote it
}

// Request is one completion.
type Request struct {
	Model       string
	Messages    []Message
	Tools       []Tool
	Temperature *float32
	MaxTokens   int
}

// Chunk is a piece of the streamed answer. Text chunks arrive as the model writes them;
// tool calls arrive once, complete, when the model has finished writing them.
type Chunk struct {
	Text      string
	ToolCalls []ToolCall
	// FinishReason is set on the last chunk: "stop", "tool_calls", "length"…
	FinishReason string
}

// Stream yields chunks. Recv returns io.EOF after the last one.
type Stream interface {
	Recv() (Chunk, error)
	Close() error
}
