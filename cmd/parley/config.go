package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/knowledge"
)

// appConfig is every component's config, read from the environment in one place.
type appConfig struct {
	DB         db.Config
	HTTP       httpapi.Config
	Accounts   accounts.Config
	SafeHTTP   safehttp.Config
	Jobs       jobs.Config
	Knowledge  knowledge.Config
	SecretKey  string // PARLEY_SECRET_KEY: AES-256 key for secrets at rest
	RedisURL   string
	LiveKit    liveKitConfig
	Voice      voiceConfig
	Phone      phoneConfig
	Recordings recordingsConfig
	// BillingEnforce refuses outbound calls to tenants whose wallet is empty.
	BillingEnforce bool
	// WorkerMetricsAddr is where `parley worker` serves /metrics and /healthz; the API
	// serves its own.
	WorkerMetricsAddr string
	LogLevel          slog.Level
	LogFormat         string
}

type liveKitConfig struct {
	URL, PublicURL, APIKey, APISecret string
}

// voiceConfig is what a worker needs to hold calls: how many, and the providers'
// server-wide defaults.
type voiceConfig struct {
	AgentName    string
	MaxSessions  int
	MaxLoad      float64
	DrainTimeout time.Duration
	Providers    calls.ProviderDefaults
}

// phoneConfig is what phone calls need beyond LiveKit: the carriers' accounts.
type phoneConfig struct {
	TwilioAccountSID, TwilioAuthToken string
	TelnyxAPIKey, TelnyxConnectionID  string
	// RingingTimeout is how long an outbound call rings before it is no_answer.
	RingingTimeout time.Duration
}

