//! H.264 → constrained baseline H.264, once per stream: the video half of
//! playing an RTMP publisher's stream to WebRTC viewers when its H.264 has
//! B-frames (x264's and OBS's default) or a profile browsers cannot decode.
//! Browsers' WebRTC decoders output frames in decode order, so what they get
//! must have no reordering at all. Sans-IO: FLV AVC VIDEODATA bodies in (decode
//! order, RTMP timestamps), FLV AVC bodies out (presentation order, composition
//! time 0), for [`crate::proto::packetize::H264Packetizer`] to send.
//!
//! - Decoding: OpenH264's decoder (the `openh264` crate, bundled C++). It
//!   decodes progressive 8-bit 4:2:0 Baseline, Main and High, CABAC and B
//!   slices included, and gives pictures back in presentation order when it is
//!   *not* asked to flush after every access unit ([`Flush::NoFlush`]; the
//!   crate's default flushes, which scrambles the order of B-frame streams and
//!   then fails on them). It does not decode interlaced (field or MBAFF)
//!   streams, 4:2:2, 4:4:4 or more than 8 bits, nor Extended profile data
//!   partitions: their sequence headers are refused with
//!   [`TranscodeError::Unsupported`] before the decoder sees them.
//! - Timestamps: the decoder is not told them (the crate's safe API has no way
//!   in), so each picture it gives back takes the smallest presentation time
//!   (`dts + cts`) among the pictures fed and not yet given back. That is
//!   exact as long as the decoder returns pictures in presentation order and
//!   one per coded picture, which is what it does; a picture that would go
//!   back in time is dropped.
//! - Encoding: OpenH264's encoder, Baseline profile (profile_idc 66 with
//!   constraint_set0 and constraint_set1: constrained baseline), one slice,
//!   one thread, bitrate rate control without frame skipping, at the decoded
//!   picture size, at most [`TranscodeConfig::max_fps`] pictures a second
//!   (pictures closer together are dropped). An IDR wherever the source had a
//!   keyframe (so viewers join where RTMP players would) and after
//!   [`H264Transcoder::request_keyframe`].
//! - Output: an AVC sequence header whenever the encoder's SPS or PPS change
//!   (the first IDR, a resolution change), then one body per picture with the
//!   slices only (the packetizer repeats SPS/PPS before each IDR).
//!
//! Trouble: a body that does not parse, or that the decoder refuses, is an
//! `Err`; the transcoder then drops everything up to the next keyframe and
//! starts again from there with a fresh decoder.
//!
//! Bounds: at most [`MAX_PENDING`] pictures inside the decoder and at most
//! [`MAX_OUTPUT`] bodies waiting for [`H264Transcoder::poll`]; past that,
//! pictures are dropped (counted), and after an output drop the next picture
//! is an IDR so the viewers' decoders recover. One scratch buffer as large as
//! the largest input body is kept.
//!
//! Not here: scaling, frame-rate conversion by duplication, B-frames or High
//! profile on the output, RTMP timestamp wrap-around (after 49.7 days the
//! presentation order of the pictures around the wrap is wrong), and any
//! throttling of keyframe requests (the caller rate-limits PLIs).

use std::collections::VecDeque;
use std::fmt;

use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, Profile, RateControlMode,
    UsageType,
};
use openh264::{OpenH264API, Timestamp};

use crate::proto::codec::h264::{
    flv_nalu_body, flv_sequence_header, nal_type, parse_sps, FLV_CODEC_AVC, FLV_FRAME_KEY,
    FLV_VIDEO_PREFIX_LEN, NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS,
};
use crate::proto::packetize::{composition_time, parse_avc_config, AvcConfig};

/// Default output bitrate: 1.5 Mbit/s, enough for 720p30 baseline.
pub const DEFAULT_BITRATE: u32 = 1_500_000;
/// Default frame-rate cap.
pub const DEFAULT_MAX_FPS: f32 = 30.0;
/// Pictures fed to the decoder and not yet given back. H.264 holds at most 16
/// frames for reordering (Annex A.3.1, max_dec_frame_buffering ≤ 16).
pub const MAX_PENDING: usize = 32;
/// Output bodies waiting for [`H264Transcoder::poll`].
pub const MAX_OUTPUT: usize = 32;
/// OpenH264's encoder refuses pictures larger than 3840 × 2160 (either way up).
pub const MAX_LONG_SIDE: u32 = 3840;
pub const MAX_SHORT_SIDE: u32 = 2160;
/// Annex B start code (H.264 Annex B.1), what OpenH264 reads and writes.
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// profile_idc values OpenH264 decodes (H.264 Annex A.2.1, A.2.2, A.2.4).
const PROFILE_BASELINE: u8 = 66;
const PROFILE_MAIN: u8 = 77;
const PROFILE_HIGH: u8 = 100;

