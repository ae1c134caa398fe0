package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// URLChecker is the SSRF guard: it refuses URLs that resolve to loopback, private,
// link-local or otherwise internal addresses. *safehttp.Client implements it. A refusal
// wraps safehttp.ErrBlocked or safehttp.ErrBadURL and its message is shown to the user;
// any other error means the guard could not decide.
type URLChecker interface {
	CheckURL(ctx context.Context, rawURL string) error
}

// HTTPDoer sends test-function requests. Pass the SSRF-guarded client from
// internal/safehttp, which also checks the address it actually dials, so a DNS answer
// that changes after CheckURL cannot reach an internal host.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// Config configures the agents service. The zero value is usable.
type Config struct {
	// DefaultLanguage is the language of agents created without one (default "en-US").
	DefaultLanguage string
	// UserAgent is sent with test-function requests (default "Parley/1 (test-function)").
	UserAgent string
	// Now returns the current time (default time.Now); tests pin it.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.DefaultLanguage == "" {
		c.DefaultLanguage = DefaultLanguage
	}
	if c.UserAgent == "" {
		c.UserAgent = "Parley/1 (test-function)"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	tag, ok := parseTag(c.DefaultLanguage)
	if !ok {
		return fmt.Errorf("agents: DefaultLanguage %q is not a BCP-47 tag", c.DefaultLanguage)
	}
	c.DefaultLanguage = tag
	return nil
}

// Service stores and validates agents. It is safe for concurrent use.
type Service struct {
	pool    *pgxpool.Pool
	cfg     Config
	box     *crypt.Box
	checker URLChecker
	doer    HTTPDoer
}

// New returns a Service. box seals provider API keys; checker is the SSRF guard applied
// to every URL an agent stores; doer sends test-function requests. All are required:
// there is no unguarded fallback.
func New(pool *pgxpool.Pool, cfg Config, box *crypt.Box, checker URLChecker, doer HTTPDoer) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	switch {
	case pool == nil:
		return nil, errors.New("agents: nil pool")
	case box == nil:
		return nil, errors.New("agents: nil crypt.Box (needed to seal provider API keys)")
	case checker == nil:
		return nil, errors.New("agents: nil URLChecker (pass the safehttp guard)")
	case doer == nil:
		return nil, errors.New("agents: nil HTTPDoer (pass the safehttp client)")
	}
	return &Service{pool: pool, cfg: cfg, box: box, checker: checker, doer: doer}, nil
}

