//! WebSocket (RFC 6455), server side, sans-IO.
//!
//! Implemented:
//! - The opening handshake answer (§4.2): [`accept_key`] and [`upgrade_response`] check
//!   `Upgrade`, `Connection`, `Host`, `Sec-WebSocket-Version: 13` and a 16-byte
//!   `Sec-WebSocket-Key`, and echo one subprotocol only when the caller supports one the
//!   client asked for. [`reject_response`] builds the 400 / 426 answer for a failed check.
//! - [`WsDecoder`]: one complete frame per call (§5.2), unmasking (§5.3), reassembly of
//!   fragmented messages (§5.4) with control frames interleaved (§5.5), UTF-8 checks on text
//!   and close reasons (§8.1, checked incrementally so bad bytes fail as soon as they
//!   arrive), close code checks (§7.4), and a bound on the message size (default 1 MiB).
//!   A server decoder demands masked frames (§5.1); [`WsDecoder::for_client`] demands
//!   unmasked ones, for test tools that play the browser.
//! - Encoders: server frames are unmasked and unfragmented ([`write_frame`], [`write_text`],
//!   [`write_ping`], [`write_pong`], [`write_close`]); [`write_client_frame`] writes a masked
//!   frame with an explicit FIN bit, for tools and tests that play the client.
//!
//! Payloads are returned owned: unmasking is a copy anyway, done once into the message.
//! Every [`WsError`] is fatal for the connection and names the close code to send
//! ([`WsError::close_code`]) or, for a failed handshake, the HTTP status
//! ([`WsError::http_status`]).
//!
//! Deliberately not implemented:
//! - Extensions (permessage-deflate, RFC 7692): never negotiated, so any RSV bit is an error.
//! - Origin checks (§4.2.2 item 4 leaves them to server policy; the caller decides).
//! - Streaming a frame's payload before the whole frame has arrived: the caller's receive
//!   buffer must hold one whole frame, at most `max_message + MAX_HEADER` bytes, which the
//!   decoder enforces from the frame header alone (an oversized frame fails before its
//!   payload arrives).
//! - The closing handshake timing (waiting for the peer's Close, then closing TCP) is the
//!   caller's: after a Close frame the decoder discards all further input (§5.5.1).

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Appended to the client's key before hashing. RFC 6455 §1.3, §4.2.2 item 5.4.
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version we speak. RFC 6455 §4.1 item 9, §4.2.2 item 4.
pub const WS_VERSION: &str = "13";
/// Default bound on a reassembled message (sum of all fragments).
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;
/// Largest frame header: 2 bytes + 8 bytes extended length + 4 bytes mask. RFC 6455 §5.2.
pub const MAX_HEADER: usize = 14;
/// Control frames carry at most 125 payload bytes. RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close status codes. RFC 6455 §7.4.1.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

const FIN_BIT: u8 = 0x80; // RFC 6455 §5.2
const RSV_BITS: u8 = 0x70; // RFC 6455 §5.2, RSV1..RSV3
const OPCODE_BITS: u8 = 0x0f; // RFC 6455 §5.2
const MASK_BIT: u8 = 0x80; // RFC 6455 §5.2
const LEN_16: u8 = 126; // RFC 6455 §5.2: next 2 bytes are the length
const LEN_64: u8 = 127; // RFC 6455 §5.2: next 8 bytes are the length

/// Frame opcodes. RFC 6455 §5.2, §11.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsOpcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl WsOpcode {
    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            WsOpcode::Continuation => 0x0,
            WsOpcode::Text => 0x1,
            WsOpcode::Binary => 0x2,
            WsOpcode::Close => 0x8,
            WsOpcode::Ping => 0x9,
            WsOpcode::Pong => 0xA,
        }
    }

    /// Known opcodes only; 0x3–0x7 and 0xB–0xF are reserved (§5.2).
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0x0 => Some(WsOpcode::Continuation),
            0x1 => Some(WsOpcode::Text),
            0x2 => Some(WsOpcode::Binary),
            0x8 => Some(WsOpcode::Close),
            0x9 => Some(WsOpcode::Ping),
            0xA => Some(WsOpcode::Pong),
            _ => None,
        }
    }

    /// Close, Ping and Pong: opcodes with the high bit set. RFC 6455 §5.5.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A complete message (or control frame) received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// Status code (absent when the Close frame had no body) and reason.
    Close(Option<u16>, String),
}

/// Why a handshake or a connection failed. Every variant is fatal for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    // Opening handshake (§4.2.1): answered with an HTTP error, no close frame.
    MissingHost,
    NotUpgradeWebsocket,
    NotConnectionUpgrade,
    UnsupportedVersion,
    BadKey,
    // Framing (§5): answered with a Close frame carrying `close_code()`.
    UnmaskedFrame,
    MaskedFrame,
    ReservedBits,
    ReservedOpcode,
    FragmentedControl,
    ControlTooLong,
    UnexpectedContinuation,
    ExpectedContinuation,
    LengthMsbSet,
    NonMinimalLength,
    MessageTooBig,
    InvalidUtf8,
    BadCloseLength,
    BadCloseCode,
}

