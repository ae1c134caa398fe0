package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Member is a user's membership in a tenant.
type Member struct {
	UserID    string    `json:"user_id"`
	Email     string    `json:"email"`
	FullName  string    `json:"full_name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"` // when they joined
}

const memberCols = `m.user_id, u.email, u.full_name, m.role, m.created_at`

func scanMember(row pgx.Row) (Member, error) {
	var m Member
	err := row.Scan(&m.UserID, &m.Email, &m.FullName, &m.Role, &m.CreatedAt)
	return m, err
}

// ListMembers lists the tenant's members, oldest first, with the total count.
func (s *Service) ListMembers(ctx context.Context, tenantID string, limit, offset int) ([]Member, int, error) {
	limit, offset = normalizePage(limit, offset)
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM members WHERE tenant_id = $1`, tenantID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("accounts: list members: %w", err)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+memberCols+` FROM members m JOIN users u ON u.id = m.user_id
		WHERE m.tenant_id = $1 ORDER BY m.created_at, m.user_id LIMIT $2 OFFSET $3`, tenantID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("accounts: list members: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) { return scanMember(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("accounts: list members: %w", err)
	}
	return ms, total, nil
}

func checkRole(role string) error {
	if !validRole(role) {
		return invalidField("role", "must be one of owner, admin, member")
	}
	return nil
}

// AddMember adds an existing user, found by email, to p's tenant. Owners and admins only;
// only an owner may make someone an owner.
func (s *Service) AddMember(ctx context.Context, p Principal, email, role string) (Member, error) {
	if err := p.requireAdmin(ScopeUsersWrite); err != nil {
		return Member{}, fmt.Errorf("accounts: add member: %w", err)
	}
	if err := checkRole(role); err != nil {
		return Member{}, err
	}
	if role == RoleOwner && p.Role != RoleOwner {
		return Member{}, fmt.Errorf("accounts: add member: %w", ErrForbidden)
	}
	email = strings.TrimSpace(email)
	var m Member
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var userID string
		err := tx.QueryRow(ctx, `SELECT id FROM users WHERE lower(email) = lower($1)`, email).Scan(&userID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUserNotFound
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO members (tenant_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			p.TenantID, userID, role)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrAlreadyMember
		}
		m, err = scanMember(tx.QueryRow(ctx, `SELECT `+memberCols+` FROM members m JOIN users u ON u.id = m.user_id
			WHERE m.tenant_id = $1 AND m.user_id = $2`, p.TenantID, userID))
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("accounts: add member: %w", err)
	}
	return m, nil
}

// changeMember runs change on a member of p's tenant with the tenant's owners locked, so
// two concurrent demotions cannot leave it without an owner. change gets the member's
// current role and the owners' ids. Afterwards every process drops the member's cached
// sessions and keys, which carry the old role.
func (s *Service) changeMember(ctx context.Context, p Principal, op, userID string,
	change func(tx pgx.Tx, current string, owners []string) error) error {
	if err := p.requireAdmin(ScopeUsersWrite); err != nil {
		return fmt.Errorf("accounts: %s %s: %w", op, userID, err)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT user_id FROM members WHERE tenant_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE`, p.TenantID)
		if err != nil {
			return err
		}
		owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		var current string
		err = tx.QueryRow(ctx, `SELECT role FROM members WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE`, p.TenantID, userID).Scan(&current)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrMemberNotFound
		}
		if err != nil {
			return err
		}
		if current == RoleOwner && p.Role != RoleOwner {
			return ErrForbidden // admins cannot touch owners
		}
		if err := change(tx, current, owners); err != nil {
			return err
		}
		return notify(ctx, tx, "user:"+userID)
	})
	if err != nil {
		return fmt.Errorf("accounts: %s %s: %w", op, userID, err)
	}
	s.evictUser(userID)
	return nil
}

// UpdateMemberRole changes a member's role. Owners and admins only; only owners may
// touch owners; the last owner cannot be demoted (ErrLastOwner).
func (s *Service) UpdateMemberRole(ctx context.Context, p Principal, userID, role string) (Member, error) {
	if err := checkRole(role); err != nil {
		return Member{}, err
	}
	if role == RoleOwner && p.Role != RoleOwner {
		return Member{}, fmt.Errorf("accounts: update member %s: %w", userID, ErrForbidden)
	}
	var m Member
	err := s.changeMember(ctx, p, "update member", userID, func(tx pgx.Tx, current string, owners []string) error {
		if current == RoleOwner && role != RoleOwner && len(owners) == 1 && slices.Contains(owners, userID) {
			return ErrLastOwner
		}
		if _, err := tx.Exec(ctx, `UPDATE members SET role = $3 WHERE tenant_id = $1 AND user_id = $2`, p.TenantID, userID, role); err != nil {
			return err
		}
		var err error
		m, err = scanMember(tx.QueryRow(ctx, `SELECT `+memberCols+` FROM members m JOIN users u ON u.id = m.user_id
			WHERE m.tenant_id = $1 AND m.user_id = $2`, p.TenantID, userID))
		return err
	})
	if err != nil {
		return Member{}, err
	}
	return m, nil
}

// RemoveMember removes a member from p's tenant. Their sessions in the tenant and the API
// keys they created stop working at once. Owners and admins only; only owners may
// remove owners; the last owner cannot be removed (ErrLastOwner).
func (s *Service) RemoveMember(ctx context.Context, p Principal, userID string) error {
	return s.changeMember(ctx, p, "remove member", userID, func(tx pgx.Tx, current string, owners []string) error {
		if current == RoleOwner && len(owners) == 1 {
			return ErrLastOwner
		}
		_, err := tx.Exec(ctx, `DELETE FROM members WHERE tenant_id = $1 AND user_id = $2`, p.TenantID, userID)
		return err
	})
}
