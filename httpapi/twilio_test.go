package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/voice/twilio"
	"github.com/parleyhq/parley/voice/twilio/twiliotest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

const (
	testTwilioAccount = "AC0123456789abcdef0123456789abcdef"
	testTwilioToken   = "00112233445566778899aabbccddeeff"
)

// twilioNumbers routes numbers as telephony.Service.InboundRoute does: unknown is
// ErrNumberNotFound, known with no agent ErrUnbound.
type twilioNumbers struct {
	mu sync.Mutex
	m  map[string]telephony.Route
}

func (n *twilioNumbers) set(number string, r telephony.Route) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]telephony.Route{}
	}
	r.Number = number
	n.m[number] = r
}

func (n *twilioNumbers) InboundRoute(_ context.Context, number string) (telephony.Route, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.m[number]
	switch {
	case !ok:
		return telephony.Route{}, telephony.ErrNumberNotFound
	case r.AgentID == "":
		return telephony.Route{}, telephony.ErrUnbound
	}
	return r, nil
}

// restCall is one request the scripted Twilio REST server took.
type restCall struct {
	Method, Path string
	User, Pass   string
	Form         url.Values
}

// twilioREST plays Twilio's REST API for Calls.json as documented
// (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource):
// form-encoded parameters, HTTP Basic auth with the account SID and auth token, and a
// JSON call resource (201) or a JSON error ({code, message, more_info, status}).
type twilioREST struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []restCall
	// refuse, when set, is the Twilio error code every create answers with.
	refuse int
	// onUpdate, when set, is what Twilio does on an update of a call's status (from
	// its own goroutine, as Twilio acts on its own time).
	onUpdate func(sid, status string)
}

func newTwilioREST(t *testing.T) *twilioREST {
	s := &twilioREST{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		r.ParseForm()
		s.mu.Lock()
		s.got = append(s.got, restCall{Method: r.Method, Path: r.URL.Path, User: user, Pass: pass, Form: r.PostForm})
		refuse := s.refuse
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fail := func(status, code int, msg string) {
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg,
				"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
		}
		if user != testTwilioAccount || pass != testTwilioToken {
			fail(401, 20003, "Authenticate")
			return
		}
		prefix := "/2010-04-01/Accounts/" + testTwilioAccount + "/Calls"
		if sid, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, prefix+"/"), ".json"); ok && r.Method == "POST" &&
			strings.HasPrefix(r.URL.Path, prefix+"/CA") {
			// Update a call: Status=completed hangs up, canceled cancels.
			status := r.PostForm.Get("Status")
			s.mu.Lock()
			on := s.onUpdate
			s.mu.Unlock()
			if on != nil {
				go on(sid, status)
			}
			json.NewEncoder(w).Encode(map[string]any{"sid": sid, "account_sid": testTwilioAccount, "status": status,
				"api_version": "2010-04-01", "uri": prefix + "/" + sid + ".json"})
			return
		}
		if r.Method != "POST" || r.URL.Path != prefix+".json" {
			fail(404, 20404, "The requested resource "+r.URL.Path+" was not found")
			return
		}
		if refuse != 0 {
			fail(400, refuse, "The 'To' number "+r.PostForm.Get("To")+" is not a valid phone number.")
			return
		}
		b := make([]byte, 16)
		rand.Read(b)
		sid := "CA" + hex.EncodeToString(b)
		now := time.Now().UTC().Format(time.RFC1123Z)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"sid": sid, "account_sid": testTwilioAccount, "to": r.PostForm.Get("To"), "to_formatted": r.PostForm.Get("To"),
			"from": r.PostForm.Get("From"), "from_formatted": r.PostForm.Get("From"), "status": "queued",
			"direction": "outbound-api", "api_version": "2010-04-01", "date_created": now, "date_updated": now,
			"start_time": nil, "end_time": nil, "duration": nil, "price": nil, "price_unit": "USD", "answered_by": nil,
			"parent_call_sid": nil, "phone_number_sid": "PN" + hex.EncodeToString(b), "queue_time": "0",
			"uri":              "/2010-04-01/Accounts/" + testTwilioAccount + "/Calls/" + sid + ".json",
			"subresource_uris": map[string]string{"notifications": "/2010-04-01/Accounts/" + testTwilioAccount + "/Calls/" + sid + "/Notifications.json"},
		})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *twilioREST) calls() []restCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]restCall(nil), s.got...)
}

// twilioEnv is an API server with calls and the Twilio bridge, on a real database,
// whose agents talk to a scripted OpenAI-compatible server.
type twilioEnv struct {
	*testEnv
	calls   *calls.Service
	tw      *calls.Twilio
	rest    *twilioREST
	numbers *twilioNumbers
	prov    *openaitest.Server
	public  string
}