// loadConfig reads every setting. dev switches the defaults that suit a local sandbox
// (private URLs allowed); explicit variables always win.
func loadConfig(env *config.Env, dev bool) (appConfig, error) {
	var c appConfig
	c.DB.URL = env.FirstString([]string{"PARLEY_DATABASE_URL", "DATABASE_URL"}, "",
		"PostgreSQL URL (with pgvector). `parley dev` runs a managed database instead.")
	c.DB.MaxConns = int32(env.Int("PARLEY_DB_MAX_CONNS", 0, "connection pool size (0: 4 per CPU, at least 16)"))

	c.HTTP.Addr = env.String("PARLEY_ADDR", ":8080", "HTTP listen address (`parley dev` defaults to 127.0.0.1:8080)")
	c.HTTP.PublicURL = env.String("PARLEY_PUBLIC_URL", "", "URL clients use to reach Parley (default from PARLEY_ADDR)")
	c.HTTP.MaxBodyBytes = int64(env.Int("PARLEY_MAX_BODY_BYTES", 1<<20, "request body limit in bytes (413 above it)"))
	c.HTTP.CORSOrigins = env.List("PARLEY_CORS_ORIGINS", "", "comma-separated browser origins allowed by CORS; * for any; empty disables CORS")
	c.HTTP.TrustedProxies = env.Prefixes("PARLEY_TRUSTED_PROXIES", "", "CIDRs of reverse proxies whose X-Forwarded-For is trusted for client IPs")
	c.HTTP.RateLimitUser = env.Int("PARLEY_RATE_LIMIT_USER", 100, "requests per minute per authenticated user (0 disables)")
	c.HTTP.RateLimitIP = env.Int("PARLEY_RATE_LIMIT_IP", 30, "requests per minute per client IP on public routes (0 disables)")

	secret := env.String("PARLEY_JWT_SECRET", "", "HMAC key for access tokens, at least 32 bytes (`parley dev` generates one)")
	c.Accounts.JWTSecret = []byte(secret)
	c.Accounts.AccessTTL = env.Duration("PARLEY_ACCESS_TOKEN_TTL", 15*time.Minute, "access token lifetime")
	c.Accounts.RefreshTTL = env.Duration("PARLEY_REFRESH_TOKEN_TTL", 30*24*time.Hour, "login session (refresh token) lifetime")
	c.SecretKey = env.String("PARLEY_SECRET_KEY", "", "32-byte key (64 hex chars or base64) encrypting provider API keys at rest (`parley dev` generates one)")

	c.SafeHTTP.AllowPrivate = env.Bool("PARLEY_ALLOW_PRIVATE_URLS", dev,
		"allow user-configured URLs (webhooks, functions, knowledge URLs, provider base_urls) to reach private, loopback and link-local addresses (`parley dev`: true)")
	c.SafeHTTP.Timeout = env.Duration("PARLEY_OUTBOUND_TIMEOUT", 10*time.Second, "timeout of outbound HTTP requests to user-configured URLs")

	c.HTTP.MaxUploadBytes = int64(env.Int("PARLEY_KB_MAX_UPLOAD_BYTES", 20<<20, "knowledge-base file upload limit in bytes (413 above it)"))
	c.Knowledge.MaxUploadBytes = c.HTTP.MaxUploadBytes
	openaiBase := env.String("PARLEY_OPENAI_BASE_URL", "", "default base URL of OpenAI-compatible endpoints (embeddings, LLM, STT, TTS), e.g. http://localhost:11434/v1 for Ollama")
	openaiKey := env.String("PARLEY_OPENAI_API_KEY", "", "default API key of OpenAI-compatible endpoints")
	c.Knowledge.DefaultEmbedder = knowledge.EmbedderSpec{
		Provider: env.String("PARLEY_EMBEDDER", "local", "default embedder of new knowledge bases: local (built in, offline) or openai (any OpenAI-compatible /embeddings endpoint)"),
		Model:    env.String("PARLEY_EMBEDDING_MODEL", "", "embedding model for PARLEY_EMBEDDER=openai (default text-embedding-3-small)"),
		BaseURL:  openaiBase,
		APIKey:   openaiKey,
		Dimensions: env.Int("PARLEY_EMBEDDING_DIMENSIONS", 0,
			"embedding size: local embedder (default 384), or the dimensions parameter sent to OpenAI-compatible models (0: native size)"),
	}
	if c.Knowledge.DefaultEmbedder.Provider == "local" {
		if c.Knowledge.DefaultEmbedder.Dimensions == 0 {
			c.Knowledge.DefaultEmbedder.Dimensions = 384
		}
		c.Knowledge.DefaultEmbedder.BaseURL, c.Knowledge.DefaultEmbedder.APIKey = "", ""
	}
	c.Jobs.MaxWorkers = env.Int("PARLEY_JOB_WORKERS", 50, "background jobs run at once per worker process")
	c.RedisURL = env.String("PARLEY_REDIS_URL", "", "Redis URL; when set, rate-limit state lives there instead of PostgreSQL")

	c.LiveKit.URL = env.String("PARLEY_LIVEKIT_URL", "", "LiveKit server URL (ws:// or wss://); `parley dev` runs a managed one")
	c.LiveKit.PublicURL = env.String("PARLEY_LIVEKIT_PUBLIC_URL", "", "LiveKit URL browsers connect to, when they reach the server by another name than PARLEY_LIVEKIT_URL (default PARLEY_LIVEKIT_URL)")
	c.LiveKit.APIKey = env.String("PARLEY_LIVEKIT_API_KEY", "", "LiveKit API key")
	c.LiveKit.APISecret = env.String("PARLEY_LIVEKIT_API_SECRET", "", "LiveKit API secret")

	c.Voice.AgentName = env.String("PARLEY_AGENT_NAME", "parley", "the agent name workers register with LiveKit's dispatcher (rooms are dispatched to it by name)")
	c.Voice.MaxSessions = env.Int("PARLEY_VOICE_MAX_SESSIONS", 100, "live calls a worker takes at most; above it LiveKit dispatches to other workers")
	c.Voice.MaxLoad = env.Float("PARLEY_VOICE_MAX_LOAD", 0.8, "a worker refuses new calls while its CPU load (0 to 1, of its GOMAXPROCS) is at or above this")
	c.Voice.DrainTimeout = env.Duration("PARLEY_DRAIN_TIMEOUT", time.Hour, "on SIGTERM a worker takes no new calls and waits this long for live ones to end before cutting them")
	c.Voice.Providers = calls.ProviderDefaults{
		OpenAIBaseURL:    openaiBase,
		OpenAIAPIKey:     openaiKey,
		LLMModel:         env.String("PARLEY_LLM_MODEL", "", "default chat model of agents (default gpt-4o-mini)"),
		STTModel:         env.String("PARLEY_STT_MODEL", "", "default transcription model of agents (default whisper-1)"),
		TTSProvider:      env.String("PARLEY_TTS_PROVIDER", "", "default voice provider of agents: openai, elevenlabs or espeak (default openai when an OpenAI key or base URL is set, else espeak, which needs no key)"),
		TTSModel:         env.String("PARLEY_TTS_MODEL", "", "default speech model of agents (default tts-1)"),
		TTSVoice:         env.String("PARLEY_TTS_VOICE", "", "default voice of agents (default alloy)"),
		DeepgramAPIKey:   env.String("PARLEY_DEEPGRAM_API_KEY", "", "Deepgram key for agents whose STT provider is deepgram and that have no key of their own"),
		ElevenLabsAPIKey: env.String("PARLEY_ELEVENLABS_API_KEY", "", "ElevenLabs key for agents whose TTS provider is elevenlabs and that have no key of their own"),
		EspeakFallback:   env.Bool("PARLEY_TTS_ESPEAK_FALLBACK", true, "put espeak-ng behind hosted voices, so a failing voice is heard as a robotic one rather than silence"),
	}

	c.Phone.TwilioAccountSID = env.String("PARLEY_TWILIO_ACCOUNT_SID", "", "Twilio account SID: Twilio numbers (inbound webhook, outbound calls) and buying numbers from Twilio")
	c.Phone.TwilioAuthToken = env.String("PARLEY_TWILIO_AUTH_TOKEN", "", "Twilio auth token (checks X-Twilio-Signature and signs Twilio REST requests)")
	c.Phone.TelnyxAPIKey = env.String("PARLEY_TELNYX_API_KEY", "", "Telnyx API key, for buying numbers from Telnyx")
	c.Phone.TelnyxConnectionID = env.String("PARLEY_TELNYX_CONNECTION_ID", "", "Telnyx SIP connection new Telnyx numbers are attached to")
	c.Phone.RingingTimeout = env.Duration("PARLEY_SIP_RINGING_TIMEOUT", 30*time.Second, "how long an outbound call rings before it counts as not answered (no_answer)")
	c.Recordings = loadRecordingsConfig(env)
	c.BillingEnforce = env.Bool("PARLEY_BILLING_ENFORCE", false, "refuse outbound calls (402, INSUFFICIENT_BALANCE) to tenants whose wallet balance is zero or less")

	c.WorkerMetricsAddr = env.String("PARLEY_WORKER_METRICS_ADDR", ":9091", "listen address of `parley worker`'s /metrics (Prometheus) and /healthz; empty disables it")

	level := env.String("PARLEY_LOG_LEVEL", "info", "log level: debug (includes one line per request), info, warn, error")
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("config: PARLEY_LOG_LEVEL=%q: %w", level, err)
	}
	c.LogFormat = env.String("PARLEY_LOG_FORMAT", "text", "log format: text or json")
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c, fmt.Errorf("config: PARLEY_LOG_FORMAT must be text or json, not %q", c.LogFormat)
	}
	return c, env.Err()
}

func newLogger(c appConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
