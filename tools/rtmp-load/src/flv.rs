//! FLV tag body inspection for the load players (FLV spec v10.1 E.4.2/E.4.3,
//! Enhanced RTMP v1/v2 "ExVideoTagHeader").
//!
//! Every player classifies a media message from its first two bytes only
//! ([`classify_video`], [`classify_audio`]). Probe players also walk the H.264
//! NAL units of each frame ([`avc_nalus`]) looking for a wall-clock SEI
//! ([`sei_wallclock_us`]) to measure publisher-to-player latency.
//!
//! Wall-clock SEI (the contract with the synthetic publishers): an H.264
//! `user_data_unregistered` SEI message (H.264 D.1.7, payloadType 5) whose
//! 16-byte UUID is [`SEI_CLOCK_UUID`], followed by 8 bytes: microseconds
//! since the UNIX epoch, big-endian, taken when the frame was captured.
//! Nothing publishes it yet; streams without it report no latency samples.
//!
//! Not implemented: HEVC/AV1 SEI/OBU parsing (frames are still counted).

/// UUID of the wall-clock `user_data_unregistered` SEI (ASCII, 16 bytes).
pub const SEI_CLOCK_UUID: [u8; 16] = *b"rtcbridge:wclk01";

/// FLV VideoTagHeader frame type 1 = key frame (E.4.3.1).
const FRAME_KEY: u8 = 1;
/// FLV frame type 5 = video info/command frame: not a picture.
const FRAME_COMMAND: u8 = 5;
/// FLV CodecID 7 = AVC.
const CODEC_AVC: u8 = 7;
/// AVCPacketType: 0 sequence header, 1 NALU, 2 end of sequence.
const AVC_NALU: u8 = 1;
/// Enhanced RTMP PacketType: 1 CodedFrames, 3 CodedFramesX.
const EX_CODED_FRAMES: u8 = 1;
const EX_CODED_FRAMES_X: u8 = 3;
/// FLV SoundFormat 10 = AAC; AACPacketType 0 = sequence header.
const SOUND_AAC: u8 = 10;
/// H.264 nal_unit_type 6 = SEI (H.264 Table 7-1); SEI payloadType 5.
const NAL_SEI: u8 = 6;
const SEI_USER_DATA_UNREGISTERED: u32 = 5;

/// What a video message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoClass {
    /// A coded picture (not a sequence header / end of sequence / command).
    pub frame: bool,
    /// A coded key picture.
    pub keyframe: bool,
}

/// Classify a video message from its first two payload bytes.
pub fn classify_video(head: &[u8]) -> VideoClass {
    let Some(&b0) = head.first() else { return VideoClass::default() };
    let frame_type = (b0 >> 4) & 0x07;
    let frame = if b0 & 0x80 != 0 {
        let pt = b0 & 0x0f;
        pt == EX_CODED_FRAMES || pt == EX_CODED_FRAMES_X
    } else if b0 & 0x0f == CODEC_AVC {
        head.get(1) == Some(&AVC_NALU)
    } else {
        true
    };
    let frame = frame && frame_type != FRAME_COMMAND;
    VideoClass { frame, keyframe: frame && frame_type == FRAME_KEY }
}

/// True when an audio message is a coded frame (not an AAC sequence header).
pub fn classify_audio(head: &[u8]) -> bool {
    match head {
        [b0, b1, ..] if b0 >> 4 == SOUND_AAC => *b1 != 0,
        [b0] if b0 >> 4 == SOUND_AAC => false,
        [] => false,
        _ => true,
    }
}

/// NAL unit length size from an AVC sequence header message
/// (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 5.2.4.1:
/// lengthSizeMinusOne in the low 2 bits of its 5th byte).
pub fn avc_length_size(payload: &[u8]) -> Option<usize> {
    let b0 = *payload.first()?;
    let record_at = if b0 & 0x80 != 0 {
        // Enhanced: [hdr][fourcc x4] record, for SequenceStart of 'avc1'.
        if b0 & 0x0f != 0 || payload.get(1..5) != Some(b"avc1") {
            return None;
        }
        5
    } else {
        if b0 & 0x0f != CODEC_AVC || payload.get(1) != Some(&0) {
            return None;
        }
        5
    };
    let b = payload.get(record_at + 4)?;
    Some(usize::from(b & 3) + 1)
}

