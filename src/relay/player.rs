//! One RTMP player's view of a stream: its own timeline (starting near 0,
//! monotonic, continuous across a publisher's return) and its queue policy
//! (drop inter frames first, then keyframes, audio last; resume at a
//! keyframe; evict a player that stays behind).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{Audience, Frame};
use crate::proto::flv::MediaKind;

/// Limits for every player of a server (from the flags).
#[derive(Debug, Clone, Copy)]
pub struct PlayerPolicy {
    /// Queue bytes beyond which inter frames are dropped.
    pub queue_limit: usize,
    pub evict_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Inter,
    Keyframe,
    Audio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Queue it with this player timestamp.
    Send(u32),
    /// Not for this player now (waiting for a keyframe, track muted, paused): not a drop.
    Skip,
    /// Dropped for congestion.
    Dropped(DropKind),
    /// Over its limit for too long: disconnect.
    Evict,
}

#[derive(Debug)]
pub struct PlayerState {
    pub name: Arc<str>,
    /// Publisher ts minus player ts, once the first media message fixed it.
    base: Option<u32>,
    /// Latest timestamp sent, over all kinds (the next publisher continues after it).
    last_out: u32,
    /// Latest timestamp sent per kind: audio and video are each monotonic. Across
    /// kinds a little interleaving skew is normal (an AAC encoder's delay) and is
    /// left as the publisher's timeline says, not flattened.
    last_audio: Option<u32>,
    last_video: Option<u32>,
    sent_any: bool,
    /// Hub epoch this player's timeline is based on.
    epoch: u32,
    /// Has had its first keyframe (or the stream has no video).
    started: bool,
    /// Lost video for congestion: skip video until a keyframe.
    awaiting_key: bool,
    over_since: Option<Instant>,
    pub audio_on: bool,
    pub video_on: bool,
    pub paused: bool,
    /// The client listed "Opus" in `connect.fourCcList` (Enhanced RTMP v2).
    pub wants_opus: bool,
    /// A WebRTC viewer: video and Opus audio only, whatever the audience.
    pub webrtc: bool,
    /// A WebRTC viewer of the transcoded video (audience `Rtc`), not the source's.
    pub rtc_transcoded: bool,
}

impl PlayerState {
    /// Has had its first keyframe (or the stream has no video).
    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn new(name: Arc<str>, epoch: u32) -> Self {
        PlayerState {
            name,
            base: None,
            last_out: 0,
            last_audio: None,
            last_video: None,
            sent_any: false,
            epoch,
            started: false,
            awaiting_key: false,
            over_since: None,
            audio_on: true,
            video_on: true,
            paused: false,
            wants_opus: false,
            webrtc: false,
            rtc_transcoded: false,
        }
    }

