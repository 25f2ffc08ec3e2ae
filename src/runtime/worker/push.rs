//! RTMP pushes (restreams) driven by this worker: each push is a sink of its
//! stream in the relay while its connection to the destination is up, and
//! reconnects with backoff when it is not.
//!
//! One push = one [`PushLocal`] (what survives reconnects: the destination,
//! the backoff, the timeline) and at most one connection ([`PushConn`]: the
//! sans-IO [`RtmpClient`] over TCP or TLS). A connection becomes a relay sink
//! only once the destination accepted the publish; the relay then sends it
//! metadata, sequence headers and the cached GOP from its keyframe, like a
//! joining player, so every (re)connect starts on a keyframe with fresh
//! sequence headers. Its timestamps continue after the previous connection's
//! (plus the time it was down): monotonic from 0 for the life of the push.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::{sink_id, Conn, Kind, Timer, Worker, CONN_BASE, PLAYER_SNDBUF};
use crate::buf::SendQueue;
use crate::proto::rtmp::client::{ClientEvent, PushUrl, RtmpClient};
use crate::relay::{PlayOutcome, Sink, SinkId, WorkerStats};
use crate::runtime::conn_io::Io;
use crate::runtime::push::{AddError, PushEntry, PushState};

/// From the first byte to the destination's NetStream.Publish.Start (resolution
/// included), at most this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A push that stayed up this long starts its backoff from the beginning again.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Host name resolutions running at once (one helper thread each), process-wide.
const MAX_RESOLVING: usize = 16;
/// A stopping push's goodbye (FCUnpublish, deleteStream) may take this long.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// A gap between two connections' timelines is at most this long (ms).
const MAX_GAP_MS: u64 = 60_000;

/// A Flashphoner publisher to tell when its `rtmpUrl` push fails.
#[derive(Debug, Clone)]
pub(super) struct NotifyTarget {
    pub idx: usize,
    pub gen: u32,
    pub media_session_id: String,
    pub media: crate::proto::signaling::StreamMedia,
}

/// What a push keeps across its connections.
pub(super) struct PushLocal {
    entry: Arc<PushEntry>,
    url: PushUrl,
    /// The open connection (slot, generation), if any.
    conn: Option<(usize, u32)>,
    /// Bumped at every attempt: stale timers and resolutions are recognised by it.
    attempt: u32,
    backoff: Duration,
    /// When the current connection went live.
    up_since: Option<Instant>,
    /// The last timestamp sent, and when the last connection ended.
    last_ts: Option<u32>,
    down_at: Option<Instant>,
    /// Ending: the connection closes after its last bytes, then the push is stopped.
    stopping: bool,
    notify: Option<NotifyTarget>,
    notified: bool,
    /// Drops counted by earlier connections' sinks.
    drops_before: u64,
    /// Down, and its stream not live either, since then: past the grace window
    /// the push ends instead of retrying.
    unpublished_since: Option<Instant>,
}

/// A connection to a push destination.
pub(super) struct PushConn {
    pub id: Arc<str>,
    pub client: RtmpClient,
    /// The TCP connect completed.
    pub connected: bool,
    /// Added to the relay's sink timestamps (continuity across reconnects).
    pub ts_base: u32,
    /// A relay sink (the destination accepted the publish).
    pub joined: bool,
    pub addr: SocketAddr,
    /// The last timestamp queued on this connection, if it queued any.
    pub last_ts: u32,
    pub sent: bool,
    pub entry: Arc<PushEntry>,
}

/// What a resolution was for.
pub(super) enum ResolveFor {
    Push { id: Arc<str>, attempt: u32 },
    Pull { name: Arc<str>, url: String },
}

/// A host name resolved on a helper thread.
pub(super) struct Resolved {
    pub what: ResolveFor,
    pub result: Result<SocketAddr, String>,
}

