package calls

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/voice"
)

func TestCreateWeb(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return at } })
	ctx := context.Background()
	ten := e.tenant(t)
	ag := e.agent(t, ten, "Ava", "active")
	c, err := e.svc.CreateWeb(ctx, ten, ag, map[string]any{"customer": "42", "n": 7})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.CallID, "call_") || c.RoomName != "parley-"+c.CallID || c.AgentID != ag || c.AgentName != "Ava" ||
		c.Direction != DirectionWeb || c.CallStatus != StatusRegistered || !c.CreatedAt.Equal(at) || c.StartTimestamp != nil {
		t.Fatalf("created %+v", c)
	}
	got, err := e.svc.Get(ctx, ten, c.CallID)
	if err != nil {
		t.Fatal(err)
	}
	// What CreateWeb returns is what a read returns.
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("CreateWeb returned\n%s\nGet returns\n%s", a, b)
	}
	var doc map[string]any
	json.Unmarshal(b, &doc)
	for _, k := range []string{"call_id", "agent_id", "direction", "call_status", "from_number", "to_number", "start_timestamp",
		"end_timestamp", "duration_ms", "disconnection_reason", "transcript", "transcript_object", "recording_url", "extracted",
		"cost", "latency", "room_name", "metadata", "created_at"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("call JSON lacks %q: %s", k, b)
		}
	}
	if doc["start_timestamp"] != nil || doc["created_at"] != "2026-05-01T12:00:00Z" {
		t.Errorf("times: %s", b)
	}
	if to, _ := doc["transcript_object"].([]any); to == nil || len(to) != 0 {
		t.Errorf("transcript_object must be [] before anything is said: %s", b)
	}
	if md, _ := doc["metadata"].(map[string]any); md["customer"] != "42" || md["n"] != 7.0 {
		t.Errorf("metadata: %s", b)
	}
}

func TestCreateWebRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxMetadataBytes = 100 })
	ctx := context.Background()
	ten, other := e.tenant(t), e.tenant(t)
	active := e.agent(t, ten, "Ava", "active")
	inactive := e.agent(t, ten, "Off", "inactive")
	foreign := e.agent(t, other, "Theirs", "active")
	cases := []struct {
		name  string
		agent string
		meta  map[string]any
		want  error
		field string
	}{
		{"missing agent_id", "", nil, nil, "agent_id"},
		{"unknown agent", "agent_nope", nil, ErrAgentNotFound, ""},
		{"another tenant's agent", foreign, nil, ErrAgentNotFound, ""},
		{"inactive agent", inactive, nil, ErrAgentInactive, ""},
		{"metadata too large", active, map[string]any{"x": strings.Repeat("a", 200)}, nil, "metadata"},
	}
	for _, tc := range cases {
		_, err := e.svc.CreateWeb(ctx, ten, tc.agent, tc.meta)
		if tc.field != "" {
			if fe := wantKind(t, err, errs.KindInvalid); fe.Fields[tc.field] == "" {
				t.Errorf("%s: fields %v lack %s", tc.name, fe.Fields, tc.field)
			}
		} else {
			wantErr(t, err, tc.want)
		}
	}
	if n := e.count(t, ten); n != 0 {
		t.Fatalf("refused creations wrote %d calls", n)
	}
	// StartWeb without LiveKit writes nothing either.
	_, err := e.svc.StartWeb(ctx, ten, active, nil)
	wantErr(t, err, ErrLiveKitNotConfigured)
	if wantKind(t, err, errs.KindUnavailable); e.count(t, ten) != 0 {
		t.Fatal("StartWeb without LiveKit wrote a call")
	}
}

