//! The receiving half of a WHEP viewer: what a viewer does with the SRTP the
//! server sends it, once ICE and DTLS are up (the transport is the
//! publisher's: [`crate::publisher::RtcPublisher`] with a [`ViewerRx`] is a
//! viewer).
//!
//! Every packet is really received: SRTP unprotected with the server's keys
//! (the publisher's `srtp_rx` context), the RTP header parsed, sequence
//! numbers extended per track (RFC 3550 appendix A.1) to count losses, and
//! video depacketized into access units with the server crate's own
//! depacketizer (`rtcbridge::proto::depack::h264`). Each access unit's
//! wall-clock SEI (written by rtc-load's publishers, read with rtmp-load's
//! reader, `tools/rtmp-load/src/flv.rs`) gives publisher → server → viewer
//! latency at the moment the unit is complete.
//!
//! Tracks are told apart by payload type (the offer has one video and one
//! audio format). Receiver reports go out every second (fraction lost,
//! cumulative lost, highest sequence, LSR/DLSR from the server's SRs), so the
//! server sees loss and RTT as from a browser. Not implemented: NACK and PLI
//! (the depacketizer has no reorder buffer, so a retransmission could not
//! repair a frame here; a loss is counted and the viewer waits for the next
//! key frame, which the publisher sends every GOP), jitter (reported as 0).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rtcbridge::proto::depack::h264::H264Depacketizer;
use rtcbridge::proto::depack::{Pushed, RtpView};
use rtcbridge::proto::rtcp::{self, ReportBlock};
use rtcbridge::proto::rtp;

use crate::flv;

/// Latency samples kept per viewer (30 fps for 55 minutes).
const MAX_SAMPLES: usize = 100_000;
/// AVCC NAL unit length size of the depacketizer's FLV bodies.
const AVCC_LENGTH: usize = 4;

/// Sequence number and timestamp extension and loss accounting of one track
/// (RFC 3550 appendix A.1 and A.3, without the probation).
#[derive(Debug, Default, Clone)]
pub struct Track {
    pub ssrc: Option<u32>,
    /// First and highest extended sequence numbers.
    base: u64,
    max: u64,
    ts_max: u64,
    pub packets: u64,
    /// SRTP bytes as received (header, payload, tag).
    pub bytes: u64,
    /// Packets that arrived with a sequence number at or below the highest.
    pub late: u64,
    /// Jumps forward of more than one: loss events.
    pub gaps: u64,
    /// For the receiver report interval (RFC 3550 A.3).
    expected_prior: u64,
    received_prior: u64,
    /// Middle 32 bits of the latest SR's NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
}

impl Track {
    /// Count a packet; returns its extended (sequence number, timestamp).
    pub fn count(&mut self, ssrc: u32, seq: u16, ts: u32, len: usize) -> (u64, u64) {
        self.packets += 1;
        self.bytes += len as u64;
        if self.ssrc != Some(ssrc) {
            // First packet (or the server changed the SSRC): start over.
            self.ssrc = Some(ssrc);
            // Start one cycle in, so that packets just before the first never go negative.
            self.base = (1 << 16) | u64::from(seq);
            self.max = self.base;
            self.ts_max = (1 << 32) | u64::from(ts);
            self.expected_prior = 0;
            self.received_prior = 0;
            self.packets = 1;
            return (self.max, self.ts_max);
        }
        let ext = extend(self.max, 16, u64::from(seq));
        if ext > self.max {
            if ext > self.max + 1 {
                self.gaps += 1;
            }
            self.max = ext;
        } else {
            self.late += 1;
        }
        let ets = extend(self.ts_max, 32, u64::from(ts));
        self.ts_max = self.ts_max.max(ets);
        (ext, ets)
    }

    pub fn expected(&self) -> u64 {
        if self.ssrc.is_some() {
            self.max - self.base + 1
        } else {
            0
        }
    }

    /// Packets never received (RFC 3550 A.3: expected - received, at least 0).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// A report block for this track, starting a new interval.
    fn report(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let expected = self.expected();
        let (exp_i, rcv_i) = (expected - self.expected_prior, self.packets.saturating_sub(self.received_prior));
        self.expected_prior = expected;
        self.received_prior = self.packets;
        let lost_i = exp_i.saturating_sub(rcv_i);
        let fraction_lost = (lost_i << 8).checked_div(exp_i).map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, (now.saturating_duration_since(at).as_micros() as u64 * 65536 / 1_000_000) as u32),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().min(0x7f_ffff) as i32,
            ext_highest_seq: (self.max - (1 << 16)) as u32,
            jitter: 0,
            lsr,
            dlsr,
        })
    }
}

