package carrier

// The scripted Twilio below answers with the shapes Twilio documents for the 2010-04-01
// REST API (JSON with the .json suffix twilio-go always uses). What each response looks
// like, and where it was read:
//
// GET /2010-04-01/Accounts/{AccountSid}/AvailablePhoneNumbers/{CountryCode}/Local.json
// ?AreaCode=&Contains=&PageSize= — 200:
//
//	{"available_phone_numbers":[{"address_requirements":"none","beta":false,
//	  "capabilities":{"mms":true,"sms":false,"voice":true},
//	  "friendly_name":"(808) 925-1571","iso_country":"US","lata":"834",
//	  "latitude":"19.720000","locality":"Hilo","longitude":"-155.090000",
//	  "phone_number":"+18089251571","postal_code":"96720","rate_center":"HILO",
//	  "region":"HI"}],
//	 "end":1,"first_page_uri":"/2010-04-01/Accounts/AC…/AvailablePhoneNumbers/US/Local.json?PageSize=50&Page=0",
//	 "next_page_uri":null,"page":0,"page_size":50,"previous_page_uri":null,"start":0,
//	 "uri":"/2010-04-01/Accounts/AC…/AvailablePhoneNumbers/US/Local.json?PageSize=1"}
//
// Sources: the AvailablePhoneNumber Local resource page (twilio.com/docs/phone-numbers/
// api/availablephonenumberlocal-resource), the same fixture in Twilio's own helper
// library tests ("testReadFullResponse"), and twilio-go v1.31.0
// rest/api/v2010/model_list_available_phone_number_local_response.go. The live API
// spells the capability keys "SMS"/"MMS" (the docs sample "sms"/"mms"); one fixture
// below uses each, and twilio-go decodes both.
//
// POST /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json, form
// PhoneNumber=+1…&VoiceUrl=…&VoiceMethod=POST — 201 with the IncomingPhoneNumber:
//
//	{"account_sid":"AC…","address_requirements":"none","address_sid":"AD…",
//	 "api_version":"2010-04-01","beta":false,
//	 "capabilities":{"voice":true,"sms":false,"mms":true,"fax":false},
//	 "date_created":"Thu, 30 Jul 2015 23:19:04 +0000","date_updated":"…",
//	 "emergency_status":"Active","friendly_name":"friendly_name","identity_sid":"RI…",
//	 "origin":"origin","phone_number":"+15005550006","sid":"PNaaaa…",
//	 "sms_application_sid":"AP…","sms_method":"GET","sms_url":"https://example.com",
//	 "status_callback":"…","trunk_sid":null,"uri":"/2010-04-01/Accounts/AC…/IncomingPhoneNumbers/PN….json",
//	 "voice_application_sid":"AP…","voice_caller_id_lookup":false,
//	 "voice_fallback_method":"GET","voice_fallback_url":"https://example.com",
//	 "voice_method":"GET","voice_url":"http://demo.twilio.com/docs/voice.xml",
//	 "bundle_sid":"BU…","voice_receive_mode":"voice","status":"in-use","type":"local"}
//
// Sources: twilio.com/docs/phone-numbers/api/incomingphonenumber-resource and the Test
// Credentials page (twilio.com/docs/iam/test-credentials: magic +15005550006 succeeds,
// +15005550000 fails with 21422 "PhoneNumber is not available", +15005550001 with
// 21421 "PhoneNumber is invalid"), twilio-go model_api_v2010_incoming_phone_number.go.
//
// DELETE /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json — 204, no
// body.
//
// Errors — {"code":20003,"message":"Authenticate","more_info":
// "https://www.twilio.com/docs/errors/20003","status":401}; 20404 with 404 for an
// unknown SID; 21422 and 21421 with 400; 20429 with 429; 20500 with 500. Sources:
// twilio.com/docs/usage/twilios-response (exceptions: status, message, code,
// more_info), twilio.com/docs/errors/20003, /20404, /21422, and twilio-go
// client/error.go (TwilioRestError{code, details, message, more_info, status}).
// Authentication is HTTP Basic with the Account SID as user name and the Auth Token
// as password (twilio-go client.Client.SendRequest, SetBasicAuth).

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	twilioSID       = "AC0123456789abcdef0123456789abcdef"
	twilioToken     = "0123456789abcdef0123456789abcdef"
	twilioPN        = "PN0123456789abcdef0123456789abcdef"
	twilioNumber    = "+15005550006"
	twilioVoiceURL  = "https://parley.example.com/inbound_call"
	twilioAuthError = `{"code": 20003, "detail": "Your AccountSid or AuthToken was incorrect.", "message": "Authentication Error - invalid username", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}`
)

