package twilio

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"net/url"
	"slices"
	"strings"
)

// SignatureHeader is the header Twilio signs its webhook requests with.
const SignatureHeader = "X-Twilio-Signature"

// Signature computes Twilio's request signature, as documented in "Secure webhooks"
// (https://www.twilio.com/docs/usage/webhooks/webhooks-security): the full URL Twilio
// requested (query string included), followed by each POST parameter's name and value
// with no separators, in name order, HMAC-SHA1 keyed with the account's auth token,
// base64-encoded. A name with several values contributes each, values in order too, as
// Twilio's helper libraries do. For a GET (or a JSON body) params is nil: the query
// string is already in the URL.
func Signature(authToken, rawURL string, params url.Values) string {
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(rawURL))
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		vals := slices.Clone(params[k])
		slices.Sort(vals)
		for _, v := range vals {
			mac.Write([]byte(k))
			mac.Write([]byte(v))
		}
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ValidateSignature reports whether signature (the X-Twilio-Signature header) is
// Twilio's signature of a request to rawURL with POST parameters params. rawURL must
// be the URL as Twilio called it (the public https URL, behind any proxy). Twilio's
// helper libraries accept the URL with and without an explicit default port (:443 or
// :80), because which one Twilio signed depends on how the URL was configured; so does
// this. The comparison is constant-time.
func ValidateSignature(authToken, rawURL string, params url.Values, signature string) bool {
	if authToken == "" || signature == "" {
		return false
	}
	for _, u := range urlVariants(rawURL) {
		if subtle.ConstantTimeCompare([]byte(Signature(authToken, u, params)), []byte(signature)) == 1 {
			return true
		}
	}
	return false
}

// urlVariants is rawURL, and the same URL with its default port added or removed.
func urlVariants(rawURL string) []string {
	out := []string{rawURL}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return out
	}
	def := map[string]string{"https": "443", "http": "80", "wss": "443", "ws": "80"}[strings.ToLower(u.Scheme)]
	if def == "" {
		return out
	}
	v := *u
	switch u.Port() {
	case "":
		v.Host = u.Host + ":" + def
	case def:
		v.Host = u.Hostname()
		if strings.Contains(v.Host, ":") { // IPv6
			v.Host = "[" + v.Host + "]"
		}
	default:
		return out
	}
	return append(out, v.String())
}
