//! The WebRTC half of a worker: WebSocket signaling (Flashphoner-compatible),
//! WHIP, the worker's UDP socket, and the publisher sessions it owns. A
//! session lives on the worker whose signaling connection created it; its SDP
//! answer names this worker's UDP port, so all its datagrams arrive here.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use super::super::limits::Refusal;
use super::super::hook::{HookAction, HookQuery};
use super::{Kind, Timer, Waiting, Worker};
use crate::config::Config;
use crate::proto::http::{self, Request};
use crate::proto::signaling::{self as sig, ClientMsg, StreamMedia};
use crate::proto::{stun, ws};
use crate::relay::auth::{AuthAction, Denied};
use crate::relay::webrtc::{RtcDrop, RtcError, RtcEvent, RtcSecrets, RtcSession};
use super::super::csprng;
use super::super::mesh::CoreMsg;
use crate::relay::{Reservation, StreamStats, WorkerStats};

/// Flashphoner clients count a missing message per probe interval; a JSON
/// ping keeps them (and NAT bindings) alive.
const WS_PING_EVERY: Duration = Duration::from_secs(5);
/// Datagrams read per loop turn before other sockets get their turn.
const UDP_BUDGET: usize = 512;
/// A signaling WebSocket that sends nothing for this long (three pings unanswered) is closed.
const WS_SILENCE: Duration = Duration::from_secs(15);
pub(super) const MAX_SESSIONS_PER_WS: usize = 8;
/// The Flashphoner SDK's info string for an access-control refusal.
const INFO_RESTRICTED: &str = "Restricted access";

pub fn bind_udp(cfg: &Config, id: usize) -> io::Result<UdpSocket> {
    let port = cfg.udp_port + id as u16;
    let addr = SocketAddr::new(cfg.rtmp.ip(), port);
    let sock = std::net::UdpSocket::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("--udp-port: cannot bind {addr}: {e}")))?;
    sock.set_nonblocking(true)?;
    let s = socket2::Socket::from(sock);
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(1 << 20);
    Ok(UdpSocket::from_std(s.into()))
}

