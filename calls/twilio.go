package calls

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/twilio"
)

// Phone calls through Twilio. Twilio carries the call; Parley's voice engine runs it
// over a Media Stream, a websocket Twilio opens to Parley for <Connect><Stream>:
//
//   - Inbound: Twilio posts its voice webhook (POST /inbound_call) for a call to one
//     of the account's numbers. Parley finds the agent bound to the number called,
//     creates a registered inbound call and answers TwiML that connects the call to
//     the media websocket.
//   - Outbound: the dial job calls Dial, which asks Twilio's REST API to place the
//     call with the same TwiML inline, and for status callbacks on its progress.
//   - Either way, when the callee (or caller) is on the line Twilio opens the media
//     websocket; ServeMedia begins the call, runs the voice engine on the stream and
//     finishes the record when the stream ends.
//   - When Parley closes the stream (the agent hung up or transferred the call),
//     Twilio asks <Connect>'s action URL what next (ConnectEnded): <Dial> to the
//     transfer destination, or <Hangup/>.
//
// Twilio cannot send a bearer token. Its webhooks are signed (X-Twilio-Signature,
// checked against the URL Twilio called); the media websocket URL carries a
// short-lived HMAC token naming the call, minted into the TwiML. The token is the
// capability; the call must also still be waiting to begin (Begin succeeds once), and
// the stream must be for the Twilio call the record names, so a leaked URL is worth
// nothing once its call has started.
//
// These calls run in the API process (`parley serve`), not in the LiveKit worker: the
// websocket arrives at the HTTP server. Stop ends them on shutdown.

// TwilioConfig configures the Twilio bridge.
type TwilioConfig struct {
	// AccountSID (PARLEY_TWILIO_ACCOUNT_SID) is the account that places outbound calls.
	AccountSID string
	// AuthToken (PARLEY_TWILIO_AUTH_TOKEN) authenticates REST requests and is the key
	// Twilio signs its webhooks with. Required.
	AuthToken string
	// PublicURL (PARLEY_PUBLIC_URL) is how Twilio reaches this server, e.g.
	// https://parley.example.com (a path prefix is kept). Twilio signs the URL it
	// called, so behind a proxy or tunnel this must be the public URL Twilio uses,
	// not the address the server listens on: signature checks rebuild the URL from
	// it and the request's path and query. The media websocket URL is derived from
	// it (https → wss); Twilio requires wss in production.
	PublicURL string
	// APIBaseURL is Twilio's REST API (default https://api.twilio.com); tests point
	// it at a scripted server.
	APIBaseURL string
	// HTTPClient carries REST requests (default: 15 s timeout, no redirects).
	HTTPClient *http.Client
	// TokenSecret keys media tokens. Default: derived from AuthToken, so no extra
	// secret needs configuring; rotating the auth token invalidates only the tokens
	// of calls not yet connected.
	TokenSecret []byte
	// TokenTTL is how long an inbound call's media token is valid (default 2 min):
	// Twilio opens the stream within a second or two of reading the TwiML, so this
	// only allows for a slow network. An outbound call's token adds RingTimeout,
	// since Twilio runs the TwiML only once the callee answers.
	TokenTTL time.Duration
	// RingTimeout is how long an outbound call rings before Twilio gives up with
	// no-answer (Twilio's Timeout; default 30 s, about six rings, as for SIP; Twilio
	// allows up to 600 s).
	RingTimeout time.Duration
	// StartTimeout bounds the wait for the stream's "start" message (see
	// twilio.Config; default 10 s).
	StartTimeout time.Duration
	// Recordings records the calls as the worker's Runner does (nil: no recordings).
	Recordings *Recordings
	Logger     *slog.Logger
	// Now returns the current time (default time.Now); tests pin it for token expiry.
	Now func() time.Time
}

// TwilioRoutes is what the bridge needs of package telephony (*telephony.Service, or
// any Lines): where a call to one of Parley's numbers goes.
type TwilioRoutes interface {
	InboundRoute(ctx context.Context, number string) (telephony.Route, error)
}

