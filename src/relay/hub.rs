//! A stream as one core sees it: the cached metadata, sequence headers and
//! GOP a joining player needs, the local players, and (on the owner core) the
//! other cores that receive every message.

use std::sync::Arc;
use std::time::Instant;

use super::frame::{Audience, Frame};
use super::SinkId;
use crate::proto::flv::MediaKind;

/// GOP cache bounds: beyond either, the cache is dropped until the next keyframe.
pub const GOP_MAX_BYTES: usize = 32 * 1024 * 1024;
pub const GOP_MAX_MSGS: usize = 4096;

/// Everything a core needs to start players on a stream owned elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub meta: Option<Arc<Frame>>,
    pub video_cfg: Option<Arc<Frame>>,
    pub audio_cfg: Option<Arc<Frame>>,
    /// The Enhanced RTMP Opus sequence header when the stream carries audio twice.
    pub audio_cfg_opus: Option<Arc<Frame>>,
    /// The AVC sequence header of the stream's video transcoded for WebRTC viewers
    /// (constrained baseline, no B-frames), when a transcode runs.
    pub video_cfg_rtc: Option<Arc<Frame>>,
    pub gop: Vec<Arc<Frame>>,
}

#[derive(Debug)]
pub struct StreamHub {
    pub name: Arc<str>,
    /// A publisher is sending (here or on the owner core).
    pub live: bool,
    /// The publisher is on this core.
    pub owned: bool,
    /// Owner only: bit i = core i gets every message.
    pub remote: u64,
    /// Subscriber only: the core that owns the stream.
    pub owner_core: Option<usize>,
    /// Owner only: the stream's shared counters.
    pub stats: Option<std::sync::Arc<crate::relay::StreamStats>>,
    pub players: Vec<SinkId>,
    /// When the publisher vanished; players get UnpublishNotify if it has not
    /// come back by `grace_until`.
    pub grace_until: Option<Instant>,
    /// Players were told UnpublishNotify (or never saw a publisher): the next
    /// publisher is announced with PublishNotify.
    pub announced_gone: bool,
    /// Bumped at each (re)publish so players re-base their timestamps.
    pub epoch: u32,
    /// Owner only: bumped at every new codec configuration (stamped on frames).
    pub seq_gen: u32,
    pub has_video: bool,
    snap: Snapshot,
    gop_bytes: usize,
    /// When the cached GOP's keyframe arrived on this core.
    gop_since: Option<Instant>,
    gop_cache: bool,
}

impl StreamHub {
    pub fn new(name: Arc<str>, gop_cache: bool) -> Self {
        StreamHub {
            name,
            live: false,
            owned: false,
            remote: 0,
            owner_core: None,
            stats: None,
            players: Vec::new(),
            grace_until: None,
            announced_gone: true,
            epoch: 0,
            seq_gen: 0,
            has_video: false,
            snap: Snapshot::default(),
            gop_bytes: 0,
            gop_since: None,
            gop_cache,
        }
    }

    /// A publisher starts (or returns). Caches restart from its messages.
    pub fn start(&mut self, snapshot: Snapshot) {
        self.live = true;
        self.grace_until = None;
        self.epoch = self.epoch.wrapping_add(1);
        self.has_video = snapshot.video_cfg.is_some() || snapshot.gop.iter().any(|m| m.kind == MediaKind::Video);
        self.gop_bytes = snapshot.gop.iter().map(|m| m.held_bytes()).sum();
        self.snap = snapshot;
    }

    /// The publisher is gone; keep players, start the grace window.
    pub fn stop(&mut self, grace_until: Instant) {
        self.live = false;
        self.gop_since = None;
        self.grace_until = Some(grace_until);
        self.snap.gop.clear();
        self.gop_bytes = 0;
    }

    /// Age of the cached GOP (time since its keyframe was ingested), if any.
    pub fn gop_started(&self) -> Option<Instant> {
        self.gop_since
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snap.clone()
    }

    pub fn cached(&self) -> &Snapshot {
        &self.snap
    }

