//! H.264 RTP depacketizer, RFC 6184 packetization-mode 1 (non-interleaved).
//!
//! Implemented:
//! - Single NAL unit packets (types 1–23, §5.6), STAP-A (24, §5.7.1) and FU-A
//!   (28, §5.8; the NAL header is rebuilt from the FU indicator's F/NRI and the
//!   FU header's type). An FU-A with both S and E set is accepted as a whole
//!   NAL unit (§5.8 forbids it, but it is unambiguous).
//! - Access units end on the RTP marker bit (§5.1) or when the RTP timestamp
//!   changes (for senders that miss markers). An IDR picture may span several
//!   slices, single NAL units and FU-A runs.
//! - Output is one FLV VIDEODATA body per access unit, built in place: the
//!   buffer reserves the 5-byte prefix (`0x17`/`0x27`, AVCPacketType 1,
//!   composition time 0) and every NAL unit is copied once behind a 4-byte
//!   big-endian length, FU-A fragments straight into place. SPS, PPS, access
//!   unit delimiters and filler data are not put in the body.
//! - SPS/PPS capture from any packet form (STAP-A as Chrome sends them, single
//!   NAL packets as OBS sends them, even FU-A). When the SPS or PPS bytes
//!   change, an [`H264Config`] (dimensions, profile, level and the FLV AVC
//!   sequence header) is attached to the next emitted unit, so the caller
//!   sends the new sequence header right before the first unit that needs it.
//!   An SPS that does not parse is ignored and counted (`bad_sps`).
//!
//! Losses: a packet flagged `after_loss`, a sequence number other than the
//! expected one, a missing FU-A start or end, or any dropped packet discards
//! the partial unit and sets "awaiting keyframe": no unit is emitted until one
//! that contains an IDR slice, and nothing at all until SPS and PPS are known
//! (the state also holds from the start: a decoder cannot join elsewhere).
//! The caller asks the sender for a keyframe (PLI/FIR) while
//! [`H264Depacketizer::awaiting_keyframe`] is true. After a loss the rest of
//! the damaged access unit (same RTP timestamp) is dropped; the packet right
//! after a loss starts a fresh unit only if its timestamp is new and it begins
//! with a NAL unit that can open an access unit (AUD, SPS, PPS, SEI, or a slice
//! with first_mb_in_slice 0), so an IDR whose first packets arrived intact is
//! used without another keyframe round trip. If the lost packets carried a
//! changed SPS/PPS for that IDR, the stale configuration stays in force until
//! the next one arrives: the loss cannot be told apart.
//!
//! Padding-only packets (empty payload, Chrome's bandwidth probes in the video
//! sequence space) only advance the expected sequence number.
//!
//! Deliberately not implemented: packetization-mode 0-only restrictions (mode
//! 0 streams are a subset and decode fine), mode 2 (STAP-B 25, MTAP16 26,
//! MTAP24 27, FU-B 29: `Dropped(Unsupported)`), DON ordering, several PPS ids
//! in one configuration (the latest PPS wins), and composition time offsets
//! (WebRTC H.264 carries no B-frames).
//!
//! Limits: a unit larger than `max_unit` bytes (default [`DEFAULT_MAX_UNIT`])
//! is dropped (`TooLarge`); parameter sets above [`MAX_PARAMETER_SET`] bytes
//! are ignored; at most [`READY_CAP`] completed units wait to be taken, and a
//! unit completed while the queue is full is dropped (counted in
//! `queue_overflows`) and the depacketizer waits for a keyframe again.

use std::collections::VecDeque;

use super::{DepackStats, DropReason, Pushed, RtpView};
use crate::proto::codec::h264::{
    self as codec, first_mb_in_slice, nal_type, AvcPacketType, AVCC_LENGTH_SIZE,
    FLV_VIDEO_PREFIX_LEN, NAL_AUD, NAL_FILLER, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS,
};

// RFC 6184 §5.2 Table 1 (NAL unit / payload types).
const STAP_A: u8 = 24; // RFC 6184 §5.7.1
const STAP_B: u8 = 25; // RFC 6184 §5.7.1 (interleaved mode only)
const MTAP16: u8 = 26; // RFC 6184 §5.7.2
const MTAP24: u8 = 27; // RFC 6184 §5.7.2
const FU_A: u8 = 28; // RFC 6184 §5.8
const FU_B: u8 = 29; // RFC 6184 §5.8

/// F bit of a NAL unit / payload header (RFC 6184 §5.3).
const F_BIT: u8 = 0x80;
/// F and NRI bits kept from the FU indicator (RFC 6184 §5.8).
const FU_INDICATOR_KEEP: u8 = 0xe0;
/// FU header S and E bits (RFC 6184 §5.8).
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;
/// STAP-A NALU size field length (RFC 6184 §5.7.1).
const STAP_SIZE_LEN: usize = 2;

/// Default limit on one access unit's NAL bytes (4 MiB).
pub const DEFAULT_MAX_UNIT: usize = 4 << 20;
/// Longest SPS or PPS kept; longer ones are ignored.
pub const MAX_PARAMETER_SET: usize = 4096;
/// Completed units held until the caller takes them.
pub const READY_CAP: usize = 8;
/// Smallest and largest capacity reserved for a new unit's buffer.
const MIN_UNIT_CAPACITY: usize = 1024;
const MAX_UNIT_CAPACITY: usize = 1 << 20;

/// One access unit, ready for RTMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Unit {
    /// Extended RTP timestamp (90 kHz).
    pub ts: u64,
    /// Contains an IDR slice (nal_unit_type 5).
    pub keyframe: bool,
    /// A complete FLV VIDEODATA body: `(1 if keyframe else 2) << 4 | 7`,
    /// AVCPacketType 1, composition time 0 (3 bytes), then each NAL unit with
    /// a 4-byte big-endian length.
    pub flv_body: Vec<u8>,
    /// NAL units in `flv_body`.
    pub nal_count: usize,
}

/// The stream's parameter sets, published whenever the SPS or PPS change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Config {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    /// Displayed size after cropping.
    pub width: u32,
    pub height: u32,
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// FLV VIDEODATA body: `0x17`, AVCPacketType 0, composition time 0, then
    /// the AVCDecoderConfigurationRecord.
    pub flv_sequence_header: Vec<u8>,
}

#[derive(Debug)]
struct ReadyUnit {
    config: Option<H264Config>,
    unit: H264Unit,
}

