package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/twitchtv/twirp"
)

// Rooms is what the Service needs from LiveKit; *LiveKit implements it.
type Rooms interface {
	// CreateCallRoom creates a room and dispatches the Parley agent into it with
	// metadata (a DispatchMetadata in JSON).
	CreateCallRoom(ctx context.Context, roomName, metadata string) error
	// BrowserToken mints the caller's token for exactly that room.
	BrowserToken(roomName, identity, name string) (string, error)
	// DeleteRoom removes the room and everyone in it; a missing room is not an error.
	DeleteRoom(ctx context.Context, roomName string) error
	// Health reports whether LiveKit is configured and answering.
	Health(ctx context.Context) (LiveKitHealth, error)
	// URL is the websocket URL clients connect to.
	URL() string
	// ExistingRooms reports which of names are open rooms.
	ExistingRooms(ctx context.Context, names []string) (map[string]bool, error)
}

// LiveKitConfig configures the rooms adapter.
type LiveKitConfig struct {
	// URL is the LiveKit server (ws:// or wss://, as clients use it; the API calls go to
	// the same host over http(s)). APIKey and APISecret sign every request and token.
	URL, APIKey, APISecret string
	// PublicURL is the LiveKit URL browsers are told to connect to, when it differs
	// from URL (a server reached on an internal name, ws://livekit:7880 in Docker
	// Compose, that browsers reach as wss://livekit.example.com). Default URL.
	PublicURL string
	// AgentName is the agent name Parley's voice workers register with and rooms
	// dispatch (default "parley"). Two Parley installations sharing one LiveKit need
	// different names.
	AgentName string
	// TokenTTL is how long a browser token may be used to join (default 10 minutes).
	// It only has to last until the browser connects: LiveKit refreshes the token of a
	// connected participant itself, so a long call needs no long token, and a token
	// that leaks after the call is soon useless.
	TokenTTL time.Duration
	// EmptyTimeout is how long a new room waits for its first participant (default 2
	// minutes: the dispatched agent normally joins within a second, the browser within
	// a few; a room nobody joins is closed rather than left for the agent to wait in).
	EmptyTimeout time.Duration
	// DepartureTimeout is how long a room stays open after the last participant left
	// (default 10 s: enough for a browser that dropped to reconnect; after that the
	// call is over).
	DepartureTimeout time.Duration
	// MaxParticipants caps each call room (default 3: the caller, the agent, and one
	// spare for a transfer target or recorder). A leaked token cannot turn a call into a
	// conference.
	MaxParticipants int
	// HealthTimeout bounds Health's probe (default 3 s).
	HealthTimeout time.Duration
}

func (c *LiveKitConfig) setDefaults() {
	if c.AgentName == "" {
		c.AgentName = "parley"
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 10 * time.Minute
	}
	if c.EmptyTimeout == 0 {
		c.EmptyTimeout = 2 * time.Minute
	}
	if c.DepartureTimeout == 0 {
		c.DepartureTimeout = 10 * time.Second
	}
	if c.MaxParticipants == 0 {
		c.MaxParticipants = 3
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = 3 * time.Second
	}
}

// Configured reports whether URL and both keys are set.
func (c LiveKitConfig) Configured() bool {
	return c.URL != "" && c.APIKey != "" && c.APISecret != ""
}

func (c LiveKitConfig) validate() error {
	if !c.Configured() {
		return errors.New("calls: LiveKit needs URL, APIKey and APISecret")
	}
	if !strings.HasPrefix(c.URL, "ws://") && !strings.HasPrefix(c.URL, "wss://") &&
		!strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("calls: LiveKit URL %q must start with ws://, wss://, http:// or https://", c.URL)
	}
	if c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour {
		return fmt.Errorf("calls: LiveKit TokenTTL %s must be from 1m to 24h", c.TokenTTL)
	}
	if c.MaxParticipants < 2 {
		return errors.New("calls: LiveKit MaxParticipants must be at least 2 (caller and agent)")
	}
	return nil
}

