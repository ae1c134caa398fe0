package calls

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice"
)

// t0 is the session's start on its clock in the scripted conversation.
var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func agentSaid(turn int, text string, start, end float64) *voice.Transcript {
	return &voice.Transcript{Speaker: voice.SpeakerAgent, Turn: turn, Text: text, Final: true, Start: at(start), End: at(end)}
}

func userSaid(turn int, text string, start, end float64) *voice.Transcript {
	return &voice.Transcript{Speaker: voice.SpeakerUser, Turn: turn, Text: text, Final: true, Start: at(start), End: at(end)}
}

// conversation is a scripted call as the engine reports it, in the order it emits
// events: agent sentences once played, user finals when the recogniser settles them
// (one late), interim hypotheses, a backchannel, a filler, a barge-in and a reprompt.
func conversation() []voice.Event {
	filler := agentSaid(1, "One moment while I check.", 6.55, 7.8)
	filler.Filler = true
	cut := agentSaid(1, "It should arrive", 9.4, 10.0)
	cut.Interrupted = true
	return []voice.Event{
		agentSaid(0, "Hello, this is Ava.", 0.2, 1.5),
		agentSaid(0, "How can I help?", 1.5, 2.6),
		&voice.Transcript{Speaker: voice.SpeakerUser, Turn: 1, Text: "where is", Start: at(3.0)}, // interim
		userSaid(1, "Where is my order?", 3.0, 4.1),
		&voice.TurnLatency{Turn: 1, SpeechEnded: at(5.6), EndOfTurn: at(5.9), EndpointingDelay: 300 * time.Millisecond,
			STTFinal: at(5.8), LLMRequest: at(5.95), LLMFirstToken: at(6.3), FirstSentence: at(6.35),
			TTSFirstByte: at(6.5), FirstAudio: at(6.55), KnowledgeWait: 40 * time.Millisecond},
		filler,
		userSaid(1, "It's number 1234.", 4.5, 5.6), // late final of turn 1
		&voice.Transcript{Speaker: voice.SpeakerUser, Turn: 1, Text: "mm-hm", Final: true, Backchannel: true, Start: at(8.0), End: at(8.3)},
		agentSaid(1, "Your order shipped yesterday.", 7.9, 9.4),
		&voice.Interruption{Kind: voice.BargeIn, Turn: 1, At: at(9.9), Played: "It should arrive"},
		cut,
		userSaid(2, "When exactly?", 9.7, 10.6),
		&voice.TurnLatency{Turn: 2, SpeechEnded: at(10.6), EndOfTurn: at(10.8), STTFinal: at(10.7), LLMRequest: at(10.8),
			LLMFirstToken: at(11.0), FirstSentence: at(11.05), TTSFirstByte: at(11.15), FirstAudio: at(11.2)},
		agentSaid(2, "Tomorrow by noon.", 11.2, 12.4),
		agentSaid(2, "Are you still there?", 20.4, 21.6), // the silence reprompt, same turn
		&voice.CallEnded{Reason: voice.EndSilence, At: at(30), Duration: 30 * time.Second},
	}
}

var wantTurns = []Turn{
	{Role: RoleAgent, Content: "Hello, this is Ava. How can I help?", StartMS: 200, EndMS: 2600, TurnNumber: 0},
	{Role: RoleUser, Content: "Where is my order? It's number 1234.", StartMS: 3000, EndMS: 5600, TurnNumber: 1},
	{Role: RoleAgent, Content: "One moment while I check. Your order shipped yesterday. It should arrive", StartMS: 6550, EndMS: 10000, Interrupted: true, TurnNumber: 1},
	{Role: RoleUser, Content: "When exactly?", StartMS: 9700, EndMS: 10600, TurnNumber: 2},
	{Role: RoleAgent, Content: "Tomorrow by noon.", StartMS: 11200, EndMS: 12400, TurnNumber: 2},
	{Role: RoleAgent, Content: "Are you still there?", StartMS: 20400, EndMS: 21600, TurnNumber: 2},
}

