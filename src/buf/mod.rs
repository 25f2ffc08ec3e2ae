//! Buffers: the shared immutable media message and the per-connection send queue.
//!
//! A media message is copied once from the publisher's chunk stream into a
//! [`MediaMsg`] whose body is already split into chunks for the server's outgoing
//! chunk size (`prechunk`). Every player then queues a small per-player header
//! plus a reference to that one shared body; `writev` sends them together.

mod sendq;

pub use sendq::{SendQueue, MAX_IOVECS};

use std::sync::Arc;

/// What a media message carries (RTMP message type 8, 9 or 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    Data,
}

impl MediaKind {
    /// RTMP message type id (RTMP spec §7.1.4, §7.1.5, §7.1.2).
    pub fn type_id(self) -> u8 {
        match self {
            MediaKind::Audio => 8,
            MediaKind::Video => 9,
            MediaKind::Data => 18,
        }
    }
    /// Outgoing chunk stream id: one per kind so fmt compression never mixes them.
    pub fn csid(self) -> u32 {
        match self {
            MediaKind::Audio => 4,
            MediaKind::Video => 6,
            MediaKind::Data => 5,
        }
    }
}

/// Which players a message is for. With `--audio opus` a WebRTC stream carries
/// its audio twice: Enhanced RTMP Opus for players whose `connect` listed
/// "Opus" in `fourCcList`, AAC for everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    All,
    /// Players that did not announce Enhanced RTMP Opus.
    NotOpus,
    /// Players that did.
    Opus,
}

/// One FLV/RTMP media message, built once per stream and shared by every
/// player on every core (`Arc<MediaMsg>`). Never mutated after creation.
#[derive(Debug)]
pub struct MediaMsg {
    pub kind: MediaKind,
    /// Publisher timeline, milliseconds.
    pub ts: u32,
    /// Video keyframe (FLV frame type 1), including AVC sequence headers.
    pub keyframe: bool,
    /// AVC or AAC sequence header (codec configuration), or metadata.
    pub config: bool,
    /// Length of the message payload (without chunk headers).
    pub len: usize,
    pub audience: Audience,
    /// When the input that completed this message arrived (the last RTP packet of a
    /// frame), for the server-added latency histogram. None for RTMP-published media.
    pub born: Option<std::time::Instant>,
    /// Chunk size the body was split at.
    pub chunk_size: usize,
    /// The payload split into chunks: payload[0..cs] then, per further chunk,
    /// a fmt-3 basic header for `kind.csid()` and the next cs bytes.
    pub chunked: Vec<u8>,
}

impl MediaMsg {
    /// Copy `payload` once into a shared, pre-chunked message.
    pub fn new(kind: MediaKind, ts: u32, payload: &[u8], chunk_size: usize) -> Arc<MediaMsg> {
        Self::for_audience(kind, ts, payload, chunk_size, Audience::All)
    }

    pub fn for_audience(kind: MediaKind, ts: u32, payload: &[u8], chunk_size: usize, audience: Audience) -> Arc<MediaMsg> {
        Self::build(kind, ts, payload, chunk_size, audience, None)
    }

    pub fn build(
        kind: MediaKind,
        ts: u32,
        payload: &[u8],
        chunk_size: usize,
        audience: Audience,
        born: Option<std::time::Instant>,
    ) -> Arc<MediaMsg> {
        let (keyframe, config) = classify(kind, payload);
        let mut chunked = Vec::with_capacity(crate::proto::rtmp::chunk::prechunked_len(
            payload.len(),
            chunk_size,
            kind.csid(),
        ));
        crate::proto::rtmp::chunk::prechunk(payload, chunk_size, kind.csid(), &mut chunked);
        Arc::new(MediaMsg { kind, ts, keyframe, config, len: payload.len(), audience, born, chunk_size, chunked })
    }

    /// Bytes of the separator between chunks in `chunked` (the fmt-3 basic header).
    pub fn separator_len(&self) -> usize {
        basic_header_len(self.kind.csid())
    }

    /// The payload bytes of chunk `i` (no headers), for the slow path that must
    /// insert extended timestamps on continuation chunks.
    pub fn chunk_payload(&self, i: usize) -> &[u8] {
        let stride = self.chunk_size + self.separator_len();
        let start = if i == 0 { 0 } else { self.chunk_size + (i - 1) * stride + self.separator_len() };
        let remaining = self.len.saturating_sub(i * self.chunk_size);
        let end = start + remaining.min(self.chunk_size);
        self.chunked.get(start..end).unwrap_or(&[])
    }

    pub fn chunk_count(&self) -> usize {
        if self.len == 0 { 1 } else { self.len.div_ceil(self.chunk_size) }
    }

    /// First payload byte(s), for codec inspection (always within chunk 0).
    pub fn head(&self) -> &[u8] {
        self.chunk_payload(0)
    }
}

fn basic_header_len(csid: u32) -> usize {
    match csid {
        0..=63 => 1,
        64..=319 => 2,
        _ => 3,
    }
}

/// FLV tag body inspection (FLV spec v10 E.4.2, E.4.3): keyframe and
/// sequence-header flags.
pub fn classify(kind: MediaKind, payload: &[u8]) -> (bool, bool) {
    match kind {
        MediaKind::Video => {
            let b0 = payload.first().copied().unwrap_or(0);
            let frame_type = (b0 >> 4) & 0x07;
            // Enhanced RTMP: bit 7 set = ExVideoTagHeader, packet type in low nibble (0 = SequenceStart).
            if b0 & 0x80 != 0 {
                return (frame_type == 1, b0 & 0x0f == 0);
            }
            let codec = b0 & 0x0f;
            let avc_seq = codec == 7 && payload.get(1) == Some(&0);
            (frame_type == 1, avc_seq)
        }
        MediaKind::Audio => {
            let b0 = payload.first().copied().unwrap_or(0);
            let aac_seq = (b0 >> 4) == 10 && payload.get(1) == Some(&0);
            // Enhanced RTMP v2: SoundFormat 9 = ExAudioTagHeader, AudioPacketType 0 = SequenceStart.
            let ex_seq = (b0 >> 4) == 9 && (b0 & 0x0f) == 0;
            (false, aac_seq || ex_seq)
        }
        MediaKind::Data => (false, true),
    }
}
