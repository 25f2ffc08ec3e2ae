//! One worker: a mio loop owning its listeners' accepted connections, its
//! streams (hubs), its timers and its end of the mesh.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod play;
mod pull;
mod push;
mod rtc;

use mio::net::TcpListener;

use super::conn_io::Io;
use mio::{Events, Interest, Poll, Token};

use super::hook::{Hook, HookAction, HookQuery, HookVerdict};
use super::limits::{ListenerKind, Refusal};
use super::mesh::{CoreMsg, Mesh};
use super::slab::Slab;
use super::timer::TimerWheel;
use super::{now, Shared};
use crate::buf::SendQueue;
use crate::config::UnknownStream;
use crate::proto::flv::MediaKind;
use crate::proto::http;
use crate::proto::rtmp::amf::Value as Amf;
use crate::proto::rtmp::session::{RtmpEvent, RtmpSession};
use crate::relay::auth::AuthAction;
use crate::relay::{
    Action, Audience, Backlog, CoreRelay, Flush, Frame, PlayOutcome, PlayerPolicy, PublishError, RelayConfig, RelayTimer, Sink, SinkId,
    SinkStatus, StreamStats, WorkerStats,
};

pub const WAKER: Token = Token(0);
const RTMP_LISTENER: Token = Token(1);
const HTTP_LISTENER: Token = Token(2);
const UDP: Token = Token(3);
const HTTPS_LISTENER: Token = Token(4);
const RTMPS_LISTENER: Token = Token(5);
const CONN_BASE: usize = 16;

/// How long a connection may take to finish the RTMP handshake and connect.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP client may take to send its request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Mesh messages handled per source per loop turn (fairness).
const MESH_BUDGET: usize = 1024;
/// `--write-batch-ms`: a player's held media is written at once beyond this.
const HOLD_MAX_BYTES: usize = 64 * 1024;
/// Held media goes out early when the core was busier than this share of the
/// last `LOAD_WINDOW` (the default coalescing policy, `write_early_when_idle`).
const IDLE_LOAD: f64 = 0.05;
const LOAD_WINDOW: Duration = Duration::from_millis(100);
/// Bytes read per readable event before other connections get a turn.
const READ_BUDGET: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// Every worker turns its loop at least this often (liveness for /healthz).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// After running out of descriptors with none in reserve, accept again after this.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// SO_SNDBUF for RTMP sockets (the kernel doubles it).
const PLAYER_SNDBUF: usize = 256 * 1024;

/// The deadline of an entry's timer in the wheel, if one is armed and has not fired.
/// Timers are never cancelled: a new one is armed only when the entry's next deadline is
/// earlier than the armed one, and a timer that fires for another deadline than the
/// armed one is stale.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Armed(Option<Instant>);

impl Armed {
    /// The instant to put a timer at for an entry due at `due` (its `poll_timeout`), if
    /// the armed one is not due as early; recorded as armed.
    fn arm(&mut self, due: Option<Instant>) -> Option<Instant> {
        let at = due?;
        if self.0.is_some_and(|armed| armed <= at) {
            return None;
        }
        self.0 = Some(at);
        Some(at)
    }

    /// A timer for `at` fired: true (and nothing is armed now) if it is the armed one.
    fn fire(&mut self, at: Instant) -> bool {
        if self.0 != Some(at) {
            return false;
        }
        self.0 = None;
        true
    }
}

#[derive(Debug)]
enum Timer {
    /// Close the connection if it is still in its handshake / has not sent a request.
    ConnDeadline { idx: usize, gen: u32 },
    /// A relay timer (grace windows).
    Relay(RelayTimer),
    /// A WebRTC session's next deadline (its `poll_timeout`): ICE, DTLS retransmit,
    /// NACK, RTCP. Stale when the slot's generation or the armed deadline moved on.
    RtcSession { slot: usize, gen: u32, at: Instant },
    /// The keep-alive ping on a signaling WebSocket.
    WsPing { idx: usize, gen: u32 },
    /// An RTMP connection may have been idle (no publish, no play) too long.
    Idle { idx: usize, gen: u32 },
    /// An RTMP publisher may have sent no media too long.
    PublisherSilence { idx: usize, gen: u32 },
    /// Once a second: the worker's liveness stamp, and `--debug-faults`.
    Heartbeat,
    /// Accept again after running out of descriptors.
    AcceptRetry,
    /// An auth-hook request still unanswered is denied now.
    HookDeadline { ticket: u64 },
    /// A push's retry, attempt deadline or stream check.
    Push(push::PushTimer),
    /// A cluster pull looks at its local players (and its start deadline).
    PullCheck { idx: usize, gen: u32 },
    /// A WebRTC viewer's next deadline (ICE, DTLS, sender reports).
    Viewer { slot: usize, gen: u32, at: Instant },
}

/// This worker's end of the auth hook: the shared queue and its own verdicts.
pub struct HookPort {
    pub hook: Arc<Hook>,
    pub verdicts: std::sync::mpsc::Receiver<HookVerdict>,
}

/// A worker's channels from the helper threads, and its own waker.
pub struct Ports {
    pub hook: Option<HookPort>,
    pub waker: Arc<mio::Waker>,
    /// Cluster mode: commands of the control thread.
    pub cluster_rx: Option<std::sync::mpsc::Receiver<super::cluster::WorkerCmd>>,
}

/// A request held until the auth hook answers.
enum Waiting {
    RtmpConnect { idx: usize, gen: u32, app: String },
    RtmpPublish { idx: usize, gen: u32, msid: u32, name: String },
    RtmpPlay { idx: usize, gen: u32, msid: u32, name: String },
    WsConnect { idx: usize, gen: u32, obj: Box<serde_json::Value> },
    WsPublish { idx: usize, gen: u32, req: Box<crate::proto::signaling::PublishReq> },
    Whip { idx: usize, gen: u32, req: Box<rtc::OwnedRequest> },
    WsPlay { idx: usize, gen: u32, req: Box<play::PlayReq> },
    Whep { idx: usize, gen: u32, req: Box<rtc::OwnedRequest> },
}

/// A worker gives the hook at most this much longer than its timeout (the helper
/// threads bound each request themselves; this bounds a saturated pool).
const HOOK_GRACE: Duration = Duration::from_millis(200);

enum Role {
    None,
    Publisher { msid: u32, name: Arc<str>, stats: Arc<StreamStats>, last_media: Instant },
    /// Plays a stream on message stream `msid`: a sink of the relay.
    Player { msid: u32 },
}

struct RtmpConn {
    session: RtmpSession,
    role: Role,
    /// Neither publishing nor playing since then (`--rtmp-idle-timeout`).
    idle_since: Option<Instant>,
}

enum Kind {
    Rtmp(Box<RtmpConn>),
    Http,
    /// An HTTP connection upgraded to WebSocket: Flashphoner-compatible signaling.
    Ws(Box<rtc::WsConn>),
    /// Our connection to an RTMP push destination.
    Push(Box<push::PushConn>),
    /// Cluster: our RTMP play from the node that owns a stream, published here.
    Pull(Box<pull::PullConn>),
}

struct Conn {
    sock: Io,
    peer: SocketAddr,
    /// The listener that accepted it (its connection budget); None for our own
    /// outbound connections (pushes).
    listener: Option<ListenerKind>,
    rx: Vec<u8>,
    tx: SendQueue,
    kind: Kind,
    /// Queued output since the last flush.
    dirty: bool,
    /// Media queued and held (write coalescing) until this deadline.
    held: Option<Instant>,
    /// Close once `tx` is written (HTTP responses).
    close_after_flush: bool,
}

impl Conn {
    /// The protocol as log lines name it: rtmp, rtmps, http, https, ws, wss.
    fn proto(&self) -> &'static str {
        match (&self.kind, self.sock.is_tls()) {
            (Kind::Rtmp(_), false) => "rtmp",
            (Kind::Rtmp(_), true) => "rtmps",
            (Kind::Http, false) => "http",
            (Kind::Http, true) => "https",
            (Kind::Ws(_), false) => "ws",
            (Kind::Ws(_), true) => "wss",
            (Kind::Push(_), false) => "rtmp-push",
            (Kind::Push(_), true) => "rtmps-push",
            (Kind::Pull(_), _) => "rtmp-pull",
        }
    }
}

/// One worker's listening sockets (SO_REUSEPORT: every worker binds each address).
pub struct Listeners {
    pub rtmp: TcpListener,
    pub http: TcpListener,
    pub https: Option<TcpListener>,
    pub rtmps: Option<TcpListener>,
}

