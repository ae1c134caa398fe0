package carrier

import "fmt"

// Config holds the carriers Parley may buy numbers from. A carrier whose credentials
// are empty is off: Telnyx is on when Telnyx.APIKey is set, Twilio when
// Twilio.AccountSID is set (then AuthToken is required too).
type Config struct {
	Telnyx TelnyxConfig
	Twilio TwilioConfig
}

// New builds the enabled carriers, keyed by Name() ("telnyx", "twilio"). The map is
// empty, not nil, when none is configured.
func New(cfg Config) (map[string]Carrier, error) {
	out := map[string]Carrier{}
	if cfg.Telnyx.APIKey != "" {
		t, err := NewTelnyx(cfg.Telnyx)
		if err != nil {
			return nil, err
		}
		out[t.Name()] = t
	}
	if cfg.Twilio.AccountSID != "" || cfg.Twilio.AuthToken != "" {
		t, err := NewTwilio(cfg.Twilio)
		if err != nil {
			return nil, fmt.Errorf("%w (set both the Account SID and the Auth Token, or neither)", err)
		}
		out[t.Name()] = t
	}
	return out, nil
}
