//! SDP (RFC 8866) for WebRTC ingest: parse a publisher's offer, choose what we can
//! carry to RTMP, and write our ICE-lite answer (RFC 8829 JSEP, answerer side).
//!
//! Implemented:
//! - [`parse_offer`]: a line parser (CRLF or bare LF) that borrows from the text.
//!   Session level: `a=ice-ufrag`, `a=ice-pwd`, `a=ice-options`, `a=ice-lite`,
//!   `a=fingerprint`, `a=setup`, the first `a=group:BUNDLE`, direction attributes.
//!   Per `m=` section: kind, port, proto, formats, `a=mid`, direction, ICE credentials
//!   and fingerprint/setup (media level overrides session level), `a=rtcp-mux`,
//!   `a=bundle-only`, `a=rtpmap`, `a=fmtp`, `a=rtcp-fb`, `a=extmap`, `a=ssrc`
//!   (cname, msid), `a=ssrc-group:FID`, `a=candidate` (kept raw), `a=end-of-candidates`,
//!   `a=msid`. Unknown attributes and line types are ignored; a malformed attribute
//!   that we understand is an error naming the line.
//! - [`negotiate`]: video H.264 with packetization-mode=1 (42e01f, then 42001f, then
//!   other Baseline-family levels, then any other profile; ties go to the offer's order)
//!   plus its RTX; audio Opus/48000/2, else G.711 if allowed; the rtcp-fb kinds and
//!   header extensions our receive path uses; the remote ICE credentials and
//!   fingerprint of the BUNDLE transport (taken from the first accepted section), after
//!   checking rtcp-mux, RFC 8839 credential syntax and that the offerer is DTLS client.
//! - [`build_answer`]: ICE-lite, `a=setup:passive`, one BUNDLE transport whose tag is
//!   the first accepted mid, `recvonly`, host candidates and `a=end-of-candidates`,
//!   CRLF line endings. Transport attributes are repeated, identical, in every
//!   accepted section (as libwebrtc's own answers do).
//!
//! Deliberately not implemented:
//! - Several transports: without `a=group:BUNDLE` we accept audio or video, not both
//!   ([`SdpError::NotBundled`]); sections outside the first BUNDLE group are rejected.
//! - Simulcast (`a=rid`, `a=simulcast`): the first FID group (or first SSRC) is taken.
//! - Data channels (application sections are rejected), non-muxed RTCP, RTP/AVP
//!   without DTLS-SRTP, session-level `a=extmap`, re-offers and ICE restarts (every
//!   offer is treated as an initial offer), trickled candidates from the offerer
//!   (an ICE-lite agent learns the peer's address from its checks).
//! - Receiving (publishers): accepted sections are `recvonly`, with no SSRC or msid.
//! - Sending (WebRTC playback, [`negotiate_send`], [`build_answer_send`]): the offer's
//!   recvonly sections, H.264 mode 1 and Opus only, answered `sendonly` with our SSRCs,
//!   CNAME and msid; retransmissions on the media SSRC (no RTX).
//!
//! Bounds (policy: exceeding one is an `Err`, the offer is refused): text
//! [`MAX_SDP_LEN`], [`MAX_MEDIA_SECTIONS`] sections, [`MAX_PAYLOAD_TYPES`] formats,
//! rtpmaps or fmtps per section, and the other `MAX_*` limits below. Tokens echoed
//! into the answer (media, proto, format, mid) are at most [`MAX_TOKEN_LEN`] bytes,
//! so the answer stays small whatever the offer holds.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

/// Largest offer we parse.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Most `m=` sections per offer.
pub const MAX_MEDIA_SECTIONS: usize = 16;
/// Most formats on one `m=` line, and most `a=rtpmap` / `a=fmtp` lines per section.
pub const MAX_PAYLOAD_TYPES: usize = 256;
/// Most `a=rtcp-fb` lines per section (Chrome sends about 5 per video codec).
pub const MAX_RTCP_FB: usize = 1024;
/// Most `a=extmap` lines per section.
pub const MAX_EXTMAPS: usize = 64;
/// Most distinct SSRCs per section.
pub const MAX_SSRCS: usize = 64;
/// Most `a=ssrc-group:FID` lines per section.
pub const MAX_SSRC_GROUPS: usize = 32;
/// Most `a=candidate` lines per section; also the most local candidates we write.
pub const MAX_CANDIDATES: usize = 64;
/// Most `a=fingerprint` lines per level.
pub const MAX_FINGERPRINTS: usize = 8;
/// Most parameters in one `a=fmtp` line.
pub const MAX_FMTP_PARAMS: usize = 32;
/// Most `a=ice-options` tokens.
pub const MAX_ICE_OPTIONS: usize = 8;
/// Longest media, proto, format or mid token.
pub const MAX_TOKEN_LEN: usize = 256;
/// SHA-512 output, the longest hash RFC 8122 §5 names.
const MAX_FINGERPRINT_BYTES: usize = 64;

/// Transport-wide congestion control header extension (draft-holmer-rmcat-transport-wide-cc-extensions-01).
pub const URI_TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Absolute send time header extension (WebRTC experiment, used by REMB).
pub const URI_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// MID header extension (RFC 8843 BUNDLE demultiplexing).
pub const URI_SDES_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// RFC 5450 transmission time offset: send time minus capture time, in RTP clock units.
pub const URI_TOFFSET: &str = "urn:ietf:params:rtp-hdrext:toffset";

/// RFC 6184 §8.1: RTP clock rate of H.264.
const H264_CLOCK: u32 = 90_000;
/// RFC 6184 §8.1: profile-level-id when absent (Baseline, level 1.0).
const H264_DEFAULT_PLID: u32 = 0x42_00_0a;
/// Constrained Baseline level 3.1, what every browser offers first.
const H264_PLID_CB_31: u32 = 0x42_e0_1f;
/// Baseline level 3.1.
const H264_PLID_B_31: u32 = 0x42_00_1f;
/// RFC 7587 §7: Opus is always `opus/48000/2` in SDP.
const OPUS_CLOCK: u32 = 48_000;
const OPUS_CHANNELS: u8 = 2;
/// RFC 3551 §6: static payload types of G.711.
const PT_PCMU: u8 = 0;
const PT_PCMA: u8 = 8;
const G711_CLOCK: u32 = 8_000;
/// RFC 3550 §5.1: the payload type is 7 bits.
const MAX_PT: u8 = 127;
/// RFC 8445 §5.1.2.1: type preference 126 (host), local preference 65535, component 1.
const HOST_PRIORITY: u32 = (126 << 24) | (65_535 << 8) | (256 - 1);
/// Discard port used in `m=` when no candidate is known (the trickle ICE convention, RFC 8840).
const NO_CANDIDATE_PORT: u16 = 9;

/// Why an offer was refused. Each is fatal for that offer only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpError {
    /// The text is longer than [`MAX_SDP_LEN`].
    TooLong { len: usize },
    /// The first line is not `v=0` (RFC 8866 §5.1).
    NotSdp,
    /// A line, or an attribute we understand, does not follow its grammar.
    Malformed { what: &'static str, line: usize },
    /// More than [`MAX_MEDIA_SECTIONS`] `m=` sections.
    TooManyMediaSections,
    /// More than [`MAX_PAYLOAD_TYPES`] formats, rtpmaps or fmtps in one section.
    TooManyPayloadTypes { line: usize },
    /// Another per-section bound was exceeded.
    TooMany { what: &'static str, limit: usize },
    /// No audio or video section that sends to us.
    NothingToReceive,
    /// Nothing we can carry to RTMP (or video we must carry but cannot).
    NoCommonCodecs,
    /// Audio and video offered on separate transports (no BUNDLE group).
    NotBundled,
    /// No `a=ice-ufrag` / `a=ice-pwd` for the transport.
    MissingIceCredentials,
    /// ICE credentials break RFC 8839 §5.4 (length or characters).
    BadIceCredentials,
    /// No fingerprint with a hash we verify.
    MissingFingerprint,
    /// The offerer wants to be the DTLS server (`passive`) or holds the connection.
    SetupConflict,
    /// An accepted section lacks `a=rtcp-mux`.
    NoRtcpMux,
    /// The offerer is ICE-lite too, so nobody would send checks.
    BothIceLite,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::TooLong { len } => {
                write!(f, "SDP of {len} bytes exceeds the {MAX_SDP_LEN}-byte limit")
            }
            SdpError::NotSdp => f.write_str("SDP does not start with v=0"),
            SdpError::Malformed { what, line } => write!(f, "malformed {what} on SDP line {line}"),
            SdpError::TooManyMediaSections => {
                write!(f, "SDP has more than {MAX_MEDIA_SECTIONS} m= sections")
            }
            SdpError::TooManyPayloadTypes { line } => write!(
                f,
                "more than {MAX_PAYLOAD_TYPES} payload types in one m= section (SDP line {line})"
            ),
            SdpError::TooMany { what, limit } => {
                write!(f, "more than {limit} {what} in one SDP section")
            }
            SdpError::NothingToReceive => f.write_str("offer sends no audio or video"),
            SdpError::NoCommonCodecs => f.write_str("No common codecs"),
            SdpError::NotBundled => f.write_str(
                "offer sends audio and video without a=group:BUNDLE; only one transport is served",
            ),
            SdpError::MissingIceCredentials => f.write_str("offer lacks a=ice-ufrag or a=ice-pwd"),
            SdpError::BadIceCredentials => f.write_str(
                "offer's a=ice-ufrag or a=ice-pwd has a bad length or character (RFC 8839 5.4)",
            ),
            SdpError::MissingFingerprint => f.write_str(
                "offer lacks a usable a=fingerprint (sha-256, sha-384, sha-512 or sha-1)",
            ),
            SdpError::SetupConflict => f.write_str(
                "offer's a=setup leaves us no DTLS server role (need actpass or active)",
            ),
            SdpError::NoRtcpMux => f.write_str("offer lacks a=rtcp-mux, which is required"),
            SdpError::BothIceLite => {
                f.write_str("offer is ICE-lite too; one side must run full ICE")
            }
        }
    }
}

impl std::error::Error for SdpError {}

// ---------------------------------------------------------------------------
// Parsed offer
// ---------------------------------------------------------------------------

/// A parsed session description, borrowing from its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOffer<'a> {
    pub session: SdpSession<'a>,
    /// In offer order; the answer keeps this order (RFC 3264 §6).
    pub media: Vec<SdpMedia<'a>>,
}

/// Session-level attributes (before the first `m=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpSession<'a> {
    pub ice_ufrag: Option<&'a str>,
    pub ice_pwd: Option<&'a str>,
    /// RFC 8839 §5.6 tokens (space- or comma-separated; libdatachannel uses commas).
    pub ice_options: Vec<&'a str>,
    pub ice_lite: bool,
    pub fingerprints: Vec<SdpFingerprint>,
    pub setup: Option<SdpSetup>,
    /// Mids of the first `a=group:BUNDLE` (RFC 8843); empty if none.
    pub bundle: Vec<&'a str>,
    pub direction: Option<SdpDirection>,
}

/// What an `m=` line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpMediaKind {
    Audio,
    Video,
    Application,
    Other,
}

/// RFC 8866 §6.7 media direction, as seen by the side that wrote the SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpDirection {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl SdpDirection {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "sendrecv" => Some(SdpDirection::SendRecv),
            "sendonly" => Some(SdpDirection::SendOnly),
            "recvonly" => Some(SdpDirection::RecvOnly),
            "inactive" => Some(SdpDirection::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpDirection::SendRecv => "sendrecv",
            SdpDirection::SendOnly => "sendonly",
            SdpDirection::RecvOnly => "recvonly",
            SdpDirection::Inactive => "inactive",
        }
    }

    fn sends(self) -> bool {
        matches!(self, SdpDirection::SendRecv | SdpDirection::SendOnly)
    }

    fn receives(self) -> bool {
        matches!(self, SdpDirection::SendRecv | SdpDirection::RecvOnly)
    }
}

/// RFC 4145 §4 `a=setup` role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpSetup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl SdpSetup {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(SdpSetup::Active),
            "passive" => Some(SdpSetup::Passive),
            "actpass" => Some(SdpSetup::ActPass),
            "holdconn" => Some(SdpSetup::HoldConn),
            _ => None,
        }
    }
}

/// RFC 8122 §5 hash function of a certificate fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpHash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    /// md2, md5 or an unknown name: never used for verification.
    Other,
}

impl SdpHash {
    fn parse(s: &str) -> Self {
        // RFC 8122 §5: hash function names are case-insensitive.
        const NAMES: [(&str, SdpHash); 5] = [
            ("sha-1", SdpHash::Sha1),
            ("sha-224", SdpHash::Sha224),
            ("sha-256", SdpHash::Sha256),
            ("sha-384", SdpHash::Sha384),
            ("sha-512", SdpHash::Sha512),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map_or(SdpHash::Other, |(_, h)| *h)
    }

    /// Digest length in bytes, `None` for [`SdpHash::Other`].
    pub fn output_len(self) -> Option<usize> {
        match self {
            SdpHash::Sha1 => Some(20),
            SdpHash::Sha224 => Some(28),
            SdpHash::Sha256 => Some(32),
            SdpHash::Sha384 => Some(48),
            SdpHash::Sha512 => Some(64),
            SdpHash::Other => None,
        }
    }
}

/// `a=fingerprint:<hash> <XX:XX:...>` (RFC 8122 §5), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpFingerprint {
    pub hash: SdpHash,
    len: u8,
    bytes: [u8; MAX_FINGERPRINT_BYTES],
}

impl SdpFingerprint {
    /// The decoded fingerprint bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split_ascii_whitespace();
        let hash = SdpHash::parse(parts.next()?);
        let hex = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let mut fp = SdpFingerprint {
            hash,
            len: 0,
            bytes: [0; MAX_FINGERPRINT_BYTES],
        };
        for (i, pair) in hex.split(':').enumerate() {
            let [hi, lo] = pair.as_bytes() else {
                return None;
            };
            *fp.bytes.get_mut(i)? = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
            fp.len = u8::try_from(i + 1).ok()?;
        }
        Some(fp)
    }

    /// True if the hash is one we verify and the length matches it.
    fn is_usable(&self) -> bool {
        self.hash.output_len() == Some(usize::from(self.len))
    }
}

