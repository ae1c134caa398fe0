package accounts

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/parleyhq/parley/internal/errs"
)

// Branding is a tenant's white-label settings. Empty fields mean Parley's defaults.
type Branding struct {
	AppName      string `json:"app_name"`
	PrimaryColor string `json:"primary_color"` // #RRGGBB
	LogoURL      string `json:"logo_url"`      // http or https
	Domain       string `json:"domain"`        // a hostname, stored lower-case; unique across tenants
}

const (
	maxAppNameLen = 100
	maxURLLen     = 2048
)

var (
	colorRE = regexp.MustCompile(`^#[0-9A-Fa-f]{6}$`)
	labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// normalizeDomain lower-cases a hostname and drops a trailing dot; ok is false when it is
// not a hostname of at least two labels (RFC 1123, at most 253 characters).
func normalizeDomain(d string) (string, bool) {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if d == "" || len(d) > 253 {
		return d, false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return d, false
	}
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return d, false
		}
	}
	return d, true
}

func (b *Branding) validate() error {
	f := map[string]string{}
	checkText(f, "app_name", b.AppName, maxAppNameLen, false)
	if b.PrimaryColor != "" && !colorRE.MatchString(b.PrimaryColor) {
		f["primary_color"] = "must be a color like #1A2B3C"
	}
	if b.LogoURL != "" {
		u, err := url.Parse(b.LogoURL)
		if len(b.LogoURL) > maxURLLen || hasControl(b.LogoURL) || strings.ContainsAny(b.LogoURL, " \t") ||
			err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			f["logo_url"] = "must be an http or https URL"
		}
	}
	if b.Domain != "" {
		d, ok := normalizeDomain(b.Domain)
		if !ok {
			f["domain"] = "must be a hostname like app.example.com"
		}
		b.Domain = d
	}
	if len(f) > 0 {
		return errs.Invalid(f)
	}
	return nil
}

// GetBranding returns the tenant's branding.
func (s *Service) GetBranding(ctx context.Context, tenantID string) (Branding, error) {
	var b Branding
	if err := s.pool.QueryRow(ctx, `SELECT branding FROM tenants WHERE id = $1`, tenantID).Scan(&b); err != nil {
		return Branding{}, wrapNoRows(err, ErrBrandingNotFound, "accounts: get branding %s", tenantID)
	}
	return b, nil
}

// SetBranding replaces p's tenant's branding. Owners and admins only (an API key also
// needs users:write). A domain another tenant uses is ErrDomainTaken, which does not say
// which tenant.
func (s *Service) SetBranding(ctx context.Context, p Principal, b Branding) (Branding, error) {
	if err := p.requireAdmin(ScopeUsersWrite); err != nil {
		return Branding{}, fmt.Errorf("accounts: set branding: %w", err)
	}
	if err := b.validate(); err != nil {
		return Branding{}, err
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return Branding{}, fmt.Errorf("accounts: set branding: %w", err)
	}
	var out Branding
	err = s.pool.QueryRow(ctx, `UPDATE tenants SET branding = $2, updated_at = now() WHERE id = $1 RETURNING branding`,
		p.TenantID, raw).Scan(&out)
	if isUniqueViolation(err, "tenants_branding_domain") {
		return Branding{}, fmt.Errorf("accounts: set branding %s: %w", p.TenantID, ErrDomainTaken)
	}
	if err != nil {
		return Branding{}, wrapNoRows(err, ErrBrandingNotFound, "accounts: set branding %s", p.TenantID)
	}
	return out, nil
}

// BrandingByDomain is the public lookup of the branding that claims domain.
func (s *Service) BrandingByDomain(ctx context.Context, domain string) (Branding, error) {
	d, ok := normalizeDomain(domain)
	if !ok {
		return Branding{}, fmt.Errorf("accounts: branding for domain: %w", ErrBrandingNotFound)
	}
	var b Branding
	// The coalesce condition repeats the partial index's predicate so the index is used.
	err := s.pool.QueryRow(ctx, `
		SELECT branding FROM tenants
		WHERE lower(branding->>'domain') = $1 AND coalesce(branding->>'domain', '') <> ''`, d).Scan(&b)
	if err != nil {
		return Branding{}, wrapNoRows(err, ErrBrandingNotFound, "accounts: branding for domain %q", d)
	}
	return b, nil
}
