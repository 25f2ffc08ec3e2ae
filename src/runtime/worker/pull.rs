//! Cluster pulls: a stream another node owns, played from that node over RTMP
//! and published here as a local stream (source "pull") that every local
//! player shares. The control thread (`runtime/cluster.rs`) decides when a
//! pull starts (local players wait, the directory names a live owner) and
//! when one must end (its origin is gone or moved); the pull itself ends a
//! while after its last local player left, or when its origin ends the stream
//! or the connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::push::ResolveFor;
use super::{Conn, Kind, Timer, Worker};
use crate::buf::SendQueue;
use crate::proto::rtmp::client::{ClientEvent, PushUrl, RtmpClient};
use crate::relay::{Audience, Frame, Reservation, StreamStats, WorkerStats};
use crate::runtime::cluster::WorkerCmd;

/// A pull with no local player left ends after this long.
pub const PULL_LINGER: Duration = Duration::from_secs(10);
/// How often a pull looks at its player count.
const PULL_CHECK: Duration = Duration::from_secs(2);
/// From the connect to the origin's Play.Start, at most this long.
const PULL_TIMEOUT: Duration = Duration::from_secs(10);

/// Our RTMP play from a stream's owner node.
pub(super) struct PullConn {
    pub name: Arc<str>,
    pub client: RtmpClient,
    pub connected: bool,
    pub addr: SocketAddr,
    /// The origin node's URL (rtmp://HOST:PORT).
    origin: String,
    /// The name, claimed here until the origin's Play.Start.
    reservation: Option<Reservation>,
    /// Published here (Play.Start came): frames flow to the relay.
    stats: Option<Arc<StreamStats>>,
    /// Since when no local player was left.
    idle_since: Option<Instant>,
    started: Instant,
}

impl Worker {
    /// Commands from the cluster's control thread.
    pub(super) fn cluster_drain(&mut self, now: Instant) {
        loop {
            let Some(cmd) = self.cluster_rx.as_ref().and_then(|rx| rx.try_recv().ok()) else { return };
            match cmd {
                WorkerCmd::StartPull { name, url } => self.pull_start(now, name, url),
                WorkerCmd::StopPull { name } => self.pull_stop(&name, "its origin is gone or moved"),
            }
        }
    }

    fn pull_start(&mut self, now: Instant, name: Arc<str>, url: String) {
        let Some(parsed) = pull_url(&url, &name) else {
            crate::warn!("cluster: cannot pull {}: bad origin URL {url}", crate::log::peer_str(&name));
            return;
        };
        match parsed.host.parse::<IpAddr>() {
            Ok(ip) => self.pull_connect(now, name, url, &parsed, SocketAddr::new(ip, parsed.port)),
            Err(_) => {
                if let Err(why) = self.resolve_async(parsed.host.clone(), parsed.port, ResolveFor::Pull { name: Arc::clone(&name), url }) {
                    crate::warn!("cluster: pull of {}: {why}", crate::log::peer_str(&name));
                }
            }
        }
    }

    pub(super) fn pull_resolved(&mut self, now: Instant, name: Arc<str>, url: String, result: Result<SocketAddr, String>) {
        match (result, pull_url(&url, &name)) {
            (Ok(addr), Some(parsed)) => self.pull_connect(now, name, url, &parsed, addr),
            (Err(why), _) => crate::warn!("cluster: pull of {}: {why}", crate::log::peer_str(&name)),
            (_, None) => crate::warn!("cluster: pull of {}: bad origin URL {url}", crate::log::peer_str(&name)),
        }
    }

    fn pull_connect(&mut self, now: Instant, name: Arc<str>, origin: String, url: &PushUrl, addr: SocketAddr) {
        let mut url = url.clone();
        if let Some(key) = &self.shared.access.key {
            // A play token for this name, good for 5 minutes (the pull's connect).
            let claims = crate::relay::auth::TokenClaims {
                action: crate::relay::auth::AuthAction::Play,
                name: name.to_string(),
                expires_unix: crate::runtime::access::unix_now().saturating_add(300),
                ip: None,
            };
            url.key = format!("{name}?token={}", key.sign(&claims));
        }
        let url = &url;
        // Claimed here for the pull: a second pull, or a local publisher that came
        // meanwhile, keeps the name.
        let reservation = match self.relay.reserve(&name, "pull") {
            Ok(r) => r,
            Err(_) => return,
        };
        let sock = match self.open_outbound(addr, url.secure.then_some(url.host.as_str())) {
            Ok(s) => s,
            Err(why) => {
                crate::warn!("cluster: pull of {} from {addr}: {why}", crate::log::peer_str(&name));
                self.relay.cancel(reservation);
                if let Some(cl) = &self.shared.cluster {
                    cl.origin_unreachable(&origin, now);
                }
                return;
            }
        };
        let mut tx = SendQueue::new();
        let epoch_ms = now.saturating_duration_since(self.started).as_millis() as u32;
        let client = RtmpClient::new_play(url, crate::runtime::csprng::u64(), epoch_ms, self.shared.cfg.max_message_bytes, &mut tx);
        let pc = PullConn {
            name: Arc::clone(&name),
            client,
            connected: false,
            addr,
            origin,
            reservation: Some(reservation),
            stats: None,
            idle_since: None,
            started: now,
        };
        let conn = Conn {
            sock,
            peer: addr,
            listener: None,
            rx: Vec::new(),
            tx,
            kind: Kind::Pull(Box::new(pc)),
            dirty: false,
            held: None,
            close_after_flush: false,
        };
        match self.insert_outbound(conn) {
            Ok((idx, gen)) => {
                crate::info!("cluster: pulling {} from {addr} on worker {}", crate::log::peer_str(&name), self.id);
                WorkerStats::gauge(&self.stats().pulls, 1);
                self.timers.insert(now + PULL_CHECK, Timer::PullCheck { idx, gen });
            }
            Err(e) => {
                // The connection (and the reservation in it) is gone: give the name back.
                self.shared.registry.release(&name, self.id);
                crate::warn!("cluster: pull of {} from {addr}: register: {e}", crate::log::peer_str(&name));
            }
        }
    }

