// WebRTC playback from rtcbridge in headless Chromium, through the Flashphoner Web SDK's own
// example pages, unchanged; prints what happens as JSON lines.
//
//   node play.mjs --page twoway|player --ws ws://127.0.0.1:PORT/ --name NAME
//                 --steps STEP,STEP,... [--play-name NAME] [--video clip.y4m --audio clip.wav]
//                 [--custom JSON]
//
// --custom JSON: the page's Flashphoner.createSession gets {custom: JSON} added (as an
// application would pass a token: createSession({custom: {token}})); the page is unchanged.
//
// twoway: examples/demo/streaming/two_way_streaming (Publish and Play in one page; its
// Connect button first). player: examples/demo/streaming/player (Start connects and plays).
// Both are served from node_modules by a small static server in this process.
//
// Steps, run in order; a step whose condition is not reached within its deadline prints
// {"abort": STEP, "why": ...} and ends the run (the page is then closed):
//   connect          twoway: click Connect, wait for #connectStatus ESTABLISHED
//   publish          twoway: Publish --name, wait for #publishStatus PUBLISHING
//   available        twoway: click Available for the play name, wait for #availableStatus
//   play             click Play / Start for --play-name (default --name); wait until the play
//                    status is PLAYING, FAILED or STOPPED (20 s). Only PLAYING continues.
//   play-nowait      click Play / Start and go on at once (a viewer that waits for its stream)
//   measure:S        wait (10 s) for the first decoded video frame, then S+1 samples of
//                    getStats(), one a second
//   stop-play        click the play button (now Stop), wait for the play status STOPPED
//   stop-publish     twoway: click the publish button (now Stop), wait for UNPUBLISHED
//   wait-play:STATUS:S  wait up to S seconds for the play status STATUS
//   idle:S           keep watching for S seconds
//
// Output lines (each with t: ms since start):
//   {"el": "#id", "text": ...}   a status element changed (connect, publish, play, info ones)
//   {"action": STEP}             a step begins
//   {"ws": {dir, message, data}} a signaling message the page sent or got (pings left out;
//                                SDP shortened to its m=, rtpmap and fmtp lines)
//   {"stats": {...}}             one getStats() sample over every open RTCPeerConnection of
//                                the page: inbound-rtp video and audio, outbound-rtp video
//   {"abort": STEP, "why": ...}, {"console": ...}, {"pageerror": ...}, {"done": true}
//
// To read the page's peer connections and signaling, an init script (run before any page
// script) keeps every RTCPeerConnection the page makes in a global array and listens to
// every WebSocket's messages; the pages themselves are not changed.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { keepPeerConnections, sampleStats } from "./page_rtc.mjs";
import { measure, serveSdk } from "./driver.mjs";

const argv = process.argv.slice(2);
const args = {};
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("--")) continue;
  const next = argv[i + 1];
  args[argv[i].slice(2)] = next !== undefined && !next.startsWith("--") ? next : "1";
}
const pageKind = args.page || "twoway";
const steps = (args.steps || "").split(",").filter(Boolean);
const playName = args["play-name"] || args.name;
const here = path.dirname(fileURLToPath(import.meta.url));
const t0 = Date.now();
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now() - t0, ...o }) + "\n");

if (!["twoway", "player"].includes(pageKind) || !args.ws || !args.name || steps.length === 0) {
  console.error("usage: node play.mjs --page twoway|player --ws URL --name NAME --steps STEP,...");
  process.exit(64);
}

const PAGES = {
  twoway: {
    url: "examples/demo/streaming/two_way_streaming/two_way_streaming.html",
    server: "#urlServer",
    playName: "#playStream",
    playBtn: "#playBtn",
    playStatus: "#playStatus",
    watch: ["#connectStatus", "#publishStatus", "#publishInfo", "#playStatus", "#playInfo", "#availableStatus", "#availableInfo"],
  },
  player: {
    url: "examples/demo/streaming/player/player.html",
    server: "#url",
    playName: "#streamName",
    playBtn: "#playBtn",
    playStatus: "#status",
    watch: ["#status", "#info"],
  },
};
const P = PAGES[pageKind];


