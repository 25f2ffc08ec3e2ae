//! H.264 for the synthetic publishers: Annex B splitting, the wall-clock SEI,
//! and the RTP payload format (RFC 6184, packetization-mode 1).
//!
//! Implemented: single NAL unit packets (§5.6), STAP-A (§5.7.1) for runs of
//! small NAL units (SPS, PPS and the SEI of a key frame, as browsers send
//! them), FU-A (§5.8) for NAL units larger than the payload limit. The marker
//! bit goes on the last packet of the access unit (§5.1).
//!
//! Not implemented (a sender needs none of them): STAP-B, MTAP, FU-B
//! (interleaved mode 2) and DON.
//!
//! Wall-clock SEI (the contract with `tools/rtmp-load/src/flv.rs`): an SEI NAL
//! unit holding one `user_data_unregistered` message (H.264 D.1.7,
//! payloadType 5) whose 16-byte UUID is [`SEI_CLOCK_UUID`] followed by 8
//! bytes, microseconds since the UNIX epoch, big-endian.

/// UUID of the wall-clock `user_data_unregistered` SEI (ASCII, 16 bytes).
pub const SEI_CLOCK_UUID: [u8; 16] = *b"rtcbridge:wclk01";

// H.264 Table 7-1 nal_unit_type.
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
#[cfg(test)]
pub const NAL_SPS: u8 = 7;
#[cfg(test)]
pub const NAL_PPS: u8 = 8;
#[cfg(test)]
pub const NAL_AUD: u8 = 9;
/// SEI payloadType 5, user_data_unregistered (H.264 D.1.7).
const SEI_USER_DATA_UNREGISTERED: u8 = 5;
/// rbsp_stop_one_bit and alignment zeros (H.264 7.3.2.11).
const RBSP_TRAILING: u8 = 0x80;

const STAP_A: u8 = 24; // RFC 6184 §5.7.1
const FU_A: u8 = 28; // RFC 6184 §5.8
/// FU header S and E bits (RFC 6184 §5.8).
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;
/// F and NRI bits of a NAL unit header (RFC 6184 §5.3).
const F_NRI: u8 = 0xe0;
const NRI: u8 = 0x60;
/// STAP-A: 1 byte payload header, then per NAL unit a 16-bit size (§5.7.1).
const STAP_HEADER_LEN: usize = 1;
const STAP_SIZE_LEN: usize = 2;
/// FU indicator + FU header (§5.8).
const FU_HEADER_LEN: usize = 2;

pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01),
/// as (start, end) ranges into `stream`. Trailing zero bytes before the next
/// start code (trailing_zero_8bits, B.1) are not part of a NAL unit.
pub fn annexb_nal_ranges(stream: &[u8], out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            if let Some(s) = start {
                push_trimmed(stream, s, i, out);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_trimmed(stream, s, stream.len(), out);
    }
}

fn push_trimmed(stream: &[u8], start: usize, mut end: usize, out: &mut Vec<(usize, usize)>) {
    while end > start && stream[end - 1] == 0 {
        end -= 1;
    }
    if end > start {
        out.push((start, end));
    }
}

/// Write the wall-clock SEI NAL unit (header byte included, emulation
/// prevention applied) for `us` microseconds since the UNIX epoch into `out`.
pub fn write_wallclock_sei(us: u64, out: &mut Vec<u8>) {
    // sei_rbsp (7.3.2.3): payloadType, payloadSize (both < 255: one byte each),
    // the payload, then the RBSP trailing bits.
    let mut rbsp = [0u8; 2 + 16 + 8 + 1];
    rbsp[0] = SEI_USER_DATA_UNREGISTERED;
    rbsp[1] = 24;
    rbsp[2..18].copy_from_slice(&SEI_CLOCK_UUID);
    rbsp[18..26].copy_from_slice(&us.to_be_bytes());
    rbsp[26] = RBSP_TRAILING;
    out.clear();
    out.push(NAL_SEI); // forbidden_zero_bit 0, nal_ref_idc 0
    escape_rbsp(&rbsp, out);
}

