package carrier

import (
	"context"
	"net/http"
	"net/url"
	"testing"
)

// TestBuy drives Buy through both scripted carriers: a search by area code, then an
// order for the first number it offered; a given number is ordered without a search;
// an empty search is ErrNotAvailable and orders nothing.
func TestBuy(t *testing.T) {
	t.Parallel()
	telnyxSearch := func(body string) step {
		return step{method: http.MethodGet, path: "/v2/available_phone_numbers",
			query:  url.Values{"filter[country_code]": {"US"}, "filter[national_destination_code]": {"970"}, "filter[limit]": {"10"}},
			status: 200, body: body}
	}
	twilioSearch := func(body string) step {
		return twilioSearchStep(url.Values{"AreaCode": {"500"}, "PageSize": {"10"}}, 200, body)
	}
	// Twilio's search offers +18089251571 first; the order must be for that number.
	twilioOrderFirst := twilioOrderStep(url.Values{"PhoneNumber": {"+18089251571"}, "VoiceUrl": {twilioVoiceURL}, "VoiceMethod": {"POST"}},
		201, twilioIncomingBody("+18089251571", twilioVoiceURL, "POST"))
	tests := []struct {
		name     string
		carrier  func(t *testing.T) Carrier
		number   string
		q        Query
		want     string // the number bought
		wantID   string
		wantKind error
	}{
		{
			name: "telnyx: first match of an area code",
			carrier: func(t *testing.T) Carrier {
				return newTelnyxScript(t, nil,
					telnyxSearch(telnyxSearchBody), // offers +19705555098 first
					telnyxOrderStep(200, telnyxOrderBody("success", "success")),
					telnyxLookupStep(200, telnyxPhoneNumbersBody("active")))
			},
			q:      Query{AreaCode: "970"},
			want:   telnyxNumber,
			wantID: telnyxNumberID,
		},
		{
			name: "telnyx: nothing in the area code",
			carrier: func(t *testing.T) Carrier {
				return newTelnyxScript(t, nil, telnyxSearch(`{"data": [], "meta": {"total_results": 0, "best_effort_results": 0}}`))
			},
			q:        Query{AreaCode: "970"},
			wantKind: ErrNotAvailable,
		},
		{
			name: "twilio: first match of an area code",
			carrier: func(t *testing.T) Carrier {
				return newTwilioScript(t, nil, twilioSearch(twilioSearchBody), twilioOrderFirst)
			},
			q:      Query{AreaCode: "500"},
			want:   "+18089251571",
			wantID: twilioPN,
		},
		{
			name: "twilio: a given number is ordered directly",
			carrier: func(t *testing.T) Carrier {
				return newTwilioScript(t, nil, twilioOrderStep(twilioOrderForm, 201, twilioIncomingBody(twilioNumber, twilioVoiceURL, "POST")))
			},
			number: twilioNumber,
			want:   twilioNumber,
			wantID: twilioPN,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Buy(context.Background(), tt.carrier(t), tt.number, tt.q)
			if tt.wantKind != nil {
				wantKind(t, err, tt.wantKind)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.PhoneNumber != tt.want || p.ProviderID != tt.wantID {
				t.Fatalf("got %+v, want %s with provider id %s", p, tt.want, tt.wantID)
			}
		})
	}
}
