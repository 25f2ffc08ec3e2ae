//! RTP fixed header view (RFC 3550 §5.1), RTP header extensions (RFC 8285)
//! and RTP/RTCP demultiplexing on one port (RFC 5761 §4).
//!
//! Implemented: a borrowing parser for version-2 packets (CSRC list,
//! extension block, padding removed from the payload), lookup of one-byte
//! (§4.2) and two-byte (§4.3) header extension elements, recognition of
//! padding-only packets (Chrome's bandwidth probes), and a small header
//! writer for our own tools (fixed header plus optional one-byte extensions).
//!
//! Not implemented: the writer never emits CSRCs, two-byte extensions or
//! padding; extension profiles other than RFC 8285 are exposed raw only;
//! SRTP is removed before this module sees a packet.

use std::fmt;

/// RTP version carried in the top two bits (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;
/// Fixed header length before CSRCs (RFC 3550 §5.1).
pub const RTP_FIXED_HEADER_LEN: usize = 12;
/// "defined by profile" value of the one-byte extension form (RFC 8285 §4.2).
pub const EXT_PROFILE_ONE_BYTE: u16 = 0xBEDE;
/// Two-byte form: 0x100 followed by 4 "appbits" (RFC 8285 §4.3).
const EXT_PROFILE_TWO_BYTE: u16 = 0x1000;
const EXT_PROFILE_TWO_BYTE_MASK: u16 = 0xFFF0;
/// One-byte ID 15 stops extension processing (RFC 8285 §4.2).
const EXT_ONE_BYTE_STOP_ID: u8 = 15;
/// Longest one-byte element body: L is 4 bits, length L+1 (RFC 8285 §4.2).
const EXT_ONE_BYTE_MAX_LEN: usize = 16;

/// Why an RTP packet was rejected. Every variant is a drop, not a fatal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the fixed header (RFC 3550 §5.1).
    TooShort { len: usize },
    /// Version field is not 2 (RFC 3550 §5.1).
    BadVersion { version: u8 },
    /// CSRC list runs past the end of the packet.
    CsrcOverrun { count: u8 },
    /// Extension block length runs past the end of the packet (RFC 3550 §5.3.1).
    ExtensionOverrun,
    /// Padding count is zero or larger than the payload (RFC 3550 §5.1).
    BadPadding { count: u8 },
    /// Writer: payload type above 127.
    BadPayloadType { pt: u8 },
    /// Writer: one-byte extension ID outside 1..=14 or body length outside 1..=16.
    BadExtension { id: u8, len: usize },
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtpError::TooShort { len } => write!(f, "RTP packet of {len} bytes is shorter than the 12-byte header"),
            RtpError::BadVersion { version } => write!(f, "RTP version {version}, expected 2"),
            RtpError::CsrcOverrun { count } => write!(f, "RTP CSRC list of {count} entries runs past the packet"),
            RtpError::ExtensionOverrun => f.write_str("RTP header extension runs past the packet"),
            RtpError::BadPadding { count } => write!(f, "RTP padding count {count} is invalid for this packet"),
            RtpError::BadPayloadType { pt } => write!(f, "RTP payload type {pt} is above 127"),
            RtpError::BadExtension { id, len } => {
                write!(f, "one-byte RTP extension id {id} with {len} bytes is not encodable")
            }
        }
    }
}

impl std::error::Error for RtpError {}

/// A parsed RTP packet borrowing from the datagram.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|X|  CC   |M|     PT      |       sequence number         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           timestamp                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           synchronization source (SSRC) identifier            |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |            contributing source (CSRC) identifiers             |
/// |                             ....                              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |      defined by profile       |           length              |  (if X)
/// |                        header extension                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    /// Payload type, 7 bits.
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    /// Number of CSRC identifiers (CC field).
    pub csrc_count: u8,
    /// Raw CSRC list, `4 * csrc_count` bytes.
    pub csrcs: &'a [u8],
    /// "defined by profile" field when the X bit is set.
    pub ext_profile: Option<u16>,
    /// Extension block body (after the 4-byte extension header); empty without X.
    pub ext: &'a [u8],
    /// Media payload with padding removed.
    pub payload: &'a [u8],
    /// Padding octets removed from the end (0 when the P bit is clear).
    pub padding: u8,
}

