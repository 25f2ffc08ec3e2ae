//! STUN messages (RFC 5389, RFC 8489) as ICE uses them: a borrowing parser and a writer.
//!
//! Implemented:
//! - `parse`: header and attribute walk of one datagram (§5, §6, §14 of RFC 8489), with
//!   accessors for USERNAME, PRIORITY, USE-CANDIDATE, ICE-CONTROLLING, ICE-CONTROLLED
//!   (RFC 8445 §16.1), XOR-MAPPED-ADDRESS, ERROR-CODE, SOFTWARE, MESSAGE-INTEGRITY and
//!   FINGERPRINT, and a generic iterator over every attribute.
//! - `StunMessage::verify_integrity` (HMAC-SHA1, RFC 5389 §15.4) and
//!   `StunMessage::verify_fingerprint` (CRC-32 ^ 0x5354554e, §15.5).
//! - `StunWriter`: appends one message to a caller-owned `Vec<u8>`; binding success,
//!   error and request shortcuts; MESSAGE-INTEGRITY then FINGERPRINT written last.
//! - `is_stun`: the RFC 7983 demultiplexing test.
//!
//! Deliberately not implemented: long-term credentials (REALM, NONCE, USERHASH, password
//! algorithms), MESSAGE-INTEGRITY-SHA256, MAPPED-ADDRESS of RFC 3489 clients, STUN over
//! TCP framing, retransmission timers (an ICE-lite server never sends requests), and
//! ALTERNATE-SERVER. Such attributes still parse as generic attributes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Fixed value of bytes 4..8 of every message. RFC 5389 §6.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Bytes of the fixed header. RFC 5389 §6.
pub const HEADER_LEN: usize = 20;
/// Largest message `StunWriter` produces: the IPv6 minimum MTU (1280) less 40 bytes of IPv6
/// header and 8 of UDP, so an answer never fragments (RFC 8489 §6.1). Longer writes fail.
pub const MAX_MESSAGE: usize = 1232;
/// XORed into the CRC-32 of FINGERPRINT ("STUN"). RFC 5389 §15.5.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Length of the HMAC-SHA1 value of MESSAGE-INTEGRITY. RFC 5389 §15.4.
const INTEGRITY_LEN: usize = 20;
/// USERNAME must be shorter than 513 bytes. RFC 5389 §15.3.
const MAX_USERNAME: usize = 512;
/// Reason phrase and SOFTWARE: fewer than 128 characters, up to 763 bytes. RFC 5389 §15.6, §15.10.
const MAX_TEXT: usize = 763;
/// How many unknown comprehension-required attribute types a message remembers (for a 420
/// answer); later ones are still detected, only not listed.
pub const MAX_UNKNOWN: usize = 4;

// Attribute types. RFC 5389 §18.2, RFC 8445 §16.1.
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
pub const ATTR_USERNAME: u16 = 0x0006;
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ATTR_ERROR_CODE: u16 = 0x0009;
pub const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const ATTR_PRIORITY: u16 = 0x0024; // RFC 8445 §16.1
pub const ATTR_USE_CANDIDATE: u16 = 0x0025; // RFC 8445 §16.1
pub const ATTR_SOFTWARE: u16 = 0x8022;
pub const ATTR_FINGERPRINT: u16 = 0x8028;
pub const ATTR_ICE_CONTROLLED: u16 = 0x8029; // RFC 8445 §16.1
pub const ATTR_ICE_CONTROLLING: u16 = 0x802A; // RFC 8445 §16.1

/// Address families of (XOR-)MAPPED-ADDRESS. RFC 5389 §15.1.
const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// Problems with a STUN message, parsed or being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Fewer than 20 bytes.
    TooShort,
    /// The top two bits are not zero or the magic cookie is wrong (not STUN, or RFC 3489).
    NotStun,
    /// Message Length is not a multiple of 4. RFC 5389 §6.
    UnalignedLength,
    /// Message Length does not match the datagram size; the value is Message Length.
    LengthMismatch(u16),
    /// An attribute runs past the end of the message; the value is its type.
    AttributeOverrun(u16),
    /// A fixed-size attribute has the wrong length; the value is its type.
    BadAttributeLength(u16),
    /// An attribute follows FINGERPRINT, which must be last. RFC 5389 §15.5.
    AfterFingerprint,
    /// Writer: the message would exceed `MAX_MESSAGE` bytes.
    TooLong,
    /// Writer: a value is over its limit; the value is the attribute type.
    ValueTooLong(u16),
    /// Writer: the method does not fit in 12 bits.
    BadMethod(u16),
    /// Writer: an ERROR-CODE outside 300..=699. RFC 5389 §15.6.
    BadErrorCode(u16),
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::TooShort => f.write_str("STUN message shorter than the 20-byte header"),
            StunError::NotStun => f.write_str("not a STUN message (leading bits or magic cookie)"),
            StunError::UnalignedLength => f.write_str("STUN message length not a multiple of 4"),
            StunError::LengthMismatch(n) => write!(f, "STUN message length {n} does not match the datagram"),
            StunError::AttributeOverrun(t) => write!(f, "STUN attribute 0x{t:04x} runs past the message end"),
            StunError::BadAttributeLength(t) => write!(f, "STUN attribute 0x{t:04x} has a wrong length"),
            StunError::AfterFingerprint => f.write_str("STUN attribute after FINGERPRINT"),
            StunError::TooLong => write!(f, "STUN message would exceed {MAX_MESSAGE} bytes"),
            StunError::ValueTooLong(t) => write!(f, "STUN attribute 0x{t:04x} value too long"),
            StunError::BadMethod(m) => write!(f, "STUN method 0x{m:x} does not fit in 12 bits"),
            StunError::BadErrorCode(c) => write!(f, "STUN error code {c} outside 300..=699"),
        }
    }
}

impl std::error::Error for StunError {}

/// The two class bits of the message type. RFC 5389 §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StunClass {
    Request,
    Indication,
    Success,
    Error,
}

impl StunClass {
    fn bits(self) -> u16 {
        match self {
            StunClass::Request => 0b00,
            StunClass::Indication => 0b01,
            StunClass::Success => 0b10,
            StunClass::Error => 0b11,
        }
    }
}

/// The 12-bit STUN method. RFC 5389 §18.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StunMethod(pub u16);

impl StunMethod {
    /// The only method ICE uses. RFC 5389 §18.1.
    pub const BINDING: StunMethod = StunMethod(0x001);
}

