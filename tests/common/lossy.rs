//! Impairments for WebRTC tests on a kernel without netem (TESTING.md, "Loss and
//! reordering"): random loss from an nftables `numgen random` drop rule, and
//! reordering/delay from a UDP relay that sits between the browser and the
//! server (the server announces the relay as its ICE candidate).
//!
//! Only std is used here, so this file works both as `common::lossy` and when
//! a test includes it directly with `#[path]`.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Packet classes (RFC 7983 demultiplexing, RFC 5761 RTP/RTCP split)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

pub fn classify(p: &[u8]) -> Kind {
    match p.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if p.len() >= 12 => match p[1] {
            192..=223 => Kind::Rtcp,
            _ => Kind::Rtp,
        },
        _ => Kind::Other,
    }
}

// ---------------------------------------------------------------------------
// nftables loss
// ---------------------------------------------------------------------------

fn nft_path() -> PathBuf {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(d).join("nft");
        if p.is_file() {
            return p;
        }
    }
    panic!("nft not found: this test needs nftables (apt-get install nftables; tools/test-all installs it)");
}

fn nft(args: &[&str]) -> Result<String, String> {
    let out = Command::new(nft_path())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// An nftables table that drops `percent`% of the RTP packets (first byte
/// 0b10xxxxxx, second byte not an RTCP packet type) sent to UDP port `dport`
/// ([`NftLoss::install`], table `inet rtcbloss`: what a publisher sends the
/// server) or from UDP port `sport` ([`NftLoss::install_from`], table `inet
/// rtcbplayloss`: what the server sends a viewer, tests/common/play_loss.rs;
/// two tables, so both could live in one namespace); STUN, DTLS and RTCP pass.
/// Meant for a network namespace the test created: the rule sits on the output
/// hook, so it sees traffic to 127.0.0.1. Deleted on drop. A sender whose
/// packet is dropped there gets EPERM from sendto.
pub struct NftLoss {
    pub table: &'static str,
    pub port: u16,
    pub percent: u32,
}

impl NftLoss {
    pub fn install(dport: u16, percent: u32) -> NftLoss {
        Self::install_rule("rtcbloss", "dport", dport, percent)
    }

    pub fn install_from(sport: u16, percent: u32) -> NftLoss {
        Self::install_rule("rtcbplayloss", "sport", sport, percent)
    }

    fn install_rule(table: &'static str, dir: &str, port: u16, percent: u32) -> NftLoss {
        let _ = nft(&["delete", "table", "inet", table]);
        let rule = format!(
            "udp {dir} {port} @ih,0,2 == 2 @ih,8,8 != 192-223 numgen random mod 100 < {percent} counter drop"
        );
        let steps: [Vec<&str>; 3] = [
            vec!["add", "table", "inet", table],
            vec!["add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; }"],
            ["add", "rule", "inet", table, "out"].into_iter().chain(rule.split(' ')).collect(),
        ];
        let guard = NftLoss { table, port, percent };
        for s in &steps {
            if let Err(e) = nft(s) {
                panic!("installing the loss rule failed: {e}");
            }
        }
        guard
    }

    /// `nft list table inet TABLE` as text.
    pub fn listing(&self) -> String {
        nft(&["list", "table", "inet", self.table]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Packets the rule has dropped so far (its counter).
    pub fn dropped(&self) -> u64 {
        let text = self.listing();
        text.split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in the {} table:\n{text}", self.table))
    }
}

impl Drop for NftLoss {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", self.table]);
    }
}

// ---------------------------------------------------------------------------
// Reordering UDP relay
// ---------------------------------------------------------------------------

/// What the relay saw and did.
#[derive(Default, Debug)]
pub struct RelayStats {
    /// Datagrams from the browser, by kind.
    pub up_stun: AtomicU64,
    pub up_dtls: AtomicU64,
    pub up_rtp: AtomicU64,
    pub up_rtcp: AtomicU64,
    pub up_other: AtomicU64,
    /// Datagrams forwarded toward the server (sendto succeeded).
    pub up_sent: AtomicU64,
    /// Sends toward the server refused (EPERM: the nftables rule dropped them).
    pub up_refused: AtomicU64,
    /// RTP packets held back.
    pub held: AtomicU64,
    /// Held RTP packets that at least one later packet overtook.
    pub reordered: AtomicU64,
    /// Datagrams from the server back to the browser.
    pub down: AtomicU64,
    /// Distinct browser source addresses (one upstream socket each).
    pub peers: AtomicU64,
}

impl RelayStats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn summary(&self) -> String {
        let g = Self::get;
        format!(
            "from browser: stun {} dtls {} rtp {} rtcp {} other {}; to server: sent {} refused {}; \
             rtp held {} reordered {}; to browser {}; browser addresses {}",
            g(&self.up_stun),
            g(&self.up_dtls),
            g(&self.up_rtp),
            g(&self.up_rtcp),
            g(&self.up_other),
            g(&self.up_sent),
            g(&self.up_refused),
            g(&self.held),
            g(&self.reordered),
            g(&self.down),
            g(&self.peers)
        )
    }
}

/// A small xorshift64* generator: reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

pub fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x1234_5678)
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where the server listens (its --udp-port).
    pub server: SocketAddr,
    /// Per mille of browser→server RTP packets held back.
    pub hold_per_mille: u64,
    /// Hold time range in ms (uniform).
    pub hold_ms: (u64, u64),
    pub seed: u64,
}

