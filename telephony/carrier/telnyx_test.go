package carrier

// The scripted Telnyx below answers with the shapes Telnyx documents. What each
// response looks like, and where it was read:
//
// GET /v2/available_phone_numbers — filters are one deepObject "filter" parameter
// (filter[country_code], filter[national_destination_code],
// filter[phone_number][contains], filter[limit], …). 200:
//
//	{"data":[{"record_type":"available_phone_number","phone_number":"+19705555098",
//	  "vanity_format":"","best_effort":false,"quickship":true,"reservable":true,
//	  "region_information":[{"region_type":"country_code","region_name":"US"}],
//	  "cost_information":{"upfront_cost":"3.21","monthly_cost":"6.54","currency":"USD"},
//	  "features":[{"name":"sms"},{"name":"voice"}]}],
//	 "meta":{"total_results":1,"best_effort_results":0}}
//
// region_type is one of country_code | rate_center | state | location; features are
// objects, costs are strings. Sources: developers.telnyx.com/api-reference/
// phone-number-search/list-available-phone-numbers (OpenAPI searching.yml) and the
// generated Go SDK team-telnyx/telnyx-go availablephonenumber.go
// (AvailablePhoneNumberListResponse{Data, Meta, Metadata}, shared.RegionInformation,
// shared.Feature, shared.CostInformation).
//
// POST /v2/number_orders — body {"phone_numbers":[{"phone_number":"+1…"}],
// "connection_id"?}. 200 (not 201):
//
//	{"data":{"id":"12ade33a-21c0-473b-b055-b3c836e1c292","record_type":"number_order",
//	  "phone_numbers_count":1,"connection_id":"346789098765567",
//	  "phone_numbers":[{"id":"dc8e4d67-33a0-4cbb-af74-7b58f05bd494",
//	    "record_type":"number_order_phone_number","phone_number":"+19705555098",
//	    "regulatory_requirements":[],"requirements_met":true,"status":"success"}],
//	  "sub_number_orders_ids":["…"],"status":"pending","customer_reference":"MY REF 001",
//	  "created_at":"2018-01-01T00:00:00.000000Z","updated_at":"2018-01-01T00:00:00.000000Z",
//	  "requirements_met":true}}
//
// status (order and line) is pending | success | failure; phone_numbers[].id is the
// order line, not the phone number. GET /v2/number_orders/{number_order_id} answers
// the same schema. Sources: developers.telnyx.com/api-reference/phone-number-orders/
// create-a-number-order (response sample), developers.telnyx.com/docs/numbers/
// phone-numbers/number-orders ("should activate momentarily" without regulatory
// requirements), telnyx-go numberorder.go (NumberOrderWithPhoneNumbers, its Status enum).
//
// GET /v2/phone_numbers?filter[phone_number]=<digits> — "Requires at least three
// digits. Non-numerical characters will result in no values being returned." 200:
//
//	{"data":[{"id":"1293384261075731499","record_type":"phone_number",
//	  "phone_number":"+19705555098","status":"active","connection_id":"…",…}],
//	 "meta":{"page_number":1,"page_size":20,"total_pages":1,"total_results":1}}
//
// status includes purchase-pending, active, deleted. Sources: telnyx-go phonenumber.go
// (PhoneNumberListParamsFilter.PhoneNumber), the Number Configurations API reference
// sample (PhoneNumberDetailed).
//
// DELETE /v2/phone_numbers/{id} — 200 with the phone number's final, deleted
// representation (telnyx-go PhoneNumberService.Delete).
//
// Errors — {"errors":[{"code":"10009","title":"Authentication failed","detail":"The
// required authentication headers were either invalid or not included in the
// request.","meta":{"url":"https://developers.telnyx.com/docs/overview/errors/10009"}}]}
// with 401; 10005 "Resource not found" with 404; 10007 "Unexpected error"; 10002
// "Invalid phone number"; 85000 "You must search for the number through our API before
// attempting to purchase." with 422. Sources: developers.telnyx.com/development/
// api-fundamentals/api-errors, developers.telnyx.com/api/errors/85000, and the
// per-endpoint error samples in the API reference.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"
)

const (
	telnyxKey       = "KEY0123456789ABCDEF_test"
	telnyxConnID    = "1293384261075731499"
	telnyxOrderID   = "12ade33a-21c0-473b-b055-b3c836e1c292"
	telnyxLineID    = "dc8e4d67-33a0-4cbb-af74-7b58f05bd494"
	telnyxNumberID  = "1293384261075731500"
	telnyxNumber    = "+19705555098"
	telnyxAuthError = `{"errors":[{"code":"10009","title":"Authentication failed","detail":"The required authentication headers were either invalid or not included in the request.","meta":{"url":"https://developers.telnyx.com/docs/overview/errors/10009"}}]}`
)

