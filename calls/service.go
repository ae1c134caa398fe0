package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	twclient "github.com/twilio/twilio-go/client"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// Config configures the calls service. The zero value is usable (without LiveKit).
type Config struct {
	// Rooms is the LiveKit adapter (a *LiveKit). Nil means LiveKit is not configured:
	// reads work, and web calls, tokens and ending calls answer ErrLiveKitNotConfigured.
	Rooms Rooms
	// FlushInterval is the most often a Recorder saves the live transcript (default
	// 1 s): often enough that a dashboard polling GET /v1/calls/{id} follows the
	// conversation, rare enough that a thousand live calls cost a thousand small
	// UPDATEs a second at most, and only while someone is speaking.
	FlushInterval time.Duration
	// MaxMetadataBytes caps a call's metadata as JSON (default 16 KiB).
	MaxMetadataBytes int
	Logger           *slog.Logger
	// Now returns the current time (default time.Now); tests pin it.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.MaxMetadataBytes == 0 {
		c.MaxMetadataBytes = 16 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service stores calls and drives their lifecycle. It is safe for concurrent use.
type Service struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *slog.Logger
	// jobs inserts River jobs in the caller's transaction (SetJobs); nil: no jobs.
	jobs *river.Client[pgx.Tx]
	// out is what outbound calls need besides the table (outbound.go, SetOutbound).
	out OutboundDeps
	// twilio ends Twilio calls, which have no room, and looks up their status for
	// FailOrphans (set by NewTwilio; nil: Twilio is not configured).
	twilio twilioCalls
}

// twilioCalls is what the service asks Twilio (a *Twilio) about the calls it carries.
type twilioCalls interface {
	Hangup(ctx context.Context, c Call) error
	// callStatus is Twilio's status of call sid of account ("": the configured
	// account): queued, ringing, in-progress, completed, busy, failed, no-answer or
	// canceled.
	callStatus(ctx context.Context, sid, account string) (string, error)
}