/// What the transcoder produces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TranscodeConfig {
    /// Target output bitrate (bits per second).
    pub bitrate_bps: u32,
    /// At most this many output pictures a second; pictures closer together
    /// than `1 / max_fps` (by presentation time) are dropped.
    pub max_fps: f32,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            bitrate_bps: DEFAULT_BITRATE,
            max_fps: DEFAULT_MAX_FPS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscodeError {
    /// `bitrate_bps` is 0 or above 100 Mbit/s, or `max_fps` is not in (0, 240].
    InvalidConfig,
    /// Creating the OpenH264 decoder or encoder failed.
    Init,
    /// Not an FLV AVC VIDEODATA body (codec id, packet type, length).
    NotAvc,
    /// The AVCDecoderConfigurationRecord or its SPS does not parse.
    BadConfig,
    /// A NAL unit length runs past the end of the body, or a NAL unit is empty.
    BadNal,
    /// A picture before any sequence header.
    NoConfig,
    /// A stream OpenH264 cannot decode or encode.
    Unsupported { what: &'static str, value: u32 },
    /// The decoder refused an access unit; pictures are dropped up to the
    /// next keyframe.
    Decode,
    /// The encoder refused a picture (or its SPS/PPS do not make a record).
    Encode,
}

impl fmt::Display for TranscodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranscodeError::InvalidConfig => {
                f.write_str("transcode config out of range (bitrate 1..=100M, max_fps (0, 240])")
            }
            TranscodeError::Init => f.write_str("could not create the H.264 decoder or encoder"),
            TranscodeError::NotAvc => f.write_str("not an FLV AVC video body"),
            TranscodeError::BadConfig => {
                f.write_str("malformed AVCDecoderConfigurationRecord or SPS")
            }
            TranscodeError::BadNal => f.write_str("NAL unit length past the end of the body"),
            TranscodeError::NoConfig => f.write_str("H.264 picture before the sequence header"),
            TranscodeError::Unsupported { what, value } => {
                write!(
                    f,
                    "H.264 stream not supported by the transcoder: {what} = {value}"
                )
            }
            TranscodeError::Decode => f.write_str("the H.264 decoder refused an access unit"),
            TranscodeError::Encode => f.write_str("the H.264 encoder refused a picture"),
        }
    }
}

impl std::error::Error for TranscodeError {}

/// Counters for the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TranscodeStats {
    /// Pictures the decoder gave back.
    pub decoded: u64,
    /// Pictures encoded and queued for [`H264Transcoder::poll`].
    pub encoded: u64,
    /// Pictures not encoded: waiting for a keyframe, over the frame-rate cap,
    /// out of order, a full queue, or skipped by the encoder.
    pub dropped: u64,
    /// Access units the decoder refused (each also returned an `Err`).
    pub decode_errors: u64,
}

/// A picture inside the decoder: when it is shown and whether the source
/// coded it as a keyframe.
#[derive(Debug, Clone, Copy)]
struct PendingPicture {
    pts: i64,
    keyframe: bool,
}

/// The encoding half, apart from the decoder so that a decoded picture (which
/// borrows the decoder) can be encoded without a copy.
struct EncodeSide {
    encoder: Encoder,
    /// Whether the encoder has taken a picture (before that it is not set up).
    started: bool,
    force_idr: bool,
    /// 1000 / max_fps.
    interval_ms: f64,
    next_due_ms: Option<f64>,
    last_pts: Option<i64>,
    /// Decoded pictures not yet given back, in decode order.
    pending: Vec<PendingPicture>,
    /// SPS and PPS of the last sequence header sent (empty: none yet).
    sps: Vec<u8>,
    pps: Vec<u8>,
    out: VecDeque<(u32, Vec<u8>)>,
    stats: TranscodeStats,
}

/// See the module docs.
pub struct H264Transcoder {
    /// None until a sequence header, and after a decode error until the next
    /// keyframe.
    decoder: Option<Decoder>,
    /// The source's configuration (its NAL length size, SPS and PPS).
    source: Option<AvcConfig>,
    /// False: pictures are dropped until a keyframe.
    synced: bool,
    /// The access unit in Annex B form, reused.
    annexb: Vec<u8>,
    enc: EncodeSide,
}

impl fmt::Debug for H264Transcoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H264Transcoder")
            .field("synced", &self.synced)
            .field("pending", &self.enc.pending.len())
            .field("queued", &self.enc.out.len())
            .field("stats", &self.enc.stats)
            .finish_non_exhaustive()
    }
}

