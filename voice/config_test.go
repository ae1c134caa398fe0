package voice

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	var base Config
	newEnvConfig(t, srv, &base)
	fn := Function{Name: "lookup", URL: "https://api.example.com/x", Method: "POST"}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"no providers", func(c *Config) { c.STT, c.LLM = nil, nil }, "providers are required"},
		{"no output", func(c *Config) { c.Output = nil }, "Output writer"},
		{"sensitivity", func(c *Config) { c.Agent.InterruptionSensitivity = 1.5 }, "sensitivity"},
		{"endpointing order", func(c *Config) { c.Agent.EndpointingMinMS, c.Agent.EndpointingMaxMS = 900, 500 }, "endpointing"},
		{"endpointing too long", func(c *Config) { c.Agent.EndpointingMaxMS = 9000 }, "endpointing"},
		{"temperature", func(c *Config) { x := 3.0; c.Agent.Temperature = &x }, "temperature"},
		{"function ok", func(c *Config) { c.Agent.Functions = []Function{fn} }, ""},
		{"function name", func(c *Config) { f := fn; f.Name = "bad name"; c.Agent.Functions = []Function{f} }, "name"},
		{"reserved name", func(c *Config) { f := fn; f.Name = ToolEndCall; c.Agent.Functions = []Function{f} }, "reserved"},
		{"duplicate", func(c *Config) { c.Agent.Functions = []Function{fn, fn} }, "twice"},
		{"function URL", func(c *Config) { f := fn; f.URL = "ftp://x"; c.Agent.Functions = []Function{f} }, "URL"},
		{"function method", func(c *Config) { f := fn; f.Method = "TRACE"; c.Agent.Functions = []Function{f} }, "method"},
		{"function schema", func(c *Config) { f := fn; f.Parameters = json.RawMessage("{"); c.Agent.Functions = []Function{f} }, "JSON"},
		{"function timeout", func(c *Config) { f := fn; f.TimeoutMS = 600_000; c.Agent.Functions = []Function{f} }, "timeout"},
		{"no tool client", func(c *Config) { c.Agent.Functions = []Function{fn}; c.ToolClient = nil }, "ToolClient"},
		{"output rate", func(c *Config) { c.OutputRate = 11025 }, "output rate"},
		{"playout buffer", func(c *Config) { c.PlayoutBuffer = 10 }, "playout buffer"},
		{"empty transfer", func(c *Config) { c.Agent.TransferDestinations = []string{" "} }, "transfer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.Agent.Functions = nil
			tc.mod(&cfg)
			_, err := NewSession(cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.withDefaults()
	a := c.Agent
	if ms(a.EndpointingMinMS) != defaultEndpointingMin || ms(a.EndpointingMaxMS) != defaultEndpointingMax ||
		ms(a.EndCallAfterSilenceMS) != defaultEndCallAfterSilence || ms(a.MaxCallDurationMS) != defaultMaxCallDuration ||
		c.OutputRate != 48000 || c.VAD.SampleRate != 16000 || c.Clock == nil || c.Logger == nil {
		t.Errorf("defaults %+v", c)
	}
	// A minimum above the default maximum lifts the maximum with it.
	c = Config{Agent: Agent{EndpointingMinMS: 2000}}.withDefaults()
	if c.Agent.EndpointingMaxMS != 2000 {
		t.Errorf("max %d", c.Agent.EndpointingMaxMS)
	}
	var _ audio.Clock = systemClock{}
}
