//! RTP depacketizers: turn the in-order RTP payloads of one SSRC into codec
//! units ready for FLV/RTMP.
//!
//! Implemented: H.264 packetization-mode 1 (RFC 6184: single NAL unit,
//! STAP-A, FU-A) into AVCC FLV VIDEODATA bodies with SPS/PPS captured into an
//! AVC sequence header ([`h264`]); Opus (RFC 7587: one Opus packet per
//! payload, [`opus`]).
//!
//! Not here: reordering, NACK/RTX and jitter handling (the reorder buffer in
//! front of us delivers packets in sequence order and flags where it gave up
//! on missing ones), and other codecs (VP8/VP9/AV1, G.711, packetization-mode
//! 2 interleaving).
//!
//! Contract: `push` never fails and never panics; a packet that cannot be used
//! is `Pushed::Dropped(reason)` and counted in the depacketizer's
//! [`DepackStats`]. Completed units wait in a small bounded queue until the
//! caller takes them.

pub mod h264;
pub mod opus;

/// An RTP packet as a depacketizer sees it: SRTP removed, header parsed,
/// padding stripped, sequence number and timestamp extended to 64 bits so
/// gaps are exact across the 16/32-bit wraps.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    /// Extended sequence number.
    pub seq: u64,
    /// Extended RTP timestamp (90 kHz for video, 48 kHz for Opus).
    pub ts: u64,
    /// RTP marker bit: last packet of a video access unit (RFC 6184 §5.1).
    pub marker: bool,
    pub payload: &'a [u8],
    /// The reorder buffer gave up on at least one packet before this one.
    pub after_loss: bool,
}

/// What a `push` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Pushed {
    /// Nothing to take yet: the packet was added to an open unit, or held no
    /// media (a padding-only probe, a unit of only parameter sets).
    Partial,
    /// At least one unit is complete: drain with `take_unit` until `None`.
    Complete,
    /// The packet, or for video the unit it completed, was discarded and
    /// counted; any partial unit was thrown away with it.
    Dropped(DropReason),
}

/// Why a depacketizer discarded input. Counted, never an `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The payload breaks the payload format's syntax.
    Malformed,
    /// A valid payload structure we do not handle (e.g. STAP-B, MTAP, FU-B).
    Unsupported,
    /// Video only: waiting for a keyframe after a loss; ask the sender for one.
    AwaitingKeyframe,
    /// Packets are missing before this one; for video, ask for a keyframe.
    SeqGap,
    /// The unit or packet exceeds the configured size limit.
    TooLarge,
}

impl DropReason {
    /// Static name, for logs and stats.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unsupported => "unsupported",
            DropReason::AwaitingKeyframe => "awaiting-keyframe",
            DropReason::SeqGap => "seq-gap",
            DropReason::TooLarge => "too-large",
        }
    }
}

/// Counters every depacketizer keeps. Plain integers, read by the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepackStats {
    /// Packets pushed, padding-only ones included.
    pub packets: u64,
    /// Units handed out through `take_unit`'s queue.
    pub units: u64,
    /// Of those, keyframes (H.264 units with an IDR slice).
    pub keyframes: u64,
    /// Losses detected (a sequence gap or `after_loss`), counted once each.
    pub seq_gaps: u64,
    /// Units thrown away broken: a hole from loss, a malformed packet, the
    /// caller's queue full.
    pub units_discarded: u64,
    /// Whole units not handed out because they cannot be decoded yet: a delta
    /// frame while a keyframe is awaited (after loss, or at the start), or any
    /// frame before the first SPS and PPS (H.264).
    pub units_skipped: u64,
    /// Completed units dropped because the caller left the queue full.
    pub queue_overflows: u64,
    /// Parameter set configurations published (H.264).
    pub configs: u64,
    /// SPS NAL units that did not parse and were ignored (H.264).
    pub bad_sps: u64,
    /// One per `Pushed::Dropped(reason)` returned, plus packet drops that a
    /// `Complete` for the unit they closed took precedence over.
    pub dropped_malformed: u64,
    pub dropped_unsupported: u64,
    pub dropped_awaiting_keyframe: u64,
    pub dropped_seq_gap: u64,
    pub dropped_too_large: u64,
}

impl DepackStats {
    /// Count one `Pushed::Dropped(reason)`.
    pub fn count_drop(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::Unsupported => &mut self.dropped_unsupported,
            DropReason::AwaitingKeyframe => &mut self.dropped_awaiting_keyframe,
            DropReason::SeqGap => &mut self.dropped_seq_gap,
            DropReason::TooLarge => &mut self.dropped_too_large,
        };
        *c += 1;
    }

    /// Total packets dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_unsupported
            + self.dropped_awaiting_keyframe
            + self.dropped_seq_gap
            + self.dropped_too_large
    }
}