// The state machine, from every state, for every operation: what it returns and the
// status it leaves.
func TestStateMachine(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	// states bring a fresh call into a state.
	states := map[string]func(t *testing.T) string{
		StatusRegistered: func(t *testing.T) string { return e.call(t, ten).CallID },
		StatusInProgress: func(t *testing.T) string {
			id := e.call(t, ten).CallID
			if _, err := e.svc.Begin(ctx, id, start); err != nil {
				t.Fatal(err)
			}
			return id
		},
		StatusCompleted: func(t *testing.T) string {
			id := e.call(t, ten).CallID
			if _, err := e.svc.Begin(ctx, id, start); err != nil {
				t.Fatal(err)
			}
			if err := e.svc.Finish(ctx, id, Finish{Status: StatusCompleted, Reason: ReasonUserHangup}); err != nil {
				t.Fatal(err)
			}
			return id
		},
		StatusFailed: func(t *testing.T) string {
			id := e.call(t, ten).CallID
			if err := e.svc.Fail(ctx, id, ReasonUserNotJoined); err != nil {
				t.Fatal(err)
			}
			return id
		},
	}
	turns := []Turn{{Role: RoleAgent, Content: "Hi", TurnNumber: 0}}
	ops := map[string]func(id string) error{
		"begin":    func(id string) error { _, err := e.svc.Begin(ctx, id, start); return err },
		"progress": func(id string) error { return e.svc.SaveProgress(ctx, id, turns, Latency{}) },
		"complete": func(id string) error {
			return e.svc.Finish(ctx, id, Finish{Status: StatusCompleted, Reason: ReasonAgentHangup, TranscriptObject: turns})
		},
		"finish failed": func(id string) error {
			return e.svc.Finish(ctx, id, Finish{Status: StatusFailed, Reason: ReasonError})
		},
		"fail": func(id string) error { return e.svc.Fail(ctx, id, ReasonLiveKit) },
	}
	type outcome struct {
		err    error // nil: success or no-op
		status string
		reason string // "" means: whatever the state had
	}
	want := map[string]map[string]outcome{
		StatusRegistered: {
			"begin":         {nil, StatusInProgress, ""},
			"progress":      {ErrNotInProgress, StatusRegistered, ""},
			"complete":      {ErrNotInProgress, StatusRegistered, ""},
			"finish failed": {nil, StatusFailed, ReasonError},
			"fail":          {nil, StatusFailed, ReasonLiveKit},
		},
		StatusInProgress: {
			"begin":         {ErrNotStartable, StatusInProgress, ""},
			"progress":      {nil, StatusInProgress, ""},
			"complete":      {nil, StatusCompleted, ReasonAgentHangup},
			"finish failed": {nil, StatusFailed, ReasonError},
			"fail":          {ErrInProgress, StatusInProgress, ""},
		},
		// Ended calls: every attempt to move them is refused or a no-op that keeps
		// the first outcome.
		StatusCompleted: {
			"begin":         {ErrNotStartable, StatusCompleted, ReasonUserHangup},
			"progress":      {ErrNotInProgress, StatusCompleted, ReasonUserHangup},
			"complete":      {nil, StatusCompleted, ReasonUserHangup},
			"finish failed": {nil, StatusCompleted, ReasonUserHangup},
			"fail":          {nil, StatusCompleted, ReasonUserHangup},
		},
		StatusFailed: {
			"begin":         {ErrNotStartable, StatusFailed, ReasonUserNotJoined},
			"progress":      {ErrNotInProgress, StatusFailed, ReasonUserNotJoined},
			"complete":      {nil, StatusFailed, ReasonUserNotJoined},
			"finish failed": {nil, StatusFailed, ReasonUserNotJoined},
			"fail":          {nil, StatusFailed, ReasonUserNotJoined},
		},
	}
	for from, byOp := range want {
		for op, w := range byOp {
			t.Run(from+"/"+op, func(t *testing.T) {
				t.Parallel()
				id := states[from](t)
				_, reasonBefore := e.status(t, id)
				err := ops[op](id)
				if w.err == nil && err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				if w.err != nil {
					wantErr(t, err, w.err)
					wantKind(t, err, errs.KindConflict)
				}
				status, reason := e.status(t, id)
				wr := w.reason
				if wr == "" {
					wr = reasonBefore
				}
				if status != w.status || reason != wr {
					t.Fatalf("left %s/%q, want %s/%q", status, reason, w.status, wr)
				}
			})
		}
	}
	t.Run("unknown call", func(t *testing.T) {
		t.Parallel()
		for name, op := range ops {
			if err := op("call_nope"); err != ErrNotFound {
				t.Errorf("%s on an unknown call: %v, want ErrNotFound", name, err)
			}
		}
	})
}

