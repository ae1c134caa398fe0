package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// TwilioConfig configures the Twilio adapter, which goes through twilio-go's API v2010
// service (AvailablePhoneNumbers/Local and IncomingPhoneNumbers).
type TwilioConfig struct {
	// AccountSID ("AC" + 32 hex) and AuthToken authenticate with HTTP Basic. Required.
	AccountSID string
	AuthToken  string
	// VoiceURL, when set, is Parley's POST /inbound_call URL: every bought number gets
	// it as VoiceUrl (VoiceMethod POST), so calls to the number reach Parley at once.
	VoiceURL string
	// BaseURL replaces the scheme and host of every request twilio-go makes
	// (https://api.twilio.com); tests point it at their server. Default: no rewrite.
	BaseURL string
	// HTTPClient's Transport, Timeout and Jar are used; redirects are never followed
	// (as twilio-go's own default client). Default: http.DefaultTransport, 30 s timeout.
	HTTPClient *http.Client
}

var (
	twilioSIDRE   = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	twilioTokenRE = regexp.MustCompile(`^[0-9A-Za-z]+$`)
)

func (c *TwilioConfig) validate() error {
	if !twilioSIDRE.MatchString(c.AccountSID) {
		return errors.New(`carrier: twilio: AccountSID must be "AC" followed by 32 hex digits`)
	}
	// twilio-go refuses non-alphanumeric credentials on every request (its error
	// 21222/21224); say so once, at startup.
	if !twilioTokenRE.MatchString(c.AuthToken) {
		return errors.New("carrier: twilio: AuthToken is required and must be alphanumeric")
	}
	if c.VoiceURL != "" {
		u, err := url.Parse(c.VoiceURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("carrier: twilio: VoiceURL %q is not an http(s) URL", c.VoiceURL)
		}
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return fmt.Errorf("carrier: twilio: BaseURL %q must be an http(s) origin", c.BaseURL)
		}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	return nil
}

// Twilio buys and releases numbers through Twilio's REST API.
type Twilio struct {
	cfg    TwilioConfig
	target *url.URL // BaseURL parsed, nil for api.twilio.com
}

var _ Carrier = (*Twilio)(nil)

// NewTwilio returns a Twilio adapter.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Twilio{cfg: cfg}
	if cfg.BaseURL != "" {
		t.target, _ = url.Parse(cfg.BaseURL)
	}
	return t, nil
}

// Name is "twilio".
func (t *Twilio) Name() string { return "twilio" }