//  Message type (RFC 5389 §6): class bits C1 C0 interleaved with method bits M11..M0.
//
//   13 12 11 10  9  8  7  6  5  4  3  2  1  0
//  +--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//  |M11  ..  M7|C1|M6 .. M4|C0|M3   ..    M0|
//  +--+--+--+--+--+--+--+--+--+--+--+--+--+--+
fn decode_type(t: u16) -> (StunClass, StunMethod) {
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0b00 => StunClass::Request,
        0b01 => StunClass::Indication,
        0b10 => StunClass::Success,
        _ => StunClass::Error,
    };
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    (class, StunMethod(method))
}

fn encode_type(class: StunClass, method: StunMethod) -> u16 {
    let m = method.0;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// True if `buf` looks like a STUN message: the first byte is 0..=3 (RFC 7983 §7) and the
/// magic cookie is in place (RFC 5389 §6). Cheap; `parse` does the real checks.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf.first().is_some_and(|b| *b <= 3)
        && buf.get(4..8) == Some(&MAGIC_COOKIE.to_be_bytes()[..])
}

/// A parsed STUN message borrowing the datagram it came from.
///
/// Only the first instance of each attribute counts (RFC 8489 §14); attributes after
/// MESSAGE-INTEGRITY other than FINGERPRINT are ignored (RFC 5389 §15.4).
#[derive(Debug, Clone)]
pub struct StunMessage<'a> {
    raw: &'a [u8],
    class: StunClass,
    method: StunMethod,
    transaction_id: [u8; 12],
    username: Option<&'a [u8]>,
    priority: Option<u32>,
    use_candidate: bool,
    ice_controlling: Option<u64>,
    ice_controlled: Option<u64>,
    xor_mapped: Option<&'a [u8]>,
    error_code: Option<&'a [u8]>,
    software: Option<&'a [u8]>,
    /// Offset of the MESSAGE-INTEGRITY attribute header in `raw`.
    integrity_at: Option<usize>,
    /// Offset of the FINGERPRINT attribute header in `raw`.
    fingerprint_at: Option<usize>,
    unknown: [u16; MAX_UNKNOWN],
    unknown_len: usize,
    has_unknown: bool,
}

/// Parse one STUN message that fills the whole of `buf` (one UDP datagram).
///
/// ```text
///   0                   1                   2                   3
///   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |0 0|     Message Type (14)     |   Message Length (after hdr)  |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |                   Magic Cookie 0x2112A442                     |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |                  Transaction ID (96 bits)                     |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |   Attribute Type (16)         |   Attribute Length (16)       |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |   Value, padded to a multiple of 4 bytes ...                  |
/// ```
pub fn parse(buf: &[u8]) -> Result<StunMessage<'_>, StunError> {
    let header = buf.get(..HEADER_LEN).ok_or(StunError::TooShort)?;
    let (Some(&[t0, t1]), Some(&[l0, l1]), Some(cookie), Some(tid)) =
        (header.get(0..2), header.get(2..4), header.get(4..8), header.get(8..20))
    else {
        return Err(StunError::TooShort);
    };
    let msg_type = u16::from_be_bytes([t0, t1]);
    if msg_type & 0xC000 != 0 || cookie != MAGIC_COOKIE.to_be_bytes() {
        return Err(StunError::NotStun);
    }
    let length = u16::from_be_bytes([l0, l1]);
    if length % 4 != 0 {
        return Err(StunError::UnalignedLength);
    }
    if usize::from(length) + HEADER_LEN != buf.len() {
        return Err(StunError::LengthMismatch(length));
    }
    let (class, method) = decode_type(msg_type);
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(tid);
    let mut msg = StunMessage {
        raw: buf,
        class,
        method,
        transaction_id,
        username: None,
        priority: None,
        use_candidate: false,
        ice_controlling: None,
        ice_controlled: None,
        xor_mapped: None,
        error_code: None,
        software: None,
        integrity_at: None,
        fingerprint_at: None,
        unknown: [0; MAX_UNKNOWN],
        unknown_len: 0,
        has_unknown: false,
    };
    let mut seen = 0u16; // bit per known attribute: first occurrence wins
    for item in (AttrWalk { raw: buf, pos: HEADER_LEN }) {
        let (at, typ, value) = item?;
        if msg.fingerprint_at.is_some() {
            return Err(StunError::AfterFingerprint);
        }
        if typ == ATTR_FINGERPRINT {
            if value.len() != 4 {
                return Err(StunError::BadAttributeLength(typ));
            }
            msg.fingerprint_at = Some(at);
            continue;
        }
        if msg.integrity_at.is_some() {
            continue; // RFC 5389 §15.4: ignored after MESSAGE-INTEGRITY
        }
        let bit = match typ {
            ATTR_USERNAME => 1 << 0,
            ATTR_PRIORITY => 1 << 1,
            ATTR_USE_CANDIDATE => 1 << 2,
            ATTR_ICE_CONTROLLING => 1 << 3,
            ATTR_ICE_CONTROLLED => 1 << 4,
            ATTR_XOR_MAPPED_ADDRESS => 1 << 5,
            ATTR_ERROR_CODE => 1 << 6,
            ATTR_SOFTWARE => 1 << 7,
            ATTR_MESSAGE_INTEGRITY => 1 << 8,
            _ => 0,
        };
        if bit == 0 {
            msg.note_other(typ);
            continue;
        }
        if seen & bit != 0 {
            continue;
        }
        seen |= bit;
        match typ {
            ATTR_USERNAME => msg.username = Some(value),
            ATTR_PRIORITY => msg.priority = Some(u32::from_be_bytes(fixed(typ, value)?)),
            ATTR_USE_CANDIDATE => {
                if !value.is_empty() {
                    return Err(StunError::BadAttributeLength(typ));
                }
                msg.use_candidate = true;
            }
            ATTR_ICE_CONTROLLING => msg.ice_controlling = Some(u64::from_be_bytes(fixed(typ, value)?)),
            ATTR_ICE_CONTROLLED => msg.ice_controlled = Some(u64::from_be_bytes(fixed(typ, value)?)),
            ATTR_XOR_MAPPED_ADDRESS => msg.xor_mapped = Some(value),
            ATTR_ERROR_CODE => {
                if value.len() < 4 {
                    return Err(StunError::BadAttributeLength(typ));
                }
                msg.error_code = Some(value);
            }
            ATTR_SOFTWARE => msg.software = Some(value),
            _ => {
                // ATTR_MESSAGE_INTEGRITY
                if value.len() != INTEGRITY_LEN {
                    return Err(StunError::BadAttributeLength(typ));
                }
                msg.integrity_at = Some(at);
            }
        }
    }
    Ok(msg)
}

