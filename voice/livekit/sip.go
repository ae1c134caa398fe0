package livekit

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

// SIPCaller is the phone line in a room: the participant LiveKit SIP put there, with
// the sip.* attributes it carries (sip.phoneNumber is the remote party's number,
// sip.trunkPhoneNumber Parley's, sip.callID the bridge's call ID…).
type SIPCaller struct {
	Identity   string
	Attributes map[string]string
}

// Errors of WaitSIPActive.
var (
	// ErrSIPCallerGone: the SIP participant left (the phone hung up or rejected the
	// call, or the outbound call was not answered) before it was answered.
	ErrSIPCallerGone = errors.New("livekit: the SIP participant left before the call was answered")
	// ErrNoSIPCaller: no SIP participant became active within the wait.
	ErrNoSIPCaller = errors.New("livekit: no active SIP participant")
	// ErrRoomGone: the agent was disconnected from the room while waiting.
	ErrRoomGone = errors.New("livekit: disconnected from the room")
)

// sipPoll is how often WaitSIPActive looks at the room: the SDK keeps participants and
// their attributes up to date locally, so a look costs nothing on the network, and
// 50 ms is well under what a caller notices between "hello?" and the greeting.
const sipPoll = 50 * time.Millisecond

// WaitSIPActive waits, for at most wait, until a SIP participant in the room has
// sip.callStatus "active", and returns it. Call it between Join and Run for a phone
// call: LiveKit SIP puts the participant in the room, with an audio track, while the
// phone is still ringing (an outbound call: from the moment it dials; an inbound one:
// until the agent has published), and the greeting must not start before the callee
// has picked up.
//
// It fails with ErrSIPCallerGone when a SIP participant was in the room and left
// before it was answered, ErrRoomGone when the agent lost the room (it was deleted),
// ErrNoSIPCaller after wait, and ctx's error when ctx ends.
func (r *Room) WaitSIPActive(ctx context.Context, wait time.Duration) (SIPCaller, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(sipPoll)
	defer tick.Stop()
	seen := ""
	for {
		var present bool
		for _, p := range r.room.GetRemoteParticipants() {
			if p.Kind() != lksdk.ParticipantSIP {
				continue
			}
			if seen == "" {
				seen = p.Identity()
			}
			if p.Identity() == seen {
				present = true
			}
			attrs := p.Attributes()
			if attrs[livekit.AttrSIPCallStatus] == "active" {
				return SIPCaller{Identity: p.Identity(), Attributes: maps.Clone(attrs)}, nil
			}
		}
		if seen != "" && !present {
			return SIPCaller{}, ErrSIPCallerGone
		}
		if r.room.ConnectionState() == lksdk.ConnectionStateDisconnected {
			return SIPCaller{}, ErrRoomGone
		}
		select {
		case <-ctx.Done():
			return SIPCaller{}, ctx.Err()
		case <-deadline.C:
			return SIPCaller{}, ErrNoSIPCaller
		case <-tick.C:
		}
	}
}
