package accounts

import (
	"fmt"
	"slices"
	"strings"

	"github.com/parleyhq/parley/internal/errs"
)

// Scopes. A scope is "*" (everything) or "<resource>:<action>" where action is read,
// write or * (both). Write implies read: a key that may change an agent may also look at
// it, which is what every client that writes needs anyway.
const (
	ScopeAll = "*"

	ActionRead  = "read"
	ActionWrite = "write"
	ActionAll   = "*"
)

// Resources that scopes name.
const (
	ResourceAgents       = "agents"
	ResourceCalls        = "calls"
	ResourceKnowledge    = "knowledge"
	ResourcePhoneNumbers = "phone_numbers"
	ResourceCampaigns    = "campaigns"
	ResourceSchedules    = "schedules"
	ResourceWidgets      = "widgets"
	ResourceWebhooks     = "webhooks"
	ResourceWallet       = "wallet"
	ResourceAPIKeys      = "api_keys"
	ResourceUsers        = "users"
)

// The read and write scope of every resource, for callers of Principal.Can.
const (
	ScopeAgentsRead        = "agents:read"
	ScopeAgentsWrite       = "agents:write"
	ScopeCallsRead         = "calls:read"
	ScopeCallsWrite        = "calls:write"
	ScopeKnowledgeRead     = "knowledge:read"
	ScopeKnowledgeWrite    = "knowledge:write"
	ScopePhoneNumbersRead  = "phone_numbers:read"
	ScopePhoneNumbersWrite = "phone_numbers:write"
	ScopeCampaignsRead     = "campaigns:read"
	ScopeCampaignsWrite    = "campaigns:write"
	ScopeSchedulesRead     = "schedules:read"
	ScopeSchedulesWrite    = "schedules:write"
	ScopeWidgetsRead       = "widgets:read"
	ScopeWidgetsWrite      = "widgets:write"
	ScopeWebhooksRead      = "webhooks:read"
	ScopeWebhooksWrite     = "webhooks:write"
	ScopeWalletRead        = "wallet:read"
	ScopeWalletWrite       = "wallet:write"
	ScopeAPIKeysRead       = "api_keys:read"
	ScopeAPIKeysWrite      = "api_keys:write"
	ScopeUsersRead         = "users:read"
	ScopeUsersWrite        = "users:write"
)

// Resources returns the resources scopes can name.
func Resources() []string {
	return []string{ResourceAgents, ResourceCalls, ResourceKnowledge, ResourcePhoneNumbers,
		ResourceCampaigns, ResourceSchedules, ResourceWidgets, ResourceWebhooks, ResourceWallet,
		ResourceAPIKeys, ResourceUsers}
}

// ValidScopes returns every scope an API key may carry: "*", then read, write and * for
// each resource.
func ValidScopes() []string {
	out := []string{ScopeAll}
	for _, r := range Resources() {
		out = append(out, r+":"+ActionRead, r+":"+ActionWrite, r+":"+ActionAll)
	}
	return out
}

// DefaultScopes are given to a key created without scopes.
func DefaultScopes() []string { return []string{ScopeAll} }

// ValidScope reports whether s is one of ValidScopes.
func ValidScope(s string) bool {
	if s == ScopeAll {
		return true
	}
	r, a, ok := strings.Cut(s, ":")
	return ok && slices.Contains(Resources(), r) && (a == ActionRead || a == ActionWrite || a == ActionAll)
}

// scopeCovers reports whether granted scope g allows the concrete scope want
// ("resource:read" or "resource:write").
func scopeCovers(g, want string) bool {
	if g == ScopeAll || g == want {
		return true
	}
	gr, ga, _ := strings.Cut(g, ":")
	wr, wa, _ := strings.Cut(want, ":")
	if gr != wr {
		return false
	}
	return ga == ActionAll || (ga == ActionWrite && wa == ActionRead)
}

func scopesAllow(granted []string, want string) bool {
	for _, g := range granted {
		if scopeCovers(g, want) {
			return true
		}
	}
	return false
}

// normalizeScopes validates, dedupes and sorts requested scopes; none means the default.
func normalizeScopes(in []string) ([]string, error) {
	if len(in) == 0 {
		return DefaultScopes(), nil
	}
	if len(in) > 64 {
		return nil, errs.Invalid(map[string]string{"scopes": "too many scopes"})
	}
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !ValidScope(s) {
			return nil, errs.Invalid(map[string]string{"scopes": fmt.Sprintf("unknown scope %q", truncate(s, 64))})
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Roles of a member in a tenant.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

func validRole(r string) bool { return r == RoleOwner || r == RoleAdmin || r == RoleMember }

// roleAllows is what a role may do, whatever its credential. Owners and admins may do
// everything (admins cannot touch owners; members.go enforces that). Members may read
// everything and run the product, but not manage keys, people and branding, nor spend
// money from the wallet.
func roleAllows(role, scope string) bool {
	switch role {
	case RoleOwner, RoleAdmin:
		return true
	case RoleMember:
		switch scope {
		case ScopeAPIKeysWrite, ScopeUsersWrite, ScopeWalletWrite:
			return false
		}
		return true
	}
	return false
}

// Principal is who is making a request: a user through a JWT session, or an API key
// acting for the user who created it. Scopes is empty for JWT principals; treat it as
// read-only.
type Principal struct {
	TenantID  string
	UserID    string
	Email     string
	Role      string
	SessionID string // set for JWT principals
	APIKeyID  string // set for API key principals
	Scopes    []string
}

// IsAPIKey reports whether the principal authenticated with an API key.
func (p Principal) IsAPIKey() bool { return p.APIKeyID != "" }

// Can reports whether p may act with scope ("agents:read", "calls:write", …). A JWT
// principal may do whatever its role allows; an API key additionally only what its
// scopes allow (and never more than its creator's current role).
func (p Principal) Can(scope string) bool {
	if p.TenantID == "" || !roleAllows(p.Role, scope) {
		return false
	}
	if p.APIKeyID == "" {
		return true
	}
	return scopesAllow(p.Scopes, scope)
}

// Require returns nil when p.Can(scope), else a Forbidden error naming the scope.
func (p Principal) Require(scope string) error {
	if p.Can(scope) {
		return nil
	}
	if p.APIKeyID != "" && roleAllows(p.Role, scope) {
		return errs.Forbidden("insufficient_scope", "This API key lacks the scope "+scope)
	}
	return ErrForbidden
}

func (p Principal) isAdmin() bool { return p.Role == RoleOwner || p.Role == RoleAdmin }

// requireAdmin allows owners and admins, and for API keys also needs scope.
func (p Principal) requireAdmin(scope string) error {
	if !p.isAdmin() {
		return ErrForbidden
	}
	return p.Require(scope)
}

// canGrant reports whether p may hand out scope g on a new key: a JWT owner or admin may
// grant anything; an API key only what its own scopes cover.
func (p Principal) canGrant(g string) bool {
	if !p.isAdmin() {
		return false
	}
	if p.APIKeyID == "" {
		return true
	}
	if slices.Contains(p.Scopes, ScopeAll) {
		return true
	}
	if g == ScopeAll {
		return false
	}
	r, a, _ := strings.Cut(g, ":")
	switch a {
	case ActionAll, ActionWrite:
		// r:* needs r:write (which implies read); r:write needs the same.
		return scopesAllow(p.Scopes, r+":"+ActionWrite)
	default:
		return scopesAllow(p.Scopes, g)
	}
}

// truncate shortens s to at most n runes for echoing it in an error message.
func truncate(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos] + "…"
		}
		i++
	}
	return s
}