/// Extend a `bits`-bit counter value `v` to the 64-bit value nearest `reference`.
fn extend(reference: u64, bits: u32, v: u64) -> u64 {
    let span = 1u64 << bits;
    let half = span / 2;
    let base = reference & !(span - 1);
    let cand = base | v;
    if cand + half < reference {
        cand + span
    } else if cand > reference + half && cand >= span {
        cand - span
    } else {
        cand
    }
}

/// Counters of one viewer (summed in the summary).
#[derive(Debug, Default, Clone)]
pub struct ViewerStats {
    /// SRTP packets that failed to authenticate or decrypt.
    pub srtp_errors: u64,
    /// RTP packets with a payload type we did not offer.
    pub unknown_pt: u64,
    /// Access units completed by the depacketizer.
    pub frames: u64,
    pub keyframes: u64,
    /// Access units with the wall-clock SEI.
    pub stamped: u64,
    /// Packets the depacketizer dropped (after a loss, before the first key frame).
    pub depack_dropped: u64,
    /// Access units it threw away broken or could not hand out.
    pub units_lost: u64,
    pub reports_sent: u64,
}

pub struct ViewerRx {
    pub video_pt: u8,
    pub audio_pt: u8,
    pub video: Track,
    pub audio: Track,
    depack: H264Depacketizer,
    pub stats: ViewerStats,
    /// When the first access unit was complete, and the latest.
    pub first_frame: Option<Instant>,
    pub last_frame: Option<Instant>,
    /// When the second key frame was complete, and units since (it included): the
    /// steady state, after the join burst of the GOP cache.
    pub steady_since: Option<Instant>,
    pub steady_frames: u64,
    /// Publisher SEI → access unit complete here, ms; from the second key frame on
    /// (the first GOP may come from the server's GOP cache, with old stamps).
    pub latency_ms: Vec<f64>,
    /// The same for the first GOP (kept apart).
    pub first_gop_latency_ms: Vec<f64>,
    scratch: Vec<u8>,
}

impl ViewerRx {
    pub fn new(video_pt: u8, audio_pt: u8) -> Self {
        ViewerRx {
            video_pt,
            audio_pt,
            video: Track::default(),
            audio: Track::default(),
            depack: H264Depacketizer::new(),
            stats: ViewerStats::default(),
            first_frame: None,
            last_frame: None,
            steady_since: None,
            steady_frames: 0,
            latency_ms: Vec::new(),
            first_gop_latency_ms: Vec::new(),
            scratch: Vec::with_capacity(64),
        }
    }

    /// One decrypted RTP packet (`pkt`: header and payload, tag removed) that was
    /// `wire_len` bytes on the wire.
    pub fn handle_rtp(&mut self, now: Instant, pkt: &[u8], wire_len: usize) {
        let Ok(p) = rtp::parse(pkt) else {
            self.stats.srtp_errors += 1;
            return;
        };
        if p.pt == self.audio_pt {
            self.audio.count(p.ssrc, p.seq, p.ts, wire_len);
            return;
        }
        if p.pt != self.video_pt {
            self.stats.unknown_pt += 1;
            return;
        }
        let (seq, ts) = self.video.count(p.ssrc, p.seq, p.ts, wire_len);
        let view = RtpView { seq, ts, marker: p.marker, payload: p.payload, after_loss: false };
        match self.depack.push(view) {
            Pushed::Complete => self.take_units(now),
            Pushed::Dropped(_) => self.stats.depack_dropped += 1,
            Pushed::Partial => {}
        }
        let d = self.depack.stats();
        self.stats.units_lost = d.units_discarded + d.queue_overflows;
    }

    fn take_units(&mut self, now: Instant) {
        let _ = self.depack.take_config();
        while let Some(unit) = self.depack.take_unit() {
            let _ = self.depack.take_config();
            self.stats.frames += 1;
            if unit.keyframe {
                self.stats.keyframes += 1;
            }
            self.first_frame.get_or_insert(now);
            self.last_frame = Some(now);
            if self.stats.keyframes >= 2 {
                self.steady_since.get_or_insert(now);
                self.steady_frames += 1;
            }
            let Some(us) = flv::avc_nalus(&unit.flv_body).and_then(|n| flv::sei_wallclock_us(n, AVCC_LENGTH, &mut self.scratch)) else {
                continue;
            };
            self.stats.stamped += 1;
            let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
            let ms = wall as f64 / 1e3 - us as f64 / 1e3;
            let into = if self.stats.keyframes >= 2 { &mut self.latency_ms } else { &mut self.first_gop_latency_ms };
            if into.len() < MAX_SAMPLES {
                into.push(ms);
            }
        }
    }