/// Copy a fixed-size attribute value, or report its wrong length.
fn fixed<const N: usize>(typ: u16, value: &[u8]) -> Result<[u8; N], StunError> {
    <[u8; N]>::try_from(value).map_err(|_| StunError::BadAttributeLength(typ))
}

/// Walks the attributes of a message: `(offset, type, value)` without padding; after a
/// malformed attribute it yields one error and stops.
#[derive(Debug, Clone)]
struct AttrWalk<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for AttrWalk<'a> {
    /// (offset of the attribute header, type, value)
    type Item = Result<(usize, u16, &'a [u8]), StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.raw.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let at = self.pos;
        let (Some(&[t0, t1]), Some(&[l0, l1])) = (rest.get(0..2), rest.get(2..4)) else {
            self.pos = self.raw.len();
            return Some(Err(StunError::AttributeOverrun(0)));
        };
        let typ = u16::from_be_bytes([t0, t1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let padded = (len + 3) & !3;
        let (Some(value), Some(_)) = (rest.get(4..4 + len), rest.get(4..4 + padded)) else {
            self.pos = self.raw.len();
            return Some(Err(StunError::AttributeOverrun(typ)));
        };
        self.pos = at + 4 + padded;
        Some(Ok((at, typ, value)))
    }
}

impl<'a> StunMessage<'a> {
    /// The whole message as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn class(&self) -> StunClass {
        self.class
    }

    pub fn method(&self) -> StunMethod {
        self.method
    }

    pub fn transaction_id(&self) -> [u8; 12] {
        self.transaction_id
    }

    /// Every attribute in order, `(type, value)`, including unknown ones and those after
    /// MESSAGE-INTEGRITY. The message was already validated, so no item is an error.
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        AttrWalk { raw: self.raw, pos: HEADER_LEN }.filter_map(|r| r.ok()).map(|(_, t, v)| (t, v))
    }

    /// USERNAME as text; `None` when absent or not UTF-8. RFC 5389 §15.3.
    pub fn username(&self) -> Option<&'a str> {
        self.username.and_then(|u| std::str::from_utf8(u).ok())
    }

    /// PRIORITY of the candidate the check came from. RFC 8445 §7.1.1.
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// USE-CANDIDATE present. RFC 8445 §7.1.2.
    pub fn use_candidate(&self) -> bool {
        self.use_candidate
    }

    /// ICE-CONTROLLING tiebreaker. RFC 8445 §7.1.3.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.ice_controlling
    }

    /// ICE-CONTROLLED tiebreaker. RFC 8445 §7.1.3.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.ice_controlled
    }

    /// SOFTWARE text, `None` when absent or not UTF-8. RFC 5389 §15.10.
    pub fn software(&self) -> Option<&'a str> {
        self.software.and_then(|s| std::str::from_utf8(s).ok())
    }

    /// ERROR-CODE as (code, reason). A reason that is not UTF-8 reads as "". RFC 5389 §15.6.
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.error_code?;
        let class = u16::from(*v.get(2)? & 0x07);
        let number = u16::from(*v.get(3)?);
        let reason = v.get(4..).and_then(|r| std::str::from_utf8(r).ok()).unwrap_or("");
        Some((class * 100 + number, reason))
    }

    /// XOR-MAPPED-ADDRESS decoded; `None` when absent or malformed. RFC 5389 §15.2.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let v = self.xor_mapped?;
        let family = *v.get(1)?;
        let xport = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
        let port = xport ^ (MAGIC_COOKIE >> 16) as u16;
        let mask = xor_mask(&self.transaction_id);
        match (family, v.len()) {
            (FAMILY_IPV4, 8) => {
                let mut a = [0u8; 4];
                for ((o, x), m) in a.iter_mut().zip(v.get(4..8)?).zip(mask.iter()) {
                    *o = x ^ m;
                }
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
            }
            (FAMILY_IPV6, 20) => {
                let mut a = [0u8; 16];
                for ((o, x), m) in a.iter_mut().zip(v.get(4..20)?).zip(mask.iter()) {
                    *o = x ^ m;
                }
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
            }
            _ => None,
        }
    }

    pub fn has_message_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// The FINGERPRINT value as sent, if present.
    pub fn fingerprint(&self) -> Option<u32> {
        let at = self.fingerprint_at?;
        let v = self.raw.get(at + 4..at + 8)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// First (up to `MAX_UNKNOWN`) comprehension-required attribute types (0x0000..=0x7FFF)
    /// this parser does not know, for a 420 answer. RFC 5389 §7.3.1.
    pub fn unknown_required(&self) -> &[u16] {
        self.unknown.get(..self.unknown_len).unwrap_or(&[])
    }

    /// True if any unknown comprehension-required attribute was present (even beyond
    /// `MAX_UNKNOWN`).
    pub fn has_unknown_required(&self) -> bool {
        self.has_unknown
    }

    /// Check MESSAGE-INTEGRITY with `key` (for short-term credentials, the password).
    ///
    /// The HMAC-SHA1 covers the message up to the attribute, with the header's length
    /// field set as if MESSAGE-INTEGRITY were the last attribute. RFC 5389 §15.4.
    /// Compared in constant time. False when the attribute is absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else { return false };
        let (Some(head), Some(body), Some(expected)) =
            (self.raw.get(0..2), self.raw.get(4..at), self.raw.get(at + 4..at + 4 + INTEGRITY_LEN))
        else {
            return false;
        };
        let Some(length) = at.checked_sub(HEADER_LEN).map(|n| n + 4 + INTEGRITY_LEN) else {
            return false;
        };
        let Ok(length) = u16::try_from(length) else { return false };
        let Ok(mut mac) = HmacSha1::new_from_slice(key) else { return false };
        mac.update(head);
        mac.update(&length.to_be_bytes());
        mac.update(body);
        mac.verify_slice(expected).is_ok()
    }

    /// Check FINGERPRINT: CRC-32 of everything before it, XOR 0x5354554e. RFC 5389 §15.5.
    /// False when the attribute is absent.
    pub fn verify_fingerprint(&self) -> bool {
        let (Some(at), Some(sent)) = (self.fingerprint_at, self.fingerprint()) else { return false };
        let Some(covered) = self.raw.get(..at) else { return false };
        crc32(covered) ^ FINGERPRINT_XOR == sent
    }

    fn note_other(&mut self, typ: u16) {
        if typ >= 0x8000 {
            return; // comprehension-optional. RFC 5389 §15
        }
        self.has_unknown = true;
        if let Some(slot) = self.unknown.get_mut(self.unknown_len) {
            *slot = typ;
            self.unknown_len += 1;
        }
    }
}

