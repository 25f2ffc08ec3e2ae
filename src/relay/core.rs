//! `CoreRelay`: every decision about streams that one core makes, with no sockets,
//! no clock and no threads. The per-core shell (`runtime::worker`) feeds it events
//! with `now` and applies the [`Action`]s it returns; a multi-core relay is
//! simulated in one test thread by passing [`CoreMsg`]s between several of them.
//!
//! What it decides:
//! - who owns a name (through the shared [`Registry`], touched on publish,
//!   unpublish, first play and last leave on a core, never per frame);
//! - what a joining sink is sent (metadata, sequence headers, the cached GOP) and
//!   when the GOP is too old, so a keyframe is requested from the publisher;
//! - the cross-core subscription protocol (Subscribe/Start/Media/Stop/Unsubscribe);
//! - the grace window of a vanished publisher, PublishNotify / UnpublishNotify /
//!   Play.Stop;
//! - which frame each sink gets (`PlayerState::deliver`: the drop policy, the
//!   eviction of a sink that stays behind), and how soon it must be written
//!   ([`Flush`]: joins, first keyframes and config at once, the rest within the
//!   coalescing bound).
//!
//! A sink is anything that takes a stream's frames: an RTMP player today
//! ([`Sink::Rtmp`]); WebRTC viewers, RTMP pushes, cluster pulls and recorders get
//! the same frames and the same policy through the same door.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::Frame;
use super::hub::{Snapshot, StreamHub};
use super::player::{Deliver, DropKind, PlayerPolicy, PlayerState};
use super::registry::{PlayLookup, Registry};
use super::stats::StreamStats;
use crate::proto::flv::MediaKind;

/// A sink's id, chosen by the shell (it maps ids to sockets). Opaque to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(pub u64);

/// What kind of output a sink is, and what it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// An RTMP player; `wants_opus` when its `connect` listed Enhanced RTMP Opus.
    Rtmp { wants_opus: bool },
    /// An RTMP push to another server (restream); `wants_opus` when the destination's
    /// connect result listed Enhanced RTMP Opus. Same frames and drop policy as a
    /// player; an evicted push reconnects (the shell decides).
    Push { wants_opus: bool },
    /// A WebRTC viewer (Flashphoner playStream, WHEP): video and Opus audio only;
    /// `transcoded`: the transcoded video ([`Audience::Rtc`](super::Audience::Rtc))
    /// instead of the source's (which has B-frames).
    WebRtc { transcoded: bool },
}

/// Everything that crosses cores: plain data, `Send`, no references.
#[derive(Debug)]
pub enum CoreMsg {
    /// `from` has sinks for `name`: send it every frame.
    Subscribe { name: Arc<str>, from: usize },
    Unsubscribe { name: Arc<str>, from: usize },
    /// The stream is live: `fresh` for a new or returning publisher (sinks get
    /// PublishNotify), false in reply to Subscribe.
    Start { name: Arc<str>, snapshot: Snapshot, fresh: bool, from: usize },
    /// A sink joined on another core and the cached GOP is stale: ask the publisher.
    KeyframeRequest { name: Arc<str> },
    Media { name: Arc<str>, frame: Arc<Frame> },
    /// The publisher left; start the grace window.
    Stop { name: Arc<str> },
    /// A WHIP DELETE for a session this core owns landed on another core: the shell
    /// of this core ends session `resource` (the relay has nothing to do with it).
    EndSession { resource: Box<str> },
    /// An API DELETE of a push this core drives landed on another core (shell only).
    StopPush { id: Arc<str> },
}

impl CoreMsg {
    /// Media may be dropped when a ring is full (counted); control never is.
    pub fn is_media(&self) -> bool {
        matches!(self, CoreMsg::Media { .. })
    }
}

/// Status events a sink is told (RTMP: NetStream.Play.*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkStatus {
    /// A publisher (new, or back after the grace window ran out) started.
    PublishNotify,
    /// The publisher is gone for good (the grace window ran out).
    UnpublishNotify,
    /// The sink stopped playing at its own request (closeStream / deleteStream).
    Stopped,
}

/// How soon the shell must write what a `Send` queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// This turn: joins, first keyframes, configuration, or coalescing disabled.
    Now,
    /// By this deadline at the latest (the sink's oldest unsent frame plus the
    /// coalescing bound); earlier when the core is idle.
    By(Instant),
}

/// Timers the relay asks the shell to arm; handed back through [`CoreRelay::handle_timer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTimer {
    /// The grace window of a stream whose publisher left.
    Grace(Arc<str>),
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Queue `frame` for `sink` at the sink's timestamp `ts`.
    Send { sink: SinkId, ts: u32, frame: Arc<Frame>, flush: Flush },
    /// Tell `sink` a status event about the stream `name`.
    Notify { sink: SinkId, name: Arc<str>, status: SinkStatus },
    /// Post to another core's mesh ring.
    Post { core: usize, msg: CoreMsg },
    ArmTimer { at: Instant, timer: RelayTimer },
    /// Ask this core's publisher of `name` for a keyframe (WebRTC: PLI, rate limited
    /// by the session; RTMP publishers cannot be asked).
    RequestKeyframe { name: Arc<str> },
    /// The sink stayed over its queue limit too long: close it with this reason.
    Evict { sink: SinkId, reason: String },
    /// A live frame born at `born` (the input that completed it) was queued to at
    /// least one sink here, and is all written by `by` (the latest write deadline of
    /// its sinks; None: this turn): the shell measures born → written.
    Delivered { born: Instant, by: Option<Instant> },
}

