// Package carrier buys and releases phone numbers from telephony carriers: Telnyx (its
// v2 REST API) and Twilio (through twilio-go). Package telephony calls it for
// POST /v1/phone-numbers/buy and for releasing a bought number.
package carrier

import "context"

// Carrier is one provider's number inventory.
type Carrier interface {
	// Name is "telnyx" or "twilio".
	Name() string
	// Search lists numbers available to buy.
	Search(ctx context.Context, q Query) ([]Available, error)
	// Order buys one number (E.164) and returns it as the carrier now holds it.
	Order(ctx context.Context, phoneNumber string) (Purchased, error)
	// Release gives a bought number back to the carrier.
	Release(ctx context.Context, p Purchased) error
}

// Query narrows a number search. Country is an ISO 3166 alpha-2 code (default "US").
type Query struct {
	Country  string
	AreaCode string
	Contains string
	Limit    int
}

// Available is a number a carrier offers.
type Available struct {
	PhoneNumber string   `json:"phone_number"`
	Locality    string   `json:"locality,omitempty"`
	Region      string   `json:"region,omitempty"`
	Country     string   `json:"country,omitempty"`
	Features    []string `json:"features,omitempty"`
}

// Purchased is a number bought from a carrier.
type Purchased struct {
	PhoneNumber string `json:"phone_number"`
	Provider    string `json:"provider"`
	// ProviderID is the carrier's own ID of the number (Telnyx phone number ID or, while
	// the order is pending, "number_order:<order ID>"; Twilio IncomingPhoneNumber SID),
	// needed to release it. Store it as is and hand it back to Release.
	ProviderID string `json:"provider_id"`
}
