package accounts

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Length limits of free-text fields, in characters.
const (
	maxNameLen  = 200 // full_name, company_name
	maxEmailLen = 254 // RFC 5321's path limit
)

// checkEmail validates an email address and returns it trimmed. It must be a bare
// addr-spec ("a@b.example"), not a display-name form, with a dot in the domain.
func checkEmail(f map[string]string, s string) string {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		f["email"] = "is required"
	case len(s) > maxEmailLen || !utf8.ValidString(s):
		f["email"] = "must be a valid email address"
	default:
		a, err := mail.ParseAddress(s)
		_, domain, _ := strings.Cut(s, "@")
		if err != nil || a.Address != s || a.Name != "" || !strings.Contains(domain, ".") ||
			strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || hasControl(s) {
			f["email"] = "must be a valid email address"
		}
	}
	return s
}

// checkText validates a single-line free-text field: valid UTF-8, no control characters
// (PostgreSQL cannot store NUL, and the others are never meant), at most max characters.
func checkText(f map[string]string, field, s string, max int, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		f[field] = "is required"
	case !utf8.ValidString(s):
		f[field] = "must be valid UTF-8"
	case hasControl(s):
		f[field] = "must not contain control characters"
	case utf8.RuneCountInString(s) > max:
		f[field] = fmt.Sprintf("must be at most %d characters", max)
	}
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}

// Pagination defaults of the API contract.
const (
	defaultLimit = 20
	maxLimit     = 100
)

func normalizePage(limit, offset int) (int, int) {
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	return limit, max(offset, 0)
}

// maxDays bounds usage reports (days=1..365).
const maxDays = 365

func checkDays(days int) error {
	if days < 1 || days > maxDays {
		return invalidField("days", fmt.Sprintf("must be between 1 and %d", maxDays))
	}
	return nil
}