/// How the shell reports each sink's unsent bytes (the drop policy needs them).
pub trait Backlog {
    fn queued(&self, sink: SinkId) -> usize;
}

/// For tests and for callers that know no sink has a backlog.
impl Backlog for () {
    fn queued(&self, _: SinkId) -> usize {
        0
    }
}

/// Settings of the relay (from the flags).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub gop_cache: bool,
    /// Players are kept this long after their publisher vanished.
    pub grace: Duration,
    /// A cached GOP older than this is stale: a joining sink asks for a keyframe.
    pub keyframe_every: Duration,
    /// Play of a name nobody publishes: wait for it (true) or StreamNotFound.
    pub wait_for_unknown: bool,
    pub policy: PlayerPolicy,
    /// Latency bound of write coalescing (`--write-batch-ms`); None writes every turn.
    pub coalesce: Option<Duration>,
    /// A sink with this much unsent is written at once, coalescing or not.
    pub coalesce_max_bytes: usize,
    /// The process start, the origin of the microsecond stamps in `StreamStats`.
    pub epoch: Instant,
}

/// Counters the shell moves into the process-wide metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayCounters {
    pub drops_inter: u64,
    pub drops_keyframe: u64,
    pub drops_audio: u64,
    pub evictions: u64,
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// Another publisher (on any core) has the name.
    NameInUse,
}

/// A name claimed for a publisher on this core, not yet announced.
#[derive(Debug)]
#[must_use = "a reservation holds the name until published or cancelled"]
pub struct Reservation {
    name: Arc<str>,
    stats: Arc<StreamStats>,
}

impl Reservation {
    /// The stream's shared counters.
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.stats
    }
}

/// What became of a play request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayOutcome {
    /// Live here: joined (sequence headers and GOP are in the actions).
    Live,
    /// Live on core `owner`: subscribed, frames follow.
    Subscribing { owner: usize },
    /// Nobody publishes it yet: waiting (PublishNotify when one starts).
    Waiting,
    /// Nobody publishes it and the server does not wait (StreamNotFound).
    NotFound,
}

#[derive(Debug)]
struct SinkState {
    sink: Sink,
    player: PlayerState,
    /// A `Flush::By` deadline is pending for this sink (its oldest unsent frame's).
    hold_until: Option<Instant>,
    /// Told to the shell as evicted: gets nothing more until it leaves.
    evicted: bool,
    /// Frames dropped for this sink's backlog.
    drops: u64,
}

/// One core's relay. See the module doc.
pub struct CoreRelay {
    core: usize,
    cfg: RelayConfig,
    registry: Arc<Registry>,
    hubs: HashMap<Arc<str>, StreamHub>,
    sinks: HashMap<SinkId, SinkState>,
    actions: VecDeque<Action>,
    pub counters: RelayCounters,
}

/// Cores as a bitmask (registry interest, hub remotes): iterate the set bits.
fn cores_in(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let j = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(j)
    })
}

