"""Reading rtcbridge's /metrics from the perf scripts: the server-added latency
histogram (rtcbridge_server_latency_seconds) and its quantiles."""
import urllib.request

LATENCY = "rtcbridge_server_latency_seconds_bucket"


def get(port, path="/metrics", timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read().decode()


def histogram(text, prefix=LATENCY, worker=None):
    """{le seconds: cumulative count}, summed over workers or for one `worker`."""
    hist = {}
    for line in text.splitlines():
        if line.startswith(prefix) and (worker is None or f'worker="{worker}"' in line):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="')[1].split('"')[0]
            le = float("inf") if le == "+Inf" else float(le)
            hist[le] = hist.get(le, 0) + int(float(value))
    return hist


def delta(h1, h0):
    """Histogram of the samples between two scrapes."""
    return {le: c - h0.get(le, 0) for le, c in h1.items()}


def quantile(hist, q):
    """Linear interpolation inside the bucket holding quantile q; None without samples."""
    items = sorted(hist.items())
    total = items[-1][1] if items else 0
    if total <= 0:
        return None
    want = q * total
    prev_le, prev_c = 0.0, 0
    for le, c in items:
        if c >= want:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (want - prev_c) / max(c - prev_c, 1)
        prev_le, prev_c = le, c
    return prev_le


def gauge_sum(text, name):
    """Sum of a metric's samples over its labels (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total
