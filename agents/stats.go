package agents

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/errs"
)

// Stats windows. Days are UTC calendar days ending today; a 1-year cap keeps the
// per-day series and the scan over calls bounded.
const (
	DefaultStatsDays = 30
	MaxStatsDays     = 365
)

// CallStatuses are the values of calls.call_status, in lifecycle order.
var CallStatuses = []string{"registered", "ringing", "in_progress", "completed", "failed", "no_answer", "busy", "voicemail"}

// Stats summarises the calls of one agent (or of a whole tenant) over the last Days
// UTC days, today included. A call counts on the day it was created.
type Stats struct {
	AgentID string `json:"agent_id,omitempty"`
	Days    int    `json:"days"`
	From    string `json:"from"` // first day, YYYY-MM-DD
	To      string `json:"to"`   // last day (today), YYYY-MM-DD

	TotalCalls     int64 `json:"total_calls"`
	CompletedCalls int64 `json:"completed_calls"`
	// CallsByStatus has every status, zeros included.
	CallsByStatus   map[string]int64 `json:"calls_by_status"`
	TotalDurationMS int64            `json:"total_duration_ms"`
	// AvgDurationMS is the mean duration of completed calls: calls that failed or were
	// not answered last zero seconds and would only drag the mean down.
	AvgDurationMS int64   `json:"avg_duration_ms"`
	TotalCost     float64 `json:"total_cost"` // USD
	// SuccessRate is completed / finished calls, in [0, 1]. Calls still registered,
	// ringing or in progress have no outcome yet and are left out.
	SuccessRate float64 `json:"success_rate"`
	// Daily has one entry per day of the window, oldest first, empty days included.
	Daily []DailyStats `json:"daily"`
}

// DailyStats is one day of Stats.Daily.
type DailyStats struct {
	Date           string  `json:"date"` // YYYY-MM-DD (UTC)
	TotalCalls     int64   `json:"total_calls"`
	CompletedCalls int64   `json:"completed_calls"`
	DurationMS     int64   `json:"duration_ms"`
	Cost           float64 `json:"cost"`
}

// GlobalStats summarises all of a tenant's calls (those of deleted agents included)
// and lists each current agent's figures, busiest first.
type GlobalStats struct {
	Stats
	TotalAgents  int          `json:"total_agents"`
	ActiveAgents int          `json:"active_agents"`
	Agents       []AgentStats `json:"agents"`
}

// AgentStats is one agent's row in GlobalStats.
type AgentStats struct {
	AgentID         string  `json:"agent_id"`
	AgentName       string  `json:"agent_name"`
	Status          string  `json:"status"`
	TotalCalls      int64   `json:"total_calls"`
	CompletedCalls  int64   `json:"completed_calls"`
	TotalDurationMS int64   `json:"total_duration_ms"`
	AvgDurationMS   int64   `json:"avg_duration_ms"`
	TotalCost       float64 `json:"total_cost"`
	SuccessRate     float64 `json:"success_rate"`
}

// unfinished are statuses without an outcome yet.
var unfinished = []string{"registered", "ringing", "in_progress"}

// window returns the first day of a days-long window ending today (UTC).
func (s *Service) window(days int) (first, today time.Time, err error) {
	if days == 0 {
		days = DefaultStatsDays
	}
	if days < 1 || days > MaxStatsDays {
		return time.Time{}, time.Time{}, errs.Invalid(map[string]string{"days": fmt.Sprintf("must be from 1 to %d", MaxStatsDays)})
	}
	now := s.cfg.Now().UTC()
	today = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	return today.AddDate(0, 0, -(days - 1)), today, nil
}

// Stats computes one agent's call statistics over the last days (1..365, 0 means 30).
func (s *Service) Stats(ctx context.Context, tenantID, id string, days int) (Stats, error) {
	first, today, err := s.window(days)
	if err != nil {
		return Stats{}, err
	}
	var one int
	err = s.pool.QueryRow(ctx, `SELECT 1 FROM agents WHERE tenant_id = $1 AND id = $2`, tenantID, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return Stats{}, ErrNotFound
	}
	if err != nil {
		return Stats{}, fmt.Errorf("agents: stats %s: %w", id, err)
	}
	st, err := s.stats(ctx, tenantID, id, first, today)
	if err != nil {
		return Stats{}, fmt.Errorf("agents: stats %s: %w", id, err)
	}
	st.AgentID = id
	return st, nil
}