/// `a=rtpmap:<pt> <name>/<clock>[/<channels>]` (RFC 8866 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpRtpMap<'a> {
    pub pt: u8,
    pub encoding: &'a str,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

/// `a=fmtp:<pt> <params>` (RFC 8866 §6.15), split on `;` into `key=value` pairs.
/// A parameter without `=` (RED's `111/111`) has an empty value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpFmtp<'a> {
    pub pt: u8,
    pub params: Vec<(&'a str, &'a str)>,
    pub raw: &'a str,
}

impl<'a> SdpFmtp<'a> {
    /// Value of a parameter; names compare case-insensitively (RFC 6184 §8.1 style).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }
}

/// `a=rtcp-fb:<pt|*> <type> [<param>]` (RFC 4585 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpRtcpFb<'a> {
    /// `None` for `*` (all formats).
    pub pt: Option<u8>,
    /// `nack`, `nack pli`, `ccm fir`, `goog-remb`, `transport-cc`, ...
    pub value: &'a str,
}

/// `a=extmap:<id>[/<direction>] <uri>` (RFC 8285 §5). Ids outside 1..=255 are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpExtmap<'a> {
    pub id: u8,
    pub direction: Option<SdpDirection>,
    pub uri: &'a str,
}

/// What `a=ssrc:<ssrc> <attr>:<value>` lines (RFC 5576 §4.1) say about one SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpSsrc<'a> {
    pub ssrc: u32,
    pub cname: Option<&'a str>,
    pub msid: Option<&'a str>,
}

/// `a=ssrc-group:FID <primary> <rtx>` (RFC 5576 §4.2, RFC 4588 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpSsrcFid {
    pub primary: u32,
    pub rtx: u32,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpMedia<'a> {
    pub kind: SdpMediaKind,
    /// The media token as written (`audio`, `video`, `application`, ...).
    pub media: &'a str,
    /// 0 means rejected unless `bundle_only` (RFC 8843 §6).
    pub port: u16,
    pub proto: &'a str,
    /// Formats of the `m=` line in offer (preference) order.
    pub formats: Vec<&'a str>,
    pub mid: Option<&'a str>,
    /// Media level, else session level, else `sendrecv` (RFC 8866 §6.7).
    pub direction: SdpDirection,
    /// Media level, else session level (RFC 8839 §5.4).
    pub ice_ufrag: Option<&'a str>,
    pub ice_pwd: Option<&'a str>,
    /// Media level, else session level (RFC 8122 §5).
    pub fingerprints: Vec<SdpFingerprint>,
    /// Media level, else session level.
    pub setup: Option<SdpSetup>,
    pub rtcp_mux: bool,
    pub bundle_only: bool,
    pub rtpmaps: Vec<SdpRtpMap<'a>>,
    pub fmtps: Vec<SdpFmtp<'a>>,
    pub rtcp_fbs: Vec<SdpRtcpFb<'a>>,
    pub extmaps: Vec<SdpExtmap<'a>>,
    pub ssrcs: Vec<SdpSsrc<'a>>,
    pub ssrc_fids: Vec<SdpSsrcFid>,
    /// Values of `a=candidate:` lines, unparsed.
    pub candidates: Vec<&'a str>,
    pub end_of_candidates: bool,
    pub msid: Option<&'a str>,
}

impl<'a> SdpMedia<'a> {
    fn new(kind: SdpMediaKind, media: &'a str, port: u16, proto: &'a str) -> Self {
        SdpMedia {
            kind,
            media,
            port,
            proto,
            formats: Vec::new(),
            mid: None,
            direction: SdpDirection::SendRecv,
            ice_ufrag: None,
            ice_pwd: None,
            fingerprints: Vec::new(),
            setup: None,
            rtcp_mux: false,
            bundle_only: false,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            rtcp_fbs: Vec::new(),
            extmaps: Vec::new(),
            ssrcs: Vec::new(),
            ssrc_fids: Vec::new(),
            candidates: Vec::new(),
            end_of_candidates: false,
            msid: None,
        }
    }

