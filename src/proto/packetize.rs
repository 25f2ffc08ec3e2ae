//! H.264 RTP packetizer, RFC 6184 packetization-mode 1: the sending half that
//! WebRTC playback (issue 12) builds on. Sans-IO: FLV bodies in, RTP payloads
//! out (the caller adds the RTP header, timestamps and SRTP).
//!
//! - The stream's configuration comes from the FLV AVC sequence header (the
//!   AVCDecoderConfigurationRecord: NAL length size, SPS, PPS).
//! - Each FLV AVC NALU body becomes one access unit: every NAL unit that fits
//!   in `max_payload` is a single NAL unit packet (§5.6), a larger one is split
//!   into FU-A fragments (§5.8); the last packet of the unit carries the marker
//!   (§5.1). Before every IDR the SPS and PPS go out together in one STAP-A
//!   (§5.7.1), so a viewer can join on any keyframe.
//! - Access unit delimiters and filler data are not sent; SPS/PPS inside a
//!   unit are (an encoder that repeats them in band is left as it is).
//! - [`composition_time`] reads an FLV body's composition time offset: non-zero
//!   means B-frames, which must not be sent to a browser.
//!
//! Limits: the record and each body are parsed with bounds checks; a NAL length
//! that runs past the body is an error, nothing is allocated for it.

use crate::proto::codec::h264::{nal_type, FLV_VIDEO_PREFIX_LEN, NAL_AUD, NAL_FILLER, NAL_IDR, NAL_PPS, NAL_SPS};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;

/// One RTP payload and whether it ends its access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPayload {
    pub marker: bool,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketizeError {
    /// Not an FLV AVC body (codec id, packet type) or too short.
    NotAvc,
    /// The AVCDecoderConfigurationRecord does not parse.
    BadConfig,
    /// A NAL length runs past the body, or a NAL unit is empty.
    BadNal,
    /// A NALU body before any sequence header.
    NoConfig,
}

impl std::fmt::Display for PacketizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketizeError::NotAvc => "not an FLV AVC video body",
            PacketizeError::BadConfig => "malformed AVCDecoderConfigurationRecord",
            PacketizeError::BadNal => "NAL unit length past the end of the body",
            PacketizeError::NoConfig => "H.264 unit before the sequence header",
        })
    }
}

/// What an AVCDecoderConfigurationRecord says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// Bytes of each NAL unit length prefix (1, 2 or 4).
    pub length_size: usize,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

/// Parse an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1).
pub fn parse_avc_config(rec: &[u8]) -> Result<AvcConfig, PacketizeError> {
    let bad = PacketizeError::BadConfig;
    if rec.first() != Some(&1) {
        return Err(bad);
    }
    let length_size = usize::from(rec.get(4).ok_or(bad)? & 0x03) + 1;
    if length_size == 3 {
        return Err(bad);
    }
    let mut at = 5;
    let sets = |count_mask: u8, at: &mut usize| -> Result<Vec<Vec<u8>>, PacketizeError> {
        let n = rec.get(*at).ok_or(bad)? & count_mask;
        *at += 1;
        let mut v = Vec::new();
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes([*rec.get(*at).ok_or(bad)?, *rec.get(*at + 1).ok_or(bad)?]));
            *at += 2;
            let nal = rec.get(*at..*at + len).ok_or(bad)?;
            if nal.is_empty() {
                return Err(bad);
            }
            v.push(nal.to_vec());
            *at += len;
        }
        Ok(v)
    };
    let sps = sets(0x1f, &mut at)?;
    let pps = sets(0xff, &mut at)?;
    if sps.is_empty() || pps.is_empty() {
        return Err(bad);
    }
    Ok(AvcConfig { length_size, sps, pps })
}

