// Node-side helpers shared by the browser drivers (publish.mjs, play.mjs, play_demo.mjs).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

// Serve the installed Flashphoner Web SDK (tests/js/node_modules/@flashphoner/websdk) on
// 127.0.0.1:port (0: any free port); exits 3 when `page` (a path under it) is missing.
export function serveSdk(here, port, page) {
  const root = path.join(here, "node_modules", "@flashphoner", "websdk");
  if (!fs.existsSync(path.join(root, page))) {
    console.error(`Flashphoner Web SDK page ${page} not found under ${root}: run tools/test-all`);
    process.exit(3);
  }
  const types = { ".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".mp4": "video/mp4" };
  const srv = http.createServer((req, res) => {
    const p = path.normalize(path.join(root, decodeURIComponent(req.url.split("?")[0])));
    if (!p.startsWith(root) || !fs.existsSync(p) || fs.statSync(p).isDirectory()) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "Content-Type": types[path.extname(p)] || "application/octet-stream" });
    fs.createReadStream(p).pipe(res);
  });
  return new Promise((ok) => srv.listen(port, "127.0.0.1", () => ok(srv)));
}

// The `measure:S` step: wait up to 10 s for the first decoded video frame (watching the
// page meanwhile), then print S+1 getStats() samples one second apart. `d`: { sample,
// watch, idle(ms), wait(ms), out }. Returns null, or why it could not (`noVideo`).
export async function measure(d, seconds, noVideo) {
  const end = Date.now() + 10000;
  let first = null;
  while (Date.now() < end) {
    await d.watch();
    first = await d.sample().catch((e) => ({ error: String(e) }));
    if (first.video && first.video.framesDecoded > 0) break;
    await d.wait(100);
  }
  if (!first || !first.video || !(first.video.framesDecoded > 0)) {
    d.out({ stats: first });
    return noVideo;
  }
  for (let i = 0; i <= seconds; i++) {
    const at = Date.now();
    d.out({ stats: await d.sample() });
    if (i < seconds) await d.idle(Math.max(0, 1000 - (Date.now() - at)));
  }
  return null;
}
