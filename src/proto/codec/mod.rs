//! Codec helpers that sit between depacketized media and the FLV/RTMP egress.
//!
//! Implemented: H.264 sequence parameter set parsing, the
//! AVCDecoderConfigurationRecord and FLV VIDEODATA bodies ([`h264`]).
//! Not here: anything that decodes or transcodes media samples.

pub mod aac;
pub mod aac_opus;
pub mod h264;