impl WsError {
    /// The close status code to send before closing. RFC 6455 §7.4.1.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::MessageTooBig => CLOSE_MESSAGE_TOO_BIG,
            WsError::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// For handshake failures: the HTTP status to answer with (§4.2.2 item 4 asks for 426
    /// with our version on a version mismatch; 400 otherwise). `None` for framing errors.
    pub fn http_status(self) -> Option<u16> {
        match self {
            WsError::UnsupportedVersion => Some(426),
            WsError::MissingHost | WsError::NotUpgradeWebsocket | WsError::NotConnectionUpgrade | WsError::BadKey => {
                Some(400)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WsError::MissingHost => "websocket handshake without Host header",
            WsError::NotUpgradeWebsocket => "websocket handshake without Upgrade: websocket",
            WsError::NotConnectionUpgrade => "websocket handshake without Connection: Upgrade",
            WsError::UnsupportedVersion => "websocket handshake with Sec-WebSocket-Version other than 13",
            WsError::BadKey => "websocket handshake without a 16-byte base64 Sec-WebSocket-Key",
            WsError::UnmaskedFrame => "websocket client frame not masked",
            WsError::MaskedFrame => "websocket server frame masked",
            WsError::ReservedBits => "websocket frame with RSV bits but no extension",
            WsError::ReservedOpcode => "websocket frame with reserved opcode",
            WsError::FragmentedControl => "websocket control frame fragmented",
            WsError::ControlTooLong => "websocket control frame longer than 125 bytes",
            WsError::UnexpectedContinuation => "websocket continuation frame without a message in progress",
            WsError::ExpectedContinuation => "websocket data frame while a fragmented message is in progress",
            WsError::LengthMsbSet => "websocket 64-bit payload length with most significant bit set",
            WsError::NonMinimalLength => "websocket payload length not minimally encoded",
            WsError::MessageTooBig => "websocket message larger than the configured limit",
            WsError::InvalidUtf8 => "websocket text or close reason not valid UTF-8",
            WsError::BadCloseLength => "websocket close frame with a 1-byte body",
            WsError::BadCloseCode => "websocket close frame with an invalid status code",
        })
    }
}

