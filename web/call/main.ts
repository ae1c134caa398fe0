// The test-call page: log in, pick an agent, talk to it in the browser through LiveKit.
// It uses only the public API (/v1/auth/login, /v1/agents, /v1/calls/web,
// /v1/calls/{id}), so it is also a worked example of a browser integration.
import { Room, RoomEvent, Track, RemoteTrack, TextStreamReader } from "livekit-client";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const log = (msg: string) => {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${msg}`;
  $("log").prepend(li);
};

let jwt = sessionStorage.getItem("parley.jwt") || "";
let room: Room | null = null;
let callID = "";

async function api(path: string, init: RequestInit = {}): Promise<any> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (jwt) headers["Authorization"] = `Bearer ${jwt}`;
  const res = await fetch(path, { ...init, headers: { ...headers, ...(init.headers as any) } });
  const body = res.status === 204 ? {} : await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || `${res.status} ${res.statusText}`);
  return body;
}

async function login(ev: Event) {
  ev.preventDefault();
  try {
    const body = await api("/v1/auth/login", {
      method: "POST",
      body: JSON.stringify({ email: $<HTMLInputElement>("email").value, password: $<HTMLInputElement>("password").value }),
    });
    jwt = body.access_token;
    sessionStorage.setItem("parley.jwt", jwt);
    await loadAgents();
  } catch (e) {
    log(`login failed: ${(e as Error).message}`);
  }
}

async function loadAgents() {
  const body = await api("/v1/agents?limit=100");
  const sel = $<HTMLSelectElement>("agent");
  sel.innerHTML = "";
  for (const a of body.agents) {
    const opt = document.createElement("option");
    opt.value = a.agent_id;
    opt.textContent = `${a.agent_name || a.agent_id}`;
    sel.append(opt);
  }
  $("login").hidden = true;
  $("call").hidden = false;
  if (!body.agents.length) log("no agents yet: create one with POST /v1/agents");
}

function caption(speaker: string, text: string, segment: string, final: boolean) {
  let li = document.querySelector<HTMLLIElement>(`li[data-seg="${CSS.escape(segment)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.seg = segment;
    li.className = speaker;
    $("captions").append(li);
  }
  li.textContent = `${speaker === "agent" ? "Agent" : "You"}: ${text}`;
  li.classList.toggle("interim", !final);
}

async function start() {
  $<HTMLButtonElement>("start").disabled = true;
  try {
    const agentID = $<HTMLSelectElement>("agent").value;
    const call = await api("/v1/calls/web", { method: "POST", body: JSON.stringify({ agent_id: agentID }) });
    callID = call.call_id;
    room = new Room({ adaptiveStream: false, audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    room.on(RoomEvent.TrackSubscribed, (track: RemoteTrack) => {
      if (track.kind === Track.Kind.Audio) {
        const el = track.attach();
        el.id = "agent-audio";
        document.body.append(el);
        log("agent audio connected");
      }
    });
    room.on(RoomEvent.Disconnected, () => {
      log("call ended");
      finish();
    });
    room.registerTextStreamHandler("lk.transcription", async (reader: TextStreamReader) => {
      const attrs = reader.info.attributes || {};
      const text = await reader.readAll();
      caption(attrs["parley.speaker"] || "agent", text, attrs["lk.segment_id"] || reader.info.id, attrs["lk.transcription_final"] === "true");
    });
    await room.connect(call.url, call.access_token || call.token);
    await room.localParticipant.setMicrophoneEnabled(true);
    log(`in room ${call.room_name} (call ${callID}); speak now`);
    $<HTMLButtonElement>("hangup").disabled = false;
  } catch (e) {
    log(`call failed: ${(e as Error).message}`);
    finish();
  }
}

async function finish() {
  $<HTMLButtonElement>("start").disabled = false;
  $<HTMLButtonElement>("hangup").disabled = true;
  document.getElementById("agent-audio")?.remove();
  if (room) {
    const r = room;
    room = null;
    await r.disconnect();
  }
  if (callID) {
    const id = callID;
    callID = "";
    // The worker writes the record when it notices the caller left.
    setTimeout(async () => {
      try {
        const c = await api(`/v1/calls/${id}`);
        log(`call ${id}: ${c.call_status}, ${Math.round((c.duration_ms || 0) / 1000)} s, ${c.disconnection_reason || ""}`);
      } catch (e) {
        log(`call ${id}: ${(e as Error).message}`);
      }
    }, 1500);
  }
}

$("login").addEventListener("submit", login);
$("start").addEventListener("click", start);
$("hangup").addEventListener("click", finish);
if (jwt) loadAgents().catch(() => { jwt = ""; sessionStorage.removeItem("parley.jwt"); });