/// What finishing the open unit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completion {
    /// No unit was open, or it held no NAL units for the body.
    Nothing,
    Emitted,
    /// Thrown away: awaiting a keyframe, no parameter sets yet, or queue full.
    Rejected,
}

/// H.264 depacketizer for one SSRC. See the module documentation.
///
/// Caller protocol: after each `push` that returns `Complete`, loop: send
/// `take_config()`'s sequence header if there is one, then `take_unit()`,
/// until `take_unit()` is `None`. Counters: [`H264Depacketizer::stats`].
#[derive(Debug)]
pub struct H264Depacketizer {
    max_unit: usize,
    /// FLV body under construction; always starts with the 5 reserved bytes.
    buf: Vec<u8>,
    /// RTP timestamp of the open unit; `None` when no unit is open.
    unit_ts: Option<u64>,
    keyframe: bool,
    nal_count: usize,
    /// FU-A in progress: offset in `buf` of the NAL's 4-byte length field.
    fu: Option<usize>,
    next_seq: Option<u64>,
    last_ts: Option<u64>,
    /// The next media packet follows a loss (or the start): it must prove it
    /// opens an access unit.
    resync: bool,
    /// Packets with this timestamp belong to a damaged unit and are dropped.
    discard_ts: Option<u64>,
    awaiting_keyframe: bool,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// SPS or PPS changed since the last published config.
    params_changed: bool,
    /// A config has been published at least once.
    has_config: bool,
    ready: VecDeque<ReadyUnit>,
    /// Config of a unit taken before its config was.
    late_config: Option<H264Config>,
    last_len: usize,
    stats: DepackStats,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Depacketizer {
    pub fn new() -> Self {
        Self::with_max_unit(DEFAULT_MAX_UNIT)
    }

    /// A depacketizer that drops access units above `max_unit` NAL bytes.
    pub fn with_max_unit(max_unit: usize) -> Self {
        let mut d = H264Depacketizer {
            max_unit,
            buf: Vec::new(),
            unit_ts: None,
            keyframe: false,
            nal_count: 0,
            fu: None,
            next_seq: None,
            last_ts: None,
            resync: true,
            discard_ts: None,
            awaiting_keyframe: true,
            sps: None,
            pps: None,
            params_changed: false,
            has_config: false,
            ready: VecDeque::with_capacity(READY_CAP),
            late_config: None,
            last_len: MIN_UNIT_CAPACITY,
            stats: DepackStats::default(),
        };
        d.buf = d.fresh_buf();
        d
    }

    /// Feed the next RTP packet in sequence order.
    ///
    /// Returns `Complete` when at least one unit is ready (even if this packet
    /// was itself dropped after its timestamp closed the previous unit: the
    /// drop is still counted), else `Dropped(reason)`, else `Partial`. A
    /// packet following a loss may return `Partial` when it starts a fresh
    /// unit; `awaiting_keyframe()` says whether to ask for a keyframe.
    pub fn push(&mut self, pkt: RtpView<'_>) -> Pushed {
        self.stats.packets += 1;
        let ready_before = self.stats.units;
        let lost = pkt.after_loss || self.next_seq.is_some_and(|n| n != pkt.seq);
        self.next_seq = Some(pkt.seq.wrapping_add(1));
        if lost {
            self.stats.seq_gaps += 1;
            self.discard_unit();
            self.awaiting_keyframe = true;
            self.resync = true;
        }
        if pkt.payload.is_empty() {
            // Padding-only packet: RTP padding (RFC 3550 §5.1) already removed.
            return if lost {
                self.drop_packet(DropReason::SeqGap)
            } else {
                Pushed::Partial
            };
        }

        let ts = pkt.ts;
        if self.resync {
            self.resync = false;
            self.discard_ts = if self.last_ts != Some(ts) && starts_access_unit(pkt.payload) {
                None
            } else {
                Some(ts)
            };
        }
        self.last_ts = Some(ts);
        if let Some(bad) = self.discard_ts {
            if bad == ts {
                let reason = header_defect(pkt.payload).unwrap_or(if lost {
                    DropReason::SeqGap
                } else {
                    DropReason::AwaitingKeyframe
                });
                return self.drop_packet(reason);
            }
            self.discard_ts = None;
        }

        let mut rejected = false;
        if self.unit_ts.is_some_and(|open| open != ts) {
            if self.fu.is_some() {
                // The FU-A end never came although no packet is missing.
                self.discard_unit();
                self.awaiting_keyframe = true;
            } else {
                rejected |= self.complete_unit() == Completion::Rejected;
            }
        }

        let mut step = self.handle_payload(ts, pkt.payload);
        if step.is_ok() && pkt.marker {
            if self.fu.is_some() {
                // Marker inside a fragmented NAL unit (RFC 6184 §5.1: the
                // marker is set on the last packet of the access unit).
                step = Err(DropReason::Malformed);
            } else {
                rejected |= self.complete_unit() == Completion::Rejected;
            }
        }
        let dropped = match step {
            Ok(()) => None,
            Err(reason) => {
                self.discard_unit();
                self.awaiting_keyframe = true;
                self.discard_ts = Some(ts);
                self.stats.count_drop(reason);
                Some(reason)
            }
        };

        if self.stats.units != ready_before {
            Pushed::Complete
        } else if let Some(reason) = dropped {
            Pushed::Dropped(reason)
        } else if rejected {
            self.drop_packet(DropReason::AwaitingKeyframe)
        } else {
            Pushed::Partial
        }
    }

    /// The configuration to send before the next unit from `take_unit`, once
    /// per change of SPS or PPS bytes (the first one included).
    pub fn take_config(&mut self) -> Option<H264Config> {
        self.late_config
            .take()
            .or_else(|| self.ready.front_mut().and_then(|r| r.config.take()))
    }

    /// The next completed unit, oldest first.
    pub fn take_unit(&mut self) -> Option<H264Unit> {
        let ReadyUnit { config, unit } = self.ready.pop_front()?;
        if config.is_some() {
            // Taken out of order: keep it for the next `take_config`.
            self.late_config = config;
        }
        Some(unit)
    }

    /// True from the start and after any loss until a unit with an IDR slice
    /// (and known SPS/PPS) is emitted: the caller should request a keyframe.
    pub fn awaiting_keyframe(&self) -> bool {
        self.awaiting_keyframe
    }

    /// The current SPS and PPS, if both have been seen.
    pub fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        match (&self.sps, &self.pps) {
            (Some(s), Some(p)) => Some((s, p)),
            _ => None,
        }
    }

