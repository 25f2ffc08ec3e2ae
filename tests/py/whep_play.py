"""Play a stream over WHEP with aiortc (a WebRTC implementation we did not write) and
count what its decoders give back.

    python3 whep_play.py [--token T] http://127.0.0.1:PORT/whep/NAME SECONDS

Offers recvonly video and audio transceivers (aiortc's own codec list: VP8, H.264, rtx;
Opus, G.722, PCMU, PCMA: the server picks what it sends), POSTs the offer as
application/sdp, and on 201 applies the answer. Every decoded frame is counted: video
frames are PyAV VideoFrames decoded by aiortc (H.264 through libavcodec), audio frames
are aiortc's decoded Opus. The window of SECONDS starts at the first decoded video frame.
Then DELETE on the Location the POST gave, and close.

--token T: sent as `Authorization: Bearer T` with the POST and the DELETE.

Prints JSON lines {"event": ...}:
  post    {status, location, content_type, answer_codecs}  the POST's answer
  error   {status?, body?, reason}                         and exit 2..5
  state   {state}                                          connection state changes
  track   {kind}
  result  {...}                                            counts, see `summary`
  delete  {status}
Exit 0 only when the POST gave 201, the connection reached "connected", the window ran,
and DELETE answered 2xx; the counts are for the caller to judge.
"""
import array
import asyncio
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

TOKEN = None


def out(**kw):
    print(json.dumps(kw), flush=True)


def http(method, url, body=None, ctype=None):
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode(errors="replace")


def sdp_codecs(sdp):
    """{kind: [rtpmap ...]} of an SDP, in m-line order."""
    kinds, kind = {}, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ")[0]
            kinds.setdefault(kind, [])
        elif line.startswith("a=rtpmap:") and kind:
            kinds[kind].append(line[len("a=rtpmap:"):])
    return kinds


class Counter:
    """What one kind of track delivered: frames, their pts, and content measures."""

    def __init__(self, kind):
        self.kind = kind
        self.times = []  # wall-clock arrival (s, time.monotonic)
        self.frame_samples = []  # audio samples per frame
        self.pts = []
        self.non_monotonic = 0
        self.sizes = {}
        self.sample_rates = {}
        self.channels = {}
        self.samples = 0
        self.sq_sum = 0.0
        self.sq_n = 0
        self.luma = []
        self.error = None

    def video(self, frame):
        key = "%dx%d" % (frame.width, frame.height)
        self.sizes[key] = self.sizes.get(key, 0) + 1
        if len(self.luma) < 5 and len(self.times) % 30 == 0:
            # Spread of the luma plane (every 101st byte): a test pattern is far from flat.
            y = bytes(frame.planes[0])[::101]
            if y:
                mean = sum(y) / len(y)
                self.luma.append(round(math.sqrt(sum((v - mean) ** 2 for v in y) / len(y)), 1))

    def audio(self, frame):
        self.sample_rates[frame.sample_rate] = self.sample_rates.get(frame.sample_rate, 0) + 1
        ch = len(frame.layout.channels)
        self.channels[ch] = self.channels.get(ch, 0) + 1
        self.samples += frame.samples
        self.frame_samples.append(frame.samples)
        if frame.format.name == "s16":
            pcm = array.array("h")
            pcm.frombytes(bytes(frame.planes[0])[: frame.samples * ch * 2])
            self.sq_sum += sum(float(v) * v for v in pcm)
            self.sq_n += len(pcm)
        elif self.error is None:
            self.error = "audio sample format %s (expected s16)" % frame.format.name

    def add(self, frame):
        now = time.monotonic()
        if frame.pts is not None:
            if self.pts and frame.pts <= self.pts[-1]:
                self.non_monotonic += 1
            self.pts.append(frame.pts)
        self.times.append(now)
        if self.kind == "video":
            self.video(frame)
        else:
            self.audio(frame)

    def summary(self, start, end):
        d = {
            "frames": len(self.times),
            "frames_in_window": sum(1 for t in self.times if start <= t < end),
            "pts_non_monotonic": self.non_monotonic,
            "pts_missing": len(self.times) - len(self.pts),
            "first_at": round(self.times[0] - start, 3) if self.times else None,
            "last_at": round(self.times[-1] - start, 3) if self.times else None,
        }
        if self.pts:
            d["pts_first"], d["pts_last"] = self.pts[0], self.pts[-1]
        # The longest gap between two frames in the window, in ms.
        inside = [t for t in self.times if start <= t < end]
        d["max_gap_ms"] = round(max((b - a for a, b in zip(inside, inside[1:])), default=0) * 1000)
        if self.kind == "video":
            d["sizes"] = self.sizes
            d["luma_stddev"] = self.luma
        else:
            d["sample_rates"] = {str(k): v for k, v in self.sample_rates.items()}
            d["channels"] = {str(k): v for k, v in self.channels.items()}
            d["samples"] = self.samples
            d["samples_in_window"] = sum(n for t, n in zip(self.times, self.frame_samples) if start <= t < end)
            # RMS relative to full scale (1.0 = a full-scale square wave).
            d["rms"] = round(math.sqrt(self.sq_sum / self.sq_n) / 32768, 5) if self.sq_n else 0.0
        if self.error:
            d["error"] = self.error
        return d


