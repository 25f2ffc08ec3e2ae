//! Fuzz the RTCP compound parser and the builders.
//!
//! Parsing arbitrary bytes never panics and stops after the first error.
//! Every packet that parses and has a builder is rebuilt from its parsed
//! fields and must parse back to the same value. The input also drives the
//! builders directly: NACK lists (compaction must cover every sequence
//! number exactly) and transport-cc feedback from arbitrary arrivals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::rtcp::{self, RtcpPacket, TwccHeader};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    reparse(data);
    nack(data);
    twcc(data);
});

fn reparse(data: &[u8]) {
    let mut errors = 0;
    for pkt in rtcp::parse(data) {
        let Ok(p) = pkt else {
            errors += 1;
            continue;
        };
        assert_eq!(errors, 0, "nothing after an error");
        let mut out = Vec::new();
        let rebuilt = match p {
            RtcpPacket::SenderReport { info, reports } => {
                let blocks: Vec<_> = reports.iter().collect();
                rtcp::write_sr(&info, &blocks, &mut out).expect("≤31 blocks");
                true
            }
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                let blocks: Vec<_> = reports.iter().collect();
                rtcp::write_rr(ssrc, &blocks, &mut out).expect("≤31 blocks");
                true
            }
            RtcpPacket::Pli { sender_ssrc, media_ssrc } => {
                rtcp::write_pli(sender_ssrc, media_ssrc, &mut out);
                true
            }
            RtcpPacket::Bye { ssrcs, reason: None } => {
                let list: Vec<u32> = ssrcs.iter().collect();
                rtcp::write_bye(&list, &mut out).expect("≤31 ssrcs");
                true
            }
            RtcpPacket::Nack { sender_ssrc, media_ssrc, list } => {
                let seqs: Vec<u16> = list.seqs().collect();
                let mut rest = &seqs[..];
                let mut again = Vec::new();
                while !rest.is_empty() {
                    let mut one = Vec::new();
                    let used = rtcp::write_nack(sender_ssrc, media_ssrc, rest, &mut one);
                    assert!(used > 0);
                    rest = &rest[used..];
                    for q in rtcp::parse(&one) {
                        let Ok(RtcpPacket::Nack { list, .. }) = q else { panic!("NACK rebuild") };
                        again.extend(list.seqs());
                    }
                }
                let mut a = seqs.clone();
                let mut b = again;
                a.sort_unstable();
                a.dedup();
                b.sort_unstable();
                b.dedup();
                assert_eq!(a, b);
                false
            }
            _ => false,
        };
        if rebuilt {
            let back: Vec<_> = rtcp::parse(&out).collect();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0], Ok(p));
        }
    }
}

fn nack(data: &[u8]) {
    let seqs: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    let mut rest = &seqs[..];
    let mut got = Vec::new();
    while !rest.is_empty() {
        let mut out = Vec::new();
        let used = rtcp::write_nack(1, 2, rest, &mut out);
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
        for p in rtcp::parse(&out) {
            let Ok(RtcpPacket::Nack { list, .. }) = p else { panic!("NACK parses") };
            got.extend(list.seqs());
        }
    }
    let mut want = seqs;
    want.sort_unstable();
    want.dedup();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, want);
}

fn twcc(data: &[u8]) {
    let origin = Instant::now();
    let mut seq = 1000u64;
    let mut at = origin + Duration::from_secs(1);
    let mut arrivals = Vec::new();
    for c in data.chunks_exact(3) {
        seq += 1 + u64::from(c[0] % 8);
        let step = i64::from(i16::from_be_bytes([c[1], c[2]])) * 50;
        at = if step >= 0 {
            at + Duration::from_micros(step.unsigned_abs())
        } else {
            at.checked_sub(Duration::from_micros(step.unsigned_abs())).unwrap_or(at).max(origin)
        };
        arrivals.push((seq, at));
    }
    let mut rest = &arrivals[..];
    let mut base = 1000u64;
    while !rest.is_empty() {
        let mut out = Vec::new();
        let hdr = TwccHeader { sender_ssrc: 1, media_ssrc: 2, base_seq: base, fb_count: 0 };
        let n = rtcp::write_transport_cc(&hdr, rest, origin, &mut out).expect("sorted arrivals encode");
        assert!(n > 0 && n <= rest.len());
        assert!(out.len() <= 1200, "feedback fits an MTU");
        let parsed: Vec<_> = rtcp::parse(&out).collect();
        assert!(matches!(parsed.as_slice(), [Ok(RtcpPacket::TransportCc { .. })]));
        base = rest[n - 1].0 + 1;
        rest = &rest[n..];
    }
}
