#![no_main]
//! AAC → Opus (for WebRTC viewers of RTMP publishers) reads FLV AAC bodies a
//! publisher sent: any sequence header and any frames end in packets or typed
//! errors, never a panic; packets are at most 1500 bytes.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::codec::aac_opus::AacToOpus;

fuzz_target!(|data: &[u8]| {
    let mut t = AacToOpus::new(128_000);
    // A valid 44.1 kHz stereo AAC-LC header first half the time, else the input's.
    let (first, rest) = data.split_first().map_or((0, data), |(a, b)| (*a, b));
    if first & 1 == 0 {
        let _ = t.push_flv(0, &[0xAF, 0, 0x12, 0x10]);
    }
    for (i, chunk) in rest.split(|&b| b == 0xAA).take(64).enumerate() {
        let _ = t.push_flv(i as u32 * 23, chunk);
        while let Some(p) = t.poll_packet() {
            assert!(p.data.len() <= 1500);
        }
    }
});
