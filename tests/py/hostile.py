"""Hostile RTMP clients for the hardening tests (issue 15), on raw sockets.

    python3 hostile.py amf-nulls   HOST PORT [--conns N] [--mb MB] [--pid PID]
    python3 hostile.py ping-flood  HOST PORT [--seconds S] [--amf] [--pid PID]
    python3 hostile.py tiny-window HOST PORT [--seconds S] [--pid PID]

amf-nulls:   after a handshake, one AMF0 command message (type 20) of MB
             megabytes (default 8): "ping", 0, then nulls, on N connections at
             once (default 1; the issue's numbers: 1 and 4). The server should
             close each connection at the message header ("AMF0 command message
             (type 20) of 8388608 bytes exceeds ...").
ping-flood:  after a handshake, User Control PingRequest messages (or, with
             --amf, AMF0 "ping" commands) as fast as the socket takes them,
             never reading a byte, with a small receive buffer so the
             server's replies back up at once. The server should close the
             connection once its unread replies pass its budget.
tiny-window: Window Acknowledgement Size 1, then audio messages, never
             reading: every chunk would be acknowledged without the floor.

Each prints JSON lines: {"event": ..., ...}; the last is {"event": "done", ...}
with "closed_by_server" per connection and, with --pid, the server's
VmRSS/VmHWM (kB) before and after. Exit status 0 when every connection was
closed by the server (what a hardened server does), 1 otherwise, 2 on a
usage or connection error.
"""
import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

CHUNK_SIZE = 65536  # we announce it with Set Chunk Size before big messages


def emit(**kw):
    print(json.dumps(kw), flush=True)


def mem(pid):
    if not pid:
        return None
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError as e:
        return {"error": str(e)}
    return out