/// Parse an RTP packet. Padding (RFC 3550 §5.1) is stripped from `payload`.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let (Some(&b0), Some(&b1), Some(fixed)) = (buf.first(), buf.get(1), buf.get(..RTP_FIXED_HEADER_LEN)) else {
        return Err(RtpError::TooShort { len: buf.len() });
    };
    let version = b0 >> 6;
    if version != RTP_VERSION {
        return Err(RtpError::BadVersion { version });
    }
    let has_padding = b0 & 0x20 != 0;
    let has_ext = b0 & 0x10 != 0;
    let csrc_count = b0 & 0x0f;
    let seq = be16(fixed, 2);
    let ts = be32(fixed, 4);
    let ssrc = be32(fixed, 8);

    let csrc_end = RTP_FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
    let csrcs = buf.get(RTP_FIXED_HEADER_LEN..csrc_end).ok_or(RtpError::CsrcOverrun { count: csrc_count })?;

    let mut offset = csrc_end;
    let (ext_profile, ext) = if has_ext {
        // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words.
        let head = buf.get(offset..offset + 4).ok_or(RtpError::ExtensionOverrun)?;
        let profile = be16(head, 0);
        let words = usize::from(be16(head, 2));
        let start = offset + 4;
        let end = start + words * 4;
        let body = buf.get(start..end).ok_or(RtpError::ExtensionOverrun)?;
        offset = end;
        (Some(profile), body)
    } else {
        (None, &[][..])
    };

    let mut payload = buf.get(offset..).unwrap_or(&[]);
    let mut padding = 0u8;
    if has_padding {
        // RFC 3550 §5.1: the last octet counts the padding, itself included.
        let count = payload.last().copied().unwrap_or(0);
        if count == 0 || usize::from(count) > payload.len() {
            return Err(RtpError::BadPadding { count });
        }
        payload = payload.get(..payload.len() - usize::from(count)).unwrap_or(&[]);
        padding = count;
    }

    Ok(RtpPacket {
        marker: b1 & 0x80 != 0,
        pt: b1 & 0x7f,
        seq,
        ts,
        ssrc,
        csrc_count,
        csrcs,
        ext_profile,
        ext,
        payload,
        padding,
    })
}

impl<'a> RtpPacket<'a> {
    /// True for a packet that carries no media after padding removal, such as
    /// Chrome's padding-only probes. It still occupies a sequence number.
    pub fn is_padding_only(&self) -> bool {
        self.payload.is_empty()
    }

    /// CSRC number `index`, if present.
    pub fn csrc(&self, index: usize) -> Option<u32> {
        let at = index.checked_mul(4)?;
        self.csrcs.get(at..at.checked_add(4)?).map(|b| be32(b, 0))
    }

    /// Iterate over RFC 8285 extension elements as `(id, body)`. Empty for
    /// packets without an extension or with a profile other than RFC 8285.
    pub fn extensions(&self) -> RtpExtensions<'a> {
        let form = match self.ext_profile {
            Some(EXT_PROFILE_ONE_BYTE) => ExtForm::OneByte,
            Some(p) if p & EXT_PROFILE_TWO_BYTE_MASK == EXT_PROFILE_TWO_BYTE => ExtForm::TwoByte,
            _ => ExtForm::None,
        };
        RtpExtensions { form, rest: self.ext }
    }

    /// Body of the first extension element with local identifier `id`.
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        if id == 0 {
            return None; // RFC 8285 §4.2/§4.3: ID 0 is padding, never an element
        }
        self.extensions().find(|&(i, _)| i == id).map(|(_, body)| body)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtForm {
    None,
    OneByte,
    TwoByte,
}

/// Iterator over RFC 8285 extension elements. Stops at the first malformed
/// element (length past the block) and, in the one-byte form, at ID 15.
#[derive(Debug, Clone)]
pub struct RtpExtensions<'a> {
    form: ExtForm,
    rest: &'a [u8],
}

