package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/calls/recstore"
	"github.com/parleyhq/parley/voice/audio"
)

// recordingsEnv is newTestEnv with calls and recordings kept in store.
type recordingsEnv struct {
	*testEnv
	svc  *calls.Service
	recs *calls.Recordings
}

func newRecordingsEnv(t *testing.T, store recstore.Store, format string) *recordingsEnv {
	t.Helper()
	e := newTestEnv(t)
	log := slog.New(slog.DiscardHandler)
	svc, err := calls.New(e.pool, calls.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := calls.NewRecordings(svc, calls.RecordingConfig{Store: store, Format: format, TempDir: t.TempDir(), PublicURL: "http://127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1"},
		Deps{Logger: log, Accounts: e.accounts, Agents: e.agents, Calls: svc, Recordings: recs, Limiter: e.limiter, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv, e.api = srv, api
	return &recordingsEnv{testEnv: e, svc: svc, recs: recs}
}

// recordedCall makes a call of u's tenant with a recording of a second and a half of
// tone (the caller side), through the same path a worker takes: Begin, the tap,
// Finish.
func (e *recordingsEnv) recordedCall(u testUser) string {
	e.t.Helper()
	ctx := context.Background()
	agentID := str(e.do("POST", "/v1/agents", u.Token, map[string]any{"agent_name": "Rec"}).wantStatus(e.t, 201).JSON["agent_id"])
	c, err := e.svc.CreateWeb(ctx, u.TenantID, agentID, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.svc.Begin(ctx, c.CallID, time.Now()); err != nil {
		e.t.Fatal(err)
	}
	rec, err := e.recs.Prepare(c.CallID)
	if err != nil {
		e.t.Fatal(err)
	}
	// The tone is fed at once rather than over 1.5 s: the timeline starts 2 s back, so
	// it has all arrived by the clock (audio ahead of the clock would be taken for a
	// transport's backlog).
	rec.Begin(time.Now().Add(-2 * time.Second))
	tone := make([]int16, 960)
	for i := range tone {
		tone[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(i)/48000))
	}
	for range 75 { // 1.5 s of 20 ms frames at 48 kHz
		rec.CallerAudio(audio.Frame{Samples: tone, Rate: 48000})
	}
	if _, err := rec.Finish(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := e.svc.Finish(ctx, c.CallID, calls.Finish{Status: calls.StatusCompleted, Reason: calls.ReasonUserHangup}); err != nil {
		e.t.Fatal(err)
	}
	return c.CallID
}

// getRange fetches path with a Range header.
func (e *recordingsEnv) get(path, token string, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

// fakeS3Store is an S3 store on gofakes3 speaking the real protocol over HTTP.
func fakeS3Store(t *testing.T) recstore.Store {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	admin, err := minio.New(srv.Listener.Addr().String(), &minio.Options{
		Creds: credentials.NewStaticV4("k", "s", ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.MakeBucket(t.Context(), "rec", minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	s, err := recstore.NewS3(recstore.S3Config{Endpoint: srv.URL, Bucket: "rec", Region: "us-east-1", AccessKey: "k", SecretKey: "s", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCallRecordingRoute: GET /v1/calls/{id}/recording streams the file to its tenant
// with the right type and length, honours Range, and is a 404 for everyone else and
// for calls without a recording, from the local store and from S3, in both formats.
func TestCallRecordingRoute(t *testing.T) {
	t.Parallel()
	local := func(t *testing.T) recstore.Store {
		s, err := recstore.NewLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		name, format, ctype string
		store               func(*testing.T) recstore.Store
	}{
		{"local ogg", calls.FormatOgg, "audio/ogg", local},
		{"local wav", calls.FormatWAV, "audio/wav", local},
		{"s3 ogg", calls.FormatOgg, "audio/ogg", fakeS3Store},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newRecordingsEnv(t, c.store(t), c.format)
			owner, other := e.newUser(), e.newUser()
			id := e.recordedCall(owner)
			path := "/v1/calls/" + id + "/recording"

			// The call shows Parley's URL, not the store's.
			call := e.do("GET", "/v1/calls/"+id, owner.Token, nil).wantStatus(t, 200)
			if got := str(call.JSON["recording_url"]); got != "http://127.0.0.1"+path {
				t.Errorf("recording_url %q", got)
			}
			// Whole file, by JWT and by API key.
			var whole []byte
			for _, tok := range []string{owner.Token, owner.APIKey} {
				resp, body := e.get(path, tok)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if ct := resp.Header.Get("Content-Type"); ct != c.ctype {
					t.Errorf("Content-Type %q, want %q", ct, c.ctype)
				}
				if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) || len(body) < 1000 {
					t.Errorf("Content-Length %q for %d bytes", cl, len(body))
				}
				if resp.Header.Get("Accept-Ranges") != "bytes" {
					t.Errorf("Accept-Ranges %q", resp.Header.Get("Accept-Ranges"))
				}
				whole = body
			}
			magic := map[string]string{"audio/ogg": "OggS", "audio/wav": "RIFF"}[c.ctype]
			if !bytes.HasPrefix(whole, []byte(magic)) {
				t.Errorf("body starts %q, want %q", whole[:4], magic)
			}
			if c.ctype == "audio/wav" {
				f, err := audio.ReadWAV(bytes.NewReader(whole))
				if err != nil || f.Duration() < 1400*time.Millisecond || f.Duration() > 1600*time.Millisecond {
					t.Errorf("WAV: %v of audio (%v), want 1.5 s", f.Duration(), err)
				}
			}
			// Ranges: a middle slice, and a suffix.
			for _, r := range []struct {
				header   string
				from, to int // inclusive
			}{{"bytes=100-1099", 100, 1099}, {fmt.Sprintf("bytes=-%d", 500), len(whole) - 500, len(whole) - 1}} {
				resp, body := e.get(path, owner.Token, "Range", r.header)
				if resp.StatusCode != http.StatusPartialContent {
					t.Fatalf("%s: status %d", r.header, resp.StatusCode)
				}
				if want := fmt.Sprintf("bytes %d-%d/%d", r.from, r.to, len(whole)); resp.Header.Get("Content-Range") != want {
					t.Errorf("%s: Content-Range %q, want %q", r.header, resp.Header.Get("Content-Range"), want)
				}
				if !bytes.Equal(body, whole[r.from:r.to+1]) {
					t.Errorf("%s: body differs from the file's bytes", r.header)
				}
			}
			resp, _ := e.get(path, owner.Token, "Range", fmt.Sprintf("bytes=%d-", len(whole)+10))
			if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
				t.Errorf("unsatisfiable range: status %d", resp.StatusCode)
			}

			// Another tenant: 404, never 403, and nothing of the audio.
			for _, tok := range []string{other.Token, other.APIKey} {
				r := e.do("GET", path, tok, nil)
				r.wantError(t, 404)
				if bytes.Contains(r.Body, []byte(magic)) {
					t.Fatal("another tenant got audio")
				}
			}
			// No token: 401. Scopes: calls:read streams it, an agents-only key may not.
			e.do("GET", path, "", nil).wantError(t, 401)
			reader := str(e.do("POST", "/v1/api-keys", owner.Token, map[string]any{"name": "r", "scopes": []string{"calls:read"}}).wantStatus(t, 201).JSON["key"])
			if resp, body := e.get(path, reader); resp.StatusCode != 200 || !bytes.Equal(body, whole) {
				t.Errorf("calls:read key: status %d, %d bytes", resp.StatusCode, len(body))
			}
			agentsOnly := str(e.do("POST", "/v1/api-keys", owner.Token, map[string]any{"name": "a", "scopes": []string{"agents:read"}}).wantStatus(t, 201).JSON["key"])
			e.do("GET", path, agentsOnly, nil).wantError(t, 403)
			// A live call (no recording yet) and a missing call.
			agentID := str(e.do("POST", "/v1/agents", owner.Token, map[string]any{"agent_name": "Live"}).wantStatus(t, 201).JSON["agent_id"])
			live, err := e.svc.CreateWeb(t.Context(), owner.TenantID, agentID, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := e.do("GET", "/v1/calls/"+live.CallID+"/recording", owner.Token, nil)
			r.wantError(t, 404)
			if code := str(r.JSON["code"]); code != "recording_not_found" {
				t.Errorf("live call: code %q, want recording_not_found", code)
			}
			e.do("GET", "/v1/calls/call_nosuchcall/recording", owner.Token, nil).wantError(t, 404)
		})
	}
}

// TestCallRecordingRouteUnavailable: a server without recordings answers 503, as the
// other call routes do without their service.
func TestCallRecordingRouteUnavailable(t *testing.T) {
	t.Parallel()
	e := newCallsTestEnv(t, nil)
	u := e.newUser()
	e.do("GET", "/v1/calls/call_x/recording", u.Token, nil).wantError(t, 503)
	plain := newTestEnv(t)
	v := plain.newUser()
	plain.do("GET", "/v1/calls/call_x/recording", v.Token, nil).wantError(t, 503)
}