// Runs in the page before its own scripts (after keepPeerConnections): the signaling
// messages of every WebSocket the page opens, in window.__rtcbPlay.ws.
function instrument() {
  const rec = window.__rtcbPlay;
  const shortSdp = (sdp) => String(sdp).split(/\r?\n/).filter((l) => /^(m=|a=rtpmap|a=fmtp|a=(send|recv|sendrecv|inactive)\b|a=(sendonly|recvonly))/.test(l)).join(" | ");
  const note = (dir, text) => {
    let m;
    try { m = JSON.parse(text); } catch (e) { return; }
    if (!m || m.message === "ping" || m.message === "pong") return;
    let data = m.data;
    const fix = (v) => (typeof v === "string" && v.startsWith("v=0") ? shortSdp(v) : v);
    if (Array.isArray(data)) {
      data = data.map((d) => {
        if (d && typeof d === "object" && !Array.isArray(d)) {
          const c = {};
          for (const k of Object.keys(d)) c[k] = fix(d[k]);
          return c;
        }
        return fix(d);
      });
    }
    rec.ws.push({ dir, message: m.message, data });
  };
  const OrigWs = window.WebSocket;
  if (OrigWs) {
    const Ws = function (...a) {
      const ws = new OrigWs(...a);
      ws.addEventListener("message", (e) => { if (typeof e.data === "string") note("in", e.data); });
      const send = ws.send.bind(ws);
      ws.send = (d) => { if (typeof d === "string") note("out", d); return send(d); };
      return ws;
    };
    Ws.prototype = OrigWs.prototype;
    Object.setPrototypeOf(Ws, OrigWs);
    for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Object.defineProperty(Ws, k, { value: OrigWs[k] });
    window.WebSocket = Ws;
  }
}

