//! RTMP chunk stream codec (RTMP 1.0 spec §5.3), sans-IO.
//!
//! What is implemented:
//!
//! * [`ChunkDecoder`]: reassembles messages from chunks, **one chunk per call**
//!   so that the session can apply a Set Chunk Size (type 1) or Abort Message
//!   (type 2) before the next chunk is parsed. It never consumes a partial
//!   chunk: if `input` does not hold a whole chunk it returns `Ok((0, None))`
//!   and its state is unchanged, so the caller simply retries with more bytes.
//!   - Basic header in all three forms: csid 2..=63 in one byte, low bits 0 →
//!     `64 + next byte` (two bytes), low bits 1 → `64 + next two bytes
//!     little-endian` (three bytes).
//!   - Message header fmt 0 (absolute timestamp, length, type, stream id
//!     little-endian), fmt 1 (delta, length, type), fmt 2 (delta), fmt 3
//!     (nothing). A fmt 3 chunk continues the message in progress on that
//!     csid; if none is in progress it starts a new message with the previous
//!     header and the previous delta added (§5.3.1.2.4). Following the note in
//!     that section (and ffmpeg), the "previous delta" after a fmt 0 chunk is
//!     that chunk's timestamp.
//!   - Extended timestamp (§5.3.1.3): read when the 24-bit field is
//!     `0xFFFFFF`; it holds the absolute timestamp for fmt 0 and the delta for
//!     fmt 1/2. A fmt 3 chunk that *starts* a message reads it (as its delta)
//!     whenever the csid's most recent fmt 0/1/2 header had one.
//!   - Extended timestamp on fmt 3 *continuation* chunks: the spec and
//!     ffmpeg/Flash/FMLE/OBS (since 2024) repeat the 4 bytes there; old
//!     librtmp (rtmpdump and its forks) omits them. The decoder looks at the
//!     4 bytes after the basic header: if they equal the extended field of
//!     the message's first chunk, or the message's absolute timestamp, they
//!     are taken as the repeated extended timestamp and skipped; otherwise
//!     they are payload. While fewer than 4 bytes are available and they are
//!     a prefix of either value, the decoder waits for more input. (A payload
//!     that happens to start with exactly those bytes from an omitting peer is
//!     misread; that cannot be told apart on the wire.)
//!   - Timestamps are `u32` and wrap modulo 2^32.
//!   - A fmt 0/1/2 chunk on a csid whose message is still incomplete drops the
//!     partial message and starts the new one (as an implicit abort).
//!   - Limits: the message length is checked against `max_message_len` as soon
//!     as the header is read, before any allocation, and a message that is
//!     not media (anything but audio 8, video 9 and aggregate 22, §7.1) also
//!     against the much smaller `max_command_len` (default
//!     [`DEFAULT_MAX_COMMAND_LEN`], [`ChunkError::CommandTooLarge`]):
//!     commands, data and control messages are decoded into values that cost
//!     far more than their bytes, and no real client sends big ones. A
//!     partial message buffer starts at `min(len, 4 * chunk data)` and
//!     otherwise grows only with the data received; at most
//!     [`MAX_CHUNK_STREAMS`] chunk stream ids are tracked (a fmt 0 on a
//!     further csid is [`ChunkError::TooManyChunkStreams`]), and the partial
//!     messages of all of them together hold at most `2 * max_message_len`
//!     bytes ([`ChunkError::TooMuchBuffered`]: a real peer interleaves at
//!     most a video and an audio message). Worst-case buffered memory is
//!     therefore `2 * max_message_len` (plus allocator slack), not
//!     `MAX_CHUNK_STREAMS * max_message_len`.
//! * [`ChunkEncoder`]: chunks whole messages. fmt 0 for the first message on a
//!   csid, a change of message stream id or a timestamp going backwards; else
//!   fmt 1 (length or type changed), fmt 3 (same length, type and delta as the
//!   previous message whose header was fmt 1/2/3) or fmt 2. Extended
//!   timestamp whenever the timestamp/delta is ≥ `0xFFFFFF`, repeated on every
//!   fmt 3 chunk of that message.
//! * Fan-out helpers: [`ChunkEncoder::write_first_header`] plus [`prechunk`]
//!   build a message as "per-player header + shared pre-chunked body".
//!
//! Never panics on any input (the module is under the crate's
//! `clippy::indexing_slicing`/`unwrap_used` deny).

use std::fmt;

/// Chunk size at the start of every connection (§5.4.1).
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Largest chunk size a Set Chunk Size message can carry (31 bits).
pub const MAX_CHUNK_SIZE: usize = 0x7fff_ffff;
/// Most chunk stream ids a [`ChunkDecoder`] tracks at once.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Default limit for a message that is not audio, video or aggregate
/// (commands 17/20, data 15/18, shared objects, control). ffmpeg's connect is
/// about 150 bytes, Flash's 400, onMetaData under 1 KB.
pub const DEFAULT_MAX_COMMAND_LEN: u32 = 64 * 1024;

// Message types that carry media and may be as large as `max_message_len`
// (RTMP 1.0 §7.1.4 audio, video; §7.1.6 aggregate).
const TYPE_AUDIO: u8 = 8;
const TYPE_VIDEO: u8 = 9;
const TYPE_AGGREGATE: u8 = 22;

fn is_media(type_id: u8) -> bool {
    matches!(type_id, TYPE_AUDIO | TYPE_VIDEO | TYPE_AGGREGATE)
}

/// What a message type is, for error messages (RTMP 1.0 §5.4, §7.1).
pub fn type_name(type_id: u8) -> &'static str {
    match type_id {
        1..=3 | 5 | 6 => "protocol control",
        4 => "user control",
        8 => "audio",
        9 => "video",
        15 => "AMF3 data",
        16 => "AMF3 shared object",
        17 => "AMF3 command",
        18 => "AMF0 data",
        19 => "AMF0 shared object",
        20 => "AMF0 command",
        22 => "aggregate",
        _ => "unknown",
    }
}

/// 24-bit timestamp field value meaning "extended timestamp follows".
const EXT_MARKER: u32 = 0x00ff_ffff;
/// Largest message length the 24-bit length field can express.
const MAX_WIRE_LEN: usize = 0x00ff_ffff;
/// Lowest and highest chunk stream id a basic header can carry.
const MIN_CSID: u32 = 2;
const MAX_CSID: u32 = 65599;

/// A reassembled RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

/// Why the chunk stream cannot be decoded further. All are fatal for the
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// fmt 1/2/3 chunk on a chunk stream that never had a fmt 0 header.
    NoPreviousHeader { csid: u32 },
    /// Message length above the configured limit.
    MessageTooLarge { len: u32, limit: u32 },
    /// A command, data or control message longer than the (smaller) limit
    /// for messages that are not media.
    CommandTooLarge { type_id: u8, len: u32, limit: u32 },
    /// The partial messages of all chunk streams together would hold more
    /// than `limit` bytes.
    TooMuchBuffered { limit: usize },
    /// More distinct chunk stream ids open than the limit.
    TooManyChunkStreams,
    /// Set Chunk Size of 0 or with the top bit set (the session calls
    /// set_chunk_size and reports this).
    InvalidChunkSize(u32),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::NoPreviousHeader { csid } => {
                write!(f, "chunk stream {csid} continued without a type 0 header")
            }
            ChunkError::MessageTooLarge { len, limit } => {
                write!(f, "message length {len} exceeds limit {limit}")
            }
            ChunkError::CommandTooLarge { type_id, len, limit } => write!(
                f,
                "{} message (type {type_id}) of {len} bytes exceeds the {limit}-byte limit for non-media messages",
                type_name(*type_id)
            ),
            ChunkError::TooMuchBuffered { limit } => write!(
                f,
                "partial messages on several chunk streams exceed {limit} bytes"
            ),
            ChunkError::TooManyChunkStreams => {
                write!(f, "more than {MAX_CHUNK_STREAMS} chunk streams open")
            }
            ChunkError::InvalidChunkSize(size) => write!(f, "invalid chunk size {size}"),
        }
    }
}

impl std::error::Error for ChunkError {}

// ---------------------------------------------------------------------------
// Byte reader that reports "not enough input" as None.

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        let [b] = self.array::<1>()?;
        Some(b)
    }

    fn be24(&mut self) -> Option<u32> {
        let [a, b, c] = self.array::<3>()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    fn be32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array::<4>()?))
    }

    fn le32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array::<4>()?))
    }
}

// ---------------------------------------------------------------------------
// Decoder

