package carrier

import (
	"maps"
	"slices"
	"testing"
)

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		want    []string
		wantErr bool
	}{
		{name: "none", want: []string{}},
		{name: "telnyx", cfg: Config{Telnyx: TelnyxConfig{APIKey: "KEYx", ConnectionID: "123"}}, want: []string{"telnyx"}},
		{name: "twilio", cfg: Config{Twilio: TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken}}, want: []string{"twilio"}},
		{name: "both", cfg: Config{Telnyx: TelnyxConfig{APIKey: "KEYx"}, Twilio: TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken,
			VoiceURL: "https://parley.example.com/inbound_call"}}, want: []string{"telnyx", "twilio"}},
		{name: "twilio SID without token", cfg: Config{Twilio: TwilioConfig{AccountSID: twilioSID}}, wantErr: true},
		{name: "twilio token without SID", cfg: Config{Twilio: TwilioConfig{AuthToken: twilioToken}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := New(tt.cfg)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted %+v", tt.cfg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, tt.want) {
				t.Fatalf("carriers %v, want %v", names, tt.want)
			}
			for name, c := range got {
				if c.Name() != name {
					t.Fatalf("carrier %q is named %q", name, c.Name())
				}
			}
		})
	}
}
