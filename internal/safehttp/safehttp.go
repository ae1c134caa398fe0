// Package safehttp owns Parley's one outbound HTTP client for user-supplied URLs:
// webhooks, agent function webhooks, knowledge-base URLs and the base_url of an agent's
// LLM, STT or TTS provider. Anything that fetches a URL a user typed goes through it.
//
// Its job is to stop server-side request forgery: a user who may configure a URL must not
// thereby reach what only the server can reach — 127.0.0.1, the database on 10.0.0.5, the
// cloud metadata service at 169.254.169.254 that hands out credentials. Unless
// Config.AllowPrivate is set (self-hosters whose Ollama or webhook receiver lives on their
// LAN), only public addresses may be contacted.
//
// The check that matters is made when dialing, not when the URL is saved or the request
// built. Checking a URL up front and then letting net/http resolve the name again is
// a time-of-check/time-of-use race: a hostile DNS server answers 8.8.8.8 to the check and
// 127.0.0.1 to the dial (DNS rebinding), and a public URL can redirect to a private one.
// So the dialer resolves the name itself, refuses unless every address is public, and
// connects to the very address it checked; net.Dialer.Control checks it once more at the
// socket, whatever code path got there. CheckURL exists only to give the user an early,
// clear error when they save a URL; it is not what keeps the server safe.
//
// Proxies from the environment are ignored: through a proxy the dialer would only see the
// proxy's address, and the proxy would happily connect to 127.0.0.1 on our behalf.
package safehttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sentinel errors. Errors from CheckURL, Do and HTTPClient wrap one of them (through
// *url.Error for requests); test with errors.Is. The message of a guard error is written for
// the person who typed the URL, e.g. "url resolves to a non-public address (127.0.0.1 is
// loopback); set PARLEY_ALLOW_PRIVATE_URLS=true to allow", so a caller can turn an error
// from CheckURL into a 422 with err.Error() as the field message.
var (
	// ErrBadURL: the URL is malformed or not allowed whatever the address (scheme other
	// than http/https, no host, credentials in the URL, bad port). AllowPrivate does not
	// change these.
	ErrBadURL = errors.New("safehttp: bad url")
	// ErrBlocked: the URL names or resolves to a non-public address (loopback, private,
	// link-local, metadata, ...). Never returned when AllowPrivate is set.
	ErrBlocked = errors.New("safehttp: blocked destination")
	// ErrTooManyRedirects: the redirect chain is longer than Config.MaxRedirects.
	ErrTooManyRedirects = errors.New("safehttp: too many redirects")
	// ErrTooLarge: a response body read past Config.MaxResponseBytes.
	ErrTooLarge = errors.New("safehttp: response body too large")
)

// allowHint ends every ErrBlocked message: the person who sees it is often the
// self-hoster who can flip the switch, and the variable name is what they need.
const allowHint = "; set PARLEY_ALLOW_PRIVATE_URLS=true to allow"

// guardError is an error with a message for people, wrapping a sentinel for code.
type guardError struct {
	kind error
	msg  string
}

func (e *guardError) Error() string { return e.msg }
func (e *guardError) Unwrap() error { return e.kind }

func badURL(format string, args ...any) error {
	return &guardError{kind: ErrBadURL, msg: fmt.Sprintf(format, args...)}
}

func blocked(format string, args ...any) error {
	return &guardError{kind: ErrBlocked, msg: fmt.Sprintf(format, args...) + allowHint}
}

// Config configures a Client. The zero value of every field means its documented default.
type Config struct {
	// AllowPrivate turns the address guard off: loopback, private, link-local and the rest
	// may be contacted. For self-hosters whose model server or webhook receiver is on their
	// own network. The caller sets it from PARLEY_ALLOW_PRIVATE_URLS; this package never
	// reads the environment. URL shape rules (ErrBadURL) still apply.
	AllowPrivate bool
	// Timeout bounds a whole exchange: dial, TLS, every redirect and reading the body (it is
	// http.Client.Timeout). Default 10 seconds. A caller that streams long responses (LLM
	// token streams) needs its own Client with a longer Timeout, or the stream is cut off.
	Timeout time.Duration
	// MaxRedirects is how many redirects one request may follow. Default 5.
	MaxRedirects int
	// MaxResponseBytes caps every response body; reading past it fails with ErrTooLarge.
	// Default 10 MiB: more than any webhook reply or provider JSON response, small enough
	// that a hostile endpoint cannot make us buffer gigabytes.
	MaxResponseBytes int64
	// UserAgent is sent when a request has no User-Agent header. Default "Parley/1.0".
	UserAgent string

	// lookup replaces DNS resolution in tests, so a test can make a name resolve to
	// 127.0.0.1 without a DNS server. Nil means net.DefaultResolver.LookupNetIP.
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// classifyAddr replaces classify in tests, so a test can treat its loopback server as
	// public and follow a redirect from it. Nil means classify.
	classifyAddr func(netip.Addr) (reason string, blocked bool)
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxRedirects == 0 {
		c.MaxRedirects = 5
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = 10 << 20
	}
	if c.UserAgent == "" {
		c.UserAgent = "Parley/1.0"
	}
	if c.lookup == nil {
		c.lookup = net.DefaultResolver.LookupNetIP
	}
	if c.classifyAddr == nil {
		c.classifyAddr = classify
	}
	return c
}

func (c Config) validate() error {
	var problems []error
	if c.Timeout < 0 {
		problems = append(problems, errors.New("Timeout must not be negative"))
	}
	if c.MaxRedirects < 0 {
		problems = append(problems, errors.New("MaxRedirects must not be negative"))
	}
	if c.MaxResponseBytes < 0 {
		problems = append(problems, errors.New("MaxResponseBytes must not be negative"))
	}
	if strings.ContainsFunc(c.UserAgent, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		problems = append(problems, errors.New("UserAgent must not contain control characters"))
	}
	if len(problems) > 0 {
		return fmt.Errorf("safehttp: invalid config: %w", errors.Join(problems...))
	}
	return nil
}

// Client is an HTTP client that refuses non-public destinations (unless AllowPrivate)
// and caps response bodies. It is safe for concurrent use; make one per configuration and
// share it, so connections are pooled.
type Client struct {
	cfg    Config
	hc     *http.Client
	dialer *net.Dialer
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg}
	c.dialer = &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivate {
		// The last line of defence: whatever resolved the address, the socket is not
		// connected to a non-public one.
		c.dialer.Control = c.control
	}
	base := &http.Transport{
		Proxy:       nil, // never http.ProxyFromEnvironment; see the package comment
		DialContext: c.dialContext,
		// A custom DialContext turns HTTP/2 off unless asked for; providers speak it.
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   10,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(cfg.Timeout, 10*time.Second),
		ExpectContinueTimeout: time.Second,
	}
	c.hc = &http.Client{
		Transport:     &transport{c: c, base: base},
		CheckRedirect: c.checkRedirect,
		Timeout:       cfg.Timeout,
	}
	return c, nil
}

