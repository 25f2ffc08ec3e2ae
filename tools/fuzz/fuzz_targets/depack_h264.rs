//! Fuzz the H.264 depacketizer with arbitrary packet sequences.
//!
//! Input layout: a sequence of records `flags u8 | len u8 | payload[len]`
//! (a short last record takes what is left). Flag bits: 0x01 marker,
//! 0x02 after_loss, 0x04 skip one sequence number, 0x08 advance the RTP
//! timestamp, 0x10 payload is a padding probe (empty), 0x20 `reset()` first,
//! 0x40 prefix the payload with 0x7c 0x85 (an FU-A IDR start), 0x80 use the
//! payload as a STAP-A body (0x78 header prepended).
//! Every unit that comes out must be a well-formed AVC NALU body whose NAL
//! count and keyframe flag match its contents, the first must be a keyframe,
//! every config's sequence header must be the one rebuilt from its SPS/PPS,
//! and the counters must add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::codec::h264::{flv_sequence_header, parse_sps};
use rtcbridge::proto::depack::h264::{H264Depacketizer, READY_CAP};
use rtcbridge::proto::depack::{Pushed, RtpView};

fuzz_target!(|data: &[u8]| {
    let mut d = H264Depacketizer::with_max_unit(64 * 1024);
    let mut seq = 1000u64;
    let mut ts = 90_000u64;
    let mut seen_key = false;
    let mut rest = data;
    let mut payload = Vec::new();
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        if flags & 0x20 != 0 {
            d.reset();
        }
        seq += if flags & 0x04 != 0 { 2 } else { 1 };
        if flags & 0x08 != 0 {
            ts += 3000;
        }
        payload.clear();
        if flags & 0x10 == 0 {
            if flags & 0x80 != 0 {
                payload.push(0x78);
            }
            if flags & 0x40 != 0 {
                payload.extend_from_slice(&[0x7c, 0x85]);
            }
            payload.extend_from_slice(body);
        }
        let pkt = RtpView {
            seq,
            ts,
            marker: flags & 0x01 != 0,
            payload: &payload,
            after_loss: flags & 0x02 != 0,
        };
        let r = d.push(pkt);
        let mut got = 0;
        loop {
            if let Some(c) = d.take_config() {
                let info = parse_sps(&c.sps).expect("published SPS parses");
                assert_eq!((info.width, info.height), (c.width, c.height));
                assert_eq!(
                    flv_sequence_header(&c.sps, &c.pps).ok(),
                    Some(c.flv_sequence_header)
                );
                continue;
            }
            let Some(u) = d.take_unit() else { break };
            got += 1;
            let body = &u.flv_body;
            assert!(body.len() > 5);
            assert_eq!(body[0], if u.keyframe { 0x17 } else { 0x27 });
            assert_eq!(&body[1..5], &[1, 0, 0, 0]);
            let mut p = &body[5..];
            let mut count = 0;
            let mut idr = false;
            while !p.is_empty() {
                assert!(p.len() >= 5, "length field and NAL header");
                let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
                assert!(len >= 1 && p.len() >= 4 + len);
                let t = p[4] & 0x1f;
                assert!(
                    !matches!(t, 7 | 8 | 9 | 12),
                    "parameter sets stay out of the body"
                );
                idr |= t == 5;
                count += 1;
                p = &p[4 + len..];
            }
            assert_eq!(count, u.nal_count);
            assert_eq!(idr, u.keyframe);
            assert!(seen_key || u.keyframe, "first unit is a keyframe");
            seen_key = true;
        }
        assert!(got <= READY_CAP);
        assert_eq!(got > 0, r == Pushed::Complete);
    }
    let s = d.stats();
    assert!(s.keyframes <= s.units);
    assert!(s.dropped() <= s.packets + s.units_discarded + s.units_skipped);
});