/// Emulation prevention (H.264 7.4.1): within a NAL unit, 00 00 followed by a
/// byte 00..03 gets an 03 inserted before that byte.
pub fn escape_rbsp(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
}

/// Split one access unit's NAL units into RTP payloads of at most
/// `max_payload` bytes. `emit(payload, last)` is called once per packet in
/// order; `last` is true for the packet that carries the marker bit.
pub struct H264Packetizer {
    max_payload: usize,
    scratch: Vec<u8>,
}

impl H264Packetizer {
    pub fn new(max_payload: usize) -> Self {
        // An FU-A needs its two header bytes and at least one byte of payload.
        let max_payload = max_payload.max(FU_HEADER_LEN + 1);
        H264Packetizer { max_payload, scratch: Vec::with_capacity(max_payload) }
    }

    pub fn packetize(&mut self, nals: &[&[u8]], mut emit: impl FnMut(&[u8], bool)) {
        let nals: Vec<&[u8]> = nals.iter().copied().filter(|n| !n.is_empty()).collect();
        let mut i = 0;
        while i < nals.len() {
            // Greedy STAP-A: as many following NAL units as fit, if at least two.
            let mut n = 0;
            let mut len = STAP_HEADER_LEN;
            while let Some(nal) = nals.get(i + n) {
                let add = STAP_SIZE_LEN + nal.len();
                if len + add > self.max_payload || nal.len() > usize::from(u16::MAX) {
                    break;
                }
                len += add;
                n += 1;
            }
            if n >= 2 {
                let group = &nals[i..i + n];
                self.scratch.clear();
                // §5.7.1: F is the OR of the F bits, NRI the largest NRI.
                let f = group.iter().fold(0, |a, nal| a | (nal[0] & 0x80));
                let nri = group.iter().map(|nal| nal[0] & NRI).max().unwrap_or(0);
                self.scratch.push(f | nri | STAP_A);
                for nal in group {
                    self.scratch.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                    self.scratch.extend_from_slice(nal);
                }
                i += n;
                emit(&self.scratch, i == nals.len());
                continue;
            }
            let nal = nals[i];
            i += 1;
            let last_nal = i == nals.len();
            if nal.len() <= self.max_payload {
                emit(nal, last_nal);
                continue;
            }
            // FU-A: the NAL header is carried split into indicator and FU header.
            let indicator = (nal[0] & F_NRI) | FU_A;
            let typ = nal[0] & 0x1f;
            let body = &nal[1..];
            let chunk = self.max_payload - FU_HEADER_LEN;
            let count = body.len().div_ceil(chunk);
            for (k, part) in body.chunks(chunk).enumerate() {
                let mut header = typ;
                if k == 0 {
                    header |= FU_START;
                }
                if k + 1 == count {
                    header |= FU_END;
                }
                self.scratch.clear();
                self.scratch.push(indicator);
                self.scratch.push(header);
                self.scratch.extend_from_slice(part);
                emit(&self.scratch, last_nal && k + 1 == count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcbridge::proto::depack::h264::H264Depacketizer;
    use rtcbridge::proto::depack::{Pushed, RtpView};

    // The SEI reader the probes use (tools/rtmp-load/src/flv.rs, included by main.rs in
    // test builds), so the writer is checked against it and its UUID is the same.
    use crate::flv::{sei_wallclock_us, SEI_CLOCK_UUID as READER_UUID};

    #[test]
    fn writer_and_reader_agree_on_the_uuid() {
        assert_eq!(SEI_CLOCK_UUID, READER_UUID);
    }

    /// The AVCC NAL units of an FLV body (5-byte VIDEODATA prefix, 4-byte lengths).
    fn flv_nals(body: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut p = &body[5..];
        while p.len() >= 4 {
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            out.push(p[4..4 + len].to_vec());
            p = &p[4 + len..];
        }
        out
    }

    #[test]
    fn sei_round_trips_through_the_probe_parser_with_emulation_prevention() {
        for us in [0u64, 1, 0x0000_0000_0100_0002, 0x0003_0000_0000_0300, u64::MAX, 1_700_000_000_123_456] {
            let mut nal = Vec::new();
            write_wallclock_sei(us, &mut nal);
            // No start code emulation inside the NAL unit.
            assert!(!nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2), "{nal:02x?}");
            let mut avcc = (nal.len() as u32).to_be_bytes().to_vec();
            avcc.extend_from_slice(&nal);
            assert_eq!(sei_wallclock_us(&avcc, 4, &mut Vec::new()), Some(us));
        }
    }

    #[test]
    fn annexb_split_handles_3_and_4_byte_start_codes() {
        let s = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 9, 9];
        let mut r = Vec::new();
        annexb_nal_ranges(&s, &mut r);
        let nals: Vec<&[u8]> = r.iter().map(|&(a, b)| &s[a..b]).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9, 9][..]]);
    }

    /// Encode real frames with openh264, add the SEI, packetize at a small MTU
    /// (forcing STAP-A and FU-A), and depacketize with the server's own
    /// depacketizer: every NAL unit but SPS/PPS comes back byte for byte.
    #[test]
    fn packetizer_round_trips_through_the_server_depacketizer() {
        let mut video = crate::media::VideoSource::new(crate::media::VideoParams {
            width: 160,
            height: 96,
            fps: 30.0,
            kbps: 300,
            gop: 30,
        })
        .unwrap();
        let mut depack = H264Depacketizer::new();
        let mut pz = H264Packetizer::new(200);
        let mut seq = 1000u64;
        let mut got_units = 0;
        let mut saw = [false; 3]; // single, STAP-A, FU-A
        for f in 0..4u64 {
            let frame = video.encode(f == 0).unwrap().expect("a frame");
            let mut sei = Vec::new();
            write_wallclock_sei(1_700_000_000_000_000 + f, &mut sei);
            let mut nals: Vec<&[u8]> = Vec::new();
            let mut inserted = false;
            for nal in frame.nals() {
                let t = nal_type(nal);
                if !inserted && (t == NAL_SLICE || t == NAL_IDR) {
                    nals.push(&sei);
                    inserted = true;
                }
                nals.push(nal);
            }
            let want: Vec<Vec<u8>> = nals
                .iter()
                .filter(|n| !matches!(nal_type(n), NAL_SPS | NAL_PPS | NAL_AUD))
                .map(|n| n.to_vec())
                .collect();
            let mut packets: Vec<(Vec<u8>, bool)> = Vec::new();
            pz.packetize(&nals, |p, last| packets.push((p.to_vec(), last)));
            assert!(packets.iter().all(|(p, _)| p.len() <= 200));
            assert_eq!(packets.iter().filter(|(_, m)| *m).count(), 1);
            assert!(packets.last().unwrap().1);
            for (p, marker) in &packets {
                match p[0] & 0x1f {
                    STAP_A => saw[1] = true,
                    FU_A => saw[2] = true,
                    _ => saw[0] = true,
                }
                let r = depack.push(RtpView { seq, ts: 3000 * f, marker: *marker, payload: p, after_loss: false });
                seq += 1;
                if *marker {
                    assert_eq!(r, Pushed::Complete, "frame {f}");
                }
            }
            let _ = depack.take_config();
            let unit = depack.take_unit().expect("unit");
            assert_eq!(unit.keyframe, frame.idr);
            assert_eq!(flv_nals(&unit.flv_body), want, "frame {f}");
            let body_nals = &unit.flv_body[5..];
            assert_eq!(sei_wallclock_us(body_nals, 4, &mut Vec::new()), Some(1_700_000_000_000_000 + f));
            got_units += 1;
        }
        assert_eq!(got_units, 4);
        assert!(saw[1] && saw[2], "STAP-A and FU-A used: {saw:?}");
    }
}