// Do sends req, with the semantics of http.Client.Do. The destination of the request and
// of every redirect is checked when connecting; the response body is capped.
func (c *Client) Do(req *http.Request) (*http.Response, error) {
	return c.hc.Do(req)
}

// HTTPClient returns an *http.Client with the same guard, redirect policy, timeout and
// body cap, for libraries that take one (go-openai's ClientConfig.HTTPClient, ...). Each
// call returns a new copy sharing the connection pool, so a library that changes fields
// on it cannot loosen the guard for other users of this Client.
func (c *Client) HTTPClient() *http.Client {
	hc := *c.hc
	return &hc
}

// CloseIdleConnections closes pooled connections that are not in use (at shutdown, and in
// tests that check for leaked goroutines).
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
}

// CheckURL validates rawURL when it is saved, so the user hears at once that it cannot
// work: the scheme must be http or https, the host present, the URL free of credentials,
// and (unless AllowPrivate) the host must resolve and every address it resolves to must
// be public. The error wraps ErrBadURL or ErrBlocked and its message is fit to show; a
// DNS failure other than "no such host" is returned wrapping the resolver's error and
// neither sentinel, since it is not the URL's fault.
//
// Passing CheckURL is no promise for later: DNS can change. Do checks again when dialing.
func (c *Client) CheckURL(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // drop url.Error's echo of the URL the user just typed
		}
		return badURL("url is not valid: %v", err)
	}
	if err := c.checkStatic(u); err != nil {
		return err
	}
	if c.cfg.AllowPrivate {
		return nil
	}
	_, err = c.resolvePublic(ctx, "ip", u.Hostname())
	return err
}