async def consume(track, counter, first):
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        counter.add(frame)
        first.set()


async def main(url, seconds):
    pc = RTCPeerConnection()
    connected = asyncio.Event()
    failed = asyncio.Event()
    counters = {"video": Counter("video"), "audio": Counter("audio")}
    tasks = []
    first_video = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state():
        out(event="state", state=pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState == "failed":
            failed.set()

    @pc.on("track")
    def on_track(track):
        out(event="track", kind=track.kind)
        c = counters.get(track.kind)
        if c is None:
            return
        first = first_video if track.kind == "video" else asyncio.Event()
        tasks.append(asyncio.ensure_future(consume(track, c, first)))

    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_event_loop()
    status, headers, answer = await loop.run_in_executor(
        None, http, "POST", url, pc.localDescription.sdp.encode(), "application/sdp")
    location = headers.get("location")
    out(event="post", status=status, location=location, content_type=headers.get("content-type"),
        answer_codecs=sdp_codecs(answer) if status == 201 else None)
    if status != 201:
        out(event="error", status=status, body=answer.strip()[:500], reason="POST was not answered 201")
        await pc.close()
        return 2
    if not location:
        out(event="error", reason="201 without a Location header")
        await pc.close()
        return 2
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    except Exception as e:  # noqa: BLE001  (aiortc raises plain ValueErrors)
        out(event="error", reason="aiortc refused the answer: %r" % (e,), body=answer[:2000])
        await pc.close()
        return 3
    try:
        await asyncio.wait_for(connected.wait(), 10)
    except asyncio.TimeoutError:
        out(event="error", reason="not connected within 10 s (state %s)" % pc.connectionState)
        await pc.close()
        return 3
    try:
        await asyncio.wait_for(first_video.wait(), 10)
    except asyncio.TimeoutError:
        pass  # reported as zero frames below
    start = time.monotonic()
    await asyncio.sleep(seconds)
    end = time.monotonic()
    result = {k: c.summary(start, end) for k, c in counters.items()}
    result["window_s"] = round(end - start, 3)
    result["state_at_end"] = pc.connectionState
    out(event="result", **result)
    delete_url = urllib.parse.urljoin(url, location)
    status, _, body = await loop.run_in_executor(None, http, "DELETE", delete_url)
    out(event="delete", status=status, url=delete_url, body=body.strip()[:200])
    for t in tasks:
        t.cancel()
    await pc.close()
    return 0 if 200 <= status < 300 else 4


if __name__ == "__main__":
    if "--token" in sys.argv:
        i = sys.argv.index("--token")
        TOKEN = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]))))
