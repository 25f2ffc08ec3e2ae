//! The unit every sink of a stream receives: one codec-level access unit (a video
//! frame, an audio packet, metadata or a sequence header), copied once from the
//! publisher's input, frozen, and shared by every sink on every core (`Arc<Frame>`).
//!
//! Encodings a sink needs are attached to the frame, built once, lazily, by the
//! first sink that asks, and shared by the rest: today the RTMP body chunked for
//! the server's chunk size ([`Frame::rtmp`]); RTP packets for WebRTC viewers can
//! be attached the same way.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::proto::flv::{self, MediaKind};
use crate::proto::packetize::{H264Packetizer, RtpPayload};
use crate::proto::rtmp::chunk::Prechunked;

/// Which RTMP players a frame is for. With `--audio opus` a WebRTC stream carries
/// its audio twice: Enhanced RTMP Opus for players whose `connect` listed "Opus" in
/// `fourCcList`, AAC for everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    All,
    /// Players that did not announce Enhanced RTMP Opus.
    NotOpus,
    /// Players that did.
    Opus,
    /// WebRTC viewers only: Opus made from an RTMP source's AAC, or a WebRTC
    /// publisher's own Opus when no RTMP player takes Opus (`--audio aac`).
    Rtc,
}

#[derive(Debug)]
pub struct Frame {
    pub kind: MediaKind,
    /// Publisher timeline, milliseconds.
    pub ts: u32,
    /// Video keyframe (FLV frame type 1), including AVC sequence headers.
    pub keyframe: bool,
    /// AVC or AAC sequence header (codec configuration), or metadata.
    pub config: bool,
    pub audience: Audience,
    /// Sequence-header generation of the stream when this frame was made: bumped by
    /// the relay at every new codec configuration, so a sink can tell whether the
    /// configuration it holds still decodes this frame.
    pub seq_gen: u32,
    /// When the input that completed this frame arrived (the last RTP packet of a
    /// frame), for the server-added latency histogram. None for RTMP-published media.
    pub born: Option<Instant>,
    /// The FLV tag body (what RTMP carries as the message payload).
    body: Arc<[u8]>,
    /// The body chunked for RTMP, built on first use.
    rtmp: OnceLock<Prechunked>,
    /// The RTP payloads of a video frame for WebRTC viewers, built on first use.
    rtp: OnceLock<Vec<RtpPayload>>,
}

impl Frame {
    /// Copy `body` once into a frame for every audience.
    pub fn new(kind: MediaKind, ts: u32, body: &[u8]) -> Frame {
        Self::build(kind, ts, body, Audience::All, None)
    }

    pub fn for_audience(kind: MediaKind, ts: u32, body: &[u8], audience: Audience) -> Frame {
        Self::build(kind, ts, body, audience, None)
    }

    pub fn build(kind: MediaKind, ts: u32, body: &[u8], audience: Audience, born: Option<Instant>) -> Frame {
        let (keyframe, config) = flv::classify(kind, body);
        Frame { kind, ts, keyframe, config, audience, seq_gen: 0, born, body: body.into(), rtmp: OnceLock::new(), rtp: OnceLock::new() }
    }

    /// Freeze for sharing.
    pub fn shared(self) -> Arc<Frame> {
        Arc::new(self)
    }

    /// The FLV tag body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Length of the FLV tag body.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The RTMP chunked body for `chunk_size` (one server-wide size: built by the
    /// first player that sends this frame, shared by all the others). A different
    /// size than the first one asked for is chunked afresh, not cached.
    pub fn rtmp(&self, chunk_size: usize) -> std::borrow::Cow<'_, Prechunked> {
        let p = self.rtmp.get_or_init(|| Prechunked::new(&self.body, chunk_size, self.kind.csid()));
        if p.chunk_size == chunk_size.max(1) {
            std::borrow::Cow::Borrowed(p)
        } else {
            std::borrow::Cow::Owned(Prechunked::new(&self.body, chunk_size, self.kind.csid()))
        }
    }

    /// The RTP payloads of this video frame (RFC 6184 mode 1, parameter sets before an
    /// IDR), packetized by the first WebRTC viewer that sends it with `pk` (the stream's
    /// configuration of this frame's `seq_gen`) and shared by all the others. Empty for
    /// a body the packetizer refuses.
    pub fn rtp_video(&self, pk: &H264Packetizer) -> &[RtpPayload] {
        self.rtp.get_or_init(|| {
            let mut out = Vec::new();
            if pk.packetize(&self.body, &mut out).is_err() {
                out.clear();
            }
            out
        })
    }

    /// Bytes this frame holds for sinks (the body, plus its chunked copy when one
    /// was built), for cache budgets.
    pub fn held_bytes(&self) -> usize {
        let chunked = self.rtmp.get().filter(|p| !Arc::ptr_eq(&p.bytes, &self.body)).map_or(0, |p| p.bytes.len());
        let rtp = self.rtp.get().map_or(0, |v| v.iter().map(|p| p.data.len() + 32).sum());
        self.body.len() + chunked + rtp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_body_is_built_once_and_shared() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let f = Frame::new(MediaKind::Video, 0, &body);
        let a = f.rtmp(4096);
        let b = f.rtmp(4096);
        assert!(Arc::ptr_eq(&a.bytes, &b.bytes));
        assert_eq!(a.chunk_count(), 3);
        assert_eq!(f.held_bytes(), body.len() + a.bytes.len());
        let other = f.rtmp(128);
        assert_eq!(other.chunk_size, 128);
        let back: Vec<u8> = (0..other.chunk_count()).flat_map(|i| other.chunk_payload(i).to_vec()).collect();
        assert_eq!(back, body);
    }
}