// viewVersion is the version of the rendered JSON in the view column. Bump it when
// Agent's JSON changes: rows with an older version are re-rendered from spec the next
// time they are read.
const viewVersion = 1

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// Create validates body (a JSON agent object; aliases accepted) and stores a new agent.
func (s *Service) Create(ctx context.Context, tenantID string, body []byte) (Agent, error) {
	patch, err := parsePatch(body)
	if err != nil {
		return Agent{}, err
	}
	doc, _ := mergePatch(map[string]any{}, patch).(map[string]any)
	d, err := decodeDefinition(doc)
	if err != nil {
		return Agent{}, err
	}
	v := validation{svc: s, tenantID: tenantID, f: errs.Fields{}}
	if err := v.check(ctx, &d); err != nil {
		return Agent{}, err
	}
	id := ids.New("agent")
	now := s.now()
	a, spec, view, err := s.encode(id, &d, now, now)
	if err != nil {
		return Agent{}, err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO agents (id, tenant_id, name, status, spec, view, view_version, created_at, updated_at)
		VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $8)`,
		tenantID, id, d.Name, d.Status, spec, view, viewVersion, now)
	if err != nil {
		return Agent{}, fmt.Errorf("agents: create: %w", err)
	}
	return a, nil
}

// encode renders the public agent and the two stored forms of a validated definition.
func (s *Service) encode(id string, d *definition, created, updated time.Time) (Agent, string, string, error) {
	a, err := d.render(id, created, updated, nil)
	if err != nil {
		return Agent{}, "", "", err
	}
	spec, err := d.specJSON()
	if err != nil {
		return Agent{}, "", "", fmt.Errorf("agents: encode spec: %w", err)
	}
	view, err := marshalView(a)
	if err != nil {
		return Agent{}, "", "", fmt.Errorf("agents: encode view: %w", err)
	}
	return a, string(spec), view, nil
}

// marshalView encodes the public JSON as the HTTP layer writes JSON (no HTML escaping),
// so a served view is byte for byte what encoding the Agent would give.
func marshalView(a Agent) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(a); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// GetJSON returns the agent's public JSON as stored at its last write: the read path
// behind GET /v1/agents/{id}, one primary-key lookup and no decoding.
func (s *Service) GetJSON(ctx context.Context, tenantID, id string) ([]byte, error) {
	var version int
	var view []byte
	err := s.pool.QueryRow(ctx, `SELECT view_version, view FROM agents WHERE tenant_id = $1 AND id = $2`,
		tenantID, id).Scan(&version, &view)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("agents: get %s: %w", id, err)
	}
	if version != viewVersion {
		return s.rerender(ctx, tenantID, id)
	}
	return view, nil
}

// Get returns one agent, with API keys shown as Mask.
func (s *Service) Get(ctx context.Context, tenantID, id string) (Agent, error) {
	view, err := s.GetJSON(ctx, tenantID, id)
	if err != nil {
		return Agent{}, err
	}
	var a Agent
	if err := json.Unmarshal(view, &a); err != nil {
		return Agent{}, fmt.Errorf("agents: get %s: decode view: %w", id, err)
	}
	return a, nil
}

// rerender rebuilds a view written by an older release and stores it (best effort: a
// concurrent writer's newer view wins).
func (s *Service) rerender(ctx context.Context, tenantID, id string) ([]byte, error) {
	r, err := s.load(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	_, _, view, err := s.encode(id, &r.def, r.created, r.updated)
	if err != nil {
		return nil, err
	}
	_, err = s.pool.Exec(ctx, `UPDATE agents SET view = $3, view_version = $4
		WHERE tenant_id = $1 AND id = $2 AND updated_at = $5`, tenantID, id, view, viewVersion, r.updated)
	if err != nil {
		return nil, fmt.Errorf("agents: refresh view %s: %w", id, err)
	}
	return []byte(view), nil
}

// row is a stored agent with its definition decoded (keys still sealed).
type row struct {
	def              definition
	spec             []byte // as stored
	created, updated time.Time
}

// load reads the stored definition of one agent.
func (s *Service) load(ctx context.Context, tenantID, id string) (row, error) {
	var r row
	var spec []byte
	err := s.pool.QueryRow(ctx, `SELECT name, status, spec, created_at, updated_at FROM agents
		WHERE tenant_id = $1 AND id = $2`, tenantID, id).
		Scan(&r.def.Name, &r.def.Status, &spec, &r.created, &r.updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return row{}, ErrNotFound
	}
	if err != nil {
		return row{}, fmt.Errorf("agents: load %s: %w", id, err)
	}
	name, status := r.def.Name, r.def.Status
	if err := json.Unmarshal(spec, &r.def); err != nil {
		return row{}, fmt.Errorf("agents: load %s: decode spec: %w", id, err)
	}
	r.def.Name, r.def.Status = name, status
	r.spec = spec
	r.def.applyDefaults(s.cfg.DefaultLanguage)
	// JSONB reorders object keys; give parameters the sorted order every other path
	// produces, so an agent renders the same whichever way it was loaded.
	for i := range r.def.Functions {
		p, err := canonicalJSON(r.def.Functions[i].Parameters)
		if err != nil {
			return row{}, fmt.Errorf("agents: load %s: %w", id, err)
		}
		r.def.Functions[i].Parameters = p
	}
	return r, nil
}

// List returns a page of the tenant's agents, newest first, and the total count.
// limit is clamped to [1, 100] (default 20 when 0) and offset to ≥ 0.
func (s *Service) List(ctx context.Context, tenantID string, limit, offset int) ([]Agent, int, error) {
	views, total, err := s.ListJSON(ctx, tenantID, limit, offset)
	if err != nil {
		return nil, 0, err
	}
	out := make([]Agent, len(views))
	for i, v := range views {
		if err := json.Unmarshal(v, &out[i]); err != nil {
			return nil, 0, fmt.Errorf("agents: list: decode view: %w", err)
		}
	}
	return out, total, nil
}

// ListJSON is List returning each agent's stored public JSON, like GetJSON.
func (s *Service) ListJSON(ctx context.Context, tenantID string, limit, offset int) ([]json.RawMessage, int, error) {
	if limit <= 0 {
		limit = 20
	}
	limit = min(limit, 100)
	offset = max(offset, 0)
	// count(*) OVER () is computed before LIMIT, so one query returns the page and the
	// total; only a page past the end needs a separate count. Temporary agents (made for
	// one Call24x7 call from its instruction) are not listed: they are the call's, not
	// the user's; GET by ID still shows them.
	rows, err := s.pool.Query(ctx, `SELECT id, view_version, view, count(*) OVER () FROM agents
		WHERE tenant_id = $1 AND NOT temporary ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`, tenantID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("agents: list: %w", err)
	}
	type item struct {
		id      string
		version int
		view    []byte
	}
	var items []item
	total := 0
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.id, &it.version, &it.view, &total); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("agents: list: %w", err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("agents: list: %w", err)
	}
	if len(items) == 0 && offset > 0 {
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM agents WHERE tenant_id = $1 AND NOT temporary`, tenantID).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("agents: list: count: %w", err)
		}
	}
	views := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		if it.version != viewVersion {
			v, err := s.rerender(ctx, tenantID, it.id)
			if errors.Is(err, ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, 0, err
			}
			it.view = v
		}
		views = append(views, it.view)
	}
	return views, total, nil
}