pub struct Worker {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    listeners: Listeners,
    conns: Slab<Conn>,
    /// Every stream decision of this core (sans-IO); the worker maps its sinks to sockets.
    relay: CoreRelay,
    mesh: Mesh,
    timers: TimerWheel<Timer>,
    dirty: Vec<usize>,
    /// Connections with held media; entries whose `held` was cleared by an earlier
    /// flush are skipped.
    held: Vec<usize>,
    /// The earliest write deadline of a held connection (the poll timeout honours it).
    next_write_at: Option<Instant>,
    /// Held media is written when the core is idle (default policy).
    write_early_when_idle: bool,
    /// Busy time in the current load window, and the window's start.
    busy: Duration,
    load_window_start: Instant,
    /// The core's load over the last complete window (0..1).
    load: f64,
    started: Instant,
    /// Connections to close at the end of this turn, with the reason.
    doomed: Vec<(usize, String, bool)>,
    /// WebRTC media: this worker's UDP socket and publisher sessions.
    rtc: rtc::RtcState,
    /// Arrival times of the live frames queued to players this turn (one entry per
    /// frame, not per player), for the latency histogram after the writes.
    queued_born: Vec<(Instant, Option<Instant>)>,
    /// AAC → Opus for WebRTC viewers, per stream published here with AAC.
    opus: std::collections::HashMap<Arc<str>, crate::relay::rtc_audio::OpusBridge>,
    /// H.264 → constrained baseline for WebRTC viewers, per stream published here
    /// whose video needs it (`--transcode`, at most that many), each on its own thread.
    transcodes: std::collections::HashMap<Arc<str>, super::transcode::TranscodeThread>,
    /// Scratch for socket reads, shared by every connection of this worker.
    read_buf: Vec<u8>,
    /// One descriptor held back so that accept can shed connections when the process
    /// is out of descriptors (EMFILE) instead of leaving them queued forever.
    reserve_fd: Option<std::fs::File>,
    /// TLS connections that hit their per-turn read budget: read again next turn.
    read_again: Vec<(usize, u32)>,
    accept_retry: bool,
    /// Refused connections are logged at most once a second.
    last_refusal_log: Option<Instant>,
    refusals_unlogged: u64,
    /// The auth hook, when configured; requests waiting for its verdict by ticket.
    hook: Option<HookPort>,
    hook_waiting: std::collections::HashMap<u64, Waiting>,
    hook_ticket: u64,
    /// RTMP pushes this worker drives, by id.
    pushes: std::collections::HashMap<Arc<str>, push::PushLocal>,
    /// Host names of pushes resolved on helper threads, and this worker's waker for them.
    push_resolved_tx: std::sync::mpsc::Sender<push::Resolved>,
    push_resolved_rx: std::sync::mpsc::Receiver<push::Resolved>,
    waker: Arc<mio::Waker>,
    /// Cluster mode: pulls the control thread asks for.
    cluster_rx: Option<std::sync::mpsc::Receiver<super::cluster::WorkerCmd>>,
}