impl<'a> Iterator for RtpExtensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let &first = self.rest.first()?;
            let (id, start, len) = match self.form {
                ExtForm::None => return None,
                ExtForm::OneByte => {
                    //  0 1 2 3 4 5 6 7
                    // +-+-+-+-+-+-+-+-+
                    // |  ID   |  len  |   body is len+1 bytes (RFC 8285 §4.2)
                    // +-+-+-+-+-+-+-+-+
                    let id = first >> 4;
                    if id == EXT_ONE_BYTE_STOP_ID {
                        self.rest = &[];
                        return None;
                    }
                    (id, 1, usize::from(first & 0x0f) + 1)
                }
                ExtForm::TwoByte => {
                    // |      ID       |    length     |  body is length bytes (RFC 8285 §4.3)
                    let len = if first == 0 { 0 } else { usize::from(*self.rest.get(1)?) };
                    (first, 2, len)
                }
            };
            if id == 0 {
                // Padding byte (value 0) between or after elements.
                self.rest = self.rest.get(1..).unwrap_or(&[]);
                continue;
            }
            let Some(body) = self.rest.get(start..start + len) else {
                self.rest = &[];
                return None;
            };
            self.rest = self.rest.get(start + len..).unwrap_or(&[]);
            return Some((id, body));
        }
    }
}

/// RFC 5450 §2 transmission time offset extension value: a 24-bit signed count of RTP
/// clock ticks between the packet's capture instant (its RTP timestamp) and its send
/// time. `None` unless the element is exactly 3 bytes.
pub fn transmission_offset(ext: &[u8]) -> Option<i32> {
    let [b0, b1, b2]: [u8; 3] = ext.try_into().ok()?;
    Some(i32::from_be_bytes([b0, b1, b2, 0]) >> 8) // arithmetic shift sign-extends
}

/// RTP/RTCP demultiplexing on a shared port (RFC 5761 §4): with the marker
/// bit masked off, RTCP packet types 192..=223 map to 64..=95, a range RTP
/// payload types must avoid. Also requires version 2.
pub fn is_rtcp(buf: &[u8]) -> bool {
    match (buf.first(), buf.get(1)) {
        (Some(&b0), Some(&b1)) => b0 >> 6 == RTP_VERSION && matches!(b1 & 0x7f, 64..=95),
        _ => false,
    }
}

/// Fixed-header fields for [`write_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

/// Append an RTP header (no CSRCs, no padding) to `out`, with one-byte
/// extensions (RFC 8285 §4.2) when `exts` is non-empty. The caller appends the
/// payload. On error nothing is written.
pub fn write_header(h: &RtpHeader, exts: &[(u8, &[u8])], out: &mut Vec<u8>) -> Result<(), RtpError> {
    if h.pt > 0x7f {
        return Err(RtpError::BadPayloadType { pt: h.pt });
    }
    let mut ext_len = 0usize;
    for &(id, body) in exts {
        if !(1..=14).contains(&id) || body.is_empty() || body.len() > EXT_ONE_BYTE_MAX_LEN {
            return Err(RtpError::BadExtension { id, len: body.len() });
        }
        ext_len += 1 + body.len();
    }
    let ext_words = ext_len.div_ceil(4);
    let Ok(ext_words16) = u16::try_from(ext_words) else {
        return Err(RtpError::BadExtension { id: 0, len: ext_len });
    };
    let x = if exts.is_empty() { 0 } else { 0x10 };
    out.push((RTP_VERSION << 6) | x);
    out.push(if h.marker { 0x80 } else { 0 } | h.pt);
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.ts.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    if !exts.is_empty() {
        out.extend_from_slice(&EXT_PROFILE_ONE_BYTE.to_be_bytes());
        out.extend_from_slice(&ext_words16.to_be_bytes());
        for &(id, body) in exts {
            // len - 1 fits 4 bits: checked above.
            out.push((id << 4) | ((body.len() - 1) as u8 & 0x0f));
            out.extend_from_slice(body);
        }
        out.resize(out.len() + (ext_words * 4 - ext_len), 0);
    }
    Ok(())
}

