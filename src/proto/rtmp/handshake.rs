//! The RTMP handshake (C0 C1 C2 / S0 S1 S2) as a sans-IO state machine.
//!
//! Nothing here touches a socket or a clock: the caller feeds received bytes
//! to `handle_input`, sends whatever was appended to `out`, and passes the
//! current time and a random seed at construction.
//!
//! # What is implemented
//!
//! * [`HandshakeServer`]: the server side, answering both forms a client may use.
//!   * **Digest ("complex") form**, the one Flash Player 9+ and ffmpeg use and
//!     FMS answers: when C1 carries a valid HMAC-SHA256 digest (looked for at
//!     scheme 0, then scheme 1, keyed with the 30-byte Flash Player key), S1
//!     gets non-zero version bytes and its own digest at the same scheme
//!     (keyed with the 36-byte FMS key), and S2 is 1504 random bytes followed
//!     by HMAC-SHA256(key = HMAC-SHA256(68-byte FMS key, client digest), the
//!     1504 random bytes). This is what ffmpeg's RTMP client checks when it
//!     plays from a server whose S1 version byte is >= 3.
//!   * **Plain form** (RTMP specification 1.0, section 5.2), for every other C1:
//!     S1 = time, four zero bytes, random; S2 = an echo of C1. A client that
//!     sees S1's version bytes at zero checks nothing further (ffmpeg) or only
//!     compares the echo (librtmp).
//!   * C2 is consumed (1536 bytes) but never judged: many clients send junk.
//! * [`HandshakeClient`]: a plain-form client (C1 version bytes zero; C2 =
//!   echo of S1), used by the load tool and by the tests.
//!
//! # What is not implemented
//!
//! * RTMPE (C0 = 0x06, or 0x08/0x09 for the XTEA/Blowfish variants): the
//!   Diffie-Hellman key exchange in the key block and the RC4 stream cipher.
//!   Such a C0 is refused with [`HandshakeError::UnsupportedVersion`]; only
//!   version 3 is accepted.
//! * SWF verification (the server never asks for it), and checking C2.
//!
//! # Layout of C1/S1 in the digest form
//!
//! 1536 bytes = time (4, big-endian) | version (4) | two 764-byte blocks.
//! A "digest block" is: 4 offset bytes, then random bytes with the 32-byte
//! digest somewhere among them. A "key block" holds the (RTMPE) public key
//! and its own offset bytes; outside RTMPE it is random filler.
//!
//! * Scheme 0: digest block first. Offset bytes at 8..12, digest at
//!   `12 + (sum of bytes 8..12) % 728`.
//! * Scheme 1: key block first. Offset bytes at 772..776, digest at
//!   `776 + (sum of bytes 772..776) % 728`.
//!
//! (728 = 764 - 4 offset bytes - 32 digest bytes, so the digest always stays
//! inside its block.) The digest is HMAC-SHA256 over the 1504 bytes of the
//! packet around it, i.e. the packet without the 32 digest bytes.
//!
//! # Sources
//!
//! * Adobe, "RTMP Specification 1.0" (2012), section 5.2: the plain handshake
//!   and the meaning of the time and zero fields.
//! * FFmpeg `libavformat/rtmpproto.c`: `rtmp_player_key` / `rtmp_server_key`
//!   (the 30- and 36-byte readable prefixes and the shared 32-byte tail),
//!   `rtmp_handshake_imprint_with_digest` (scheme 0 for RTMP, scheme 1 for
//!   RTMPE), `rtmp_validate_digest`, and `rtmp_handshake`, whose client checks
//!   S1 at scheme 1 then scheme 0 only when `serverdata[5] >= 3` (the first
//!   version byte of S1), then checks S2's last 32 bytes as described above.
//!   `libavformat/rtmpdigest.c`: `ff_rtmp_calc_digest` (HMAC over the packet
//!   minus a 32-byte gap) and `ff_rtmp_calc_digest_pos` (sum of 4 bytes, mod
//!   728, plus base).
//! * librtmp (`rtmp.c`, `handshake.h`, as in rtmpdump and OBS): its server
//!   `SHandShake` announces version 3.5.1.1 in S1 for the digest form, the
//!   value we use; and its client only compares the S2 echo in the plain form.
//! * nginx-rtmp-module `ngx_rtmp_handshake.c`: same construction of S2 in the
//!   digest form (it announces 0x0D0E0A0D instead).
//! * "RTMPE" write-up, <https://www.cs.cmu.edu/~dst/Adobe/Gallery/RTMPE.txt>:
//!   the two block orders (schemes) and the key block.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The only protocol version we speak in C0/S0.
pub const RTMP_VERSION: u8 = 3;
/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

/// Length of an HMAC-SHA256 digest.
const DIGEST_LEN: usize = 32;

/// The digest sits at `base + sum % DIGEST_SPAN` inside its 764-byte block.
const DIGEST_SPAN: usize = 764 - 4 - DIGEST_LEN;

/// "Genuine Adobe Flash Player 001": the part of the Flash Player key that
/// signs C1 (ffmpeg `PLAYER_KEY_OPEN_PART_LEN` = 30).
const FP_KEY_PARTIAL: &[u8; 30] = b"Genuine Adobe Flash Player 001";

/// "Genuine Adobe Flash Media Server 001": the part of the FMS key that signs
/// S1 (ffmpeg `SERVER_KEY_OPEN_PART_LEN` = 36).
const FMS_KEY_PARTIAL: &[u8; 36] = b"Genuine Adobe Flash Media Server 001";

