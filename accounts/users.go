package accounts

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/errs"
)

// User is a person, as seen from one tenant (TenantID and Role are their membership).
type User struct {
	ID          string    `json:"id"`
	Email       string    `json:"email"`
	FullName    string    `json:"full_name"`
	CompanyName string    `json:"company_name"`
	TenantID    string    `json:"tenant_id"`
	Role        string    `json:"role"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// querier is what pool and tx have in common for single-row reads.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getUser(ctx context.Context, q querier, tenantID, userID string) (User, error) {
	var u User
	err := q.QueryRow(ctx, `
		SELECT u.id, u.email, u.full_name, u.company_name, m.tenant_id, m.role, u.created_at, u.updated_at
		FROM members m JOIN users u ON u.id = m.user_id
		WHERE m.tenant_id = $1 AND m.user_id = $2`, tenantID, userID).
		Scan(&u.ID, &u.Email, &u.FullName, &u.CompanyName, &u.TenantID, &u.Role, &u.CreatedAt, &u.UpdatedAt)
	return u, err
}

// GetUser returns a member of the tenant; anyone else is ErrUserNotFound.
func (s *Service) GetUser(ctx context.Context, tenantID, userID string) (User, error) {
	u, err := getUser(ctx, s.pool, tenantID, userID)
	if err != nil {
		return User{}, wrapNoRows(err, ErrUserNotFound, "accounts: get user %s", userID)
	}
	return u, nil
}

// UserPatch changes a user's profile; nil fields are left alone.
type UserPatch struct {
	FullName    *string
	CompanyName *string
}

// UpdateUser changes p's own profile. Any member may; an API key needs users:write.
func (s *Service) UpdateUser(ctx context.Context, p Principal, patch UserPatch) (User, error) {
	if p.IsAPIKey() && !scopesAllow(p.Scopes, ScopeUsersWrite) {
		return User{}, errs.Forbidden("insufficient_scope", "This API key lacks the scope "+ScopeUsersWrite)
	}
	f := map[string]string{}
	if patch.FullName != nil {
		checkText(f, "full_name", *patch.FullName, maxNameLen, false)
	}
	if patch.CompanyName != nil {
		checkText(f, "company_name", *patch.CompanyName, maxNameLen, false)
	}
	if len(f) > 0 {
		return User{}, errs.Invalid(f)
	}
	if patch.FullName != nil || patch.CompanyName != nil {
		tag, err := s.pool.Exec(ctx, `
			UPDATE users SET full_name = coalesce($3, full_name), company_name = coalesce($4, company_name), updated_at = now()
			WHERE id = $2 AND EXISTS (SELECT 1 FROM members WHERE tenant_id = $1 AND user_id = $2)`,
			p.TenantID, p.UserID, patch.FullName, patch.CompanyName)
		if err != nil {
			return User{}, fmt.Errorf("accounts: update user %s: %w", p.UserID, err)
		}
		if tag.RowsAffected() == 0 {
			return User{}, fmt.Errorf("accounts: update user %s: %w", p.UserID, ErrUserNotFound)
		}
	}
	return s.GetUser(ctx, p.TenantID, p.UserID)
}

// Stats are a tenant's account statistics.
type Stats struct {
	TotalAgents    int64   `json:"total_agents"`
	ActiveAgents   int64   `json:"active_agents"`
	TotalCalls     int64   `json:"total_calls"`
	CompletedCalls int64   `json:"completed_calls"`
	TotalMinutes   float64 `json:"total_minutes"`
	KnowledgeBases int64   `json:"knowledge_bases"`
	APIKeys        int64   `json:"api_keys"` // active ones
	Members        int64   `json:"members"`
}

// Stats counts a tenant's agents, calls, knowledge bases, active API keys and members.
func (s *Service) Stats(ctx context.Context, tenantID string) (Stats, error) {
	var st Stats
	err := s.pool.QueryRow(ctx, `
		SELECT
			(SELECT count(*) FROM agents WHERE tenant_id = $1),
			(SELECT count(*) FROM agents WHERE tenant_id = $1 AND status = 'active'),
			c.total, c.completed, c.minutes,
			(SELECT count(*) FROM knowledge_bases WHERE tenant_id = $1),
			(SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL
				AND (expires_at IS NULL OR expires_at > now())),
			(SELECT count(*) FROM members WHERE tenant_id = $1)
		FROM (SELECT count(*) AS total,
		             count(*) FILTER (WHERE call_status = 'completed') AS completed,
		             round(coalesce(sum(duration_ms), 0) / 60000.0, 2)::float8 AS minutes
		      FROM calls WHERE tenant_id = $1) c`, tenantID).
		Scan(&st.TotalAgents, &st.ActiveAgents, &st.TotalCalls, &st.CompletedCalls, &st.TotalMinutes,
			&st.KnowledgeBases, &st.APIKeys, &st.Members)
	if err != nil {
		return Stats{}, fmt.Errorf("accounts: stats %s: %w", tenantID, err)
	}
	return st, nil
}

// UsageSummary is a tenant's call usage over a period.
type UsageSummary struct {
	Days    int       `json:"days"`
	Since   time.Time `json:"since"` // start of the first UTC day counted
	Calls   int64     `json:"total_calls"`
	Minutes float64   `json:"total_minutes"`
	CostUSD float64   `json:"total_cost_usd"`
}

// DailyUsageRow is one UTC day of call usage; days without calls are included.
type DailyUsageRow struct {
	Date    string  `json:"date"` // YYYY-MM-DD
	Calls   int64   `json:"calls"`
	Minutes float64 `json:"minutes"`
	CostUSD float64 `json:"cost_usd"`
}

// Usage sums the tenant's calls created over the last days UTC days (1..365), today
// included.
func (s *Service) Usage(ctx context.Context, tenantID string, days int) (UsageSummary, error) {
	if err := checkDays(days); err != nil {
		return UsageSummary{}, err
	}
	u := UsageSummary{Days: days}
	err := s.pool.QueryRow(ctx, `
		WITH p AS (SELECT (((now() AT TIME ZONE 'UTC')::date - ($2::int - 1))::timestamp AT TIME ZONE 'UTC') AS since)
		SELECT p.since, count(c.id), round(coalesce(sum(c.duration_ms), 0) / 60000.0, 2)::float8,
		       coalesce(sum(c.cost_usd), 0)::float8
		FROM p LEFT JOIN calls c ON c.tenant_id = $1 AND c.created_at >= p.since
		GROUP BY p.since`, tenantID, days).Scan(&u.Since, &u.Calls, &u.Minutes, &u.CostUSD)
	if err != nil {
		return UsageSummary{}, fmt.Errorf("accounts: usage %s: %w", tenantID, err)
	}
	u.Since = u.Since.UTC()
	return u, nil
}

// DailyUsage is Usage per UTC day, oldest first, one row for each of the days days.
func (s *Service) DailyUsage(ctx context.Context, tenantID string, days int) ([]DailyUsageRow, error) {
	if err := checkDays(days); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
		WITH d AS (
			SELECT g::date AS day FROM generate_series(
				(now() AT TIME ZONE 'UTC')::date - ($2::int - 1), (now() AT TIME ZONE 'UTC')::date, interval '1 day') g
		), c AS (
			SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls,
			       sum(duration_ms) AS ms, sum(cost_usd) AS cost
			FROM calls
			WHERE tenant_id = $1
			  AND created_at >= (((now() AT TIME ZONE 'UTC')::date - ($2::int - 1))::timestamp AT TIME ZONE 'UTC')
			GROUP BY 1
		)
		SELECT to_char(d.day, 'YYYY-MM-DD'), coalesce(c.calls, 0),
		       round(coalesce(c.ms, 0) / 60000.0, 2)::float8, coalesce(c.cost, 0)::float8
		FROM d LEFT JOIN c ON c.day = d.day
		ORDER BY d.day`, tenantID, days)
	if err != nil {
		return nil, fmt.Errorf("accounts: daily usage %s: %w", tenantID, err)
	}
	out := make([]DailyUsageRow, 0, days)
	var r DailyUsageRow
	_, err = pgx.ForEachRow(rows, []any{&r.Date, &r.Calls, &r.Minutes, &r.CostUSD}, func() error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("accounts: daily usage %s: %w", tenantID, err)
	}
	return out, nil
}