// DispatchMetadata is what a call room's agent dispatch (and the room) carries, in
// JSON: the worker reads the call ID from it. Rooms Parley creates (web calls, outbound
// calls) name the call; an inbound phone call's room is created by LiveKit SIP from
// the number's dispatch rule, before any record exists, and names the number called
// instead (the worker routes it and creates the record).
type DispatchMetadata struct {
	CallID      string `json:"call_id,omitempty"`
	PhoneNumber string `json:"phone_number,omitempty"`
	// Unbound marks a phone call that reached a SIP trunk's catch-all dispatch rule
	// (telephony.UnboundMetadata): the number called has no agent, and the worker turns
	// the call away without answering it.
	Unbound bool `json:"unbound,omitempty"`
}

// ParseDispatchMetadata decodes a dispatch's metadata: it must name a call or a phone
// number, or mark an unbound phone call.
func ParseDispatchMetadata(s string) (DispatchMetadata, error) {
	var m DispatchMetadata
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return m, fmt.Errorf("calls: dispatch metadata: %w", err)
	}
	if m.CallID == "" && m.PhoneNumber == "" && !m.Unbound {
		return m, errors.New("calls: dispatch metadata has neither call_id nor phone_number")
	}
	return m, nil
}

// LiveKit creates call rooms, mints browser tokens and deletes rooms through LiveKit's
// server API. It is safe for concurrent use.
type LiveKit struct {
	cfg   LiveKitConfig
	rooms *lksdk.RoomServiceClient
}

// NewLiveKit returns the adapter. It does not contact the server (Health does).
func NewLiveKit(cfg LiveKitConfig) (*LiveKit, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &LiveKit{cfg: cfg, rooms: lksdk.NewRoomServiceClient(cfg.URL, cfg.APIKey, cfg.APISecret)}, nil
}

// URL is the websocket URL browsers connect to.
func (l *LiveKit) URL() string {
	u := l.cfg.URL
	if l.cfg.PublicURL != "" {
		u = l.cfg.PublicURL
	}
	u = strings.Replace(u, "https://", "wss://", 1)
	return strings.Replace(u, "http://", "ws://", 1)
}

// AgentName is the agent name rooms dispatch.
func (l *LiveKit) AgentName() string { return l.cfg.AgentName }

// CreateCallRoom creates roomName with the Parley agent dispatched into it: LiveKit
// hands the job to a registered voice worker as soon as the room exists, with metadata
// (the room carries the same metadata). Creating a room that exists is not an error
// (LiveKit returns the existing one), which makes retries safe.
func (l *LiveKit) CreateCallRoom(ctx context.Context, roomName, metadata string) error {
	_, err := l.rooms.CreateRoom(ctx, &livekit.CreateRoomRequest{
		Name:             roomName,
		Metadata:         metadata,
		EmptyTimeout:     uint32(l.cfg.EmptyTimeout / time.Second),
		DepartureTimeout: uint32(l.cfg.DepartureTimeout / time.Second),
		MaxParticipants:  uint32(l.cfg.MaxParticipants),
		Agents:           []*livekit.RoomAgentDispatch{{AgentName: l.cfg.AgentName, Metadata: metadata}},
	})
	if err != nil {
		return fmt.Errorf("calls: livekit create room %s: %w", roomName, err)
	}
	return nil
}

