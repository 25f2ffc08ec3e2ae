//! writev-blaster: the kernel floor for RTMP fan-out.
//!
//! Accepts TCP connections (from `rtmp-load --raw`) and sends each one the
//! same bitrate the relay would, with exactly one `writev` per connection per
//! batch interval and no per-connection user-space work beyond that: the bytes
//! come from one shared buffer (like a relay's shared message bodies), as two
//! iovecs per call (a small "header" and the body, like a relay's per-player
//! chunk header plus shared body). What a relay spends above this process's
//! CPU time is its own overhead.
//!
//! Pacing: every `--batch-ms` each connection is owed `kbps * elapsed` bytes
//! minus what it was sent; a socket that is full is skipped for that batch
//! (counted as `full`), the debt is capped at one second.
//!
//! Usage: writev-blaster --listen ADDR --kbps K [--batch-ms MS] [--seconds S]
//! Prints one JSON summary on stdout when --seconds elapse.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

const LISTENER: Token = Token(usize::MAX);
/// Shared body buffer the writes are cut from.
const PATTERN: usize = 1 << 20;
/// Bytes of the per-connection "header" iovec (an RTMP fmt 0 chunk header).
const HEADER: usize = 12;
const MAX_CONNS: usize = 100_000;

struct Peer {
    sock: TcpStream,
    since: Instant,
    sent: u64,
    off: usize,
    hdr: [u8; HEADER],
}

fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut kbps: f64 = 2500.0;
    let mut batch_ms: u64 = 15;
    let mut seconds: f64 = 0.0;
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let v = it.next().unwrap_or_default();
        let bad = |what: &str| -> ! {
            eprintln!("writev-blaster: {what}: bad value {v:?}\nusage: writev-blaster --listen ADDR --kbps K [--batch-ms MS] [--seconds S]");
            std::process::exit(2)
        };
        match f.as_str() {
            "--listen" => listen = Some(v.parse().unwrap_or_else(|_| bad("--listen"))),
            "--kbps" => kbps = v.parse().unwrap_or_else(|_| bad("--kbps")),
            "--batch-ms" => batch_ms = v.parse().unwrap_or_else(|_| bad("--batch-ms")),
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| bad("--seconds")),
            _ => bad(&f),
        }
    }
    let Some(addr) = listen else {
        eprintln!("usage: writev-blaster --listen ADDR --kbps K [--batch-ms MS] [--seconds S]");
        std::process::exit(2);
    };
    match run(addr, kbps, Duration::from_millis(batch_ms.max(1)), seconds) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("writev-blaster: {e}");
            std::process::exit(1);
        }
    }
}

fn run(addr: SocketAddr, kbps: f64, batch: Duration, seconds: f64) -> io::Result<serde_json::Value> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let pattern: Vec<u8> = (0..PATTERN).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8 | 1).collect();
    let bytes_per_s = kbps * 1000.0 / 8.0;
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let t0 = Instant::now();
    let end = (seconds > 0.0).then(|| t0 + Duration::from_secs_f64(seconds));
    let mut next_batch = t0 + batch;
    let (mut writevs, mut full, mut short, mut total, mut closed, mut accepted) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut drain = [0u8; 4096];
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if now >= next_batch {
            for slot in peers.iter_mut() {
                let Some(p) = slot.as_mut() else { continue };
                let due = (bytes_per_s * (now - p.since).as_secs_f64()) as u64;
                let owed = due.saturating_sub(p.sent).min(bytes_per_s as u64);
                if owed <= HEADER as u64 {
                    continue;
                }
                let body_len = (owed as usize - HEADER).min(PATTERN - p.off);
                let body = &pattern[p.off..p.off + body_len];
                p.hdr[..4].copy_from_slice(&(p.sent as u32).to_be_bytes());
                writevs += 1;
                match p.sock.write_vectored(&[IoSlice::new(&p.hdr), IoSlice::new(body)]) {
                    Ok(n) => {
                        if n < HEADER + body_len {
                            short += 1;
                        }
                        p.sent += n as u64;
                        total += n as u64;
                        p.off = (p.off + n.saturating_sub(HEADER)) % (PATTERN / 2);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => full += 1,
                    Err(_) => {
                        *slot = None;
                        closed += 1;
                    }
                }
            }
            next_batch += batch;
            if next_batch <= now {
                next_batch = now + batch;
            }
        }
        let mut wake = next_batch;
        if let Some(e) = end {
            wake = wake.min(e);
        }
        match poll.poll(&mut events, Some(wake.saturating_duration_since(Instant::now()))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            if peers.len() >= MAX_CONNS {
                                continue;
                            }
                            let _ = sock.set_nodelay(true);
                            let id = peers.len();
                            poll.registry().register(&mut sock, Token(id), Interest::READABLE)?;
                            peers.push(Some(Peer { sock, since: Instant::now(), sent: 0, off: 0, hdr: [0; HEADER] }));
                            accepted += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            } else if let Some(slot) = peers.get_mut(ev.token().0) {
                // Readers send nothing; a readable event is their close.
                let gone = match slot.as_mut().map(|p| p.sock.read(&mut drain)) {
                    Some(Ok(0)) => true,
                    Some(Err(e)) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted,
                    _ => false,
                };
                if gone && slot.is_some() {
                    *slot = None;
                    closed += 1;
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "listen": addr.to_string(),
        "kbps": kbps,
        "batch_ms": batch.as_millis() as u64,
        "seconds": secs,
        "accepted": accepted,
        "closed": closed,
        "bytes_total": total,
        "writev_calls": writevs,
        "writev_short": short,
        "writev_socket_full": full,
    }))
}