// A finished call keeps its first outcome, transcript included: a second Finish with
// other figures (a retry, a second hang-up path) changes nothing.
func TestFinishTwiceKeepsFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	c := e.call(t, ten)
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	began, err := e.svc.Begin(ctx, c.CallID, start)
	if err != nil {
		t.Fatal(err)
	}
	if began.TenantID != ten || began.AgentID != c.AgentID || began.CallStatus != StatusInProgress ||
		!began.StartTimestamp.Equal(start) {
		t.Fatalf("Begin returned %+v", began)
	}
	turns := []Turn{
		{Role: RoleAgent, Content: "Hello, how can I help?", StartMS: 0, EndMS: 1500},
		{Role: RoleUser, Content: "Where is my order?", StartMS: 2000, EndMS: 3100, TurnNumber: 1},
		{Role: RoleAgent, Content: "It shipped", StartMS: 3600, EndMS: 4200, Interrupted: true, TurnNumber: 1},
	}
	e2e := int64(480)
	lat := Summarize([]LatencyTurn{{Turn: 1, E2E: &e2e}})
	end := start.Add(90 * time.Second)
	if err := e.svc.Finish(ctx, c.CallID, Finish{Status: StatusCompleted, Reason: ReasonUserHangup, EndedAt: end,
		TranscriptObject: turns, Latency: lat}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Finish(ctx, c.CallID, Finish{Status: StatusFailed, Reason: ReasonError, EndedAt: end.Add(time.Hour),
		Duration: time.Hour}); err != nil {
		t.Fatalf("second Finish: %v", err)
	}
	got, err := e.svc.Get(ctx, ten, c.CallID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CallStatus != StatusCompleted || got.DisconnectionReason != ReasonUserHangup || !got.EndTimestamp.Equal(end) ||
		got.DurationMS != 90_000 {
		t.Fatalf("after two finishes: %s %s end %v duration %d", got.CallStatus, got.DisconnectionReason, got.EndTimestamp, got.DurationMS)
	}
	wantText := "Agent: Hello, how can I help?\nUser: Where is my order?\nAgent: It shipped"
	if got.Transcript != wantText || len(got.TranscriptObject) != 3 || !got.TranscriptObject[2].Interrupted ||
		got.TranscriptObject[1].StartMS != 2000 || got.Latency.E2E == nil || got.Latency.E2E.P50 != 480 {
		t.Fatalf("stored transcript %q %+v latency %+v", got.Transcript, got.TranscriptObject, got.Latency)
	}
}

// Two workers given the same call: exactly one may run it.
func TestBeginRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	c := e.call(t, ten)
	var wg sync.WaitGroup
	errsCh := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := e.svc.Begin(context.Background(), c.CallID, time.Now())
			errsCh <- err
		})
	}
	wg.Wait()
	close(errsCh)
	ok := 0
	for err := range errsCh {
		if err == nil {
			ok++
		} else {
			wantErr(t, err, ErrNotStartable)
		}
	}
	if ok != 1 {
		t.Fatalf("%d workers began the call", ok)
	}
}