/// Bytes XORed into an address: the magic cookie then the transaction id. RFC 5389 §15.2.
fn xor_mask(tid: &[u8; 12]) -> [u8; 16] {
    let mut m = [0u8; 16];
    for (o, b) in m.iter_mut().zip(MAGIC_COOKIE.to_be_bytes().iter().chain(tid.iter())) {
        *o = *b;
    }
    m
}

/// CRC-32 (ISO-HDLC: reflected polynomial 0xEDB88320, init and final XOR all ones), the
/// one FINGERPRINT uses (RFC 5389 §15.5 via ITU-T V.42). Table computed at compile time.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        let idx = ((crc ^ u32::from(*b)) & 0xFF) as usize;
        crc = (crc >> 8) ^ CRC_TABLE.get(idx).copied().unwrap_or(0);
    }
    !crc
}

// Evaluated at compile time: an out-of-range index would fail the build, never panic at run time.
#[allow(clippy::indexing_slicing)]
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Standard reason phrase for the error codes we send. RFC 5389 §15.6, RFC 8445 §16.1.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        420 => "Unknown Attribute",
        438 => "Stale Nonce",
        487 => "Role Conflict",
        500 => "Server Error",
        _ => "Error",
    }
}

/// ICE role attribute of a binding request. RFC 8445 §7.1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunRole {
    /// ICE-CONTROLLING with this tiebreaker.
    Controlling(u64),
    /// ICE-CONTROLLED with this tiebreaker.
    Controlled(u64),
}

/// What an ICE connectivity check carries (RFC 8445 §7.1), for `StunWriter::binding_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunBindingRequest<'s> {
    /// "RFRAG:LFRAG": the receiver's ufrag, a colon, the sender's. RFC 8445 §7.2.2.
    pub username: &'s str,
    pub priority: u32,
    pub role: StunRole,
    pub use_candidate: bool,
}

/// Appends one STUN message to a caller-owned buffer.
///
/// `new` writes the header; attribute methods append in call order; `finish` appends
/// MESSAGE-INTEGRITY and FINGERPRINT (in that order, RFC 5389 §15.4/§15.5) and fixes the
/// length. An error is sticky: later calls do nothing and `finish` removes the partial
/// message from the buffer and returns the first error.
#[derive(Debug)]
pub struct StunWriter<'b> {
    out: &'b mut Vec<u8>,
    start: usize,
    pad: u8,
    transaction_id: [u8; 12],
    error: Option<StunError>,
}

impl<'b> StunWriter<'b> {
    /// Start a message at the end of `out` (existing bytes are kept).
    pub fn new(out: &'b mut Vec<u8>, class: StunClass, method: StunMethod, transaction_id: [u8; 12]) -> Self {
        let start = out.len();
        let error = (method.0 > 0x0FFF).then_some(StunError::BadMethod(method.0));
        out.extend_from_slice(&encode_type(class, method).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&transaction_id);
        StunWriter { out, start, pad: 0, transaction_id, error }
    }

    /// Byte used to pad values to 4 bytes (default 0, RFC 8489 §14). Receivers ignore it;
    /// RFC 5769 pads with 0x20, so reproducing its vectors needs this.
    pub fn padding(&mut self, byte: u8) -> &mut Self {
        self.pad = byte;
        self
    }

    /// Append any attribute. The value is padded; its type is not checked.
    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let padded = (value.len() + 3) & !3;
        let Ok(len) = u16::try_from(value.len()) else {
            self.error = Some(StunError::ValueTooLong(typ));
            return self;
        };
        if self.body_len() + 4 + padded > MAX_MESSAGE - HEADER_LEN {
            self.error = Some(StunError::TooLong);
            return self;
        }
        self.out.extend_from_slice(&typ.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(value);
        self.out.resize(self.out.len() + (padded - value.len()), self.pad);
        self
    }

    /// SOFTWARE. RFC 5389 §15.10.
    pub fn software(&mut self, text: &str) -> &mut Self {
        self.text(ATTR_SOFTWARE, text, MAX_TEXT)
    }

    /// USERNAME. RFC 5389 §15.3.
    pub fn username(&mut self, name: &str) -> &mut Self {
        self.text(ATTR_USERNAME, name, MAX_USERNAME)
    }

    /// PRIORITY. RFC 8445 §7.1.1.
    pub fn priority(&mut self, priority: u32) -> &mut Self {
        self.attribute(ATTR_PRIORITY, &priority.to_be_bytes())
    }

    /// ICE-CONTROLLING. RFC 8445 §7.1.3.
    pub fn ice_controlling(&mut self, tiebreaker: u64) -> &mut Self {
        self.attribute(ATTR_ICE_CONTROLLING, &tiebreaker.to_be_bytes())
    }

    /// ICE-CONTROLLED. RFC 8445 §7.1.3.
    pub fn ice_controlled(&mut self, tiebreaker: u64) -> &mut Self {
        self.attribute(ATTR_ICE_CONTROLLED, &tiebreaker.to_be_bytes())
    }

    /// USE-CANDIDATE (empty value). RFC 8445 §7.1.2.
    pub fn use_candidate(&mut self) -> &mut Self {
        self.attribute(ATTR_USE_CANDIDATE, &[])
    }