    /// The publisher changed (returned, or a new one): continue this player's
    /// timeline after what it already has, and start again at a keyframe.
    pub fn rebase(&mut self, epoch: u32) {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.base = None;
            self.started = false;
            self.awaiting_key = false;
        }
    }

    pub fn epoch_id(&self) -> u32 {
        self.epoch
    }

    /// Timestamp for metadata and sequence headers: the player's current time.
    pub fn config_ts(&self) -> u32 {
        self.last_out
    }

    /// Decide what to do with `msg` given this player's queued bytes.
    pub fn deliver(&mut self, msg: &Frame, queued: usize, has_video: bool, now: Instant, p: &PlayerPolicy) -> Deliver {
        let for_me = if self.webrtc {
            // A WebRTC viewer takes video and Opus audio only (RTP has no AAC, no metadata).
            match msg.kind {
                MediaKind::Video => (msg.audience == Audience::Rtc) == self.rtc_transcoded,
                MediaKind::Audio => crate::proto::flv::is_enhanced_opus(msg.body()),
                MediaKind::Data => false,
            }
        } else {
            match msg.audience {
                Audience::All => true,
                Audience::Opus => self.wants_opus,
                Audience::NotOpus => !self.wants_opus,
                Audience::Rtc => false,
            }
        };
        if !for_me {
            return Deliver::Skip;
        }
        if msg.config {
            // Metadata and sequence headers are small and needed to decode: always sent
            // unless the player is hopelessly behind.
            return if queued > 3 * p.queue_limit { Deliver::Dropped(DropKind::Audio) } else { Deliver::Send(self.last_out) };
        }
        if queued > p.queue_limit {
            let since = *self.over_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= p.evict_after {
                return Deliver::Evict;
            }
        } else {
            self.over_since = None;
        }
        if self.paused {
            return Deliver::Skip;
        }
        match msg.kind {
            MediaKind::Video => {
                if !self.video_on {
                    return Deliver::Skip;
                }
                if !self.started || self.awaiting_key {
                    if !msg.keyframe {
                        return if self.awaiting_key && self.started { Deliver::Dropped(DropKind::Inter) } else { Deliver::Skip };
                    }
                    if queued > 2 * p.queue_limit {
                        self.awaiting_key = true;
                        return Deliver::Dropped(DropKind::Keyframe);
                    }
                    self.started = true;
                    self.awaiting_key = false;
                    return Deliver::Send(self.map_ts(msg.ts, MediaKind::Video));
                }
                if msg.keyframe {
                    if queued > 2 * p.queue_limit {
                        self.awaiting_key = true;
                        return Deliver::Dropped(DropKind::Keyframe);
                    }
                } else if queued > p.queue_limit {
                    self.awaiting_key = true;
                    return Deliver::Dropped(DropKind::Inter);
                }
                Deliver::Send(self.map_ts(msg.ts, MediaKind::Video))
            }
            MediaKind::Audio => {
                if !self.audio_on {
                    return Deliver::Skip;
                }
                if !self.started && has_video {
                    // Video first: players mis-detect streams that start with audio.
                    return Deliver::Skip;
                }
                if queued > 3 * p.queue_limit {
                    return Deliver::Dropped(DropKind::Audio);
                }
                // Audio that would land before zero or behind audio already sent (an
                // encoder's delay against the keyframe the player started on) is left
                // out: a decoder given repeated timestamps plays it wrong.
                match self.map_audio_ts(msg.ts) {
                    Some(ts) => {
                        self.started = true;
                        Deliver::Send(ts)
                    }
                    None => Deliver::Skip,
                }
            }
            MediaKind::Data => Deliver::Send(self.last_out),
        }
    }

    fn map_audio_ts(&mut self, ts: u32) -> Option<u32> {
        if let Some(base) = self.base {
            let out = ts.wrapping_sub(base);
            let delta = i64::from(out.wrapping_sub(self.last_out) as i32);
            if i64::from(self.last_out) + delta < 0 {
                return None;
            }
            if self.last_audio.is_some_and(|l| (out.wrapping_sub(l) as i32) <= 0) {
                return None;
            }
        }
        Some(self.map_ts(ts, MediaKind::Audio))
    }

    /// Publisher time → player time: starts at 0 (or just after what the player
    /// already has), never goes backwards within a kind.
    fn map_ts(&mut self, ts: u32, kind: MediaKind) -> u32 {
        let base = *self.base.get_or_insert_with(|| {
            let target = if self.sent_any { self.last_out.wrapping_add(1) } else { 0 };
            ts.wrapping_sub(target)
        });
        let mut out = ts.wrapping_sub(base);
        // Before zero (a message that predates the first one sent): clamp to 0.
        let delta = i64::from(out.wrapping_sub(self.last_out) as i32);
        if i64::from(self.last_out) + delta < 0 {
            out = 0;
        }
        let last = match kind {
            MediaKind::Audio => &mut self.last_audio,
            _ => &mut self.last_video,
        };
        if let Some(l) = *last {
            if (out.wrapping_sub(l) as i32) < 0 {
                out = l;
            }
        }
        *last = Some(out);
        if !self.sent_any || (out.wrapping_sub(self.last_out) as i32) > 0 {
            self.last_out = out;
        }
        self.sent_any = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol() -> PlayerPolicy {
        PlayerPolicy { queue_limit: 1000, evict_after: Duration::from_secs(2) }
    }
    fn v(ts: u32, key: bool) -> Arc<Frame> {
        Frame::new(MediaKind::Video, ts, &[if key { 0x17 } else { 0x27 }, 1, 0, 0, 0]).shared()
    }
    fn a(ts: u32) -> Arc<Frame> {
        Frame::new(MediaKind::Audio, ts, &[0xaf, 1, 0]).shared()
    }

    #[test]
    fn starts_on_keyframe_at_zero_video_first() {
        let t = crate::runtime::now();
        let mut p = PlayerState::new("s".into(), 0);
        assert_eq!(p.deliver(&a(5000), 0, true, t, &pol()), Deliver::Skip);
        assert_eq!(p.deliver(&v(5000, false), 0, true, t, &pol()), Deliver::Skip);
        assert_eq!(p.deliver(&v(5040, true), 0, true, t, &pol()), Deliver::Send(0));
        assert_eq!(p.deliver(&a(5030), 0, true, t, &pol()), Deliver::Skip, "audio before the start is left out");
        assert_eq!(p.deliver(&a(5050), 0, true, t, &pol()), Deliver::Send(10));
        assert_eq!(p.deliver(&v(5073, false), 0, true, t, &pol()), Deliver::Send(33));
        assert_eq!(p.deliver(&a(5060), 0, true, t, &pol()), Deliver::Send(20), "audio behind video is kept, not flattened");
    }

    #[test]
    fn congestion_drops_inter_then_key_then_audio_and_resumes_at_keyframe() {
        let t = crate::runtime::now();
        let mut p = PlayerState::new("s".into(), 0);
        assert_eq!(p.deliver(&v(0, true), 0, true, t, &pol()), Deliver::Send(0));
        assert_eq!(p.deliver(&v(33, false), 1500, true, t, &pol()), Deliver::Dropped(DropKind::Inter));
        assert_eq!(p.deliver(&a(40), 1500, true, t, &pol()), Deliver::Send(40));
        assert_eq!(p.deliver(&v(66, false), 0, true, t, &pol()), Deliver::Dropped(DropKind::Inter), "waits for a keyframe");
        assert_eq!(p.deliver(&v(100, true), 2500, true, t, &pol()), Deliver::Dropped(DropKind::Keyframe));
        assert_eq!(p.deliver(&a(110), 3500, true, t, &pol()), Deliver::Dropped(DropKind::Audio));
        assert_eq!(p.deliver(&v(133, true), 0, true, t, &pol()), Deliver::Send(133));
        assert_eq!(p.deliver(&v(166, false), 0, true, t, &pol()), Deliver::Send(166));
    }

    #[test]
    fn evicts_after_staying_over_the_limit() {
        let t = crate::runtime::now();
        let mut p = PlayerState::new("s".into(), 0);
        assert_eq!(p.deliver(&v(0, true), 0, true, t, &pol()), Deliver::Send(0));
        assert_eq!(p.deliver(&a(10), 1500, true, t, &pol()), Deliver::Send(10));
        assert_eq!(p.deliver(&a(20), 1500, true, t + Duration::from_secs(1), &pol()), Deliver::Send(20));
        assert_eq!(p.deliver(&a(30), 1500, true, t + Duration::from_secs(3), &pol()), Deliver::Evict);
    }

    #[test]
    fn republish_continues_the_timeline() {
        let t = crate::runtime::now();
        let mut p = PlayerState::new("s".into(), 1);
        assert_eq!(p.deliver(&v(9000, true), 0, true, t, &pol()), Deliver::Send(0));
        assert_eq!(p.deliver(&v(9500, false), 0, true, t, &pol()), Deliver::Send(500));
        p.rebase(2);
        assert_eq!(p.deliver(&v(0, false), 0, true, t, &pol()), Deliver::Skip);
        assert_eq!(p.deliver(&v(33, true), 0, true, t, &pol()), Deliver::Send(501));
        assert_eq!(p.deliver(&v(66, false), 0, true, t, &pol()), Deliver::Send(534));
    }

    #[test]
    fn timestamps_wrap_at_2_pow_32() {
        let t = crate::runtime::now();
        let mut p = PlayerState::new("s".into(), 0);
        assert_eq!(p.deliver(&v(u32::MAX - 10, true), 0, true, t, &pol()), Deliver::Send(0));
        assert_eq!(p.deliver(&v(20, false), 0, true, t, &pol()), Deliver::Send(31));
    }
}
