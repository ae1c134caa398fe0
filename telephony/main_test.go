package telephony_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/sipbridge"
	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/telephony/carrier"
)

// One Redis + livekit-server + livekit-sip stack serves every test of the package
// (starting one takes seconds); tests keep apart by using their own numbers and their
// own AgentName, which prefixes the names of the LiveKit objects each service owns.
var stack siptest.SharedStack

func TestMain(m *testing.M) {
	lksdk.SetLogger(protoLogger.GetDiscardLogger())
	code := m.Run()
	stack.Stop()
	dbtest.Shutdown()
	// The SDK's API clients keep idle keep-alive connections in http.DefaultTransport.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireTools fails (under CI) or skips the test when a program it runs is missing.
func requireTools(t *testing.T, sipp bool) {
	t.Helper()
	siptest.RequireTools(t, sipp)
}

// env is a telephony service on a fresh database and the shared LiveKit.
type env struct {
	t     *testing.T
	pool  *pgxpool.Pool
	svc   *telephony.Service
	stack *sipbridge.Stack
	sip   *lksdk.SIPClient
	agent string // the service's AgentName
}

func newEnv(t *testing.T, carriers ...carrier.Carrier) *env {
	t.Helper()
	st := stack.Get(t)
	pool := dbtest.Pool(t)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	agent := "parley-" + strings.ToLower(rand.Text()[:8])
	cfg := telephony.Config{LiveKitURL: st.Server.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret,
		AgentName: agent, Logger: slog.New(slog.DiscardHandler)}
	if len(carriers) > 0 {
		cfg.Carriers = map[string]carrier.Carrier{}
		for _, c := range carriers {
			cfg.Carriers[c.Name()] = c
		}
	}
	svc, err := telephony.New(pool, cfg, box)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, pool: pool, svc: svc, stack: st, agent: agent,
		sip: lksdk.NewSIPClient(st.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)}
}

// tenant inserts a tenant and returns its ID.
func (e *env) tenant() string {
	e.t.Helper()
	id := "tenant_" + strings.ToLower(rand.Text()[:12])
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO tenants (id, name) VALUES ($1, 'Acme')`, id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// agentOf inserts an agent of the tenant and returns its ID.
func (e *env) agentOf(tenantID string) string {
	e.t.Helper()
	id := "agent_" + strings.ToLower(rand.Text()[:12])
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO agents (id, tenant_id, name) VALUES ($1, $2, 'Ada')`, id, tenantID); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// number returns a fresh random E.164 number in the fictional +1 555 01xx range's
// neighbourhood, so tests sharing the LiveKit server never claim the same number.
func number() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9_000_000_000))
	return fmt.Sprintf("+1%d", 1_000_000_000+n.Int64())
}

func ptr[T any](v T) *T { return &v }