const wantText = `Agent: Hello, this is Ava. How can I help?
User: Where is my order? It's number 1234.
Agent: One moment while I check. Your order shipped yesterday. It should arrive
User: When exactly?
Agent: Tomorrow by noon.
Agent: Are you still there?`

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRecorderMerges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.call(t, e.tenant(t))
	if _, err := e.svc.Begin(ctx, c.CallID, t0); err != nil {
		t.Fatal(err)
	}
	// No start given: offsets count from the first event until CallEnded says when the
	// session started.
	rec := e.svc.NewRecorder(c.CallID, time.Time{})
	events := conversation()
	for _, ev := range events[:len(events)-1] {
		rec.HandleEvent(ev)
	}
	turns, _ := rec.Snapshot()
	if turns[0].StartMS != 0 || turns[1].StartMS != 2800 {
		t.Fatalf("before CallEnded offsets count from the first event: %+v", turns[:2])
	}
	rec.HandleEvent(events[len(events)-1])
	turns, lat := rec.Snapshot()
	if got, want := jsonOf(t, turns), jsonOf(t, wantTurns); got != want {
		t.Fatalf("transcript_object\n got %s\nwant %s", got, want)
	}
	if got := transcriptText(turns); got != wantText {
		t.Fatalf("transcript\n%s\nwant\n%s", got, wantText)
	}
	if len(lat.Turns) != 2 || *lat.Turns[0].E2E != 950 || *lat.Turns[0].KnowledgeBase != 40 || lat.Turns[1].KnowledgeBase != nil {
		t.Fatalf("latency turns %s", jsonOf(t, lat.Turns))
	}
	if lat.E2E.Num != 2 || lat.E2E.Min != 600 || lat.E2E.Max != 950 || lat.E2E.P50 != 775 || lat.KnowledgeBase.Num != 1 {
		t.Fatalf("latency summary %s", jsonOf(t, lat))
	}
	if ended, ok := rec.Ended(); !ok || ended.Reason != voice.EndSilence {
		t.Fatalf("Ended() = %+v, %v", ended, ok)
	}

	// Close fills the outcome from CallEnded and stores the final record.
	if err := rec.Close(ctx, Finish{}); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Get(ctx, c.TenantID, c.CallID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CallStatus != StatusCompleted || got.DisconnectionReason != ReasonInactivity || got.DurationMS != 30_000 ||
		got.Transcript != wantText || jsonOf(t, got.TranscriptObject) != jsonOf(t, wantTurns) ||
		jsonOf(t, got.Latency) != jsonOf(t, lat) {
		t.Fatalf("stored call: %s", jsonOf(t, got))
	}
	// Events after Close are ignored; a second Close is the first's result.
	rec.HandleEvent(agentSaid(3, "ghost", 40, 41))
	if turns, _ := rec.Snapshot(); len(turns) != len(wantTurns) {
		t.Fatal("an event after Close was recorded")
	}
	if err := rec.Close(ctx, Finish{Status: StatusFailed}); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.status(t, c.CallID); st != StatusCompleted {
		t.Fatalf("second Close changed the status to %s", st)
	}
}