/// Why a push could not be created, as the API answers it.
pub(super) struct PushRefused {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl PushRefused {
    fn new(status: u16, reason: &'static str, message: String) -> Self {
        PushRefused { status, reason, message }
    }
}

impl Worker {
    /// Start pushing `stream` to `url`. `rule`: from `--push`; `notify`: a
    /// Flashphoner publisher that asked with `rtmpUrl`.
    pub(super) fn push_create(
        &mut self,
        now: Instant,
        stream: &str,
        url: &str,
        rule: bool,
        notify: Option<NotifyTarget>,
    ) -> Result<Arc<PushEntry>, PushRefused> {
        let parsed = PushUrl::parse(url).map_err(|e| PushRefused::new(400, "Bad Request", format!("bad push url: {e}")))?;
        let id: Arc<str> = format!("P-{}", crate::runtime::csprng::hex128()).into();
        let stream: Arc<str> = stream.into();
        let entry = Arc::new(PushEntry::new(Arc::clone(&id), Arc::clone(&stream), url.to_owned(), parsed.display.clone(), self.id, rule));
        match self.shared.pushes.add(Arc::clone(&entry)) {
            Ok(()) => {}
            Err(AddError::Duplicate) => {
                return Err(PushRefused::new(409, "Conflict", format!("already pushing {stream} to {}", parsed.display)));
            }
            Err(AddError::Full) => {
                return Err(PushRefused::new(
                    503,
                    "Service Unavailable",
                    format!("too many pushes (at most {} active)", crate::runtime::push::MAX_ACTIVE),
                ));
            }
        }
        crate::info!("{}: started (worker {})", push_label(&entry), self.id);
        self.pushes.insert(
            Arc::clone(&id),
            PushLocal {
                entry: Arc::clone(&entry),
                url: parsed,
                conn: None,
                attempt: 0,
                backoff: BACKOFF_FIRST,
                up_since: None,
                last_ts: None,
                down_at: None,
                stopping: false,
                notify,
                notified: false,
                drops_before: 0,
                unpublished_since: None,
            },
        );
        self.push_attempt(now, &id);
        Ok(entry)
    }

    /// A stream went live on this worker: start the `--push` rules for it.
    pub(super) fn push_rules(&mut self, now: Instant, name: &str) {
        let rules: Vec<String> = self.shared.cfg.push.iter().filter(|r| r.name == name).map(|r| r.url.clone()).collect();
        for url in rules {
            // A publisher back within its grace window still has its push.
            if self.shared.pushes.active(name, &url).is_some() {
                continue;
            }
            if let Err(e) = self.push_create(now, name, &url, true, None) {
                crate::warn!("push rule {name}: {}", e.message);
            }
        }
    }

    /// Flashphoner `publishStream` with `rtmpUrl`: push to rtmpUrl/PREFIX+NAME; a
    /// URL that cannot work fails the stream's re-publishing at once.
    pub(super) fn push_republish(&mut self, now: Instant, name: &str, rtmp_url: &str, target: NotifyTarget) {
        let url = PushUrl::join(rtmp_url, &format!("{}{name}", self.shared.cfg.push_name_prefix));
        if self.shared.pushes.active(name, &url).is_some() {
            // Back within the grace window: its push is still running.
            return;
        }
        if let Err(e) = self.push_create(now, name, &url, false, Some(target.clone())) {
            let shown = PushUrl::parse(rtmp_url).map_or_else(|_| "(unparsable)".to_owned(), |u| u.display);
            crate::warn!("push of {} to rtmpUrl {shown}: {}", crate::log::peer_str(name), e.message);
            if self.conns.get_gen_mut(target.idx, target.gen).is_some() {
                let msg = crate::proto::signaling::stream_status(
                    &target.media_session_id,
                    name,
                    crate::proto::signaling::STATUS_FAILED,
                    Some(INFO_RTMP_WRITER_ERROR),
                    target.media,
                );
                self.ws_send(target.idx, &msg);
            }
        }
    }

    /// One attempt: resolve (on a helper thread unless the host is an address),
    /// connect, handshake, connect, publish; all within `ATTEMPT_TIMEOUT`.
    fn push_attempt(&mut self, now: Instant, id: &Arc<str>) {
        let Some(p) = self.pushes.get_mut(id) else { return };
        if p.stopping || p.conn.is_some() {
            return;
        }
        p.attempt = p.attempt.wrapping_add(1);
        let attempt = p.attempt;
        self.timers.insert(now + ATTEMPT_TIMEOUT, Timer::Push(PushTimer::Deadline { id: Arc::clone(id), attempt }));
        let (host, port) = (p.url.host.clone(), p.url.port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.push_connect(now, id, SocketAddr::new(ip, port));
            return;
        }
        if let Err(why) = self.resolve_async(host, port, ResolveFor::Push { id: Arc::clone(id), attempt }) {
            self.push_failed(now, id, why);
        }
    }

