// WebRTC playback in headless Chromium through rtcbridge's own demo page (GET / of the
// server, src/web/index.html, its "Play over WebRTC" panel), unchanged; prints what happens
// as JSON lines.
//
//   node play_demo.mjs --http http://127.0.0.1:PORT/ --steps STEP,STEP,... [--deadline S]
//
// Steps, run in order; a step whose condition is not reached within its deadline prints
// {"abort": STEP, "why": ...} and ends the run (the page is then closed):
//   connect              click #connectBtn, wait for #connectStatus ESTABLISHED (10 s)
//   play:NAME[:WANT]     fill #playStream with NAME, click #playBtn (Play), wait until
//                        #playStatus is PLAYING, FAILED or STOPPED (20 s); continue only if
//                        it is WANT (default PLAYING)
//   measure:S            wait (10 s) for the first decoded video frame, then S+1 samples of
//                        getStats(), one a second
//   stop-play            click #playBtn (now Stop), wait for #playStatus STOPPED (10 s)
//   idle:S               keep watching for S seconds
//
// Output lines (each with t: ms since start):
//   {"el": "#id", "text": ...}   a status element changed (#connectStatus, #playStatus,
//                                #playInfo, #playBtn)
//   {"action": STEP}             a step begins
//   {"stats": {...}}             one getStats() sample over the page's open RTCPeerConnections
//                                that receive: inbound-rtp video and audio, and #remoteVideo
//   {"abort": STEP, "why": ...}, {"console": ...}, {"pageerror": ...}, {"done": true}
// --deadline S (default 50): the whole run's hard limit; past it the driver prints
// {"abort": "deadline"} and {"done": true}, and exits 2.
//
// To read the page's peer connections, an init script (run before the page's own script)
// keeps every RTCPeerConnection it makes in a global array; the page itself is not changed.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { keepPeerConnections, sampleStats } from "./page_rtc.mjs";
import { measure } from "./driver.mjs";

const argv = process.argv.slice(2);
const args = {};
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("--")) continue;
  const next = argv[i + 1];
  args[argv[i].slice(2)] = next !== undefined && !next.startsWith("--") ? next : "1";
}
const steps = (args.steps || "").split(",").filter(Boolean);
const t0 = Date.now();
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now() - t0, ...o }) + "\n");

if (!args.http || steps.length === 0) {
  console.error("usage: node play_demo.mjs --http http://127.0.0.1:PORT/ --steps STEP,... [--deadline S]");
  process.exit(64);
}

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "rtcb-playdemo-"));
let browser = null;
const cleanup = () => { fs.rmSync(userDir, { recursive: true, force: true }); };

const deadlineMs = Number(args.deadline || 50) * 1000;
const hard = setTimeout(async () => {
  out({ abort: "deadline", why: `the run took longer than ${deadlineMs / 1000} s` });
  out({ done: true });
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((ok) => setTimeout(ok, 3000))]);
  cleanup();
  process.exit(2);
}, deadlineMs);

const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required"];

const WATCH = ["#connectStatus", "#playStatus", "#playInfo", "#playBtn"];
try {
  browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: chromiumArgs,
  });
  const page = browser.pages()[0] || await browser.newPage();
  const sample = () => page.evaluate(sampleStats, { name: "__rtcbDemo", video: "#remoteVideo" });
  page.on("console", (m) => out({ console: m.text().slice(0, 300) }));
  page.on("pageerror", (e) => out({ pageerror: String(e).slice(0, 300) }));
  await page.addInitScript(keepPeerConnections, "__rtcbDemo");
  const resp = await page.goto(args.http);
  if (!resp || resp.status() !== 200) throw new Error(`GET ${args.http} answered ${resp && resp.status()}`);

  const last = {};
  const watch = async () => {
    for (const id of WATCH) {
      const text = await page.$eval(id, (e) => e.textContent.trim()).catch(() => null);
      if (text !== last[id]) { last[id] = text; out({ el: id, text }); }
    }
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
      return await until(() => last["#connectStatus"] === "ESTABLISHED", 10000) ? null : `#connectStatus is ${JSON.stringify(last["#connectStatus"])}, not ESTABLISHED`;
    },
    async play(name, want) {
      want = want || "PLAYING";
      if (!name) return "play needs a stream name";
      if (!await enabled("#playBtn")) return "#playBtn never enabled";
      if (last["#playBtn"] !== "Play") return `#playBtn says ${JSON.stringify(last["#playBtn"])}, not Play`;
      await page.fill("#playStream", name);
      await page.click("#playBtn");
      const done = await until(() => ["PLAYING", "FAILED", "STOPPED"].includes(last["#playStatus"]), 20000);
      if (!done) return `#playStatus is ${JSON.stringify(last["#playStatus"])} 20 s after Play`;
      await idle(300); // #playInfo is written right after the status; the button after a stop
      return last["#playStatus"] === want ? null : `#playStatus is ${last["#playStatus"]}, not ${want}`;
    },
    async measure(s) {
      return measure({ sample, watch, idle, wait: (ms) => page.waitForTimeout(ms), out }, Number(s || 8), "no video frame decoded within 10 s");
    },
    async "stop-play"() {
      if (last["#playStatus"] !== "PLAYING") return `not PLAYING (${last["#playStatus"]})`;
      await page.click("#playBtn");
      if (!await until(() => last["#playStatus"] === "STOPPED", 10000)) return `#playStatus is ${last["#playStatus"]}, not STOPPED`;
      await idle(300);
      return null;
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
  out({ stats: await sample().catch((e) => ({ error: String(e) })), final: true });
} catch (e) {
  out({ abort: "driver", why: String(e && e.stack || e).slice(0, 800) });
} finally {
  clearTimeout(hard);
  out({ done: true });
  if (browser) await browser.close().catch(() => {});
  cleanup();
}