impl Worker {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        mut listeners: Listeners,
        mesh: Mesh,
        ports: Ports,
    ) -> io::Result<Self> {
        let Ports { hook, waker, cluster_rx } = ports;
        if let Some(l) = listeners.https.as_mut() {
            poll.registry().register(l, HTTPS_LISTENER, Interest::READABLE)?;
        }
        if let Some(l) = listeners.rtmps.as_mut() {
            poll.registry().register(l, RTMPS_LISTENER, Interest::READABLE)?;
        }
        poll.registry().register(&mut listeners.rtmp, RTMP_LISTENER, Interest::READABLE)?;
        poll.registry().register(&mut listeners.http, HTTP_LISTENER, Interest::READABLE)?;
        let mut udp = rtc::bind_udp(&shared.cfg, id)?;
        poll.registry().register(&mut udp, UDP, Interest::READABLE)?;
        let started = now();
        let relay_cfg = RelayConfig {
            gop_cache: !shared.cfg.no_gop_cache,
            grace: shared.cfg.grace(),
            keyframe_every: shared.cfg.keyframe_every(),
            wait_for_unknown: shared.cfg.unknown_stream != Some(UnknownStream::NotFound),
            policy: PlayerPolicy { queue_limit: shared.cfg.queue_limit(), evict_after: shared.cfg.evict() },
            coalesce: shared.cfg.write_batch(),
            coalesce_max_bytes: HOLD_MAX_BYTES,
            epoch: shared.started,
        };
        let relay = CoreRelay::new(id, relay_cfg, Arc::clone(&shared.registry));
        let write_early_when_idle = shared.cfg.write_early_when_idle();
        let (push_resolved_tx, push_resolved_rx) = std::sync::mpsc::channel();
        Ok(Worker {
            id,
            shared,
            poll,
            listeners,
            conns: Slab::new(),
            relay,
            mesh,
            timers: TimerWheel::new(started),
            dirty: Vec::new(),
            held: Vec::new(),
            next_write_at: None,
            write_early_when_idle,
            busy: Duration::ZERO,
            load_window_start: started,
            load: 0.0,
            started,
            doomed: Vec::new(),
            rtc: rtc::RtcState::new(udp),
            queued_born: Vec::new(),
            opus: std::collections::HashMap::new(),
            transcodes: std::collections::HashMap::new(),
            read_buf: vec![0u8; READ_CHUNK],
            reserve_fd: std::fs::File::open("/dev/null").ok(),
            read_again: Vec::new(),
            accept_retry: false,
            last_refusal_log: None,
            refusals_unlogged: 0,
            hook,
            hook_waiting: std::collections::HashMap::new(),
            hook_ticket: 0,
            pushes: std::collections::HashMap::new(),
            push_resolved_tx,
            push_resolved_rx,
            waker,
            cluster_rx,
        })
    }

    fn stats(&self) -> &WorkerStats {
        &self.shared.workers[self.id]
    }

    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut inbox = Vec::new();
        let mut expired = Vec::new();
        let mut mesh_more = false;
        crate::debug!("worker {} running", self.id);
        self.timers.insert(now() + HEARTBEAT, Timer::Heartbeat);
        loop {
            let timeout = if mesh_more || self.rtc.udp_more || !self.read_again.is_empty() {
                Some(Duration::ZERO)
            } else {
                // Write deadlines are kept exactly (not on the wheel's 5 ms ticks): they
                // are the latency bound of write coalescing.
                let next = match (self.timers.next_deadline(), self.next_write_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                next.map(|d| d.saturating_duration_since(now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = now(); // one clock read per wake-up
            let turn_ms = now.saturating_duration_since(self.shared.started).as_millis() as u64;
            self.stats().loop_at_ms.store(turn_ms.max(1), Ordering::Relaxed);
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.close_all();
                return Ok(());
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    RTMP_LISTENER => self.accept(now, ListenerKind::Rtmp),
                    HTTP_LISTENER => self.accept(now, ListenerKind::Http),
                    HTTPS_LISTENER => self.accept(now, ListenerKind::Https),
                    RTMPS_LISTENER => self.accept(now, ListenerKind::Rtmps),
                    UDP => self.udp_readable(now),
                    Token(t) => {
                        let idx = t - CONN_BASE;
                        if !self.push_poll_connect(idx) {
                            continue;
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.readable(now, idx);
                        }
                        if ev.is_writable() {
                            if let Some(c) = self.conns.get_mut(idx) {
                                if let Err(e) = c.sock.flush_pending() {
                                    self.doom(idx, format!("write error: {e}"), false);
                                }
                            }
                            self.mark_dirty(idx);
                        }
                    }
                }
            }
            // Input left over from last turn's read budgets.
            if std::mem::take(&mut self.rtc.udp_more) {
                self.udp_readable(now);
            }
            for (idx, gen) in std::mem::take(&mut self.read_again) {
                if self.conns.gen(idx) == Some(gen) {
                    self.readable(now, idx);
                }
            }
            mesh_more = self.mesh.drain(MESH_BUDGET, &mut inbox);
            for m in inbox.drain(..) {
                self.handle_core_msg(now, m);
            }
            self.hook_drain(now);
            self.push_drain_resolved(now);
            self.cluster_drain(now);
            self.transcode_drain(now);
            self.timers.expire(now, &mut expired);
            for t in expired.drain(..) {
                self.timer(now, t);
            }
            self.flush_all(now);
            self.reap(now);
            self.mesh.flush();
            self.account_load(now);
        }
    }

    // ---- connections -------------------------------------------------------------

    fn accept(&mut self, now: Instant, which: ListenerKind) {
        let rtmp = matches!(which, ListenerKind::Rtmp | ListenerKind::Rtmps);
        let tls = matches!(which, ListenerKind::Https | ListenerKind::Rtmps);
        let label = which.label();
        loop {
            let l = match which {
                ListenerKind::Rtmp => Some(&self.listeners.rtmp),
                ListenerKind::Http => Some(&self.listeners.http),
                ListenerKind::Https => self.listeners.https.as_ref(),
                ListenerKind::Rtmps => self.listeners.rtmps.as_ref(),
            };
            let Some(l) = l else { return };
            let (sock, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: free the reserved one, take the connection off the
                    // queue and close it at once, then reserve again. Edge-triggered: if we
                    // left it queued we would never hear of this listener again.
                    // (Linux checks for a free descriptor before it looks at the queue: an
                    // EMFILE does not mean a connection is waiting.)
                    self.reserve_fd = None;
                    let shed = l.accept();
                    let waiting = match &shed {
                        Ok(_) => true,
                        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                    };
                    drop(shed);
                    self.reserve_fd = std::fs::File::open("/dev/null").ok();
                    if !waiting {
                        return;
                    }
                    WorkerStats::add(&self.shared.workers[self.id].refused_no_fd, 1);
                    self.refusal_log(now, format_args!("{label}: out of file descriptors ({e}): closing new connections until some leave"));
                    if self.reserve_fd.is_none() {
                        // Not even one descriptor to shed with: try again shortly.
                        if !self.accept_retry {
                            self.accept_retry = true;
                            self.timers.insert(now + ACCEPT_RETRY, Timer::AcceptRetry);
                        }
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    crate::warn!("worker {}: accept failed: {e}", self.id);
                    return;
                }
            };
            match self.shared.limits.admit(which, peer.ip()) {
                Ok(()) => {}
                Err(r) => {
                    let w = &self.shared.workers[self.id];
                    let (counter, why) = match r {
                        Refusal::Total => (&w.refused_limit, "--max-conns"),
                        Refusal::PerIp => (&w.refused_per_ip, "--max-conns-per-ip"),
                    };
                    WorkerStats::add(counter, 1);
                    self.refusal_log(now, format_args!("{label} {peer}: refused: over {why}"));
                    drop(sock);
                    continue;
                }
            }
            let _ = sock.set_nodelay(true);
            if rtmp {
                // Keep the kernel's share of a slow player's backlog small so our own
                // queue policy (drop inter frames, resume at a keyframe) takes over early.
                let _ = socket2::SockRef::from(&sock).set_send_buffer_size(PLAYER_SNDBUF);
            }
            let kind = if rtmp {
                let epoch_ms = now.saturating_duration_since(self.started).as_millis() as u32;
                Kind::Rtmp(Box::new(RtmpConn {
                    session: RtmpSession::new(
                        super::csprng::u64(),
                        epoch_ms,
                        self.shared.cfg.max_message_bytes,
                        self.shared.cfg.chunk_size,
                    ),
                    role: Role::None,
                    idle_since: Some(now),
                }))
            } else {
                Kind::Http
            };
            let sock = match (tls, &self.shared.tls) {
                (true, Some(cfg)) => match super::tls::TlsStream::new(sock, Arc::clone(cfg)) {
                    Ok(t) => Io::Tls(Box::new(t)),
                    Err(e) => {
                        crate::warn!("{label} {peer}: TLS setup failed: {e}");
                        self.shared.limits.release(which, peer.ip());
                        continue;
                    }
                },
                _ => Io::Plain(sock),
            };
            let conn = Conn {
                sock,
                peer,
                listener: Some(which),
                rx: Vec::new(),
                tx: SendQueue::new(),
                kind,
                dirty: false,
                held: None,
                close_after_flush: false,
            };
            let (idx, gen) = self.conns.insert(conn);
            let Some(c) = self.conns.get_mut(idx) else { continue };
            if let Err(e) =
                self.poll.registry().register(&mut c.sock, Token(idx + CONN_BASE), Interest::READABLE | Interest::WRITABLE)
            {
                crate::warn!("worker {}: register {peer}: {e}", self.id);
                self.conns.remove(idx);
                self.shared.limits.release(which, peer.ip());
                continue;
            }
            WorkerStats::gauge(&self.stats().connections, 1);
            let limit = if rtmp { HANDSHAKE_TIMEOUT } else { HTTP_TIMEOUT };
            self.timers.insert(now + limit, Timer::ConnDeadline { idx, gen });
            if rtmp {
                self.timers.insert(now + self.shared.cfg.rtmp_idle(), Timer::Idle { idx, gen });
            }
            crate::debug!("{label} {peer}: accepted on worker {}", self.id);
        }
    }

    fn readable(&mut self, now: Instant, idx: usize) {
        let max_rx = self.shared.cfg.max_message_bytes as usize + 64 * 1024;
        let mut total = 0;
        loop {
            let Some(c) = self.conns.get_mut(idx) else { return };
            let len = c.rx.len();
            if len >= max_rx {
                self.doom(idx, "receive buffer over limit".into(), true);
                return;
            }
            // Read into the worker's one scratch buffer and keep per connection only
            // what the protocol has not consumed yet: an idle player holds no receive
            // buffer at all.
            let r = c.sock.read(&mut self.read_buf);
            match r {
                Ok(0) => {
                    self.process(now, idx);
                    self.doom(idx, "peer closed".into(), false);
                    return;
                }
                Ok(n) => {
                    c.rx.extend_from_slice(self.read_buf.get(..n).unwrap_or(&[]));
                    total += n;
                    // TLS: rustls may hold decrypted bytes after the socket is drained, and
                    // no readiness event would bring us back for them: read TLS to the end.
                    let tls = c.sock.is_tls();
                    WorkerStats::add(&self.shared.workers[self.id].bytes_in, n as u64);
                    self.process(now, idx);
                    if let Some(c) = self.conns.get_mut(idx) {
                        if c.rx.is_empty() && c.rx.capacity() > 0 {
                            c.rx = Vec::new();
                        }
                    }
                    if total >= READ_BUDGET {
                        // Fairness: other connections get their turn first. Edge-triggered:
                        // we must come back for the rest ourselves, next turn (TLS may hold
                        // decrypted bytes no readiness event would announce).
                        if let Some(gen) = self.conns.gen(idx) {
                            if !tls {
                                if let Some(c) = self.conns.get_mut(idx) {
                                    let _ = self.poll.registry().reregister(
                                        &mut c.sock,
                                        Token(idx + CONN_BASE),
                                        Interest::READABLE | Interest::WRITABLE,
                                    );
                                }
                            } else {
                                self.read_again.push((idx, gen));
                            }
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.doom(idx, format!("read error: {e}"), false);
                    return;
                }
            }
        }
    }

    /// `--debug-faults`: a fault asked for this worker (POST /debug/fault/...).
    fn take_fault(&mut self) {
        let Some(slot) = self.shared.faults.get(self.id) else { return };
        match slot.swap(0, Ordering::SeqCst) {
            0 => {}
            super::api::FAULT_PANIC => panic!("debug fault: panic requested for worker {}", self.id),
            f => {
                let secs = f.saturating_sub(super::api::FAULT_STALL_BASE);
                crate::warn!("worker {}: debug fault: stalling the loop for {secs} s", self.id);
                std::thread::sleep(Duration::from_secs(secs));
            }
        }
    }

    /// An RTMP connection stopped publishing or playing: its idle clock starts.
    fn became_idle(&mut self, now: Instant, idx: usize, gen: u32) {
        if let Some(Kind::Rtmp(r)) = self.conns.get_gen_mut(idx, gen).map(|c| &mut c.kind) {
            if matches!(r.role, Role::None) {
                r.idle_since = Some(now);
                self.timers.insert(now + self.shared.cfg.rtmp_idle(), Timer::Idle { idx, gen });
            }
        }
    }

    /// A refused connection's log line, at most one per second per worker (a flood of
    /// refusals must not become a flood of log lines); the next line says how many
    /// were not logged.
    fn refusal_log(&mut self, now: Instant, line: std::fmt::Arguments<'_>) {
        if self.last_refusal_log.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            self.refusals_unlogged += 1;
            return;
        }
        let more = std::mem::take(&mut self.refusals_unlogged);
        self.last_refusal_log = Some(now);
        if more > 0 {
            crate::warn!("{line} (and {more} more refused connections in the last second)");
        } else {
            crate::warn!("{line}");
        }
    }

    fn doom(&mut self, idx: usize, why: String, protocol_error: bool) {
        if !self.doomed.iter().any(|(i, _, _)| *i == idx) {
            self.doomed.push((idx, why, protocol_error));
        }
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Feed buffered input to the connection's protocol core and act on its events.
    fn process(&mut self, now: Instant, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        match &mut c.kind {
            Kind::Http => self.process_http(now, idx),
            Kind::Ws(_) => self.process_ws(now, idx),
            Kind::Push(_) => self.process_push(now, idx),
            Kind::Pull(_) => self.process_pull(now, idx),
            Kind::Rtmp(_) => loop {
                let Some(c) = self.conns.get_mut(idx) else { return };
                let Kind::Rtmp(r) = &mut c.kind else { return };
                let res = r.session.handle_input(&c.rx, &mut c.tx);
                let dropped = std::mem::take(&mut r.session.stats.dropped_messages);
                if dropped > 0 {
                    WorkerStats::add(&self.shared.workers[self.id].ignored_messages, dropped);
                }
                match res {
                    Ok(n) => {
                        c.rx.drain(..n.min(c.rx.len()));
                        if c.rx.capacity() > 64 * 1024 && c.rx.len() < 4096 {
                            c.rx.shrink_to(4096);
                        }
                    }
                    Err(e) => {
                        let why = e.to_string();
                        self.doom(idx, why, true);
                        return;
                    }
                }
                let progressed = matches!(res, Ok(n) if n > 0) && !c.rx.is_empty();
                if !c.tx.is_empty() {
                    self.mark_dirty(idx);
                }
                self.rtmp_events(now, idx);
                // Input held back while `connect` awaited its verdict is read now.
                let waiting = match self.conns.get_mut(idx).map(|c| &c.kind) {
                    Some(Kind::Rtmp(r)) => r.session.is_awaiting_connect(),
                    _ => true,
                };
                if !progressed || waiting {
                    return;
                }
            },
        }
    }

    fn process_http(&mut self, now: Instant, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        if c.close_after_flush {
            c.rx.clear();
            return;
        }
        let resp = match http::parse_request(&c.rx) {
            Ok(None) => return,
            Ok(Some(req)) => {
                if req.content_length > 1 << 20 {
                    http::response(413, "Payload Too Large", "text/plain", b"request body too large\n")
                } else if c.rx.len() < req.head_len + req.content_length {
                    return;
                } else if rtc::is_websocket(&req) || req.path.starts_with("/whip") || req.path.starts_with("/whep") {
                    let owned = rtc::OwnedRequest::from(&req, &c.rx);
                    self.rtc_http(now, idx, owned);
                    return;
                } else if let Some(call) = push::PushCall::from_request(&req, &c.rx, &self.shared, c.peer.ip()) {
                    self.push_api(now, idx, call);
                    return;
                } else {
                    super::api::handle(&req, &self.shared)
                }
            }
            Err(e) => {
                crate::info!("http {}: bad request: {e}", c.peer);
                http::response(400, "Bad Request", "text/plain", format!("{e}\n").as_bytes())
            }
        };
        c.rx.clear();
        c.tx.push_vec(resp);
        c.close_after_flush = true;
        self.mark_dirty(idx);
    }

    fn rtmp_events(&mut self, now: Instant, idx: usize) {
        let sink = self.conns.gen(idx).map(|gen| sink_id(idx, gen));
        loop {
            let Some(c) = self.conns.get_mut(idx) else { return };
            let Kind::Rtmp(r) = &mut c.kind else { return };
            let Some(ev) = r.session.poll_event() else { return };
            let playing = matches!(r.role, Role::Player { msid } if Some(msid) == ev_msid(&ev));
            match ev {
                RtmpEvent::ConnectRequested { app } => {
                    // A token given with connect must be genuine, unexpired and for this
                    // address; what it allows is checked at publish or play.
                    let (proto, peer) = (if c.sock.is_tls() { "rtmps" } else { "rtmp" }, c.peer);
                    let token = r.session.connect_token();
                    if self.hook.is_some() && !self.shared.access.connect_token_valid(token, peer.ip()) {
                        let (obj, args) = r.session.connect_object();
                        let flash_obj = args.iter().find(|a| matches!(a, Amf::Object(_) | Amf::EcmaArray(_)));
                        // WCS: the connection object is Flash's command object with the
                        // fields of `nc.connect(url, {login, appKey, ...})` merged in.
                        let mut object = match super::hook::amf_to_json(obj) {
                            serde_json::Value::Object(m) => m,
                            _ => serde_json::Map::new(),
                        };
                        if let Some(serde_json::Value::Object(extra)) = flash_obj.map(super::hook::amf_to_json) {
                            object.extend(extra);
                        }
                        let q = HookQuery {
                            action: HookAction::Connect,
                            protocol: proto,
                            name: String::new(),
                            app: app.clone(),
                            ip: peer.ip(),
                            query: tc_url_query(obj),
                            token: token.map(str::to_owned),
                            custom: flash_obj.map_or(serde_json::Value::Null, super::hook::amf_to_json),
                            object: Some(serde_json::Value::Object(object)),
                        };
                        let gen = self.conns.gen(idx).unwrap_or(0);
                        self.hook_ask(now, q, Waiting::RtmpConnect { idx, gen, app });
                        continue;
                    }
                    match self.shared.access.check_connect(token, peer.ip()) {
                        Ok(()) => {
                            crate::debug!("{proto} {peer}: connect app={papp}", papp = crate::log::peer_str(&app));
                            r.session.connect_accept(&mut c.tx);
                        }
                        Err(why) => {
                            crate::info!("{proto} {peer}: connect app={papp} rejected: {} (NetConnection.Connect.Rejected)", why.reason(), papp = crate::log::peer_str(&app));
                            r.session.connect_reject(&format!("Restricted access: {}", why.reason()), &mut c.tx);
                            c.close_after_flush = true;
                        }
                    }
                    self.mark_dirty(idx);
                }
                RtmpEvent::PublishRequested { msid, name, query } => self.publish(now, idx, msid, name, &query),
                RtmpEvent::PlayRequested { msid, name, query } => self.play(now, idx, msid, name, &query),
                RtmpEvent::Media { msid, kind, ts, payload } => self.media(now, idx, msid, kind, ts, payload),
                RtmpEvent::StreamClosed { msid } => self.stream_closed(now, idx, msid),
                RtmpEvent::Pause { paused, .. } if playing => {
                    if let Some(sink) = sink {
                        self.relay.handle_pause(sink, paused);
                    }
                }
                RtmpEvent::ReceiveAudio { on, .. } if playing => {
                    if let Some(sink) = sink {
                        self.relay.handle_receive(sink, MediaKind::Audio, on);
                    }
                }
                RtmpEvent::ReceiveVideo { on, .. } if playing => {
                    if let Some(sink) = sink {
                        self.relay.handle_receive(sink, MediaKind::Video, on);
                    }
                }
                RtmpEvent::Pause { .. } | RtmpEvent::ReceiveAudio { .. } | RtmpEvent::ReceiveVideo { .. } => {}
            }
        }
    }

    // ---- the relay: inputs in, actions applied ----------------------------------------

    /// Apply everything the relay decided, in order.
    pub(super) fn apply_relay(&mut self, now: Instant) {
        while let Some(a) = self.relay.poll_action() {
            match a {
                Action::Send { sink, ts, frame, .. } if play::is_viewer(sink) => self.viewer_send(now, sink, ts, &frame),
                Action::Send { sink, ts, frame, flush } => self.send_frame(sink, ts, &frame, flush),
                Action::Notify { sink, status, .. } if play::is_viewer(sink) => self.viewer_notify(now, sink, status),
                Action::Notify { sink, name, status } => {
                    let (idx, gen) = sink_slot(sink);
                    let Some(c) = self.conns.get_gen_mut(idx, gen) else { continue };
                    let (proto, peer) = (c.proto(), c.peer);
                    if matches!(c.kind, Kind::Push(_)) {
                        if status == SinkStatus::UnpublishNotify {
                            self.push_stream_ended(now, idx, gen);
                        }
                        continue;
                    }
                    let Kind::Rtmp(r) = &mut c.kind else { continue };
                    let Role::Player { msid } = r.role else { continue };
                    match status {
                        SinkStatus::PublishNotify => r.session.publish_notify(msid, &name, &mut c.tx),
                        SinkStatus::UnpublishNotify => {
                            crate::info!("{proto} {peer}: {pname} gone for good: UnpublishNotify", pname = crate::log::peer_str(&name));
                            r.session.unpublish_notify(msid, &name, &mut c.tx);
                        }
                        SinkStatus::Stopped => r.session.play_stop(msid, &name, &mut c.tx),
                    }
                    self.mark_dirty(idx);
                }
                Action::Post { core, msg } => {
                    if !self.mesh.send(core, msg) {
                        WorkerStats::add(&self.shared.workers[self.id].mesh_full, 1);
                    }
                }
                Action::ArmTimer { at, timer } => self.timers.insert(at, Timer::Relay(timer)),
                Action::RequestKeyframe { name } => self.request_keyframe(now, &name),
                Action::Evict { sink, reason } if play::is_viewer(sink) => self.viewer_evict(now, sink, &reason),
                Action::Evict { sink, reason } => {
                    let (idx, gen) = sink_slot(sink);
                    if self.conns.gen(idx) == Some(gen) {
                        self.doom(idx, reason, false);
                    }
                }
                Action::Delivered { born, by } => self.queued_born.push((born, by)),
            }
        }
        let c = std::mem::take(&mut self.relay.counters);
        let w = &self.shared.workers[self.id];
        for (n, slot) in [(c.drops_inter, &w.drops_inter), (c.drops_keyframe, &w.drops_keyframe), (c.drops_audio, &w.drops_audio), (c.evictions, &w.evictions)] {
            if n > 0 {
                WorkerStats::add(slot, n);
            }
        }
    }

    /// Queue one frame to one RTMP sink, written now or held until its deadline.
    fn send_frame(&mut self, sink: SinkId, ts: u32, frame: &Frame, flush: Flush) {
        let (idx, gen) = sink_slot(sink);
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        match &mut c.kind {
            Kind::Rtmp(r) => {
                let Role::Player { msid } = r.role else { return };
                let body = frame.rtmp(r.session.out_chunk_size());
                r.session.queue_media(msid, ts, frame.kind, &body, &mut c.tx);
            }
            Kind::Push(_) => {
                if !Self::push_queue_frame(c, ts, frame, &self.shared.pushes) {
                    return;
                }
            }
            _ => return,
        }
        match flush {
            _ if c.dirty => {}
            Flush::Now => {
                c.dirty = true;
                self.dirty.push(idx);
            }
            Flush::By(at) => {
                if c.held.is_none() {
                    c.held = Some(at);
                    self.held.push(idx);
                }
            }
        }
    }

    /// A frame of the publisher on connection `idx` (or a WebRTC session) for the relay.
    pub(super) fn relay_frame(&mut self, now: Instant, name: &Arc<str>, frame: Frame) {
        self.relay.handle_frame(now, name, frame, &ConnBacklog(&self.conns, &self.rtc.viewers));
        self.apply_relay(now);
    }

    // ---- publish ------------------------------------------------------------------

    fn publish(&mut self, now: Instant, idx: usize, msid: u32, name: String, query: &str) {
        let name: Arc<str> = name.into();
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        let token = crate::relay::auth::token_in_query(query).or(r.session.connect_token());
        if self.hook.is_some() && !self.shared.access.token_grants(token, AuthAction::Publish, &name, c.peer.ip()) {
            let token = token.map(str::to_owned);
            let q = rtmp_hook_query(c, HookAction::Publish, &name, query, token);
            let gen = self.conns.gen(idx).unwrap_or(0);
            self.hook_ask(now, q, Waiting::RtmpPublish { idx, gen, msid, name: name.to_string() });
            return;
        }
        if let Err(why) = self.shared.access.authorize(token, AuthAction::Publish, &name, c.peer.ip()) {
            r.session.publish_denied(msid, &format!("Restricted access: {}", why.reason()), &mut c.tx);
            crate::info!("{} {}: publish {pname} denied: {} (NetStream.Publish.BadName)", c.proto(), c.peer, why.reason(), pname = crate::log::peer_str(&name));
            self.mark_dirty(idx);
            return;
        }
        self.publish_allowed(now, idx, msid, name);
    }

    /// Publish on `msid` once access control said yes.
    fn publish_allowed(&mut self, now: Instant, idx: usize, msid: u32, name: Arc<str>) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        if !matches!(r.role, Role::None) {
            r.session.publish_bad_name(msid, &name, &mut c.tx);
            crate::info!("{} {}: publish {pname} refused: connection already publishes or plays", c.proto(), c.peer, pname = crate::log::peer_str(&name));
            self.mark_dirty(idx);
            return;
        }
        let reservation = match self.relay.reserve(&name, "rtmp") {
            Ok(r) => r,
            Err(PublishError::NameInUse) => {
                r.session.publish_bad_name(msid, &name, &mut c.tx);
                crate::info!("{} {}: publish {pname} refused: name already in use (NetStream.Publish.BadName)", c.proto(), c.peer, pname = crate::log::peer_str(&name));
                self.mark_dirty(idx);
                return;
            }
        };
        r.session.publish_ok(msid, &name, &mut c.tx);
        r.role = Role::Publisher { msid, name: Arc::clone(&name), stats: Arc::clone(reservation.stats()), last_media: now };
        r.idle_since = None;
        let silence = self.shared.cfg.publisher_silence();
        if let Some(gen) = self.conns.gen(idx) {
            self.timers.insert(now + silence, Timer::PublisherSilence { idx, gen });
        }
        let Some(c) = self.conns.get_mut(idx) else { return };
        crate::info!("{} {}: publishing {pname} on worker {}", c.proto(), c.peer, self.id, pname = crate::log::peer_str(&name));
        WorkerStats::gauge(&self.shared.workers[self.id].publishers, 1);
        self.mark_dirty(idx);
        let _ = self.relay.handle_publish(now, reservation, &ConnBacklog(&self.conns, &self.rtc.viewers));
        self.apply_relay(now);
        self.push_rules(now, &name);
    }

    fn media(&mut self, now: Instant, idx: usize, msid: u32, kind: MediaKind, ts: u32, payload: Vec<u8>) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        let Role::Publisher { msid: pm, name, stats, last_media } = &mut r.role else {
            // Media from a connection that is not publishing: ignore (counted).
            WorkerStats::add(&self.shared.workers[self.id].ignored_messages, 1);
            return;
        };
        if *pm != msid {
            WorkerStats::add(&self.shared.workers[self.id].ignored_messages, 1);
            return;
        }
        *last_media = now;
        let name = Arc::clone(name);
        // Born at this turn's wake-up (when its last chunk was read), for the
        // server-added latency histogram.
        let frame = Frame::build(kind, ts, &payload, Audience::All, Some(now));
        let stats = Arc::clone(stats);
        self.relay_rtmp_frame(now, &name, Some(&stats), frame);
    }

    /// Hand a video frame of `name` to its transcode thread while WebRTC viewers need it
    /// (B-frames, or a profile they lack), starting the thread (at most `--transcode` on
    /// this core) at a keyframe. Its output comes back in `transcode_drain`.
    fn transcode_video(&mut self, name: &Arc<str>, st: &Arc<StreamStats>, frame: &Frame) {
        let wanted = st.transcoded_viewers.load(Ordering::Relaxed) > 0;
        if !wanted {
            if self.transcodes.remove(name).is_some() {
                WorkerStats::gauge(&self.shared.workers[self.id].transcodes, -1);
                crate::info!("transcode {}: stopped (no viewer needs it)", crate::log::peer_str(name));
            }
            return;
        }
        if !self.transcodes.contains_key(name) {
            // Start on a keyframe with the stream's configuration in hand.
            if !frame.keyframe || frame.config {
                return;
            }
            if self.transcodes.len() >= self.shared.cfg.transcode as usize {
                // Viewers are refused before they join when this core is full (play.rs);
                // one that raced past it waits for a free slot.
                crate::debug!("transcode {}: not started: worker {} runs {} already (--transcode)", crate::log::peer_str(name), self.id, self.transcodes.len());
                return;
            }
            let Some(cfg) = self.relay.video_config(name) else { return };
            let t = match super::transcode::TranscodeThread::start(name, &cfg, Arc::clone(&self.waker)) {
                Ok(t) => t,
                Err(e) => {
                    crate::warn!("transcode {}: cannot start: {e}", crate::log::peer_str(name));
                    st.transcode_refused.store(1, Ordering::Relaxed);
                    return;
                }
            };
            st.transcode_refused.store(0, Ordering::Relaxed);
            crate::info!("transcode {}: started on worker {} (H.264 to constrained baseline for WebRTC viewers)", crate::log::peer_str(name), self.id);
            WorkerStats::gauge(&self.shared.workers[self.id].transcodes, 1);
            self.transcodes.insert(Arc::clone(name), t);
        }
        let Some(t) = self.transcodes.get_mut(name) else { return };
        t.push(&Frame::build(MediaKind::Video, frame.ts, frame.body(), Audience::All, frame.born).shared());
    }

    /// The transcode threads' output: constrained-baseline frames for the WebRTC viewers
    /// that need them (audience `Rtc`), relayed in the order they were made.
    fn transcode_drain(&mut self, now: Instant) {
        if self.transcodes.is_empty() {
            return;
        }
        let mut out: Vec<(Arc<str>, Frame)> = Vec::new();
        for (name, t) in self.transcodes.iter_mut() {
            let mut n = 0u64;
            while let Some(o) = t.poll() {
                out.push((Arc::clone(name), Frame::build(MediaKind::Video, o.ts, &o.body, Audience::Rtc, o.born)));
                n += 1;
            }
            if let Some(st) = self.shared.registry.stats(name) {
                st.video_transcoded_frames.fetch_add(n, Ordering::Relaxed);
                st.video_transcode_ns.fetch_add(t.take_busy_ns(), Ordering::Relaxed);
            }
        }
        for (name, f) in out {
            self.relay_frame(now, &name, f);
        }
    }

    /// A frame of an RTMP-fed publisher (an RTMP client, or a cluster pull): counted,
    /// relayed, and its AAC made Opus for WebRTC viewers while the stream has some
    /// (once per stream, timed for the API).
    pub(super) fn relay_rtmp_frame(&mut self, now: Instant, name: &Arc<str>, stats: Option<&Arc<StreamStats>>, frame: Frame) {
        let mut opus = Vec::new();
        if let Some(st) = stats {
            st.count_rtmp_input(&frame);
            if frame.kind == MediaKind::Video {
                self.transcode_video(name, st, &frame);
            }
            if frame.kind == MediaKind::Audio {
                let viewers = st.webrtc_viewers.load(Ordering::Relaxed) > 0;
                let bridge = self.opus.entry(Arc::clone(name)).or_default();
                if viewers || bridge.active() || frame.config {
                    let t0 = crate::runtime::now();
                    let n = bridge.handle_frame(&frame, viewers, &mut opus);
                    if n > 0 {
                        st.opus_packets.fetch_add(n as u64, Ordering::Relaxed);
                        st.opus_ns.fetch_add(crate::runtime::now().saturating_duration_since(t0).as_nanos() as u64, Ordering::Relaxed);
                    }
                }
            }
        }
        self.relay_frame(now, name, frame);
        for f in opus {
            self.relay_frame(now, name, f);
        }
    }

    fn stream_closed(&mut self, now: Instant, idx: usize, msid: u32) {
        let Some(gen) = self.conns.gen(idx) else { return };
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        match &r.role {
            Role::Publisher { msid: m, name, .. } if *m == msid => {
                let name = Arc::clone(name);
                r.session.unpublish_ok(msid, &name, &mut c.tx);
                r.role = Role::None;
                crate::info!("{} {}: unpublished {pname}", c.proto(), c.peer, pname = crate::log::peer_str(&name));
                self.mark_dirty(idx);
                self.unpublish(now, &name);
                self.became_idle(now, idx, gen);
            }
            Role::Player { msid: m } if *m == msid => {
                // Flash's NetStream.close() / deleteStream: Play.Stop first (the
                // Flashphoner Flash client re-enables Play only on it), then teardown.
                // The role stays until the status is written.
                self.leave(now, sink_id(idx, gen), true);
                if let Some(Kind::Rtmp(r)) = self.conns.get_mut(idx).map(|c| &mut c.kind) {
                    r.role = Role::None;
                }
                self.became_idle(now, idx, gen);
            }
            _ => {}
        }
    }

    /// The local publisher of `name` is gone: grace window here and on every subscriber core.
    pub(super) fn unpublish(&mut self, now: Instant, name: &Arc<str>) {
        self.opus.remove(name);
        if self.transcodes.remove(name).is_some() {
            WorkerStats::gauge(&self.shared.workers[self.id].transcodes, -1);
        }
        WorkerStats::gauge(&self.shared.workers[self.id].publishers, -1);
        self.relay.handle_unpublish(now, name);
        self.apply_relay(now);
    }

    // ---- play ---------------------------------------------------------------------

    fn play(&mut self, now: Instant, idx: usize, msid: u32, name: String, query: &str) {
        let name: Arc<str> = name.into();
        let Some(gen) = self.conns.gen(idx) else { return };
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        let token = crate::relay::auth::token_in_query(query).or(r.session.connect_token());
        if self.hook.is_some() && !self.shared.access.token_grants(token, AuthAction::Play, &name, c.peer.ip()) {
            let token = token.map(str::to_owned);
            let q = rtmp_hook_query(c, HookAction::Play, &name, query, token);
            self.hook_ask(now, q, Waiting::RtmpPlay { idx, gen, msid, name: name.to_string() });
            return;
        }
        if let Err(why) = self.shared.access.authorize(token, AuthAction::Play, &name, c.peer.ip()) {
            r.session.play_failed(msid, &format!("Restricted access: {}", why.reason()), &mut c.tx);
            crate::info!("{} {}: play {pname} denied: {} (NetStream.Play.Failed)", c.proto(), c.peer, why.reason(), pname = crate::log::peer_str(&name));
            self.mark_dirty(idx);
            return;
        }
        self.play_allowed(now, idx, gen, msid, name);
    }

    /// Play `name` on `msid` once access control said yes.
    fn play_allowed(&mut self, now: Instant, idx: usize, gen: u32, msid: u32, name: Arc<str>) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        if !matches!(r.role, Role::None) {
            r.session.play_not_found(msid, &name, &mut c.tx);
            self.mark_dirty(idx);
            return;
        }
        if let Some(cl) = &self.shared.cluster {
            if !self.shared.registry.is_live(&name) {
                if !cl.redis_ok.load(Ordering::Relaxed) {
                    let why = "not live on this node, and the cluster directory (Redis) is unreachable";
                    r.session.play_failed(msid, &format!("Stream {name} is {why}."), &mut c.tx);
                    crate::info!("{} {}: play {pname} refused: {why}", c.proto(), c.peer, pname = crate::log::peer_str(&name));
                    self.mark_dirty(idx);
                    return;
                }
                // Another node may own it: the control thread looks now, not at its next tick.
                cl.nudge();
            }
        }
        let sink = sink_id(idx, gen);
        let kind = Sink::Rtmp { wants_opus: r.session.four_cc_list().iter().any(|c| c == "Opus") };
        // The relay only queues actions here; Play.Start is written before they are applied.
        let outcome = self.relay.handle_play(now, sink, kind, &name, &ConnBacklog(&self.conns, &self.rtc.viewers));
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        if outcome == PlayOutcome::NotFound {
            r.session.play_not_found(msid, &name, &mut c.tx);
            crate::info!("{} {}: play {pname}: stream not found", c.proto(), c.peer, pname = crate::log::peer_str(&name));
            self.mark_dirty(idx);
            return;
        }
        r.session.play_start(msid, &name, &mut c.tx);
        r.role = Role::Player { msid };
        r.idle_since = None;
        WorkerStats::gauge(&self.shared.workers[self.id].players, 1);
        let state = match outcome {
            PlayOutcome::Subscribing { owner } => format!(" (subscribing to worker {owner})"),
            PlayOutcome::Waiting => " (waiting for a publisher)".into(),
            PlayOutcome::Live | PlayOutcome::NotFound => String::new(),
        };
        crate::info!("{} {}: playing {pname} on worker {}{state}", c.proto(), c.peer, self.id, pname = crate::log::peer_str(&name));
        self.mark_dirty(idx);
        self.apply_relay(now);
    }

    /// Sink `sink` stopped playing (`stopped`: at its request; else it disconnected).
    fn leave(&mut self, now: Instant, sink: SinkId, stopped: bool) {
        if self.relay.sink_stream(sink).is_some() {
            WorkerStats::gauge(&self.shared.workers[self.id].players, -1);
        }
        self.relay.handle_leave(now, sink, stopped);
        self.apply_relay(now);
    }

    // ---- the auth hook ----------------------------------------------------------------

    /// Ask the auth hook about `q`; `w` waits for the verdict (or is denied at once when
    /// too many requests are pending).
    fn hook_ask(&mut self, now: Instant, q: HookQuery, w: Waiting) {
        let Some(port) = &self.hook else { return };
        self.hook_ticket += 1;
        let ticket = self.hook_ticket;
        match port.hook.submit(self.id, ticket, &q, now) {
            Ok(()) => {
                self.timers.insert(now + port.hook.timeout + HOOK_GRACE, Timer::HookDeadline { ticket });
                self.hook_waiting.insert(ticket, w);
            }
            Err(why) => self.hook_verdict(now, w, Err(why)),
        }
    }

    /// Apply the verdicts the helper threads sent since the last turn.
    fn hook_drain(&mut self, now: Instant) {
        loop {
            let Some(v) = self.hook.as_ref().and_then(|p| p.verdicts.try_recv().ok()) else { return };
            // Gone already: its deadline passed and it was denied.
            let Some(w) = self.hook_waiting.remove(&v.ticket) else { continue };
            self.hook_verdict(now, w, v.result);
        }
    }

    /// Carry on with a held request, or deny it as its client understands.
    fn hook_verdict(&mut self, now: Instant, w: Waiting, verdict: Result<(), String>) {
        match w {
            Waiting::RtmpConnect { idx, gen, app } => {
                let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
                let (proto, peer) = (c.proto(), c.peer);
                let Kind::Rtmp(r) = &mut c.kind else { return };
                match verdict {
                    Ok(()) => {
                        crate::debug!("{proto} {peer}: connect app={papp} allowed by the auth hook", papp = crate::log::peer_str(&app));
                        r.session.connect_accept(&mut c.tx);
                    }
                    Err(why) => {
                        crate::info!("{proto} {peer}: connect app={papp} rejected: {why} (NetConnection.Connect.Rejected)", papp = crate::log::peer_str(&app));
                        r.session.connect_reject("Restricted access", &mut c.tx);
                        c.close_after_flush = true;
                    }
                }
                self.mark_dirty(idx);
                // Commands that arrived while connect was held.
                self.rtmp_events(now, idx);
            }
            Waiting::RtmpPublish { idx, gen, msid, name } => {
                let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
                match verdict {
                    Ok(()) => self.publish_allowed(now, idx, msid, name.into()),
                    Err(why) => {
                        let (proto, peer) = (c.proto(), c.peer);
                        let Kind::Rtmp(r) = &mut c.kind else { return };
                        r.session.publish_denied(msid, "Restricted access", &mut c.tx);
                        crate::info!("{proto} {peer}: publish {pname} denied: {why} (NetStream.Publish.BadName)", pname = crate::log::peer_str(&name));
                        self.mark_dirty(idx);
                    }
                }
            }
            Waiting::RtmpPlay { idx, gen, msid, name } => {
                let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
                match verdict {
                    Ok(()) => self.play_allowed(now, idx, gen, msid, name.into()),
                    Err(why) => {
                        let (proto, peer) = (c.proto(), c.peer);
                        let Kind::Rtmp(r) = &mut c.kind else { return };
                        r.session.play_failed(msid, "Restricted access", &mut c.tx);
                        crate::info!("{proto} {peer}: play {pname} denied: {why} (NetStream.Play.Failed)", pname = crate::log::peer_str(&name));
                        self.mark_dirty(idx);
                    }
                }
            }
            Waiting::WsConnect { idx, gen, obj } => self.ws_connect_verdict(idx, gen, &obj, verdict),
            Waiting::WsPublish { idx, gen, req } => self.ws_publish_verdict(now, idx, gen, *req, verdict),
            Waiting::Whip { idx, gen, req } => self.whip_verdict(now, idx, gen, &req, verdict),
            Waiting::WsPlay { idx, gen, req } => self.ws_play_verdict(now, idx, gen, *req, verdict),
            Waiting::Whep { idx, gen, req } => self.whep_verdict(now, idx, gen, &req, verdict),
        }
    }

    // ---- cross-core and timers ----------------------------------------------------

    fn handle_core_msg(&mut self, now: Instant, m: CoreMsg) {
        if let CoreMsg::EndSession { resource } = m {
            self.whip_end(now, &resource);
            return;
        }
        if let CoreMsg::StopPush { id } = m {
            self.push_stop(now, &id, "deleted by the API".into());
            return;
        }
        self.relay.handle_core_msg(now, m, &ConnBacklog(&self.conns, &self.rtc.viewers));
        self.apply_relay(now);
    }

    fn timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::ConnDeadline { idx, gen } => {
                let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
                let stuck = match &c.kind {
                    Kind::Rtmp(r) => r.session.is_handshaking(),
                    Kind::Http => !c.close_after_flush,
                    Kind::Ws(_) | Kind::Push(_) | Kind::Pull(_) => false,
                };
                if stuck {
                    self.doom(idx, "timed out before completing its handshake or request".into(), true);
                }
            }
            Timer::HookDeadline { ticket } => {
                if let Some(w) = self.hook_waiting.remove(&ticket) {
                    let why = self.hook.as_ref().map_or_else(String::new, |h| h.hook.timeout_reason());
                    self.hook_verdict(now, w, Err(why));
                }
            }
            Timer::RtcSession { slot, gen, at } => self.rtc_timeout(now, slot, gen, at),
            Timer::Viewer { slot, gen, at } => self.view_timeout(now, slot, gen, at),
            Timer::Push(t) => self.push_timer(now, t),
            Timer::PullCheck { idx, gen } => self.pull_check(now, idx, gen),
            Timer::WsPing { idx, gen } => self.ws_ping(now, idx, gen),
            Timer::Relay(t) => {
                self.relay.handle_timer(now, t);
                self.apply_relay(now);
            }
            Timer::Idle { idx, gen } => {
                let limit = self.shared.cfg.rtmp_idle();
                let Some(Kind::Rtmp(r)) = self.conns.get_gen_mut(idx, gen).map(|c| &mut c.kind) else { return };
                // A stale timer (the connection published or played since) is ignored; a
                // later idle period armed its own.
                if r.idle_since.is_some_and(|t| now.saturating_duration_since(t) >= limit) && matches!(r.role, Role::None) {
                    WorkerStats::add(&self.shared.workers[self.id].idle_closed, 1);
                    self.doom(idx, format!("idle: neither published nor played for {:.0} s (--rtmp-idle-timeout)", limit.as_secs_f64()), false);
                }
            }
            Timer::PublisherSilence { idx, gen } => {
                let limit = self.shared.cfg.publisher_silence();
                let Some(Kind::Rtmp(r)) = self.conns.get_gen_mut(idx, gen).map(|c| &mut c.kind) else { return };
                let Role::Publisher { last_media, .. } = &r.role else { return };
                let due = *last_media + limit;
                if due <= now {
                    WorkerStats::add(&self.shared.workers[self.id].publisher_timeouts, 1);
                    self.doom(idx, format!("publisher sent no media for {:.0} s (--publisher-timeout)", limit.as_secs_f64()), false);
                } else {
                    self.timers.insert(due, Timer::PublisherSilence { idx, gen });
                }
            }
            Timer::Heartbeat => {
                self.timers.insert(now + HEARTBEAT, Timer::Heartbeat);
                self.take_fault();
            }
            Timer::AcceptRetry => {
                self.accept_retry = false;
                if self.reserve_fd.is_none() {
                    self.reserve_fd = std::fs::File::open("/dev/null").ok();
                }
                for l in ListenerKind::ALL {
                    self.accept(now, l);
                }
            }
        }
    }

    // ---- output and teardown ------------------------------------------------------

    /// Held connections whose deadline passed (or all of them, when the core is idle
    /// under the default policy) are written this turn; the next deadline is kept for
    /// the poll timeout. Returns whether everything held was released.
    fn release_held(&mut self, now: Instant) -> bool {
        self.next_write_at = None;
        if self.held.is_empty() {
            return true;
        }
        let idle = self.write_early_when_idle && self.load < IDLE_LOAD;
        let mut next: Option<Instant> = None;
        for idx in std::mem::take(&mut self.held) {
            let Some(c) = self.conns.get_mut(idx) else { continue };
            let Some(at) = c.held else { continue };
            if idle || at <= now || c.dirty {
                c.held = None;
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(idx);
                }
            } else {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
                self.held.push(idx);
            }
        }
        self.next_write_at = next;
        next.is_none()
    }

    /// One writev batch per connection with output due this turn.
    fn flush_all(&mut self, now: Instant) {
        let all_released = self.release_held(now);
        let dirty = std::mem::take(&mut self.dirty);
        let mut out_bytes = 0u64;
        for idx in &dirty {
            let Some(gen) = self.conns.gen(*idx) else { continue };
            let Some(c) = self.conns.get_mut(*idx) else { continue };
            c.dirty = false;
            c.held = None;
            let player = matches!(&c.kind, Kind::Rtmp(r) if matches!(r.role, Role::Player { .. }));
            let push = matches!(&c.kind, Kind::Push(_));
            let res = c.tx.write_to(&mut c.sock).and_then(|n| c.sock.flush_pending().map(|()| n));
            match res {
                Ok(n) => {
                    out_bytes += n as u64;
                    if push {
                        self.push_written(now, *idx, gen, n);
                    }
                    let Some(c) = self.conns.get_mut(*idx) else { continue };
                    if c.tx.is_empty() && c.close_after_flush {
                        self.doom(*idx, "response sent".into(), false);
                    }
                }
                Err(e) => self.doom(*idx, format!("write error: {e}"), false),
            }
            if player || push {
                self.relay.handle_flushed(sink_id(*idx, gen));
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        WorkerStats::add(&self.shared.workers[self.id].bytes_out, out_bytes);
        if !self.queued_born.is_empty() {
            // A second clock read, only in turns that queued live media: a frame's latency
            // ends when the last of its players' writes is done (now, or at its deadline).
            let written = super::now();
            let w = &self.shared.workers[self.id];
            self.queued_born.retain(|&(born, by)| {
                let done = all_released || by.is_none_or(|t| t <= now);
                if done {
                    w.record_latency(written.saturating_duration_since(born));
                }
                !done
            });
        }
    }

    /// End of a loop turn that started at `began`: account the core's busy time.
    fn account_load(&mut self, began: Instant) {
        let end = super::now();
        let turn = end.saturating_duration_since(began);
        self.stats().record_turn(turn);
        self.busy += turn;
        let window = end.saturating_duration_since(self.load_window_start);
        if window >= LOAD_WINDOW {
            self.load = self.busy.as_secs_f64() / window.as_secs_f64();
            self.busy = Duration::ZERO;
            self.load_window_start = end;
        }
    }

    fn reap(&mut self, now: Instant) {
        while let Some((idx, why, proto_err)) = self.doomed.pop() {
            self.close(now, idx, &why, proto_err);
        }
    }

    fn close(&mut self, now: Instant, idx: usize, why: &str, proto_err: bool) {
        let gen = self.conns.gen(idx);
        let Some(mut c) = self.conns.remove(idx) else { return };
        let _ = self.poll.registry().deregister(&mut c.sock);
        if let Some(l) = c.listener {
            self.shared.limits.release(l, c.peer.ip());
        }
        WorkerStats::gauge(&self.shared.workers[self.id].connections, -1);
        let proto = c.proto();
        if proto_err {
            WorkerStats::add(&self.shared.workers[self.id].protocol_errors, 1);
            crate::warn!("{proto} {}: closing: {why}", c.peer);
        } else if proto != "http" && !proto.ends_with("-push") {
            crate::info!("{proto} {}: closed: {why}", c.peer);
        } else {
            crate::trace!("{proto} {}: closed: {why}", c.peer);
        }
        if let Kind::Push(pc) = c.kind {
            self.push_conn_closed(now, idx, gen, *pc, why);
        } else if let Kind::Pull(pc) = c.kind {
            self.pull_closed(now, *pc, why);
        } else if let Kind::Ws(w) = c.kind {
            self.ws_closed(now, idx, *w);
        } else if let Kind::Rtmp(r) = c.kind {
            match r.role {
                Role::Publisher { name, .. } => {
                    crate::info!("{proto} {}: publisher of {pname} gone", c.peer, pname = crate::log::peer_str(&name));
                    self.unpublish(now, &name);
                }
                Role::Player { .. } => {
                    if let Some(gen) = gen {
                        self.leave(now, sink_id(idx, gen), false);
                    }
                }
                Role::None => {}
            }
        }
    }

    fn close_all(&mut self) {
        let now = now();
        self.push_close_all();
        for idx in self.conns.indices() {
            if let Some(c) = self.conns.get_mut(idx) {
                // Best effort: whatever is queued and fits goes out before the close.
                let _ = c.tx.write_to(&mut c.sock);
            }
            self.close(now, idx, "server shutting down", false);
        }
    }
}

/// A sink id names a connection slot and its generation (a stale id for a reused
/// slot matches nothing).
/// The query string of a connect's `tcUrl` (`rtmp://host/app?k=v` → `k=v`).
fn tc_url_query(obj: &Amf) -> String {
    obj.get("tcUrl").and_then(Amf::as_str).and_then(|u| u.split_once('?')).map(|(_, q)| q.to_owned()).unwrap_or_default()
}

/// What the auth hook is asked about an RTMP publish or play on connection `c`.
fn rtmp_hook_query(c: &Conn, action: HookAction, name: &str, query: &str, token: Option<String>) -> HookQuery {
    let (app, custom) = match &c.kind {
        Kind::Rtmp(r) => {
            let (obj, args) = r.session.connect_object();
            let app = obj.get("app").and_then(Amf::as_str).unwrap_or("").to_owned();
            let flash = args.iter().find(|a| matches!(a, Amf::Object(_) | Amf::EcmaArray(_)));
            (app, flash.map_or(serde_json::Value::Null, super::hook::amf_to_json))
        }
        _ => (String::new(), serde_json::Value::Null),
    };
    HookQuery {
        action,
        protocol: c.proto(),
        name: name.to_owned(),
        app,
        ip: c.peer.ip(),
        query: query.to_owned(),
        token,
        custom,
        object: None,
    }
}

fn sink_id(idx: usize, gen: u32) -> SinkId {
    SinkId((u64::from(gen) << 32) | idx as u64)
}

fn sink_slot(sink: SinkId) -> (usize, u32) {
    ((sink.0 & 0xffff_ffff) as usize, (sink.0 >> 32) as u32)
}

/// The message stream an RTMP event is about, for events a player sends.
fn ev_msid(ev: &RtmpEvent) -> Option<u32> {
    match ev {
        RtmpEvent::Pause { msid, .. } | RtmpEvent::ReceiveAudio { msid, .. } | RtmpEvent::ReceiveVideo { msid, .. } => Some(*msid),
        _ => None,
    }
}

/// The relay's view of each sink's unsent bytes: its connection's send queue.
struct ConnBacklog<'a>(&'a Slab<Conn>, &'a Slab<play::Viewer>);

impl Backlog for ConnBacklog<'_> {
    fn queued(&self, sink: SinkId) -> usize {
        if play::is_viewer(sink) {
            return play::viewer_backlog(self.1, sink);
        }
        let (idx, gen) = sink_slot(sink);
        self.0.get_gen(idx, gen).map_or(0, |c| c.tx.len())
    }
}


#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::Armed;
    use std::time::{Duration, Instant};

    #[test]
    fn armed_timers_move_only_earlier_and_stale_ones_are_ignored() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_millis(10), t0 + Duration::from_millis(20));
        let mut a = Armed::default();
        assert_eq!(a.arm(None), None, "nothing due, nothing armed");
        assert_eq!(a.arm(Some(t2)), Some(t2));
        assert_eq!(a.arm(Some(t2)), None, "the same deadline is armed already");
        assert_eq!(a.arm(Some(t2 + Duration::from_millis(5))), None, "a later one waits for the armed one");
        assert_eq!(a.arm(Some(t1)), Some(t1), "an earlier one is armed");
        assert!(!a.fire(t2), "the superseded timer is stale");
        assert!(a.fire(t1));
        assert!(!a.fire(t1), "fired once");
        assert_eq!(a.arm(Some(t2)), Some(t2), "after firing, the next deadline is armed");
    }
}
