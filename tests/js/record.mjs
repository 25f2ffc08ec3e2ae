// Record Chromium's own fake camera + microphone locally with MediaRecorder (no
// server, no peer connection): the A/V sync baseline for tests/webrtc_av_sync.rs.
//
//   node record.mjs --video clip.y4m --audio clip.wav --seconds S --out rec.webm
//
// Serves a tiny page on 127.0.0.1 (node's http module; a page there may use the
// camera), starts Chromium with the same fake-device flags as publish.mjs, runs
// getUserMedia({audio, video}) and a MediaRecorder (webm) for S seconds, takes
// the bytes back through page.evaluate as base64 and writes them to --out.
// Prints JSON lines: {"t":ms,"info":...} while it runs, then {"done":true,...}.
import { chromium } from "playwright-core";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, arr) =>
  (v.startsWith("--") ? a.concat([[v.slice(2), arr[i + 1] && !arr[i + 1].startsWith("--") ? arr[i + 1] : "1"]]) : a), []));
const seconds = Number(args.seconds || 8);
if (!args.out) { console.error("record.mjs: --out FILE is required"); process.exit(2); }
const t0 = Date.now();
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now() - t0, ...o }) + "\n");

const PAGE = `<!doctype html><meta charset="utf-8"><title>record</title>
<script>
window.record = async (ms) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  const types = ["video/webm;codecs=vp8,opus", "video/webm"];
  const mimeType = types.find((t) => MediaRecorder.isTypeSupported(t));
  const rec = new MediaRecorder(stream, { mimeType });
  const chunks = [];
  rec.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
  const stopped = new Promise((ok) => { rec.onstop = ok; });
  rec.start(1000);
  await new Promise((ok) => setTimeout(ok, ms));
  rec.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  const buf = new Uint8Array(await new Blob(chunks, { type: mimeType }).arrayBuffer());
  let bin = "";
  for (let i = 0; i < buf.length; i += 0x8000) bin += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
  const settings = stream.getVideoTracks()[0].getSettings();
  return { mimeType, bytes: buf.length, b64: btoa(bin), video: settings,
           audio: stream.getAudioTracks()[0].getSettings() };
};
</script>`;

const srv = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html" });
  res.end(PAGE);
});
await new Promise((ok) => srv.listen(0, "127.0.0.1", ok));

const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required"];
if (args.video) chromiumArgs.push("--use-file-for-fake-video-capture=" + args.video);
if (args.audio) chromiumArgs.push("--use-file-for-fake-audio-capture=" + args.audio);

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "rtcb-chrome-"));
let code = 0;
const browser = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: chromiumArgs,
});
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.on("console", (m) => out({ console: m.text().slice(0, 300) }));
  page.on("pageerror", (e) => out({ pageerror: String(e).slice(0, 300) }));
  await page.goto(`http://127.0.0.1:${srv.address().port}/`);
  out({ info: "recording", seconds });
  const r = await page.evaluate((ms) => window.record(ms), seconds * 1000);
  fs.writeFileSync(args.out, Buffer.from(r.b64, "base64"));
  out({ done: true, out: args.out, bytes: r.bytes, mimeType: r.mimeType, video: r.video, audio: r.audio });
} catch (e) {
  out({ error: String(e).slice(0, 500) });
  code = 1;
} finally {
  await browser.close();
  srv.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
process.exit(code);