    /// Numeric formats of the `m=` line (RTP payload types), in offer order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= MAX_PT)
    }

    /// The first `a=rtpmap` for `pt`.
    pub fn rtpmap(&self, pt: u8) -> Option<&SdpRtpMap<'a>> {
        self.rtpmaps.iter().find(|r| r.pt == pt)
    }

    /// The first `a=fmtp` for `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&SdpFmtp<'a>> {
        self.fmtps.iter().find(|f| f.pt == pt)
    }

    fn is_rtp(&self) -> bool {
        self.proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
    }

    /// DTLS-SRTP profiles (RFC 5764 §8).
    fn is_dtls_srtp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVPF")
            || self.proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVP")
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// Parse an offer (or any session description) from `text`.
///
/// Accepts CRLF or LF line endings and blank lines; ignores trailing spaces, unknown
/// line types and unknown attributes.
pub fn parse_offer(text: &str) -> Result<SdpOffer<'_>, SdpError> {
    if text.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLong { len: text.len() });
    }
    let mut session = SdpSession::default();
    let mut media: Vec<SdpMedia<'_>> = Vec::new();
    // Media-level direction attributes, resolved against the session level at the end.
    let mut media_dirs: Vec<Option<SdpDirection>> = Vec::new();
    let mut saw_version = false;

    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let l = raw.trim_end_matches(['\r', ' ', '\t']);
        if l.is_empty() {
            continue;
        }
        // RFC 8866 §5: <type>=<value>, type one letter.
        let (kind, value) = match (l.as_bytes().first(), l.as_bytes().get(1), l.get(2..)) {
            (Some(k), Some(b'='), Some(v)) if k.is_ascii_alphabetic() => (*k, v),
            _ => return Err(SdpError::Malformed { what: "line", line }),
        };
        if !saw_version {
            // RFC 8866 §5.1: the description starts with v=0.
            if kind == b'v' && value == "0" {
                saw_version = true;
                continue;
            }
            return Err(SdpError::NotSdp);
        }
        match kind {
            b'm' => {
                if media.len() >= MAX_MEDIA_SECTIONS {
                    return Err(SdpError::TooManyMediaSections);
                }
                media.push(parse_media_line(value, line)?);
                media_dirs.push(None);
            }
            b'a' => {
                let (name, val) = match value.split_once(':') {
                    Some((n, v)) => (n, Some(v)),
                    None => (value, None),
                };
                match (media.last_mut(), media_dirs.last_mut()) {
                    (Some(m), Some(dir)) => media_attr(m, dir, name, val, line)?,
                    _ => session_attr(&mut session, name, val, line)?,
                }
            }
            // o=, s=, t=, c=, b=, ... carry nothing an ICE-lite answerer needs.
            _ => {}
        }
    }
    if !saw_version {
        return Err(SdpError::NotSdp);
    }

    // Media level overrides session level; the session level fills what is missing.
    for (m, dir) in media.iter_mut().zip(media_dirs) {
        m.direction = dir.or(session.direction).unwrap_or(SdpDirection::SendRecv);
        m.ice_ufrag = m.ice_ufrag.or(session.ice_ufrag);
        m.ice_pwd = m.ice_pwd.or(session.ice_pwd);
        m.setup = m.setup.or(session.setup);
        if m.fingerprints.is_empty() {
            m.fingerprints.clone_from(&session.fingerprints);
        }
    }
    Ok(SdpOffer { session, media })
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` (RFC 8866 §5.14).
fn parse_media_line(value: &str, line: usize) -> Result<SdpMedia<'_>, SdpError> {
    let bad = SdpError::Malformed {
        what: "m= line",
        line,
    };
    let mut it = value.split_ascii_whitespace();
    let media = it.next().filter(|t| t.len() <= MAX_TOKEN_LEN).ok_or(bad)?;
    let port = it.next().ok_or(bad)?;
    let proto = it.next().filter(|t| t.len() <= MAX_TOKEN_LEN).ok_or(bad)?;
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port.parse().map_err(|_| bad)?;
    let kind = match media {
        "audio" => SdpMediaKind::Audio,
        "video" => SdpMediaKind::Video,
        "application" => SdpMediaKind::Application,
        _ => SdpMediaKind::Other,
    };
    let mut m = SdpMedia::new(kind, media, port, proto);
    for fmt in it {
        if m.formats.len() >= MAX_PAYLOAD_TYPES {
            return Err(SdpError::TooManyPayloadTypes { line });
        }
        if fmt.len() > MAX_TOKEN_LEN {
            return Err(bad);
        }
        m.formats.push(fmt);
    }
    if m.formats.is_empty() {
        return Err(bad);
    }
    Ok(m)
}

fn session_attr<'a>(
    s: &mut SdpSession<'a>,
    name: &'a str,
    val: Option<&'a str>,
    line: usize,
) -> Result<(), SdpError> {
    match (name, val) {
        ("ice-ufrag", Some(v)) => s.ice_ufrag = s.ice_ufrag.or(Some(v.trim())),
        ("ice-pwd", Some(v)) => s.ice_pwd = s.ice_pwd.or(Some(v.trim())),
        ("ice-lite", _) => s.ice_lite = true,
        ("ice-options", Some(v)) => {
            for opt in v.split([' ', ',']).filter(|o| !o.is_empty()) {
                push_bounded(
                    &mut s.ice_options,
                    opt,
                    "ice-options tokens",
                    MAX_ICE_OPTIONS,
                )?;
            }
        }
        ("fingerprint", Some(v)) => push_fingerprint(&mut s.fingerprints, v, line)?,
        ("setup", Some(v)) => s.setup = Some(parse_setup(v, line)?),
        ("group", Some(v)) => {
            let mut tokens = v.split_ascii_whitespace();
            // Only the first BUNDLE group (RFC 8843) is used: we run one transport.
            if tokens.next() == Some("BUNDLE") && s.bundle.is_empty() {
                for mid in tokens {
                    if mid.len() > MAX_TOKEN_LEN {
                        return Err(SdpError::Malformed {
                            what: "a=group",
                            line,
                        });
                    }
                    push_bounded(&mut s.bundle, mid, "BUNDLE mids", MAX_MEDIA_SECTIONS)?;
                }
            }
        }
        (dir, None) => {
            if let Some(d) = SdpDirection::parse(dir) {
                s.direction = Some(d);
            }
        }
        _ => {} // RFC 8866 §5.13: unknown attributes are ignored.
    }
    Ok(())
}

fn media_attr<'a>(
    m: &mut SdpMedia<'a>,
    dir: &mut Option<SdpDirection>,
    name: &'a str,
    val: Option<&'a str>,
    line: usize,
) -> Result<(), SdpError> {
    let rtp = m.is_rtp();
    match (name, val) {
        ("mid", Some(v)) => {
            // RFC 5888 §4: identification-tag is a token; we echo it, so keep it short.
            if !is_token(v) {
                return Err(SdpError::Malformed {
                    what: "a=mid",
                    line,
                });
            }
            m.mid = m.mid.or(Some(v));
        }
        ("ice-ufrag", Some(v)) => m.ice_ufrag = m.ice_ufrag.or(Some(v.trim())),
        ("ice-pwd", Some(v)) => m.ice_pwd = m.ice_pwd.or(Some(v.trim())),
        ("fingerprint", Some(v)) => push_fingerprint(&mut m.fingerprints, v, line)?,
        ("setup", Some(v)) => m.setup = Some(parse_setup(v, line)?),
        ("rtcp-mux", None) => m.rtcp_mux = true,
        ("bundle-only", None) => m.bundle_only = true,
        ("rtpmap", Some(v)) if rtp => {
            let map = parse_rtpmap(v).ok_or(SdpError::Malformed {
                what: "a=rtpmap",
                line,
            })?;
            if m.rtpmaps.len() >= MAX_PAYLOAD_TYPES {
                return Err(SdpError::TooManyPayloadTypes { line });
            }
            m.rtpmaps.push(map);
        }
        ("fmtp", Some(v)) if rtp => {
            let fmtp = parse_fmtp(v, line)?;
            if m.fmtps.len() >= MAX_PAYLOAD_TYPES {
                return Err(SdpError::TooManyPayloadTypes { line });
            }
            m.fmtps.push(fmtp);
        }
        ("rtcp-fb", Some(v)) if rtp => {
            let fb = parse_rtcp_fb(v).ok_or(SdpError::Malformed {
                what: "a=rtcp-fb",
                line,
            })?;
            push_bounded(&mut m.rtcp_fbs, fb, "a=rtcp-fb lines", MAX_RTCP_FB)?;
        }
        ("extmap", Some(v)) => {
            if let Some(ext) = parse_extmap(v, line)? {
                push_bounded(&mut m.extmaps, ext, "a=extmap lines", MAX_EXTMAPS)?;
            }
        }
        ("ssrc", Some(v)) => parse_ssrc(&mut m.ssrcs, v, line)?,
        ("ssrc-group", Some(v)) => {
            if let Some(fid) = parse_ssrc_fid(v, line)? {
                push_bounded(&mut m.ssrc_fids, fid, "a=ssrc-group lines", MAX_SSRC_GROUPS)?;
            }
        }
        ("candidate", Some(v)) => {
            push_bounded(
                &mut m.candidates,
                v.trim(),
                "a=candidate lines",
                MAX_CANDIDATES,
            )?;
        }
        ("end-of-candidates", None) => m.end_of_candidates = true,
        ("msid", Some(v)) => m.msid = m.msid.or(Some(v.trim())),
        (d, None) => {
            if let Some(d) = SdpDirection::parse(d) {
                *dir = Some(d);
            }
        }
        _ => {} // RFC 8866 §5.13: unknown attributes are ignored.
    }
    Ok(())
}

fn push_bounded<T>(
    v: &mut Vec<T>,
    item: T,
    what: &'static str,
    limit: usize,
) -> Result<(), SdpError> {
    if v.len() >= limit {
        return Err(SdpError::TooMany { what, limit });
    }
    v.push(item);
    Ok(())
}

fn push_fingerprint(v: &mut Vec<SdpFingerprint>, value: &str, line: usize) -> Result<(), SdpError> {
    let fp = SdpFingerprint::parse(value).ok_or(SdpError::Malformed {
        what: "a=fingerprint",
        line,
    })?;
    push_bounded(v, fp, "a=fingerprint lines", MAX_FINGERPRINTS)
}

fn parse_setup(v: &str, line: usize) -> Result<SdpSetup, SdpError> {
    SdpSetup::parse(v.trim()).ok_or(SdpError::Malformed {
        what: "a=setup",
        line,
    })
}

/// RFC 8866 §9 token: visible ASCII without separators we split on; bounded length.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TOKEN_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_pt(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|pt| *pt <= MAX_PT)
}

/// `<pt> <encoding name>/<clock rate>[/<encoding parameters>]`
fn parse_rtpmap(v: &str) -> Option<SdpRtpMap<'_>> {
    let (pt, rest) = v.trim().split_once(' ')?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse::<u32>().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse::<u8>().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(SdpRtpMap {
        pt: parse_pt(pt)?,
        encoding,
        clock_rate,
        channels,
    })
}

/// `<pt> <param>[;<param>]...`
fn parse_fmtp(v: &str, line: usize) -> Result<SdpFmtp<'_>, SdpError> {
    let bad = SdpError::Malformed {
        what: "a=fmtp",
        line,
    };
    let v = v.trim();
    let (pt, raw) = v.split_once(' ').unwrap_or((v, ""));
    let mut fmtp = SdpFmtp {
        pt: parse_pt(pt).ok_or(bad)?,
        params: Vec::new(),
        raw: raw.trim(),
    };
    for param in fmtp.raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = param.split_once('=').unwrap_or((param, ""));
        push_bounded(
            &mut fmtp.params,
            (k.trim(), val.trim()),
            "a=fmtp parameters",
            MAX_FMTP_PARAMS,
        )?;
    }
    Ok(fmtp)
}

/// `<pt|*> <type> [<params>]`
fn parse_rtcp_fb(v: &str) -> Option<SdpRtcpFb<'_>> {
    let (pt, value) = v.trim().split_once(' ')?;
    let pt = if pt == "*" { None } else { Some(parse_pt(pt)?) };
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some(SdpRtcpFb { pt, value })
}

/// `<id>[/<direction>] <uri> [<attributes>]`; `Ok(None)` for ids we could never see
/// in an RTP header (RFC 8285 §5: 4096-4351 are negotiation-only).
fn parse_extmap(v: &str, line: usize) -> Result<Option<SdpExtmap<'_>>, SdpError> {
    let bad = SdpError::Malformed {
        what: "a=extmap",
        line,
    };
    let mut parts = v.split_ascii_whitespace();
    let head = parts.next().ok_or(bad)?;
    let uri = parts.next().ok_or(bad)?;
    let (id, direction) = match head.split_once('/') {
        Some((id, d)) => (id, Some(SdpDirection::parse(d).ok_or(bad)?)),
        None => (head, None),
    };
    let id: u16 = id.parse().map_err(|_| bad)?;
    Ok(u8::try_from(id)
        .ok()
        .filter(|id| *id != 0)
        .map(|id| SdpExtmap { id, direction, uri }))
}

/// `<ssrc> <attribute>[:<value>]`; merges lines of the same SSRC.
fn parse_ssrc<'a>(ssrcs: &mut Vec<SdpSsrc<'a>>, v: &'a str, line: usize) -> Result<(), SdpError> {
    let bad = SdpError::Malformed {
        what: "a=ssrc",
        line,
    };
    let v = v.trim();
    let (id, attr) = v.split_once(' ').unwrap_or((v, ""));
    let ssrc: u32 = id.parse().map_err(|_| bad)?;
    let (name, value) = attr.trim().split_once(':').unwrap_or((attr, ""));
    let entry = match ssrcs.iter().position(|s| s.ssrc == ssrc) {
        Some(i) => ssrcs.get_mut(i),
        None => {
            push_bounded(
                ssrcs,
                SdpSsrc {
                    ssrc,
                    cname: None,
                    msid: None,
                },
                "SSRCs",
                MAX_SSRCS,
            )?;
            ssrcs.last_mut()
        }
    };
    if let Some(entry) = entry {
        match name {
            "cname" => entry.cname = entry.cname.or(Some(value)),
            "msid" => entry.msid = entry.msid.or(Some(value)),
            _ => {}
        }
    }
    Ok(())
}

/// `FID <primary> <rtx>`; other semantics (SIM, FEC-FR) are ignored.
fn parse_ssrc_fid(v: &str, line: usize) -> Result<Option<SdpSsrcFid>, SdpError> {
    let mut parts = v.split_ascii_whitespace();
    if parts.next() != Some("FID") {
        return Ok(None);
    }
    let bad = SdpError::Malformed {
        what: "a=ssrc-group:FID",
        line,
    };
    let mut ssrc = || parts.next().and_then(|s| s.parse::<u32>().ok()).ok_or(bad);
    Ok(Some(SdpSsrcFid {
        primary: ssrc()?,
        rtx: ssrc()?,
    }))
}

// ---------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------

/// What we are willing to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecPrefs {
    /// Fall back to PCMA/PCMU (FLV sound formats 7/8) when Opus is not offered.
    pub allow_g711: bool,
    /// Refuse an offer whose video we cannot carry (no H.264 packetization-mode=1)
    /// instead of taking its audio alone.
    pub require_video_codec: bool,
}

impl Default for CodecPrefs {
    fn default() -> Self {
        CodecPrefs {
            allow_g711: true,
            require_video_codec: true,
        }
    }
}

/// RTCP feedback kinds (RFC 4585 §4.2, RFC 5104 §7.1) negotiated for a payload type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SdpRtcpFeedback {
    pub nack: bool,
    pub nack_pli: bool,
    pub ccm_fir: bool,
    pub goog_remb: bool,
    pub transport_cc: bool,
}

/// Header extension ids (RFC 8285) negotiated in one section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SdpExtIds {
    pub transport_cc: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub sdes_mid: Option<u8>,
    /// RFC 5450 (video): how long each packet waited between capture and send.
    pub toffset: Option<u8>,
}

/// Accepted video: H.264 with packetization-mode=1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedVideo {
    /// Index of the section in `SdpOffer::media`.
    pub index: usize,
    pub mid: Option<String>,
    pub pt: u8,
    pub clock_rate: u32,
    /// profile_idc, profile-iop, level_idc (RFC 6184 §8.1), e.g. 0x42e01f.
    pub profile_level_id: u32,
    pub level_asymmetry_allowed: bool,
    /// RTX payload type whose `apt` is `pt` (RFC 4588 §8).
    pub rtx_pt: Option<u8>,
    pub feedback: SdpRtcpFeedback,
    pub ext: SdpExtIds,
    /// From the first `a=ssrc-group:FID`, else the first `a=ssrc`.
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    /// Every H.264 packetization-mode=1 format of the section: (payload type,
    /// profile-level-id), in the offer's order. A sender picks the one that
    /// matches what it has (`Negotiated::use_video_format`).
    pub h264_formats: Vec<(u8, u32)>,
}

/// Audio codecs we carry to FLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpAudioCodec {
    Opus,
    Pcma,
    Pcmu,
}

impl SdpAudioCodec {
    /// Encoding name as written in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            SdpAudioCodec::Opus => "opus",
            SdpAudioCodec::Pcma => "PCMA",
            SdpAudioCodec::Pcmu => "PCMU",
        }
    }
}

/// Accepted audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// Index of the section in `SdpOffer::media`.
    pub index: usize,
    pub mid: Option<String>,
    pub pt: u8,
    pub codec: SdpAudioCodec,
    pub clock_rate: u32,
    pub channels: u8,
    /// Opus `minptime` (RFC 7587 §6.1), if offered.
    pub minptime: Option<u32>,
    /// Opus `useinbandfec`, if offered.
    pub useinbandfec: Option<bool>,
    /// Opus `sprop-stereo=1` offered (RFC 7587 §6.1: the sender is likely to send
    /// stereo). The answer then says `stereo=1`; otherwise it says nothing, which
    /// asks for mono (what a browser sends unless told `stereo=1`).
    pub stereo: bool,
    pub feedback: SdpRtcpFeedback,
    pub ext: SdpExtIds,
    pub ssrc: Option<u32>,
}

/// Result of [`negotiate`]: what the answer accepts, and the remote transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub video: Option<NegotiatedVideo>,
    pub audio: Option<NegotiatedAudio>,
    /// The offer had a BUNDLE group; the answer lists the accepted mids in one.
    pub bundle: bool,
    /// Credentials the offerer's checks carry (RFC 8839 §5.4).
    pub remote_ice_ufrag: String,
    pub remote_ice_pwd: String,
    /// The fingerprint its DTLS certificate must match (RFC 8122 §5).
    pub remote_fingerprint: SdpFingerprint,
}

/// Choose what to receive from `offer`.
pub fn negotiate(offer: &SdpOffer<'_>, prefs: &CodecPrefs) -> Result<Negotiated, SdpError> {
    negotiate_dir(offer, prefs, false)
}

/// Choose what to send to `offer`'s receiver (WebRTC playback): the sections it
/// receives, H.264 packetization-mode=1 and Opus only.
pub fn negotiate_send(offer: &SdpOffer<'_>) -> Result<Negotiated, SdpError> {
    let prefs = CodecPrefs { allow_g711: false, require_video_codec: true };
    let mut neg = negotiate_dir(offer, &prefs, true)?;
    if let Some(v) = neg.video.as_mut() {
        // Retransmissions go out on the media SSRC itself (RFC 4585 generic NACK).
        v.rtx_pt = None;
        v.rtx_ssrc = None;
    }
    Ok(neg)
}

impl Negotiated {
    /// Send video as `pt` of the offered H.264 formats (profile-level-id `plid`).
    pub fn use_video_format(&mut self, pt: u8, plid: u32) {
        if let Some(v) = self.video.as_mut() {
            v.pt = pt;
            v.profile_level_id = plid;
        }
    }
}

fn negotiate_dir(offer: &SdpOffer<'_>, prefs: &CodecPrefs, send: bool) -> Result<Negotiated, SdpError> {
    if offer.session.ice_lite {
        // RFC 8445 §2.5: two lite agents never run checks.
        return Err(SdpError::BothIceLite);
    }
    let bundle = offer.session.bundle.as_slice();
    let (mut saw_video, mut saw_audio) = (false, false);
    let (mut video, mut audio) = (None, None);
    for (index, m) in offer.media.iter().enumerate() {
        if !is_usable(m, bundle, send) {
            continue;
        }
        match m.kind {
            SdpMediaKind::Video => {
                saw_video = true;
                if video.is_none() {
                    video = choose_video(index, m);
                }
            }
            SdpMediaKind::Audio => {
                saw_audio = true;
                if audio.is_none() {
                    audio = choose_audio(index, m, prefs);
                }
            }
            SdpMediaKind::Application | SdpMediaKind::Other => {}
        }
    }
    if !saw_video && !saw_audio {
        return Err(SdpError::NothingToReceive);
    }
    if saw_video && video.is_none() && prefs.require_video_codec {
        return Err(SdpError::NoCommonCodecs);
    }
    if bundle.is_empty() && video.is_some() && audio.is_some() {
        return Err(SdpError::NotBundled);
    }
    let accepted = [
        video.as_ref().map(|v: &NegotiatedVideo| v.index),
        audio.as_ref().map(|a: &NegotiatedAudio| a.index),
    ];
    // The answerer-tagged section is the first accepted one (RFC 8843 §7.3.1); its
    // transport attributes are the BUNDLE transport's.
    let transport = accepted
        .iter()
        .flatten()
        .min()
        .and_then(|i| offer.media.get(*i))
        .ok_or(SdpError::NoCommonCodecs)?;
    // RFC 8843 §9.3: bundled RTP/RTCP share one port, so rtcp-mux is required.
    for m in accepted
        .iter()
        .flatten()
        .filter_map(|i| offer.media.get(*i))
    {
        if !m.rtcp_mux {
            return Err(SdpError::NoRtcpMux);
        }
    }
    let (Some(ufrag), Some(pwd)) = (transport.ice_ufrag, transport.ice_pwd) else {
        return Err(SdpError::MissingIceCredentials);
    };
    // RFC 8839 §5.4: ufrag 4-256 ice-chars, pwd 22-256 ice-chars.
    if !is_ice_chars(ufrag, 4) || !is_ice_chars(pwd, 22) {
        return Err(SdpError::BadIceCredentials);
    }
    let remote_fingerprint =
        choose_fingerprint(&transport.fingerprints).ok_or(SdpError::MissingFingerprint)?;
    // RFC 5763 §5: we must end up passive (DTLS server), so the offerer is active.
    // RFC 4145 §4: an absent a=setup means active.
    if matches!(
        transport.setup,
        Some(SdpSetup::Passive | SdpSetup::HoldConn)
    ) {
        return Err(SdpError::SetupConflict);
    }
    Ok(Negotiated {
        video,
        audio,
        bundle: !bundle.is_empty(),
        remote_ice_ufrag: ufrag.to_owned(),
        remote_ice_pwd: pwd.to_owned(),
        remote_fingerprint,
    })
}

/// Offered, sending to us (or receiving from us when `send`), over DTLS-SRTP, and
/// on the BUNDLE transport if there is one.
fn is_usable(m: &SdpMedia<'_>, bundle: &[&str], send: bool) -> bool {
    let in_bundle = bundle.is_empty() || m.mid.is_some_and(|mid| bundle.contains(&mid));
    // RFC 8843 §6: port 0 with a=bundle-only is offered, not rejected.
    let offered = m.port != 0 || (m.bundle_only && !bundle.is_empty());
    let direction = if send { m.direction.receives() } else { m.direction.sends() };
    offered && in_bundle && direction && m.is_dtls_srtp()
}

fn is_ice_chars(s: &str, min: usize) -> bool {
    (min..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// RFC 8122 §5: verify with the preferred hash among those offered.
fn choose_fingerprint(fps: &[SdpFingerprint]) -> Option<SdpFingerprint> {
    [
        SdpHash::Sha256,
        SdpHash::Sha384,
        SdpHash::Sha512,
        SdpHash::Sha1,
    ]
    .iter()
    .find_map(|h| fps.iter().find(|fp| fp.hash == *h && fp.is_usable()))
    .copied()
}

/// Lower is better: 42e01f, 42001f, other Baseline family, any other profile.
fn h264_rank(plid: u32) -> u8 {
    match plid {
        H264_PLID_CB_31 => 0,
        H264_PLID_B_31 => 1,
        _ if plid >> 16 == 0x42 => 2,
        _ => 3,
    }
}

fn parse_hex24(s: &str) -> Option<u32> {
    if s.len() != 6 {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

fn choose_video(index: usize, m: &SdpMedia<'_>) -> Option<NegotiatedVideo> {
    let mut best: Option<(u8, u8, u32, bool)> = None; // (rank, pt, plid, asymmetry)
    let mut h264_formats = Vec::new();
    for pt in m.payload_types() {
        let Some(map) = m.rtpmap(pt) else { continue };
        if !map.encoding.eq_ignore_ascii_case("H264") || map.clock_rate != H264_CLOCK {
            continue;
        }
        let fmtp = m.fmtp(pt);
        let param = |key: &str| fmtp.and_then(|f| f.get(key));
        // RFC 6184 §8.1: packetization-mode absent means 0 (single NAL only).
        if param("packetization-mode").unwrap_or("0") != "1" {
            continue;
        }
        let Some(plid) = param("profile-level-id").map_or(Some(H264_DEFAULT_PLID), parse_hex24)
        else {
            continue;
        };
        let asym = param("level-asymmetry-allowed") == Some("1");
        if h264_formats.len() < 16 {
            h264_formats.push((pt, plid));
        }
        let rank = h264_rank(plid);
        // Strictly better only: ties keep the offerer's order (RFC 3264 §6.1).
        if best.is_none_or(|(r, ..)| rank < r) {
            best = Some((rank, pt, plid, asym));
        }
    }
    let (_, pt, profile_level_id, level_asymmetry_allowed) = best?;
    let rtx_pt = m.payload_types().find(|rtx| {
        m.rtpmap(*rtx)
            .is_some_and(|r| r.encoding.eq_ignore_ascii_case("rtx") && r.clock_rate == H264_CLOCK)
            && m.fmtp(*rtx).and_then(|f| f.get("apt")).and_then(parse_pt) == Some(pt)
    });
    let (ssrc, rtx_ssrc) = match m.ssrc_fids.first() {
        Some(fid) => (Some(fid.primary), Some(fid.rtx)),
        None => (m.ssrcs.first().map(|s| s.ssrc), None),
    };
    Some(NegotiatedVideo {
        index,
        mid: m.mid.map(str::to_owned),
        pt,
        clock_rate: H264_CLOCK,
        profile_level_id,
        level_asymmetry_allowed,
        rtx_pt,
        feedback: feedback_for(m, pt),
        ext: ext_ids(m),
        ssrc,
        rtx_ssrc: rtx_ssrc.filter(|_| rtx_pt.is_some()),
        h264_formats,
    })
}

fn choose_audio(index: usize, m: &SdpMedia<'_>, prefs: &CodecPrefs) -> Option<NegotiatedAudio> {
    let mut g711: Option<(u8, SdpAudioCodec)> = None;
    let mut opus: Option<u8> = None;
    for pt in m.payload_types() {
        let (name, clock, channels) = match m.rtpmap(pt) {
            Some(r) => (r.encoding, r.clock_rate, r.channels.unwrap_or(1)),
            // RFC 3551 §6: static payload types need no rtpmap.
            None if pt == PT_PCMU => ("PCMU", G711_CLOCK, 1),
            None if pt == PT_PCMA => ("PCMA", G711_CLOCK, 1),
            None => continue,
        };
        if name.eq_ignore_ascii_case("opus") && clock == OPUS_CLOCK && channels == OPUS_CHANNELS {
            opus = Some(pt);
            break;
        }
        if g711.is_none() && prefs.allow_g711 && clock == G711_CLOCK && channels == 1 {
            if name.eq_ignore_ascii_case("PCMA") {
                g711 = Some((pt, SdpAudioCodec::Pcma));
            } else if name.eq_ignore_ascii_case("PCMU") {
                g711 = Some((pt, SdpAudioCodec::Pcmu));
            }
        }
    }
    let (pt, codec, clock_rate, channels) = match (opus, g711) {
        (Some(pt), _) => (pt, SdpAudioCodec::Opus, OPUS_CLOCK, OPUS_CHANNELS),
        (None, Some((pt, codec))) => (pt, codec, G711_CLOCK, 1),
        (None, None) => return None,
    };
    let fmtp = m.fmtp(pt).filter(|_| codec == SdpAudioCodec::Opus);
    let minptime = fmtp
        .and_then(|f| f.get("minptime"))
        .and_then(|v| v.parse::<u32>().ok());
    let useinbandfec = fmtp
        .and_then(|f| f.get("useinbandfec"))
        .and_then(|v| match v {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
    let stereo = fmtp.and_then(|f| f.get("sprop-stereo")) == Some("1");
    Some(NegotiatedAudio {
        index,
        mid: m.mid.map(str::to_owned),
        pt,
        codec,
        clock_rate,
        channels,
        minptime,
        useinbandfec,
        stereo,
        feedback: feedback_for(m, pt),
        ext: ext_ids(m),
        ssrc: m
            .ssrc_fids
            .first()
            .map(|f| f.primary)
            .or(m.ssrcs.first().map(|s| s.ssrc)),
    })
}

/// The feedback kinds we act on, where offered for `pt` or for `*`.
fn feedback_for(m: &SdpMedia<'_>, pt: u8) -> SdpRtcpFeedback {
    let mut fb = SdpRtcpFeedback::default();
    for entry in m.rtcp_fbs.iter().filter(|f| f.pt.is_none_or(|p| p == pt)) {
        let mut t = entry.value.split_ascii_whitespace();
        match (t.next(), t.next(), t.next()) {
            (Some("nack"), None, _) => fb.nack = true,
            (Some("nack"), Some("pli"), None) => fb.nack_pli = true,
            (Some("ccm"), Some("fir"), None) => fb.ccm_fir = true,
            (Some("goog-remb"), None, _) => fb.goog_remb = true,
            (Some("transport-cc"), None, _) => fb.transport_cc = true,
            _ => {}
        }
    }
    fb
}

/// Extension ids the offerer will send (not its recvonly/inactive ones).
fn ext_ids(m: &SdpMedia<'_>) -> SdpExtIds {
    let mut ids = SdpExtIds::default();
    for e in &m.extmaps {
        if e.direction.is_some_and(|d| !d.sends()) {
            continue;
        }
        let slot = match e.uri {
            URI_TRANSPORT_CC => &mut ids.transport_cc,
            URI_ABS_SEND_TIME => &mut ids.abs_send_time,
            URI_SDES_MID => &mut ids.sdes_mid,
            URI_TOFFSET => &mut ids.toffset,
            _ => continue,
        };
        *slot = slot.or(Some(e.id));
    }
    ids
}

// ---------------------------------------------------------------------------
// Answer
// ---------------------------------------------------------------------------

/// Our side of the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// Our DTLS certificate's SHA-256, `AB:CD:...` upper-case colon hex.
    pub fingerprint_sha256: String,
    /// Host candidates (first = default address of `m=`/`c=`); at most
    /// [`MAX_CANDIDATES`] are written.
    pub candidates: Vec<(IpAddr, u16)>,
    /// `o=` sess-id; the top bit is cleared (RFC 8829 §5.2.1: fits a signed 64-bit).
    pub session_id: u64,
}

/// Write the answer to `offer` for what `neg` accepted, with CRLF line endings.
///
/// Every offered section is answered in order (RFC 3264 §6): accepted ones `recvonly`
/// with our transport, the rest with port 0 and their mid. The transport attributes
/// are repeated, identical, in each accepted section, as libwebrtc does.
pub fn build_answer(offer: &SdpOffer<'_>, neg: &Negotiated, local: &LocalParams) -> String {
    build_answer_dir(offer, neg, local, None)
}

/// What a sending answer announces about its streams (RFC 8830 msid, RFC 5576 ssrc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendParams {
    pub video_ssrc: u32,
    pub audio_ssrc: u32,
    /// RTCP CNAME, the same for both tracks (lip sync, RFC 7022).
    pub cname: String,
    /// The MediaStream id both tracks belong to.
    pub stream_id: String,
}

/// The answer of a sender (WebRTC playback): accepted sections `sendonly`, with our
/// SSRCs, CNAME and msid; otherwise as [`build_answer`].
pub fn build_answer_send(offer: &SdpOffer<'_>, neg: &Negotiated, local: &LocalParams, send: &SendParams) -> String {
    build_answer_dir(offer, neg, local, Some(send))
}

fn build_answer_dir(offer: &SdpOffer<'_>, neg: &Negotiated, local: &LocalParams, send: Option<&SendParams>) -> String {
    let mut out = String::with_capacity(2048);
    // RFC 8829 §5.2.1 / §5.3.1: dummy origin address, 63-bit session id.
    line(&mut out, format_args!("v=0"));
    line(
        &mut out,
        format_args!(
            "o=- {} 1 IN IP4 0.0.0.0",
            local.session_id & (u64::MAX >> 1)
        ),
    );
    line(&mut out, format_args!("s=-"));
    line(&mut out, format_args!("t=0 0"));

    let video = neg.video.as_ref().filter(|v| {
        offer
            .media
            .get(v.index)
            .is_some_and(|m| m.kind == SdpMediaKind::Video)
    });
    let audio = neg.audio.as_ref().filter(|a| {
        offer
            .media
            .get(a.index)
            .is_some_and(|m| m.kind == SdpMediaKind::Audio)
    });
    let accepted =
        |i: usize| video.is_some_and(|v| v.index == i) || audio.is_some_and(|a| a.index == i);

    if neg.bundle {
        // RFC 8843 §7.3.1: the answer's group holds the accepted mids, tagged one first;
        // rejected sections are left out (§7.3.3).
        let mut group = String::from("a=group:BUNDLE");
        for (_, m) in offer.media.iter().enumerate().filter(|(i, _)| accepted(*i)) {
            if let Some(mid) = m.mid {
                group.push(' ');
                group.push_str(mid);
            }
        }
        line(&mut out, format_args!("{group}"));
    }
    // RFC 8839 §5.3: session-level ice-lite.
    line(&mut out, format_args!("a=ice-lite"));
    line(&mut out, format_args!("a=msid-semantic: WMS"));

    for (index, m) in offer.media.iter().enumerate() {
        if let Some(v) = video.filter(|v| v.index == index) {
            write_accepted(&mut out, m, &[Some(v.pt), v.rtx_pt], local, &v.ext, send.is_some());
            write_video(&mut out, v);
            if let Some(sp) = send {
                write_source(&mut out, sp, sp.video_ssrc, "video");
            }
            write_candidates(&mut out, local);
        } else if let Some(a) = audio.filter(|a| a.index == index) {
            write_accepted(&mut out, m, &[Some(a.pt)], local, &a.ext, send.is_some());
            write_audio(&mut out, a);
            if let Some(sp) = send {
                write_source(&mut out, sp, sp.audio_ssrc, "audio");
            }
            write_candidates(&mut out, local);
        } else {
            // RFC 3264 §6: rejected with port 0, at least one format, same proto.
            let fmt = m.formats.first().copied().unwrap_or("0");
            line(
                &mut out,
                format_args!("m={} 0 {} {}", m.media, m.proto, fmt),
            );
            line(&mut out, format_args!("c=IN IP4 0.0.0.0"));
            if let Some(mid) = m.mid {
                line(&mut out, format_args!("a=mid:{mid}"));
            }
        }
    }
    out
}

fn line(out: &mut String, args: fmt::Arguments<'_>) {
    // Writing into a String cannot fail.
    let _ = out.write_fmt(args);
    out.push_str("\r\n");
}

/// `m=`, `c=`, mid, direction, rtcp-mux, ICE, DTLS and header extensions.
fn write_accepted(
    out: &mut String,
    m: &SdpMedia<'_>,
    pts: &[Option<u8>],
    local: &LocalParams,
    ext: &SdpExtIds,
    send: bool,
) {
    // RFC 8839: m=/c= carry the default candidate (9 / 0.0.0.0 when none).
    let (addr, port) = match local.candidates.first() {
        Some((IpAddr::V4(ip), port)) => (format!("IP4 {ip}"), *port),
        Some((IpAddr::V6(ip), port)) => (format!("IP6 {ip}"), *port),
        None => ("IP4 0.0.0.0".to_owned(), NO_CANDIDATE_PORT),
    };
    let mut fmts = String::new();
    for pt in pts.iter().flatten() {
        let _ = write!(fmts, " {pt}");
    }
    line(
        out,
        format_args!("m={} {} {}{}", m.media, port, m.proto, fmts),
    );
    line(out, format_args!("c=IN {addr}"));
    if let Some(mid) = m.mid {
        line(out, format_args!("a=mid:{mid}"));
    }
    // RFC 8829 §5.3.1: the answer's direction reverses the offer's.
    line(out, format_args!("{}", if send { "a=sendonly" } else { "a=recvonly" }));
    // RFC 5761 §5.1.1: echo rtcp-mux.
    line(out, format_args!("a=rtcp-mux"));
    line(out, format_args!("a=ice-ufrag:{}", local.ice_ufrag));
    line(out, format_args!("a=ice-pwd:{}", local.ice_pwd));
    line(
        out,
        format_args!("a=fingerprint:sha-256 {}", local.fingerprint_sha256),
    );
    // RFC 5763 §5: the answerer picks active or passive; we are the DTLS server.
    line(out, format_args!("a=setup:passive"));
    // A sender writes only the extension it puts on its packets: transport-wide
    // sequence numbers, so the receiver's transport-cc feedback comes back.
    let mut exts = if send {
        [(ext.transport_cc, URI_TRANSPORT_CC), (None, ""), (None, ""), (None, "")]
    } else {
        [
            (ext.abs_send_time, URI_ABS_SEND_TIME),
            (ext.transport_cc, URI_TRANSPORT_CC),
            (ext.sdes_mid, URI_SDES_MID),
            (ext.toffset, URI_TOFFSET),
        ]
    };
    exts.sort_by_key(|(id, _)| *id);
    for (id, uri) in exts {
        if let Some(id) = id {
            line(out, format_args!("a=extmap:{id} {uri}"));
        }
    }
}

fn write_feedback(out: &mut String, pt: u8, fb: &SdpRtcpFeedback) {
    let kinds = [
        (fb.nack, "nack"),
        (fb.nack_pli, "nack pli"),
        (fb.ccm_fir, "ccm fir"),
        (fb.goog_remb, "goog-remb"),
        (fb.transport_cc, "transport-cc"),
    ];
    for (_, kind) in kinds.iter().filter(|(on, _)| *on) {
        line(out, format_args!("a=rtcp-fb:{pt} {kind}"));
    }
}

fn write_video(out: &mut String, v: &NegotiatedVideo) {
    let pt = v.pt;
    line(out, format_args!("a=rtpmap:{pt} H264/{}", v.clock_rate));
    write_feedback(out, pt, &v.feedback);
    let asym = if v.level_asymmetry_allowed {
        "level-asymmetry-allowed=1;"
    } else {
        ""
    };
    line(
        out,
        format_args!(
            "a=fmtp:{pt} {asym}packetization-mode=1;profile-level-id={:06x}",
            v.profile_level_id & 0x00ff_ffff
        ),
    );
    if let Some(rtx) = v.rtx_pt {
        // RFC 4588 §8: rtx with apt naming the original payload type.
        line(out, format_args!("a=rtpmap:{rtx} rtx/{}", v.clock_rate));
        line(out, format_args!("a=fmtp:{rtx} apt={pt}"));
    }
}

fn write_audio(out: &mut String, a: &NegotiatedAudio) {
    let pt = a.pt;
    if a.channels > 1 {
        line(
            out,
            format_args!(
                "a=rtpmap:{pt} {}/{}/{}",
                a.codec.name(),
                a.clock_rate,
                a.channels
            ),
        );
    } else {
        line(
            out,
            format_args!("a=rtpmap:{pt} {}/{}", a.codec.name(), a.clock_rate),
        );
    }
    write_feedback(out, pt, &a.feedback);
    let mut params = String::new();
    if let Some(minptime) = a.minptime {
        let _ = write!(params, "minptime={minptime}");
    }
    if let Some(fec) = a.useinbandfec {
        if !params.is_empty() {
            params.push(';');
        }
        let _ = write!(params, "useinbandfec={}", u8::from(fec));
    }
    if a.stereo {
        if !params.is_empty() {
            params.push(';');
        }
        params.push_str("stereo=1");
    }
    if !params.is_empty() {
        line(out, format_args!("a=fmtp:{pt} {params}"));
    }
}

/// `a=msid` (RFC 8830) and `a=ssrc` (RFC 5576) of one sent track.
fn write_source(out: &mut String, sp: &SendParams, ssrc: u32, track: &str) {
    let (stream, cname) = (&sp.stream_id, &sp.cname);
    line(out, format_args!("a=msid:{stream} {stream}-{track}"));
    line(out, format_args!("a=ssrc:{ssrc} cname:{cname}"));
    line(out, format_args!("a=ssrc:{ssrc} msid:{stream} {stream}-{track}"));
}

fn write_candidates(out: &mut String, local: &LocalParams) {
    for (i, (ip, port)) in local.candidates.iter().take(MAX_CANDIDATES).enumerate() {
        // RFC 8445 §5.1.2: unique priorities; lower local preference for later ones.
        let offset = u32::try_from(i).unwrap_or(0).saturating_mul(256);
        let priority = HOST_PRIORITY.saturating_sub(offset);
        line(
            out,
            format_args!(
                "a=candidate:{} 1 udp {priority} {ip} {port} typ host",
                i + 1
            ),
        );
    }
    // RFC 8840 end-of-candidates: an ICE-lite agent has nothing to trickle.
    line(out, format_args!("a=end-of-candidates"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A Chromium 12x publish offer (getUserMedia audio+video, addTransceiver sendonly),
    /// written by hand after the shape of real ones: BUNDLE 0 1, transport attributes
    /// repeated per section, no candidates yet (trickle).
    pub(crate) const CHROME_OFFER: &str = "v=0\r\n\
o=- 3966394421565325891 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS f2b1c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Qm7t\r\n\
a=ice-pwd:Hb3kN0rC9vWq4ZtLx7ePjA2s\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 C8:4E:0B:97:2D:51:F6:13:8A:E0:66:3B:D9:74:25:AF:10:CB:58:E3:99:07:4D:B2:6F:1A:83:D5:3C:E8:47:92\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendonly\r\n\
a=msid:f2b1c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d 9a8b7c6d-5e4f-4321-8765-43210fedcba9\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:2872446011 cname:mP3vQx8sKz1Lb7Tw\r\n\
a=ssrc:2872446011 msid:f2b1c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d 9a8b7c6d-5e4f-4321-8765-43210fedcba9\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 35 36 37 38 102 103 104 105 106 107 108 109 127 125 39 40 45 46 112 113 114\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Qm7t\r\n\
a=ice-pwd:Hb3kN0rC9vWq4ZtLx7ePjA2s\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 C8:4E:0B:97:2D:51:F6:13:8A:E0:66:3B:D9:74:25:AF:10:CB:58:E3:99:07:4D:B2:6F:1A:83:D5:3C:E8:47:92\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:13 urn:3gpp:video-orientation\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type\r\n\
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing\r\n\
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
a=sendonly\r\n\
a=msid:f2b1c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d 1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 goog-remb\r\n\
a=rtcp-fb:96 transport-cc\r\n\
a=rtcp-fb:96 ccm fir\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:98 VP9/90000\r\n\
a=rtcp-fb:98 goog-remb\r\n\
a=rtcp-fb:98 transport-cc\r\n\
a=rtcp-fb:98 ccm fir\r\n\
a=rtcp-fb:98 nack\r\n\
a=rtcp-fb:98 nack pli\r\n\
a=fmtp:98 profile-id=0\r\n\
a=rtpmap:99 rtx/90000\r\n\
a=fmtp:99 apt=98\r\n\
a=rtpmap:100 VP9/90000\r\n\
a=rtcp-fb:100 goog-remb\r\n\
a=rtcp-fb:100 transport-cc\r\n\
a=rtcp-fb:100 ccm fir\r\n\
a=rtcp-fb:100 nack\r\n\
a=rtcp-fb:100 nack pli\r\n\
a=fmtp:100 profile-id=2\r\n\
a=rtpmap:101 rtx/90000\r\n\
a=fmtp:101 apt=100\r\n\
a=rtpmap:35 VP9/90000\r\n\
a=rtcp-fb:35 goog-remb\r\n\
a=rtcp-fb:35 transport-cc\r\n\
a=rtcp-fb:35 ccm fir\r\n\
a=rtcp-fb:35 nack\r\n\
a=rtcp-fb:35 nack pli\r\n\
a=fmtp:35 profile-id=1\r\n\
a=rtpmap:36 rtx/90000\r\n\
a=fmtp:36 apt=35\r\n\
a=rtpmap:37 VP9/90000\r\n\
a=rtcp-fb:37 goog-remb\r\n\
a=rtcp-fb:37 transport-cc\r\n\
a=rtcp-fb:37 ccm fir\r\n\
a=rtcp-fb:37 nack\r\n\
a=rtcp-fb:37 nack pli\r\n\
a=fmtp:37 profile-id=3\r\n\
a=rtpmap:38 rtx/90000\r\n\
a=fmtp:38 apt=37\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 goog-remb\r\n\
a=rtcp-fb:102 transport-cc\r\n\
a=rtcp-fb:102 ccm fir\r\n\
a=rtcp-fb:102 nack\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\n\
a=rtpmap:104 H264/90000\r\n\
a=rtcp-fb:104 goog-remb\r\n\
a=rtcp-fb:104 transport-cc\r\n\
a=rtcp-fb:104 ccm fir\r\n\
a=rtcp-fb:104 nack\r\n\
a=rtcp-fb:104 nack pli\r\n\
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
a=rtpmap:105 rtx/90000\r\n\
a=fmtp:105 apt=104\r\n\
a=rtpmap:106 H264/90000\r\n\
a=rtcp-fb:106 goog-remb\r\n\
a=rtcp-fb:106 transport-cc\r\n\
a=rtcp-fb:106 ccm fir\r\n\
a=rtcp-fb:106 nack\r\n\
a=rtcp-fb:106 nack pli\r\n\
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:107 rtx/90000\r\n\
a=fmtp:107 apt=106\r\n\
a=rtpmap:108 H264/90000\r\n\
a=rtcp-fb:108 goog-remb\r\n\
a=rtcp-fb:108 transport-cc\r\n\
a=rtcp-fb:108 ccm fir\r\n\
a=rtcp-fb:108 nack\r\n\
a=rtcp-fb:108 nack pli\r\n\
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:109 rtx/90000\r\n\
a=fmtp:109 apt=108\r\n\
a=rtpmap:127 H264/90000\r\n\
a=rtcp-fb:127 goog-remb\r\n\
a=rtcp-fb:127 transport-cc\r\n\
a=rtcp-fb:127 ccm fir\r\n\
a=rtcp-fb:127 nack\r\n\
a=rtcp-fb:127 nack pli\r\n\
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
a=rtpmap:125 rtx/90000\r\n\
a=fmtp:125 apt=127\r\n\
a=rtpmap:39 H264/90000\r\n\
a=rtcp-fb:39 goog-remb\r\n\
a=rtcp-fb:39 transport-cc\r\n\
a=rtcp-fb:39 ccm fir\r\n\
a=rtcp-fb:39 nack\r\n\
a=rtcp-fb:39 nack pli\r\n\
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f\r\n\
a=rtpmap:40 rtx/90000\r\n\
a=fmtp:40 apt=39\r\n\
a=rtpmap:45 AV1/90000\r\n\
a=rtcp-fb:45 goog-remb\r\n\
a=rtcp-fb:45 transport-cc\r\n\
a=rtcp-fb:45 ccm fir\r\n\
a=rtcp-fb:45 nack\r\n\
a=rtcp-fb:45 nack pli\r\n\
a=fmtp:45 level-idx=5;profile=0;tier=0\r\n\
a=rtpmap:46 rtx/90000\r\n\
a=fmtp:46 apt=45\r\n\
a=rtpmap:112 red/90000\r\n\
a=rtpmap:113 rtx/90000\r\n\
a=fmtp:113 apt=112\r\n\
a=rtpmap:114 ulpfec/90000\r\n\
a=ssrc-group:FID 1995785231 3536254376\r\n\
a=ssrc:1995785231 cname:mP3vQx8sKz1Lb7Tw\r\n\
a=ssrc:1995785231 msid:f2b1c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d 1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5\r\n\
a=ssrc:3536254376 cname:mP3vQx8sKz1Lb7Tw\r\n\
a=ssrc:3536254376 msid:f2b1c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d 1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5\r\n";

    /// An OBS 30 / libdatachannel-style WHIP offer: LF line endings, session-level
    /// ICE and DTLS attributes, comma-separated ice-options, one codec per section,
    /// gathered host and srflx candidates.
    const OBS_OFFER: &str = "v=0
o=rtc 4107523816 0 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=group:LS 0 1
a=msid-semantic:WMS *
a=setup:actpass
a=ice-ufrag:Ut5b
a=ice-pwd:pK2r8sV1wX9yZ0aB3cD4eF5g
a=ice-options:ice2,trickle
a=fingerprint:sha-256 1D:6C:A2:3E:90:4B:F7:58:0E:C1:72:9D:35:B8:E4:06:AB:21:5F:C9:83:7A:D0:44:19:E6:BB:62:0F:9C:38:D7
m=audio 51515 UDP/TLS/RTP/SAVPF 111
c=IN IP4 192.168.1.20
a=mid:0
a=sendonly
a=ssrc:1182453371 cname:obs-cname-7f3a
a=ssrc:1182453371 msid:obs-stream obs-audio
a=msid:obs-stream obs-audio
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1
a=candidate:1 1 UDP 2122317823 192.168.1.20 51515 typ host
a=candidate:2 1 UDP 1686110207 203.0.113.7 51515 typ srflx raddr 0.0.0.0 rport 0
a=end-of-candidates
m=video 51515 UDP/TLS/RTP/SAVPF 96
c=IN IP4 192.168.1.20
a=mid:1
a=sendonly
a=ssrc:3402947156 cname:obs-cname-7f3a
a=ssrc:3402947156 msid:obs-stream obs-video
a=msid:obs-stream obs-video
a=rtcp-mux
a=rtpmap:96 H264/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 goog-remb
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1
a=candidate:1 1 UDP 2122317823 192.168.1.20 51515 typ host
a=candidate:2 1 UDP 1686110207 203.0.113.7 51515 typ srflx raddr 0.0.0.0 rport 0
a=end-of-candidates
";

    const LOCAL_FP: &str = "5B:01:9C:E2:47:D8:3A:6F:B1:20:8E:C5:74:19:AD:F3:62:0B:97:4E:D1:38:AC:5F:E6:13:80:2D:B9:74:C0:1A";

    fn local() -> LocalParams {
        LocalParams {
            ice_ufrag: "srv1".into(),
            ice_pwd: "0123456789abcdefghijkl".into(),
            fingerprint_sha256: LOCAL_FP.into(),
            candidates: vec![
                (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 20000),
                (
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
                    20000,
                ),
            ],
            session_id: 0x8000_0000_0000_0007,
        }
    }

    /// Builds a small offer: session header, BUNDLE over `mids`, then `sections`.
    fn offer_with(bundle: &str, sections: &[&str]) -> String {
        let mut s = String::from(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 C8:4E:0B:97:2D:51:F6:13:8A:E0:66:3B:D9:74:25:AF:10:CB:58:E3:99:07:4D:B2:6F:1A:83:D5:3C:E8:47:92\r\n",
        );
        if !bundle.is_empty() {
            s.push_str(&format!("a=group:BUNDLE {bundle}\r\n"));
        }
        for sec in sections {
            s.push_str(sec);
        }
        s
    }

    const OPUS_SECTION: &str =
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
    const VP8_SECTION: &str =
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";

    fn h264_section(mid: &str, fmtps: &[(u8, &str)]) -> String {
        let pts: Vec<String> = fmtps.iter().map(|(pt, _)| pt.to_string()).collect();
        let mut s = format!(
            "m=video 9 UDP/TLS/RTP/SAVPF {}\r\na=mid:{mid}\r\na=sendonly\r\na=rtcp-mux\r\n",
            pts.join(" ")
        );
        for (pt, fmtp) in fmtps {
            s.push_str(&format!(
                "a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} {fmtp}\r\n"
            ));
        }
        s
    }

    fn lines(s: &str) -> Vec<&str> {
        s.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    // ---- parsing ----

    #[test]
    fn parses_chrome_offer() {
        let o = parse_offer(CHROME_OFFER).unwrap();
        assert_eq!(o.session.bundle, vec!["0", "1"]);
        assert!(!o.session.ice_lite);
        assert_eq!(o.media.len(), 2);

        let a = &o.media[0];
        assert_eq!(a.kind, SdpMediaKind::Audio);
        assert_eq!(a.port, 9);
        assert_eq!(a.proto, "UDP/TLS/RTP/SAVPF");
        assert_eq!(
            a.formats,
            vec!["111", "63", "9", "0", "8", "13", "110", "126"]
        );
        assert_eq!(a.mid, Some("0"));
        assert_eq!(a.direction, SdpDirection::SendOnly);
        assert_eq!(a.ice_ufrag, Some("Qm7t"));
        assert_eq!(a.ice_pwd, Some("Hb3kN0rC9vWq4ZtLx7ePjA2s"));
        assert_eq!(a.setup, Some(SdpSetup::ActPass));
        assert!(a.rtcp_mux);
        assert_eq!(a.fingerprints.len(), 1);
        assert_eq!(a.fingerprints[0].hash, SdpHash::Sha256);
        assert_eq!(a.fingerprints[0].bytes().len(), 32);
        assert_eq!(&a.fingerprints[0].bytes()[..3], &[0xC8, 0x4E, 0x0B]);
        assert_eq!(a.fingerprints[0].bytes()[31], 0x92);
        let opus = a.rtpmap(111).unwrap();
        assert_eq!(
            (opus.encoding, opus.clock_rate, opus.channels),
            ("opus", 48000, Some(2))
        );
        assert_eq!(a.rtpmap(9).unwrap().channels, None);
        assert_eq!(a.fmtp(111).unwrap().get("minptime"), Some("10"));
        assert_eq!(a.fmtp(111).unwrap().get("USEINBANDFEC"), Some("1"));
        assert_eq!(a.fmtp(63).unwrap().params, vec![("111/111", "")]);
        assert_eq!(
            a.rtcp_fbs,
            vec![SdpRtcpFb {
                pt: Some(111),
                value: "transport-cc"
            }]
        );
        assert_eq!(a.extmaps.len(), 4);
        assert_eq!(a.extmaps[2].uri, URI_TRANSPORT_CC);
        assert_eq!(a.ssrcs.len(), 1);
        assert_eq!(a.ssrcs[0].ssrc, 2872446011);
        assert_eq!(a.ssrcs[0].cname, Some("mP3vQx8sKz1Lb7Tw"));
        assert!(a.ssrcs[0].msid.unwrap().ends_with("43210fedcba9"));
        assert!(a.msid.unwrap().starts_with("f2b1c3d4"));
        assert!(a.candidates.is_empty());
        assert!(!a.end_of_candidates);

        let v = &o.media[1];
        assert_eq!(v.kind, SdpMediaKind::Video);
        assert_eq!(v.formats.len(), 27);
        assert_eq!(v.rtpmaps.len(), 27);
        assert_eq!(v.extmaps.len(), 11);
        assert_eq!(
            v.ssrc_fids,
            vec![SdpSsrcFid {
                primary: 1995785231,
                rtx: 3536254376
            }]
        );
        assert_eq!(v.ssrcs.len(), 2);
        assert_eq!(v.fmtp(127).unwrap().get("profile-level-id"), Some("4d001f"));
        assert_eq!(v.rtcp_fbs.iter().filter(|f| f.pt == Some(106)).count(), 5);
    }

    #[test]
    fn parses_obs_offer_with_lf_and_session_level_transport() {
        let o = parse_offer(OBS_OFFER).unwrap();
        assert_eq!(o.session.ice_ufrag, Some("Ut5b"));
        assert_eq!(o.session.ice_options, vec!["ice2", "trickle"]);
        assert_eq!(o.session.setup, Some(SdpSetup::ActPass));
        assert_eq!(o.media.len(), 2);
        for m in &o.media {
            // Inherited from the session level.
            assert_eq!(m.ice_ufrag, Some("Ut5b"));
            assert_eq!(m.ice_pwd, Some("pK2r8sV1wX9yZ0aB3cD4eF5g"));
            assert_eq!(m.setup, Some(SdpSetup::ActPass));
            assert_eq!(m.fingerprints.len(), 1);
            assert_eq!(m.port, 51515);
            assert_eq!(m.candidates.len(), 2);
            assert!(m.end_of_candidates);
        }
        assert_eq!(
            o.media[0].candidates[0],
            "1 1 UDP 2122317823 192.168.1.20 51515 typ host"
        );
        assert_eq!(o.media[1].ssrcs[0].msid, Some("obs-stream obs-video"));
    }

    #[test]
    fn media_level_overrides_session_level() {
        let text = offer_with(
            "0",
            &[
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:mmmm\r\n\
a=ice-pwd:MMMMMMMMMMMMMMMMMMMMMM\r\na=setup:active\r\na=rtpmap:111 opus/48000/2\r\n",
            ],
        );
        let o = parse_offer(&text).unwrap();
        assert_eq!(o.session.ice_ufrag, Some("abcd"));
        assert_eq!(o.media[0].ice_ufrag, Some("mmmm"));
        assert_eq!(o.media[0].ice_pwd, Some("MMMMMMMMMMMMMMMMMMMMMM"));
        assert_eq!(o.media[0].setup, Some(SdpSetup::Active));
        // No direction anywhere: RFC 8866 §6.7 default.
        assert_eq!(o.media[0].direction, SdpDirection::SendRecv);
    }

    #[test]
    fn session_level_direction_applies_to_sections() {
        let text = "v=0\r\ns=-\r\na=sendonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n";
        let o = parse_offer(text).unwrap();
        assert_eq!(o.media[0].direction, SdpDirection::SendOnly);
        assert_eq!(o.media[1].direction, SdpDirection::Inactive);
    }

    #[test]
    fn rejects_non_sdp_and_malformed_lines() {
        assert_eq!(parse_offer(""), Err(SdpError::NotSdp));
        assert_eq!(
            parse_offer("o=- 1 1 IN IP4 0.0.0.0\r\n"),
            Err(SdpError::NotSdp)
        );
        assert_eq!(parse_offer("v=1\r\n"), Err(SdpError::NotSdp));
        assert_eq!(
            parse_offer("v=0\r\nhello\r\n"),
            Err(SdpError::Malformed {
                what: "line",
                line: 2
            })
        );
        assert_eq!(
            parse_offer("v=0\nm=audio\n"),
            Err(SdpError::Malformed {
                what: "m= line",
                line: 2
            })
        );
        assert_eq!(
            parse_offer("v=0\nm=audio 70000 RTP/AVP 0\n"),
            Err(SdpError::Malformed {
                what: "m= line",
                line: 2
            })
        );
        let bad = [
            ("a=rtpmap:200 foo/90000", "a=rtpmap"),
            ("a=rtpmap:96 H264", "a=rtpmap"),
            ("a=rtpmap:96 H264/x", "a=rtpmap"),
            ("a=fmtp:x apt=1", "a=fmtp"),
            ("a=rtcp-fb:96", "a=rtcp-fb"),
            ("a=extmap:x urn:foo", "a=extmap"),
            ("a=extmap:1/sideways urn:foo", "a=extmap"),
            ("a=ssrc:abc cname:x", "a=ssrc"),
            ("a=ssrc-group:FID 1", "a=ssrc-group:FID"),
            ("a=fingerprint:sha-256 C8:4", "a=fingerprint"),
            ("a=fingerprint:sha-256", "a=fingerprint"),
            ("a=setup:sometimes", "a=setup"),
            ("a=mid:", "a=mid"),
            ("a=mid:a b", "a=mid"),
        ];
        for (attr, what) in bad {
            let text = format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{attr}\r\n");
            assert_eq!(
                parse_offer(&text),
                Err(SdpError::Malformed { what, line: 3 }),
                "{attr}"
            );
        }
    }

    #[test]
    fn tolerates_unknown_attributes_lines_and_blank_lines() {
        let text =
            "v=0\n\nx=whatever\na=foo:bar\na=sendrecv:odd\nm=audio 9 UDP/TLS/RTP/SAVPF 111\n\
a=x-google-flag:conference\na=rtpmap:111 opus/48000/2   \nz=0\n\n";
        let o = parse_offer(text).unwrap();
        assert_eq!(o.media[0].rtpmap(111).unwrap().channels, Some(2));
        // rtpmap/fmtp/rtcp-fb are not RTP attributes in a data-channel section.
        let text = "v=0\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=rtpmap:x y\na=fmtp:webrtc-datachannel max-message-size=262144\n";
        let o = parse_offer(text).unwrap();
        assert_eq!(o.media[0].kind, SdpMediaKind::Application);
        assert!(o.media[0].rtpmaps.is_empty());
    }

    #[test]
    fn extmap_direction_and_out_of_range_ids() {
        let text = "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=extmap:3/recvonly http://x\n\
a=extmap:4096 urn:neg-only\na=extmap:0 urn:zero\na=extmap:200 urn:two-byte attr\n";
        let o = parse_offer(text).unwrap();
        let e = &o.media[0].extmaps;
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            SdpExtmap {
                id: 3,
                direction: Some(SdpDirection::RecvOnly),
                uri: "http://x"
            }
        );
        assert_eq!(e[1].id, 200);
    }

    #[test]
    fn enforces_bounds() {
        let big = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_SDP_LEN / 5));
        assert_eq!(parse_offer(&big), Err(SdpError::TooLong { len: big.len() }));

        let many = format!(
            "v=0\r\n{}",
            "m=audio 9 RTP/AVP 0\r\n".repeat(MAX_MEDIA_SECTIONS + 1)
        );
        assert_eq!(parse_offer(&many), Err(SdpError::TooManyMediaSections));
        let ok = format!(
            "v=0\r\n{}",
            "m=audio 9 RTP/AVP 0\r\n".repeat(MAX_MEDIA_SECTIONS)
        );
        assert_eq!(parse_offer(&ok).unwrap().media.len(), MAX_MEDIA_SECTIONS);

        let fmts = vec!["96"; MAX_PAYLOAD_TYPES + 1].join(" ");
        let text = format!("v=0\r\nm=video 9 RTP/AVP {fmts}\r\n");
        assert_eq!(
            parse_offer(&text),
            Err(SdpError::TooManyPayloadTypes { line: 2 })
        );

        let maps = "a=rtpmap:96 VP8/90000\r\n".repeat(MAX_PAYLOAD_TYPES + 1);
        let text = format!("v=0\r\nm=video 9 RTP/AVP 96\r\n{maps}");
        assert_eq!(
            parse_offer(&text),
            Err(SdpError::TooManyPayloadTypes {
                line: 3 + MAX_PAYLOAD_TYPES
            })
        );

        let cands = "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n".repeat(MAX_CANDIDATES + 1);
        let text = format!("v=0\r\nm=video 9 RTP/AVP 96\r\n{cands}");
        assert_eq!(
            parse_offer(&text),
            Err(SdpError::TooMany {
                what: "a=candidate lines",
                limit: MAX_CANDIDATES
            })
        );

        let ssrcs: String = (0..=MAX_SSRCS)
            .map(|i| format!("a=ssrc:{i} cname:x\r\n"))
            .collect();
        let text = format!("v=0\r\nm=video 9 RTP/AVP 96\r\n{ssrcs}");
        assert_eq!(
            parse_offer(&text),
            Err(SdpError::TooMany {
                what: "SSRCs",
                limit: MAX_SSRCS
            })
        );

        let long_mid = "m".repeat(MAX_TOKEN_LEN + 1);
        let text = format!("v=0\r\nm=video 9 RTP/AVP 96\r\na=mid:{long_mid}\r\n");
        assert_eq!(
            parse_offer(&text),
            Err(SdpError::Malformed {
                what: "a=mid",
                line: 3
            })
        );
    }

    // ---- negotiation ----

    #[test]
    fn negotiates_chrome_offer() {
        let o = parse_offer(CHROME_OFFER).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let v = n.video.as_ref().unwrap();
        // 42e01f pm1 beats the earlier 42001f pm1 (102) and 4d001f (127).
        assert_eq!(v.pt, 106);
        assert_eq!(v.rtx_pt, Some(107));
        assert_eq!(v.profile_level_id, 0x42e01f);
        assert!(v.level_asymmetry_allowed);
        assert_eq!(v.index, 1);
        assert_eq!(v.mid.as_deref(), Some("1"));
        assert_eq!(
            v.feedback,
            SdpRtcpFeedback {
                nack: true,
                nack_pli: true,
                ccm_fir: true,
                goog_remb: true,
                transport_cc: true
            }
        );
        assert_eq!(
            v.ext,
            SdpExtIds {
                transport_cc: Some(3),
                abs_send_time: Some(2),
                sdes_mid: Some(4),
                toffset: Some(14)
            }
        );
        assert_eq!((v.ssrc, v.rtx_ssrc), (Some(1995785231), Some(3536254376)));

        let a = n.audio.as_ref().unwrap();
        assert_eq!(
            (a.pt, a.codec, a.clock_rate, a.channels),
            (111, SdpAudioCodec::Opus, 48000, 2)
        );
        assert_eq!((a.minptime, a.useinbandfec), (Some(10), Some(true)));
        assert_eq!(
            a.feedback,
            SdpRtcpFeedback {
                transport_cc: true,
                ..Default::default()
            }
        );
        assert_eq!(a.ext.transport_cc, Some(3));
        assert_eq!(a.ssrc, Some(2872446011));

        assert!(n.bundle);
        assert_eq!(n.remote_ice_ufrag, "Qm7t");
        assert_eq!(n.remote_ice_pwd, "Hb3kN0rC9vWq4ZtLx7ePjA2s");
        assert_eq!(n.remote_fingerprint, o.media[0].fingerprints[0]);
    }

    #[test]
    fn negotiates_obs_offer() {
        let o = parse_offer(OBS_OFFER).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let v = n.video.as_ref().unwrap();
        assert_eq!((v.pt, v.rtx_pt, v.index), (96, None, 1));
        assert_eq!(
            v.feedback,
            SdpRtcpFeedback {
                nack: true,
                nack_pli: true,
                goog_remb: true,
                ..Default::default()
            }
        );
        assert_eq!(v.ext, SdpExtIds::default());
        assert_eq!((v.ssrc, v.rtx_ssrc), (Some(3402947156), None));
        let a = n.audio.as_ref().unwrap();
        assert_eq!(
            (a.pt, a.index, a.minptime, a.useinbandfec),
            (111, 0, Some(10), Some(true))
        );
        assert_eq!(n.remote_ice_ufrag, "Ut5b");
        // OBS says it sends stereo (sprop-stereo=1): the answer asks for it.
        assert!(a.stereo);
        let answer = build_answer(&o, &n, &local());
        assert!(
            answer.contains("a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn chrome_opus_is_mono_unless_it_says_stereo() {
        // Chrome offers no sprop-stereo: it sends mono unless told stereo=1, and the
        // answer does not tell it.
        let o = parse_offer(CHROME_OFFER).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        assert!(!n.audio.as_ref().unwrap().stereo);
        let answer = build_answer(&o, &n, &local());
        assert!(!answer.contains("stereo"), "{answer}");
    }

    #[test]
    fn h264_preference_order() {
        let pick = |fmtps: &[(u8, &str)]| {
            let text = offer_with("1", &[&h264_section("1", fmtps)]);
            let o = parse_offer(&text).unwrap();
            negotiate(&o, &CodecPrefs::default()).map(|n| n.video.unwrap().pt)
        };
        let pm1 = |plid: &str| format!("packetization-mode=1;profile-level-id={plid}");
        let (cb, b, main, high) = (pm1("42e01f"), pm1("42001f"), pm1("4d001f"), pm1("640c1f"));
        assert_eq!(
            pick(&[(100, &high), (101, &main), (102, &b), (103, &cb)]),
            Ok(103)
        );
        assert_eq!(pick(&[(100, &high), (101, &main), (102, &b)]), Ok(102));
        // Among "other profiles" the offer's order decides.
        assert_eq!(pick(&[(100, &high), (101, &main)]), Ok(100));
        assert_eq!(pick(&[(101, &main), (100, &high)]), Ok(101));
        // Another Baseline-family level ranks above Main/High.
        assert_eq!(pick(&[(100, &main), (101, &pm1("42e034"))]), Ok(101));
        // Upper-case hex and parameter names are accepted.
        assert_eq!(
            pick(&[
                (100, "PACKETIZATION-MODE=1;profile-level-id=42E01F"),
                (101, &b)
            ]),
            Ok(100)
        );
        // packetization-mode 0 or absent is never chosen.
        assert_eq!(
            pick(&[
                (100, "packetization-mode=0;profile-level-id=42e01f"),
                (101, "profile-level-id=42e01f")
            ]),
            Err(SdpError::NoCommonCodecs)
        );
        // A broken profile-level-id is skipped, absent means Baseline level 1.0.
        assert_eq!(
            pick(&[
                (100, "packetization-mode=1;profile-level-id=zz"),
                (101, "packetization-mode=1")
            ]),
            Ok(101)
        );
    }

    #[test]
    fn rtx_and_feedback_follow_the_chosen_pt() {
        let text = offer_with(
            "1",
            &["m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\n\
a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtcp-fb:96 nack pli\r\na=rtcp-fb:* ccm fir\r\na=rtcp-fb:98 goog-remb\r\na=rtcp-fb:96 nack pli extra\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=98\r\na=rtpmap:98 VP8/90000\r\n\
a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=96\r\n\
a=ssrc:5 cname:c\r\n"],
        );
        let o = parse_offer(&text).unwrap();
        let v = negotiate(&o, &CodecPrefs::default())
            .unwrap()
            .video
            .unwrap();
        assert_eq!((v.pt, v.rtx_pt), (96, Some(99)));
        assert_eq!(
            v.feedback,
            SdpRtcpFeedback {
                nack_pli: true,
                ccm_fir: true,
                ..Default::default()
            }
        );
        assert_eq!((v.ssrc, v.rtx_ssrc), (Some(5), None));
    }

    #[test]
    fn vp8_only_video_is_no_common_codecs() {
        let text = offer_with("0 1", &[OPUS_SECTION, VP8_SECTION]);
        let o = parse_offer(&text).unwrap();
        let err = negotiate(&o, &CodecPrefs::default()).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodecs);
        assert_eq!(err.to_string(), "No common codecs");
    }

    #[test]
    fn vp8_video_rejected_when_video_is_optional() {
        let text = offer_with("0 1", &[OPUS_SECTION, VP8_SECTION]);
        let o = parse_offer(&text).unwrap();
        let prefs = CodecPrefs {
            require_video_codec: false,
            ..CodecPrefs::default()
        };
        let n = negotiate(&o, &prefs).unwrap();
        assert!(n.video.is_none());
        assert_eq!(n.audio.as_ref().unwrap().pt, 111);
        let answer = build_answer(&o, &n, &local());
        let l = lines(&answer);
        assert!(l.contains(&"a=group:BUNDLE 0"));
        assert!(l.contains(&"m=video 0 UDP/TLS/RTP/SAVPF 96"));
        let re = parse_offer(&answer).unwrap();
        assert_eq!(re.media[1].port, 0);
        assert_eq!(re.media[1].mid, Some("1"));
        assert!(re.media[1].rtpmaps.is_empty());
    }

    #[test]
    fn video_without_usable_audio_and_no_h264_fails() {
        let pcmu_only = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n";
        let text = offer_with("0 1", &[pcmu_only, VP8_SECTION]);
        let o = parse_offer(&text).unwrap();
        let prefs = CodecPrefs {
            allow_g711: false,
            require_video_codec: false,
        };
        assert_eq!(negotiate(&o, &prefs), Err(SdpError::NoCommonCodecs));
        // With G.711 allowed, the static PT 0 (no rtpmap) is PCMU.
        let prefs = CodecPrefs {
            allow_g711: true,
            require_video_codec: false,
        };
        let a = negotiate(&o, &prefs).unwrap().audio.unwrap();
        assert_eq!(
            (a.pt, a.codec, a.clock_rate, a.channels),
            (0, SdpAudioCodec::Pcmu, 8000, 1)
        );
    }

    #[test]
    fn g711_fallback_follows_offer_order() {
        let sec = "m=audio 9 UDP/TLS/RTP/SAVPF 9 8 0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n";
        let o_text = offer_with("0", &[sec]);
        let o = parse_offer(&o_text).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let a = n.audio.as_ref().unwrap();
        assert_eq!((a.pt, a.codec, a.minptime), (8, SdpAudioCodec::Pcma, None));
        let answer = build_answer(&o, &n, &local());
        assert!(lines(&answer).contains(&"a=rtpmap:8 PCMA/8000"));
        assert!(!answer.contains("a=fmtp"));
        assert_eq!(
            negotiate(
                &o,
                &CodecPrefs {
                    allow_g711: false,
                    ..CodecPrefs::default()
                }
            ),
            Err(SdpError::NoCommonCodecs)
        );
    }

    #[test]
    fn audio_only_offer_is_accepted() {
        let text = offer_with("0", &[OPUS_SECTION]);
        let o = parse_offer(&text).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        assert!(n.video.is_none());
        assert_eq!(n.audio.as_ref().unwrap().pt, 111);
        let answer = build_answer(&o, &n, &local());
        let l = lines(&answer);
        assert!(l.contains(&"a=group:BUNDLE 0"));
        assert!(l.contains(&"m=audio 20000 UDP/TLS/RTP/SAVPF 111"));
        assert!(l.contains(&"a=fmtp:111 minptime=10;useinbandfec=1"));
    }

    #[test]
    fn video_only_offer_is_accepted_without_bundle() {
        let text = offer_with("", &[&h264_section("v", &[(96, "packetization-mode=1")])]);
        let o = parse_offer(&text).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        assert!(!n.bundle);
        assert_eq!(
            n.video.as_ref().unwrap().profile_level_id,
            H264_DEFAULT_PLID
        );
        let answer = build_answer(&o, &n, &local());
        assert!(!answer.contains("a=group"));
        assert!(lines(&answer).contains(&"a=fmtp:96 packetization-mode=1;profile-level-id=42000a"));
    }

    #[test]
    fn audio_and_video_without_bundle_are_refused() {
        let text = offer_with(
            "",
            &[
                OPUS_SECTION,
                &h264_section("1", &[(96, "packetization-mode=1")]),
            ],
        );
        let o = parse_offer(&text).unwrap();
        assert_eq!(
            negotiate(&o, &CodecPrefs::default()),
            Err(SdpError::NotBundled)
        );
    }

    #[test]
    fn sections_outside_bundle_recvonly_or_port_zero_are_rejected() {
        let h264 = h264_section("1", &[(96, "packetization-mode=1")]);
        let recvonly = OPUS_SECTION.replace("a=sendonly", "a=recvonly");
        let dead_port = OPUS_SECTION.replace("m=audio 9", "m=audio 0");
        let outside = OPUS_SECTION.replace("a=mid:0", "a=mid:9");
        for audio in [recvonly.as_str(), dead_port.as_str(), outside.as_str()] {
            let text = offer_with("0 1", &[audio, &h264]);
            let o = parse_offer(&text).unwrap();
            let n = negotiate(&o, &CodecPrefs::default()).unwrap();
            assert!(n.audio.is_none(), "{audio}");
            assert_eq!(n.video.as_ref().unwrap().index, 1);
            let answer = build_answer(&o, &n, &local());
            let l = lines(&answer);
            assert!(l.contains(&"a=group:BUNDLE 1"));
            assert_eq!(l[7], "m=audio 0 UDP/TLS/RTP/SAVPF 111");
        }
        // Port 0 with bundle-only (RFC 8843 §6) is offered, not rejected.
        let bundle_only = format!("{dead_port}a=bundle-only\r\n");
        let text = offer_with("1 0", &[&bundle_only, &h264]);
        let o = parse_offer(&text).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        assert_eq!(n.audio.as_ref().unwrap().index, 0);
        assert!(lines(&build_answer(&o, &n, &local())).contains(&"a=group:BUNDLE 0 1"));
    }

    #[test]
    fn data_channel_section_is_rejected() {
        let dc =
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n";
        let text = offer_with(
            "0 1 2",
            &[
                OPUS_SECTION,
                &h264_section("1", &[(96, "packetization-mode=1")]),
                dc,
            ],
        );
        let o = parse_offer(&text).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let answer = build_answer(&o, &n, &local());
        let l = lines(&answer);
        assert!(l.contains(&"a=group:BUNDLE 0 1"));
        let at = l
            .iter()
            .position(|x| *x == "m=application 0 UDP/DTLS/SCTP webrtc-datachannel")
            .unwrap();
        assert_eq!(
            &l[at..],
            &[
                "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
                "c=IN IP4 0.0.0.0",
                "a=mid:2"
            ]
        );
        // A data-channel-only offer has nothing to receive.
        let text = offer_with("2", &[dc]);
        assert_eq!(
            negotiate(&parse_offer(&text).unwrap(), &CodecPrefs::default()),
            Err(SdpError::NothingToReceive)
        );
    }

    #[test]
    fn transport_checks() {
        let h264 = h264_section("1", &[(96, "packetization-mode=1")]);
        let base = offer_with("0 1", &[OPUS_SECTION, &h264]);
        let prefs = CodecPrefs::default();
        let check = |text: &str| negotiate(&parse_offer(text).unwrap(), &prefs);
        assert!(check(&base).is_ok());
        assert_eq!(
            check(&base.replace("a=setup:actpass", "a=setup:passive")),
            Err(SdpError::SetupConflict)
        );
        assert_eq!(
            check(&base.replace("a=setup:actpass", "a=setup:holdconn")),
            Err(SdpError::SetupConflict)
        );
        assert!(check(&base.replace("a=setup:actpass", "a=setup:active")).is_ok());
        assert!(check(&base.replace("a=setup:actpass\r\n", "")).is_ok());
        assert_eq!(
            check(&base.replacen("a=rtcp-mux\r\n", "", 1)),
            Err(SdpError::NoRtcpMux)
        );
        assert_eq!(
            check(&base.replace("a=ice-ufrag:abcd\r\n", "")),
            Err(SdpError::MissingIceCredentials)
        );
        assert_eq!(
            check(&base.replace("a=ice-ufrag:abcd", "a=ice-ufrag:abc")),
            Err(SdpError::BadIceCredentials)
        );
        assert_eq!(
            check(&base.replace(
                "a=ice-pwd:abcdefghijklmnopqrstuv",
                "a=ice-pwd:abcdefghijklmnopqrstu"
            )),
            Err(SdpError::BadIceCredentials)
        );
        assert_eq!(
            check(&base.replace("a=ice-ufrag:abcd", "a=ice-ufrag:ab-d")),
            Err(SdpError::BadIceCredentials)
        );
        assert_eq!(
            check(&base.replace("sha-256", "md5")),
            Err(SdpError::MissingFingerprint)
        );
        // Length must match the hash.
        assert_eq!(
            check(&base.replace("sha-256", "sha-1")),
            Err(SdpError::MissingFingerprint)
        );
        assert_eq!(
            check(&base.replace("a=ice-ufrag:abcd", "a=ice-lite\r\na=ice-ufrag:abcd")),
            Err(SdpError::BothIceLite)
        );
        let no_fp: String = base
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(check(&no_fp), Err(SdpError::MissingFingerprint));
    }

    #[test]
    fn prefers_sha256_among_several_fingerprints() {
        let sha1 =
            "a=fingerprint:sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\r\n";
        let h264 = h264_section("1", &[(96, "packetization-mode=1")]);
        let text = offer_with("1", &[&h264])
            .replace("a=setup:actpass\r\n", &format!("a=setup:actpass\r\n{sha1}"));
        let o = parse_offer(&text).unwrap();
        assert_eq!(o.session.fingerprints.len(), 2);
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        assert_eq!(n.remote_fingerprint.hash, SdpHash::Sha256);
        assert_eq!(n.remote_fingerprint.bytes()[0], 0xC8);
    }

    // ---- answer ----

    #[test]
    fn answer_to_chrome_offer_line_by_line() {
        let o = parse_offer(CHROME_OFFER).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let answer = build_answer(&o, &n, &local());
        assert!(answer.ends_with("\r\n"));
        assert!(!answer.replace("\r\n", "").contains('\n'));
        let transport = [
            "a=rtcp-mux".to_owned(),
            "a=ice-ufrag:srv1".to_owned(),
            "a=ice-pwd:0123456789abcdefghijkl".to_owned(),
            format!("a=fingerprint:sha-256 {LOCAL_FP}"),
            "a=setup:passive".to_owned(),
            "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".to_owned(),
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
                .to_owned(),
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid".to_owned(),
        ];
        let candidates = [
            "a=candidate:1 1 udp 2130706431 192.0.2.10 20000 typ host",
            "a=candidate:2 1 udp 2130706175 2001:db8::10 20000 typ host",
            "a=end-of-candidates",
        ];
        let mut expected: Vec<String> = [
            "v=0",
            "o=- 7 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            "a=ice-lite",
            "a=msid-semantic: WMS",
            "m=audio 20000 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 192.0.2.10",
            "a=mid:0",
            "a=recvonly",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        expected.extend(transport.iter().cloned());
        expected.extend(
            [
                "a=rtpmap:111 opus/48000/2",
                "a=rtcp-fb:111 transport-cc",
                "a=fmtp:111 minptime=10;useinbandfec=1",
            ]
            .map(String::from),
        );
        expected.extend(candidates.map(String::from));
        expected.extend(
            [
                "m=video 20000 UDP/TLS/RTP/SAVPF 106 107",
                "c=IN IP4 192.0.2.10",
                "a=mid:1",
                "a=recvonly",
            ]
            .map(String::from),
        );
        expected.extend(transport.iter().cloned());
        expected.push("a=extmap:14 urn:ietf:params:rtp-hdrext:toffset".to_owned());
        expected.extend(
            [
                "a=rtpmap:106 H264/90000",
                "a=rtcp-fb:106 nack",
                "a=rtcp-fb:106 nack pli",
                "a=rtcp-fb:106 ccm fir",
                "a=rtcp-fb:106 goog-remb",
                "a=rtcp-fb:106 transport-cc",
                "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                "a=rtpmap:107 rtx/90000",
                "a=fmtp:107 apt=106",
            ]
            .map(String::from),
        );
        expected.extend(candidates.map(String::from));
        let got = lines(&answer);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "answer line {}", i + 1);
        }
        assert_eq!(got.len(), expected.len());
    }

    #[test]
    fn answer_reparses() {
        for offer in [CHROME_OFFER, OBS_OFFER] {
            let o = parse_offer(offer).unwrap();
            let n = negotiate(&o, &CodecPrefs::default()).unwrap();
            let answer = build_answer(&o, &n, &local());
            let re = parse_offer(&answer).unwrap();
            assert!(re.session.ice_lite);
            assert_eq!(re.session.bundle, vec!["0", "1"]);
            assert_eq!(re.media.len(), 2);
            for m in &re.media {
                assert_eq!(m.direction, SdpDirection::RecvOnly);
                assert_eq!(m.setup, Some(SdpSetup::Passive));
                assert!(m.rtcp_mux);
                assert_eq!(m.ice_ufrag, Some("srv1"));
                assert_eq!(m.ice_pwd, Some("0123456789abcdefghijkl"));
                assert_eq!(m.fingerprints[0].hash, SdpHash::Sha256);
                assert_eq!(m.fingerprints[0].bytes()[0], 0x5B);
                assert_eq!(m.candidates.len(), 2);
                assert!(m.end_of_candidates);
                assert_eq!(m.port, 20000);
            }
            let v = &re.media[1];
            let nv = n.video.as_ref().unwrap();
            let expected_fmts: Vec<String> = [Some(nv.pt), nv.rtx_pt]
                .iter()
                .flatten()
                .map(|p| p.to_string())
                .collect();
            assert_eq!(v.formats, expected_fmts);
            assert_eq!(v.rtpmap(nv.pt).unwrap().encoding, "H264");
            assert_eq!(re.media[0].rtpmap(111).unwrap().encoding, "opus");
            // The same answer read as an offer negotiates to the same codecs.
            let again = negotiate(
                &parse_offer(
                    &answer
                        .replace("a=recvonly", "a=sendonly")
                        .replace("a=ice-lite\r\n", "")
                        .replace("a=setup:passive", "a=setup:actpass"),
                )
                .unwrap(),
                &CodecPrefs::default(),
            )
            .unwrap();
            assert_eq!(again.video.unwrap().pt, nv.pt);
            assert_eq!(again.audio.unwrap().pt, 111);
        }
    }

    #[test]
    fn answer_without_candidates_and_with_ipv6_first() {
        let o = parse_offer(OBS_OFFER).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let mut l = local();
        l.candidates.clear();
        let answer = build_answer(&o, &n, &l);
        let lv = lines(&answer);
        assert!(lv.contains(&"m=audio 9 UDP/TLS/RTP/SAVPF 111"));
        assert!(lv.contains(&"c=IN IP4 0.0.0.0"));
        assert!(!answer.contains("a=candidate"));
        assert!(lv.contains(&"a=end-of-candidates"));

        let mut l = local();
        l.candidates.reverse();
        let answer = build_answer(&o, &n, &l);
        assert!(lines(&answer).contains(&"c=IN IP6 2001:db8::10"));
        assert!(
            lines(&answer).contains(&"a=candidate:1 1 udp 2130706431 2001:db8::10 20000 typ host")
        );
    }

    #[test]
    fn session_id_fits_63_bits() {
        let o = parse_offer(OBS_OFFER).unwrap();
        let n = negotiate(&o, &CodecPrefs::default()).unwrap();
        let mut l = local();
        l.session_id = u64::MAX;
        let answer = build_answer(&o, &n, &l);
        assert!(lines(&answer).contains(&"o=- 9223372036854775807 1 IN IP4 0.0.0.0"));
    }

    #[test]
    fn error_display_texts() {
        let all = [
            SdpError::TooLong { len: 70000 },
            SdpError::NotSdp,
            SdpError::Malformed {
                what: "a=rtpmap",
                line: 12,
            },
            SdpError::TooManyMediaSections,
            SdpError::TooManyPayloadTypes { line: 3 },
            SdpError::TooMany {
                what: "SSRCs",
                limit: 64,
            },
            SdpError::NothingToReceive,
            SdpError::NoCommonCodecs,
            SdpError::NotBundled,
            SdpError::MissingIceCredentials,
            SdpError::BadIceCredentials,
            SdpError::MissingFingerprint,
            SdpError::SetupConflict,
            SdpError::NoRtcpMux,
            SdpError::BothIceLite,
        ];
        for e in all {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(SdpError::NoCommonCodecs.to_string(), "No common codecs");
        assert_eq!(
            SdpError::Malformed {
                what: "a=rtpmap",
                line: 12
            }
            .to_string(),
            "malformed a=rtpmap on SDP line 12"
        );
        assert_eq!(
            SdpError::TooLong { len: 70000 }.to_string(),
            "SDP of 70000 bytes exceeds the 65536-byte limit"
        );
    }

    // ---- robustness ----

    /// Parse, and where that works negotiate and answer; the answer must re-parse.
    fn exercise(text: &str) {
        let Ok(o) = parse_offer(text) else { return };
        for prefs in [
            CodecPrefs::default(),
            CodecPrefs {
                allow_g711: false,
                require_video_codec: false,
            },
        ] {
            if let Ok(n) = negotiate(&o, &prefs) {
                let answer = build_answer(&o, &n, &local());
                let re = parse_offer(&answer)
                    .unwrap_or_else(|e| panic!("answer re-parse: {e}\n{answer}"));
                assert_eq!(re.media.len(), o.media.len());
            }
        }
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn every_prefix_never_panics() {
        for offer in [CHROME_OFFER, OBS_OFFER] {
            for end in (0..=offer.len()).filter(|i| offer.is_char_boundary(*i)) {
                exercise(&offer[..end]);
            }
        }
    }

    #[test]
    fn mutated_offers_never_panic() {
        const ALPHABET: &[u8] = b"\r\n :=/;*0123456789abcmva-";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for offer in [CHROME_OFFER, OBS_OFFER] {
            for _ in 0..400 {
                let mut bytes = offer.as_bytes().to_vec();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len());
                    match rng.below(3) {
                        0 => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
                        1 => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    }
                }
                exercise(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn shuffled_lines_never_panic() {
        let mut rng = XorShift(42);
        let pool: Vec<&str> = CHROME_OFFER.lines().chain(OBS_OFFER.lines()).collect();
        for _ in 0..300 {
            let mut text = String::from("v=0\r\n");
            for _ in 0..rng.below(60) {
                text.push_str(pool[rng.below(pool.len())]);
                text.push_str("\r\n");
            }
            exercise(&text);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(7);
        for _ in 0..2000 {
            let len = rng.below(300);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            exercise(&String::from_utf8_lossy(&bytes));
            let mut with_header = b"v=0\n".to_vec();
            with_header.extend(bytes.iter().map(|b| b & 0x7f));
            exercise(&String::from_utf8_lossy(&with_header));
        }
    }

    #[test]
    fn a_recvonly_offer_is_answered_sendonly_with_our_sources() {
        let recv = CHROME_OFFER.replace("a=sendonly", "a=recvonly");
        let o = parse_offer(&recv).unwrap();
        // A receiver's offer has nothing to send us, and a sender's nothing to take.
        assert_eq!(negotiate(&o, &CodecPrefs::default()), Err(SdpError::NothingToReceive));
        assert_eq!(negotiate_send(&parse_offer(CHROME_OFFER).unwrap()), Err(SdpError::NothingToReceive));
        let mut neg = negotiate_send(&o).unwrap();
        let v = neg.video.clone().unwrap();
        assert!(v.rtx_pt.is_none(), "retransmissions go on the media SSRC");
        assert!(v.h264_formats.len() >= 2, "{:?}", v.h264_formats);
        assert_eq!(h264_rank(v.profile_level_id), 0, "constrained baseline preferred");
        assert_eq!(neg.audio.as_ref().unwrap().codec, SdpAudioCodec::Opus);
        // The sender may pick another offered format (a High-profile source).
        let (pt, plid) = *v.h264_formats.iter().find(|(_, p)| p >> 16 != 0x42).unwrap();
        neg.use_video_format(pt, plid);
        let send = SendParams { video_ssrc: 1111, audio_ssrc: 2222, cname: "cn".into(), stream_id: "st".into() };
        let a = build_answer_send(&o, &neg, &local(), &send);
        assert_eq!(a.matches("a=sendonly").count(), 2, "{a}");
        assert!(!a.contains("a=recvonly"));
        assert!(a.contains("a=ssrc:1111 cname:cn\r\n") && a.contains("a=ssrc:2222 cname:cn\r\n"), "{a}");
        assert!(a.contains("a=msid:st st-video\r\n") && a.contains("a=msid:st st-audio\r\n"));
        assert!(a.contains(&format!("a=rtpmap:{pt} H264/90000")), "{a}");
        assert!(!a.contains(" rtx/"), "{a}");
        // Only the extension a sender writes: transport-wide sequence numbers.
        assert!(a.lines().filter(|l| l.starts_with("a=extmap:")).all(|l| l.ends_with(URI_TRANSPORT_CC)), "{a}");
        let back = parse_offer(&a).unwrap();
        assert!(back.media.iter().all(|m| m.direction == SdpDirection::SendOnly));
    }
}