/// The full 68-byte FMS key: the readable part plus 32 constant bytes (the
/// same tail as the Flash Player key). Keys the HMAC that derives S2's key.
const FMS_KEY_FULL: &[u8; 68] = b"Genuine Adobe Flash Media Server 001\
\xf0\xee\xc2\x4a\x80\x68\xbe\xe8\x2e\x00\xd0\xd1\x02\x9e\x7e\x57\
\x6e\xec\x5d\x2d\x29\x80\x6f\xab\x93\xb8\xe6\x36\xcf\xeb\x31\xae";

/// The full 62-byte Flash Player key: the readable part plus the same 32-byte
/// tail. Keys the HMAC that derives C2's key in the digest form (client side).
const FP_KEY_FULL: &[u8; 62] = b"Genuine Adobe Flash Player 001\
\xf0\xee\xc2\x4a\x80\x68\xbe\xe8\x2e\x00\xd0\xd1\x02\x9e\x7e\x57\
\x6e\xec\x5d\x2d\x29\x80\x6f\xab\x93\xb8\xe6\x36\xcf\xeb\x31\xae";

/// C1's version field in the digest form: Flash Player 9.0.124.2, as ffmpeg
/// announces (a non-zero version tells the server to look for a digest).
const CLIENT_VERSION: [u8; 4] = [9, 0, 124, 2];

/// S1's version field in the digest form: FMS 3.5.1.1, as librtmp's server
/// announces. ffmpeg's client validates S1 only when the first byte is >= 3.
const SERVER_VERSION: [u8; 4] = [3, 5, 1, 1];

/// Why the handshake failed. Every error is fatal for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0 was not 3: either RTMPE (6, 8, 9), which we do not implement, or not
    /// RTMP at all (e.g. 0x47, the `G` of `GET / HTTP/1.1`).
    UnsupportedVersion(u8),
    /// Client side: S0 was not 3.
    UnsupportedServerVersion(u8),
}

impl HandshakeError {
    fn rtmpe_hint(version: u8) -> &'static str {
        match version {
            6 | 8 | 9 => " (RTMPE is not supported)",
            _ => "",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HandshakeError::UnsupportedVersion(v) => write!(
                f,
                "unsupported RTMP version 0x{v:02x} in C0{}",
                Self::rtmpe_hint(v)
            ),
            HandshakeError::UnsupportedServerVersion(v) => write!(
                f,
                "unsupported RTMP version 0x{v:02x} in S0{}",
                Self::rtmpe_hint(v)
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Which form of handshake the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// C1 carried a valid Flash Player digest; we answered like FMS.
    Digest,
    /// Anything else; we answered per the RTMP specification.
    Plain,
}

// ---------------------------------------------------------------------------
// Digest helpers
// ---------------------------------------------------------------------------

/// Where the digest of a C1/S1 lives; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// Digest block first: offset bytes at 8.
    Zero,
    /// Key block first: offset bytes at 772.
    One,
}

impl Scheme {
    /// The order a server tries them in for C1.
    const SERVER_ORDER: [Scheme; 2] = [Scheme::Zero, Scheme::One];

    /// Position of the four bytes whose sum places the digest.
    fn offset_field(self) -> usize {
        match self {
            Scheme::Zero => 8,
            Scheme::One => 8 + 764,
        }
    }

    /// Position of the digest in `packet`: at most 776 + 727 = 1503, so the
    /// 32 digest bytes always fit in the 1536-byte packet.
    fn digest_pos(self, packet: &[u8; HANDSHAKE_SIZE]) -> usize {
        let field = self.offset_field();
        let sum: usize = packet
            .iter()
            .skip(field)
            .take(4)
            .map(|&b| usize::from(b))
            .sum();
        field + 4 + sum % DIGEST_SPAN
    }
}

/// HMAC-SHA256 of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the
    // all-zero fallback only exists to keep this function total.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; DIGEST_LEN],
    }
}

/// HMAC-SHA256 of `packet` without the 32 bytes at `pos` (ffmpeg's
/// `ff_rtmp_calc_digest` with `gap = pos`).
fn packet_digest(packet: &[u8; HANDSHAKE_SIZE], pos: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    let before = packet.get(..pos).unwrap_or_default();
    let after = packet.get(pos + DIGEST_LEN..).unwrap_or_default();
    hmac_sha256(key, &[before, after])
}

/// Looks for a valid Flash Player digest in C1 (scheme 0, then scheme 1).
/// Returns the scheme and the digest.
fn find_client_digest(c1: &[u8; HANDSHAKE_SIZE]) -> Option<(Scheme, [u8; DIGEST_LEN])> {
    Scheme::SERVER_ORDER.into_iter().find_map(|scheme| {
        let pos = scheme.digest_pos(c1);
        let computed = packet_digest(c1, pos, FP_KEY_PARTIAL);
        (c1.get(pos..pos + DIGEST_LEN) == Some(computed.as_slice())).then_some((scheme, computed))
    })
}

/// Writes the digest of `packet` into it, at the place `scheme` gives.
fn imprint_digest(packet: &mut [u8; HANDSHAKE_SIZE], scheme: Scheme, key: &[u8]) {
    let pos = scheme.digest_pos(packet);
    let digest = packet_digest(packet, pos, key);
    for (dst, src) in packet.iter_mut().skip(pos).zip(digest) {
        *dst = src;
    }
}

