package httpapi

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/internal/errs"
)

// Routes of the accounts package: auth, the current user and their tenant (members,
// branding, usage), API keys, and the public branding lookup.

// --- request and response bodies ---

type registerRequest struct {
	Email       string `json:"email" jsonschema:"required"`
	Password    string `json:"password" jsonschema:"required,minLength=8,maxLength=256"`
	FullName    string `json:"full_name,omitempty"`
	CompanyName string `json:"company_name,omitempty"`
	// Name is accepted as an alias of full_name.
	Name string `json:"name,omitempty"`
}

type loginRequest struct {
	Email    string `json:"email" jsonschema:"required"`
	Password string `json:"password" jsonschema:"required"`
	// Username is accepted as an alias of email (OAuth2 password-grant clients).
	Username string `json:"username,omitempty"`
}

type loginResponse struct {
	accounts.TokenPair
	User accounts.User `json:"user"`
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token" jsonschema:"required"`
}

type logoutRequest struct {
	RefreshToken string `json:"refresh_token,omitempty"`
}

type okResponse struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
}

type updateUserRequest struct {
	FullName    *string `json:"full_name,omitempty"`
	CompanyName *string `json:"company_name,omitempty"`
}

// accountStats is accounts.Stats under a name of its own in OpenAPI (agents has a Stats).
type accountStats accounts.Stats