impl CoreRelay {
    pub fn new(core: usize, cfg: RelayConfig, registry: Arc<Registry>) -> Self {
        CoreRelay {
            core,
            cfg,
            registry,
            hubs: HashMap::new(),
            sinks: HashMap::new(),
            actions: VecDeque::new(),
            counters: RelayCounters::default(),
        }
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// The next action for the shell, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Streams this core holds state for (owned, subscribed or waited for).
    pub fn stream_count(&self) -> usize {
        self.hubs.len()
    }

    pub fn sink_count(&self) -> usize {
        self.sinks.len()
    }

    /// What kind of sink `sink` is, if it is one of ours.
    pub fn sink_kind(&self, sink: SinkId) -> Option<Sink> {
        self.sinks.get(&sink).map(|s| s.sink)
    }

    /// Frames dropped so far for `sink`'s backlog (0 for an unknown sink).
    pub fn sink_drops(&self, sink: SinkId) -> u64 {
        self.sinks.get(&sink).map_or(0, |s| s.drops)
    }

    /// The stream a sink plays, if it is one of ours.
    pub fn sink_stream(&self, sink: SinkId) -> Option<&Arc<str>> {
        self.sinks.get(&sink).map(|s| &s.player.name)
    }

    // ---- publishers ------------------------------------------------------------

    /// Claim `name` for a publisher on this core (BadName / 409 when another core's
    /// publisher has it). Nothing is announced until [`CoreRelay::handle_publish`];
    /// a reservation that is not used is given back with [`CoreRelay::cancel`].
    pub fn reserve(&mut self, name: &Arc<str>, source: &'static str) -> Result<Reservation, PublishError> {
        let (stats, _) = self.registry.claim(name, self.core, source).ok_or(PublishError::NameInUse)?;
        Ok(Reservation { name: Arc::clone(name), stats })
    }

    /// Give back a reservation that never published.
    pub fn cancel(&mut self, r: Reservation) {
        self.registry.release(&r.name, self.core);
    }

    /// The publisher of a reservation starts: this core owns the stream; waiting
    /// sinks here and on other cores are started. Frames then go through
    /// [`CoreRelay::handle_frame`].
    pub fn handle_publish(&mut self, now: Instant, r: Reservation, q: &impl Backlog) -> Arc<StreamStats> {
        let Reservation { name, stats } = r;
        // Sinks may have arrived on other cores since the claim: the registry says who
        // waits now.
        let waiting = self.registry.announce(&name, self.core);
        let hub = self.hub_entry(&name);
        hub.owned = true;
        hub.stats = Some(Arc::clone(&stats));
        hub.remote = waiting;
        hub.start(Snapshot::default());
        for j in cores_in(waiting) {
            self.post(j, CoreMsg::Start { name: Arc::clone(&name), snapshot: Snapshot::default(), fresh: true, from: self.core });
        }
        self.announce_start(now, &name, true, q);
        stats
    }

    /// The local publisher of `name` is gone: grace window here and on every
    /// subscriber core.
    pub fn handle_unpublish(&mut self, now: Instant, name: &Arc<str>) {
        self.registry.release(name, self.core);
        let mut remote = 0;
        if let Some(hub) = self.hubs.get_mut(name) {
            hub.owned = false;
            remote = std::mem::take(&mut hub.remote);
        }
        for j in cores_in(remote) {
            self.post(j, CoreMsg::Stop { name: Arc::clone(name) });
        }
        self.stop_hub(now, name);
    }

    /// A frame from this core's publisher of `name`: stamp, freeze, cache, send to
    /// subscriber cores, fan out here.
    pub fn handle_frame(&mut self, now: Instant, name: &Arc<str>, mut frame: Frame, q: &impl Backlog) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        if !hub.owned {
            return;
        }
        if frame.config && frame.kind != MediaKind::Data {
            hub.seq_gen = hub.seq_gen.wrapping_add(1);
        }
        frame.seq_gen = hub.seq_gen;
        let frame = frame.shared();
        if frame.keyframe && !frame.config && frame.kind == MediaKind::Video {
            if let Some(st) = &hub.stats {
                let us = now.saturating_duration_since(self.cfg.epoch).as_micros() as u64;
                st.keyframe_at_us.store(us.max(1), Ordering::Relaxed);
            }
        }
        let remote = hub.remote;
        for j in cores_in(remote) {
            self.post(j, CoreMsg::Media { name: Arc::clone(name), frame: Arc::clone(&frame) });
        }
        self.deliver(now, name, &frame, q);
    }

    // ---- sinks -----------------------------------------------------------------

    /// `sink` wants to play `name`.
    pub fn handle_play(&mut self, now: Instant, sink: SinkId, kind: Sink, name: &Arc<str>, q: &impl Backlog) -> PlayOutcome {
        if self.sinks.contains_key(&sink) {
            self.handle_leave(now, sink, false);
        }
        let first_here = self.hubs.get(name).is_none_or(|h| h.players.is_empty());
        let mut stats = None;
        let mut remote_owner = None;
        if first_here {
            let (look, st) = self.registry.add_interest(name, self.core, self.cfg.wait_for_unknown);
            if !self.cfg.wait_for_unknown && look == PlayLookup::Absent {
                if st.is_some() {
                    let _ = self.registry.drop_interest(name, self.core);
                }
                return PlayOutcome::NotFound;
            }
            if let PlayLookup::Remote(owner) = look {
                self.post(owner, CoreMsg::Subscribe { name: Arc::clone(name), from: self.core });
                remote_owner = Some(owner);
            }
            stats = st;
        } else if !self.cfg.wait_for_unknown && !self.hubs.get(name).is_some_and(|h| h.live) {
            return PlayOutcome::NotFound;
        }
        if let Some(s) = stats.or_else(|| self.registry.stats(name)) {
            s.players.fetch_add(1, Ordering::Relaxed);
        }
        let core = self.core;
        let hub = self.hub_entry(name);
        hub.add_player(sink);
        let live = hub.live;
        let owner = if hub.owned { Some(core) } else { hub.owner_core };
        let mut player = PlayerState::new(Arc::clone(name), hub.epoch);
        match kind {
            Sink::Rtmp { wants_opus } | Sink::Push { wants_opus } => player.wants_opus = wants_opus,
            Sink::WebRtc { transcoded } => {
                player.webrtc = true;
                player.rtc_transcoded = transcoded;
            }
        }
        self.sinks.insert(sink, SinkState { sink: kind, player, hold_until: None, evicted: false, drops: 0 });
        if !live {
            return match remote_owner {
                Some(owner) => PlayOutcome::Subscribing { owner },
                None => PlayOutcome::Waiting,
            };
        }
        self.join(now, name, sink, q);
        // A stale GOP (WebRTC publishers send keyframes only when asked) means a long
        // wait or a long catch-up for this sink: ask for a fresh one.
        let stale = self.hubs.get(name).is_some_and(|h| {
            h.gop_started().is_none_or(|t| now.saturating_duration_since(t) > self.cfg.keyframe_every)
        });
        if stale {
            match owner {
                Some(o) if o == self.core => self.actions.push_back(Action::RequestKeyframe { name: Arc::clone(name) }),
                Some(o) => self.post(o, CoreMsg::KeyframeRequest { name: Arc::clone(name) }),
                None => {}
            }
        }
        PlayOutcome::Live
    }