/// Writes the time and version fields (the first 8 bytes) of C1/S1.
fn write_header(packet: &mut [u8; HANDSHAKE_SIZE], epoch_ms: u32, version: [u8; 4]) {
    let header = epoch_ms.to_be_bytes().into_iter().chain(version);
    for (dst, src) in packet.iter_mut().zip(header) {
        *dst = src;
    }
}

/// Copies from `input` into `buf` from `*filled` on; returns the bytes taken.
fn fill_from(buf: &mut [u8; HANDSHAKE_SIZE], filled: &mut usize, input: &[u8]) -> usize {
    let mut taken = 0;
    for (dst, src) in buf.iter_mut().skip(*filled).zip(input) {
        *dst = *src;
        taken += 1;
    }
    *filled += taken;
    taken
}

/// Counts up to the end of a packet we do not keep; returns the bytes taken.
fn skip_from(seen: &mut usize, input: &[u8]) -> usize {
    let taken = input.len().min(HANDSHAKE_SIZE.saturating_sub(*seen));
    *seen += taken;
    taken
}

/// SplitMix64 (Steele, Lea, Flood 2014; Vigna's public-domain reference):
/// enough for filler bytes, which need to be unpredictable to nobody.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            for (d, s) in chunk.iter_mut().zip(self.next_u64().to_le_bytes()) {
                *d = s;
            }
        }
    }
}

/// Appends S0 + S1 + S2 answering `c1`; returns the form used.
fn write_response(
    c1: &[u8; HANDSHAKE_SIZE],
    rng: &mut SplitMix64,
    epoch_ms: u32,
    out: &mut Vec<u8>,
) -> HandshakeKind {
    out.reserve(1 + 2 * HANDSHAKE_SIZE);
    out.push(RTMP_VERSION);
    let mut s1 = [0u8; HANDSHAKE_SIZE];
    rng.fill(&mut s1);
    match find_client_digest(c1) {
        Some((scheme, client_digest)) => {
            write_header(&mut s1, epoch_ms, SERVER_VERSION);
            imprint_digest(&mut s1, scheme, FMS_KEY_PARTIAL);
            out.extend_from_slice(&s1);

            let mut s2 = [0u8; HANDSHAKE_SIZE];
            rng.fill(&mut s2);
            let key = hmac_sha256(FMS_KEY_FULL, &[&client_digest]);
            if let Some((body, signature)) = s2.split_last_chunk_mut::<DIGEST_LEN>() {
                *signature = hmac_sha256(&key, &[body]);
            }
            out.extend_from_slice(&s2);
            HandshakeKind::Digest
        }
        None => {
            write_header(&mut s1, epoch_ms, [0; 4]);
            out.extend_from_slice(&s1);
            out.extend_from_slice(c1);
            HandshakeKind::Plain
        }
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    AwaitC0,
    AwaitC1,
    AwaitC2,
    Done,
    Failed(HandshakeError),
}

/// Server side of the handshake.
///
/// Feed it what the client sends; it answers S0+S1+S2 in one go once C0+C1
/// is complete, then swallows C2. Holds at most one 1536-byte buffer (C1),
/// freed once S0S1S2 are written.
pub struct HandshakeServer {
    state: ServerState,
    rng: SplitMix64,
    epoch_ms: u32,
    /// C1 as it arrives; allocated on its first byte, dropped once answered.
    c1: Option<Box<[u8; HANDSHAKE_SIZE]>>,
    c1_len: usize,
    c2_seen: usize,
    kind: Option<HandshakeKind>,
}

impl fmt::Debug for HandshakeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeServer")
            .field("state", &self.state)
            .field("c1_len", &self.c1_len)
            .field("c2_seen", &self.c2_seen)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl HandshakeServer {
    /// `seed` fills the random parts of S1 (and S2 in the digest form);
    /// `epoch_ms` goes into S1's time field.
    pub fn new(seed: u64, epoch_ms: u32) -> Self {
        HandshakeServer {
            state: ServerState::AwaitC0,
            rng: SplitMix64(seed),
            epoch_ms,
            c1: None,
            c1_len: 0,
            c2_seen: 0,
            kind: None,
        }
    }

    /// Consumes as much of `input` as the handshake needs (C0, C1, C2, in as
    /// many calls as the bytes arrive in) and appends S0+S1+S2 to `out` once
    /// C0+C1 is complete. Returns the bytes consumed: less than
    /// `input.len()` only once the handshake is done, the rest belonging to
    /// the chunk stream. An error is fatal and is returned again on every
    /// later call.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, HandshakeError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match self.state {
                ServerState::Failed(err) => return Err(err),
                ServerState::Done => return Ok(used),
                ServerState::AwaitC0 => {
                    let Some(&version) = rest.first() else {
                        return Ok(used);
                    };
                    used += 1;
                    if version != RTMP_VERSION {
                        let err = HandshakeError::UnsupportedVersion(version);
                        self.state = ServerState::Failed(err);
                        return Err(err);
                    }
                    self.state = ServerState::AwaitC1;
                }
                ServerState::AwaitC1 => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let buf = self.c1.get_or_insert_with(|| Box::new([0; HANDSHAKE_SIZE]));
                    used += fill_from(buf, &mut self.c1_len, rest);
                    if self.c1_len < HANDSHAKE_SIZE {
                        return Ok(used);
                    }
                    self.kind = Some(write_response(buf, &mut self.rng, self.epoch_ms, out));
                    self.c1 = None;
                    self.state = ServerState::AwaitC2;
                }
                ServerState::AwaitC2 => {
                    used += skip_from(&mut self.c2_seen, rest);
                    if self.c2_seen < HANDSHAKE_SIZE {
                        return Ok(used);
                    }
                    self.state = ServerState::Done;
                }
            }
        }
    }

    /// True once C2 has been consumed; bytes after C2 belong to the chunk stream.
    pub fn is_done(&self) -> bool {
        self.state == ServerState::Done
    }

    /// Which form the client used (None until C1 has arrived).
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    AwaitS0,
    AwaitS1,
    AwaitS2,
    Done,
    Failed(HandshakeError),
}

