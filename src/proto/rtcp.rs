//! RTCP compound packet parser and the builders a receiving WebRTC endpoint
//! needs.
//!
//! Implemented, parse: SR and RR with report blocks (RFC 3550 §6.4), SDES
//! (recognised, contents skipped), BYE (§6.6), generic NACK (RFC 4585
//! §6.2.1, PID/BLP expanded to sequence numbers), PLI (RFC 4585 §6.3.1), FIR
//! (RFC 5104 §4.3.1), REMB (draft-alvestrand-rmcat-remb-03 §2.2), transport-wide
//! CC feedback (recognised, body left raw), anything else as `Unknown`.
//! Build: SR, RR, SDES CNAME, BYE, generic NACK (sequence list compacted into
//! PID/BLP pairs), PLI, FIR, REMB and transport-wide CC feedback
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) from a list of
//! arrival times.
//!
//! Not implemented: parsing transport-wide CC bodies, APP/XR contents, SDES
//! items, SRTCP (removed before this module). The parser does not insist that
//! a compound starts with SR/RR (reduced-size RTCP, RFC 5506, is what browsers
//! negotiate). The TWCC builder emits simple chunks: a run-length chunk for a
//! run of 7 or more equal symbols, otherwise a two-bit status vector chunk.

use std::fmt;
use std::time::{Duration, Instant};

const RTCP_VERSION: u8 = 2; // RFC 3550 §6.4.1
/// Packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;
pub const PT_RTPFB: u8 = 205;
pub const PT_PSFB: u8 = 206;
/// Feedback message types (FMT).
const FMT_NACK: u8 = 1; // RFC 4585 §6.2.1
const FMT_TWCC: u8 = 15; // draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1
const FMT_PLI: u8 = 1; // RFC 4585 §6.3.1
const FMT_FIR: u8 = 4; // RFC 5104 §4.3.1.1
const FMT_AFB: u8 = 15; // RFC 4585 §6.4, carries REMB
const REMB_ID: &[u8; 4] = b"REMB"; // draft-alvestrand-rmcat-remb-03 §2.2
const SDES_CNAME: u8 = 1; // RFC 3550 §6.5.1
/// Report blocks, SSRCs in BYE: the 5-bit count field (RFC 3550 §6.4.1).
pub const MAX_COUNT: usize = 31;
const REPORT_BLOCK_LEN: usize = 24; // RFC 3550 §6.4.1
/// Most FCI entries one NACK packet carries: 64 pairs = 1024 sequence numbers
/// at most, 268 bytes on the wire.
pub const MAX_NACK_PAIRS: usize = 64;
/// Most packet statuses (base included) in one TWCC feedback. Long gaps cost
/// one run-length chunk per 8191 statuses, so this only bounds a scratch vector.
pub const MAX_TWCC_STATUS: u64 = 16_384;
/// Most received packets in one TWCC feedback: worst case two chunks plus two
/// delta bytes each, so a feedback stays under about 1000 bytes.
pub const MAX_TWCC_RECEIVED: usize = 150;
const TWCC_DELTA_TICK_US: u128 = 250; // §3.1.5: 250 µs
const TWCC_REF_TICKS: i64 = 256; // reference time unit 64 ms = 256 delta ticks (§3.1)
const TWCC_RUN_MAX: usize = 0x1fff; // 13-bit run length (§3.1.3)

/// Why RTCP input or a builder request was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    /// Fewer than 4 bytes where a packet header should be.
    TooShort { len: usize },
    /// Version field is not 2.
    BadVersion { version: u8 },
    /// Length field points past the end of the compound packet.
    BadLength { words: u16, available: usize },
    /// Padding count is zero or larger than the packet body.
    BadPadding { count: u8 },
    /// A packet of type `pt` is too short for its count or fixed fields.
    Truncated { pt: u8 },
    /// Builder: more items than the packet can carry.
    TooMany { count: usize, max: usize },
    /// Builder: nothing to report.
    Empty,
    /// Builder: TWCC packets not strictly ascending or below the base.
    Unsorted,
    /// Builder: first TWCC packet too far above the base sequence number.
    TwccSpan,
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtcpError::TooShort { len } => write!(f, "RTCP packet of {len} bytes is shorter than its 4-byte header"),
            RtcpError::BadVersion { version } => write!(f, "RTCP version {version}, expected 2"),
            RtcpError::BadLength { words, available } => {
                write!(f, "RTCP length {words} words runs past the {available} bytes left")
            }
            RtcpError::BadPadding { count } => write!(f, "RTCP padding count {count} is invalid"),
            RtcpError::Truncated { pt } => write!(f, "RTCP packet type {pt} is too short for its contents"),
            RtcpError::TooMany { count, max } => write!(f, "{count} RTCP items, at most {max} fit"),
            RtcpError::Empty => f.write_str("RTCP builder given nothing to report"),
            RtcpError::Unsorted => f.write_str("TWCC arrivals not strictly ascending from the base"),
            RtcpError::TwccSpan => f.write_str("TWCC first arrival too far from the base sequence number"),
        }
    }
}

impl std::error::Error for RtcpError {}

/// One reception report block (RFC 3550 §6.4.1).
///
/// ```text
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                 SSRC_1 (SSRC of first source)                 |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | fraction lost |       cumulative number of packets lost       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           extended highest sequence number received           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      interarrival jitter                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         last SR (LSR)                         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                   delay since last SR (DLSR)                  |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Signed 24-bit on the wire; clamped to that range when written.
    pub cumulative_lost: i32,
    pub ext_highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    /// Units of 1/65536 s.
    pub dlsr: u32,
}

/// Sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    /// 64-bit NTP timestamp.
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One parsed packet of a compound RTCP datagram, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport {
        info: SenderInfo,
        reports: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: ReportBlocks<'a>,
    },
    /// Source description; items are not interpreted.
    Sdes,
    Bye {
        ssrcs: SsrcList<'a>,
        reason: Option<&'a [u8]>,
    },
    Nack {
        sender_ssrc: u32,
        media_ssrc: u32,
        list: NackList<'a>,
    },
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    Fir {
        sender_ssrc: u32,
        entries: FirList<'a>,
    },
    Remb {
        sender_ssrc: u32,
        bitrate_bps: u64,
        ssrcs: SsrcList<'a>,
    },
    /// Transport-wide CC feedback; `fci` starts at the base sequence number.
    TransportCc {
        sender_ssrc: u32,
        media_ssrc: u32,
        fci: &'a [u8],
    },
    Unknown {
        pt: u8,
        count: u8,
        body: &'a [u8],
    },
}

/// Report blocks as stored on the wire (24 bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / REPORT_BLOCK_LEN
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0.chunks_exact(REPORT_BLOCK_LEN).map(|b| {
            let lost24 = be32(b, 4) & 0x00ff_ffff;
            // Sign-extend the 24-bit cumulative lost.
            let cumulative_lost = ((lost24 << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b.get(4).copied().unwrap_or(0),
                cumulative_lost,
                ext_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                lsr: be32(b, 16),
                dlsr: be32(b, 20),
            }
        })
    }
}

/// A list of 32-bit SSRCs as stored on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsrcList<'a>(&'a [u8]);

impl<'a> SsrcList<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0.chunks_exact(4).map(|b| be32(b, 0))
    }
}

/// Generic NACK FCI entries (RFC 4585 §6.2.1).
///
/// ```text
/// |            PID                |             BLP               |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackList<'a>(&'a [u8]);

impl<'a> NackList<'a> {
    /// Raw `(pid, blp)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.0.chunks_exact(4).map(|b| (be16(b, 0), be16(b, 2)))
    }
    /// Every sequence number reported lost: PID, then PID+i+1 for each BLP bit i.
    pub fn seqs(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs().flat_map(|(pid, blp)| {
            std::iter::once(pid)
                .chain((0u16..16).filter(move |i| blp & (1 << i) != 0).map(move |i| pid.wrapping_add(i + 1)))
        })
    }
}

/// One FIR FCI entry (RFC 5104 §4.3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirEntry {
    pub ssrc: u32,
    pub seq_nr: u8,
}

/// FIR FCI entries as stored on the wire (8 bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirList<'a>(&'a [u8]);

impl<'a> FirList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = FirEntry> + 'a {
        self.0.chunks_exact(8).map(|b| FirEntry { ssrc: be32(b, 0), seq_nr: b.get(4).copied().unwrap_or(0) })
    }
}

/// Iterate over the packets of a compound RTCP datagram. Yields `Err` once
/// and then stops when a packet's header, length or padding is invalid or a
/// known packet type is too short for its contents: after that the packet
/// boundaries cannot be trusted.
pub fn parse(buf: &[u8]) -> RtcpPackets<'_> {
    RtcpPackets { rest: buf }
}

/// Iterator returned by [`parse`].
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_packet();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

impl<'a> RtcpPackets<'a> {
    fn next_packet(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        //  0                   1                   2                   3
        // |V=2|P|  count  |      PT       |             length            |
        let buf = self.rest;
        let (Some(&b0), Some(&pt), Some(len)) = (buf.first(), buf.get(1), buf.get(2..4)) else {
            return Err(RtcpError::TooShort { len: buf.len() });
        };
        let version = b0 >> 6;
        if version != RTCP_VERSION {
            return Err(RtcpError::BadVersion { version });
        }
        let words = be16(len, 0);
        let total = (usize::from(words) + 1) * 4;
        let Some(packet) = buf.get(..total) else {
            return Err(RtcpError::BadLength { words, available: buf.len() });
        };
        self.rest = buf.get(total..).unwrap_or(&[]);
        let mut body = packet.get(4..).unwrap_or(&[]);
        if b0 & 0x20 != 0 {
            // RFC 3550 §6.4.1: the last octet counts the padding, itself included.
            let count = body.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > body.len() {
                return Err(RtcpError::BadPadding { count });
            }
            body = body.get(..body.len() - usize::from(count)).unwrap_or(&[]);
        }
        parse_body(b0 & 0x1f, pt, body)
    }
}