const telnyxSearchBody = `{
  "data": [
    {
      "record_type": "available_phone_number",
      "phone_number": "+19705555098",
      "vanity_format": "",
      "best_effort": false,
      "quickship": true,
      "reservable": true,
      "region_information": [
        {"region_type": "rate_center", "region_name": "FORT COLLINS"},
        {"region_type": "state", "region_name": "CO"},
        {"region_type": "country_code", "region_name": "US"}
      ],
      "cost_information": {"upfront_cost": "1.00", "monthly_cost": "1.00", "currency": "USD"},
      "features": [{"name": "sms"}, {"name": "voice"}, {"name": "emergency"}]
    },
    {
      "record_type": "available_phone_number",
      "phone_number": "+19705555123",
      "vanity_format": "",
      "best_effort": false,
      "quickship": true,
      "reservable": true,
      "region_information": [
        {"region_type": "location", "region_name": "Loveland"},
        {"region_type": "rate_center", "region_name": "LOVELAND"},
        {"region_type": "state", "region_name": "CO"},
        {"region_type": "country_code", "region_name": "US"}
      ],
      "cost_information": {"upfront_cost": "1.00", "monthly_cost": "1.00", "currency": "USD"},
      "features": [{"name": "voice"}]
    }
  ],
  "meta": {"total_results": 2, "best_effort_results": 0},
  "metadata": {"total_results": 2, "best_effort_results": 0}
}`

// telnyxOrderBody is a number order in the documented shape with the given order and
// line statuses.
func telnyxOrderBody(orderStatus, lineStatus string) string {
	return `{"data": {
  "id": "` + telnyxOrderID + `",
  "record_type": "number_order",
  "phone_numbers_count": 1,
  "connection_id": "` + telnyxConnID + `",
  "messaging_profile_id": null,
  "billing_group_id": null,
  "phone_numbers": [{
    "id": "` + telnyxLineID + `",
    "record_type": "number_order_phone_number",
    "phone_number": "` + telnyxNumber + `",
    "country_code": "US",
    "phone_number_type": "local",
    "regulatory_requirements": [],
    "requirements_met": true,
    "requirements_status": "approved",
    "status": "` + lineStatus + `"
  }],
  "sub_number_orders_ids": ["3c90c3cc-0d44-4b50-8888-8dd25736052a"],
  "status": "` + orderStatus + `",
  "customer_reference": null,
  "created_at": "2026-11-24T04:00:00.000000Z",
  "updated_at": "2026-11-24T04:00:00.000000Z",
  "requirements_met": true
}}`
}

func telnyxPhoneNumbersBody(status string) string {
	return `{"data": [{
  "id": "` + telnyxNumberID + `",
  "record_type": "phone_number",
  "phone_number": "` + telnyxNumber + `",
  "status": "` + status + `",
  "tags": [],
  "connection_id": "` + telnyxConnID + `",
  "connection_name": "parley",
  "customer_reference": null,
  "phone_number_type": "local",
  "purchased_at": "2026-11-24T04:00:01Z",
  "created_at": "2026-11-24T04:00:01Z",
  "updated_at": "2026-11-24T04:00:01Z"
}], "meta": {"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 1}}`
}

const telnyxNoPhoneNumbers = `{"data": [], "meta": {"page_number": 1, "page_size": 20, "total_pages": 0, "total_results": 0}}`

func telnyxError(code, title, detail string) string {
	return `{"errors":[{"code":"` + code + `","title":"` + title + `","detail":"` + detail + `","meta":{"url":"https://developers.telnyx.com/docs/overview/errors/` + code + `"}}]}`
}

// Steps shared by the tables.
var (
	telnyxLookupStep = func(status int, body string) step {
		return step{method: http.MethodGet, path: "/v2/phone_numbers",
			query: url.Values{"filter[phone_number]": {"19705555098"}}, status: status, body: body}
	}
	telnyxOrderStep = func(status int, body string) step {
		return step{method: http.MethodPost, path: "/v2/number_orders",
			json:   `{"phone_numbers":[{"phone_number":"` + telnyxNumber + `"}],"connection_id":"` + telnyxConnID + `"}`,
			status: status, body: body}
	}
	telnyxGetOrderStep = func(body string) step {
		return step{method: http.MethodGet, path: "/v2/number_orders/" + telnyxOrderID, status: 200, body: body}
	}
	telnyxDeleteStep = func(status int, body string) step {
		return step{method: http.MethodDelete, path: "/v2/phone_numbers/" + telnyxNumberID, status: status, body: body}
	}
)