// api returns twilio-go's API v2010 service for one call. twilio-go builds its requests
// with context.Background(), so each call gets its own transport that binds ctx to the
// request, rewrites the origin when BaseURL is set, and remembers the HTTP status for
// errors twilio-go cannot decode (an HTML 502 from a proxy). The service is built
// without twilio.NewRestClient, which would read TWILIO_* from the environment.
func (t *Twilio) api(ctx context.Context) (*twapi.ApiService, *twilioTransport) {
	base := t.cfg.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	tr := &twilioTransport{ctx: ctx, base: base, target: t.target}
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(t.cfg.AccountSID, t.cfg.AuthToken),
		HTTPClient: &http.Client{
			Transport:     tr,
			Timeout:       t.cfg.HTTPClient.Timeout,
			Jar:           t.cfg.HTTPClient.Jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.SetAccountSid(t.cfg.AccountSID)
	return twapi.NewApiService(&twclient.RequestHandler{Client: c}), tr
}

// Search lists local numbers with GET /2010-04-01/Accounts/{Sid}/AvailablePhoneNumbers/
// {Country}/Local.json (one page of PageSize = Limit).
func (t *Twilio) Search(ctx context.Context, q Query) ([]Available, error) {
	q, err := q.Normalize()
	if err != nil {
		return nil, err
	}
	params := &twapi.ListAvailablePhoneNumberLocalParams{}
	if q.AreaCode != "" {
		ac, _ := strconv.Atoi(q.AreaCode) // Normalize admitted digits only
		params.SetAreaCode(ac)
	}
	if q.Contains != "" {
		params.SetContains(q.Contains)
	}
	params.SetPageSize(q.Limit)
	api, tr := t.api(ctx)
	defer tr.finish()
	page, err := api.PageAvailablePhoneNumberLocal(q.Country, params, "", "")
	if err != nil {
		return nil, t.wrap(ctx, "search", tr, err)
	}
	res := make([]Available, 0, len(page.AvailablePhoneNumbers))
	for _, n := range page.AvailablePhoneNumbers {
		if n.PhoneNumber == nil || *n.PhoneNumber == "" {
			continue
		}
		a := Available{PhoneNumber: *n.PhoneNumber, Locality: deref(n.Locality), Region: deref(n.Region), Country: deref(n.IsoCountry)}
		if a.Country == "" {
			a.Country = q.Country
		}
		if c := n.Capabilities; c != nil {
			for _, f := range []struct {
				on   bool
				name string
			}{{c.Voice, "voice"}, {c.Sms, "sms"}, {c.Mms, "mms"}, {c.Fax, "fax"}} {
				if f.on {
					a.Features = append(a.Features, f.name)
				}
			}
		}
		res = append(res, a)
		if len(res) == q.Limit {
			break
		}
	}
	return res, nil
}

// Order buys phoneNumber with POST /2010-04-01/Accounts/{Sid}/IncomingPhoneNumbers.json.
// Twilio provisions synchronously: the answer (201) carries the number's SID.
func (t *Twilio) Order(ctx context.Context, phoneNumber string) (Purchased, error) {
	if err := checkNumber(phoneNumber); err != nil {
		return Purchased{}, err
	}
	params := &twapi.CreateIncomingPhoneNumberParams{}
	params.SetPhoneNumber(phoneNumber)
	if t.cfg.VoiceURL != "" {
		params.SetVoiceUrl(t.cfg.VoiceURL)
		params.SetVoiceMethod(http.MethodPost)
	}
	api, tr := t.api(ctx)
	defer tr.finish()
	n, err := api.CreateIncomingPhoneNumber(params)
	if err != nil {
		return Purchased{}, t.wrap(ctx, "order", tr, err)
	}
	if n == nil || deref(n.Sid) == "" {
		return Purchased{}, &Error{Provider: "twilio", Op: "order", Status: tr.status.Load32(), Kind: ErrUpstream,
			Message: "IncomingPhoneNumber without a sid"}
	}
	p := Purchased{PhoneNumber: deref(n.PhoneNumber), Provider: "twilio", ProviderID: *n.Sid}
	if p.PhoneNumber == "" {
		p.PhoneNumber = phoneNumber
	}
	return p, nil
}

// Release deletes the number with DELETE /2010-04-01/Accounts/{Sid}/IncomingPhoneNumbers/
// {PN sid}.json (204). It is idempotent: a number Twilio no longer has (404) counts
// as released.
func (t *Twilio) Release(ctx context.Context, p Purchased) error {
	if p.ProviderID == "" {
		return errors.New("carrier: twilio release: no IncomingPhoneNumber SID")
	}
	api, tr := t.api(ctx)
	defer tr.finish()
	err := api.DeleteIncomingPhoneNumber(p.ProviderID, nil)
	if err == nil {
		return nil
	}
	err = t.wrap(ctx, "release", tr, err)
	var ce *Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// wrap classifies an error from twilio-go. A *TwilioRestError carries Twilio's own
// status and code; anything else is a transport failure or an error body twilio-go
// could not decode, classified by the status the transport saw.
func (t *Twilio) wrap(ctx context.Context, op string, tr *twilioTransport, err error) error {
	e := &Error{Provider: "twilio", Op: op}
	var re *twclient.TwilioRestError
	if errors.As(err, &re) {
		e.Status, e.Code, e.Message = re.Status, strconv.Itoa(re.Code), re.Message
		if re.Status == 0 {
			e.Status = tr.status.Load32()
		}
		e.Kind = kindForStatus(e.Status)
		switch re.Code {
		case 21422: // "PhoneNumber is not available"
			e.Kind = ErrNotAvailable
		case 20003: // "Authenticate": bad Account SID or Auth Token
			e.Kind = ErrAuth
		}
		return e
	}
	e.Status = tr.status.Load32()
	e.Kind = ErrUpstream
	if e.Status != 0 {
		e.Kind = kindForStatus(e.Status)
		if e.Status < 400 {
			e.Kind = ErrUpstream // a 2xx/3xx body twilio-go could not decode
		}
	}
	e.Err = err
	if ctxErr := ctx.Err(); ctxErr != nil {
		e.Err = ctxErr
	}
	return e
}

// twilioTransport is the per-call RoundTripper described at (*Twilio).api.
type twilioTransport struct {
	ctx    context.Context
	base   http.RoundTripper
	target *url.URL
	status atomicStatus

	mu     sync.Mutex
	bodies []*releasingBody
}

// finish closes any response body twilio-go left open (it does not close the body of
// an error response it has decoded), freeing the connection and the request context.
func (tr *twilioTransport) finish() {
	tr.mu.Lock()
	bodies := tr.bodies
	tr.bodies = nil
	tr.mu.Unlock()
	for _, b := range bodies {
		_ = b.Close()
	}
}

func (tr *twilioTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The request's own context carries the http.Client timeout; ours carries the
	// caller's cancellation. Either ends the request.
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(tr.ctx, cancel)
	r := req.Clone(ctx)
	if tr.target != nil {
		r.URL.Scheme, r.URL.Host = tr.target.Scheme, tr.target.Host
		r.Host = ""
	}
	resp, err := tr.base.RoundTrip(r)
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	tr.status.Store(int32(resp.StatusCode))
	body := &releasingBody{ReadCloser: resp.Body, release: func() { stop(); cancel() }}
	tr.mu.Lock()
	tr.bodies = append(tr.bodies, body)
	tr.mu.Unlock()
	resp.Body = body
	return resp, nil
}

// releasingBody frees the request's context when twilio-go closes the body.
type releasingBody struct {
	io.ReadCloser
	release func()
	done    atomic.Bool
}

func (b *releasingBody) Close() error {
	if !b.done.CompareAndSwap(false, true) {
		return nil
	}
	err := b.ReadCloser.Close()
	b.release()
	return err
}

type atomicStatus struct{ atomic.Int32 }

func (s *atomicStatus) Load32() int { return int(s.Load()) }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