// Patch applies body as an RFC 7386 merge patch to the stored definition and
// re-validates the whole result. null removes a setting (back to its default), arrays
// replace, objects merge. An API key sent back as Mask stays as stored.
func (s *Service) Patch(ctx context.Context, tenantID, id string, body []byte) (Agent, error) {
	patch, err := parsePatch(body)
	if err != nil {
		return Agent{}, err
	}
	// Optimistic concurrency: validation may wait on DNS (the SSRF guard), so no row
	// lock is held meanwhile; the UPDATE only applies if nobody wrote since we read.
	for attempt := 0; ; attempt++ {
		r, err := s.load(ctx, tenantID, id)
		if err != nil {
			return Agent{}, err
		}
		base, err := baseDocument(r.def.Name, r.def.Status, r.spec)
		if err != nil {
			return Agent{}, err
		}
		// mergePatch mutates its target, and patch values are never mutated, so the
		// same patch can be applied again on retry.
		doc, _ := mergePatch(base, clone(patch)).(map[string]any)
		d, err := decodeDefinition(doc)
		if err != nil {
			return Agent{}, err
		}
		v := validation{svc: s, tenantID: tenantID, old: &r.def, f: errs.Fields{}}
		if err := v.check(ctx, &d); err != nil {
			return Agent{}, err
		}
		updated := bumped(s.now(), r.updated)
		a, spec, view, err := s.encode(id, &d, r.created, updated)
		if err != nil {
			return Agent{}, err
		}
		tag, err := s.pool.Exec(ctx, `UPDATE agents SET name = $3, status = $4, spec = $5, view = $6,
			view_version = $7, updated_at = $8 WHERE tenant_id = $1 AND id = $2 AND updated_at = $9`,
			tenantID, id, d.Name, d.Status, spec, view, viewVersion, updated, r.updated)
		if err != nil {
			return Agent{}, fmt.Errorf("agents: patch %s: %w", id, err)
		}
		if tag.RowsAffected() == 1 {
			return a, nil
		}
		if attempt == 4 {
			return Agent{}, errs.Conflict("agent_busy", "The agent is being changed by another request; try again")
		}
	}
}

// clone deep-copies a decoded JSON value.
func clone(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = clone(x)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, x := range t {
			s[i] = clone(x)
		}
		return s
	}
	return v
}

// Delete removes an agent. Its calls stay, with agent_id set to NULL.
func (s *Service) Delete(ctx context.Context, tenantID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM agents WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	if err != nil {
		return fmt.Errorf("agents: delete %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// copySuffix marks a duplicate's name.
const copySuffix = " (copy)"

// Duplicate copies an agent under a new id, named name + " (copy)" (the original name
// shortened if needed to stay within the limit). The sealed API keys are copied as they
// are: the copy uses the same credentials without them ever being decrypted.
func (s *Service) Duplicate(ctx context.Context, tenantID, id string) (Agent, error) {
	r, err := s.load(ctx, tenantID, id)
	if err != nil {
		return Agent{}, err
	}
	name := []rune(r.def.Name)
	if keep := maxNameLen - utf8.RuneCountInString(copySuffix); len(name) > keep {
		name = name[:keep]
	}
	d := r.def
	d.Name = string(name) + copySuffix
	newID := ids.New("agent")
	now := s.now()
	a, _, view, err := s.encode(newID, &d, now, now)
	if err != nil {
		return Agent{}, err
	}
	// The spec is copied as loaded, sealed keys included, so the view rendered from it
	// above matches it exactly.
	_, err = s.pool.Exec(ctx, `INSERT INTO agents (id, tenant_id, name, status, spec, view, view_version, created_at, updated_at)
		VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $8)`,
		tenantID, newID, d.Name, d.Status, string(r.spec), view, viewVersion, now)
	if err != nil {
		return Agent{}, fmt.Errorf("agents: duplicate %s: %w", id, err)
	}
	return a, nil
}

// Resolve returns an agent with its provider API keys decrypted (Secret.Value), for the
// voice engine. The keys still never appear in its JSON or in logs.
func (s *Service) Resolve(ctx context.Context, tenantID, id string) (Agent, error) {
	r, err := s.load(ctx, tenantID, id)
	if err != nil {
		return Agent{}, err
	}
	a, err := r.def.render(id, r.created, r.updated, func(sealed string) (Secret, error) {
		pt, err := s.box.Open(sealed)
		if err != nil {
			return Secret{}, err
		}
		return Secret{set: true, value: pt}, nil
	})
	if err != nil {
		return Agent{}, fmt.Errorf("agents: resolve %s: %w", id, err)
	}
	return a, nil
}
