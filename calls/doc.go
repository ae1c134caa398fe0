// Package calls owns call records: a call's lifecycle (the state machine below), its
// live and final transcript, its per-turn latency figures, the browser (web) calls that
// start in a LiveKit room, and the LiveKit rooms adapter that creates those rooms,
// dispatches the Parley agent into them and mints the caller's access token. It also
// owns phone calls: inbound SIP calls (the runner creates their record from the SIP
// participant, sip.go), outbound calls (the API's CreateOutbound inserts the record and
// the call_dial job in one transaction, outbound.go; the job dials through LiveKit SIP
// or Twilio, sip.go and twilio.go), transfers, Twilio Media Streams calls (twilio.go),
// recordings (recording.go, stored through recstore) and post-call analysis
// (analysis.go).
//
// # Lifecycle
//
// A call is created registered, and moves forward only:
//
//	registered ──Begin──▶ in_progress ──Finish──▶ completed | voicemail | failed
//	registered ──Fail / End──▶ failed          (the agent never started)
//	registered ──dial──▶ ringing ──SIP outcome──▶ busy | no_answer | failed
//
// (ringing, from outbound dialing, counts as not started yet, like registered.) Every
// transition is one conditional UPDATE … WHERE call_status IN (…), so two processes
// racing on one call cannot both win: a worker that Begins a call that POST /end has
// just failed gets ErrNotStartable and walks away. Finishing or failing a call that has
// already ended is a no-op that returns nil and keeps what was stored first, so a retry
// or a second hang-up path never loses data or turns into an error.
//
// # Who writes what
//
// The HTTP API creates web calls (StartWeb: a registered row, then a LiveKit room with
// the agent dispatched, then a token for the browser) and ends them (End deletes the
// room). Everything after that is written by the voice worker, which learns the call ID
// from the dispatch metadata Parley itself put on the room: Begin when the session
// starts, a Recorder as the engine's event sink (it saves the live transcript about once
// a second so GET shows it during the call), and Recorder.Close → Finish at the end.
// Worker-side methods take no tenant: call IDs carry 100 random bits and only reach the
// worker through LiveKit, never from a client.
//
// A call's process can die mid-call. The maintenance job's FailStale fails calls no
// worker ever began, and FailOrphans fails in-progress calls quiet for minutes whose
// carrier says they are over (error_worker_lost): LiveKit, for a call in a room
// that no longer exists; Twilio's REST API, for a Twilio call whose API process
// held its media stream. These sweeps are global, across tenants.
//
// Tenant-facing methods (Get, List, End, CreateWeb, StartWeb) filter on tenant_id = $1,
// so another tenant's call is indistinguishable from one that does not exist.
//
// # Disconnection reasons
//
// disconnection_reason uses the Retell-style names Call2Me's SDKs know. The engine's
// voice.EndReason maps as ReasonFor documents; the transport adds what only it knows
// (whether the caller left or the room was deleted by POST /end).
package calls