impl std::error::Error for WsError {}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`:
/// base64(SHA-1(key ++ GUID)). RFC 6455 §1.3, §4.2.2 item 5.4.
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Check an upgrade request's headers (§4.2.1) and build the `101 Switching Protocols`
/// answer (§4.2.2). `headers` are (name, value) pairs as received; names match
/// case-insensitively and repeated headers are read as one comma-separated list.
/// `supported_protocols` is our subprotocol list in no particular order: the first
/// protocol the client listed that is in it is echoed; none is echoed when it is empty.
/// The request method (GET) and HTTP version are the HTTP parser's to check.
pub fn upgrade_response(headers: &[(&str, &str)], supported_protocols: &[&str]) -> Result<Vec<u8>, WsError> {
    // §4.2.1 item 2: a Host header field.
    if !headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("host") && !v.trim().is_empty()) {
        return Err(WsError::MissingHost);
    }
    // §4.2.1 item 3: Upgrade containing the token "websocket" (case-insensitive).
    if !header_has_token(headers, "upgrade", "websocket") {
        return Err(WsError::NotUpgradeWebsocket);
    }
    // §4.2.1 item 4: Connection containing the token "Upgrade" (Firefox sends
    // "keep-alive, Upgrade").
    if !header_has_token(headers, "connection", "upgrade") {
        return Err(WsError::NotConnectionUpgrade);
    }
    // §4.2.1 item 6: Sec-WebSocket-Version: 13.
    let version = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-version"));
    if version.map(|(_, v)| v.trim()) != Some(WS_VERSION) {
        return Err(WsError::UnsupportedVersion);
    }
    // §4.2.1 item 5: a key that decodes to exactly 16 bytes. A repeated key is ambiguous.
    let mut keys = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"));
    let key = match (keys.next(), keys.next()) {
        (Some((_, v)), None) => v.trim(),
        _ => return Err(WsError::BadKey),
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(WsError::BadKey),
    }
    // §4.2.2 item 5.4: pick one subprotocol the client offered, if we support one.
    let protocol = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .find(|p| !p.is_empty() && supported_protocols.contains(p));

    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// The HTTP answer to a failed handshake: `426 Upgrade Required` with
/// `Sec-WebSocket-Version: 13` for a version mismatch (§4.2.2 item 4, §4.4), otherwise
/// `400 Bad Request`. The connection is closed after it.
pub fn reject_response(err: WsError) -> Vec<u8> {
    let body = err.to_string();
    let mut out = Vec::with_capacity(160 + body.len());
    if err.http_status() == Some(426) {
        out.extend_from_slice(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\n");
    }
    out.extend_from_slice(b"Content-Type: text/plain\r\nConnection: close\r\nContent-Length: ");
    out.extend_from_slice((body.len() + 1).to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

/// True if any header named `name` lists `token` (comma-separated, case-insensitive).
fn header_has_token(headers: &[(&str, &str)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The fragmented data message in progress (§5.4).
#[derive(Debug)]
struct Partial {
    text: bool,
    buf: Vec<u8>,
    /// For text: bytes of `buf` already known to be valid UTF-8 (fail-fast check, §8.1).
    utf8_checked: usize,
}

/// Incremental frame decoder for one connection.
///
/// Feed it the connection's unread bytes; it parses at most one frame per call and says how
/// many bytes it consumed (0 = the frame is not complete yet). Memory: at most one message
/// in progress, bounded by `max_message`; control frames are returned at once.
#[derive(Debug)]
pub struct WsDecoder {
    max_message: usize,
    /// Server role: frames from the client must be masked (§5.1). Client role: must not.
    expect_masked: bool,
    partial: Option<Partial>,
    /// A Close frame was received: everything after it is discarded (§5.5.1).
    closed: bool,
    /// The first error, returned again on every later call.
    failed: Option<WsError>,
}

impl Default for WsDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl WsDecoder {
    /// Server-side decoder with the default 1 MiB message limit.
    pub fn new() -> Self {
        Self::with_max_message(DEFAULT_MAX_MESSAGE)
    }

    /// Server-side decoder; messages larger than `max_message` bytes fail with 1009.
    pub fn with_max_message(max_message: usize) -> Self {
        WsDecoder { max_message, expect_masked: true, partial: None, closed: false, failed: None }
    }

    /// Client-side decoder (frames from a server must not be masked, §5.1), for test tools.
    pub fn for_client(max_message: usize) -> Self {
        WsDecoder { expect_masked: false, ..Self::with_max_message(max_message) }
    }

    /// True once a Close frame has been decoded.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Decode at most one frame from the front of `input`.
    ///
    /// `Ok((0, None))`: the frame is incomplete, call again with more bytes.
    /// `Ok((n, None))`: `n` bytes held a non-final fragment (or followed a Close); drop them
    /// and call again. `Ok((n, Some(msg)))`: a message or control frame is complete.
    /// `Err(e)`: the connection must be failed with `e.close_code()`; the decoder keeps
    /// returning `e`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<WsMessage>), WsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.closed {
            return Ok((input.len(), None));
        }
        match self.decode_frame(input) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.failed = Some(e);
                self.partial = None;
                Err(e)
            }
        }
    }

    //  0                   1                   2                   3
    //  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    // +-+-+-+-+-------+-+-------------+-------------------------------+
    // |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    // |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    // |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    // | |1|2|3|       |K|             |                               |
    // +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    // |     Extended payload length continued, if payload len == 127  |
    // + - - - - - - - - - - - - - - - +-------------------------------+
    // |                               |Masking-key, if MASK set to 1  |
    // +-------------------------------+-------------------------------+
    // | Masking-key (continued)       |          Payload Data         |
    // +-------------------------------- - - - - - - - - - - - - - - - +
    //                                       RFC 6455 §5.2
    fn decode_frame(&mut self, input: &[u8]) -> Result<(usize, Option<WsMessage>), WsError> {
        let (Some(&b0), Some(&b1)) = (input.first(), input.get(1)) else {
            return Ok((0, None));
        };
        let fin = b0 & FIN_BIT != 0;
        // §5.2: RSV1-3 MUST be 0 unless an extension defines them; we negotiate none.
        if b0 & RSV_BITS != 0 {
            return Err(WsError::ReservedBits);
        }
        // §5.2: unknown opcodes fail the connection.
        let opcode = WsOpcode::from_u8(b0 & OPCODE_BITS).ok_or(WsError::ReservedOpcode)?;
        let masked = b1 & MASK_BIT != 0;
        // §5.1: a server MUST close on an unmasked client frame; a client on a masked one.
        if masked != self.expect_masked {
            return Err(if self.expect_masked { WsError::UnmaskedFrame } else { WsError::MaskedFrame });
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            // §5.5: control frames are never fragmented and carry ≤ 125 bytes.
            if !fin {
                return Err(WsError::FragmentedControl);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(WsError::ControlTooLong);
            }
        }
        let (payload_len, mut pos) = match len7 {
            LEN_16 => {
                let Some(b) = input.get(2..4) else { return Ok((0, None)) };
                let n = u64::from(u16::from_be_bytes(<[u8; 2]>::try_from(b).unwrap_or_default()));
                // §5.2: "the minimal number of bytes MUST be used to encode the length".
                if n < u64::from(LEN_16) {
                    return Err(WsError::NonMinimalLength);
                }
                (n, 4usize)
            }
            LEN_64 => {
                let Some(b) = input.get(2..10) else { return Ok((0, None)) };
                let n = u64::from_be_bytes(<[u8; 8]>::try_from(b).unwrap_or_default());
                // §5.2: the most significant bit MUST be 0.
                if n >> 63 != 0 {
                    return Err(WsError::LengthMsbSet);
                }
                if n <= u64::from(u16::MAX) {
                    return Err(WsError::NonMinimalLength);
                }
                (n, 10usize)
            }
            n => (u64::from(n), 2usize),
        };
        // Enforce the message bound from the header, before the payload arrives. Only a
        // continuation adds to the message in progress; control frames (≤ 125, checked
        // above) interleave without counting towards it.
        let already = match opcode {
            WsOpcode::Continuation => self.partial.as_ref().map_or(0, |p| p.buf.len()),
            _ => 0,
        };
        let payload_len = match usize::try_from(payload_len) {
            Ok(n) if n <= self.max_message.saturating_sub(already) => n,
            _ => return Err(WsError::MessageTooBig),
        };
        // §5.4: continuation only inside a message; a new data frame only outside one.
        match (opcode, self.partial.is_some()) {
            (WsOpcode::Continuation, false) => return Err(WsError::UnexpectedContinuation),
            (WsOpcode::Text | WsOpcode::Binary, true) => return Err(WsError::ExpectedContinuation),
            _ => {}
        }
        let mut key = [0u8; 4];
        if masked {
            let Some(k) = input.get(pos..pos + 4) else { return Ok((0, None)) };
            key = <[u8; 4]>::try_from(k).unwrap_or_default();
            pos += 4;
        }
        let Some(end) = pos.checked_add(payload_len) else { return Err(WsError::MessageTooBig) };
        let Some(raw) = input.get(pos..end) else { return Ok((0, None)) };

        let msg = match opcode {
            WsOpcode::Ping => Some(WsMessage::Ping(unmask_to_vec(raw, key))),
            WsOpcode::Pong => Some(WsMessage::Pong(unmask_to_vec(raw, key))),
            WsOpcode::Close => {
                self.closed = true;
                Some(parse_close(&unmask_to_vec(raw, key))?)
            }
            WsOpcode::Text | WsOpcode::Binary => {
                let text = opcode == WsOpcode::Text;
                let mut p = Partial { text, buf: Vec::with_capacity(payload_len), utf8_checked: 0 };
                unmask_into(raw, key, &mut p.buf);
                self.finish_fragment(p, fin)?
            }
            WsOpcode::Continuation => match self.partial.take() {
                Some(mut p) => {
                    unmask_into(raw, key, &mut p.buf);
                    self.finish_fragment(p, fin)?
                }
                None => return Err(WsError::UnexpectedContinuation),
            },
        };
        Ok((end, msg))
    }

    /// Check the new bytes of a (possibly partial) message; keep it or return it whole.
    fn finish_fragment(&mut self, mut p: Partial, fin: bool) -> Result<Option<WsMessage>, WsError> {
        if p.text {
            // §8.1: fail as soon as the bytes cannot be UTF-8, whatever follows. A sequence
            // cut at the end of a non-final fragment may still complete in the next one.
            let tail = p.buf.get(p.utf8_checked..).unwrap_or(&[]);
            match std::str::from_utf8(tail) {
                Ok(_) => p.utf8_checked = p.buf.len(),
                Err(e) if e.error_len().is_none() && !fin => p.utf8_checked += e.valid_up_to(),
                Err(_) => return Err(WsError::InvalidUtf8),
            }
        }
        if !fin {
            self.partial = Some(p);
            return Ok(None);
        }
        if p.text {
            String::from_utf8(p.buf).map(|s| Some(WsMessage::Text(s))).map_err(|_| WsError::InvalidUtf8)
        } else {
            Ok(Some(WsMessage::Binary(p.buf)))
        }
    }
}

/// Close frame body: empty, or a 2-byte status code then a UTF-8 reason. RFC 6455 §5.5.1.
fn parse_close(body: &[u8]) -> Result<WsMessage, WsError> {
    let (code, reason) = match body {
        [] => return Ok(WsMessage::Close(None, String::new())),
        [_] => return Err(WsError::BadCloseLength),
        [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
    };
    if !close_code_valid(code) {
        return Err(WsError::BadCloseCode);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
    Ok(WsMessage::Close(Some(code), reason.to_owned()))
}

/// Codes a peer may send (§7.4.1, §7.4.2): 1000–1003, 1007–1014 (1012–1014 registered
/// with IANA since), and 3000–4999 for libraries and applications. 1004–1006 and 1015 are
/// reserved and MUST NOT be sent; everything else is unassigned.
fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// §5.3: octet i of the payload is XORed with octet i mod 4 of the masking key.
fn unmask_into(raw: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    out.extend(raw.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
}

fn unmask_to_vec(raw: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(raw.len());
    unmask_into(raw, key, &mut v);
    v
}

/// Write the 2–10 header bytes before the mask key (§5.2), minimal length encoding.
fn write_header(fin: bool, opcode: WsOpcode, masked: bool, len: usize, out: &mut Vec<u8>) {
    out.push(if fin { FIN_BIT } else { 0 } | opcode.as_u8());
    let mask = if masked { MASK_BIT } else { 0 };
    if len < usize::from(LEN_16) {
        out.push(mask | len as u8); // < 126, fits in 7 bits
    } else if let Ok(n) = u16::try_from(len) {
        out.push(mask | LEN_16);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(mask | LEN_64);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Control frame payloads are cut to 125 bytes (§5.5 MUST); data payloads are whole.
fn bounded_payload(opcode: WsOpcode, payload: &[u8]) -> &[u8] {
    if opcode.is_control() {
        payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload)
    } else {
        payload
    }
}

/// Append one final, unmasked server frame (§5.1: a server MUST NOT mask).
/// Control payloads longer than 125 bytes are truncated to 125 (§5.5).
pub fn write_frame(opcode: WsOpcode, payload: &[u8], out: &mut Vec<u8>) {
    let payload = bounded_payload(opcode, payload);
    out.reserve(10 + payload.len());
    write_header(true, opcode, false, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Append a masked client frame with an explicit FIN bit (§5.3). For tools and tests that
/// act as the browser; `key` should be fresh random bytes per frame.
pub fn write_client_frame(fin: bool, opcode: WsOpcode, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    let payload = bounded_payload(opcode, payload);
    out.reserve(MAX_HEADER + payload.len());
    write_header(fin, opcode, true, payload.len(), out);
    out.extend_from_slice(&key);
    unmask_into(payload, key, out);
}

/// Append a text message as one frame.
pub fn write_text(text: &str, out: &mut Vec<u8>) {
    write_frame(WsOpcode::Text, text.as_bytes(), out);
}

/// Append a Ping (payload ≤ 125 bytes, longer is cut).
pub fn write_ping(payload: &[u8], out: &mut Vec<u8>) {
    write_frame(WsOpcode::Ping, payload, out);
}

/// Append a Pong; §5.5.3 wants the Ping's payload echoed.
pub fn write_pong(payload: &[u8], out: &mut Vec<u8>) {
    write_frame(WsOpcode::Pong, payload, out);
}

/// Append a Close frame with `code` and `reason`, the reason cut at a character boundary so
/// the body stays within 125 bytes (§5.5, §5.5.1).
pub fn write_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1; // terminates: 0 is always a boundary
    }
    let reason = reason.get(..cut).unwrap_or("");
    let mut body = Vec::with_capacity(2 + reason.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(reason.as_bytes());
    write_frame(WsOpcode::Close, &body, out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Decode every complete frame in `input`, returning the messages.
    fn decode_all(dec: &mut WsDecoder, mut input: &[u8]) -> Result<Vec<WsMessage>, WsError> {
        let mut out = Vec::new();
        loop {
            let (n, msg) = dec.decode(input)?;
            if let Some(m) = msg {
                out.push(m);
            }
            if n == 0 {
                return Ok(out);
            }
            input = &input[n..];
        }
    }

    mod vectors {
        use super::super::*;
        use super::decode_all;

        /// RFC 6455 §1.3: key "dGhlIHNhbXBsZSBub25jZQ==" gives
        /// "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
        #[test]
        fn accept_key_rfc6455_1_3() {
            assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        }

        /// RFC 6455 §5.7: "A single-frame unmasked text message" — what we emit.
        #[test]
        fn single_frame_unmasked_hello() {
            let mut out = Vec::new();
            write_text("Hello", &mut out);
            assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
            // And a client decoder reads it back.
            let mut dec = WsDecoder::for_client(DEFAULT_MAX_MESSAGE);
            assert_eq!(dec.decode(&out), Ok((7, Some(WsMessage::Text("Hello".into())))));
        }

        /// RFC 6455 §5.7: "A single-frame masked text message" — what we decode.
        #[test]
        fn single_frame_masked_hello() {
            let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
            let mut dec = WsDecoder::new();
            assert_eq!(dec.decode(&frame), Ok((11, Some(WsMessage::Text("Hello".into())))));
            // Our client encoder produces the same bytes with the same key.
            let mut out = Vec::new();
            write_client_frame(true, WsOpcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d], &mut out);
            assert_eq!(out, frame);
        }

        /// RFC 6455 §5.7: "A fragmented unmasked text message" ("Hel" then "lo"), decoded
        /// by a client decoder, and the same fragments masked, decoded by the server.
        #[test]
        fn fragmented_hel_lo() {
            let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
            let second = [0x80, 0x02, 0x6c, 0x6f];
            let mut dec = WsDecoder::for_client(DEFAULT_MAX_MESSAGE);
            assert_eq!(dec.decode(&first), Ok((5, None)));
            assert_eq!(dec.decode(&second), Ok((4, Some(WsMessage::Text("Hello".into())))));

            let mut wire = Vec::new();
            write_client_frame(false, WsOpcode::Text, b"Hel", [1, 2, 3, 4], &mut wire);
            write_client_frame(true, WsOpcode::Continuation, b"lo", [5, 6, 7, 8], &mut wire);
            let mut dec = WsDecoder::new();
            assert_eq!(decode_all(&mut dec, &wire), Ok(vec![WsMessage::Text("Hello".into())]));
        }

        /// RFC 6455 §5.7: "Unmasked Ping request and masked Ping response" (a Pong).
        #[test]
        fn unmasked_ping_masked_pong() {
            let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
            let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
            let mut out = Vec::new();
            write_ping(b"Hello", &mut out);
            assert_eq!(out, ping);
            let mut dec = WsDecoder::new();
            assert_eq!(dec.decode(&pong), Ok((11, Some(WsMessage::Pong(b"Hello".to_vec())))));
        }

        /// RFC 6455 §5.7: "256 bytes binary message in a single unmasked frame"
        /// 0x82 0x7E 0x0100 [256 bytes].
        #[test]
        fn binary_256_bytes() {
            let payload = vec![0xabu8; 256];
            let mut out = Vec::new();
            write_frame(WsOpcode::Binary, &payload, &mut out);
            assert_eq!(&out[..4], &[0x82, 0x7e, 0x01, 0x00]);
            assert_eq!(out.len(), 4 + 256);
            let mut dec = WsDecoder::for_client(DEFAULT_MAX_MESSAGE);
            assert_eq!(dec.decode(&out), Ok((260, Some(WsMessage::Binary(payload)))));
        }

        /// RFC 6455 §5.7: "64KiB binary message in a single unmasked frame"
        /// 0x82 0x7F 0x0000000000010000 [65536 bytes].
        #[test]
        fn binary_64_kib() {
            let payload: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_frame(WsOpcode::Binary, &payload, &mut out);
            assert_eq!(&out[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
            assert_eq!(out.len(), 10 + 65536);
            let mut dec = WsDecoder::for_client(DEFAULT_MAX_MESSAGE);
            assert_eq!(dec.decode(&out), Ok((out.len(), Some(WsMessage::Binary(payload)))));
        }
    }

    fn masked(fin: bool, op: WsOpcode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_client_frame(fin, op, payload, [0x12, 0x34, 0x56, 0x78], &mut v);
        v
    }

    const HEADERS: &[(&str, &str)] = &[
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Version", "13"),
    ];

    #[test]
    fn upgrade_rfc_example() {
        let resp = upgrade_response(HEADERS, &[]).unwrap();
        assert_eq!(
            String::from_utf8(resp).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let resp = String::from_utf8(upgrade_response(HEADERS, &["superchat"]).unwrap()).unwrap();
        assert!(resp.contains("\r\nSec-WebSocket-Protocol: superchat\r\n"));
        let resp = String::from_utf8(upgrade_response(HEADERS, &["other"]).unwrap()).unwrap();
        assert!(!resp.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn upgrade_chrome_and_firefox_shapes() {
        // Firefox: "Connection: keep-alive, Upgrade"; lower-case names as from HTTP/2 proxies;
        // extensions offered are simply not accepted.
        let h = [
            ("host", "127.0.0.1:8080"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", " x3JJHMbDL1EzLkh9GBhXDw== "),
            ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
        ];
        let resp = String::from_utf8(upgrade_response(&h, &[]).unwrap()).unwrap();
        assert!(resp.contains(&format!("Sec-WebSocket-Accept: {}\r\n", accept_key("x3JJHMbDL1EzLkh9GBhXDw=="))));
        assert!(!resp.contains("Extensions"));
    }

    #[test]
    fn upgrade_rejections() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            HEADERS.iter().copied().filter(|(k, _)| !k.eq_ignore_ascii_case(name)).collect()
        };
        assert_eq!(upgrade_response(&without("host"), &[]), Err(WsError::MissingHost));
        assert_eq!(upgrade_response(&without("upgrade"), &[]), Err(WsError::NotUpgradeWebsocket));
        assert_eq!(upgrade_response(&without("connection"), &[]), Err(WsError::NotConnectionUpgrade));
        assert_eq!(upgrade_response(&without("sec-websocket-version"), &[]), Err(WsError::UnsupportedVersion));
        assert_eq!(upgrade_response(&without("sec-websocket-key"), &[]), Err(WsError::BadKey));
        let mut h = without("sec-websocket-version");
        h.push(("Sec-WebSocket-Version", "8"));
        assert_eq!(upgrade_response(&h, &[]), Err(WsError::UnsupportedVersion));
        let mut h = without("sec-websocket-key");
        h.push(("Sec-WebSocket-Key", "c2hvcnQ=")); // "short": not 16 bytes
        assert_eq!(upgrade_response(&h, &[]), Err(WsError::BadKey));
        let mut h = HEADERS.to_vec();
        h.push(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")); // repeated
        assert_eq!(upgrade_response(&h, &[]), Err(WsError::BadKey));

        let r = String::from_utf8(reject_response(WsError::UnsupportedVersion)).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"));
        let r = String::from_utf8(reject_response(WsError::BadKey)).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert!(r.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert_eq!(WsError::UnmaskedFrame.http_status(), None);
    }

    #[test]
    fn unmasked_client_frame_is_1002() {
        let mut dec = WsDecoder::new();
        let e = dec.decode(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]).unwrap_err();
        assert_eq!(e, WsError::UnmaskedFrame);
        assert_eq!(e.close_code(), 1002);
        // Sticky: the decoder stays failed.
        assert_eq!(dec.decode(&masked(true, WsOpcode::Text, b"x")), Err(WsError::UnmaskedFrame));
        // And a client decoder refuses masked server frames.
        let mut dec = WsDecoder::for_client(100);
        assert_eq!(dec.decode(&masked(true, WsOpcode::Text, b"x")), Err(WsError::MaskedFrame));
    }

    #[test]
    fn oversized_message_is_1009() {
        // One big frame: rejected from its header alone, before the payload arrives.
        let mut dec = WsDecoder::with_max_message(1000);
        let frame = masked(true, WsOpcode::Binary, &[0u8; 1001]);
        let e = dec.decode(&frame[..8]).unwrap_err();
        assert_eq!(e, WsError::MessageTooBig);
        assert_eq!(e.close_code(), 1009);
        // Exactly at the limit is fine.
        let mut dec = WsDecoder::with_max_message(1000);
        let frame = masked(true, WsOpcode::Binary, &[0u8; 1000]);
        assert_eq!(dec.decode(&frame).unwrap().0, frame.len());
        // Fragments that add up past the limit.
        let mut dec = WsDecoder::with_max_message(1000);
        let mut wire = masked(false, WsOpcode::Text, &[b'a'; 600]);
        wire.extend(masked(true, WsOpcode::Continuation, &[b'a'; 401]));
        assert_eq!(decode_all(&mut dec, &wire), Err(WsError::MessageTooBig));
        // The default limit is 1 MiB; a 64-bit length near 2^63 is too big, not a panic.
        let mut dec = WsDecoder::new();
        let huge = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(dec.decode(&huge), Err(WsError::MessageTooBig));
    }

    #[test]
    fn bad_utf8_is_1007() {
        let mut dec = WsDecoder::new();
        let e = dec.decode(&masked(true, WsOpcode::Text, &[0xce, 0xba, 0xff])).unwrap_err();
        assert_eq!((e, e.close_code()), (WsError::InvalidUtf8, 1007));
        // Fails fast: the first fragment is already impossible.
        let mut dec = WsDecoder::new();
        assert_eq!(dec.decode(&masked(false, WsOpcode::Text, &[b'a', 0xc0, 0x80])), Err(WsError::InvalidUtf8));
        // A code point split across fragments is fine ("κ" = ce ba).
        let mut dec = WsDecoder::new();
        let mut wire = masked(false, WsOpcode::Text, &[b'a', 0xce]);
        wire.extend(masked(true, WsOpcode::Continuation, &[0xba, b'b']));
        assert_eq!(decode_all(&mut dec, &wire), Ok(vec![WsMessage::Text("aκb".into())]));
        // But not when the message ends inside it.
        let mut dec = WsDecoder::new();
        let mut wire = masked(false, WsOpcode::Text, b"a");
        wire.extend(masked(true, WsOpcode::Continuation, &[0xce]));
        assert_eq!(decode_all(&mut dec, &wire), Err(WsError::InvalidUtf8));
        // Close reason must be UTF-8 too.
        let mut dec = WsDecoder::new();
        assert_eq!(dec.decode(&masked(true, WsOpcode::Close, &[0x03, 0xe8, 0xff])), Err(WsError::InvalidUtf8));
        // Binary is never checked.
        let mut dec = WsDecoder::new();
        let f = masked(true, WsOpcode::Binary, &[0xff]);
        assert_eq!(dec.decode(&f), Ok((f.len(), Some(WsMessage::Binary(vec![0xff])))));
    }

    #[test]
    fn control_interleaved_in_fragmented_message() {
        let mut wire = masked(false, WsOpcode::Text, b"Hel");
        wire.extend(masked(true, WsOpcode::Ping, b"p1"));
        wire.extend(masked(false, WsOpcode::Continuation, b"l"));
        wire.extend(masked(true, WsOpcode::Pong, b""));
        wire.extend(masked(true, WsOpcode::Continuation, b"o"));
        wire.extend(masked(true, WsOpcode::Binary, b"\x00\x01"));
        let mut dec = WsDecoder::new();
        assert_eq!(
            decode_all(&mut dec, &wire),
            Ok(vec![
                WsMessage::Ping(b"p1".to_vec()),
                WsMessage::Pong(vec![]),
                WsMessage::Text("Hello".into()),
                WsMessage::Binary(vec![0, 1]),
            ])
        );
    }

    /// A control frame inside a large fragmented message does not count towards its size,
    /// even when the message is close to the limit.
    #[test]
    fn control_frame_after_large_fragment() {
        let mut wire = masked(false, WsOpcode::Binary, &[1u8; 990]);
        wire.extend(masked(true, WsOpcode::Ping, &[2u8; 125]));
        wire.extend(masked(true, WsOpcode::Continuation, &[3u8; 10]));
        let mut dec = WsDecoder::with_max_message(1000);
        let got = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], WsMessage::Ping(vec![2u8; 125]));
        assert!(matches!(&got[1], WsMessage::Binary(b) if b.len() == 1000));
    }

    #[test]
    fn protocol_errors_are_1002() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            // RSV1 set (permessage-deflate was never negotiated).
            (
                {
                    let mut f = masked(true, WsOpcode::Text, b"x");
                    f[0] |= 0x40;
                    f
                },
                WsError::ReservedBits,
            ),
            (
                {
                    let mut f = masked(true, WsOpcode::Text, b"x");
                    f[0] = 0x83;
                    f
                },
                WsError::ReservedOpcode,
            ),
            (
                {
                    let mut f = masked(true, WsOpcode::Ping, b"x");
                    f[0] = 0x8b;
                    f
                },
                WsError::ReservedOpcode,
            ),
            (masked(false, WsOpcode::Ping, b"x"), WsError::FragmentedControl),
            ([0x89u8, 0xfe, 0, 126, 0, 0, 0, 0].to_vec(), WsError::ControlTooLong),
            (masked(true, WsOpcode::Continuation, b"x"), WsError::UnexpectedContinuation),
            (
                {
                    let mut f = masked(false, WsOpcode::Text, b"a");
                    f.extend(masked(true, WsOpcode::Binary, b"b"));
                    f
                },
                WsError::ExpectedContinuation,
            ),
            ([0x82u8, 0xfe, 0x00, 0x05].to_vec(), WsError::NonMinimalLength),
            ([0x82u8, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00].to_vec(), WsError::NonMinimalLength),
            ([0x82u8, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0].to_vec(), WsError::LengthMsbSet),
            (masked(true, WsOpcode::Close, &[0x03]), WsError::BadCloseLength),
            (masked(true, WsOpcode::Close, &[0x03, 0xed]), WsError::BadCloseCode), // 1005
            (masked(true, WsOpcode::Close, &[0x03, 0xe7]), WsError::BadCloseCode), // 999
            (masked(true, WsOpcode::Close, &[0x13, 0x88]), WsError::BadCloseCode), // 5000
        ];
        for (wire, want) in cases {
            let mut dec = WsDecoder::new();
            let got = decode_all(&mut dec, &wire);
            assert_eq!(got, Err(want), "{wire:02x?}");
            assert_eq!(want.close_code(), 1002);
        }
    }

    #[test]
    fn close_frames() {
        let mut dec = WsDecoder::new();
        let f = masked(true, WsOpcode::Close, &[]);
        assert_eq!(dec.decode(&f), Ok((f.len(), Some(WsMessage::Close(None, String::new())))));
        assert!(dec.is_closed());
        // Anything after Close is discarded.
        assert_eq!(dec.decode(b"garbage"), Ok((7, None)));

        let mut out = Vec::new();
        write_close(1000, "bye", &mut out);
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
        let mut dec = WsDecoder::for_client(100);
        assert_eq!(dec.decode(&out), Ok((7, Some(WsMessage::Close(Some(1000), "bye".into())))));
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999] {
            let mut dec = WsDecoder::new();
            let f = masked(true, WsOpcode::Close, &u16::to_be_bytes(code));
            assert_eq!(dec.decode(&f), Ok((f.len(), Some(WsMessage::Close(Some(code), String::new())))));
        }
        // A long reason is cut at a character boundary within 125 bytes.
        let mut out = Vec::new();
        write_close(1001, &"é".repeat(100), &mut out);
        assert_eq!(out[1], 124); // 2 + 61 * 2
        let mut dec = WsDecoder::for_client(1000);
        assert!(matches!(dec.decode(&out), Ok((126, Some(WsMessage::Close(Some(1001), r)))) if r.len() == 122));
    }

    #[test]
    fn control_payload_truncated_on_write() {
        let mut out = Vec::new();
        write_pong(&[7u8; 200], &mut out);
        assert_eq!(out.len(), 2 + 125);
        assert_eq!(out[1], 125);
    }

    #[test]
    fn round_trips_all_sizes() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            // Server → client.
            let mut wire = Vec::new();
            write_frame(WsOpcode::Binary, &payload, &mut wire);
            let mut dec = WsDecoder::for_client(DEFAULT_MAX_MESSAGE);
            assert_eq!(dec.decode(&wire), Ok((wire.len(), Some(WsMessage::Binary(payload.clone())))));
            // Client → server, split in three fragments.
            let (a, rest) = payload.split_at(len / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            let mut wire = masked(false, WsOpcode::Binary, a);
            wire.extend(masked(false, WsOpcode::Continuation, b));
            wire.extend(masked(true, WsOpcode::Continuation, c));
            let mut dec = WsDecoder::new();
            assert_eq!(decode_all(&mut dec, &wire), Ok(vec![WsMessage::Binary(payload)]));
        }
    }

    #[test]
    fn every_prefix_is_incomplete_not_error() {
        let mut wire = masked(false, WsOpcode::Text, "héllo".as_bytes());
        wire.extend(masked(true, WsOpcode::Ping, b"ping"));
        wire.extend(masked(true, WsOpcode::Continuation, &[b'x'; 300]));
        wire.extend(masked(true, WsOpcode::Binary, &[1u8; 70000]));
        wire.extend(masked(true, WsOpcode::Close, &[0x03, 0xe8]));
        let full = decode_all(&mut WsDecoder::new(), &wire).unwrap();
        assert_eq!(full.len(), 4);
        // Feed byte by byte through an accumulator: same messages, no error, no panic.
        let mut dec = WsDecoder::new();
        let mut acc = Vec::new();
        let mut got = Vec::new();
        for &b in &wire {
            acc.push(b);
            loop {
                let (n, m) = dec.decode(&acc).unwrap();
                got.extend(m);
                if n == 0 {
                    break;
                }
                acc.drain(..n);
            }
        }
        assert_eq!(got, full);
        assert!(acc.is_empty());
    }

    /// Decode `chunks` fed one after another through an accumulator, as the shell does.
    fn decode_chunked(dec: &mut WsDecoder, chunks: &[&[u8]]) -> (Vec<WsMessage>, Option<WsError>) {
        let mut acc: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            acc.extend_from_slice(chunk);
            loop {
                match dec.decode(&acc) {
                    Ok((n, msg)) => {
                        assert!(n <= acc.len());
                        out.extend(msg);
                        if n == 0 {
                            break;
                        }
                        acc.drain(..n);
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// Random frame streams (some corrupted), decoded whole and in random-sized pieces,
    /// give the same messages and the same error.
    #[test]
    fn split_feeding_matches_whole() {
        let mut seed = 88_172_645_463_325_252u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let ops =
            [WsOpcode::Text, WsOpcode::Binary, WsOpcode::Continuation, WsOpcode::Ping, WsOpcode::Pong, WsOpcode::Close];
        let mut messages = 0;
        for _ in 0..20_000 {
            let mut wire = Vec::new();
            for _ in 0..(next() % 5) {
                let op = ops[(next() % 6) as usize];
                let len = (next() % 300) as usize;
                let payload: Vec<u8> = (0..len).map(|_| if next() % 4 == 0 { next() as u8 } else { b'a' }).collect();
                write_client_frame(next() % 3 != 0, op, &payload, (next() as u32).to_be_bytes(), &mut wire);
            }
            if !wire.is_empty() && next() % 3 == 0 {
                let i = (next() as usize) % wire.len();
                wire[i] ^= 1 << (next() % 8);
            }
            let knob = next() as u8;
            let max = 16usize << (knob & 0x0f);
            let pieces: Vec<&[u8]> = wire.chunks(usize::from(knob >> 4) + 1).collect();
            let whole = decode_chunked(&mut WsDecoder::with_max_message(max), &[&wire]);
            assert_eq!(whole, decode_chunked(&mut WsDecoder::with_max_message(max), &pieces));
            messages += whole.0.len();
        }
        assert!(messages > 1000);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias towards plausible headers so deeper paths run.
            if let Some(b) = data.get_mut(1) {
                *b |= 0x80;
            }
            if let Some(b) = data.get_mut(0) {
                if next() % 2 == 0 {
                    *b &= 0x8f;
                }
            }
            let mut dec = WsDecoder::with_max_message(256);
            let mut rest = &data[..];
            while let Ok((n, _)) = dec.decode(rest) {
                if n == 0 {
                    break;
                }
                rest = &rest[n..];
            }
            for i in 0..=data.len() {
                let _ = WsDecoder::new().decode(&data[..i]);
            }
        }
    }
}