// GlobalStats computes the tenant's call statistics over the last days and each
// agent's share.
func (s *Service) GlobalStats(ctx context.Context, tenantID string, days int) (GlobalStats, error) {
	first, today, err := s.window(days)
	if err != nil {
		return GlobalStats{}, err
	}
	st, err := s.stats(ctx, tenantID, "", first, today)
	if err != nil {
		return GlobalStats{}, fmt.Errorf("agents: global stats: %w", err)
	}
	g := GlobalStats{Stats: st, Agents: []AgentStats{}}
	rows, err := s.pool.Query(ctx, `
		SELECT a.id, a.name, a.status,
		       count(c.id),
		       count(c.id) FILTER (WHERE c.call_status = 'completed'),
		       count(c.id) FILTER (WHERE c.call_status <> ALL ($3)),
		       coalesce(sum(c.duration_ms), 0)::bigint,
		       coalesce(sum(c.duration_ms) FILTER (WHERE c.call_status = 'completed'), 0)::bigint,
		       coalesce(sum(c.cost_usd), 0)::float8
		FROM agents a
		LEFT JOIN calls c ON c.tenant_id = $1 AND c.agent_id = a.id AND c.created_at >= $2
		WHERE a.tenant_id = $1
		GROUP BY a.id
		ORDER BY count(c.id) DESC, a.created_at DESC, a.id`, tenantID, first, unfinished)
	if err != nil {
		return GlobalStats{}, fmt.Errorf("agents: global stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a AgentStats
		var finished, completedMS int64
		if err := rows.Scan(&a.AgentID, &a.AgentName, &a.Status, &a.TotalCalls, &a.CompletedCalls,
			&finished, &a.TotalDurationMS, &completedMS, &a.TotalCost); err != nil {
			return GlobalStats{}, fmt.Errorf("agents: global stats: %w", err)
		}
		a.AvgDurationMS = ratio(completedMS, a.CompletedCalls)
		a.SuccessRate = rate(a.CompletedCalls, finished)
		a.TotalCost = round6(a.TotalCost)
		g.Agents = append(g.Agents, a)
		g.TotalAgents++
		if a.Status == "active" {
			g.ActiveAgents++
		}
	}
	if err := rows.Err(); err != nil {
		return GlobalStats{}, fmt.Errorf("agents: global stats: %w", err)
	}
	return g, nil
}

// stats aggregates calls from first (a UTC midnight) on, for one agent or (agentID "")
// the whole tenant: one query by status for the totals, one for the daily series.
func (s *Service) stats(ctx context.Context, tenantID, agentID string, first, today time.Time) (Stats, error) {
	st := Stats{
		Days:          int(today.Sub(first).Hours()/24) + 1,
		From:          first.Format(time.DateOnly),
		To:            today.Format(time.DateOnly),
		CallsByStatus: make(map[string]int64, len(CallStatuses)),
	}
	for _, cs := range CallStatuses {
		st.CallsByStatus[cs] = 0
	}
	// Two spellings of the filter rather than "$2 = '' OR agent_id = $2", so each
	// query has a plan that uses calls_agent or calls_tenant.
	filter := `tenant_id = $1 AND created_at >= $2`
	args := []any{tenantID, first}
	if agentID != "" {
		filter = `tenant_id = $1 AND created_at >= $2 AND agent_id = $3`
		args = append(args, agentID)
	}

	rows, err := s.pool.Query(ctx, `SELECT call_status, count(*), coalesce(sum(duration_ms), 0)::bigint,
		coalesce(sum(cost_usd), 0)::float8 FROM calls WHERE `+filter+` GROUP BY call_status`, args...)
	if err != nil {
		return Stats{}, err
	}
	var completedMS, finished int64
	for rows.Next() {
		var status string
		var n, ms int64
		var cost float64
		if err := rows.Scan(&status, &n, &ms, &cost); err != nil {
			rows.Close()
			return Stats{}, err
		}
		st.CallsByStatus[status] = n
		st.TotalCalls += n
		st.TotalDurationMS += ms
		st.TotalCost += cost
		if status == "completed" {
			st.CompletedCalls, completedMS = n, ms
		}
		if !contains(unfinished, status) {
			finished += n
		}
	}
	if err := rows.Err(); err != nil {
		return Stats{}, err
	}
	st.AvgDurationMS = ratio(completedMS, st.CompletedCalls)
	st.SuccessRate = rate(st.CompletedCalls, finished)
	st.TotalCost = round6(st.TotalCost)

	// generate_series supplies the empty days; the series and the grouping both use
	// UTC dates, as the window does.
	n := len(args)
	rows, err = s.pool.Query(ctx, fmt.Sprintf(`
		WITH c AS (
			SELECT (created_at AT TIME ZONE 'UTC')::date AS day, call_status, duration_ms, cost_usd
			FROM calls WHERE %s
		)
		SELECT to_char(d.day, 'YYYY-MM-DD'), count(c.day),
		       count(c.day) FILTER (WHERE c.call_status = 'completed'),
		       coalesce(sum(c.duration_ms), 0)::bigint, coalesce(sum(c.cost_usd), 0)::float8
		FROM generate_series($%d::date, $%d::date, interval '1 day') AS d(day)
		LEFT JOIN c ON c.day = d.day::date
		GROUP BY d.day ORDER BY d.day`, filter, n+1, n+2),
		append(args, first, today)...)
	if err != nil {
		return Stats{}, err
	}
	defer rows.Close()
	st.Daily = make([]DailyStats, 0, st.Days)
	for rows.Next() {
		var d DailyStats
		if err := rows.Scan(&d.Date, &d.TotalCalls, &d.CompletedCalls, &d.DurationMS, &d.Cost); err != nil {
			return Stats{}, err
		}
		d.Cost = round6(d.Cost)
		st.Daily = append(st.Daily, d)
	}
	return st, rows.Err()
}

func ratio(sum, n int64) int64 {
	if n == 0 {
		return 0
	}
	return int64(math.Round(float64(sum) / float64(n)))
}

// rate is num/den rounded to 4 decimals (0 when den is 0).
func rate(num, den int64) float64 {
	if den == 0 {
		return 0
	}
	return math.Round(float64(num)/float64(den)*10000) / 10000
}

// round6 matches calls.cost_usd's six decimals, hiding float noise from sums.
func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