// Another tenant's call is not found by any tenant-facing method.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	lk := newLiveKit(t)
	e := newEnv(t, func(c *Config) { c.Rooms = lk })
	ctx := context.Background()
	a, b := e.tenant(t), e.tenant(t)
	c := e.call(t, a)
	if _, err := e.svc.Get(ctx, b, c.CallID); err != ErrNotFound {
		t.Fatalf("Get from another tenant: %v", err)
	}
	if _, err := e.svc.End(ctx, b, c.CallID); err != ErrNotFound {
		t.Fatalf("End from another tenant: %v", err)
	}
	if _, err := e.svc.StartWeb(ctx, b, c.AgentID, nil); err != ErrAgentNotFound {
		t.Fatalf("StartWeb with another tenant's agent: %v", err)
	}
	for _, p := range []ListParams{{}, {AgentID: c.AgentID}} {
		list, total, err := e.svc.List(ctx, b, p)
		if err != nil || len(list) != 0 || total != 0 {
			t.Fatalf("List(%+v) from another tenant: %d calls, total %d, %v", p, len(list), total, err)
		}
	}
	if st, _ := e.status(t, c.CallID); st != StatusRegistered {
		t.Fatalf("another tenant's End changed the call: %s", st)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	clock := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *Config) {
		c.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			clock = clock.Add(time.Second)
			return clock
		}
	})
	ctx := context.Background()
	ten := e.tenant(t)
	ag1, ag2 := e.agent(t, ten, "One", "active"), e.agent(t, ten, "Two", "active")
	var ids1, all []string
	for i := range 7 {
		ag := ag1
		if i%3 == 2 {
			ag = ag2
		}
		c, err := e.svc.CreateWeb(ctx, ten, ag, nil)
		if err != nil {
			t.Fatal(err)
		}
		all = append([]string{c.CallID}, all...) // newest first
		if ag == ag1 {
			ids1 = append([]string{c.CallID}, ids1...)
		}
	}
	e.call(t, e.tenant(t)) // another tenant's call is never counted

	page := func(p ListParams) ([]string, int) {
		t.Helper()
		list, total, err := e.svc.List(ctx, ten, p)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(list))
		for i, c := range list {
			out[i] = c.CallID
		}
		return out, total
	}
	cases := []struct {
		p     ListParams
		want  []string
		total int
	}{
		{ListParams{}, all, 7},
		{ListParams{Limit: 3}, all[:3], 7},
		{ListParams{Limit: 3, Offset: 3}, all[3:6], 7},
		{ListParams{Limit: 3, Offset: 6}, all[6:], 7},
		{ListParams{Limit: 3, Offset: 9}, nil, 7},
		{ListParams{AgentID: ag1}, ids1, len(ids1)},
		{ListParams{AgentID: ag1, Limit: 2, Offset: 1}, ids1[1:3], len(ids1)},
		{ListParams{AgentID: ag1, Offset: 50}, nil, len(ids1)},
		{ListParams{AgentID: "agent_nope"}, nil, 0},
	}
	for _, tc := range cases {
		got, total := page(tc.p)
		if strings.Join(got, ",") != strings.Join(tc.want, ",") || total != tc.total {
			t.Errorf("List(%+v) = %v total %d, want %v total %d", tc.p, got, total, tc.want, tc.total)
		}
	}
}

func TestFailStale(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	clock := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	e := newEnv(t, func(c *Config) { c.Now = now })
	ctx := context.Background()
	ten := e.tenant(t)
	old := e.call(t, ten)
	oldLive := e.call(t, ten)
	if _, err := e.svc.Begin(ctx, oldLive.CallID, now()); err != nil {
		t.Fatal(err)
	}
	advance(10 * time.Minute)
	fresh := e.call(t, ten)
	n, err := e.svc.FailStale(ctx, 5*time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("FailStale = %d, %v; want 1", n, err)
	}
	for id, want := range map[string]string{old.CallID: StatusFailed, oldLive.CallID: StatusInProgress, fresh.CallID: StatusRegistered} {
		if st, reason := e.status(t, id); st != want || (want == StatusFailed && reason != ReasonRegisteredStale) {
			t.Errorf("%s: %s/%s, want %s", id, st, reason, want)
		}
	}
}

func TestReasonFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		r          voice.EndReason
		callerLeft bool
		want       string
	}{
		{voice.EndStopped, true, "user_hangup"},
		{voice.EndStopped, false, "api_ended"},
		{voice.EndCallTool, false, "agent_hangup"},
		{voice.EndTransfer, false, "call_transfer"},
		{voice.EndSilence, false, "inactivity"},
		{voice.EndMaxDuration, true, "max_duration_reached"},
		{voice.EndError, false, "error_unknown"},
		{voice.EndReason("something new"), false, "error_unknown"},
	}
	for _, tc := range cases {
		if got := ReasonFor(tc.r, tc.callerLeft); got != tc.want {
			t.Errorf("ReasonFor(%s, %v) = %s, want %s", tc.r, tc.callerLeft, got, tc.want)
		}
	}
}