// checkStatic applies every rule that needs no DNS: the shape of the URL and, unless
// AllowPrivate, IP literals and known internal names. It runs on every request and every
// redirect target, before any connection.
func (c *Client) checkStatic(u *url.URL) error {
	if u == nil {
		return badURL("url is empty")
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "":
		return badURL("url has no scheme; it must start with http:// or https://")
	default:
		return badURL("url scheme %q is not allowed; use http or https", u.Scheme)
	}
	if u.Opaque != "" {
		return badURL("url has no host; it must look like https://host/path")
	}
	if u.User != nil {
		// http://user:pass@host sends basic auth nobody asked for, and
		// http://trusted.example@evil.example reads to people as trusted.example.
		return badURL("url must not contain a user name or password; send credentials in a header")
	}
	host := u.Hostname()
	if host == "" {
		return badURL("url has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return badURL("url port %q is not valid", p)
		}
	}
	addr, err := netip.ParseAddr(host)
	if err != nil && looksNumeric(host) {
		return badURL("url host %q is not a valid name or IP address; write IPv4 addresses as four decimal numbers", host)
	}
	if c.cfg.AllowPrivate {
		return nil
	}
	if err == nil {
		if reason, bad := c.cfg.classifyAddr(addr); bad {
			return blocked("url points to a non-public address (%s is %s)", addr, reason)
		}
		return nil
	}
	if reason, bad := classifyName(host); bad {
		return blocked("url host %q is not public (%s)", host, reason)
	}
	return nil
}

// checkRedirect is http.Client.CheckRedirect: it bounds the chain and applies the static
// rules to the target. The target's address is checked again when it is dialed.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > c.cfg.MaxRedirects {
		return fmt.Errorf("%w: stopped after %d", ErrTooManyRedirects, c.cfg.MaxRedirects)
	}
	err := c.checkStatic(req.URL)
	if ge, ok := errors.AsType[*guardError](err); ok {
		return &guardError{kind: ge.kind, msg: "redirect refused: " + ge.msg}
	}
	return err
}

// resolvePublic resolves host (a name or an IP literal) on network ("ip", "ip4" or "ip6")
// and returns its addresses only if every one is public. All, not any: if one address of
// a name were private, which one gets dialed would be up to the name's owner.
func (c *Client) resolvePublic(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if addr, err := netip.ParseAddr(host); err == nil {
		if reason, bad := c.cfg.classifyAddr(addr); bad {
			return nil, blocked("url points to a non-public address (%s is %s)", addr, reason)
		}
		return []netip.Addr{addr}, nil
	}
	if looksNumeric(host) {
		return nil, badURL("url host %q is not a valid name or IP address; write IPv4 addresses as four decimal numbers", host)
	}
	if reason, bad := classifyName(host); bad {
		return nil, blocked("url host %q is not public (%s)", host, reason)
	}
	addrs, err := c.cfg.lookup(ctx, network, host)
	if err != nil {
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			return nil, badURL("url host %q does not resolve", host)
		}
		return nil, fmt.Errorf("safehttp: resolve %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, badURL("url host %q does not resolve", host)
	}
	for _, a := range addrs {
		if reason, bad := c.cfg.classifyAddr(a); bad {
			return nil, blocked("url host %q resolves to a non-public address (%s is %s)", host, a, reason)
		}
	}
	return addrs, nil
}