    /// The cached AVC sequence header of `name` (the source's), if this core has one.
    pub fn video_config(&self, name: &str) -> Option<Arc<Frame>> {
        self.hubs.get(name).and_then(|h| h.cached().video_cfg.clone())
    }

    /// A sink asked for a keyframe of `name` (a WebRTC viewer's PLI/FIR): ask the
    /// publisher, here or on its core. RTMP publishers cannot be asked; their viewers
    /// started on the cached GOP's keyframe.
    pub fn request_keyframe(&mut self, name: &Arc<str>) {
        let Some(hub) = self.hubs.get(name) else { return };
        match if hub.owned { Some(self.core) } else { hub.owner_core } {
            Some(o) if o == self.core => self.actions.push_back(Action::RequestKeyframe { name: Arc::clone(name) }),
            Some(o) => self.post(o, CoreMsg::KeyframeRequest { name: Arc::clone(name) }),
            None => {}
        }
    }

    /// `sink` stops playing. `stopped_by_request`: it asked (closeStream /
    /// deleteStream), so it is told `Stopped` first; false when it disconnected.
    pub fn handle_leave(&mut self, _now: Instant, sink: SinkId, stopped_by_request: bool) {
        let Some(s) = self.sinks.remove(&sink) else { return };
        let name = s.player.name;
        if stopped_by_request {
            self.actions.push_back(Action::Notify { sink, name: Arc::clone(&name), status: SinkStatus::Stopped });
        }
        if let Some(st) = self.registry.stats(&name) {
            // Saturating: a count never goes below zero, whatever the order of events.
            let _ = st.players.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some((v - 1).max(0)));
        }
        let Some(hub) = self.hubs.get_mut(&name) else { return };
        hub.remove_player(sink);
        if hub.players.is_empty() {
            if let Some(owner) = self.registry.drop_interest(&name, self.core) {
                self.post(owner, CoreMsg::Unsubscribe { name: Arc::clone(&name), from: self.core });
            }
            self.remove_if_idle(&name);
        }
    }

    /// Pause (Flash `pause`): unpausing restarts at the next keyframe without moving
    /// the sink's timeline.
    pub fn handle_pause(&mut self, sink: SinkId, paused: bool) {
        if let Some(s) = self.sinks.get_mut(&sink) {
            s.player.paused = paused;
            if !paused {
                let bumped = s.player.epoch_id().wrapping_add(0x8000_0000);
                s.player.rebase(bumped);
            }
        }
    }

    /// `receiveAudio` / `receiveVideo`.
    pub fn handle_receive(&mut self, sink: SinkId, kind: MediaKind, on: bool) {
        if let Some(s) = self.sinks.get_mut(&sink) {
            match kind {
                MediaKind::Audio => s.player.audio_on = on,
                MediaKind::Video => s.player.video_on = on,
                MediaKind::Data => {}
            }
        }
    }

    /// The shell wrote everything `sink` had pending (its coalescing deadline is gone).
    pub fn handle_flushed(&mut self, sink: SinkId) {
        if let Some(s) = self.sinks.get_mut(&sink) {
            s.hold_until = None;
        }
    }

    // ---- other cores and timers ------------------------------------------------

    pub fn handle_core_msg(&mut self, now: Instant, msg: CoreMsg, q: &impl Backlog) {
        match msg {
            CoreMsg::Subscribe { name, from } => {
                let Some(hub) = self.hubs.get_mut(&name) else { return };
                if !hub.owned {
                    // The publisher left meanwhile; `from` stays interested in the
                    // registry and the next publisher will start it.
                    return;
                }
                hub.remote |= 1u64 << from;
                let snapshot = hub.snapshot();
                self.post(from, CoreMsg::Start { name, snapshot, fresh: false, from: self.core });
            }
            CoreMsg::EndSession { .. } | CoreMsg::StopPush { .. } => {}
            CoreMsg::Unsubscribe { name, from } => {
                if let Some(hub) = self.hubs.get_mut(&name) {
                    hub.remote &= !(1u64 << from);
                }
                self.remove_if_idle(&name);
            }
            CoreMsg::Start { name, snapshot, fresh, from } => {
                let Some(hub) = self.hubs.get_mut(&name) else { return };
                if hub.players.is_empty() {
                    return;
                }
                hub.owner_core = Some(from);
                hub.start(snapshot);
                self.announce_start(now, &name, fresh, q);
            }
            CoreMsg::Media { name, frame } => {
                if let Some(hub) = self.hubs.get(&name) {
                    if !hub.owned {
                        self.deliver(now, &name, &frame, q);
                    }
                }
            }
            CoreMsg::KeyframeRequest { name } => {
                if self.hubs.get(&name).is_some_and(|h| h.owned) {
                    self.actions.push_back(Action::RequestKeyframe { name });
                }
            }
            CoreMsg::Stop { name } => self.stop_hub(now, &name),
        }
    }

    pub fn handle_timer(&mut self, now: Instant, t: RelayTimer) {
        match t {
            RelayTimer::Grace(name) => {
                let Some(hub) = self.hubs.get_mut(&name) else { return };
                match hub.grace_until {
                    Some(until) if !hub.live && until <= now => {}
                    _ => return,
                }
                hub.grace_until = None;
                hub.announced_gone = true;
                let players = hub.players.clone();
                for sink in players {
                    self.actions.push_back(Action::Notify { sink, name: Arc::clone(&name), status: SinkStatus::UnpublishNotify });
                }
                self.remove_if_idle(&name);
            }
        }
    }

    // ---- internals -------------------------------------------------------------

    fn post(&mut self, core: usize, msg: CoreMsg) {
        self.actions.push_back(Action::Post { core, msg });
    }

    fn hub_entry(&mut self, name: &Arc<str>) -> &mut StreamHub {
        let gop = self.cfg.gop_cache;
        self.hubs.entry(Arc::clone(name)).or_insert_with(|| StreamHub::new(Arc::clone(name), gop))
    }

    fn remove_if_idle(&mut self, name: &Arc<str>) {
        if self.hubs.get(name).is_some_and(StreamHub::is_idle) {
            self.hubs.remove(name);
        }
    }

    fn stop_hub(&mut self, now: Instant, name: &Arc<str>) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        let until = now + self.cfg.grace;
        hub.stop(until);
        if hub.is_idle() {
            self.hubs.remove(name);
            return;
        }
        self.actions.push_back(Action::ArmTimer { at: until, timer: RelayTimer::Grace(Arc::clone(name)) });
    }

    /// A publisher started: tell waiting sinks (PublishNotify when `fresh` and they
    /// were told it was gone) and send them the cached start.
    fn announce_start(&mut self, now: Instant, name: &Arc<str>, fresh: bool, q: &impl Backlog) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        // PublishNotify only to sinks that were told the stream was gone (or never saw
        // a publisher): a publisher back within the grace window is a blip, not news.
        let notify = fresh && hub.announced_gone;
        hub.announced_gone = false;
        let epoch = hub.epoch;
        let players = hub.players.clone();
        for sink in &players {
            let Some(s) = self.sinks.get_mut(sink) else { continue };
            s.player.rebase(epoch);
            if notify {
                self.actions.push_back(Action::Notify { sink: *sink, name: Arc::clone(name), status: SinkStatus::PublishNotify });
            }
        }
        for sink in players {
            self.join(now, name, sink, q);
        }
    }

    /// Send a sink what it needs to start: metadata, sequence headers, the cached
    /// GOP. Never held: joins stay instant.
    fn join(&mut self, now: Instant, name: &Arc<str>, sink: SinkId, q: &impl Backlog) {
        let Some(hub) = self.hubs.get(name) else { return };
        let snap = hub.cached().clone();
        let has_video = hub.has_video;
        let start = snap.meta.iter().chain(snap.video_cfg.iter()).chain(snap.video_cfg_rtc.iter()).chain(snap.audio_cfg.iter()).chain(snap.audio_cfg_opus.iter());
        for f in start.chain(snap.gop.iter()) {
            let _ = self.send_to(now, sink, f, has_video, q, true);
        }
    }

    /// A frame of `name` on this core: cache it, then every local sink decides.
    fn deliver(&mut self, now: Instant, name: &Arc<str>, frame: &Arc<Frame>, q: &impl Backlog) {
        let Some(hub) = self.hubs.get_mut(name) else { return };
        hub.ingest(frame, now);
        let has_video = hub.has_video;
        let players = std::mem::take(&mut hub.players);
        let mut sent = false;
        let mut by: Option<Instant> = None;
        for sink in &players {
            match self.send_to(now, *sink, frame, has_video, q, false) {
                Some(Flush::By(t)) => {
                    sent = true;
                    by = Some(by.map_or(t, |b: Instant| b.max(t)));
                }
                Some(Flush::Now) => sent = true,
                None => {}
            }
        }
        if let Some(hub) = self.hubs.get_mut(name) {
            let mut players = players;
            players.append(&mut hub.players);
            hub.players = players;
        }
        if let (true, Some(born)) = (sent, frame.born) {
            self.actions.push_back(Action::Delivered { born, by });
        }
    }

    /// One sink's decision on one frame. Returns how soon it is written, if queued.
    fn send_to(&mut self, now: Instant, sink: SinkId, frame: &Arc<Frame>, has_video: bool, q: &impl Backlog, join: bool) -> Option<Flush> {
        let s = self.sinks.get_mut(&sink)?;
        if s.evicted {
            return None;
        }
        let queued = q.queued(sink);
        let was_started = s.player.is_started();
        match s.player.deliver(frame, queued, has_video, now, &self.cfg.policy) {
            Deliver::Send(ts) => {
                let flush = match self.cfg.coalesce {
                    Some(bound) if !join && was_started && !frame.config && queued < self.cfg.coalesce_max_bytes => {
                        Flush::By(*s.hold_until.get_or_insert(now + bound))
                    }
                    _ => Flush::Now,
                };
                self.actions.push_back(Action::Send { sink, ts, frame: Arc::clone(frame), flush });
                Some(flush)
            }
            Deliver::Skip => None,
            Deliver::Dropped(k) => {
                s.drops += 1;
                match k {
                    DropKind::Inter => self.counters.drops_inter += 1,
                    DropKind::Keyframe => self.counters.drops_keyframe += 1,
                    DropKind::Audio => self.counters.drops_audio += 1,
                }
                None
            }
            Deliver::Evict => {
                self.counters.evictions += 1;
                let reason = format!(
                    "evicted: send queue over {} KiB for {:.1} s",
                    self.cfg.policy.queue_limit / 1024,
                    self.cfg.policy.evict_after.as_secs_f64()
                );
                self.actions.push_back(Action::Evict { sink, reason });
                // The shell closes it and reports the leave; until then it gets nothing.
                s.evicted = true;
                None
            }
        }
    }
}