type createKeyRequest struct {
	Name      string     `json:"name" jsonschema:"required,maxLength=100"`
	Scopes    []string   `json:"scopes,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// createdKey is a new key with its secret, which is shown this once. "api_key" repeats
// "key" for clients that read that name.
type createdKey struct {
	accounts.APIKey
	Secret      string `json:"key"`
	SecretAlias string `json:"api_key"`
}

type addMemberRequest struct {
	Email string `json:"email" jsonschema:"required"`
	Role  string `json:"role" jsonschema:"enum=owner,enum=admin,enum=member"`
}

type updateMemberRequest struct {
	Role string `json:"role" jsonschema:"required,enum=owner,enum=admin,enum=member"`
}

// memberList is the members envelope; page and per_page echo the contract's paging.
type memberList struct {
	Members []accounts.Member `json:"members"`
	Total   int               `json:"total"`
	Limit   int               `json:"limit"`
	Offset  int               `json:"offset"`
	HasMore bool              `json:"has_more"`
	Page    int               `json:"page"`
	PerPage int               `json:"per_page"`
}

// Names the route table uses for the accounts bodies, so that routes.go needs no import
// of its own for them. They are aliases: OpenAPI shows the accounts type names.
type (
	userBody       = accounts.User
	tokenPairBody  = accounts.TokenPair
	usageBody      = accounts.UsageSummary
	dailyUsageBody = accounts.DailyUsageRow
	brandingBody   = accounts.Branding
	memberBody     = accounts.Member
	apiKeyBody     = accounts.APIKey
	keyUsageBody   = accounts.KeyUsage
)

// daysQuery documents the days parameter of usage routes.
var daysQuery = map[string]string{"days": "period in days, 1 to 365 (default 30)"}

// --- auth ---

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.FullName == "" {
		req.FullName = req.Name
	}
	u, err := s.deps.Accounts.Register(r.Context(), accounts.RegisterInput{
		Email: req.Email, Password: req.Password, FullName: req.FullName, CompanyName: req.CompanyName})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, u)
	return nil
}

// handleLogin takes JSON {email, password}, or an OAuth2 password-grant form
// (username, password) as FastAPI-style clients send it.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
		if err := r.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return errBodyTooLarge(mbe.Limit)
			}
			return errs.BadRequest("invalid_form", "Malformed form body")
		}
		req.Email, req.Username, req.Password = r.PostForm.Get("email"), r.PostForm.Get("username"), r.PostForm.Get("password")
	} else if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Email == "" {
		req.Email = req.Username
	}
	f := errs.Fields{}
	if strings.TrimSpace(req.Email) == "" {
		f.Add("email", "is required")
	}
	if req.Password == "" {
		f.Add("password", "is required")
	}
	if err := f.Err(); err != nil {
		return err
	}
	pair, u, err := s.deps.Accounts.Login(r.Context(), req.Email, req.Password)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // tokens must not be cached (RFC 6749 §5.1)
	writeJSON(w, http.StatusOK, loginResponse{TokenPair: pair, User: u})
	return nil
}

func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return errs.Invalid(map[string]string{"refresh_token": "is required"})
	}
	pair, err := s.deps.Accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, pair)
	return nil
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	u, err := s.deps.Accounts.GetUser(r.Context(), p.TenantID, p.UserID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

// handleLogout's body is optional: {"refresh_token": "..."} also revokes that token's
// session.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	var req logoutRequest
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	if err := s.deps.Accounts.Logout(r.Context(), principal(r), req.RefreshToken); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, okResponse{Success: true, Message: "Logged out"})
	return nil
}

// decodeOptionalJSON is decodeJSON for bodies that may be absent.
func decodeOptionalJSON(r *http.Request, v any) error {
	if r.Body == nil {
		return nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errBodyTooLarge(mbe.Limit)
		}
		return errs.BadRequest("unreadable_body", "Could not read request body")
	}
	if strings.TrimSpace(string(body)) == "" {
		return nil
	}
	return unmarshalBody(body, v)
}

// --- users ---

func (s *Server) handleUpdateMe(w http.ResponseWriter, r *http.Request) error {
	var req updateUserRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, err := s.deps.Accounts.UpdateUser(r.Context(), principal(r), accounts.UserPatch{FullName: req.FullName, CompanyName: req.CompanyName})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Server) handleUserStats(w http.ResponseWriter, r *http.Request) error {
	st, err := s.deps.Accounts.Stats(r.Context(), principal(r).TenantID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, accountStats(st))
	return nil
}

func (s *Server) handleUserUsage(w http.ResponseWriter, r *http.Request) error {
	days, err := intParam(r, "days", 30, 1, 365)
	if err != nil {
		return err
	}
	u, err := s.deps.Accounts.Usage(r.Context(), principal(r).TenantID, days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Server) handleUserDailyUsage(w http.ResponseWriter, r *http.Request) error {
	days, err := intParam(r, "days", 30, 1, 365)
	if err != nil {
		return err
	}
	rows, err := s.deps.Accounts.DailyUsage(r.Context(), principal(r).TenantID, days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rows)
	return nil
}

func (s *Server) handleGetBranding(w http.ResponseWriter, r *http.Request) error {
	b, err := s.deps.Accounts.GetBranding(r.Context(), principal(r).TenantID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) handleSetBranding(w http.ResponseWriter, r *http.Request) error {
	var req accounts.Branding
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	b, err := s.deps.Accounts.SetBranding(r.Context(), principal(r), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) handleBrandingByDomain(w http.ResponseWriter, r *http.Request) error {
	b, err := s.deps.Accounts.BrandingByDomain(r.Context(), r.PathValue("domain"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// --- members ---

// memberPage reads paging as page/per_page (the contract's names) when either is given,
// else as limit/offset.
func memberPage(r *http.Request) (limit, offset int, err error) {
	q := r.URL.Query()
	if q.Get("page") == "" && q.Get("per_page") == "" {
		return listParams(r)
	}
	perPage, err := intParam(r, "per_page", 20, 1, 100)
	if err != nil {
		return 0, 0, err
	}
	page, err := intParam(r, "page", 1, 1, 1_000_000)
	if err != nil {
		return 0, 0, err
	}
	return perPage, (page - 1) * perPage, nil
}

func (s *Server) handleListMembers(w http.ResponseWriter, r *http.Request) error {
	limit, offset, err := memberPage(r)
	if err != nil {
		return err
	}
	ms, total, err := s.deps.Accounts.ListMembers(r.Context(), principal(r).TenantID, limit, offset)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []accounts.Member{}
	}
	writeJSON(w, http.StatusOK, memberList{Members: ms, Total: total, Limit: limit, Offset: offset,
		HasMore: offset+limit < total, Page: offset/limit + 1, PerPage: limit})
	return nil
}

func (s *Server) handleAddMember(w http.ResponseWriter, r *http.Request) error {
	var req addMemberRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	f := errs.Fields{}
	if strings.TrimSpace(req.Email) == "" {
		f.Add("email", "is required")
	}
	if req.Role == "" {
		req.Role = accounts.RoleMember
	}
	if err := f.Err(); err != nil {
		return err
	}
	m, err := s.deps.Accounts.AddMember(r.Context(), principal(r), req.Email, req.Role)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, m)
	return nil
}

func (s *Server) handleUpdateMember(w http.ResponseWriter, r *http.Request) error {
	var req updateMemberRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := s.deps.Accounts.UpdateMemberRole(r.Context(), principal(r), r.PathValue("user_id"), req.Role)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request) error {
	if err := s.deps.Accounts.RemoveMember(r.Context(), principal(r), r.PathValue("user_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- API keys ---

func (s *Server) handleCreateAPIKey(w http.ResponseWriter, r *http.Request) error {
	var req createKeyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	k, secret, err := s.deps.Accounts.CreateAPIKey(r.Context(), principal(r), accounts.CreateKeyInput{
		Name: req.Name, Scopes: req.Scopes, ExpiresAt: req.ExpiresAt})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, createdKey{APIKey: k, Secret: secret, SecretAlias: secret})
	return nil
}

func (s *Server) handleListAPIKeys(w http.ResponseWriter, r *http.Request) error {
	return writeList(w, r, "api_keys", s.deps.Accounts.ListAPIKeys)
}

func (s *Server) handleRevokeAPIKey(w http.ResponseWriter, r *http.Request) error {
	k, err := s.deps.Accounts.RevokeAPIKey(r.Context(), principal(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (s *Server) handleDeleteAPIKey(w http.ResponseWriter, r *http.Request) error {
	if err := s.deps.Accounts.DeleteAPIKey(r.Context(), principal(r), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleAPIKeyUsage(w http.ResponseWriter, r *http.Request) error {
	days, err := intParam(r, "days", 30, 1, 365)
	if err != nil {
		return err
	}
	u, err := s.deps.Accounts.APIKeyUsage(r.Context(), principal(r).TenantID, r.PathValue("id"), days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}
