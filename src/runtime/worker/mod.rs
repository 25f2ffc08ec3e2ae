//! One worker: a mio loop owning its listeners' accepted connections, its
//! streams (hubs), its timers and its end of the mesh.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod rtc;

use mio::net::TcpListener;

use super::conn_io::Io;
use mio::{Events, Interest, Poll, Token};

use super::mesh::{CoreMsg, Mesh};
use super::slab::Slab;
use super::timer::TimerWheel;
use super::{now, Shared};
use crate::buf::{MediaKind, MediaMsg, SendQueue};
use crate::config::UnknownStream;
use crate::proto::http;
use crate::proto::rtmp::amf0;
use crate::proto::rtmp::session::{RtmpEvent, RtmpSession};
use crate::relay::hub::PlayerRef;
use crate::relay::{Deliver, DropKind, PlayLookup, PlayerPolicy, PlayerState, Snapshot, StreamHub, StreamStats, WorkerStats};

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
/// Bytes read per readable event before other connections get a turn.
const READ_BUDGET: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// SO_SNDBUF for RTMP sockets (the kernel doubles it).
const PLAYER_SNDBUF: usize = 256 * 1024;

#[derive(Debug)]
enum Timer {
    /// Close the connection if it is still in its handshake / has not sent a request.
    ConnDeadline { idx: usize, gen: u32 },
    /// The grace window of a stream whose publisher left.
    Grace(Arc<str>),
    /// A WebRTC session's next deadline (its `poll_timeout`): ICE, DTLS retransmit,
    /// NACK, RTCP. Stale when the slot's generation or the armed deadline moved on.
    RtcSession { slot: usize, gen: u32, at: Instant },
    /// The keep-alive ping on a signaling WebSocket.
    WsPing { idx: usize, gen: u32 },
    /// `--write-batch-ms`: write the media held for players.
    WriteBatch,
}

enum Role {
    None,
    Publisher { msid: u32, name: Arc<str>, stats: Arc<StreamStats> },
    Player(PlayerState),
}

struct RtmpConn {
    session: RtmpSession,
    role: Role,
}

enum Kind {
    Rtmp(Box<RtmpConn>),
    Http,
    /// An HTTP connection upgraded to WebSocket: Flashphoner-compatible signaling.
    Ws(Box<rtc::WsConn>),
}

struct Conn {
    sock: Io,
    peer: SocketAddr,
    rx: Vec<u8>,
    tx: SendQueue,
    kind: Kind,
    /// Queued output since the last flush.
    dirty: bool,
    /// Media queued and held for the next `--write-batch-ms` tick.
    held: bool,
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Rtmp,
    Http,
    Https,
    Rtmps,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Rtmp => "rtmp",
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Rtmps => "rtmps",
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
    hubs: HashMap<Arc<str>, StreamHub>,
    mesh: Mesh,
    timers: TimerWheel<Timer>,
    dirty: Vec<usize>,
    /// Connections with held media (`--write-batch-ms`); entries whose `held` flag was
    /// cleared by an earlier flush are skipped.
    held: Vec<usize>,
    write_batch: Option<Duration>,
    batch_armed: bool,
    policy: PlayerPolicy,
    started: Instant,
    seed: u64,
    /// Connections to close at the end of this turn, with the reason.
    doomed: Vec<(usize, String, bool)>,
    /// WebRTC media: this worker's UDP socket and publisher sessions.
    rtc: rtc::RtcState,
    /// Arrival times of the media messages queued to players this turn (one entry per
    /// message, not per player), for the latency histogram after the writes.
    queued_born: Vec<Instant>,
    last_born_msg: *const MediaMsg,
    /// Scratch for socket reads, shared by every connection of this worker.
    read_buf: Vec<u8>,
}