/// Client side of the handshake: the plain form (C1 version bytes zero; C2 =
/// echo of S1) for the load tool and the tests, or the digest form as Flash
/// Player and ffmpeg send it (the push client): C1 carries a Flash Player
/// digest at scheme 0; when S1 answers with a valid FMS digest, C2 is 1504
/// random bytes signed with a key derived from the server's digest, else
/// (a plain server) C2 is the echo of S1. S2 is not checked (librtmp only
/// warns; ffmpeg's check would only reject servers we can still talk to).
pub struct HandshakeClient {
    state: ClientState,
    /// S1 as it arrives, then C2 once S1 is complete; dropped once C2 is written.
    s1: Option<Box<[u8; HANDSHAKE_SIZE]>>,
    s1_len: usize,
    s2_seen: usize,
    /// Digest form: the RNG for C2's random part. None: plain form.
    digest_rng: Option<SplitMix64>,
    kind: Option<HandshakeKind>,
}

impl fmt::Debug for HandshakeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeClient")
            .field("state", &self.state)
            .field("s1_len", &self.s1_len)
            .field("s2_seen", &self.s2_seen)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl HandshakeClient {
    /// Appends C0+C1 to `out`: version 3, then C1 = `epoch_ms`, four zero
    /// bytes, 1528 bytes drawn from `seed` (the plain form).
    pub fn new(seed: u64, epoch_ms: u32, out: &mut Vec<u8>) -> Self {
        Self::start(seed, epoch_ms, false, out)
    }

    /// Appends C0+C1 in the digest form (see the type's docs).
    pub fn new_digest(seed: u64, epoch_ms: u32, out: &mut Vec<u8>) -> Self {
        Self::start(seed, epoch_ms, true, out)
    }

    fn start(seed: u64, epoch_ms: u32, digest: bool, out: &mut Vec<u8>) -> Self {
        let mut rng = SplitMix64(seed);
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        rng.fill(&mut c1);
        if digest {
            write_header(&mut c1, epoch_ms, CLIENT_VERSION);
            imprint_digest(&mut c1, Scheme::Zero, FP_KEY_PARTIAL);
        } else {
            write_header(&mut c1, epoch_ms, [0; 4]);
        }
        out.reserve(1 + HANDSHAKE_SIZE);
        out.push(RTMP_VERSION);
        out.extend_from_slice(&c1);
        HandshakeClient {
            state: ClientState::AwaitS0,
            s1: None,
            s1_len: 0,
            s2_seen: 0,
            digest_rng: digest.then_some(rng),
            kind: None,
        }
    }

    /// Which form the server answered in (None until S1 has arrived).
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// S1 is complete: turn the buffer into C2.
    fn make_c2(&mut self) {
        let Some(s1) = self.s1.as_mut() else { return };
        self.kind = Some(HandshakeKind::Plain);
        let Some(rng) = self.digest_rng.as_mut() else { return };
        if s1.get(4).is_none_or(|&v| v < 3) {
            return; // a plain server: echo S1
        }
        // ffmpeg's order: scheme 1, then scheme 0.
        let found = [Scheme::One, Scheme::Zero].into_iter().find_map(|scheme| {
            let pos = scheme.digest_pos(s1);
            let computed = packet_digest(s1, pos, FMS_KEY_PARTIAL);
            (s1.get(pos..pos + DIGEST_LEN) == Some(computed.as_slice())).then_some(computed)
        });
        let Some(server_digest) = found else { return };
        let key = hmac_sha256(FP_KEY_FULL, &[&server_digest]);
        rng.fill(&mut s1[..]);
        if let Some((body, signature)) = s1.split_last_chunk_mut::<DIGEST_LEN>() {
            *signature = hmac_sha256(&key, &[body]);
        }
        self.kind = Some(HandshakeKind::Digest);
    }

    /// Consumes S0, S1 and S2 (in as many calls as they arrive in) and
    /// appends C2 to `out` once S2 is complete. Returns the bytes consumed:
    /// less than `input.len()` only once done. Errors are fatal and sticky.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, HandshakeError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match self.state {
                ClientState::Failed(err) => return Err(err),
                ClientState::Done => return Ok(used),
                ClientState::AwaitS0 => {
                    let Some(&version) = rest.first() else {
                        return Ok(used);
                    };
                    used += 1;
                    if version != RTMP_VERSION {
                        let err = HandshakeError::UnsupportedServerVersion(version);
                        self.state = ClientState::Failed(err);
                        return Err(err);
                    }
                    self.state = ClientState::AwaitS1;
                }
                ClientState::AwaitS1 => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let buf = self.s1.get_or_insert_with(|| Box::new([0; HANDSHAKE_SIZE]));
                    used += fill_from(buf, &mut self.s1_len, rest);
                    if self.s1_len < HANDSHAKE_SIZE {
                        return Ok(used);
                    }
                    self.make_c2();
                    self.state = ClientState::AwaitS2;
                }
                ClientState::AwaitS2 => {
                    used += skip_from(&mut self.s2_seen, rest);
                    if self.s2_seen < HANDSHAKE_SIZE {
                        return Ok(used);
                    }
                    if let Some(c2) = self.s1.take() {
                        out.extend_from_slice(c2.as_slice());
                    }
                    self.state = ClientState::Done;
                }
            }
        }
    }

