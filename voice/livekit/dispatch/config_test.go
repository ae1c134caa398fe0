package dispatch

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	base := Config{URL: "wss://lk.example.com", APIKey: "k", APISecret: "s"}
	d := base.withDefaults()
	if d.AgentName != "parley" || d.MaxJobs != 100 || d.MaxLoad != 0.8 || d.StatusInterval != 2500*time.Millisecond || d.Logger == nil {
		t.Fatalf("defaults: %+v", d)
	}
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string // in the error
	}{
		{"no URL", func(c *Config) { c.URL = "" }, "URL is required"},
		{"bad scheme", func(c *Config) { c.URL = "ftp://lk" }, "scheme must be"},
		{"no host", func(c *Config) { c.URL = "ws://" }, "has no host"},
		{"no key", func(c *Config) { c.APIKey = "" }, "APIKey and APISecret"},
		{"no secret", func(c *Config) { c.APISecret = "" }, "APIKey and APISecret"},
		{"negative MaxJobs", func(c *Config) { c.MaxJobs = -1 }, "MaxJobs"},
		{"MaxLoad over 1", func(c *Config) { c.MaxLoad = 1.5 }, "MaxLoad"},
		{"negative MaxLoad", func(c *Config) { c.MaxLoad = -0.1 }, "MaxLoad"},
		{"tiny StatusInterval", func(c *Config) { c.StatusInterval = time.Millisecond }, "StatusInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.modify(&c)
			err := c.withDefaults().validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want an error about %q", err, tc.want)
			}
			if _, err := New(c, newRecorder().handle); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
	if _, err := New(base, nil); err == nil {
		t.Fatal("New accepted a nil handler")
	}
}

func TestAgentURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ws://127.0.0.1:7880":             "ws://127.0.0.1:7880/agent",
		"wss://lk.example.com/":           "wss://lk.example.com/agent",
		"https://lk.example.com/livekit":  "wss://lk.example.com/livekit/agent",
		"http://localhost:7880?x=1#frag":  "ws://localhost:7880/agent",
		"wss://lk.example.com/a%20b/path": "wss://lk.example.com/a%20b/path/agent",
	} {
		got, err := agentURL(in)
		if err != nil || got != want {
			t.Errorf("agentURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Reconnection delays grow from about 250 ms to the 10 s cap, jittered by ±20%.
func TestBackoff(t *testing.T) {
	t.Parallel()
	for n, nominal := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second,
		4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second} {
		for range 20 {
			d := backoff(n)
			if d < nominal*8/10 || d > nominal*12/10 {
				t.Fatalf("backoff(%d) = %s, want %s ± 20%%", n, d, nominal)
			}
		}
	}
	if d := backoff(1000); d > 12*time.Second {
		t.Fatalf("backoff(1000) = %s", d)
	}
}
