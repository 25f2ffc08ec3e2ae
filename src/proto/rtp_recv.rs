//! Receive side of one RTP media stream (one SSRC), after SRTP removal, and
//! the transport-wide congestion-control recorder.
//!
//! Implemented:
//! - [`SeqExtender`]: 16-bit sequence numbers extended to 64 bits in the
//!   manner of RFC 3550 Appendix A.1 (wraparound in both directions, a large
//!   jump accepted as a restart only when the next packet confirms it).
//! - [`RtpReceiver`]: a reorder buffer of [`REORDER_SLOTS`] packets that
//!   releases payloads strictly in sequence order, NACK scheduling for holes
//!   (RFC 4585 §6.2.1; the caller builds the packet with
//!   [`rtcp::write_nack`]), giving up on a hole after a maximum wait or when
//!   the buffer would overflow (the next packet is flagged `after_loss` and a
//!   keyframe request raised), duplicate and late-packet drops, padding-only
//!   packets consumed silently, RTP timestamps extended to 64 bits, RFC 3550
//!   A.8 interarrival jitter, and the numbers of an RR report block (A.3).
//! - [`unwrap_rtx`]: the RTX payload format (RFC 4588 §4).
//! - [`TwccRecorder`]: arrival times by transport-wide sequence number,
//!   turned into transport-cc feedback every [`TWCC_INTERVAL`].
//!
//! Not implemented: RTCP XR RTT measurement (RTT is estimated from the
//! time between a packet's first NACK and its arrival, or set by the caller),
//! FEC, jitter-buffer playout delay (packets are released as soon as they are
//! in order), keyframe-request rate limiting (the caller's job).
//!
//! Error policy: every `Err` from [`RtpReceiver::handle_packet`] means "this
//! packet was dropped and counted"; the receiver stays usable.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::rtcp::{self, ReportBlock, TwccHeader};

/// How long [`RtpReceiver::new`] waits for a hole before giving it up.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(200);
/// Reorder buffer capacity in packets; also the largest hole we NACK.
pub const REORDER_SLOTS: usize = 512;
const SLOTS_U64: u64 = REORDER_SLOTS as u64;
/// Largest payload kept (an Ethernet MTU); larger packets are dropped.
pub const MAX_PAYLOAD: usize = 1500;
/// Forward jump still taken as in-sequence loss (RFC 3550 A.1 MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;
/// Backward distance still taken as reordering. RFC 3550 A.1 suggests 100;
/// retransmissions can trail the newest packet by more than the reorder
/// buffer, so this is larger than it: such packets count as late, not as the
/// start of a restart.
const MAX_MISORDER: u16 = 1024;
/// Extended numbers start one cycle up so packets older than the first one
/// still extend without going below zero.
const FIRST_CYCLE: u64 = 1 << 16;
/// NACKs per hole: one at once, then retries (RFC 4585 §3.5.3 leaves the
/// policy to the receiver).
pub const MAX_NACKS_PER_HOLE: u8 = 4;
/// Shortest retry interval for a NACK.
const MIN_NACK_INTERVAL: Duration = Duration::from_millis(20);
/// RTT assumed until a retransmission has been timed.
const INITIAL_RTT: Duration = Duration::from_millis(50);
/// Largest RTT sample believed; beyond it the packet was not a reply to our NACK.
const MAX_RTT: Duration = Duration::from_secs(1);
/// Payload buffers kept for reuse.
const POOL_MAX: usize = 64;
/// Packets pushed out by an overflow but not yet polled. Past this the
/// oldest is dropped (counted in `overflow_drops`) and the stream is marked
/// as having a loss.
const READY_MAX: usize = REORDER_SLOTS;

/// Why [`RtpReceiver::handle_packet`] dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Payload longer than [`MAX_PAYLOAD`].
    PayloadTooLarge { len: usize },
    /// This sequence number was already received.
    Duplicate { seq: u16 },
    /// Arrived after its slot was given up or released past.
    Late { seq: u16 },
    /// A large sequence jump, held on probation until the next packet confirms it.
    SeqJump { seq: u16 },
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecvError::PayloadTooLarge { len } => write!(f, "RTP payload of {len} bytes exceeds 1500"),
            RecvError::Duplicate { seq } => write!(f, "duplicate RTP packet seq {seq}"),
            RecvError::Late { seq } => write!(f, "RTP packet seq {seq} arrived after it was given up"),
            RecvError::SeqJump { seq } => write!(f, "RTP seq jumped to {seq}; waiting for confirmation"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Result of extending one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStep {
    /// Newer than anything seen: the new highest.
    New(u64),
    /// At or below the highest (reordered, retransmitted or duplicate).
    Old(u64),
    /// The sender restarted its numbering; the value is above every earlier one.
    Restart(u64),
    /// A large jump, not yet confirmed: drop the packet.
    Probation,
}

/// Extends 16-bit RTP sequence numbers to 64 bits (RFC 3550 A.1 rules).
#[derive(Debug, Clone, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
    /// After a large jump to `s`, the sequence number (`s + 1`) that confirms a restart.
    probation: Option<u16>,
}

impl SeqExtender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest extended sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub fn extend(&mut self, seq: u16) -> SeqStep {
        let Some(h) = self.highest else {
            let e = FIRST_CYCLE + u64::from(seq);
            self.highest = Some(e);
            return SeqStep::New(e);
        };
        let delta = seq.wrapping_sub(h as u16);
        if delta == 0 {
            return SeqStep::Old(h);
        }
        if delta < MAX_DROPOUT {
            let e = h.saturating_add(u64::from(delta));
            self.highest = Some(e);
            self.probation = None;
            return SeqStep::New(e);
        }
        let back = 0u16.wrapping_sub(delta); // distance below the highest
        if back <= MAX_MISORDER {
            if let Some(e) = h.checked_sub(u64::from(back)) {
                return SeqStep::Old(e);
            }
        }
        if self.probation == Some(seq) {
            // Two sequential packets after a jump: the source restarted. Keep
            // the extended space monotonic by moving to a fresh cycle.
            let e = ((h >> 16).saturating_add(2) << 16) | u64::from(seq);
            self.highest = Some(e);
            self.probation = None;
            return SeqStep::Restart(e);
        }
        self.probation = Some(seq.wrapping_add(1));
        SeqStep::Probation
    }
}

/// One media packet released in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedPacket {
    /// Extended sequence number; consecutive packets differ by one unless
    /// packets were lost or were padding-only.
    pub seq: u64,
    /// Extended RTP timestamp (starts at 2^32 + first timestamp).
    pub ts: u64,
    pub marker: bool,
    /// Payload copy; hand it back with [`RtpReceiver::recycle`] to reuse it.
    pub payload: Vec<u8>,
    /// A packet before this one was given up as lost: drop any partial frame
    /// and wait for a keyframe.
    pub after_loss: bool,
}

