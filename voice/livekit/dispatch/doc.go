// Package dispatch is the worker side of LiveKit's agent dispatch protocol: it lets a
// `parley worker` process take room jobs from livekit-server's own dispatcher, the way
// LiveKit Agents (Python) workers do, so that calls spread over N worker processes and
// LiveKit balances them by the load each one reports.
//
// # Protocol
//
// The worker keeps one websocket open to livekit-server's /agent route. The server
// authenticates the upgrade with an access token carrying VideoGrant{Agent: true}; it
// accepts it as an "Authorization: Bearer" header or an access_token query parameter,
// and the worker sends the header (the token stays out of proxy logs). Every frame is a
// binary protobuf, livekit.WorkerMessage up and livekit.ServerMessage down (the server
// would switch to protojson if the worker sent text frames; binary is what the SDKs
// use). The flow:
//
//  1. RegisterWorkerRequest{type: JT_ROOM, agent_name} → RegisterWorkerResponse with the
//     worker ID. The worker then reports its status and sends a WorkerPing; when the
//     WorkerPong comes back the server has certainly put the worker in its dispatch
//     table (it registers the worker after answering the registration and before it
//     reads the next message), so Start returns only then and a dispatch created right
//     after Start is not lost.
//  2. For each job the server picks an available worker at random, weighted by
//     1 − load, and sends AvailabilityRequest. The worker answers AvailabilityResponse:
//     available with the participant identity ("agent-" + job ID) and name the agent
//     will join as, or unavailable when draining, at MaxJobs or over MaxLoad; then the
//     server tries the next worker. Accepting reserves a slot until the assignment
//     arrives.
//  3. JobAssignment carries the job and a room token the server minted for that
//     identity (valid one hour: join right away). The worker runs the Handler in its own
//     goroutine and reports UpdateJobStatus JS_RUNNING, then JS_SUCCESS or JS_FAILED
//     with the error when the handler returns.
//  4. JobTermination cancels the handler's context. livekit-server v1.13.5 sends it
//     when the dispatch is deleted (DeleteDispatch) and when the agent participant is
//     removed from or leaves a live room. It does not when the room is deleted
//     (DeleteRoom closes the participants without that path), so a handler must also
//     end when its own room connection closes.
//  5. Meanwhile the worker sends UpdateWorkerStatus{status, load, job_count} every
//     StatusInterval and at once whenever a job starts or ends or a slot is reserved,
//     and WS_FULL whenever it would refuse a job, so the server stops offering it jobs
//     instead of asking and being refused. A WorkerPing every 10 s checks the
//     connection; a missing WorkerPong drops it.
//
// If the websocket drops (network, LiveKit restart), running jobs carry on: they hold
// their own room connections. The worker reconnects with capped exponential backoff and
// registers again, as a new worker ID. The server forgets a worker's jobs when its
// connection closes, so a JobTermination for a job started before the drop never comes;
// the handler still sees its room close through its own room connection.
//
// # Explicit dispatch
//
// Workers register with an agent_name ("parley" by default). LiveKit then never sends
// them jobs on its own when a room is created or a participant joins (automatic
// dispatch, which is what an empty agent_name asks for); a job exists only when Parley
// asks for one, with AgentDispatchService.CreateDispatch or a RoomAgentDispatch in
// CreateRoom, and the dispatch metadata carries the call (JSON {"call_id": ...}). That
// keeps rooms that are not calls (tests, previews, other applications on the same
// LiveKit) free of agents, and it gives every job a call to look up.
//
// Note that LiveKit does not retry a dispatch that no worker accepted: when every
// worker is full the job is dropped (the dispatch stays, with no job). The caller
// decides what a call with no agent means.
//
// # Shutdown
//
// Drain is what SIGTERM should trigger: the worker reports WS_FULL and refuses every
// job from then on, lets the running calls go on to their natural end, and closes the
// connection when the last one returns, so a rolling deploy never cuts a call. Stop
// cancels the running jobs' contexts and closes at once.
package dispatch