impl H264Transcoder {
    pub fn new(cfg: TranscodeConfig) -> Result<Self, TranscodeError> {
        if cfg.bitrate_bps == 0
            || cfg.bitrate_bps > 100_000_000
            || !cfg.max_fps.is_finite()
            || cfg.max_fps <= 0.0
            || cfg.max_fps > 240.0
        {
            return Err(TranscodeError::InvalidConfig);
        }
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(cfg.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(cfg.max_fps))
            // A skipped picture is a stall for the viewer; the bitrate is a target.
            .skip_frames(false)
            // Thread-per-core: the encoder must not start threads of its own.
            .num_threads(1)
            .complexity(Complexity::Medium);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|_| TranscodeError::Init)?;
        Ok(H264Transcoder {
            decoder: None,
            source: None,
            synced: false,
            annexb: Vec::new(),
            enc: EncodeSide {
                encoder,
                started: false,
                force_idr: false,
                interval_ms: 1000.0 / f64::from(cfg.max_fps),
                next_due_ms: None,
                last_pts: None,
                pending: Vec::with_capacity(MAX_PENDING),
                sps: Vec::new(),
                pps: Vec::new(),
                out: VecDeque::with_capacity(MAX_OUTPUT),
                stats: TranscodeStats::default(),
            },
        })
    }

    /// One FLV VIDEODATA body for codec 7 (AVC): byte0 = frame type<<4 | 7, byte1 = AVCPacketType
    /// (0 = AVCDecoderConfigurationRecord, 1 = NALUs, 2 = end of sequence), bytes 2..5 = signed
    /// 24-bit composition time offset (ms), then the record or length-prefixed NAL units.
    /// `dts_ms` is the RTMP timestamp (decode order). Malformed input: Err, and the transcoder
    /// stays usable (it resynchronises at the next keyframe).
    pub fn push(&mut self, dts_ms: u32, flv_body: &[u8]) -> Result<(), TranscodeError> {
        let &[b0, packet_type, ..] = flv_body else {
            return Err(TranscodeError::NotAvc);
        };
        if b0 & 0x0f != FLV_CODEC_AVC || b0 & 0x80 != 0 {
            // Enhanced RTMP (bit 7) is another header layout.
            return Err(TranscodeError::NotAvc);
        }
        let cts = composition_time(flv_body).ok_or(TranscodeError::NotAvc)?;
        let payload = flv_body
            .get(FLV_VIDEO_PREFIX_LEN..)
            .ok_or(TranscodeError::NotAvc)?;
        match packet_type {
            0 => self.handle_config(payload),
            1 => {
                let keyframe = b0 >> 4 == FLV_FRAME_KEY;
                let pts = i64::from(dts_ms) + i64::from(cts);
                self.handle_picture(pts, keyframe, payload)
            }
            2 => {
                // The next picture starts a new coded video sequence (an IDR,
                // §7.4.1.2.4); OpenH264 does not take one after a flush, so it
                // gets a fresh decoder.
                let drained = self.drain_decoder();
                self.decoder = None;
                self.synced = false;
                drained
            }
            _ => Err(TranscodeError::NotAvc),
        }
    }

    /// Output, in order: an AVC sequence header, then pictures (see the module
    /// docs), each with its presentation time in ms.
    pub fn poll(&mut self) -> Option<(u32, Vec<u8>)> {
        self.enc.out.pop_front()
    }

    /// The next output frame is an IDR (a viewer asked for a keyframe via PLI).
    pub fn request_keyframe(&mut self) {
        self.enc.force_idr = true;
    }

    pub fn stats(&self) -> TranscodeStats {
        self.enc.stats
    }

    fn handle_config(&mut self, record: &[u8]) -> Result<(), TranscodeError> {
        let config = parse_avc_config(record).map_err(|_| TranscodeError::BadConfig)?;
        for sps in &config.sps {
            check_sps(sps)?;
        }
        if self.source.as_ref() == Some(&config) {
            // Publishers repeat the sequence header; nothing changed.
            return Ok(());
        }
        // Pictures of the old configuration still inside the decoder go out first.
        let drained = self.drain_decoder();
        self.decoder = None;
        self.source = Some(config);
        self.synced = false;
        self.enc.pending.clear();
        drained
    }

    fn handle_picture(
        &mut self,
        pts: i64,
        keyframe: bool,
        nalus: &[u8],
    ) -> Result<(), TranscodeError> {
        let Some(source) = self.source.as_ref() else {
            return Err(TranscodeError::NoConfig);
        };
        if !self.synced && !keyframe {
            self.enc.stats.dropped += 1;
            return Ok(());
        }
        // Annex B for the decoder, with the SPS and PPS in front when the
        // decoder is new (here !synced implies keyframe).
        self.annexb.clear();
        let fresh = self.decoder.is_none();
        if fresh {
            for ps in source.sps.iter().chain(source.pps.iter()) {
                self.annexb.extend_from_slice(&START_CODE);
                self.annexb.extend_from_slice(ps);
            }
        }
        let has_picture = append_annexb(nalus, source.length_size, &mut self.annexb)?;
        if !self.synced {
            self.synced = true;
            self.enc.pending.clear();
        }
        if fresh {
            self.decoder = Some(new_decoder()?);
        }
        if has_picture {
            if self.enc.pending.len() >= MAX_PENDING {
                // The decoder keeps far fewer; forget the oldest.
                self.enc.take_pending();
                self.enc.stats.dropped += 1;
            }
            self.enc.pending.push(PendingPicture { pts, keyframe });
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(TranscodeError::Init);
        };
        match decoder.decode(&self.annexb) {
            Ok(Some(picture)) => self.enc.handle_decoded(&picture),
            Ok(None) => Ok(()),
            Err(_) => {
                self.enc.stats.decode_errors += 1;
                self.enc.stats.dropped += self.enc.pending.len() as u64;
                self.enc.pending.clear();
                self.decoder = None;
                self.synced = false;
                Err(TranscodeError::Decode)
            }
        }
    }

    /// Encode every picture still inside the decoder (end of sequence, new
    /// configuration).
    fn drain_decoder(&mut self) -> Result<(), TranscodeError> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let pictures = decoder
            .flush_remaining()
            .map_err(|_| TranscodeError::Decode)?;
        let mut result = Ok(());
        for picture in &pictures {
            if let Err(e) = self.enc.handle_decoded(picture) {
                result = Err(e);
            }
        }
        self.enc.pending.clear();
        result
    }
}

