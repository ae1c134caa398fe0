// Package voice is Parley's realtime conversation engine: a Session holds one spoken
// conversation between a caller and an agent, independent of how the audio travels.
//
// A transport (a LiveKit room, a Twilio media stream, a SIP bridge or a test) writes
// the caller's audio into Session.WriteFrame and plays what the session writes to
// Config.Output. In between the session runs the whole loop:
//
//   - voice activity detection (voice/vad) and streaming recognition (voice/stt);
//   - turn-taking: an adaptive end-of-turn delay that is short after a complete
//     sentence and long after "and", "um" or a comma (turn.go);
//   - barge-in: the first sign of caller speech over the agent (40 ms of loud, voiced
//     sound, long before the VAD's own 200 ms onset) pauses it at once and flushes the
//     transport's send queue; if the VAD drops that onset (a click, a bump) playback
//     resumes, and if it confirms speech, that speech either interrupts the agent (the
//     reply is cancelled and the history keeps only what was heard) or, for a cough or
//     an "mm-hm", lets it resume where it paused;
//   - the model (voice/llm) with knowledge retrieval and tools: HTTP functions, and the
//     built-ins end_call, transfer_call and send_dtmf; a filler phrase covers slow tools;
//   - the phone keypad: the caller's keys (Session.DTMF) reach the model as a turn of
//     text, the model's send_dtmf reaches the transport as an event (dtmf.go);
//   - voicemail detection on outbound calls: listen first, tell a person from an
//     answering machine, and leave the agent's message after the beep (voicemail.go);
//   - speech (voice/tts), streamed sentence by sentence, the first piece cut at a clause
//     so the agent starts talking early, and paced out in real time in 20 ms frames;
//   - a latency ledger per turn (events and Prometheus histograms), transcripts, the
//     silence reprompt and timeout, and the maximum call duration.
//
// The engine knows nothing of HTTP servers, databases or rooms: it gets the agent's
// definition, a knowledge lookup and an event sink through small types (Agent,
// Knowledge, EventSink) that the calls and widgets packages provide.
//
// Two benchmarks measure it: the platform's own overhead per turn (end-of-turn decision
// to first audio frame, providers answering instantly),
//
//	go test -run '^$' -bench TurnOverhead -benchtime 1000x ./voice/
//
// and density, concurrent calls through the full audio path with Opus on both sides,
// in bench/voicebench.
package voice