/// True once S2 has been consumed and C2 written.
    pub fn is_done(&self) -> bool {
        self.state == ClientState::Done
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    // Keys spelled out again, independently of the constants above, the way
    // ffmpeg's rtmpproto.c lays them out: readable part + 32 constant bytes.
    const KEY_TAIL: [u8; 32] = [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E,
        0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB,
        0x31, 0xAE,
    ];

    fn player_key() -> Vec<u8> {
        let mut k = b"Genuine Adobe Flash Player 001".to_vec();
        k.extend_from_slice(&KEY_TAIL);
        k
    }

    fn server_key() -> Vec<u8> {
        let mut k = b"Genuine Adobe Flash Media Server 001".to_vec();
        k.extend_from_slice(&KEY_TAIL);
        k
    }

    /// A model of ffmpeg's RTMP client handshake (libavformat/rtmpproto.c
    /// `rtmp_handshake`, libavformat/rtmpdigest.c), written with the hmac
    /// crate directly rather than with the helpers under test.
    mod ffmpeg {
        use super::{player_key, server_key};
        use hmac::{Hmac, Mac};
        use sha2::Sha256;

        pub const PLAYER_KEY_OPEN_PART_LEN: usize = 30;
        pub const SERVER_KEY_OPEN_PART_LEN: usize = 36;
        pub const SIZE: usize = 1536;

        /// `ff_rtmp_calc_digest`: HMAC over `src`, skipping 32 bytes at `gap`.
        pub fn calc_digest(src: &[u8], gap: Option<usize>, key: &[u8]) -> [u8; 32] {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            match gap {
                None => mac.update(src),
                Some(gap) => {
                    mac.update(&src[..gap]);
                    mac.update(&src[gap + 32..]);
                }
            }
            mac.finalize().into_bytes().into()
        }

        /// `ff_rtmp_calc_digest_pos`.
        pub fn calc_digest_pos(buf: &[u8], off: usize, mod_val: usize, add_val: usize) -> usize {
            let mut pos = 0usize;
            for i in 0..4 {
                pos += buf[off + i] as usize;
            }
            pos % mod_val + add_val
        }

        /// `rtmp_handshake_imprint_with_digest`, generalised to both schemes.
        pub fn imprint(c1: &mut [u8], scheme1: bool) -> usize {
            let pos = if scheme1 {
                calc_digest_pos(c1, 772, 728, 776)
            } else {
                calc_digest_pos(c1, 8, 728, 12)
            };
            let d = calc_digest(c1, Some(pos), &player_key()[..PLAYER_KEY_OPEN_PART_LEN]);
            c1[pos..pos + 32].copy_from_slice(&d);
            pos
        }

        /// `rtmp_validate_digest`: Some(position) when the server digest is good.
        pub fn validate_digest(s1: &[u8], off: usize) -> Option<usize> {
            let pos = calc_digest_pos(s1, off, 728, off + 4);
            let d = calc_digest(s1, Some(pos), &server_key()[..SERVER_KEY_OPEN_PART_LEN]);
            (d[..] == s1[pos..pos + 32]).then_some(pos)
        }

        /// What the player (`is_input`) does with S0S1 (`serverdata`) and S2
        /// (`clientdata`): returns (server digest position, C2) or ffmpeg's
        /// error message.
        pub fn check_server(
            c1: &[u8],
            client_pos: usize,
            serverdata: &[u8],
            clientdata: &[u8],
        ) -> Result<(Option<usize>, Vec<u8>), &'static str> {
            assert_eq!(serverdata.len(), SIZE + 1);
            assert_eq!(clientdata.len(), SIZE);
            if serverdata[5] < 3 {
                // Plain server: ffmpeg checks nothing and echoes S1.
                return Ok((None, serverdata[1..].to_vec()));
            }
            let s1 = &serverdata[1..];
            let server_pos = match validate_digest(s1, 772) {
                Some(p) => p,
                None => validate_digest(s1, 8).ok_or("Server response validating failed")?,
            };
            let digest = calc_digest(&c1[client_pos..client_pos + 32], None, &server_key());
            let signature = calc_digest(&clientdata[..SIZE - 32], None, &digest);
            if signature[..] != clientdata[SIZE - 32..] {
                return Err("Signature mismatch");
            }
            let mut c2 = vec![0xA5u8; SIZE];
            let digest = calc_digest(&s1[server_pos..server_pos + 32], None, &player_key());
            let sig = calc_digest(&c2[..SIZE - 32], None, &digest);
            c2[SIZE - 32..].copy_from_slice(&sig);
            Ok((Some(server_pos), c2))
        }
    }

    /// Deterministic filler for test packets.
    fn filler(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        SplitMix64(seed).fill(&mut v);
        v
    }

    /// C0 + C1 as ffmpeg's client builds it: version 9.0.124.2, a digest at
    /// the chosen scheme. Returns (C0C1, digest position within C1).
    fn ffmpeg_c0c1(seed: u64, scheme1: bool) -> (Vec<u8>, usize) {
        let mut c1 = filler(seed, HANDSHAKE_SIZE);
        c1[..8].copy_from_slice(&[0, 0, 0, 0, 9, 0, 124, 2]);
        let pos = ffmpeg::imprint(&mut c1, scheme1);
        let mut c0c1 = vec![3];
        c0c1.extend_from_slice(&c1);
        (c0c1, pos)
    }

    fn plain_c0c1(seed: u64) -> Vec<u8> {
        let mut c0c1 = vec![3];
        let mut c1 = filler(seed, HANDSHAKE_SIZE);
        c1[..8].copy_from_slice(&[0, 0, 0x12, 0x34, 0, 0, 0, 0]);
        c0c1.extend_from_slice(&c1);
        c0c1
    }

    /// Runs a digest handshake with an ffmpeg-like player; returns the
    /// server's digest position in S1.
    fn digest_round(seed: u64, scheme1: bool) -> usize {
        let (c0c1, client_pos) = ffmpeg_c0c1(seed, scheme1);
        let mut srv = HandshakeServer::new(seed ^ 0xDEAD_BEEF, 123_456);
        let mut out = Vec::new();
        assert_eq!(srv.handle_input(&c0c1, &mut out), Ok(c0c1.len()));
        assert_eq!(srv.kind(), Some(HandshakeKind::Digest));
        assert!(!srv.is_done());
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(out[0], RTMP_VERSION);
        let (s0s1, s2) = out.split_at(1 + HANDSHAKE_SIZE);
        assert_eq!(&s0s1[1..5], &123_456u32.to_be_bytes());
        assert_eq!(&s0s1[5..9], &SERVER_VERSION);

        let (server_pos, c2) = ffmpeg::check_server(&c0c1[1..], client_pos, s0s1, s2)
            .expect("ffmpeg's client accepts our S1 and S2");
        let server_pos = server_pos.expect("digest form validated");

        // The server answered at the scheme the client used.
        let s1 = &s0s1[1..];
        let expected = if scheme1 {
            ffmpeg::calc_digest_pos(s1, 772, 728, 776)
        } else {
            ffmpeg::calc_digest_pos(s1, 8, 728, 12)
        };
        assert_eq!(server_pos, expected);

        assert_eq!(srv.handle_input(&c2, &mut out), Ok(HANDSHAKE_SIZE));
        assert!(srv.is_done());
        assert_eq!(
            out.len(),
            1 + 2 * HANDSHAKE_SIZE,
            "nothing written after S2"
        );
        server_pos
    }

    #[test]
    fn keys_match_ffmpeg_layout() {
        assert_eq!(&player_key()[..30], FP_KEY_PARTIAL);
        assert_eq!(&server_key()[..36], FMS_KEY_PARTIAL);
        assert_eq!(&server_key()[..], &FMS_KEY_FULL[..]);
        assert_eq!(&FMS_KEY_FULL[36..], &KEY_TAIL);
    }

    #[test]
    fn digest_positions_stay_in_bounds() {
        for b in [0u8, 1, 182, 255] {
            let packet = [b; HANDSHAKE_SIZE];
            let p0 = Scheme::Zero.digest_pos(&packet);
            let p1 = Scheme::One.digest_pos(&packet);
            assert!((12..=12 + 727).contains(&p0));
            assert!(
                p0 + DIGEST_LEN <= 772,
                "scheme 0 digest stays in the first block"
            );
            assert!((776..=776 + 727).contains(&p1));
            assert!(p1 + DIGEST_LEN <= HANDSHAKE_SIZE);
            assert_eq!(p0, ffmpeg::calc_digest_pos(&packet, 8, 728, 12));
            assert_eq!(p1, ffmpeg::calc_digest_pos(&packet, 772, 728, 776));
        }
    }

    #[test]
    fn digest_scheme0_passes_ffmpeg_checks() {
        for seed in 0..8 {
            digest_round(seed, false);
        }
    }

    #[test]
    fn digest_scheme1_passes_ffmpeg_checks() {
        for seed in 100..108 {
            digest_round(seed, true);
        }
    }

    #[test]
    fn tampered_s2_fails_ffmpeg_checks() {
        // Sanity check of the model: it does reject a wrong S2 and a wrong S1.
        let (c0c1, client_pos) = ffmpeg_c0c1(7, false);
        let mut srv = HandshakeServer::new(1, 0);
        let mut out = Vec::new();
        srv.handle_input(&c0c1, &mut out).unwrap();
        let (s0s1, s2) = out.split_at(1 + HANDSHAKE_SIZE);
        let mut bad_s2 = s2.to_vec();
        bad_s2[10] ^= 1;
        assert_eq!(
            ffmpeg::check_server(&c0c1[1..], client_pos, s0s1, &bad_s2),
            Err("Signature mismatch")
        );
        let mut bad_s1 = s0s1.to_vec();
        bad_s1[1] ^= 1; // the time field is covered by the digest
        assert_eq!(
            ffmpeg::check_server(&c0c1[1..], client_pos, &bad_s1, s2),
            Err("Server response validating failed")
        );
    }

    #[test]
    fn plain_form_echoes_c1() {
        let c0c1 = plain_c0c1(42);
        let mut srv = HandshakeServer::new(9, 0x0102_0304);
        let mut out = Vec::new();
        assert_eq!(srv.kind(), None);
        assert_eq!(srv.handle_input(&c0c1, &mut out), Ok(1 + HANDSHAKE_SIZE));
        assert_eq!(srv.kind(), Some(HandshakeKind::Plain));
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..5], &[1, 2, 3, 4], "S1 time");
        assert_eq!(&out[5..9], &[0, 0, 0, 0], "S1 version bytes zero");
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c0c1[1..], "S2 echoes C1");
        // ffmpeg's player checks nothing when S1's version is zero.
        let (pos, c2) = ffmpeg::check_server(
            &c0c1[1..],
            0,
            &out[..1 + HANDSHAKE_SIZE],
            &out[1 + HANDSHAKE_SIZE..],
        )
        .unwrap();
        assert_eq!(pos, None);
        assert_eq!(srv.handle_input(&c2, &mut out), Ok(HANDSHAKE_SIZE));
        assert!(srv.is_done());
    }

    #[test]
    fn nonzero_version_without_valid_digest_is_plain() {
        // A C1 claiming a Flash version but carrying no digest (or a broken
        // one) gets the plain answer rather than a refusal.
        let (mut c0c1, client_pos) = ffmpeg_c0c1(5, false);
        c0c1[1 + client_pos] ^= 0xFF;
        let mut srv = HandshakeServer::new(3, 0);
        let mut out = Vec::new();
        srv.handle_input(&c0c1, &mut out).unwrap();
        assert_eq!(srv.kind(), Some(HandshakeKind::Plain));
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c0c1[1..]);
    }

    #[test]
    fn byte_at_a_time_matches_one_shot() {
        for (c0c1, _) in [
            ffmpeg_c0c1(11, false),
            ffmpeg_c0c1(12, true),
            (plain_c0c1(13), 0),
        ] {
            let c2 = filler(99, HANDSHAKE_SIZE);
            let mut whole = c0c1.clone();
            whole.extend_from_slice(&c2);

            let mut one = HandshakeServer::new(77, 5);
            let mut out_one = Vec::new();
            assert_eq!(one.handle_input(&whole, &mut out_one), Ok(whole.len()));
            assert!(one.is_done());

            let mut drip = HandshakeServer::new(77, 5);
            let mut out_drip = Vec::new();
            for (i, b) in whole.iter().enumerate() {
                assert!(!drip.is_done());
                assert_eq!(
                    drip.handle_input(std::slice::from_ref(b), &mut out_drip),
                    Ok(1)
                );
                if i < c0c1.len() - 1 {
                    assert!(out_drip.is_empty(), "nothing sent before C1 is complete");
                    assert_eq!(drip.kind(), None);
                }
                assert!(drip.c1_len <= HANDSHAKE_SIZE);
            }
            assert!(drip.is_done());
            assert_eq!(out_drip, out_one);
            assert_eq!(drip.kind(), one.kind());
            assert_eq!(drip.handle_input(&[], &mut out_drip), Ok(0));
        }
    }

    #[test]
    fn garbage_c0_is_rejected() {
        let mut srv = HandshakeServer::new(0, 0);
        let mut out = Vec::new();
        let err = srv
            .handle_input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out)
            .unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion(0x47));
        assert_eq!(err.to_string(), "unsupported RTMP version 0x47 in C0");
        assert!(out.is_empty());
        assert!(!srv.is_done());
        // Sticky: a later call fails the same way without touching `out`.
        assert_eq!(srv.handle_input(&plain_c0c1(1), &mut out), Err(err));
        assert!(out.is_empty());
        assert_eq!(srv.kind(), None);
    }

    #[test]
    fn rtmpe_c0_is_rejected() {
        for v in [6u8, 8, 9, 0, 4] {
            let mut srv = HandshakeServer::new(0, 0);
            let mut out = Vec::new();
            let mut input = vec![v];
            input.extend_from_slice(&filler(v.into(), HANDSHAKE_SIZE));
            assert_eq!(
                srv.handle_input(&input, &mut out),
                Err(HandshakeError::UnsupportedVersion(v))
            );
            assert!(out.is_empty());
        }
        assert_eq!(
            HandshakeError::UnsupportedVersion(6).to_string(),
            "unsupported RTMP version 0x06 in C0 (RTMPE is not supported)"
        );
    }

    #[test]
    fn bytes_after_c2_are_left_unconsumed() {
        let (c0c1, _) = ffmpeg_c0c1(21, false);
        let mut input = c0c1.clone();
        input.extend_from_slice(&filler(22, HANDSHAKE_SIZE)); // junk C2: accepted
        let chunk_stream = [0x02u8, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 16, 0];
        input.extend_from_slice(&chunk_stream);

        let mut srv = HandshakeServer::new(1, 1);
        let mut out = Vec::new();
        let n = srv.handle_input(&input, &mut out).unwrap();
        assert_eq!(n, 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(&input[n..], &chunk_stream);
        assert!(srv.is_done());
        assert_eq!(srv.handle_input(&input[n..], &mut out), Ok(0));
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);

        // Same when C2 and the chunk stream arrive together in a later call.
        let mut srv = HandshakeServer::new(1, 1);
        let mut out2 = Vec::new();
        assert_eq!(srv.handle_input(&input[..1000], &mut out2), Ok(1000));
        let n = srv.handle_input(&input[1000..], &mut out2).unwrap();
        assert_eq!(1000 + n, 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(out2, out);
    }

    #[test]
    fn client_server_round_trip() {
        for split in [1usize, 7, 1000, 1537, 5000] {
            let mut c_out = Vec::new();
            let mut client = HandshakeClient::new(31, 1_000, &mut c_out);
            assert_eq!(c_out.len(), 1 + HANDSHAKE_SIZE);
            assert_eq!(c_out[0], 3);
            assert_eq!(&c_out[1..9], &[0, 0, 0x03, 0xE8, 0, 0, 0, 0]);
            let c1 = c_out[1..].to_vec();

            let mut server = HandshakeServer::new(32, 2_000);
            let mut s_out = Vec::new();
            for chunk in c_out.chunks(split) {
                assert_eq!(server.handle_input(chunk, &mut s_out), Ok(chunk.len()));
            }
            assert_eq!(server.kind(), Some(HandshakeKind::Plain));
            assert_eq!(&s_out[1 + HANDSHAKE_SIZE..], &c1[..]);
            let s1 = s_out[1..1 + HANDSHAKE_SIZE].to_vec();

            let mut c2 = Vec::new();
            for chunk in s_out.chunks(split) {
                assert!(!client.is_done());
                assert_eq!(client.handle_input(chunk, &mut c2), Ok(chunk.len()));
            }
            assert!(client.is_done());
            assert_eq!(c2, s1, "C2 echoes S1");

            for chunk in c2.chunks(split) {
                assert!(!server.is_done());
                assert_eq!(server.handle_input(chunk, &mut s_out), Ok(chunk.len()));
            }
            assert!(server.is_done());
            assert_eq!(client.handle_input(b"more", &mut c2), Ok(0));
        }
    }

    #[test]
    fn client_rejects_bad_s0_and_keeps_trailing_bytes() {
        let mut out = Vec::new();
        let mut client = HandshakeClient::new(1, 0, &mut out);
        let mut c2 = Vec::new();
        assert_eq!(
            client.handle_input(b"HTTP/1.1 400", &mut c2),
            Err(HandshakeError::UnsupportedServerVersion(b'H'))
        );
        assert!(c2.is_empty());
        assert_eq!(
            client.handle_input(&[3], &mut c2),
            Err(HandshakeError::UnsupportedServerVersion(b'H'))
        );

        let mut client = HandshakeClient::new(1, 0, &mut out);
        let mut input = vec![3];
        input.extend_from_slice(&filler(2, 2 * HANDSHAKE_SIZE));
        input.extend_from_slice(b"tail");
        let n = client.handle_input(&input, &mut c2).unwrap();
        assert_eq!(&input[n..], b"tail");
        assert!(client.is_done());
        assert_eq!(c2, &input[1..1 + HANDSHAKE_SIZE]);
    }

    #[test]
    fn seed_and_epoch_drive_s1() {
        let c0c1 = plain_c0c1(1);
        let run = |seed, epoch| {
            let mut srv = HandshakeServer::new(seed, epoch);
            let mut out = Vec::new();
            srv.handle_input(&c0c1, &mut out).unwrap();
            out
        };
        assert_eq!(run(5, 6), run(5, 6));
        assert_ne!(
            run(5, 6)[9..1 + HANDSHAKE_SIZE],
            run(6, 6)[9..1 + HANDSHAKE_SIZE]
        );
        assert_eq!(&run(5, 0xAABB_CCDD)[1..5], &[0xAA, 0xBB, 0xCC, 0xDD]);
    }

    /// In-tree cousin of the fuzz target: random streams in random splits.
    #[test]
    fn random_streams_never_panic_and_stay_bounded() {
        let mut rng = SplitMix64(0x5EED);
        for round in 0..300u64 {
            let mut stream = match round % 4 {
                0 => filler(round, (rng.next_u64() % 4000) as usize),
                1 => plain_c0c1(round),
                2 => ffmpeg_c0c1(round, round % 8 == 2).0,
                _ => {
                    let mut s = filler(round, (rng.next_u64() % 4000) as usize);
                    if let Some(b) = s.first_mut() {
                        *b = 3;
                    }
                    s
                }
            };
            stream.extend_from_slice(&filler(round + 1000, (rng.next_u64() % 2000) as usize));

            let mut srv = HandshakeServer::new(round, 0);
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let len = match rng.next_u64() % 3 {
                    0 => 1,
                    1 => 1 + (rng.next_u64() % 64) as usize,
                    _ => 1 + (rng.next_u64() % 2000) as usize,
                };
                let chunk = &stream[pos..(pos + len).min(stream.len())];
                match srv.handle_input(chunk, &mut out) {
                    Ok(n) => {
                        assert!(n <= chunk.len());
                        if n < chunk.len() {
                            assert!(srv.is_done());
                        }
                        if srv.is_done() {
                            assert_eq!(srv.handle_input(&chunk[n..], &mut out), Ok(0));
                            break;
                        }
                        pos += n;
                    }
                    Err(e) => {
                        assert_eq!(pos, 0, "only C0 can fail");
                        assert_eq!(e, HandshakeError::UnsupportedVersion(stream[0]));
                        break;
                    }
                }
                assert!(srv.c1_len <= HANDSHAKE_SIZE);
                assert!(srv.c2_seen <= HANDSHAKE_SIZE);
                assert!(out.is_empty() || out.len() == 1 + 2 * HANDSHAKE_SIZE);
                assert_eq!(srv.kind().is_some(), !out.is_empty());
            }
            if stream.len() > 2 * HANDSHAKE_SIZE && stream[0] == 3 {
                assert!(srv.is_done());
            }
        }
    }
}
