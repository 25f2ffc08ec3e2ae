#![no_main]
//! H.264 → constrained baseline (WebRTC playback of RTMP publishers) reads FLV
//! AVC bodies a publisher sent, and hands them to OpenH264's C++ decoder: any
//! sequence header and any pictures end in output bodies or typed errors, never
//! a panic or a crash. Output bodies are AVC, composition time 0, and the first
//! one is a sequence header.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::codec::h264_transcode::{H264Transcoder, TranscodeConfig};

/// The sequence header of tests/fixtures/h264_high_bf2_320x240.flv (High, 320x240).
const SEQUENCE_HEADER: &[u8] = &[
    0x17, 0x00, 0x00, 0x00, 0x00, 0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00,
    0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
    0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd,
    0xf8, 0xf8, 0x00,
];

fuzz_target!(|data: &[u8]| {
    let Ok(mut t) = H264Transcoder::new(TranscodeConfig::default()) else {
        return;
    };
    // A valid High-profile header first half the time, else only the input's.
    let (first, rest) = data.split_first().map_or((0, data), |(a, b)| (*a, b));
    if first & 1 == 0 {
        let _ = t.push(0, SEQUENCE_HEADER);
    }
    let mut seen_header = false;
    for (i, chunk) in rest.split(|&b| b == 0xAA).take(32).enumerate() {
        let _ = t.push(i as u32 * 33, chunk);
        if first & 2 != 0 && i == 8 {
            t.request_keyframe();
        }
        while let Some((_, body)) = t.poll() {
            assert!(body.len() >= 5);
            assert_eq!(body[0] & 0x0f, 7);
            assert_eq!(&body[2..5], &[0, 0, 0]);
            seen_header |= body[1] == 0;
            assert!(seen_header, "a picture before the sequence header");
        }
    }
});
