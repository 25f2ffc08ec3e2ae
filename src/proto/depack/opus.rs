//! Opus RTP depacketizer (RFC 7587).
//!
//! Implemented: each RTP payload is exactly one Opus packet (RFC 7587 §4.2),
//! copied once into an [`OpusUnit`] with the packet's extended RTP timestamp
//! (48 kHz clock for every Opus mode, RFC 7587 §4.1). Losses are counted but
//! do not hold anything back: the Opus decoder conceals them.
//!
//! Dropped: empty payloads (an Opus packet is at least one byte, RFC 6716
//! §3.4, requirement R1; DTX packets of 1–2 bytes are kept) and
//! payloads above [`MAX_OPUS_PACKET`].
//!
//! Deliberately not implemented: checking the TOC byte and frame lengths
//! (RFC 6716 §3): the packet is passed through to the muxer or decoder, which
//! validates it; stereo/FEC signalling lives in SDP, not here.
//!
//! Queue: one completed unit is held; if the caller pushes again without
//! taking it, the old unit is dropped and counted in `queue_overflows`.

use super::{DepackStats, DropReason, Pushed, RtpView};

/// Largest Opus packet: 48 frames of at most 1275 bytes plus framing
/// (RFC 6716 §3.2.1, §3.2.5). RTP payloads are far smaller in practice.
pub const MAX_OPUS_PACKET: usize = 48 * 1275 + 2 * 48 + 2;

/// One Opus packet with its RTP timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusUnit {
    /// Extended RTP timestamp, 48 kHz.
    pub ts: u64,
    /// The Opus packet, TOC byte first.
    pub data: Vec<u8>,
}

/// Opus depacketizer for one SSRC.
#[derive(Debug, Default)]
pub struct OpusDepacketizer {
    ready: Option<OpusUnit>,
    next_seq: Option<u64>,
    stats: DepackStats,
}

impl OpusDepacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next payload in sequence order.
    pub fn push(&mut self, pkt: RtpView<'_>) -> Pushed {
        self.stats.packets += 1;
        if pkt.after_loss || self.next_seq.is_some_and(|n| n != pkt.seq) {
            self.stats.seq_gaps += 1;
        }
        self.next_seq = Some(pkt.seq.wrapping_add(1));
        let reason = if pkt.payload.is_empty() {
            DropReason::Malformed
        } else if pkt.payload.len() > MAX_OPUS_PACKET {
            DropReason::TooLarge
        } else {
            if self.ready.take().is_some() {
                self.stats.queue_overflows += 1;
                self.stats.units_discarded += 1;
            }
            self.ready = Some(OpusUnit {
                ts: pkt.ts,
                data: pkt.payload.to_vec(),
            });
            self.stats.units += 1;
            return Pushed::Complete;
        };
        self.stats.count_drop(reason);
        Pushed::Dropped(reason)
    }

    /// The unit completed by the last `push`, once.
    pub fn take_unit(&mut self) -> Option<OpusUnit> {
        self.ready.take()
    }

    /// Forget sequence state and any untaken unit (SSRC change).
    pub fn reset(&mut self) {
        self.ready = None;
        self.next_seq = None;
    }

    pub fn stats(&self) -> &DepackStats {
        &self.stats
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn view(seq: u64, ts: u64, payload: &[u8]) -> RtpView<'_> {
        RtpView {
            seq,
            ts,
            marker: false,
            payload,
            after_loss: false,
        }
    }

    #[test]
    fn each_payload_is_one_unit() {
        let mut d = OpusDepacketizer::new();
        // 20 ms CELT FB mono (TOC 0xfc) and a DTX-sized 1-byte packet.
        assert_eq!(d.push(view(10, 960, &[0xfc, 0xff, 0xfe])), Pushed::Complete);
        assert_eq!(
            d.take_unit(),
            Some(OpusUnit {
                ts: 960,
                data: vec![0xfc, 0xff, 0xfe]
            })
        );
        assert_eq!(d.take_unit(), None);
        assert_eq!(d.push(view(11, 1920, &[0xf8])), Pushed::Complete);
        assert_eq!(d.take_unit().unwrap().data, [0xf8]);
        assert_eq!(d.stats().units, 2);
        assert_eq!(d.stats().seq_gaps, 0);
    }

    #[test]
    fn empty_and_oversized_are_dropped() {
        let mut d = OpusDepacketizer::new();
        assert_eq!(
            d.push(view(1, 0, &[])),
            Pushed::Dropped(DropReason::Malformed)
        );
        let big = vec![0u8; MAX_OPUS_PACKET + 1];
        assert_eq!(
            d.push(view(2, 960, &big)),
            Pushed::Dropped(DropReason::TooLarge)
        );
        assert_eq!(d.take_unit(), None);
        assert_eq!(d.stats().dropped(), 2);
    }

    #[test]
    fn gaps_are_counted_not_held() {
        let mut d = OpusDepacketizer::new();
        assert_eq!(d.push(view(1, 0, &[1])), Pushed::Complete);
        assert_eq!(d.push(view(5, 3840, &[2])), Pushed::Complete);
        assert_eq!(
            d.push(RtpView {
                after_loss: true,
                ..view(6, 4800, &[3])
            }),
            Pushed::Complete
        );
        assert_eq!(d.stats().seq_gaps, 2);
        // Two units were never taken: only the newest is kept.
        assert_eq!(
            d.take_unit(),
            Some(OpusUnit {
                ts: 4800,
                data: vec![3]
            })
        );
        assert_eq!(d.stats().queue_overflows, 2);
        d.reset();
        assert_eq!(d.push(view(100, 0, &[4])), Pushed::Complete);
        assert_eq!(d.stats().seq_gaps, 2);
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut d = OpusDepacketizer::new();
        let mut seed = 99u64;
        for i in 0..5000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = (seed >> 55) as usize;
            let payload: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
            let r = d.push(RtpView {
                seq: i + (seed & 1),
                ts: i * 960,
                marker: seed & 2 != 0,
                payload: &payload,
                after_loss: seed & 4 != 0,
            });
            match r {
                Pushed::Complete => assert_eq!(d.take_unit().unwrap().data, payload),
                Pushed::Dropped(_) => assert!(payload.is_empty()),
                Pushed::Partial => panic!("opus never returns Partial"),
            }
        }
    }
}
