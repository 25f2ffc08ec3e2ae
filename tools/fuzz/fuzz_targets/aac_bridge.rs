//! Fuzz the Opus → AAC bridge: records `flags u8 | len u8 | payload[len]`.
//! The RTP timestamp advances by the payload's TOC duration (or 960 if it
//! has none); flags 0x01 add a gap of `(flags >> 4) * 960` samples, 0x02 a
//! gap of 20 s (a discontinuity), 0x04 step back 480 samples (late/overlap),
//! 0x08 jump 30 s back (a clock restart). Nothing panics (the Opus decoder
//! included: a caught decoder panic fails the run), the queue never
//! overflows when drained after each push, and frames come out as FLV AAC
//! bodies at least 1024 samples apart.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::codec::aac::{opus_packet_samples, OpusToAac};

fuzz_target!(|data: &[u8]| {
    let Ok(mut bridge) = OpusToAac::new(2, 128_000) else {
        return;
    };
    let mut ts: u64 = 1 << 40;
    let mut last_pos: Option<u64> = None;
    let mut pushes = 0u64;
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        if flags & 0x01 != 0 {
            ts += u64::from(flags >> 4) * 960;
        }
        if flags & 0x02 != 0 {
            ts += 20 * 48_000;
        }
        if flags & 0x04 != 0 {
            ts -= 480;
        }
        if flags & 0x08 != 0 {
            ts -= 30 * 48_000;
        }
        let duration = opus_packet_samples(payload);
        assert!(duration.is_none_or(|d| (120..=5760).contains(&d)));
        bridge.push_opus(ts, payload).expect("encoder never fails");
        pushes += 1;
        ts += duration.map_or(960, u64::from);
        while let Some(frame) = bridge.poll_frame() {
            assert_eq!(&frame.flv_body[..2], &[0xAF, 0x01]);
            if let Some(prev) = last_pos {
                assert!(frame.sample_pos >= prev + 1024);
            }
            last_pos = Some(frame.sample_pos);
        }
    }
    let s = bridge.stats();
    assert_eq!(s.packets, pushes);
    assert_eq!(s.frames_overflowed, 0);
    assert_eq!(s.decoder_panics, 0, "the Opus decoder panicked");
});