const twilioAccountPath = "/2010-04-01/Accounts/" + twilioSID

const twilioSearchBody = `{
  "available_phone_numbers": [
    {
      "address_requirements": "none",
      "beta": false,
      "capabilities": {"mms": true, "sms": false, "voice": true},
      "friendly_name": "(808) 925-1571",
      "iso_country": "US",
      "lata": "834",
      "latitude": "19.720000",
      "locality": "Hilo",
      "longitude": "-155.090000",
      "phone_number": "+18089251571",
      "postal_code": "96720",
      "rate_center": "HILO",
      "region": "HI"
    },
    {
      "address_requirements": "none",
      "beta": false,
      "capabilities": {"MMS": false, "SMS": true, "voice": true, "fax": false},
      "friendly_name": "(808) 925-1572",
      "iso_country": "US",
      "lata": "834",
      "latitude": "19.720000",
      "locality": "Hilo",
      "longitude": "-155.090000",
      "phone_number": "+18089251572",
      "postal_code": "96720",
      "rate_center": "HILO",
      "region": "HI"
    }
  ],
  "end": 1,
  "first_page_uri": "/2010-04-01/Accounts/` + twilioSID + `/AvailablePhoneNumbers/US/Local.json?PageSize=50&Page=0",
  "next_page_uri": null,
  "page": 0,
  "page_size": 50,
  "previous_page_uri": null,
  "start": 0,
  "uri": "/2010-04-01/Accounts/` + twilioSID + `/AvailablePhoneNumbers/US/Local.json?PageSize=1"
}`

func twilioIncomingBody(number, voiceURL, voiceMethod string) string {
	vu := "null"
	if voiceURL != "" {
		vu = `"` + voiceURL + `"`
	}
	return `{
  "account_sid": "` + twilioSID + `",
  "address_requirements": "none",
  "address_sid": null,
  "api_version": "2010-04-01",
  "beta": false,
  "capabilities": {"voice": true, "sms": false, "mms": true, "fax": false},
  "date_created": "Tue, 24 Nov 2026 04:00:00 +0000",
  "date_updated": "Tue, 24 Nov 2026 04:00:00 +0000",
  "emergency_status": "Inactive",
  "emergency_address_sid": null,
  "emergency_address_status": "unregistered",
  "friendly_name": "(500) 555-0006",
  "identity_sid": null,
  "origin": "twilio",
  "phone_number": "` + number + `",
  "sid": "` + twilioPN + `",
  "sms_application_sid": "",
  "sms_fallback_method": "POST",
  "sms_fallback_url": "",
  "sms_method": "POST",
  "sms_url": "",
  "status_callback": "",
  "status_callback_method": "POST",
  "trunk_sid": null,
  "uri": "/2010-04-01/Accounts/` + twilioSID + `/IncomingPhoneNumbers/` + twilioPN + `.json",
  "voice_application_sid": "",
  "voice_caller_id_lookup": false,
  "voice_fallback_method": "POST",
  "voice_fallback_url": null,
  "voice_method": "` + voiceMethod + `",
  "voice_url": ` + vu + `,
  "bundle_sid": null,
  "voice_receive_mode": "voice",
  "status": "in-use",
  "type": "local"
}`
}

func twilioError(status, code int, message string) string {
	return `{"code": ` + strconv.Itoa(code) + `, "message": "` + message + `", "more_info": "https://www.twilio.com/docs/errors/` +
		strconv.Itoa(code) + `", "status": ` + strconv.Itoa(status) + `}`
}

