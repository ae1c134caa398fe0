package telephony_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/telephony"
)

// Calls to a trunk's numbers, through the real bridge. A call to a bound number rings
// into a room call-* by the number's own rule, with Parley's agent dispatched carrying
// the number called. A call to an unbound number, which is in the trunk's numbers too,
// reaches the trunk's rule instead (LiveKit prefers the rule naming the number) and
// rings into a room whose dispatch says {"unbound":true}; the worker then deletes that
// room unjoined, and the bridge refuses the call with 486. The test plays the worker's
// part itself, so it proves the rejection end to end without one.
func TestInboundCalls(t *testing.T) {
	t.Parallel()
	requireTools(t, true)
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel) // not defer: the subtests run in parallel, after this function returns
	tenant := e.tenant()
	agent := e.agentOf(tenant)
	tr := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1/32"}})
	bound, unbound := number(), number()
	pBound, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: bound, TrunkID: tr.ID, AgentID: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: unbound, TrunkID: tr.ID}); err != nil {
		t.Fatal(err)
	}

	rooms := lksdk.NewRoomServiceClient(e.stack.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)
	dispatch := lksdk.NewAgentDispatchServiceClient(e.stack.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)

	// call places a call from a fresh caller number to called with the scenario and
	// waits until it rings in a room: it returns the room, the bridge's participant
	// there and the room's agent dispatch, and sipp.
	type ringing struct {
		room     string
		sip      *livekit.ParticipantInfo
		dispatch *livekit.AgentDispatch
		sipp     *siptest.Sipp
	}
	// dir is sipp's directory, where the scenario and the audio it plays are.
	call := func(t *testing.T, called, dir, scenario string) ringing {
		caller := number()
		r := ringing{sipp: siptest.StartSipp(t, ctx, siptest.SippConfig{Dir: dir, Scenario: scenario, Timeout: 30 * time.Second,
			Args: []string{"-s", called, "-key", "caller", caller, "-m", "1", e.stack.Bridge.SIPAddr()}})}
		eventually(t, ctx, "the call's room", func() bool {
			select {
			case <-r.sipp.Done():
				t.Fatalf("sipp ended before a room appeared (%v):\n%s", r.sipp.Err(), r.sipp.Output())
			default:
			}
			res, err := rooms.ListRooms(ctx, &livekit.ListRoomsRequest{})
			if err != nil {
				return false
			}
			for _, x := range res.Rooms {
				if strings.HasPrefix(x.Name, "call-") && strings.Contains(x.Name, caller) {
					r.room = x.Name
					return true
				}
			}
			return false
		})
		eventually(t, ctx, "the SIP participant", func() bool {
			res, err := rooms.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: r.room})
			if err != nil {
				return false
			}
			for _, x := range res.Participants {
				if x.Kind == livekit.ParticipantInfo_SIP {
					r.sip = x
					return true
				}
			}
			return false
		})
		eventually(t, ctx, "the agent dispatch", func() bool {
			res, err := dispatch.ListDispatch(ctx, &livekit.ListAgentDispatchRequest{Room: r.room})
			if err != nil || len(res.AgentDispatches) == 0 {
				return false
			}
			if len(res.AgentDispatches) != 1 {
				t.Fatalf("dispatches %v", res.AgentDispatches)
			}
			r.dispatch = res.AgentDispatches[0]
			return true
		})
		if got := r.sip.Attributes[livekit.AttrSIPTrunkNumber]; got != called {
			t.Errorf("called number %q, want %s", got, called)
		}
		if got := r.sip.Attributes[livekit.AttrSIPTrunkID]; got != tr.LiveKitInboundTrunkID {
			t.Errorf("trunk %q, want %s", got, tr.LiveKitInboundTrunkID)
		}
		if r.dispatch.AgentName != e.agent {
			t.Errorf("dispatched agent %q, want %q", r.dispatch.AgentName, e.agent)
		}
		return r
	}
	// hangUp deletes the call's room, as the worker does to refuse a call (no agent
	// worker runs here, so nothing else would end the ringing), and returns sipp's exit
	// and the SIP messages it saw.
	hangUp := func(t *testing.T, r ringing) (string, error) {
		if _, err := rooms.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: r.room}); err != nil {
			t.Fatal(err)
		}
		var err error
		select {
		case <-r.sipp.Done():
			err = r.sipp.Err()
		case <-time.After(15 * time.Second):
			err = errors.New("sipp still running 15 s after the room was deleted")
		}
		return r.sipp.Messages(), err
	}

	t.Run("unbound", func(t *testing.T) {
		t.Parallel()
		r := call(t, unbound, "testdata", "uac_invite.xml")
		if got := r.sip.Attributes[livekit.AttrSIPDispatchRuleID]; got != tr.LiveKitDispatchRuleID {
			t.Errorf("the call took rule %q, want the trunk's %s", got, tr.LiveKitDispatchRuleID)
		}
		if r.dispatch.Metadata != `{"unbound":true}` {
			t.Errorf("dispatch metadata %s", r.dispatch.Metadata)
		}
		msgs, err := hangUp(t, r)
		// The scenario succeeds only on 486 after ringing (see uac_invite.xml).
		if err != nil || !strings.Contains(msgs, "SIP/2.0 486") || strings.Contains(msgs, "SIP/2.0 200") {
			t.Fatalf("the refused call did not end with 486 (sipp: %v):\n%s", err, tail(msgs))
		}
	})

	t.Run("bound", func(t *testing.T) {
		t.Parallel()
		// rtp_stream opens speech8k.ulaw from sipp's directory.
		r := call(t, bound, "../internal/sipbridge/testdata", "uac_pcmu.xml")
		if got := r.sip.Attributes[livekit.AttrSIPDispatchRuleID]; got != pBound.LiveKitDispatchRuleID {
			t.Errorf("the call took rule %q, want the number's %s", got, pBound.LiveKitDispatchRuleID)
		}
		if r.dispatch.Metadata != `{"phone_number":"`+bound+`"}` {
			t.Errorf("dispatch metadata %s", r.dispatch.Metadata)
		}
		// uac_pcmu.xml waits for a 200, which only an agent publishing audio brings;
		// deleting the room ends the call unanswered.
		msgs, _ := hangUp(t, r)
		if strings.Contains(msgs, "SIP/2.0 200") {
			t.Errorf("the call was answered with no agent in the room")
		}
	})
}

// eventually polls cond until it holds, failing the test when ctx ends.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	siptest.Eventually(t, ctx, what, cond)
}

func tail(s string) string { return siptest.Tail(s) }