    /// Record one message in the caches. Returns true when it is a config
    /// message (metadata or a sequence header) that replaced a cached one.
    pub fn ingest(&mut self, msg: &Arc<Frame>, now: Instant) {
        if msg.kind == MediaKind::Video && msg.audience == Audience::Rtc {
            // Transcoded video for WebRTC viewers: its configuration is kept apart, and
            // its frames stay out of the GOP (the transcoder makes a keyframe for each
            // joining viewer), which stays the source's for RTMP players.
            if msg.config {
                self.snap.video_cfg_rtc = Some(Arc::clone(msg));
            }
            return;
        }
        if msg.kind == MediaKind::Video && msg.keyframe && !msg.config {
            self.gop_since = Some(now);
        }
        match (msg.kind, msg.config) {
            (MediaKind::Data, _) => self.snap.meta = Some(Arc::clone(msg)),
            (MediaKind::Video, true) => {
                self.has_video = true;
                self.snap.video_cfg = Some(Arc::clone(msg));
            }
            (MediaKind::Audio, true) if msg.audience == Audience::Opus => {
                self.snap.audio_cfg_opus = Some(Arc::clone(msg))
            }
            (MediaKind::Audio, true) => self.snap.audio_cfg = Some(Arc::clone(msg)),
            (MediaKind::Video, false) => {
                self.has_video = true;
                if !self.gop_cache {
                    return;
                }
                if msg.keyframe {
                    self.snap.gop.clear();
                    self.gop_bytes = 0;
                }
                if msg.keyframe || !self.snap.gop.is_empty() {
                    self.push_gop(msg);
                }
            }
            (MediaKind::Audio, false) => {
                // Audio joins the cache only after a keyframe (players start on video).
                if self.gop_cache && (!self.snap.gop.is_empty() || !self.has_video) {
                    self.push_gop(msg);
                }
            }
        }
    }

    fn push_gop(&mut self, msg: &Arc<Frame>) {
        if self.snap.gop.len() >= GOP_MAX_MSGS || self.gop_bytes + msg.held_bytes() > GOP_MAX_BYTES {
            // A GOP this long is not worth holding; start again at the next keyframe.
            self.snap.gop.clear();
            self.gop_bytes = 0;
            return;
        }
        self.gop_bytes += msg.held_bytes();
        self.snap.gop.push(Arc::clone(msg));
    }

    pub fn add_player(&mut self, p: SinkId) {
        if !self.players.contains(&p) {
            self.players.push(p);
        }
    }

    pub fn remove_player(&mut self, p: SinkId) -> bool {
        let before = self.players.len();
        self.players.retain(|x| *x != p);
        before != self.players.len()
    }

    /// Nothing left to keep on this core.
    pub fn is_idle(&self) -> bool {
        self.players.is_empty() && !self.owned && self.remote == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn video(ts: u32, key: bool) -> Arc<Frame> {
        let b0 = if key { 0x17 } else { 0x27 };
        Frame::new(MediaKind::Video, ts, &[b0, 1, 0, 0, 0, 9, 9]).shared()
    }

    #[test]
    fn gop_starts_at_the_last_keyframe() {
        let t = crate::runtime::now();
        let mut h = StreamHub::new("s".into(), true);
        h.start(Snapshot::default());
        h.ingest(&Frame::new(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 1]).shared(), t);
        h.ingest(&Frame::new(MediaKind::Audio, 0, &[0xaf, 1, 5]).shared(), t);
        h.ingest(&video(10, false), t);
        h.ingest(&video(20, true), t);
        h.ingest(&Frame::new(MediaKind::Audio, 21, &[0xaf, 1, 5]).shared(), t);
        h.ingest(&video(30, false), t);
        let s = h.snapshot();
        assert!(s.video_cfg.is_some());
        let ts: Vec<u32> = s.gop.iter().map(|m| m.ts).collect();
        assert_eq!(ts, vec![20, 21, 30]);
        assert!(s.gop[0].keyframe);
    }

    #[test]
    fn no_gop_cache_keeps_only_config() {
        let mut h = StreamHub::new("s".into(), false);
        h.start(Snapshot::default());
        h.ingest(&video(20, true), crate::runtime::now());
        assert!(h.snapshot().gop.is_empty());
    }
}