/// The length-prefixed NAL units of an H.264 frame message, or None when it
/// is not one.
pub fn avc_nalus(payload: &[u8]) -> Option<&[u8]> {
    let b0 = *payload.first()?;
    if b0 & 0x80 != 0 {
        if payload.get(1..5) != Some(b"avc1") {
            return None;
        }
        match b0 & 0x0f {
            EX_CODED_FRAMES => payload.get(8..),
            EX_CODED_FRAMES_X => payload.get(5..),
            _ => None,
        }
    } else if b0 & 0x0f == CODEC_AVC && payload.get(1) == Some(&AVC_NALU) {
        payload.get(5..)
    } else {
        None
    }
}

/// Search the NAL units for the wall-clock SEI; returns its microseconds.
/// `scratch` is reused for the emulation-prevention-free copy of SEI NALs.
pub fn sei_wallclock_us(nalus: &[u8], len_size: usize, scratch: &mut Vec<u8>) -> Option<u64> {
    let mut rest = nalus;
    while rest.len() > len_size {
        let (len_bytes, after) = rest.split_at(len_size);
        let len = len_bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        let nal = after.get(..len)?;
        rest = after.get(len..).unwrap_or(&[]);
        if nal.first().map(|b| b & 0x1f) != Some(NAL_SEI) {
            continue;
        }
        unescape(nal.get(1..).unwrap_or(&[]), scratch);
        if let Some(us) = parse_sei(scratch) {
            return Some(us);
        }
    }
    None
}

/// Remove emulation prevention bytes (00 00 03 → 00 00), H.264 7.4.1.
fn unescape(ebsp: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut zeros = 0;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
}

/// sei_rbsp (H.264 7.3.2.3): messages until the trailing bits.
fn parse_sei(rbsp: &[u8]) -> Option<u64> {
    let mut p = rbsp;
    while p.len() > 1 {
        let ptype = read_ff_coded(&mut p)?;
        let psize = read_ff_coded(&mut p)? as usize;
        let payload = p.get(..psize)?;
        p = p.get(psize..)?;
        if ptype == SEI_USER_DATA_UNREGISTERED && payload.get(..16) == Some(&SEI_CLOCK_UUID[..]) {
            let us = payload.get(16..24)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(us);
            return Some(u64::from_be_bytes(b));
        }
    }
    None
}

/// payloadType / payloadSize coding: 0xFF bytes add 255, then a last byte.
fn read_ff_coded(p: &mut &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    loop {
        let (&b, rest) = p.split_first()?;
        *p = rest;
        v = v.checked_add(u32::from(b))?;
        if b != 0xff {
            return Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_avc_and_aac() {
        assert_eq!(classify_video(&[0x17, 0]), VideoClass { frame: false, keyframe: false });
        assert_eq!(classify_video(&[0x17, 1]), VideoClass { frame: true, keyframe: true });
        assert_eq!(classify_video(&[0x27, 1]), VideoClass { frame: true, keyframe: false });
        assert_eq!(classify_video(&[0x57, 1]), VideoClass { frame: false, keyframe: false });
        // Enhanced RTMP: key + CodedFramesX.
        assert_eq!(classify_video(&[0x80 | 0x10 | 3, b'h']), VideoClass { frame: true, keyframe: true });
        assert!(!classify_audio(&[0xaf, 0]));
        assert!(classify_audio(&[0xaf, 1]));
        assert!(classify_audio(&[0x2f]));
    }

    #[test]
    fn finds_the_wallclock_sei_through_emulation_prevention() {
        let us: u64 = 0x0000_0000_0100_0002; // has 00 00 00 runs: needs escaping
        let mut sei = vec![5u8, 24];
        sei.extend_from_slice(&SEI_CLOCK_UUID);
        sei.extend_from_slice(&us.to_be_bytes());
        sei.push(0x80);
        // Escape: insert 03 after any 00 00 followed by a byte <= 3.
        let mut esc = vec![0x06];
        let mut zeros = 0;
        for &b in &sei {
            if zeros >= 2 && b <= 3 {
                esc.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            esc.push(b);
        }
        let mut msg = vec![0x17, 1, 0, 0, 0];
        let idr = [0x65u8, 0x88, 0x80];
        for nal in [&esc[..], &idr[..]] {
            msg.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            msg.extend_from_slice(nal);
        }
        let mut scratch = Vec::new();
        assert_eq!(sei_wallclock_us(avc_nalus(&msg).unwrap(), 4, &mut scratch), Some(us));
        assert_eq!(avc_length_size(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff]), Some(4));
        // Truncated input never panics.
        for n in 0..msg.len() {
            let _ = avc_nalus(&msg[..n]).map(|x| sei_wallclock_us(x, 4, &mut scratch));
        }
    }
}