impl Worker {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        mut listeners: Listeners,
        mesh: Mesh,
    ) -> io::Result<Self> {
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
        let policy = PlayerPolicy { queue_limit: shared.cfg.queue_limit(), evict_after: shared.cfg.evict() };
        let policy_batch = shared.cfg.write_batch();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((id as u64 + 1) << 48);
        Ok(Worker {
            id,
            shared,
            poll,
            listeners,
            conns: Slab::new(),
            hubs: HashMap::new(),
            mesh,
            timers: TimerWheel::new(started),
            dirty: Vec::new(),
            held: Vec::new(),
            write_batch: policy_batch,
            batch_armed: false,
            policy,
            started,
            seed,
            doomed: Vec::new(),
            rtc: rtc::RtcState::new(udp),
            queued_born: Vec::new(),
            last_born_msg: std::ptr::null(),
            read_buf: vec![0u8; READ_CHUNK],
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
        loop {
            let timeout = if mesh_more {
                Some(Duration::ZERO)
            } else {
                self.timers.next_deadline().map(|d| d.saturating_duration_since(now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = now(); // one clock read per wake-up
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.close_all();
                return Ok(());
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    RTMP_LISTENER => self.accept(now, Listener::Rtmp),
                    HTTP_LISTENER => self.accept(now, Listener::Http),
                    HTTPS_LISTENER => self.accept(now, Listener::Https),
                    RTMPS_LISTENER => self.accept(now, Listener::Rtmps),
                    UDP => self.udp_readable(now),
                    Token(t) => {
                        let idx = t - CONN_BASE;
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
            mesh_more = self.mesh.drain(MESH_BUDGET, &mut inbox);
            for m in inbox.drain(..) {
                self.handle_core_msg(now, m);
            }
            self.timers.expire(now, &mut expired);
            for t in expired.drain(..) {
                self.timer(now, t);
            }
            self.flush_all(now);
            self.reap(now);
            self.mesh.flush();
        }
    }

    // ---- connections -------------------------------------------------------------

    fn accept(&mut self, now: Instant, which: Listener) {
        let rtmp = matches!(which, Listener::Rtmp | Listener::Rtmps);
        let tls = matches!(which, Listener::Https | Listener::Rtmps);
        let label = which.label();
        loop {
            let l = match which {
                Listener::Rtmp => Some(&self.listeners.rtmp),
                Listener::Http => Some(&self.listeners.http),
                Listener::Https => self.listeners.https.as_ref(),
                Listener::Rtmps => self.listeners.rtmps.as_ref(),
            };
            let Some(l) = l else { return };
            let (sock, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::warn!("worker {}: accept failed: {e}", self.id);
                    return;
                }
            };
            let _ = sock.set_nodelay(true);
            if rtmp {
                // Keep the kernel's share of a slow player's backlog small so our own
                // queue policy (drop inter frames, resume at a keyframe) takes over early.
                let _ = socket2::SockRef::from(&sock).set_send_buffer_size(PLAYER_SNDBUF);
            }
            self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let kind = if rtmp {
                let epoch_ms = now.saturating_duration_since(self.started).as_millis() as u32;
                Kind::Rtmp(Box::new(RtmpConn {
                    session: RtmpSession::new(
                        self.seed,
                        epoch_ms,
                        self.shared.cfg.max_message_bytes,
                        self.shared.cfg.chunk_size,
                    ),
                    role: Role::None,
                }))
            } else {
                Kind::Http
            };
            let sock = match (tls, &self.shared.tls) {
                (true, Some(cfg)) => match super::tls::TlsStream::new(sock, Arc::clone(cfg)) {
                    Ok(t) => Io::Tls(Box::new(t)),
                    Err(e) => {
                        crate::warn!("{label} {peer}: TLS setup failed: {e}");
                        continue;
                    }
                },
                _ => Io::Plain(sock),
            };
            let conn = Conn {
                sock,
                peer,
                rx: Vec::new(),
                tx: SendQueue::new(),
                kind,
                dirty: false,
                held: false,
                close_after_flush: false,
            };
            let (idx, gen) = self.conns.insert(conn);
            let Some(c) = self.conns.get_mut(idx) else { continue };
            if let Err(e) =
                self.poll.registry().register(&mut c.sock, Token(idx + CONN_BASE), Interest::READABLE | Interest::WRITABLE)
            {
                crate::warn!("worker {}: register {peer}: {e}", self.id);
                self.conns.remove(idx);
                continue;
            }
            WorkerStats::gauge(&self.stats().connections, 1);
            let limit = if rtmp { HANDSHAKE_TIMEOUT } else { HTTP_TIMEOUT };
            self.timers.insert(now + limit, Timer::ConnDeadline { idx, gen });
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
                    if total >= READ_BUDGET && !tls {
                        // Edge-triggered: we must come back for the rest. Re-register
                        // to get a fresh readiness event next turn.
                        if let Some(c) = self.conns.get_mut(idx) {
                            let _ = self.poll.registry().reregister(
                                &mut c.sock,
                                Token(idx + CONN_BASE),
                                Interest::READABLE | Interest::WRITABLE,
                            );
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
            Kind::Rtmp(r) => {
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
                if !c.tx.is_empty() {
                    self.mark_dirty(idx);
                }
                self.rtmp_events(now, idx);
            }
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
                } else if rtc::is_websocket(&req) || req.path.starts_with("/whip") {
                    let owned = rtc::OwnedRequest::from(&req, &c.rx);
                    self.rtc_http(now, idx, owned);
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
        loop {
            let Some(c) = self.conns.get_mut(idx) else { return };
            let Kind::Rtmp(r) = &mut c.kind else { return };
            let Some(ev) = r.session.poll_event() else { return };
            match ev {
                RtmpEvent::Connected { app } => {
                    crate::debug!("{} {}: connect app={app:?}", c.proto(), c.peer);
                }
                RtmpEvent::PublishRequested { msid, name } => self.publish(now, idx, msid, name),
                RtmpEvent::PlayRequested { msid, name } => self.play(now, idx, msid, name),
                RtmpEvent::Media { msid, kind, ts, payload } => self.media(now, idx, msid, kind, ts, payload),
                RtmpEvent::StreamClosed { msid } => self.stream_closed(now, idx, msid),
                RtmpEvent::Pause { msid, paused } => {
                    if let Role::Player(p) = &mut r.role {
                        if p.msid == msid {
                            p.paused = paused;
                            if !paused {
                                p.rebase(p_epoch_bump(p));
                            }
                        }
                    }
                }
                RtmpEvent::ReceiveAudio { msid, on } => {
                    if let Role::Player(p) = &mut r.role {
                        if p.msid == msid {
                            p.audio_on = on;
                        }
                    }
                }
                RtmpEvent::ReceiveVideo { msid, on } => {
                    if let Role::Player(p) = &mut r.role {
                        if p.msid == msid {
                            p.video_on = on;
                        }
                    }
                }
            }
        }
    }

    // ---- publish ------------------------------------------------------------------

    fn publish(&mut self, now: Instant, idx: usize, msid: u32, name: String) {
        let name: Arc<str> = name.into();
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        if !matches!(r.role, Role::None) {
            r.session.publish_bad_name(msid, &name, &mut c.tx);
            crate::info!("{} {}: publish {name:?} refused: connection already publishes or plays", c.proto(), c.peer);
            self.mark_dirty(idx);
            return;
        }
        let Some((stats, waiting)) = self.shared.registry.claim(&name, self.id, "rtmp") else {
            r.session.publish_bad_name(msid, &name, &mut c.tx);
            crate::info!("{} {}: publish {name:?} refused: name already in use (NetStream.Publish.BadName)", c.proto(), c.peer);
            self.mark_dirty(idx);
            return;
        };
        r.session.publish_ok(msid, &name, &mut c.tx);
        r.role = Role::Publisher { msid, name: Arc::clone(&name), stats: Arc::clone(&stats) };
        crate::info!("{} {}: publishing {name:?} on worker {}", c.proto(), c.peer, self.id);
        WorkerStats::gauge(&self.shared.workers[self.id].publishers, 1);
        self.mark_dirty(idx);
        self.start_stream(now, &name, waiting, stats);
    }

    /// A publisher on this core claimed `name`: own its hub, start subscriber cores.
    fn start_stream(&mut self, now: Instant, name: &Arc<str>, waiting: u64, stats: Arc<StreamStats>) {
        let gop = !self.shared.cfg.no_gop_cache;
        let hub = self.hubs.entry(Arc::clone(name)).or_insert_with(|| StreamHub::new(Arc::clone(name), gop));
        hub.owned = true;
        hub.stats = Some(stats);
        hub.remote = waiting;
        hub.start(Snapshot::default());
        let mut mask = waiting;
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.mesh.send(j, CoreMsg::Start { name: Arc::clone(name), snapshot: Snapshot::default(), fresh: true, from: self.id });
        }
        self.announce_start(now, name, true);
    }

    fn media(&mut self, now: Instant, idx: usize, msid: u32, kind: MediaKind, ts: u32, payload: Vec<u8>) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        let Role::Publisher { msid: pm, name, stats } = &r.role else {
            // Media from a connection that is not publishing: ignore (counted).
            WorkerStats::add(&self.shared.workers[self.id].ignored_messages, 1);
            return;
        };
        if *pm != msid {
            WorkerStats::add(&self.shared.workers[self.id].ignored_messages, 1);
            return;
        }
        let name = Arc::clone(name);
        let msg = MediaMsg::new(kind, ts, &payload, self.shared.cfg.chunk_size);
        count_media(stats, &msg, &payload);
        self.deliver_stream(now, &name, &msg, true);
    }

    /// A message of stream `name` on this core: cache, forward (owner), fan out.
    fn deliver_stream(&mut self, now: Instant, name: &Arc<str>, msg: &Arc<MediaMsg>, owner: bool) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        hub.ingest(msg, now);
        if owner && msg.keyframe && !msg.config && msg.kind == MediaKind::Video {
            if let Some(st) = &hub.stats {
                let us = now.saturating_duration_since(self.shared.started).as_micros() as u64;
                st.keyframe_at_us.store(us.max(1), Ordering::Relaxed);
            }
        }
        if owner {
            let mut mask = hub.remote;
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if !self.mesh.send(j, CoreMsg::Media { name: Arc::clone(name), msg: Arc::clone(msg) }) {
                    WorkerStats::add(&self.shared.workers[self.id].mesh_full, 1);
                }
            }
        }
        let has_video = hub.has_video;
        let players = std::mem::take(&mut hub.players);
        for p in &players {
            self.send_to_player(now, *p, msg, has_video);
        }
        if let Some(hub) = self.hubs.get_mut(name) {
            let mut players = players;
            players.append(&mut hub.players);
            hub.players = players;
        }
    }

    fn send_to_player(&mut self, now: Instant, p: PlayerRef, msg: &Arc<MediaMsg>, has_video: bool) {
        let Some(c) = self.conns.get_gen_mut(p.idx, p.gen) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        let Role::Player(ps) = &mut r.role else { return };
        let w = &self.shared.workers[self.id];
        let was_started = ps.is_started();
        match ps.deliver(msg, c.tx.len(), has_video, now, &self.policy) {
            Deliver::Send(ts) => {
                r.session.queue_media(ps.msid, ts, msg, &mut c.tx);
                if let Some(b) = msg.born {
                    if !std::ptr::eq(self.last_born_msg, Arc::as_ptr(msg)) {
                        self.last_born_msg = Arc::as_ptr(msg);
                        self.queued_born.push(b);
                    }
                }
                // --write-batch-ms: hold media of a started player for the next tick.
                // (A connection already dirty is written this turn anyway.)
                let hold = self.write_batch.filter(|_| was_started && c.tx.len() < HOLD_MAX_BYTES);
                match hold {
                    _ if c.dirty => {}
                    Some(batch) => {
                        if !c.held {
                            c.held = true;
                            self.held.push(p.idx);
                        }
                        if !self.batch_armed {
                            self.batch_armed = true;
                            self.timers.insert(now + batch, Timer::WriteBatch);
                        }
                    }
                    None => {
                        c.dirty = true;
                        self.dirty.push(p.idx);
                    }
                }
            }
            Deliver::Skip => {}
            Deliver::Dropped(k) => WorkerStats::add(
                match k {
                    DropKind::Inter => &w.drops_inter,
                    DropKind::Keyframe => &w.drops_keyframe,
                    DropKind::Audio => &w.drops_audio,
                },
                1,
            ),
            Deliver::Evict => {
                WorkerStats::add(&w.evictions, 1);
                let why = format!(
                    "evicted: send queue over {} KiB for {:.1} s",
                    self.policy.queue_limit / 1024,
                    self.policy.evict_after.as_secs_f64()
                );
                self.doom(p.idx, why, false);
            }
        }
    }

    fn stream_closed(&mut self, now: Instant, idx: usize, msid: u32) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        match &r.role {
            Role::Publisher { msid: m, name, .. } if *m == msid => {
                let name = Arc::clone(name);
                r.session.unpublish_ok(msid, &name, &mut c.tx);
                r.role = Role::None;
                crate::info!("{} {}: unpublished {name:?}", c.proto(), c.peer);
                self.mark_dirty(idx);
                self.unpublish(now, &name);
            }
            Role::Player(p) if p.msid == msid => {
                let name = Arc::clone(&p.name);
                r.role = Role::None;
                self.leave(idx, &name);
            }
            _ => {}
        }
    }

    /// The local publisher of `name` is gone: grace window here and on every subscriber core.
    fn unpublish(&mut self, now: Instant, name: &Arc<str>) {
        self.shared.registry.release(name, self.id);
        WorkerStats::gauge(&self.shared.workers[self.id].publishers, -1);
        let grace = self.shared.cfg.grace();
        if let Some(hub) = self.hubs.get_mut(name) {
            hub.owned = false;
            let mut mask = std::mem::take(&mut hub.remote);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                self.mesh.send(j, CoreMsg::Stop { name: Arc::clone(name) });
            }
        }
        self.stop_hub(now, name, grace);
    }

    fn stop_hub(&mut self, now: Instant, name: &Arc<str>, grace: Duration) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        hub.stop(now + grace);
        if hub.is_idle() {
            self.hubs.remove(name);
            return;
        }
        self.timers.insert(now + grace, Timer::Grace(Arc::clone(name)));
    }

    // ---- play ---------------------------------------------------------------------

    fn play(&mut self, now: Instant, idx: usize, msid: u32, name: String) {
        let name: Arc<str> = name.into();
        let Some(gen) = self.conns.gen(idx) else { return };
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Rtmp(r) = &mut c.kind else { return };
        if !matches!(r.role, Role::None) {
            r.session.play_not_found(msid, &name, &mut c.tx);
            self.mark_dirty(idx);
            return;
        }
        let not_found_mode = self.shared.cfg.unknown_stream == UnknownStream::NotFound;
        let first_here = self.hubs.get(&name).is_none_or(|h| h.players.is_empty());
        let mut stats = None;
        let mut remote_owner = None;
        if first_here {
            let (look, st) = self.shared.registry.add_interest(&name, self.id, !not_found_mode);
            if not_found_mode && look == PlayLookup::Absent {
                if st.is_some() {
                    let _ = self.shared.registry.drop_interest(&name, self.id);
                }
                r.session.play_not_found(msid, &name, &mut c.tx);
                crate::info!("{} {}: play {name:?}: stream not found", c.proto(), c.peer);
                self.mark_dirty(idx);
                return;
            }
            if let PlayLookup::Remote(owner) = look {
                self.mesh.send(owner, CoreMsg::Subscribe { name: Arc::clone(&name), from: self.id });
                remote_owner = Some(owner);
            }
            stats = st;
        } else if not_found_mode && !self.hubs.get(&name).is_some_and(|h| h.live) {
            r.session.play_not_found(msid, &name, &mut c.tx);
            self.mark_dirty(idx);
            return;
        }
        let stats = stats.or_else(|| self.shared.registry.stats(&name));
        if let Some(s) = &stats {
            s.players.fetch_add(1, Ordering::Relaxed);
        }
        let gop = !self.shared.cfg.no_gop_cache;
        let hub = self.hubs.entry(Arc::clone(&name)).or_insert_with(|| StreamHub::new(Arc::clone(&name), gop));
        r.session.play_start(msid, &name, &mut c.tx);
        let mut ps = PlayerState::new(msid, Arc::clone(&name), hub.epoch);
        ps.wants_opus = r.session.four_cc_list().iter().any(|c| c == "Opus");
        r.role = Role::Player(ps);
        hub.add_player(PlayerRef { idx, gen });
        WorkerStats::gauge(&self.shared.workers[self.id].players, 1);
        let live = hub.live;
        let state = match (live, remote_owner) {
            (true, _) => String::new(),
            (false, Some(o)) => format!(" (subscribing to worker {o})"),
            (false, None) => " (waiting for a publisher)".into(),
        };
        crate::info!("{} {}: playing {name:?} on worker {}{state}", c.proto(), c.peer, self.id);
        self.mark_dirty(idx);
        if live {
            self.join(now, &name, PlayerRef { idx, gen });
            // A stale GOP (WebRTC publishers send keyframes only when asked) means a long
            // wait or a long catch-up for this player: ask for a fresh one.
            let stale = self.hubs.get(&name).is_some_and(|h| {
                h.gop_started().is_none_or(|t| now.saturating_duration_since(t) > self.shared.cfg.keyframe_every())
            });
            if stale {
                let owner = self.hubs.get(&name).and_then(|h| if h.owned { Some(self.id) } else { h.owner_core });
                match owner {
                    Some(o) if o == self.id => self.request_keyframe(now, &name),
                    Some(o) => {
                        self.mesh.send(o, CoreMsg::KeyframeRequest { name: Arc::clone(&name) });
                    }
                    None => {}
                }
            }
        }
    }

    /// Send a player what it needs to start: metadata, sequence headers, the cached GOP.
    fn join(&mut self, now: Instant, name: &Arc<str>, p: PlayerRef) {
        let Some(hub) = self.hubs.get(name) else { return };
        let snap = hub.cached().clone();
        let has_video = hub.has_video;
        for m in snap.meta.iter().chain(snap.video_cfg.iter()).chain(snap.audio_cfg.iter()).chain(snap.audio_cfg_opus.iter()) {
            self.send_to_player(now, p, m, has_video);
        }
        for m in &snap.gop {
            self.send_to_player(now, p, m, has_video);
        }
        // The cached start is never held (--write-batch-ms): joins stay instant.
        self.mark_dirty(p.idx);
    }

    /// A publisher started: tell waiting players (PublishNotify when `fresh`) and
    /// send them the cached start.
    fn announce_start(&mut self, now: Instant, name: &Arc<str>, fresh: bool) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        hub.announced_gone = false;
        let epoch = hub.epoch;
        let players = hub.players.clone();
        for p in &players {
            let Some(c) = self.conns.get_gen_mut(p.idx, p.gen) else { continue };
            let Kind::Rtmp(r) = &mut c.kind else { continue };
            let Role::Player(ps) = &mut r.role else { continue };
            ps.rebase(epoch);
            if fresh {
                r.session.publish_notify(ps.msid, name, &mut c.tx);
            }
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(p.idx);
            }
        }
        for p in players {
            self.join(now, name, p);
        }
    }

    /// Player `idx` stopped playing `name` (deleteStream or disconnect).
    fn leave(&mut self, idx: usize, name: &Arc<str>) {
        WorkerStats::gauge(&self.shared.workers[self.id].players, -1);
        if let Some(s) = self.shared.registry.stats(name) {
            s.players.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(hub) = self.hubs.get_mut(name) else { return };
        hub.players.retain(|p| p.idx != idx);
        if hub.players.is_empty() {
            if let Some(owner) = self.shared.registry.drop_interest(name, self.id) {
                self.mesh.send(owner, CoreMsg::Unsubscribe { name: Arc::clone(name), from: self.id });
            }
            if hub.is_idle() {
                self.hubs.remove(name);
            }
        }
    }

    // ---- cross-core and timers ----------------------------------------------------

    fn handle_core_msg(&mut self, now: Instant, m: CoreMsg) {
        match m {
            CoreMsg::Subscribe { name, from } => {
                let Some(hub) = self.hubs.get_mut(&name) else { return };
                if !hub.owned {
                    // The publisher left meanwhile; `from` stays interested in the
                    // registry and the next publisher will start it.
                    return;
                }
                hub.remote |= 1u64 << from;
                let snapshot = hub.snapshot();
                self.mesh.send(from, CoreMsg::Start { name, snapshot, fresh: false, from: self.id });
            }
            CoreMsg::Unsubscribe { name, from } => {
                if let Some(hub) = self.hubs.get_mut(&name) {
                    hub.remote &= !(1u64 << from);
                    if hub.is_idle() {
                        self.hubs.remove(&name);
                    }
                }
            }
            CoreMsg::Start { name, snapshot, fresh, from } => {
                let Some(hub) = self.hubs.get_mut(&name) else { return };
                if hub.players.is_empty() {
                    return;
                }
                hub.owner_core = Some(from);
                hub.start(snapshot);
                self.announce_start(now, &name, fresh);
            }
            CoreMsg::Media { name, msg } => self.deliver_stream(now, &name, &msg, false),
            CoreMsg::KeyframeRequest { name } => self.request_keyframe(now, &name),
            CoreMsg::Stop { name } => {
                let grace = self.shared.cfg.grace();
                self.stop_hub(now, &name, grace);
            }
        }
    }

    fn timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::ConnDeadline { idx, gen } => {
                let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
                let stuck = match &c.kind {
                    Kind::Rtmp(r) => r.session.is_handshaking(),
                    Kind::Http => !c.close_after_flush,
                    Kind::Ws(_) => false,
                };
                if stuck {
                    self.doom(idx, "timed out before completing its handshake or request".into(), true);
                }
            }
            Timer::RtcSession { slot, gen, at } => self.rtc_timeout(now, slot, gen, at),
            Timer::WsPing { idx, gen } => self.ws_ping(now, idx, gen),
            Timer::WriteBatch => self.release_held(),
            Timer::Grace(name) => {
                let Some(hub) = self.hubs.get_mut(&name) else { return };
                match hub.grace_until {
                    Some(until) if !hub.live && until <= now => {}
                    _ => return,
                }
                hub.grace_until = None;
                hub.announced_gone = true;
                let players = hub.players.clone();
                crate::info!("stream {name:?}: publisher gone for good; UnpublishNotify to {} player(s) on worker {}", players.len(), self.id);
                for p in players {
                    let Some(c) = self.conns.get_gen_mut(p.idx, p.gen) else { continue };
                    let Kind::Rtmp(r) = &mut c.kind else { continue };
                    let Role::Player(ps) = &r.role else { continue };
                    r.session.unpublish_notify(ps.msid, &name, &mut c.tx);
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(p.idx);
                    }
                }
                if self.hubs.get(&name).is_some_and(StreamHub::is_idle) {
                    self.hubs.remove(&name);
                }
            }
        }
    }

    // ---- output and teardown ------------------------------------------------------

    /// `--write-batch-ms` tick: every connection with held media is written this turn.
    fn release_held(&mut self) {
        self.batch_armed = false;
        for idx in std::mem::take(&mut self.held) {
            let Some(c) = self.conns.get_mut(idx) else { continue };
            if c.held {
                c.held = false;
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(idx);
                }
            }
        }
    }

    /// One writev batch per connection with new output this turn.
    fn flush_all(&mut self, _now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out_bytes = 0u64;
        for idx in &dirty {
            let Some(c) = self.conns.get_mut(*idx) else { continue };
            c.dirty = false;
            c.held = false;
            let res = c.tx.write_to(&mut c.sock).and_then(|n| c.sock.flush_pending().map(|()| n));
            match res {
                Ok(n) => {
                    out_bytes += n as u64;
                    if c.tx.is_empty() && c.close_after_flush {
                        self.doom(*idx, "response sent".into(), false);
                    }
                }
                Err(e) => self.doom(*idx, format!("write error: {e}"), false),
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        WorkerStats::add(&self.shared.workers[self.id].bytes_out, out_bytes);
        if !self.queued_born.is_empty() {
            // A second clock read, only in turns that wrote WebRTC media: the end of the
            // writes is what server-added latency is measured to.
            let written = now();
            let w = &self.shared.workers[self.id];
            for b in self.queued_born.drain(..) {
                w.record_latency(written.saturating_duration_since(b));
            }
            self.last_born_msg = std::ptr::null();
        }
    }

    fn reap(&mut self, now: Instant) {
        while let Some((idx, why, proto_err)) = self.doomed.pop() {
            self.close(now, idx, &why, proto_err);
        }
    }

    fn close(&mut self, now: Instant, idx: usize, why: &str, proto_err: bool) {
        let Some(mut c) = self.conns.remove(idx) else { return };
        let _ = self.poll.registry().deregister(&mut c.sock);
        WorkerStats::gauge(&self.shared.workers[self.id].connections, -1);
        let proto = c.proto();
        if proto_err {
            WorkerStats::add(&self.shared.workers[self.id].protocol_errors, 1);
            crate::warn!("{proto} {}: closing: {why}", c.peer);
        } else if proto != "http" {
            crate::info!("{proto} {}: closed: {why}", c.peer);
        } else {
            crate::trace!("{proto} {}: closed: {why}", c.peer);
        }
        if let Kind::Ws(w) = c.kind {
            self.ws_closed(now, idx, *w);
        } else if let Kind::Rtmp(r) = c.kind {
            match r.role {
                Role::Publisher { name, .. } => {
                    crate::info!("{proto} {}: publisher of {name:?} gone", c.peer);
                    self.unpublish(now, &name);
                }
                Role::Player(p) => self.leave(idx, &p.name),
                Role::None => {}
            }
        }
    }

    fn close_all(&mut self) {
        let now = now();
        for idx in self.conns.indices() {
            if let Some(c) = self.conns.get_mut(idx) {
                // Best effort: whatever is queued and fits goes out before the close.
                let _ = c.tx.write_to(&mut c.sock);
            }
            self.close(now, idx, "server shutting down", false);
        }
    }
}

/// Unpausing restarts the player at the next keyframe without moving its timeline.
fn p_epoch_bump(p: &PlayerState) -> u32 {
    p.epoch_id().wrapping_add(0x8000_0000)
}

/// Per-stream counters from one publisher message (FLV tag inspection).
fn count_media(stats: &StreamStats, msg: &MediaMsg, payload: &[u8]) {
    match msg.kind {
        MediaKind::Video => {
            if let Some(b0) = payload.first() {
                stats.video_codec.store(u64::from(b0 & 0x0f), Ordering::Relaxed);
            }
            if !msg.config {
                stats.video_frames.fetch_add(1, Ordering::Relaxed);
                if msg.keyframe {
                    stats.keyframes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        MediaKind::Audio => {
            if let Some(b0) = payload.first() {
                stats.audio_codec.store(u64::from(b0 >> 4), Ordering::Relaxed);
            }
            if !msg.config {
                stats.audio_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        MediaKind::Data => {
            if let Ok(vals) = amf0::decode_all(payload) {
                if let Some(obj) = vals.get(1) {
                    for (key, slot) in [("width", &stats.width), ("height", &stats.height)] {
                        if let Some(v) = obj.get(key).and_then(|v| v.as_f64()) {
                            if v > 0.0 && v < 65536.0 {
                                slot.store(v as u64, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
    }
}
