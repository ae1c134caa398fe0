// call.mjs drives the test-call page (/call) in a real headless Chromium, as a person
// would: log in, pick an agent, click Call, listen to the greeting, speak (Chromium's
// fake microphone plays a WAV file), read the captions, hang up. cmd/parley's
// TestBrowserCall runs it against `parley dev`; it also works by hand against any
// sandbox:
//
//   PARLEY_URL=http://127.0.0.1:8080 PARLEY_EMAIL=... PARLEY_PASSWORD=... \
//   PARLEY_AGENT="Front desk" PARLEY_WAV=/tmp/question.wav \
//   PARLEY_EXPECT_GREETING="Hello" PARLEY_EXPECT_USER="book" PARLEY_EXPECT_ANSWER="Monday" \
//   node web/e2e/call.mjs
//
// Environment:
//   PARLEY_URL, PARLEY_EMAIL, PARLEY_PASSWORD  the server and an account on it
//   PARLEY_AGENT         the agent to call, by the name the page lists
//   PARLEY_WAV           the microphone: a WAV file Chromium plays once (then silence)
//   PARLEY_EXPECT_GREETING, PARLEY_EXPECT_USER, PARLEY_EXPECT_ANSWER
//                        text each caption must contain, in this order
//   PARLEY_TIMEOUT_MS    overall deadline (default 60000)
//   PARLEY_CHROMIUM      the browser (default /usr/bin/chromium)
//
// It prints one JSON object on stdout (the result, also on failure, with "error" set)
// and the page's console on stderr as it happens; it exits 1 on failure.
import { chromium } from "playwright-core";

const env = (name, def) => {
  const v = process.env[name] ?? def;
  if (v === undefined || v === "") throw new Error(`${name} is not set`);
  return v;
};

const started = Date.now();
const since = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const note = (msg) => process.stderr.write(`[call.mjs ${since()}] ${msg}\n`);

const result = {
  ok: false,
  call_id: "",
  room_name: "",
  captions: [],
  inbound_audio: null,
  mic_audio: null,
  selected_candidate_pair: null,
  page_log: [],
  console: [],
  steps: [],
  error: "",
};

const step = (name) => {
  result.steps.push({ step: name, at_ms: Date.now() - started });
  note(name);
};

// Wrapping RTCPeerConnection before the page's scripts run lets the test read the
// WebRTC statistics of the connections livekit-client opens. It also drops the ICE
// servers LiveKit offers: livekit-server --dev hands out public STUN servers, which a
// test on one machine has no use for and must not contact (the media flows between the
// machine's own host candidates).
function instrumentPeerConnections() {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  window.__parleyPeerConnections = pcs;
  class Tracked extends Native {
    constructor(config, ...rest) {
      super({ ...(config || {}), iceServers: [] }, ...rest);
      pcs.push(this);
    }
  }
  window.RTCPeerConnection = Tracked;
}

// audioStats sums, over every peer connection, the received audio (inbound-rtp: what
// the agent sent and this browser decoded) and the microphone (media-source: what the
// fake capture device produced), and names the ICE candidate pair in use.
async function audioStats(page) {
  return page.evaluate(async () => {
    const inbound = { bytesReceived: 0, packetsReceived: 0, totalAudioEnergy: 0, totalSamplesReceived: 0, audioLevel: 0 };
    const mic = { bytesSent: 0, packetsSent: 0, totalAudioEnergy: 0, audioLevel: 0 };
    let pair = null;
    for (const pc of window.__parleyPeerConnections || []) {
      const stats = await pc.getStats();
      const byId = new Map();
      stats.forEach((s) => byId.set(s.id, s));
      stats.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          inbound.bytesReceived += s.bytesReceived || 0;
          inbound.packetsReceived += s.packetsReceived || 0;
          inbound.totalAudioEnergy += s.totalAudioEnergy || 0;
          inbound.totalSamplesReceived += s.totalSamplesReceived || 0;
          inbound.audioLevel = Math.max(inbound.audioLevel, s.audioLevel || 0);
        }
        if (s.type === "outbound-rtp" && s.kind === "audio") {
          mic.bytesSent += s.bytesSent || 0;
          mic.packetsSent += s.packetsSent || 0;
        }
        if (s.type === "media-source" && s.kind === "audio") {
          mic.totalAudioEnergy += s.totalAudioEnergy || 0;
          mic.audioLevel = Math.max(mic.audioLevel, s.audioLevel || 0);
        }
        if (s.type === "transport" && s.selectedCandidatePairId) {
          const p = byId.get(s.selectedCandidatePairId);
          const l = p && byId.get(p.localCandidateId);
          const r = p && byId.get(p.remoteCandidateId);
          if (l && r) pair = `${l.protocol} ${l.address}:${l.port} -> ${r.address}:${r.port}`;
        }
      });
    }
    return { inbound, mic, pair };
  });
}

async function captions(page) {
  return page.$$eval("#captions li", (lis) =>
    lis.map((li) => ({
      speaker: li.className.includes("user") ? "user" : "agent",
      final: !li.classList.contains("interim"),
      segment: li.dataset.seg || "",
      text: li.textContent || "",
    })),
  );
}