    /// XOR-MAPPED-ADDRESS of `addr`. RFC 5389 §15.2:
    ///
    /// ```text
    ///  |0 0 0 0 0 0 0 0|    Family     |         X-Port                |
    ///  |                X-Address (32 bits or 128 bits)                |
    /// ```
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        let mask = xor_mask(&self.transaction_id);
        let xport = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        // Family, and the address in the first 4 or 16 bytes of `ip`.
        let (family, ip, len) = match addr.ip() {
            IpAddr::V4(v4) => {
                let mut ip = [0u8; 16];
                for (o, b) in ip.iter_mut().zip(v4.octets()) {
                    *o = b;
                }
                (FAMILY_IPV4, ip, 8)
            }
            IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets(), 20),
        };
        let mut v = [0u8; 20];
        let [p0, p1] = xport.to_be_bytes();
        v[1] = family;
        v[2] = p0;
        v[3] = p1;
        for ((o, a), m) in v.iter_mut().skip(4).zip(ip.iter()).zip(mask.iter()) {
            *o = a ^ m;
        }
        self.attribute(ATTR_XOR_MAPPED_ADDRESS, v.get(..len).unwrap_or(&[]))
    }

    /// ERROR-CODE with `reason` (use `reason_phrase(code)` for the standard one). RFC 5389 §15.6:
    ///
    /// ```text
    ///  |           Reserved, should be 0         |Class|     Number    |
    ///  |      Reason Phrase (variable)                                ..
    /// ```
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        if !(300..=699).contains(&code) {
            if self.error.is_none() {
                self.error = Some(StunError::BadErrorCode(code));
            }
            return self;
        }
        if reason.len() > MAX_TEXT {
            if self.error.is_none() {
                self.error = Some(StunError::ValueTooLong(ATTR_ERROR_CODE));
            }
            return self;
        }
        let mut v = [0u8; 4 + MAX_TEXT];
        v[2] = (code / 100) as u8;
        v[3] = (code % 100) as u8;
        for (o, b) in v.iter_mut().skip(4).zip(reason.bytes()) {
            *o = b;
        }
        self.attribute(ATTR_ERROR_CODE, v.get(..4 + reason.len()).unwrap_or(&[]))
    }

    /// UNKNOWN-ATTRIBUTES listing `types` (at most `MAX_UNKNOWN` are written). RFC 5389 §15.9.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        let mut v = [0u8; 2 * MAX_UNKNOWN];
        let n = types.len().min(MAX_UNKNOWN);
        for (chunk, t) in v.chunks_exact_mut(2).zip(types.iter()) {
            chunk.copy_from_slice(&t.to_be_bytes());
        }
        self.attribute(ATTR_UNKNOWN_ATTRIBUTES, v.get(..2 * n).unwrap_or(&[]))
    }

    /// Append MESSAGE-INTEGRITY (if `integrity_key`) and FINGERPRINT (if `fingerprint`),
    /// set the final length, and return the message's size in bytes.
    pub fn finish(mut self, integrity_key: Option<&[u8]>, fingerprint: bool) -> Result<usize, StunError> {
        let extra = if integrity_key.is_some() { 4 + INTEGRITY_LEN } else { 0 } + if fingerprint { 8 } else { 0 };
        if self.error.is_none() && self.body_len() + extra > MAX_MESSAGE - HEADER_LEN {
            self.error = Some(StunError::TooLong);
        }
        if let Some(e) = self.error {
            self.out.truncate(self.start);
            return Err(e);
        }
        if let Some(key) = integrity_key {
            // The length counts MESSAGE-INTEGRITY while it is computed. RFC 5389 §15.4.
            self.set_length(self.body_len() + 4 + INTEGRITY_LEN);
            let Ok(mut mac) = HmacSha1::new_from_slice(key) else {
                self.out.truncate(self.start);
                return Err(StunError::ValueTooLong(ATTR_MESSAGE_INTEGRITY));
            };
            mac.update(self.out.get(self.start..).unwrap_or(&[]));
            let tag = mac.finalize().into_bytes();
            self.out.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
            self.out.extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
            self.out.extend_from_slice(&tag);
        }
        if fingerprint {
            // The length counts FINGERPRINT while the CRC is computed. RFC 5389 §15.5.
            self.set_length(self.body_len() + 8);
            let crc = crc32(self.out.get(self.start..).unwrap_or(&[])) ^ FINGERPRINT_XOR;
            self.out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
            self.out.extend_from_slice(&4u16.to_be_bytes());
            self.out.extend_from_slice(&crc.to_be_bytes());
        }
        self.set_length(self.body_len());
        Ok(self.out.len() - self.start)
    }

    /// Binding success response to `transaction_id` telling the client it was seen at
    /// `mapped`, with MESSAGE-INTEGRITY under `key` and FINGERPRINT. RFC 8445 §7.3.1.4.
    pub fn binding_success(
        out: &mut Vec<u8>,
        transaction_id: [u8; 12],
        mapped: SocketAddr,
        key: &[u8],
    ) -> Result<usize, StunError> {
        let mut w = StunWriter::new(out, StunClass::Success, StunMethod::BINDING, transaction_id);
        w.xor_mapped_address(mapped);
        w.finish(Some(key), true)
    }

    /// Error response with the standard reason phrase, MESSAGE-INTEGRITY when `key` is
    /// given (never for 400/401 caused by failed authentication, RFC 5389 §10.1.2), and
    /// FINGERPRINT. `unknown` is listed in UNKNOWN-ATTRIBUTES when `code` is 420.
    pub fn error_response(
        out: &mut Vec<u8>,
        method: StunMethod,
        transaction_id: [u8; 12],
        code: u16,
        unknown: &[u16],
        key: Option<&[u8]>,
    ) -> Result<usize, StunError> {
        let mut w = StunWriter::new(out, StunClass::Error, method, transaction_id);
        w.error_code(code, reason_phrase(code));
        if code == 420 {
            w.unknown_attributes(unknown);
        }
        w.finish(key, true)
    }

    /// ICE connectivity check (for our test client and load tool): USERNAME, PRIORITY,
    /// the role attribute, USE-CANDIDATE if asked, MESSAGE-INTEGRITY under `key` (the
    /// receiver's password) and FINGERPRINT. RFC 8445 §7.2.2.
    pub fn binding_request(
        out: &mut Vec<u8>,
        transaction_id: [u8; 12],
        req: &StunBindingRequest<'_>,
        key: &[u8],
    ) -> Result<usize, StunError> {
        let mut w = StunWriter::new(out, StunClass::Request, StunMethod::BINDING, transaction_id);
        w.username(req.username).priority(req.priority);
        match req.role {
            StunRole::Controlling(t) => w.ice_controlling(t),
            StunRole::Controlled(t) => w.ice_controlled(t),
        };
        if req.use_candidate {
            w.use_candidate();
        }
        w.finish(Some(key), true)
    }

    fn text(&mut self, typ: u16, text: &str, max: usize) -> &mut Self {
        if text.len() > max {
            if self.error.is_none() {
                self.error = Some(StunError::ValueTooLong(typ));
            }
            return self;
        }
        self.attribute(typ, text.as_bytes())
    }

    fn body_len(&self) -> usize {
        self.out.len().saturating_sub(self.start + HEADER_LEN)
    }

    fn set_length(&mut self, len: usize) {
        // Bounded by MAX_MESSAGE, so it fits in 16 bits.
        let bytes = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(field) = self.out.get_mut(self.start + 2..self.start + 4) {
            field.copy_from_slice(&bytes);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Hex as the RFC prints it (spaces, line breaks) to bytes.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    /// Deterministic xorshift64 for the no-panic loops.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// RFC 5769 test vectors, verbatim (Copyright (c) 2010 IETF Trust and the persons
    /// identified as the document authors). Padding of SOFTWARE and USERNAME is 0x20 on
    /// purpose in the RFC.
    mod vectors {
        /// §2.1 and §2.2/§2.3: the short-term password.
        pub const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
        pub const TRANSACTION_ID: &str = "b7 e7 a7 01 bc 34 d6 86 fa 87 df ae";

        /// §2.1 Sample Request: SOFTWARE "STUN test client", PRIORITY, ICE-CONTROLLED,
        /// USERNAME "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT.
        pub const REQUEST: &str = "
            00 01 00 58
            21 12 a4 42
            b7 e7 a7 01
            bc 34 d6 86
            fa 87 df ae
            80 22 00 10
            53 54 55 4e
            20 74 65 73
            74 20 63 6c
            69 65 6e 74
            00 24 00 04
            6e 00 01 ff
            80 29 00 08
            93 2f f9 b1
            51 26 3b 36
            00 06 00 09
            65 76 74 6a
            3a 68 36 76
            59 20 20 20
            00 08 00 14
            9a ea a7 0c
            bf d8 cb 56
            78 1e f2 b5
            b2 d3 f2 49
            c1 b5 71 a2
            80 28 00 04
            e5 7a 3b cf";

        /// §2.2 Sample IPv4 Response: SOFTWARE "test vector", XOR-MAPPED-ADDRESS
        /// 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT.
        pub const IPV4_RESPONSE: &str = "
            01 01 00 3c
            21 12 a4 42
            b7 e7 a7 01
            bc 34 d6 86
            fa 87 df ae
            80 22 00 0b
            74 65 73 74
            20 76 65 63
            74 6f 72 20
            00 20 00 08
            00 01 a1 47
            e1 12 a6 43
            00 08 00 14
            2b 91 f5 99
            fd 9e 90 c3
            8c 74 89 f9
            2a f9 ba 53
            f0 6b e7 d7
            80 28 00 04
            c0 7d 4c 96";

        /// §2.3 Sample IPv6 Response: XOR-MAPPED-ADDRESS
        /// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
        pub const IPV6_RESPONSE: &str = "
            01 01 00 48
            21 12 a4 42
            b7 e7 a7 01
            bc 34 d6 86
            fa 87 df ae
            80 22 00 0b
            74 65 73 74
            20 76 65 63
            74 6f 72 20
            00 20 00 14
            00 02 a1 47
            01 13 a9 fa
            a5 d3 f1 79
            bc 25 f4 b5
            be d2 b9 d9
            00 08 00 14
            a3 82 95 4e
            4b e6 7b f1
            17 84 c9 7c
            82 92 c2 75
            bf e3 ed 41
            80 28 00 04
            c8 fb 0b 4c";
    }

    fn tid() -> [u8; 12] {
        hex(vectors::TRANSACTION_ID).try_into().unwrap()
    }

    #[test]
    fn rfc5769_request_parses_and_verifies() {
        let buf = hex(vectors::REQUEST);
        assert!(is_stun(&buf));
        let m = parse(&buf).unwrap();
        assert_eq!(m.class(), StunClass::Request);
        assert_eq!(m.method(), StunMethod::BINDING);
        assert_eq!(m.transaction_id(), tid());
        assert_eq!(m.software(), Some("STUN test client"));
        assert_eq!(m.priority(), Some(0x6e00_01ff));
        assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
        assert_eq!(m.ice_controlling(), None);
        assert!(!m.use_candidate());
        assert_eq!(m.username(), Some("evtj:h6vY"));
        assert!(m.has_message_integrity());
        assert!(m.verify_integrity(vectors::PASSWORD.as_bytes()));
        assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
        assert_eq!(m.fingerprint(), Some(0xe57a_3bcf));
        assert!(m.verify_fingerprint());
        assert!(!m.has_unknown_required());
        let types: Vec<u16> = m.attributes().map(|(t, _)| t).collect();
        assert_eq!(
            types,
            [
                ATTR_SOFTWARE,
                ATTR_PRIORITY,
                ATTR_ICE_CONTROLLED,
                ATTR_USERNAME,
                ATTR_MESSAGE_INTEGRITY,
                ATTR_FINGERPRINT
            ]
        );
    }

    #[test]
    fn rfc5769_ipv4_response_parses_and_verifies() {
        let buf = hex(vectors::IPV4_RESPONSE);
        let m = parse(&buf).unwrap();
        assert_eq!(m.class(), StunClass::Success);
        assert_eq!(m.method(), StunMethod::BINDING);
        assert_eq!(m.software(), Some("test vector"));
        assert_eq!(m.xor_mapped_address(), Some("192.0.2.1:32853".parse().unwrap()));
        assert!(m.verify_integrity(vectors::PASSWORD.as_bytes()));
        assert!(m.verify_fingerprint());
    }

    #[test]
    fn rfc5769_ipv6_response_parses_and_verifies() {
        let buf = hex(vectors::IPV6_RESPONSE);
        let m = parse(&buf).unwrap();
        assert_eq!(m.class(), StunClass::Success);
        assert_eq!(m.xor_mapped_address(), Some("[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()));
        assert!(m.verify_integrity(vectors::PASSWORD.as_bytes()));
        assert!(m.verify_fingerprint());
    }

    #[test]
    fn writer_reproduces_rfc5769_responses_byte_for_byte() {
        for (vector, addr) in [
            (vectors::IPV4_RESPONSE, "192.0.2.1:32853"),
            (vectors::IPV6_RESPONSE, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
        ] {
            let mut out = Vec::new();
            let mut w = StunWriter::new(&mut out, StunClass::Success, StunMethod::BINDING, tid());
            w.padding(0x20).software("test vector").xor_mapped_address(addr.parse().unwrap());
            let n = w.finish(Some(vectors::PASSWORD.as_bytes()), true).unwrap();
            assert_eq!(n, out.len());
            assert_eq!(out, hex(vector));
        }
    }

    #[test]
    fn writer_reproduces_rfc5769_request_byte_for_byte() {
        let mut out = Vec::new();
        let mut w = StunWriter::new(&mut out, StunClass::Request, StunMethod::BINDING, tid());
        w.padding(0x20)
            .software("STUN test client")
            .priority(0x6e00_01ff)
            .ice_controlled(0x932f_f9b1_5126_3b36)
            .username("evtj:h6vY");
        w.finish(Some(vectors::PASSWORD.as_bytes()), true).unwrap();
        assert_eq!(out, hex(vectors::REQUEST));
    }

    #[test]
    fn every_single_bit_flip_in_a_vector_is_caught() {
        for vector in [vectors::REQUEST, vectors::IPV4_RESPONSE, vectors::IPV6_RESPONSE] {
            let good = hex(vector);
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[i] ^= 1 << bit;
                    if let Ok(m) = parse(&bad) {
                        assert!(
                            !(m.verify_integrity(vectors::PASSWORD.as_bytes()) && m.verify_fingerprint()),
                            "flip at byte {i} bit {bit} went unnoticed"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn message_type_round_trips() {
        for class in [StunClass::Request, StunClass::Indication, StunClass::Success, StunClass::Error] {
            for m in 0..=0x0FFFu16 {
                let t = encode_type(class, StunMethod(m));
                assert_eq!(t & 0xC000, 0);
                assert_eq!(decode_type(t), (class, StunMethod(m)));
            }
        }
        // RFC 5389 §6: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011.
        assert_eq!(encode_type(StunClass::Request, StunMethod::BINDING), 0x0001);
        assert_eq!(encode_type(StunClass::Success, StunMethod::BINDING), 0x0101);
        assert_eq!(encode_type(StunClass::Error, StunMethod::BINDING), 0x0111);
        assert_eq!(encode_type(StunClass::Indication, StunMethod::BINDING), 0x0011);
    }

    #[test]
    fn binding_request_round_trips() {
        for (role, use_candidate) in [
            (StunRole::Controlling(0x0102_0304_0506_0708), true),
            (StunRole::Controlling(u64::MAX), false),
            (StunRole::Controlled(7), false),
        ] {
            let req = StunBindingRequest { username: "abcd:efgh", priority: 1_853_824_767, role, use_candidate };
            let mut out = vec![0xAA; 3]; // existing bytes stay
            let n = StunWriter::binding_request(&mut out, [9; 12], &req, b"pwd-pwd-pwd-pwd-pwd-pwd").unwrap();
            assert_eq!(&out[..3], &[0xAA; 3]);
            assert_eq!(n, out.len() - 3);
            let m = parse(&out[3..]).unwrap();
            assert_eq!(m.class(), StunClass::Request);
            assert_eq!(m.transaction_id(), [9; 12]);
            assert_eq!(m.username(), Some("abcd:efgh"));
            assert_eq!(m.priority(), Some(1_853_824_767));
            assert_eq!(m.use_candidate(), use_candidate);
            match role {
                StunRole::Controlling(t) => assert_eq!((m.ice_controlling(), m.ice_controlled()), (Some(t), None)),
                StunRole::Controlled(t) => assert_eq!((m.ice_controlling(), m.ice_controlled()), (None, Some(t))),
            }
            assert!(m.verify_integrity(b"pwd-pwd-pwd-pwd-pwd-pwd"));
            assert!(m.verify_fingerprint());
            // MESSAGE-INTEGRITY then FINGERPRINT, last.
            let types: Vec<u16> = m.attributes().map(|(t, _)| t).collect();
            assert_eq!(&types[types.len() - 2..], &[ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT]);
        }
    }

    #[test]
    fn binding_success_round_trips_both_families() {
        for addr in ["203.0.113.9:1", "0.0.0.0:0", "[::1]:65535", "[fe80::1:2:3:4]:40000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            StunWriter::binding_success(&mut out, [0x5A; 12], addr, b"k").unwrap();
            let m = parse(&out).unwrap();
            assert_eq!(m.class(), StunClass::Success);
            assert_eq!(m.xor_mapped_address(), Some(addr));
            assert!(m.verify_integrity(b"k"));
            assert!(m.verify_fingerprint());
        }
    }

    #[test]
    fn error_responses_round_trip() {
        for (code, key) in [(400u16, None), (401, None), (487, Some(&b"secret"[..])), (420, Some(&b"secret"[..]))] {
            let mut out = Vec::new();
            StunWriter::error_response(&mut out, StunMethod::BINDING, [1; 12], code, &[0x0031, 0x0032], key).unwrap();
            let m = parse(&out).unwrap();
            assert_eq!(m.class(), StunClass::Error);
            assert_eq!(m.error_code(), Some((code, reason_phrase(code))));
            assert_eq!(m.has_message_integrity(), key.is_some());
            if let Some(k) = key {
                assert!(m.verify_integrity(k));
            }
            assert!(m.verify_fingerprint());
            let unknown = m.attributes().find(|(t, _)| *t == ATTR_UNKNOWN_ATTRIBUTES).map(|(_, v)| v.to_vec());
            if code == 420 {
                assert_eq!(unknown, Some(vec![0x00, 0x31, 0x00, 0x32]));
            } else {
                assert_eq!(unknown, None);
            }
        }
        assert_eq!(reason_phrase(487), "Role Conflict");
    }

    #[test]
    fn writer_limits_are_sticky_and_leave_the_buffer_clean() {
        let mut out = vec![1, 2, 3];
        let mut w = StunWriter::new(&mut out, StunClass::Request, StunMethod::BINDING, [0; 12]);
        w.username(&"u".repeat(MAX_USERNAME + 1)).priority(1);
        assert_eq!(w.finish(None, true), Err(StunError::ValueTooLong(ATTR_USERNAME)));
        assert_eq!(out, [1, 2, 3]);

        let mut w = StunWriter::new(&mut out, StunClass::Request, StunMethod(0x1000), [0; 12]);
        w.priority(1);
        assert_eq!(w.finish(None, false), Err(StunError::BadMethod(0x1000)));

        let mut w = StunWriter::new(&mut out, StunClass::Error, StunMethod::BINDING, [0; 12]);
        w.error_code(299, "x");
        assert_eq!(w.finish(None, false), Err(StunError::BadErrorCode(299)));

        let mut w = StunWriter::new(&mut out, StunClass::Request, StunMethod::BINDING, [0; 12]);
        for _ in 0..3 {
            w.software(&"s".repeat(MAX_TEXT));
        }
        assert_eq!(w.finish(None, false), Err(StunError::TooLong));

        // Room for the body but not for the integrity and fingerprint trailer.
        let mut w = StunWriter::new(&mut out, StunClass::Request, StunMethod::BINDING, [0; 12]);
        w.attribute(0x8123, &vec![0; MAX_MESSAGE - HEADER_LEN - 4 - 8]);
        assert_eq!(w.finish(Some(b"k"), true), Err(StunError::TooLong));
        assert_eq!(out, [1, 2, 3]);
        for e in [StunError::TooLong, StunError::AttributeOverrun(0x8022), StunError::LengthMismatch(8)] {
            assert!(!e.to_string().is_empty());
        }
    }

    fn raw_message(class: StunClass, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StunWriter::new(&mut out, class, StunMethod::BINDING, [3; 12]);
        for (t, v) in attrs {
            w.attribute(*t, v);
        }
        w.finish(None, false).unwrap();
        out
    }

    #[test]
    fn parse_rejects_malformed_headers_and_attributes() {
        let good = hex(vectors::REQUEST);
        assert_eq!(parse(&good[..19]).unwrap_err(), StunError::TooShort);
        let mut b = good.clone();
        b[0] |= 0x40;
        assert_eq!(parse(&b).unwrap_err(), StunError::NotStun);
        let mut b = good.clone();
        b[4] = 0;
        assert_eq!(parse(&b).unwrap_err(), StunError::NotStun);
        assert!(!is_stun(&b));
        let mut b = good.clone();
        b[3] = 0x59;
        assert_eq!(parse(&b).unwrap_err(), StunError::UnalignedLength);
        let mut b = good.clone();
        b.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&b).unwrap_err(), StunError::LengthMismatch(0x58));
        // An attribute length that runs past the end.
        let mut b = raw_message(StunClass::Request, &[(ATTR_SOFTWARE, b"abcd")]);
        b[23] = 9;
        assert_eq!(parse(&b).unwrap_err(), StunError::AttributeOverrun(ATTR_SOFTWARE));
        // Fixed-size attributes with the wrong size.
        for (t, v) in [
            (ATTR_PRIORITY, &b"abc"[..]),
            (ATTR_ICE_CONTROLLING, b"abcd"),
            (ATTR_ICE_CONTROLLED, b"abcdefghi"),
            (ATTR_USE_CANDIDATE, b"a"),
            (ATTR_MESSAGE_INTEGRITY, b"abcd"),
            (ATTR_FINGERPRINT, b"ab"),
            (ATTR_ERROR_CODE, b"ab"),
        ] {
            assert_eq!(
                parse(&raw_message(StunClass::Request, &[(t, v)])).unwrap_err(),
                StunError::BadAttributeLength(t)
            );
        }
        // FINGERPRINT must be last.
        let b = raw_message(StunClass::Request, &[(ATTR_FINGERPRINT, b"abcd"), (ATTR_SOFTWARE, b"x")]);
        assert_eq!(parse(&b).unwrap_err(), StunError::AfterFingerprint);
    }

    #[test]
    fn first_instance_wins_and_attributes_after_integrity_are_ignored() {
        let b = raw_message(
            StunClass::Request,
            &[
                (ATTR_USERNAME, b"first"),
                (ATTR_USERNAME, b"second"),
                (ATTR_MESSAGE_INTEGRITY, &[0; 20]),
                (ATTR_PRIORITY, &[0, 0, 0, 1]),
                (ATTR_USE_CANDIDATE, b""),
                (0x0031, b""), // unknown but after MESSAGE-INTEGRITY: ignored
            ],
        );
        let m = parse(&b).unwrap();
        assert_eq!(m.username(), Some("first"));
        assert_eq!(m.priority(), None);
        assert!(!m.use_candidate());
        assert!(!m.has_unknown_required());
        assert_eq!(m.attributes().count(), 6);
        assert!(!m.verify_fingerprint());
        assert_eq!(m.fingerprint(), None);
    }

    #[test]
    fn unknown_comprehension_required_attributes_are_listed() {
        let b = raw_message(
            StunClass::Request,
            &[(0xC057, b"opt"), (0x0031, b""), (0x0032, b"1"), (0x0033, b""), (0x0034, b""), (0x0035, b"")],
        );
        let m = parse(&b).unwrap();
        assert!(m.has_unknown_required());
        assert_eq!(m.unknown_required(), &[0x0031, 0x0032, 0x0033, 0x0034]);
        let b = raw_message(StunClass::Request, &[(0xC057, b"optional only")]);
        assert!(!parse(&b).unwrap().has_unknown_required());
    }

    #[test]
    fn accessors_tolerate_odd_values() {
        let b = raw_message(
            StunClass::Error,
            &[
                (ATTR_USERNAME, &[0xFF, 0xFE]),
                (ATTR_ERROR_CODE, &[0, 0, 4, 1, 0xFF]),
                (ATTR_XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]),
                (ATTR_SOFTWARE, &[0xC0]),
            ],
        );
        let m = parse(&b).unwrap();
        assert_eq!(m.username(), None);
        assert_eq!(m.error_code(), Some((401, "")));
        assert_eq!(m.xor_mapped_address(), None);
        assert_eq!(m.software(), None);
        assert!(!m.verify_integrity(b"x"));
    }

    #[test]
    fn is_stun_demultiplexes_like_rfc7983() {
        assert!(is_stun(&hex(vectors::IPV4_RESPONSE)));
        let mut dtls = hex(vectors::REQUEST);
        dtls[0] = 22; // DTLS handshake
        assert!(!is_stun(&dtls));
        let mut rtp = hex(vectors::REQUEST);
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        assert!(!is_stun(&[0u8; 19]));
        assert!(!is_stun(&[]));
    }

    #[test]
    fn every_prefix_never_panics() {
        for vector in [vectors::REQUEST, vectors::IPV4_RESPONSE, vectors::IPV6_RESPONSE] {
            let full = hex(vector);
            for n in 0..full.len() {
                assert!(parse(&full[..n]).is_err(), "prefix {n} parsed");
                let _ = is_stun(&full[..n]);
            }
        }
    }

    fn exercise(m: &StunMessage<'_>) {
        let _ = (m.username(), m.priority(), m.use_candidate(), m.ice_controlling(), m.ice_controlled());
        let _ = (m.software(), m.error_code(), m.xor_mapped_address(), m.fingerprint(), m.unknown_required());
        let _ = (m.verify_integrity(b"key"), m.verify_fingerprint(), m.attributes().count());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for round in 0..40_000 {
            let len = rng.below(160);
            let mut b = rng.bytes(len);
            if round % 2 == 0 && len >= HEADER_LEN {
                // Valid header so the attribute walk is exercised.
                b[0] &= 0x3F;
                b[2..4].copy_from_slice(&(((len - HEADER_LEN) & !3) as u16).to_be_bytes());
                b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                b.truncate(HEADER_LEN + ((len - HEADER_LEN) & !3));
            }
            if let Ok(m) = parse(&b) {
                parsed += 1;
                exercise(&m);
            }
        }
        assert!(parsed > 100, "the loop should reach the attribute code, parsed {parsed}");
    }

    #[test]
    fn mutated_vectors_never_panic() {
        let mut rng = Rng(42);
        let seeds = [hex(vectors::REQUEST), hex(vectors::IPV4_RESPONSE), hex(vectors::IPV6_RESPONSE)];
        for _ in 0..20_000 {
            let mut b = seeds[rng.below(3)].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            if let Ok(m) = parse(&b) {
                exercise(&m);
            }
        }
    }
}
