//! FLV tag bodies as RTMP carries them (FLV spec v10, annex E): the three media
//! kinds (RTMP message types 8, 9, 18) and the inspection of a body's first bytes
//! for keyframe and sequence-header flags. Nothing here owns bytes.

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

/// FLV tag body inspection (FLV spec v10 E.4.2, E.4.3): (keyframe, sequence header
/// or metadata).
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

/// An Enhanced RTMP audio body carrying Opus (ExAudioTagHeader with FourCC "Opus").
pub fn is_enhanced_opus(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| b >> 4 == 9) && payload.get(1..5) == Some(b"Opus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_avc_aac_and_enhanced_headers() {
        assert_eq!(classify(MediaKind::Video, &[0x17, 0, 0, 0, 0]), (true, true));
        assert_eq!(classify(MediaKind::Video, &[0x17, 1, 0, 0, 0]), (true, false));
        assert_eq!(classify(MediaKind::Video, &[0x27, 1, 0, 0, 0]), (false, false));
        assert_eq!(classify(MediaKind::Audio, &[0xaf, 0, 0x12, 0x10]), (false, true));
        assert_eq!(classify(MediaKind::Audio, &[0xaf, 1, 5]), (false, false));
        assert_eq!(classify(MediaKind::Audio, &[0x90, b'O', b'p', b'u', b's']), (false, true));
        assert_eq!(classify(MediaKind::Data, &[2]), (false, true));
        assert_eq!(classify(MediaKind::Video, &[]), (false, false));
    }
}
