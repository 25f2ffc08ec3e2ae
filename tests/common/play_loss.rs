//! Impairments on the path from the server to a WebRTC *viewer* (tests/webrtc_play_loss.rs),
//! the playback counterpart of tests/common/lossy.rs (which impairs what a browser
//! publishes). Same method (TESTING.md, "Loss and reordering"; no netem on this kernel):
//!
//! - a UDP relay ([`DownRelay`]) between the browser and the server: the server announces
//!   the relay as its ICE candidate (`--public-ip 127.0.0.1 --candidate-port RELAY`); what
//!   the browser sends (STUN, DTLS, RTCP: NACKs, PLIs, receiver reports) goes on to the
//!   server at once, and now and then an RTP packet the *server* sends toward the browser is
//!   held back so that later packets overtake it;
//! - an nftables `numgen random` rule (lossy.rs' `NftLoss::install_from`) that drops a
//!   share of the RTP packets the relay sends to the browser (UDP source port = the relay's
//!   port), on the output hook of the test's own network namespace. The relay's `send_to` then fails with
//!   EPERM, which the relay counts, so both the rule's counter and the relay agree on what
//!   was lost. Retransmissions pass the same rule (they can be lost too, as on a real path).
//!
//! Included by the test next to `#[path = "common/lossy.rs"] mod lossy;` (packet classes
//! the seeded generator and the nftables rule come from there). Only std.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::lossy::{classify, stop_and_join, Kind, Rng};

// ---------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------

/// What the relay saw and did.
#[derive(Default, Debug)]
pub struct DownStats {
    /// Datagrams from the browser, by kind (all forwarded to the server at once).
    pub up_stun: AtomicU64,
    pub up_dtls: AtomicU64,
    pub up_rtp: AtomicU64,
    pub up_rtcp: AtomicU64,
    pub up_other: AtomicU64,
    /// Datagrams from the server toward the browser, by kind.
    pub down_stun: AtomicU64,
    pub down_dtls: AtomicU64,
    pub down_rtp: AtomicU64,
    pub down_rtcp: AtomicU64,
    pub down_other: AtomicU64,
    /// Datagrams handed to the browser (send_to succeeded).
    pub down_sent: AtomicU64,
    /// Sends to the browser refused (EPERM: the nftables rule dropped them).
    pub down_refused: AtomicU64,
    /// Server RTP packets held back.
    pub held: AtomicU64,
    /// Held RTP packets that at least one later packet overtook.
    pub reordered: AtomicU64,
    /// Distinct browser source addresses (one socket toward the server each).
    pub peers: AtomicU64,
}

impl DownStats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn summary(&self) -> String {
        let g = Self::get;
        format!(
            "browser->server: stun {} dtls {} rtp {} rtcp {} other {}; server->browser: stun {} dtls {} rtp {} rtcp {} other {}, \
             sent {} refused (nft drop) {}; rtp held {} reordered {}; browser addresses {}",
            g(&self.up_stun),
            g(&self.up_dtls),
            g(&self.up_rtp),
            g(&self.up_rtcp),
            g(&self.up_other),
            g(&self.down_stun),
            g(&self.down_dtls),
            g(&self.down_rtp),
            g(&self.down_rtcp),
            g(&self.down_other),
            g(&self.down_sent),
            g(&self.down_refused),
            g(&self.held),
            g(&self.reordered),
            g(&self.peers)
        )
    }
}

#[derive(Clone, Debug)]
pub struct DownRelayConfig {
    /// Where the server listens (its --udp-port).
    pub server: SocketAddr,
    /// Per mille of server->browser RTP packets held back (0: none).
    pub hold_per_mille: u64,
    /// Hold time range in ms (uniform).
    pub hold_ms: (u64, u64),
    pub seed: u64,
}

/// A two-sided UDP relay that impairs the *server→browser* direction: the browser talks to
/// `port`; for every browser source address the relay opens its own socket toward the
/// server and a thread that relays the server's datagrams back, holding some RTP packets
/// back. Stops and joins its threads on drop.
pub struct DownRelay {
    pub port: u16,
    pub stats: Arc<DownStats>,
    pub seed: u64,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DownRelay {
    /// The browser-facing socket, bound first so that its port can be given to the server
    /// (`--candidate-port`) and to the nftables rule.
    pub fn bind() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind relay socket")
    }

    pub fn start(browser_side: UdpSocket, cfg: DownRelayConfig) -> DownRelay {
        let browser_side = Arc::new(browser_side);
        let port = browser_side.local_addr().expect("relay addr").port();
        let stats = Arc::new(DownStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let seed = cfg.seed;
        let main = {
            let (b, stats, stop, threads) = (browser_side.clone(), stats.clone(), stop.clone(), threads.clone());
            thread::Builder::new().name("play-relay-up".into()).spawn(move || up_loop(cfg, b, stats, stop, threads)).expect("spawn relay thread")
        };
        threads.lock().unwrap().push(main);
        DownRelay { port, stats, seed, stop, threads }
    }
}

impl Drop for DownRelay {
    fn drop(&mut self) {
        stop_and_join(&self.stop, &self.threads);
    }
}

fn count(kind: Kind, stun: &AtomicU64, dtls: &AtomicU64, rtp: &AtomicU64, rtcp: &AtomicU64, other: &AtomicU64) {
    DownStats::inc(match kind {
        Kind::Stun => stun,
        Kind::Dtls => dtls,
        Kind::Rtp => rtp,
        Kind::Rtcp => rtcp,
        Kind::Other => other,
    });
}

/// Browser → server: forwarded as it comes, on the browser's own upstream socket.
fn up_loop(cfg: DownRelayConfig, browser_side: Arc<UdpSocket>, stats: Arc<DownStats>, stop: Arc<AtomicBool>, threads: Arc<Mutex<Vec<JoinHandle<()>>>>) {
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let _ = browser_side.set_read_timeout(Some(Duration::from_millis(50)));
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = browser_side.recv_from(&mut buf) else { continue };
        let data = &buf[..n];
        let to = match peers.get(&from) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind relay upstream socket"));
                DownStats::inc(&stats.peers);
                let seed = cfg.seed ^ (peers.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let (s2, b2, stats2, stop2, cfg2) = (s.clone(), browser_side.clone(), stats.clone(), stop.clone(), cfg.clone());
                let t = thread::Builder::new()
                    .name("play-relay-down".into())
                    .spawn(move || down_loop(cfg2, seed, s2, from, b2, stats2, stop2))
                    .expect("spawn relay reply thread");
                threads.lock().unwrap().push(t);
                peers.insert(from, s.clone());
                s
            }
        };
        count(classify(data), &stats.up_stun, &stats.up_dtls, &stats.up_rtp, &stats.up_rtcp, &stats.up_other);
        let _ = to.send_to(data, cfg.server);
    }
}

