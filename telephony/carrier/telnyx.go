package carrier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TelnyxConfig configures the Telnyx adapter (Telnyx API v2, plain net/http: the
// surface is four endpoints and does not justify an SDK).
type TelnyxConfig struct {
	// APIKey is the Telnyx API v2 key, sent as "Authorization: Bearer <key>". Required.
	APIKey string
	// BaseURL is the API origin; default "https://api.telnyx.com" (paths add /v2/...).
	BaseURL string
	// ConnectionID, when set, is the Telnyx SIP connection every bought number is
	// attached to (number order "connection_id"), so calls to it reach Parley's trunk.
	ConnectionID string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// OrderWait bounds how long Order waits for a pending number order to complete
	// before it returns the order reference instead of the number ID (default 10 s;
	// negative: do not wait).
	// Telnyx documents that an order without regulatory requirements "should activate
	// momentarily"; numbers that need documents can stay pending for days.
	OrderWait time.Duration
	// PollInterval is the first pause between order polls; it doubles up to 2 s
	// (default 250 ms).
	PollInterval time.Duration
}

func (c *TelnyxConfig) validate() error {
	if c.APIKey == "" {
		return errors.New("carrier: telnyx: APIKey is required")
	}
	if c.BaseURL == "" {
		c.BaseURL = "https://api.telnyx.com"
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("carrier: telnyx: BaseURL %q is not an http(s) URL", c.BaseURL)
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.OrderWait == 0 {
		c.OrderWait = 10 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 250 * time.Millisecond
	}
	return nil
}

// Telnyx buys and releases numbers through the Telnyx API v2.
type Telnyx struct {
	cfg TelnyxConfig
}

var _ Carrier = (*Telnyx)(nil)

// NewTelnyx returns a Telnyx adapter.
func NewTelnyx(cfg TelnyxConfig) (*Telnyx, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Telnyx{cfg: cfg}, nil
}

// Name is "telnyx".
func (t *Telnyx) Name() string { return "telnyx" }

// telnyxOrderRef prefixes a Purchased.ProviderID that is a number order ID rather than
// a phone number ID: the order was still pending when Order returned, so the number's
// own ID was not known yet. Release resolves it then.
const telnyxOrderRef = "number_order:"

// Wire types: only the fields Parley reads. The documented shapes are recorded, with
// their sources, at the top of telnyx_test.go.
type telnyxAvailable struct {
	PhoneNumber       string `json:"phone_number"`
	RegionInformation []struct {
		RegionType string `json:"region_type"`
		RegionName string `json:"region_name"`
	} `json:"region_information"`
	Features []struct {
		Name string `json:"name"`
	} `json:"features"`
}

type telnyxOrder struct {
	ID           string `json:"id"`
	Status       string `json:"status"` // pending | success | failure
	PhoneNumbers []struct {
		ID          string `json:"id"`
		PhoneNumber string `json:"phone_number"`
		Status      string `json:"status"` // pending | success | failure
	} `json:"phone_numbers"`
}

type telnyxPhoneNumber struct {
	ID          string `json:"id"`
	PhoneNumber string `json:"phone_number"`
	Status      string `json:"status"`
}

// Search lists numbers with GET /v2/available_phone_numbers.
func (t *Telnyx) Search(ctx context.Context, q Query) ([]Available, error) {
	q, err := q.Normalize()
	if err != nil {
		return nil, err
	}
	v := url.Values{}
	v.Set("filter[country_code]", q.Country)
	if q.AreaCode != "" {
		v.Set("filter[national_destination_code]", q.AreaCode)
	}
	if q.Contains != "" {
		v.Set("filter[phone_number][contains]", q.Contains)
	}
	v.Set("filter[limit]", strconv.Itoa(q.Limit))
	var out struct {
		Data []telnyxAvailable `json:"data"`
	}
	if err := t.do(ctx, "search", http.MethodGet, "/v2/available_phone_numbers?"+v.Encode(), nil, &out); err != nil {
		return nil, err
	}
	res := make([]Available, 0, len(out.Data))
	for _, n := range out.Data {
		if n.PhoneNumber == "" {
			continue
		}
		a := Available{PhoneNumber: n.PhoneNumber, Country: q.Country}
		var rateCenter string
		for _, r := range n.RegionInformation {
			switch r.RegionType {
			case "location":
				a.Locality = r.RegionName
			case "rate_center":
				rateCenter = r.RegionName
			case "state":
				a.Region = r.RegionName
			case "country_code":
				a.Country = r.RegionName
			}
		}
		if a.Locality == "" {
			a.Locality = rateCenter
		}
		for _, f := range n.Features {
			a.Features = append(a.Features, f.Name)
		}
		res = append(res, a)
		if len(res) == q.Limit {
			break
		}
	}
	return res, nil
}

// Order buys phoneNumber with POST /v2/number_orders. Telnyx returns the order, usually
// "pending"; its phone_numbers[].id identify the order lines, not the numbers. Order
// polls GET /v2/number_orders/{id} until the order leaves "pending" (at most OrderWait),
// then finds the number's own ID with GET /v2/phone_numbers?filter[phone_number]=…,
// which DELETE /v2/phone_numbers/{id} needs to release it. If the order is still
// pending, or that lookup fails, ProviderID is "number_order:<order id>" and Release
// resolves the number later. Only a failed order is an error once Telnyx has taken it.
func (t *Telnyx) Order(ctx context.Context, phoneNumber string) (Purchased, error) {
	if err := checkNumber(phoneNumber); err != nil {
		return Purchased{}, err
	}
	type line struct {
		PhoneNumber string `json:"phone_number"`
	}
	body := struct {
		PhoneNumbers []line `json:"phone_numbers"`
		ConnectionID string `json:"connection_id,omitempty"`
	}{PhoneNumbers: []line{{PhoneNumber: phoneNumber}}, ConnectionID: t.cfg.ConnectionID}
	var created struct {
		Data telnyxOrder `json:"data"`
	}
	if err := t.do(ctx, "order", http.MethodPost, "/v2/number_orders", body, &created); err != nil {
		// Any refusal of the order itself (409/422: number gone, never searched — code
		// 85000 —, reserved by another account) means "you cannot buy this number".
		var ce *Error
		if errors.As(err, &ce) && ce.Kind == ErrInvalid && !telnyxMalformed(ce.Code) {
			ce.Kind = ErrNotAvailable
		}
		return Purchased{}, err
	}
	order := created.Data
	if order.ID == "" {
		return Purchased{}, &Error{Provider: "telnyx", Op: "order", Kind: ErrUpstream, Message: "number order without an id"}
	}
	// From here the order stands at Telnyx: only its own failure is an error. A poll or
	// lookup that fails leaves the order reference as ProviderID, which Release
	// resolves later, rather than losing track of a number Parley may be billed for.
	p := Purchased{PhoneNumber: phoneNumber, Provider: "telnyx", ProviderID: telnyxOrderRef + order.ID}
	_ = t.awaitOrder(ctx, phoneNumber, &order)
	if failed, msg := orderFailed(order, phoneNumber); failed {
		return Purchased{}, &Error{Provider: "telnyx", Op: "order", Kind: ErrNotAvailable, Message: msg}
	}
	if id, err := t.lookup(ctx, "order", phoneNumber); err == nil && id != "" {
		p.ProviderID = id
	}
	return p, nil
}

// awaitOrder polls the order until it leaves "pending" or OrderWait runs out; running
// out is not an error (the order goes on at Telnyx).
func (t *Telnyx) awaitOrder(ctx context.Context, phoneNumber string, order *telnyxOrder) error {
	deadline := time.Now().Add(t.cfg.OrderWait)
	pause := t.cfg.PollInterval
	for orderPending(*order, phoneNumber) && time.Now().Add(pause).Before(deadline) {
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return &Error{Provider: "telnyx", Op: "order", Kind: ErrUpstream, Err: ctx.Err()}
		case <-timer.C:
		}
		pause = min(2*pause, 2*time.Second)
		var got struct {
			Data telnyxOrder `json:"data"`
		}
		if err := t.do(ctx, "order", http.MethodGet, "/v2/number_orders/"+url.PathEscape(order.ID), nil, &got); err != nil {
			return err
		}
		*order = got.Data
	}
	return nil
}

func orderLineStatus(o telnyxOrder, phoneNumber string) string {
	for _, l := range o.PhoneNumbers {
		if l.PhoneNumber == phoneNumber {
			return l.Status
		}
	}
	return ""
}

func orderPending(o telnyxOrder, phoneNumber string) bool {
	if s := orderLineStatus(o, phoneNumber); s != "" {
		return s == "pending"
	}
	return o.Status == "pending"
}

func orderFailed(o telnyxOrder, phoneNumber string) (bool, string) {
	if orderLineStatus(o, phoneNumber) == "failure" || o.Status == "failure" {
		return true, fmt.Sprintf("number order %s failed", o.ID)
	}
	return false, ""
}

// lookup returns the ID of phoneNumber on the account, "" when it is not there (yet).
// The filter takes digits only: Telnyx documents that non-numeric characters match
// nothing, so the "+" is dropped and the exact E.164 compared here.
func (t *Telnyx) lookup(ctx context.Context, op, phoneNumber string) (string, error) {
	v := url.Values{}
	v.Set("filter[phone_number]", strings.TrimPrefix(phoneNumber, "+"))
	var out struct {
		Data []telnyxPhoneNumber `json:"data"`
	}
	if err := t.do(ctx, op, http.MethodGet, "/v2/phone_numbers?"+v.Encode(), nil, &out); err != nil {
		return "", err
	}
	for _, n := range out.Data {
		if n.PhoneNumber == phoneNumber && n.ID != "" && n.Status != "deleted" {
			return n.ID, nil
		}
	}
	return "", nil
}

// Release gives the number back with DELETE /v2/phone_numbers/{id}. It is idempotent:
// a number Telnyx no longer has (404) counts as released. A ProviderID that is still an
// order reference is resolved first; if the order is still pending that is ErrPending,
// and if it failed there is nothing to release.
func (t *Telnyx) Release(ctx context.Context, p Purchased) error {
	id := p.ProviderID
	if orderID, ok := strings.CutPrefix(id, telnyxOrderRef); ok || id == "" {
		if err := checkNumber(p.PhoneNumber); err != nil {
			return err
		}
		found, err := t.lookup(ctx, "release", p.PhoneNumber)
		if err != nil {
			return err
		}
		if found == "" {
			if orderID == "" {
				return nil // no order, no number: nothing of ours at Telnyx
			}
			var got struct {
				Data telnyxOrder `json:"data"`
			}
			err := t.do(ctx, "release", http.MethodGet, "/v2/number_orders/"+url.PathEscape(orderID), nil, &got)
			var ce *Error
			if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
				return nil
			}
			if err != nil {
				return err
			}
			if failed, _ := orderFailed(got.Data, p.PhoneNumber); failed {
				return nil
			}
			return &Error{Provider: "telnyx", Op: "release", Kind: ErrPending,
				Message: fmt.Sprintf("number order %s is %s and %s is not on the account yet", orderID, got.Data.Status, p.PhoneNumber)}
		}
		id = found
	}
	err := t.do(ctx, "release", http.MethodDelete, "/v2/phone_numbers/"+url.PathEscape(id), nil, nil)
	var ce *Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// telnyxMalformed reports whether a Telnyx error code says the request itself was bad
// (as opposed to "this number cannot be had"): 10002 invalid phone number, 10004
// missing parameter, 10015 bad request, 10016 not +E.164, 10023 invalid JSON.
func telnyxMalformed(code string) bool {
	switch code {
	case "10002", "10004", "10015", "10016", "10023":
		return true
	}
	return false
}

// telnyxErrorBody is Telnyx's error envelope. Codes are documented as strings but
// some endpoints send numbers, so code is decoded leniently.
type telnyxErrorBody struct {
	Errors []struct {
		Code   json.RawMessage `json:"code"`
		Title  string          `json:"title"`
		Detail string          `json:"detail"`
	} `json:"errors"`
}

// maxBody bounds what we read from a carrier; the largest documented answer (a page of
// 100 available numbers) is well under it.
const maxBody = 4 << 20

// do sends one request and decodes a 2xx JSON answer into out (when out is non-nil).
// Every failure is an *Error.
func (t *Telnyx) do(ctx context.Context, op, method, path string, in, out any) error {
	fail := func(kind error, status int, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return &Error{Provider: "telnyx", Op: op, Status: status, Kind: kind, Err: err}
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fail(ErrUpstream, 0, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.cfg.BaseURL+path, body)
	if err != nil {
		return fail(ErrUpstream, 0, err)
	}
	req.Header.Set("Authorization", "Bearer "+t.cfg.APIKey)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.cfg.HTTPClient.Do(req)
	if err != nil {
		return fail(ErrUpstream, 0, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fail(ErrUpstream, resp.StatusCode, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Provider: "telnyx", Op: op, Status: resp.StatusCode, Kind: kindForStatus(resp.StatusCode)}
		var eb telnyxErrorBody
		if json.Unmarshal(raw, &eb) == nil && len(eb.Errors) > 0 {
			first := eb.Errors[0]
			e.Code = strings.Trim(string(first.Code), `"`)
			e.Message = strings.TrimSpace(first.Title + ": " + first.Detail)
			e.Message = strings.Trim(e.Message, ": ")
		} else {
			e.Message = snippet(raw)
		}
		if e.Code == "10009" || e.Code == "10010" { // authentication / authorization failed
			e.Kind = ErrAuth
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fail(ErrUpstream, resp.StatusCode, fmt.Errorf("decoding %s %s: %w", method, strings.SplitN(path, "?", 2)[0], err))
	}
	return nil
}

// snippet keeps an unparseable error body short enough for a log line.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
