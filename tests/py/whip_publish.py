"""Publish to a WHIP endpoint with aiortc (a WebRTC implementation we did not write).

    python3 whip_publish.py [--token T] http://127.0.0.1:PORT/whip/NAME SECONDS [AUDIO_CODEC [AUDIO_DRIFT_PPM]]

--token T: sent as `Authorization: Bearer T` with the offer (RFC 9725 §4.4).

AUDIO_CODEC: opus (default), PCMU or PCMA (offered alone, to check G.711 pass-through).
AUDIO_DRIFT_PPM: instead of silence, a 440 Hz tone from a "sound card" whose clock runs
that many parts per million fast: its 20 ms frames of 48 kHz samples come that much more
often than the wall clock says (RTP timestamps count samples; aiortc's RTCP sender
reports pair them with the wall clock, and so show the drift).

Sends H.264 (a moving test pattern, encoded by aiortc through PyAV/libx264) and
Opus (aiortc's silence track). Prints JSON lines: {"event": ..., ...}; exit 0 when
the session reached "connected", the publish ran SECONDS, and DELETE returned 2xx.
"""
import asyncio
import fractions
import json
import sys
import time
import urllib.request

import math

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaBlackhole  # noqa: F401  (import check)
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from av import AudioFrame, VideoFrame


def out(**kw):
    print(json.dumps(kw), flush=True)


class Pattern(VideoStreamTrack):
    """640x360 frames with a moving bar, 30 fps."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(640, 360, "yuv420p")
        x = (self.n * 8) % 600
        row = bytearray([40 + (self.n % 64)] * 640)
        row[x:x + 40] = b"\xeb" * 40
        y = frame.planes[0]
        y.update(bytes(row) * 360 if y.line_size == 640 else bytes(y.line_size * 360))
        for p in frame.planes[1:]:
            p.update(bytes([128]) * (p.line_size * 180))
        self.n += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame


class DriftingTone(MediaStreamTrack):
    """48 kHz mono 440 Hz tone in 20 ms frames, paced ppm fast against the wall clock."""

    kind = "audio"

    def __init__(self, ppm):
        super().__init__()
        self.rate = 48000 * (1.0 + ppm * 1e-6)  # samples per wall-clock second
        self.samples = 0
        self.start = None

    async def recv(self):
        n = 960
        if self.start is None:
            self.start = time.time()
        else:
            self.samples += n
            wait = self.start + self.samples / self.rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=n)
        pcm = bytearray()
        for i in range(n):
            v = int(8000 * math.sin(2 * math.pi * 440 * (self.samples + i) / 48000))
            pcm += v.to_bytes(2, "little", signed=True)
        frame.planes[0].update(bytes(pcm))
        frame.pts = self.samples
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


TOKEN = None


def http(method, url, body=None, ctype=None):
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def main(url, seconds, audio_codec, drift_ppm):
    pc = RTCPeerConnection()
    state = {"connected": False}

    @pc.on("connectionstatechange")
    async def on_state():
        out(event="state", state=pc.connectionState)
        if pc.connectionState == "connected":
            state["connected"] = True

    video = pc.addTransceiver(Pattern(), direction="sendonly")
    caps = RTCRtpSender.getCapabilities("video")
    video.setCodecPreferences([c for c in caps.codecs if c.mimeType in ("video/H264", "video/rtx")])
    track = AudioStreamTrack() if drift_ppm is None else DriftingTone(drift_ppm)
    audio = pc.addTransceiver(track, direction="sendonly")
    if audio_codec.lower() != "opus":
        acaps = RTCRtpSender.getCapabilities("audio")
        audio.setCodecPreferences([c for c in acaps.codecs if c.mimeType == "audio/" + audio_codec])
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, answer = await asyncio.get_event_loop().run_in_executor(
        None, http, "POST", url, pc.localDescription.sdp.encode(), "application/sdp")
    out(event="post", status=status, location=headers.get("Location"))
    if status != 201:
        out(event="error", body=answer)
        return 2
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    t0 = time.time()
    while time.time() - t0 < 10 and not state["connected"]:
        await asyncio.sleep(0.05)
    if not state["connected"]:
        out(event="error", body="not connected within 10 s")
        return 3
    await asyncio.sleep(seconds)
    base = url.split("/whip/")[0]
    status, _, _ = await asyncio.get_event_loop().run_in_executor(
        None, http, "DELETE", base + headers["Location"])
    out(event="delete", status=status)
    await pc.close()
    return 0 if 200 <= status < 300 else 4


if __name__ == "__main__":
    if "--token" in sys.argv:
        i = sys.argv.index("--token")
        TOKEN = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    sys.exit(asyncio.run(main(
        sys.argv[1],
        float(sys.argv[2]),
        sys.argv[3] if len(sys.argv) > 3 else "opus",
        float(sys.argv[4]) if len(sys.argv) > 4 else None,
    )))
