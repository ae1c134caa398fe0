package dispatch

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Defaults of Config.
const (
	// DefaultAgentName is the agent name Parley's workers register and Parley's
	// dispatches ask for.
	DefaultAgentName = "parley"
	// DefaultMaxJobs bounds the calls one worker process holds. It is a backstop, not
	// the usual limit: on most machines the CPU reaches MaxLoad first. It keeps a big
	// machine from taking an unbounded share (each call also holds memory, a room
	// connection and provider streams), and it scales the jobs/MaxJobs part of the
	// reported load. Set it from a density measurement of the deployment.
	DefaultMaxJobs = 100
	// DefaultMaxLoad is the load at which the worker refuses jobs: 0.8 leaves a fifth
	// of the CPU for the calls already running to have headroom for their bursts (TTS
	// decoding, the start of a reply), since a late audio frame is heard. LiveKit Agents
	// uses 0.75 the same way.
	DefaultMaxLoad = 0.8
	// DefaultStatusInterval is how often the worker reports its load. LiveKit picks a
	// worker weighted by the last load it reported, so a stale report skews the
	// balance; the message is a few bytes, and 2.5 s is what LiveKit Agents uses. Job
	// starts and ends are reported at once besides.
	DefaultStatusInterval = 2500 * time.Millisecond
)

// Config configures a Worker. Zero fields take the documented defaults.
type Config struct {
	// URL of the LiveKit server: ws:// or wss:// (http:// and https:// are accepted and
	// mapped to them). The worker connects to its /agent path; a job whose assignment
	// names no URL is joined at this URL.
	URL string
	// APIKey and APISecret sign the worker's access token (VideoGrant{Agent: true}).
	APIKey, APISecret string
	// AgentName is registered with the server; only dispatches naming it reach this
	// worker (explicit dispatch, see the package comment). Default "parley".
	AgentName string
	// Version is reported to the server, which shows it in its logs. Optional.
	Version string
	// MaxJobs: the worker refuses new jobs while this many are running (or reserved by
	// an accepted availability request). Default 100 (DefaultMaxJobs).
	MaxJobs int
	// MaxLoad in (0, 1]: the worker refuses new jobs while Load() >= MaxLoad. Default
	// 0.8 (DefaultMaxLoad).
	MaxLoad float64
	// Load reports the process's resource load in [0, 1]. Default: the process's CPU
	// use over the last 5 s divided by GOMAXPROCS (getrusage). The worker reports
	// max(Load(), jobs/MaxJobs) to the server, so that even with idle CPU a worker with
	// more calls gets fewer new ones; MaxLoad is compared with Load() alone, so that
	// MaxJobs keeps its plain meaning.
	Load func() float64
	// StatusInterval is how often the load is reported. Default 2.5 s
	// (DefaultStatusInterval).
	StatusInterval time.Duration
	// Logger receives registration, job and reconnection logs. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.AgentName == "" {
		c.AgentName = DefaultAgentName
	}
	if c.MaxJobs == 0 {
		c.MaxJobs = DefaultMaxJobs
	}
	if c.MaxLoad == 0 {
		c.MaxLoad = DefaultMaxLoad
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate checks a Config that has its defaults applied.
func (c Config) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("URL is required"))
	} else if _, err := agentURL(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.APIKey == "" || c.APISecret == "" {
		errs = append(errs, errors.New("APIKey and APISecret are required"))
	}
	if c.MaxJobs < 0 {
		errs = append(errs, fmt.Errorf("MaxJobs %d is negative", c.MaxJobs))
	}
	if c.MaxLoad < 0 || c.MaxLoad > 1 {
		errs = append(errs, fmt.Errorf("MaxLoad %g is outside (0, 1]", c.MaxLoad))
	}
	// The server keeps the last report until the next; below 100 ms the reports would
	// only cost CPU on both sides.
	if c.StatusInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("StatusInterval %s is under 100ms", c.StatusInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dispatch: config: %w", err)
	}
	return nil
}

// agentURL maps the LiveKit URL to its worker websocket endpoint, /agent under the
// URL's path (as LiveKit Agents does), with an http(s) scheme mapped to ws(s).
func agentURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("URL %q: scheme must be ws, wss, http or https", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("URL %q has no host", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/agent"
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}
