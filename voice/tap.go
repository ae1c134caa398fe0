package voice

import "github.com/parleyhq/parley/voice/audio"

// AudioTap receives a copy of a call's audio in both directions, for a recording.
//
// CallerAudio gets every caller frame the session takes in (Session.WriteFrame), at the
// transport's rate and chunking, silence fed by ClockedInput included: the caller side
// is a continuous timeline. AgentAudio gets every frame written to Config.Output, at
// OutputRate, in 20 ms frames paced in real time, only while the agent speaks: a tap
// that needs the agent's audio on a timeline places it by the time it is called.
//
// Both are called on the engine's audio paths (the transport's goroutine for the
// caller, the playout's for the agent), never concurrently with themselves but possibly
// with each other. They must return promptly (copy and queue; never touch a disk or the
// network in the call) and must not retain f.Samples, which the caller reuses.
type AudioTap interface {
	CallerAudio(f audio.Frame)
	AgentAudio(f audio.Frame)
}

// tapOutput wraps out so that every frame written to it is also given to tap. It keeps
// out's audio.Flusher, if it has one: the playout looks for it by type assertion, and
// a wrapper that hid it would stop barge-ins from dropping the transport's queue.
func tapOutput(out audio.Writer, tap AudioTap) audio.Writer {
	if tap == nil || out == nil {
		return out
	}
	if f, ok := out.(audio.Flusher); ok {
		return tappedFlusher{tappedOutput{out, tap}, f}
	}
	return tappedOutput{out, tap}
}

type tappedOutput struct {
	out audio.Writer
	tap AudioTap
}

// WriteFrame hands f to the tap before the transport: the tap only copies, and the
// transport may reuse or mutate nothing of f either way.
func (t tappedOutput) WriteFrame(f audio.Frame) error {
	t.tap.AgentAudio(f)
	return t.out.WriteFrame(f)
}

type tappedFlusher struct {
	tappedOutput
	f audio.Flusher
}

func (t tappedFlusher) Flush() { t.f.Flush() }
