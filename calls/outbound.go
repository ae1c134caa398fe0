package calls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// Outbound calls: POST /v1/calls/outbound and Call24x7's /outbound_call create them
// here. CreateOutbound validates the request, resolves the line the call leaves on, and
// writes the call (registered) and its dial job (DialArgs) in one transaction, so there
// is never a call nobody dials or a dial without its record. The dial worker moves the
// call to ringing and on.
//
// # Idempotency
//
// An Idempotency-Key makes retries safe. The key is claimed (call_idempotency_keys)
// inside the transaction that creates the call, before anything else is written, so
// of two concurrent requests with one key the second waits on the first's primary key
// and then reads its answer: exactly one call, one dial job. A retry answers with the
// call as first returned (the stored response), and says so (replayed). The same key
// with another request (SHA-256 of the normalised input) is ErrIdempotencyMismatch.
// Keys live IdempotencyTTL.
//
// # Temporary agents
//
// Call24x7 lets a call carry an instruction instead of an agent: a temporary agent is
// created for it (agents.Service.Create, system prompt = instruction, named
// "Call24x7 instruction <call id>") and marked agents.temporary = true in the call's
// transaction, so that agent lists can leave it out. It is created before that
// transaction, with the agents service's own validation; if the call is then not
// created (an error, or a concurrent duplicate won the idempotency key) it is deleted
// again.

// E164 is the phone-number format of outbound calls (Call24x7's rule, which Call2Me's
// numbers follow too): a plus, a non-zero country-code digit, at most 15 digits.
var E164 = regexp.MustCompile(`^\+[1-9]\d{1,14}$`)

// IdempotencyTTL is how long an Idempotency-Key is remembered: a day covers any
// client's retry loop (Stripe keeps keys as long), and keeps the table small.
const IdempotencyTTL = 24 * time.Hour

// Limits of an outbound request. They keep what is stored with a call (and put into
// its prompt) small; the whole metadata is bounded by Config.MaxMetadataBytes too.
const (
	maxVariables        = 100
	maxVariableNameLen  = 64
	maxVariableValueLen = 4_096
	maxExternalIDLen    = 255
	maxIdempotencyKey   = 255
	maxWebhookURLLen    = 2_048
)

// Metadata keys outbound calls reserve: the runner reads "variables" for the prompt,
// post-call analysis reads "output_parameters", the completion webhook goes to
// "webhook_url" with "external_id" echoed, and "temporary_agent" (true) says the
// call's agent was made for it from an instruction (the agent holds the instruction as
// its system prompt).
const (
	MetaVariables        = "variables"
	MetaOutputParameters = "output_parameters"
	MetaWebhookURL       = "webhook_url"
	MetaExternalID       = "external_id"
	MetaTemporaryAgent   = "temporary_agent"
)

var reservedMeta = []string{MetaVariables, MetaOutputParameters, MetaWebhookURL, MetaExternalID, MetaTemporaryAgent}

// Errors of outbound calls.
var (
	// ErrIdempotencyMismatch: an Idempotency-Key reused with a different request.
	ErrIdempotencyMismatch = errs.New(errs.KindInvalid, "idempotency_key_reused",
		"This Idempotency-Key was already used with a different request; use a new key for a new call")
	// ErrOutboundUnavailable: the server has no job queue or no telephony to place calls.
	ErrOutboundUnavailable = errs.New(errs.KindUnavailable, "outbound_unavailable",
		"Outbound calls are not available on this server")
)

// Wallet is the balance check outbound calls pass (a *billing.Service): nil when the
// tenant may place calls, billing.ErrInsufficientBalance otherwise.
type Wallet interface {
	RequireBalance(ctx context.Context, tenantID string) error
}

// AgentMaker creates and deletes the temporary agents of instruction calls (an
// *agents.Service).
type AgentMaker interface {
	Create(ctx context.Context, tenantID string, body []byte) (agents.Agent, error)
	Delete(ctx context.Context, tenantID, id string) error
}

// OutboundDeps is what outbound calls need besides the calls table and the job client
// (SetJobs).
type OutboundDeps struct {
	// Lines picks the line a call leaves on (a *telephony.Service). Required.
	Lines Lines
	// Wallet, when set, is asked before every new call.
	Wallet Wallet
	// Agents makes temporary agents; nil refuses instruction calls.
	Agents AgentMaker
}

