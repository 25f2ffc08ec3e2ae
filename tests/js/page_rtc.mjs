// What play.mjs and play_demo.mjs run inside the page they drive. Playwright serializes
// these functions into the page (page.addInitScript, page.evaluate), so each one is
// self-contained: no imports, no outer variables; the argument is the only input.

// Init script, before the page's own scripts: every RTCPeerConnection the page makes is
// kept in window[name].pcs (the page is not changed otherwise).
export function keepPeerConnections(name) {
  const rec = window[name] || (window[name] = { pcs: [], ws: [] });
  const OrigPc = window.RTCPeerConnection;
  if (OrigPc) {
    const Pc = function (...a) { const pc = new OrigPc(...a); rec.pcs.push(pc); return pc; };
    Pc.prototype = OrigPc.prototype;
    Object.setPrototypeOf(Pc, OrigPc);
    window.RTCPeerConnection = Pc;
  }
}

// One getStats() sample over the open peer connections in window[opts.name].pcs:
// inbound-rtp video and audio, outbound-rtp video (`sent`), and `element`: the <video>
// opts.video selects, or else the one showing a received track.
export async function sampleStats(opts) {
  const rec = window[opts.name];
  const r = { pcs: rec.pcs.length, open: 0 };
  for (const pc of rec.pcs) {
    if (pc.connectionState === "closed" || pc.signalingState === "closed") continue;
    r.open++;
    const stats = await pc.getStats();
    const codecs = {};
    stats.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        r.video = {
          framesDecoded: s.framesDecoded, framesReceived: s.framesReceived, framesDropped: s.framesDropped,
          keyFramesDecoded: s.keyFramesDecoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
          framesPerSecond: s.framesPerSecond, freezeCount: s.freezeCount, packetsReceived: s.packetsReceived,
          packetsLost: s.packetsLost, nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
          codec: codecs[s.codecId], decoder: s.decoderImplementation, pcState: pc.connectionState,
        };
      }
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        r.audio = {
          totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel, totalSamplesReceived: s.totalSamplesReceived,
          concealedSamples: s.concealedSamples, silentConcealedSamples: s.silentConcealedSamples,
          packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, codec: codecs[s.codecId],
        };
      }
      if (s.type === "outbound-rtp" && s.kind === "video") {
        r.sent = { framesSent: s.framesSent, framesEncoded: s.framesEncoded, framesPerSecond: s.framesPerSecond,
          qualityLimitationReason: s.qualityLimitationReason };
      }
    });
  }
  let v = opts.video ? document.querySelector(opts.video) : null;
  if (!opts.video) {
    // The element that shows what the page receives (not its own camera's preview).
    const remote = new Set();
    for (const pc of rec.pcs) if (pc.signalingState !== "closed") for (const x of pc.getReceivers()) if (x.track) remote.add(x.track);
    v = [...document.querySelectorAll("video")].find((e) => e.srcObject && e.srcObject.getTracks && e.srcObject.getTracks().some((t) => remote.has(t)));
  }
  if (v) {
    r.element = { hasSrc: !!v.srcObject, muted: v.muted, paused: v.paused, volume: v.volume, width: v.videoWidth, height: v.videoHeight };
  }
  return r;
}
