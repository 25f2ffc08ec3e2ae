// Publish from headless Chromium to rtcbridge and report status changes as JSON lines.
//
//   node publish.mjs --page demo|sdk --http http://127.0.0.1:PORT --ws ws://127.0.0.1:PORT/
//                    --name NAME --seconds S [--sdk-port PORT] [--video clip.y4m --audio clip.wav]
//                    [--record-local rec.webm --record-seconds S] [--record-local-pcm rec.mkv]
//                    [--record-remote rec2.webm] [--custom JSON] [--rtmp-url URL] [--media-stats]
//
// --custom JSON: the page's Flashphoner.createSession gets {custom: JSON} added (as an
// application passes a token or user data to its backend).
// --rtmp-url URL: every session.createStream of the page gets {rtmpUrl: URL} added, the
// SDK's own option (its publishStream message then carries rtmpUrl: WCS republishes the
// stream to URL + "/rtmp_" + name). The page itself stays unchanged.
// --media-stats: once a second while publishing, a {"media": {...}} line with what the
// browser itself captures and sends: the camera track's settings (frameRate, width,
// height; the track getUserMedia gave or the video sender's track) and the publishing
// RTCPeerConnection's getStats() (media-source frames,
// outbound-rtp video framesEncoded/framesSent/qualityLimitationReason, audio packetsSent).
//
// demo: our own page at GET / ; sdk: the Flashphoner Web SDK's unchanged
// examples/demo/streaming/two_way_streaming page, served from node_modules by a
// tiny static server in this process. Prints {"t":ms,"el":id,"text":...} lines
// whenever #connectStatus / #publishStatus / #publishInfo change, then "done".
//
// --record-local: the same camera+microphone stream the page publishes is also
// recorded in the page with MediaRecorder (webm) for --record-seconds from the
// moment the page gets it: Chromium's own A/V alignment of this very capture
// session (the start skew of its fake devices differs from one session to the
// next), written to the file before the page unpublishes.
// --record-local-pcm: a second MediaRecorder on the same tracks, started with the
// first, with PCM audio instead of Opus. Chromium's MediaRecorder Opus encoder
// stamps each 60 ms packet with the capture time of the last 10 ms buffer in it
// (less 10 ms), i.e. ~50 ms after its first sample; its PCM encoder stamps each
// 10 ms capture buffer itself. So this recording shows the capture's own A/V
// alignment without the Opus recorder's timestamp offset.
// --record-remote: the same stream also goes through an in-page WebRTC loopback
// (two RTCPeerConnections over 127.0.0.1) and the receiving side is recorded:
// what a Chromium WebRTC viewer of this capture gets (its own A/V sync).
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { serveSdk } from "./driver.mjs";

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, arr) =>
  (v.startsWith("--") ? a.concat([[v.slice(2), arr[i + 1] && !arr[i + 1].startsWith("--") ? arr[i + 1] : "1"]]) : a), []));
const page_kind = args.page || "demo";
const seconds = Number(args.seconds || 10);
const here = path.dirname(fileURLToPath(import.meta.url));
const t0 = Date.now();
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now() - t0, ...o }) + "\n");