/// The composition time offset of an FLV AVC body (ms, signed 24-bit): non-zero
/// when the stream has B-frames.
pub fn composition_time(flv_body: &[u8]) -> Option<i32> {
    let &[a, b, c] = flv_body.get(2..5)? else { return None };
    let v = (i32::from(a) << 16) | (i32::from(b) << 8) | i32::from(c);
    Some(if v & 0x80_0000 != 0 { v - 0x100_0000 } else { v })
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct H264Packetizer {
    max_payload: usize,
    config: Option<AvcConfig>,
}

impl H264Packetizer {
    /// `max_payload`: the largest RTP payload (MTU minus IP, UDP, RTP, SRTP
    /// overheads: 1200 is what browsers use). At least 16.
    pub fn new(max_payload: usize) -> Self {
        H264Packetizer { max_payload: max_payload.max(16), config: None }
    }

    /// An FLV AVC sequence header body (`0x17 0x00 ...` + the record).
    pub fn set_sequence_header(&mut self, flv_body: &[u8]) -> Result<(), PacketizeError> {
        if flv_body.first().map(|b| b & 0x0f) != Some(7) || flv_body.get(1) != Some(&0) {
            return Err(PacketizeError::NotAvc);
        }
        let rec = flv_body.get(FLV_VIDEO_PREFIX_LEN..).ok_or(PacketizeError::NotAvc)?;
        self.config = Some(parse_avc_config(rec)?);
        Ok(())
    }

    pub fn config(&self) -> Option<&AvcConfig> {
        self.config.as_ref()
    }

    /// Append the RTP payloads of one FLV AVC NALU body (an access unit) to `out`.
    pub fn packetize(&self, flv_body: &[u8], out: &mut Vec<RtpPayload>) -> Result<(), PacketizeError> {
        if flv_body.first().map(|b| b & 0x0f) != Some(7) || flv_body.get(1) != Some(&1) {
            return Err(PacketizeError::NotAvc);
        }
        let cfg = self.config.as_ref().ok_or(PacketizeError::NoConfig)?;
        let mut nals = Vec::new();
        let mut rest = flv_body.get(FLV_VIDEO_PREFIX_LEN..).unwrap_or(&[]);
        while !rest.is_empty() {
            let len_bytes = rest.get(..cfg.length_size).ok_or(PacketizeError::BadNal)?;
            let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let nal = rest.get(cfg.length_size..cfg.length_size + len).ok_or(PacketizeError::BadNal)?;
            rest = rest.get(cfg.length_size + len..).unwrap_or(&[]);
            let Some(&h) = nal.first() else { return Err(PacketizeError::BadNal) };
            if matches!(nal_type(h), NAL_AUD | NAL_FILLER) {
                continue;
            }
            nals.push(nal);
        }
        let start = out.len();
        let idr = nals.iter().any(|n| n.first().is_some_and(|&h| nal_type(h) == NAL_IDR));
        let in_band = nals.iter().any(|n| n.first().is_some_and(|&h| matches!(nal_type(h), NAL_SPS | NAL_PPS)));
        if idr && !in_band {
            self.parameter_sets(cfg, out);
        }
        for nal in nals {
            self.nal(nal, out);
        }
        if let Some(last) = out.get_mut(start..).and_then(<[RtpPayload]>::last_mut) {
            last.marker = true;
        }
        Ok(())
    }

    /// SPS and PPS in one STAP-A (or single NAL packets if they do not fit).
    fn parameter_sets(&self, cfg: &AvcConfig, out: &mut Vec<RtpPayload>) {
        let sets: Vec<&[u8]> = cfg.sps.iter().chain(cfg.pps.iter()).map(Vec::as_slice).collect();
        let size = 1 + sets.iter().map(|s| 2 + s.len()).sum::<usize>();
        if size > self.max_payload {
            for s in sets {
                self.nal(s, out);
            }
            return;
        }
        // STAP-A header: F = OR of the F bits, NRI = the highest NRI (§5.7).
        let f = sets.iter().filter_map(|s| s.first()).fold(0u8, |acc, &h| acc | (h & 0x80));
        let nri = sets.iter().filter_map(|s| s.first()).map(|&h| h & 0x60).max().unwrap_or(0x60);
        let mut data = Vec::with_capacity(size);
        data.push(f | nri | STAP_A);
        for s in sets {
            data.extend_from_slice(&(s.len() as u16).to_be_bytes());
            data.extend_from_slice(s);
        }
        out.push(RtpPayload { marker: false, data });
    }

    fn nal(&self, nal: &[u8], out: &mut Vec<RtpPayload>) {
        if nal.len() <= self.max_payload {
            out.push(RtpPayload { marker: false, data: nal.to_vec() });
            return;
        }
        let Some((&header, body)) = nal.split_first() else { return };
        let indicator = (header & 0xe0) | FU_A;
        let chunk = self.max_payload - 2;
        let count = body.len().div_ceil(chunk);
        for (i, part) in body.chunks(chunk).enumerate() {
            let mut fu_header = nal_type(header);
            if i == 0 {
                fu_header |= FU_START;
            }
            if i + 1 == count {
                fu_header |= FU_END;
            }
            let mut data = Vec::with_capacity(2 + part.len());
            data.push(indicator);
            data.push(fu_header);
            data.extend_from_slice(part);
            out.push(RtpPayload { marker: false, data });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::codec::h264::flv_sequence_header;
    use crate::proto::depack::h264::H264Depacketizer;
    use crate::proto::depack::{Pushed, RtpView};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const SPS: &str = "6742c01ed900a02ff970110000030001000003003c0f162e48";
    const PPS: &str = "68cb83cb20";

    fn body(keyframe: bool, nals: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        for n in nals {
            b.extend_from_slice(&(n.len() as u32).to_be_bytes());
            b.extend_from_slice(n);
        }
        b
    }

    /// Packetize, then depacketize with our RFC 6184 depacketizer: the same NAL
    /// units come back, as one access unit, with the configuration.
    #[test]
    fn round_trips_through_the_depacketizer() {
        let mut p = H264Packetizer::new(1200);
        p.set_sequence_header(&flv_sequence_header(&hex(SPS), &hex(PPS)).unwrap()).unwrap();
        let idr: Vec<u8> = std::iter::once(0x65).chain((0..5000u32).map(|i| (i % 251) as u8 + 1)).collect();
        let small: Vec<u8> = vec![0x41, 0x9a, 0x02, 0x03];
        let aud = vec![0x09, 0xf0];
        let mut d = H264Depacketizer::new();
        let mut seq = 0u64;
        for (i, (key, nals)) in [(true, vec![aud.clone(), idr.clone()]), (false, vec![small.clone()])].into_iter().enumerate() {
            let mut out = Vec::new();
            p.packetize(&body(key, &nals), &mut out).unwrap();
            assert!(out.iter().all(|r| r.data.len() <= 1200));
            assert_eq!(out.iter().filter(|r| r.marker).count(), 1);
            assert!(out.last().unwrap().marker);
            if key {
                assert_eq!(out[0].data[0] & 0x1f, STAP_A, "SPS/PPS first, in a STAP-A");
                assert!(out.len() >= 6, "the 5 KB IDR is fragmented");
            }
            let mut got = None;
            for r in &out {
                let view = RtpView { seq, ts: 3000 * i as u64, marker: r.marker, payload: &r.data, after_loss: false };
                seq += 1;
                if d.push(view) == Pushed::Complete {
                    got = d.take_unit();
                }
            }
            let unit = got.expect("one access unit");
            assert_eq!(unit.keyframe, key);
            let want_nals: Vec<Vec<u8>> = nals.into_iter().filter(|n| n[0] & 0x1f != 9).collect();
            assert_eq!(unit.flv_body[5..], body(key, &want_nals)[5..]);
        }
        assert_eq!(d.parameter_sets().map(|(s, q)| (s.to_vec(), q.to_vec())), Some((hex(SPS), hex(PPS))));
    }

    #[test]
    fn rejects_bad_input_and_reads_composition_time() {
        let mut p = H264Packetizer::new(1200);
        let mut out = Vec::new();
        assert_eq!(p.packetize(&body(true, &[vec![0x65, 1]]), &mut out), Err(PacketizeError::NoConfig));
        assert_eq!(p.set_sequence_header(&[0x17, 0, 0, 0, 0, 2]), Err(PacketizeError::BadConfig));
        assert_eq!(p.set_sequence_header(&[0xaf, 0]), Err(PacketizeError::NotAvc));
        p.set_sequence_header(&flv_sequence_header(&hex(SPS), &hex(PPS)).unwrap()).unwrap();
        let mut b = body(false, &[vec![0x41, 1, 2]]);
        b.truncate(b.len() - 1);
        assert_eq!(p.packetize(&b, &mut out), Err(PacketizeError::BadNal));
        assert!(out.is_empty());
        assert_eq!(composition_time(&[0x27, 1, 0, 0, 66]), Some(66));
        assert_eq!(composition_time(&[0x27, 1, 0xff, 0xff, 0xfe]), Some(-2));
        assert_eq!(composition_time(&[0x27, 1]), None);
    }
}