// New returns a Service.
func New(pool *pgxpool.Pool, cfg Config) (*Service, error) {
	if pool == nil {
		return nil, errors.New("calls: nil pool")
	}
	cfg.setDefaults()
	if cfg.FlushInterval < 0 || cfg.MaxMetadataBytes < 0 {
		return nil, errors.New("calls: FlushInterval and MaxMetadataBytes must not be negative")
	}
	return &Service{pool: pool, cfg: cfg, log: cfg.Logger}, nil
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// LiveKitConfigured reports whether the service has a LiveKit adapter.
func (s *Service) LiveKitConfigured() bool { return s.cfg.Rooms != nil }

// RoomName is the LiveKit room of a call: derived from the call ID, so the worker and
// the API never need to look it up, and prefixed so Parley's rooms stand out on a
// LiveKit server shared with other applications.
func RoomName(callID string) string { return "parley-" + callID }

// columns are the calls columns in the order scanCall reads them.
const columns = `id, tenant_id, coalesce(agent_id, ''), agent_name, direction, call_status,
	from_number, to_number, start_timestamp, end_timestamp, duration_ms, disconnection_reason,
	transcript, transcript_object, latency, extracted, cost_usd::float8, recording_url,
	room_name, metadata, created_at, updated_at`

func scanCall(row pgx.Row) (Call, error) {
	var c Call
	var start, end *time.Time
	var turns, latency, extracted, metadata []byte
	err := row.Scan(&c.CallID, &c.TenantID, &c.AgentID, &c.AgentName, &c.Direction, &c.CallStatus,
		&c.FromNumber, &c.ToNumber, &start, &end, &c.DurationMS, &c.DisconnectionReason,
		&c.Transcript, &turns, &latency, &extracted, &c.Cost, &c.RecordingURL,
		&c.RoomName, &metadata, &c.CreatedAt, &c.UpdatedAt)
	if err != nil {
		return Call{}, err
	}
	if start != nil {
		t := start.UTC()
		c.StartTimestamp = &t
	}
	if end != nil {
		t := end.UTC()
		c.EndTimestamp = &t
	}
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	for _, f := range []struct {
		name string
		raw  []byte
		dst  any
	}{{"transcript_object", turns, &c.TranscriptObject}, {"latency", latency, &c.Latency},
		{"extracted", extracted, &c.Extracted}, {"metadata", metadata, &c.Metadata}} {
		if err := json.Unmarshal(f.raw, f.dst); err != nil {
			return Call{}, fmt.Errorf("decode %s of %s: %w", f.name, c.CallID, err)
		}
	}
	if c.TranscriptObject == nil {
		c.TranscriptObject = []Turn{}
	}
	if c.Latency.Turns == nil {
		c.Latency.Turns = []LatencyTurn{}
	}
	if c.Extracted == nil {
		c.Extracted = map[string]any{}
	}
	if c.Metadata == nil {
		c.Metadata = map[string]any{}
	}
	return c, nil
}

// CreateWeb creates a registered web call to agentID. The agent must exist in the
// tenant (ErrAgentNotFound otherwise, another tenant's included) and be active. It
// only writes the row; StartWeb also creates the room.
func (s *Service) CreateWeb(ctx context.Context, tenantID, agentID string, metadata map[string]any) (Call, error) {
	meta, err := s.validateWeb(agentID, metadata)
	if err != nil {
		return Call{}, err
	}
	// Return the metadata as a later read will show it (numbers as float64).
	metadata = map[string]any{}
	json.Unmarshal(meta, &metadata)
	id := ids.New("call")
	now := s.now()
	c := Call{
		CallID: id, TenantID: tenantID, AgentID: agentID,
		Direction: DirectionWeb, CallStatus: StatusRegistered,
		TranscriptObject: []Turn{}, Latency: Latency{Turns: []LatencyTurn{}},
		Extracted: map[string]any{}, RoomName: RoomName(id), Metadata: metadata,
		CreatedAt: now, UpdatedAt: now,
	}
	if c.AgentName, err = insertCall(ctx, s.pool, c, meta, "create web call"); err != nil {
		return Call{}, err
	}
	return c, nil
}

// insertCall writes c, registered, with metaJSON as its metadata, in one statement with
// the check of its agent: the check and the insert cannot be split by a concurrent
// delete or deactivation, and the agent's name, which it returns, is snapshot as it is
// at this moment. The agent must be the tenant's (ErrAgentNotFound otherwise) and active
// (ErrAgentInactive). what names the operation in a database error.
func insertCall(ctx context.Context, q querier, c Call, metaJSON []byte, what string) (string, error) {
	var status, name, inserted *string
	err := q.QueryRow(ctx, `
		WITH a AS (SELECT id, name, status FROM agents WHERE tenant_id = $1 AND id = $3),
		ins AS (
			INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status,
				from_number, to_number, room_name, metadata, created_at, updated_at)
			SELECT $2, $1, a.id, a.name, $4, 'registered', $5, $6, $7, $8, $9, $9
			FROM a WHERE a.status = 'active'
			RETURNING id
		)
		SELECT (SELECT status FROM a), (SELECT name FROM a), (SELECT id FROM ins)`,
		c.TenantID, c.CallID, c.AgentID, c.Direction, c.FromNumber, c.ToNumber, c.RoomName, metaJSON, c.CreatedAt).
		Scan(&status, &name, &inserted)
	if err != nil {
		return "", fmt.Errorf("calls: %s: %w", what, err)
	}
	switch {
	case status == nil:
		return "", ErrAgentNotFound
	case inserted == nil:
		return "", ErrAgentInactive
	}
	return *name, nil
}

// validateWeb checks a web call request and returns its metadata as JSON.
func (s *Service) validateWeb(agentID string, metadata map[string]any) ([]byte, error) {
	f := errs.Fields{}
	if agentID == "" {
		f.Add("agent_id", "is required")
	}
	if metadata == nil {
		metadata = map[string]any{}
	}
	meta, err := json.Marshal(metadata)
	if err != nil {
		f.Add("metadata", "must be a JSON object")
	} else if len(meta) > s.cfg.MaxMetadataBytes {
		f.Add("metadata", "must be at most %d bytes as JSON", s.cfg.MaxMetadataBytes)
	}
	return meta, f.Err()
}

// StartWeb creates a web call and its LiveKit room with the agent dispatched, and mints
// the browser's token. Invalid input is refused first; then, when LiveKit is not
// configured, ErrLiveKitNotConfigured, and nothing is written. When LiveKit
// fails the call is recorded as failed (error_livekit) and ErrLiveKitUnavailable
// returned.
func (s *Service) StartWeb(ctx context.Context, tenantID, agentID string, metadata map[string]any) (WebCall, error) {
	if _, err := s.validateWeb(agentID, metadata); err != nil {
		return WebCall{}, err
	}
	if s.cfg.Rooms == nil {
		return WebCall{}, ErrLiveKitNotConfigured
	}
	c, err := s.CreateWeb(ctx, tenantID, agentID, metadata)
	if err != nil {
		return WebCall{}, err
	}
	meta, _ := json.Marshal(DispatchMetadata{CallID: c.CallID})
	fail := func(err error) (WebCall, error) {
		s.log.ErrorContext(ctx, "calls: web call could not start", "call_id", c.CallID, "err", err)
		if ferr := s.Fail(context.WithoutCancel(ctx), c.CallID, ReasonLiveKit); ferr != nil {
			s.log.ErrorContext(ctx, "calls: could not mark the call failed", "call_id", c.CallID, "err", ferr)
		}
		return WebCall{}, fmt.Errorf("%w (call %s): %w", ErrLiveKitUnavailable, c.CallID, err)
	}
	if err := s.cfg.Rooms.CreateCallRoom(ctx, c.RoomName, string(meta)); err != nil {
		return fail(err)
	}
	tok, err := s.cfg.Rooms.BrowserToken(c.RoomName, BrowserIdentity, "Caller")
	if err != nil {
		return fail(err)
	}
	return WebCall{Call: c, AccessToken: tok, Token: tok, URL: s.cfg.Rooms.URL()}, nil
}

// BrowserIdentity is the caller's participant identity in a web call room. One
// identity per room means a second tab with the same token replaces the first instead
// of joining a call that already has its caller.
const BrowserIdentity = "caller"

// WebCall is a new web call with what the browser needs to join it.
type WebCall struct {
	Call
	// AccessToken (Call2Me's name) and Token (LiveKit's) are the same JWT.
	AccessToken string `json:"access_token"`
	Token       string `json:"token"`
	// URL is the LiveKit websocket URL to connect to.
	URL string `json:"url"`
}

// Get returns one of the tenant's calls.
func (s *Service) Get(ctx context.Context, tenantID, id string) (Call, error) {
	return s.get(ctx, tenantID, id)
}

func (s *Service) get(ctx context.Context, tenantID, id string) (Call, error) {
	c, err := scanCall(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM calls WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Call{}, ErrNotFound
	}
	if err != nil {
		return Call{}, fmt.Errorf("calls: get %s: %w", id, err)
	}
	return c, nil
}

// load reads a call by ID alone, for the worker-side methods.
func (s *Service) load(ctx context.Context, id string) (Call, error) {
	c, err := scanCall(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM calls WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Call{}, ErrNotFound
	}
	if err != nil {
		return Call{}, fmt.Errorf("calls: load %s: %w", id, err)
	}
	return c, nil
}

// ListParams selects a page of calls. Limit is clamped to [1, 100] (20 when 0), Offset
// to ≥ 0; AgentID, when set, keeps only that agent's calls.
type ListParams struct {
	AgentID       string
	Limit, Offset int
}

// List returns a page of the tenant's calls, newest first, and how many there are.
func (s *Service) List(ctx context.Context, tenantID string, p ListParams) ([]Call, int, error) {
	if p.Limit <= 0 {
		p.Limit = 20
	}
	p.Limit = min(p.Limit, 100)
	p.Offset = max(p.Offset, 0)
	// Two spellings of the filter, so each query has a plan on calls_tenant or
	// calls_agent; count(*) OVER () gives the total with the page in one query.
	filter, args := `tenant_id = $1`, []any{tenantID, p.Limit, p.Offset}
	if p.AgentID != "" {
		filter, args = `tenant_id = $1 AND agent_id = $4`, append(args, p.AgentID)
	}
	rows, err := s.pool.Query(ctx, `SELECT count(*) OVER (), `+columns+` FROM calls WHERE `+filter+`
		ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("calls: list: %w", err)
	}
	defer rows.Close()
	var out []Call
	total := 0
	for rows.Next() {
		c, err := scanCall(countingRow{rows, &total})
		if err != nil {
			return nil, 0, fmt.Errorf("calls: list: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("calls: list: %w", err)
	}
	if len(out) == 0 && p.Offset > 0 {
		// A page past the end has no rows to carry the total.
		args := []any{tenantID}
		q := `SELECT count(*) FROM calls WHERE tenant_id = $1`
		if p.AgentID != "" {
			q, args = q+` AND agent_id = $2`, append(args, p.AgentID)
		}
		if err := s.pool.QueryRow(ctx, q, args...).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("calls: list: count: %w", err)
		}
	}
	if out == nil {
		out = []Call{}
	}
	return out, total, nil
}

// countingRow scans the leading count(*) OVER () column into total and the rest into
// the call.
type countingRow struct {
	rows  pgx.Rows
	total *int
}

func (r countingRow) Scan(dest ...any) error {
	return r.rows.Scan(append([]any{r.total}, dest...)...)
}

// Begin moves a call from registered (or ringing) to in_progress, stamping its start,
// and returns it (with its tenant and agent). A call that has already begun or ended
// gives ErrNotStartable: the worker that gets it must not run a conversation.
func (s *Service) Begin(ctx context.Context, callID string, at time.Time) (Call, error) {
	if at.IsZero() {
		at = s.now()
	}
	c, err := scanCall(s.pool.QueryRow(ctx, `UPDATE calls SET call_status = 'in_progress', start_timestamp = $2, updated_at = $3
		WHERE id = $1 AND call_status = ANY ($4) RETURNING `+columns,
		callID, at.UTC(), s.now(), notStarted))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, lerr := s.load(ctx, callID); lerr != nil {
			return Call{}, lerr
		}
		return Call{}, ErrNotStartable
	}
	if err != nil {
		return Call{}, fmt.Errorf("calls: begin %s: %w", callID, err)
	}
	return c, nil
}

// SaveProgress stores the live transcript and latency of an in-progress call, so GET
// shows the conversation as it happens. It never touches a call that has ended: a late
// flush cannot overwrite the final transcript (ErrNotInProgress).
func (s *Service) SaveProgress(ctx context.Context, callID string, turns []Turn, latency Latency) error {
	tj, lj, err := encodeTranscript(turns, latency)
	if err != nil {
		return fmt.Errorf("calls: save progress %s: %w", callID, err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE calls SET transcript = $2, transcript_object = $3, latency = $4, updated_at = $5
		WHERE id = $1 AND call_status = 'in_progress'`, callID, transcriptText(turns), tj, lj, s.now())
	if err != nil {
		return fmt.Errorf("calls: save progress %s: %w", callID, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.load(ctx, callID); err != nil {
			return err
		}
		return ErrNotInProgress
	}
	return nil
}

func encodeTranscript(turns []Turn, latency Latency) ([]byte, []byte, error) {
	if turns == nil {
		turns = []Turn{}
	}
	if latency.Turns == nil {
		latency.Turns = []LatencyTurn{}
	}
	tj, err := json.Marshal(turns)
	if err != nil {
		return nil, nil, err
	}
	lj, err := json.Marshal(latency)
	if err != nil {
		return nil, nil, err
	}
	return tj, lj, nil
}

// Finish ends an in-progress call as completed or failed with its final transcript and
// latency. A call that has already ended is left as it is and Finish returns nil (the
// first outcome stands). A call that never began may only be finished as failed (as
// Fail does; the transcript is stored too); completing it is ErrNotInProgress. A call
// it ends with a transcript gets its post-call analysis job (AnalysisArgs) in the same
// transaction.
func (s *Service) Finish(ctx context.Context, callID string, f Finish) error {
	if f.Status != StatusCompleted && f.Status != StatusFailed && f.Status != StatusVoicemail {
		return fmt.Errorf("calls: finish %s: status %q is not completed, voicemail or failed", callID, f.Status)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("calls: finish %s: %w", callID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	ended, err := s.finishTx(ctx, tx, callID, f)
	if err != nil {
		return err
	}
	if ended {
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("calls: finish %s: %w", callID, err)
		}
		return nil
	}
	tx.Rollback(ctx)
	c, err := s.load(ctx, callID)
	if err != nil {
		return err
	}
	if c.Live() {
		return ErrNotInProgress // completing a call that never began
	}
	return nil // already ended: the first outcome stands
}

// finishTx is Finish's write in tx: the final UPDATE and, when it ended the call with
// a transcript, the call's analysis job, so the two commit or roll back together. It
// reports whether it ended the call.
func (s *Service) finishTx(ctx context.Context, tx pgx.Tx, callID string, f Finish) (bool, error) {
	if f.EndedAt.IsZero() {
		f.EndedAt = s.now()
	}
	tj, lj, err := encodeTranscript(f.TranscriptObject, f.Latency)
	if err != nil {
		return false, fmt.Errorf("calls: finish %s: %w", callID, err)
	}
	from := []string{StatusInProgress}
	if f.Status == StatusFailed {
		from = live
	}
	// duration_ms: the caller's figure, else the span since start_timestamp (0 for a
	// call that never started).
	transcript := transcriptText(f.TranscriptObject)
	tag, err := tx.Exec(ctx, `UPDATE calls SET call_status = $2, disconnection_reason = $3,
			end_timestamp = $4,
			duration_ms = CASE WHEN $5::bigint > 0 THEN $5::bigint
				WHEN start_timestamp IS NULL THEN 0
				ELSE greatest(0, round(extract(epoch FROM ($4 - start_timestamp)) * 1000))::bigint END,
			transcript = $6, transcript_object = $7, latency = $8, updated_at = $9
		WHERE id = $1 AND call_status = ANY ($10)`,
		callID, f.Status, f.Reason, f.EndedAt.UTC(), f.Duration.Milliseconds(),
		transcript, tj, lj, s.now(), from)
	if err != nil {
		return false, fmt.Errorf("calls: finish %s: %w", callID, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, s.enqueueAnalysis(ctx, tx, callID, transcript)
}

// Fail ends a call that never began (registered or ringing) as failed with reason: the
// agent never joined, the room could not be created, the caller never came. A call
// that has already ended is left as it is (nil); one in progress gives ErrInProgress
// (its worker finishes it with Finish).
func (s *Service) Fail(ctx context.Context, callID, reason string) error {
	now := s.now()
	tag, err := s.pool.Exec(ctx, `UPDATE calls SET call_status = 'failed', disconnection_reason = $2,
		end_timestamp = $3, duration_ms = 0, updated_at = $3
		WHERE id = $1 AND call_status = ANY ($4)`, callID, reason, now, notStarted)
	if err != nil {
		return fmt.Errorf("calls: fail %s: %w", callID, err)
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	c, err := s.load(ctx, callID)
	if err != nil {
		return err
	}
	if c.CallStatus == StatusInProgress {
		return ErrInProgress
	}
	return nil
}

// Errors of ending Twilio calls.
var (
	ErrTwilioNotConfigured = errs.New(errs.KindUnavailable, "twilio_not_configured",
		"This call is a Twilio call and Twilio is not configured on this server (PARLEY_TWILIO_ACCOUNT_SID, PARLEY_TWILIO_AUTH_TOKEN)")
	ErrTwilioUnavailable = errs.New(errs.KindUnavailable, "twilio_unavailable", "Twilio did not accept the hang-up; try again shortly")
)

// ErrInProgress: Fail on a call whose conversation has begun (use Finish).
var ErrInProgress = errs.Conflict("call_in_progress", "Call is in progress")

// End ends one of the tenant's live calls (POST /v1/calls/{id}/end) by deleting its
// LiveKit room, which disconnects the agent and the caller. A call whose conversation
// had begun is then finished by its worker (reason api_ended) within moments; one
// that had not is marked failed here (api_ended), since no worker may ever come for it.
// The call is returned as it stands after that. Ending a call that has already ended
// is ErrCallEnded.
func (s *Service) End(ctx context.Context, tenantID, id string) (Call, error) {
	c, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Call{}, err
	}
	if !c.Live() {
		return Call{}, ErrCallEnded
	}
	if sid, _ := c.Metadata[MetaTwilioCallSID].(string); sid != "" && c.Direction != DirectionWeb {
		// A Twilio call: Twilio hangs it up (or cancels it while it rings), the media
		// stream stops and the call's process finishes it (api_ended). A web call's
		// metadata is the client's, so a twilio_call_sid there means nothing.
		if s.twilio == nil {
			return Call{}, ErrTwilioNotConfigured
		}
		if err := s.twilio.Hangup(ctx, c); err != nil {
			s.log.ErrorContext(ctx, "calls: end: twilio hang-up", "call_id", id, "err", err)
			return Call{}, fmt.Errorf("%w: %w", ErrTwilioUnavailable, err)
		}
	} else if s.cfg.Rooms == nil {
		return Call{}, ErrLiveKitNotConfigured
	} else if c.RoomName != "" {
		if err := s.cfg.Rooms.DeleteRoom(ctx, c.RoomName); err != nil {
			s.log.ErrorContext(ctx, "calls: end: delete room", "call_id", id, "room", c.RoomName, "err", err)
			return Call{}, fmt.Errorf("%w: %w", ErrLiveKitUnavailable, err)
		}
	}
	// Not begun: fail it (if a worker Begins first, this is a no-op and that worker,
	// whose room is gone, finishes the call itself).
	if c.CallStatus != StatusInProgress {
		if err := s.Fail(ctx, id, ReasonAPIEnded); err != nil && !errors.Is(err, ErrInProgress) {
			return Call{}, err
		}
	}
	return s.get(ctx, tenantID, id)
}

// Health reports on LiveKit (configured=false when there is no adapter).
func (s *Service) Health(ctx context.Context) LiveKitHealth {
	if s.cfg.Rooms == nil {
		return LiveKitHealth{Status: "unconfigured"}
	}
	h, _ := s.cfg.Rooms.Health(ctx)
	return h
}

// FailStale fails calls that are still registered (or ringing) olderThan after they
// were created: their room was never joined by a worker (no worker running, or it
// crashed before Begin), and without this they would look live forever. It returns how
// many it failed. Run it periodically from a maintenance job; the calls_live partial
// index keeps it cheap however many finished calls there are.
func (s *Service) FailStale(ctx context.Context, olderThan time.Duration) (int, error) {
	now := s.now()
	tag, err := s.pool.Exec(ctx, `UPDATE calls SET call_status = 'failed', disconnection_reason = $1,
		end_timestamp = $2, duration_ms = 0, updated_at = $2
		WHERE call_status IN ('registered', 'ringing') AND created_at < $3`,
		ReasonRegisteredStale, now, now.Add(-olderThan))
	if err != nil {
		return 0, fmt.Errorf("calls: fail stale: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// FailOrphans fails in-progress calls that nobody is left to finish, as
// error_worker_lost, and returns how many it failed. A call's process (the LiveKit
// worker, or for a Twilio call the API process holding its media websocket) may die
// mid-call (killed, crashed, lost its machine) without finishing it, and the call
// would look live for ever. Only calls with nothing saved for quiet are considered:
// a live call saves its transcript every second while anyone speaks, and a call's
// process finishes it within moments of the call ending. Of those:
//
//   - a call in a LiveKit room is an orphan if the room no longer exists (asked of
//     LiveKit; skipped when LiveKit is not configured);
//   - a Twilio call (a phone call with a twilio_call_sid; an outbound one has a
//     room_name, but that room is never created, so the room test does not apply)
//     is an orphan if Twilio's REST API says the call is over (completed, busy,
//     failed, no-answer, canceled); one Twilio says is still queued, ringing or in
//     progress is left to its process. Skipped when Twilio is not configured.
//     Twilio being unreachable ends this part of the sweep; an error about one call
//     (unknown to Twilio, say) only skips that call.
//
// Each sweep looks at the calls quiet longest, a bounded number of each kind, so a
// backlog is worked off over several runs. Errors of one kind do not stop the other.
func (s *Service) FailOrphans(ctx context.Context, quiet time.Duration) (int, error) {
	rooms, roomErr := s.failRoomOrphans(ctx, quiet)
	twilio, twilioErr := s.failTwilioOrphans(ctx, quiet)
	return rooms + twilio, errors.Join(roomErr, twilioErr)
}

// isTwilioCall is the SQL test for a call carried by Twilio, as End tells one (a
// twilio_call_sid in its metadata). Web calls are never Twilio's: their metadata is
// the client's own.
const isTwilioCall = `(direction <> 'web' AND coalesce(metadata->>'twilio_call_sid', '') <> '')`

// failRoomOrphans is FailOrphans for calls in LiveKit rooms.
func (s *Service) failRoomOrphans(ctx context.Context, quiet time.Duration) (int, error) {
	if s.cfg.Rooms == nil {
		return 0, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT id, room_name FROM calls
		WHERE call_status = 'in_progress' AND updated_at < $1 AND room_name <> '' AND NOT `+isTwilioCall+`
		ORDER BY updated_at LIMIT 500`, s.now().Add(-quiet))
	if err != nil {
		return 0, fmt.Errorf("calls: fail orphans: %w", err)
	}
	room := map[string]string{}
	var names []string
	for rows.Next() {
		var id, name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return 0, fmt.Errorf("calls: fail orphans: %w", err)
		}
		room[id] = name
		names = append(names, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("calls: fail orphans: %w", err)
	}
	if len(names) == 0 {
		return 0, nil
	}
	open, err := s.cfg.Rooms.ExistingRooms(ctx, names)
	if err != nil {
		return 0, err
	}
	n := 0
	for id, name := range room {
		if open[name] {
			continue
		}
		// Only a call still quiet and in progress: a worker that finished it since the
		// query wins. The live transcript it saved is analysed like a finished one's.
		ended, err := s.failOrphan(ctx, id, quiet)
		if err != nil {
			return n, fmt.Errorf("calls: fail orphan %s: %w", id, err)
		}
		if ended {
			n++
		}
	}
	return n, nil
}

// twilioOrphanBatch bounds the Twilio calls one sweep looks up: one REST request
// each, one after another, so 200 take well under a minute at Twilio's usual
// latency, and far more quiet in-progress Twilio calls than that means something
// else is wrong.
const twilioOrphanBatch = 200

// failTwilioOrphans is FailOrphans for Twilio calls: it asks Twilio about each.
func (s *Service) failTwilioOrphans(ctx context.Context, quiet time.Duration) (int, error) {
	if s.twilio == nil {
		return 0, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT id, metadata->>'twilio_call_sid', coalesce(metadata->>'twilio_account_sid', '')
		FROM calls WHERE call_status = 'in_progress' AND updated_at < $1 AND `+isTwilioCall+`
		ORDER BY updated_at LIMIT $2`, s.now().Add(-quiet), twilioOrphanBatch)
	if err != nil {
		return 0, fmt.Errorf("calls: fail twilio orphans: %w", err)
	}
	type twilioCall struct{ id, sid, account string }
	var found []twilioCall
	for rows.Next() {
		var c twilioCall
		if err := rows.Scan(&c.id, &c.sid, &c.account); err != nil {
			rows.Close()
			return 0, fmt.Errorf("calls: fail twilio orphans: %w", err)
		}
		found = append(found, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("calls: fail twilio orphans: %w", err)
	}
	n := 0
	var failures []error
	for _, c := range found {
		log := s.log.With("call_id", c.id, "call_sid", c.sid)
		// The SIDs go into the REST path: anything but Twilio's own shape is not
		// asked about (an outbound call's metadata is partly the client's).
		if !twilioSID(c.sid, "CA") || (c.account != "" && !twilioSID(c.account, "AC")) {
			log.WarnContext(ctx, "calls: fail orphans: malformed twilio SID; not asking Twilio", "account_sid", c.account)
			continue
		}
		status, err := s.twilio.callStatus(ctx, c.sid, c.account)
		if err != nil {
			var rest *twclient.TwilioRestError
			if !errors.As(err, &rest) {
				// Twilio unreachable (or ctx done): the rest would fail alike.
				failures = append(failures, err)
				break
			}
			// Twilio answered, about this call only (not found, say): the next sweep
			// asks again.
			log.WarnContext(ctx, "calls: fail orphans: twilio call status", "err", err)
			failures = append(failures, err)
			continue
		}
		switch status {
		case "queued", "initiated", "ringing", "in-progress":
			// Live: its process is still there (or the stream is silent); leave it.
			continue
		case "completed", "busy", "failed", "no-answer", "canceled":
		default:
			log.WarnContext(ctx, "calls: fail orphans: unknown twilio call status", "twilio_status", status)
			continue
		}
		ended, err := s.failOrphan(ctx, c.id, quiet)
		if err != nil {
			return n, errors.Join(append(failures, fmt.Errorf("calls: fail orphan %s: %w", c.id, err))...)
		}
		if ended {
			log.InfoContext(ctx, "calls: failed a twilio call whose process was lost", "twilio_status", status)
			n++
		}
	}
	return n, errors.Join(failures...)
}

// twilioSID reports whether sid is a Twilio SID with prefix: two letters and 32 hex
// digits.
func twilioSID(sid, prefix string) bool {
	rest, ok := strings.CutPrefix(sid, prefix)
	if !ok || len(rest) != 32 {
		return false
	}
	for _, r := range rest {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}

// failOrphan fails one orphaned call and, if it had a transcript, enqueues its
// analysis in the same transaction. It reports whether it failed the call.
func (s *Service) failOrphan(ctx context.Context, id string, quiet time.Duration) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var transcript string
	err = tx.QueryRow(ctx, `UPDATE calls SET call_status = 'failed', disconnection_reason = $2,
		end_timestamp = $3, updated_at = $3,
		duration_ms = greatest(0, round(extract(epoch FROM ($3 - start_timestamp)) * 1000))::bigint
		WHERE id = $1 AND call_status = 'in_progress' AND updated_at < $4
		RETURNING transcript`,
		id, ReasonWorkerLost, s.now(), s.now().Add(-quiet)).Scan(&transcript)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := s.enqueueAnalysis(ctx, tx, id, transcript); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}
