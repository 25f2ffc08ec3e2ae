//! WebRTC playback in a worker: Flashphoner `playStream` / `stopStream` and WHEP
//! (`POST /whep/NAME`, `DELETE` on its Location), the viewers this worker owns,
//! and their datagrams. A viewer is a sink of the relay ([`Sink::WebRtc`]): it
//! joins the stream when ICE and DTLS are up, gets the frames the relay decides
//! (`viewer_send`), and leaves when it stops, fails, or the publisher is gone.
//!
//! Sink ids of viewers have bit 31 set (connections' never do), so the relay's
//! actions find their way here.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::super::csprng;
use super::super::hook::{HookAction, HookQuery};
use super::super::limits::Refusal;
use super::rtc::{OwnedRequest, Refused};
use super::{Kind, Timer, Waiting, Worker};
use crate::proto::signaling::{self as sig, StreamMedia};
use crate::relay::auth::AuthAction;
use crate::relay::rtc_viewer::{RtcViewer, ViewerEvent, ViewerSecrets};
use crate::relay::webrtc::{RtcError, RtcSecrets};
use crate::relay::{PlayOutcome, Sink, SinkId, SinkStatus, StreamStats, WorkerStats};

/// Viewer sink ids: bit 31 of the low word.
const VIEWER_BIT: u64 = 1 << 31;

pub fn viewer_sink(slot: usize, gen: u32) -> SinkId {
    SinkId((u64::from(gen) << 32) | VIEWER_BIT | slot as u64)
}

pub fn is_viewer(sink: SinkId) -> bool {
    sink.0 & VIEWER_BIT != 0
}

fn viewer_slot(sink: SinkId) -> (usize, u32) {
    ((sink.0 & (VIEWER_BIT - 1)) as usize, (sink.0 >> 32) as u32)
}

/// A Flashphoner `playStream`, as far as the server needs it.
#[derive(Debug, Clone)]
pub struct PlayReq {
    pub media_session_id: String,
    pub name: String,
    pub sdp: String,
    pub token: Option<String>,
    pub custom: serde_json::Value,
}

impl PlayReq {
    fn from_json(v: &serde_json::Value) -> Self {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        let custom = v.get("custom").cloned().unwrap_or(serde_json::Value::Null);
        let token = custom.get("token").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).map(str::to_owned);
        PlayReq { media_session_id: s("mediaSessionId"), name: s("name"), sdp: s("sdp"), token, custom }
    }
}

const PLAY_MEDIA: StreamMedia = StreamMedia { published: false, has_video: true, has_audio: true };

#[derive(Debug, Clone)]
pub enum ViewOwner {
    Ws { idx: usize, gen: u32, media_session_id: String },
    Whep { resource: String },
}

pub struct Viewer {
    v: RtcViewer,
    owner: ViewOwner,
    name: Arc<str>,
    /// Joined the relay (after ICE and DTLS).
    joined: bool,
    /// PLAYING was told.
    playing: bool,
    stats: Option<Arc<StreamStats>>,
    pending_ip: Option<IpAddr>,
    /// Counted in `--max-viewers` (from this address) until it ends.
    peer: IpAddr,
    remote: Option<SocketAddr>,
    armed: super::Armed,
    /// The backlog the relay is told while the viewer reports heavy loss: over the
    /// player queue limit (inter frames dropped), under twice it (keyframes kept).
    congested_bytes: usize,
    /// Plays the stream's transcoded video (B-frames, or a profile it lacks).
    transcoded: bool,
}

impl Worker {
    // ---- Flashphoner ----------------------------------------------------------------