/// Counters kept by [`RtpReceiver`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpRecvStats {
    /// Distinct packets accepted, padding-only included.
    pub received: u64,
    /// Padding-only packets accepted (not released).
    pub padding: u64,
    pub duplicates: u64,
    /// Arrived after being given up.
    pub late: u64,
    /// Sequence numbers given up on.
    pub lost: u64,
    /// Sequence numbers requested in NACKs, retries included.
    pub nacks_sent: u64,
    /// Packets that arrived after being NACKed (retransmissions, and reordered
    /// packets that an immediate NACK overtook).
    pub recovered: u64,
    pub restarts: u64,
    /// Packets dropped while a large jump was on probation.
    pub probation_drops: u64,
    /// Released packets dropped because the caller did not poll them.
    pub overflow_drops: u64,
}

#[derive(Debug)]
struct Stored {
    seq: u64,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

/// Ring slot, tagged with its extended sequence number so stale entries are
/// recognised after the ring has moved on.
#[derive(Debug)]
enum Slot {
    Empty,
    Stored(Stored),
    Released(u64),
    Lost(u64),
}

#[derive(Debug, Clone, Copy)]
struct Hole {
    seq: u64,
    first_seen: Instant,
    next_nack: Instant,
    nacks: u8,
    first_nack_at: Option<Instant>,
}

/// Receive state for one media SSRC: reorder buffer, NACK scheduling, loss
/// detection, jitter and RR statistics. Feed packets with
/// [`handle_packet`](Self::handle_packet), then drain
/// [`poll_packet`](Self::poll_packet), [`poll_nack`](Self::poll_nack) and
/// [`take_keyframe_request`](Self::take_keyframe_request); call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct RtpReceiver {
    clock_rate: u32,
    max_wait: Duration,
    /// Holes are NACKed (off: only waited for, then given up).
    nack: bool,
    ext: SeqExtender,
    slots: Vec<Slot>,
    started: bool,
    /// Next sequence number to release.
    next: u64,
    /// Highest sequence number accepted (`next - 1` when nothing is buffered).
    highest: u64,
    /// Missing sequence numbers in `next..highest`, ascending.
    holes: VecDeque<Hole>,
    /// Packets forced out by an overflow, released before the ring.
    ready: VecDeque<OrderedPacket>,
    pending_loss: bool,
    keyframe_request: bool,
    ts_last: Option<(u32, u64)>,
    rtt: Duration,
    stats: RtpRecvStats,
    // RFC 3550 A.8 jitter, in RTP units scaled by 16.
    first_arrival: Option<Instant>,
    last_transit: Option<u32>,
    jitter_q4: u32,
    // RFC 3550 A.3 report state. The interval counters are cells so that
    // `report_block` can take `&self`.
    base_seq: u64,
    expected_prior: Cell<u64>,
    received_prior: Cell<u64>,
    last_sr: Option<(u32, Instant)>,
    pool: Vec<Vec<u8>>,
}

impl RtpReceiver {
    /// `clock_rate` from the SDP (90000 for video, 48000 for Opus); holes
    /// are waited for [`DEFAULT_MAX_WAIT`].
    pub fn new(clock_rate: u32, now: Instant) -> Self {
        Self::with_max_wait(clock_rate, DEFAULT_MAX_WAIT, now)
    }

    /// Like [`new`](Self::new) with `max_wait`, how long a hole is waited for
    /// before it is given up (150–300 ms suits live ingest).
    pub fn with_max_wait(clock_rate: u32, max_wait: Duration, now: Instant) -> Self {
        let _ = now; // jitter's arrival clock starts at the first packet, not here
        RtpReceiver {
            clock_rate,
            max_wait,
            nack: true,
            ext: SeqExtender::new(),
            slots: (0..REORDER_SLOTS).map(|_| Slot::Empty).collect(),
            started: false,
            next: 0,
            highest: 0,
            holes: VecDeque::new(),
            ready: VecDeque::new(),
            pending_loss: false,
            keyframe_request: false,
            ts_last: None,
            rtt: INITIAL_RTT,
            stats: RtpRecvStats::default(),
            first_arrival: None,
            last_transit: None,
            jitter_q4: 0,
            base_seq: 0,
            expected_prior: Cell::new(0),
            received_prior: Cell::new(0),
            last_sr: None,
            pool: Vec::new(),
        }
    }

    pub fn stats(&self) -> RtpRecvStats {
        self.stats
    }