/// Virtual time, no sockets: several `CoreRelay`s in one thread, their mesh
/// messages delivered by the test, sinks that record what they are sent.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const GRACE: Duration = Duration::from_secs(3);

    #[derive(Debug, Default)]
    struct SinkLog {
        /// (sink ts, kind, keyframe, config)
        frames: Vec<(u32, MediaKind, bool, bool)>,
        statuses: Vec<SinkStatus>,
        evicted: bool,
        /// Bytes sent and not yet "read" by this sink.
        queued: usize,
        /// A slow sink never reads.
        slow: bool,
    }

    /// Cores, their sinks, and the mesh between them.
    struct Sim {
        now: Instant,
        cores: Vec<CoreRelay>,
        sinks: RefCell<HashMap<SinkId, SinkLog>>,
        timers: Vec<(Instant, usize, RelayTimer)>,
        keyframe_requests: Vec<(usize, Arc<str>)>,
    }

    struct View<'a>(&'a RefCell<HashMap<SinkId, SinkLog>>);
    impl Backlog for View<'_> {
        fn queued(&self, sink: SinkId) -> usize {
            self.0.borrow().get(&sink).map_or(0, |s| s.queued)
        }
    }

    fn cfg(t0: Instant) -> RelayConfig {
        RelayConfig {
            gop_cache: true,
            grace: GRACE,
            keyframe_every: Duration::from_secs(2),
            wait_for_unknown: true,
            policy: PlayerPolicy { queue_limit: 4000, evict_after: Duration::from_secs(2) },
            coalesce: Some(Duration::from_millis(20)),
            coalesce_max_bytes: 64 * 1024,
            epoch: t0,
        }
    }

    impl Sim {
        fn new(n: usize) -> Self {
            let t0 = crate::runtime::now();
            let reg = Arc::new(Registry::default());
            Sim {
                now: t0,
                cores: (0..n).map(|i| CoreRelay::new(i, cfg(t0), Arc::clone(&reg))).collect(),
                sinks: RefCell::new(HashMap::new()),
                timers: Vec::new(),
                keyframe_requests: Vec::new(),
            }
        }

        /// Apply every core's actions until the mesh is quiet (a shell's turns).
        fn settle(&mut self) {
            loop {
                let mut posts = Vec::new();
                for (i, c) in self.cores.iter_mut().enumerate() {
                    while let Some(a) = c.poll_action() {
                        match a {
                            Action::Send { sink, ts, frame, .. } => {
                                let mut sinks = self.sinks.borrow_mut();
                                let s = sinks.get_mut(&sink).unwrap();
                                s.frames.push((ts, frame.kind, frame.keyframe, frame.config));
                                if s.slow {
                                    s.queued += frame.len();
                                }
                            }
                            Action::Notify { sink, status, .. } => self.sinks.borrow_mut().get_mut(&sink).unwrap().statuses.push(status),
                            Action::Post { core, msg } => posts.push((core, msg)),
                            Action::ArmTimer { at, timer } => self.timers.push((at, i, timer)),
                            Action::RequestKeyframe { name } => self.keyframe_requests.push((i, name)),
                            Action::Evict { sink, .. } => {
                                self.sinks.borrow_mut().get_mut(&sink).unwrap().evicted = true;
                                c.handle_leave(self.now, sink, false);
                            }
                            Action::Delivered { .. } => {}
                        }
                    }
                }
                if posts.is_empty() {
                    return;
                }
                for (core, msg) in posts {
                    let now = self.now;
                    self.cores[core].handle_core_msg(now, msg, &View(&self.sinks));
                }
            }
        }

        /// Advance virtual time, firing due timers.
        fn advance(&mut self, d: Duration) {
            self.now += d;
            let now = self.now;
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers).into_iter().partition(|(at, _, _)| *at <= now);
            self.timers = keep;
            for (_, core, t) in due {
                self.cores[core].handle_timer(now, t);
            }
            self.settle();
        }

        fn play(&mut self, core: usize, sink: u64, name: &str) -> PlayOutcome {
            let id = SinkId(sink);
            self.sinks.borrow_mut().insert(id, SinkLog::default());
            let now = self.now;
            let out = self.cores[core].handle_play(now, id, Sink::Rtmp { wants_opus: false }, &name.into(), &View(&self.sinks));
            self.settle();
            out
        }

        fn publish(&mut self, core: usize, name: &str) -> Result<(), PublishError> {
            let now = self.now;
            let r = self.cores[core].reserve(&name.into(), "rtmp")?;
            let _ = self.cores[core].handle_publish(now, r, &View(&self.sinks));
            self.settle();
            Ok(())
        }

        fn frame(&mut self, core: usize, name: &str, f: Frame) {
            let now = self.now;
            self.cores[core].handle_frame(now, &name.into(), f, &View(&self.sinks));
            self.settle();
        }

        /// 1 s of a 25 fps stream with 50 audio packets/s, a keyframe every `gop` frames.
        fn second(&mut self, core: usize, name: &str, start_ms: u32, gop: u32) {
            for i in 0..25u32 {
                let ts = start_ms + i * 40;
                let key = (start_ms / 40 + i).is_multiple_of(gop);
                self.frame(core, name, video(ts, key));
                self.frame(core, name, audio(ts));
                self.frame(core, name, audio(ts + 20));
                self.advance(Duration::from_millis(40));
            }
        }

        fn log<R>(&self, sink: u64, f: impl FnOnce(&SinkLog) -> R) -> R {
            f(self.sinks.borrow().get(&SinkId(sink)).unwrap())
        }
    }

    fn video(ts: u32, key: bool) -> Frame {
        let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        b.resize(if key { 3000 } else { 600 }, 7);
        Frame::new(MediaKind::Video, ts, &b)
    }
    fn audio(ts: u32) -> Frame {
        Frame::new(MediaKind::Audio, ts, &[0xaf, 1, 5, 5, 5])
    }
    fn seq_headers(sim: &mut Sim, core: usize, name: &str) {
        sim.frame(core, name, Frame::new(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 0x42]));
        sim.frame(core, name, Frame::new(MediaKind::Audio, 0, &[0xaf, 0, 0x12, 0x10]));
    }
    fn video_ts(l: &SinkLog) -> Vec<u32> {
        l.frames.iter().filter(|f| f.1 == MediaKind::Video && !f.3).map(|f| f.0).collect()
    }

    #[test]
    fn fan_out_across_two_cores_joins_on_a_keyframe() {
        let mut sim = Sim::new(2);
        assert_eq!(sim.play(1, 10, "s"), PlayOutcome::Waiting, "play before publish waits");
        sim.publish(0, "s").unwrap();
        assert_eq!(sim.log(10, |l| l.statuses.clone()), vec![SinkStatus::PublishNotify]);
        seq_headers(&mut sim, 0, "s");
        sim.second(0, "s", 0, 25);
        // A late joiner on core 1 (subscribed already) and one on core 0 (the owner).
        sim.advance(Duration::from_millis(10));
        assert_eq!(sim.play(1, 11, "s"), PlayOutcome::Live);
        assert_eq!(sim.play(0, 12, "s"), PlayOutcome::Live);
        sim.second(0, "s", 1000, 25);
        for sink in [10, 11, 12] {
            sim.log(sink, |l| {
                let first_media = l.frames.iter().find(|f| !f.3).unwrap();
                assert_eq!(first_media.1, MediaKind::Video, "sink {sink}: video first");
                assert!(first_media.2, "sink {sink}: starts on a keyframe");
                assert!(l.frames.iter().take(2).all(|f| f.3), "sink {sink}: sequence headers first: {:?}", &l.frames[..3]);
                let v = video_ts(l);
                assert_eq!(v[0], 0, "sink {sink}: timeline starts at 0");
                assert!(v.windows(2).all(|w| w[1] > w[0]), "sink {sink}: monotonic");
            });
        }
        assert_eq!(sim.log(10, |l| video_ts(l).len()), 50, "the first player got every frame");
        // Core 1 subscribed once for both of its players.
        assert_eq!(sim.cores[1].stream_count(), 1);
    }

    #[test]
    fn a_slow_sink_drops_to_keyframes_then_is_evicted_while_others_get_every_frame() {
        let mut sim = Sim::new(2);
        sim.publish(0, "s").unwrap();
        seq_headers(&mut sim, 0, "s");
        sim.play(1, 20, "s");
        sim.play(1, 21, "s");
        sim.play(0, 22, "s");
        sim.sinks.borrow_mut().get_mut(&SinkId(21)).unwrap().slow = true;
        for s in 0..5 {
            sim.second(0, "s", s * 1000, 10);
        }
        for fast in [20, 22] {
            assert_eq!(sim.log(fast, |l| video_ts(l).len()), 125, "sink {fast} got every frame");
            assert!(!sim.log(fast, |l| l.evicted));
        }
        sim.log(21, |l| {
            assert!(l.evicted, "the slow sink was evicted");
            let v: Vec<_> = l.frames.iter().filter(|f| f.1 == MediaKind::Video && !f.3).collect();
            assert!(v.len() < 125);
            // Past its limit it was sent keyframes only (the inter frames were dropped).
            let over = v.iter().position(|f| !f.2 && f.0 > 1000).map_or(v.len(), |i| i);
            assert!(v.iter().skip(over + 1).filter(|f| !f.2).count() < 10, "drops inter frames first: {v:?}");
        });
        let c = &sim.cores[1].counters;
        assert!(c.drops_inter > 0 && c.evictions == 1, "{c:?}");
        assert_eq!(sim.cores[1].sink_count(), 1, "the evicted sink is gone");
    }

    #[test]
    fn grace_window_and_a_returning_publisher_on_another_core() {
        let mut sim = Sim::new(2);
        sim.publish(0, "s").unwrap();
        seq_headers(&mut sim, 0, "s");
        sim.play(1, 30, "s");
        sim.second(0, "s", 0, 25);
        let now = sim.now;
        sim.cores[0].handle_unpublish(now, &"s".into());
        sim.settle();
        sim.advance(GRACE / 2);
        assert!(sim.log(30, |l| l.statuses.is_empty()), "nothing said within the grace window");
        // The publisher comes back on the other core within the window.
        sim.publish(1, "s").unwrap();
        seq_headers(&mut sim, 1, "s");
        sim.second(1, "s", 0, 25);
        sim.advance(GRACE);
        sim.log(30, |l| {
            assert!(l.statuses.is_empty(), "no UnpublishNotify/PublishNotify for a blip: {:?}", l.statuses);
            let v = video_ts(l);
            assert_eq!(v.len(), 50);
            assert!(v.windows(2).all(|w| w[1] > w[0]), "continuous across the publisher's return: {v:?}");
            let cfgs = l.frames.iter().filter(|f| f.3 && f.1 == MediaKind::Video).count();
            assert_eq!(cfgs, 2, "fresh sequence headers after the return");
        });
        assert_eq!(sim.publish(0, "s"), Err(PublishError::NameInUse), "one publisher per name across cores");
    }

    #[test]
    fn unpublish_notify_after_the_window_and_publish_notify_on_the_next_publisher() {
        let mut sim = Sim::new(2);
        sim.publish(0, "s").unwrap();
        sim.play(1, 40, "s");
        sim.play(0, 41, "s");
        sim.second(0, "s", 0, 25);
        let now = sim.now;
        sim.cores[0].handle_unpublish(now, &"s".into());
        sim.settle();
        sim.advance(GRACE - Duration::from_millis(100));
        assert!(sim.log(40, |l| l.statuses.is_empty()));
        sim.advance(Duration::from_millis(200));
        for s in [40, 41] {
            assert_eq!(sim.log(s, |l| l.statuses.clone()), vec![SinkStatus::UnpublishNotify], "sink {s}");
        }
        sim.publish(0, "s").unwrap();
        for s in [40, 41] {
            assert_eq!(sim.log(s, |l| l.statuses.clone()), vec![SinkStatus::UnpublishNotify, SinkStatus::PublishNotify]);
        }
    }

    #[test]
    fn close_stream_gets_play_stop_and_the_last_sink_unsubscribes() {
        let mut sim = Sim::new(2);
        sim.publish(0, "s").unwrap();
        sim.play(1, 50, "s");
        sim.second(0, "s", 0, 25);
        let now = sim.now;
        sim.cores[1].handle_leave(now, SinkId(50), true);
        sim.settle();
        assert_eq!(sim.log(50, |l| l.statuses.clone()), vec![SinkStatus::Stopped]);
        assert_eq!(sim.cores[1].stream_count(), 0, "core 1 holds nothing for the stream");
        let before = sim.log(50, |l| l.frames.len());
        sim.second(0, "s", 1000, 25);
        assert_eq!(sim.log(50, |l| l.frames.len()), before, "nothing after the stop");
        // A disconnect (not a request) says nothing.
        sim.play(0, 51, "s");
        let now = sim.now;
        sim.cores[0].handle_leave(now, SinkId(51), false);
        sim.settle();
        assert!(sim.log(51, |l| l.statuses.is_empty()));
    }

    #[test]
    fn a_stale_gop_asks_the_owning_core_for_a_keyframe() {
        let mut sim = Sim::new(2);
        sim.publish(0, "s").unwrap();
        sim.play(1, 60, "s");
        sim.second(0, "s", 0, 1000); // one keyframe, then only inter frames
        sim.second(0, "s", 1000, 1000);
        sim.second(0, "s", 2000, 1000);
        sim.keyframe_requests.clear();
        sim.play(1, 61, "s");
        assert_eq!(sim.keyframe_requests, vec![(0, Arc::from("s"))], "the request reaches the owner core");
    }

    #[test]
    fn coalescing_holds_live_frames_but_never_joins_or_first_keyframes() {
        let t0 = crate::runtime::now();
        let mut r = CoreRelay::new(0, cfg(t0), Arc::new(Registry::default()));
        let res = r.reserve(&"s".into(), "rtmp").unwrap();
        let _ = r.handle_publish(t0, res, &());
        let _ = r.handle_play(t0, SinkId(1), Sink::Rtmp { wants_opus: false }, &"s".into(), &());
        let mut flushes = Vec::new();
        let mut t = t0;
        for (i, f) in [video(0, true), video(40, false), audio(50), video(80, false)].into_iter().enumerate() {
            t = t0 + Duration::from_millis(10 * i as u64);
            r.handle_frame(t, &"s".into(), f, &());
            while let Some(a) = r.poll_action() {
                if let Action::Send { flush, .. } = a {
                    flushes.push(flush);
                }
            }
        }
        let by = t0 + Duration::from_millis(10 + 20);
        assert_eq!(flushes, vec![Flush::Now, Flush::By(by), Flush::By(by), Flush::By(by)], "held to the oldest unsent frame + 20 ms");
        r.handle_flushed(SinkId(1));
        r.handle_frame(t, &"s".into(), audio(90), &());
        let next = std::iter::from_fn(|| r.poll_action()).find_map(|a| if let Action::Send { flush, .. } = a { Some(flush) } else { None });
        assert_eq!(next, Some(Flush::By(t + Duration::from_millis(20))), "a new hold after the write");
        // A joiner gets its start at once.
        let _ = r.handle_play(t, SinkId(2), Sink::Rtmp { wants_opus: false }, &"s".into(), &());
        let joins: Vec<_> = std::iter::from_fn(|| r.poll_action()).filter_map(|a| if let Action::Send { flush, .. } = a { Some(flush) } else { None }).collect();
        assert!(!joins.is_empty() && joins.iter().all(|f| *f == Flush::Now), "{joins:?}");
    }
}