// twilioSent checks what only twilio-go sends: its User-Agent.
func twilioSent(t *testing.T, r *http.Request) {
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "twilio-go/") {
		t.Errorf("User-Agent %q: the request did not come from twilio-go", ua)
	}
}

var (
	twilioSearchStep = func(query url.Values, status int, body string) step {
		return step{method: http.MethodGet, path: twilioAccountPath + "/AvailablePhoneNumbers/US/Local.json",
			query: query, check: twilioSent, status: status, body: body}
	}
	twilioOrderStep = func(form url.Values, status int, body string) step {
		return step{method: http.MethodPost, path: twilioAccountPath + "/IncomingPhoneNumbers.json",
			form: form, check: twilioSent, status: status, body: body}
	}
	twilioDeleteStep = func(status int, body string) step {
		return step{method: http.MethodDelete, path: twilioAccountPath + "/IncomingPhoneNumbers/" + twilioPN + ".json",
			check: twilioSent, status: status, body: body}
	}
	twilioOrderForm = url.Values{"PhoneNumber": {twilioNumber}, "VoiceUrl": {twilioVoiceURL}, "VoiceMethod": {"POST"}}
)

// newTwilioScript starts a scripted Twilio and an adapter pointed at it. The server
// accepts only HTTP Basic twilioSID:twilioToken, as the real API does.
func newTwilioScript(t *testing.T, mod func(*TwilioConfig), steps ...step) *Twilio {
	t.Helper()
	s := newScripted(t, func(r *http.Request) bool {
		user, pass, ok := r.BasicAuth()
		return ok && user == twilioSID && pass == twilioToken
	}, twilioAuthError, steps...)
	cfg := TwilioConfig{
		AccountSID: twilioSID,
		AuthToken:  twilioToken,
		VoiceURL:   twilioVoiceURL,
		BaseURL:    s.URL(),
		HTTPClient: s.Client(),
	}
	if mod != nil {
		mod(&cfg)
	}
	tw, err := NewTwilio(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tw
}

func TestTwilioSearch(t *testing.T) {
	t.Parallel()
	both := []Available{
		{PhoneNumber: "+18089251571", Locality: "Hilo", Region: "HI", Country: "US", Features: []string{"voice", "mms"}},
		{PhoneNumber: "+18089251572", Locality: "Hilo", Region: "HI", Country: "US", Features: []string{"voice", "sms"}},
	}
	tests := []struct {
		name  string
		q     Query
		query url.Values
		body  string
		want  []Available
	}{
		{
			name:  "area code and contains",
			q:     Query{Country: "us", AreaCode: "808", Contains: "925", Limit: 2},
			query: url.Values{"AreaCode": {"808"}, "Contains": {"925"}, "PageSize": {"2"}},
			body:  twilioSearchBody,
			want:  both,
		},
		{
			name:  "defaults",
			q:     Query{},
			query: url.Values{"PageSize": {"10"}},
			body:  twilioSearchBody,
			want:  both,
		},
		{
			name:  "vanity pattern",
			q:     Query{Contains: "PARLEY", Limit: 1},
			query: url.Values{"Contains": {"PARLEY"}, "PageSize": {"1"}},
			body:  twilioSearchBody,
			want:  both[:1],
		},
		{
			name:  "nothing available",
			q:     Query{AreaCode: "533"},
			query: url.Values{"AreaCode": {"533"}, "PageSize": {"10"}},
			body:  `{"available_phone_numbers": [], "end": 0, "first_page_uri": "", "next_page_uri": null, "page": 0, "page_size": 10, "previous_page_uri": null, "start": 0, "uri": ""}`,
			want:  []Available{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tw := newTwilioScript(t, nil, twilioSearchStep(tt.query, 200, tt.body))
			got, err := tw.Search(context.Background(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestTwilioOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		mod      func(*TwilioConfig)
		step     step
		want     Purchased
		wantKind error
		wantCode string
	}{
		{
			name: "bought, voice URL set to Parley's /inbound_call",
			step: twilioOrderStep(twilioOrderForm, 201, twilioIncomingBody(twilioNumber, twilioVoiceURL, "POST")),
			want: Purchased{PhoneNumber: twilioNumber, Provider: "twilio", ProviderID: twilioPN},
		},
		{
			name: "bought without a voice URL",
			mod:  func(c *TwilioConfig) { c.VoiceURL = "" },
			step: twilioOrderStep(url.Values{"PhoneNumber": {twilioNumber}}, 201, twilioIncomingBody(twilioNumber, "", "POST")),
			want: Purchased{PhoneNumber: twilioNumber, Provider: "twilio", ProviderID: twilioPN},
		},
		{
			name:     "no longer available (21422)",
			step:     twilioOrderStep(twilioOrderForm, 400, twilioError(400, 21422, "PhoneNumber is not available")),
			wantKind: ErrNotAvailable,
			wantCode: "21422",
		},
		{
			name:     "invalid number (21421)",
			step:     twilioOrderStep(twilioOrderForm, 400, twilioError(400, 21421, "PhoneNumber is invalid")),
			wantKind: ErrInvalid,
			wantCode: "21421",
		},
		{
			name:     "answer without a sid",
			step:     twilioOrderStep(twilioOrderForm, 201, `{"phone_number": "`+twilioNumber+`"}`),
			wantKind: ErrUpstream,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tw := newTwilioScript(t, tt.mod, tt.step)
			got, err := tw.Order(context.Background(), twilioNumber)
			if tt.wantKind != nil {
				wantKind(t, err, tt.wantKind)
				if ce := carrierErr(t, err); ce.Provider != "twilio" || ce.Op != "order" || ce.Code != tt.wantCode {
					t.Fatalf("error %+v, want twilio order code %q", ce, tt.wantCode)
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

func TestTwilioRelease(t *testing.T) {
	t.Parallel()
	p := Purchased{PhoneNumber: twilioNumber, Provider: "twilio", ProviderID: twilioPN}
	tests := []struct {
		name     string
		step     step
		wantKind error
	}{
		{name: "deleted", step: twilioDeleteStep(204, "")},
		{name: "already gone counts as released", step: twilioDeleteStep(404, twilioError(404, 20404,
			"The requested resource "+twilioAccountPath+"/IncomingPhoneNumbers/"+twilioPN+".json was not found"))},
		{name: "server error", step: twilioDeleteStep(500, twilioError(500, 20500, "Internal Server Error")), wantKind: ErrUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tw := newTwilioScript(t, nil, tt.step)
			err := tw.Release(context.Background(), p)
			if tt.wantKind != nil {
				wantKind(t, err, tt.wantKind)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("no sid", func(t *testing.T) {
		t.Parallel()
		tw := newTwilioScript(t, nil)
		if err := tw.Release(context.Background(), Purchased{PhoneNumber: twilioNumber}); err == nil {
			t.Fatal("released a number without its SID")
		}
	})
}

// TestTwilioFailures runs each operation against each way Twilio can fail.
func TestTwilioFailures(t *testing.T) {
	t.Parallel()
	ops := []struct {
		name  string
		first func(status int, body string) step
		run   func(ctx context.Context, tw *Twilio) error
	}{
		{"search", func(status int, body string) step {
			return twilioSearchStep(url.Values{"AreaCode": {"808"}, "PageSize": {"10"}}, status, body)
		}, func(ctx context.Context, tw *Twilio) error {
			_, err := tw.Search(ctx, Query{AreaCode: "808"})
			return err
		}},
		{"order", func(status int, body string) step { return twilioOrderStep(twilioOrderForm, status, body) },
			func(ctx context.Context, tw *Twilio) error {
				_, err := tw.Order(ctx, twilioNumber)
				return err
			}},
		{"release", twilioDeleteStep, func(ctx context.Context, tw *Twilio) error {
			return tw.Release(ctx, Purchased{PhoneNumber: twilioNumber, Provider: "twilio", ProviderID: twilioPN})
		}},
	}
	failures := []struct {
		name     string
		token    string // the Auth Token the adapter sends
		status   int
		body     string
		wantKind error
		wantCode string
	}{
		{name: "wrong auth token", token: "ffffffffffffffffffffffffffffffff", status: 200, body: "{}", wantKind: ErrAuth, wantCode: "20003"},
		{name: "server error", status: 500, body: twilioError(500, 20500, "Internal Server Error"), wantKind: ErrUpstream, wantCode: "20500"},
		{name: "bad gateway from a proxy", status: 502, body: "<html><body>502 Bad Gateway</body></html>", wantKind: ErrUpstream},
		{name: "throttled", status: 429, body: twilioError(429, 20429, "Too Many Requests"), wantKind: ErrRateLimited, wantCode: "20429"},
	}
	for _, op := range ops {
		for _, f := range failures {
			t.Run(op.name+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				tw := newTwilioScript(t, func(c *TwilioConfig) {
					if f.token != "" {
						c.AuthToken = f.token
					}
				}, op.first(f.status, f.body))
				err := op.run(context.Background(), tw)
				wantKind(t, err, f.wantKind)
				ce := carrierErr(t, err)
				if ce.Op != op.name || ce.Code != f.wantCode {
					t.Fatalf("error %+v, want op %s code %q", ce, op.name, f.wantCode)
				}
			})
		}
	}
	t.Run("search in an unsupported country", func(t *testing.T) {
		t.Parallel()
		tw := newTwilioScript(t, nil, step{method: http.MethodGet, path: twilioAccountPath + "/AvailablePhoneNumbers/ZZ/Local.json",
			query: url.Values{"PageSize": {"10"}}, status: 404,
			body: twilioError(404, 20404, "The requested resource /2010-04-01/Accounts/"+twilioSID+"/AvailablePhoneNumbers/ZZ/Local.json was not found")})
		_, err := tw.Search(context.Background(), Query{Country: "ZZ"})
		wantKind(t, err, ErrInvalid)
	})
	t.Run("deadline while Twilio hangs", func(t *testing.T) {
		// twilio-go sends every request with context.Background(); the adapter's
		// transport must still end a hung request when the caller's context does.
		t.Parallel()
		hang := twilioOrderStep(twilioOrderForm, 201, twilioIncomingBody(twilioNumber, twilioVoiceURL, "POST"))
		hang.check = func(t *testing.T, r *http.Request) { <-r.Context().Done() }
		tw := newTwilioScript(t, nil, hang)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := tw.Order(ctx, twilioNumber)
		wantKind(t, err, ErrUpstream)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want context.DeadlineExceeded in the chain", err)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		t.Parallel()
		tw := newTwilioScript(t, nil) // nothing reaches the server
		_, err := tw.Order(canceled(), twilioNumber)
		wantKind(t, err, ErrUpstream)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled in the chain", err)
		}
	})
}

func TestNewTwilioValidates(t *testing.T) {
	t.Parallel()
	good := TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken}
	for _, mod := range []func(*TwilioConfig){
		func(c *TwilioConfig) { c.AccountSID = "" },
		func(c *TwilioConfig) { c.AccountSID = "AC123" },
		func(c *TwilioConfig) { c.AuthToken = "" },
		func(c *TwilioConfig) { c.AuthToken = "has-dash" },
		func(c *TwilioConfig) { c.VoiceURL = "/inbound_call" },
		func(c *TwilioConfig) { c.BaseURL = "http://127.0.0.1:1/some/path" },
	} {
		cfg := good
		mod(&cfg)
		if _, err := NewTwilio(cfg); err == nil {
			t.Errorf("NewTwilio(%+v) accepted", cfg)
		}
	}
	tw, err := NewTwilio(good)
	if err != nil || tw.target != nil || tw.Name() != "twilio" {
		t.Fatalf("defaults: %+v %v", tw, err)
	}
}