impl EncodeSide {
    /// Remove and return the pending picture shown first.
    fn take_pending(&mut self) -> Option<PendingPicture> {
        let (at, _) = self.pending.iter().enumerate().min_by_key(|(_, p)| p.pts)?;
        Some(self.pending.swap_remove(at))
    }

    fn handle_decoded(&mut self, picture: &DecodedYUV<'_>) -> Result<(), TranscodeError> {
        self.stats.decoded += 1;
        let Some(PendingPicture { pts, keyframe }) = self.take_pending() else {
            // A picture we did not count in: nothing to time it by.
            self.stats.dropped += 1;
            return Ok(());
        };
        if self.last_pts.is_some_and(|last| pts <= last) {
            self.stats.dropped += 1;
            return Ok(());
        }
        // Frame-rate cap, with a quarter interval of slack for millisecond rounding.
        let pts_f = pts as f64;
        if self
            .next_due_ms
            .is_some_and(|due| pts_f < due - self.interval_ms / 4.0)
        {
            self.stats.dropped += 1;
            return Ok(());
        }
        if self.out.len() + 2 > MAX_OUTPUT {
            // Nobody is polling; what goes out next must not need this picture.
            self.stats.dropped += 1;
            self.force_idr = true;
            return Ok(());
        }
        if self.started && (keyframe || self.force_idr) {
            self.encoder.force_intra_frame();
        }
        self.force_idr = false;
        let ts = u32_time(pts);
        let bitstream = self
            .encoder
            .encode_at(picture, Timestamp::from_millis(u64::from(ts)))
            .map_err(|_| TranscodeError::Encode)?;
        self.started = true;
        let key = match bitstream.frame_type() {
            FrameType::IDR | FrameType::I => true,
            FrameType::P | FrameType::IPMixed => false,
            FrameType::Skip | FrameType::Invalid => {
                self.stats.dropped += 1;
                return Ok(());
            }
        };
        let mut slices: Vec<&[u8]> = Vec::with_capacity(4);
        let (mut sps, mut pps) = (None, None);
        // nal_unit() borrows the layer, so the layers must outlive the loop.
        let layers: Vec<_> = (0..bitstream.num_layers())
            .filter_map(|i| bitstream.layer(i))
            .collect();
        for layer in &layers {
            for nal in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
                let nal = strip_start_code(nal);
                match nal.first().map(|&h| nal_type(h)) {
                    Some(NAL_SPS) => sps = Some(nal),
                    Some(NAL_PPS) => pps = Some(nal),
                    Some(_) => slices.push(nal),
                    None => {}
                }
            }
        }
        if let (Some(sps), Some(pps)) = (sps, pps) {
            if sps != self.sps.as_slice() || pps != self.pps.as_slice() {
                let header = flv_sequence_header(sps, pps).map_err(|_| TranscodeError::Encode)?;
                self.sps = sps.to_vec();
                self.pps = pps.to_vec();
                self.out.push_back((ts, header));
            }
        }
        if self.sps.is_empty() || slices.is_empty() {
            // Nothing a viewer could decode yet.
            self.stats.dropped += 1;
            self.force_idr = true;
            return Ok(());
        }
        self.out.push_back((ts, flv_nalu_body(key, &slices)));
        self.stats.encoded += 1;
        self.last_pts = Some(pts);
        self.next_due_ms = Some(pts_f + self.interval_ms);
        Ok(())
    }
}