def handshake(host, port, rcvbuf=None):
    """Plain RTMP handshake (C0 C1, S0 S1 S2, C2); returns the socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((host, port))
    c1 = struct.pack(">II", 0, 0) + os.urandom(1528)
    s.sendall(b"\x03" + c1)
    got = b""
    while len(got) < 1 + 1536 + 1536:
        part = s.recv(65536)
        if not part:
            raise ConnectionError("server closed during the handshake")
        got += part
    s1 = got[1:1537]
    s.sendall(s1)  # C2 echoes S1
    return s


def basic_header(fmt, csid):
    return bytes([(fmt << 6) | csid])


def chunk_message(csid, type_id, stream_id, body, chunk_size, ts=0):
    """One message, fmt 0 then fmt 3 continuation chunks."""
    out = bytearray(basic_header(0, csid))
    out += struct.pack(">I", ts)[1:] + struct.pack(">I", len(body))[1:] + bytes([type_id])
    out += struct.pack("<I", stream_id)
    for i in range(0, max(len(body), 1), chunk_size):
        if i:
            out += basic_header(3, csid)
        out += body[i:i + chunk_size]
    return bytes(out)


def amf_string(s):
    b = s.encode()
    return b"\x02" + struct.pack(">H", len(b)) + b


def amf_number(n):
    return b"\x00" + struct.pack(">d", n)


def set_chunk_size(n):
    return chunk_message(2, 1, 0, struct.pack(">I", n), 128)


def wait_closed(s, seconds):
    """True if the server closes (EOF or reset) within `seconds`, reading and discarding."""
    s.settimeout(0.5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def send_all_or_closed(s, data):
    """Send; returns (bytes sent, closed by the peer?)."""
    s.settimeout(30)
    sent = 0
    try:
        while sent < len(data):
            sent += s.send(data[sent:sent + (1 << 20)])
    except (BrokenPipeError, ConnectionResetError):
        return sent, True
    except socket.timeout:
        return sent, False
    return sent, False


def cmd_amf_nulls(a):
    before = mem(a.pid)
    body = amf_string("ping") + amf_number(0)
    body += b"\x05" * (a.mb * 1024 * 1024 - len(body))
    wire = set_chunk_size(CHUNK_SIZE) + chunk_message(3, 20, 0, body, CHUNK_SIZE)
    results = [None] * a.conns
    socks = []
    for i in range(a.conns):
        socks.append(handshake(a.host, a.port))
    emit(event="handshaken", conns=a.conns, message_bytes=len(body))

    def attack(i, s):
        sent, closed = send_all_or_closed(s, wire)
        if not closed:
            closed = wait_closed(s, a.wait)
        results[i] = {"sent": sent, "closed_by_server": closed}
        s.close()

    threads = [threading.Thread(target=attack, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit(event="done", attack="amf-nulls", conns=results, mem_before=before, mem_after=mem(a.pid))
    return all(r["closed_by_server"] for r in results)


def cmd_ping_flood(a):
    before = mem(a.pid)
    s = handshake(a.host, a.port, rcvbuf=4096)
    if a.amf:
        body = amf_string("ping") + amf_number(0) + b"\x05"
        one = chunk_message(3, 20, 0, body, 128)
    else:
        one = chunk_message(2, 4, 0, struct.pack(">HI", 6, 12345), 128)
    batch = one * 4096
    emit(event="handshaken", message_bytes=len(one))
    sent_total, closed = 0, False
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline and not closed:
        sent, closed = send_all_or_closed(s, batch)
        sent_total += sent
        if sent < len(batch) and not closed:
            break  # the server stopped reading us without closing
    if not closed:
        closed = wait_closed_without_reading(s, a.wait)
    emit(event="done", attack="ping-flood-amf" if a.amf else "ping-flood", sent=sent_total,
         messages=sent_total // len(one), closed_by_server=closed, mem_before=before, mem_after=mem(a.pid))
    s.close()
    return closed


def wait_closed_without_reading(s, seconds):
    """Detect a close without reading the replies: a send fails once the server reset us."""
    deadline = time.monotonic() + seconds
    s.settimeout(1)
    while time.monotonic() < deadline:
        try:
            s.send(b"\xc2")  # one byte of a further chunk header
        except (BrokenPipeError, ConnectionResetError):
            return True
        except socket.timeout:
            pass
        time.sleep(0.2)
    return False


def cmd_tiny_window(a):
    before = mem(a.pid)
    s = handshake(a.host, a.port, rcvbuf=4096)
    wire = chunk_message(2, 5, 0, struct.pack(">I", 1), 128) + set_chunk_size(CHUNK_SIZE)
    audio = chunk_message(4, 8, 1, b"\xaf\x01" + b"\x00" * 200, CHUNK_SIZE)
    sent, closed = send_all_or_closed(s, wire)
    total = sent
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline and not closed:
        sent, closed = send_all_or_closed(s, audio * 1000)
        total += sent
        if sent == 0:
            break
    emit(event="done", attack="tiny-window", sent=total, closed_by_server=closed,
         mem_before=before, mem_after=mem(a.pid))
    s.close()
    # A server with the floor acknowledges every 4 KiB: it may keep the connection.
    return True


def main():
    ap = argparse.ArgumentParser(description="hostile RTMP clients (issue 15)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("amf-nulls", "ping-flood", "tiny-window"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--pid", type=int, help="server pid: report its VmRSS/VmHWM")
        p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the server to close")
        if name == "amf-nulls":
            p.add_argument("--conns", type=int, default=1)
            p.add_argument("--mb", type=int, default=8)
        else:
            p.add_argument("--seconds", type=float, default=10.0)
        if name == "ping-flood":
            p.add_argument("--amf", action="store_true", help='AMF0 "ping" commands, not User Control')
    a = ap.parse_args()
    try:
        ok = {"amf-nulls": cmd_amf_nulls, "ping-flood": cmd_ping_flood, "tiny-window": cmd_tiny_window}[a.cmd](a)
    except (OSError, ConnectionError) as e:
        emit(event="error", error=str(e))
        sys.exit(2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
