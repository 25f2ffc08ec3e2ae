//! Fuzz the SPS parser and the AVCDecoderConfigurationRecord builder.
//!
//! The input is an SPS NAL unit (header byte forced to 0x67 so the parser
//! gets past the type check). Whatever parses has a positive size within the
//! limits, and its record carries the SPS and a PPS back out unchanged with
//! the profile/level bytes copied from the SPS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::codec::h264::{
    avc_decoder_config, first_mb_in_slice, flv_sequence_header, parse_sps, MAX_DIMENSION_MBS,
};

const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];

fuzz_target!(|data: &[u8]| {
    let _ = parse_sps(data);
    let _ = first_mb_in_slice(data);
    let mut nal = Vec::with_capacity(data.len() + 1);
    nal.push(0x67);
    nal.extend_from_slice(data);
    let Ok(info) = parse_sps(&nal) else {
        assert!(avc_decoder_config(&nal, &PPS).is_err());
        return;
    };
    assert!(info.width > 0 && info.height > 0);
    assert!(info.width <= MAX_DIMENSION_MBS * 16 && info.height <= MAX_DIMENSION_MBS * 32);
    assert!(info.chroma_format_idc <= 3);
    let Ok(rec) = avc_decoder_config(&nal, &PPS) else {
        assert!(nal.len() > usize::from(u16::MAX));
        return;
    };
    assert_eq!(rec[0], 1);
    // Profile, constraint flags and level as the SPS says them (ISO/IEC
    // 14496-15 §5.3.3.1): the RBSP values, which are the NAL's bytes unless
    // an emulation prevention byte sits among them (00 00 03 ..).
    assert_eq!(rec[1..4], [info.profile_idc, info.constraint_flags, info.level_idc]);
    if nal[1..4] != [0, 0, 3] {
        assert_eq!(rec[1..4], nal[1..4]);
    }
    assert_eq!(rec[4..6], [0xff, 0xe1]);
    let sps_len = usize::from(u16::from_be_bytes([rec[6], rec[7]]));
    assert_eq!(&rec[8..8 + sps_len], &nal[..]);
    let p = 8 + sps_len;
    assert_eq!(rec[p..p + 3], [1, 0, 5]);
    assert_eq!(&rec[p + 3..p + 8], &PPS[..]);
    assert!(matches!(rec.len() - (p + 8), 0 | 4));
    let flv = flv_sequence_header(&nal, &PPS).expect("same inputs");
    assert_eq!(flv[..5], [0x17, 0, 0, 0, 0]);
    assert_eq!(flv[5..], rec[..]);
});