    /// Resolve `host` on a helper thread (at most `MAX_RESOLVING` at once in the
    /// process); the answer comes back through `push_resolved_rx` and the waker.
    pub(super) fn resolve_async(&mut self, host: String, port: u16, what: ResolveFor) -> Result<(), String> {
        if self.shared.push_resolving.fetch_add(1, Ordering::SeqCst) >= MAX_RESOLVING {
            self.shared.push_resolving.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("resolve {host}: too many resolutions pending (over {MAX_RESOLVING})"));
        }
        let tx = self.push_resolved_tx.clone();
        let waker = Arc::clone(&self.waker);
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new().name("resolve".into()).spawn(move || {
            let result = match (host.as_str(), port).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    // IPv4 first: a host without IPv6 routes still answers AAAA.
                    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or_else(|| format!("resolve {host}: no address"))
                }
                Err(e) => Err(format!("resolve {host}: {e}")),
            };
            shared.push_resolving.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(Resolved { what, result });
            let _ = waker.wake();
        });
        if let Err(e) = spawned {
            self.shared.push_resolving.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("resolve: cannot start a thread: {e}"));
        }
        Ok(())
    }

    /// Results from the resolver threads.
    pub(super) fn push_drain_resolved(&mut self, now: Instant) {
        while let Ok(r) = self.push_resolved_rx.try_recv() {
            let (id, attempt) = match r.what {
                ResolveFor::Push { id, attempt } => (id, attempt),
                ResolveFor::Pull { name, url } => {
                    self.pull_resolved(now, name, url, r.result);
                    continue;
                }
            };
            let current = self.pushes.get(&id).is_some_and(|p| p.attempt == attempt && p.conn.is_none() && !p.stopping);
            if !current {
                continue; // timed out, stopped, or superseded
            }
            match r.result {
                Ok(addr) => self.push_connect(now, &id, addr),
                Err(why) => self.push_failed(now, &id, why),
            }
        }
    }

    fn push_connect(&mut self, now: Instant, id: &Arc<str>, addr: SocketAddr) {
        let Some(p) = self.pushes.get(id) else { return };
        let secure = p.url.secure;
        let host = p.url.host.clone();
        let sock = match self.open_outbound(addr, secure.then_some(host.as_str())) {
            Ok(s) => s,
            Err(why) => {
                self.push_failed(now, id, why);
                return;
            }
        };
        let Some(p) = self.pushes.get(id) else { return };
        let mut tx = SendQueue::new();
        let epoch_ms = now.saturating_duration_since(self.started).as_millis() as u32;
        let client = RtmpClient::new(&p.url, crate::runtime::csprng::u64(), epoch_ms, self.shared.cfg.chunk_size, &mut tx);
        let conn = Conn {
            sock,
            peer: addr,
            listener: None,
            rx: Vec::new(),
            tx,
            kind: Kind::Push(Box::new(PushConn {
                id: Arc::clone(id),
                client,
                connected: false,
                ts_base: 0,
                joined: false,
                addr,
                last_ts: 0,
                sent: false,
                entry: Arc::clone(&p.entry),
            })),
            dirty: false,
            held: None,
            close_after_flush: false,
        };
        let (idx, gen) = match self.insert_outbound(conn) {
            Ok(x) => x,
            Err(e) => {
                self.push_failed(now, id, format!("connect {addr}: register: {e}"));
                return;
            }
        };
        if let Some(p) = self.pushes.get_mut(id) {
            p.conn = Some((idx, gen));
        }
        crate::debug!("push {id}: connecting to {addr}");
    }

    /// A non-blocking TCP connect to `addr`, wrapped in TLS for `tls_host`.
    pub(super) fn open_outbound(&self, addr: SocketAddr, tls_host: Option<&str>) -> Result<Io, String> {
        let tcp = mio::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(PLAYER_SNDBUF);
        let Some(host) = tls_host else { return Ok(Io::Plain(tcp)) };
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| format!("TLS: bad server name {host}: {e}"))?;
        crate::runtime::tls::TlsStream::client(tcp, Arc::clone(&self.shared.push_tls), name)
            .map(|t| Io::Tls(Box::new(t)))
            .map_err(|e| format!("TLS setup: {e}"))
    }

    /// Add an outbound connection to the slab and the poll.
    pub(super) fn insert_outbound(&mut self, conn: Conn) -> std::io::Result<(usize, u32)> {
        let (idx, gen) = self.conns.insert(conn);
        let Some(c) = self.conns.get_mut(idx) else { return Err(std::io::Error::other("slot vanished")) };
        if let Err(e) = self.poll.registry().register(&mut c.sock, Token(idx + CONN_BASE), Interest::READABLE | Interest::WRITABLE) {
            self.conns.remove(idx);
            return Err(e);
        }
        WorkerStats::gauge(&self.stats().connections, 1);
        Ok((idx, gen))
    }

    /// A readiness event on an outbound connection (push or pull) whose TCP connect
    /// may still be in progress. Returns false while it is (nothing else to do).
    pub(super) fn push_poll_connect(&mut self, idx: usize) -> bool {
        let Some(c) = self.conns.get_mut(idx) else { return false };
        let (connected, addr) = match &mut c.kind {
            Kind::Push(p) => (&mut p.connected, p.addr),
            Kind::Pull(p) => (&mut p.connected, p.addr),
            _ => return true,
        };
        if *connected {
            return true;
        }
        let tcp = match &c.sock {
            Io::Plain(s) => s,
            Io::Tls(t) => t.tcp(),
        };
        if let Ok(Some(e)) | Err(e) = tcp.take_error() {
            self.doom(idx, format!("connect {addr}: {e}"), false);
            return false;
        }
        match tcp.peer_addr() {
            Ok(_) => {
                *connected = true;
                crate::debug!("outbound {addr}: connected");
                self.mark_dirty(idx);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => false,
            Err(e) => {
                self.doom(idx, format!("connect {addr}: {e}"), false);
                false
            }
        }
    }

    /// Feed a push connection's input to its client.
    pub(super) fn process_push(&mut self, now: Instant, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Push(p) = &mut c.kind else { return };
        let res = p.client.handle_input(&c.rx, &mut c.tx);
        let ignored = std::mem::take(&mut p.client.ignored);
        if ignored > 0 {
            WorkerStats::add(&self.shared.workers[self.id].ignored_messages, ignored);
        }
        match res {
            Ok(n) => {
                c.rx.drain(..n.min(c.rx.len()));
            }
            Err(e) => {
                self.doom(idx, e.to_string(), false);
                return;
            }
        }
        if !c.tx.is_empty() {
            self.mark_dirty(idx);
        }
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Push(p) = &mut c.kind else { return };
        if let Some(ClientEvent::Live { opus }) = p.client.poll_event() {
            let id = Arc::clone(&p.id);
            self.push_live(now, idx, &id, opus);
        }
    }

    /// The destination accepted the publish: join the stream as a sink.
    fn push_live(&mut self, now: Instant, idx: usize, id: &Arc<str>, opus: bool) {
        let Some(gen) = self.conns.gen(idx) else { return };
        let Some(p) = self.pushes.get_mut(id) else { return };
        let base = match (p.last_ts, p.down_at) {
            (Some(last), Some(down)) => {
                let gap = (now.saturating_duration_since(down).as_millis() as u64).clamp(1, MAX_GAP_MS);
                last.wrapping_add(gap as u32)
            }
            (Some(last), None) => last.wrapping_add(1),
            (None, _) => 0,
        };
        p.up_since = Some(now);
        p.unpublished_since = None;
        let entry = Arc::clone(&p.entry);
        let name: Arc<str> = Arc::clone(&entry.stream);
        let wants_opus = opus && self.shared.cfg.audio == crate::config::AudioMode::Opus;
        if let Some(Kind::Push(pc)) = self.conns.get_mut(idx).map(|c| &mut c.kind) {
            pc.ts_base = base;
            pc.joined = true;
        }
        let back = entry.state() == PushState::Retrying;
        entry.set_state(PushState::Pushing);
        crate::info!("{}: pushing{}", push_label(&entry), if back { " again" } else { "" });
        let sink = sink_id(idx, gen);
        let outcome = self.relay.handle_play(now, sink, Sink::Push { wants_opus }, &name, &super::ConnBacklog(&self.conns, &self.rtc.viewers));
        match outcome {
            PlayOutcome::NotFound => {
                // --unknown-stream not-found and the publisher is away (a blip): try again;
                // past the grace window the retry ends the push.
                self.doom(idx, format!("stream {name} is not live now"), false);
                return;
            }
            PlayOutcome::Waiting => {
                // Nobody publishes it now: a publisher back within the grace window
                // carries on, else the push ends.
                let attempt = self.pushes.get(id).map_or(0, |p| p.attempt);
                self.timers.insert(now + self.shared.cfg.grace() + Duration::from_secs(1), Timer::Push(PushTimer::Check { id: Arc::clone(id), attempt }));
            }
            PlayOutcome::Live | PlayOutcome::Subscribing { .. } => {}
        }
        self.apply_relay(now);
    }

    /// Queue one frame to a push connection (called by `send_frame`).
    pub(super) fn push_queue_frame(c: &mut Conn, ts: u32, frame: &crate::relay::Frame, table: &crate::runtime::push::PushTable) -> bool {
        let Kind::Push(p) = &mut c.kind else { return false };
        let ts = ts.wrapping_add(p.ts_base);
        p.last_ts = ts;
        p.sent = true;
        if frame.kind == crate::proto::flv::MediaKind::Data {
            // Metadata at timestamp 0, as encoders send it: ffmpeg's FLV demuxer takes an
            // onMetaData tag at any other timestamp for a packet of a new "text" stream
            // (after a reconnect our media timestamps continue, the metadata's must not).
            p.client.queue_metadata(0, frame.body(), &mut c.tx);
        } else {
            let body = frame.rtmp(p.client.out_chunk_size());
            p.client.queue_media(ts, frame.kind, &body, &mut c.tx);
        }
        table.frames_total.fetch_add(1, Ordering::Relaxed);
        p.entry.frames.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// After a write to a push connection: bytes, drops, last timestamp.
    pub(super) fn push_written(&mut self, now: Instant, idx: usize, gen: u32, bytes: usize) {
        let Some(Kind::Push(pc)) = self.conns.get_gen(idx, gen).map(|c| &c.kind) else { return };
        let sink = sink_id(idx, gen);
        let drops = self.relay.sink_drops(sink);
        let Some(p) = self.pushes.get(&pc.id) else { return };
        if p.entry.stop_requested.load(Ordering::Relaxed) && !p.stopping {
            let id = Arc::clone(&pc.id);
            self.push_stop(now, &id, "deleted by the API".into());
            return;
        }
        p.entry.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.shared.pushes.bytes_total.fetch_add(bytes as u64, Ordering::Relaxed);
        let total = p.drops_before + drops;
        let before = p.entry.drops.swap(total, Ordering::Relaxed);
        if total > before {
            self.shared.pushes.drops_total.fetch_add(total - before, Ordering::Relaxed);
        }
    }

    /// A push connection is closed (`why`): retry, or finish stopping.
    pub(super) fn push_conn_closed(&mut self, now: Instant, idx: usize, gen: Option<u32>, pc: PushConn, why: &str) {
        if pc.joined {
            if let Some(gen) = gen {
                let sink = sink_id(idx, gen);
                self.push_leave(now, sink, &pc.id);
            }
        }
        let Some(p) = self.pushes.get_mut(&pc.id) else { return };
        p.conn = None;
        p.down_at = Some(now);
        if pc.sent {
            // The timeline resumes after what this connection sent.
            p.last_ts = Some(pc.last_ts);
        }
        if p.stopping {
            let id = Arc::clone(&pc.id);
            self.push_finish(&id, why);
            return;
        }
        let why = if why == "peer closed" {
            if pc.joined {
                "destination closed the connection".to_owned()
            } else {
                format!("destination closed the connection during {}", pc.client.phase().describe())
            }
        } else {
            why.to_owned()
        };
        self.push_failed(now, &pc.id, why);
    }

    /// Leave the relay as sink `sink` (its drops are kept for the API).
    fn push_leave(&mut self, now: Instant, sink: SinkId, id: &Arc<str>) {
        let drops = self.relay.sink_drops(sink);
        if let Some(p) = self.pushes.get_mut(id) {
            p.drops_before += drops;
        }
        self.relay.handle_leave(now, sink, false);
        self.apply_relay(now);
    }

    /// An attempt failed (or a live push went down): record, notify, retry later.
    fn push_failed(&mut self, now: Instant, id: &Arc<str>, why: String) {
        let Some(p) = self.pushes.get_mut(id) else { return };
        if p.up_since.is_some_and(|t| now.saturating_duration_since(t) >= BACKOFF_RESET_AFTER) {
            p.backoff = BACKOFF_FIRST;
        }
        p.up_since = None;
        // This attempt is over: its deadline (and a late resolution) must not count again.
        p.attempt = p.attempt.wrapping_add(1);
        let delay = p.backoff;
        p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
        p.entry.set_error(&why);
        p.entry.set_state(PushState::Retrying);
        p.entry.reconnects.fetch_add(1, Ordering::Relaxed);
        self.shared.pushes.reconnects_total.fetch_add(1, Ordering::Relaxed);
        crate::warn!("{}: failed: {why} (retry in {} s)", push_label(&p.entry), delay.as_secs());
        let attempt = p.attempt;
        let notify = if p.notified { None } else { p.notify.clone() };
        p.notified = true;
        let name = Arc::clone(&p.entry.stream);
        self.timers.insert(now + delay, Timer::Push(PushTimer::Retry { id: Arc::clone(id), attempt }));
        if let Some(t) = notify {
            // Flashphoner: the stream's FAILED status, as Web Call Server reports a
            // failed RTMP re-publishing. The WebRTC publish itself goes on.
            if self.conns.get_gen_mut(t.idx, t.gen).is_some() {
                let msg = crate::proto::signaling::stream_status(
                    &t.media_session_id,
                    &name,
                    crate::proto::signaling::STATUS_FAILED,
                    Some(INFO_RTMP_WRITER_ERROR),
                    t.media,
                );
                self.ws_send(t.idx, &msg);
            }
        }
    }

    /// End a push: its connection closes after a clean FCUnpublish/deleteStream.
    pub(super) fn push_stop(&mut self, now: Instant, id: &Arc<str>, why: String) {
        let Some(p) = self.pushes.get_mut(id) else { return };
        if p.stopping {
            return;
        }
        p.stopping = true;
        // Stopped for the API and for duplicate checks at once; the connection only says
        // goodbye (FCUnpublish, deleteStream), for at most STOP_GRACE.
        p.entry.set_state(PushState::Stopped);
        crate::info!("{}: stopping: {why}", push_label(&p.entry));
        self.timers.insert(now + STOP_GRACE, Timer::Push(PushTimer::StopDeadline { id: Arc::clone(id) }));
        let Some((idx, gen)) = p.conn else {
            self.push_finish(id, &why);
            return;
        };
        let Some(c) = self.conns.get_gen_mut(idx, gen) else {
            self.push_finish(id, &why);
            return;
        };
        let Kind::Push(pc) = &mut c.kind else { return };
        let joined = std::mem::take(&mut pc.joined);
        if joined {
            pc.client.finish(&mut c.tx);
            c.close_after_flush = true;
            self.push_leave(now, sink_id(idx, gen), id);
            self.mark_dirty(idx);
        } else {
            self.doom(idx, why, false);
        }
    }

    /// The push is over: stopped in the table, gone from this worker.
    fn push_finish(&mut self, id: &Arc<str>, why: &str) {
        if let Some(p) = self.pushes.remove(id) {
            p.entry.set_state(PushState::Stopped);
            crate::info!("{}: stopped ({why})", push_label(&p.entry));
        }
    }

    pub(super) fn push_timer(&mut self, now: Instant, t: PushTimer) {
        match t {
            PushTimer::Retry { id, attempt } => {
                let grace = self.shared.cfg.grace();
                let Some(p) = self.pushes.get_mut(&id) else { return };
                if p.attempt != attempt || p.conn.is_some() || p.stopping {
                    return;
                }
                if p.entry.stop_requested.load(Ordering::Relaxed) {
                    self.push_stop(now, &id, "deleted by the API".into());
                    return;
                }
                // A push that is down while its stream ended for good ends too (a
                // live push hears it from the relay; this one is no sink now).
                if self.shared.registry.is_live(&p.entry.stream) {
                    p.unpublished_since = None;
                } else if now.saturating_duration_since(*p.unpublished_since.get_or_insert(now)) >= grace {
                    let why = format!("stream {} ended", p.entry.stream);
                    self.push_stop(now, &id, why);
                    return;
                }
                self.push_attempt(now, &id);
            }
            PushTimer::Deadline { id, attempt } => {
                let Some(p) = self.pushes.get_mut(&id) else { return };
                if p.attempt != attempt || p.stopping || p.entry.state() == PushState::Pushing {
                    return;
                }
                match p.conn {
                    Some((idx, gen)) => {
                        let live = matches!(self.conns.get_gen_mut(idx, gen).map(|c| &c.kind), Some(Kind::Push(pc)) if pc.joined);
                        if !live {
                            let phase = match self.conns.get_gen_mut(idx, gen).map(|c| &c.kind) {
                                Some(Kind::Push(pc)) if !pc.connected => "connect",
                                Some(Kind::Push(pc)) => pc.client.phase().describe(),
                                _ => "connect",
                            };
                            self.doom(idx, format!("destination did not finish {phase} within {} s", ATTEMPT_TIMEOUT.as_secs()), false);
                        }
                    }
                    None => {
                        // Still resolving: give up on this attempt (a late answer is stale).
                        p.attempt = p.attempt.wrapping_add(1);
                        let host = p.url.host.clone();
                        self.push_failed(now, &id, format!("resolve {host}: no answer within {} s", ATTEMPT_TIMEOUT.as_secs()));
                    }
                }
            }
            PushTimer::StopDeadline { id } => {
                let Some(p) = self.pushes.get(&id) else { return };
                if let (true, Some((idx, gen))) = (p.stopping, p.conn) {
                    if self.conns.gen(idx) == Some(gen) {
                        self.doom(idx, format!("stopped; the destination did not take its last bytes within {} s", STOP_GRACE.as_secs()), false);
                    }
                }
            }
            PushTimer::Check { id, attempt } => {
                let Some(p) = self.pushes.get(&id) else { return };
                if p.attempt == attempt && !self.shared.registry.is_live(&p.entry.stream) {
                    let why = format!("stream {} ended", p.entry.stream);
                    self.push_stop(now, &id, why);
                }
            }
        }
    }

    /// The relay told a push sink its stream is gone for good.
    pub(super) fn push_stream_ended(&mut self, now: Instant, idx: usize, gen: u32) {
        let Some(Kind::Push(pc)) = self.conns.get_gen_mut(idx, gen).map(|c| &c.kind) else { return };
        let id = Arc::clone(&pc.id);
        let name = self.pushes.get(&id).map(|p| Arc::clone(&p.entry.stream));
        if let Some(name) = name {
            self.push_stop(now, &id, format!("stream {name} ended"));
        }
    }

    /// DELETE /api/push/ID: stop it here, or ask the worker that drives it.
    pub(super) fn push_delete(&mut self, now: Instant, id: &str) -> Option<Arc<PushEntry>> {
        let entry = self.shared.pushes.get(id)?;
        if entry.state() == PushState::Stopped {
            return Some(entry);
        }
        if entry.core == self.id {
            let id = Arc::clone(&entry.id);
            self.push_stop(now, &id, "deleted by the API".into());
        } else {
            entry.stop_requested.store(true, Ordering::SeqCst);
            let msg = crate::relay::CoreMsg::StopPush { id: Arc::clone(&entry.id) };
            if !self.mesh.send(entry.core, msg) {
                WorkerStats::add(&self.shared.workers[self.id].mesh_full, 1);
            }
        }
        Some(entry)
    }

    /// Every push of this worker ends (shutdown).
    pub(super) fn push_close_all(&mut self) {
        let ids: Vec<Arc<str>> = self.pushes.keys().cloned().collect();
        for id in ids {
            self.push_finish(&id, "server shutting down");
        }
    }
}

/// POST /api/push or DELETE /api/push/ID, copied out of the request.
pub(super) struct PushCall {
    /// Err: why the caller may not (401 or 403).
    authorized: Result<(), &'static str>,
    token_set: bool,
    /// POST (create) or DELETE (of `id`).
    delete: Option<String>,
    body: Vec<u8>,
}

impl PushCall {
    /// The calls that change pushes (the worker runs them); GETs go to the API.
    pub(super) fn from_request(req: &crate::proto::http::Request<'_>, rx: &[u8], shared: &crate::runtime::Shared, peer: IpAddr) -> Option<PushCall> {
        let delete = match (req.method, req.path) {
            ("POST", "/api/push") => None,
            ("DELETE", p) if p.starts_with("/api/push/") => Some(p.trim_start_matches("/api/push/").to_owned()),
            _ => return None,
        };
        let body = rx.get(req.head_len..req.head_len + req.content_length).unwrap_or(&[]).to_vec();
        let authorized = shared.access.push_api_ok(req.header("authorization"), peer);
        Some(PushCall { authorized, token_set: shared.cfg.api_token.is_some(), delete, body })
    }
}

impl Worker {
    /// Answer a [`PushCall`] on HTTP connection `idx`.
    pub(super) fn push_api(&mut self, now: Instant, idx: usize, call: PushCall) {
        use crate::runtime::api::json_error;
        let resp = if let Err(why) = call.authorized {
            if call.token_set {
                crate::runtime::api::unauthorized(&format!("{why}\n"))
            } else {
                json_error(403, "Forbidden", why)
            }
        } else if let Some(id) = call.delete {
            match self.push_delete(now, &id) {
                Some(e) => {
                    let body = serde_json::json!({ "id": &*e.id, "state": "stopped" }).to_string();
                    crate::proto::http::response(200, "OK", "application/json", body.as_bytes())
                }
                None => json_error(404, "Not Found", "no such push"),
            }
        } else {
            match self.push_api_create(now, &call.body) {
                Ok(e) => {
                    let body = serde_json::json!({ "id": &*e.id, "stream": &*e.stream, "url": e.shown_url, "state": e.state().name() });
                    crate::proto::http::response(201, "Created", "application/json", body.to_string().as_bytes())
                }
                Err(r) => json_error(r.status, r.reason, &r.message),
            }
        };
        let Some(c) = self.conns.get_mut(idx) else { return };
        c.rx.clear();
        c.tx.push_vec(resp);
        c.close_after_flush = true;
        self.mark_dirty(idx);
    }

    fn push_api_create(&mut self, now: Instant, body: &[u8]) -> Result<Arc<PushEntry>, PushRefused> {
        let bad = |m: String| PushRefused::new(400, "Bad Request", m);
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON: {e}")))?;
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
        let stream = field("stream").ok_or_else(|| bad("missing field \"stream\" (the stream to push)".into()))?;
        let url = field("url").ok_or_else(|| bad("missing field \"url\" (rtmp://host/app/key)".into()))?;
        PushUrl::parse(url).map_err(|e| bad(format!("bad push url: {e}")))?;
        if !self.shared.registry.is_live(stream) {
            return Err(PushRefused::new(404, "Not Found", format!("stream {stream} is not live")));
        }
        self.push_create(now, stream, url, false, None)
    }
}

/// Timers of pushes (inside the worker's `Timer`).
#[derive(Debug)]
pub(super) enum PushTimer {
    Retry { id: Arc<str>, attempt: u32 },
    Deadline { id: Arc<str>, attempt: u32 },
    /// The push joined a stream that was not live: end it if it still is not.
    Check { id: Arc<str>, attempt: u32 },
    /// A stopping push's connection is closed now if its last bytes are still unsent.
    StopDeadline { id: Arc<str> },
}

/// Flashphoner's info for a failed RTMP re-publishing.
pub const INFO_RTMP_WRITER_ERROR: &str = "Failed by RTMP writer error";

/// `push P-… NAME -> URL` for log lines.
fn push_label(e: &PushEntry) -> String {
    format!("push {} {} -> {}", e.id, crate::log::peer_str(&e.stream), e.shown_url)
}