fn parse_body(count: u8, pt: u8, body: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    let short = RtcpError::Truncated { pt };
    let n = usize::from(count);
    match pt {
        PT_SR => {
            let blocks = body.get(24..24 + n * REPORT_BLOCK_LEN).ok_or(short)?;
            let info = SenderInfo {
                ssrc: be32(body, 0),
                ntp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                rtp_ts: be32(body, 12),
                packets: be32(body, 16),
                octets: be32(body, 20),
            };
            Ok(RtcpPacket::SenderReport { info, reports: ReportBlocks(blocks) })
        }
        PT_RR => {
            let blocks = body.get(4..4 + n * REPORT_BLOCK_LEN).ok_or(short)?;
            Ok(RtcpPacket::ReceiverReport { ssrc: be32(body, 0), reports: ReportBlocks(blocks) })
        }
        PT_SDES => Ok(RtcpPacket::Sdes),
        PT_BYE => {
            // RFC 3550 §6.6: SSRC list, then an optional length-prefixed reason.
            let ssrcs = body.get(..n * 4).ok_or(short)?;
            let reason = body.get(n * 4).and_then(|&l| body.get(n * 4 + 1..n * 4 + 1 + usize::from(l)));
            Ok(RtcpPacket::Bye { ssrcs: SsrcList(ssrcs), reason })
        }
        PT_RTPFB | PT_PSFB => {
            // RFC 4585 §6.1: sender SSRC, media SSRC, then the FCI.
            let fci = body.get(8..).ok_or(short)?;
            let sender_ssrc = be32(body, 0);
            let media_ssrc = be32(body, 4);
            Ok(match (pt, count) {
                (PT_RTPFB, FMT_NACK) => RtcpPacket::Nack { sender_ssrc, media_ssrc, list: NackList(fci) },
                (PT_RTPFB, FMT_TWCC) => RtcpPacket::TransportCc { sender_ssrc, media_ssrc, fci },
                (PT_PSFB, FMT_PLI) => RtcpPacket::Pli { sender_ssrc, media_ssrc },
                (PT_PSFB, FMT_FIR) => RtcpPacket::Fir { sender_ssrc, entries: FirList(fci) },
                (PT_PSFB, FMT_AFB) if fci.get(..4) == Some(&REMB_ID[..]) => {
                    parse_remb(sender_ssrc, fci).ok_or(short)?
                }
                _ => RtcpPacket::Unknown { pt, count, body },
            })
        }
        _ => Ok(RtcpPacket::Unknown { pt, count, body }),
    }
}

/// ```text
/// |  Unique identifier 'R' 'E' 'M' 'B'                            |
/// |  Num SSRC     | BR Exp    |  BR Mantissa                      |
/// |   SSRC feedback                                               |
/// ```
fn parse_remb(sender_ssrc: u32, fci: &[u8]) -> Option<RtcpPacket<'_>> {
    let (&num, &b5, low) = (fci.get(4)?, fci.get(5)?, fci.get(6..8)?);
    let num = usize::from(num);
    let exp = u32::from(b5 >> 2);
    let mantissa = (u64::from(b5 & 0x03) << 16) | u64::from(be16(low, 0));
    let bitrate_bps = u64::try_from(u128::from(mantissa) << exp).unwrap_or(u64::MAX);
    let ssrcs = fci.get(8..8 + num * 4)?;
    Some(RtcpPacket::Remb { sender_ssrc, bitrate_bps, ssrcs: SsrcList(ssrcs) })
}

// ---------------------------------------------------------------------------
// Builders. Each appends one complete RTCP packet to `out`; on `Err` nothing
// is appended.

fn begin(out: &mut Vec<u8>, count: u8, pt: u8) -> usize {
    let start = out.len();
    out.push((RTCP_VERSION << 6) | (count & 0x1f));
    out.push(pt);
    out.extend_from_slice(&[0, 0]);
    start
}

/// Zero-pad to a 32-bit boundary and fill in the length field.
fn finish(out: &mut Vec<u8>, start: usize) {
    let len = out.len().saturating_sub(start);
    let padded = len.div_ceil(4) * 4;
    out.resize(start + padded, 0);
    let words = u16::try_from(padded / 4 - 1).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(start + 2..start + 4) {
        field.copy_from_slice(&words.to_be_bytes());
    }
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_report_blocks(out: &mut Vec<u8>, blocks: &[ReportBlock]) {
    for b in blocks {
        put32(out, b.ssrc);
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        put32(out, (u32::from(b.fraction_lost) << 24) | lost);
        put32(out, b.ext_highest_seq);
        put32(out, b.jitter);
        put32(out, b.lsr);
        put32(out, b.dlsr);
    }
}

fn check_count(count: usize, max: usize) -> Result<u8, RtcpError> {
    if count > max {
        return Err(RtcpError::TooMany { count, max });
    }
    u8::try_from(count).map_err(|_| RtcpError::TooMany { count, max })
}

/// Sender report (RFC 3550 §6.4.1) with up to 31 report blocks.
pub fn write_sr(info: &SenderInfo, blocks: &[ReportBlock], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    let rc = check_count(blocks.len(), MAX_COUNT)?;
    let start = begin(out, rc, PT_SR);
    put32(out, info.ssrc);
    out.extend_from_slice(&info.ntp.to_be_bytes());
    put32(out, info.rtp_ts);
    put32(out, info.packets);
    put32(out, info.octets);
    put_report_blocks(out, blocks);
    finish(out, start);
    Ok(())
}

/// Receiver report (RFC 3550 §6.4.2) with up to 31 report blocks.
pub fn write_rr(sender_ssrc: u32, blocks: &[ReportBlock], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    let rc = check_count(blocks.len(), MAX_COUNT)?;
    let start = begin(out, rc, PT_RR);
    put32(out, sender_ssrc);
    put_report_blocks(out, blocks);
    finish(out, start);
    Ok(())
}

/// SDES with one chunk holding a CNAME item (RFC 3550 §6.5.1), null-terminated
/// and padded to 32 bits as §6.5 requires.
pub fn write_sdes_cname(ssrc: u32, cname: &[u8], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    let len = check_count(cname.len(), 255)?;
    let start = begin(out, 1, PT_SDES);
    put32(out, ssrc);
    out.push(SDES_CNAME);
    out.push(len);
    out.extend_from_slice(cname);
    out.push(0); // end of item list; `finish` adds the rest of the null padding
    finish(out, start);
    Ok(())
}

/// BYE (RFC 3550 §6.6) for up to 31 SSRCs, without a reason.
pub fn write_bye(ssrcs: &[u32], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    let sc = check_count(ssrcs.len(), MAX_COUNT)?;
    let start = begin(out, sc, PT_BYE);
    for &s in ssrcs {
        put32(out, s);
    }
    finish(out, start);
    Ok(())
}

/// Generic NACK (RFC 4585 §6.2.1). Consecutive entries of `seqs` within 16 of
/// the current PID share its BLP; give the list in sending order (ascending
/// across the wrap) for the most compact result. Writes at most
/// [`MAX_NACK_PAIRS`] FCI entries and returns how many leading entries of
/// `seqs` were covered (call again with the rest). Writes nothing for an
/// empty list.
pub fn write_nack(sender_ssrc: u32, media_ssrc: u32, seqs: &[u16], out: &mut Vec<u8>) -> usize {
    if seqs.is_empty() {
        return 0;
    }
    let start = begin(out, FMT_NACK, PT_RTPFB);
    put32(out, sender_ssrc);
    put32(out, media_ssrc);
    let mut pairs = 0usize;
    let mut current: Option<(u16, u16)> = None;
    let mut covered = 0usize;
    for &seq in seqs {
        if let Some((pid, blp)) = current.as_mut() {
            let d = seq.wrapping_sub(*pid);
            if d == 0 {
                covered += 1;
                continue;
            }
            if (1..=16).contains(&d) {
                *blp |= 1 << (d - 1);
                covered += 1;
                continue;
            }
            // Need a new pair: the current one plus the new one must fit.
            if pairs + 2 > MAX_NACK_PAIRS {
                break;
            }
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&blp.to_be_bytes());
            pairs += 1;
        }
        current = Some((seq, 0));
        covered += 1;
    }
    if let Some((pid, blp)) = current {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&blp.to_be_bytes());
    }
    finish(out, start);
    covered
}