struct Held {
    /// Value of `forwarded` when the packet was held back.
    forwarded_at_hold: u64,
    data: Vec<u8>,
}

/// Server → one browser address: RTP sometimes held back; everything else at once.
fn down_loop(cfg: DownRelayConfig, seed: u64, server_side: Arc<UdpSocket>, browser: SocketAddr, browser_side: Arc<UdpSocket>, stats: Arc<DownStats>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    let mut held: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut held_data: HashMap<u64, Held> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut forwarded: u64 = 0;
    let mut buf = vec![0u8; 65536];
    let send = |data: &[u8]| match browser_side.send_to(data, browser) {
        Ok(_) => DownStats::inc(&stats.down_sent),
        Err(_) => DownStats::inc(&stats.down_refused),
    };
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while let Some(Reverse((due, id))) = held.peek().copied() {
            if due > now {
                break;
            }
            held.pop();
            if let Some(h) = held_data.remove(&id) {
                if forwarded > h.forwarded_at_hold {
                    DownStats::inc(&stats.reordered);
                }
                send(&h.data);
                forwarded += 1;
            }
        }
        let wait = held
            .peek()
            .map(|Reverse((due, _))| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        let _ = server_side.set_read_timeout(Some(wait));
        let Ok((n, _)) = server_side.recv_from(&mut buf) else { continue };
        let data = &buf[..n];
        let kind = classify(data);
        count(kind, &stats.down_stun, &stats.down_dtls, &stats.down_rtp, &stats.down_rtcp, &stats.down_other);
        if kind == Kind::Rtp && cfg.hold_per_mille > 0 && rng.range(0, 999) < cfg.hold_per_mille {
            let due = Instant::now() + Duration::from_millis(rng.range(cfg.hold_ms.0, cfg.hold_ms.1));
            next_id += 1;
            held.push(Reverse((due, next_id)));
            held_data.insert(next_id, Held { forwarded_at_hold: forwarded, data: data.to_vec() });
            DownStats::inc(&stats.held);
            continue;
        }
        send(data);
        forwarded += 1;
    }
}

// ---------------------------------------------------------------------------
// What the server says while the viewer plays
// ---------------------------------------------------------------------------

/// One look at the server: the stream's /api/streams object and the relay's drops for slow
/// sinks (/metrics `rtcbridge_drops_total`, all workers).
#[derive(Clone, Debug)]
pub struct ServerPoll {
    /// Seconds since the poller started.
    pub t: f64,
    pub stream: Option<serde_json::Value>,
    pub drops_inter: u64,
    pub drops_keyframe: u64,
    pub drops_audio: u64,
}

impl ServerPoll {
    pub fn playback(&self, key: &str) -> Option<f64> {
        self.stream.as_ref()?.get("playback")?.get(key)?.as_f64()
    }
}

pub fn poll_once(port: u16, name: &str, t: f64) -> ServerPoll {
    let stream = crate::common::http_get(port, "/api/streams").ok().filter(|(c, _)| *c == 200).and_then(|(_, body)| {
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["streams"].as_array()?.iter().find(|s| s["name"] == name).cloned()
    });
    let m = crate::common::http_get(port, "/metrics").ok().filter(|(c, _)| *c == 200).map(|(_, b)| crate::common::Metrics::parse(&b));
    let drops = |reason: &str| m.as_ref().map_or(0, |m| m.sum_where("rtcbridge_drops_total", &[("reason", reason)]) as u64);
    ServerPoll { t, stream, drops_inter: drops("inter"), drops_keyframe: drops("keyframe"), drops_audio: drops("audio") }
}

/// Polls the server every 250 ms until `stop` is set.
pub fn poll_server(port: u16, name: &str, stop: Arc<AtomicBool>) -> JoinHandle<Vec<ServerPoll>> {
    let name = name.to_string();
    thread::spawn(move || {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            seen.push(poll_once(port, &name, t0.elapsed().as_secs_f64()));
            thread::sleep(Duration::from_millis(250));
        }
        seen
    })
}

/// `t:value` for every poll where `f` changed (a compact time series for the log).
pub fn changes(polls: &[ServerPoll], f: impl Fn(&ServerPoll) -> Option<f64>) -> String {
    let mut out = Vec::new();
    let mut last = None;
    for p in polls {
        let v = f(p);
        if v.is_some() && v != last {
            out.push(format!("{:.1}s:{}", p.t, v.map_or("-".into(), |x| format!("{x:.1}"))));
            last = v;
        }
    }
    out.join(" ")
}