/// A plain-text HTTP response (WHIP errors), `cors` and `extra` being header lines.
pub(super) fn plain(cors: &str, status: u16, reason: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{cors}{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `/whip/NAME?QUERY` → `NAME?QUERY`.
fn whip_name(req: &OwnedRequest) -> &str {
    req.path.strip_prefix("/whip").unwrap_or("").trim_start_matches('/').trim_end_matches('/')
}

/// `/whip/NAME?QUERY` → `NAME`.
fn whip_key(req: &OwnedRequest) -> &str {
    let name = whip_name(req);
    name.split('?').next().unwrap_or(name)
}

pub fn is_websocket(req: &Request<'_>) -> bool {
    req.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// A request copied out of the receive buffer so the connection can be borrowed again.
#[derive(Clone)]
pub struct OwnedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub consumed: usize,
}

impl OwnedRequest {
    pub fn from(req: &Request<'_>, rx: &[u8]) -> Self {
        let end = req.head_len + req.content_length;
        OwnedRequest {
            method: req.method.to_owned(),
            path: req.path.to_owned(),
            headers: req.headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            body: rx.get(req.head_len..end).unwrap_or(&[]).to_vec(),
            consumed: end,
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
}

/// Why a publish request got no session.
/// Why an offer (WHIP, WHEP, `publishStream`, `playStream`) got no session.
#[derive(Debug)]
pub(super) enum Refused {
    BadName,
    /// Publish: another publisher has the name.
    NameInUse,
    /// Play: the name is not live (and the viewer may not wait for it).
    NotFound,
    /// Too many sessions waiting to connect (`per_ip`: from this address).
    Busy { per_ip: bool },
    /// Play: `--max-viewers` (`per_ip`: `--max-viewers-per-ip`).
    TooManyViewers { per_ip: bool },
    Session(RtcError),
}

impl Refused {
    /// Status `info` for Flashphoner, body text for WHIP and WHEP.
    pub(super) fn info(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Refused::BadName => "Bad stream name".into(),
            Refused::NameInUse => sig::INFO_STREAM_NAME_IN_USE.into(),
            Refused::NotFound => sig::INFO_STREAM_NOT_FOUND.into(),
            Refused::Busy { per_ip: false } => "Too many sessions waiting to connect (--max-pending-webrtc)".into(),
            Refused::Busy { per_ip: true } => "Too many sessions waiting to connect from this address (--max-pending-webrtc-per-ip)".into(),
            Refused::TooManyViewers { per_ip: false } => "Too many viewers (--max-viewers)".into(),
            Refused::TooManyViewers { per_ip: true } => "Too many viewers from this address (--max-viewers-per-ip)".into(),
            Refused::Session(e) => e.info(),
        }
    }

    pub(super) fn http_status(&self) -> (u16, &'static str) {
        match self {
            Refused::BadName => (400, "Bad Request"),
            Refused::NameInUse => (409, "Conflict"),
            Refused::NotFound => (404, "Not Found"),
            Refused::Busy { .. } | Refused::TooManyViewers { .. } => (503, "Service Unavailable"),
            Refused::Session(e) => e.http_status(),
        }
    }
}

/// The two WebRTC-HTTP ingestion and egress protocols: they differ only in direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wish {
    /// RFC 9725: a publisher.
    Whip,
    /// draft-ietf-wish-whep: a viewer.
    Whep,
}

impl Wish {
    fn prefix(self) -> &'static str {
        match self {
            Wish::Whip => "/whip",
            Wish::Whep => "/whep",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Wish::Whip => "whip",
            Wish::Whep => "whep",
        }
    }
    fn action(self) -> AuthAction {
        match self {
            Wish::Whip => AuthAction::Publish,
            Wish::Whep => AuthAction::Play,
        }
    }
}

/// Who asked for a session, and how to tell them about it.
#[derive(Debug, Clone)]
enum Owner {
    /// `rtmp_url`: Flashphoner re-publishing asked with the publish.
    Ws { idx: usize, gen: u32, media_session_id: String, media: StreamMedia, rtmp_url: Option<String> },
    Whip { resource: String },
}

struct Entry {
    session: RtcSession,
    owner: Owner,
    name: Arc<str>,
    publishing: bool,
    remote: Option<SocketAddr>,
    /// The stream's counters: the transcode cost is timed here, in the shell.
    stats: Arc<StreamStats>,
    /// The name, claimed and not yet announced: players and /api/streams see the stream
    /// only when its media flows (a half-open session is not a live stream).
    reservation: Option<Reservation>,
    /// Counted in the pending-session budget (from this address) until ICE and DTLS
    /// are up or the session ends.
    pending_ip: Option<IpAddr>,
    /// The session's timer in the wheel (see [`super::Armed`]).
    armed: super::Armed,
}

pub struct WsConn {
    decoder: ws::WsDecoder,
    /// The last time the peer sent anything (a `pong` to our ping counts).
    last_heard: Instant,
    /// mediaSessionId → session slot.
    pub(super) sessions: Vec<(String, usize)>,
    /// mediaSessionId → viewer slot (`playStream`).
    pub(super) viewers: Vec<(String, usize)>,
    /// The token the `connection` message carried (`authToken` or `custom.token`), used
    /// for publishes that bring none of their own.
    pub(super) token: Option<String>,
    /// The `connection` message's `custom` and `appKey`, for the auth hook.
    pub(super) custom: Option<serde_json::Value>,
    pub(super) app_key: Option<String>,
}

/// The `appKey` a Flashphoner connection gave, if any.
fn conn_app(kind: Option<&Kind>) -> String {
    match kind {
        Some(Kind::Ws(w)) => w.app_key.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

pub struct RtcState {
    pub(super) udp: UdpSocket,
    sessions: super::Slab<Entry>,
    by_ufrag: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    by_resource: HashMap<String, usize>,
    /// WebRTC viewers (play.rs), routed like sessions.
    pub(super) viewers: super::Slab<super::play::Viewer>,
    pub(super) v_by_ufrag: HashMap<String, usize>,
    pub(super) v_by_addr: HashMap<SocketAddr, usize>,
    pub(super) v_by_resource: HashMap<String, usize>,
    /// Viewers' datagrams go out in UDP GSO batches.
    pub(super) gso: Batcher,
    buf: Vec<u8>,
    /// The last read stopped at its budget with datagrams left: read again next turn.
    pub(super) udp_more: bool,
}

/// Sends runs of same-sized datagrams to one address with one `sendmsg` each (UDP
/// GSO: a viewer's packets of one frame are mostly full-sized), falling back to one
/// `send_to` per datagram for good when the kernel says it cannot.
#[derive(Default)]
pub struct Batcher {
    buf: Vec<u8>,
    off: bool,
    /// `sendmsg` calls and datagrams they carried (for the log at the first fallback).
    pub calls: u64,
}

/// At most this many datagrams per GSO send (the kernel's limit is 64) and bytes.
const GSO_MAX_SEGMENTS: usize = 32;
const GSO_MAX_BYTES: usize = 60_000;

impl Batcher {
    /// Send everything `next` yields; returns the bytes sent.
    pub fn send_all(&mut self, udp: &UdpSocket, mut next: impl FnMut() -> Option<(SocketAddr, Vec<u8>)>) -> u64 {
        let mut sent = 0u64;
        let mut run: Option<(SocketAddr, usize, usize)> = None; // (to, segment size, count)
        self.buf.clear();
        loop {
            let d = next();
            if let (Some((to, seg, count)), Some((dto, dd))) = (run, d.as_ref()) {
                let fits = *dto == to && dd.len() <= seg && count < GSO_MAX_SEGMENTS && self.buf.len() + dd.len() <= GSO_MAX_BYTES && !self.off;
                if fits {
                    self.buf.extend_from_slice(dd);
                    if dd.len() < seg {
                        // A shorter datagram ends its run.
                        sent += self.flush(udp, to, seg, count + 1);
                        run = None;
                    } else {
                        run = Some((to, seg, count + 1));
                    }
                    continue;
                }
            }
            if let Some((to, seg, count)) = run.take() {
                sent += self.flush(udp, to, seg, count);
            }
            let Some((to, d)) = d else { return sent };
            self.buf.extend_from_slice(&d);
            run = Some((to, d.len(), 1));
        }
    }

    fn flush(&mut self, udp: &UdpSocket, to: SocketAddr, seg: usize, count: usize) -> u64 {
        let mut sent = 0u64;
        if count > 1 && !self.off {
            self.calls += 1;
            match crate::sys::send_segments(udp, &self.buf, seg as u16, to) {
                Ok(n) => {
                    self.buf.clear();
                    return n as u64;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)) => {
                    crate::info!("webrtc: UDP GSO not available ({e}): one send per datagram from now on");
                    self.off = true;
                }
                Err(e) => {
                    crate::trace!("webrtc play {to}: send: {e}");
                    self.buf.clear();
                    return 0;
                }
            }
        }
        for d in self.buf.chunks(seg.max(1)) {
            match udp.send_to(d, to) {
                Ok(n) => sent += n as u64,
                Err(e) => crate::trace!("webrtc play {to}: send: {e}"),
            }
        }
        self.buf.clear();
        sent
    }
}

impl RtcState {
    pub fn new(udp: UdpSocket) -> Self {
        RtcState {
            udp,
            sessions: super::Slab::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            by_resource: HashMap::new(),
            viewers: super::Slab::new(),
            v_by_ufrag: HashMap::new(),
            v_by_addr: HashMap::new(),
            v_by_resource: HashMap::new(),
            gso: Batcher::default(),
            buf: vec![0u8; 65536],
            udp_more: false,
        }
    }
}

impl Worker {
    // ---- HTTP entry points ----------------------------------------------------------

    pub(super) fn rtc_http(&mut self, now: Instant, idx: usize, req: OwnedRequest) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        c.rx.drain(..req.consumed.min(c.rx.len()));
        let upgrade = req.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"));
        if upgrade && !self.shared.access.origin_ok(req.header("origin")) {
            crate::info!("ws {}: upgrade refused: origin {:?} not in --allowed-origin", c.peer, req.header("origin").unwrap_or(""));
            c.tx.push_vec(http::response(403, "Forbidden", "text/plain", b"origin not allowed\n"));
            c.close_after_flush = true;
            self.mark_dirty(idx);
            return;
        }
        if upgrade {
            match ws::upgrade_response(&req.header_refs(), &[]) {
                Ok(resp) => {
                    c.tx.push_vec(resp);
                    c.kind = Kind::Ws(Box::new(WsConn { decoder: ws::WsDecoder::new(), last_heard: now, sessions: Vec::new(), viewers: Vec::new(), token: None, custom: None, app_key: None }));
                    crate::info!("ws {}: signaling connection opened on worker {}", c.peer, self.id);
                    if let Some(gen) = self.conns.gen(idx) {
                        self.timers.insert(now + WS_PING_EVERY, Timer::WsPing { idx, gen });
                    }
                    self.mark_dirty(idx);
                    // Frames may have arrived with the upgrade request.
                    self.process_ws(now, idx);
                }
                Err(e) => {
                    crate::info!("ws {}: upgrade refused: {e}", c.peer);
                    c.tx.push_vec(ws::reject_response(e));
                    c.close_after_flush = true;
                    self.mark_dirty(idx);
                }
            }
            return;
        }
        if req.path.starts_with("/whep") {
            // None: held until the auth hook answers (`whep_verdict`).
            if let Some(resp) = self.wish(now, idx, &req, Wish::Whep) {
                self.http_answer(idx, resp);
            }
            return;
        }
        // None: held until the auth hook answers (`whip_verdict`).
        if let Some(resp) = self.wish(now, idx, &req, Wish::Whip) {
            self.http_answer(idx, resp);
        }
    }

    pub(super) fn http_answer(&mut self, idx: usize, resp: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(idx) {
            c.tx.push_vec(resp);
            c.close_after_flush = true;
        }
        self.mark_dirty(idx);
    }

    pub(super) fn whip_cors(&self, req: &OwnedRequest) -> String {
        match self.shared.access.cors_origin(req.header("origin")) {
            Some(o) => format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"),
            None => String::new(),
        }
    }

    /// A WHIP POST held for the auth hook: answer it now.
    pub(super) fn whip_verdict(&mut self, now: Instant, idx: usize, gen: u32, req: &OwnedRequest, verdict: Result<(), String>) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let peer = c.peer;
        let resp = match verdict {
            Ok(()) => self.whip_publish(now, idx, req),
            Err(why) => {
                let key = whip_key(req);
                crate::info!("whip {peer}: publish {pname} denied: {why}", pname = crate::log::peer_str(key));
                plain(&self.whip_cors(req), 403, "Forbidden", "", "Restricted access\n")
            }
        };
        self.http_answer(idx, resp);
    }

    /// Start the WHIP session of an allowed POST; the HTTP response.
    fn whip_publish(&mut self, now: Instant, idx: usize, req: &OwnedRequest) -> Vec<u8> {
        let cors = self.whip_cors(req);
        let name = whip_name(req);
        let key = whip_key(req);
        let offer = std::str::from_utf8(&req.body).unwrap_or("");
        let peer = self.conns.get_mut(idx).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer);
        let resource = format!("{}-{}", self.id, csprng::hex128());
        let local_ip = self.conns.get_mut(idx).and_then(|c| c.sock.local_addr().ok()).map(|a| a.ip());
        match self.rtc_start(now, name, offer, peer.ip(), local_ip, Owner::Whip { resource: resource.clone() }) {
            Ok(answer) => {
                let location = format!("/whip/{key}/{resource}");
                let mut out = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\nLocation: {location}\r\nContent-Length: {}\r\nConnection: close\r\n{cors}Access-Control-Expose-Headers: Location\r\n\r\n",
                    answer.len()
                )
                .into_bytes();
                out.extend_from_slice(answer.as_bytes());
                out
            }
            Err(refused) => {
                let (status, reason) = refused.http_status();
                plain(&cors, status, reason, "", &format!("{}\n", refused.info()))
            }
        }
    }

    /// WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep): POST /whip/NAME or /whep/NAME
    /// with an offer → 201 + Location + answer; DELETE on the Location ends the session.
    ///
    /// Resource ids are `W-R`: W the owning worker's index (not a secret), R 128 bits from
    /// the OS CSPRNG. A DELETE ends only the session with that id on that name; the
    /// shared table (`Access::whip_owner`) says which worker owns it, and a DELETE that
    /// lands on another worker is forwarded there over the mesh (`CoreMsg::EndSession`).
    pub(super) fn wish(&mut self, now: Instant, idx: usize, req: &OwnedRequest, kind: Wish) -> Option<Vec<u8>> {
        let (label, action) = (kind.label(), kind.action());
        let rest = req.path.strip_prefix(kind.prefix()).unwrap_or("").trim_start_matches('/');
        let peer = self.conns.get_mut(idx).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer);
        let cors = self.whip_cors(req);
        let plain = |status: u16, reason: &str, extra: &str, body: &str| -> Option<Vec<u8>> { Some(plain(&cors, status, reason, extra, body)) };
        let upper = label.to_uppercase();
        match req.method.as_str() {
            "POST" => {
                let name = rest.trim_end_matches('/');
                if name.is_empty() || name.contains('/') {
                    return plain(400, "Bad Request", "", &format!("POST {}/NAME: missing stream name\n", kind.prefix()));
                }
                let ct_ok = req.header("content-type").is_some_and(|v| v.starts_with("application/sdp"));
                if !ct_ok {
                    return plain(415, "Unsupported Media Type", "", &format!("{upper} offer must be application/sdp\n"));
                }
                if std::str::from_utf8(&req.body).is_err() {
                    return plain(400, "Bad Request", "", "offer is not UTF-8\n");
                }
                let key = name.split('?').next().unwrap_or(name);
                let token = req.header("authorization").and_then(crate::relay::auth::bearer);
                if self.hook.is_some() && !self.shared.access.token_grants(token, action, key, peer.ip()) {
                    let q = HookQuery {
                        action: if kind == Wish::Whip { HookAction::Publish } else { HookAction::Play },
                        protocol: label,
                        name: key.to_owned(),
                        app: label.into(),
                        ip: peer.ip(),
                        query: name.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default(),
                        token: token.map(str::to_owned),
                        custom: serde_json::Value::Null,
                        object: None,
                    };
                    let gen = self.conns.gen(idx).unwrap_or(0);
                    let req = Box::new(req.clone());
                    let waiting = if kind == Wish::Whip { Waiting::Whip { idx, gen, req } } else { Waiting::Whep { idx, gen, req } };
                    self.hook_ask(now, q, waiting);
                    return None;
                }
                if let Err(why) = self.shared.access.authorize(token, action, key, peer.ip()) {
                    let verb = if kind == Wish::Whip { "publish" } else { "play" };
                    crate::info!("{label} {peer}: {verb} {pname} denied: {}", why.reason(), pname = crate::log::peer_str(key));
                    let body = format!("Restricted access: {}\n", why.reason());
                    return match why {
                        Denied::NoToken => plain(401, "Unauthorized", "WWW-Authenticate: Bearer\r\n", &body),
                        _ => plain(403, "Forbidden", "", &body),
                    };
                }
                Some(if kind == Wish::Whip { self.whip_publish(now, idx, req) } else { self.whep_play(now, idx, req) })
            }
            "DELETE" => {
                let Some((name, resource)) = rest.trim_end_matches('/').rsplit_once('/') else {
                    return plain(404, "Not Found", "", &format!("DELETE {}/NAME/ID\n", kind.prefix()));
                };
                match self.shared.access.whip_owner(name, resource) {
                    Some(w) if w == self.id => {
                        self.whip_end(now, resource);
                        plain(200, "OK", "", "")
                    }
                    Some(w) => {
                        // The session lives on worker `w`: it ends it on its next turn.
                        crate::info!("{label} {peer}: DELETE of a session on {pname} forwarded from worker {} to its owner, worker {w}", self.id, pname = crate::log::peer_str(name));
                        let _ = self.mesh.send(w, CoreMsg::EndSession { resource: resource.into() });
                        plain(200, "OK", "", "")
                    }
                    None => {
                        crate::info!("{label} {peer}: DELETE of an unknown session on {pname}", pname = crate::log::peer_str(name));
                        plain(404, "Not Found", "", &format!("no such {upper} session\n"))
                    }
                }
            }
            "OPTIONS" => Some(
                format!(
                    "HTTP/1.1 204 No Content\r\n{cors}Access-Control-Allow-Methods: POST, DELETE, OPTIONS\r\nAccess-Control-Allow-Headers: Content-Type, Authorization\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .into_bytes(),
            ),
            _ => plain(405, "Method Not Allowed", "", &format!("{upper}: POST or DELETE\n")),
        }
    }

    /// End WHIP session `resource` if this worker owns it (a DELETE, here or forwarded).
    pub(super) fn whip_end(&mut self, now: Instant, resource: &str) {
        if self.whep_end(now, resource) {
            return;
        }
        if let Some(s) = self.rtc.by_resource.get(resource).copied() {
            self.rtc_stop(now, s, None);
        }
    }

    // ---- WebSocket signaling --------------------------------------------------------

    pub(super) fn process_ws(&mut self, now: Instant, idx: usize) {
        loop {
            let Some(c) = self.conns.get_mut(idx) else { return };
            let Kind::Ws(w) = &mut c.kind else { return };
            if c.rx.is_empty() {
                return;
            }
            let (n, msg) = match w.decoder.decode(&c.rx) {
                Ok(x) => x,
                Err(e) => {
                    let mut out = Vec::new();
                    ws::write_close(e.close_code(), &e.to_string(), &mut out);
                    c.tx.push_vec(out);
                    c.close_after_flush = true;
                    c.rx.clear();
                    crate::warn!("ws {}: closing: {e}", c.peer);
                    WorkerStats::add(&self.shared.workers[self.id].protocol_errors, 1);
                    self.mark_dirty(idx);
                    return;
                }
            };
            if n == 0 {
                return;
            }
            c.rx.drain(..n.min(c.rx.len()));
            w.last_heard = now;
            let Some(msg) = msg else { continue };
            match msg {
                ws::WsMessage::Text(t) => self.ws_text(now, idx, &t),
                ws::WsMessage::Binary(_) => {}
                ws::WsMessage::Ping(p) => {
                    let mut out = Vec::new();
                    ws::write_pong(&p, &mut out);
                    c.tx.push_vec(out);
                    self.mark_dirty(idx);
                }
                ws::WsMessage::Pong(_) => {}
                ws::WsMessage::Close(code, _) => {
                    let mut out = Vec::new();
                    ws::write_close(code.unwrap_or(1000), "", &mut out);
                    c.tx.push_vec(out);
                    c.close_after_flush = true;
                    self.mark_dirty(idx);
                    return;
                }
            }
        }
    }

    pub(super) fn ws_send(&mut self, idx: usize, text: &str) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let mut out = Vec::with_capacity(text.len() + 10);
        ws::write_text(text, &mut out);
        c.tx.push_vec(out);
        self.mark_dirty(idx);
    }

    fn ws_text(&mut self, now: Instant, idx: usize, text: &str) {
        let peer = self.conns.get_mut(idx).map(|c| c.peer);
        let msg = match sig::parse_client_msg(text) {
            Ok(m) => m,
            Err(e) => {
                crate::info!("ws {peer:?}: ignoring message: {e}");
                self.ws_send(idx, &sig::fail("unknown", &e.to_string()));
                return;
            }
        };
        match msg {
            ClientMsg::Connection(obj) => {
                let given = obj
                    .get("custom")
                    .and_then(|c| c.get("token"))
                    .or_else(|| obj.get("authToken"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                if let Some(Kind::Ws(w)) = self.conns.get_mut(idx).map(|c| &mut c.kind) {
                    w.token = given;
                    w.custom = obj.get("custom").cloned();
                    w.app_key = obj.get("appKey").and_then(|a| a.as_str()).map(str::to_owned);
                }
                let (peer_ip, token) = (peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip()), self.conn_token(idx));
                if self.hook.is_some() && !self.shared.access.connect_token_valid(token.as_deref(), peer_ip) {
                    let q = HookQuery {
                        action: HookAction::Connect,
                        protocol: "webrtc",
                        name: String::new(),
                        app: conn_app(self.conns.get_mut(idx).map(|c| &c.kind)),
                        ip: peer_ip,
                        query: String::new(),
                        token,
                        custom: obj.get("custom").cloned().unwrap_or(serde_json::Value::Null),
                        object: Some(obj.clone()),
                    };
                    let gen = self.conns.gen(idx).unwrap_or(0);
                    self.hook_ask(now, q, Waiting::WsConnect { idx, gen, obj: Box::new(obj) });
                    return;
                }
                // The session's own token: 128 bits from the OS CSPRNG, nothing derived
                // from any other client's.
                self.ws_send(idx, &sig::get_user_data(&obj, &csprng::hex128()));
            }
            ClientMsg::Ping => self.ws_send(idx, &sig::pong()),
            ClientMsg::Pong => {}
            ClientMsg::PublishStream(req) => {
                let media = StreamMedia::from(&req);
                let gen = self.conns.gen(idx).unwrap_or(0);
                let conn_token = match self.conns.get_mut(idx).map(|c| &c.kind) {
                    Some(Kind::Ws(w)) => w.token.clone(),
                    _ => None,
                };
                let token = req.custom.as_ref().and_then(|c| c.get("token")).and_then(|t| t.as_str()).map(str::to_owned).or(conn_token);
                let peer_ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
                let key = req.name.split('?').next().unwrap_or(&req.name);
                if self.hook.is_some() && !self.shared.access.token_grants(token.as_deref(), AuthAction::Publish, key, peer_ip) {
                    // The stream object as the SDK sent it, less the SDP (large, and
                    // nothing a backend decides on).
                    let mut object = req.raw.clone();
                    if let Some(o) = object.as_object_mut() {
                        o.remove("sdp");
                    }
                    let conn_custom = match self.conns.get_mut(idx).map(|c| &c.kind) {
                        Some(Kind::Ws(w)) => w.custom.clone(),
                        _ => None,
                    };
                    let q = HookQuery {
                        action: HookAction::Publish,
                        protocol: "webrtc",
                        name: key.to_owned(),
                        app: conn_app(self.conns.get_mut(idx).map(|c| &c.kind)),
                        ip: peer_ip,
                        query: req.name.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default(),
                        token,
                        custom: req.custom.clone().or(conn_custom).unwrap_or(serde_json::Value::Null),
                        object: Some(object),
                    };
                    self.hook_ask(now, q, Waiting::WsPublish { idx, gen, req: Box::new(req) });
                    return;
                }
                if let Err(why) = self.shared.access.authorize(token.as_deref(), AuthAction::Publish, key, peer_ip) {
                    crate::info!("ws {peer:?}: publish {key:?} denied: {}", why.reason());
                    self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some(INFO_RESTRICTED), media));
                    return;
                }
                self.ws_publish(now, idx, gen, req);
            }
            ClientMsg::UnPublishStream { media_session_id, .. } => {
                let slot = match self.conns.get_mut(idx).map(|c| &c.kind) {
                    Some(Kind::Ws(w)) => w.sessions.iter().find(|(m, _)| *m == media_session_id).map(|(_, s)| *s),
                    _ => None,
                };
                if let Some(s) = slot {
                    self.rtc_stop(now, s, Some(&RtcError::PeerClosed));
                }
            }
            ClientMsg::PlayStream(v) => self.ws_play(now, idx, &v),
            ClientMsg::StopStream(v) => self.ws_stop(now, idx, &v),
            ClientMsg::AvailableStream { media_session_id, name } => {
                // Live here, or on another node of the cluster (played through a pull).
                let live = self.shared.registry.is_live(&name) || self.shared.registry.remote_url(&name).is_some();
                self.ws_send(idx, &sig::available_stream(&media_session_id, live, if live { None } else { Some(sig::INFO_STREAM_NOT_FOUND) }));
            }
            ClientMsg::Other { name, .. } => {
                crate::debug!("ws {peer:?}: ignoring {pname}", pname = crate::log::peer_str(&name));
            }
        }
    }

    fn conn_token(&mut self, idx: usize) -> Option<String> {
        match self.conns.get_mut(idx).map(|c| &c.kind) {
            Some(Kind::Ws(w)) => w.token.clone(),
            _ => None,
        }
    }

    /// A Flashphoner `connection` held for the auth hook: `getUserData` (the SDK's
    /// ESTABLISHED), or `fail` "Restricted access" and the WebSocket closed (the SDK's
    /// DISCONNECTED), as WCS does when its `/connect` hook refuses.
    pub(super) fn ws_connect_verdict(&mut self, idx: usize, gen: u32, obj: &serde_json::Value, verdict: Result<(), String>) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let peer = c.peer;
        match verdict {
            Ok(()) => self.ws_send(idx, &sig::get_user_data(obj, &csprng::hex128())),
            Err(why) => {
                crate::info!("ws {peer}: connection rejected: {why}");
                self.ws_send(idx, &sig::fail("connection", INFO_RESTRICTED));
                if let Some(c) = self.conns.get_mut(idx) {
                    let mut out = Vec::new();
                    ws::write_close(1008, INFO_RESTRICTED, &mut out);
                    c.tx.push_vec(out);
                    c.close_after_flush = true;
                }
            }
        }
    }

    /// A Flashphoner publish held for the auth hook: go on, or answer FAILED.
    pub(super) fn ws_publish_verdict(&mut self, now: Instant, idx: usize, gen: u32, req: sig::PublishReq, verdict: Result<(), String>) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let peer = c.peer;
        match verdict {
            Ok(()) => self.ws_publish(now, idx, gen, req),
            Err(why) => {
                crate::info!("ws {peer}: publish {pname} denied: {why}", pname = crate::log::peer_str(&req.name));
                let media = StreamMedia::from(&req);
                self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some(INFO_RESTRICTED), media));
            }
        }
    }

    /// Start the WebRTC session of an allowed Flashphoner publish.
    fn ws_publish(&mut self, now: Instant, idx: usize, gen: u32, req: sig::PublishReq) {
        let media = StreamMedia::from(&req);
        let count = match self.conns.get_mut(idx).map(|c| &c.kind) {
            Some(Kind::Ws(w)) => w.sessions.len(),
            _ => 0,
        };
        if count >= MAX_SESSIONS_PER_WS {
            self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some("Too many streams on one connection"), media));
            return;
        }
        let local_ip = self.conns.get_mut(idx).and_then(|c| c.sock.local_addr().ok()).map(|a| a.ip());
        let owner = Owner::Ws { idx, gen, media_session_id: req.media_session_id.clone(), media, rtmp_url: req.rtmp_url.clone() };
        let peer = self.conns.get_mut(idx).map_or(IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip());
        match self.rtc_start(now, &req.name, &req.sdp, peer, local_ip, owner) {
            Ok(answer) => {
                self.ws_send(idx, &sig::set_remote_sdp(&req.media_session_id, &answer));
            }
            Err(refused) => {
                let why = refused.info();
                crate::info!("ws {peer:?}: publish {:?} failed: {why}", req.name);
                self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some(&why), media));
            }
        }
    }

    /// The signaling connection is gone: its publishers end with it.
    pub(super) fn ws_closed(&mut self, now: Instant, _idx: usize, w: WsConn) {
        for (_, s) in w.sessions {
            self.rtc_stop(now, s, None);
        }
        for (_, s) in w.viewers {
            self.view_stop(now, s, None);
        }
    }

    // ---- sessions -------------------------------------------------------------------

    /// Claim the name, build the session, return the SDP answer; or why not.
    fn rtc_start(&mut self, now: Instant, name: &str, offer: &str, peer: IpAddr, local_ip: Option<IpAddr>, owner: Owner) -> Result<String, Refused> {
        let name: Arc<str> = name.split('?').next().unwrap_or(name).into();
        if name.is_empty() || name.len() > 256 {
            return Err(Refused::BadName);
        }
        if let Err(r) = self.shared.pending_webrtc.admit((), peer) {
            return Err(Refused::Busy { per_ip: r == Refusal::PerIp });
        }
        let Ok(reservation) = self.relay.reserve(&name, "webrtc") else {
            self.shared.pending_webrtc.release((), peer);
            return Err(Refused::NameInUse);
        };
        let stats = Arc::clone(reservation.stats());
        let port = self.shared.cfg.udp_port + self.id as u16;
        let cands = self.rtc_candidates(local_ip);
        let secrets = RtcSecrets::from_random(&csprng::bytes());
        let session = match RtcSession::new(Arc::clone(&name), offer, &self.shared.identity, &cands, secrets, now, Arc::clone(&stats), self.shared.cfg.audio) {
            Ok(s) => s,
            Err(e) => {
                self.relay.cancel(reservation);
                self.shared.pending_webrtc.release((), peer);
                return Err(Refused::Session(e));
            }
        };
        let answer = session.answer().to_owned();
        let ufrag = session.local_ufrag().to_owned();
        let whip_resource = match &owner {
            Owner::Whip { resource } => Some(resource.clone()),
            Owner::Ws { .. } => None,
        };
        let ws_slot = match &owner {
            Owner::Ws { idx, media_session_id, .. } => Some((*idx, media_session_id.clone())),
            Owner::Whip { .. } => None,
        };
        let entry = Entry {
            session,
            owner,
            name: Arc::clone(&name),
            publishing: false,
            remote: None,
            stats: Arc::clone(&stats),
            reservation: Some(reservation),
            pending_ip: Some(peer),
            armed: super::Armed::default(),
        };
        let (slot, _) = self.rtc.sessions.insert(entry);
        self.rtc.by_ufrag.insert(ufrag, slot);
        if let Some(r) = whip_resource {
            self.shared.access.whip_register(&r, self.id, Arc::clone(&name));
            self.rtc.by_resource.insert(r, slot);
        }
        if let Some((idx, mid)) = ws_slot {
            if let Some(Kind::Ws(w)) = self.conns.get_mut(idx).map(|c| &mut c.kind) {
                w.sessions.push((mid, slot));
            }
        }
        crate::info!("webrtc: session for {pname} on worker {} (udp port {port}): waiting for ICE and DTLS", self.id, pname = crate::log::peer_str(&name));
        self.rtc_arm(slot);
        Ok(answer)
    }

    /// Our host candidates for a session on this worker: `--public-ip`, else the
    /// address the signaling connection reached.
    pub(super) fn rtc_candidates(&self, local_ip: Option<IpAddr>) -> Vec<(IpAddr, u16)> {
        let port = self.shared.cfg.udp_port + self.id as u16;
        let cand_port = self.shared.cfg.candidate_port.map_or(port, |p| p.saturating_add(self.id as u16));
        if self.shared.cfg.public_ip.is_empty() {
            let ip = local_ip.filter(|ip| !ip.is_unspecified()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
            vec![(ip, cand_port)]
        } else {
            self.shared.cfg.public_ip.iter().map(|ip| (*ip, cand_port)).collect()
        }
    }

    /// End a session: tell its owner (status + info), release the name. `why` is None
    /// when the owner itself ended it (WHIP DELETE, signaling connection gone).
    fn rtc_stop(&mut self, now: Instant, slot: usize, why: Option<&RtcError>) {
        let Some(mut e) = self.rtc.sessions.remove(slot) else { return };
        if e.publishing {
            for m in e.session.finish(now) {
                self.relay_frame(now, &e.name, m);
            }
        }
        self.rtc.by_ufrag.retain(|_, s| *s != slot);
        self.rtc.by_addr.retain(|_, s| *s != slot);
        self.rtc.by_resource.retain(|_, s| *s != slot);
        if let Owner::Whip { resource } = &e.owner {
            self.shared.access.whip_forget(resource);
        }
        if let Some(ip) = e.pending_ip.take() {
            self.shared.pending_webrtc.release((), ip);
        }
        let info = why.map(RtcError::info);
        crate::info!("webrtc: {} ended{}", crate::log::peer_str(&e.name), info.as_ref().map(|f| format!(": {f}")).unwrap_or_default());
        if let Owner::Ws { idx, gen, media_session_id, media, .. } = &e.owner {
            if self.conns.get_gen_mut(*idx, *gen).is_some() {
                let status = if why.is_some_and(RtcError::is_failure) { sig::STATUS_FAILED } else { sig::STATUS_UNPUBLISHED };
                self.ws_send(*idx, &sig::stream_status(media_session_id, &e.name, status, info.as_deref(), *media));
                if let Some(Kind::Ws(w)) = self.conns.get_mut(*idx).map(|c| &mut c.kind) {
                    w.sessions.retain(|(_, s)| *s != slot);
                }
            }
        }
        match e.reservation.take() {
            // Never announced: give the name back; no player ever saw it.
            Some(r) => self.relay.cancel(r),
            None => self.unpublish(now, &e.name),
        }
    }

    pub(super) fn udp_readable(&mut self, now: Instant) {
        let mut budget = UDP_BUDGET;
        loop {
            if budget == 0 {
                // Fairness: a flood on this socket must not starve the TCP connections;
                // the rest is read next turn (the loop does not sleep meanwhile).
                self.rtc.udp_more = true;
                return;
            }
            budget -= 1;
            let (n, from) = match self.rtc.udp.recv_from(&mut self.rtc.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::debug!("worker {}: udp recv: {e}", self.id);
                    return;
                }
            };
            WorkerStats::add(&self.shared.workers[self.id].bytes_in, n as u64);
            let mut data = std::mem::take(&mut self.rtc.buf);
            let slot = match data.get(..n) {
                Some(d) if stun::is_stun(d) => stun::parse(d)
                    .ok()
                    .and_then(|m| crate::proto::ice::username_local_part(&m).map(str::to_owned))
                    .and_then(|u| self.rtc.by_ufrag.get(&u).copied())
                    .or_else(|| self.rtc.by_addr.get(&from).copied()),
                Some(_) => self.rtc.by_addr.get(&from).copied(),
                None => None,
            };
            let viewer = match (slot, data.get(..n)) {
                (Some(_), _) | (None, None) => None,
                (None, Some(d)) if stun::is_stun(d) => stun::parse(d)
                    .ok()
                    .and_then(|m| crate::proto::ice::username_local_part(&m).map(str::to_owned))
                    .and_then(|u| self.rtc.v_by_ufrag.get(&u).copied())
                    .or_else(|| self.rtc.v_by_addr.get(&from).copied()),
                (None, Some(_)) => self.rtc.v_by_addr.get(&from).copied(),
            };
            if let (Some(v), Some(d)) = (viewer, data.get_mut(..n)) {
                self.view_datagram(now, v, from, d);
                self.rtc.buf = data;
                continue;
            }
            match (slot, data.get_mut(..n)) {
                (Some(s), Some(d)) => {
                    if let Some(e) = self.rtc.sessions.get_mut(s) {
                        if let Err(why) = e.session.handle_datagram(now, from, d) {
                            self.shared.workers[self.id].webrtc_drop(why);
                        }
                    }
                    self.rtc.buf = data;
                    self.rtc_drain(now, s);
                }
                _ => {
                    self.rtc.buf = data;
                    let w = &self.shared.workers[self.id];
                    WorkerStats::add(&w.ignored_messages, 1);
                    w.webrtc_drop(RtcDrop::UnknownSession);
                }
            }
        }
    }

    /// Run the session's transcoder (timed here: the core reads no clock), send what it
    /// queued, act on its events, and arm its timer.
    fn rtc_drain(&mut self, now: Instant, slot: usize) {
        let mut stop: Option<RtcError> = None;
        let mut media = Vec::new();
        let mut publishing_now = None;
        let Some(e) = self.rtc.sessions.get_mut(slot) else { return };
        if e.session.transcode_pending() {
            let t0 = crate::runtime::now();
            let n = e.session.handle_transcode(now);
            let ns = crate::runtime::now().saturating_duration_since(t0).as_nanos() as u64;
            e.stats.transcoded_packets.fetch_add(n as u64, Ordering::Relaxed);
            e.stats.transcode_ns.fetch_add(ns, Ordering::Relaxed);
        }
        while let Some((to, d)) = e.session.poll_transmit() {
            match self.rtc.udp.send_to(&d, to) {
                Ok(n) => WorkerStats::add(&self.shared.workers[self.id].bytes_out, n as u64),
                Err(err) => crate::trace!("webrtc {to}: send: {err}"),
            }
        }
        let remote = e.session.remote();
        if remote != e.remote {
            if let Some(old) = e.remote {
                self.rtc.by_addr.remove(&old);
            }
            if let Some(new) = remote {
                self.rtc.by_addr.insert(new, slot);
            }
            e.remote = remote;
        }
        while let Some(ev) = e.session.poll_event() {
            match ev {
                RtcEvent::Connected => {
                    if !e.publishing {
                        e.publishing = true;
                        publishing_now = Some(e.owner.clone());
                    }
                    if let Some(ip) = e.pending_ip.take() {
                        self.shared.pending_webrtc.release((), ip);
                    }
                }
                RtcEvent::Ended(why) => {
                    stop = Some(why);
                    break;
                }
                RtcEvent::Media(m) => media.push(m),
            }
        }
        let name = Arc::clone(&e.name);
        if let Some(owner) = publishing_now {
            crate::info!("webrtc: {pname} is PUBLISHING (ICE and DTLS up)", pname = crate::log::peer_str(&name));
            if let Owner::Ws { idx, gen, media_session_id, media: sm, .. } = owner {
                if self.conns.get_gen_mut(idx, gen).is_some() {
                    self.ws_send(idx, &sig::stream_status(&media_session_id, &name, sig::STATUS_PUBLISHING, None, sm));
                }
            }
        }
        if !media.is_empty() {
            // Media flows: now the stream is live (players, /api/streams, PublishNotify).
            let reservation = self.rtc.sessions.get_mut(slot).and_then(|e| e.reservation.take());
            if let Some(r) = reservation {
                crate::info!("webrtc: publishing {pname} on worker {} (media flows)", self.id, pname = crate::log::peer_str(&name));
                WorkerStats::gauge(&self.shared.workers[self.id].publishers, 1);
                let _ = self.relay.handle_publish(now, r, &super::ConnBacklog(&self.conns, &self.rtc.viewers));
                self.apply_relay(now);
                let owner = self.rtc.sessions.get_mut(slot).map(|e| e.owner.clone());
                self.push_rules(now, &name);
                if let Some(Owner::Ws { idx, gen, media_session_id, media, rtmp_url: Some(url) }) = owner {
                    let target = super::push::NotifyTarget { idx, gen, media_session_id, media };
                    self.push_republish(now, &name, &url, target);
                }
            }
        }
        for m in media {
            self.relay_frame(now, &name, m);
        }
        match stop {
            Some(why) => self.rtc_stop(now, slot, Some(&why)),
            None => self.rtc_arm(slot),
        }
    }

    /// Arm the session's timer at its `poll_timeout`, unless the armed one is due no later.
    fn rtc_arm(&mut self, slot: usize) {
        let Some(gen) = self.rtc.sessions.gen(slot) else { return };
        let Some(e) = self.rtc.sessions.get_mut(slot) else { return };
        if let Some(at) = e.armed.arm(e.session.poll_timeout()) {
            self.timers.insert(at, Timer::RtcSession { slot, gen, at });
        }
    }

    /// A session's timer fired. One for a reused slot (generation) or one superseded by
    /// an earlier timer is stale and ignored.
    pub(super) fn rtc_timeout(&mut self, now: Instant, slot: usize, gen: u32, at: Instant) {
        let Some(e) = self.rtc.sessions.get_gen_mut(slot, gen) else { return };
        if !e.armed.fire(at) {
            return;
        }
        e.session.handle_timeout(now);
        self.rtc_drain(now, slot);
    }

    /// Keep Flashphoner clients' probes satisfied: a JSON ping every `WS_PING_EVERY`
    /// while the signaling connection `(idx, gen)` is open.
    pub(super) fn ws_ping(&mut self, now: Instant, idx: usize, gen: u32) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let Kind::Ws(w) = &c.kind else { return };
        // The keepalive requires its answer: a peer silent for this long (it answers
        // `ping` with `pong`, as the Flashphoner SDK does) is gone or hostile.
        if now.saturating_duration_since(w.last_heard) >= WS_SILENCE {
            self.doom(idx, format!("WebSocket peer sent nothing, not even a pong, for {} s", WS_SILENCE.as_secs()), false);
            return;
        }
        self.ws_send(idx, &sig::ping());
        self.timers.insert(now + WS_PING_EVERY, Timer::WsPing { idx, gen });
    }

    /// A player wants a keyframe of `name`: PLI to its WebRTC publisher on this core
    /// (rate limited by the session). RTMP publishers cannot be asked.
    pub(super) fn request_keyframe(&mut self, now: Instant, name: &Arc<str>) {
        if let Some(t) = self.transcodes.get_mut(name) {
            // A viewer of the transcoded video: the next picture out is an IDR.
            t.request_keyframe();
            return;
        }
        for slot in self.rtc.sessions.indices() {
            if let Some(e) = self.rtc.sessions.get_mut(slot) {
                if &e.name == name {
                    e.session.request_keyframe(now, false);
                    self.rtc_drain(now, slot);
                    return;
                }
            }
        }
    }
}