const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required"];
if (args.video) chromiumArgs.push("--use-file-for-fake-video-capture=" + args.video);
if (args.audio) chromiumArgs.push("--use-file-for-fake-audio-capture=" + args.audio);

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "rtcb-chrome-"));
let srv = null;
const browser = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: chromiumArgs,
  ignoreHTTPSErrors: !!args["ignore-cert"],
});
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.on("console", (m) => out({ console: m.text().slice(0, 300) }));
  page.on("pageerror", (e) => out({ pageerror: String(e).slice(0, 300) }));
  if (args["record-local"]) {
    await page.addInitScript(([ms, remote, pcm]) => {
      const md = navigator.mediaDevices;
      if (!md || !md.getUserMedia) return;
      const orig = md.getUserMedia.bind(md);
      window.__rtcbRec = { chunks: [], done: null, mimeType: null };
      window.__rtcbRemote = { chunks: [], done: null, mimeType: null };
      const recordRemote = async (stream) => {
        const r = window.__rtcbRemote;
        const pc1 = new RTCPeerConnection(), pc2 = new RTCPeerConnection();
        pc1.onicecandidate = (e) => e.candidate && pc2.addIceCandidate(e.candidate);
        pc2.onicecandidate = (e) => e.candidate && pc1.addIceCandidate(e.candidate);
        const got = new MediaStream();
        let started = false;
        pc2.ontrack = (e) => {
          got.addTrack(e.track);
          if (started || got.getAudioTracks().length === 0 || got.getVideoTracks().length === 0) return;
          started = true;
          const sink = new Audio();
          sink.srcObject = got;
          sink.play().catch(() => {});
          r.mimeType = ["video/webm;codecs=vp8,opus", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t));
          const rec = new MediaRecorder(got, { mimeType: r.mimeType });
          rec.ondataavailable = (ev) => { if (ev.data && ev.data.size) r.chunks.push(ev.data); };
          r.done = new Promise((ok) => { rec.onstop = ok; });
          rec.start(1000);
          setTimeout(() => rec.state !== "inactive" && rec.stop(), ms);
        };
        stream.getTracks().forEach((t) => pc1.addTrack(t, stream));
        const offer = await pc1.createOffer();
        await pc1.setLocalDescription(offer);
        await pc2.setRemoteDescription(offer);
        const answer = await pc2.createAnswer();
        await pc2.setLocalDescription(answer);
        await pc1.setRemoteDescription(answer);
        window.__rtcbLoop = [pc1, pc2];
      };
      window.__rtcbRecPcm = { chunks: [], done: null, mimeType: null };
      const recordInto = (r, stream, types) => {
        r.mimeType = types.find((t) => MediaRecorder.isTypeSupported(t));
        if (!r.mimeType) { console.log("record-local: none of " + types.join(" | ") + " is supported"); return null; }
        const rec = new MediaRecorder(stream, { mimeType: r.mimeType });
        rec.ondataavailable = (e) => { if (e.data && e.data.size) r.chunks.push(e.data); };
        r.done = new Promise((ok) => { rec.onstop = ok; });
        return rec;
      };
      md.getUserMedia = async (c) => {
        const stream = await orig(c);
        const r = window.__rtcbRec;
        if (!r.done && stream.getAudioTracks().length && stream.getVideoTracks().length) {
          // Both recorders start in the same task, on the same tracks: the muxer puts
          // each recording's tracks on one origin, so they differ only by their audio
          // encoder's timestamps (Opus: 60 ms buffers; PCM: 10 ms capture buffers).
          const recs = [recordInto(r, stream, ["video/webm;codecs=vp8,opus", "video/webm"])];
          if (pcm) recs.push(recordInto(window.__rtcbRecPcm, stream, ["video/webm;codecs=vp8,pcm", "video/x-matroska;codecs=vp8,pcm"]));
          for (const rec of recs) if (rec) rec.start(1000);
          setTimeout(() => { for (const rec of recs) if (rec && rec.state !== "inactive") rec.stop(); }, ms);
          if (remote) recordRemote(stream).catch((e) => console.log("record-remote: " + e));
        }
        return stream;
      };
    }, [Number(args["record-seconds"] || 10) * 1000, !!args["record-remote"], !!args["record-local-pcm"]]);
  }
  if (args["media-stats"]) {
    // Before any page script: keep the camera track and every RTCPeerConnection the page
    // makes (the SDK's webrtc-adapter wraps this constructor in turn, as it wraps the
    // browser's), so the driver can read their settings and getStats().
    await page.addInitScript(() => {
      window.__rtcbMedia = { pcs: [], video: null };
      const md = navigator.mediaDevices;
      if (md && md.getUserMedia) {
        const orig = md.getUserMedia.bind(md);
        md.getUserMedia = async (c) => {
          const stream = await orig(c);
          const v = stream.getVideoTracks()[0];
          if (v) window.__rtcbMedia.video = v;
          return stream;
        };
      }
      const Orig = window.RTCPeerConnection;
      if (Orig) {
        const Wrapped = function (...a) { const pc = new Orig(...a); window.__rtcbMedia.pcs.push(pc); return pc; };
        Wrapped.prototype = Orig.prototype;
        Object.setPrototypeOf(Wrapped, Orig);
        window.RTCPeerConnection = Wrapped;
      }
    });
  }
  const mediaStats = async () => {
    const m = await page.evaluate(async () => {
      const m = window.__rtcbMedia;
      if (!m) return null;
      const r = {};
      if (m.video) {
        const st = m.video.getSettings();
        Object.assign(r, { frameRate: st.frameRate, width: st.width, height: st.height, trackState: m.video.readyState });
      }
      for (const pc of m.pcs) {
        if (pc.connectionState === "closed") continue;
        for (const snd of pc.getSenders()) {
          if (snd.track && snd.track.kind === "video" && !m.video) m.video = snd.track;
        }
        if (m.video && r.frameRate === undefined) {
          const st = m.video.getSettings();
          Object.assign(r, { frameRate: st.frameRate, width: st.width, height: st.height, trackState: m.video.readyState });
        }
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type === "media-source" && s.kind === "video") Object.assign(r, { sourceFrames: s.frames, sourceFps: s.framesPerSecond });
          if (s.type === "outbound-rtp" && s.kind === "video") {
            Object.assign(r, { framesEncoded: s.framesEncoded, framesSent: s.framesSent, sendFps: s.framesPerSecond,
              frameWidth: s.frameWidth, frameHeight: s.frameHeight, qualityLimitationReason: s.qualityLimitationReason,
              encoder: s.encoderImplementation });
          }
          if (s.type === "outbound-rtp" && s.kind === "audio") r.audioPacketsSent = s.packetsSent;
        });
      }
      return r;
    }).catch((e) => ({ error: String(e).slice(0, 200) }));
    if (m) out({ media: m });
  };
  const saveRecording = async (which, file) => {
    const r = await page.evaluate(async (which) => {
      const r = window[which];
      if (!r || !r.done) return null;
      await r.done;
      const buf = new Uint8Array(await new Blob(r.chunks, { type: r.mimeType }).arrayBuffer());
      let bin = "";
      for (let i = 0; i < buf.length; i += 0x8000) bin += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
      return { bytes: buf.length, b64: btoa(bin) };
    }, which);
    if (!r) { out({ error: `${which}: nothing was recorded` }); return; }
    fs.writeFileSync(file, Buffer.from(r.b64, "base64"));
    out({ el: which, text: `${r.bytes} bytes` });
  };
  let url;
  if (page_kind === "sdk") {
    const port = Number(args["sdk-port"] || 0);
    srv = await serveSdk(here, port, "examples/demo/streaming/two_way_streaming/two_way_streaming.html");
    url = `http://127.0.0.1:${srv.address().port}/examples/demo/streaming/two_way_streaming/two_way_streaming.html`;
  } else {
    url = args.http + "/";
  }
  await page.goto(url);
  if (args.custom) {
    await page.evaluate((custom) => {
      const orig = Flashphoner.createSession;
      Flashphoner.createSession = (o) => orig(Object.assign({}, o, { custom }));
    }, JSON.parse(args.custom));
  }
  if (args["rtmp-url"]) {
    await page.evaluate((rtmpUrl) => {
      const orig = Flashphoner.createSession;
      Flashphoner.createSession = (o) => {
        const session = orig(o);
        const createStream = session.createStream;
        session.createStream = (opts) => createStream(Object.assign({}, opts, { rtmpUrl }));
        return session;
      };
    }, args["rtmp-url"]);
  }
  await page.fill("#urlServer", args.ws);
  const ids = ["#connectStatus", "#publishStatus", "#publishInfo"];
  const last = {};
  const watch = async () => {
    for (const id of ids) {
      const el = await page.$(id);
      const text = el ? (await el.textContent()).trim() : null;
      if (text !== last[id]) { last[id] = text; out({ el: id, text }); }
    }
  };
  const until = async (id, want, ms) => {
    const end = Date.now() + ms;
    while (Date.now() < end) { await watch(); if (last[id] === want) return true; await page.waitForTimeout(50); }
    return false;
  };
  await page.click("#connectBtn");
  if (!await until("#connectStatus", "ESTABLISHED", 10000)) { out({ error: "not ESTABLISHED" }); }
  else {
    // The SDK page enables the stream name field only once connected.
    await page.waitForSelector("#publishStream:not([disabled])", { timeout: 10000 });
    await page.fill("#publishStream", args.name);
    await page.waitForSelector("#publishBtn:not([disabled])", { timeout: 10000 });
    out({ el: "action", text: "publish" });
    await page.click("#publishBtn");
    await until("#publishStatus", "PUBLISHING", 10000);
    const end = Date.now() + seconds * 1000;
    let nextStats = 0;
    while (Date.now() < end) {
      await watch();
      if (args["media-stats"] && Date.now() >= nextStats) { nextStats = Date.now() + 1000; await mediaStats(); }
      await page.waitForTimeout(100);
    }
    if (args["record-local"]) await saveRecording("__rtcbRec", args["record-local"]);
    if (args["record-local-pcm"]) await saveRecording("__rtcbRecPcm", args["record-local-pcm"]);
    if (args["record-remote"]) await saveRecording("__rtcbRemote", args["record-remote"]);
    if (last["#publishStatus"] === "PUBLISHING") {
      await page.click("#publishBtn");
      await until("#publishStatus", "UNPUBLISHED", 10000);
    }
  }
  await watch();
} finally {
  out({ done: true });
  await browser.close();
  if (srv) srv.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