// BrowserToken mints the caller's access token: it may join roomName and nothing else
// (no room creation, listing or admin), subscribe to the agent, and publish its
// microphone only: no camera, no screen share.
//
// Data publishing is off. Captions reach the browser as the agent's text streams, which
// need only the agent's permission and the browser's subscription; the engine takes no
// text or RPC from the caller, so letting a public browser inject data packets would
// only widen what a leaked token can do. A future text-input feature turns it on.
func (l *LiveKit) BrowserToken(roomName, identity, name string) (string, error) {
	if roomName == "" || identity == "" {
		return "", errors.New("calls: browser token needs a room and an identity")
	}
	grant := &auth.VideoGrant{RoomJoin: true, Room: roomName}
	grant.SetCanPublish(true)
	grant.SetCanPublishSources([]livekit.TrackSource{livekit.TrackSource_MICROPHONE})
	grant.SetCanSubscribe(true)
	grant.SetCanPublishData(false)
	grant.SetCanUpdateOwnMetadata(false)
	tok, err := auth.NewAccessToken(l.cfg.APIKey, l.cfg.APISecret).
		SetVideoGrant(grant).
		SetIdentity(identity).
		SetName(name).
		SetValidFor(l.cfg.TokenTTL).
		ToJWT()
	if err != nil {
		return "", fmt.Errorf("calls: livekit token: %w", err)
	}
	return tok, nil
}

// DeleteRoom removes a room and disconnects everyone in it, the agent included (its
// session then ends as stopped, with the caller still there: api_ended). A room that
// does not exist (it timed out, or was deleted already) is not an error.
func (l *LiveKit) DeleteRoom(ctx context.Context, roomName string) error {
	_, err := l.rooms.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: roomName})
	var te twirp.Error
	if errors.As(err, &te) && te.Code() == twirp.NotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("calls: livekit delete room %s: %w", roomName, err)
	}
	return nil
}

// ExistingRooms implements Rooms: one ListRooms request for all of names.
func (l *LiveKit) ExistingRooms(ctx context.Context, names []string) (map[string]bool, error) {
	out := make(map[string]bool, len(names))
	if len(names) == 0 {
		return out, nil
	}
	res, err := l.rooms.ListRooms(ctx, &livekit.ListRoomsRequest{Names: names})
	if err != nil {
		return nil, fmt.Errorf("calls: livekit list rooms: %w", err)
	}
	for _, r := range res.Rooms {
		out[r.Name] = true
	}
	return out, nil
}

// LiveKitHealth is a LiveKit configuration check (GET /v1/livekit/health).
type LiveKitHealth struct {
	// Status is "ok", "unconfigured", "unreachable" or "unauthorized".
	Status     string `json:"status" jsonschema:"enum=ok,enum=unconfigured,enum=unreachable,enum=unauthorized"`
	Configured bool   `json:"configured"`
	// Reachable: the server answered. CredentialsValid: it accepted the API key.
	Reachable        bool   `json:"reachable"`
	CredentialsValid bool   `json:"credentials_valid"`
	URL              string `json:"url,omitempty"`
	AgentName        string `json:"agent_name,omitempty"`
	LatencyMS        int64  `json:"latency_ms"`
	Error            string `json:"error,omitempty"`
}

// healthProbeRoom is a room name no call uses: listing just it is the cheapest
// authenticated request the server API has, and it checks the credentials too.
const healthProbeRoom = "parley-health-probe"

// Health probes the server with a cheap authenticated request (bounded by
// HealthTimeout). The error is non-nil when LiveKit is not usable; Health is filled
// either way.
func (l *LiveKit) Health(ctx context.Context) (LiveKitHealth, error) {
	h := LiveKitHealth{Configured: true, URL: l.URL(), AgentName: l.cfg.AgentName}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.HealthTimeout)
	defer cancel()
	start := time.Now()
	_, err := l.rooms.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{healthProbeRoom}})
	h.LatencyMS = time.Since(start).Milliseconds()
	if err == nil {
		h.Status, h.Reachable, h.CredentialsValid = "ok", true, true
		return h, nil
	}
	h.Error = err.Error()
	var te twirp.Error
	if errors.As(err, &te) && (te.Code() == twirp.Unauthenticated || te.Code() == twirp.PermissionDenied) {
		h.Status, h.Reachable = "unauthorized", true
		return h, fmt.Errorf("calls: livekit refused the API key: %w", err)
	}
	h.Status = "unreachable"
	return h, fmt.Errorf("calls: livekit unreachable: %w", err)
}
