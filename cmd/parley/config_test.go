package main

import (
	"os"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/config"
)

func envMap(m map[string]string) *config.Env {
	return config.New(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

// Every variable Parley reads is documented in the README, with its name in backticks.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	env := envMap(nil)
	loadConfig(env, false)
	runDevVars(env)
	for _, v := range env.Vars() {
		if !strings.Contains(string(readme), "`"+v.Name+"`") {
			t.Errorf("README does not document %s (%s)", v.Name, v.Help)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(envMap(map[string]string{
		"DATABASE_URL":              "postgres://x@db/parley",
		"PARLEY_RATE_LIMIT_USER":    "250",
		"PARLEY_CORS_ORIGINS":       "https://a.example, https://b.example",
		"PARLEY_TRUSTED_PROXIES":    "10.0.0.0/8, 192.168.1.1",
		"PARLEY_ALLOW_PRIVATE_URLS": "yes",
	}), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.URL != "postgres://x@db/parley" || c.HTTP.RateLimitUser != 250 || len(c.HTTP.CORSOrigins) != 2 ||
		len(c.HTTP.TrustedProxies) != 2 || !c.SafeHTTP.AllowPrivate || c.HTTP.RateLimitIP != 30 {
		t.Fatalf("config: %+v", c)
	}
	// PARLEY_DATABASE_URL wins over DATABASE_URL.
	c, _ = loadConfig(envMap(map[string]string{"DATABASE_URL": "a", "PARLEY_DATABASE_URL": "b"}), false)
	if c.DB.URL != "b" {
		t.Fatalf("DB URL %q", c.DB.URL)
	}
	// The SSRF guard is on in serve and off in dev unless told otherwise.
	if c, _ := loadConfig(envMap(nil), false); c.SafeHTTP.AllowPrivate {
		t.Fatal("serve allows private URLs by default")
	}
	if c, _ := loadConfig(envMap(nil), true); !c.SafeHTTP.AllowPrivate {
		t.Fatal("dev does not allow private URLs by default")
	}
	if c, _ := loadConfig(envMap(map[string]string{"PARLEY_ALLOW_PRIVATE_URLS": "false"}), true); c.SafeHTTP.AllowPrivate {
		t.Fatal("explicit PARLEY_ALLOW_PRIVATE_URLS=false ignored in dev")
	}
	// Malformed values are all reported at once.
	_, err = loadConfig(envMap(map[string]string{"PARLEY_RATE_LIMIT_IP": "lots", "PARLEY_ACCESS_TOKEN_TTL": "soon", "PARLEY_TRUSTED_PROXIES": "nope"}), false)
	if err == nil || !strings.Contains(err.Error(), "PARLEY_RATE_LIMIT_IP") || !strings.Contains(err.Error(), "PARLEY_ACCESS_TOKEN_TTL") || !strings.Contains(err.Error(), "PARLEY_TRUSTED_PROXIES") {
		t.Fatalf("err = %v", err)
	}
}
