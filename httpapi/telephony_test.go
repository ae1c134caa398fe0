package httpapi

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/sipbridge"
	"github.com/parleyhq/parley/telephony"
)

// telephonyEnv is newTestEnv plus a telephony service on a livekit-server with Redis
// (LiveKit's SIP API keeps trunks and rules there; without Redis it refuses them).
type telephonyEnv struct {
	*testEnv
	lk    *lkserver.Server
	sip   *lksdk.SIPClient
	agent string // the service's AgentName, which prefixes its LiveKit objects
}

// startSIPLiveKit starts Redis and a livekit-server on it for the test (skipped when
// either is missing, unless CI=true).
func startSIPLiveKit(t *testing.T) *lkserver.Server {
	t.Helper()
	var missing []string
	if _, err := lkserver.FindBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := sipbridge.FindRedis(); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "" {
			t.Skip(strings.Join(missing, "; "))
		}
		t.Fatal(strings.Join(missing, "; "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	redis, err := sipbridge.StartRedis(ctx, filepath.Join(dir, "redis"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(redis.Stop)
	srv, err := lkserver.Start(ctx, lkserver.Config{WorkDir: filepath.Join(dir, "livekit"), RedisAddr: redis.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func newTelephonyEnv(t *testing.T, lk *lkserver.Server) *telephonyEnv {
	t.Helper()
	e := newTestEnv(t)
	log := slog.New(slog.DiscardHandler)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	agent := "parley-" + strings.ToLower(rand.Text()[:8])
	tel, err := telephony.New(e.pool, telephony.Config{LiveKitURL: lk.URL(), APIKey: lkserver.DevKey,
		APISecret: lkserver.DevSecret, AgentName: agent, Logger: log}, box)
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1"},
		Deps{Logger: log, Accounts: e.accounts, Agents: e.agents, Telephony: tel, Limiter: e.limiter, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv, e.api = srv, api
	return &telephonyEnv{testEnv: e, lk: lk, agent: agent,
		sip: lksdk.NewSIPClient(lk.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)}
}

// e164 returns a fresh random number, so tests sharing a LiveKit never claim the same.
func e164() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9_000_000_000))
	return fmt.Sprintf("+1%d", 1_000_000_000+n.Int64())
}

// rules returns the LiveKit dispatch rules of this env's service that list numbers: the
// bound numbers' rules, not the trunks' own (which list none and take the calls to
// unbound numbers).
func (e *telephonyEnv) rules() []*livekit.SIPDispatchRuleInfo {
	e.t.Helper()
	res, err := e.sip.ListSIPDispatchRule(context.Background(), &livekit.ListSIPDispatchRuleRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*livekit.SIPDispatchRuleInfo
	for _, r := range res.Items {
		if strings.HasPrefix(r.Name, "parley/"+e.agent+"/") && len(r.Numbers) > 0 {
			out = append(out, r)
		}
	}
	return out
}

func (e *telephonyEnv) inboundNumbers(id string) []string {
	e.t.Helper()
	res, err := e.sip.GetSIPInboundTrunksByIDs(context.Background(), []string{id})
	if err != nil || len(res) != 1 || res[0] == nil {
		e.t.Fatalf("inbound trunk %s: %v %v", id, res, err)
	}
	return res[0].Numbers
}

// The phone-number and SIP-trunk routes, on one LiveKit: CRUD with LiveKit in step,
// write-only passwords, bind/unbind changing dispatch rules, 422s with details, and
// 404 for another tenant's trunk or number on every route.
func TestTelephonyRoutes(t *testing.T) {
	t.Parallel()
	lk := startSIPLiveKit(t)

	t.Run("trunks", func(t *testing.T) {
		t.Parallel()
		e := newTelephonyEnv(t, lk)
		u := e.newUser()
		r := e.do("POST", "/v1/sip-trunks", u.APIKey, map[string]any{
			"name": "Carrier", "outbound_address": "sip.example.com:5060", "outbound_transport": "tls",
			"outbound_username": "acct", "outbound_password": "hunter2-out",
			"inbound_allowed_addresses": []string{"192.0.2.1", "198.51.100.0/24"},
			"inbound_username":          "in", "inbound_password": "hunter2-in",
		}).wantStatus(t, 201)
		id := str(r.JSON["trunk_id"])
		if !strings.HasPrefix(id, "trk_") || r.JSON["outbound_password"] != "********" || r.JSON["inbound_password"] != "********" ||
			strings.Contains(string(r.Body), "hunter2") || str(r.JSON["livekit_inbound_trunk_id"]) == "" || str(r.JSON["livekit_outbound_trunk_id"]) == "" {
			t.Fatalf("created %s", r.Body)
		}
		// Sealed in the database, in the clear in LiveKit (it must answer digest auth).
		var sealed string
		if err := e.pool.QueryRow(context.Background(), `SELECT outbound_password FROM sip_trunks WHERE id = $1`, id).Scan(&sealed); err != nil {
			t.Fatal(err)
		}
		if !crypt.IsSealed(sealed) || strings.Contains(sealed, "hunter2") {
			t.Errorf("stored password %q", sealed)
		}
		out, err := e.sip.GetSIPOutboundTrunksByIDs(context.Background(), []string{str(r.JSON["livekit_outbound_trunk_id"])})
		if err != nil || out[0] == nil || out[0].AuthPassword != "hunter2-out" || out[0].Transport != livekit.SIPTransport_SIP_TRANSPORT_TLS {
			t.Fatalf("LiveKit outbound trunk %v %v", out, err)
		}

		g := e.do("GET", "/v1/sip-trunks/"+id, u.Token, nil).wantStatus(t, 200)
		if strings.Contains(string(g.Body), "hunter2") || g.JSON["name"] != "Carrier" {
			t.Errorf("get %s", g.Body)
		}
		l := e.do("GET", "/v1/sip-trunks", u.Token, nil).wantStatus(t, 200)
		if l.JSON["total"] != float64(1) || len(l.JSON["sip_trunks"].([]any)) != 1 {
			t.Errorf("list %s", l.Body)
		}
		p := e.do("PATCH", "/v1/sip-trunks/"+id, u.Token, map[string]any{"name": "Renamed", "outbound_password": "********"}).wantStatus(t, 200)
		if p.JSON["name"] != "Renamed" || p.JSON["outbound_password"] != "********" {
			t.Errorf("patch %s", p.Body)
		}
		out, _ = e.sip.GetSIPOutboundTrunksByIDs(context.Background(), []string{str(r.JSON["livekit_outbound_trunk_id"])})
		if out[0].AuthPassword != "hunter2-out" {
			t.Errorf("the mask replaced the password: %q", out[0].AuthPassword)
		}

		// The trunk test on a port nobody listens on: a report, not an error.
		port, _ := pgcluster.FreePort()
		e.do("PATCH", "/v1/sip-trunks/"+id, u.Token, map[string]any{"outbound_address": "127.0.0.1:" + strconv.Itoa(port), "outbound_transport": "tcp"}).wantStatus(t, 200)
		ts := e.do("POST", "/v1/sip-trunks/"+id+"/test", u.Token, nil).wantStatus(t, 200)
		if ts.JSON["reachable"] != false || ts.JSON["status_code"] != float64(0) || str(ts.JSON["detail"]) == "" {
			t.Errorf("test %s", ts.Body)
		}

		e.do("DELETE", "/v1/sip-trunks/"+id, u.Token, nil).wantStatus(t, 204)
		e.do("GET", "/v1/sip-trunks/"+id, u.Token, nil).wantError(t, 404)
		in, err := e.sip.GetSIPInboundTrunksByIDs(context.Background(), []string{str(r.JSON["livekit_inbound_trunk_id"])})
		if err != nil || in[0] != nil {
			t.Errorf("LiveKit inbound trunk after delete: %v %v", in, err)
		}
	})

	t.Run("validation", func(t *testing.T) {
		t.Parallel()
		e := newTelephonyEnv(t, lk)
		u := e.newUser()
		e.do("POST", "/v1/sip-trunks", u.Token, map[string]any{}).wantError(t, 422, "name")
		e.do("POST", "/v1/sip-trunks", u.Token, map[string]any{"name": "x", "outbound_address": "sip:a@b", "outbound_transport": "smoke",
			"inbound_allowed_addresses": []string{"300.1.1.1"}}).wantError(t, 422, "outbound_address", "outbound_transport", "inbound_allowed_addresses")
		e.do("POST", "/v1/sip-trunks", u.Token, map[string]any{"name": 5}).wantError(t, 400)
		tr := str(e.do("POST", "/v1/sip-trunks", u.Token, map[string]any{"name": "x"}).wantStatus(t, 201).JSON["trunk_id"])
		e.do("POST", "/v1/phone-numbers", u.Token, map[string]any{"phone_number": "555-0100", "trunk_id": tr}).wantError(t, 422, "phone_number")
		e.do("POST", "/v1/phone-numbers", u.Token, map[string]any{"phone_number": e164()}).wantError(t, 422, "trunk_id")
		e.do("POST", "/v1/phone-numbers", u.Token, map[string]any{"phone_number": e164(), "trunk_id": tr, "provider": "pots"}).wantError(t, 422, "provider")
		e.do("POST", "/v1/phone-numbers", u.Token, map[string]any{"phone_number": e164(), "trunk_id": "trk_nope"}).wantError(t, 404)
		n := e164()
		e.do("POST", "/v1/phone-numbers", u.Token, map[string]any{"phone_number": n, "trunk_id": tr}).wantStatus(t, 201)
		e.do("POST", "/v1/phone-numbers", u.Token, map[string]any{"phone_number": n, "trunk_id": tr}).wantError(t, 409)
		e.do("POST", "/v1/phone-numbers/"+n+"/bind", u.Token, map[string]any{}).wantError(t, 422, "agent_id")
		e.do("POST", "/v1/phone-numbers/"+n+"/bind", u.Token, map[string]any{"agent_id": "agent_nope"}).wantError(t, 404)
		e.do("POST", "/v1/phone-numbers/buy", u.Token, map[string]any{"provider": "telnyx", "trunk_id": tr}).wantError(t, 422, "provider")
		e.do("POST", "/v1/phone-numbers/buy", u.Token, map[string]any{}).wantError(t, 422, "provider")
		e.do("DELETE", "/v1/sip-trunks/"+tr, u.Token, nil).wantError(t, 409)
	})

	t.Run("numbers", func(t *testing.T) {
		t.Parallel()
		e := newTelephonyEnv(t, lk)
		u := e.newUser()
		agent := str(e.do("POST", "/v1/agents", u.Token, map[string]any{"agent_name": "Ava"}).wantStatus(t, 201).JSON["agent_id"])
		tr := e.do("POST", "/v1/sip-trunks", u.Token, map[string]any{"name": "x", "inbound_allowed_addresses": []string{"127.0.0.1"}}).wantStatus(t, 201)
		trunk, inbound := str(tr.JSON["trunk_id"]), str(tr.JSON["livekit_inbound_trunk_id"])
		n := e164()
		c := e.do("POST", "/v1/phone-numbers", u.APIKey, map[string]any{"phone_number": n, "trunk_id": trunk, "nickname": "Main"}).wantStatus(t, 201)
		if c.JSON["phone_number"] != n || c.JSON["agent_id"] != nil || c.JSON["provider"] != "sip" || c.JSON["trunk_id"] != trunk {
			t.Fatalf("created %s", c.Body)
		}
		id := str(c.JSON["phone_number_id"])
		// The number in the path: raw "+", escaped, or the ID.
		for _, p := range []string{n, url.PathEscape(n), "%2B" + n[1:], id} {
			if g := e.do("GET", "/v1/phone-numbers/"+p, u.Token, nil).wantStatus(t, 200); g.JSON["phone_number_id"] != id {
				t.Errorf("GET %s: %s", p, g.Body)
			}
		}
		b := e.do("POST", "/v1/phone-numbers/"+n+"/bind", u.Token, map[string]any{"agent_id": agent}).wantStatus(t, 200)
		if b.JSON["agent_id"] != agent || str(b.JSON["livekit_dispatch_rule_id"]) == "" {
			t.Fatalf("bind %s", b.Body)
		}
		rules := e.rules()
		if len(rules) != 1 || !slices.Equal(rules[0].Numbers, []string{n}) || !slices.Equal(rules[0].TrunkIds, []string{inbound}) ||
			rules[0].GetRule().GetDispatchRuleIndividual().GetRoomPrefix() != "call-" ||
			rules[0].GetRoomConfig().GetAgents()[0].GetMetadata() != `{"phone_number":"`+n+`"}` {
			t.Fatalf("rules %v", rules)
		}
		if got := e.inboundNumbers(inbound); !slices.Equal(got, []string{n}) {
			t.Errorf("inbound numbers %v", got)
		}
		e.do("POST", "/v1/phone-numbers/"+n+"/unbind", u.Token, nil).wantStatus(t, 200)
		// The number stays in its inbound trunk: the trunk's rule takes its calls now.
		if len(e.rules()) != 0 || !slices.Contains(e.inboundNumbers(inbound), n) {
			t.Errorf("after unbind: rules %v, inbound %v", e.rules(), e.inboundNumbers(inbound))
		}
		a := e.do("POST", "/v1/phone-numbers/"+id+"/assign", u.Token, map[string]any{"agent_id": agent}).wantStatus(t, 200)
		if a.JSON["agent_id"] != agent || len(e.rules()) != 1 {
			t.Errorf("assign %s", a.Body)
		}
		p := e.do("PATCH", "/v1/phone-numbers/"+n, u.Token, map[string]any{"nickname": "Support", "agent_id": ""}).wantStatus(t, 200)
		if p.JSON["nickname"] != "Support" || p.JSON["agent_id"] != nil || len(e.rules()) != 0 {
			t.Errorf("patch %s", p.Body)
		}
		l := e.do("GET", "/v1/phone-numbers", u.Token, nil).wantStatus(t, 200)
		if l.JSON["total"] != float64(1) {
			t.Errorf("list %s", l.Body)
		}
		e.do("POST", "/v1/phone-numbers/"+n+"/bind", u.Token, map[string]any{"agent_id": agent}).wantStatus(t, 200)
		e.do("DELETE", "/v1/phone-numbers/"+n, u.Token, nil).wantStatus(t, 204)
		e.do("GET", "/v1/phone-numbers/"+n, u.Token, nil).wantError(t, 404)
		if len(e.rules()) != 0 {
			t.Errorf("rules after delete %v", e.rules())
		}
	})

	t.Run("tenancy", func(t *testing.T) {
		t.Parallel()
		e := newTelephonyEnv(t, lk)
		owner, other := e.newUser(), e.newUser()
		agent := str(e.do("POST", "/v1/agents", owner.Token, map[string]any{"agent_name": "Ava"}).wantStatus(t, 201).JSON["agent_id"])
		otherAgent := str(e.do("POST", "/v1/agents", other.Token, map[string]any{"agent_name": "Eve"}).wantStatus(t, 201).JSON["agent_id"])
		trunk := str(e.do("POST", "/v1/sip-trunks", owner.Token, map[string]any{"name": "x", "outbound_address": "127.0.0.1"}).wantStatus(t, 201).JSON["trunk_id"])
		n := e164()
		id := str(e.do("POST", "/v1/phone-numbers", owner.Token, map[string]any{"phone_number": n, "trunk_id": trunk, "agent_id": agent}).wantStatus(t, 201).JSON["phone_number_id"])
		otherTrunk := str(e.do("POST", "/v1/sip-trunks", other.Token, map[string]any{"name": "y"}).wantStatus(t, 201).JSON["trunk_id"])
		otherN := e164()
		e.do("POST", "/v1/phone-numbers", other.Token, map[string]any{"phone_number": otherN, "trunk_id": otherTrunk}).wantStatus(t, 201)

		for _, rq := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/sip-trunks/" + trunk, nil},
			{"PATCH", "/v1/sip-trunks/" + trunk, map[string]any{"name": "mine"}},
			{"DELETE", "/v1/sip-trunks/" + trunk, nil},
			{"POST", "/v1/sip-trunks/" + trunk + "/test", nil},
			{"GET", "/v1/phone-numbers/" + n, nil},
			{"GET", "/v1/phone-numbers/" + id, nil},
			{"PATCH", "/v1/phone-numbers/" + n, map[string]any{"nickname": "mine"}},
			{"DELETE", "/v1/phone-numbers/" + n, nil},
			{"POST", "/v1/phone-numbers/" + n + "/bind", map[string]any{"agent_id": otherAgent}},
			{"POST", "/v1/phone-numbers/" + n + "/assign", map[string]any{"agent_id": otherAgent}},
			{"POST", "/v1/phone-numbers/" + n + "/unbind", nil},
			// The other tenant's own objects pointed at the owner's.
			{"POST", "/v1/phone-numbers", map[string]any{"phone_number": e164(), "trunk_id": trunk}},
			{"POST", "/v1/phone-numbers/" + otherN + "/bind", map[string]any{"agent_id": agent}},
			{"PATCH", "/v1/phone-numbers/" + otherN, map[string]any{"trunk_id": trunk}},
		} {
			e.do(rq.method, rq.path, other.APIKey, rq.body).wantError(t, 404)
		}
		// Nothing changed for the owner, and the lists do not leak.
		g := e.do("GET", "/v1/phone-numbers/"+n, owner.Token, nil).wantStatus(t, 200)
		if g.JSON["agent_id"] != agent || g.JSON["nickname"] != "" {
			t.Errorf("owner's number changed: %s", g.Body)
		}
		if l := e.do("GET", "/v1/phone-numbers", other.Token, nil).wantStatus(t, 200); l.JSON["total"] != float64(1) {
			t.Errorf("other's list %s", l.Body)
		}
		if l := e.do("GET", "/v1/sip-trunks", other.Token, nil).wantStatus(t, 200); l.JSON["total"] != float64(1) {
			t.Errorf("other's trunks %s", l.Body)
		}
		// The same number cannot be registered twice, whoever asks.
		e.do("POST", "/v1/phone-numbers", other.Token, map[string]any{"phone_number": n, "trunk_id": otherTrunk}).wantError(t, 409)
	})
}

// Without a telephony service the routes answer 503, not 500.
func TestTelephonyAbsent(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	u := e.newUser()
	e.do("GET", "/v1/phone-numbers", u.Token, nil).wantError(t, 503)
	e.do("POST", "/v1/sip-trunks", u.Token, map[string]any{"name": "x"}).wantError(t, 503)
}