// The live transcript reaches the database during the call, and no more often than
// the flush interval: with an interval of an hour, the first change is saved at once
// and the rest wait for Close.
func TestRecorderFlushesAtMostPerInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.FlushInterval = time.Hour })
	ctx := context.Background()
	c := e.call(t, e.tenant(t))
	if _, err := e.svc.Begin(ctx, c.CallID, t0); err != nil {
		t.Fatal(err)
	}
	rec := e.svc.NewRecorder(c.CallID, t0)
	events := conversation()
	rec.HandleEvent(events[0])
	stored := func() Call {
		got, err := e.svc.Get(ctx, c.TenantID, c.CallID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	eventually(t, "the first sentence in the database", func() bool {
		return stored().Transcript == "Agent: Hello, this is Ava."
	})
	live := stored()
	if len(live.TranscriptObject) != 1 || live.TranscriptObject[0].StartMS != 200 || live.CallStatus != StatusInProgress {
		t.Fatalf("live call: %s", jsonOf(t, live))
	}
	for _, ev := range events[1 : len(events)-1] {
		rec.HandleEvent(ev)
	}
	time.Sleep(300 * time.Millisecond)
	if got := stored(); got.Transcript != live.Transcript || !got.UpdatedAt.Equal(live.UpdatedAt) {
		t.Fatalf("saved again within the interval: %q", got.Transcript)
	}
	if err := rec.Close(ctx, Finish{Reason: ReasonUserHangup}); err != nil {
		t.Fatal(err)
	}
	if got := stored(); got.Transcript != wantText || got.DisconnectionReason != ReasonUserHangup || got.CallStatus != StatusCompleted {
		t.Fatalf("final: %s", jsonOf(t, got))
	}
}

// HandleEvent never waits for the database: with the call's row locked, so that the
// flusher's UPDATE blocks, events are still taken at once, and the latest state is
// saved when the lock goes.
func TestRecorderNeverBlocksOnDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.FlushInterval = 10 * time.Millisecond })
	ctx := context.Background()
	c := e.call(t, e.tenant(t))
	if _, err := e.svc.Begin(ctx, c.CallID, t0); err != nil {
		t.Fatal(err)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM calls WHERE id = $1 FOR UPDATE`, c.CallID); err != nil {
		t.Fatal(err)
	}
	rec := e.svc.NewRecorder(c.CallID, t0)
	events := conversation()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for _, ev := range events[:len(events)-1] {
			rec.HandleEvent(ev)
			time.Sleep(time.Millisecond) // let the flusher start (and block on) a save
		}
	}()
	select {
	case <-fed:
	case <-time.After(10 * time.Second):
		t.Fatal("HandleEvent blocked while the database was busy")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the whole live transcript saved", func() bool {
		got, err := e.svc.Get(ctx, c.TenantID, c.CallID)
		return err == nil && got.Transcript == wantText
	})
	if err := rec.Close(ctx, Finish{Reason: ReasonUserHangup}); err != nil {
		t.Fatal(err)
	}
}

// A session that failed before anyone spoke is a failed call; the engine's reason and
// duration are used when the transport gives none.
func TestRecorderCloseDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.call(t, e.tenant(t))
	if _, err := e.svc.Begin(ctx, c.CallID, t0); err != nil {
		t.Fatal(err)
	}
	rec := e.svc.NewRecorder(c.CallID, t0)
	rec.HandleEvent(&voice.CallEnded{Reason: voice.EndError, At: at(1.5), Duration: 1500 * time.Millisecond})
	if err := rec.Close(ctx, Finish{}); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Get(ctx, c.TenantID, c.CallID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CallStatus != StatusFailed || got.DisconnectionReason != ReasonError || got.DurationMS != 1500 ||
		got.EndTimestamp == nil || got.Transcript != "" {
		t.Fatalf("errored call: %s", jsonOf(t, got))
	}
}

// A recorder whose call was finished elsewhere stops saving progress and its Close is
// a no-op that keeps the first outcome.
func TestRecorderAfterCallEndedElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.FlushInterval = 10 * time.Millisecond })
	ctx := context.Background()
	c := e.call(t, e.tenant(t))
	if _, err := e.svc.Begin(ctx, c.CallID, t0); err != nil {
		t.Fatal(err)
	}
	rec := e.svc.NewRecorder(c.CallID, t0)
	if err := e.svc.Finish(ctx, c.CallID, Finish{Status: StatusCompleted, Reason: ReasonAPIEnded}); err != nil {
		t.Fatal(err)
	}
	rec.HandleEvent(conversation()[0])
	eventually(t, "the recorder to notice", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.gone
	})
	if err := rec.Close(ctx, Finish{Reason: ReasonUserHangup}); err != nil {
		t.Fatal(err)
	}
	got, _ := e.svc.Get(ctx, c.TenantID, c.CallID)
	if got.DisconnectionReason != ReasonAPIEnded || !strings.Contains(jsonOf(t, got), `"transcript":""`) {
		t.Fatalf("the first outcome was overwritten: %s", jsonOf(t, got))
	}
}