    /// Current RTT estimate used to space NACK retries.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Override the RTT estimate (e.g. from the transport's own measurement).
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt.min(MAX_RTT);
    }

    /// Accept one packet (for RTX, pass the original sequence number and
    /// payload from [`unwrap_rtx`]). An empty payload is a padding-only
    /// packet: it fills its sequence number but is never released.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        self.handle_timeout(now);
        if payload.len() > MAX_PAYLOAD {
            return Err(RecvError::PayloadTooLarge { len: payload.len() });
        }
        let e = match self.ext.extend(seq) {
            SeqStep::Probation => {
                self.stats.probation_drops += 1;
                return Err(RecvError::SeqJump { seq });
            }
            SeqStep::Restart(e) => {
                self.restart(e);
                e
            }
            SeqStep::New(e) | SeqStep::Old(e) => e,
        };
        if !self.started {
            self.started = true;
            self.next = e;
            self.highest = e.saturating_sub(1);
            self.base_seq = e;
        }
        if e < self.next {
            return Err(match self.slot(e) {
                Some(Slot::Released(s)) if *s == e => {
                    self.stats.duplicates += 1;
                    RecvError::Duplicate { seq }
                }
                _ => {
                    self.stats.late += 1;
                    RecvError::Late { seq }
                }
            });
        }
        match self.slot(e) {
            Some(Slot::Stored(st)) if st.seq == e => {
                self.stats.duplicates += 1;
                return Err(RecvError::Duplicate { seq });
            }
            Some(Slot::Lost(s)) if *s == e => {
                self.stats.late += 1;
                return Err(RecvError::Late { seq });
            }
            _ => {}
        }
        if e - self.next >= SLOTS_U64 {
            // Overflow: give up whatever blocks the oldest slots.
            self.force_advance(e - SLOTS_U64 + 1);
        }
        if e > self.highest {
            let from = self.highest.saturating_add(1).max(self.next);
            for s in from..e {
                // At most REORDER_SLOTS - 1 iterations: from >= next > e - REORDER_SLOTS.
                self.holes.push_back(Hole { seq: s, first_seen: now, next_nack: now, nacks: 0, first_nack_at: None });
                if let Some(slot) = self.slot_mut(s) {
                    *slot = Slot::Empty;
                }
            }
            self.highest = e;
            if !payload.is_empty() {
                self.update_jitter(now, ts);
            }
        } else if let Ok(i) = self.holes.binary_search_by_key(&e, |h| h.seq) {
            if let Some(hole) = self.holes.remove(i) {
                if hole.nacks > 0 {
                    self.stats.recovered += 1;
                    if let (1, Some(at)) = (hole.nacks, hole.first_nack_at) {
                        self.rtt_sample(now.saturating_duration_since(at));
                    }
                }
            }
        }
        let buf = self.copy_payload(payload);
        if let Some(slot) = self.slot_mut(e) {
            *slot = Slot::Stored(Stored { seq: e, ts, marker, payload: buf });
        }
        self.stats.received += 1;
        if payload.is_empty() {
            self.stats.padding += 1;
        }
        Ok(())
    }

    /// Give up holes that waited `max_wait`. Also run by `handle_packet`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let max_wait = self.max_wait;
        let slots = &mut self.slots;
        let mut given_up = 0u64;
        self.holes.retain(|h| {
            if h.first_seen.checked_add(max_wait).is_none_or(|deadline| now >= deadline) {
                if let Some(slot) = slots.get_mut(slot_index(h.seq)) {
                    *slot = Slot::Lost(h.seq);
                }
                given_up += 1;
                false
            } else {
                true
            }
        });
        if given_up > 0 {
            self.stats.lost += given_up;
            self.keyframe_request = true;
        }
    }

    /// Never NACK: holes are only waited for `max_wait`, then given up (for a track
    /// whose sender was not offered NACK, or where a late packet is worth little).
    pub fn disable_nack(&mut self) {
        self.nack = false;
    }

    /// Earliest instant at which a NACK retry or a give-up is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.holes
            .iter()
            .flat_map(|h| {
                let nack = (self.nack && h.nacks < MAX_NACKS_PER_HOLE).then_some(h.next_nack);
                let give_up = Some(h.first_seen.checked_add(self.max_wait).unwrap_or(h.first_seen));
                nack.into_iter().chain(give_up)
            })
            .min()
    }

    /// Next packet in sequence order, if it is here (or its predecessors were
    /// given up).
    pub fn poll_packet(&mut self) -> Option<OrderedPacket> {
        if let Some(p) = self.ready.pop_front() {
            return Some(p);
        }
        if !self.started {
            return None;
        }
        while self.next <= self.highest {
            let n = self.next;
            let slot = self.slots.get_mut(slot_index(n))?;
            match slot {
                Slot::Stored(st) if st.seq == n => {
                    let Slot::Stored(st) = std::mem::replace(slot, Slot::Released(n)) else {
                        return None;
                    };
                    self.next = n + 1;
                    if st.payload.is_empty() {
                        continue; // padding-only: consumes its number, not released
                    }
                    return Some(self.emit(st));
                }
                Slot::Lost(s) if *s == n => {
                    self.next = n + 1;
                    self.pending_loss = true;
                }
                _ => return None,
            }
        }
        None
    }

    /// Sequence numbers due for a NACK (new holes at once, then retries every
    /// max(RTT, 20 ms), at most [`MAX_NACKS_PER_HOLE`] times), ascending
    /// across the wrap. Build the packet with [`rtcp::write_nack`].
    pub fn poll_nack(&mut self, now: Instant) -> Option<Vec<u16>> {
        let mut out = Vec::new();
        self.poll_nack_into(now, &mut out).then_some(out)
    }

    /// [`poll_nack`](Self::poll_nack) appending to a caller's vector; returns
    /// whether anything was appended.
    pub fn poll_nack_into(&mut self, now: Instant, out: &mut Vec<u16>) -> bool {
        if !self.nack {
            return false;
        }
        let interval = self.rtt.max(MIN_NACK_INTERVAL);
        let mut any = false;
        for h in self.holes.iter_mut() {
            if h.nacks < MAX_NACKS_PER_HOLE && now >= h.next_nack {
                out.push(h.seq as u16);
                h.nacks += 1;
                h.first_nack_at.get_or_insert(now);
                h.next_nack = now.checked_add(interval).unwrap_or(now);
                self.stats.nacks_sent += 1;
                any = true;
            }
        }
        any
    }

    /// True once after a loss was given up or the stream restarted: the
    /// caller should send a PLI (rate-limited on its side).
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_request)
    }

    /// Give a released payload buffer back for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOL_MAX && (MAX_PAYLOAD..=4 * MAX_PAYLOAD).contains(&buf.capacity()) {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Note an SR from this source for the LSR/DLSR fields (RFC 3550 §6.4.1).
    pub fn handle_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// Report block for this source (RFC 3550 §6.4.1, A.3). Starts a new
    /// interval for the fraction-lost computation, so call it once per RR.
    pub fn report_block(&self, media_ssrc: u32, now: Instant) -> ReportBlock {
        if !self.started {
            return ReportBlock { ssrc: media_ssrc, ..ReportBlock::default() };
        }
        let expected = self.highest.saturating_add(1).saturating_sub(self.base_seq);
        let received = self.stats.received;
        let cumulative = i64::try_from(expected).unwrap_or(i64::MAX).saturating_sub_unsigned(received);
        let expected_interval = expected.saturating_sub(self.expected_prior.replace(expected));
        let received_interval = received.saturating_sub(self.received_prior.replace(received));
        let fraction_lost = match expected_interval.checked_sub(received_interval) {
            Some(lost) if lost > 0 && expected_interval > 0 => {
                u8::try_from(u128::from(lost) * 256 / u128::from(expected_interval)).unwrap_or(u8::MAX)
            }
            _ => 0,
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, rtcp::dlsr_units(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        ReportBlock {
            ssrc: media_ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(cumulative.clamp(-0x80_0000, 0x7f_ffff)).unwrap_or(0),
            ext_highest_seq: self.highest.wrapping_sub(FIRST_CYCLE) as u32,
            jitter: self.jitter_q4 >> 4,
            lsr,
            dlsr,
        }
    }

    /// Interarrival jitter in RTP timestamp units (RFC 3550 A.8).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        self.slots.get(slot_index(seq))
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        self.slots.get_mut(slot_index(seq))
    }

    fn copy_payload(&mut self, payload: &[u8]) -> Vec<u8> {
        if payload.is_empty() {
            return Vec::new();
        }
        let mut buf = self.pool.pop().unwrap_or_else(|| Vec::with_capacity(MAX_PAYLOAD));
        buf.extend_from_slice(payload);
        buf
    }

    fn emit(&mut self, st: Stored) -> OrderedPacket {
        let ts = self.extend_ts(st.ts);
        OrderedPacket {
            seq: st.seq,
            ts,
            marker: st.marker,
            payload: st.payload,
            after_loss: std::mem::take(&mut self.pending_loss),
        }
    }

    /// Timestamps are extended in release order, relative to the previous
    /// released packet (the nearest value mod 2^32).
    fn extend_ts(&mut self, ts: u32) -> u64 {
        let e = match self.ts_last {
            None => (1u64 << 32) + u64::from(ts),
            Some((last, last_ext)) => {
                let diff = i64::from(ts.wrapping_sub(last) as i32);
                last_ext.checked_add_signed(diff).unwrap_or(last_ext)
            }
        };
        self.ts_last = Some((ts, e));
        e
    }

    /// Move the release point to `new_next`: buffered packets below it are
    /// queued for release in order, holes below it are given up.
    fn force_advance(&mut self, new_next: u64) {
        let stop = new_next.min(self.highest.saturating_add(1));
        for s in self.next..stop {
            let idx = slot_index(s);
            let Some(slot) = self.slots.get_mut(idx) else { continue };
            match std::mem::replace(slot, Slot::Lost(s)) {
                Slot::Stored(st) if st.seq == s => {
                    *slot = Slot::Released(s);
                    if st.payload.is_empty() {
                        continue;
                    }
                    let p = self.emit(st);
                    self.push_ready(p);
                }
                _ => {
                    self.stats.lost += 1;
                    self.pending_loss = true;
                    self.keyframe_request = true;
                }
            }
        }
        if new_next > stop {
            // Never-seen numbers skipped by a large forward jump.
            self.stats.lost += new_next - stop;
            self.pending_loss = true;
            self.keyframe_request = true;
        }
        while self.holes.front().is_some_and(|h| h.seq < new_next) {
            self.holes.pop_front();
        }
        self.next = self.next.max(new_next);
        if self.highest < new_next {
            self.highest = new_next - 1;
        }
    }

    fn push_ready(&mut self, p: OrderedPacket) {
        if self.ready.len() >= READY_MAX {
            if let Some(old) = self.ready.pop_front() {
                self.stats.overflow_drops += 1;
                self.recycle(old.payload);
            }
            if let Some(front) = self.ready.front_mut() {
                front.after_loss = true;
            }
        }
        self.ready.push_back(p);
    }

    /// The source restarted its sequence numbers at `e`: release or give up
    /// everything buffered, then continue from `e` as if nothing was missing.
    /// Timestamps keep extending from the last released one (nearest value
    /// mod 2^32), so a restarted source's timeline may step back; the first
    /// packet after the restart carries `after_loss`, and mapping RTP time to
    /// a monotonic media clock is the timeline's job.
    fn restart(&mut self, e: u64) {
        self.stats.restarts += 1;
        if self.started {
            let old_end = self.highest.saturating_add(1);
            self.force_advance(old_end);
            // Keep the RR "expected" count continuous across the jump.
            self.base_seq = self.base_seq.saturating_add(e.saturating_sub(old_end));
            self.next = e;
            self.highest = e.saturating_sub(1);
        }
        self.holes.clear();
        self.last_transit = None;
        self.pending_loss = true;
        self.keyframe_request = true;
    }

    fn update_jitter(&mut self, now: Instant, ts: u32) {
        let first = *self.first_arrival.get_or_insert(now);
        let nanos = now.saturating_duration_since(first).as_nanos();
        // Arrival time in RTP units, mod 2^32 like the timestamps themselves.
        let arrival = (nanos.saturating_mul(u128::from(self.clock_rate)) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(ts);
        if let Some(last) = self.last_transit {
            let d = i64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            let j = i64::from(self.jitter_q4);
            // J += (|D| - J) / 16, with J kept scaled by 16 (RFC 3550 A.8).
            let j = j + d - ((j + 8) >> 4);
            self.jitter_q4 = u32::try_from(j.max(0)).unwrap_or(u32::MAX);
        }
        self.last_transit = Some(transit);
    }

    fn rtt_sample(&mut self, sample: Duration) {
        if sample > MAX_RTT {
            return;
        }
        self.rtt = (self.rtt.saturating_mul(7).saturating_add(sample)) / 8;
    }
}

fn slot_index(seq: u64) -> usize {
    (seq % SLOTS_U64) as usize
}

/// Split an RTX payload (RFC 4588 §4) into the original sequence number
/// (OSN) and the original payload. `None` when there is no OSN (an RTX
/// padding-only probe, which the caller ignores: it belongs to the RTX
/// stream's own numbering).
///
/// ```text
/// |            RTP Header                                         |
/// |            OSN                |                               |
/// |                  Original RTP Packet Payload                  |
/// ```
pub fn unwrap_rtx(payload: &[u8]) -> Option<(u16, &[u8])> {
    match payload {
        [hi, lo, rest @ ..] => Some((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => None,
    }
}

/// Feedback period for transport-wide CC. libwebrtc's receiver sends about
/// every 50–250 ms; shorter helps the sender's estimate ramp up.
pub const TWCC_INTERVAL: Duration = Duration::from_millis(50);
/// Arrivals waiting for feedback. Past this the oldest is forgotten (never
/// reported) and counted in `dropped`.
pub const TWCC_MAX_PENDING: usize = 2048;
/// A gap after the last reported number larger than this starts the next
/// feedback at the first arrival instead of reporting the gap as lost.
const TWCC_MAX_GAP: u64 = rtcp::MAX_TWCC_STATUS / 2;

/// Records arrival times by transport-wide sequence number
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01) and emits feedback.
///
/// Arrivals below the last reported sequence number are dropped (counted as
/// `late`): each sequence number is reported once, lost or received.
#[derive(Debug, Default)]
pub struct TwccRecorder {
    /// Time zero for reference times: the first arrival.
    origin: Option<Instant>,
    highest: Option<u64>,
    pending: VecDeque<(u64, Instant)>,
    next_base: Option<u64>,
    fb_count: u8,
    /// Earliest next feedback; `None` = as soon as anything is pending.
    next_at: Option<Instant>,
    late: u64,
    dropped: u64,
}

impl TwccRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arrivals that came after their number was already reported.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Arrivals forgotten because too many were pending.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Note the arrival of a packet carrying `transport_seq` in its
    /// transport-wide-cc header extension.
    pub fn record(&mut self, transport_seq: u16, now: Instant) {
        self.origin.get_or_insert(now);
        let e = match self.highest {
            None => FIRST_CYCLE + u64::from(transport_seq),
            Some(h) => {
                let diff = i64::from(transport_seq.wrapping_sub(h as u16) as i16);
                let Some(e) = h.checked_add_signed(diff) else {
                    self.late += 1;
                    return;
                };
                e
            }
        };
        if self.highest.is_none_or(|h| e > h) {
            self.highest = Some(e);
        }
        if self.next_base.is_some_and(|b| e < b) {
            self.late += 1;
            return;
        }
        match self.pending.back() {
            Some(&(last, _)) if last >= e => match self.pending.binary_search_by_key(&e, |p| p.0) {
                Ok(_) => return, // duplicate
                Err(i) => self.pending.insert(i, (e, now)),
            },
            _ => self.pending.push_back((e, now)),
        }
        if self.pending.len() > TWCC_MAX_PENDING {
            if let Some((old, _)) = self.pending.pop_front() {
                self.dropped += 1;
                self.next_base = Some(old + 1);
            }
        }
    }

    /// When feedback is due, append one transport-cc RTCP packet to `out`
    /// and return true. Call until it returns false: a backlog larger than
    /// one packet is sent in several.
    pub fn poll_feedback(&mut self, now: Instant, sender_ssrc: u32, media_ssrc: u32, out: &mut Vec<u8>) -> bool {
        let Some(&(first, _)) = self.pending.front() else {
            return false;
        };
        if self.next_at.is_some_and(|at| now < at) {
            return false;
        }
        let origin = *self.origin.get_or_insert(now);
        let base_seq = match self.next_base {
            Some(b) if first >= b && first - b < TWCC_MAX_GAP => b,
            _ => first,
        };
        let hdr = TwccHeader { sender_ssrc, media_ssrc, base_seq, fb_count: self.fb_count };
        let arrivals = self.pending.make_contiguous();
        match rtcp::write_transport_cc(&hdr, arrivals, origin, out) {
            Ok(n) => {
                if let Some(&(last, _)) = arrivals.get(n.saturating_sub(1)) {
                    self.next_base = Some(last + 1);
                }
                self.pending.drain(..n.min(self.pending.len()));
                self.fb_count = self.fb_count.wrapping_add(1);
                self.next_at = if self.pending.is_empty() { now.checked_add(TWCC_INTERVAL) } else { None };
                true
            }
            Err(_) => {
                // Cannot happen for a sorted, deduplicated list; start over rather than stall.
                self.pending.clear();
                false
            }
        }
    }

    /// When the next feedback is due, if anything is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Due at once (the first pending arrival) when no interval is running.
        self.pending.front().map(|&(_, first)| self.next_at.unwrap_or(first))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::rtcp::{RtcpPacket, MAX_NACK_PAIRS};

    const WAIT: Duration = Duration::from_millis(200);

    fn ms(t0: Instant, m: u64) -> Instant {
        t0 + Duration::from_millis(m)
    }

    fn drain(r: &mut RtpReceiver) -> Vec<OrderedPacket> {
        std::iter::from_fn(|| r.poll_packet()).collect()
    }

    fn seqs(v: &[OrderedPacket]) -> Vec<u64> {
        v.iter().map(|p| p.seq).collect()
    }

    fn nacks(r: &mut RtpReceiver, now: Instant) -> Vec<u16> {
        let mut v = Vec::new();
        r.poll_nack_into(now, &mut v);
        v
    }

    #[test]
    fn in_order_flow() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        for i in 0..10u16 {
            r.handle_packet(ms(t0, u64::from(i)), 1000 + i, 3000 * u32::from(i), i % 3 == 2, &[i as u8]).unwrap();
            let got = drain(&mut r);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].payload, vec![i as u8]);
            assert_eq!(got[0].marker, i % 3 == 2);
            assert!(!got[0].after_loss);
        }
        assert!(nacks(&mut r, ms(t0, 10)).is_empty());
        assert!(!r.take_keyframe_request());
        assert_eq!(r.stats().received, 10);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn reordering_released_in_order() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        let order = [0u16, 2, 1, 5, 3, 4, 6];
        let mut out = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            r.handle_packet(ms(t0, k as u64), i, 0, false, &[i as u8]).unwrap();
            out.extend(drain(&mut r));
        }
        let base = seqs(&out)[0];
        assert_eq!(seqs(&out), (0..7).map(|i| base + i).collect::<Vec<_>>());
        assert!(out.iter().all(|p| !p.after_loss));
        assert_eq!(out.iter().map(|p| p.payload[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(r.stats().lost, 0);
    }

    #[test]
    fn single_hole_nacked_then_filled() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::new(90_000, t0);
        for i in [10u16, 11, 13] {
            r.handle_packet(t0, i, 0, false, b"x").unwrap();
        }
        assert_eq!(drain(&mut r).len(), 2);
        assert_eq!(r.poll_nack(t0), Some(vec![12]), "first NACK immediately");
        assert_eq!(r.poll_nack(t0), None, "not twice at once");
        assert_eq!(r.poll_timeout(), Some(t0 + INITIAL_RTT));
        assert_eq!(nacks(&mut r, t0 + INITIAL_RTT), vec![12], "retry after the RTT");
        r.handle_packet(ms(t0, 80), 12, 0, false, b"y").unwrap();
        let got = drain(&mut r);
        assert_eq!(got.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(), vec![b"y".to_vec(), b"x".to_vec()]);
        assert!(got.iter().all(|p| !p.after_loss));
        assert_eq!(r.stats().recovered, 1);
        assert_eq!(r.stats().nacks_sent, 2);
        assert_eq!(r.stats().lost, 0);
        assert!(!r.take_keyframe_request());
    }

    #[test]
    fn nack_retries_are_bounded_and_rtt_learned() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, Duration::from_secs(2), t0);
        r.handle_packet(t0, 1, 0, false, b"a").unwrap();
        r.handle_packet(t0, 3, 0, false, b"c").unwrap();
        let mut sent = 0;
        for m in 0..1000 {
            sent += nacks(&mut r, ms(t0, m)).len();
        }
        assert_eq!(sent, usize::from(MAX_NACKS_PER_HOLE));
        // RTT learned from a retransmission answering the first NACK.
        r.handle_packet(ms(t0, 1000), 5, 0, false, b"e").unwrap();
        assert_eq!(nacks(&mut r, ms(t0, 1000)), vec![4]);
        r.handle_packet(ms(t0, 1010), 4, 0, false, b"d").unwrap();
        assert!(r.rtt() < INITIAL_RTT);
    }

    #[test]
    fn hole_given_up_after_wait() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        for i in [0u16, 1, 3, 4] {
            r.handle_packet(t0, i, 0, false, &[i as u8]).unwrap();
        }
        assert_eq!(drain(&mut r).len(), 2);
        assert_eq!(nacks(&mut r, t0), vec![2]);
        r.handle_timeout(t0 + WAIT - Duration::from_millis(1));
        assert!(r.poll_packet().is_none());
        assert!(!r.take_keyframe_request());
        let deadline = r.poll_timeout().unwrap();
        assert!(deadline <= t0 + WAIT);
        r.handle_timeout(t0 + WAIT);
        let got = drain(&mut r);
        assert_eq!(got.iter().map(|p| (p.payload[0], p.after_loss)).collect::<Vec<_>>(), vec![(3, true), (4, false)]);
        assert!(r.take_keyframe_request());
        assert!(!r.take_keyframe_request());
        assert_eq!(r.stats().lost, 1);
        // The retransmission arriving now is late.
        assert_eq!(r.handle_packet(ms(t0, 300), 2, 0, false, b"z"), Err(RecvError::Late { seq: 2 }));
        assert_eq!(r.stats().late, 1);
    }

    #[test]
    fn seq_and_ts_wraparound() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        let seqs_in = [65533u16, 65534, 65535, 0, 1, 2];
        let ts_in = [0xFFFF_F000u32, 0xFFFF_F000, 0xFFFF_FC00, 0x0000_0400, 0x0000_0400, 0x0000_1000];
        let mut out = Vec::new();
        for (k, (&s, &t)) in seqs_in.iter().zip(&ts_in).enumerate() {
            r.handle_packet(ms(t0, k as u64), s, t, false, b"p").unwrap();
            out.extend(drain(&mut r));
        }
        let s: Vec<u64> = seqs(&out);
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
        assert_eq!(s[3] as u16, 0);
        let ts: Vec<u64> = out.iter().map(|p| p.ts).collect();
        assert_eq!(ts[3] - ts[0], 0x1400);
        assert_eq!(ts[5] - ts[0], 0x2000);
        assert!(ts.windows(2).all(|w| w[1] >= w[0]));
        // Report block carries the cycle count.
        let rb = r.report_block(7, ms(t0, 10));
        assert_eq!(rb.ext_highest_seq, 0x0001_0002);
    }

    #[test]
    fn backward_wrap_and_reorder_across_zero() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 65535, 0, false, b"a").unwrap();
        r.handle_packet(t0, 1, 0, false, b"c").unwrap();
        assert_eq!(nacks(&mut r, t0), vec![0]);
        r.handle_packet(t0, 0, 0, false, b"b").unwrap();
        let got = drain(&mut r);
        assert_eq!(got.iter().map(|p| p.payload[0]).collect::<Vec<_>>(), b"abc");
        assert_eq!(got[1].seq, got[0].seq + 1);
    }

    #[test]
    fn duplicates_dropped() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 5, 0, false, b"a").unwrap();
        r.handle_packet(t0, 7, 0, false, b"c").unwrap();
        assert_eq!(r.handle_packet(t0, 7, 0, false, b"c"), Err(RecvError::Duplicate { seq: 7 }));
        assert_eq!(drain(&mut r).len(), 1);
        assert_eq!(r.handle_packet(t0, 5, 0, false, b"a"), Err(RecvError::Duplicate { seq: 5 }));
        assert_eq!(r.stats().duplicates, 2);
        assert_eq!(r.stats().received, 2);
    }

    #[test]
    fn padding_only_packets_are_consumed() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 1, 0, false, b"a").unwrap();
        r.handle_packet(t0, 2, 0, false, b"").unwrap();
        r.handle_packet(t0, 3, 0, false, b"").unwrap();
        r.handle_packet(t0, 4, 0, true, b"b").unwrap();
        let got = drain(&mut r);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].seq, got[0].seq + 3);
        assert!(!got[1].after_loss);
        assert_eq!(r.stats().padding, 2);
        assert_eq!(r.stats().lost, 0);
        assert!(!r.take_keyframe_request());
        // Padding filling a hole is not a loss either.
        r.handle_packet(t0, 6, 0, false, b"d").unwrap();
        r.handle_packet(t0, 5, 0, false, b"").unwrap();
        let got = drain(&mut r);
        assert_eq!(got.len(), 1);
        assert!(!got[0].after_loss);
    }

    #[test]
    fn overflow_gives_up_oldest_hole() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, Duration::from_secs(10), t0);
        r.handle_packet(t0, 0, 0, false, &[0]).unwrap();
        // 1 is missing; fill the buffer behind it.
        for i in 2..=(REORDER_SLOTS as u16) {
            r.handle_packet(t0, i, 0, false, &[1]).unwrap();
        }
        assert_eq!(drain(&mut r).len(), 1);
        assert_eq!(r.stats().lost, 0);
        // One more would not fit: hole 1 is given up, packets 2.. flow.
        r.handle_packet(t0, REORDER_SLOTS as u16 + 1, 0, false, &[2]).unwrap();
        assert!(r.take_keyframe_request());
        let got = drain(&mut r);
        assert_eq!(got.len(), REORDER_SLOTS);
        assert!(got[0].after_loss);
        assert!(got[1..].iter().all(|p| !p.after_loss));
        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(r.stats().lost, 1);
    }

    #[test]
    fn big_forward_jump_within_dropout() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 100, 0, false, b"a").unwrap();
        assert_eq!(drain(&mut r).len(), 1);
        r.handle_packet(t0, 2100, 0, false, b"b").unwrap();
        // Only the last REORDER_SLOTS - 1 numbers are NACKed; the rest are lost.
        let n = nacks(&mut r, t0);
        assert_eq!(n.len(), REORDER_SLOTS - 1);
        assert_eq!(r.stats().lost, 1999 - (REORDER_SLOTS as u64 - 1));
        r.handle_timeout(t0 + WAIT);
        let got = drain(&mut r);
        assert_eq!(got.len(), 1);
        assert!(got[0].after_loss);
        assert_eq!(r.stats().lost, 1999);
    }

    #[test]
    fn restart_after_confirmed_jump() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 100, 0, false, b"a").unwrap();
        r.handle_packet(t0, 101, 0, false, b"b").unwrap();
        let before = drain(&mut r);
        assert_eq!(r.handle_packet(t0, 40_000, 0, false, b"x"), Err(RecvError::SeqJump { seq: 40_000 }));
        r.handle_packet(t0, 40_001, 0, false, b"y").unwrap();
        r.handle_packet(t0, 40_002, 0, false, b"z").unwrap();
        let after = drain(&mut r);
        assert_eq!(after.len(), 2);
        assert!(after[0].seq > before[1].seq);
        assert!(after[0].after_loss);
        assert!(!after[1].after_loss);
        assert!(r.take_keyframe_request());
        assert_eq!(r.stats().restarts, 1);
        assert!(nacks(&mut r, t0).is_empty());
        // The RR's expected count does not include the jump.
        let rb = r.report_block(1, t0);
        assert_eq!(rb.cumulative_lost, 0);
    }

    #[test]
    fn unconfirmed_jump_is_dropped() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 100, 0, false, b"a").unwrap();
        assert!(r.handle_packet(t0, 30_000, 0, false, b"x").is_err());
        r.handle_packet(t0, 101, 0, false, b"b").unwrap();
        assert_eq!(drain(&mut r).len(), 2);
        assert_eq!(r.stats().probation_drops, 1);
    }

    #[test]
    fn report_block_fraction_and_cumulative() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        for i in (0u16..10).filter(|&i| i != 4) {
            r.handle_packet(t0, i, 0, false, b"p").unwrap();
        }
        r.handle_timeout(t0 + WAIT);
        r.handle_sender_report(t0, 0x1122_3344_5566_7788);
        let rb = r.report_block(99, t0 + Duration::from_secs(1));
        assert_eq!(rb.ssrc, 99);
        assert_eq!(rb.cumulative_lost, 1);
        assert_eq!(rb.fraction_lost, 25); // 1/10 * 256
        assert_eq!(rb.lsr, 0x3344_5566);
        assert_eq!(rb.dlsr, 65_536);
        // Next interval: nothing lost.
        for i in 10u16..20 {
            r.handle_packet(t0 + WAIT, i, 0, false, b"p").unwrap();
        }
        let rb = r.report_block(99, t0 + WAIT);
        assert_eq!((rb.fraction_lost, rb.cumulative_lost), (0, 1));
        // The block survives an RTCP round trip.
        let mut b = Vec::new();
        rtcp::write_rr(1, &[rb], &mut b).unwrap();
        let Some(Ok(RtcpPacket::ReceiverReport { reports, .. })) = rtcp::parse(&b).next() else { panic!() };
        assert_eq!(reports.iter().next(), Some(rb));
    }

    #[test]
    fn jitter_rfc3550() {
        let t0 = crate::runtime::now();
        // Perfect pacing: 20 ms apart, 960 ticks at 48 kHz.
        let mut r = RtpReceiver::with_max_wait(48_000, WAIT, t0);
        for i in 0..50u32 {
            r.handle_packet(ms(t0, u64::from(i) * 20), i as u16, 1000 + i * 960, false, b"o").unwrap();
        }
        assert_eq!(r.jitter(), 0);
        // Alternating 0 / 10 ms extra delay: |D| = 480 each time, J converges to 480.
        let mut r = RtpReceiver::with_max_wait(48_000, WAIT, t0);
        for i in 0..400u32 {
            let extra = if i % 2 == 1 { 10 } else { 0 };
            r.handle_packet(ms(t0, u64::from(i) * 20 + extra), i as u16, i * 960, false, b"o").unwrap();
        }
        assert!((470..=480).contains(&r.jitter()), "{}", r.jitter());
    }

    #[test]
    fn payload_limits_and_pool() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(r.handle_packet(t0, 1, 0, false, &big), Err(RecvError::PayloadTooLarge { len: MAX_PAYLOAD + 1 }));
        r.handle_packet(t0, 1, 0, false, &big[..MAX_PAYLOAD]).unwrap();
        let p = r.poll_packet().unwrap();
        let ptr = p.payload.as_ptr();
        r.recycle(p.payload);
        r.handle_packet(t0, 2, 0, false, b"ab").unwrap();
        let q = r.poll_packet().unwrap();
        assert_eq!(q.payload, b"ab");
        assert_eq!(q.payload.as_ptr(), ptr, "buffer reused");
    }

    #[test]
    fn rtx_unwrap() {
        assert_eq!(unwrap_rtx(&[0x12, 0x34, 9, 8]), Some((0x1234, &[9u8, 8][..])));
        assert_eq!(unwrap_rtx(&[0x12, 0x34]), Some((0x1234, &[][..])));
        assert_eq!(unwrap_rtx(&[0x12]), None);
        assert_eq!(unwrap_rtx(&[]), None);
    }

    #[test]
    fn rtx_recovers_hole() {
        let t0 = crate::runtime::now();
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        r.handle_packet(t0, 1, 0, false, b"a").unwrap();
        r.handle_packet(t0, 3, 0, false, b"c").unwrap();
        let lost = nacks(&mut r, t0);
        let mut nack = Vec::new();
        rtcp::write_nack(1, 2, &lost, &mut nack);
        // The sender answers with RTX: OSN 2 + original payload.
        let rtx_payload = [0, 2, b'b'];
        let (osn, original) = unwrap_rtx(&rtx_payload).unwrap();
        r.handle_packet(ms(t0, 30), osn, 0, false, original).unwrap();
        assert_eq!(drain(&mut r).iter().map(|p| p.payload[0]).collect::<Vec<_>>(), b"abc");
        assert_eq!(r.stats().recovered, 1);
    }

    /// Tiny xorshift for deterministic simulations.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    #[test]
    fn simulated_lossy_network_with_nack_retransmission() {
        for seed in [1u64, 7, 42, 2024] {
            let st = simulate(seed, 2, 300, false);
            assert_eq!(st.lost, 0, "seed {seed}: every hole recovered in time, {st:?}");
        }
    }

    #[test]
    fn simulated_harsh_network_gives_up_in_order() {
        // 15% loss on media and on NACKs, short wait: some holes are given up.
        for seed in [3u64, 99] {
            let st = simulate(seed, 15, 60, true);
            assert!(st.lost > 0, "seed {seed}: {st:?}");
        }
    }

    /// Returns the receiver's stats after checking every released packet.
    fn simulate(seed: u64, loss_pct: u64, wait_ms: u64, lossy_nacks: bool) -> RtpRecvStats {
        const N: u64 = 6000;
        const FIRST_SEQ: u16 = 63_000; // crosses the 16-bit wrap
        let t0 = crate::runtime::now();
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut r = RtpReceiver::with_max_wait(90_000, Duration::from_millis(wait_ms), t0);
        // (deliver_at_ms, index) in flight; nacks in flight to the sender.
        let mut wire: Vec<(u64, u64)> = Vec::new();
        let mut nack_wire: Vec<(u64, Vec<u16>)> = Vec::new();
        let is_padding = |i: u64| i % 97 == 50;
        let payload_of = |i: u64| -> Vec<u8> {
            if is_padding(i) {
                Vec::new()
            } else {
                i.to_be_bytes().to_vec()
            }
        };
        let seq_of = |i: u64| FIRST_SEQ.wrapping_add(i as u16);
        let send = |rng: &mut XorShift, wire: &mut Vec<(u64, u64)>, now: u64, i: u64| {
            if !rng.chance(loss_pct) {
                // 20-23 ms, and one packet in 20 held back 5-15 ms more: reordering.
                let extra = if rng.chance(5) { 5 + rng.next() % 11 } else { 0 };
                let delay = 20 + rng.next() % 4 + extra;
                wire.push((now + delay, i));
            }
        };
        let mut released: Vec<OrderedPacket> = Vec::new();
        let mut keyframe_requests = 0u64;
        let mut first_i: Option<u64> = None;
        let mut sent_idx = 0u64;
        let mut now_ms = 0u64;
        while now_ms < N + 2000 {
            let now = ms(t0, now_ms);
            // Sender: one packet per ms, answers NACKs that arrived.
            if sent_idx < N {
                send(&mut rng, &mut wire, now_ms, sent_idx);
                sent_idx += 1;
            }
            let (due, later): (Vec<_>, Vec<_>) = nack_wire.drain(..).partition(|(at, _)| *at <= now_ms);
            nack_wire = later;
            for (_, list) in due {
                for s in list {
                    let i = u64::from(s.wrapping_sub(FIRST_SEQ));
                    if i < sent_idx {
                        send(&mut rng, &mut wire, now_ms, i);
                    }
                }
            }
            // Receiver.
            wire.sort_by_key(|w| w.0);
            let split = wire.partition_point(|w| w.0 <= now_ms);
            for (_, i) in wire.drain(..split).collect::<Vec<_>>() {
                first_i.get_or_insert(i);
                let _ = r.handle_packet(now, seq_of(i), (i / 3) as u32 * 3000, i % 3 == 2, &payload_of(i));
            }
            r.handle_timeout(now);
            let mut list = Vec::new();
            if r.poll_nack_into(now, &mut list) {
                // Through the real RTCP encoder and parser.
                let mut rest = &list[..];
                while !rest.is_empty() {
                    let mut pkt = Vec::new();
                    let used = rtcp::write_nack(1, 2, rest, &mut pkt);
                    rest = &rest[used..];
                    let Some(Ok(RtcpPacket::Nack { list, .. })) = rtcp::parse(&pkt).next() else { panic!() };
                    if !(lossy_nacks && rng.chance(loss_pct)) {
                        nack_wire.push((now_ms + 20, list.seqs().collect()));
                    }
                }
            }
            released.extend(drain(&mut r));
            keyframe_requests += u64::from(r.take_keyframe_request());
            now_ms += 1;
        }
        let first_ext = FIRST_CYCLE + u64::from(FIRST_SEQ);
        let mut prev: Option<u64> = None;
        for p in &released {
            let i = p.seq - first_ext;
            assert_eq!(p.payload, payload_of(i), "payload matches its sequence number");
            assert!(!is_padding(i));
            assert_eq!(p.marker, i % 3 == 2);
            assert_eq!(p.ts - released[0].ts, (i / 3) * 3000 - (released[0].seq - first_ext) / 3 * 3000);
            if let Some(pr) = prev {
                assert!(p.seq > pr, "strictly in order, never twice");
                let gap_has_media = (pr + 1..p.seq).any(|s| !is_padding(s - first_ext));
                // Media is never skipped silently; a lost padding packet looks like any loss.
                assert!(!gap_has_media || p.after_loss, "media skipped without after_loss");
                assert!(!p.after_loss || p.seq > pr + 1, "after_loss without a gap");
            }
            prev = Some(p.seq);
        }
        let st = r.stats();
        let media = (0..N).filter(|&i| !is_padding(i)).count() as u64;
        let lost_media = media - released.len() as u64;
        assert!(st.recovered > N / 100, "seed {seed}: {st:?}");
        assert!(lost_media <= st.lost + 20, "seed {seed}: lost {lost_media} {st:?}");
        assert_eq!(keyframe_requests > 0, st.lost > 0);
        assert_eq!(st.overflow_drops, 0);
        let rb = r.report_block(1, ms(t0, now_ms));
        let highest_i = u64::from(rb.ext_highest_seq.wrapping_sub(u32::from(FIRST_SEQ)));
        assert!(highest_i >= N - 3);
        let first_i = first_i.unwrap();
        assert!(first_i < 20);
        assert_eq!(
            st.received + st.lost,
            highest_i + 1 - first_i,
            "seed {seed}: every number received or given up, {st:?}"
        );
        assert!(st.nacks_sent >= st.recovered);
        assert_eq!(r.poll_timeout(), None);
        st
    }

    #[test]
    fn no_panic_on_random_input() {
        let t0 = crate::runtime::now();
        let mut rng = XorShift(0xDEAD_BEEF);
        let mut r = RtpReceiver::with_max_wait(90_000, WAIT, t0);
        let mut now_ms = 0;
        let mut out = Vec::new();
        for _ in 0..50_000 {
            let x = rng.next();
            now_ms += x % 3;
            let seq =
                if x.is_multiple_of(5) { (x >> 16) as u16 } else { (now_ms as u16).wrapping_add((x >> 8) as u16 % 64) };
            let len = (x >> 24) as usize % 20;
            let _ = r.handle_packet(ms(t0, now_ms), seq, (x >> 32) as u32, x & 1 == 1, &vec![1u8; len]);
            out.clear();
            r.poll_nack_into(ms(t0, now_ms), &mut out);
            let mut nack = Vec::new();
            rtcp::write_nack(1, 2, &out, &mut nack);
            while let Some(p) = r.poll_packet() {
                r.recycle(p.payload);
            }
            let _ = r.take_keyframe_request();
            if x.is_multiple_of(100) {
                let _ = r.report_block(1, ms(t0, now_ms));
            }
        }
        assert!(r.stats().received > 0);
        assert!(out.len() <= REORDER_SLOTS);
        let _ = MAX_NACK_PAIRS;
    }

    #[test]
    fn twcc_recorder_feedback_decodes() {
        let t0 = crate::runtime::now();
        let mut tw = TwccRecorder::new();
        assert!(!tw.poll_feedback(t0, 1, 2, &mut Vec::new()));
        // 65530.. across the wrap, 65533 and 1 missing, 3 and 2 reordered.
        let arrivals: [(u16, u64); 8] =
            [(65530, 0), (65531, 1), (65532, 2), (65534, 3), (65535, 5), (0, 6), (3, 7), (2, 9)];
        for &(s, m) in &arrivals {
            tw.record(s, ms(t0, m));
        }
        tw.record(65531, ms(t0, 10)); // duplicate ignored
        let mut b = Vec::new();
        assert!(tw.poll_feedback(ms(t0, 10), 1, 2, &mut b));
        assert!(!tw.poll_feedback(ms(t0, 10), 1, 2, &mut b), "next one waits for the interval");
        assert_eq!(tw.poll_timeout(), None);
        let Some(Ok(RtcpPacket::TransportCc { fci, .. })) = rtcp::parse(&b).next() else { panic!() };
        let (base, fb, _ref, statuses) = crate::proto::rtcp::tests::decode_twcc(fci);
        assert_eq!((base, fb), (65530, 0));
        let got: Vec<(u16, Option<i64>)> = statuses;
        let want: Vec<(u16, Option<i64>)> = vec![
            (65530, Some(0)),
            (65531, Some(1000)),
            (65532, Some(2000)),
            (65533, None),
            (65534, Some(3000)),
            (65535, Some(5000)),
            (0, Some(6000)),
            (1, None),
            (2, Some(9000)),
            (3, Some(7000)),
        ];
        assert_eq!(got, want);

        // Next interval continues from 4; 4 itself is lost; a late 65533 is dropped.
        tw.record(5, ms(t0, 30));
        tw.record(65533, ms(t0, 31));
        assert_eq!(tw.late(), 1);
        assert_eq!(tw.poll_timeout(), Some(ms(t0, 60)));
        let mut c = Vec::new();
        assert!(!tw.poll_feedback(ms(t0, 59), 1, 2, &mut c));
        assert!(tw.poll_feedback(ms(t0, 60), 1, 2, &mut c));
        let Some(Ok(RtcpPacket::TransportCc { fci, .. })) = rtcp::parse(&c).next() else { panic!() };
        let (base, fb, _, statuses) = crate::proto::rtcp::tests::decode_twcc(fci);
        assert_eq!((base, fb), (4, 1));
        assert_eq!(statuses, vec![(4, None), (5, Some(30_000))]);
    }

    #[test]
    fn twcc_recorder_backlog_and_bounds() {
        let t0 = crate::runtime::now();
        let mut tw = TwccRecorder::new();
        for i in 0..(TWCC_MAX_PENDING as u32 + 100) {
            tw.record(i as u16, t0 + Duration::from_micros(u64::from(i) * 100));
        }
        assert_eq!(tw.dropped(), 100);
        let now = ms(t0, 1000);
        let mut total = 0;
        let mut packets = 0;
        let mut out = Vec::new();
        while tw.poll_feedback(now, 1, 2, &mut out) {
            packets += 1;
            assert!(packets < 100);
        }
        for p in rtcp::parse(&out) {
            let Ok(RtcpPacket::TransportCc { fci, .. }) = p else { panic!() };
            let (_, _, _, st) = crate::proto::rtcp::tests::decode_twcc(fci);
            assert!(st.iter().all(|s| s.1.is_some()));
            total += st.len();
        }
        assert_eq!(total, TWCC_MAX_PENDING);
        assert_eq!(tw.poll_timeout(), None);
    }
}