func newTwilioEnv(t *testing.T, prov *openaitest.Server) *twilioEnv {
	t.Helper()
	base := newTestEnv(t)
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	svc, err := calls.New(base.pool, calls.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: true, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	engine := &calls.Engine{Agents: base.agents, HTTPClient: guard.HTTPClient(), Logger: log}
	// The public URL must be known before the bridge is built: Twilio signs it.
	srv := httptest.NewUnstartedServer(nil)
	public := "http://" + srv.Listener.Addr().String()
	rest := newTwilioREST(t)
	numbers := &twilioNumbers{}
	tw, err := calls.NewTwilio(svc, engine, numbers, calls.TwilioConfig{
		AccountSID: testTwilioAccount, AuthToken: testTwilioToken, PublicURL: public,
		APIBaseURL: rest.srv.URL, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(Config{Addr: "127.0.0.1:0", PublicURL: public}, Deps{Logger: log, Accounts: base.accounts,
		Agents: base.agents, Calls: svc, Twilio: tw, Limiter: base.limiter, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = api.Handler()
	srv.Start()
	t.Cleanup(func() {
		guard.CloseIdleConnections()
		srv.Close()
	})
	t.Cleanup(tw.Stop) // first: live streams end before the server closes
	te := *base
	te.srv, te.api = srv, api
	return &twilioEnv{testEnv: &te, calls: svc, tw: tw, rest: rest, numbers: numbers, prov: prov, public: public}
}

// newAgent creates an agent of tenantID whose three providers are the scripted server;
// extra adds JSON fields.
func (e *twilioEnv) newAgent(tenantID string, extra ...string) string {
	e.t.Helper()
	p := fmt.Sprintf(`{"provider":"openai","base_url":%q,"api_key":"test-key"}`, e.prov.URL)
	a, err := e.agents.Create(context.Background(), tenantID, []byte(`{"agent_name":"Front desk",
		"begin_message":"Hello, this is Parley.",
		"response_engine":{"system_prompt":"You are the front desk of a dental practice."},
		"llm":`+p+`,"stt":`+p+`,"tts":`+p+strings.Join(extra, "")+`}`))
	if err != nil {
		e.t.Fatal(err)
	}
	return a.ID
}

// webhook posts form to path as Twilio does, signed with authToken ("" leaves the
// signature out).
func (e *twilioEnv) webhook(path string, form url.Values, authToken string) response {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	if authToken != "" {
		req.Header.Set(twilio.SignatureHeader, twilio.Signature(authToken, e.public+path, form))
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	json.Unmarshal(raw, &r.JSON)
	return r
}

// inboundForm is Twilio's voice webhook for a new call.
func inboundForm(callSID, from, to string) url.Values {
	return url.Values{
		"CallSid": {callSID}, "AccountSid": {testTwilioAccount}, "From": {from}, "To": {to},
		"CallStatus": {"ringing"}, "Direction": {"inbound"}, "ApiVersion": {"2010-04-01"},
		"Caller": {from}, "Called": {to}, "CallerCountry": {"US"}, "CalledCountry": {"US"},
	}
}

func newCallSID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "CA" + hex.EncodeToString(b)
}

// stream is the <Connect><Stream> of a TwiML document.
type stream struct {
	URL    string
	Params map[string]string
	Action string // <Connect action>
}

func parseStream(t *testing.T, doc []byte) (stream, bool) {
	t.Helper()
	var p struct {
		Connect *struct {
			Action string `xml:"action,attr"`
			Stream struct {
				URL    string `xml:"url,attr"`
				Params []struct {
					Name  string `xml:"name,attr"`
					Value string `xml:"value,attr"`
				} `xml:"Parameter"`
			}
		}
	}
	if err := xml.Unmarshal(doc, &p); err != nil {
		t.Fatalf("TwiML %s: %v", doc, err)
	}
	if p.Connect == nil {
		return stream{}, false
	}
	s := stream{URL: p.Connect.Stream.URL, Params: map[string]string{}, Action: p.Connect.Action}
	for _, x := range p.Connect.Stream.Params {
		s.Params[x.Name] = x.Value
	}
	return s, true
}

func (e *twilioEnv) callRows(tenantID string) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM calls WHERE tenant_id = $1`, tenantID).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitCall polls the tenant's call until cond holds.
func (e *twilioEnv) waitCall(ctx context.Context, tenantID, id string, cond func(calls.Call) bool) calls.Call {
	e.t.Helper()
	for {
		c, err := e.calls.Get(ctx, tenantID, id)
		if err == nil && cond(c) {
			return c
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("call %s: waited for a condition in vain: %+v, %v", id, c, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestTwilioInboundConversation is the whole path of an inbound Twilio call: the
// signed voice webhook creates the call and answers TwiML with a media stream URL;
// Twilio's side connects; the caller hears the greeting, asks a question in espeak-ng
// speech (μ-law 8 kHz), hears the answer, presses keys the model reads, and hangs up;
// the record is completed (user_hangup) with both sides of the transcript and the
// call's duration, and only its tenant can read it.
func TestTwilioInboundConversation(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Can I book a cleaning on Monday?"},
		Replies:     []openaitest.Reply{{Text: "Yes, Monday at ten is free."}, {Text: "Thank you, booked."}},
	})
	e := newTwilioEnv(t, prov)
	owner, stranger := e.newUser(), e.newUser()
	agentID := e.newAgent(owner.TenantID)
	e.numbers.set("+15550001000", telephony.Route{TenantID: owner.TenantID, AgentID: agentID, NumberID: "pn_1"})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	callSID := newCallSID()
	r := e.webhook("/inbound_call", inboundForm(callSID, "+15557654321", "+15550001000"), testTwilioToken).wantStatus(t, 200)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		t.Fatalf("Content-Type %q", ct)
	}
	st, ok := parseStream(t, r.Body)
	if !ok || !strings.HasPrefix(st.URL, "ws"+strings.TrimPrefix(e.public, "http")+"/v1/twilio/media/") {
		t.Fatalf("TwiML %s", r.Body)
	}
	callID := st.Params["call_id"]
	if st.Params["agent_id"] != agentID || st.Action != e.public+"/v1/twilio/connect/"+callID {
		t.Errorf("stream parameters %v, action %q", st.Params, st.Action)
	}
	got := e.do("GET", "/v1/calls/"+callID, owner.APIKey, nil).wantStatus(t, 200).JSON
	if got["direction"] != "inbound" || got["call_status"] != "registered" || got["from_number"] != "+15557654321" ||
		got["to_number"] != "+15550001000" || got["agent_id"] != agentID {
		t.Fatalf("call before the stream: %v", got)
	}
	if md, _ := got["metadata"].(map[string]any); md[calls.MetaTwilioCallSID] != callSID {
		t.Errorf("metadata %v", got["metadata"])
	}
	e.do("GET", "/v1/calls/"+callID, stranger.APIKey, nil).wantError(t, 404)

	caller, err := twiliotest.Connect(ctx, st.URL, twiliotest.Options{CallSID: callSID, AccountSID: testTwilioAccount, CustomParameters: st.Params})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	joined := time.Now()
	if _, err := caller.WaitSpeech(ctx, joined); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if _, err := caller.WaitSilence(ctx, joined, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if c := e.waitCall(ctx, owner.TenantID, callID, func(c calls.Call) bool { return c.CallStatus == calls.StatusInProgress }); c.StartTimestamp == nil {
		t.Fatalf("in progress without a start: %+v", c)
	}

	q, err := twiliotest.LoadSpeech("../voice/testdata/hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	asked := caller.Say(q)
	caller.Say(twiliotest.Silence(time.Second))
	qEnd := asked.Add(time.Duration(len(q)) * time.Second / twiliotest.Rate)
	answer, err := caller.WaitSpeech(ctx, qEnd)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	if _, err := caller.WaitSilence(ctx, answer, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Keys: the caller types 4 2 # and the model is told, as a turn of its own.
	for _, d := range []string{"4", "2", "#"} {
		if err := caller.DTMF(d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := caller.WaitSpeech(ctx, time.Now()); err != nil {
		t.Fatalf("answer to the keys: %v", err)
	}
	chats := prov.Chats()
	if len(chats) != 2 || chats[0].Request.LastUserText() != "Can I book a cleaning on Monday?" ||
		!strings.Contains(chats[1].Request.LastUserText(), "4 2 #") {
		var texts []string
		for _, c := range chats {
			texts = append(texts, c.Request.LastUserText())
		}
		t.Fatalf("the model was asked %q", texts)
	}
	if _, err := caller.WaitSilence(ctx, time.Now(), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}

	hungUp := time.Now()
	if err := caller.Stop(); err != nil {
		t.Fatal(err)
	}
	done := e.waitCall(ctx, owner.TenantID, callID, func(c calls.Call) bool { return !c.Live() })
	if done.CallStatus != calls.StatusCompleted || done.DisconnectionReason != calls.ReasonUserHangup ||
		done.EndTimestamp == nil || done.StartTimestamp == nil {
		t.Fatalf("ended call: %+v", done)
	}
	if span := hungUp.Sub(joined); time.Duration(done.DurationMS)*time.Millisecond < span/2 ||
		time.Duration(done.DurationMS)*time.Millisecond > span+10*time.Second {
		t.Errorf("duration %d ms for a call of about %v", done.DurationMS, span)
	}
	for _, want := range []string{"Agent: Hello, this is Parley.", "User: Can I book a cleaning on Monday?",
		"Agent: Yes, Monday at ten is free.", "4 2 #", "Agent: Thank you, booked."} {
		if !strings.Contains(done.Transcript, want) {
			t.Errorf("transcript lacks %q:\n%s", want, done.Transcript)
		}
	}
	if errs := caller.Errors(); len(errs) > 0 {
		t.Errorf("protocol violations: %v", errs)
	}
	// The media URL is spent: the call has begun and ended.
	if status := dialStatus(ctx, t, st.URL); status != http.StatusForbidden {
		t.Errorf("a replayed media URL: status %d, want 403", status)
	}
}

// dialStatus opens a websocket to u and returns the HTTP status of a refused
// handshake (101 if it was accepted, then closed).
func dialStatus(ctx context.Context, t *testing.T, u string) int {
	t.Helper()
	conn, resp, err := websocket.Dial(ctx, u, nil)
	if err == nil {
		conn.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	return resp.StatusCode
}

// TestTwilioInboundRefused: a webhook without Twilio's valid signature is 403 and
// creates nothing; a call to a number with no agent is told so and hung up, and no
// call is created.
func TestTwilioInboundRefused(t *testing.T) {
	t.Parallel()
	e := newTwilioEnv(t, openaitest.New(t, openaitest.Config{}))
	u := e.newUser()
	agentID := e.newAgent(u.TenantID)
	e.numbers.set("+15550002000", telephony.Route{TenantID: u.TenantID, AgentID: agentID})
	e.numbers.set("+15550002001", telephony.Route{TenantID: u.TenantID})
	form := inboundForm(newCallSID(), "+15557654321", "+15550002000")

	for _, tc := range []struct {
		name string
		sign func(*http.Request)
	}{
		{"no signature", func(*http.Request) {}},
		{"another account's token", func(r *http.Request) {
			r.Header.Set(twilio.SignatureHeader, twilio.Signature("ffffffffffffffffffffffffffffffff", e.public+"/inbound_call", form))
		}},
		{"another URL", func(r *http.Request) {
			r.Header.Set(twilio.SignatureHeader, twilio.Signature(testTwilioToken, e.public+"/v1/twilio/status/x", form))
		}},
		{"altered parameters", func(r *http.Request) {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			f.Set("To", "+15550009999")
			r.Header.Set(twilio.SignatureHeader, twilio.Signature(testTwilioToken, e.public+"/inbound_call", f))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.srv.URL+"/inbound_call", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			tc.sign(req)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want 403", resp.StatusCode)
			}
		})
	}
	for _, to := range []string{"+15550002001", "+15550002999"} {
		r := e.webhook("/inbound_call", inboundForm(newCallSID(), "+15557654321", to), testTwilioToken).wantStatus(t, 200)
		if _, ok := parseStream(t, r.Body); ok || !strings.Contains(string(r.Body), "<Hangup>") || !strings.Contains(string(r.Body), "<Say>") {
			t.Errorf("call to %s: TwiML %s", to, r.Body)
		}
	}
	if n := e.callRows(u.TenantID); n != 0 {
		t.Fatalf("%d calls created", n)
	}
}

// TestTwilioMediaRefused: the media websocket refuses forged, expired and malformed
// tokens before the upgrade, and a stream whose Twilio call is not the call's is
// closed without beginning it.
func TestTwilioMediaRefused(t *testing.T) {
	t.Parallel()
	e := newTwilioEnv(t, openaitest.New(t, openaitest.Config{}))
	u := e.newUser()
	agentID := e.newAgent(u.TenantID)
	e.numbers.set("+15550003000", telephony.Route{TenantID: u.TenantID, AgentID: agentID})
	callSID := newCallSID()
	r := e.webhook("/inbound_call", inboundForm(callSID, "+15557654321", "+15550003000"), testTwilioToken).wantStatus(t, 200)
	st, ok := parseStream(t, r.Body)
	if !ok {
		t.Fatalf("TwiML %s", r.Body)
	}
	callID := st.Params["call_id"]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	mint := func(authToken string, now time.Time, id string) string {
		tw, err := calls.NewTwilio(e.calls, &calls.Engine{}, nil, calls.TwilioConfig{
			AuthToken: authToken, PublicURL: e.public, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		defer tw.Stop()
		return tw.MediaURL(tw.MediaToken(id, 2*time.Minute))
	}
	for _, tc := range []struct{ name, url string }{
		{"garbage", mint(testTwilioToken, time.Now(), callID)[:len(st.URL)-10] + "0123456789"},
		{"expired", mint(testTwilioToken, time.Now().Add(-time.Hour), callID)},
		{"forged", mint("ffffffffffffffffffffffffffffffff", time.Now(), callID)},
		{"unknown call", mint(testTwilioToken, time.Now(), ids.New("call"))},
		{"no token", strings.TrimSuffix(st.URL, st.URL[strings.LastIndex(st.URL, "/")+1:]) + "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status := dialStatus(ctx, t, tc.url); status != http.StatusForbidden {
				t.Fatalf("status %d, want 403", status)
			}
		})
	}

	// A valid token, but Twilio's stream is for another call.
	other, err := twiliotest.Connect(ctx, st.URL, twiliotest.Options{CallSID: newCallSID(), CustomParameters: st.Params})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-other.Closed():
	case <-ctx.Done():
		t.Fatal("the stream of another call was not closed")
	}
	other.Close()
	if c, err := e.calls.Get(ctx, u.TenantID, callID); err != nil || c.CallStatus != calls.StatusRegistered {
		t.Fatalf("after a stream of another call: %+v, %v", c, err)
	}
	// The right stream still gets the call.
	caller, err := twiliotest.Connect(ctx, st.URL, twiliotest.Options{CallSID: callSID, CustomParameters: st.Params})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	if _, err := caller.WaitSpeech(ctx, time.Now()); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	// Twilio sends no "stop" and the socket drops: the call ends as a lost stream.
	caller.Close()
	done := e.waitCall(ctx, u.TenantID, callID, func(c calls.Call) bool { return !c.Live() })
	if done.CallStatus != calls.StatusCompleted || done.DisconnectionReason == calls.ReasonUserHangup {
		t.Errorf("after the socket dropped: %s (%s)", done.CallStatus, done.DisconnectionReason)
	}
}

// TestTwilioOutbound: Dial asks Twilio's REST API for the call with TwiML that
// streams it back and status callbacks; the call SID is stored; status callbacks
// (signed) move calls to ringing, busy and no_answer; an answered call streams and
// completes; a number Twilio refuses is an error.
func TestTwilioOutbound(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{})
	e := newTwilioEnv(t, prov)
	u := e.newUser()
	agentID := e.newAgent(u.TenantID)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	line := telephony.Line{Number: "+15550004000", Provider: telephony.ProviderTwilio, NumberID: "pn_4"}

	// dial creates a ringing outbound call (as the dial job leaves it) and dials it.
	dial := func(to string) (calls.Call, restCall) {
		t.Helper()
		id := ids.New("call")
		if _, err := e.pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status, from_number, to_number, metadata)
			VALUES ($1, $2, $3, 'Front desk', 'outbound', 'ringing', $4, $5, '{"variables":{"customer_name":"Ada"}}')`,
			id, u.TenantID, agentID, line.Number, to); err != nil {
			t.Fatal(err)
		}
		c, err := e.calls.Get(ctx, u.TenantID, id)
		if err != nil {
			t.Fatal(err)
		}
		n := len(e.rest.calls())
		if err := e.tw.Dial(ctx, c, line); err != nil {
			t.Fatal(err)
		}
		reqs := e.rest.calls()
		if len(reqs) != n+1 {
			t.Fatalf("%d REST requests, want %d", len(reqs), n+1)
		}
		if c, err = e.calls.Get(ctx, u.TenantID, id); err != nil {
			t.Fatal(err)
		}
		return c, reqs[n]
	}
	status := func(c calls.Call, callStatus string, token string) response {
		t.Helper()
		return e.webhook("/v1/twilio/status/"+c.CallID, url.Values{
			"CallSid": {c.Metadata[calls.MetaTwilioCallSID].(string)}, "AccountSid": {testTwilioAccount},
			"CallStatus": {callStatus}, "Direction": {"outbound-api"}, "From": {line.Number}, "To": {c.ToNumber},
			"ApiVersion": {"2010-04-01"}, "Timestamp": {time.Now().UTC().Format(time.RFC1123Z)},
			"SequenceNumber": {"0"}, "CallbackSource": {"call-progress-events"},
		}, token)
	}

	c, req := dial("+15559990001")
	sid, _ := c.Metadata[calls.MetaTwilioCallSID].(string)
	if req.Method != "POST" || req.Path != "/2010-04-01/Accounts/"+testTwilioAccount+"/Calls.json" ||
		req.User != testTwilioAccount || req.Pass != testTwilioToken {
		t.Fatalf("request %s %s as %s", req.Method, req.Path, req.User)
	}
	f := req.Form
	if f.Get("To") != "+15559990001" || f.Get("From") != line.Number || f.Get("Timeout") != "30" ||
		f.Get("StatusCallback") != e.public+"/v1/twilio/status/"+c.CallID || f.Get("StatusCallbackMethod") != "POST" ||
		strings.Join(f["StatusCallbackEvent"], " ") != "initiated ringing answered completed" {
		t.Fatalf("form %v", f)
	}
	st, ok := parseStream(t, []byte(f.Get("Twiml")))
	if !ok || st.Params["call_id"] != c.CallID || !strings.HasPrefix(st.URL, "ws"+strings.TrimPrefix(e.public, "http")+"/v1/twilio/media/") {
		t.Fatalf("Twiml %q", f.Get("Twiml"))
	}
	if !strings.HasPrefix(sid, "CA") || c.Metadata["variables"] == nil {
		t.Fatalf("metadata after the dial: %v", c.Metadata)
	}
	// A second Dial of the same call (a retried job) does not dial again.
	if err := e.tw.Dial(ctx, c, line); err != nil || len(e.rest.calls()) != 1 {
		t.Fatalf("second dial: %v, %d requests", err, len(e.rest.calls()))
	}

	// Callbacks: a forged one is refused; ringing keeps it ringing; it is answered
	// and the stream begins it.
	status(c, "busy", "ffffffffffffffffffffffffffffffff").wantError(t, 403)
	status(c, "initiated", testTwilioToken).wantStatus(t, 204)
	status(c, "ringing", testTwilioToken).wantStatus(t, 204)
	if got := e.waitCall(ctx, u.TenantID, c.CallID, func(calls.Call) bool { return true }); got.CallStatus != calls.StatusRinging {
		t.Fatalf("after ringing: %s", got.CallStatus)
	}
	caller, err := twiliotest.Connect(ctx, st.URL, twiliotest.Options{CallSID: sid, AccountSID: testTwilioAccount, CustomParameters: st.Params})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	status(c, "in-progress", testTwilioToken).wantStatus(t, 204)
	if _, err := caller.WaitSpeech(ctx, time.Now()); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	e.waitCall(ctx, u.TenantID, c.CallID, func(c calls.Call) bool { return c.CallStatus == calls.StatusInProgress })
	caller.Stop()
	status(c, "completed", testTwilioToken).wantStatus(t, 204)
	done := e.waitCall(ctx, u.TenantID, c.CallID, func(c calls.Call) bool { return !c.Live() })
	if done.CallStatus != calls.StatusCompleted || done.DisconnectionReason != calls.ReasonUserHangup || done.DurationMS <= 0 {
		t.Fatalf("answered call: %s (%s), %d ms", done.CallStatus, done.DisconnectionReason, done.DurationMS)
	}

	// Calls that never connect.
	for _, tc := range []struct{ twilio, want, reason string }{
		{"busy", calls.StatusBusy, calls.ReasonDialBusy},
		{"no-answer", calls.StatusNoAnswer, calls.ReasonDialNoAnswer},
		{"failed", calls.StatusFailed, calls.ReasonDialFailed},
	} {
		c, _ := dial("+15559990002")
		status(c, "initiated", testTwilioToken).wantStatus(t, 204)
		status(c, "ringing", testTwilioToken).wantStatus(t, 204)
		status(c, tc.twilio, testTwilioToken).wantStatus(t, 204)
		// Twilio's final "completed" does not override the outcome.
		status(c, "completed", testTwilioToken).wantStatus(t, 204)
		got, err := e.calls.Get(ctx, u.TenantID, c.CallID)
		if err != nil || got.CallStatus != tc.want || got.DisconnectionReason != tc.reason || got.EndTimestamp == nil {
			t.Errorf("%s: %s (%s), %v", tc.twilio, got.CallStatus, got.DisconnectionReason, err)
		}
		// The bearer API shows the outcome to the owner only.
		e.do("GET", "/v1/calls/"+c.CallID, u.APIKey, nil).wantStatus(t, 200)
	}

	// Twilio refuses the number: Dial says so with Twilio's code.
	e.rest.mu.Lock()
	e.rest.refuse = 21211
	e.rest.mu.Unlock()
	id := ids.New("call")
	if _, err := e.pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id, direction, call_status, to_number)
		VALUES ($1, $2, $3, 'outbound', 'ringing', '+1555')`, id, u.TenantID, agentID); err != nil {
		t.Fatal(err)
	}
	bad, _ := e.calls.Get(ctx, u.TenantID, id)
	if err := e.tw.Dial(ctx, bad, line); err == nil || !strings.Contains(err.Error(), "21211") {
		t.Fatalf("Dial of a refused number: %v", err)
	}
	if got, _ := e.calls.Get(ctx, u.TenantID, id); got.Metadata[calls.MetaTwilioCallSID] != nil {
		t.Errorf("a refused call has a call SID: %v", got.Metadata)
	}
}

// inboundCall places an inbound call to a new number of a new agent of u and returns
// the connected Twilio side and the call ID.
func (e *twilioEnv) inboundCall(ctx context.Context, u testUser, number string, agentExtra ...string) (*twiliotest.Caller, string) {
	e.t.Helper()
	e.numbers.set(number, telephony.Route{TenantID: u.TenantID, AgentID: e.newAgent(u.TenantID, agentExtra...)})
	callSID := newCallSID()
	r := e.webhook("/inbound_call", inboundForm(callSID, "+15557654321", number), testTwilioToken).wantStatus(e.t, 200)
	st, ok := parseStream(e.t, r.Body)
	if !ok {
		e.t.Fatalf("TwiML %s", r.Body)
	}
	caller, err := twiliotest.Connect(ctx, st.URL, twiliotest.Options{CallSID: callSID, CustomParameters: st.Params})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(caller.Close)
	return caller, st.Params["call_id"]
}

// TestTwilioAgentHangsUp: the model ends the call; the caller hears the goodbye before
// the stream closes, and the record says agent_hangup.
func TestTwilioAgentHangsUp(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"That is all, thanks."},
		Replies:     []openaitest.Reply{{Text: "Goodbye, have a nice day.", ToolCalls: []openaitest.ToolCall{{Name: "end_call"}}}},
	})
	e := newTwilioEnv(t, prov)
	u := e.newUser()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	caller, callID := e.inboundCall(ctx, u, "+15550005000")
	if _, err := caller.WaitSilence(ctx, time.Now(), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	q, err := twiliotest.LoadSpeech("../voice/testdata/hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	asked := caller.Say(q)
	caller.Say(twiliotest.Silence(time.Second))
	select {
	case <-caller.Closed():
	case <-ctx.Done():
		t.Fatal("the agent did not hang up")
	}
	// The goodbye played before the hang-up (the stream waited for its mark).
	qEnd := asked.Add(time.Duration(len(q)) * time.Second / twiliotest.Rate)
	if _, ok := caller.FirstSpeech(qEnd); !ok {
		t.Error("the caller never heard the goodbye")
	}
	done := e.waitCall(ctx, u.TenantID, callID, func(c calls.Call) bool { return !c.Live() })
	if done.CallStatus != calls.StatusCompleted || done.DisconnectionReason != calls.ReasonAgentHangup ||
		!strings.Contains(done.Transcript, "Goodbye, have a nice day.") {
		t.Fatalf("call: %s (%s)\n%s", done.CallStatus, done.DisconnectionReason, done.Transcript)
	}
	// Twilio asks what next: hang up.
	sid, _ := done.Metadata[calls.MetaTwilioCallSID].(string)
	r := e.webhook("/v1/twilio/connect/"+callID, url.Values{"CallSid": {sid}, "AccountSid": {testTwilioAccount}, "CallStatus": {"in-progress"}}, testTwilioToken).wantStatus(t, 200)
	if body := string(r.Body); !strings.Contains(body, "<Hangup>") || strings.Contains(body, "<Dial>") {
		t.Errorf("after the agent hung up, TwiML %s", body)
	}
}

// TestTwilioTransfer: the model transfers the call; Parley closes the stream, and
// Twilio's request to <Connect>'s action URL is answered with a <Dial> to the chosen
// destination (a number, or a SIP URI); the record says call_transfer.
func TestTwilioTransfer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dest, want string }{
		{"+15550009999", "<Dial><Number>+15550009999</Number></Dial>"},
		{"sip:desk@pbx.example.com", "<Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>"},
	} {
		t.Run(tc.dest, func(t *testing.T) {
			t.Parallel()
			prov := openaitest.New(t, openaitest.Config{
				Transcripts: []string{"Can I talk to a person?"},
				Replies: []openaitest.Reply{{Text: "Of course, one moment.", ToolCalls: []openaitest.ToolCall{
					{Name: "transfer_call", Arguments: `{"destination":"` + tc.dest + `"}`}}}},
			})
			e := newTwilioEnv(t, prov)
			u := e.newUser()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			caller, callID := e.inboundCall(ctx, u, "+15550008000", `,"transfer_destinations":["`+tc.dest+`"]`)
			if _, err := caller.WaitSilence(ctx, time.Now(), 300*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			q, err := twiliotest.LoadSpeech("../voice/testdata/hello.wav")
			if err != nil {
				t.Fatal(err)
			}
			caller.Say(q)
			caller.Say(twiliotest.Silence(time.Second))
			select {
			case <-caller.Closed():
			case <-ctx.Done():
				t.Fatal("the stream was not closed for the transfer")
			}
			done := e.waitCall(ctx, u.TenantID, callID, func(c calls.Call) bool { return !c.Live() })
			if done.CallStatus != calls.StatusCompleted || done.DisconnectionReason != calls.ReasonCallTransfer {
				t.Fatalf("call: %s (%s)", done.CallStatus, done.DisconnectionReason)
			}
			sid, _ := done.Metadata[calls.MetaTwilioCallSID].(string)
			form := url.Values{"CallSid": {sid}, "AccountSid": {testTwilioAccount}, "CallStatus": {"in-progress"}}
			e.webhook("/v1/twilio/connect/"+callID, form, "ffffffffffffffffffffffffffffffff").wantError(t, 403)
			r := e.webhook("/v1/twilio/connect/"+callID, form, testTwilioToken).wantStatus(t, 200)
			if !strings.Contains(string(r.Body), tc.want) {
				t.Errorf("TwiML %s, want %s", r.Body, tc.want)
			}
		})
	}
}

// TestTwilioStop: stopping the bridge (server shutdown) ends live calls, recorded as
// api_ended, and refuses new streams.
func TestTwilioStop(t *testing.T) {
	t.Parallel()
	e := newTwilioEnv(t, openaitest.New(t, openaitest.Config{}))
	u := e.newUser()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	caller, callID := e.inboundCall(ctx, u, "+15550006000")
	if _, err := caller.WaitSpeech(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A second call, answered but not yet streaming.
	e.numbers.set("+15550006001", telephony.Route{TenantID: u.TenantID, AgentID: e.newAgent(u.TenantID)})
	r := e.webhook("/inbound_call", inboundForm(newCallSID(), "+15557654321", "+15550006001"), testTwilioToken).wantStatus(t, 200)
	st, _ := parseStream(t, r.Body)

	e.tw.Stop()
	select {
	case <-caller.Closed():
	case <-ctx.Done():
		t.Fatal("the live call's stream was not closed")
	}
	c, err := e.calls.Get(ctx, u.TenantID, callID)
	if err != nil || c.CallStatus != calls.StatusCompleted || c.DisconnectionReason != calls.ReasonAPIEnded {
		t.Fatalf("after Stop: %+v, %v", c, err)
	}
	if status := dialStatus(ctx, t, st.URL); status != http.StatusServiceUnavailable {
		t.Errorf("a new stream after Stop: status %d, want 503", status)
	}
}

// TestTwilioHangup: POST /v1/calls/{id}/end asks Twilio's REST API to
// complete the call; Twilio stops the stream, and the call is recorded as ended by
// the API, not by the caller.
func TestTwilioHangup(t *testing.T) {
	t.Parallel()
	e := newTwilioEnv(t, openaitest.New(t, openaitest.Config{}))
	u := e.newUser()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	caller, callID := e.inboundCall(ctx, u, "+15550007000")
	if _, err := caller.WaitSpeech(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	live := e.waitCall(ctx, u.TenantID, callID, func(c calls.Call) bool { return c.CallStatus == calls.StatusInProgress })
	sid, _ := live.Metadata[calls.MetaTwilioCallSID].(string)
	updated := make(chan string, 1)
	e.rest.mu.Lock()
	e.rest.onUpdate = func(got, status string) {
		if got == sid && status == "completed" {
			caller.Stop() // Twilio ends the call: "stop" on the stream
		}
		updated <- got + " " + status
	}
	e.rest.mu.Unlock()
	// Through the API: POST /v1/calls/{id}/end on a call with no room hangs it up at
	// Twilio.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/calls/"+callID+"/end", nil)
	req.Header.Set("Authorization", "Bearer "+u.Token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /end: %d", resp.StatusCode)
	}
	if got := <-updated; got != sid+" completed" {
		t.Fatalf("Twilio was asked to set %q", got)
	}
	done := e.waitCall(ctx, u.TenantID, callID, func(c calls.Call) bool { return !c.Live() })
	if done.CallStatus != calls.StatusCompleted || done.DisconnectionReason != calls.ReasonAPIEnded {
		t.Fatalf("after Hangup: %s (%s)", done.CallStatus, done.DisconnectionReason)
	}
	reqs := e.rest.calls()
	if last := reqs[len(reqs)-1]; last.Path != "/2010-04-01/Accounts/"+testTwilioAccount+"/Calls/"+sid+".json" || last.User != testTwilioAccount {
		t.Errorf("request %s as %s", last.Path, last.User)
	}
}