// SetOutbound gives the service what outbound calls need. Call it before the service
// is used; without it (or without SetJobs) CreateOutbound is ErrOutboundUnavailable.
func (s *Service) SetOutbound(d OutboundDeps) { s.out = d }

// OutboundInput is an outbound call request. Field names in errors are Call2Me's
// (to_number, variables, …); the Call24x7 routes rename them.
type OutboundInput struct {
	// AgentID is the agent that talks; exactly one of AgentID and Instruction is set.
	AgentID string
	// Instruction makes a temporary agent with this system prompt (Call24x7).
	Instruction string
	// ToNumber is the number called, E.164.
	ToNumber string
	// FromNumber is the caller ID (one of the tenant's numbers); "" lets telephony pick
	// the agent's number or the tenant's first that can dial out.
	FromNumber string
	// Variables fill the prompt's {{variables}}; stored in metadata "variables".
	Variables map[string]string
	// WebhookURL receives the call's completion event (metadata "webhook_url").
	WebhookURL string
	// Metadata is stored with the call; the keys above are reserved.
	Metadata map[string]any
	// ExternalID is the client's own reference (Call24x7 external_id).
	ExternalID string
	// OutputParameters is Call24x7's template of what post-call analysis extracts:
	// field name → description (metadata "output_parameters").
	OutputParameters map[string]string
	// IdempotencyKey, when set, makes the request safe to retry.
	IdempotencyKey string
}

// CreateOutbound creates an outbound call and its dial job; see CreateOutboundReplay.
func (s *Service) CreateOutbound(ctx context.Context, tenantID string, in OutboundInput) (Call, error) {
	c, _, err := s.CreateOutboundReplay(ctx, tenantID, in)
	return c, err
}

// CreateOutboundReplay creates an outbound call (registered, direction outbound) and
// its dial job in one transaction and returns it. With an IdempotencyKey already used
// for the same request it creates nothing and returns the original answer with
// replayed = true. Errors: validation (errs Invalid), ErrAgentNotFound,
// ErrAgentInactive, the Wallet's refusal, the Lines' (telephony.ErrNoLine, …),
// ErrIdempotencyMismatch, ErrOutboundUnavailable.
func (s *Service) CreateOutboundReplay(ctx context.Context, tenantID string, in OutboundInput) (c Call, replayed bool, err error) {
	meta, err := s.normaliseOutbound(&in)
	if err != nil {
		return Call{}, false, err
	}
	if s.jobs == nil || s.out.Lines == nil || (in.Instruction != "" && s.out.Agents == nil) {
		return Call{}, false, ErrOutboundUnavailable
	}
	hash := in.hash()
	if in.IdempotencyKey != "" {
		if c, found, err := s.replay(ctx, s.pool, tenantID, in.IdempotencyKey, hash); err != nil || found {
			return c, found, err
		}
	}
	if s.out.Wallet != nil {
		if err := s.out.Wallet.RequireBalance(ctx, tenantID); err != nil {
			return Call{}, false, err
		}
	}

	id := ids.New("call")
	temporary := ""
	if in.Instruction != "" {
		a, aerr := s.createTemporaryAgent(ctx, tenantID, id, in.Instruction)
		if aerr != nil {
			return Call{}, false, aerr
		}
		in.AgentID, temporary = a.ID, a.ID
		meta[MetaTemporaryAgent] = true
		defer func() {
			// The call was not created (or a duplicate won): the agent made for it
			// would never be used. (err and replayed are the named results.)
			if err != nil || replayed {
				if derr := s.out.Agents.Delete(context.WithoutCancel(ctx), tenantID, temporary); derr != nil && !errors.Is(derr, agents.ErrNotFound) {
					s.log.WarnContext(ctx, "calls: outbound: delete unused temporary agent", "agent_id", temporary, "err", derr)
				}
			}
		}()
	} else if err := s.checkAgent(ctx, tenantID, in.AgentID); err != nil {
		return Call{}, false, err
	}
	line, err := s.out.Lines.OutboundLine(ctx, tenantID, in.AgentID, in.FromNumber)
	if err != nil {
		return Call{}, false, err
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return Call{}, false, fmt.Errorf("calls: outbound: encode metadata: %w", err)
	}
	now := s.now()
	c = Call{
		CallID: id, TenantID: tenantID, AgentID: in.AgentID,
		Direction: DirectionOutbound, CallStatus: StatusRegistered,
		FromNumber: line.Number, ToNumber: in.ToNumber,
		TranscriptObject: []Turn{}, Latency: Latency{Turns: []LatencyTurn{}},
		Extracted: map[string]any{}, RoomName: RoomName(id), Metadata: map[string]any{},
		CreatedAt: now, UpdatedAt: now,
	}
	// Shown as a later read shows it (numbers as float64).
	json.Unmarshal(metaJSON, &c.Metadata)

	c, replayed, err = s.insertOutbound(ctx, c, metaJSON, in.IdempotencyKey, hash, temporary)
	return c, replayed, err
}