/// Picture Loss Indication (RFC 4585 §6.3.1): no FCI.
pub fn write_pli(sender_ssrc: u32, media_ssrc: u32, out: &mut Vec<u8>) {
    let start = begin(out, FMT_PLI, PT_PSFB);
    put32(out, sender_ssrc);
    put32(out, media_ssrc);
    finish(out, start);
}

/// Full Intra Request (RFC 5104 §4.3.1) for one media sender. The common
/// header's media SSRC is 0 (§4.3.1.2); the target goes in the FCI with the
/// command sequence number, which the caller increments per new request.
pub fn write_fir(sender_ssrc: u32, media_ssrc: u32, seq_nr: u8, out: &mut Vec<u8>) {
    let start = begin(out, FMT_FIR, PT_PSFB);
    put32(out, sender_ssrc);
    put32(out, 0);
    put32(out, media_ssrc);
    out.extend_from_slice(&[seq_nr, 0, 0, 0]);
    finish(out, start);
}

/// Receiver Estimated Max Bitrate (draft-alvestrand-rmcat-remb-03 §2.2).
/// The bitrate is stored as an 18-bit mantissa and 6-bit exponent, rounded
/// down when it does not fit exactly.
pub fn write_remb(sender_ssrc: u32, bitrate_bps: u64, ssrcs: &[u32], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    let num = check_count(ssrcs.len(), 255)?;
    let mut exp = 0u8;
    let mut mantissa = bitrate_bps;
    while mantissa >= 1 << 18 {
        mantissa >>= 1;
        exp += 1;
    }
    let start = begin(out, FMT_AFB, PT_PSFB);
    put32(out, sender_ssrc);
    put32(out, 0); // media SSRC unused (§2.2)
    out.extend_from_slice(REMB_ID);
    out.push(num);
    out.push((exp << 2) | ((mantissa >> 16) as u8 & 0x03));
    out.extend_from_slice(&((mantissa & 0xffff) as u16).to_be_bytes());
    for &s in ssrcs {
        put32(out, s);
    }
    finish(out, start);
    Ok(())
}

/// Header fields of a transport-wide CC feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwccHeader {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    /// First transport sequence number reported (extended; written mod 2^16).
    pub base_seq: u64,
    /// Feedback packet count, incremented by the caller per feedback sent.
    pub fb_count: u8,
}

/// Status symbols (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1.1).
const SYM_NOT_RECEIVED: u8 = 0;
const SYM_SMALL: u8 = 1;
const SYM_LARGE: u8 = 2;

/// Transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).
///
/// ```text
/// |V=2|P|  FMT=15 |    PT=205     |           length              |
/// |                     SSRC of packet sender                     |
/// |                      SSRC of media source                     |
/// |      base sequence number     |      packet status count      |
/// |                 reference time                | fb pkt. count |
/// |          packet chunk         |         packet chunk          |
/// .                                                               .
/// |         packet chunk          |  recv delta   |  recv delta   |
/// .                                                               .
/// |           recv delta          |  recv delta   | zero padding  |
/// ```
///
/// `packets` are `(extended transport seq, arrival)` pairs, strictly
/// ascending and not below `hdr.base_seq`; sequence numbers missing from the
/// list are reported as not received. Arrival times are measured from
/// `origin`, a fixed instant of the caller's (the reference time is their
/// distance from it in 64 ms units, mod 2^24). Packets are taken from the
/// front until the status count would pass [`MAX_TWCC_STATUS`], the received
/// count [`MAX_TWCC_RECEIVED`], or a delta does not fit 16 bits; returns how
/// many were written (at least one).
pub fn write_transport_cc(
    hdr: &TwccHeader,
    packets: &[(u64, Instant)],
    origin: Instant,
    out: &mut Vec<u8>,
) -> Result<usize, RtcpError> {
    let Some(&(first_seq, first_at)) = packets.first() else {
        return Err(RtcpError::Empty);
    };
    if first_seq < hdr.base_seq {
        return Err(RtcpError::Unsorted);
    }
    if first_seq - hdr.base_seq >= MAX_TWCC_STATUS {
        return Err(RtcpError::TwccSpan);
    }
    let ticks = |at: Instant| -> i64 {
        let us = at.saturating_duration_since(origin).as_micros();
        i64::try_from((us + TWCC_DELTA_TICK_US / 2) / TWCC_DELTA_TICK_US).unwrap_or(i64::MAX)
    };
    let reference = ticks(first_at) / TWCC_REF_TICKS;
    let mut prev_ticks = reference.saturating_mul(TWCC_REF_TICKS);

    // Pass 1: pick the packets that fit and their symbols/deltas.
    let mut symbols: Vec<u8> = Vec::new();
    let mut deltas: Vec<i16> = Vec::new();
    let mut taken = 0usize;
    let mut last_seq: Option<u64> = None;
    for &(seq, at) in packets {
        if last_seq.is_some_and(|l| seq <= l) {
            break; // not strictly ascending: report what came before
        }
        let offset = seq - hdr.base_seq;
        if offset >= MAX_TWCC_STATUS || taken == MAX_TWCC_RECEIVED {
            break;
        }
        let t = ticks(at);
        let Ok(delta) = i16::try_from(t.saturating_sub(prev_ticks)) else {
            break;
        };
        // offset < MAX_TWCC_STATUS, so this fits usize.
        let index = usize::try_from(offset).unwrap_or(usize::MAX);
        symbols.resize(index, SYM_NOT_RECEIVED);
        symbols.push(if (0..=255).contains(&delta) { SYM_SMALL } else { SYM_LARGE });
        deltas.push(delta);
        prev_ticks = t;
        last_seq = Some(seq);
        taken += 1;
    }
    if taken == 0 {
        return Err(RtcpError::TwccSpan);
    }
    let status_count = u16::try_from(symbols.len()).map_err(|_| RtcpError::TwccSpan)?;

    // Pass 2: write.
    let start = begin(out, FMT_TWCC, PT_RTPFB);
    put32(out, hdr.sender_ssrc);
    put32(out, hdr.media_ssrc);
    out.extend_from_slice(&(hdr.base_seq as u16).to_be_bytes());
    out.extend_from_slice(&status_count.to_be_bytes());
    let reference24 = (reference & 0x00ff_ffff) as u32;
    put32(out, (reference24 << 8) | u32::from(hdr.fb_count));
    let mut i = 0usize;
    while let Some(&sym) = symbols.get(i) {
        let run = symbols.get(i..).unwrap_or(&[]).iter().take(TWCC_RUN_MAX).take_while(|&&s| s == sym).count();
        let chunk = if run >= 7 || i + run == symbols.len() {
            // Run-length chunk (§3.1.3): |T=0| S(2) | run length(13) |
            i += run;
            (u16::from(sym) << 13) | run as u16
        } else {
            // Two-bit status vector chunk (§3.1.4): |T=1|S=1| 7 symbols |
            let mut c = 0xC000u16;
            for k in 0..7 {
                let s = symbols.get(i + k).copied().unwrap_or(SYM_NOT_RECEIVED);
                c |= u16::from(s) << (12 - 2 * k);
            }
            i += 7;
            c
        };
        out.extend_from_slice(&chunk.to_be_bytes());
    }
    for d in deltas {
        match u8::try_from(d) {
            Ok(small) => out.push(small),
            Err(_) => out.extend_from_slice(&d.to_be_bytes()),
        }
    }
    finish(out, start);
    Ok(taken)
}

/// A delay in DLSR units, 1/65536 s (RFC 3550 §6.4.1), saturating.
pub fn dlsr_units(delay: Duration) -> u32 {
    u32::try_from(delay.as_micros().saturating_mul(65_536) / 1_000_000).unwrap_or(u32::MAX)
}

