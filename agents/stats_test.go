package agents

import (
	"context"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

func TestStats(t *testing.T) {
	t.Parallel()
	pool := newEnv(t).pool
	now := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	e := envOn(t, pool, pinned(now), nil)
	ctx := context.Background()
	ten, other := e.tenant(t), e.tenant(t)
	a := e.create(t, ten, `{"agent_name": "A"}`)
	b := e.create(t, ten, `{"agent_name": "B"}`)
	idle := e.create(t, ten, `{"agent_name": "Idle", "status": "inactive"}`)
	c := e.create(t, other, `{"agent_name": "C"}`)

	call := func(tenant string, agent *string, status string, at string, ms int64, cost string) {
		t.Helper()
		ts, err := time.Parse(time.RFC3339, at)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id, call_status, duration_ms, cost_usd, created_at)
			VALUES ($1, $2, $3, $4, $5, $6::numeric, $7)`, ids.New("call"), tenant, agent, status, ms, cost, ts)
		if err != nil {
			t.Fatal(err)
		}
	}
	// Agent A, in a 7-day window 2026-03-04 … 2026-03-10.
	call(ten, &a.ID, "completed", "2026-03-10T10:00:00Z", 60000, "0.100000")
	call(ten, &a.ID, "failed", "2026-03-10T11:00:00Z", 0, "0.010000")
	call(ten, &a.ID, "in_progress", "2026-03-10T14:59:00Z", 5000, "0")
	call(ten, &a.ID, "completed", "2026-03-08T23:59:59Z", 30001, "0.050000")
	call(ten, &a.ID, "no_answer", "2026-03-04T00:00:00Z", 0, "0.000001")
	call(ten, &a.ID, "completed", "2026-03-03T23:59:59Z", 99999, "9") // the day before the window
	// Agent B, a call of a deleted agent, and another tenant's calls.
	call(ten, &b.ID, "completed", "2026-03-09T12:00:00Z", 10000, "0.020000")
	call(ten, &b.ID, "busy", "2026-03-09T12:05:00Z", 0, "0")
	call(ten, nil, "completed", "2026-03-05T08:00:00Z", 20000, "0.030000")
	call(other, &c.ID, "completed", "2026-03-10T09:00:00Z", 70000, "5")

	st, err := e.svc.Stats(ctx, ten, a.ID, 7)
	if err != nil {
		t.Fatal(err)
	}
	if st.AgentID != a.ID || st.Days != 7 || st.From != "2026-03-04" || st.To != "2026-03-10" {
		t.Errorf("window: %+v", st)
	}
	if st.TotalCalls != 5 || st.CompletedCalls != 2 || st.TotalDurationMS != 95001 || st.AvgDurationMS != 45001 ||
		st.TotalCost != 0.160001 || st.SuccessRate != 0.5 {
		t.Errorf("totals: %s", mustJSON(t, st))
	}
	wantStatus := map[string]int64{"registered": 0, "ringing": 0, "in_progress": 1, "completed": 2, "failed": 1,
		"no_answer": 1, "busy": 0, "voicemail": 0}
	if mustJSON(t, st.CallsByStatus) != mustJSON(t, wantStatus) {
		t.Errorf("by status: %v", st.CallsByStatus)
	}
	wantDaily := []DailyStats{
		{"2026-03-04", 1, 0, 0, 0.000001}, {"2026-03-05", 0, 0, 0, 0}, {"2026-03-06", 0, 0, 0, 0},
		{"2026-03-07", 0, 0, 0, 0}, {"2026-03-08", 1, 1, 30001, 0.05}, {"2026-03-09", 0, 0, 0, 0},
		{"2026-03-10", 3, 1, 65000, 0.11},
	}
	if mustJSON(t, st.Daily) != mustJSON(t, wantDaily) {
		t.Errorf("daily:\n%s\nwant\n%s", mustJSON(t, st.Daily), mustJSON(t, wantDaily))
	}

	// One day: today only.
	st, err = e.svc.Stats(ctx, ten, a.ID, 1)
	if err != nil || st.TotalCalls != 3 || len(st.Daily) != 1 || st.From != "2026-03-10" {
		t.Errorf("1 day: %v %s", err, mustJSON(t, st))
	}
	// Default window is 30 days and takes in the older call.
	st, err = e.svc.Stats(ctx, ten, a.ID, 0)
	if err != nil || st.Days != 30 || st.TotalCalls != 6 || len(st.Daily) != 30 || st.From != "2026-02-09" {
		t.Errorf("30 days: %v %d %d %s", err, st.Days, st.TotalCalls, st.From)
	}
	// An agent without calls.
	st, err = e.svc.Stats(ctx, ten, idle.ID, 7)
	if err != nil || st.TotalCalls != 0 || st.SuccessRate != 0 || st.AvgDurationMS != 0 || len(st.Daily) != 7 {
		t.Errorf("idle: %v %s", err, mustJSON(t, st))
	}
	for _, d := range []int{-1, 366, 10000} {
		_, err := e.svc.Stats(ctx, ten, a.ID, d)
		if fe := wantKind(t, err, errs.KindInvalid); fe.Fields["days"] == "" {
			t.Errorf("days %d: %v", d, fe.Fields)
		}
		_, err = e.svc.GlobalStats(ctx, ten, d)
		wantKind(t, err, errs.KindInvalid)
	}
	if _, err := e.svc.Stats(ctx, ten, "agent_nope", 7); err != ErrNotFound {
		t.Errorf("unknown agent: %v", err)
	}
	if _, err := e.svc.Stats(ctx, ten, c.ID, 7); err != ErrNotFound {
		t.Errorf("other tenant's agent: %v", err)
	}

	g, err := e.svc.GlobalStats(ctx, ten, 7)
	if err != nil {
		t.Fatal(err)
	}
	// A's 5 + B's 2 + the deleted agent's 1; not the other tenant's.
	if g.TotalCalls != 8 || g.CompletedCalls != 4 || g.TotalDurationMS != 125001 || g.TotalCost != 0.210001 ||
		g.AgentID != "" || g.TotalAgents != 3 || g.ActiveAgents != 2 {
		t.Errorf("global: %s", mustJSON(t, g))
	}
	// finished: 4 completed + failed + no_answer + busy = 7
	if g.SuccessRate != 0.5714 || g.AvgDurationMS != 30000 {
		t.Errorf("global rate %v avg %v", g.SuccessRate, g.AvgDurationMS)
	}
	if len(g.Daily) != 7 || g.Daily[1].TotalCalls != 1 || g.Daily[5].TotalCalls != 2 {
		t.Errorf("global daily: %s", mustJSON(t, g.Daily))
	}
	wantAgents := []AgentStats{
		{AgentID: a.ID, AgentName: "A", Status: "active", TotalCalls: 5, CompletedCalls: 2, TotalDurationMS: 95001,
			AvgDurationMS: 45001, TotalCost: 0.160001, SuccessRate: 0.5},
		{AgentID: b.ID, AgentName: "B", Status: "active", TotalCalls: 2, CompletedCalls: 1, TotalDurationMS: 10000,
			AvgDurationMS: 10000, TotalCost: 0.02, SuccessRate: 0.5},
		{AgentID: idle.ID, AgentName: "Idle", Status: "inactive"},
	}
	if mustJSON(t, g.Agents) != mustJSON(t, wantAgents) {
		t.Errorf("agents:\n%s\nwant\n%s", mustJSON(t, g.Agents), mustJSON(t, wantAgents))
	}

	// A tenant with nothing at all.
	g, err = e.svc.GlobalStats(ctx, e.tenant(t), 3)
	if err != nil || g.TotalCalls != 0 || len(g.Agents) != 0 || g.Agents == nil || len(g.Daily) != 3 {
		t.Errorf("empty tenant: %v %s", err, mustJSON(t, g))
	}
}