async function main() {
  const base = env("PARLEY_URL").replace(/\/$/, "");
  const email = env("PARLEY_EMAIL");
  const password = env("PARLEY_PASSWORD");
  const agent = env("PARLEY_AGENT");
  const wav = env("PARLEY_WAV");
  const greeting = env("PARLEY_EXPECT_GREETING");
  const question = env("PARLEY_EXPECT_USER");
  const answer = env("PARLEY_EXPECT_ANSWER");
  const deadline = started + Number(env("PARLEY_TIMEOUT_MS", "60000"));
  const left = () => Math.max(1000, deadline - Date.now());

  const browser = await chromium.launch({
    executablePath: env("PARLEY_CHROMIUM", "/usr/bin/chromium"),
    headless: true,
    timeout: left(),
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      // Nothing but the sandbox on loopback: no updates, sync, metrics or lookups.
      "--disable-background-networking",
      "--disable-quic",
      "--disable-component-update",
      "--disable-sync",
      "--disable-default-apps",
      "--no-first-run",
      "--no-default-browser-check",
      // The microphone: granted without a prompt, Chromium's fake capture device,
      // playing the WAV once (%noloop), then silence.
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${wav}%noloop`,
      // The agent's <audio> element plays without waiting for a gesture, so the
      // decoder runs and inbound audio energy is measured.
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("console", (m) => {
      const line = `${since()} [${m.type()}] ${m.text()}`;
      result.console.push(line);
      process.stderr.write(`[browser] ${line}\n`);
    });
    page.on("pageerror", (e) => {
      const line = `${since()} [pageerror] ${e.message}`;
      result.console.push(line);
      process.stderr.write(`[browser] ${line}\n`);
    });
    page.on("requestfailed", (r) => {
      const line = `${since()} [requestfailed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`;
      result.console.push(line);
      process.stderr.write(`[browser] ${line}\n`);
    });
    page.on("response", async (res) => {
      if (res.status() >= 400) {
        const line = `${since()} [response] ${res.request().method()} ${res.url()}: ${res.status()}`;
        result.console.push(line);
        process.stderr.write(`[browser] ${line}\n`);
      }
      if (res.request().method() === "POST" && new URL(res.url()).pathname === "/v1/calls/web") {
        try {
          const body = await res.json();
          result.call_id = body.call_id || "";
          result.room_name = body.room_name || "";
          note(`POST /v1/calls/web ${res.status()}: call ${result.call_id}, room ${result.room_name}`);
        } catch (e) {
          note(`POST /v1/calls/web ${res.status()}: unreadable body: ${e.message}`);
        }
      }
    });
    await page.addInitScript(instrumentPeerConnections);

    const snapshot = async () => {
      try {
        result.captions = await captions(page);
        result.page_log = await page.$$eval("#log li", (lis) => lis.map((li) => li.textContent || "").reverse());
        const st = await audioStats(page);
        result.inbound_audio = st.inbound;
        result.mic_audio = st.mic;
        result.selected_candidate_pair = st.pair;
      } catch (e) {
        note(`snapshot: ${e.message}`);
      }
    };

    try {
      page.setDefaultTimeout(left());
      step("open /call");
      const res = await page.goto(`${base}/call`, { timeout: left() });
      if (!res || !res.ok()) throw new Error(`GET /call: ${res ? res.status() : "no response"}`);

      step("log in");
      await page.fill("#email", email);
      await page.fill("#password", password);
      await page.click("#login button", { timeout: left() });
      await page.waitForSelector("#call", { state: "visible", timeout: left() });

      step(`pick agent ${JSON.stringify(agent)}`);
      await page.waitForFunction(
        (name) => [...document.querySelectorAll("#agent option")].some((o) => o.textContent === name),
        agent,
        { timeout: left(), polling: 100 },
      );
      await page.selectOption("#agent", { label: agent }, { timeout: left() });

      step("call");
      await page.click("#start", { timeout: left() });

      // Each caption in turn: the greeting, then what the fake microphone said (as the
      // scripted recogniser heard it), then the answer, each after the one before.
      const waitCaption = async (speaker, text, after) => {
        step(`wait for ${speaker} caption containing ${JSON.stringify(text)}`);
        const handle = await page.waitForFunction(
          ({ speaker, text, after }) => {
            const lis = [...document.querySelectorAll("#captions li")];
            const i = lis.findIndex(
              (li, i) => i > after && li.classList.contains(speaker) && !li.classList.contains("interim") && (li.textContent || "").includes(text),
            );
            return i >= 0 ? { i } : false; // an object: index 0 is falsy
          },
          { speaker, text, after },
          { timeout: left(), polling: 100 },
        );
        const { i } = await handle.jsonValue();
        return i;
      };
      const g = await waitCaption("agent", greeting, -1);
      const u = await waitCaption("user", question, g);
      await waitCaption("agent", answer, u);

      // The agent's audio reached this browser: received, decoded and not silent.
      step("wait for agent audio in the inbound-rtp stats");
      for (;;) {
        const st = await audioStats(page);
        if (st.inbound.bytesReceived > 0 && st.inbound.totalAudioEnergy > 0) break;
        if (Date.now() > deadline) throw new Error(`no agent audio received: ${JSON.stringify(st)}`);
        await page.waitForTimeout(200);
      }
      await snapshot();

      step("hang up");
      await page.click("#hangup", { timeout: left() });
      // The page looks the call up 1.5 s after leaving; wait for that line so the
      // page's own view of the end is in the result (the Go test checks the record).
      const id = result.call_id;
      try {
        await page.waitForFunction(
          (id) => [...document.querySelectorAll("#log li")].some((li) => (li.textContent || "").includes(`call ${id}:`)),
          id,
          { timeout: Math.min(left(), 10000), polling: 200 },
        );
      } catch (e) {
        note(`the page did not log the call's status after hang-up: ${e.message}`);
      }
      result.page_log = await page.$$eval("#log li", (lis) => lis.map((li) => li.textContent || "").reverse());
      result.ok = true;
    } catch (e) {
      result.error = e.message;
      await snapshot();
    }
    await context.close();
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (e) {
  result.error = result.error || e.message;
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.ok ? 0 : 1);