// newTelnyxScript starts a scripted Telnyx and an adapter pointed at it. The server
// accepts only "Authorization: Bearer <telnyxKey>" and checks every request asks for
// JSON.
func newTelnyxScript(t *testing.T, mod func(*TelnyxConfig), steps ...step) *Telnyx {
	t.Helper()
	s := newScripted(t, func(r *http.Request) bool {
		if r.Header.Get("Accept") != "application/json" {
			t.Errorf("%s %s: Accept %q", r.Method, r.URL.Path, r.Header.Get("Accept"))
		}
		return r.Header.Get("Authorization") == "Bearer "+telnyxKey
	}, telnyxAuthError, steps...)
	cfg := TelnyxConfig{
		APIKey:       telnyxKey,
		BaseURL:      s.URL(),
		ConnectionID: telnyxConnID,
		HTTPClient:   s.Client(),
		OrderWait:    5 * time.Second,
		PollInterval: 5 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	tx, err := NewTelnyx(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestTelnyxSearch(t *testing.T) {
	t.Parallel()
	both := []Available{
		{PhoneNumber: "+19705555098", Locality: "FORT COLLINS", Region: "CO", Country: "US", Features: []string{"sms", "voice", "emergency"}},
		{PhoneNumber: "+19705555123", Locality: "Loveland", Region: "CO", Country: "US", Features: []string{"voice"}},
	}
	tests := []struct {
		name  string
		q     Query
		query url.Values
		body  string
		want  []Available
	}{
		{
			name: "area code and contains",
			q:    Query{Country: "us", AreaCode: "970", Contains: "555", Limit: 2},
			query: url.Values{
				"filter[country_code]":              {"US"},
				"filter[national_destination_code]": {"970"},
				"filter[phone_number][contains]":    {"555"},
				"filter[limit]":                     {"2"},
			},
			body: telnyxSearchBody,
			want: both,
		},
		{
			name:  "defaults",
			q:     Query{},
			query: url.Values{"filter[country_code]": {"US"}, "filter[limit]": {"10"}},
			body:  telnyxSearchBody,
			want:  both,
		},
		{
			name:  "more results than asked for are cut",
			q:     Query{Country: "US", Limit: 1},
			query: url.Values{"filter[country_code]": {"US"}, "filter[limit]": {"1"}},
			body:  telnyxSearchBody,
			want:  both[:1],
		},
		{
			name:  "nothing available",
			q:     Query{Country: "GB", AreaCode: "20"},
			query: url.Values{"filter[country_code]": {"GB"}, "filter[national_destination_code]": {"20"}, "filter[limit]": {"10"}},
			body:  `{"data": [], "meta": {"total_results": 0, "best_effort_results": 0}}`,
			want:  []Available{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tx := newTelnyxScript(t, nil, step{method: http.MethodGet, path: "/v2/available_phone_numbers",
				query: tt.query, status: 200, body: tt.body})
			got, err := tx.Search(context.Background(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestTelnyxSearchRejectsBadQueriesLocally(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		q     Query
		field string
	}{
		{Query{AreaCode: "97a"}, "area_code"},
		{Query{Country: "USA"}, "country"},
		{Query{Contains: "55-5"}, "contains"},
		{Query{Limit: MaxLimit + 1}, "limit"},
	} {
		tx := newTelnyxScript(t, nil) // no step: nothing may reach Telnyx
		_, err := tx.Search(context.Background(), tt.q)
		wantInvalid(t, err, tt.field)
	}
}

func TestTelnyxOrder(t *testing.T) {
	t.Parallel()
	noConn := func(c *TelnyxConfig) { c.ConnectionID = "" }
	noWait := func(c *TelnyxConfig) { c.OrderWait = -1 }
	tests := []struct {
		name     string
		mod      func(*TelnyxConfig)
		steps    []step
		want     Purchased
		wantKind error
		wantCode string
	}{
		{
			name: "completes at once",
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("success", "success")),
				telnyxLookupStep(200, telnyxPhoneNumbersBody("active")),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: telnyxNumberID},
		},
		{
			name: "pending, polled until it succeeds",
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("pending", "pending")),
				telnyxGetOrderStep(telnyxOrderBody("pending", "pending")),
				telnyxGetOrderStep(telnyxOrderBody("success", "success")),
				telnyxLookupStep(200, telnyxPhoneNumbersBody("active")),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: telnyxNumberID},
		},
		{
			name: "still pending but the number is on the account",
			mod:  noWait,
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("pending", "pending")),
				telnyxLookupStep(200, telnyxPhoneNumbersBody("purchase-pending")),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: telnyxNumberID},
		},
		{
			name: "still pending, number not there yet: the order is the reference",
			mod:  noWait,
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("pending", "pending")),
				telnyxLookupStep(200, telnyxNoPhoneNumbers),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: "number_order:" + telnyxOrderID},
		},
		{
			name: "bought, but the lookup fails: the order is the reference",
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("success", "success")),
				telnyxLookupStep(500, telnyxError("10007", "Unexpected error", "An unexpected error occured.")),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: "number_order:" + telnyxOrderID},
		},
		{
			name: "bought, but polling fails: the order is the reference",
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("pending", "pending")),
				{method: http.MethodGet, path: "/v2/number_orders/" + telnyxOrderID, status: 503, body: "<html>unavailable</html>"},
				telnyxLookupStep(200, telnyxNoPhoneNumbers),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: "number_order:" + telnyxOrderID},
		},
		{
			name: "without a connection",
			mod:  noConn,
			steps: []step{
				{method: http.MethodPost, path: "/v2/number_orders",
					json:   `{"phone_numbers":[{"phone_number":"` + telnyxNumber + `"}]}`,
					status: 200, body: telnyxOrderBody("success", "success")},
				telnyxLookupStep(200, telnyxPhoneNumbersBody("active")),
			},
			want: Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: telnyxNumberID},
		},
		{
			name: "the order fails: the number was not available",
			steps: []step{
				telnyxOrderStep(200, telnyxOrderBody("pending", "pending")),
				telnyxGetOrderStep(telnyxOrderBody("failure", "failure")),
			},
			wantKind: ErrNotAvailable,
		},
		{
			name: "refused: not returned by a search (85000)",
			steps: []step{telnyxOrderStep(422, telnyxError("85000", "Must search phone number via search API first",
				"You must search for the number through our API before attempting to purchase."))},
			wantKind: ErrNotAvailable,
			wantCode: "85000",
		},
		{
			name:     "refused: invalid phone number (10002)",
			steps:    []step{telnyxOrderStep(422, telnyxError("10002", "Invalid phone number", "The phone number is invalid."))},
			wantKind: ErrInvalid,
			wantCode: "10002",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tx := newTelnyxScript(t, tt.mod, tt.steps...)
			got, err := tx.Order(context.Background(), telnyxNumber)
			if tt.wantKind != nil {
				wantKind(t, err, tt.wantKind)
				if ce := carrierErr(t, err); ce.Provider != "telnyx" || ce.Op != "order" || (tt.wantCode != "" && ce.Code != tt.wantCode) {
					t.Fatalf("error %+v, want telnyx order code %q", ce, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTelnyxOrderRejectsNonE164Locally(t *testing.T) {
	t.Parallel()
	tx := newTelnyxScript(t, nil)
	for _, n := range []string{"", "9705555098", "+0123456789", "+1 970 555 5098"} {
		_, err := tx.Order(context.Background(), n)
		wantInvalid(t, err, "phone_number")
	}
}

func TestTelnyxRelease(t *testing.T) {
	t.Parallel()
	byID := Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: telnyxNumberID}
	byOrder := Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: "number_order:" + telnyxOrderID}
	deleted := `{"data":` + `{"id":"` + telnyxNumberID + `","record_type":"phone_number","phone_number":"` + telnyxNumber + `","status":"deleted"}}`
	notFound := telnyxError("10005", "Resource not found", "The requested resource or URL could not be found.")
	tests := []struct {
		name     string
		p        Purchased
		steps    []step
		wantKind error
	}{
		{name: "by phone number id", p: byID, steps: []step{telnyxDeleteStep(200, deleted)}},
		{name: "already gone counts as released", p: byID, steps: []step{telnyxDeleteStep(404, notFound)}},
		{
			name: "order reference, number now on the account",
			p:    byOrder,
			steps: []step{
				telnyxLookupStep(200, telnyxPhoneNumbersBody("active")),
				telnyxDeleteStep(200, deleted),
			},
		},
		{
			name: "order reference, order still pending",
			p:    byOrder,
			steps: []step{
				telnyxLookupStep(200, telnyxNoPhoneNumbers),
				telnyxGetOrderStep(telnyxOrderBody("pending", "pending")),
			},
			wantKind: ErrPending,
		},
		{
			name: "order reference, order failed: nothing to release",
			p:    byOrder,
			steps: []step{
				telnyxLookupStep(200, telnyxNoPhoneNumbers),
				telnyxGetOrderStep(telnyxOrderBody("failure", "failure")),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tx := newTelnyxScript(t, nil, tt.steps...)
			err := tx.Release(context.Background(), tt.p)
			if tt.wantKind != nil {
				wantKind(t, err, tt.wantKind)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTelnyxFailures runs each operation against each way Telnyx can fail.
func TestTelnyxFailures(t *testing.T) {
	t.Parallel()
	ops := []struct {
		name  string
		first func(status int, body string) step // the operation's first request
		run   func(ctx context.Context, tx *Telnyx) error
	}{
		{"search", func(status int, body string) step {
			return step{method: http.MethodGet, path: "/v2/available_phone_numbers",
				query:  url.Values{"filter[country_code]": {"US"}, "filter[national_destination_code]": {"970"}, "filter[limit]": {"10"}},
				status: status, body: body}
		}, func(ctx context.Context, tx *Telnyx) error {
			_, err := tx.Search(ctx, Query{AreaCode: "970"})
			return err
		}},
		{"order", telnyxOrderStep, func(ctx context.Context, tx *Telnyx) error {
			_, err := tx.Order(ctx, telnyxNumber)
			return err
		}},
		{"release", telnyxDeleteStep, func(ctx context.Context, tx *Telnyx) error {
			return tx.Release(ctx, Purchased{PhoneNumber: telnyxNumber, Provider: "telnyx", ProviderID: telnyxNumberID})
		}},
	}
	failures := []struct {
		name     string
		key      string // the API key the adapter sends
		status   int
		body     string
		wantKind error
		wantCode string
	}{
		{name: "wrong API key", key: "KEYrevoked", status: 200, body: "{}", wantKind: ErrAuth, wantCode: "10009"},
		{name: "server error", status: 500, body: telnyxError("10007", "Unexpected error", "An unexpected error occured."), wantKind: ErrUpstream, wantCode: "10007"},
		{name: "bad gateway from a proxy", status: 502, body: "<html><body>502 Bad Gateway</body></html>", wantKind: ErrUpstream},
		{name: "throttled", status: 429, body: telnyxError("10011", "Too many requests", "You have exceeded the maximum number of allowed requests."), wantKind: ErrRateLimited, wantCode: "10011"},
		{name: "not the documented format", status: 200, body: "<html>maintenance</html>", wantKind: ErrUpstream},
	}
	for _, op := range ops {
		for _, f := range failures {
			if op.name == "release" && f.name == "not the documented format" {
				continue // Release does not read the body of a successful DELETE
			}
			t.Run(op.name+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				tx := newTelnyxScript(t, func(c *TelnyxConfig) {
					if f.key != "" {
						c.APIKey = f.key
					}
				}, op.first(f.status, f.body))
				err := op.run(context.Background(), tx)
				wantKind(t, err, f.wantKind)
				ce := carrierErr(t, err)
				if ce.Op != op.name || ce.Code != f.wantCode {
					t.Fatalf("error %+v, want op %s code %q", ce, op.name, f.wantCode)
				}
			})
		}
	}
	t.Run("canceled context", func(t *testing.T) {
		t.Parallel()
		tx := newTelnyxScript(t, nil) // nothing reaches the server
		_, err := tx.Search(canceled(), Query{})
		wantKind(t, err, ErrUpstream)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled in the chain", err)
		}
	})
}

func TestNewTelnyxValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []TelnyxConfig{{}, {APIKey: "k", BaseURL: "ftp://x"}, {APIKey: "k", BaseURL: "not a url"}} {
		if _, err := NewTelnyx(cfg); err == nil {
			t.Errorf("NewTelnyx(%+v) accepted", cfg)
		}
	}
	tx, err := NewTelnyx(TelnyxConfig{APIKey: "k"})
	if err != nil || tx.cfg.BaseURL != "https://api.telnyx.com" || tx.Name() != "telnyx" {
		t.Fatalf("defaults: %+v %v", tx, err)
	}
}
