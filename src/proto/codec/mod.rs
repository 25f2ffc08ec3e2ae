//! Codec helpers that sit between depacketized media and the FLV/RTMP egress.
//!
//! Implemented: H.264 sequence parameter set parsing, the
//! AVCDecoderConfigurationRecord and FLV VIDEODATA bodies ([`h264`]).
//! AAC → Opus ([`aac_opus`]) and H.264 → constrained baseline H.264
//! ([`h264_transcode`]) for WebRTC playback of RTMP sources.

pub mod aac;
pub mod aac_opus;
pub mod h264;
pub mod h264_transcode;
