package accounts

import "github.com/parleyhq/parley/internal/errs"

// Sentinel errors. Store methods wrap them with the operation; the HTTP layer maps their
// kind to a status. Compare with errors.Is.
var (
	ErrUserNotFound     = errs.NotFound("user_not_found", "User not found")
	ErrAPIKeyNotFound   = errs.NotFound("api_key_not_found", "API key not found")
	ErrMemberNotFound   = errs.NotFound("member_not_found", "Member not found")
	ErrBrandingNotFound = errs.NotFound("branding_not_found", "Branding not found")

	ErrEmailTaken    = errs.Conflict("email_taken", "An account with this email already exists")
	ErrDomainTaken   = errs.Conflict("domain_taken", "This domain is already in use")
	ErrAlreadyMember = errs.Conflict("already_member", "This user is already a member")
	ErrLastOwner     = errs.Conflict("last_owner", "A tenant must keep at least one owner")

	ErrInvalidCredentials  = errs.Unauthorized("invalid_credentials", "Invalid email or password")
	ErrMissingToken        = errs.Unauthorized("missing_token", "Missing bearer token")
	ErrInvalidToken        = errs.Unauthorized("invalid_token", "Invalid or expired token")
	ErrSessionRevoked      = errs.Unauthorized("session_revoked", "Session has been revoked or has expired")
	ErrInvalidRefreshToken = errs.Unauthorized("invalid_refresh_token", "Invalid or expired refresh token")
	ErrRefreshTokenReused  = errs.Unauthorized("refresh_token_reused", "Refresh token was already used; the session has been revoked")
	ErrInvalidAPIKey       = errs.Unauthorized("invalid_api_key", "Invalid API key")
	ErrAPIKeyRevoked       = errs.Unauthorized("api_key_revoked", "API key has been revoked")
	ErrAPIKeyExpired       = errs.Unauthorized("api_key_expired", "API key has expired")

	ErrForbidden = errs.Forbidden("forbidden", "You do not have permission to do this")
)

func invalidField(field, msg string) error {
	return errs.Invalid(map[string]string{field: msg})
}