    pub(super) fn ws_play(&mut self, now: Instant, idx: usize, v: &serde_json::Value) {
        let mut req = PlayReq::from_json(v);
        let gen = self.conns.gen(idx).unwrap_or(0);
        let (peer_ip, conn_token, conn_custom, app) = match self.conns.get_mut(idx) {
            Some(c) => match &c.kind {
                Kind::Ws(w) => (c.peer.ip(), w.token.clone(), w.custom.clone(), w.app_key.clone().unwrap_or_default()),
                _ => return,
            },
            None => return,
        };
        if req.token.is_none() {
            req.token = conn_token;
        }
        let key = req.name.split('?').next().unwrap_or(&req.name).to_owned();
        if self.hook.is_some() && !self.shared.access.token_grants(req.token.as_deref(), AuthAction::Play, &key, peer_ip) {
            let mut object = v.clone();
            if let Some(o) = object.as_object_mut() {
                o.remove("sdp");
            }
            let q = HookQuery {
                action: HookAction::Play,
                protocol: "webrtc",
                name: key,
                app,
                ip: peer_ip,
                query: req.name.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default(),
                token: req.token.clone(),
                custom: if req.custom.is_null() { conn_custom.unwrap_or(serde_json::Value::Null) } else { req.custom.clone() },
                object: Some(object),
            };
            self.hook_ask(now, q, Waiting::WsPlay { idx, gen, req: Box::new(req) });
            return;
        }
        if let Err(why) = self.shared.access.authorize(req.token.as_deref(), AuthAction::Play, &key, peer_ip) {
            crate::info!("ws {peer_ip}: play {pname} denied: {}", why.reason(), pname = crate::log::peer_str(&key));
            self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some("Restricted access"), PLAY_MEDIA));
            return;
        }
        self.ws_play_allowed(now, idx, gen, req);
    }

    /// A Flashphoner play held for the auth hook: go on, or answer FAILED.
    pub(super) fn ws_play_verdict(&mut self, now: Instant, idx: usize, gen: u32, req: PlayReq, verdict: Result<(), String>) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let peer = c.peer;
        match verdict {
            Ok(()) => self.ws_play_allowed(now, idx, gen, req),
            Err(why) => {
                crate::info!("ws {peer}: play {pname} denied: {why}", pname = crate::log::peer_str(&req.name));
                self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some("Restricted access"), PLAY_MEDIA));
            }
        }
    }

    fn ws_play_allowed(&mut self, now: Instant, idx: usize, gen: u32, req: PlayReq) {
        let (peer, local_ip, count) = match self.conns.get_mut(idx) {
            Some(c) => {
                let n = match &c.kind {
                    Kind::Ws(w) => w.sessions.len() + w.viewers.len(),
                    _ => return,
                };
                (c.peer, c.sock.local_addr().ok().map(|a| a.ip()), n)
            }
            None => return,
        };
        if count >= super::rtc::MAX_SESSIONS_PER_WS {
            self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some("Too many streams on one connection"), PLAY_MEDIA));
            return;
        }
        let owner = ViewOwner::Ws { idx, gen, media_session_id: req.media_session_id.clone() };
        match self.view_start(now, &req.name, &req.sdp, peer.ip(), local_ip, owner) {
            Ok((answer, slot)) => {
                if let Some(Kind::Ws(w)) = self.conns.get_mut(idx).map(|c| &mut c.kind) {
                    w.viewers.push((req.media_session_id.clone(), slot));
                }
                self.ws_send(idx, &sig::set_remote_sdp(&req.media_session_id, &answer));
            }
            Err(refused) => {
                let why = refused.info();
                crate::info!("ws {peer}: play {pname} failed: {why}", pname = crate::log::peer_str(&req.name));
                self.ws_send(idx, &sig::stream_status(&req.media_session_id, &req.name, sig::STATUS_FAILED, Some(&why), PLAY_MEDIA));
            }
        }
    }

    /// `stopStream` of a viewer (a publisher's is `unPublishStream`).
    pub(super) fn ws_stop(&mut self, now: Instant, idx: usize, v: &serde_json::Value) {
        let id = v.get("mediaSessionId").and_then(|x| x.as_str()).unwrap_or("");
        let slot = match self.conns.get_mut(idx).map(|c| &c.kind) {
            Some(Kind::Ws(w)) => w.viewers.iter().find(|(m, _)| m == id).map(|(_, s)| *s),
            _ => None,
        };
        if let Some(s) = slot {
            self.view_stop(now, s, None);
        }
    }

    // ---- WHEP -----------------------------------------------------------------------

    /// A WHEP POST held for the auth hook: answer it now.
    pub(super) fn whep_verdict(&mut self, now: Instant, idx: usize, gen: u32, req: &OwnedRequest, verdict: Result<(), String>) {
        let Some(c) = self.conns.get_gen_mut(idx, gen) else { return };
        let peer = c.peer;
        let resp = match verdict {
            Ok(()) => self.whep_play(now, idx, req),
            Err(why) => {
                crate::info!("whep {peer}: play denied: {why}");
                super::rtc::plain(&self.whip_cors(req), 403, "Forbidden", "", "Restricted access\n")
            }
        };
        self.http_answer(idx, resp);
    }

    /// Start the WHEP viewer of an allowed POST; the HTTP response.
    pub(super) fn whep_play(&mut self, now: Instant, idx: usize, req: &OwnedRequest) -> Vec<u8> {
        let cors = self.whip_cors(req);
        let rest = req.path.strip_prefix("/whep").unwrap_or("").trim_start_matches('/').trim_end_matches('/');
        let key = rest.split('?').next().unwrap_or(rest).to_owned();
        let offer = std::str::from_utf8(&req.body).unwrap_or("");
        let peer = self.conns.get_mut(idx).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer);
        let local_ip = self.conns.get_mut(idx).and_then(|c| c.sock.local_addr().ok()).map(|a| a.ip());
        let resource = format!("{}-{}", self.id, csprng::hex128());
        match self.view_start(now, &key, offer, peer.ip(), local_ip, ViewOwner::Whep { resource: resource.clone() }) {
            Ok((answer, _)) => {
                let location = format!("/whep/{key}/{resource}");
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
                if matches!(refused, Refused::Busy { .. } | Refused::TooManyViewers { .. }) {
                    // A budget refusal is what a flood gets, thousands a second: not at info.
                    crate::debug!("whep {peer}: play {pname} refused: {}", refused.info(), pname = crate::log::peer_str(&key));
                } else {
                    crate::info!("whep {peer}: play {pname} refused: {}", refused.info(), pname = crate::log::peer_str(&key));
                }
                super::rtc::plain(&cors, status, reason, "", &format!("{}\n", refused.info()))
            }
        }
    }

    // ---- viewers --------------------------------------------------------------------

    /// Check the stream, build the viewer, return its answer and slot; or why not.
    fn view_start(&mut self, now: Instant, name: &str, offer: &str, peer: IpAddr, local_ip: Option<IpAddr>, owner: ViewOwner) -> Result<(String, usize), Refused> {
        let name: Arc<str> = name.split('?').next().unwrap_or(name).into();
        if name.is_empty() || name.len() > 256 {
            return Err(Refused::BadName);
        }
        let reg = &self.shared.registry;
        let live = reg.is_live(&name) || reg.remote_url(&name).is_some();
        if !live && !self.shared.cfg.webrtc_waits_for_unknown() {
            return Err(Refused::NotFound);
        }
        let stats = reg.stats(&name);
        let transcode = self.shared.cfg.transcode > 0;
        let mut profile = None;
        let mut transcoded = false;
        // Transcodes run where RTMP-fed streams are published (an RTMP encoder, a cluster
        // pull); a browser's H.264 has no B-frames, and its profile is what it offered.
        let publisher = reg.publisher(&name);
        let can_transcode = transcode && publisher.is_some_and(|(_, src)| src != "webrtc");
        if let Some(s) = stats.as_ref().filter(|_| live) {
            if s.has_bframes.load(Relaxed) != 0 {
                if !transcode {
                    crate::info!("webrtc play {pname}: the source's H.264 has B-frames, which browsers cannot play, and --transcode is off", pname = crate::log::peer_str(&name));
                    return Err(Refused::Session(RtcError::TranscodeRequired));
                }
                // A stream not transcoded yet needs a free slot on its publisher's core.
                let owner_full = publisher.and_then(|(core, _)| self.shared.workers.get(core)).is_some_and(|w| w.transcodes.load(Relaxed) >= i64::from(self.shared.cfg.transcode));
                if s.transcoded_viewers.load(Relaxed) <= 0 && (owner_full || s.transcode_refused.load(Relaxed) != 0) {
                    crate::info!("webrtc play {pname}: needs an H.264 transcode, and its publisher's core runs --transcode {} already", self.shared.cfg.transcode, pname = crate::log::peer_str(&name));
                    return Err(Refused::Session(RtcError::NoTranscoder));
                }
                transcoded = true;
            }
            let p = s.video_profile.load(Relaxed);
            if p != 0 && !transcoded {
                profile = Some(((p >> 8) as u8, p as u8));
            }
        }
        if let Err(r) = self.shared.viewers.admit((), peer) {
            return Err(Refused::TooManyViewers { per_ip: r == Refusal::PerIp });
        }
        if let Err(r) = self.shared.pending_webrtc.admit((), peer) {
            self.shared.viewers.release((), peer);
            return Err(Refused::Busy { per_ip: r == Refusal::PerIp });
        }
        let cands = self.rtc_candidates(local_ip);
        let secrets = ViewerSecrets::from_random(RtcSecrets::from_random(&csprng::bytes()), &csprng::bytes());
        let stream = stats.unwrap_or_default();
        let mut made = RtcViewer::new(Arc::clone(&name), offer, &self.shared.identity, &cands, secrets.clone(), profile, now, Arc::clone(&stream));
        if can_transcode && matches!(made, Err(RtcError::TranscodeRequired)) {
            // The viewer offered no profile of the source's: constrained baseline, transcoded.
            transcoded = true;
            made = RtcViewer::new(Arc::clone(&name), offer, &self.shared.identity, &cands, secrets, None, now, stream);
        }
        let viewer = match made {
            Ok(v) => v,
            Err(e) => {
                self.shared.pending_webrtc.release((), peer);
                self.shared.viewers.release((), peer);
                if matches!(e, RtcError::TranscodeRequired) {
                    crate::info!("webrtc play {pname}: the viewer offered no H.264 profile of the source's, and {}", if can_transcode { "the transcode failed" } else if transcode { "a browser's stream is not transcoded" } else { "--transcode is off" }, pname = crate::log::peer_str(&name));
                }
                return Err(Refused::Session(e));
            }
        };
        let answer = viewer.answer().to_owned();
        let ufrag = viewer.local_ufrag().to_owned();
        let whep = match &owner {
            ViewOwner::Whep { resource } => Some(resource.clone()),
            ViewOwner::Ws { .. } => None,
        };
        let congested_bytes = self.shared.cfg.queue_limit() * 3 / 2;
        let entry = Viewer { v: viewer, owner, name: Arc::clone(&name), joined: false, playing: false, stats: None, pending_ip: Some(peer), peer, remote: None, armed: super::Armed::default(), congested_bytes, transcoded };
        let (slot, _) = self.rtc.viewers.insert(entry);
        self.rtc.v_by_ufrag.insert(ufrag, slot);
        if let Some(r) = whep {
            self.shared.access.whip_register(&r, self.id, Arc::clone(&name));
            self.rtc.v_by_resource.insert(r, slot);
        }
        crate::info!("webrtc play {pname} on worker {}: waiting for ICE and DTLS", self.id, pname = crate::log::peer_str(&name));
        self.view_arm(slot);
        Ok((answer, slot))
    }

    /// End viewer `slot`: leave the relay, say goodbye (RTCP BYE), tell its owner.
    /// `why` None: its owner asked (stopStream, WHEP DELETE, connection gone).
    pub(super) fn view_stop(&mut self, now: Instant, slot: usize, why: Option<RtcError>) {
        let Some(gen) = self.rtc.viewers.gen(slot) else { return };
        let Some(mut e) = self.rtc.viewers.remove(slot) else { return };
        e.v.close();
        while let Some((to, d)) = e.v.poll_transmit() {
            let _ = self.rtc.udp.send_to(&d, to);
        }
        self.rtc.v_by_ufrag.retain(|_, s| *s != slot);
        self.rtc.v_by_addr.retain(|_, s| *s != slot);
        self.rtc.v_by_resource.retain(|_, s| *s != slot);
        if let ViewOwner::Whep { resource } = &e.owner {
            self.shared.access.whip_forget(resource);
        }
        if let Some(ip) = e.pending_ip.take() {
            self.shared.pending_webrtc.release((), ip);
        }
        self.shared.viewers.release((), e.peer);
        if e.joined {
            if let Some(s) = &e.stats {
                let _ = s.webrtc_viewers.fetch_update(Relaxed, Relaxed, |v| Some((v - 1).max(0)));
                if e.transcoded {
                    let _ = s.transcoded_viewers.fetch_update(Relaxed, Relaxed, |v| Some((v - 1).max(0)));
                }
            }
            WorkerStats::gauge(&self.shared.workers[self.id].webrtc_viewers, -1);
            self.relay.handle_leave(now, viewer_sink(slot, gen), false);
            self.apply_relay(now);
        }
        let vs = e.v.stats;
        crate::info!(
            "webrtc play {pname} ended{}: {} packets, {} retransmitted for {} NACKs ({} over the retransmission budget), {} PLI/FIR",
            why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default(),
            vs.packets,
            vs.retransmits,
            vs.nacks,
            vs.resends_refused,
            vs.plis,
            pname = crate::log::peer_str(&e.name)
        );
        if let ViewOwner::Ws { idx, gen, media_session_id } = &e.owner {
            if self.conns.get_gen_mut(*idx, *gen).is_some() {
                let (status, info) = match &why {
                    None => (sig::STATUS_STOPPED, None),
                    Some(w) if !w.is_failure() => (sig::STATUS_STOPPED, Some(w.info())),
                    Some(w) => (sig::STATUS_FAILED, Some(w.info())),
                };
                self.ws_send(*idx, &sig::stream_status(media_session_id, &e.name, status, info.as_deref(), PLAY_MEDIA));
                if let Some(Kind::Ws(w)) = self.conns.get_mut(*idx).map(|c| &mut c.kind) {
                    w.viewers.retain(|(_, s)| *s != slot);
                }
            }
        }
    }

    /// A viewer's datagram (routed by ICE ufrag or nominated address).
    pub(super) fn view_datagram(&mut self, now: Instant, slot: usize, from: SocketAddr, d: &mut [u8]) {
        if let Some(e) = self.rtc.viewers.get_mut(slot) {
            if let Err(why) = e.v.handle_datagram(now, from, d) {
                self.shared.workers[self.id].webrtc_drop(why);
            }
        }
        self.view_drain(now, slot);
    }

    /// Send what the viewer queued, act on its events, arm its timer.
    fn view_drain(&mut self, now: Instant, slot: usize) {
        let Some(e) = self.rtc.viewers.get_mut(slot) else { return };
        let sent = self.rtc.gso.send_all(&self.rtc.udp, || e.v.poll_transmit());
        if sent > 0 {
            WorkerStats::add(&self.shared.workers[self.id].bytes_out, sent);
        }
        let remote = e.v.remote();
        if remote != e.remote {
            if let Some(old) = e.remote {
                self.rtc.v_by_addr.remove(&old);
            }
            if let Some(new) = remote {
                self.rtc.v_by_addr.insert(new, slot);
            }
            e.remote = remote;
        }
        let mut events = Vec::new();
        while let Some(ev) = e.v.poll_event() {
            events.push(ev);
        }
        for ev in events {
            match ev {
                ViewerEvent::Connected => self.view_connected(now, slot),
                ViewerEvent::KeyframeRequest => {
                    let Some(name) = self.rtc.viewers.get_mut(slot).map(|e| Arc::clone(&e.name)) else { return };
                    self.relay.request_keyframe(&name);
                    self.apply_relay(now);
                }
                ViewerEvent::Ended(why) => {
                    self.view_stop(now, slot, Some(why));
                    return;
                }
            }
        }
        self.view_arm(slot);
    }

    /// ICE and DTLS are up: join the stream.
    fn view_connected(&mut self, now: Instant, slot: usize) {
        let Some(gen) = self.rtc.viewers.gen(slot) else { return };
        let Some(e) = self.rtc.viewers.get_mut(slot) else { return };
        if let Some(ip) = e.pending_ip.take() {
            self.shared.pending_webrtc.release((), ip);
        }
        let name = Arc::clone(&e.name);
        let transcoded = e.transcoded;
        let sink = viewer_sink(slot, gen);
        if let Some(cl) = &self.shared.cluster {
            if !self.shared.registry.is_live(&name) {
                // Another node may own it: the control thread looks now (and pulls it).
                cl.nudge();
            }
        }
        let outcome = self.relay.handle_play(now, sink, Sink::WebRtc { transcoded }, &name, &super::ConnBacklog(&self.conns, &self.rtc.viewers));
        if outcome == PlayOutcome::NotFound {
            self.apply_relay(now);
            self.view_stop(now, slot, Some(RtcError::StreamNotFound));
            return;
        }
        let stats = self.shared.registry.stats(&name);
        if let Some(s) = &stats {
            s.webrtc_viewers.fetch_add(1, Relaxed);
            if transcoded {
                s.transcoded_viewers.fetch_add(1, Relaxed);
            }
        }
        WorkerStats::gauge(&self.shared.workers[self.id].webrtc_viewers, 1);
        if let Some(e) = self.rtc.viewers.get_mut(slot) {
            e.joined = true;
            if let Some(s) = &stats {
                e.v.set_stream_stats(Arc::clone(s));
            }
            e.stats = stats;
        }
        crate::info!("webrtc play {pname} on worker {}: ICE and DTLS up, joined ({outcome:?})", self.id, pname = crate::log::peer_str(&name));
        if outcome != PlayOutcome::Waiting {
            self.view_playing(slot);
        }
        if transcoded {
            // The transcoded video starts on a keyframe made for this viewer.
            self.relay.request_keyframe(&name);
        }
        self.apply_relay(now);
    }

    fn view_playing(&mut self, slot: usize) {
        let Some(e) = self.rtc.viewers.get_mut(slot) else { return };
        if e.playing {
            return;
        }
        e.playing = true;
        if let ViewOwner::Ws { idx, gen, media_session_id } = e.owner.clone() {
            let name = Arc::clone(&e.name);
            if self.conns.get_gen_mut(idx, gen).is_some() {
                self.ws_send(idx, &sig::stream_status(&media_session_id, &name, sig::STATUS_PLAYING, None, PLAY_MEDIA));
            }
        }
    }

    /// The relay's frame for a viewer sink.
    pub(super) fn viewer_send(&mut self, now: Instant, sink: SinkId, ts: u32, frame: &Arc<crate::relay::Frame>) {
        let (slot, gen) = viewer_slot(sink);
        let Some(e) = self.rtc.viewers.get_gen_mut(slot, gen) else { return };
        e.v.send_frame(now, ts, frame);
        self.view_drain(now, slot);
    }

    /// A relay status for a viewer sink.
    pub(super) fn viewer_notify(&mut self, now: Instant, sink: SinkId, status: SinkStatus) {
        let (slot, gen) = viewer_slot(sink);
        if self.rtc.viewers.get_gen_mut(slot, gen).is_none() {
            return;
        }
        match status {
            SinkStatus::PublishNotify => self.view_playing(slot),
            SinkStatus::UnpublishNotify => self.view_stop(now, slot, Some(RtcError::PublisherStopped)),
            SinkStatus::Stopped => {}
        }
    }

    pub(super) fn viewer_evict(&mut self, now: Instant, sink: SinkId, reason: &str) {
        let (slot, gen) = viewer_slot(sink);
        let Some(e) = self.rtc.viewers.get_gen_mut(slot, gen) else { return };
        if e.v.congested() {
            // The backlog the relay saw was the one told for a congested viewer: say why.
            let pct = f64::from(e.v.stats.loss_256) * 100.0 / 256.0;
            crate::info!(
                "webrtc play {pname}: evicted: its receiver reports show {pct:.0} % of its video lost after retransmissions, for --evict-after {} s",
                self.shared.cfg.evict_after,
                pname = crate::log::peer_str(&e.name)
            );
        } else {
            crate::info!("webrtc play {pname}: {reason}", pname = crate::log::peer_str(&e.name));
        }
        self.view_stop(now, slot, Some(RtcError::Evicted));
    }

    /// Arm the viewer's timer at its `poll_timeout`, unless the armed one is due no later.
    fn view_arm(&mut self, slot: usize) {
        let Some(gen) = self.rtc.viewers.gen(slot) else { return };
        let Some(e) = self.rtc.viewers.get_mut(slot) else { return };
        if let Some(at) = e.armed.arm(e.v.poll_timeout()) {
            self.timers.insert(at, Timer::Viewer { slot, gen, at });
        }
    }

    pub(super) fn view_timeout(&mut self, now: Instant, slot: usize, gen: u32, at: Instant) {
        let Some(e) = self.rtc.viewers.get_gen_mut(slot, gen) else { return };
        if !e.armed.fire(at) {
            return;
        }
        e.v.handle_timeout(now);
        self.view_drain(now, slot);
    }

    /// End WHEP viewer `resource` if this worker owns it; true if it did.
    pub(super) fn whep_end(&mut self, now: Instant, resource: &str) -> bool {
        match self.rtc.v_by_resource.get(resource).copied() {
            Some(s) => {
                self.view_stop(now, s, None);
                true
            }
            None => false,
        }
    }
}

/// The relay's backlog of a viewer sink, in bytes (datagrams queued and not sent).
pub fn viewer_backlog(viewers: &super::Slab<Viewer>, sink: SinkId) -> usize {
    let (slot, gen) = viewer_slot(sink);
    viewers.get_gen(slot, gen).map_or(0, |e| {
        let queued = e.v.queued() * crate::relay::rtc_viewer::MAX_RTP_PAYLOAD;
        if e.v.congested() {
            queued.max(e.congested_bytes)
        } else {
            queued
        }
    })
}