    pub fn stats(&self) -> &DepackStats {
        &self.stats
    }

    /// Forget partial state and sequence tracking (SSRC change, long pause):
    /// the next unit must be a keyframe. Completed units and the parameter
    /// sets are kept.
    pub fn reset(&mut self) {
        self.discard_unit();
        self.next_seq = None;
        self.last_ts = None;
        self.resync = true;
        self.discard_ts = None;
        self.awaiting_keyframe = true;
    }

    fn drop_packet(&mut self, reason: DropReason) -> Pushed {
        self.stats.count_drop(reason);
        Pushed::Dropped(reason)
    }

    fn fresh_buf(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.last_len.clamp(MIN_UNIT_CAPACITY, MAX_UNIT_CAPACITY));
        b.extend_from_slice(&[0; FLV_VIDEO_PREFIX_LEN]);
        b
    }

    fn discard_unit(&mut self) {
        if self.unit_ts.is_some() {
            self.stats.units_discarded += 1;
        }
        self.clear_unit();
    }

    /// A whole unit that cannot be decoded yet (no keyframe or no parameter sets).
    fn skip_unit(&mut self) {
        if self.unit_ts.is_some() {
            self.stats.units_skipped += 1;
        }
        self.clear_unit();
    }

    fn clear_unit(&mut self) {
        self.buf.truncate(FLV_VIDEO_PREFIX_LEN);
        self.unit_ts = None;
        self.keyframe = false;
        self.nal_count = 0;
        self.fu = None;
    }

    fn open(&mut self, ts: u64) {
        if self.unit_ts.is_none() {
            self.unit_ts = Some(ts);
            self.buf.truncate(FLV_VIDEO_PREFIX_LEN);
            self.keyframe = false;
            self.nal_count = 0;
        }
    }

    /// Room for `add` more body bytes within `max_unit`?
    fn room(&self, add: usize) -> Result<(), DropReason> {
        let used = self.buf.len().saturating_sub(FLV_VIDEO_PREFIX_LEN);
        if used.saturating_add(add) > self.max_unit {
            return Err(DropReason::TooLarge);
        }
        Ok(())
    }

    fn handle_payload(&mut self, ts: u64, payload: &[u8]) -> Result<(), DropReason> {
        let (&header, rest) = payload.split_first().ok_or(DropReason::Malformed)?;
        if let Some(reason) = header_defect(payload) {
            return Err(reason);
        }
        match nal_type(header) {
            1..=23 => {
                self.check_no_fu()?;
                self.open(ts);
                self.add_nal(payload)
            }
            STAP_A => {
                self.check_no_fu()?;
                validate_stap_a(rest)?;
                self.open(ts);
                let mut units = rest;
                while let Some((nal, next)) = split_stap_unit(units) {
                    self.add_nal(nal)?;
                    units = next;
                }
                Ok(())
            }
            FU_A => self.fu_a(ts, header, rest),
            _ => Err(DropReason::Malformed), // excluded by header_defect
        }
    }

    /// A non-FU packet while a fragmented NAL unit is open means its end was
    /// never sent.
    fn check_no_fu(&self) -> Result<(), DropReason> {
        if self.fu.is_some() {
            return Err(DropReason::Malformed);
        }
        Ok(())
    }

    /// A whole NAL unit (header byte first, non-empty).
    fn add_nal(&mut self, nal: &[u8]) -> Result<(), DropReason> {
        let Some(&header) = nal.first() else {
            return Err(DropReason::Malformed);
        };
        let t = nal_type(header);
        if is_parameter_or_skipped(t) {
            self.capture(t, nal);
            return Ok(());
        }
        let len = u32::try_from(nal.len()).map_err(|_| DropReason::TooLarge)?;
        self.room(AVCC_LENGTH_SIZE + nal.len())?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(nal);
        self.nal_count += 1;
        self.keyframe |= t == NAL_IDR;
        Ok(())
    }

    /// Keep an SPS or PPS; AUD and filler are just dropped.
    fn capture(&mut self, t: u8, nal: &[u8]) {
        if nal.len() > MAX_PARAMETER_SET {
            if t == NAL_SPS {
                self.stats.bad_sps += 1;
            }
            return;
        }
        match t {
            NAL_SPS if self.sps.as_deref() != Some(nal) => {
                if codec::parse_sps(nal).is_ok() {
                    self.sps = Some(nal.to_vec());
                    self.params_changed = true;
                } else {
                    self.stats.bad_sps += 1;
                }
            }
            NAL_PPS if self.pps.as_deref() != Some(nal) => {
                self.pps = Some(nal.to_vec());
                self.params_changed = true;
            }
            _ => {}
        }
    }

    /// FU-A (RFC 6184 §5.8):
    /// ```text
    /// FU indicator |F|NRI|Type=28|   FU header |S|E|R|Type|   FU payload...
    /// ```
    fn fu_a(&mut self, ts: u64, indicator: u8, rest: &[u8]) -> Result<(), DropReason> {
        let (&fu_header, data) = rest.split_first().ok_or(DropReason::Malformed)?;
        let t = nal_type(fu_header);
        if !(1..=23).contains(&t) {
            return Err(DropReason::Malformed);
        }
        let start = fu_header & FU_START != 0;
        let end = fu_header & FU_END != 0;
        let len_pos = match (self.fu, start) {
            (Some(pos), false) => pos,
            (None, true) => {
                self.open(ts);
                self.room(AVCC_LENGTH_SIZE + 1)?;
                let pos = self.buf.len();
                self.buf.extend_from_slice(&[0; AVCC_LENGTH_SIZE]);
                self.buf.push((indicator & FU_INDICATOR_KEEP) | t);
                self.fu = Some(pos);
                pos
            }
            // A start while another fragmented NAL unit is open: its end is missing.
            (Some(_), true) => return Err(DropReason::Malformed),
            // A middle or end without the start: a fragment was lost.
            (None, false) => return Err(DropReason::SeqGap),
        };
        self.room(data.len())?;
        self.buf.extend_from_slice(data);
        if end {
            self.fu = None;
            self.finish_fu_nal(len_pos, t)?;
        }
        Ok(())
    }

    /// Fill in the length of the NAL unit reassembled at `len_pos`.
    fn finish_fu_nal(&mut self, len_pos: usize, t: u8) -> Result<(), DropReason> {
        let nal_start = len_pos + AVCC_LENGTH_SIZE;
        if is_parameter_or_skipped(t) {
            let nal = self
                .buf
                .get(nal_start..)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            self.buf.truncate(len_pos);
            self.capture(t, &nal);
            return Ok(());
        }
        let len = self.buf.len().saturating_sub(nal_start);
        let len = u32::try_from(len).map_err(|_| DropReason::TooLarge)?;
        let field = self
            .buf
            .get_mut(len_pos..nal_start)
            .ok_or(DropReason::Malformed)?;
        field.copy_from_slice(&len.to_be_bytes());
        self.nal_count += 1;
        self.keyframe |= t == NAL_IDR;
        Ok(())
    }

    /// Close the open unit and queue it if it may be emitted.
    fn complete_unit(&mut self) -> Completion {
        let Some(ts) = self.unit_ts else {
            return Completion::Nothing;
        };
        if self.nal_count == 0 {
            // Only parameter sets / delimiters: captured, nothing to play.
            self.unit_ts = None;
            self.buf.truncate(FLV_VIDEO_PREFIX_LEN);
            self.keyframe = false;
            return Completion::Nothing;
        }
        let keyframe = self.keyframe;
        if self.ready.len() >= READY_CAP {
            self.stats.queue_overflows += 1;
            self.awaiting_keyframe = true;
            self.discard_unit();
            return Completion::Rejected;
        }
        if self.awaiting_keyframe && !keyframe {
            self.skip_unit();
            return Completion::Rejected;
        }
        let config = self.build_config();
        if !self.has_config {
            self.skip_unit();
            return Completion::Rejected;
        }
        let prefix = codec::flv_video_prefix(keyframe, AvcPacketType::Nalu);
        if let Some(head) = self.buf.get_mut(..FLV_VIDEO_PREFIX_LEN) {
            head.copy_from_slice(&prefix);
        }
        self.last_len = self.buf.len();
        let fresh = self.fresh_buf();
        let flv_body = std::mem::replace(&mut self.buf, fresh);
        let unit = H264Unit {
            ts,
            keyframe,
            flv_body,
            nal_count: self.nal_count,
        };
        self.unit_ts = None;
        self.keyframe = false;
        self.nal_count = 0;
        self.awaiting_keyframe = false;
        self.stats.units += 1;
        if keyframe {
            self.stats.keyframes += 1;
        }
        self.ready.push_back(ReadyUnit { config, unit });
        Completion::Emitted
    }

    /// A new config if the SPS or PPS changed and both are known.
    fn build_config(&mut self) -> Option<H264Config> {
        if !self.params_changed {
            return None;
        }
        let (sps, pps) = match (&self.sps, &self.pps) {
            (Some(s), Some(p)) => (s, p),
            _ => return None,
        };
        self.params_changed = false;
        let (info, header) = match (codec::parse_sps(sps), codec::flv_sequence_header(sps, pps)) {
            (Ok(i), Ok(h)) => (i, h),
            _ => {
                self.stats.bad_sps += 1;
                return None;
            }
        };
        self.has_config = true;
        self.stats.configs += 1;
        Some(H264Config {
            sps: sps.clone(),
            pps: pps.clone(),
            width: info.width,
            height: info.height,
            profile_idc: info.profile_idc,
            constraint_flags: info.constraint_flags,
            level_idc: info.level_idc,
            flv_sequence_header: header,
        })
    }
}

