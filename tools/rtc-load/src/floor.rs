//! The floor of WebRTC fan-out (perf/play-scale), as writev-blaster is for
//! RTMP: the least work a server must do per packet per viewer, one SRTP
//! protect and one `sendto` of the datagram, and nothing else.
//!
//! `--floor-send`: one UDP socket (like the server's). Each receiver says
//! hello (a datagram `FLOOR` + its index); from then on it is owed `--pps`
//! packets a second, sent in bursts every 1/`--fps` s (a video frame's worth,
//! as the server sends a frame's packets when the frame arrives). Every
//! packet is built into one reused buffer (a 12-byte RTP header with the
//! receiver's SSRC and sequence number, the payload from a shared pattern),
//! protected with the receiver's own SRTP context and sent with one
//! `send_to`. The debt is capped at one second; a send that fails is counted.
//!
//! `--floor-recv`: N UDP sockets that say hello (again every 500 ms until the
//! first packet), then receive, unprotect and count like the WHEP viewers
//! (sequence gaps = loss), so the receiving side costs what it costs in the
//! real run. Both sides derive the receivers' keys from their index.
//!
//! Output: one JSON summary on stdout each (packets, bytes, errors, the
//! process's own CPU). perf/play-scale reads the sender's CPU from
//! /proc/PID/stat over its window, as it does the server's.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use rtcbridge::proto::rtp::{self, RtpHeader};
use rtcbridge::proto::srtp::{SrtpContext, SrtpProfile};

use crate::report::{cpu_times, round3};
use crate::viewer::Track;

const HELLO: &[u8; 5] = b"FLOOR";
const HELLO_EVERY: Duration = Duration::from_millis(500);
const PATTERN: usize = 4096;
const MAX_VIEWERS: usize = 10_000;

pub struct FloorArgs {
    /// `--listen` (sender) or `--floor-addr` (receivers).
    pub addr: Option<SocketAddr>,
    pub viewers: usize,
    pub pps: f64,
    pub packet_bytes: usize,
    pub fps: f64,
    pub seconds: f64,
    pub profile: SrtpProfile,
}

impl Default for FloorArgs {
    fn default() -> Self {
        FloorArgs { addr: None, viewers: 0, pps: 300.0, packet_bytes: 1100, fps: 30.0, seconds: 10.0, profile: SrtpProfile::AeadAes128Gcm }
    }
}

impl FloorArgs {
    pub fn check(&self, sender: bool) -> Result<(), String> {
        if self.addr.is_none() {
            return Err(if sender { "--floor-send needs --listen ADDR" } else { "--floor-recv needs --floor-addr ADDR" }.into());
        }
        if self.viewers == 0 || self.viewers > MAX_VIEWERS {
            return Err(format!("--viewers: must be 1..={MAX_VIEWERS}"));
        }
        if !(self.pps > 0.0 && self.pps <= 100_000.0) {
            return Err("--pps: must be > 0".into());
        }
        if !(12 + self.profile.rtp_overhead() + 1..=1400).contains(&self.packet_bytes) {
            return Err("--packet-bytes: must be 64..=1400".into());
        }
        if !((1.0..=1000.0).contains(&self.fps) && self.seconds > 0.0 && self.seconds < 1e6) {
            return Err("--fps 1..=1000 and --seconds > 0".into());
        }
        Ok(())
    }
}

/// Receiver `i`'s SRTP key and salt (both sides derive them; nothing secret here).
fn keys(p: SrtpProfile, i: usize) -> (Vec<u8>, Vec<u8>) {
    let mix = |k: usize, m: usize| ((k * 131 + i * m + 17) % 251) as u8;
    ((0..p.key_len()).map(|k| mix(k, 7)).collect(), (0..p.salt_len()).map(|k| mix(k, 13)).collect())
}

fn context(p: SrtpProfile, i: usize) -> Result<SrtpContext, String> {
    let (k, s) = keys(p, i);
    SrtpContext::new(p, &k, &s).map_err(|e| format!("SRTP: {e}"))
}

