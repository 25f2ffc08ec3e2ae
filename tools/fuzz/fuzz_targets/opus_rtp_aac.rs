#![no_main]
//! The whole receive path of WebRTC audio for RTMP players, with the real
//! Opus decoder and AAC encoder: RTP packets with arbitrary sequence numbers,
//! timestamps and payloads go through the reorder buffer (`RtpReceiver`),
//! the Opus depacketizer and `OpusToAac`, as `relay/webrtc.rs` chains them.
//!
//! Input: byte 0 picks mono or stereo; then records
//! `op u8 | a u8 | b u8 | len u8 | payload[len]`:
//! - op 0x01: marker bit;
//! - op 0x02: 300 ms pass before the packet (holes are given up);
//! - op 0x04: sequence number = `a b`, else the previous one + `a as i8`;
//! - op 0x08: timestamp jumps by `b << 24` (a clock restart or wrap), else
//!   it advances by `b * 120` samples;
//! - op 0x10: the stream ends here (`finish`).
//!
//! Nothing may panic, the Opus decoder included (a caught decoder panic
//! fails the run), the encoder never fails, frames are FLV AAC bodies at
//! least 1024 samples apart, and nothing overflows when drained after each
//! packet.
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::codec::aac::{OpusToAac, BITRATE_PER_CHANNEL};
use rtcbridge::proto::depack::opus::OpusDepacketizer;
use rtcbridge::proto::depack::{Pushed, RtpView};
use rtcbridge::proto::rtp_recv::RtpReceiver;

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else { return };
    let channels = 1 + (first & 1);
    let Ok(mut bridge) = OpusToAac::new(channels, BITRATE_PER_CHANNEL * u32::from(channels)) else {
        return;
    };
    let mut now = rtcbridge::runtime::now();
    let mut recv = RtpReceiver::new(48_000, now);
    let mut depack = OpusDepacketizer::new();
    let mut seq: u16 = u16::from(first) << 8;
    let mut ts: u32 = u32::from(first) << 20;
    let mut last_pos: Option<u64> = None;
    while let [op, a, b, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        if op & 0x10 != 0 {
            bridge.finish().expect("encoder never fails");
            drain(&mut bridge, &mut last_pos);
            break;
        }
        now += Duration::from_millis(if op & 0x02 != 0 { 300 } else { 20 });
        seq = if op & 0x04 != 0 {
            u16::from_be_bytes([*a, *b])
        } else {
            seq.wrapping_add(*a as i8 as u16)
        };
        ts = if op & 0x08 != 0 {
            ts.wrapping_add(u32::from(*b) << 24)
        } else {
            ts.wrapping_add(u32::from(*b) * 120)
        };
        let _ = recv.handle_packet(now, seq, ts, op & 0x01 != 0, payload);
        while let Some(p) = recv.poll_packet() {
            if p.after_loss {
                bridge.handle_loss();
            }
            let pushed = depack.push(RtpView {
                seq: p.seq,
                ts: p.ts,
                marker: p.marker,
                payload: &p.payload,
                after_loss: p.after_loss,
            });
            if let Pushed::Complete = pushed {
                let unit = depack.take_unit().expect("unit after Complete");
                bridge.push_opus(unit.ts, &unit.data).expect("encoder never fails");
                drain(&mut bridge, &mut last_pos);
            }
            recv.recycle(p.payload);
        }
    }
    let s = bridge.stats();
    assert_eq!(s.frames_overflowed, 0);
    assert_eq!(s.decoder_panics, 0, "the Opus decoder panicked");
});

fn drain(bridge: &mut OpusToAac, last_pos: &mut Option<u64>) {
    while let Some(frame) = bridge.poll_frame() {
        assert_eq!(&frame.flv_body[..2], &[0xAF, 0x01]);
        if let Some(prev) = *last_pos {
            assert!(frame.sample_pos >= prev + 1024, "{} after {prev}", frame.sample_pos);
        }
        *last_pos = Some(frame.sample_pos);
    }
}