const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required"];
if (args.video) chromiumArgs.push("--use-file-for-fake-video-capture=" + args.video);
if (args.audio) chromiumArgs.push("--use-file-for-fake-audio-capture=" + args.audio);

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "rtcb-play-"));
let srv = null;
let browser = null;
try {
  srv = await serveSdk(here, 0, P.url);
  browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: chromiumArgs,
  });
  const page = browser.pages()[0] || await browser.newPage();
  const sample = () => page.evaluate(sampleStats, { name: "__rtcbPlay" });
  page.on("console", (m) => out({ console: m.text().slice(0, 300) }));
  page.on("pageerror", (e) => out({ pageerror: String(e).slice(0, 300) }));
  await page.addInitScript(keepPeerConnections, "__rtcbPlay");
  await page.addInitScript(instrument);
  await page.goto(`http://127.0.0.1:${srv.address().port}/${P.url}`);
  await page.fill(P.server, args.ws);
  if (args.custom) {
    await page.evaluate((custom) => {
      const orig = Flashphoner.createSession;
      Flashphoner.createSession = (o) => orig(Object.assign({}, o, { custom }));
    }, JSON.parse(args.custom));
  }

  const last = {};
  let wsSeen = 0;
  const watch = async () => {
    for (const id of P.watch) {
      const text = await page.$eval(id, (e) => e.textContent.trim()).catch(() => null);
      if (text !== last[id]) { last[id] = text; out({ el: id, text }); }
    }
    const ws = await page.evaluate((from) => window.__rtcbPlay.ws.slice(from), wsSeen).catch(() => []);
    wsSeen += ws.length;
    for (const m of ws) out({ ws: m });
  };
  const until = async (pred, ms) => {
    const end = Date.now() + ms;
    for (;;) {
      await watch();
      if (pred()) return true;
      if (Date.now() >= end) return false;
      await page.waitForTimeout(50);
    }
  };
  const idle = async (ms) => { await until(() => false, ms); };
  const enabled = (sel) => page.waitForSelector(`${sel}:not([disabled])`, { timeout: 10000 }).then(() => true, () => false);

  const run = {
    async connect() {
      if (!await enabled("#connectBtn")) return "#connectBtn never enabled";
      await page.click("#connectBtn");
      return await until(() => last["#connectStatus"] === "ESTABLISHED", 10000) ? null : "#connectStatus never ESTABLISHED";
    },
    async publish() {
      if (!await enabled("#publishStream")) return "#publishStream never enabled";
      await page.fill("#publishStream", args.name);
      if (!await enabled("#publishBtn")) return "#publishBtn never enabled";
      await page.click("#publishBtn");
      return await until(() => ["PUBLISHING", "FAILED"].includes(last["#publishStatus"]), 15000) && last["#publishStatus"] === "PUBLISHING"
        ? null : `#publishStatus is ${JSON.stringify(last["#publishStatus"])}, not PUBLISHING`;
    },
    async available() {
      if (!await enabled("#availableBtn")) return "#availableBtn never enabled";
      await page.fill("#playStream", playName);
      await page.$eval("#availableStatus", (e) => { e.textContent = ""; });
      await page.click("#availableBtn");
      return await until(() => !!last["#availableStatus"], 10000) ? null : "#availableStatus never set";
    },
    async play() {
      if (!await enabled(P.playName)) return `${P.playName} never enabled`;
      await page.fill(P.playName, playName);
      if (!await enabled(P.playBtn)) return `${P.playBtn} never enabled`;
      await page.click(P.playBtn);
      // The Player page shows the session's ESTABLISHED in the same element first.
      const done = await until(() => ["PLAYING", "FAILED", "STOPPED"].includes(last[P.playStatus]), 20000);
      if (!done) return `${P.playStatus} is ${JSON.stringify(last[P.playStatus])} 20 s after Play`;
      await idle(300); // the info element is written right after the status
      return last[P.playStatus] === "PLAYING" ? null : `${P.playStatus} is ${last[P.playStatus]}`;
    },
    async "play-nowait"() {
      if (!await enabled(P.playName)) return `${P.playName} never enabled`;
      await page.fill(P.playName, playName);
      if (!await enabled(P.playBtn)) return `${P.playBtn} never enabled`;
      await page.click(P.playBtn);
      return null;
    },
    async measure(s) {
      return measure({ sample, watch, idle, wait: (ms) => page.waitForTimeout(ms), out }, Number(s || 10), "no video frame decoded within 10 s of PLAYING");
    },
    async "stop-play"() {
      if (last[P.playStatus] !== "PLAYING") return `not PLAYING (${last[P.playStatus]})`;
      await page.click(P.playBtn);
      return await until(() => last[P.playStatus] === "STOPPED", 10000) ? null : `${P.playStatus} is ${last[P.playStatus]}, not STOPPED`;
    },
    async "stop-publish"() {
      if (last["#publishStatus"] !== "PUBLISHING") return `not PUBLISHING (${last["#publishStatus"]})`;
      await page.click("#publishBtn");
      return await until(() => last["#publishStatus"] === "UNPUBLISHED", 10000) ? null : `#publishStatus is ${last["#publishStatus"]}, not UNPUBLISHED`;
    },
    async "wait-play"(status, s) {
      return await until(() => last[P.playStatus] === status, Number(s || 10) * 1000) ? null : `${P.playStatus} is ${last[P.playStatus]}, not ${status}`;
    },
    async idle(s) { await idle(Number(s || 1) * 1000); return null; },
  };

  await watch();
  for (const step of steps) {
    const [name, ...params] = step.split(":");
    if (!run[name]) { out({ abort: step, why: "unknown step" }); break; }
    out({ action: step });
    const why = await run[name](...params);
    if (why) { out({ abort: step, why }); break; }
  }
  await watch();
} catch (e) {
  out({ abort: "driver", why: String(e && e.stack || e).slice(0, 800) });
} finally {
  out({ done: true });
  if (browser) await browser.close().catch(() => {});
  if (srv) srv.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
