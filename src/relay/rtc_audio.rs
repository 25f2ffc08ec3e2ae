//! Opus for WebRTC viewers of a stream whose publisher sends AAC (RTMP, or a
//! cluster pull): AAC → Opus once per stream, on the publisher's core, only
//! while the stream has WebRTC viewers (on any core). The Opus packets go into
//! the stream as Enhanced RTMP Opus frames for [`Audience::Rtc`], beside the
//! AAC that RTMP players get, so every viewer shares them.
//!
//! Sans-IO: the shell hands it each audio frame of the publisher and whether
//! viewers watch; it gives back the frames to relay after it. The encoder is
//! built when the first viewer comes (from the last AAC sequence header seen)
//! and dropped when the last one has been gone for [`IDLE_DROP`] frames.

use super::frame::{Audience, Frame};
use crate::proto::codec::aac_opus::{AacToOpus, DEFAULT_BITRATE};
use crate::proto::flv::MediaKind;

/// Audio frames without viewers after which the encoder is dropped (~10 s of AAC).
const IDLE_DROP: u32 = 500;

/// Enhanced RTMP v2 audio, coded frames, FourCC "Opus".
const EX_AUDIO_CODED_FRAMES: u8 = 0x91;

#[derive(Default)]
pub struct OpusBridge {
    /// The publisher's latest AAC sequence header body.
    config: Option<Vec<u8>>,
    enc: Option<Box<AacToOpus>>,
    idle: u32,
    /// The encoder refused this configuration: do not retry until it changes.
    refused: bool,
}

impl OpusBridge {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an encoder runs now (for tests and the API).
    pub fn active(&self) -> bool {
        self.enc.is_some()
    }

    /// One frame of the publisher (any kind; only AAC audio is looked at), with
    /// `viewers` true while the stream has WebRTC viewers. Appends the Opus frames
    /// it finished to `out`; returns how many.
    pub fn handle_frame(&mut self, frame: &Frame, viewers: bool, out: &mut Vec<Frame>) -> usize {
        if frame.kind != MediaKind::Audio {
            return 0;
        }
        let body = frame.body();
        if body.first().map(|b| b >> 4) != Some(10) {
            return 0; // not AAC: Opus already, G.711, or nothing we can carry
        }
        if frame.config {
            if self.config.as_deref() != Some(body) {
                self.config = Some(body.to_vec());
                self.refused = false;
                if let Some(e) = self.enc.as_mut() {
                    if e.push_flv(frame.ts, body).is_err() {
                        self.enc = None;
                        self.refused = true;
                    }
                }
            }
            return 0;
        }
        if !viewers {
            self.idle = self.idle.saturating_add(1);
            if self.idle >= IDLE_DROP {
                self.enc = None;
            }
            return 0;
        }
        self.idle = 0;
        if self.enc.is_none() && !self.refused {
            let Some(cfg) = self.config.as_deref() else { return 0 };
            let mut e = Box::new(AacToOpus::new(DEFAULT_BITRATE));
            if e.push_flv(frame.ts, cfg).is_ok() {
                self.enc = Some(e);
            } else {
                crate::info!("webrtc playback: the AAC configuration cannot be decoded; viewers get no audio");
                self.refused = true;
            }
        }
        let Some(e) = self.enc.as_mut() else { return 0 };
        // A frame the decoder refuses is skipped (counted in its stats); the timeline goes on.
        let _ = e.push_flv(frame.ts, body);
        let mut n = 0;
        while let Some(p) = e.poll_packet() {
            let ms = (p.ts48 / 48).min(u64::from(u32::MAX)) as u32;
            let mut b = Vec::with_capacity(p.data.len() + 5);
            b.push(EX_AUDIO_CODED_FRAMES);
            b.extend_from_slice(b"Opus");
            b.extend_from_slice(&p.data);
            out.push(Frame::build(MediaKind::Audio, ms, &b, Audience::Rtc, frame.born));
            n += 1;
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn nothing_without_viewers_and_opus_with_them() {
        let mut b = OpusBridge::new();
        // AAC-LC 48 kHz stereo AudioSpecificConfig.
        let cfg = Frame::new(MediaKind::Audio, 0, &[0xaf, 0x00, 0x11, 0x90]);
        let mut out = Vec::new();
        assert_eq!(b.handle_frame(&cfg, true, &mut out), 0);
        // A silent AAC frame is not at hand here; a malformed one must not panic and
        // must not build output, but the encoder runs once viewers watch.
        let f = Frame::new(MediaKind::Audio, 20, &[0xaf, 0x01, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]);
        b.handle_frame(&f, false, &mut out);
        assert!(!b.active());
        b.handle_frame(&f, true, &mut out);
        assert!(b.active());
        for i in 0..IDLE_DROP {
            b.handle_frame(&Frame::new(MediaKind::Audio, 40 + i, &[0xaf, 0x01, 0]), false, &mut out);
        }
        assert!(!b.active(), "dropped after the viewers left");
        assert!(out.iter().all(|f| f.audience == Audience::Rtc));
    }
}
