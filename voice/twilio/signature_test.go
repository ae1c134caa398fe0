package twilio_test

import (
	"net/url"
	"testing"

	"github.com/parleyhq/parley/voice/twilio"
)

// The worked example of Twilio's request-validation documentation and of its helper
// libraries' test suites, in two versions seen in the wild (the example's phone
// number changed); both signatures were computed by Twilio's code, not this one.
func TestSignatureVectors(t *testing.T) {
	t.Parallel()
	const u = "https://mycompany.com/myapp.php?foo=1&bar=2"
	for _, tc := range []struct{ phone, want string }{
		{"+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="},
		{"+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
	} {
		params := url.Values{
			"CallSid": {"CA1234567890ABCDE"},
			"Caller":  {tc.phone},
			"Digits":  {"1234"},
			"From":    {tc.phone},
			"To":      {"+18005551212"},
		}
		if got := twilio.Signature("12345", u, params); got != tc.want {
			t.Errorf("%s: signature %q, want %q", tc.phone, got, tc.want)
		}
		if !twilio.ValidateSignature("12345", u, params, tc.want) {
			t.Errorf("%s: the documented signature does not validate", tc.phone)
		}
		// Twilio may have signed the URL with the default port spelled out.
		if !twilio.ValidateSignature("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", params, tc.want) {
			t.Errorf("%s: the URL with :443 does not validate", tc.phone)
		}
		tampered := url.Values{}
		for k, v := range params {
			tampered[k] = v
		}
		tampered.Set("Digits", "9999")
		for name, ok := range map[string]bool{
			"tampered param": twilio.ValidateSignature("12345", u, tampered, tc.want),
			"wrong token":    twilio.ValidateSignature("54321", u, params, tc.want),
			"wrong URL":      twilio.ValidateSignature("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", params, tc.want),
			"other port":     twilio.ValidateSignature("12345", "https://mycompany.com:8443/myapp.php?foo=1&bar=2", params, tc.want),
			"no signature":   twilio.ValidateSignature("12345", u, params, ""),
			"no token":       twilio.ValidateSignature("", u, params, tc.want),
		} {
			if ok {
				t.Errorf("%s: %s validates", tc.phone, name)
			}
		}
	}
}