/// NAL unit types that never go into the FLV body.
fn is_parameter_or_skipped(t: u8) -> bool {
    matches!(t, NAL_SPS | NAL_PPS | NAL_AUD | NAL_FILLER)
}

/// What is wrong with a payload's first byte, if anything: the F bit (RFC 6184
/// §5.3: may contain bit errors), a reserved type (0, 30, 31: Table 1) or an
/// interleaved-mode type.
fn header_defect(payload: &[u8]) -> Option<DropReason> {
    let &header = payload.first()?;
    if header & F_BIT != 0 {
        return Some(DropReason::Malformed);
    }
    match nal_type(header) {
        1..=24 | FU_A => None,
        STAP_B | MTAP16 | MTAP24 | FU_B => Some(DropReason::Unsupported),
        _ => Some(DropReason::Malformed),
    }
}

/// STAP-A aggregation unit (RFC 6184 §5.7.1): `NALU size (16 bits) | NAL unit`.
fn split_stap_unit(units: &[u8]) -> Option<(&[u8], &[u8])> {
    let size = units.get(..STAP_SIZE_LEN)?;
    let size = usize::from(u16::from_be_bytes([*size.first()?, *size.get(1)?]));
    let body = units.get(STAP_SIZE_LEN..)?;
    Some((body.get(..size)?, body.get(size..)?))
}

/// Every aggregation unit is complete, non-empty and a single NAL unit type
/// (1–23): nothing is appended from a STAP-A that is malformed further on.
fn validate_stap_a(mut units: &[u8]) -> Result<(), DropReason> {
    if units.is_empty() {
        return Err(DropReason::Malformed);
    }
    while !units.is_empty() {
        let (nal, next) = split_stap_unit(units).ok_or(DropReason::Malformed)?;
        match nal.first() {
            Some(&h) if h & F_BIT == 0 && (1..=23).contains(&nal_type(h)) => {}
            _ => return Err(DropReason::Malformed),
        }
        units = next;
    }
    Ok(())
}

/// Could this payload be the first packet of an access unit? (H.264 §7.4.1.2.3:
/// AUD, SPS, PPS and SEI precede the primary coded picture, whose first slice
/// has first_mb_in_slice 0 when slices are in order, as WebRTC senders send them.)
fn starts_access_unit(payload: &[u8]) -> bool {
    let Some((&header, rest)) = payload.split_first() else {
        return false;
    };
    match nal_type(header) {
        STAP_A => split_stap_unit(rest)
            .and_then(|(nal, _)| nal.split_first())
            .is_some_and(|(&h, body)| nal_opens_unit(nal_type(h), body)),
        FU_A => match rest.split_first() {
            Some((&fu_header, data)) if fu_header & FU_START != 0 => {
                nal_opens_unit(nal_type(fu_header), data)
            }
            _ => false,
        },
        t @ 1..=23 => nal_opens_unit(t, rest),
        _ => false,
    }
}