struct Held {
    /// Value of `forwarded` when the packet was held back.
    forwarded_at_hold: u64,
    to: Arc<UdpSocket>,
    data: Vec<u8>,
}

/// A two-sided UDP relay: the browser talks to `port` (the address the server
/// announces as its ICE candidate); for every browser source address the relay
/// opens its own socket toward the server, so the server's replies map back to
/// that browser address. Browser→server RTP packets are held back now and then
/// so that later packets overtake them. Stops and joins its threads on drop.
pub struct Relay {
    pub port: u16,
    pub stats: Arc<RelayStats>,
    pub seed: u64,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// The browser-facing socket, bound first so that its port can be given to
    /// the server (`--candidate-port`) before the server's own port is known.
    pub fn bind() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind relay socket")
    }

    /// Relays on `down` (from [`Relay::bind`]) to `cfg.server`.
    pub fn start(down: UdpSocket, cfg: RelayConfig) -> Relay {
        let down = Arc::new(down);
        let port = down.local_addr().expect("relay addr").port();
        let stats = Arc::new(RelayStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let seed = cfg.seed;
        let main = {
            let (down, stats, stop, threads) = (down.clone(), stats.clone(), stop.clone(), threads.clone());
            thread::Builder::new()
                .name("relay-up".into())
                .spawn(move || up_loop(cfg, down, stats, stop, threads))
                .expect("spawn relay thread")
        };
        threads.lock().unwrap().push(main);
        Relay { port, stats, seed, stop, threads }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        stop_and_join(&self.stop, &self.threads);
    }
}

/// Set a relay's `stop` and join its threads. They poll `stop` at least every 50 ms; the
/// reply threads are registered by the main one, so join until none is left.
pub fn stop_and_join(stop: &AtomicBool, threads: &Mutex<Vec<JoinHandle<()>>>) {
    stop.store(true, Ordering::SeqCst);
    loop {
        let next = threads.lock().unwrap().pop();
        match next {
            Some(t) => {
                let _ = t.join();
            }
            None => break,
        }
    }
}

fn up_loop(
    cfg: RelayConfig,
    down: Arc<UdpSocket>,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut rng = Rng::new(cfg.seed);
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut held: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut held_data: HashMap<u64, Held> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut forwarded: u64 = 0;
    let mut buf = vec![0u8; 65536];
    let send = |to: &UdpSocket, data: &[u8], stats: &RelayStats| match to.send_to(data, cfg.server) {
        Ok(_) => RelayStats::inc(&stats.up_sent),
        Err(_) => RelayStats::inc(&stats.up_refused),
    };
    while !stop.load(Ordering::SeqCst) {
        // Release what is due.
        let now = Instant::now();
        while let Some(Reverse((due, id))) = held.peek().copied() {
            if due > now {
                break;
            }
            held.pop();
            if let Some(h) = held_data.remove(&id) {
                if forwarded > h.forwarded_at_hold {
                    RelayStats::inc(&stats.reordered);
                }
                send(&h.to, &h.data, &stats);
                forwarded += 1;
            }
        }
        let wait = held
            .peek()
            .map(|Reverse((due, _))| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        let _ = down.set_read_timeout(Some(wait));
        let (n, from) = match down.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // timeout (or a transient error): loop
        };
        let data = &buf[..n];
        let to = match peers.get(&from) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind relay upstream socket"));
                RelayStats::inc(&stats.peers);
                let (s2, down2, stats2, stop2) = (s.clone(), down.clone(), stats.clone(), stop.clone());
                let t = thread::Builder::new()
                    .name("relay-down".into())
                    .spawn(move || down_loop(s2, from, down2, stats2, stop2))
                    .expect("spawn relay reply thread");
                threads.lock().unwrap().push(t);
                peers.insert(from, s.clone());
                s
            }
        };
        let kind = classify(data);
        RelayStats::inc(match kind {
            Kind::Stun => &stats.up_stun,
            Kind::Dtls => &stats.up_dtls,
            Kind::Rtp => &stats.up_rtp,
            Kind::Rtcp => &stats.up_rtcp,
            Kind::Other => &stats.up_other,
        });
        if kind == Kind::Rtp && rng.range(0, 999) < cfg.hold_per_mille {
            let due = Instant::now() + Duration::from_millis(rng.range(cfg.hold_ms.0, cfg.hold_ms.1));
            next_id += 1;
            held.push(Reverse((due, next_id)));
            held_data.insert(next_id, Held { forwarded_at_hold: forwarded, to, data: data.to_vec() });
            RelayStats::inc(&stats.held);
            continue;
        }
        send(&to, data, &stats);
        forwarded += 1;
    }
}

fn down_loop(up: Arc<UdpSocket>, browser: SocketAddr, down: Arc<UdpSocket>, stats: Arc<RelayStats>, stop: Arc<AtomicBool>) {
    let _ = up.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, _)) = up.recv_from(&mut buf) {
            if down.send_to(&buf[..n], browser).is_ok() {
                RelayStats::inc(&stats.down);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Frame rates from timestamps
// ---------------------------------------------------------------------------

/// Frames per second from the median spacing of increasing timestamps (in
/// seconds): robust to the gaps a lossy stream leaves and to a slow start.
pub fn rate_from_times(times: &[f64]) -> Option<f64> {
    let mut d: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).filter(|x| *x > 0.0).collect();
    if d.len() < 5 {
        return None;
    }
    d.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = d[d.len() / 2];
    (med > 0.0).then(|| 1.0 / med)
}
