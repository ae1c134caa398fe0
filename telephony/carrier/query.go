package carrier

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/parleyhq/parley/internal/errs"
)

// Search limits. Ten results fill a picker without paging; 100 bounds what one API call
// may ask a carrier for (Twilio allows PageSize up to 1000, Telnyx documents no maximum).
const (
	DefaultLimit = 10
	MaxLimit     = 100
)

var (
	countryRE  = regexp.MustCompile(`^[A-Z]{2}$`)
	areaCodeRE = regexp.MustCompile(`^[0-9]{2,6}$`)
	// Twilio's Contains accepts digits, letters (vanity numbers) and the * and %
	// wildcards; Telnyx takes digits. Both reject anything else, so we do it first.
	containsRE = regexp.MustCompile(`^[0-9A-Za-z*%]{1,16}$`)
	e164RE     = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
)

// Normalize fills Query's defaults (Country "US", Limit DefaultLimit) and validates it.
// The error is a 422-kind *errs.Error with per-field messages.
func (q Query) Normalize() (Query, error) {
	q.Country = strings.ToUpper(strings.TrimSpace(q.Country))
	if q.Country == "" {
		q.Country = "US"
	}
	q.AreaCode = strings.TrimSpace(q.AreaCode)
	q.Contains = strings.TrimSpace(q.Contains)
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	f := errs.Fields{}
	if !countryRE.MatchString(q.Country) {
		f.Add("country", "must be an ISO 3166 alpha-2 code such as US")
	}
	if q.AreaCode != "" && !areaCodeRE.MatchString(q.AreaCode) {
		f.Add("area_code", "must be 2 to 6 digits")
	}
	if q.Contains != "" && !containsRE.MatchString(q.Contains) {
		f.Add("contains", "must be up to 16 digits or letters, with * or %% as wildcards")
	}
	if q.Limit < 1 || q.Limit > MaxLimit {
		f.Add("limit", "must be between 1 and %d", MaxLimit)
	}
	return q, f.Err()
}

// ValidNumber reports whether s is an E.164 number ("+" then 7 to 15 digits).
func ValidNumber(s string) bool { return e164RE.MatchString(s) }

func checkNumber(phoneNumber string) error {
	if !ValidNumber(phoneNumber) {
		return errs.Invalid(map[string]string{"phone_number": "must be in E.164 format, e.g. +14155550100"})
	}
	return nil
}

// Buy orders phoneNumber from c or, when phoneNumber is empty, the first number that
// Search(q) offers. Telnyx only sells numbers a search has returned (its error 85000),
// so a caller that only knows an area code should come through here. No match is
// ErrNotAvailable.
func Buy(ctx context.Context, c Carrier, phoneNumber string, q Query) (Purchased, error) {
	if phoneNumber != "" {
		return c.Order(ctx, phoneNumber)
	}
	found, err := c.Search(ctx, q)
	if err != nil {
		return Purchased{}, err
	}
	if len(found) == 0 {
		return Purchased{}, &Error{Provider: c.Name(), Op: "buy", Kind: ErrNotAvailable,
			Message: fmt.Sprintf("no number matches country=%q area_code=%q contains=%q", q.Country, q.AreaCode, q.Contains)}
	}
	return c.Order(ctx, found[0].PhoneNumber)
}