// insertOutbound is CreateOutbound's transaction: claim the idempotency key, insert the
// call (only if its agent is still there and active), mark a temporary agent, insert
// the dial job.
func (s *Service) insertOutbound(ctx context.Context, c Call, metaJSON []byte, key string, hash []byte, temporary string) (Call, bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Call{}, false, fmt.Errorf("calls: outbound: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	if key != "" {
		// Claimed with an empty answer; the answer is stored once the call is written.
		won, err := s.claimKey(ctx, tx, c, key, hash)
		if err != nil {
			return Call{}, false, err
		}
		if !won {
			// Another request with this key committed first: answer as it did.
			tx.Rollback(ctx)
			c, found, err := s.replay(ctx, s.pool, c.TenantID, key, hash)
			if err == nil && !found {
				err = fmt.Errorf("calls: outbound: idempotency key %q vanished", key)
			}
			return c, found, err
		}
	}
	if c.AgentName, err = insertCall(ctx, tx, c, metaJSON, "outbound: insert"); err != nil {
		return Call{}, false, err
	}
	if temporary != "" {
		if _, err := tx.Exec(ctx, `UPDATE agents SET temporary = true WHERE tenant_id = $1 AND id = $2`, c.TenantID, temporary); err != nil {
			return Call{}, false, fmt.Errorf("calls: outbound: mark temporary agent: %w", err)
		}
	}
	// Unique by args as well: whatever path inserts a dial for this call again, River
	// keeps one.
	if _, err := s.jobs.InsertTx(ctx, tx, DialArgs{CallID: c.CallID}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}); err != nil {
		return Call{}, false, fmt.Errorf("calls: outbound: insert dial job: %w", err)
	}
	if key != "" {
		resp, err := json.Marshal(c)
		if err != nil {
			return Call{}, false, fmt.Errorf("calls: outbound: encode response: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE call_idempotency_keys SET response = $3 WHERE tenant_id = $1 AND key = $2`,
			c.TenantID, key, resp); err != nil {
			return Call{}, false, fmt.Errorf("calls: outbound: store response: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return Call{}, false, fmt.Errorf("calls: outbound: commit: %w", err)
	}
	return c, false, nil
}

// claimKey takes an idempotency key for this request in tx: it reports false when
// another request holds it (committed, and not expired). A concurrent transaction
// holding the same key makes the INSERT wait until it ends, which is what serialises
// duplicates. An expired key is taken over as if new.
func (s *Service) claimKey(ctx context.Context, tx pgx.Tx, c Call, key string, hash []byte) (bool, error) {
	var won bool
	err := tx.QueryRow(ctx, `
		INSERT INTO call_idempotency_keys (tenant_id, key, request_hash, call_id, response, created_at)
		VALUES ($1, $2, $3, $4, '{}', $5)
		ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
			call_id = EXCLUDED.call_id, response = EXCLUDED.response, created_at = EXCLUDED.created_at
		WHERE call_idempotency_keys.created_at < $6
		RETURNING true`,
		c.TenantID, key, hash, c.CallID, c.CreatedAt, c.CreatedAt.Add(-IdempotencyTTL)).Scan(&won)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("calls: outbound: claim idempotency key: %w", err)
	}
	return true, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// replay looks up a live idempotency key: found with the original answer, found with
// ErrIdempotencyMismatch for another request, or not found.
func (s *Service) replay(ctx context.Context, q querier, tenantID, key string, hash []byte) (Call, bool, error) {
	var stored, resp []byte
	err := q.QueryRow(ctx, `SELECT request_hash, response FROM call_idempotency_keys
		WHERE tenant_id = $1 AND key = $2 AND created_at >= $3`,
		tenantID, key, s.now().Add(-IdempotencyTTL)).Scan(&stored, &resp)
	if errors.Is(err, pgx.ErrNoRows) {
		return Call{}, false, nil
	}
	if err != nil {
		return Call{}, false, fmt.Errorf("calls: outbound: read idempotency key: %w", err)
	}
	if !bytes.Equal(stored, hash) {
		return Call{}, true, ErrIdempotencyMismatch
	}
	var c Call
	if err := json.Unmarshal(resp, &c); err != nil {
		return Call{}, true, fmt.Errorf("calls: outbound: decode stored response: %w", err)
	}
	c.TenantID = tenantID
	return c, true, nil
}

// DeleteExpiredIdempotencyKeys drops idempotency keys older than IdempotencyTTL and
// returns how many. Run it from the maintenance job (hourly is plenty: an expired key
// that lingers is reused as if new anyway). It deletes in batches so that a large
// backlog never holds one long transaction.
func (s *Service) DeleteExpiredIdempotencyKeys(ctx context.Context) (int, error) {
	cutoff := s.now().Add(-IdempotencyTTL)
	total := 0
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM call_idempotency_keys WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM call_idempotency_keys WHERE created_at < $1 LIMIT 5000))`, cutoff)
		if err != nil {
			return total, fmt.Errorf("calls: delete expired idempotency keys: %w", err)
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < 5000 {
			return total, nil
		}
	}
}

// checkAgent refuses a call to an agent the tenant does not have, or one inactive, before
// anything else is looked up; the insert checks again atomically.
func (s *Service) checkAgent(ctx context.Context, tenantID, agentID string) error {
	var status string
	err := s.pool.QueryRow(ctx, `SELECT status FROM agents WHERE tenant_id = $1 AND id = $2`, tenantID, agentID).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ErrAgentNotFound
	case err != nil:
		return fmt.Errorf("calls: outbound: agent %s: %w", agentID, err)
	case status != "active":
		return ErrAgentInactive
	}
	return nil
}

// createTemporaryAgent makes the agent of an instruction call, with the server's
// default settings and the instruction as its system prompt.
func (s *Service) createTemporaryAgent(ctx context.Context, tenantID, callID, instruction string) (agents.Agent, error) {
	body, err := json.Marshal(map[string]any{
		"agent_name":      "Call24x7 instruction " + callID,
		"response_engine": map[string]any{"system_prompt": instruction},
	})
	if err != nil {
		return agents.Agent{}, err
	}
	a, err := s.out.Agents.Create(ctx, tenantID, body)
	if e, ok := errs.As(err); ok && e.Kind == errs.KindInvalid {
		// The only input is the instruction: say so in its name.
		f := errs.Fields{}
		for k, v := range e.Fields {
			if k == "response_engine.system_prompt" {
				k = "instruction"
			}
			f.Add(k, "%s", v)
		}
		return agents.Agent{}, f.Err()
	}
	if err != nil {
		return agents.Agent{}, fmt.Errorf("calls: outbound: temporary agent: %w", err)
	}
	return a, nil
}

// normaliseOutbound trims and validates in, and returns the call's metadata.
func (s *Service) normaliseOutbound(in *OutboundInput) (map[string]any, error) {
	f := errs.Fields{}
	in.AgentID = strings.TrimSpace(in.AgentID)
	in.Instruction = strings.TrimSpace(in.Instruction)
	in.ToNumber = strings.TrimSpace(in.ToNumber)
	in.FromNumber = strings.TrimSpace(in.FromNumber)
	in.WebhookURL = strings.TrimSpace(in.WebhookURL)
	in.ExternalID = strings.TrimSpace(in.ExternalID)
	in.IdempotencyKey = strings.TrimSpace(in.IdempotencyKey)

	switch {
	case in.AgentID == "" && in.Instruction == "":
		f.Add("agent_id", "is required (or, on Call24x7's routes, instruction)")
	case in.AgentID != "" && in.Instruction != "":
		f.Add("instruction", "must not be given with agent_id: an instruction makes a temporary agent of its own")
	}
	switch {
	case in.ToNumber == "":
		f.Add("to_number", "is required")
	case !E164.MatchString(in.ToNumber):
		f.Add("to_number", "must be an E.164 phone number such as +14155550123")
	}
	if in.FromNumber != "" && !E164.MatchString(in.FromNumber) {
		f.Add("from_number", "must be an E.164 phone number such as +14155550123")
	}
	if len(in.Variables) > maxVariables {
		f.Add("variables", "must have at most %d entries", maxVariables)
	}
	for k, v := range in.Variables {
		switch {
		case k == "" || utf8.RuneCountInString(k) > maxVariableNameLen || strings.ContainsAny(k, "{} \t\r\n"):
			f.Add("variables", "names must be 1 to %d characters without braces or spaces", maxVariableNameLen)
		case utf8.RuneCountInString(v) > maxVariableValueLen:
			f.Add("variables."+k, "must be at most %d characters", maxVariableValueLen)
		case !utf8.ValidString(v) || !utf8.ValidString(k):
			f.Add("variables", "must be valid UTF-8")
		}
	}
	if in.WebhookURL != "" {
		if msg := webhookURLProblem(in.WebhookURL); msg != "" {
			f.Add("webhook_url", "%s", msg)
		}
	}
	if utf8.RuneCountInString(in.ExternalID) > maxExternalIDLen {
		f.Add("external_id", "must be at most %d characters", maxExternalIDLen)
	}
	if len(in.OutputParameters) > maxOutputParams {
		f.Add("output_parameters", "must have at most %d fields", maxOutputParams)
	}
	for k, v := range in.OutputParameters {
		if k == "" || utf8.RuneCountInString(k) > maxOutputNameLen {
			f.Add("output_parameters", "field names must be 1 to %d characters", maxOutputNameLen)
		} else if utf8.RuneCountInString(v) > maxOutputDescLen {
			f.Add("output_parameters."+k, "must be at most %d characters", maxOutputDescLen)
		}
	}
	if k := in.IdempotencyKey; len(k) > maxIdempotencyKey || strings.IndexFunc(k, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		f.Add("idempotency_key", "must be at most %d printable ASCII characters without spaces", maxIdempotencyKey)
	}

	meta := make(map[string]any, len(in.Metadata)+4)
	for k, v := range in.Metadata {
		meta[k] = v
	}
	for _, k := range reservedMeta {
		if _, ok := meta[k]; ok {
			f.Add("metadata."+k, "is reserved; use the request's own field")
		}
	}
	// twilio_* keys are Parley's own record of a Twilio call (its SID decides how the
	// call is ended and swept); a client must not be able to forge them.
	for k := range meta {
		if strings.HasPrefix(k, "twilio_") {
			f.Add("metadata."+k, "is reserved for Parley's Twilio bookkeeping")
		}
	}
	if len(in.Variables) > 0 {
		meta[MetaVariables] = in.Variables
	}
	if len(in.OutputParameters) > 0 {
		meta[MetaOutputParameters] = in.OutputParameters
	}
	if in.WebhookURL != "" {
		meta[MetaWebhookURL] = in.WebhookURL
	}
	if in.ExternalID != "" {
		meta[MetaExternalID] = in.ExternalID
	}
	if raw, err := json.Marshal(meta); err != nil {
		f.Add("metadata", "must be a JSON object")
	} else if len(raw) > s.cfg.MaxMetadataBytes {
		f.Add("metadata", "with variables and the other stored fields must be at most %d bytes as JSON", s.cfg.MaxMetadataBytes)
	}
	return meta, f.Err()
}

// webhookURLProblem says what is wrong with a webhook URL, or "". Only the syntax is
// checked here: whoever delivers the webhook goes through the SSRF guard.
func webhookURLProblem(raw string) string {
	if len(raw) > maxWebhookURLLen {
		return fmt.Sprintf("must be at most %d characters", maxWebhookURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "must be an http or https URL without credentials"
	}
	return ""
}

// hash identifies a normalised request for its idempotency key: every field that
// changes what call is made (the key itself aside). encoding/json sorts map keys, so
// the same request always hashes the same.
func (in OutboundInput) hash() []byte {
	raw, _ := json.Marshal([]any{in.AgentID, in.Instruction, in.ToNumber, in.FromNumber,
		in.Variables, in.WebhookURL, in.Metadata, in.ExternalID, in.OutputParameters})
	sum := sha256.Sum256(raw)
	return sum[:]
}