/// A decoder that hands pictures back in presentation order (see the module docs).
fn new_decoder() -> Result<Decoder, TranscodeError> {
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    Decoder::with_api_config(OpenH264API::from_source(), config).map_err(|_| TranscodeError::Init)
}

/// Refuse what OpenH264 cannot decode (or encode back) before it sees it.
fn check_sps(sps: &[u8]) -> Result<(), TranscodeError> {
    let info = parse_sps(sps).map_err(|_| TranscodeError::BadConfig)?;
    let unsupported = |what, value| Err(TranscodeError::Unsupported { what, value });
    if info.chroma_format_idc != 1 {
        return unsupported("chroma_format_idc", u32::from(info.chroma_format_idc));
    }
    if info.bit_depth_luma != 8 || info.bit_depth_chroma != 8 {
        return unsupported(
            "bit_depth",
            u32::from(info.bit_depth_luma.max(info.bit_depth_chroma)),
        );
    }
    if !info.frame_mbs_only {
        return unsupported("frame_mbs_only_flag", 0);
    }
    let (long, short) = (info.width.max(info.height), info.width.min(info.height));
    if long > MAX_LONG_SIDE || short > MAX_SHORT_SIDE {
        return unsupported("picture size", long);
    }
    // Last: the checks above name the reason for High 4:2:2, High 10 and the like.
    if !matches!(
        info.profile_idc,
        PROFILE_BASELINE | PROFILE_MAIN | PROFILE_HIGH
    ) {
        return unsupported("profile_idc", u32::from(info.profile_idc));
    }
    Ok(())
}

/// Append the NAL units of an FLV AVC body (each behind a `length_size`-byte
/// big-endian length) to `out` in Annex B form. True if one is a coded slice.
/// In-band SPS are checked like the sequence header's.
fn append_annexb(
    mut body: &[u8],
    length_size: usize,
    out: &mut Vec<u8>,
) -> Result<bool, TranscodeError> {
    let mut has_slice = false;
    while !body.is_empty() {
        let (len, rest) = body
            .split_at_checked(length_size)
            .ok_or(TranscodeError::BadNal)?;
        let len = len.iter().fold(0usize, |a, &b| a << 8 | usize::from(b));
        let (nal, rest) = rest.split_at_checked(len).ok_or(TranscodeError::BadNal)?;
        let &header = nal.first().ok_or(TranscodeError::BadNal)?;
        match nal_type(header) {
            NAL_SLICE | NAL_IDR => has_slice = true,
            // Data partitioning (Extended profile) is not decoded by OpenH264.
            t @ 2..=4 => {
                return Err(TranscodeError::Unsupported {
                    what: "nal_unit_type",
                    value: u32::from(t),
                })
            }
            NAL_SPS => check_sps(nal)?,
            _ => {}
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
        body = rest;
    }
    Ok(has_slice)
}

/// A NAL unit as OpenH264's encoder writes it, without its start code.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&START_CODE)
        .or_else(|| nal.strip_prefix(&[0, 0, 1]))
        .unwrap_or(nal)
}