    /// A sender report from the server (for LSR/DLSR in our receiver reports).
    pub fn handle_sr(&mut self, now: Instant, ssrc: u32, ntp: u64) {
        let lsr = (ntp >> 16) as u32;
        for t in [&mut self.video, &mut self.audio] {
            if t.ssrc == Some(ssrc) {
                t.last_sr = Some((lsr, now));
            }
        }
    }

    /// A receiver report for both tracks (plain RTCP, to be protected), or None
    /// before any media.
    pub fn receiver_report(&mut self, now: Instant, our_ssrc: u32) -> Option<Vec<u8>> {
        let blocks: Vec<ReportBlock> = [self.video.report(now), self.audio.report(now)].into_iter().flatten().collect();
        if blocks.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(8 + 24 * blocks.len());
        rtcp::write_rr(our_ssrc, &blocks, &mut out).ok()?;
        self.stats.reports_sent += 1;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::{write_wallclock_sei, H264Packetizer};

    #[test]
    fn sequence_extension_counts_gaps_and_wraps() {
        let mut t = Track::default();
        let mut seq: u16 = 65530;
        for _ in 0..10 {
            t.count(7, seq, 0, 100);
            seq = seq.wrapping_add(1);
        }
        assert_eq!((t.expected(), t.lost(), t.gaps), (10, 0, 0));
        // Two lost across nothing special, then one late (reordered) arrival.
        t.count(7, seq.wrapping_add(2), 0, 100);
        assert_eq!((t.expected(), t.lost(), t.gaps), (13, 2, 1));
        t.count(7, seq, 0, 100);
        assert_eq!((t.expected(), t.lost(), t.late), (13, 1, 1));
        let now = Instant::now();
        let rb = t.report(now).unwrap();
        assert_eq!(rb.cumulative_lost, 1);
        assert_eq!(rb.ext_highest_seq, (1 << 16) | u32::from(seq.wrapping_add(2)));
        assert_eq!(rb.fraction_lost, (256 / 13) as u8);
        // Next interval: nothing new, nothing lost.
        assert_eq!(t.report(now).unwrap().fraction_lost, 0);
    }

    #[test]
    fn timestamp_extension_wraps_forward_and_back() {
        assert_eq!(extend(1 << 32 | 0xffff_fff0, 32, 5), (2 << 32) | 5);
        assert_eq!(extend(2 << 32 | 5, 32, 0xffff_fff0), (1 << 32) | 0xffff_fff0);
        assert_eq!(extend(1 << 16 | 100, 16, 90), (1 << 16) | 90);
    }

    /// Real openh264 frames with the publisher's SEI, packetized as the server
    /// sends them: frames, key frames and latency come out, the first GOP apart.
    #[test]
    fn access_units_and_their_sei_come_out_of_rtp() {
        use crate::media::{VideoParams, VideoSource};
        let mut video = VideoSource::new(VideoParams { width: 160, height: 96, fps: 30.0, kbps: 300, gop: 2 }).unwrap();
        let mut rx = ViewerRx::new(102, 111);
        let mut pz = H264Packetizer::new(200);
        let now = Instant::now();
        let mut seq = 65000u16;
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64 - 5_000;
        for k in 0..6u32 {
            let frame = video.encode(k % 2 == 0).unwrap().expect("a frame");
            let mut sei = Vec::new();
            write_wallclock_sei(stamp, &mut sei);
            let nals: Vec<&[u8]> = std::iter::once(&sei[..]).chain(frame.nals()).collect();
            let mut pkts = Vec::new();
            pz.packetize(&nals, |payload, last| {
                let h = rtp::RtpHeader { marker: last, pt: 102, seq, ts: 3000 * k, ssrc: 9 };
                seq = seq.wrapping_add(1);
                let mut p = Vec::new();
                rtp::write_header(&h, &[], &mut p).unwrap();
                p.extend_from_slice(payload);
                pkts.push(p);
            });
            for p in pkts {
                rx.handle_rtp(now, &p, p.len() + 16);
            }
        }
        assert_eq!((rx.stats.frames, rx.stats.keyframes, rx.stats.stamped, rx.steady_frames), (6, 3, 6, 4));
        // The first GOP (two units) apart, then four samples of at least 5 ms.
        assert_eq!((rx.first_gop_latency_ms.len(), rx.latency_ms.len()), (2, 4));
        assert!(rx.latency_ms.iter().all(|&ms| (5.0..10_000.0).contains(&ms)), "{:?}", rx.latency_ms);
        assert_eq!((rx.video.lost(), rx.stats.srtp_errors, rx.stats.unknown_pt), (0, 0, 0));
        let rr = rx.receiver_report(now, 1).unwrap();
        assert!(matches!(rtcp::parse(&rr).next(), Some(Ok(rtcp::RtcpPacket::ReceiverReport { ssrc: 1, .. }))));
    }
}