/// Per chunk stream id state kept by the decoder.
#[derive(Debug)]
struct InStream {
    csid: u32,
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// Delta a fmt 3 chunk starting a new message adds (after fmt 0: its
    /// timestamp, §5.3.1.2.4).
    delta: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// The most recent fmt 0/1/2 header carried an extended timestamp.
    has_ext: bool,
    /// Raw extended timestamp field of the current message's first chunk.
    ext_value: u32,
    /// A message is partly received; `buf` holds its data so far.
    in_progress: bool,
    buf: Vec<u8>,
}

/// Header of a message whose first chunk is being decoded.
struct Start {
    timestamp: u32,
    delta: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    has_ext: bool,
    ext_value: u32,
}

/// Reassembles RTMP messages from a chunk stream. See the module docs.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: usize,
    max_message_len: u32,
    max_command_len: u32,
    streams: Vec<InStream>,
    /// Bytes held in the partial messages of all chunk streams.
    buffered: usize,
}

impl ChunkDecoder {
    /// A decoder for a fresh connection; chunk size starts at 128. Messages
    /// longer than `max_message_len` are rejected at their header, messages
    /// that are not media longer than [`DEFAULT_MAX_COMMAND_LEN`] too.
    pub fn new(max_message_len: u32) -> Self {
        ChunkDecoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_len,
            max_command_len: DEFAULT_MAX_COMMAND_LEN,
            streams: Vec::new(),
            buffered: 0,
        }
    }

    /// Limit for messages that are not audio, video or aggregate.
    pub fn set_max_command_len(&mut self, len: u32) {
        self.max_command_len = len;
    }

    /// Most bytes the partial messages of all chunk streams may hold.
    fn max_buffered(&self) -> usize {
        (self.max_message_len as usize).saturating_mul(2)
    }

    /// Bytes currently held in partial messages.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Set the peer's chunk size (from a Set Chunk Size message); 0 or
    /// > MAX_CHUNK_SIZE → Err(InvalidChunkSize).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size as usize > MAX_CHUNK_SIZE {
            return Err(ChunkError::InvalidChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Abort Message (type 2): discard the partial message on `csid`. The
    /// csid's previous header is kept. Unknown csids are ignored.
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.iter_mut().find(|s| s.csid == csid) {
            self.buffered = self.buffered.saturating_sub(s.buf.len());
            s.in_progress = false;
            s.buf = Vec::new();
        }
    }

    fn find(&self, csid: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.csid == csid)
    }

    /// Decode at most ONE chunk from the front of `input`. Returns (bytes
    /// consumed, completed message if this chunk finished one). Returns
    /// Ok((0, None)) when `input` does not yet hold a whole chunk (nothing
    /// consumed, no state changed). Errors leave the state unchanged too, but
    /// are meant to end the connection.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<RawMessage>), ChunkError> {
        match self.decode_inner(input)? {
            Some(done) => Ok(done),
            None => Ok((0, None)),
        }
    }

    /// `Ok(None)`: need more input.
    fn decode_inner(
        &mut self,
        input: &[u8],
    ) -> Result<Option<(usize, Option<RawMessage>)>, ChunkError> {
        let mut r = Reader::new(input);
        let Some(b0) = r.u8() else { return Ok(None) };
        let fmt = b0 >> 6;
        let csid = match b0 & 0x3f {
            0 => match r.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(None),
            },
            1 => match r.array::<2>() {
                Some(b) => 64 + u32::from(u16::from_le_bytes(b)),
                None => return Ok(None),
            },
            low => u32::from(low),
        };

        let idx = self.find(csid);
        let prev = match idx {
            Some(i) => self.streams.get(i),
            None => None,
        };
        if fmt != 0 && prev.is_none() {
            return Err(ChunkError::NoPreviousHeader { csid });
        }
        if fmt == 0 && prev.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyChunkStreams);
        }

        // Continuation of the message in progress?
        if let (3, Some(p)) = (fmt, prev) {
            if p.in_progress {
                let remaining = (p.len as usize).saturating_sub(p.buf.len());
                let n = remaining.min(self.chunk_size);
                if p.has_ext {
                    match repeated_ext(r.rest(), p.ext_value, p.timestamp) {
                        None => return Ok(None),
                        Some(true) => {
                            if r.take(4).is_none() {
                                return Ok(None);
                            }
                        }
                        Some(false) => {}
                    }
                }
                let Some(data) = r.take(n) else {
                    return Ok(None);
                };
                let consumed = r.pos;
                let limit = self.max_buffered();
                if self.buffered.saturating_add(data.len()) > limit {
                    return Err(ChunkError::TooMuchBuffered { limit });
                }
                let Some(s) = idx.and_then(|i| self.streams.get_mut(i)) else {
                    return Ok(None); // unreachable: prev exists
                };
                s.buf.extend_from_slice(data);
                self.buffered = self.buffered.saturating_add(data.len());
                if s.buf.len() >= s.len as usize {
                    self.buffered = self.buffered.saturating_sub(s.buf.len());
                    s.in_progress = false;
                    let msg = RawMessage {
                        csid,
                        timestamp: s.timestamp,
                        type_id: s.type_id,
                        stream_id: s.stream_id,
                        payload: std::mem::take(&mut s.buf),
                    };
                    return Ok(Some((consumed, Some(msg))));
                }
                return Ok(Some((consumed, None)));
            }
        }

        // First chunk of a message: work out its header.
        let start = match (fmt, prev) {
            (0, _) => {
                let (Some(field), Some(len), Some(type_id), Some(stream_id)) =
                    (r.be24(), r.be24(), r.u8(), r.le32())
                else {
                    return Ok(None);
                };
                let (ts, has_ext) = match read_ext(&mut r, field) {
                    Some(v) => v,
                    None => return Ok(None),
                };
                Start {
                    timestamp: ts,
                    delta: ts,
                    len,
                    type_id,
                    stream_id,
                    has_ext,
                    ext_value: ts,
                }
            }
            (1, Some(p)) => {
                let (Some(field), Some(len), Some(type_id)) = (r.be24(), r.be24(), r.u8()) else {
                    return Ok(None);
                };
                let (delta, has_ext) = match read_ext(&mut r, field) {
                    Some(v) => v,
                    None => return Ok(None),
                };
                Start {
                    timestamp: p.timestamp.wrapping_add(delta),
                    delta,
                    len,
                    type_id,
                    stream_id: p.stream_id,
                    has_ext,
                    ext_value: delta,
                }
            }
            (2, Some(p)) => {
                let Some(field) = r.be24() else {
                    return Ok(None);
                };
                let (delta, has_ext) = match read_ext(&mut r, field) {
                    Some(v) => v,
                    None => return Ok(None),
                };
                Start {
                    timestamp: p.timestamp.wrapping_add(delta),
                    delta,
                    len: p.len,
                    type_id: p.type_id,
                    stream_id: p.stream_id,
                    has_ext,
                    ext_value: delta,
                }
            }
            (_, Some(p)) => {
                // fmt 3 starting a new message: previous header, previous
                // delta; the extended field (if the last fmt 0/1/2 header had
                // one) carries the delta.
                let delta = if p.has_ext {
                    match r.be32() {
                        Some(v) => v,
                        None => return Ok(None),
                    }
                } else {
                    p.delta
                };
                Start {
                    timestamp: p.timestamp.wrapping_add(delta),
                    delta,
                    len: p.len,
                    type_id: p.type_id,
                    stream_id: p.stream_id,
                    has_ext: p.has_ext,
                    ext_value: if p.has_ext { delta } else { p.ext_value },
                }
            }
            (_, None) => return Err(ChunkError::NoPreviousHeader { csid }),
        };

        if start.len > self.max_message_len {
            return Err(ChunkError::MessageTooLarge {
                len: start.len,
                limit: self.max_message_len,
            });
        }
        if start.len > self.max_command_len && !is_media(start.type_id) {
            return Err(ChunkError::CommandTooLarge {
                type_id: start.type_id,
                len: start.len,
                limit: self.max_command_len,
            });
        }
        let len = start.len as usize;
        let n = len.min(self.chunk_size);
        let Some(data) = r.take(n) else {
            return Ok(None);
        };
        let consumed = r.pos;
        // A new message on a csid whose message is incomplete drops that one.
        let abandoned = idx
            .and_then(|i| self.streams.get(i))
            .filter(|s| s.in_progress)
            .map_or(0, |s| s.buf.len());
        let held = self.buffered.saturating_sub(abandoned);
        let limit = self.max_buffered();
        if n < len && held.saturating_add(n) > limit {
            return Err(ChunkError::TooMuchBuffered { limit });
        }
        self.buffered = held;

        // Commit.
        let s = match idx.and_then(|i| self.streams.get_mut(i)) {
            Some(s) => s,
            None => {
                self.streams.push(InStream {
                    csid,
                    timestamp: 0,
                    delta: 0,
                    len: 0,
                    type_id: 0,
                    stream_id: 0,
                    has_ext: false,
                    ext_value: 0,
                    in_progress: false,
                    buf: Vec::new(),
                });
                match self.streams.last_mut() {
                    Some(s) => s,
                    None => return Ok(None), // unreachable: just pushed
                }
            }
        };
        s.timestamp = start.timestamp;
        s.delta = start.delta;
        s.len = start.len;
        s.type_id = start.type_id;
        s.stream_id = start.stream_id;
        s.has_ext = start.has_ext;
        s.ext_value = start.ext_value;
        if n >= len {
            // Whole message in this chunk (also drops any abandoned partial).
            s.in_progress = false;
            s.buf = Vec::new();
            let msg = RawMessage {
                csid,
                timestamp: start.timestamp,
                type_id: start.type_id,
                stream_id: start.stream_id,
                payload: data.to_vec(),
            };
            return Ok(Some((consumed, Some(msg))));
        }
        s.in_progress = true;
        s.buf = Vec::with_capacity(len.min(n.saturating_mul(4)));
        s.buf.extend_from_slice(data);
        self.buffered = self.buffered.saturating_add(n);
        Ok(Some((consumed, None)))
    }
}