/// An RTMP time (ms, wrapping at 2^32) from an extended presentation time.
fn u32_time(pts: i64) -> u32 {
    // rem_euclid is in 0..2^32.
    u32::try_from(pts.rem_euclid(1 << 32)).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::codec::h264::SpsInfo;
    use openh264::formats::YUVSource;

    /// `ffmpeg -f lavfi -i testsrc2=size=320x240:rate=30 -t 2 -c:v libx264
    /// -profile:v high -bf 2 -g 30 -f flv`: 60 pictures, High profile, CABAC,
    /// B-frames (b-pyramid), IDR every 30.
    const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/h264_high_bf2_320x240.flv");
    /// The fixture's pictures as ffmpeg decodes them, in presentation order,
    /// luma averaged over 16 × 16 blocks: 20 × 15 bytes a picture.
    const THUMBS: &[u8] = include_bytes!("../../../tests/fixtures/h264_high_bf2_320x240.thumbs");
    const THUMB_LEN: usize = 20 * 15;
    const FIXTURE_PICTURES: usize = 60;
    /// Presentation time of the fixture's first picture (dts 0 + cts 67).
    const FIRST_PTS: u32 = 67;

    /// SPS of other ffmpeg/libx264 streams (testsrc2 320x240): High 4:2:2,
    /// interlaced High, High 10.
    const SPS_HIGH422: &str = "677a000dbcd94141fb0110000003001000000303c0f1429960";
    const SPS_INTERLACED: &str = "67640015acd941410fcb8088000003000800000301e0f8a14cb0";
    const SPS_HIGH10: &str = "676e000da6cd94141fb0110000030001000003003c0f142996";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The video tags of an FLV file (FLV spec v10.1 §E.2 header, §E.3
    /// body: PreviousTagSize, then tags of TagType u8 | DataSize u24 |
    /// Timestamp u24 | TimestampExtended u8 | StreamID u24 | Data).
    fn video_tags(file: &[u8]) -> Vec<(u32, &[u8])> {
        assert_eq!(&file[..3], b"FLV");
        let mut at = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize + 4;
        let mut tags = Vec::new();
        while at + 11 <= file.len() {
            let kind = file[at];
            let size = u32::from_be_bytes([0, file[at + 1], file[at + 2], file[at + 3]]) as usize;
            let ts = u32::from_be_bytes([file[at + 7], file[at + 4], file[at + 5], file[at + 6]]);
            if kind == 9 {
                tags.push((ts, &file[at + 11..at + 11 + size]));
            }
            at += 11 + size + 4;
        }
        tags
    }

    fn transcoder() -> H264Transcoder {
        H264Transcoder::new(TranscodeConfig {
            bitrate_bps: 600_000,
            max_fps: 30.0,
        })
        .unwrap()
    }

    /// Push every tag, draining after each.
    fn run(t: &mut H264Transcoder, tags: &[(u32, &[u8])]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        for &(ts, body) in tags {
            t.push(ts, body).unwrap();
            while let Some(o) = t.poll() {
                out.push(o);
            }
        }
        out
    }

    fn eos() -> Vec<u8> {
        crate::proto::codec::h264::flv_end_of_sequence().to_vec()
    }

    fn record_sps(body: &[u8]) -> SpsInfo {
        let config = parse_avc_config(&body[FLV_VIDEO_PREFIX_LEN..]).unwrap();
        parse_sps(&config.sps[0]).unwrap()
    }

    #[test]
    fn fixture_has_b_frames() {
        let tags = video_tags(FIXTURE);
        // Sequence header, pictures, end of sequence.
        assert_eq!(
            tags.iter().filter(|(_, b)| b[1] == 1).count(),
            FIXTURE_PICTURES
        );
        assert_eq!(tags[0].1[1], 0);
        assert_eq!(tags[tags.len() - 1].1[1], 2);
        assert_eq!(record_sps(tags[0].1).profile_idc, 100);
        assert!(tags
            .iter()
            .skip(1)
            .any(|(_, b)| composition_time(b).unwrap() > 33));
        assert_eq!(THUMBS.len(), THUMB_LEN * FIXTURE_PICTURES);
    }

    #[test]
    fn b_frames_become_constrained_baseline_in_presentation_order() {
        let mut t = transcoder();
        let mut tags = video_tags(FIXTURE);
        let end = eos();
        tags.push((2000, &end));
        let out = run(&mut t, &tags);

        let (_, header) = &out[0];
        assert_eq!(&header[..2], &[0x17, 0]);
        let sps = record_sps(header);
        assert_eq!(sps.profile_idc, 66);
        assert_ne!(sps.constraint_flags & 0x40, 0, "constraint_set1_flag");
        assert_eq!((sps.width, sps.height), (320, 240));
        assert_eq!(out[1].1[0], 0x17, "first picture is a keyframe");

        let frames: Vec<_> = out.iter().filter(|(_, b)| b[1] == 1).collect();
        assert_eq!(out.len() - frames.len(), 1, "one sequence header");
        assert!(
            frames.len().abs_diff(FIXTURE_PICTURES) <= 2,
            "{} pictures",
            frames.len()
        );
        assert_eq!(frames[0].0, FIRST_PTS);
        for pair in frames.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} then {}", pair[0].0, pair[1].0);
        }
        for (_, b) in &frames {
            assert!(b[0] == 0x17 || b[0] == 0x27);
            assert_eq!(composition_time(b), Some(0));
            assert!(b.len() > FLV_VIDEO_PREFIX_LEN + 4);
        }
        // The source's IDR at picture 30 stays an IDR.
        let idr30 = frames
            .iter()
            .find(|(ts, _)| *ts == FIRST_PTS + 1000)
            .unwrap();
        assert_eq!(idr30.1[0], 0x17);
        let s = t.stats();
        assert_eq!(
            (s.decoded, s.encoded, s.dropped, s.decode_errors),
            (60, 60, 0, 0)
        );
    }

    /// Decode the output (Annex B from the FLV bodies) with OpenH264.
    fn decode_output(out: &[(u32, Vec<u8>)]) -> Vec<(u32, Vec<u8>, f64)> {
        let mut decoder = Decoder::new().unwrap();
        let mut length_size = 4;
        let mut pictures = Vec::new();
        for (ts, body) in out {
            let mut au = Vec::new();
            if body[1] == 0 {
                let c = parse_avc_config(&body[FLV_VIDEO_PREFIX_LEN..]).unwrap();
                length_size = c.length_size;
                for ps in c.sps.iter().chain(c.pps.iter()) {
                    au.extend_from_slice(&START_CODE);
                    au.extend_from_slice(ps);
                }
            } else {
                append_annexb(&body[FLV_VIDEO_PREFIX_LEN..], length_size, &mut au).unwrap();
            }
            if let Some(yuv) = decoder.decode(&au).unwrap() {
                let (w, h) = yuv.dimensions();
                let stride = yuv.strides().0;
                let y = yuv.y();
                let mut thumb = vec![0u8; THUMB_LEN];
                let mut sum = 0u64;
                for by in 0..15 {
                    for bx in 0..20 {
                        let mut s = 0u32;
                        for row in by * 16..by * 16 + 16 {
                            s += y[row * stride + bx * 16..][..16]
                                .iter()
                                .map(|&v| u32::from(v))
                                .sum::<u32>();
                        }
                        sum += u64::from(s);
                        thumb[by * 20 + bx] = ((s + 128) / 256) as u8;
                    }
                }
                assert_eq!((w, h), (320, 240));
                pictures.push((*ts, thumb, sum as f64 / (w * h) as f64));
            }
        }
        pictures
    }

    fn thumb_distance(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x.abs_diff(y)))
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn output_decodes_to_the_source_pictures_in_order() {
        let mut t = transcoder();
        let mut tags = video_tags(FIXTURE);
        let end = eos();
        tags.push((2000, &end));
        let out = run(&mut t, &tags);
        let pictures = decode_output(&out);
        assert!(
            pictures.len() >= FIXTURE_PICTURES - 2,
            "{} decoded",
            pictures.len()
        );
        for (ts, thumb, mean) in &pictures {
            // testsrc2's mean luma is about 122.
            assert!((110.0..135.0).contains(mean), "mean luma {mean}");
            let index = ((ts - FIRST_PTS) as f64 * 30.0 / 1000.0).round() as usize;
            let expected = &THUMBS[index * THUMB_LEN..][..THUMB_LEN];
            let d = thumb_distance(thumb, expected);
            assert!(d < 0.6, "picture {index} differs from the source by {d}");
            // Neighbouring source pictures differ by more than 1 on average: the
            // picture at this time is this one and not a neighbour.
            for other in index.saturating_sub(2)..(index + 3).min(FIXTURE_PICTURES) {
                if other != index {
                    let o = thumb_distance(thumb, &THUMBS[other * THUMB_LEN..][..THUMB_LEN]);
                    assert!(
                        d < o,
                        "picture {index} looks like picture {other} ({d} vs {o})"
                    );
                }
            }
        }
    }

    #[test]
    fn request_keyframe_makes_the_next_output_an_idr() {
        let mut t = transcoder();
        let tags = video_tags(FIXTURE);
        let out = run(&mut t, &tags[..10]);
        assert!(out.iter().skip(2).all(|(_, b)| b[0] == 0x27));
        t.request_keyframe();
        let mut after = Vec::new();
        for &(ts, body) in &tags[10..20] {
            t.push(ts, body).unwrap();
            while let Some(o) = t.poll() {
                after.push(o);
            }
        }
        // The next output is an IDR, and only that one.
        assert_eq!(after[0].1[..2], [0x17, 1]);
        assert!(after.len() > 3);
        assert!(after[1..].iter().all(|(_, b)| b[0] == 0x27));
    }

    #[test]
    fn end_of_sequence_flushes_and_the_stream_may_start_again() {
        let mut t = transcoder();
        let tags = video_tags(FIXTURE);
        let first = run(&mut t, &tags);
        assert_eq!(
            first.iter().filter(|(_, b)| b[1] == 1).count(),
            FIXTURE_PICTURES
        );
        // The publisher starts again, 3 s later, with the same sequence header.
        let again: Vec<(u32, &[u8])> = tags.iter().map(|&(ts, b)| (ts + 3000, b)).collect();
        let second = run(&mut t, &again);
        let frames: Vec<_> = second.iter().filter(|(_, b)| b[1] == 1).collect();
        assert_eq!(frames.len(), FIXTURE_PICTURES);
        assert_eq!(frames[0].1[0], 0x17);
        assert_eq!(frames[0].0, 3000 + FIRST_PTS);
    }

    #[test]
    fn max_fps_drops_pictures() {
        let mut t = H264Transcoder::new(TranscodeConfig {
            bitrate_bps: 300_000,
            max_fps: 15.0,
        })
        .unwrap();
        let out = run(&mut t, &video_tags(FIXTURE));
        let frames: Vec<_> = out.iter().filter(|(_, b)| b[1] == 1).collect();
        assert!(
            (29..=31).contains(&frames.len()),
            "{} pictures",
            frames.len()
        );
        for pair in frames.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= 60,
                "{} then {}",
                pair[0].0,
                pair[1].0
            );
        }
        assert_eq!(t.stats().dropped + t.stats().encoded, t.stats().decoded);
    }

    #[test]
    fn garbage_is_an_error_and_the_next_keyframe_recovers() {
        let mut t = transcoder();
        let tags = video_tags(FIXTURE);
        assert_eq!(t.push(0, tags[1].1), Err(TranscodeError::NoConfig));
        let before = run(&mut t, &tags[..8]);
        assert!(before.len() >= 5);
        let bad: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x27],
            vec![0x22, 1, 0, 0, 0],
            vec![0x17, 0, 0, 0, 0, 1, 2],
            vec![0x27, 1, 0, 0, 0, 0, 0, 0, 9, 0x41],
            vec![0x27, 1, 0, 0, 0, 0, 0, 0, 0],
            vec![0x27, 1, 0, 0, 0, 0, 0],
            vec![0x27, 7, 0, 0, 0],
        ];
        for b in &bad {
            assert!(t.push(100, b).is_err(), "{b:02x?}");
        }
        // A slice the decoder cannot make sense of: its header is fine, the rest is noise.
        let mut noise = vec![0x27, 1, 0, 0, 0, 0, 0, 0x01, 0x00, 0x41, 0x9a];
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..250 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            noise.push(seed as u8);
        }
        let r = t.push(270, &noise);
        // Pictures after the noise: Err (decoder) or dropped until the IDR at 30.
        let mut after = Vec::new();
        for &(ts, body) in &tags[9..] {
            let _ = t.push(ts, body);
            while let Some(o) = t.poll() {
                after.push(o);
            }
        }
        let frames: Vec<_> = after.iter().filter(|(_, b)| b[1] == 1).collect();
        assert!(
            frames.len() >= 25,
            "{} pictures after garbage (noise: {r:?})",
            frames.len()
        );
        let restart = frames
            .iter()
            .position(|(ts, _)| *ts >= FIRST_PTS + 1000)
            .unwrap();
        assert_eq!(frames[restart].1[0], 0x17);
        for pair in frames.windows(2) {
            assert!(pair[0].0 < pair[1].0);
        }
    }

    #[test]
    fn random_bodies_never_panic() {
        let tags = video_tags(FIXTURE);
        let mut t = transcoder();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..400 {
            let (ts, body) = tags[(round % tags.len() as u64) as usize];
            let mut b = body.to_vec();
            match rnd(4) {
                0 => b.truncate(rnd(b.len() as u64 + 1) as usize),
                1 => {
                    for _ in 0..1 + rnd(8) {
                        let at = rnd(b.len() as u64) as usize;
                        b[at] ^= 1 << rnd(8);
                    }
                }
                2 => b = (0..rnd(64)).map(|_| rnd(256) as u8).collect(),
                _ => {}
            }
            let _ = t.push(ts, &b);
            while t.poll().is_some() {}
        }
        let out = run(&mut t, &tags);
        assert!(out.iter().any(|(_, b)| b[0] == 0x17 && b[1] == 1));
    }

    #[test]
    fn unsupported_streams_are_refused() {
        for (sps, what) in [
            (SPS_HIGH422, "chroma_format_idc"),
            (SPS_INTERLACED, "frame_mbs_only_flag"),
            (SPS_HIGH10, "bit_depth"),
        ] {
            let body = flv_sequence_header(&hex(sps), &[0x68, 0xeb, 0xe3, 0xcb]).unwrap();
            let mut t = transcoder();
            assert!(
                matches!(t.push(0, &body), Err(TranscodeError::Unsupported { what: w, .. }) if w == what),
                "{what}"
            );
            let tags = video_tags(FIXTURE);
            assert_eq!(t.push(0, tags[1].1), Err(TranscodeError::NoConfig));
        }
        assert_eq!(
            H264Transcoder::new(TranscodeConfig {
                bitrate_bps: 1,
                max_fps: f32::NAN
            })
            .err(),
            Some(TranscodeError::InvalidConfig)
        );
    }

    #[test]
    fn is_send() {
        fn send<T: Send>() {}
        send::<H264Transcoder>();
    }
}