fn nal_opens_unit(t: u8, after_header: &[u8]) -> bool {
    match t {
        NAL_AUD | NAL_SPS | NAL_PPS | NAL_SEI => true,
        NAL_SLICE | NAL_IDR => first_mb_in_slice(after_header) == Some(0),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::codec::h264::flv_nalu_body;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// libx264 176x144 baseline and 640x360 baseline parameter sets.
    const SPS_176: &str = "6742c00bd902c4ec0440000003004000000f03c50a92";
    const PPS_176: &str = "68cb83cb20";
    const SPS_640: &str = "6742c01ed900a02ff970110000030001000003003c0f162e48";
    const PPS_640: &str = "68cb83cb20";

    /// Deterministic filler bytes.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// A slice NAL: header, first_mb_in_slice as ue(v) in the first byte, noise.
    fn slice(idr: bool, first_mb: u8, len: usize, seed: u64) -> Vec<u8> {
        let mut n = vec![if idr { 0x65 } else { 0x41 }];
        // ue(0) = 1, ue(1) = 010, ue(2) = 011: top bits of the first byte.
        n.push(match first_mb {
            0 => 0x88,
            1 => 0x48,
            _ => 0x68,
        });
        n.extend(noise(seed, len.saturating_sub(2)));
        n
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Style {
        /// STAP-A for runs of small NAL units (Chrome).
        Stap,
        /// One NAL unit per packet, FU-A for large ones (OBS).
        Single,
    }

    /// Test-only packetizer (RFC 6184 mode 1) at a given MTU.
    fn packetize(nals: &[Vec<u8>], mtu: usize, style: Style) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < nals.len() {
            let nal = &nals[i];
            if style == Style::Stap {
                let mut j = i;
                let mut size = 1;
                while j < nals.len() && size + 2 + nals[j].len() <= mtu {
                    size += 2 + nals[j].len();
                    j += 1;
                }
                if j - i >= 2 {
                    let nri = nals[i..j].iter().map(|n| n[0] & 0x60).max().unwrap();
                    let mut p = vec![nri | STAP_A];
                    for n in &nals[i..j] {
                        p.extend_from_slice(&(n.len() as u16).to_be_bytes());
                        p.extend_from_slice(n);
                    }
                    out.push(p);
                    i = j;
                    continue;
                }
            }
            if nal.len() <= mtu {
                out.push(nal.clone());
            } else {
                let chunks: Vec<&[u8]> = nal[1..].chunks(mtu - 2).collect();
                for (k, c) in chunks.iter().enumerate() {
                    let mut fh = nal[0] & 0x1f;
                    if k == 0 {
                        fh |= FU_START;
                    }
                    if k == chunks.len() - 1 {
                        fh |= FU_END;
                    }
                    let mut p = vec![(nal[0] & 0xe0) | FU_A, fh];
                    p.extend_from_slice(c);
                    out.push(p);
                }
            }
            i += 1;
        }
        out
    }

    struct Pkt {
        seq: u64,
        ts: u64,
        marker: bool,
        payload: Vec<u8>,
    }

    impl Pkt {
        fn view(&self) -> RtpView<'_> {
            RtpView {
                seq: self.seq,
                ts: self.ts,
                marker: self.marker,
                payload: &self.payload,
                after_loss: false,
            }
        }
    }

    struct Sender {
        seq: u64,
        style: Style,
        markers: bool,
    }

    impl Sender {
        fn new(style: Style) -> Self {
            Sender {
                seq: 65_530,
                style,
                markers: true,
            }
        }
        fn frame(&mut self, ts: u64, nals: &[Vec<u8>]) -> Vec<Pkt> {
            let payloads = packetize(nals, 1200, self.style);
            let n = payloads.len();
            payloads
                .into_iter()
                .enumerate()
                .map(|(i, payload)| {
                    self.seq += 1;
                    Pkt {
                        seq: self.seq,
                        ts,
                        marker: self.markers && i + 1 == n,
                        payload,
                    }
                })
                .collect()
        }
    }

    /// Split an FLV AVC NALU body back into NAL units.
    fn body_nals(body: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(body[1], 1, "AVCPacketType NALU");
        assert_eq!(body[2..5], [0, 0, 0], "composition time 0");
        let mut out = Vec::new();
        let mut p = &body[5..];
        while !p.is_empty() {
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            out.push(p[4..4 + len].to_vec());
            p = &p[4 + len..];
        }
        out
    }

    fn push_all(d: &mut H264Depacketizer, pkts: &[Pkt]) -> Vec<Pushed> {
        pkts.iter().map(|p| d.push(p.view())).collect()
    }

    fn idr_frame(sps: &str, pps: &str, seed: u64) -> Vec<Vec<u8>> {
        vec![
            vec![0x09, 0xf0],
            hex(sps),
            hex(pps),
            vec![0x06, 0x05, 0x01, 0x00, 0x80],
            slice(true, 0, 3000, seed),
            slice(true, 1, 900, seed + 1),
        ]
    }

    /// NAL units expected in the body: SPS/PPS/AUD removed.
    fn expected_body(nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
        nals.iter()
            .filter(|n| !matches!(n[0] & 0x1f, 7 | 8 | 9 | 12))
            .cloned()
            .collect()
    }

    #[test]
    fn chrome_style_round_trip() {
        for style in [Style::Stap, Style::Single] {
            let mut tx = Sender::new(style);
            let mut d = H264Depacketizer::new();
            let mut ts = 1_000u64;
            for f in 0..6u64 {
                let nals = if f % 3 == 0 {
                    idr_frame(SPS_176, PPS_176, f)
                } else {
                    vec![slice(false, 0, 200 + 700 * f as usize, f)]
                };
                let pkts = tx.frame(ts, &nals);
                let results = push_all(&mut d, &pkts);
                let (last, rest) = results.split_last().unwrap();
                assert!(rest.iter().all(|r| *r == Pushed::Partial), "{results:?}");
                assert_eq!(*last, Pushed::Complete);
                let config = d.take_config();
                assert_eq!(config.is_some(), f == 0, "config only once");
                if let Some(c) = config {
                    assert_eq!(
                        (c.width, c.height, c.profile_idc, c.level_idc),
                        (176, 144, 66, 11)
                    );
                    assert_eq!(c.sps, hex(SPS_176));
                    assert_eq!(
                        c.flv_sequence_header,
                        codec::flv_sequence_header(&c.sps, &c.pps).unwrap()
                    );
                }
                let u = d.take_unit().unwrap();
                assert_eq!(u.ts, ts);
                assert_eq!(u.keyframe, f % 3 == 0);
                assert_eq!(u.flv_body[0], if u.keyframe { 0x17 } else { 0x27 });
                let want = expected_body(&nals);
                assert_eq!(body_nals(&u.flv_body), want);
                assert_eq!(u.nal_count, want.len());
                let refs: Vec<&[u8]> = want.iter().map(|n| &n[..]).collect();
                assert_eq!(u.flv_body, flv_nalu_body(u.keyframe, &refs));
                assert!(d.take_unit().is_none());
                ts += 3000;
            }
            assert_eq!(d.stats().units, 6);
            assert_eq!(d.stats().keyframes, 2);
            assert_eq!(d.stats().configs, 1);
            assert_eq!(d.stats().dropped(), 0);
            assert!(!d.awaiting_keyframe());
        }
    }

    #[test]
    fn obs_style_separate_parameter_sets_without_markers() {
        let mut tx = Sender::new(Style::Single);
        tx.markers = false;
        let mut d = H264Depacketizer::new();
        let idr = idr_frame(SPS_640, PPS_640, 9);
        let p1 = vec![slice(false, 0, 2500, 10), slice(false, 2, 100, 11)];
        let mut pkts = tx.frame(0, &idr);
        pkts.extend(tx.frame(3000, &p1));
        pkts.extend(tx.frame(6000, &[slice(false, 0, 50, 12)]));
        let results = push_all(&mut d, &pkts);
        // Units complete on the timestamp change only.
        assert_eq!(
            results.iter().filter(|r| **r == Pushed::Complete).count(),
            2
        );
        assert!(!results.iter().any(|r| matches!(r, Pushed::Dropped(_))));
        let c = d.take_config().unwrap();
        assert_eq!((c.width, c.height), (640, 360));
        let u = d.take_unit().unwrap();
        assert!(u.keyframe);
        assert_eq!(body_nals(&u.flv_body), expected_body(&idr));
        assert_eq!(d.take_config(), None);
        let u = d.take_unit().unwrap();
        assert_eq!((u.ts, u.keyframe), (3000, false));
        assert_eq!(body_nals(&u.flv_body), p1);
        assert!(d.take_unit().is_none());
    }

    #[test]
    fn loss_mid_fu_a_waits_for_next_idr() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        assert!(d.take_config().is_some());
        assert!(d.take_unit().unwrap().keyframe);

        // P frame of three FU-A packets; the middle one is lost.
        let mut p = tx.frame(3000, &[slice(false, 0, 3000, 2)]);
        assert_eq!(p.len(), 3);
        p.remove(1);
        assert_eq!(d.push(p[0].view()), Pushed::Partial);
        assert_eq!(d.push(p[1].view()), Pushed::Dropped(DropReason::SeqGap));
        assert!(d.awaiting_keyframe());
        // Following P frames are intact but cannot be decoded.
        for f in 2..5 {
            let r = push_all(&mut d, &tx.frame(3000 * f, &[slice(false, 0, 1500, f)]));
            assert_eq!(
                r.last(),
                Some(&Pushed::Dropped(DropReason::AwaitingKeyframe))
            );
            assert!(d.take_unit().is_none());
        }
        // The next IDR recovers; parameter sets unchanged: no new config.
        let idr = idr_frame(SPS_176, PPS_176, 7);
        let r = push_all(&mut d, &tx.frame(15_000, &idr));
        assert_eq!(r.last(), Some(&Pushed::Complete));
        assert_eq!(d.take_config(), None);
        let u = d.take_unit().unwrap();
        assert!(u.keyframe);
        assert_eq!(body_nals(&u.flv_body), expected_body(&idr));
        assert!(!d.awaiting_keyframe());
        assert_eq!(d.stats().seq_gaps, 1);
        assert_eq!(d.stats().dropped_awaiting_keyframe, 3);
        assert_eq!(d.stats().dropped_seq_gap, 1);
        // The frame with the hole was thrown away broken; the three intact ones skipped.
        assert_eq!(d.stats().units_discarded, 1);
        assert_eq!(d.stats().units_skipped, 3);
    }

    #[test]
    fn loss_of_first_idr_slice_drops_the_whole_idr() {
        let mut tx = Sender::new(Style::Single);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = (d.take_config(), d.take_unit());
        // Second IDR: lose everything up to the start of the second slice.
        let pkts = tx.frame(3000, &idr_frame(SPS_176, PPS_176, 2));
        let second = pkts
            .iter()
            .position(|p| p.payload[..2] == [0x65, 0x48])
            .unwrap();
        for (i, p) in pkts[second..].iter().enumerate() {
            let want = if i == 0 {
                DropReason::SeqGap
            } else {
                DropReason::AwaitingKeyframe
            };
            assert_eq!(d.push(p.view()), Pushed::Dropped(want));
        }
        assert!(d.take_unit().is_none());
        assert!(d.awaiting_keyframe());
    }

    #[test]
    fn intact_idr_right_after_a_loss_is_used() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = (d.take_config(), d.take_unit());
        let _lost = tx.frame(3000, &[slice(false, 0, 100, 2)]);
        let idr = vec![slice(true, 0, 500, 3)];
        let r = push_all(&mut d, &tx.frame(6000, &idr));
        assert_eq!(r, [Pushed::Complete]);
        assert!(d.take_unit().unwrap().keyframe);
        assert_eq!(d.stats().seq_gaps, 1);
        // A P frame right after a loss is used as a unit start but not emitted.
        let _lost = tx.frame(9000, &[slice(false, 0, 100, 4)]);
        assert_eq!(
            push_all(&mut d, &tx.frame(12000, &[slice(false, 0, 100, 5)])),
            [Pushed::Dropped(DropReason::AwaitingKeyframe)]
        );
    }

    #[test]
    fn after_loss_flag_and_fu_without_start() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = d.take_unit();
        let pkts = tx.frame(3000, &[slice(false, 0, 100, 2)]);
        let mut v = pkts[0].view();
        v.after_loss = true;
        assert_eq!(d.push(v), Pushed::Dropped(DropReason::AwaitingKeyframe));
        assert!(d.awaiting_keyframe());

        // A fresh depacketizer whose first packet is an FU-A middle.
        let mut d = H264Depacketizer::new();
        let pkts = tx.frame(6000, &[slice(true, 0, 3000, 3)]);
        assert_eq!(
            d.push(pkts[1].view()),
            Pushed::Dropped(DropReason::AwaitingKeyframe)
        );
        assert_eq!(
            d.push(pkts[2].view()),
            Pushed::Dropped(DropReason::AwaitingKeyframe)
        );
        // FU-A middle without a start inside a unit, with no sequence gap.
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(9000, &idr_frame(SPS_176, PPS_176, 4)));
        let _ = d.take_unit();
        let single = tx.frame(12000, &[slice(false, 0, 100, 5)]);
        let fu = tx.frame(12000, &[slice(false, 1, 3000, 6)]);
        // The single NAL without its marker, then an FU-A middle right after it.
        let first = Pkt {
            seq: single[0].seq,
            ts: 12000,
            marker: false,
            payload: single[0].payload.clone(),
        };
        assert_eq!(d.push(first.view()), Pushed::Partial);
        let mid = Pkt {
            seq: first.seq + 1,
            ts: 12000,
            marker: false,
            payload: fu[1].payload.clone(),
        };
        assert_eq!(d.push(mid.view()), Pushed::Dropped(DropReason::SeqGap));
        assert!(d.awaiting_keyframe());
        assert_eq!(d.stats().units_discarded, 1);
    }

    #[test]
    fn unsupported_and_malformed_payloads() {
        let mut d = H264Depacketizer::new();
        for (i, t) in [STAP_B, MTAP16, MTAP24, FU_B].into_iter().enumerate() {
            let p = [0x60 | t, 0, 1, 2, 3];
            let v = RtpView {
                seq: i as u64,
                ts: i as u64,
                marker: true,
                payload: &p,
                after_loss: false,
            };
            assert_eq!(d.push(v), Pushed::Dropped(DropReason::Unsupported));
        }
        let bad: [&[u8]; 9] = [
            &[0x00, 1],                      // type 0
            &[0x7e, 1],                      // type 30
            &[0x1f, 1],                      // type 31
            &[0xe1, 1],                      // F bit
            &[0x78],                         // empty STAP-A
            &[0x78, 0x00, 0x05, 0x41, 1],    // truncated STAP-A unit
            &[0x78, 0x00, 0x00],             // zero-size STAP-A unit
            &[0x78, 0x00, 0x02, 0x7c, 0x85], // FU-A nested in STAP-A
            &[0x7c],                         // FU-A without header
        ];
        for (i, p) in bad.iter().enumerate() {
            let v = RtpView {
                seq: 10 + i as u64,
                ts: 100 + i as u64,
                marker: true,
                payload: p,
                after_loss: false,
            };
            assert_eq!(
                d.push(v),
                Pushed::Dropped(DropReason::Malformed),
                "{p:02x?}"
            );
        }
        // FU-A carrying a nested aggregation type.
        let v = RtpView {
            seq: 19,
            ts: 200,
            marker: true,
            payload: &[0x7c, 0x98, 1],
            after_loss: false,
        };
        assert_eq!(d.push(v), Pushed::Dropped(DropReason::Malformed));
        assert_eq!(d.stats().dropped_unsupported, 4);
        assert_eq!(d.stats().dropped_malformed, 10);
    }

    #[test]
    fn malformed_packet_drops_rest_of_unit() {
        let mut tx = Sender::new(Style::Single);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = (d.take_config(), d.take_unit());
        let mut pkts = tx.frame(
            3000,
            &[
                slice(true, 0, 100, 2),
                slice(true, 1, 100, 3),
                slice(true, 2, 100, 4),
            ],
        );
        pkts[1].payload[0] |= 0x80; // F bit on the second slice
        assert_eq!(
            push_all(&mut d, &pkts),
            [
                Pushed::Partial,
                Pushed::Dropped(DropReason::Malformed),
                Pushed::Dropped(DropReason::AwaitingKeyframe),
            ]
        );
        assert!(d.take_unit().is_none());
    }

    #[test]
    fn oversized_unit_is_dropped() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::with_max_unit(10_000);
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = (d.take_config(), d.take_unit());
        let r = push_all(&mut d, &tx.frame(3000, &[slice(true, 0, 20_000, 2)]));
        assert!(r.contains(&Pushed::Dropped(DropReason::TooLarge)), "{r:?}");
        assert_eq!(
            r.last(),
            Some(&Pushed::Dropped(DropReason::AwaitingKeyframe))
        );
        assert!(d.take_unit().is_none());
        assert!(d.awaiting_keyframe());
        // Exactly at the limit is fine: 4-byte length + 9996-byte NAL.
        let r = push_all(&mut d, &tx.frame(6000, &[slice(true, 0, 9996, 3)]));
        assert_eq!(r.last(), Some(&Pushed::Complete));
        assert_eq!(d.take_unit().unwrap().flv_body.len(), 10_005);
    }

    #[test]
    fn nothing_before_parameter_sets_and_config_changes() {
        let mut tx = Sender::new(Style::Stap);
        tx.markers = false;
        let mut d = H264Depacketizer::new();
        // An IDR without SPS/PPS cannot be played.
        let r = push_all(&mut d, &tx.frame(0, &[slice(true, 0, 100, 1)]));
        assert_eq!(r, [Pushed::Partial]);
        let r = push_all(&mut d, &tx.frame(3000, &idr_frame(SPS_176, PPS_176, 2)));
        assert_eq!(r[0], Pushed::Dropped(DropReason::AwaitingKeyframe));
        assert!(d.awaiting_keyframe());
        // Resolution change: new SPS with the next IDR. Without markers the
        // first IDR completes when the new IDR's first packet arrives; the
        // new config must belong to the new unit, not the old one.
        let r = push_all(&mut d, &tx.frame(6000, &idr_frame(SPS_640, PPS_640, 3)));
        assert_eq!(r[0], Pushed::Complete);
        let c = d.take_config().unwrap();
        assert_eq!((c.width, c.height), (176, 144));
        assert_eq!(d.take_unit().unwrap().ts, 3000);
        assert_eq!(d.take_config(), None);
        let _ = d.push(RtpView {
            seq: tx.seq + 1,
            ts: 9000,
            marker: true,
            payload: &slice(false, 0, 10, 4),
            after_loss: false,
        });
        let c = d.take_config().unwrap();
        assert_eq!((c.width, c.height), (640, 360));
        assert_eq!(d.take_unit().unwrap().ts, 6000);
        assert_eq!(d.take_unit().unwrap().ts, 9000);
        assert_eq!(d.stats().configs, 2);
    }

    #[test]
    fn config_taken_after_its_unit_is_not_lost() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        assert!(d.take_unit().is_some());
        assert!(d.take_config().is_some());
        assert!(d.take_config().is_none());
    }

    #[test]
    fn parameter_sets_in_fu_a_and_bad_sps() {
        let mut d = H264Depacketizer::new();
        let sps = hex(SPS_640);
        // SPS fragmented in two FU-A packets, then PPS, then IDR.
        let mid = sps.len() / 2;
        let mut a = vec![0x7c, 0x80 | 7];
        a.extend_from_slice(&sps[1..mid]);
        let mut b = vec![0x7c, 0x40 | 7];
        b.extend_from_slice(&sps[mid..]);
        let pps = hex(PPS_640);
        let idr = slice(true, 0, 100, 1);
        for (i, (p, m)) in [(&a, false), (&b, false), (&pps, false), (&idr, true)]
            .into_iter()
            .enumerate()
        {
            let _ = d.push(RtpView {
                seq: i as u64,
                ts: 0,
                marker: m,
                payload: p,
                after_loss: false,
            });
        }
        assert_eq!(d.take_config().unwrap().sps, sps);
        assert_eq!(d.take_unit().unwrap().nal_count, 1);
        // A broken SPS is ignored and counted; the old one stays.
        let r = d.push(RtpView {
            seq: 4,
            ts: 3000,
            marker: false,
            payload: &[0x67, 0x42],
            after_loss: false,
        });
        assert_eq!(r, Pushed::Partial);
        assert_eq!(d.stats().bad_sps, 1);
        assert_eq!(d.parameter_sets().unwrap().0, &sps[..]);
    }

    #[test]
    fn padding_packets_are_not_loss() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = d.take_unit();
        for _ in 0..3 {
            tx.seq += 1;
            assert_eq!(
                d.push(RtpView {
                    seq: tx.seq,
                    ts: 0,
                    marker: false,
                    payload: &[],
                    after_loss: false
                }),
                Pushed::Partial
            );
        }
        let r = push_all(&mut d, &tx.frame(3000, &[slice(false, 0, 100, 2)]));
        assert_eq!(r, [Pushed::Complete]);
        // A gap seen on a padding packet still counts.
        tx.seq += 2;
        assert_eq!(
            d.push(RtpView {
                seq: tx.seq,
                ts: 3000,
                marker: false,
                payload: &[],
                after_loss: false
            }),
            Pushed::Dropped(DropReason::SeqGap)
        );
        assert!(d.awaiting_keyframe());
    }

    #[test]
    fn queue_is_bounded() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        for f in 1..20u64 {
            let _ = push_all(&mut d, &tx.frame(3000 * f, &[slice(false, 0, 10, f)]));
        }
        assert_eq!(d.ready.len(), READY_CAP);
        assert!(d.stats().queue_overflows > 0);
        assert!(d.awaiting_keyframe());
        assert!(d.take_config().is_some());
        let mut n = 0;
        while d.take_unit().is_some() {
            n += 1;
        }
        assert_eq!(n, READY_CAP);
    }

    #[test]
    fn reset_requires_a_keyframe() {
        let mut tx = Sender::new(Style::Stap);
        let mut d = H264Depacketizer::new();
        let _ = push_all(&mut d, &tx.frame(0, &idr_frame(SPS_176, PPS_176, 1)));
        let _ = d.take_unit();
        d.reset();
        tx.seq += 1000;
        let r = push_all(&mut d, &tx.frame(3000, &[slice(false, 0, 10, 2)]));
        assert_eq!(r, [Pushed::Dropped(DropReason::AwaitingKeyframe)]);
        let r = push_all(&mut d, &tx.frame(6000, &[slice(true, 0, 10, 3)]));
        assert_eq!(r, [Pushed::Complete]);
    }

    /// Structural checks on whatever comes out.
    fn check_output(d: &mut H264Depacketizer, seen_key: &mut bool) {
        while let Some(_c) = d.take_config() {}
        while let Some(u) = d.take_unit() {
            let nals = body_nals(&u.flv_body);
            assert_eq!(nals.len(), u.nal_count);
            assert!(u.nal_count > 0);
            assert_eq!(u.keyframe, nals.iter().any(|n| n[0] & 0x1f == 5));
            assert_eq!(u.flv_body[0], if u.keyframe { 0x17 } else { 0x27 });
            assert!(*seen_key || u.keyframe, "first unit must be a keyframe");
            *seen_key = true;
            while let Some(_c) = d.take_config() {}
        }
    }

    #[test]
    fn every_prefix_never_panics() {
        let mut tx = Sender::new(Style::Stap);
        let mut pkts = tx.frame(0, &idr_frame(SPS_176, PPS_176, 1));
        pkts.extend(tx.frame(3000, &[slice(false, 0, 2000, 2)]));
        for p in &pkts {
            for n in 0..=p.payload.len() {
                let mut d = H264Depacketizer::new();
                let mut seen = false;
                for q in &pkts {
                    let payload = if q.seq == p.seq {
                        &p.payload[..n]
                    } else {
                        &q.payload[..]
                    };
                    let _ = d.push(RtpView {
                        seq: q.seq,
                        ts: q.ts,
                        marker: q.marker,
                        payload,
                        after_loss: false,
                    });
                    check_output(&mut d, &mut seen);
                }
            }
        }
    }

    #[test]
    fn random_packets_never_panic() {
        let mut d = H264Depacketizer::with_max_unit(50_000);
        let mut tx = Sender::new(Style::Stap);
        let mut seen = false;
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut seq = 0u64;
        let mut ts = 0u64;
        for _ in 0..20_000 {
            let r = next();
            seq += if r % 17 == 0 { 2 } else { 1 };
            if r % 5 == 0 {
                ts += 3000;
            }
            let mut payload = noise(r, (r >> 40) as usize % 1400);
            if let Some(h) = payload.first_mut() {
                // Mostly valid types, F bit mostly clear.
                *h = (*h & 0x7f) | if r % 31 == 0 { 0x80 } else { 0 };
                if r % 3 == 0 {
                    *h = (*h & 0xe0) | [1, 5, 7, 8, 24, 28, 28, 28][(r >> 8) as usize % 8];
                }
            }
            let _ = d.push(RtpView {
                seq,
                ts,
                marker: r % 4 == 0,
                payload: &payload,
                after_loss: r % 101 == 0,
            });
            check_output(&mut d, &mut seen);
            if r % 97 == 0 {
                // Interleave well-formed frames so units do get emitted.
                tx.seq = seq;
                ts += 3000;
                for p in tx.frame(ts, &idr_frame(SPS_176, PPS_176, r)) {
                    let _ = d.push(p.view());
                }
                seq = tx.seq;
                check_output(&mut d, &mut seen);
            }
        }
        assert!(d.stats().units > 0);
        assert!(d.buf.capacity() <= MAX_UNIT_CAPACITY.max(50_000 + 64) * 2);
    }
}