// Twilio is the Twilio bridge: the inbound webhook's answer, outbound dialling
// (PhoneDialer), status callbacks and the media streams. Safe for concurrent use.
type Twilio struct {
	calls  *Service
	engine *Engine
	routes TwilioRoutes
	cfg    TwilioConfig
	key    []byte
	base   *url.URL // REST API
	log    *slog.Logger

	ctx    context.Context // ends on Stop: live streams end with it
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	live   sync.WaitGroup
	// hangups are the calls Hangup asked Twilio to end: their stream's "stop" is the
	// API's doing, not the caller's.
	hangups map[string]bool
	// transfers are the live and recently ended streams' transfer sinks, for
	// ConnectEnded: Twilio asks what next once the stream has closed.
	transfers map[string]*transferSink
}

// Twilio places outbound calls on Twilio lines for the dial job.
var _ PhoneDialer = (*Twilio)(nil)

// Metadata keys the bridge stores on a call.
const (
	// MetaTwilioCallSID is the Twilio call SID (CA…) of a call carried by Twilio.
	MetaTwilioCallSID = "twilio_call_sid"
	// MetaTwilioAccountSID is the account the call belongs to.
	MetaTwilioAccountSID = "twilio_account_sid"
)

// Disconnection reasons only Twilio calls have (the dial_ ones are shared with SIP).
const (
	// twilioReasonLost: the media websocket closed without Twilio's "stop".
	twilioReasonLost = "error_twilio_stream_lost"
	// twilioReasonNoStream: Twilio says the call was answered and has ended, but
	// its media stream never reached Parley (wrong PARLEY_PUBLIC_URL, a proxy that
	// does not pass websockets, an expired token).
	twilioReasonNoStream = "error_twilio_no_stream"
)

// Errors of the Twilio bridge.
var (
	// ErrTwilioToken: a media URL whose token is malformed, forged or expired, or
	// whose call is not waiting for its stream.
	ErrTwilioToken = errs.Forbidden("twilio_media_token", "Invalid or expired media stream token")
	// ErrTwilioShuttingDown: the server is stopping and takes no new streams.
	ErrTwilioShuttingDown = errs.New(errs.KindUnavailable, "twilio_shutting_down", "The server is shutting down")
)