/// Read the extended timestamp if the 24-bit `field` says one follows.
/// Returns (value, extended?) or None if input ran out.
fn read_ext(r: &mut Reader<'_>, field: u32) -> Option<(u32, bool)> {
    if field == EXT_MARKER {
        Some((r.be32()?, true))
    } else {
        Some((field, false))
    }
}

/// Does a fmt 3 continuation chunk whose data starts at `rest` carry the
/// repeated extended timestamp? It does if its first 4 bytes equal the
/// message's extended field or its absolute timestamp. None: fewer than 4
/// bytes, all matching a prefix of one of those — wait for more.
fn repeated_ext(rest: &[u8], ext_value: u32, timestamp: u32) -> Option<bool> {
    let a = ext_value.to_be_bytes();
    let b = timestamp.to_be_bytes();
    match rest.get(..4) {
        Some(head) => Some(head == a || head == b),
        None => {
            if a.starts_with(rest) || b.starts_with(rest) {
                None
            } else {
                Some(false)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Encoder

/// What the encoder last sent on a chunk stream id.
#[derive(Debug, Clone, Copy)]
struct OutStream {
    csid: u32,
    timestamp: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// Delta of the last message, valid for a fmt 3 start only when the last
    /// message's first chunk was fmt 1/2/3 (never after fmt 0, to not depend
    /// on how the peer reads fmt 3 after fmt 0).
    delta: Option<u32>,
}

/// Chunks outgoing messages. See the module docs.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: usize,
    streams: Vec<OutStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// Chunk size 128.
    pub fn new() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
        }
    }

    /// Caller sends the Set Chunk Size message itself, then calls this.
    /// Clamped to 1..=MAX_CHUNK_SIZE.
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    fn previous(&self, csid: u32) -> Option<OutStream> {
        self.streams.iter().find(|s| s.csid == csid).copied()
    }

    fn record(&mut self, state: OutStream) {
        match self.streams.iter_mut().find(|s| s.csid == state.csid) {
            Some(s) => *s = state,
            None => self.streams.push(state),
        }
    }

    /// Append the whole message, chunked, to `out`. fmt 0 for the first
    /// message on a csid or when the stream id changes or the timestamp goes
    /// backwards; fmt 1/2/3 (delta) when possible; fmt 3 for continuation
    /// chunks; extended timestamp whenever the timestamp/delta ≥ 0xFFFFFF,
    /// repeated on the fmt 3 continuation chunks of that message.
    ///
    /// `csid` must be in 2..=65599 (clamped otherwise). A payload longer than
    /// the 24-bit length field (16 MiB - 1) is truncated to that length.
    pub fn encode(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let csid = csid.clamp(MIN_CSID, MAX_CSID);
        let payload = payload.get(..MAX_WIRE_LEN).unwrap_or(payload);
        let len = payload.len() as u32;
        let chunk_size = self.chunk_size;
        let prev = self
            .previous(csid)
            .filter(|p| p.stream_id == stream_id && timestamp >= p.timestamp);
        let (fmt, field_value) = match prev {
            None => (0u8, timestamp),
            Some(s) => {
                let delta = timestamp.wrapping_sub(s.timestamp);
                if len != s.len || type_id != s.type_id {
                    (1, delta)
                } else if s.delta == Some(delta) {
                    (3, delta)
                } else {
                    (2, delta)
                }
            }
        };
        let ext = field_value >= EXT_MARKER;
        let field = field_value.min(EXT_MARKER);

        out.reserve(payload.len() + 16 + (payload.len() / chunk_size.max(1)) * 7);
        write_basic_header(fmt, csid, out);
        match fmt {
            0 => {
                put_be24(out, field);
                put_be24(out, len);
                out.push(type_id);
                out.extend_from_slice(&stream_id.to_le_bytes());
            }
            1 => {
                put_be24(out, field);
                put_be24(out, len);
                out.push(type_id);
            }
            2 => put_be24(out, field),
            _ => {}
        }
        if ext {
            out.extend_from_slice(&field_value.to_be_bytes());
        }
        let mut chunks = payload.chunks(chunk_size.max(1));
        if let Some(first) = chunks.next() {
            out.extend_from_slice(first);
        }
        for c in chunks {
            write_basic_header(3, csid, out);
            if ext {
                out.extend_from_slice(&field_value.to_be_bytes());
            }
            out.extend_from_slice(c);
        }

        self.record(OutStream {
            csid,
            timestamp,
            len,
            type_id,
            stream_id,
            delta: if fmt == 0 { None } else { Some(field_value) },
        });
    }

    /// Fan-out path: write only the header of the FIRST chunk of a message
    /// (always fmt 0, absolute timestamp, extended timestamp if needed) into
    /// `out`, and record it as the csid's previous header. The caller
    /// supplies the body from [`prechunk`] (only valid when `timestamp <
    /// 0xFFFFFF`). `csid` clamped to 2..=65599, `len` to 24 bits.
    pub fn write_first_header(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        len: u32,
        out: &mut Vec<u8>,
    ) {
        let csid = csid.clamp(MIN_CSID, MAX_CSID);
        let len = len.min(MAX_WIRE_LEN as u32);
        write_basic_header(0, csid, out);
        put_be24(out, timestamp.min(EXT_MARKER));
        put_be24(out, len);
        out.push(type_id);
        out.extend_from_slice(&stream_id.to_le_bytes());
        if timestamp >= EXT_MARKER {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        self.record(OutStream {
            csid,
            timestamp,
            len,
            type_id,
            stream_id,
            delta: None,
        });
    }
}

fn put_be24(out: &mut Vec<u8>, v: u32) {
    let [_, a, b, c] = v.to_be_bytes();
    out.extend_from_slice(&[a, b, c]);
}

/// Queue one shared media message (the fan-out path of a player or a push) at
/// timestamp `ts` on message stream `msid`: only the first chunk header is
/// written per connection (into `scratch`, stored inline by the queue), the
/// chunked body is shared. A body built for another chunk size or chunk stream
/// is re-chunked from a copy (cannot happen with one server-wide size, but
/// stays correct).
pub fn queue_prechunked(
    tx: &mut ChunkEncoder,
    scratch: &mut Vec<u8>,
    kind: crate::proto::flv::MediaKind,
    msid: u32,
    ts: u32,
    body: &Prechunked,
    q: &mut crate::buf::SendQueue,
) {
    let csid = kind.csid();
    if body.chunk_size != tx.chunk_size() || body.csid != csid {
        let payload: Vec<u8> = (0..body.chunk_count()).flat_map(|i| body.chunk_payload(i).iter().copied()).collect();
        scratch.clear();
        tx.encode(csid, ts, kind.type_id(), msid, &payload, scratch);
        q.push_vec(std::mem::take(scratch));
        return;
    }
    scratch.clear();
    tx.write_first_header(csid, ts, kind.type_id(), msid, body.len as u32, scratch);
    q.push_bytes(scratch); // ≤ 18 bytes: stored inline, no allocation
    if ts < 0x00ff_ffff {
        q.push_shared(&body.bytes, 0, body.bytes.len());
    } else {
        // Extended timestamp: every continuation chunk repeats it (§5.3.1.3).
        for i in 0..body.chunk_count() {
            if i > 0 {
                scratch.clear();
                write_basic_header(3, csid, scratch);
                scratch.extend_from_slice(&ts.to_be_bytes());
                q.push_bytes(scratch);
            }
            let r = body.chunk_range(i);
            q.push_shared(&body.bytes, r.start, r.end);
        }
    }
}

/// Bytes the basic header for `csid` takes (after clamping to 2..=65599).
fn basic_header_len(csid: u32) -> usize {
    match csid.clamp(MIN_CSID, MAX_CSID) {
        0..=63 => 1,
        64..=319 => 2,
        _ => 3,
    }
}

/// Split `payload` into the body of a chunked message for `csid` at
/// `chunk_size`: payload[0..cs], then for every further chunk the fmt-3 basic
/// header (1–3 bytes for csid) followed by the next cs bytes. Valid only when
/// the message timestamp is < 0xFFFFFF (otherwise continuation chunks need the
/// extended timestamp; the caller then uses `ChunkEncoder::encode`). Built
/// once per message and shared by every player. A `chunk_size` of 0 is
/// treated as 1.
pub fn prechunk(payload: &[u8], chunk_size: usize, csid: u32, out: &mut Vec<u8>) {
    out.reserve(prechunked_len(payload.len(), chunk_size, csid));
    let mut chunks = payload.chunks(chunk_size.max(1));
    if let Some(first) = chunks.next() {
        out.extend_from_slice(first);
    }
    for c in chunks {
        write_basic_header(3, csid, out);
        out.extend_from_slice(c);
    }
}

/// A message body split once into chunks for one chunk size and chunk stream
/// (see [`prechunk`]) and shared by every player that sends it: per player only
/// the first chunk header is written. When the body fits one chunk it is the
/// payload itself (no copy).
#[derive(Debug, Clone)]
pub struct Prechunked {
    pub chunk_size: usize,
    pub csid: u32,
    /// Length of the message payload (without chunk separators).
    pub len: usize,
    /// payload[0..cs], then per further chunk a fmt-3 basic header and the next cs bytes.
    pub bytes: std::sync::Arc<[u8]>,
}

impl Prechunked {
    /// Chunk `payload` (shared as is when it fits one chunk).
    pub fn new(payload: &std::sync::Arc<[u8]>, chunk_size: usize, csid: u32) -> Self {
        let cs = chunk_size.max(1);
        let bytes = if payload.len() <= cs {
            std::sync::Arc::clone(payload)
        } else {
            let mut out = Vec::with_capacity(prechunked_len(payload.len(), cs, csid));
            prechunk(payload, cs, csid, &mut out);
            out.into()
        };
        Prechunked { chunk_size: cs, csid, len: payload.len(), bytes }
    }

    /// Bytes of the separator between chunks (the fmt-3 basic header).
    pub fn separator_len(&self) -> usize {
        basic_header_len(self.csid)
    }

    pub fn chunk_count(&self) -> usize {
        if self.len == 0 {
            1
        } else {
            self.len.div_ceil(self.chunk_size)
        }
    }

    /// Byte range in `bytes` of chunk `i`'s payload (no headers).
    pub fn chunk_range(&self, i: usize) -> std::ops::Range<usize> {
        let sep = self.separator_len();
        let stride = self.chunk_size + sep;
        let start = if i == 0 { 0 } else { self.chunk_size + (i - 1) * stride + sep };
        let remaining = self.len.saturating_sub(i * self.chunk_size);
        start..start + remaining.min(self.chunk_size)
    }

    /// The payload bytes of chunk `i` (no headers).
    pub fn chunk_payload(&self, i: usize) -> &[u8] {
        self.bytes.get(self.chunk_range(i)).unwrap_or(&[])
    }
}

/// Length `prechunk` would produce.
pub fn prechunked_len(payload_len: usize, chunk_size: usize, csid: u32) -> usize {
    let cs = chunk_size.max(1);
    let extra_chunks = payload_len.saturating_sub(1) / cs;
    payload_len.saturating_add(extra_chunks.saturating_mul(basic_header_len(csid)))
}

/// Write a basic header (fmt, csid) in 1, 2 or 3 bytes (csid 2..=65599;
/// values outside are clamped into that range, `fmt` is masked to 2 bits).
pub fn write_basic_header(fmt: u8, csid: u32, out: &mut Vec<u8>) {
    let f = (fmt & 3) << 6;
    let csid = csid.clamp(MIN_CSID, MAX_CSID);
    match csid {
        0..=63 => out.push(f | csid as u8),
        64..=319 => out.extend_from_slice(&[f, (csid - 64) as u8]),
        _ => {
            let [lo, hi] = ((csid - 64) as u16).to_le_bytes();
            out.extend_from_slice(&[f | 1, lo, hi]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const LIMIT: u32 = 8 * 1024 * 1024;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) -> RawMessage {
        RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Decode everything in `bytes` at once; all bytes must be consumed.
    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8]) -> Vec<RawMessage> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (n, m) = dec.decode(&bytes[pos..]).unwrap();
            if n == 0 {
                assert!(m.is_none());
                break;
            }
            pos += n;
            out.extend(m);
        }
        assert_eq!(pos, bytes.len(), "trailing bytes not decoded");
        out
    }

    /// Feed `bytes` in pieces whose lengths come from `splits` (cycled).
    fn decode_split(dec: &mut ChunkDecoder, bytes: &[u8], splits: &[usize]) -> Vec<RawMessage> {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut k = 0;
        while fed < bytes.len() {
            let step = splits[k % splits.len()].max(1).min(bytes.len() - fed);
            k += 1;
            pending.extend_from_slice(&bytes[fed..fed + step]);
            fed += step;
            loop {
                let (n, m) = dec.decode(&pending).unwrap();
                if n == 0 {
                    break;
                }
                pending.drain(..n);
                out.extend(m);
            }
        }
        assert!(pending.is_empty(), "{} bytes left undecoded", pending.len());
        out
    }

    fn bytewise(dec: &mut ChunkDecoder, bytes: &[u8]) -> Vec<RawMessage> {
        decode_split(dec, bytes, &[1])
    }

    /// Encode `msgs` one by one; returns the stream and the fmt of each
    /// message's first chunk.
    fn encode_all(enc: &mut ChunkEncoder, msgs: &[RawMessage]) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::new();
        let mut fmts = Vec::new();
        for m in msgs {
            let at = out.len();
            enc.encode(
                m.csid,
                m.timestamp,
                m.type_id,
                m.stream_id,
                &m.payload,
                &mut out,
            );
            fmts.push(out[at] >> 6);
        }
        (out, fmts)
    }

    fn sizes_for(cs: usize) -> Vec<usize> {
        let mut v = vec![0, 1, cs - 1, cs, cs + 1, 3 * cs];
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn round_trip_chunk_and_message_sizes() {
        for cs in [1usize, 2, 128, 4096, 65536] {
            let mut msgs = Vec::new();
            let mut ts = 0u32;
            for (i, len) in sizes_for(cs).into_iter().enumerate() {
                // Twice each size so that fmt 2/3 starts happen as well.
                for rep in 0..2u8 {
                    ts += 33;
                    msgs.push(msg(5, ts, 9, 1, pattern(len, i as u8 ^ rep)));
                }
            }
            let mut enc = ChunkEncoder::new();
            enc.set_chunk_size(cs);
            assert_eq!(enc.chunk_size(), cs);
            let (bytes, _) = encode_all(&mut enc, &msgs);

            let mut dec = ChunkDecoder::new(LIMIT);
            dec.set_chunk_size(cs as u32).unwrap();
            assert_eq!(decode_all(&mut dec, &bytes), msgs, "cs {cs}");

            let mut dec = ChunkDecoder::new(LIMIT);
            dec.set_chunk_size(cs as u32).unwrap();
            assert_eq!(
                decode_split(&mut dec, &bytes, &[7, 1, 300, 2, 65537]),
                msgs,
                "cs {cs}"
            );

            if cs <= 4096 {
                let mut dec = ChunkDecoder::new(LIMIT);
                dec.set_chunk_size(cs as u32).unwrap();
                assert_eq!(bytewise(&mut dec, &bytes), msgs, "cs {cs} bytewise");
            }
        }
    }

    #[test]
    fn consecutive_messages_use_every_fmt() {
        let msgs = vec![
            msg(4, 0, 9, 1, pattern(10, 1)),    // first: fmt 0
            msg(4, 40, 9, 1, pattern(300, 2)),  // new length: fmt 1
            msg(4, 70, 9, 1, pattern(300, 3)),  // new delta: fmt 2
            msg(4, 100, 9, 1, pattern(300, 4)), // same delta: fmt 3
            msg(4, 130, 9, 1, pattern(300, 5)), // fmt 3 again
            msg(4, 130, 8, 1, pattern(300, 6)), // type changed: fmt 1
            msg(4, 50, 8, 1, pattern(300, 7)),  // backwards: fmt 0
            msg(4, 60, 8, 2, pattern(300, 8)),  // other stream id: fmt 0
            msg(4, 60, 8, 2, pattern(300, 9)),  // delta 0 after fmt 0: fmt 2
            msg(4, 60, 8, 2, pattern(300, 10)), // delta 0 again: fmt 3
            msg(4, 61, 8, 2, Vec::new()),       // fmt 1, empty
            msg(4, 63, 8, 2, Vec::new()),       // fmt 2, empty
            msg(4, 65, 8, 2, Vec::new()),       // fmt 3, empty
        ];
        let mut enc = ChunkEncoder::new();
        let (bytes, fmts) = encode_all(&mut enc, &msgs);
        assert_eq!(fmts, vec![0, 1, 2, 3, 3, 1, 0, 0, 2, 3, 1, 2, 3]);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(decode_all(&mut dec, &bytes), msgs);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(bytewise(&mut dec, &bytes), msgs);
    }

    #[test]
    fn fmt0_encoding_is_exact() {
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        enc.encode(3, 0x010203, 20, 0x0a0b0c0d, &[1, 2, 3], &mut out);
        assert_eq!(
            out,
            vec![0x03, 0x01, 0x02, 0x03, 0, 0, 3, 20, 0x0d, 0x0c, 0x0b, 0x0a, 1, 2, 3]
        );
        // Same message again 10 ms later: fmt 2 with delta 10.
        out.clear();
        enc.encode(3, 0x01020d, 20, 0x0a0b0c0d, &[4, 5, 6], &mut out);
        assert_eq!(out, vec![0x83, 0, 0, 10, 4, 5, 6]);
        // And again: fmt 3, header only the basic byte.
        out.clear();
        enc.encode(3, 0x010217, 20, 0x0a0b0c0d, &[7, 8, 9], &mut out);
        assert_eq!(out, vec![0xc3, 7, 8, 9]);
    }

    /// Split an encoded single message into its chunks.
    fn split_chunks(
        bytes: &[u8],
        first_hdr: usize,
        cont_hdr: usize,
        cs: usize,
        len: usize,
    ) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut pos = 0;
        let mut left = len;
        let mut hdr = first_hdr;
        loop {
            let n = left.min(cs);
            v.push(bytes[pos..pos + hdr + n].to_vec());
            pos += hdr + n;
            left -= n;
            hdr = cont_hdr;
            if left == 0 {
                break;
            }
        }
        assert_eq!(pos, bytes.len());
        v
    }

    #[test]
    fn interleaved_chunk_streams() {
        let a = msg(4, 1000, 8, 1, pattern(500, 1));
        let b = msg(6, 1001, 9, 1, pattern(900, 2));
        let c = msg(400, 1002, 18, 1, pattern(260, 3));
        let mut enc = ChunkEncoder::new();
        let mut ea = Vec::new();
        let mut eb = Vec::new();
        let mut ec = Vec::new();
        enc.encode(
            a.csid,
            a.timestamp,
            a.type_id,
            a.stream_id,
            &a.payload,
            &mut ea,
        );
        enc.encode(
            b.csid,
            b.timestamp,
            b.type_id,
            b.stream_id,
            &b.payload,
            &mut eb,
        );
        enc.encode(
            c.csid,
            c.timestamp,
            c.type_id,
            c.stream_id,
            &c.payload,
            &mut ec,
        );
        let ca = split_chunks(&ea, 12, 1, 128, 500);
        let cb = split_chunks(&eb, 12, 1, 128, 900);
        let cc = split_chunks(&ec, 14, 3, 128, 260);
        assert_eq!((ca.len(), cb.len(), cc.len()), (4, 8, 3));
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        for i in 0..8 {
            for (chunks, m) in [(&ca, &a), (&cb, &b), (&cc, &c)] {
                if let Some(ch) = chunks.get(i) {
                    wire.extend_from_slice(ch);
                    if i + 1 == chunks.len() {
                        expect.push(m.clone());
                    }
                }
            }
        }
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(decode_all(&mut dec, &wire), expect);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(bytewise(&mut dec, &wire), expect);
    }

    #[test]
    fn extended_timestamps_round_trip() {
        let big = 0x0100_0000u32;
        let msgs = vec![
            msg(5, 0x00ff_fffe, 9, 1, pattern(300, 1)), // fmt 0, just below
            msg(5, 0x00ff_ffff, 9, 1, pattern(300, 2)), // fmt 2, delta 1
            msg(7, 0x00ff_ffff, 9, 1, pattern(300, 3)), // fmt 0, exactly the marker
            msg(7, big + 5, 9, 1, pattern(300, 4)),     // fmt 2, delta small
            msg(8, 3, 9, 1, pattern(10, 5)),            // fmt 0 small
            msg(8, 3 + 0x0200_0000, 9, 1, pattern(400, 6)), // fmt 1, delta extended
            msg(8, 3 + 0x0400_0000, 9, 1, pattern(400, 7)), // fmt 3 start, delta extended
            msg(8, 3 + 0x0600_0000, 9, 1, pattern(400, 8)), // fmt 3 again
            msg(8, 4 + 0x0600_0000, 9, 1, pattern(400, 9)), // fmt 2, back to small
            msg(9, u32::MAX, 9, 1, pattern(129, 10)),   // fmt 0, max timestamp
            msg(9, 7, 9, 1, pattern(129, 11)),          // backwards (wrap) → fmt 0
        ];
        let mut enc = ChunkEncoder::new();
        let (bytes, fmts) = encode_all(&mut enc, &msgs);
        assert_eq!(fmts, vec![0, 2, 0, 2, 0, 1, 3, 3, 2, 0, 0]);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(decode_all(&mut dec, &bytes), msgs);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(bytewise(&mut dec, &bytes), msgs);
    }

    #[test]
    fn extended_timestamp_repeated_on_continuation_chunks() {
        let ts = 0x1234_5678u32;
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        enc.encode(4, ts, 9, 1, &pattern(300, 0), &mut out);
        // 12 header + 4 ext + 128, then 2 × (1 + 4 ext + data).
        assert_eq!(out.len(), 12 + 4 + 300 + 2 * 5);
        assert_eq!(&out[1..4], &[0xff, 0xff, 0xff]);
        assert_eq!(&out[12..16], &ts.to_be_bytes());
        assert_eq!(out[144], 0xc4);
        assert_eq!(&out[145..149], &ts.to_be_bytes());
        assert_eq!(out[277], 0xc4);
        assert_eq!(&out[278..282], &ts.to_be_bytes());
        // Delta header: continuation chunks repeat the delta (as ffmpeg).
        let mut out2 = Vec::new();
        enc.encode(4, ts + 0x0100_0000, 9, 1, &pattern(300, 1), &mut out2);
        assert_eq!(out2[0] >> 6, 2);
        assert_eq!(&out2[4..8], &0x0100_0000u32.to_be_bytes());
        assert_eq!(&out2[137..141], &0x0100_0000u32.to_be_bytes());
        let mut dec = ChunkDecoder::new(LIMIT);
        let mut all = out.clone();
        all.extend_from_slice(&out2);
        let got = decode_all(&mut dec, &all);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].timestamp, ts);
        assert_eq!(got[1].timestamp, ts + 0x0100_0000);
        assert_eq!(got[1].payload, pattern(300, 1));
    }

    /// fmt 0 header bytes for hand-built streams.
    fn fmt0(csid: u32, ts: u32, len: u32, type_id: u8, sid: u32) -> Vec<u8> {
        let mut v = Vec::new();
        write_basic_header(0, csid, &mut v);
        put_be24(&mut v, ts.min(EXT_MARKER));
        put_be24(&mut v, len);
        v.push(type_id);
        v.extend_from_slice(&sid.to_le_bytes());
        if ts >= EXT_MARKER {
            v.extend_from_slice(&ts.to_be_bytes());
        }
        v
    }

    #[test]
    fn librtmp_style_continuation_without_extended_timestamp() {
        let ts = 0x0100_0000u32;
        // Payload whose continuation chunks start with a partial match of the
        // extended timestamp bytes (01 00 00 ..), to exercise the wait-for-4
        // path while feeding byte by byte.
        let mut payload = pattern(300, 9);
        payload[128..132].copy_from_slice(&[0x01, 0x00, 0x00, 0x55]);
        payload[256..260].copy_from_slice(&[0x01, 0x00, 0x07, 0x00]);
        let mut wire = fmt0(4, ts, 300, 9, 1);
        wire.extend_from_slice(&payload[..128]);
        wire.push(0xc4);
        wire.extend_from_slice(&payload[128..256]);
        wire.push(0xc4);
        wire.extend_from_slice(&payload[256..]);
        let expect = vec![msg(4, ts, 9, 1, payload.clone())];
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(decode_all(&mut dec, &wire), expect);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(bytewise(&mut dec, &wire), expect);

        // Last chunk shorter than 4 bytes whose bytes do not match: decoded
        // without waiting for more.
        let mut wire = fmt0(4, ts, 130, 9, 1);
        wire.extend_from_slice(&[0u8; 128]);
        wire.extend_from_slice(&[0xc4, 0x77, 0x66]);
        let mut dec = ChunkDecoder::new(LIMIT);
        let got = decode_all(&mut dec, &wire);
        assert_eq!(got[0].payload.len(), 130);
        assert_eq!(&got[0].payload[128..], &[0x77, 0x66]);

        // Same but the bytes are a prefix of the extended timestamp: wait.
        let mut wire = fmt0(4, ts, 130, 9, 1);
        wire.extend_from_slice(&[0u8; 128]);
        wire.extend_from_slice(&[0xc4, 0x01, 0x00]);
        let mut dec = ChunkDecoder::new(LIMIT);
        let (n, m) = dec.decode(&wire).unwrap();
        assert_eq!((n, m), (12 + 4 + 128, None));
        assert_eq!(dec.decode(&wire[n..]).unwrap(), (0, None));
    }

    #[test]
    fn continuation_extended_timestamp_may_be_absolute_after_delta_header() {
        // fmt 0 at 10, fmt 1 with extended delta; the continuation chunk
        // repeats the absolute timestamp instead of the delta.
        let delta = 0x0200_0000u32;
        let mut wire = fmt0(4, 10, 1, 9, 1);
        wire.push(0xaa);
        wire.push(0x44);
        put_be24(&mut wire, EXT_MARKER);
        put_be24(&mut wire, 200);
        wire.push(9);
        wire.extend_from_slice(&delta.to_be_bytes());
        wire.extend_from_slice(&pattern(128, 1));
        wire.push(0xc4);
        wire.extend_from_slice(&(delta + 10).to_be_bytes());
        wire.extend_from_slice(&pattern(72, 2));
        let mut dec = ChunkDecoder::new(LIMIT);
        let got = decode_all(&mut dec, &wire);
        let mut p = pattern(128, 1);
        p.extend(pattern(72, 2));
        assert_eq!(
            got,
            vec![msg(4, 10, 9, 1, vec![0xaa]), msg(4, delta + 10, 9, 1, p)]
        );
    }

    #[test]
    fn fmt3_new_message_adds_previous_delta() {
        let mut wire = fmt0(5, 100, 2, 8, 1);
        wire.extend_from_slice(&[1, 2]);
        // fmt 3 right after fmt 0: delta is the fmt 0 timestamp (§5.3.1.2.4).
        wire.extend_from_slice(&[0xc5, 3, 4]);
        // fmt 2 delta 20, then fmt 3 twice: +20 each.
        wire.extend_from_slice(&[0x85, 0, 0, 20, 5, 6]);
        wire.extend_from_slice(&[0xc5, 7, 8]);
        wire.extend_from_slice(&[0xc5, 9, 10]);
        let mut dec = ChunkDecoder::new(LIMIT);
        let ts: Vec<u32> = decode_all(&mut dec, &wire)
            .iter()
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(ts, vec![100, 200, 220, 240, 260]);
    }

    #[test]
    fn timestamps_wrap() {
        let mut wire = fmt0(5, 0xffff_fff0, 1, 8, 1);
        wire.push(1);
        wire.extend_from_slice(&[0x85, 0, 0, 0x20, 2]);
        let mut dec = ChunkDecoder::new(LIMIT);
        let got = decode_all(&mut dec, &wire);
        assert_eq!(got[1].timestamp, 0x10);
    }

    #[test]
    fn all_chunk_stream_ids_and_basic_header_forms() {
        for csid in 2..=65599u32 {
            let mut hdr = Vec::new();
            write_basic_header(2, csid, &mut hdr);
            let expect_len = if csid < 64 {
                1
            } else if csid < 320 {
                2
            } else {
                3
            };
            assert_eq!(hdr.len(), expect_len, "csid {csid}");
            assert_eq!(basic_header_len(csid), expect_len);
            assert_eq!(hdr[0] >> 6, 2);
            let mut enc = ChunkEncoder::new();
            enc.set_chunk_size(1);
            let mut out = Vec::new();
            enc.encode(csid, 7, 9, 1, &[1, 2], &mut out);
            let mut dec = ChunkDecoder::new(LIMIT);
            dec.set_chunk_size(1).unwrap();
            assert_eq!(
                decode_all(&mut dec, &out),
                vec![msg(csid, 7, 9, 1, vec![1, 2])],
                "csid {csid}"
            );
        }
        // The three-byte form can also carry small ids (64..=319).
        let mut wire = vec![0x01, 0x00, 0x00]; // fmt 0, csid 64 in 3-byte form
        wire.extend_from_slice(&[0, 0, 1, 0, 0, 1, 9, 1, 0, 0, 0, 0xee]);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(
            decode_all(&mut dec, &wire),
            vec![msg(64, 1, 9, 1, vec![0xee])]
        );
        // Out-of-range ids are clamped, never panic.
        let mut v = Vec::new();
        write_basic_header(7, 0, &mut v);
        write_basic_header(0, u32::MAX, &mut v);
        assert_eq!(v, vec![0xc2, 0x01, 0xff, 0xff]);
    }

    #[test]
    fn prechunk_with_first_header_decodes() {
        for cs in [1usize, 2, 128, 4096] {
            for csid in [3u32, 63, 64, 319, 320, 65599] {
                let mut enc = ChunkEncoder::new();
                enc.set_chunk_size(cs);
                let mut wire = Vec::new();
                let mut expect = Vec::new();
                let mut ts = 1000u32;
                for len in sizes_for(cs) {
                    let payload = pattern(len, csid as u8);
                    let mut body = Vec::new();
                    prechunk(&payload, cs, csid, &mut body);
                    assert_eq!(
                        body.len(),
                        prechunked_len(len, cs, csid),
                        "cs {cs} csid {csid} len {len}"
                    );
                    enc.write_first_header(csid, ts, 9, 1, len as u32, &mut wire);
                    wire.extend_from_slice(&body);
                    expect.push(msg(csid, ts, 9, 1, payload));
                    // An ordinary encode after the fan-out header continues
                    // correctly from the recorded state (delta header).
                    let payload2 = pattern(len + 3, 7);
                    enc.encode(csid, ts + 5, 9, 1, &payload2, &mut wire);
                    expect.push(msg(csid, ts + 5, 9, 1, payload2));
                    ts += 40;
                }
                let mut dec = ChunkDecoder::new(LIMIT);
                dec.set_chunk_size(cs as u32).unwrap();
                assert_eq!(decode_all(&mut dec, &wire), expect, "cs {cs} csid {csid}");
            }
        }
        // Extended timestamp in the first header.
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.write_first_header(4, 0x0300_0000, 9, 1, 3, &mut wire);
        assert_eq!(wire.len(), 16);
        prechunk(&[1, 2, 3], 128, 4, &mut wire);
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(
            decode_all(&mut dec, &wire),
            vec![msg(4, 0x0300_0000, 9, 1, vec![1, 2, 3])]
        );
        assert_eq!(prechunked_len(0, 128, 4), 0);
        assert_eq!(prechunked_len(257, 128, 400), 257 + 6);
        assert_eq!(prechunked_len(10, 0, 4), 10 + 9);
    }

    #[test]
    fn incomplete_chunk_consumes_nothing() {
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.encode(320, 0x0500_0000, 9, 1, &pattern(200, 1), &mut wire);
        let first = 14 + 4 + 128;
        let mut dec = ChunkDecoder::new(LIMIT);
        for cut in 0..first {
            assert_eq!(dec.decode(&wire[..cut]).unwrap(), (0, None), "cut {cut}");
        }
        assert_eq!(dec.decode(&wire).unwrap(), (first, None));
        let rest = &wire[first..];
        for cut in 0..rest.len() {
            assert_eq!(dec.decode(&rest[..cut]).unwrap(), (0, None), "cut {cut}");
        }
        let (n, m) = dec.decode(rest).unwrap();
        assert_eq!(n, rest.len());
        assert_eq!(m.unwrap().payload, pattern(200, 1));
    }

    #[test]
    fn chunk_size_changes_between_chunks() {
        // A Set Chunk Size message followed by messages at the new size; the
        // decoder learns it only after decoding that message.
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.encode(2, 0, 1, 0, &4096u32.to_be_bytes(), &mut wire);
        enc.set_chunk_size(4096);
        enc.encode(4, 0, 9, 1, &pattern(5000, 1), &mut wire);
        let mut dec = ChunkDecoder::new(LIMIT);
        let mut pos = 0;
        let mut got = Vec::new();
        loop {
            let (n, m) = dec.decode(&wire[pos..]).unwrap();
            if n == 0 {
                break;
            }
            pos += n;
            if let Some(m) = m {
                if m.type_id == 1 {
                    let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                    dec.set_chunk_size(size).unwrap();
                }
                got.push(m);
            }
        }
        assert_eq!(pos, wire.len());
        assert_eq!(dec.chunk_size(), 4096);
        assert_eq!(got[1].payload, pattern(5000, 1));
    }

    #[test]
    fn abort_discards_partial_message() {
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.encode(4, 10, 9, 1, &pattern(300, 1), &mut wire);
        let mut dec = ChunkDecoder::new(LIMIT);
        let (n, m) = dec.decode(&wire).unwrap();
        assert_eq!((n, m), (12 + 128, None));
        dec.abort(4);
        dec.abort(77); // unknown csid: nothing happens
                       // A fmt 3 chunk now starts a new message (same header, delta 10 as
                       // the previous header was fmt 0 with timestamp 10).
        let mut more = vec![0xc4];
        more.extend_from_slice(&pattern(128, 2));
        more.push(0xc4);
        more.extend_from_slice(&pattern(128, 3));
        more.push(0xc4);
        more.extend_from_slice(&pattern(44, 4));
        let got = decode_all(&mut dec, &more);
        let mut p = pattern(128, 2);
        p.extend(pattern(128, 3));
        p.extend(pattern(44, 4));
        assert_eq!(got, vec![msg(4, 20, 9, 1, p)]);
    }

    #[test]
    fn new_header_mid_message_replaces_partial() {
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.encode(4, 10, 9, 1, &pattern(300, 1), &mut wire);
        let mut dec = ChunkDecoder::new(LIMIT);
        let (n, _) = dec.decode(&wire).unwrap();
        assert_eq!(n, 140);
        let mut wire2 = fmt0(4, 50, 3, 8, 1);
        wire2.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            decode_all(&mut dec, &wire2),
            vec![msg(4, 50, 8, 1, vec![1, 2, 3])]
        );
    }

    #[test]
    fn error_message_too_large() {
        let mut dec = ChunkDecoder::new(LIMIT);
        let wire = fmt0(4, 0, 0xff_ffff, 9, 1);
        let e = dec.decode(&wire).unwrap_err();
        assert_eq!(
            e,
            ChunkError::MessageTooLarge {
                len: 16_777_215,
                limit: 8_388_608
            }
        );
        assert_eq!(
            e.to_string(),
            "message length 16777215 exceeds limit 8388608"
        );
        // Reported as soon as the header is there, before the data.
        let mut dec = ChunkDecoder::new(10);
        assert_eq!(
            dec.decode(&fmt0(4, 0, 11, 9, 1)),
            Err(ChunkError::MessageTooLarge { len: 11, limit: 10 })
        );
        // fmt 1 raising the length on a known stream.
        let mut wire = fmt0(4, 0, 1, 9, 1);
        wire.push(0);
        let mut dec = ChunkDecoder::new(10);
        assert_eq!(decode_all(&mut dec, &wire).len(), 1);
        assert_eq!(
            dec.decode(&[0x44, 0, 0, 1, 0, 0, 20, 9]),
            Err(ChunkError::MessageTooLarge { len: 20, limit: 10 })
        );
        // Exactly the limit is fine.
        let mut wire = fmt0(4, 0, 10, 9, 1);
        wire.extend_from_slice(&[0; 10]);
        assert_eq!(decode_all(&mut ChunkDecoder::new(10), &wire).len(), 1);
    }

    #[test]
    fn partial_buffer_grows_with_data_only() {
        let mut dec = ChunkDecoder::new(LIMIT);
        dec.set_chunk_size(1).unwrap();
        let mut wire = fmt0(4, 0, LIMIT, 9, 1);
        wire.push(0);
        let (n, m) = dec.decode(&wire).unwrap();
        assert_eq!((n, m), (wire.len(), None));
        assert!(dec.streams[0].buf.capacity() <= 4);
    }

    #[test]
    fn error_no_previous_header() {
        for first in [0x44u8, 0x84, 0xc4] {
            let mut dec = ChunkDecoder::new(LIMIT);
            let e = dec.decode(&[first, 0, 0, 0, 0, 0, 1, 9]).unwrap_err();
            assert_eq!(e, ChunkError::NoPreviousHeader { csid: 4 });
            assert!(e.to_string().contains('4'));
        }
        // Two-byte form.
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(
            dec.decode(&[0x40, 36]),
            Err(ChunkError::NoPreviousHeader { csid: 100 })
        );
    }

    #[test]
    fn error_invalid_chunk_size() {
        let mut dec = ChunkDecoder::new(LIMIT);
        assert_eq!(dec.set_chunk_size(0), Err(ChunkError::InvalidChunkSize(0)));
        assert_eq!(
            ChunkError::InvalidChunkSize(0).to_string(),
            "invalid chunk size 0"
        );
        assert_eq!(
            dec.set_chunk_size(0x8000_0000),
            Err(ChunkError::InvalidChunkSize(0x8000_0000))
        );
        assert_eq!(
            dec.set_chunk_size(u32::MAX),
            Err(ChunkError::InvalidChunkSize(u32::MAX))
        );
        assert_eq!(dec.chunk_size(), DEFAULT_CHUNK_SIZE);
        assert_eq!(dec.set_chunk_size(0x7fff_ffff), Ok(()));
        assert_eq!(dec.chunk_size(), MAX_CHUNK_SIZE);
        let mut enc = ChunkEncoder::new();
        assert_eq!(enc.chunk_size(), DEFAULT_CHUNK_SIZE);
        enc.set_chunk_size(0);
        assert_eq!(enc.chunk_size(), 1);
        enc.set_chunk_size(usize::MAX);
        assert_eq!(enc.chunk_size(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn error_too_many_chunk_streams() {
        let mut dec = ChunkDecoder::new(LIMIT);
        let mut enc = ChunkEncoder::new();
        for csid in 0..MAX_CHUNK_STREAMS as u32 {
            let mut w = Vec::new();
            enc.encode(csid + 3, 0, 9, 1, &[1], &mut w);
            assert_eq!(decode_all(&mut dec, &w).len(), 1);
        }
        let mut w = Vec::new();
        enc.encode(1000, 0, 9, 1, &[1], &mut w);
        assert_eq!(dec.decode(&w), Err(ChunkError::TooManyChunkStreams));
        assert!(ChunkError::TooManyChunkStreams.to_string().contains("64"));
        // Known ids keep working.
        let mut w = Vec::new();
        enc.encode(3, 5, 9, 1, &[2], &mut w);
        assert_eq!(decode_all(&mut dec, &w), vec![msg(3, 5, 9, 1, vec![2])]);
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Drive a decoder the way the session does (applying Set Chunk Size and
    /// Abort) over arbitrary input; must never panic or loop.
    fn drive(input: &[u8], splits: &mut XorShift, limit: u32) -> usize {
        let mut dec = ChunkDecoder::new(limit);
        let mut pending = Vec::new();
        let mut fed = 0;
        let mut msgs = 0;
        while fed < input.len() {
            let step = (splits.below(40) as usize + 1).min(input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + step]);
            fed += step;
            loop {
                match dec.decode(&pending) {
                    Ok((0, m)) => {
                        assert!(m.is_none());
                        break;
                    }
                    Ok((n, m)) => {
                        assert!(n <= pending.len());
                        pending.drain(..n);
                        if let Some(m) = m {
                            assert!(m.payload.len() <= limit as usize);
                            msgs += 1;
                            if m.type_id == 1 && m.payload.len() >= 4 {
                                let s = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                                if dec.set_chunk_size(s & 0x3ff).is_err() {
                                    return msgs;
                                }
                            } else if m.type_id == 2 && m.payload.len() >= 4 {
                                dec.abort(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
                            }
                        }
                    }
                    Err(_) => return msgs,
                }
            }
        }
        msgs
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(600) as usize;
            let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards valid-looking starts so that deeper states are hit.
            if let Some(b) = input.first_mut() {
                *b &= 0x3f;
            }
            let limit = [0u32, 1, 16, 300, LIMIT][rng.below(5) as usize];
            drive(&input, &mut rng, limit);
        }
        // Mutated valid streams reach deeper states than pure noise.
        for _ in 0..1500 {
            let mut enc = ChunkEncoder::new();
            enc.set_chunk_size(rng.below(40) as usize + 1);
            let mut wire = Vec::new();
            for _ in 0..rng.below(8) {
                let csid = [2u32, 3, 70, 400][rng.below(4) as usize];
                let ts = if rng.below(3) == 0 {
                    0x00ff_fff0 + rng.below(64) as u32
                } else {
                    rng.below(100) as u32
                };
                let payload: Vec<u8> = (0..rng.below(120)).map(|_| rng.next() as u8).collect();
                enc.encode(
                    csid,
                    ts,
                    1 + rng.below(10) as u8,
                    rng.below(2) as u32,
                    &payload,
                    &mut wire,
                );
            }
            for _ in 0..rng.below(4) {
                if !wire.is_empty() {
                    let i = rng.below(wire.len() as u64) as usize;
                    wire[i] = rng.next() as u8;
                }
            }
            if rng.below(2) == 0 {
                let cut = rng.below(wire.len() as u64 + 1) as usize;
                wire.truncate(cut);
            }
            let limit = [16u32, 300, LIMIT][rng.below(3) as usize];
            drive(&wire, &mut rng, limit);
        }
    }

    #[test]
    fn random_messages_round_trip_with_random_splits() {
        let mut rng = XorShift(12345);
        for round in 0..200 {
            let cs = [1usize, 2, 3, 7, 128, 1000][rng.below(6) as usize];
            let mut enc = ChunkEncoder::new();
            enc.set_chunk_size(cs);
            let mut msgs = Vec::new();
            let mut ts = [0u32; 4];
            let mut wire = Vec::new();
            for _ in 0..rng.below(12) {
                let lane = rng.below(4) as usize;
                let csid = [2u32, 5, 200, 5000][lane];
                ts[lane] = match rng.below(5) {
                    0 => ts[lane],
                    1 => ts[lane].wrapping_sub(rng.below(100) as u32),
                    2 => ts[lane].wrapping_add(0x00ff_fff0 + rng.below(32) as u32),
                    _ => ts[lane].wrapping_add(rng.below(50) as u32),
                };
                let len = rng.below(3 * cs as u64 + 2) as usize;
                let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let m = msg(
                    csid,
                    ts[lane],
                    8 + rng.below(2) as u8,
                    rng.below(2) as u32,
                    payload,
                );
                if rng.below(4) == 0 && ts[lane] < EXT_MARKER {
                    enc.write_first_header(
                        m.csid,
                        m.timestamp,
                        m.type_id,
                        m.stream_id,
                        len as u32,
                        &mut wire,
                    );
                    prechunk(&m.payload, cs, m.csid, &mut wire);
                } else {
                    enc.encode(
                        m.csid,
                        m.timestamp,
                        m.type_id,
                        m.stream_id,
                        &m.payload,
                        &mut wire,
                    );
                }
                msgs.push(m);
            }
            let splits: Vec<usize> = (0..5).map(|_| rng.below(20) as usize + 1).collect();
            let mut dec = ChunkDecoder::new(LIMIT);
            dec.set_chunk_size(cs as u32).unwrap();
            assert_eq!(
                decode_split(&mut dec, &wire, &splits),
                msgs,
                "round {round}"
            );
        }
    }

    #[test]
    fn oversized_payload_is_truncated_not_panicking() {
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(MAX_CHUNK_SIZE);
        let big = vec![0u8; MAX_WIRE_LEN + 1];
        let mut out = Vec::new();
        enc.encode(4, 0, 9, 1, &big, &mut out);
        assert_eq!(out.len(), 12 + MAX_WIRE_LEN);
        assert_eq!(&out[4..7], &[0xff, 0xff, 0xff]);
    }

    #[test]
    fn non_media_messages_have_the_command_limit() {
        let mut dec = ChunkDecoder::new(LIMIT);
        // An 8 MB AMF0 command: refused at its header, naming what and how big.
        let e = dec.decode(&fmt0(3, 0, LIMIT, 20, 0)).unwrap_err();
        assert_eq!(
            e,
            ChunkError::CommandTooLarge { type_id: 20, len: LIMIT, limit: DEFAULT_MAX_COMMAND_LEN }
        );
        assert_eq!(
            e.to_string(),
            "AMF0 command message (type 20) of 8388608 bytes exceeds the 65536-byte limit for non-media messages"
        );
        // The message limit is checked first (its log line names it).
        assert!(matches!(dec.decode(&fmt0(3, 0, LIMIT + 1, 20, 0)), Err(ChunkError::MessageTooLarge { .. })));
        for type_id in [1, 4, 15, 16, 17, 18, 19, 20, 21, 0] {
            let e = dec.decode(&fmt0(3, 0, DEFAULT_MAX_COMMAND_LEN + 1, type_id, 0)).unwrap_err();
            assert!(matches!(e, ChunkError::CommandTooLarge { .. }), "type {type_id}: {e:?}");
        }
        // Exactly the limit decodes; media is not affected.
        let mut wire = fmt0(3, 0, DEFAULT_MAX_COMMAND_LEN, 20, 0);
        let body = pattern(DEFAULT_MAX_COMMAND_LEN as usize, 3);
        dec.set_chunk_size(DEFAULT_MAX_COMMAND_LEN).unwrap();
        wire.extend_from_slice(&body);
        assert_eq!(decode_all(&mut dec, &wire), vec![msg(3, 0, 20, 0, body)]);
        for type_id in [8, 9, 22] {
            assert_eq!(dec.decode(&fmt0(4, 0, LIMIT, type_id, 1)).unwrap(), (0, None));
        }
        // A fmt 1 header switching a media stream to a big command is caught too.
        let mut dec = ChunkDecoder::new(LIMIT);
        let mut wire = fmt0(4, 0, 1, 9, 1);
        wire.push(0);
        assert_eq!(decode_all(&mut dec, &wire).len(), 1);
        assert!(matches!(
            dec.decode(&[0x44, 0, 0, 1, 0x01, 0, 1, 20]),
            Err(ChunkError::CommandTooLarge { type_id: 20, len: 65_537, .. })
        ));
        // The shell may set another limit.
        let mut dec = ChunkDecoder::new(LIMIT);
        dec.set_max_command_len(100);
        assert!(matches!(dec.decode(&fmt0(3, 0, 101, 18, 0)), Err(ChunkError::CommandTooLarge { limit: 100, .. })));
    }

    #[test]
    fn partial_messages_together_are_bounded() {
        // Partial 1000-byte video messages on many chunk streams: at most
        // twice the message limit (2000 bytes) held in all.
        let mut dec = ChunkDecoder::new(1000);
        dec.set_chunk_size(300).unwrap();
        let open = |dec: &mut ChunkDecoder, csid: u32| {
            let mut wire = fmt0(csid, 0, 1000, 9, 1);
            wire.extend_from_slice(&[csid as u8; 300]);
            dec.decode(&wire)
        };
        for csid in 3..9 {
            assert_eq!(open(&mut dec, csid).unwrap().1, None);
        }
        assert_eq!(dec.buffered(), 1800);
        let e = open(&mut dec, 9).unwrap_err();
        assert_eq!(e, ChunkError::TooMuchBuffered { limit: 2000 });
        assert_eq!(e.to_string(), "partial messages on several chunk streams exceed 2000 bytes");
        assert_eq!(dec.buffered(), 1800, "an error changes nothing");
        // Continuations count too; completing, aborting and replacing a
        // partial message give its bytes back.
        let mut more = vec![0xC3];
        more.extend_from_slice(&[3; 300]);
        assert!(matches!(dec.decode(&more), Err(ChunkError::TooMuchBuffered { .. })));
        dec.abort(4);
        assert_eq!(dec.buffered(), 1500);
        assert_eq!(dec.decode(&more).unwrap().1, None);
        assert_eq!(dec.buffered(), 1800);
        dec.abort(5);
        assert_eq!(dec.decode(&more).unwrap().1, None);
        let mut last = vec![0xC3];
        last.extend_from_slice(&[3; 100]);
        let (_, m) = dec.decode(&last).unwrap();
        assert_eq!(m.unwrap().payload.len(), 1000);
        assert_eq!(dec.buffered(), 900);
        let mut replace = fmt0(6, 0, 10, 9, 1);
        replace.extend_from_slice(&[0; 10]);
        assert_eq!(dec.decode(&replace).unwrap().1.unwrap().payload.len(), 10);
        assert_eq!(dec.buffered(), 600);
        // One message as large as the limit is always possible.
        let mut dec = ChunkDecoder::new(1000);
        let mut wire = fmt0(3, 0, 1000, 9, 1);
        wire.extend_from_slice(&pattern(128, 0));
        for i in 1..8 {
            wire.push(0xC3);
            wire.extend_from_slice(&pattern(if i == 7 { 1000 - 7 * 128 } else { 128 }, 0));
        }
        assert_eq!(decode_all(&mut dec, &wire).len(), 1);
        assert_eq!(dec.buffered(), 0);
    }
}