/// Big-endian u16 at `at`, or 0 past the end (callers check lengths first).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// Big-endian u32 at `at`, or 0 past the end.
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn transmission_offset_is_24_bit_signed() {
        assert_eq!(transmission_offset(&[0x00, 0x0c, 0x4e]), Some(3150));
        assert_eq!(transmission_offset(&[0x7f, 0xff, 0xff]), Some(0x7f_ffff));
        assert_eq!(transmission_offset(&[0xff, 0xff, 0xff]), Some(-1));
        assert_eq!(transmission_offset(&[0x80, 0x00, 0x00]), Some(-0x80_0000));
        assert_eq!(transmission_offset(&[0, 0]), None);
        assert_eq!(transmission_offset(&[0, 0, 0, 0]), None);
    }

    fn hdr(seq: u16) -> RtpHeader {
        RtpHeader { marker: true, pt: 96, seq, ts: 0x1234_5678, ssrc: 0xdead_beef }
    }

    #[test]
    fn parses_plain_packet() {
        let mut b = Vec::new();
        write_header(&hdr(7), &[], &mut b).unwrap();
        b.extend_from_slice(b"hello");
        let p = parse(&b).unwrap();
        assert!(p.marker);
        assert_eq!((p.pt, p.seq, p.ts, p.ssrc), (96, 7, 0x1234_5678, 0xdead_beef));
        assert_eq!(p.payload, b"hello");
        assert_eq!(p.ext_profile, None);
        assert_eq!(p.padding, 0);
        assert!(!p.is_padding_only());
        assert!(!is_rtcp(&b));
    }

    #[test]
    fn one_byte_extensions_round_trip() {
        let mut b = Vec::new();
        let exts: [(u8, &[u8]); 3] = [(1, &[0xAA]), (3, &[1, 2, 3]), (14, &[9; 16])];
        write_header(&hdr(1), &exts, &mut b).unwrap();
        b.extend_from_slice(b"pl");
        let p = parse(&b).unwrap();
        assert_eq!(p.ext_profile, Some(EXT_PROFILE_ONE_BYTE));
        assert_eq!(p.ext.len() % 4, 0);
        assert_eq!(p.extension(1), Some(&[0xAA][..]));
        assert_eq!(p.extension(3), Some(&[1, 2, 3][..]));
        assert_eq!(p.extension(14), Some(&[9; 16][..]));
        assert_eq!(p.extension(2), None);
        assert_eq!(p.extension(0), None);
        assert_eq!(p.extensions().count(), 3);
        assert_eq!(p.payload, b"pl");
    }

    #[test]
    fn one_byte_extension_padding_and_stop_id() {
        // id1 len1 [5], pad, pad, id2 len2 [6 7], id15 (stop), then garbage that looks like id 4.
        let ext = [0x10, 5, 0, 0, 0x21, 6, 7, 0xF0, 0x40, 8, 0, 0];
        let mut b = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0, 3];
        b.extend_from_slice(&ext);
        b.push(0x55);
        let p = parse(&b).unwrap();
        let all: Vec<_> = p.extensions().collect();
        assert_eq!(all, vec![(1, &[5][..]), (2, &[6, 7][..])]);
        assert_eq!(p.extension(4), None);
        assert_eq!(p.payload, &[0x55]);
    }

    #[test]
    fn two_byte_extensions() {
        // profile 0x1000 (appbits 0): id 1 len 0, pad, id 20 len 3, id 255 len 1, pad to word.
        let ext = [1, 0, 0, 20, 3, 0xA, 0xB, 0xC, 255, 1, 0x77, 0];
        let mut b = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x00, 0, 3];
        b.extend_from_slice(&ext);
        let p = parse(&b).unwrap();
        assert_eq!(p.extension(1), Some(&[][..]));
        assert_eq!(p.extension(20), Some(&[0xA, 0xB, 0xC][..]));
        assert_eq!(p.extension(255), Some(&[0x77][..]));
        assert_eq!(p.extensions().count(), 3);
        assert!(p.is_padding_only());
        // appbits are allowed in the low nibble.
        b[13] = 0x05;
        assert_eq!(parse(&b).unwrap().extension(20), Some(&[0xA, 0xB, 0xC][..]));
        // A different profile is exposed raw, not interpreted.
        b[12] = 0x20;
        let p = parse(&b).unwrap();
        assert_eq!(p.ext.len(), 12);
        assert_eq!(p.extension(20), None);
    }

    #[test]
    fn truncated_extension_element_stops_iteration() {
        // one-byte element claims 4 bytes but only 3 remain in the block.
        let mut b = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0, 1];
        b.extend_from_slice(&[0x13, 1, 2, 3]);
        let p = parse(&b).unwrap();
        assert_eq!(p.extensions().count(), 0);
    }

    #[test]
    fn padding_only_packet() {
        // P bit set, 4 bytes of padding, count 4.
        let b = [0xA0, 96, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 4];
        let p = parse(&b).unwrap();
        assert_eq!(p.padding, 4);
        assert!(p.is_padding_only());
        // Padding after payload.
        let b = [0xA0, 96, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0xAB, 0xCD, 0, 2];
        let p = parse(&b).unwrap();
        assert_eq!(p.payload, &[0xAB, 0xCD]);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort { len: 11 }));
        let mut b = [0u8; 12];
        b[0] = 0x40;
        assert_eq!(parse(&b), Err(RtpError::BadVersion { version: 1 }));
        b[0] = 0x82; // two CSRCs, none present
        assert_eq!(parse(&b), Err(RtpError::CsrcOverrun { count: 2 }));
        b[0] = 0x90; // X without extension header
        assert_eq!(parse(&b), Err(RtpError::ExtensionOverrun));
        let pad0 = [0xA0, 96, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0];
        assert_eq!(parse(&pad0), Err(RtpError::BadPadding { count: 0 }));
        let pad_big = [0xA0, 96, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3];
        assert_eq!(parse(&pad_big), Err(RtpError::BadPadding { count: 3 }));
        let no_payload_pad = [0xA0, 96, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(parse(&no_payload_pad), Err(RtpError::BadPadding { count: 0 }));
    }

    #[test]
    fn csrcs() {
        let b = [0x82, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 6, 0xFF];
        let p = parse(&b).unwrap();
        assert_eq!(p.csrc_count, 2);
        assert_eq!((p.csrc(0), p.csrc(1), p.csrc(2)), (Some(5), Some(6), None));
        assert_eq!(p.payload, &[0xFF]);
    }

    #[test]
    fn writer_rejects_unencodable() {
        let mut b = Vec::new();
        assert!(write_header(&RtpHeader { pt: 128, ..hdr(1) }, &[], &mut b).is_err());
        assert!(write_header(&hdr(1), &[(0, &[1])], &mut b).is_err());
        assert!(write_header(&hdr(1), &[(15, &[1])], &mut b).is_err());
        assert!(write_header(&hdr(1), &[(1, &[])], &mut b).is_err());
        assert!(write_header(&hdr(1), &[(1, &[0; 17])], &mut b).is_err());
        assert!(b.is_empty());
    }

    #[test]
    fn demux_rfc5761() {
        for pt in 192u8..=223 {
            assert!(is_rtcp(&[0x80, pt, 0, 1]));
        }
        assert!(!is_rtcp(&[0x80, 191]));
        assert!(!is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(!is_rtcp(&[0x80, 96 | 0x80]));
        assert!(!is_rtcp(&[0x00, 200]));
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn no_panic_on_any_prefix_or_noise() {
        let mut b = Vec::new();
        write_header(&hdr(3), &[(2, &[1, 2]), (5, &[3; 7])], &mut b).unwrap();
        b.extend_from_slice(&[1, 2, 3, 4, 5, 3]);
        b[0] |= 0x20;
        for n in 0..=b.len() {
            if let Ok(p) = parse(&b[..n]) {
                let _ = p.extensions().count();
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut buf = [0u8; 40];
            for byte in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            buf[0] = (buf[0] & 0x3f) | 0x80;
            let len = (x >> 8) as usize % 41;
            if let Ok(p) = parse(&buf[..len]) {
                let _ = p.extensions().count();
                let _ = p.extension(3);
            }
            let _ = is_rtcp(&buf[..len]);
        }
    }
}