// NewTwilio returns the bridge. engine runs the calls; routes finds inbound calls'
// agents (nil: every inbound call is told the number is not in service).
func NewTwilio(svc *Service, engine *Engine, routes TwilioRoutes, cfg TwilioConfig) (*Twilio, error) {
	if svc == nil || engine == nil {
		return nil, errors.New("calls: twilio: nil calls service or engine")
	}
	if cfg.AuthToken == "" {
		return nil, errors.New("calls: twilio: AuthToken is required (PARLEY_TWILIO_AUTH_TOKEN)")
	}
	pub, err := url.Parse(cfg.PublicURL)
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return nil, fmt.Errorf("calls: twilio: PublicURL %q must be an absolute http(s) URL (PARLEY_PUBLIC_URL)", cfg.PublicURL)
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if cfg.APIBaseURL == "" {
		cfg.APIBaseURL = "https://api.twilio.com"
	}
	base, err := url.Parse(cfg.APIBaseURL)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("calls: twilio: bad APIBaseURL %q", cfg.APIBaseURL)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 2 * time.Minute
	}
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 30 * time.Second
	}
	if cfg.TokenTTL < 0 || cfg.RingTimeout < time.Second || cfg.RingTimeout > 600*time.Second {
		return nil, errors.New("calls: twilio: TokenTTL must be positive and RingTimeout from 1 s to 600 s")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	key := cfg.TokenSecret
	if len(key) == 0 {
		// Domain-separated from the auth token's own use (HMAC-SHA1 signatures).
		m := hmac.New(sha256.New, []byte(cfg.AuthToken))
		m.Write([]byte("parley/twilio/media-token/v1"))
		key = m.Sum(nil)
	}
	t := &Twilio{calls: svc, engine: engine, routes: routes, cfg: cfg, key: key, base: base,
		log: cfg.Logger.With("component", "twilio"), hangups: map[string]bool{},
		transfers: map[string]*transferSink{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	// POST /v1/calls/{id}/end hangs Twilio calls up through Twilio, and FailOrphans
	// asks it whether quiet calls are still up.
	svc.twilio = t
	return t, nil
}

// --- webhooks ---

// WebhookURL is the URL Twilio called for a request with this path and query
// (r.URL.RequestURI()): what its signature covers.
func (t *Twilio) WebhookURL(requestURI string) string { return t.cfg.PublicURL + requestURI }

// ValidSignature reports whether signature (X-Twilio-Signature) is Twilio's for a
// POST to requestURI with form parameters form.
func (t *Twilio) ValidSignature(requestURI string, form url.Values, signature string) bool {
	return twilio.ValidateSignature(t.cfg.AuthToken, t.WebhookURL(requestURI), form, signature)
}

// TwilioInbound is what Twilio's voice webhook says about a new inbound call.
type TwilioInbound struct {
	CallSID, AccountSID string
	// From is the caller, To the Parley number called (E.164).
	From, To string
}

// Inbound answers Twilio's voice webhook for a new call: TwiML connecting the call
// to the agent bound to the number called, through a new registered inbound call; or,
// for a number with no agent (unknown, unbound, or its agent inactive), TwiML that
// says the number is not in service and hangs up, and no call is created. A webhook
// Twilio repeats for the same call answers the same call.
func (t *Twilio) Inbound(ctx context.Context, in TwilioInbound) ([]byte, error) {
	log := t.log.With("call_sid", in.CallSID, "to", in.To)
	if in.CallSID == "" || in.To == "" {
		return nil, errs.Invalid(map[string]string{"CallSid": "CallSid and To are required"})
	}
	if t.routes == nil {
		log.Warn("calls: twilio: inbound call, but no phone numbers are configured")
		return twimlUnavailable(), nil
	}
	rt, err := t.routes.InboundRoute(ctx, in.To)
	if errors.Is(err, telephony.ErrNumberNotFound) || errors.Is(err, telephony.ErrUnbound) {
		log.Info("calls: twilio: call to a number with no agent", "err", err)
		return twimlUnavailable(), nil
	}
	if err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(map[string]any{MetaTwilioCallSID: in.CallSID, MetaTwilioAccountSID: in.AccountSID})
	id := ids.New("call")
	now := t.calls.now()
	// One statement: the agent check, the repeat check and the insert. The repeat
	// check reads only the tenant's live calls (the calls_live partial index).
	var status, inserted, existing *string
	err = t.calls.pool.QueryRow(ctx, `
		WITH a AS (SELECT id, name, status FROM agents WHERE tenant_id = $1 AND id = $3),
		e AS (SELECT id FROM calls WHERE tenant_id = $1 AND direction = 'inbound'
			AND call_status IN ('registered', 'ringing', 'in_progress') AND metadata->>'twilio_call_sid' = $8 LIMIT 1),
		ins AS (
			INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status, from_number, to_number, metadata, created_at, updated_at)
			SELECT $2, $1, a.id, a.name, 'inbound', 'registered', $4, $5, $6, $7, $7 FROM a
			WHERE a.status = 'active' AND NOT EXISTS (SELECT 1 FROM e)
			RETURNING id
		)
		SELECT (SELECT status FROM a), (SELECT id FROM ins), (SELECT id FROM e)`,
		rt.TenantID, id, rt.AgentID, in.From, in.To, meta, now, in.CallSID).Scan(&status, &inserted, &existing)
	if err != nil {
		return nil, fmt.Errorf("calls: twilio: create inbound call: %w", err)
	}
	switch {
	case existing != nil:
		id = *existing
		log.Info("calls: twilio: repeated webhook", "call_id", id)
	case status == nil || inserted == nil:
		log.Info("calls: twilio: the number's agent is missing or inactive", "agent_id", rt.AgentID)
		return twimlUnavailable(), nil
	default:
		log.Info("calls: twilio: inbound call", "call_id", id, "agent_id", rt.AgentID)
	}
	return t.streamTwiML(id, rt.AgentID, t.cfg.TokenTTL), nil
}

// TwilioStatus is a status callback's news of an outbound call.
type TwilioStatus struct {
	CallSID    string
	CallStatus string // queued, initiated, ringing, in-progress, busy, no-answer, failed, canceled, completed
	// CallDuration is the seconds the call was connected (completed calls).
	CallDuration int
}

// Status applies a status callback (StatusCallback of Dial, signed by Twilio) to
// callID. Dialling keeps the call ringing; busy, no-answer, failed and canceled end
// a call that never began (the first outcome stands); in-progress is left to the
// media stream, which begins the conversation; completed ends a call whose stream
// never came (no_answer if it was never answered, failed if it was). A call whose
// conversation began is finished by its stream, not here. A callback naming another
// Twilio call than the record's is ErrNotFound.
func (t *Twilio) Status(ctx context.Context, callID string, st TwilioStatus) error {
	c, err := t.calls.load(ctx, callID)
	if err != nil {
		return err
	}
	if sid, _ := c.Metadata[MetaTwilioCallSID].(string); sid != "" && st.CallSID != sid {
		return ErrNotFound
	}
	log := t.log.With("call_id", callID, "call_sid", st.CallSID, "twilio_status", st.CallStatus)
	log.Debug("calls: twilio: status callback")
	switch st.CallStatus {
	case "queued", "initiated", "ringing":
		// The dial job marked it ringing before dialling; this only catches up a
		// call that somehow is still registered.
		_, err := t.calls.markRinging(ctx, callID, "")
		return err
	case "in-progress", "answered":
		return nil
	case "busy":
		return t.calls.endUnconnected(ctx, callID, StatusBusy, ReasonDialBusy)
	case "no-answer":
		return t.calls.endUnconnected(ctx, callID, StatusNoAnswer, ReasonDialNoAnswer)
	case "failed":
		return t.calls.endUnconnected(ctx, callID, StatusFailed, ReasonDialFailed)
	case "canceled":
		return t.calls.endUnconnected(ctx, callID, StatusFailed, ReasonAPIEnded)
	case "completed":
		if st.CallDuration > 0 {
			if c.CallStatus == StatusRegistered || c.CallStatus == StatusRinging {
				log.Warn("calls: twilio: the call was answered but its media stream never connected; check PARLEY_PUBLIC_URL and that the proxy passes websockets")
			}
			return t.calls.endUnconnected(ctx, callID, StatusFailed, twilioReasonNoStream)
		}
		return t.calls.endUnconnected(ctx, callID, StatusNoAnswer, ReasonDialNoAnswer)
	}
	log.Info("calls: twilio: unknown call status")
	return nil
}

// --- outbound ---

// Dial places outbound call c from line through Twilio's REST API (Calls.json): the
// TwiML connects the answered call to the media websocket, and status callbacks
// report its progress to Status. The Twilio call SID is stored in c's metadata. It
// implements PhoneDialer for lines with Provider "twilio".
//
// A call that already has a Twilio call SID is not dialled again. Any error means
// Twilio did not take the call (the dial job then fails it, dial_failed); Twilio's
// own errors (a bad number, an unverified caller ID) carry its code and message.
func (t *Twilio) Dial(ctx context.Context, c Call, line telephony.Line) error {
	if sid, _ := c.Metadata[MetaTwilioCallSID].(string); sid != "" {
		return nil
	}
	if t.cfg.AccountSID == "" {
		return errors.New("calls: twilio: AccountSID is required to place calls (PARLEY_TWILIO_ACCOUNT_SID)")
	}
	log := t.log.With("call_id", c.CallID, "to", c.ToNumber, "from", line.Number)
	twiml := string(t.streamTwiML(c.CallID, c.AgentID, t.cfg.RingTimeout+t.cfg.TokenTTL))
	p := &twapi.CreateCallParams{}
	p.SetTo(c.ToNumber).SetFrom(line.Number).SetTwiml(twiml).
		SetStatusCallback(t.cfg.PublicURL + "/v1/twilio/status/" + url.PathEscape(c.CallID)).
		SetStatusCallbackMethod("POST").
		SetStatusCallbackEvent([]string{"initiated", "ringing", "answered", "completed"}).
		SetTimeout(int(t.cfg.RingTimeout / time.Second))
	res, err := t.api(ctx).CreateCall(p)
	if err != nil {
		var rest *twclient.TwilioRestError
		if errors.As(err, &rest) {
			log.Warn("calls: twilio: call refused", "status", rest.Status, "code", rest.Code, "message", rest.Message)
		}
		return fmt.Errorf("calls: twilio: create call %s: %w", c.CallID, err)
	}
	if res.Sid == nil || *res.Sid == "" {
		return fmt.Errorf("calls: twilio: create call %s: the answer has no sid", c.CallID)
	}
	meta, _ := json.Marshal(map[string]string{MetaTwilioCallSID: *res.Sid, MetaTwilioAccountSID: t.cfg.AccountSID})
	if _, err := t.calls.pool.Exec(context.WithoutCancel(ctx), `UPDATE calls SET metadata = metadata || $2, updated_at = $3 WHERE id = $1`,
		c.CallID, meta, t.calls.now()); err != nil {
		return fmt.Errorf("calls: twilio: store call sid of %s: %w", c.CallID, err)
	}
	status := ""
	if res.Status != nil {
		status = *res.Status
	}
	log.Info("calls: twilio: dialling", "call_sid", *res.Sid, "twilio_status", status)
	return nil
}

// Hangup ends call c on Twilio's side, for POST /v1/calls/{id}/end: the REST API's
// Status=completed, or canceled when it has not been answered. Twilio then stops the
// media stream, and the stream finishes the call as api_ended (when it runs in this
// process; on another, Twilio's "stop" reads as the caller's hang-up). A call with no
// Twilio SID is not Twilio's; Hangup does nothing.
func (t *Twilio) Hangup(ctx context.Context, c Call) error {
	sid, _ := c.Metadata[MetaTwilioCallSID].(string)
	if sid == "" {
		return nil
	}
	status := "completed"
	if c.CallStatus == StatusRegistered || c.CallStatus == StatusRinging {
		status = "canceled"
	}
	if status == "completed" {
		t.mu.Lock()
		t.hangups[c.CallID] = true
		t.mu.Unlock()
	}
	p := &twapi.UpdateCallParams{}
	p.SetStatus(status)
	if acct, _ := c.Metadata[MetaTwilioAccountSID].(string); acct != "" {
		p.SetPathAccountSid(acct)
	}
	if _, err := t.api(ctx).UpdateCall(sid, p); err != nil {
		t.mu.Lock()
		delete(t.hangups, c.CallID)
		t.mu.Unlock()
		return fmt.Errorf("calls: twilio: hang up %s: %w", c.CallID, err)
	}
	return nil
}

// callStatus fetches call sid's status from Twilio's REST API (Calls/{Sid}.json),
// in account ("": the configured account's), for FailOrphans.
func (t *Twilio) callStatus(ctx context.Context, sid, account string) (string, error) {
	p := &twapi.FetchCallParams{}
	if account != "" {
		p.SetPathAccountSid(account)
	}
	res, err := t.api(ctx).FetchCall(sid, p)
	if err != nil {
		return "", fmt.Errorf("calls: twilio: fetch call %s: %w", sid, err)
	}
	if res.Status == nil || *res.Status == "" {
		return "", fmt.Errorf("calls: twilio: fetch call %s: the answer has no status", sid)
	}
	return *res.Status, nil
}

// api is a REST client whose requests carry ctx (twilio-go's own do not take one)
// and go to APIBaseURL. The HTTP client's Timeout is applied by the transport
// instead (see twilioTransport).
func (t *Twilio) api(ctx context.Context) *twapi.ApiService {
	hc := *t.cfg.HTTPClient
	hc.Timeout = 0
	hc.Transport = twilioTransport{ctx: ctx, timeout: t.cfg.HTTPClient.Timeout, base: t.base, next: t.cfg.HTTPClient.Transport}
	c := &twclient.Client{Credentials: twclient.NewCredentials(t.cfg.AccountSID, t.cfg.AuthToken), HTTPClient: &hc}
	c.SetAccountSid(t.cfg.AccountSID)
	return twapi.NewApiServiceWithClient(c)
}

// twilioTransport sends twilio-go's requests to base with ctx and a timeout.
//
// twilio-go decodes an error answer and never closes its body. With http.Client's
// Timeout, that would keep the client's timer goroutine, and the connection, until
// the timeout; so the transport bounds each request with a context instead, reads
// an error answer (a small JSON document) itself and releases everything at once.
// A success's body is closed by twilio-go, which ends its context.
type twilioTransport struct {
	ctx     context.Context
	timeout time.Duration // 0: none
	base    *url.URL
	next    http.RoundTripper
}

func (tr twilioTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := tr.ctx, context.CancelFunc(func() {})
	if tr.timeout > 0 {
		ctx, cancel = context.WithTimeout(tr.ctx, tr.timeout)
	}
	r = r.Clone(ctx)
	r.URL.Scheme, r.URL.Host, r.Host = tr.base.Scheme, tr.base.Host, ""
	next := tr.next
	if next == nil {
		next = http.DefaultTransport
	}
	res, err := next.RoundTrip(r)
	if err != nil {
		cancel()
		return nil, err
	}
	if res.StatusCode < 400 {
		res.Body = cancelBody{ReadCloser: res.Body, cancel: cancel}
		return res, nil
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	cancel()
	if err != nil {
		return nil, err
	}
	res.Body, res.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	return res, nil
}

// cancelBody ends its request's context when closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// --- TwiML and media tokens ---

type twimlResponse struct {
	XMLName xml.Name      `xml:"Response"`
	Say     *twimlSay     `xml:"Say,omitempty"`
	Connect *twimlConnect `xml:"Connect,omitempty"`
	Dial    *twimlDial    `xml:"Dial,omitempty"`
	Hangup  *struct{}     `xml:"Hangup,omitempty"`
}

type twimlDial struct {
	Number string `xml:"Number,omitempty"`
	Sip    string `xml:"Sip,omitempty"`
}

type twimlSay struct {
	Text string `xml:",chardata"`
}

type twimlConnect struct {
	Action string      `xml:"action,attr,omitempty"`
	Stream twimlStream `xml:"Stream"`
}

type twimlStream struct {
	URL        string           `xml:"url,attr"`
	Parameters []twimlParameter `xml:"Parameter"`
}

type twimlParameter struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

func renderTwiML(r twimlResponse) []byte {
	b, err := xml.Marshal(r)
	if err != nil {
		panic(err) // plain strings in fixed shapes always marshal
	}
	return append([]byte(xml.Header), b...)
}

// twimlUnavailable tells the caller the number has no agent and hangs up.
func twimlUnavailable() []byte {
	return renderTwiML(twimlResponse{Say: &twimlSay{Text: "Sorry, the number you have called is not in service."}, Hangup: &struct{}{}})
}

// streamTwiML connects the call to callID's media websocket, with a token valid for
// ttl. When the stream ends Twilio asks the action URL what next (ConnectEnded).
func (t *Twilio) streamTwiML(callID, agentID string, ttl time.Duration) []byte {
	return renderTwiML(twimlResponse{Connect: &twimlConnect{Action: t.ConnectActionURL(callID), Stream: twimlStream{
		URL:        t.MediaURL(t.MediaToken(callID, ttl)),
		Parameters: []twimlParameter{{Name: "call_id", Value: callID}, {Name: "agent_id", Value: agentID}},
	}}})
}

// ConnectActionURL is where Twilio asks what next once callID's stream has ended.
func (t *Twilio) ConnectActionURL(callID string) string {
	return t.cfg.PublicURL + "/v1/twilio/connect/" + url.PathEscape(callID)
}

// ConnectEnded answers Twilio's request to <Connect>'s action URL, made when the
// media stream of callID has ended while the call is still up (Parley closed the
// stream): TwiML that dials the transfer destination the agent chose (an E.164 or
// tel: number, or a sip: URI), or hangs up. callSID must be the call's Twilio SID.
//
// The destination is known only to the process that ran the stream; Twilio makes
// this request right after the stream closes, to the same public URL, so behind a
// load balancer the transfer needs the request to reach the same instance (sticky
// routing on the call) or the caller is hung up on.
func (t *Twilio) ConnectEnded(ctx context.Context, callID, callSID string) ([]byte, error) {
	c, err := t.calls.load(ctx, callID)
	if err != nil {
		return nil, err
	}
	if sid, _ := c.Metadata[MetaTwilioCallSID].(string); sid != "" && callSID != sid {
		return nil, ErrNotFound
	}
	t.mu.Lock()
	ts := t.transfers[callID]
	delete(t.transfers, callID)
	t.mu.Unlock()
	dest := ""
	if ts != nil {
		dest = ts.destination()
	}
	hangup := renderTwiML(twimlResponse{Hangup: &struct{}{}})
	switch {
	case dest == "":
		return hangup, nil
	case strings.HasPrefix(strings.ToLower(dest), "sip:"):
		t.log.Info("calls: twilio: transferring", "call_id", callID, "to", dest)
		return renderTwiML(twimlResponse{Dial: &twimlDial{Sip: dest}}), nil
	}
	number := strings.TrimPrefix(strings.TrimPrefix(dest, "tel:"), "TEL:")
	t.log.Info("calls: twilio: transferring", "call_id", callID, "to", number)
	return renderTwiML(twimlResponse{Dial: &twimlDial{Number: number}}), nil
}

// transfersKept is how long a stream's transfer destination waits for Twilio's
// request to the action URL, which comes right after the stream closes.
const transfersKept = time.Minute

// MediaURL is the media websocket URL for token: PublicURL with ws(s) for http(s).
func (t *Twilio) MediaURL(token string) string {
	u := t.cfg.PublicURL + "/v1/twilio/media/" + token
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return "wss://" + rest
	}
	return "ws://" + strings.TrimPrefix(u, "http://")
}

// MediaToken mints the media websocket token of callID, valid for ttl:
// <call id>.<expiry, unix seconds>.<HMAC-SHA256, base64url>. Call IDs contain no dots.
func (t *Twilio) MediaToken(callID string, ttl time.Duration) string {
	exp := strconv.FormatInt(t.cfg.Now().Add(ttl).Unix(), 10)
	return callID + "." + exp + "." + t.tokenMAC(callID, exp)
}

func (t *Twilio) tokenMAC(callID, exp string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(callID + "\x00" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// VerifyMediaToken returns the call ID of a valid, unexpired token, or
// ErrTwilioToken.
func (t *Twilio) VerifyMediaToken(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || !ids.HasPrefix(parts[0], "call") {
		return "", ErrTwilioToken
	}
	want := t.tokenMAC(parts[0], parts[1])
	if subtle.ConstantTimeCompare([]byte(want), []byte(parts[2])) != 1 {
		return "", ErrTwilioToken
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || t.cfg.Now().Unix() > exp {
		return "", ErrTwilioToken
	}
	return parts[0], nil
}

// --- media streams ---

// ServeMedia runs the call of a media websocket request for token: it checks the
// token and that its call is waiting for its stream, upgrades the connection, checks
// that the stream is for that call, begins it, runs the voice engine on it until
// either side hangs up, and finishes the record. Errors before the upgrade (a bad
// token: ErrTwilioToken) are returned for the HTTP layer to answer; after it, the
// outcome is in the call record and ServeMedia returns nil.
func (t *Twilio) ServeMedia(w http.ResponseWriter, r *http.Request, token string) error {
	callID, err := t.VerifyMediaToken(token)
	if err != nil {
		return err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrTwilioShuttingDown
	}
	t.live.Add(1)
	t.mu.Unlock()
	defer t.live.Done()
	bg := context.WithoutCancel(r.Context())
	log := t.log.With("call_id", callID)

	call, err := t.calls.load(r.Context(), callID)
	if errors.Is(err, ErrNotFound) {
		return ErrTwilioToken
	}
	if err != nil {
		return err
	}
	if call.CallStatus != StatusRegistered && call.CallStatus != StatusRinging {
		log.Warn("calls: twilio: media stream for a call that is not waiting for one", "status", call.CallStatus)
		return ErrTwilioToken
	}
	cfg, err := t.engine.SessionConfig(r.Context(), call.TenantID, call.AgentID, callID, callVariables(time.Now(), CallVariables(call)))
	if err != nil {
		t.calls.Fail(bg, callID, ReasonError)
		return err
	}
	// Recordings and the agent's recording_enabled work as in the LiveKit worker.
	runner := &Runner{Calls: t.calls, Engine: t.engine, Recordings: t.cfg.Recordings}
	recording := runner.prepareRecording(callID, log)
	defer recording.Discard() // a no-op once stored
	// The stream gives the caller's key presses to the session (Session.DTMF).
	st, err := twilio.AcceptHTTP(w, r, twilio.Config{StartTimeout: t.cfg.StartTimeout, Logger: log})
	if err != nil {
		log.Warn("calls: twilio: media stream did not start", "err", err)
		return nil // the socket is closed; the call waits for a stream or a status callback
	}
	start := st.Start()
	sid, _ := call.Metadata[MetaTwilioCallSID].(string)
	if p := start.CustomParameters["call_id"]; (p != "" && p != callID) || (sid != "" && start.CallSID != sid) {
		log.Warn("calls: twilio: media stream for another call", "stream_call_sid", start.CallSID, "call_sid", sid, "call_id_param", p)
		st.Close()
		return nil
	}
	if sid == "" && start.CallSID != "" {
		// An outbound call answered before Dial stored its SID.
		meta, _ := json.Marshal(map[string]string{MetaTwilioCallSID: start.CallSID})
		if _, err := t.calls.pool.Exec(bg, `UPDATE calls SET metadata = metadata || $2 WHERE id = $1`, callID, meta); err != nil {
			log.Warn("calls: twilio: store call sid", "err", err)
		}
	}
	log = log.With("call_sid", start.CallSID, "stream_sid", start.StreamSID)
	now := time.Now()
	if _, err := t.calls.Begin(r.Context(), callID, now); err != nil {
		// Another stream began it first, or it ended meanwhile.
		log.Warn("calls: twilio: cannot begin the call", "err", err)
		st.Close()
		return nil
	}
	rec := t.calls.NewRecorder(callID, now)
	runner.beginRecording(r.Context(), recording, callID, now, log)
	if recording != nil {
		cfg.Tap = recording
	}
	transfer := &transferSink{next: rec}
	t.mu.Lock()
	t.transfers[callID] = transfer
	t.mu.Unlock()
	defer func() {
		// Kept a while after the stream ends, for ConnectEnded.
		time.AfterFunc(transfersKept, func() {
			t.mu.Lock()
			if t.transfers[callID] == transfer {
				delete(t.transfers, callID)
			}
			t.mu.Unlock()
		})
	}()
	// An outbound call may reach a machine (the agent's voicemail settings decide
	// what happens then); an inbound caller never is one.
	cfg.DetectVoicemail = call.Direction == DirectionOutbound
	cfg.Output, cfg.OutputRate, cfg.Events = st.Output(), st.OutputRate(), transfer
	s, err := voice.NewSession(cfg)
	if err != nil {
		log.Error("calls: twilio: new session", "err", err)
		st.Close()
		t.finish(bg, log, rec, Finish{Status: StatusFailed, Reason: ReasonError})
		return nil
	}
	log.Info("calls: twilio: call started")
	res, runErr := st.Run(t.ctx, s)
	log.Info("calls: twilio: call ended", "outcome", res.Outcome, "end_reason", res.EndReason, "err", runErr)
	t.mu.Lock()
	byAPI := t.hangups[callID]
	delete(t.hangups, callID)
	t.mu.Unlock()
	fin := Finish{Status: StatusCompleted}
	switch res.Outcome {
	case twilio.CallerHungUp:
		fin.Reason = ReasonFor(res.EndReason, !byAPI)
	case twilio.SessionEnded:
		// Closing the socket ends <Connect>; Twilio asks its action URL what next
		// (ConnectEnded: the transfer, or a hang-up).
		fin.Reason = ReasonFor(res.EndReason, false)
	case twilio.Disconnected:
		fin.Reason = twilioReasonLost
	default: // Cancelled: the server is stopping
		fin.Reason = ReasonAPIEnded
	}
	if res.EndReason == voice.EndError || runErr != nil {
		fin.Status, fin.Reason = StatusFailed, ReasonError
	}
	if res.Outcome == twilio.SessionEnded && res.EndReason == voice.EndTransfer {
		// Closing the stream has made Twilio ask <Connect>'s action URL, whose
		// answer (ConnectEnded) dials the destination.
		log.Info("calls: twilio: transfer", "to", transfer.destination())
	}
	finishRecording(bg, recording, log) // stored before the call completes
	t.finish(bg, log, rec, fin.voicemail(res.EndReason))
	return nil
}

func (t *Twilio) finish(ctx context.Context, log *slog.Logger, rec *Recorder, f Finish) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx, f); err != nil {
		log.Warn("calls: twilio: finish call", "err", err)
	}
}

// Stop refuses new media streams, ends the live ones (finished api_ended) and waits
// for their records to be written. Call it after the HTTP server has stopped: live
// streams are hijacked connections that http.Server.Shutdown does not wait for. Safe
// to call twice.
func (t *Twilio) Stop() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.live.Wait()
}