/// Ask for a larger socket receive buffer (best effort: the kernel caps it).
pub fn set_rcvbuf(sock: &impl AsRawFd, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from a valid c_int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

struct Peer {
    addr: SocketAddr,
    ctx: SrtpContext,
    ssrc: u32,
    seq: u16,
    ts: u32,
    since: Instant,
    sent: u64,
}

pub fn send(a: &FloorArgs) -> Result<serde_json::Value, String> {
    let addr = a.addr.ok_or("no address")?;
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    poll.registry().register(&mut sock, Token(0), Interest::READABLE).map_err(|e| format!("register: {e}"))?;
    let mut events = Events::with_capacity(64);
    let pattern: Vec<u8> = (0..PATTERN).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect();
    let payload_len = a.packet_bytes - 12 - a.profile.rtp_overhead();
    let mut peers: Vec<Option<Peer>> = (0..a.viewers).map(|_| None).collect();
    let mut buf: Vec<u8> = Vec::with_capacity(a.packet_bytes + 64);
    let mut rbuf = [0u8; 64];
    let tick = Duration::from_secs_f64(1.0 / a.fps);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.seconds);
    let cpu0 = cpu_times();
    let (mut packets, mut bytes, mut errors, mut hellos) = (0u64, 0u64, 0u64, 0u64);
    let mut all_joined: Option<Instant> = None;
    let mut next = t0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next {
            next += tick;
            if next < now {
                next = now + tick;
            }
            for (i, p) in peers.iter_mut().enumerate() {
                let Some(p) = p else { continue };
                let owed = ((now.duration_since(p.since).as_secs_f64() * a.pps) as u64).saturating_sub(p.sent);
                let owed = owed.min(a.pps.ceil() as u64);
                for k in 0..owed {
                    buf.clear();
                    let h = RtpHeader { marker: k + 1 == owed, pt: 102, seq: p.seq, ts: p.ts, ssrc: p.ssrc };
                    p.seq = p.seq.wrapping_add(1);
                    rtp::write_header(&h, &[], &mut buf).map_err(|e| format!("RTP: {e}"))?;
                    let off = (p.sent as usize * 64 + i * 8) % (PATTERN - payload_len.min(PATTERN));
                    buf.extend_from_slice(&pattern[off..off + payload_len.min(PATTERN)]);
                    p.ctx.protect_rtp(&mut buf).map_err(|e| format!("SRTP protect: {e}"))?;
                    match sock.send_to(&buf, p.addr) {
                        Ok(n) => {
                            packets += 1;
                            bytes += n as u64;
                        }
                        Err(_) => errors += 1,
                    }
                    p.sent += 1;
                }
                p.ts = p.ts.wrapping_add((90_000.0 / a.fps) as u32);
            }
        }
        let wait = next.min(end).saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("epoll_wait: {e}"));
            }
        }
        if events.is_empty() {
            continue;
        }
        loop {
            match sock.recv_from(&mut rbuf) {
                Ok((n, from)) => {
                    let Some(i) = rbuf[..n]
                        .strip_prefix(HELLO)
                        .and_then(|r| r.try_into().ok())
                        .map(|b: [u8; 4]| u32::from_be_bytes(b) as usize)
                        .filter(|&i| i < peers.len())
                    else {
                        continue;
                    };
                    hellos += 1;
                    if peers[i].is_none() {
                        let now = Instant::now();
                        peers[i] = Some(Peer { addr: from, ctx: context(a.profile, i)?, ssrc: i as u32 + 1, seq: 0, ts: 0, since: now, sent: 0 });
                        if all_joined.is_none() && peers.iter().all(Option::is_some) {
                            all_joined = Some(now);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    let cpu1 = cpu_times();
    let done = Instant::now();
    let joined = peers.iter().filter(|p| p.is_some()).count();
    let viewer_seconds: f64 = peers.iter().flatten().map(|p| done.saturating_duration_since(p.since).as_secs_f64()).sum();
    let cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
    Ok(json!({
        "floor": "send",
        "viewers": a.viewers,
        "joined": joined,
        "all_joined_after_s": all_joined.map(|t| round3(t.duration_since(t0).as_secs_f64())),
        "pps_per_viewer": a.pps,
        "packet_bytes": a.packet_bytes,
        "fps": a.fps,
        "profile": format!("{:?}", a.profile),
        "packets_sent": packets,
        "bytes_sent": bytes,
        "send_errors": errors,
        "hellos": hellos,
        "seconds": round3(done.duration_since(t0).as_secs_f64()),
        "cpu_seconds": {"user": round3(cpu1.0 - cpu0.0), "sys": round3(cpu1.1 - cpu0.1)},
        "cpu_ms_per_viewer_second": if viewer_seconds > 0.0 { round3(cpu * 1e3 / viewer_seconds) } else { 0.0 },
    }))
}

struct Receiver {
    sock: UdpSocket,
    ctx: SrtpContext,
    track: Track,
    got_any: bool,
    next_hello: Instant,
}

pub fn recv(a: &FloorArgs) -> Result<serde_json::Value, String> {
    let to = a.addr.ok_or("no address")?;
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.seconds);
    let cpu0 = cpu_times();
    let bind = if to.is_ipv4() { SocketAddr::from(([127, 0, 0, 1], 0)) } else { SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 0)) };
    let mut rs: Vec<Receiver> = Vec::with_capacity(a.viewers);
    for i in 0..a.viewers {
        let mut sock = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
        sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
        set_rcvbuf(&sock, crate::UDP_RCVBUF);
        poll.registry().register(&mut sock, Token(i), Interest::READABLE).map_err(|e| format!("register: {e}"))?;
        rs.push(Receiver { sock, ctx: context(a.profile, i)?, track: Track::default(), got_any: false, next_hello: t0 });
    }
    let mut buf = vec![0u8; 2048];
    let (mut srtp_errors, mut sock_errors) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut wake = end;
        for (i, r) in rs.iter_mut().enumerate() {
            if r.got_any {
                continue;
            }
            if r.next_hello <= now {
                let mut hello = HELLO.to_vec();
                hello.extend_from_slice(&(i as u32).to_be_bytes());
                if r.sock.send(&hello).is_err() {
                    sock_errors += 1;
                }
                r.next_hello = now + HELLO_EVERY;
            }
            wake = wake.min(r.next_hello);
        }
        if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("epoll_wait: {e}"));
            }
        }
        for ev in events.iter() {
            let Some(r) = rs.get_mut(ev.token().0) else { continue };
            loop {
                match r.sock.recv(&mut buf) {
                    Ok(n) => {
                        r.got_any = true;
                        let d = &mut buf[..n];
                        match r.ctx.unprotect_rtp(d) {
                            Ok(len) => match rtp::parse(&d[..len]) {
                                Ok(p) => {
                                    r.track.count(p.ssrc, p.seq, p.ts, n);
                                }
                                Err(_) => srtp_errors += 1,
                            },
                            Err(_) => srtp_errors += 1,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        sock_errors += 1;
                        break;
                    }
                }
            }
        }
    }
    let cpu1 = cpu_times();
    let (packets, bytes, lost, expected) = rs.iter().fold((0, 0, 0, 0), |(p, b, l, e), r| {
        (p + r.track.packets, b + r.track.bytes, l + r.track.lost(), e + r.track.expected())
    });
    Ok(json!({
        "floor": "recv",
        "viewers": a.viewers,
        "receiving": rs.iter().filter(|r| r.got_any).count(),
        "packets": packets,
        "bytes": bytes,
        "lost": lost,
        "loss_percent": if expected > 0 { round3(lost as f64 * 100.0 / expected as f64) } else { 0.0 },
        "srtp_errors": srtp_errors,
        "socket_errors": sock_errors,
        "cpu_seconds": {"user": round3(cpu1.0 - cpu0.0), "sys": round3(cpu1.1 - cpu0.1)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receivers' keys are the sender's: a protected packet opens on the other side.
    #[test]
    fn both_sides_derive_the_same_keys() {
        let p = SrtpProfile::AeadAes128Gcm;
        let mut tx = context(p, 3).unwrap();
        let mut rx = context(p, 3).unwrap();
        let mut other = context(p, 4).unwrap();
        let mut pkt = Vec::new();
        rtp::write_header(&RtpHeader { marker: true, pt: 102, seq: 1, ts: 2, ssrc: 4 }, &[], &mut pkt).unwrap();
        pkt.extend_from_slice(&[7u8; 100]);
        tx.protect_rtp(&mut pkt).unwrap();
        let mut copy = pkt.clone();
        assert_eq!(rx.unprotect_rtp(&mut pkt).unwrap(), 112);
        assert!(other.unprotect_rtp(&mut copy).is_err());
    }
}