// Big-endian field readers shared with the RTP header parser.
use super::rtp::{be16, be32};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    fn one(buf: &[u8]) -> RtcpPacket<'_> {
        let all: Vec<_> = parse(buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0]
    }

    fn block(i: u32) -> ReportBlock {
        ReportBlock {
            ssrc: 0x1000 + i,
            fraction_lost: 25,
            cumulative_lost: -3 + i as i32 * 1000,
            ext_highest_seq: 0x0001_fff0 + i,
            jitter: 77 * i,
            lsr: 0xABCD_0000 + i,
            dlsr: 65_536 * i,
        }
    }

    #[test]
    fn sender_report_round_trip() {
        let info = SenderInfo { ssrc: 9, ntp: 0x0123_4567_89AB_CDEF, rtp_ts: 3000, packets: 17, octets: 12345 };
        let blocks = [block(1), block(2)];
        let mut b = Vec::new();
        write_sr(&info, &blocks, &mut b).unwrap();
        assert_eq!(b.len(), 28 + 48);
        match one(&b) {
            RtcpPacket::SenderReport { info: got, reports } => {
                assert_eq!(got, info);
                assert_eq!(reports.iter().collect::<Vec<_>>(), blocks);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn receiver_report_round_trip_and_limits() {
        let blocks: Vec<_> = (0..31).map(block).collect();
        let mut b = Vec::new();
        write_rr(42, &blocks, &mut b).unwrap();
        match one(&b) {
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                assert_eq!(ssrc, 42);
                assert_eq!(reports.len(), 31);
                assert_eq!(reports.iter().collect::<Vec<_>>(), blocks);
            }
            p => panic!("{p:?}"),
        }
        let too_many: Vec<_> = (0..32).map(block).collect();
        let mut c = Vec::new();
        assert_eq!(write_rr(1, &too_many, &mut c), Err(RtcpError::TooMany { count: 32, max: 31 }));
        assert!(c.is_empty());
        // Empty RR is legal (RFC 3550 §6.4.2) and cumulative loss clamps to 24 bits.
        let mut d = Vec::new();
        let big = ReportBlock { cumulative_lost: i32::MIN, ..block(0) };
        write_rr(1, &[big], &mut d).unwrap();
        let RtcpPacket::ReceiverReport { reports, .. } = one(&d) else { panic!() };
        assert_eq!(reports.iter().next().unwrap().cumulative_lost, -0x80_0000);
    }

    #[test]
    fn sdes_and_bye_round_trip() {
        let mut b = Vec::new();
        write_sdes_cname(5, b"rtcbridge", &mut b).unwrap();
        assert_eq!(b.len() % 4, 0);
        // SSRC + type + len + 9 bytes + at least one null, padded: 4+4+2+9+1 = 20.
        assert_eq!(b.len(), 20);
        write_bye(&[5, 6], &mut b).unwrap();
        let all: Vec<_> = parse(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(all[0], RtcpPacket::Sdes);
        match all[1] {
            RtcpPacket::Bye { ssrcs, reason } => {
                assert_eq!(ssrcs.iter().collect::<Vec<_>>(), vec![5, 6]);
                assert_eq!(reason, None);
            }
            p => panic!("{p:?}"),
        }
        // A BYE with a reason, hand-built: 1 SSRC, reason "bye" + pad.
        let raw = [0x81, 203, 0, 2, 0, 0, 0, 7, 3, b'b', b'y', b'e'];
        match one(&raw) {
            RtcpPacket::Bye { ssrcs, reason } => {
                assert_eq!(ssrcs.len(), 1);
                assert_eq!(reason, Some(&b"bye"[..]));
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn nack_compaction_round_trip() {
        let seqs: Vec<u16> = vec![65530, 65531, 65535, 0, 5, 9, 30, 31, 47, 48, 200];
        let mut b = Vec::new();
        assert_eq!(write_nack(1, 2, &seqs, &mut b), seqs.len());
        match one(&b) {
            RtcpPacket::Nack { sender_ssrc, media_ssrc, list } => {
                assert_eq!((sender_ssrc, media_ssrc), (1, 2));
                // PID 65530 covers 65531..=10 across the wrap (65531, 65535, 0, 5, 9);
                // 30 covers 31 but not 47 (17 away); 47 covers 48; 200 stands alone.
                assert_eq!(list.pairs().count(), 4);
                assert_eq!(list.seqs().collect::<Vec<_>>(), seqs);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn nack_rfc4585_blp_bits() {
        // PID 100, BLP bit 0 -> 101, bit 15 -> 116.
        let mut b = Vec::new();
        write_nack(1, 2, &[100, 101, 116], &mut b);
        let RtcpPacket::Nack { list, .. } = one(&b) else { panic!() };
        assert_eq!(list.pairs().collect::<Vec<_>>(), vec![(100, 0x8001)]);
        // Duplicates collapse, empty writes nothing.
        let mut c = Vec::new();
        assert_eq!(write_nack(1, 2, &[7, 7, 8], &mut c), 3);
        let RtcpPacket::Nack { list, .. } = one(&c) else { panic!() };
        assert_eq!(list.seqs().collect::<Vec<_>>(), vec![7, 8]);
        let mut d = Vec::new();
        assert_eq!(write_nack(1, 2, &[], &mut d), 0);
        assert!(d.is_empty());
    }

    #[test]
    fn nack_splits_when_full() {
        // Every other 17 apart: one pair each.
        let seqs: Vec<u16> = (0..100u16).map(|i| i * 17).collect();
        let mut b = Vec::new();
        let n = write_nack(1, 2, &seqs, &mut b);
        assert_eq!(n, MAX_NACK_PAIRS);
        let mut again = Vec::new();
        let m = write_nack(1, 2, &seqs[n..], &mut again);
        assert_eq!(n + m, seqs.len());
        let mut got: Vec<u16> = Vec::new();
        for buf in [&b, &again] {
            let RtcpPacket::Nack { list, .. } = one(buf) else { panic!() };
            got.extend(list.seqs());
        }
        assert_eq!(got, seqs);
    }

    #[test]
    fn pli_fir_remb_round_trip() {
        let mut b = Vec::new();
        write_pli(3, 4, &mut b);
        write_fir(3, 4, 9, &mut b);
        write_remb(3, 1_000_000, &[4, 5], &mut b).unwrap();
        write_remb(3, 0, &[], &mut b).unwrap();
        let all: Vec<_> = parse(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(all[0], RtcpPacket::Pli { sender_ssrc: 3, media_ssrc: 4 });
        match all[1] {
            RtcpPacket::Fir { sender_ssrc, entries } => {
                assert_eq!(sender_ssrc, 3);
                assert_eq!(entries.iter().collect::<Vec<_>>(), vec![FirEntry { ssrc: 4, seq_nr: 9 }]);
            }
            p => panic!("{p:?}"),
        }
        match all[2] {
            RtcpPacket::Remb { sender_ssrc, bitrate_bps, ssrcs } => {
                assert_eq!((sender_ssrc, bitrate_bps), (3, 1_000_000));
                assert_eq!(ssrcs.iter().collect::<Vec<_>>(), vec![4, 5]);
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(all[3], RtcpPacket::Remb { bitrate_bps: 0, .. }));
        // Unrepresentable bitrates round down, within one mantissa step.
        let mut c = Vec::new();
        write_remb(1, 123_456_789_012, &[], &mut c).unwrap();
        let RtcpPacket::Remb { bitrate_bps, .. } = one(&c) else { panic!() };
        assert!(bitrate_bps <= 123_456_789_012 && bitrate_bps > 123_456_789_012 - (1 << 19));
    }

    #[test]
    fn unknown_and_padding() {
        // APP packet (204) with the padding bit: body "ABCDxxxx" + 4 padding bytes.
        let raw = [0xA0, 204, 0, 2, b'A', b'B', b'C', b'D', 0, 0, 0, 4];
        assert_eq!(one(&raw), RtcpPacket::Unknown { pt: 204, count: 0, body: b"ABCD" });
        // PSFB with unknown FMT, and AFB that is not REMB.
        let mut b = Vec::new();
        let s = begin(&mut b, 15, PT_PSFB);
        put32(&mut b, 1);
        put32(&mut b, 0);
        b.extend_from_slice(b"XXXX");
        finish(&mut b, s);
        assert!(matches!(one(&b), RtcpPacket::Unknown { pt: PT_PSFB, count: 15, .. }));
    }

    #[test]
    fn rejects_malformed() {
        let mut it = parse(&[0x80, 201, 0]);
        assert_eq!(it.next(), Some(Err(RtcpError::TooShort { len: 3 })));
        assert_eq!(it.next(), None);
        assert_eq!(parse(&[0x40, 201, 0, 0]).next(), Some(Err(RtcpError::BadVersion { version: 1 })));
        assert_eq!(
            parse(&[0x80, 201, 0, 1, 0, 0, 0]).next(),
            Some(Err(RtcpError::BadLength { words: 1, available: 7 }))
        );
        // RR claiming one report block but carrying none.
        assert_eq!(parse(&[0x81, 201, 0, 1, 0, 0, 0, 1]).next(), Some(Err(RtcpError::Truncated { pt: 201 })));
        // Padding count 0 and too large.
        assert_eq!(parse(&[0xA0, 201, 0, 1, 0, 0, 0, 0]).next(), Some(Err(RtcpError::BadPadding { count: 0 })));
        assert_eq!(parse(&[0xA0, 201, 0, 1, 0, 0, 0, 9]).next(), Some(Err(RtcpError::BadPadding { count: 9 })));
        // Good packet then garbage: one Ok, one Err, then the end.
        let mut b = Vec::new();
        write_pli(1, 2, &mut b);
        b.extend_from_slice(&[0x00, 0x00]);
        let all: Vec<_> = parse(&b).collect();
        assert_eq!(all.len(), 2);
        assert!(all[0].is_ok() && all[1].is_err());
    }

    /// Independent TWCC decoder: (base, fb_count, reference, [(seq, Option<arrival µs>)]).
    pub(crate) fn decode_twcc(fci: &[u8]) -> (u16, u8, u32, Vec<(u16, Option<i64>)>) {
        let base = u16::from_be_bytes([fci[0], fci[1]]);
        let count = u16::from_be_bytes([fci[2], fci[3]]) as usize;
        let reference = u32::from_be_bytes([0, fci[4], fci[5], fci[6]]);
        let fb = fci[7];
        let mut pos = 8;
        let mut syms = Vec::new();
        while syms.len() < count {
            let c = u16::from_be_bytes([fci[pos], fci[pos + 1]]);
            pos += 2;
            if c & 0x8000 == 0 {
                let s = ((c >> 13) & 3) as u8;
                for _ in 0..(c & 0x1fff) {
                    syms.push(s);
                }
            } else if c & 0x4000 == 0 {
                for k in 0..14 {
                    syms.push(((c >> (13 - k)) & 1) as u8);
                }
            } else {
                for k in 0..7 {
                    syms.push(((c >> (12 - 2 * k)) & 3) as u8);
                }
            }
        }
        syms.truncate(count);
        let mut t = reference as i64 * 64_000;
        let mut outv = Vec::new();
        for (i, s) in syms.iter().enumerate() {
            let seq = base.wrapping_add(i as u16);
            match s {
                0 => outv.push((seq, None)),
                1 => {
                    t += fci[pos] as i64 * 250;
                    pos += 1;
                    outv.push((seq, Some(t)));
                }
                2 => {
                    t += i16::from_be_bytes([fci[pos], fci[pos + 1]]) as i64 * 250;
                    pos += 2;
                    outv.push((seq, Some(t)));
                }
                _ => panic!("reserved symbol"),
            }
        }
        assert!(fci.len() - pos < 4, "only zero padding may follow");
        assert!(fci[pos..].iter().all(|&b| b == 0));
        (base, fb, reference, outv)
    }

    #[test]
    fn twcc_round_trip_through_independent_decoder() {
        let origin = crate::runtime::now();
        let ms = |m: u64| origin + Duration::from_micros(m);
        // Base 65530 (wraps), 65531 lost, big gap, a negative delta (reordered arrival),
        // a long run of lost packets, then a >64 ms delta.
        let pkts: Vec<(u64, Instant)> = vec![
            (65_530, ms(1_000_000)),
            (65_532, ms(1_000_250)),
            (65_533, ms(1_001_000)),
            (65_534, ms(1_000_500)),
            (65_536, ms(1_002_000)),
            (65_560, ms(1_003_000)),
            (65_561, ms(1_200_000)),
        ];
        let hdr = TwccHeader { sender_ssrc: 1, media_ssrc: 2, base_seq: 65_529, fb_count: 7 };
        let mut b = Vec::new();
        assert_eq!(write_transport_cc(&hdr, &pkts, origin, &mut b).unwrap(), pkts.len());
        let RtcpPacket::TransportCc { sender_ssrc, media_ssrc, fci } = one(&b) else { panic!() };
        assert_eq!((sender_ssrc, media_ssrc), (1, 2));
        let (base, fb, reference, statuses) = decode_twcc(fci);
        assert_eq!((base, fb), (65_529, 7));
        assert_eq!(reference, 1_000_000 / 64_000);
        assert_eq!(statuses.len(), (65_561 - 65_529 + 1) as usize);
        let received: Vec<(u16, i64)> = statuses.iter().filter_map(|&(s, t)| t.map(|t| (s, t))).collect();
        let want: Vec<(u16, i64)> =
            pkts.iter().map(|&(s, at)| (s as u16, at.duration_since(origin).as_micros() as i64)).collect();
        assert_eq!(received, want);
        assert_eq!(statuses[0], (65_529, None));
        assert_eq!(statuses[2], (65_531, None));
    }

    #[test]
    fn twcc_limits() {
        let origin = crate::runtime::now();
        let mut b = Vec::new();
        let hdr = TwccHeader { sender_ssrc: 1, media_ssrc: 2, base_seq: 100, fb_count: 0 };
        assert_eq!(write_transport_cc(&hdr, &[], origin, &mut b), Err(RtcpError::Empty));
        assert_eq!(write_transport_cc(&hdr, &[(99, origin)], origin, &mut b), Err(RtcpError::Unsorted));
        assert_eq!(
            write_transport_cc(&hdr, &[(100 + MAX_TWCC_STATUS, origin)], origin, &mut b),
            Err(RtcpError::TwccSpan)
        );
        assert!(b.is_empty());
        // Unsorted after the first: stops there.
        let two = [(100, origin), (100, origin)];
        assert_eq!(write_transport_cc(&hdr, &two, origin, &mut b), Ok(1));
        // More than MAX_TWCC_RECEIVED: split, all 1 ms apart.
        let many: Vec<_> = (0..400u64).map(|i| (100 + i, origin + Duration::from_millis(i))).collect();
        let mut c = Vec::new();
        let n = write_transport_cc(&hdr, &many, origin, &mut c).unwrap();
        assert_eq!(n, MAX_TWCC_RECEIVED);
        assert!(c.len() < 1200);
        // A 9 s jump cannot be a 16-bit delta: stops before it.
        let jump = [(100, origin), (101, origin + Duration::from_secs(9))];
        let mut d = Vec::new();
        assert_eq!(write_transport_cc(&hdr, &jump, origin, &mut d), Ok(1));
        let RtcpPacket::TransportCc { fci, .. } = one(&d) else { panic!() };
        assert_eq!(decode_twcc(fci).3, vec![(100, Some(0))]);
    }

    #[test]
    fn twcc_worst_case_size() {
        // Alternating received / 6 lost: as many chunks as possible per received packet,
        // with large deltas.
        let origin = crate::runtime::now();
        let pkts: Vec<_> =
            (0..MAX_TWCC_RECEIVED as u64).map(|i| (i * 7, origin + Duration::from_millis(100 * i))).collect();
        let hdr = TwccHeader { sender_ssrc: 1, media_ssrc: 2, base_seq: 0, fb_count: 0 };
        let mut b = Vec::new();
        assert_eq!(write_transport_cc(&hdr, &pkts, origin, &mut b).unwrap(), pkts.len());
        assert!(b.len() <= 1200, "{}", b.len());
        let RtcpPacket::TransportCc { fci, .. } = one(&b) else { panic!() };
        let got: Vec<_> = decode_twcc(fci).3.into_iter().filter(|s| s.1.is_some()).collect();
        assert_eq!(got.len(), pkts.len());
    }

    #[test]
    fn dlsr_units_scale() {
        assert_eq!(dlsr_units(Duration::from_secs(1)), 65_536);
        assert_eq!(dlsr_units(Duration::from_millis(500)), 32_768);
    }

    #[test]
    fn no_panic_on_prefixes_and_noise() {
        let origin = crate::runtime::now();
        let mut b = Vec::new();
        write_sr(&SenderInfo::default(), &[block(1)], &mut b).unwrap();
        write_nack(1, 2, &[1, 2, 40], &mut b);
        write_remb(1, 5_000_000, &[1], &mut b).unwrap();
        write_fir(1, 2, 3, &mut b);
        write_transport_cc(
            &TwccHeader { sender_ssrc: 1, media_ssrc: 2, base_seq: 0, fb_count: 0 },
            &[(0, origin), (3, origin)],
            origin,
            &mut b,
        )
        .unwrap();
        for n in 0..=b.len() {
            for p in parse(&b[..n]).flatten() {
                walk(&p);
            }
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut buf = [0u8; 64];
            for byte in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            buf[0] = (buf[0] & 0x3f) | 0x80;
            buf[1] = 200 + (buf[1] % 8);
            buf[2] = 0;
            buf[3] %= 17;
            let len = (x >> 8) as usize % 65;
            for p in parse(&buf[..len]).flatten() {
                walk(&p);
            }
        }
    }

    fn walk(p: &RtcpPacket<'_>) {
        match p {
            RtcpPacket::SenderReport { reports, .. } | RtcpPacket::ReceiverReport { reports, .. } => {
                let _ = reports.iter().count();
            }
            RtcpPacket::Bye { ssrcs, .. } | RtcpPacket::Remb { ssrcs, .. } => {
                let _ = ssrcs.iter().count();
            }
            RtcpPacket::Nack { list, .. } => {
                let _ = list.seqs().count();
            }
            RtcpPacket::Fir { entries, .. } => {
                let _ = entries.iter().count();
            }
            _ => {}
        }
    }
}