// dialContext is the transport's dialer. With the guard on, it resolves the name itself
// and connects only to addresses it has just checked; letting net.Dialer resolve again
// would reopen the rebinding race the check exists to close.
func (c *Client) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if c.cfg.AllowPrivate {
		return c.dialer.DialContext(ctx, network, address)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, badURL("url address %q is not valid: %v", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, badURL("url port %q is not valid", portStr)
	}
	var ipNetwork string
	switch network {
	case "tcp":
		ipNetwork = "ip"
	case "tcp4":
		ipNetwork = "ip4"
	case "tcp6":
		ipNetwork = "ip6"
	default:
		return nil, fmt.Errorf("safehttp: unsupported network %q", network)
	}
	addrs, err := c.resolvePublic(ctx, ipNetwork, host)
	if err != nil {
		return nil, err
	}
	// Try the addresses in order, as net.Dialer would, giving each a share of the time left
	// so that one black-holed address cannot use up the whole deadline.
	var firstErr error
	for i, a := range addrs {
		dctx, cancel := ctx, context.CancelFunc(func() {})
		if deadline, ok := ctx.Deadline(); ok {
			dctx, cancel = context.WithDeadline(ctx, partialDeadline(time.Now(), deadline, len(addrs)-i))
		}
		conn, err := c.dialer.DialContext(dctx, network, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		cancel()
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// partialDeadline gives one of remaining addresses its share of the time to deadline,
// at least 2 seconds when there is that much left (net.Dialer's own rule).
func partialDeadline(now, deadline time.Time, remaining int) time.Time {
	left := deadline.Sub(now)
	if left <= 0 || remaining <= 1 {
		return deadline
	}
	const saneMin = 2 * time.Second
	share := left / time.Duration(remaining)
	if share < saneMin {
		share = min(saneMin, left)
	}
	return now.Add(share)
}

// control is net.Dialer.Control: it sees the literal address the socket is about to
// connect to, after every resolution, so it holds even if a future change dials a name
// directly.
func (c *Client) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &guardError{kind: ErrBlocked, msg: fmt.Sprintf("refusing to dial unparseable address %q", address)}
	}
	if reason, bad := c.cfg.classifyAddr(ap.Addr()); bad {
		return blocked("url resolves to a non-public address (%s is %s)", ap.Addr(), reason)
	}
	return nil
}

// transport applies the per-request rules that must hold for every user of the
// *http.Client, including libraries that call its Do directly: static URL checks, the
// default User-Agent and the body cap.
type transport struct {
	c    *Client
	base *http.Transport
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.c.checkStatic(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper must close the body, even on error
		}
		return nil, err
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		// An explicitly empty User-Agent means "send none" to net/http; leave it so.
		req = req.Clone(req.Context()) // a RoundTripper must not modify its request
		if req.Header == nil {
			req.Header = make(http.Header)
		}
		req.Header.Set("User-Agent", t.c.cfg.UserAgent)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	// 101 Switching Protocols hands over the connection as an io.ReadWriteCloser body;
	// wrapping it would hide the writer.
	if resp.Body != nil && resp.Body != http.NoBody && resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body = newCappedBody(resp.Body, t.c.cfg.MaxResponseBytes, resp.ContentLength)
	}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the pool.
func (t *transport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// cappedBody is a response body that fails with ErrTooLarge rather than deliver more
// than limit bytes. Unlike io.LimitReader, which ends quietly at the limit, it lets the
// caller tell a truncated body from a complete one.
type cappedBody struct {
	rc    io.ReadCloser
	limit int64
	left  int64
	err   error // sticky: once failed or ended, every Read returns it
}

func newCappedBody(rc io.ReadCloser, limit, contentLength int64) *cappedBody {
	b := &cappedBody{rc: rc, limit: limit, left: limit}
	if contentLength > limit {
		// Fail on the first Read instead of after downloading limit bytes of it.
		b.err = b.tooLarge()
	}
	return b
}

func (b *cappedBody) tooLarge() error {
	return fmt.Errorf("%w (more than %d bytes)", ErrTooLarge, b.limit)
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Ask for one byte more than is left: getting it proves the body is too long, while a
	// body of exactly limit bytes still ends with io.EOF.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		b.err = err
		return n, err
	}
	n = int(b.left)
	b.left = 0
	b.err = b.tooLarge()
	return n, b.err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
