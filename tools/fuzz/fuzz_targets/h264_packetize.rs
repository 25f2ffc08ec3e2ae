#![no_main]
//! The H.264 RTP packetizer reads FLV bodies an RTMP publisher sent: any
//! sequence header and any NALU body either packetize within the payload
//! limit with exactly one marker, or are refused with a typed error.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::packetize::H264Packetizer;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (cfg, body) = rest.split_at(usize::from(split).min(rest.len()));
    let mut p = H264Packetizer::new(64);
    let mut header = vec![0x17, 0, 0, 0, 0];
    header.extend_from_slice(cfg);
    let _ = p.set_sequence_header(&header);
    let mut out = Vec::new();
    if p.packetize(body, &mut out).is_ok() && !out.is_empty() {
        assert!(out.iter().all(|r| r.data.len() <= 64));
        assert_eq!(out.iter().filter(|r| r.marker).count(), 1);
    }
});