    /// Feed a pull's input to its client; publish what it plays.
    pub(super) fn process_pull(&mut self, now: Instant, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Kind::Pull(p) = &mut c.kind else { return };
        match p.client.handle_input(&c.rx, &mut c.tx) {
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
        loop {
            let Some(c) = self.conns.get_mut(idx) else { return };
            let Kind::Pull(p) = &mut c.kind else { return };
            let Some(ev) = p.client.poll_event() else { return };
            let name = Arc::clone(&p.name);
            match ev {
                ClientEvent::Live { .. } => {
                    let Some(r) = p.reservation.take() else { continue };
                    let stats = self.relay.handle_publish(now, r, &super::ConnBacklog(&self.conns, &self.rtc.viewers));
                    if let Some(Kind::Pull(p)) = self.conns.get_mut(idx).map(|c| &mut c.kind) {
                        p.stats = Some(stats);
                    }
                    crate::info!("cluster: {} pulled and live here", crate::log::peer_str(&name));
                    self.apply_relay(now);
                }
                ClientEvent::Media { kind, ts, payload } => {
                    let frame = Frame::build(kind, ts, &payload, Audience::All, Some(now));
                    let stats = p.stats.clone();
                    self.relay_rtmp_frame(now, &name, stats.as_ref(), frame);
                }
                ClientEvent::Unpublished => {
                    self.doom(idx, "the origin's stream ended".into(), false);
                    return;
                }
                ClientEvent::Republished => {}
            }
        }
    }

    /// Once every `PULL_CHECK`: end a pull with no local player left for
    /// `PULL_LINGER`, or one whose origin never started playing.
    pub(super) fn pull_check(&mut self, now: Instant, idx: usize, gen: u32) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let Kind::Pull(p) = &mut c.kind else { return };
        if p.stats.is_none() {
            if now.saturating_duration_since(p.started) >= PULL_TIMEOUT {
                self.doom(idx, format!("the origin did not start playing within {} s", PULL_TIMEOUT.as_secs()), false);
            } else {
                self.timers.insert(now + PULL_CHECK, Timer::PullCheck { idx, gen });
            }
            return;
        }
        let players = self.shared.registry.stats(&p.name).map_or(0, |s| s.players.load(Ordering::Relaxed));
        if players > 0 {
            p.idle_since = None;
        } else if now.saturating_duration_since(*p.idle_since.get_or_insert(now)) >= PULL_LINGER {
            self.doom(idx, format!("no local player for {} s", PULL_LINGER.as_secs()), false);
            return;
        }
        self.timers.insert(now + PULL_CHECK, Timer::PullCheck { idx, gen });
    }

    /// End the pull of `name` on this worker, if there is one.
    fn pull_stop(&mut self, name: &Arc<str>, why: &str) {
        let found = self.conns.indices().into_iter().find(|&i| matches!(self.conns.get_mut(i).map(|c| &c.kind), Some(Kind::Pull(p)) if p.name == *name));
        if let Some(idx) = found {
            self.doom(idx, why.to_owned(), false);
        }
    }

    /// A pull's connection is closed: its local stream ends as a publisher leaving.
    pub(super) fn pull_closed(&mut self, now: Instant, pc: PullConn, why: &str) {
        WorkerStats::gauge(&self.stats().pulls, -1);
        // Lost the origin itself (not its stream): it may be dead; the control thread
        // checks its heartbeat now instead of at the next stale one.
        let lost = why == "peer closed" || why.starts_with("connect ") || why.starts_with("read error") || why.starts_with("write error");
        if lost {
            if let Some(cl) = &self.shared.cluster {
                cl.origin_unreachable(&pc.origin, now);
            }
        }
        let why = if why == "peer closed" { "the origin closed the connection" } else { why };
        crate::info!("cluster: pull of {} from {} ended: {why}", crate::log::peer_str(&pc.name), pc.addr);
        if let Some(r) = pc.reservation {
            self.relay.cancel(r);
        } else {
            self.relay.handle_unpublish(now, &pc.name);
            self.apply_relay(now);
        }
    }
}

/// The origin's play URL for `name`: app `cluster`, the name as the stream key
/// (set as it is: a name need not be a valid URL segment). With `--auth-secret`
/// the key carries a play token for the name, signed with the secret every node
/// of a cluster shares, so an origin that requires tokens lets its peers pull.
fn pull_url(origin: &str, name: &str) -> Option<PushUrl> {
    let mut u = PushUrl::parse(&format!("{origin}/cluster/x")).ok()?;
    u.key = name.to_owned();
    u.display = format!("{origin}/cluster/{name}");
    Some(u)
}
